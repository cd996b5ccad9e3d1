// Registry: a tenant evicted for a slot sleeps (its Database keeps its connections and gives its
// descriptors back) and its next request wakes it; sleepers are bounded, close after the idle
// timeout, and a file changed while asleep is opened afresh. On io_uring and the fallback.
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/db/registry.h"
#include "sqloop/io/internal/backends.h"
#include "sqloop/loop/loop.h"
#include "tests/registry_test_util.h"

namespace sqloop::db {
namespace {

using testing::Call;
using testing::CountOpenFds;
using testing::RegistryHarness;
using testing::TempDir;

const bool kAccounting = testing::InstallAccounting();

// Descriptors of this process open on `path` or its -wal and -journal.
int FdsOn(const std::string& path) {
  int count = 0;
  for (int fd = 0; fd < 4096; ++fd) {
    char link[PATH_MAX];
    const std::string proc = absl::StrCat("/proc/self/fd/", fd);
    const ssize_t n = readlink(proc.c_str(), link, sizeof(link) - 1);
    if (n <= 0) continue;
    count += absl::StartsWith(std::string(link, static_cast<size_t>(n)), path);
  }
  return count;
}

class RegistrySleepTest : public ::testing::TestWithParam<testing::RealBackend> {
 protected:
  // One slot: every tenant that opens evicts the one before it.
  RegistryOptions Options() const {
    RegistryOptions options;
    options.directory = dir_.path();
    options.idle_timeout = absl::Hours(1);
    options.open_max = 1;
    options.memory_name_prefix = absl::StrCat("registry-sleep-", serial_++, "/");
    return options;
  }
  std::unique_ptr<RegistryHarness> Make(const RegistryOptions& options) {
    auto harness = std::make_unique<RegistryHarness>(GetParam().make(), options);
    EXPECT_TRUE(harness->create_status().ok()) << harness->create_status();
    return harness;
  }
  // Creates `name` with one row, `name` itself.
  static void Create(RegistryHarness& h, const std::string& name) {
    Call create(name, "CREATE TABLE t(v TEXT)", true);
    ASSERT_TRUE(h.Do(create).ok()) << create.result;
    Call insert(name, "INSERT INTO t VALUES (?)", false);
    insert.params = {Value::Text(name)};
    ASSERT_TRUE(h.Do(insert).ok()) << insert.result;
  }
  // Into `h`: two slots, a, b and c created (a and b were both used again, so the hand cleared
  // both and put a to sleep), then b used again: b and c are open and visited, a asleep. Call it
  // inside ASSERT_NO_FATAL_FAILURE, so a setup that went wrong stops the test.
  void ASleepsBAndCUsedAgain(std::unique_ptr<RegistryHarness>& h) {
    RegistryOptions options = Options();
    options.open_max = 2;
    h = Make(options);
    for (const char* name : {"a", "b", "c"}) Create(*h, name);
    ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
    Call use_b("b", "SELECT 1", false, Request::Kind::kRead);
    ASSERT_TRUE(h->Do(use_b).ok()) << use_b.result;
  }

  static TenantState StateOf(RegistryHarness& h, const std::string& name) {
    return h.registry().GetTenantStats(name)->state;
  }
  std::string PathOf(const std::string& name) const { return dir_.path() + "/" + name + ".db"; }

  TempDir dir_;
  static inline int serial_ = 0;
};

TEST_P(RegistrySleepTest, AnEvictedTenantSleepsWithoutDescriptorsAndItsNextRequestWakesIt) {
  auto h = Make(Options());
  Create(*h, "a");
  EXPECT_GT(FdsOn(PathOf("a")), 0);
  Create(*h, "b");  // Takes a's slot: a sleeps.
  ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  EXPECT_EQ(FdsOn(PathOf("a")), 0) << "a sleeping tenant kept a descriptor";
  RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.sleeps, 1u);
  EXPECT_EQ(stats.asleep, 1u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.open, 1u);

  Call read("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(read).ok()) << read.result;
  EXPECT_EQ(read.rows, "a\n");
  const TenantStats a = *h->registry().GetTenantStats("a");
  EXPECT_EQ(a.opens, 1u) << "the sleeper was opened again instead of woken";
  EXPECT_EQ(a.wakes, 1u);
  EXPECT_EQ(StateOf(*h, "b"), TenantState::kAsleep);  // b gave a its slot.
  // A write after the wake is durable: stock SQLite finds it once everything closed.
  Call write("a", "INSERT INTO t VALUES ('again')", false);
  ASSERT_TRUE(h->Do(write).ok()) << write.result;
  h->Shutdown();
  const auto [check, count] = testing::CheckWithStockSqlite(PathOf("a"), "SELECT count(*) FROM t");
  EXPECT_EQ(check, "ok");
  EXPECT_EQ(count, "2");
}

// SIEVE with wakes, two slots: the request that wakes a tenant is not a reuse, so a tenant woken
// for one request goes before one used again since it took its slot. Marking the wake as a use
// would keep a and evict c instead.
TEST_P(RegistrySleepTest, ATenantWokenForOneRequestGoesBeforeOneUsedAgain) {
  std::unique_ptr<RegistryHarness> h;
  ASSERT_NO_FATAL_FAILURE(ASleepsBAndCUsedAgain(h));
  Call wake_a("a", "SELECT v FROM t", false, Request::Kind::kRead);  // b and c used again: b.
  ASSERT_TRUE(h->Do(wake_a).ok()) << wake_a.result;
  ASSERT_EQ(StateOf(*h, "b"), TenantState::kAsleep);
  ASSERT_EQ(h->registry().GetTenantStats("a")->wakes, 1u);
  Call use_c("c", "SELECT 1", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(use_c).ok()) << use_c.result;
  Call wake_b("b", "SELECT v FROM t", false, Request::Kind::kRead);  // a, woken only: a goes.
  ASSERT_TRUE(h->Do(wake_b).ok()) << wake_b.result;
  EXPECT_EQ(wake_b.rows, "b\n");
  EXPECT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  EXPECT_EQ(StateOf(*h, "c"), TenantState::kIdle);
  EXPECT_EQ(h->registry().GetTenantStats("b")->wakes, 1u);
  EXPECT_EQ(h->registry().GetTenantStats("c")->wakes, 0u);
}

// The same steps, with a second request for a queued behind the one that wakes it: the two
// arrived together, as a burst to one tenant does, so the second is no reuse either, and a still
// goes. Counted as a use, it would keep a and evict c, which the hand reaches first.
TEST_P(RegistrySleepTest, ARequestQueuedBehindAWakeIsNoReuse) {
  std::unique_ptr<RegistryHarness> h;
  ASSERT_NO_FATAL_FAILURE(ASleepsBAndCUsedAgain(h));
  Call wake_a("a", "SELECT v FROM t", false, Request::Kind::kRead);
  Call again_a("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->registry().Submit(wake_a).ok());
  ASSERT_NE(StateOf(*h, "a"), TenantState::kActive) << "the second request would not queue";
  ASSERT_NE(StateOf(*h, "a"), TenantState::kIdle);
  ASSERT_TRUE(h->registry().Submit(again_a).ok());
  ASSERT_TRUE(h->RunUntil([&] { return wake_a.done && again_a.done; }));
  ASSERT_TRUE(wake_a.result.ok()) << wake_a.result;
  ASSERT_TRUE(again_a.result.ok()) << again_a.result;
  ASSERT_EQ(StateOf(*h, "b"), TenantState::kAsleep);
  ASSERT_EQ(h->registry().GetTenantStats("a")->wakes, 1u);
  Call use_c("c", "SELECT 1", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(use_c).ok()) << use_c.result;
  Call wake_b("b", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(wake_b).ok()) << wake_b.result;
  EXPECT_EQ(wake_b.rows, "b\n");
  EXPECT_EQ(StateOf(*h, "a"), TenantState::kAsleep) << "a's queued request counted as a use";
  EXPECT_EQ(StateOf(*h, "c"), TenantState::kIdle);
  EXPECT_EQ(h->registry().GetTenantStats("b")->wakes, 1u);
}

// A sleeper's descriptors close through the loop, and until they are closed they count as its
// slot: the waiter that evicted it takes the slot only then, so the process never holds the
// descriptors of more than open_max tenants (registry invariant 3).
TEST_P(RegistrySleepTest, AWaiterTakesASleepersSlotOnlyOnceItsDescriptorsAreClosed) {
  auto h = Make(Options());
  Create(*h, "a");
  Create(*h, "b");  // a sleeps; b holds the one slot, idle.
  ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  ASSERT_EQ(h->registry().stats().sleeps_closing, 0u);
  EXPECT_GT(FdsOn(PathOf("b")), 0);

  Call read("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->registry().Submit(read).ok());
  // b went to sleep for a, and its closes have not run: a waits for the slot.
  EXPECT_EQ(StateOf(*h, "b"), TenantState::kAsleep);
  EXPECT_EQ(StateOf(*h, "a"), TenantState::kWaitingSlot) << "a took the slot of b's open files";
  RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.sleeps_closing, 1u);
  EXPECT_EQ(stats.waiting, 1u);
  EXPECT_EQ(stats.open, 0u);

  ASSERT_TRUE(h->RunUntil([&] { return read.done; }));
  EXPECT_TRUE(read.result.ok()) << read.result;
  EXPECT_EQ(read.rows, "a\n");
  EXPECT_EQ(FdsOn(PathOf("b")), 0) << "a sleeping tenant kept a descriptor";
  stats = h->registry().stats();
  EXPECT_EQ(stats.sleeps_closing, 0u);
  EXPECT_EQ(stats.waiting, 0u);
  EXPECT_EQ(stats.wakes, 1u);
  EXPECT_LE(stats.open_high_water, 1u);
}

TEST_P(RegistrySleepTest, SleepersBeyondAsleepMaxCloseTheOneAsleepTheLongest) {
  RegistryOptions options = Options();
  options.asleep_max = 2;
  auto h = Make(options);
  for (const char* name : {"a", "b", "c", "d"}) Create(*h, name);
  EXPECT_EQ(StateOf(*h, "a"), TenantState::kClosed);
  EXPECT_EQ(h->registry().GetTenantStats("a")->evictions, 1u);
  EXPECT_EQ(StateOf(*h, "b"), TenantState::kAsleep);
  EXPECT_EQ(StateOf(*h, "c"), TenantState::kAsleep);
  EXPECT_EQ(h->registry().stats().asleep, 2u);
  // The closed one opens again, and what it held is there.
  Call read("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(read).ok()) << read.result;
  EXPECT_EQ(read.rows, "a\n");
  EXPECT_EQ(h->registry().GetTenantStats("a")->opens, 2u);
}

TEST_P(RegistrySleepTest, ASleeperClosesAfterTheIdleTimeoutAndLeavesNothingOpen) {
  RegistryOptions options = Options();
  options.idle_timeout = absl::Milliseconds(5);
  auto h = Make(options);
  const int fds_before = CountOpenFds();
  Create(*h, "a");
  Create(*h, "b");
  EXPECT_GE(h->registry().GetTenantStats("a")->sleeps, 1u);
  ASSERT_TRUE(h->RunUntil([&] {
    const RegistryStats stats = h->registry().stats();
    return stats.open + stats.asleep + stats.closing == 0;
  }));
  EXPECT_EQ(h->registry().GetTenantStats("a")->idle_closes, 1u);
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(h->registry().stats().memory_leaks, 0u);
  Call read("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(read).ok()) << read.result;
  EXPECT_EQ(read.rows, "a\n");
}

// An idle_timeout the loop's clock never reaches (InfiniteDuration, or a finite one of
// centuries) means never: the tenants' deadlines must not wrap past the end of int64 into the
// past, which closed every sleeper at the next sweep (and is undefined behaviour). Trims, due
// after a millisecond, make the sweeper run.
TEST_P(RegistrySleepTest, AnIdleTimeoutTheClockNeverReachesClosesNothing) {
  int round = 0;
  for (const absl::Duration never :
       {absl::InfiniteDuration(), absl::Milliseconds(std::numeric_limits<int64_t>::max())}) {
    RegistryOptions options = Options();
    options.idle_timeout = never;
    options.idle_trim_after = absl::Milliseconds(1);
    auto h = Make(options);
    const std::string a = absl::StrCat("a", round), b = absl::StrCat("b", round),
                      c = absl::StrCat("c", round);
    ++round;
    for (const std::string& name : {a, b, c}) Create(*h, name);
    ASSERT_TRUE(h->RunUntil([&] { return h->registry().stats().trims >= 3; }));
    const RegistryStats stats = h->registry().stats();
    EXPECT_EQ(stats.asleep, 2u) << never;
    EXPECT_EQ(stats.open, 1u) << never;
    EXPECT_EQ(stats.idle_closes, 0u) << never;
    EXPECT_EQ(h->loop().pending(), 0u) << "a timer armed for never: " << never;
    Call read(a, "SELECT v FROM t", false, Request::Kind::kRead);
    ASSERT_TRUE(h->Do(read).ok()) << read.result;
    EXPECT_EQ(read.rows, a + "\n");
    EXPECT_EQ(h->registry().GetTenantStats(a)->opens, 1u) << "a was closed, not woken";
  }
}

TEST_P(RegistrySleepTest, AFileChangedWhileAsleepFailsTheWakeAndTheNextRequestOpensItAfresh) {
  auto h = Make(Options());
  Create(*h, "a");
  Create(*h, "b");
  ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  // Another program writes to a's file while its connections sleep on their old view.
  sqlite3* plain = nullptr;
  ASSERT_EQ(sqlite3_open(PathOf("a").c_str(), &plain), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(plain, "INSERT INTO t VALUES ('plain')", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(plain);

  Call stale("a", "SELECT v FROM t ORDER BY v", false, Request::Kind::kRead);
  const absl::Status failed = h->Do(stale);
  EXPECT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition) << failed;
  EXPECT_TRUE(stale.rows.empty()) << "rows were served from the stale view: " << stale.rows;
  ASSERT_TRUE(h->RunUntil([&] { return StateOf(*h, "a") == TenantState::kClosed; }));
  EXPECT_EQ(h->registry().stats().wakes_failed, 1u);
  Call fresh("a", "SELECT v FROM t ORDER BY v", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(fresh).ok()) << fresh.result;
  EXPECT_EQ(fresh.rows, "a\nplain\n");
  EXPECT_EQ(h->registry().GetTenantStats("a")->opens, 2u);
}

TEST_P(RegistrySleepTest, AnOpenOnlyRequestLeavesASleeperAsleep) {
  auto h = Make(Options());
  Create(*h, "a");
  Create(*h, "b");
  ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  Call touch("a", "", false);
  ASSERT_TRUE(h->Do(touch).ok()) << touch.result;
  ASSERT_TRUE(h->RunUntil([&] { return StateOf(*h, "a") == TenantState::kAsleep; }));
  EXPECT_EQ(FdsOn(PathOf("a")), 0);
  EXPECT_EQ(h->registry().GetTenantStats("a")->opens, 1u);
}

TEST_P(RegistrySleepTest, ASleeperIsDeletedAndShutdownClosesTheRest) {
  const int fds_before = CountOpenFds();
  auto h = Make(Options());
  Create(*h, "a");
  Create(*h, "b");
  Create(*h, "c");
  ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  ASSERT_EQ(StateOf(*h, "b"), TenantState::kAsleep);
  Call remove("a", "", false);
  remove.action = TenantRequest::Action::kDelete;
  ASSERT_TRUE(h->Do(remove).ok()) << remove.result;
  EXPECT_FALSE(dir_.Exists("a.db"));
  EXPECT_FALSE(dir_.Exists("a.db-wal"));
  // A request to b waits for c's slot; the shutdown then closes b and c.
  Call read("b", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(read).ok()) << read.result;
  EXPECT_EQ(read.rows, "b\n");
  h.reset();  // Shuts the registry down, then frees the loop.
  EXPECT_EQ(CountOpenFds(), fds_before);
  for (const char* name : {"b", "c"}) {
    const auto [check, v] = testing::CheckWithStockSqlite(PathOf(name), "SELECT v FROM t");
    EXPECT_EQ(check, "ok") << name;
    EXPECT_EQ(v, name);
  }
}

TEST_P(RegistrySleepTest, ASleeperIsTrimmedWithoutTouchingItsFilesAndStillWakes) {
  auto h = Make(Options());
  Create(*h, "a");
  // Two reads at once: a opens a second reader, which the trim closes while a sleeps.
  Call first("a", "SELECT v FROM t", false, Request::Kind::kRead);
  Call second("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->registry().Submit(first).ok());
  ASSERT_TRUE(h->registry().Submit(second).ok());
  ASSERT_TRUE(h->RunUntil([&] { return first.done && second.done; }));
  Create(*h, "b");
  ASSERT_EQ(StateOf(*h, "a"), TenantState::kAsleep);
  const uint64_t trims = h->registry().GetTenantStats("a")->trims;
  EXPECT_GE(h->registry().TrimIdleTenants(), 1u);
  EXPECT_EQ(h->registry().GetTenantStats("a")->trims, trims + 1);
  EXPECT_EQ(FdsOn(PathOf("a")), 0);
  Call read("a", "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(read).ok()) << read.result;
  EXPECT_EQ(read.rows, "a\n");
  EXPECT_EQ(h->registry().GetTenantStats("a")->wakes, 1u);
  EXPECT_EQ(h->registry().GetTenantStats("a")->opens, 1u);
  // The trim closed the sleeper's writer too: it opens again for this write.
  Call write("a", "INSERT INTO t VALUES ('w')", false, Request::Kind::kWrite);
  ASSERT_TRUE(h->Do(write).ok()) << write.result;
  Call count("a", "SELECT count(*) FROM t WHERE v = 'w'", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(count).ok()) << count.result;
  EXPECT_EQ(count.rows, "1\n");
}

// Memory is what sleeping does not free: with a budget smaller than one database, an evicted
// tenant closes, and a sleeper is closed before an idle tenant.
TEST_P(RegistrySleepTest, WhenMemoryIsShortEvictedTenantsCloseInsteadOfSleeping) {
  RegistryOptions options = Options();
  options.open_max = 4;
  options.memory_bytes_max = 1;
  auto h = Make(options);
  for (const char* name : {"a", "b", "c"}) Create(*h, name);
  const RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.sleeps, 0u);
  EXPECT_GE(stats.evictions, 2u);
  EXPECT_EQ(stats.asleep, 0u);
}

// Waiters for slots are served by evicting idle tenants, a sleep each (tens of microseconds,
// and a burst has hundreds): at least one per tick, then until the loop's tick budget is spent.
// Four tenants are busy while four new ones wait; all four go idle in one tick, and the next
// puts all four to sleep without a budget, one per tick with a budget of 1 ns.
TEST_P(RegistrySleepTest, EvictionsForWaitersStopAtTheTickBudget) {
  constexpr int kSlots = 4;
  for (const absl::Duration budget : {absl::ZeroDuration(), absl::Nanoseconds(1)}) {
    SCOPED_TRACE(absl::StrCat("tick budget ", absl::FormatDuration(budget)));
    RegistryOptions options = Options();
    options.open_max = kSlots;
    loop::LoopOptions loop_options;
    loop_options.tick_budget = budget;
    RegistryHarness h(GetParam().make(), options, std::move(loop_options));
    ASSERT_TRUE(h.create_status().ok()) << h.create_status();
    std::vector<std::string> names;  // In the fixture's one directory: named by round.
    for (int i = 0; i < 2 * kSlots; ++i) {
      names.push_back(absl::StrCat(budget == absl::ZeroDuration() ? "unbounded" : "bounded", i));
    }
    for (int i = 0; i < kSlots; ++i) ASSERT_NO_FATAL_FAILURE(Create(h, names[i]));
    // Requests to the open four make them busy, so the four behind them find no idle victim
    // and wait; the open four go idle together once their reads are answered.
    std::vector<std::unique_ptr<Call>> calls;
    for (int i = 0; i < 2 * kSlots; ++i) {
      calls.push_back(
          std::make_unique<Call>(names[i], "SELECT 1", i >= kSlots, Request::Kind::kRead));
      ASSERT_TRUE(h.registry().Submit(*calls.back()).ok());
    }
    ASSERT_EQ(h.registry().stats().sleeps, 0u) << "a victim was found while all were busy";
    uint64_t most_in_one_tick = 0;
    while (!std::all_of(calls.begin(), calls.end(), [](const auto& c) { return c->done; })) {
      ASSERT_GT(h.loop().pending(), 0u);
      const uint64_t before = h.registry().stats().sleeps;
      ASSERT_TRUE(h.loop().Run(loop::RunMode::kOnce).ok());
      most_in_one_tick = std::max(most_in_one_tick, h.registry().stats().sleeps - before);
    }
    for (const auto& c : calls) EXPECT_TRUE(c->result.ok()) << c->tenant << ": " << c->result;
    EXPECT_EQ(h.registry().stats().sleeps, uint64_t{kSlots});
    EXPECT_EQ(most_in_one_tick, budget == absl::ZeroDuration() ? uint64_t{kSlots} : 1u);
  }
}

// A shutdown closes every sleeper, and those closes touch no file, so hundreds can end in a
// few ticks; their Databases are freed kBuriedFreedPerTick per tick, not all in one.
TEST_P(RegistrySleepTest, AShutdownFreesItsClosedDatabasesABatchPerTick) {
  constexpr int kTenants = 2 * kBuriedFreedPerTick + 16;
  RegistryOptions options = Options();
  options.idle_trim_after = absl::InfiniteDuration();
  auto h = Make(options);
  for (int i = 0; i < kTenants; ++i) {
    const std::string name = absl::StrCat("s", i);  // Call keeps a view of it.
    Call create(name, "CREATE TABLE t(v)", true);
    ASSERT_TRUE(h->Do(create).ok()) << create.result;
  }
  ASSERT_EQ(h->registry().stats().asleep, uint32_t{kTenants - 1});
  RegistryStats last = h->registry().stats();
  uint32_t buried_max = 0;
  uint32_t most_freed = 0;  // At least: a tick's closes may bury more than it freed.
  h->Shutdown([&] {
    const RegistryStats now = h->registry().stats();
    buried_max = std::max(buried_max, now.buried);
    if (now.buried < last.buried) most_freed = std::max(most_freed, last.buried - now.buried);
    last = now;
  });
  EXPECT_GT(buried_max, kBuriedFreedPerTick) << "the scenario needs more closed than a batch";
  EXPECT_EQ(most_freed, kBuriedFreedPerTick);
  EXPECT_EQ(last.buried, 0u) << "the shutdown finished with Databases not freed";
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistrySleepTest, ::testing::ValuesIn(testing::RealBackends()),
                         testing::RealBackendName);

}  // namespace
}  // namespace sqloop::db
