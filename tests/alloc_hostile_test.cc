// Adversarial tests for the alloc layer: each attacks one documented invariant of
// alloc/sqlite_memory.h, alloc/arena.h or alloc/pmr.h from a direction the unit tests do not
// (another thread, a recycled id, a class boundary, a size at SQLite's own bound, every
// allocation of a workload failing in turn). SQLITE_CONFIG_MALLOC must come before any other
// sqlite3 use, so this binary installs the allocator first and holds only these tests.
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <latch>
#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/arena.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/pmr.h"
#include "sqloop/alloc/profile.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "tests/alloc_sqlite_test_support.h"

#if defined(__SANITIZE_ADDRESS__)
// The huge-request tests expect the heap's refusal as a status; AddressSanitizer's allocator
// aborts on an impossible size unless told to return null like malloc does.
// NOLINTNEXTLINE(bugprone-reserved-identifier)
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }
#endif

namespace sqloop::alloc {
namespace {

using ::testing::HasSubstr;

using test_support::Counters;
using test_support::LiveBytes;
using test_support::Register;

uint64_t Rounded(uint64_t size_bytes) { return (size_bytes + 7) / 8 * 8; }

bool Aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

int Exec(TenantId tenant, sqlite3* db, const char* sql) {
  ScopedTenant scope(tenant);
  return sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
}

std::string QueryText(TenantId tenant, sqlite3* db, const char* sql) {
  ScopedTenant scope(tenant);
  sqlite3_stmt* statement = nullptr;
  std::string text = "(no row)";
  if (sqlite3_prepare_v2(db, sql, -1, &statement, nullptr) == SQLITE_OK &&
      sqlite3_step(statement) == SQLITE_ROW) {
    text = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
  }
  sqlite3_finalize(statement);
  return text;
}

template <typename Body>
void OnFreshThread(Body body) {
  std::thread thread(body);
  thread.join();
}

// The block cache's 48 class sizes, as sqlite_memory.cc documents them: every 16 bytes up to
// 128, then four per doubling up to 128 KiB. Written out here so the test is an oracle, not a
// copy of the code under test.
std::vector<uint32_t> ClassSizes() {
  std::vector<uint32_t> sizes;
  for (uint32_t size = 16; size <= 128; size += 16) sizes.push_back(size);
  for (uint32_t top = 128; top < (128U << 10); top *= 2) {
    for (uint32_t quarter = 1; quarter <= 4; ++quarter) sizes.push_back(top + quarter * top / 4);
  }
  return sizes;
}
constexpr uint32_t kHeaderBytes = 16;
constexpr uint32_t kPageClassBytes = 5120;

// ---- Accounting ------------------------------------------------------------------------------

// Invariant 1 from the hardest side: the current tenant may allocate nothing at all, and the
// owner's block still grows and shrinks across size classes, past the largest class and back,
// charged to the owner and refused by the owner's limit only.
TEST(SqliteMemoryHostileTest, AReallocOfAnotherTenantsBlockIsChargedToItsOwnerWhateverIsCurrent) {
  const TenantId owner = Register("hostile-owner", 1 << 20);
  const TenantId full = Register("hostile-full", 0);
  constexpr char kPattern[] = "0123456789abcdefghijklmn";  // Copied with its terminator.
  char* block = nullptr;
  {
    ScopedTenant scope(owner);
    block = static_cast<char*>(sqlite3_malloc(40));
  }
  ASSERT_NE(block, nullptr);
  std::memcpy(block, kPattern, sizeof(kPattern));
  {
    ScopedTenant scope(full);
    ASSERT_EQ(sqlite3_malloc(8), nullptr) << "the current tenant must really be full";
    for (const int size : {100, 5000, 100000, 200000, 700000, 3000, 32}) {
      block = static_cast<char*>(sqlite3_realloc(block, size));
      ASSERT_NE(block, nullptr) << size;
      EXPECT_TRUE(Aligned16(block)) << size;
      EXPECT_EQ(sqlite3_msize(block), Rounded(size)) << size;
      EXPECT_EQ(LiveBytes(owner), Rounded(size)) << size;
      EXPECT_EQ(std::memcmp(block, kPattern, sizeof(kPattern)), 0) << size;
      // AddressSanitizer checks that every byte xSize reports is the block's.
      std::memset(block + sizeof(kPattern), 0x5a, sqlite3_msize(block) - sizeof(kPattern));
    }
    EXPECT_EQ(sqlite3_realloc(block, (1 << 20) + 8), nullptr) << "the owner's limit was ignored";
    EXPECT_EQ(std::memcmp(block, kPattern, sizeof(kPattern)), 0);
    sqlite3_free(block);
  }
  const ProfileCounters owner_counters = Counters(owner);
  EXPECT_EQ(owner_counters.live_bytes, 0u);
  EXPECT_EQ(owner_counters.failures, 1u);
  EXPECT_EQ(owner_counters.allocations, 8u);  // The malloc and seven resizes...
  EXPECT_EQ(owner_counters.frees, 8u);        // ...seven resizes and the free.
  EXPECT_EQ(owner_counters.peak_live_bytes, 700000u);
  const ProfileCounters full_counters = Counters(full);
  EXPECT_EQ(full_counters.failures, 1u) << "only the probe is the current tenant's failure";
  EXPECT_EQ(full_counters.allocations, 0u);
  EXPECT_EQ(full_counters.frees, 0u);
  EXPECT_TRUE(UnregisterTenant(owner).ok());
  EXPECT_TRUE(UnregisterTenant(full).ok());
}

// Sizes at SQLite's own bound (0x7fffff00 and up never reach the allocator), the largest size
// that does, a resize to past 1 GiB, zero and negative sizes: each is refused or served with
// xSize equal to xRoundup, the refused block intact, and the charge exact.
TEST(SqliteMemoryHostileTest, HugeAndZeroSizesAreRefusedOrServedWithExactCharges) {
  constexpr uint64_t kGibibyte = uint64_t{1} << 30;
  const TenantId tenant = Register("hostile-huge", kGibibyte);
  auto scope = std::make_unique<ScopedTenant>(tenant);
  EXPECT_EQ(sqlite3_malloc64(0x7fffff00), nullptr);
  EXPECT_EQ(sqlite3_malloc64(UINT64_MAX), nullptr);
  EXPECT_EQ(sqlite3_malloc(0), nullptr);
  EXPECT_EQ(sqlite3_malloc(-5), nullptr);
  EXPECT_EQ(Counters(tenant).failures, 0u) << "SQLite refuses these before the allocator";
  EXPECT_EQ(sqlite3_malloc64(0x7ffffeff), nullptr);
  EXPECT_EQ(Counters(tenant).failures, 1u) << "the limit, not the heap, refused 2 GiB";

  auto* block = static_cast<char*>(sqlite3_malloc(200000));
  ASSERT_NE(block, nullptr);
  block[0] = 'a';
  block[199999] = 'z';
  EXPECT_EQ(sqlite3_realloc64(block, kGibibyte + 8), nullptr);
  EXPECT_EQ(Counters(tenant).failures, 2u);
  EXPECT_EQ(LiveBytes(tenant), 200000u);
  EXPECT_EQ(block[0], 'a');
  EXPECT_EQ(block[199999], 'z');

  ASSERT_TRUE(SetTenantLimit(tenant, 2 * kGibibyte).ok());
  auto* grown = static_cast<char*>(sqlite3_realloc64(block, kGibibyte + 8));
  ASSERT_NE(grown, nullptr) << "raising the limit must make the same resize work";
  EXPECT_TRUE(Aligned16(grown));
  EXPECT_EQ(sqlite3_msize(grown), kGibibyte + 8);
  EXPECT_EQ(LiveBytes(tenant), kGibibyte + 8);
  EXPECT_EQ(grown[199999], 'z');
  grown[kGibibyte + 7] = 'y';
  block = static_cast<char*>(sqlite3_realloc(grown, 100));
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(sqlite3_msize(block), 104u);
  EXPECT_EQ(LiveBytes(tenant), 104u);
  EXPECT_EQ(block[0], 'a');
  EXPECT_EQ(sqlite3_realloc(block, 0), nullptr);  // SQLite frees the block.
  const ProfileCounters counters = Counters(tenant);
  EXPECT_EQ(counters.live_bytes, 0u);
  EXPECT_EQ(counters.allocations, counters.frees);
  EXPECT_EQ(counters.peak_live_bytes, kGibibyte + 8);
  scope.reset();
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
}

// Invariant 3 across threads. An allocator that adds a request to the live bytes first and takes
// it back when the sum crosses the limit (as this one once did) shows, for that moment, bytes
// that will never be charged, and a request on another thread that fits is refused. A tenant is
// used from two threads at once by design: db/internal/integrity_check.cc marks the database's
// tenant on its own thread while the loop serves requests. Invariant 3 promises NULL only to a
// tenant over its limit. The checker asks for too much until the loop is done, so the loop's
// requests keep meeting a refused one in flight: a correct allocator always passes, and a racy one
// fails unless the scheduler never runs the two threads at once.
TEST(SqliteMemoryHostileTest, AnOversizedRequestOnOneThreadNeverFailsAFittingOneOnAnother) {
  constexpr int kLimitBytes = 64 << 10;
  constexpr int kLoopRounds = 1000000;
  constexpr int kCheckerRoundsMax = 100000000;  // Only a bound: the loop's end stops it first.
  const TenantId tenant = Register("hostile-race", kLimitBytes);
  void* held = nullptr;
  {
    ScopedTenant scope(tenant);
    held = sqlite3_malloc(1024);  // Keeps the oversized request over the limit every time.
  }
  ASSERT_NE(held, nullptr);
  std::atomic<bool> loop_done{false};
  std::latch checker_started(1);
  int checker_successes = 0;
  int checker_rounds = 0;
  std::thread checker([&] {
    ScopedTenant scope(tenant);
    for (; checker_rounds < kCheckerRoundsMax && !loop_done.load(); ++checker_rounds) {
      void* block = sqlite3_malloc(kLimitBytes);
      if (block != nullptr) ++checker_successes;
      sqlite3_free(block);
      if (checker_rounds == 0) checker_started.count_down();
    }
  });
  checker_started.wait();
  int loop_refusals = 0;
  {
    ScopedTenant scope(tenant);
    for (int round = 0; round < kLoopRounds; ++round) {
      void* block = sqlite3_malloc(64);
      if (block == nullptr) ++loop_refusals;
      sqlite3_free(block);
    }
  }
  loop_done.store(true);
  checker.join();
  EXPECT_EQ(checker_successes, 0) << "the oversized request must always be refused";
  EXPECT_EQ(loop_refusals, 0) << "a request that fits was refused";
  EXPECT_LE(Counters(tenant).peak_live_bytes, uint64_t{kLimitBytes});
  sqlite3_free(held);
  EXPECT_EQ(LiveBytes(tenant), 0u);
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
}

// Invariant 5 against invariant 6: a ScopedTenant keeps its tenant's statistics in thread-local
// fields until it ends, and UnregisterTenant only checks the live bytes. A scope still open on
// another thread with nothing live lets the id be unregistered and recycled; without the
// registration's generation, the scope's end flushed the old tenant's allocations into the new
// tenant's fresh counters.
TEST(SqliteMemoryHostileTest, AScopeOpenOnAnotherThreadDoesNotCountIntoARecycledId) {
  const TenantId old_tenant = Register("hostile-recycled-old");
  std::promise<void> worked;
  std::promise<void> recycled;
  std::thread worker([&, done = recycled.get_future()] {
    ScopedTenant scope(old_tenant);
    for (int i = 0; i < 5; ++i) sqlite3_free(sqlite3_malloc(100));
    worked.set_value();
    done.wait();
  });
  worked.get_future().wait();
  ASSERT_EQ(LiveBytes(old_tenant), 0u);
  const absl::Status unregistered = UnregisterTenant(old_tenant);
  TenantId new_tenant = kSharedTenant;
  if (unregistered.ok()) new_tenant = Register("hostile-recycled-new");
  recycled.set_value();
  worker.join();
  if (!unregistered.ok()) {
    // Refusing while a scope is open is a correct answer too.
    EXPECT_EQ(unregistered.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(UnregisterTenant(old_tenant).ok());
    return;
  }
  ASSERT_EQ(new_tenant, old_tenant) << "the scenario needs the id recycled";
  const ProfileCounters fresh = Counters(new_tenant);
  EXPECT_EQ(fresh.allocations, 0u) << "the old tenant's statistics reached the new one";
  EXPECT_EQ(fresh.frees, 0u);
  EXPECT_EQ(fresh.bytes_allocated, 0u);
  EXPECT_TRUE(UnregisterTenant(new_tenant).ok());
}

// kTenantsMax tenants at once: the table's last slot works, one more is a clear
// ResourceExhausted naming the tenant and the way out, a duplicate name is refused without
// touching the tenant that has it, and a freed id and name are handed out again.
TEST(SqliteMemoryHostileTest, RunningOutOfTenantIdsIsAClearErrorAndAFreedIdComesBack) {
  std::vector<TenantId> ids;
  ids.reserve(kTenantsMax);
  absl::Status refused;
  for (size_t i = 0; i < kTenantsMax; ++i) {
    absl::StatusOr<TenantId> id = RegisterTenant(absl::StrCat("hostile-many-", i), 1 << 20);
    if (!id.ok()) {
      refused = id.status();
      break;
    }
    ids.push_back(*id);
  }
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_EQ(ids.size() + 1, kTenantsMax) << "every id but the shared one is usable";
  EXPECT_THAT(refused.message(), HasSubstr(absl::StrCat("'hostile-many-", ids.size(), "'")));
  EXPECT_THAT(refused.message(), HasSubstr(absl::StrCat(kTenantsMax)));
  EXPECT_THAT(refused.message(), HasSubstr("unregister tenants"));
  std::vector<TenantId> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "an id twice";
  EXPECT_EQ(sorted.back(), kTenantsMax - 1);
  {
    ScopedTenant scope(sorted.back());
    void* block = sqlite3_malloc(1000);
    ASSERT_NE(block, nullptr);
    EXPECT_EQ(LiveBytes(sorted.back()), 1000u);
    sqlite3_free(block);
  }
  EXPECT_EQ(RegisterTenant("hostile-many-0").status().code(), absl::StatusCode::kAlreadyExists)
      << "a duplicate name is the more useful error, even when the table is full";
  {
    ScopedTenant scope(ids[0]);
    EXPECT_EQ(sqlite3_malloc(2 << 20), nullptr) << "the duplicate reset the first one's limit";
  }
  const TenantId freed = ids[ids.size() / 2];
  ASSERT_TRUE(UnregisterTenant(freed).ok());
  // The freed name is free again, and the freed id is the one handed out.
  absl::StatusOr<TenantId> again = RegisterTenant(absl::StrCat("hostile-many-", ids.size() / 2));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, freed);
  EXPECT_EQ(RegisterTenant("hostile-one-too-many").status().code(),
            absl::StatusCode::kResourceExhausted);
  ids[ids.size() / 2] = *again;
  for (const TenantId id : ids) ASSERT_TRUE(UnregisterTenant(id).ok()) << id;
}

// ---- SQLite under pressure ----------------------------------------------------------------

// A workload that allocates in every way SQLite does: schema, the WAL index, a write
// transaction of some 600 KiB, a sort, a string grown by realloc far past the largest class,
// an index build and a delete.
constexpr char kInsertBlobs[] =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
    "INSERT INTO t(v) SELECT randomblob(2000 + i) FROM n";
constexpr const char* kWorkload[] = {
    "PRAGMA journal_mode=WAL",
    "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB)",
    kInsertBlobs,
    "SELECT v FROM t ORDER BY v DESC",
    "SELECT length(group_concat(hex(v))) FROM t",
    "CREATE INDEX IF NOT EXISTS t_v ON t(v)",
    "DELETE FROM t WHERE k % 2 = 0",
};

int Close(TenantId tenant, sqlite3* db) {
  ScopedTenant scope(tenant);
  return sqlite3_close(db);
}

// Opens `path` for `tenant`. An open that fails must fail with SQLITE_NOMEM and succeed again
// after `on_nomem()`. Counts the failure in `nomem`.
template <typename OnNomem>
sqlite3* OpenRecovering(TenantId tenant, const char* path, int* nomem, OnNomem on_nomem) {
  sqlite3* db = nullptr;
  const auto open = [&] {
    ScopedTenant scope(tenant);
    return sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  };
  int rc = open();
  if (rc != SQLITE_OK) {
    EXPECT_EQ(rc, SQLITE_NOMEM);
    EXPECT_EQ(Close(tenant, db), SQLITE_OK);
    ++*nomem;
    on_nomem();
    rc = open();
  }
  EXPECT_EQ(rc, SQLITE_OK);
  return db;
}

// Runs each statement of `workload`. One that fails must fail with SQLITE_NOMEM and succeed
// when run again on the same connection after `on_nomem()`. Counts the failures in `nomem`.
template <size_t kCount, typename OnNomem>
void RunRecovering(TenantId tenant, sqlite3* db, const char* const (&workload)[kCount], int* nomem,
                   OnNomem on_nomem) {
  for (const char* sql : workload) {
    int rc = Exec(tenant, db, sql);
    if (rc != SQLITE_OK) {
      EXPECT_EQ(rc, SQLITE_NOMEM) << sql << ": " << sqlite3_errmsg(db);
      ++*nomem;
      on_nomem();
      rc = Exec(tenant, db, sql);
    }
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << sqlite3_errmsg(db);
  }
}

// Invariant 3 swept over limits from a few KiB to more than the workload needs: wherever the
// limit bites (the open, the schema, the WAL, the sort, the realloc'd string), the statement
// gets SQLITE_NOMEM, nothing crosses the limit, raising it makes the same statement work on the
// same connection, the database is intact, and closing gives back every byte.
TEST(SqliteMemoryHostileTest, UnderAnyLimitAStatementGetsNomemAndTheConnectionRecovers) {
  const std::string path = ::testing::TempDir() + "/hostile_sweep.db";
  int runs_with_nomem = 0;
  bool last_run_clean = false;
  int nomem = 0;
  for (uint64_t limit = 4096; limit <= (16U << 20); limit = limit * 3 / 2) {
    SCOPED_TRACE(absl::StrCat("limit ", limit));
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
    const TenantId tenant = Register("hostile-sweep", limit);
    const auto raise_limit = [&] {
      EXPECT_GT(Counters(tenant).failures, 0u);
      EXPECT_LE(Counters(tenant).peak_live_bytes, limit) << "the limit was crossed";
      EXPECT_TRUE(SetTenantLimit(tenant, kTenantNoLimit).ok());
    };
    const int nomem_before = nomem;
    sqlite3* db = OpenRecovering(tenant, path.c_str(), &nomem, raise_limit);
    RunRecovering(tenant, db, kWorkload, &nomem, raise_limit);
    const bool failed = nomem > nomem_before;
    EXPECT_LE(nomem - nomem_before, 1) << "a statement failed after the limit was raised";
    if (!failed) {
      EXPECT_LE(Counters(tenant).peak_live_bytes, limit) << "the limit was crossed";
    }
    EXPECT_EQ(QueryText(tenant, db, "PRAGMA integrity_check"), "ok");
    EXPECT_EQ(QueryText(tenant, db, "SELECT count(*) FROM t"), "150");
    ASSERT_EQ(Close(tenant, db), SQLITE_OK);
    EXPECT_EQ(LiveBytes(tenant), 0u) << "the failed statement left bytes behind";
    ASSERT_TRUE(UnregisterTenant(tenant).ok());
    runs_with_nomem += failed ? 1 : 0;
    last_run_clean = !failed;
  }
  EXPECT_GE(runs_with_nomem, 5) << "the limits never bit";
  EXPECT_TRUE(last_run_clean) << "the largest limit must fit the whole workload";
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
}

// FailSqliteAllocationForTesting's promise (invariant 3 holds as for a real limit) checked at
// every allocation of an open and a workload in turn, as SQLite's own OOM tests do: each
// failure is SQLITE_NOMEM or harmless, the same connection then does the work, and the
// tenant's live bytes return to zero after every close.
TEST(SqliteMemoryHostileTest, EveryAllocationOfAWorkloadCanFailAndTheConnectionRecovers) {
  static constexpr char kInsertText[] =
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) "
      "INSERT INTO t(v) SELECT printf('%.*c', i * 300, 'x') FROM n";
  constexpr const char* kSteps[] = {
      "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v TEXT)",
      kInsertText,
      "SELECT v FROM t ORDER BY v DESC",
      "SELECT length(group_concat(v)) FROM t",
      "CREATE INDEX IF NOT EXISTS t_v ON t(v)",
  };
  constexpr uint64_t kAllocationsMax = 20000;  // Far above what the workload makes.
  const TenantId tenant = Register("hostile-inject");
  bool workload_outran = false;
  int nomem = 0;
  uint64_t nth = 1;
  for (; nth <= kAllocationsMax && !workload_outran; ++nth) {
    SCOPED_TRACE(absl::StrCat("failing allocation ", nth));
    const uint64_t injected_before = SqliteAllocationFailuresInjected();
    const int nomem_before = nomem;
    FailSqliteAllocationForTesting(tenant, nth);
    sqlite3* db = OpenRecovering(tenant, ":memory:", &nomem, [] {});
    RunRecovering(tenant, db, kSteps, &nomem, [] {});
    FailSqliteAllocationForTesting(tenant, 0);
    workload_outran = SqliteAllocationFailuresInjected() == injected_before;
    ASSERT_LE(nomem - nomem_before, 1) << "one failed allocation, one failed call at most";
    EXPECT_EQ(QueryText(tenant, db, "SELECT count(*) FROM t"), "30");
    EXPECT_EQ(QueryText(tenant, db, "PRAGMA integrity_check"), "ok");
    ASSERT_EQ(Close(tenant, db), SQLITE_OK);
    ASSERT_EQ(LiveBytes(tenant), 0u) << "a failed allocation leaked";
  }
  EXPECT_TRUE(workload_outran) << "the sweep did not reach the workload's last allocation";
  EXPECT_GT(nomem, static_cast<int>(nth / 2)) << "most failures must reach the caller";
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
}

// A tenant that prepares statements until its limit refuses one gets SQLITE_NOMEM for that
// prepare only: the statements it holds still run, and finalizing them gives every byte back.
TEST(SqliteMemoryHostileTest, PreparingStatementsUntilTheLimitFailsOnlyTheLastOne) {
  const TenantId tenant = Register("hostile-statements");
  sqlite3* db = nullptr;
  auto scope = std::make_unique<ScopedTenant>(tenant);
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE t(a, b); INSERT INTO t VALUES(1, 'x')", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  const uint64_t baseline = LiveBytes(tenant);
  ASSERT_TRUE(SetTenantLimit(tenant, baseline + (256 << 10)).ok());
  std::vector<sqlite3_stmt*> statements;
  int rc = SQLITE_OK;
  for (int i = 0; i < 20000 && rc == SQLITE_OK; ++i) {
    const std::string sql = absl::StrCat("SELECT a + ", i, ", b || '", i, "' FROM t ORDER BY a");
    sqlite3_stmt* statement = nullptr;
    rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr);
    if (statement != nullptr) statements.push_back(statement);
  }
  ASSERT_EQ(rc, SQLITE_NOMEM) << "the limit was never hit";
  EXPECT_EQ(sqlite3_errcode(db), SQLITE_NOMEM);
  ASSERT_GT(statements.size(), 10U);
  // Half of them make room for the others' cursors and sorters.
  for (size_t i = statements.size() / 2; i < statements.size(); ++i) {
    sqlite3_finalize(statements[i]);
  }
  statements.resize(statements.size() / 2);
  for (sqlite3_stmt* statement : statements) {
    EXPECT_EQ(sqlite3_step(statement), SQLITE_ROW) << sqlite3_errmsg(db);
    EXPECT_EQ(sqlite3_finalize(statement), SQLITE_OK);
  }
  EXPECT_EQ(LiveBytes(tenant), baseline) << "finalizing did not give every byte back";
  ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
  EXPECT_EQ(LiveBytes(tenant), 0u);
  scope.reset();
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
}

// Loops on several threads, each with its own tenant and a connection of its own, that also
// free blocks a neighbour allocated: each tenant is charged exactly its own work, each free is
// credited to the owner, nothing reaches the shared tenant, and every thread exits with its
// block cache full (LeakSanitizer checks that it is freed).
TEST(SqliteMemoryHostileTest, LoopsOnManyThreadsAreChargedExactlyAndFreeEachOthersBlocks) {
  constexpr int kThreads = 4;
  std::vector<TenantId> tenants(kThreads);
  for (int i = 0; i < kThreads; ++i) tenants[i] = Register(absl::StrCat("hostile-loop-", i));
  const ProfileCounters shared_before = Counters(kSharedTenant);
  std::vector<std::vector<void*>> handed(kThreads);
  std::vector<uint64_t> live_with_db_open(kThreads);
  std::latch allocated(kThreads);
  std::latch freed(kThreads);
  const auto loop = [&](int index) {
    ScopedTenant scope(tenants[index]);
    sqlite3* db = nullptr;
    SQLOOP_CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK, "test: open");
    const std::string rows = absl::StrCat(
        "CREATE TABLE t(v); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        "WHERE i < ",
        (index + 1) * 50, ") INSERT INTO t SELECT randomblob(700) FROM n; ",
        "SELECT v FROM t ORDER BY v");
    SQLOOP_CHECK(sqlite3_exec(db, rows.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK, "exec");
    // Loop i hands i + 1 blocks over: a free credited to whoever frees would not balance out.
    for (int i = 0; i <= index; ++i) handed[index].push_back(sqlite3_malloc(40 + 75000 * i));
    allocated.arrive_and_wait();
    for (void* block : handed[(index + 1) % kThreads]) sqlite3_free(block);
    freed.arrive_and_wait();
    live_with_db_open[index] = LiveBytes(tenants[index]);
    sqlite3_close(db);
  };
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(loop, i);
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kThreads; ++i) {
    SCOPED_TRACE(i);
    const ProfileCounters counters = Counters(tenants[i]);
    EXPECT_EQ(counters.live_bytes, 0u);
    EXPECT_EQ(counters.allocations, counters.frees);
    EXPECT_EQ(counters.failures, 0u);
    EXPECT_GT(counters.peak_live_bytes, live_with_db_open[i]);
    // Each loop stores 35,000 bytes more than the one before it.
    if (i > 0) {
      EXPECT_GT(live_with_db_open[i], live_with_db_open[i - 1] + 30000);
    }
    EXPECT_TRUE(UnregisterTenant(tenants[i]).ok());
  }
  const ProfileCounters shared_after = Counters(kSharedTenant);
  EXPECT_EQ(shared_after.live_bytes, shared_before.live_bytes);
  EXPECT_EQ(shared_after.allocations, shared_before.allocations) << "work leaked into shared";
}

// ---- The block cache (invariant 7) -----------------------------------------------------------
// Its lists and counters are per thread: each test runs on a fresh thread.

// Every class boundary: a freed block comes back for the smallest and the largest request of
// its class, never for a request one step larger, and past 128 KiB nothing is cached.
TEST(SqliteBlockCacheHostileTest, ABlockIsHandedOutAgainOnlyWithinItsSizeClass) {
  OnFreshThread([] {
    const std::vector<uint32_t> sizes = ClassSizes();
    ASSERT_EQ(sizes.size(), 48U);
    for (size_t c = 1; c < sizes.size(); ++c) {
      SCOPED_TRACE(sizes[c]);
      const int largest = static_cast<int>(sizes[c] - kHeaderBytes);
      const int smallest = static_cast<int>(sizes[c - 1] - kHeaderBytes + 8);
      const SqliteBlockCacheStats before = GetSqliteBlockCacheStats();
      auto* block = static_cast<char*>(sqlite3_malloc(largest));
      ASSERT_NE(block, nullptr);
      std::memset(block, 0x5a, sqlite3_msize(block));
      sqlite3_free(block);
      void* again = sqlite3_malloc(smallest);
      EXPECT_EQ(again, block);
      std::memset(again, 0x5a, sqlite3_msize(again));
      sqlite3_free(again);
      void* larger = sqlite3_malloc(largest + 8);
      EXPECT_NE(larger, block);
      sqlite3_free(larger);
      const SqliteBlockCacheStats after = GetSqliteBlockCacheStats();
      EXPECT_EQ(after.hits - before.hits, 1U);
      EXPECT_EQ(after.misses - before.misses, c + 1 < sizes.size() ? 2U : 1U);
      ReleaseSqliteBlockCache();
    }
  });
}

// Each class keeps the per-class limit's worth of blocks, or two blocks if that is more, and
// the page class a default page cache's worth: not one block more, whatever is freed.
TEST(SqliteBlockCacheHostileTest, EachClassKeepsItsByteBudgetAndNotOneBlockMore) {
  OnFreshThread([] {
    const std::vector<uint32_t> sizes = ClassSizes();
    uint64_t cached_bytes = 0;
    for (size_t c = 1; c < sizes.size(); ++c) {
      SCOPED_TRACE(sizes[c]);
      const uint32_t budget =
          std::max({kSqliteBlockCacheBytesPerClassDefault, 2 * sizes[c],
                    sizes[c] == kPageClassBytes ? kSqliteBlockCachePageBytes : uint32_t{0}});
      const uint64_t keep = budget / sizes[c];
      std::vector<void*> blocks(keep + 2);
      const SqliteBlockCacheStats before = GetSqliteBlockCacheStats();
      for (void*& block : blocks) {
        block = sqlite3_malloc(static_cast<int>(sizes[c] - kHeaderBytes));
      }
      for (void* block : blocks) sqlite3_free(block);
      const SqliteBlockCacheStats after = GetSqliteBlockCacheStats();
      EXPECT_EQ(after.kept - before.kept, keep);
      EXPECT_EQ(after.released - before.released, 2U);
      cached_bytes += keep * sizes[c];
      EXPECT_EQ(after.cached_bytes, cached_bytes);
    }
    ReleaseSqliteBlockCache();
    EXPECT_EQ(GetSqliteBlockCacheStats().cached_bytes, 0U);
  });
}

// Any uint32_t is a valid SetSqliteBlockCacheBytesPerClass argument: with a per-class limit near
// 4 GiB, a class's cached bytes plus one more block summed in 32 bits (as they once were) wrap
// past zero, and the class kept every block freed to it.
TEST(SqliteBlockCacheHostileTest, APerClassLimitNearFourGibibytesStillBoundsTheClass) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "4 GiB of cached blocks poisoned for AddressSanitizer need 512 MiB of shadow";
#else
  OnFreshThread([] {
    SetSqliteBlockCacheBytesPerClass(UINT32_MAX);
    constexpr uint32_t kBlockBytes = 128 << 10;  // The largest class: fewest blocks to 4 GiB.
    std::vector<void*> blocks(UINT32_MAX / kBlockBytes + 2);  // Two more than the class holds.
    for (void*& block : blocks) block = sqlite3_malloc(kBlockBytes - kHeaderBytes);
    const auto refused = std::count(blocks.begin(), blocks.end(), nullptr);
    for (void* block : blocks) sqlite3_free(block);
    const SqliteBlockCacheStats stats = GetSqliteBlockCacheStats();
    SetSqliteBlockCacheBytesPerClass(kSqliteBlockCacheBytesPerClassDefault);
    ReleaseSqliteBlockCache();
    ASSERT_EQ(refused, 0) << "the heap refused 4 GiB of address space: no scenario";
    EXPECT_EQ(stats.misses, blocks.size());
    EXPECT_LE(stats.cached_bytes, UINT32_MAX) << "the class kept more than its limit";
    EXPECT_EQ(stats.released, 2U);
  });
#endif
}

// ---- Arena and ArenaResource -----------------------------------------------------------------

// Invariant 4 up to 2^63, against invariant 3: a request whose padding the limit (or the heap)
// cannot supply is refused with the arena unchanged, and every other one is aligned.
TEST(ArenaHostileTest, EveryPowerOfTwoAlignmentIsHonouredOrRefusedNeverMisplaced) {
  constexpr size_t kLimitBytes = size_t{64} << 20;
  constexpr size_t kFirstChunkBytes = 64;
  Arena arena(
      {.name = "hostile-align", .first_chunk_bytes = kFirstChunkBytes, .limit_bytes = kLimitBytes});
  Arena unlimited({.name = "hostile-align-unlimited"});
  uint64_t refusals = 0;
  for (int shift = 0; shift < 64; ++shift) {
    SCOPED_TRACE(shift);
    const size_t alignment = size_t{1} << shift;
    ASSERT_TRUE(arena.Allocate(8, 1).ok());  // Misaligns the cursor.
    const ArenaStats before = arena.stats();
    absl::StatusOr<void*> memory = arena.Allocate(24, alignment);
    // Up to 32 bytes the request fits the first chunk or a small new one; beyond, a new chunk
    // needs the request, its 16-byte header and up to alignment - 1 bytes of padding, within
    // what the first chunk left of the limit.
    const bool fits = shift <= 5 || alignment - 1 + 16 + 24 <= kLimitBytes - kFirstChunkBytes;
    ASSERT_EQ(memory.ok(), fits) << memory.status();
    if (fits) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(*memory) % alignment, 0U);
      std::memset(*memory, 0x5a, 24);
    } else {
      ++refusals;
      EXPECT_EQ(memory.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_THAT(memory.status().message(), HasSubstr(absl::StrCat("(alignment ", alignment)));
      EXPECT_EQ(arena.stats().bytes_reserved, before.bytes_reserved);
      EXPECT_EQ(arena.stats().bytes_used, before.bytes_used);
      EXPECT_EQ(arena.stats().allocations, before.allocations);
    }
    EXPECT_LE(arena.stats().bytes_reserved, kLimitBytes);
    arena.Reset();
  }
  EXPECT_EQ(arena.stats().failures, refusals);
  EXPECT_EQ(refusals, 38U);  // Alignments of 64 MiB (2^26) to 2^63.
  for (const int shift : {20, 48, 62, 63}) {
    absl::StatusOr<void*> memory = unlimited.Allocate(24, size_t{1} << shift);
    if (shift == 20) {
      ASSERT_TRUE(memory.ok()) << memory.status();
      EXPECT_EQ(reinterpret_cast<uintptr_t>(*memory) % (size_t{1} << 20), 0U);
    } else {
      EXPECT_EQ(memory.status().code(), absl::StatusCode::kResourceExhausted) << shift;
    }
  }
  EXPECT_EQ(unlimited.stats().failures, 3U);
  EXPECT_TRUE(arena.Allocate(24).ok()) << "the arena must stay usable";
}

// A fixed pseudo-random mix of sizes (zero, small, larger than the limit) and alignments
// against a small limit: the reserve never crosses the limit, a refusal changes nothing but
// the failure count, live allocations never overlap, and Reset() always returns the arena to
// its first chunk (or to nothing, when a burst enlarged it).
TEST(ArenaHostileTest, ARandomMixNeverCrossesTheLimitAndARefusalChangesNothing) {
  constexpr size_t kLimitBytes = 16 << 10;
  constexpr size_t kFirstChunkBytes = 256;
  Arena arena(
      {.name = "hostile-mix", .first_chunk_bytes = kFirstChunkBytes, .limit_bytes = kLimitBytes});
  uint64_t state = 0x9e3779b97f4a7c15;  // A fixed seed: the same mix on every run.
  const auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  int refusals = 0;
  for (int round = 0; round < 40; ++round) {
    std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
    for (int i = 0; i < 100; ++i) {
      const size_t size = next() % 4 == 0 ? next() % 20000 : next() % 300;
      const size_t alignment = size_t{1} << (next() % 12);
      const ArenaStats before = arena.stats();
      absl::StatusOr<void*> memory = arena.Allocate(size, alignment);
      const ArenaStats& after = arena.stats();
      ASSERT_LE(after.bytes_reserved, kLimitBytes);
      if (!memory.ok()) {
        ++refusals;
        EXPECT_EQ(memory.status().code(), absl::StatusCode::kResourceExhausted);
        EXPECT_EQ(after.bytes_reserved, before.bytes_reserved);
        EXPECT_EQ(after.chunks, before.chunks);
        EXPECT_EQ(after.bytes_used, before.bytes_used);
        EXPECT_EQ(after.allocations, before.allocations);
        EXPECT_EQ(after.failures, before.failures + 1);
        continue;
      }
      const auto address = reinterpret_cast<uintptr_t>(*memory);
      EXPECT_EQ(address % alignment, 0U);
      if (size == 0) continue;
      std::memset(*memory, static_cast<int>(i), size);
      ranges.emplace_back(address, address + size);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) ASSERT_LE(ranges[i - 1].second, ranges[i].first);
    arena.Reset();
    EXPECT_EQ(arena.stats().bytes_used, 0U);
    EXPECT_LE(arena.stats().chunks, 1U);
    EXPECT_LE(arena.stats().bytes_reserved, kFirstChunkBytes);
  }
  EXPECT_GT(refusals, 40) << "the limit never bit";
}

// pmr.h's contract at the edge: a container that outgrows the arena gets ArenaExhaustedError
// (a std::bad_alloc carrying the arena's message) and keeps its elements (push_back's strong
// guarantee relies on the throw); impossible sizes throw whether the limit or the heap refuses;
// after Reset() the arena serves over-aligned requests and new containers again.
TEST(ArenaResourceHostileTest, AContainerThatOutgrowsTheArenaStaysIntactAndTheArenaRecovers) {
  Arena arena({.name = "hostile-pmr", .first_chunk_bytes = 1024, .limit_bytes = 64 << 10});
  ArenaResource resource(&arena);
  {
    std::pmr::vector<uint64_t> values(&resource);
    bool thrown = false;
    for (uint64_t i = 0; i < 100000 && !thrown; ++i) {
      try {
        values.push_back(i);
      } catch (const std::bad_alloc& error) {
        thrown = true;
        EXPECT_NE(dynamic_cast<const ArenaExhaustedError*>(&error), nullptr);
        EXPECT_THAT(error.what(), HasSubstr("arena 'hostile-pmr'"));
        ASSERT_EQ(values.size(), i);
        for (uint64_t j = 0; j < i; ++j) ASSERT_EQ(values[j], j);
      }
    }
    ASSERT_TRUE(thrown) << "the limit was never hit";
  }
  EXPECT_LE(arena.stats().bytes_reserved, 64U << 10);
  EXPECT_THROW((void)resource.allocate(SIZE_MAX / 2, 8), ArenaExhaustedError);
  Arena unlimited({.name = "hostile-pmr-unlimited"});
  ArenaResource unlimited_resource(&unlimited);
  EXPECT_THROW((void)unlimited_resource.allocate(SIZE_MAX / 2, 8), ArenaExhaustedError);
  arena.Reset();
  void* page = resource.allocate(64, 4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(page) % 4096, 0U);
  resource.deallocate(page, 64, 4096);
  std::pmr::vector<uint64_t> again(&resource);
  again.reserve(1000);
  for (uint64_t i = 0; i < 1000; ++i) again.push_back(i);
  EXPECT_EQ(again[999], 999U);
}

}  // namespace
}  // namespace sqloop::alloc
