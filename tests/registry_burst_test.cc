// The burst: 5,000 databases created as fast as the loop allows while other tenants
// keep serving requests, with RLIMIT_NOFILE at 1,024. No deadlock (the harness fails if the
// loop goes quiet with work outstanding), no descriptor exhaustion (sampled from /proc), and
// every created database is valid and holds what its creation wrote afterwards.
//
// This binary holds only burst tests: it lowers its own descriptor limit, which must not
// affect any other test (ctest runs each test in its own process anyway).
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "sqloop/db/registry.h"
#include "sqloop/io/internal/backends.h"
#include "tests/registry_test_util.h"

namespace sqloop::db {
namespace {

using testing::Call;
using testing::CountOpenFds;
using testing::RegistryHarness;
using testing::TempDir;

const bool kAccounting = testing::InstallAccounting();

// The numbers.
constexpr int kDatabases = 5000;
constexpr rlim_t kDescriptorLimit = 1024;
// Tenants that keep serving a write and a read each, over and over, during the burst.
constexpr int kHotTenants = 8;
// Sample /proc/self/fd every this many creations (reading it costs ~1,000 readdir entries).
constexpr int kFdSampleEvery = 50;

// tmpfs when the machine has one: the burst measures the registry, not the disk's fsync.
const char* ScratchBase() {
  struct stat st {};
  return stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : nullptr;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A hot tenant's endless chain: insert, read back the count, repeat until told to stop.
struct Hot {
  std::string name;
  Call write;
  Call read;
  uint64_t rounds = 0;
  uint64_t failures = 0;
  bool stop = false;
  bool idle = true;  // No request of the chain in flight.
};

class RegistryBurstTest : public ::testing::TestWithParam<std::string> {
 protected:
  static std::unique_ptr<io::Backend> MakeBackend(const std::string& name) {
    auto backend = name == "io_uring" ? io::internal::CreateUringBackend({}, 0)
                                      : io::internal::CreateFallbackBackend({});
    SQLOOP_CHECK(backend.ok(), "backend unavailable");
    return *std::move(backend);
  }
  void SetUp() override {
    rlimit limit{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
    limit.rlim_cur = std::min(kDescriptorLimit, limit.rlim_max);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
};

void StartHot(Registry& registry, Hot& hot) {
  hot.idle = false;
  hot.write.Reset();
  hot.write.then = [&registry, &hot](Call& w) {
    if (!w.result.ok()) hot.failures++;
    hot.read.Reset();
    hot.read.then = [&registry, &hot](Call& r) {
      if (!r.result.ok()) hot.failures++;
      hot.rounds++;
      if (hot.stop) {
        hot.idle = true;
        return;
      }
      StartHot(registry, hot);
    };
    if (!registry.Submit(hot.read).ok()) {
      hot.failures++;
      hot.idle = true;
    }
  };
  if (!registry.Submit(hot.write).ok()) {
    hot.failures++;
    hot.idle = true;
  }
}

// Creates the hot tenants and starts their chains.
std::vector<std::unique_ptr<Hot>> StartHotTenants(RegistryHarness& h) {
  std::vector<std::unique_ptr<Hot>> hot;
  for (int i = 0; i < kHotTenants; ++i) {
    hot.push_back(std::make_unique<Hot>());
    Hot& x = *hot.back();
    x.name = absl::StrCat("hot-", i);
    Call create(x.name, "CREATE TABLE log(i INTEGER)", true);
    EXPECT_TRUE(h.Do(create).ok()) << create.result;
    x.write = Call(x.name, "INSERT INTO log VALUES (1)", false);
    x.read = Call(x.name, "SELECT count(*) FROM log", false, Request::Kind::kRead);
  }
  for (auto& x : hot) StartHot(h.registry(), *x);
  return hot;
}

// Reopens every database through the registry (its open runs quick_check) and checks the row
// its creation wrote.
void ReopenAndReadBack(RegistryHarness& h, const std::vector<std::string>& names) {
  const auto start = std::chrono::steady_clock::now();
  int verified = 0;
  std::vector<std::unique_ptr<Call>> reads(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    reads[i] = std::make_unique<Call>(names[i], "SELECT v FROM kv", false, Request::Kind::kRead);
    reads[i]->then = [&verified, &names, i](Call& c) {
      verified += c.result.ok() && c.rows == names[i] + "\n";
    };
    ASSERT_TRUE(h.registry().Submit(*reads[i]).ok());
  }
  ASSERT_TRUE(h.RunUntil([&] {
    return std::all_of(reads.begin(), reads.end(), [](const auto& r) { return r->done; });
  }));
  std::printf("[ burst    ] reopened and read back %d databases in %.2f s\n", verified,
              SecondsSince(start));
  EXPECT_EQ(verified, static_cast<int>(names.size()));
}

TEST_P(RegistryBurstTest, FiveThousandCreationsWhileOthersServe) {
  TempDir dir(ScratchBase());
  RegistryOptions options;
  options.directory = dir.path();
  options.open_max = 0;  // Derived from the 1,024 descriptors: (1024 - 64) / 4 = 240.
  options.waiting_opens_max = kDatabases + kHotTenants;
  options.idle_timeout = absl::Seconds(60);  // Eviction, not the timer, makes the room here.
  RegistryHarness h(MakeBackend(GetParam()), options);
  ASSERT_TRUE(h.create_status().ok()) << h.create_status();
  Registry& registry = h.registry();
  EXPECT_EQ(registry.open_max(),
            (kDescriptorLimit - kDescriptorsReservedDefault) / kDescriptorsPerDatabase);

  // The hot tenants exist before the burst and serve throughout it.
  std::vector<std::unique_ptr<Hot>> hot = StartHotTenants(h);
  std::vector<std::string> names(kDatabases);
  std::vector<std::unique_ptr<Call>> creates(kDatabases);
  int done = 0;
  int failed = 0;
  int fds_max = CountOpenFds();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kDatabases; ++i) {
    names[i] = absl::StrFormat("burst-%05d", i);
    // One statement creates the table and its row, so an acknowledged creation has content.
    creates[i] = std::make_unique<Call>(names[i], "CREATE TABLE kv AS SELECT ? AS v", true);
    creates[i]->params = {Value::Text(names[i])};
    creates[i]->then = [&](Call& c) {
      failed += !c.result.ok();
      if (!c.result.ok() && failed < 5) ADD_FAILURE() << c.tenant << ": " << c.result;
      if (++done % kFdSampleEvery == 0) fds_max = std::max(fds_max, CountOpenFds());
    };
    ASSERT_TRUE(registry.Submit(*creates[i]).ok()) << i;
  }
  ASSERT_TRUE(h.RunUntil([&] { return done == kDatabases; }));
  const double burst_s = SecondsSince(start);
  for (auto& x : hot) x->stop = true;
  ASSERT_TRUE(h.RunUntil(
      [&] { return std::all_of(hot.begin(), hot.end(), [](const auto& x) { return x->idle; }); }));
  const RegistryStats stats = registry.stats();
  std::printf(
      "[ burst    ] %d databases in %.2f s (%.0f/s) on %s; descriptors max %d of %d; "
      "open max %u of %u; evictions %llu; hot rounds %llu\n",
      kDatabases, burst_s, kDatabases / burst_s, GetParam().c_str(), fds_max,
      static_cast<int>(kDescriptorLimit), stats.open_high_water, registry.open_max(),
      static_cast<unsigned long long>(stats.evictions),
      static_cast<unsigned long long>(hot[0]->rounds));
  EXPECT_EQ(failed, 0);
  EXPECT_LT(fds_max, static_cast<int>(kDescriptorLimit));
  EXPECT_LE(stats.open_high_water, registry.open_max());
  EXPECT_EQ(stats.memory_leaks, 0u);
  for (auto& x : hot) {
    EXPECT_EQ(x->failures, 0u) << x->name;
    EXPECT_GT(x->rounds, 0u) << x->name << " was starved by the burst";
  }

  // Every database reopens (quick_check runs at each open) and holds its row.
  registry.CloseIdleTenants();
  ReopenAndReadBack(h, names);
  h.Shutdown();

  // And stock SQLite agrees on a sample (integrity_check reads every page).
  for (int i = 0; i < kDatabases; i += kDatabases / 50) {
    const auto [integrity, value] = testing::CheckWithStockSqlite(
        absl::StrCat(dir.path(), "/", names[i], ".db"), "SELECT v FROM kv");
    EXPECT_EQ(integrity, "ok") << names[i];
    EXPECT_EQ(value, names[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryBurstTest, ::testing::Values("io_uring", "fallback"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

}  // namespace
}  // namespace sqloop::db
