// Scale to zero under the simulator's virtual clock: 1,000 tenants over a simulated
// day of random traffic. Idle tenants close after the idle time and reopen on demand, every
// acknowledged write is there at the end, and once everything is idle no descriptor and no
// tenant memory is left. The simulated day takes a few seconds: the clock jumps to the next
// event, nothing sleeps. SQLOOP_SEED=<n> runs another seed.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "sqloop/db/registry.h"
#include "sqloop/io/prng.h"
#include "sqloop/io/sim_backend.h"
#include "tests/registry_test_util.h"
#include "tests/sim_test_backend.h"

namespace sqloop::db {
namespace {

using testing::Call;
using testing::RegistryHarness;

const bool kAccounting = testing::InstallAccounting();

constexpr int kTenants = 1000;
constexpr int64_t kDayNs = int64_t{24} * 3600 * 1'000'000'000;
// One request every 30 virtual seconds: 2,880 over the day, about 3 per tenant, so most
// requests find their tenant closed and reopen it.
constexpr int64_t kTrafficEveryNs = int64_t{30} * 1'000'000'000;
constexpr int kPool = 16;       // Requests in flight at most (caller-owned pool).
constexpr int kSample = 100;    // Tenants read back at the end.
constexpr int kFdProbes = 300;  // More than open_max * kDescriptorsPerDatabase.

// Drives the traffic from a loop timer on the virtual clock.
struct Traffic {
  Registry* registry = nullptr;
  io::Prng prng{1};
  std::vector<std::string> names;
  std::vector<int> acknowledged;  // Writes acknowledged per tenant.
  std::vector<Call> pool = std::vector<Call>(kPool);
  std::vector<int> pool_tenant = std::vector<int>(kPool, -1);
  loop::Completion timer;
  int64_t end_ns = 0;
  bool running = true;
  uint64_t sent = 0;
  uint64_t failures = 0;
  uint64_t skipped = 0;  // Ticks that found the pool busy.

  void SendOne() {
    for (int slot = 0; slot < kPool; ++slot) {
      if (pool_tenant[slot] >= 0) continue;
      const int tenant = static_cast<int>(prng.Below(kTenants));
      const bool write = prng.Chance(0.5);
      Call& call = pool[slot];
      call = Call(names[tenant], write ? "INSERT INTO log VALUES (1)" : "SELECT count(*) FROM log",
                  false, write ? Request::Kind::kWrite : Request::Kind::kRead);
      pool_tenant[slot] = tenant;
      call.then = [this, slot, write](Call& c) {
        if (c.result.ok() && write) acknowledged[pool_tenant[slot]]++;
        if (!c.result.ok()) {
          failures++;
          ADD_FAILURE() << c.tenant << ": " << c.result;
        }
        pool_tenant[slot] = -1;
      };
      sent++;
      EXPECT_TRUE(registry->Submit(call).ok());
      return;
    }
    skipped++;
  }

  static loop::Action OnTick(loop::Loop& loop, loop::Completion& c) {
    auto& self = *static_cast<Traffic*>(c.user_data);
    if (loop.now_ns() >= self.end_ns) {
      self.running = false;
      return loop::Action::kDisarm;
    }
    self.SendOne();
    return loop::Action::kRearm;
  }
};

// The lowest-free descriptor rule of the simulator makes leaks visible: opening kFdProbes files
// returns a contiguous run starting at the first free number only if nothing above it leaked.
std::vector<int64_t> ProbeDescriptors(loop::Loop& loop) {
  std::vector<int64_t> fds;
  for (int i = 0; i < kFdProbes; ++i) {
    const std::string path = absl::StrFormat("/probe-%d", i);
    io::Op open{.kind = io::OpKind::kOpenAt,
                .fd = AT_FDCWD,
                .flags = O_RDWR | O_CREAT,
                .path = path.c_str(),
                .mode = 0644};
    fds.push_back(loop.WaitForOp(open));
  }
  for (int64_t fd : fds) {
    io::Op close{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
    (void)loop.WaitForOp(close);
  }
  return fds;
}

void CreateAll(RegistryHarness& h, const std::vector<std::string>& names) {
  std::vector<std::unique_ptr<Call>> creates;
  for (const std::string& name : names) {
    creates.push_back(std::make_unique<Call>(name, "CREATE TABLE log(x INTEGER)", true));
    ASSERT_TRUE(h.registry().Submit(*creates.back()).ok());
  }
  ASSERT_TRUE(h.RunUntil([&] {
    return std::all_of(creates.begin(), creates.end(), [](const auto& c) { return c->done; });
  }));
  for (const auto& c : creates) ASSERT_TRUE(c->result.ok()) << c->tenant << ": " << c->result;
}

// With every tenant closed: no accounting tenant of the registry is registered, and only the
// registry's directory descriptor is open, so the probes start right after it.
void ExpectNothingLeft(loop::Loop& loop, const std::string& memory_prefix) {
  alloc::AllocationProfile profile;
  alloc::ExportSqliteMemoryProfile(&profile);
  EXPECT_FALSE(absl::StrContains(profile.ToTable(), memory_prefix));
  const std::vector<int64_t> fds = ProbeDescriptors(loop);
  for (size_t i = 0; i < fds.size(); ++i) {
    ASSERT_EQ(fds[i], fds[0] + static_cast<int64_t>(i)) << "a descriptor leaked at " << fds[0] + i;
  }
  EXPECT_LE(fds[0], 4) << "descriptors 3.." << fds[0] - 1 << " are still open";
}

TEST(RegistrySimTest, ScaleToZeroOverASimulatedDay) {
  io::SimBackendOptions sim_options;
  sim_options.seed = sqloop::testing::SeedFromEnvironment(sqloop::testing::kDefaultTestSeed);
  sim_options.hang_is_error = true;  // Single-threaded: waiting for nothing is a deadlock.
  auto backend = std::make_unique<io::SimBackend>(sim_options);
  io::SimBackend& sim = *backend;
  ASSERT_EQ(sim.disk().MakeDirectory("/tenants"), 0);

  RegistryOptions options;
  options.directory = "/tenants";
  options.open_max = 64;
  options.idle_timeout = absl::Minutes(10);
  options.waiting_opens_max = kTenants;
  options.memory_name_prefix = "sim-day/";
  RegistryHarness h(std::move(backend), options);
  ASSERT_TRUE(h.create_status().ok()) << h.create_status();
  Registry& registry = h.registry();

  Traffic traffic;
  traffic.registry = &registry;
  traffic.prng = io::Prng(sim_options.seed);
  traffic.acknowledged.assign(kTenants, 0);
  for (int i = 0; i < kTenants; ++i) traffic.names.push_back(absl::StrFormat("t%04d", i));

  // Morning: every tenant is created (a burst of 1,000 through 64 slots). The tenants evicted
  // for the waiters sleep (asleep_max is above 1,000), so their first request of the day wakes
  // them instead of opening them.
  CreateAll(h, traffic.names);
  EXPECT_GT(registry.stats().sleeps, 900u) << "the burst's evicted tenants did not sleep";

  // The day.
  const int64_t start_ns = h.loop().now_ns();
  traffic.end_ns = start_ns + kDayNs;
  traffic.timer.callback = &Traffic::OnTick;
  traffic.timer.user_data = &traffic;
  h.loop().Timer(traffic.timer, absl::Nanoseconds(kTrafficEveryNs));
  ASSERT_TRUE(h.RunUntil([&] {
    return !traffic.running && std::all_of(traffic.pool_tenant.begin(), traffic.pool_tenant.end(),
                                           [](int t) { return t < 0; });
  }));
  EXPECT_EQ(traffic.failures, 0u);
  EXPECT_GT(traffic.sent, 2000u);
  const RegistryStats day = registry.stats();
  EXPECT_GT(day.idle_closes, 1000u) << "tenants did not scale to zero during the day";
  EXPECT_GT(day.wakes, 0u) << "no sleeping tenant was woken by a request";
  EXPECT_LE(day.open_high_water, 64u);

  // Night: everything goes idle and closes; the virtual clock jumps to the idle deadlines.
  ASSERT_TRUE(h.RunUntil([&] {
    const RegistryStats now = registry.stats();
    return now.open + now.asleep + now.closing == 0;
  }));
  EXPECT_GE(h.loop().now_ns() - start_ns, kDayNs);
  const RegistryStats night = registry.stats();
  EXPECT_EQ(night.memory_leaks, 0u);
  EXPECT_EQ(night.open, 0u);
  ExpectNothingLeft(h.loop(), "sim-day/");

  // Next morning: a sample reopens on demand and holds every acknowledged write.
  for (int i = 0; i < kSample; ++i) {
    const int tenant = i * (kTenants / kSample);
    Call read(traffic.names[tenant], "SELECT count(*) FROM log", false, Request::Kind::kRead);
    ASSERT_TRUE(h.Do(read).ok()) << read.result;
    EXPECT_EQ(read.rows, absl::StrCat(traffic.acknowledged[tenant], "\n")) << read.tenant;
  }
  std::printf(
      "[ sim day  ] seed %llu: %llu requests, %llu opens, %llu idle closes, %llu "
      "evictions, %llu sleeps, %llu wakes, open high water %u\n",
      static_cast<unsigned long long>(sim_options.seed),
      static_cast<unsigned long long>(traffic.sent),
      static_cast<unsigned long long>(registry.stats().opens),
      static_cast<unsigned long long>(night.idle_closes),
      static_cast<unsigned long long>(night.evictions),
      static_cast<unsigned long long>(night.sleeps), static_cast<unsigned long long>(night.wakes),
      night.open_high_water);
}

// ---- A crash in the middle of a creation burst ------------------------------------------------

constexpr int kBurst = 200;
constexpr int kCrashSeeds = 4;
// The burst takes a few hundred virtual milliseconds (fsyncs of 0.05-5 ms, 32 slots); crashing
// uniformly in the first 100 ms lands before, during and near the end of it.
constexpr int64_t kCrashWindowNs = 100'000'000;

struct CrashRun {
  io::SimBackend* sim = nullptr;
  std::vector<bool>* acked = nullptr;
  std::vector<std::unique_ptr<Call>>* creates = nullptr;
  bool crashed = false;
};

struct CrashResult {
  int acknowledged = 0;
  int lost = 0;  // Acknowledged creations missing, unreadable, incomplete or corrupt.
};

// Creates kBurst tenants, crashes at a seed-chosen moment, restarts on the same disk, and checks
// that every acknowledged creation is there, valid and complete.
CrashResult CrashDuringBurst(uint64_t seed, bool ack_before_fsync) {
  io::SimBackendOptions sim_options;
  sim_options.seed = seed;
  sim_options.hang_is_error = true;
  auto backend = std::make_unique<io::SimBackend>(sim_options);
  io::SimBackend& sim = *backend;
  std::shared_ptr<io::SimDisk> disk = sim.shared_disk();
  EXPECT_EQ(sim.disk().MakeDirectory("/tenants"), 0);
  RegistryOptions options;
  options.directory = "/tenants";
  options.open_max = 32;
  options.waiting_opens_max = kBurst;
  options.memory_name_prefix = absl::StrFormat("crash-%d-%d/", seed, ack_before_fsync);
  options.database.ack_before_fsync_for_testing = ack_before_fsync;
  std::vector<std::string> names;
  for (int i = 0; i < kBurst; ++i) names.push_back(absl::StrFormat("c%04d", i));
  std::vector<bool> acked(kBurst, false);
  {
    std::vector<std::unique_ptr<Call>> creates;  // Outlive the harness, whose end fails some.
    CrashRun run{&sim, &acked, &creates};
    RegistryHarness h(std::move(backend), options);
    EXPECT_TRUE(h.create_status().ok()) << h.create_status();
    for (const std::string& name : names) {
      creates.push_back(std::make_unique<Call>(name, "CREATE TABLE kv AS SELECT ? AS v", true));
      creates.back()->params = {Value::Text(name)};
      EXPECT_TRUE(h.registry().Submit(*creates.back()).ok());
    }
    loop::Completion crash;
    crash.user_data = &run;
    crash.callback = [](loop::Loop&, loop::Completion& c) {
      auto& r = *static_cast<CrashRun*>(c.user_data);
      // What the clients were told before the power went: the oracle.
      for (size_t i = 0; i < r.creates->size(); ++i) {
        (*r.acked)[i] = (*r.creates)[i]->done && (*r.creates)[i]->result.ok();
      }
      r.crashed = true;
      r.sim->Crash();
      return loop::Action::kDisarm;
    };
    io::Prng prng(seed);
    h.loop().Timer(crash, absl::Nanoseconds(static_cast<int64_t>(prng.Below(kCrashWindowNs))));
    EXPECT_TRUE(h.RunUntil([&] { return run.crashed; }));
    // The old process winds down (its operations fail) before the successor starts.
  }
  io::SimBackendOptions restart_options = sim_options;
  restart_options.seed = seed + 1;
  options.memory_name_prefix = absl::StrFormat("crash-%d-%d-restart/", seed, ack_before_fsync);
  options.database.ack_before_fsync_for_testing = false;
  RegistryHarness h(std::make_unique<io::SimBackend>(restart_options, disk), options);
  EXPECT_TRUE(h.create_status().ok()) << h.create_status();
  CrashResult result;
  for (int i = 0; i < kBurst; ++i) {
    if (!acked[i]) continue;
    result.acknowledged++;
    Call read(names[i], "SELECT v FROM kv", false, Request::Kind::kRead);
    Call check(names[i], "PRAGMA integrity_check", false, Request::Kind::kRead);
    const bool readable = h.Do(read).ok() && read.rows == names[i] + "\n";
    const bool intact = readable && h.Do(check).ok() && check.rows == "ok\n";
    if (!intact) {
      result.lost++;
      if (!ack_before_fsync) {
        ADD_FAILURE() << "seed " << seed << ": acknowledged " << names[i]
                      << " did not survive: " << read.result << " rows '" << read.rows
                      << "' check '" << check.rows << "'";
      }
    }
  }
  return result;
}

TEST(RegistrySimTest, EveryAcknowledgedCreationSurvivesACrashInTheBurst) {
  const uint64_t base = sqloop::testing::SeedFromEnvironment(sqloop::testing::kDefaultTestSeed);
  int acked_total = 0;
  for (int i = 0; i < kCrashSeeds; ++i) {
    const CrashResult result = CrashDuringBurst(base + static_cast<uint64_t>(i), false);
    std::printf("[ crash    ] seed %llu: %d of %d creations acknowledged before the crash\n",
                static_cast<unsigned long long>(base + i), result.acknowledged, kBurst);
    EXPECT_EQ(result.lost, 0);
    acked_total += result.acknowledged;
  }
  // The crashes fell inside the burst: some creations were acknowledged, not all.
  EXPECT_GT(acked_total, 0);
  EXPECT_LT(acked_total, kBurst * kCrashSeeds);
}

// Negative control: with the Database acknowledging before the covering fsync, the same check
// must catch lost creations on some seed, or it proves nothing.
TEST(RegistrySimTest, NegativeControlAckBeforeFsyncLosesCreations) {
  const uint64_t base = sqloop::testing::SeedFromEnvironment(sqloop::testing::kDefaultTestSeed);
  int lost = 0;
  for (int i = 0; i < kCrashSeeds && lost == 0; ++i) {
    lost += CrashDuringBurst(base + static_cast<uint64_t>(i), true).lost;
  }
  EXPECT_GT(lost, 0) << "the crash check cannot tell durable creations from lucky ones";
}

}  // namespace
}  // namespace sqloop::db
