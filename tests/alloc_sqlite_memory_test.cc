// Tests for the accounting allocator of SQLite's heap. This binary installs the allocator
// before any sqlite3 call (SQLITE_CONFIG_MALLOC must come first), so it holds only these tests.
#include <malloc.h>
#include <sqlite3.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/profile.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "tests/alloc_sqlite_test_support.h"

namespace sqloop::alloc {
namespace {

using ::testing::HasSubstr;

using test_support::Counters;
using test_support::LiveBytes;
using test_support::Register;

// Opens an in-memory database with `tenant` current, so the connection is the tenant's.
sqlite3* Open(TenantId tenant) {
  ScopedTenant scope(tenant);
  sqlite3* db = nullptr;
  SQLOOP_CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK, "test: sqlite3_open failed");
  return db;
}

int Exec(TenantId tenant, sqlite3* db, const std::string& sql) {
  ScopedTenant scope(tenant);
  return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
}

int64_t QueryInt(TenantId tenant, sqlite3* db, const std::string& sql) {
  ScopedTenant scope(tenant);
  sqlite3_stmt* statement = nullptr;
  SQLOOP_CHECK(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK,
               "test: prepare failed");
  SQLOOP_CHECK(sqlite3_step(statement) == SQLITE_ROW, "test: no row");
  const int64_t value = sqlite3_column_int64(statement, 0);
  sqlite3_finalize(statement);
  return value;
}

void Close(TenantId tenant, sqlite3* db) {
  ScopedTenant scope(tenant);
  SQLOOP_CHECK(sqlite3_close(db) == SQLITE_OK, "test: sqlite3_close failed");
}

TEST(SqliteMemoryTest, InstallIsIdempotent) {
  EXPECT_TRUE(SqliteMemoryInstalled());
  EXPECT_TRUE(InstallSqliteMemory().ok());
  EXPECT_TRUE(InstallSqliteMemory().ok());
}

TEST(SqliteMemoryTest, UnmarkedAllocationsGoToSharedAndStayAligned) {
  ASSERT_EQ(CurrentTenant(), kSharedTenant);
  const ProfileCounters before = Counters(kSharedTenant);
  void* block = sqlite3_malloc(1000);
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % 16, 0u);
  EXPECT_EQ(sqlite3_msize(block), 1000u);
  EXPECT_EQ(LiveBytes(kSharedTenant), before.live_bytes + 1000);
  EXPECT_EQ(Counters(kSharedTenant).allocations, before.allocations + 1);
  sqlite3_free(block);
  EXPECT_EQ(LiveBytes(kSharedTenant), before.live_bytes);
  // Odd sizes are rounded up to 8 and stay 16-byte aligned.
  for (const int size : {1, 13, 17, 255}) {
    void* odd = sqlite3_malloc(size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(odd) % 16, 0u);
    EXPECT_EQ(sqlite3_msize(odd) % 8, 0u);
    EXPECT_GE(sqlite3_msize(odd), static_cast<sqlite3_uint64>(size));
    sqlite3_free(odd);
  }
}

TEST(SqliteMemoryTest, ScopesNestAndRestore) {
  const TenantId a = Register("nest-a");
  const TenantId b = Register("nest-b");
  {
    ScopedTenant outer(a);
    EXPECT_EQ(CurrentTenant(), a);
    {
      ScopedTenant inner(b);
      EXPECT_EQ(CurrentTenant(), b);
    }
    EXPECT_EQ(CurrentTenant(), a);
  }
  EXPECT_EQ(CurrentTenant(), kSharedTenant);
  EXPECT_TRUE(UnregisterTenant(a).ok());
  EXPECT_TRUE(UnregisterTenant(b).ok());
}

TEST(SqliteMemoryTest, TwoInterleavedTenantsAreChargedForTheirOwnWork) {
  const TenantId heavy = Register("heavy");
  const TenantId light = Register("light");
  sqlite3* heavy_db = Open(heavy);
  sqlite3* light_db = Open(light);
  ASSERT_EQ(Exec(heavy, heavy_db, "CREATE TABLE t(v BLOB)"), SQLITE_OK);
  ASSERT_EQ(Exec(light, light_db, "CREATE TABLE t(v BLOB)"), SQLITE_OK);
  // Alternate, as one loop stepping two databases would: heavy stores ~1 MB, light ~2 KB.
  for (int round = 0; round < 20; ++round) {
    ASSERT_EQ(Exec(heavy, heavy_db,
                   "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) "
                   "INSERT INTO t SELECT randomblob(1024) FROM n"),
              SQLITE_OK);
    ASSERT_EQ(Exec(light, light_db, "INSERT INTO t VALUES(randomblob(100))"), SQLITE_OK);
  }
  EXPECT_EQ(QueryInt(heavy, heavy_db, "SELECT count(*) FROM t"), 1000);
  EXPECT_EQ(QueryInt(light, light_db, "SELECT count(*) FROM t"), 20);

  const ProfileCounters heavy_counters = Counters(heavy);
  const ProfileCounters light_counters = Counters(light);
  EXPECT_GT(light_counters.live_bytes, 0u);
  // The page cache holding heavy's megabyte is heavy's, not light's.
  EXPECT_GT(heavy_counters.live_bytes, light_counters.live_bytes + 900 * 1024);
  EXPECT_GT(heavy_counters.bytes_allocated, light_counters.bytes_allocated);
  EXPECT_GE(heavy_counters.peak_live_bytes, heavy_counters.live_bytes);

  // Closing heavy's connection while light is current credits heavy, the owner.
  const uint64_t light_live = LiveBytes(light);
  Close(light, heavy_db);
  EXPECT_EQ(LiveBytes(heavy), 0u);
  EXPECT_EQ(LiveBytes(light), light_live);
  EXPECT_EQ(Counters(heavy).allocations, Counters(heavy).frees);
  Close(light, light_db);
  EXPECT_EQ(LiveBytes(light), 0u);
  EXPECT_TRUE(UnregisterTenant(heavy).ok());
  EXPECT_TRUE(UnregisterTenant(light).ok());
}

TEST(SqliteMemoryTest, TenantOverItsLimitGetsNomemAndRecovers) {
  const TenantId capped = Register("capped");
  const TenantId neighbour = Register("neighbour");
  sqlite3* capped_db = Open(capped);
  sqlite3* neighbour_db = Open(neighbour);
  ASSERT_EQ(Exec(capped, capped_db, "CREATE TABLE t(v BLOB)"), SQLITE_OK);
  ASSERT_EQ(Exec(neighbour, neighbour_db, "CREATE TABLE t(v BLOB)"), SQLITE_OK);
  ASSERT_EQ(Exec(capped, capped_db, "INSERT INTO t VALUES(randomblob(10))"), SQLITE_OK);

  // Room for small statements, not for a 1 MB blob.
  const uint64_t limit_bytes = LiveBytes(capped) + 64 * 1024;
  ASSERT_TRUE(SetTenantLimit(capped, limit_bytes).ok());
  const std::string big_insert = "INSERT INTO t VALUES(randomblob(1000000))";
  EXPECT_EQ(Exec(capped, capped_db, big_insert), SQLITE_NOMEM);
  EXPECT_GT(Counters(capped).failures, 0u);
  EXPECT_LE(LiveBytes(capped), limit_bytes);
  EXPECT_LE(Counters(capped).peak_live_bytes, limit_bytes)
      << "the limit was crossed before it was enforced";

  // The next request, on another tenant, succeeds.
  EXPECT_EQ(Exec(neighbour, neighbour_db, big_insert), SQLITE_OK);
  EXPECT_EQ(Counters(neighbour).failures, 0u);
  // The capped tenant's database is intact and still serves small requests under its limit.
  EXPECT_EQ(QueryInt(capped, capped_db, "SELECT count(*) FROM t"), 1);

  // Raising the limit makes the same request work on the same connection.
  ASSERT_TRUE(SetTenantLimit(capped, kTenantNoLimit).ok());
  EXPECT_EQ(Exec(capped, capped_db, big_insert), SQLITE_OK);
  EXPECT_EQ(QueryInt(capped, capped_db, "SELECT count(*) FROM t"), 2);
  EXPECT_EQ(QueryInt(capped, capped_db, "SELECT sum(length(v)) FROM t"), 1000010);

  // Nothing the failed statement took was left behind.
  Close(capped, capped_db);
  Close(neighbour, neighbour_db);
  EXPECT_EQ(LiveBytes(capped), 0u);
  EXPECT_EQ(LiveBytes(neighbour), 0u);
  EXPECT_TRUE(UnregisterTenant(capped).ok());
  EXPECT_TRUE(UnregisterTenant(neighbour).ok());
}

// The simulator's out-of-memory hook: exactly the Nth allocation of the armed tenant fails,
// once; another tenant's allocations neither fail nor count; the statement gets SQLITE_NOMEM,
// the connection stays usable, and nothing leaks.
TEST(SqliteMemoryTest, TheArmedAllocationFailsOnceAndTheConnectionRecovers) {
  const TenantId armed = Register("armed");
  const TenantId other = Register("other");
  sqlite3* armed_db = Open(armed);
  sqlite3* other_db = Open(other);
  ASSERT_EQ(Exec(armed, armed_db, "CREATE TABLE t(v BLOB)"), SQLITE_OK);
  ASSERT_EQ(Exec(other, other_db, "CREATE TABLE t(v BLOB)"), SQLITE_OK);
  const uint64_t injected_before = SqliteAllocationFailuresInjected();
  FailSqliteAllocationForTesting(armed, 1);
  EXPECT_EQ(Exec(other, other_db, "INSERT INTO t VALUES(randomblob(100))"), SQLITE_OK);
  EXPECT_EQ(Exec(armed, armed_db, "INSERT INTO t VALUES(randomblob(100))"), SQLITE_NOMEM);
  EXPECT_EQ(SqliteAllocationFailuresInjected(), injected_before + 1);
  EXPECT_EQ(Exec(armed, armed_db, "INSERT INTO t VALUES(randomblob(100))"), SQLITE_OK);
  EXPECT_EQ(QueryInt(armed, armed_db, "SELECT count(*) FROM t"), 1);
  FailSqliteAllocationForTesting(armed, 0);
  Close(armed, armed_db);
  Close(other, other_db);
  EXPECT_EQ(LiveBytes(armed), 0u) << "the failed statement leaked";
  EXPECT_TRUE(UnregisterTenant(armed).ok());
  EXPECT_TRUE(UnregisterTenant(other).ok());
}

TEST(SqliteMemoryTest, ReallocIsChargedToTheOwner) {
  const TenantId owner = Register("realloc-owner", 4096);
  const TenantId other = Register("realloc-other");
  void* block = nullptr;
  {
    ScopedTenant scope(owner);
    block = sqlite3_malloc(100);
  }
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(LiveBytes(owner), 104u);
  {
    ScopedTenant scope(other);
    void* grown = sqlite3_realloc(block, 2000);
    ASSERT_NE(grown, nullptr);
    block = grown;
    EXPECT_EQ(LiveBytes(owner), 2000u);
    EXPECT_EQ(LiveBytes(other), 0u);
    // Growth past the owner's 4 KiB limit is refused and the block is left intact.
    static_cast<char*>(block)[1999] = 'x';
    EXPECT_EQ(sqlite3_realloc(block, 8000), nullptr);
    EXPECT_EQ(static_cast<char*>(block)[1999], 'x');
    EXPECT_EQ(LiveBytes(owner), 2000u);
    EXPECT_EQ(Counters(owner).failures, 1u);
    // Shrinking returns bytes to the owner.
    block = sqlite3_realloc(block, 500);
    ASSERT_NE(block, nullptr);
    EXPECT_EQ(LiveBytes(owner), 504u);
    sqlite3_free(block);
  }
  EXPECT_EQ(LiveBytes(owner), 0u);
  EXPECT_EQ(Counters(owner).peak_live_bytes, 2000u);
  EXPECT_EQ(Counters(other).allocations, 0u);
  EXPECT_TRUE(UnregisterTenant(owner).ok());
  EXPECT_TRUE(UnregisterTenant(other).ok());
}

TEST(SqliteMemoryTest, UnregisterRefusesWhileMemoryIsLive) {
  const TenantId tenant = Register("busy");
  sqlite3* db = Open(tenant);
  const absl::Status refused = UnregisterTenant(tenant);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("'busy'"));
  EXPECT_THAT(refused.message(), HasSubstr("close its connections"));
  Close(tenant, db);
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
  // The id is recycled with fresh counters.
  const TenantId again = Register("busy-again");
  EXPECT_EQ(again, tenant);
  EXPECT_EQ(Counters(again).allocations, 0u);
  EXPECT_EQ(Counters(again).peak_live_bytes, 0u);
  EXPECT_TRUE(UnregisterTenant(again).ok());
}

TEST(SqliteMemoryTest, RegistrationErrors) {
  const TenantId tenant = Register("unique");
  EXPECT_EQ(RegisterTenant("unique").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(RegisterTenant("shared").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(UnregisterTenant(kSharedTenant).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnregisterTenant(12345).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnregisterTenant(kTenantsMax + 7).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetTenantLimit(kSharedTenant, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetTenantCounters(12345).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
  EXPECT_EQ(UnregisterTenant(tenant).code(), absl::StatusCode::kInvalidArgument);
}

// Two loops on two threads: the current tenant is per thread, so each thread's work lands on
// its own tenant even while the other thread runs with another one.
TEST(SqliteMemoryTest, CurrentTenantIsPerThread) {
  const TenantId first = Register("thread-1");
  const TenantId second = Register("thread-2");
  const uint64_t shared_live = LiveBytes(kSharedTenant);
  const auto work = [](TenantId tenant, int rows, uint64_t* live_bytes) {
    ScopedTenant scope(tenant);
    sqlite3* db = nullptr;
    SQLOOP_CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK, "test: open");
    sqlite3_exec(db, "CREATE TABLE t(v)", nullptr, nullptr, nullptr);
    for (int i = 0; i < rows; ++i) {
      sqlite3_exec(db, "INSERT INTO t VALUES(randomblob(512))", nullptr, nullptr, nullptr);
    }
    *live_bytes = LiveBytes(tenant);
    sqlite3_close(db);
  };
  uint64_t first_live = 0;
  uint64_t second_live = 0;
  std::thread a(work, first, 2000, &first_live);
  std::thread b(work, second, 20, &second_live);
  a.join();
  b.join();
  EXPECT_EQ(CurrentTenant(), kSharedTenant);
  EXPECT_GT(first_live, second_live + 500 * 1024);
  EXPECT_GT(second_live, 0u);
  EXPECT_EQ(LiveBytes(first), 0u);
  EXPECT_EQ(LiveBytes(second), 0u);
  EXPECT_EQ(LiveBytes(kSharedTenant), shared_live) << "a thread's work leaked into shared";
  EXPECT_TRUE(UnregisterTenant(first).ok());
  EXPECT_TRUE(UnregisterTenant(second).ok());
}

// Invariant 6: inside a scope, live bytes are charged at once (another thread sees them), while
// the scope's own statistics reach the counters when it ends; a nested scope's tenant and a
// block of the outer tenant freed inside it are each counted where they belong.
TEST(SqliteMemoryTest, AScopesStatisticsReachItsCountersWhenItEnds) {
  const TenantId outer = Register("deferred-outer");
  const TenantId inner = Register("deferred-inner");
  std::promise<void> allocated;
  std::promise<void> looked;
  std::future<void> go_on = looked.get_future();
  void* kept_outer = nullptr;
  void* kept_inner = nullptr;
  std::thread worker([&] {
    ScopedTenant scope(outer);
    void* first = sqlite3_malloc(1000);
    void* second = sqlite3_malloc(3000);
    allocated.set_value();
    go_on.wait();
    {
      ScopedTenant nested(inner);
      kept_inner = sqlite3_malloc(500);
      sqlite3_free(first);  // The outer tenant's block, freed while the inner one is current.
    }
    sqlite3_free(second);
    kept_outer = sqlite3_malloc(200);
  });
  allocated.get_future().wait();
  const ProfileCounters during = Counters(outer);
  looked.set_value();
  worker.join();
  EXPECT_EQ(during.live_bytes, 4000u) << "live bytes must be exact for every thread at once";
  EXPECT_EQ(during.allocations, 0u) << "the scope's statistics were not deferred";

  const ProfileCounters outer_counters = Counters(outer);
  EXPECT_EQ(outer_counters.allocations, 3u);
  EXPECT_EQ(outer_counters.frees, 2u);
  EXPECT_EQ(outer_counters.bytes_allocated, 1000u + 3000u + 200u);
  EXPECT_EQ(outer_counters.peak_live_bytes, 4000u);
  EXPECT_EQ(outer_counters.live_bytes, 200u);
  const ProfileCounters inner_counters = Counters(inner);
  EXPECT_EQ(inner_counters.allocations, 1u);
  EXPECT_EQ(inner_counters.frees, 0u);
  EXPECT_EQ(inner_counters.bytes_allocated, 504u);  // Rounded up to 8 bytes.
  EXPECT_EQ(inner_counters.peak_live_bytes, 504u);

  // On the thread that runs the scope, a reading is exact at once.
  {
    ScopedTenant scope(outer);
    void* more = sqlite3_malloc(64);
    EXPECT_EQ(Counters(outer).allocations, 4u);
    sqlite3_free(more);
  }
  sqlite3_free(kept_outer);
  sqlite3_free(kept_inner);
  EXPECT_EQ(Counters(outer).frees, 4u);
  EXPECT_TRUE(UnregisterTenant(outer).ok());
  EXPECT_TRUE(UnregisterTenant(inner).ok());
}

TEST(SqliteMemoryTest, ExportsTenantsIntoTheProfile) {
  const TenantId tenant = Register("exported");
  sqlite3* db = Open(tenant);
  AllocationProfile profile;
  ExportSqliteMemoryProfile(&profile);
  const ProfileCounters& exported = profile.counters(profile.Tenant("exported"));
  EXPECT_EQ(exported.live_bytes, LiveBytes(tenant));
  EXPECT_GT(exported.live_bytes, 0u);
  EXPECT_GT(profile.counters(profile.Tenant("shared")).allocations, 0u);
  EXPECT_THAT(profile.ToTable(), HasSubstr("exported"));
  EXPECT_THAT(profile.ToJson(), HasSubstr("{\"name\":\"exported\""));
  Close(tenant, db);
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
}

// InstallSqliteMemory turns off the page cache's up-front allocation: a connection that has
// read a page or two holds those pages, not room for SQLITE_DEFAULT_PCACHE_INITSZ (20) of them
// (over 80 KiB with 4 KiB pages).
// A file database: SQLite allocates up front only for caches it may purge, never in memory.
TEST(SqliteMemoryTest, AConnectionHoldsOnlyThePagesItUses) {
  const std::string path = ::testing::TempDir() + "/small.db";
  std::remove(path.c_str());
  const TenantId tenant = Register("small");
  sqlite3* db = nullptr;
  {
    ScopedTenant scope(tenant);
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  }
  ASSERT_EQ(Exec(tenant, db, "CREATE TABLE t(v); INSERT INTO t VALUES(1)"), SQLITE_OK);
  EXPECT_EQ(QueryInt(tenant, db, "SELECT count(*) FROM t"), 1);
  EXPECT_GT(LiveBytes(tenant), 0u);
  EXPECT_LT(LiveBytes(tenant), 64u << 10) << "the page cache allocated room up front";
  Close(tenant, db);
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
  std::remove(path.c_str());
}

// A group's live bytes are its members' together, kept as they allocate and free (a registry
// reads its total without walking its tenants); its limit caps them together; it cannot go
// while it has members, and the profile leaves it out so no byte is counted twice.
TEST(SqliteMemoryTest, AGroupCarriesItsMembersBytesAndCapsThemTogether) {
  const TenantId group = Register("group");
  absl::StatusOr<TenantId> first = RegisterTenant("member-1", kTenantNoLimit, group);
  absl::StatusOr<TenantId> second = RegisterTenant("member-2", kTenantNoLimit, group);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(RegisterTenant("nested", kTenantNoLimit, *first).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RegisterTenant("orphan", kTenantNoLimit, 12345).status().code(),
            absl::StatusCode::kInvalidArgument);

  sqlite3* a = Open(*first);
  sqlite3* b = Open(*second);
  ASSERT_EQ(Exec(*first, a, "CREATE TABLE t(v); INSERT INTO t VALUES(randomblob(100000))"),
            SQLITE_OK);
  EXPECT_GT(LiveBytes(*first), LiveBytes(*second));
  EXPECT_EQ(LiveBytes(group), LiveBytes(*first) + LiveBytes(*second));

  // The group's limit refuses a member's allocation even though the member has no limit, and
  // neither counter keeps the refused bytes, nor a peak that counts them. The refusal is the
  // member's failure, not the group's (whose other counters are its own).
  const uint64_t member_before = LiveBytes(*second);
  ASSERT_TRUE(SetTenantLimit(group, LiveBytes(group) + 4096).ok());
  EXPECT_EQ(Exec(*second, b, "CREATE TABLE t(v); INSERT INTO t VALUES(randomblob(100000))"),
            SQLITE_NOMEM);
  EXPECT_GT(Counters(*second).failures, 0u);
  EXPECT_EQ(Counters(group).failures, 0u);
  EXPECT_LE(Counters(*second).peak_live_bytes, member_before + 4096);
  EXPECT_EQ(LiveBytes(group), LiveBytes(*first) + LiveBytes(*second));
  ASSERT_TRUE(SetTenantLimit(group, kTenantNoLimit).ok());
  EXPECT_LE(LiveBytes(*second), member_before + 4096);

  AllocationProfile profile;
  ExportSqliteMemoryProfile(&profile);
  EXPECT_THAT(profile.ToTable(), HasSubstr("member-1"));
  EXPECT_THAT(profile.ToTable(), ::testing::Not(HasSubstr("group")));

  const absl::Status refused = UnregisterTenant(group);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("still registered in this group"));
  Close(*first, a);
  Close(*second, b);
  EXPECT_EQ(LiveBytes(group), 0u);
  EXPECT_GT(Counters(group).peak_live_bytes, 100000u);
  EXPECT_TRUE(UnregisterTenant(*first).ok());
  EXPECT_TRUE(UnregisterTenant(*second).ok());
  EXPECT_TRUE(UnregisterTenant(group).ok());
}

// SQLite's own statistics are off (they lock a mutex around every allocation); the tenants'
// counters give the same total, groups counted once, with what SQLite ran for a group itself
// (left out before: the total skipped groups).
TEST(SqliteMemoryTest, TheProcessTotalComesFromTheTenantsAndSqlitesOwnIsOff) {
  const TenantId group = Register("total-group");
  absl::StatusOr<TenantId> member = RegisterTenant("total-member", kTenantNoLimit, group);
  ASSERT_TRUE(member.ok());
  const uint64_t before = SqliteLiveBytes();
  sqlite3* db = Open(*member);
  ASSERT_EQ(Exec(*member, db, "CREATE TABLE t(v); INSERT INTO t VALUES(randomblob(100000))"),
            SQLITE_OK);
  void* shared = sqlite3_malloc(1000);
  ASSERT_NE(shared, nullptr);
  EXPECT_GT(LiveBytes(*member), 100000u);
  EXPECT_EQ(SqliteLiveBytes(), before + LiveBytes(*member) + 1000);
  EXPECT_EQ(sqlite3_memory_used(), 0);
  void* group_own = nullptr;
  {
    const ScopedTenant scope(group);  // SQLite run for the group itself: counted once too.
    group_own = sqlite3_malloc(4000);
  }
  ASSERT_NE(group_own, nullptr);
  EXPECT_EQ(SqliteLiveBytes(), before + LiveBytes(*member) + 1000 + 4000);
  sqlite3_free(group_own);
  sqlite3_free(shared);
  Close(*member, db);
  EXPECT_EQ(SqliteLiveBytes(), before);
  EXPECT_TRUE(UnregisterTenant(*member).ok());
  EXPECT_TRUE(UnregisterTenant(group).ok());
}

// ---- The block cache (invariant 7) ------------------------------------------------------------
// Its lists and counters are per thread, so each test that depends on their exact state runs
// its body on a fresh thread.

template <typename Body>
void OnFreshThread(Body body) {
  std::thread thread(body);
  thread.join();
}

TEST(SqliteBlockCacheTest, AFreedBlockIsHandedOutAgainAndADoubleFreeIsCaught) {
  OnFreshThread([] {
    void* first = sqlite3_malloc(200);
    ASSERT_NE(first, nullptr);
    sqlite3_free(first);
    EXPECT_EQ(GetSqliteBlockCacheStats().kept, 1u);
    void* second = sqlite3_malloc(190);  // The same size class.
    EXPECT_EQ(second, first);
    EXPECT_EQ(GetSqliteBlockCacheStats().hits, 1u);
    EXPECT_EQ(GetSqliteBlockCacheStats().misses, 1u);
    sqlite3_free(second);
  });
  void* block = sqlite3_malloc(300);
  sqlite3_free(block);
  EXPECT_DEATH(sqlite3_free(block), "does not own");
}

#if defined(__SANITIZE_ADDRESS__)
TEST(SqliteBlockCacheTest, ACachedBlockIsPoisonedForAddressSanitizer) {
  auto* block = static_cast<char*>(sqlite3_malloc(64));
  sqlite3_free(block);
  EXPECT_DEATH(block[8] = 1, "use-after-poison");
}
#endif

TEST(SqliteBlockCacheTest, ReallocKeepsTheBytesAcrossClassesAndSizes) {
  const TenantId tenant = Register("realloc-classes");
  ScopedTenant scope(tenant);
  auto* block = static_cast<unsigned char*>(sqlite3_malloc(100));
  ASSERT_NE(block, nullptr);
  for (int i = 0; i < 100; ++i) block[i] = static_cast<unsigned char>(i);
  // Within its class (100 + 16 rounds up to 128), to another class, past the largest class
  // (a plain malloc'd block) and back into a class.
  for (const int size : {110, 3000, 200000, 50}) {
    block = static_cast<unsigned char*>(sqlite3_realloc(block, size));
    ASSERT_NE(block, nullptr) << size;
    EXPECT_GE(sqlite3_msize(block), static_cast<sqlite3_uint64>(size));
    EXPECT_EQ(LiveBytes(tenant), static_cast<uint64_t>((size + 7) / 8 * 8)) << size;
    for (int i = 0; i < 50; ++i) ASSERT_EQ(block[i], i) << "after realloc to " << size;
  }
  sqlite3_free(block);
  EXPECT_EQ(LiveBytes(tenant), 0u);
  EXPECT_TRUE(UnregisterTenant(tenant).ok());
}

TEST(SqliteBlockCacheTest, EachClassKeepsAtMostItsLimitAndZeroTurnsItOff) {
  OnFreshThread([] {
    SetSqliteBlockCacheBytesPerClass(2048);
    void* blocks[4];
    for (void*& block : blocks) block = sqlite3_malloc(1000);  // 1016-byte blocks: class 1024.
    for (void* block : blocks) sqlite3_free(block);
    EXPECT_EQ(GetSqliteBlockCacheStats().kept, 2u);
    EXPECT_EQ(GetSqliteBlockCacheStats().released, 2u);
    EXPECT_EQ(GetSqliteBlockCacheStats().cached_bytes, 2048u);

    SetSqliteBlockCacheBytesPerClass(0);
    ReleaseSqliteBlockCache();
    EXPECT_EQ(GetSqliteBlockCacheStats().cached_bytes, 0u);
    for (int i = 0; i < 3; ++i) sqlite3_free(sqlite3_malloc(1000));
    EXPECT_EQ(GetSqliteBlockCacheStats().hits, 0u);
    EXPECT_EQ(GetSqliteBlockCacheStats().kept, 2u) << "no block is kept while the cache is off";
    SetSqliteBlockCacheBytesPerClass(kSqliteBlockCacheBytesPerClassDefault);
  });
}

// A reader that sees another connection's commit drops its whole page cache, then reads the
// pages back: the class of 4 KiB page blocks keeps a default page cache's worth, so the reads
// take them back from the cache; a class next to it keeps only the per-class limit.
TEST(SqliteBlockCacheTest, ThePageClassKeepsAWholePageCache) {
  OnFreshThread([] {
    constexpr int kPages = 400;       // About 1.7 MiB of page blocks: under the page allowance.
    constexpr int kPageBlock = 4300;  // A 4 KiB page and the page cache's header for it.
    std::vector<void*> pages(kPages);
    for (int round = 0; round < 2; ++round) {
      for (void*& page : pages) page = sqlite3_malloc(kPageBlock);
      for (void* page : pages) sqlite3_free(page);
    }
    const SqliteBlockCacheStats stats = GetSqliteBlockCacheStats();
    EXPECT_EQ(stats.misses, uint64_t{kPages}) << "the second round came from the cache";
    EXPECT_EQ(stats.hits, uint64_t{kPages});
    EXPECT_EQ(stats.released, 0u);
    EXPECT_LE(stats.cached_bytes, kSqliteBlockCachePageBytes);
    ReleaseSqliteBlockCache();
    // 6,000-byte blocks are the next class: 64 KiB of them is ten 6 KiB blocks.
    for (void*& block : pages) block = sqlite3_malloc(6000);
    for (void* block : pages) sqlite3_free(block);
    EXPECT_EQ(GetSqliteBlockCacheStats().cached_bytes, 10u * 6144);
    ReleaseSqliteBlockCache();
  });
}

TEST(SqliteBlockCacheTest, AThreadsCacheIsFreedWhenItExits) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "mallinfo2 does not see ASan's heap; LeakSanitizer checks this build instead";
#else
  const size_t in_use_before = mallinfo2().uordblks;
  uint64_t cached_in_thread = 0;
  OnFreshThread([&cached_in_thread] {
    void* blocks[32];
    for (void*& block : blocks) block = sqlite3_malloc(1900);  // 32 blocks of class 2048.
    for (void* block : blocks) sqlite3_free(block);
    cached_in_thread = GetSqliteBlockCacheStats().cached_bytes;
  });
  EXPECT_EQ(cached_in_thread, 32u * 2048u);
  // Had the 64 KiB stayed cached after the thread exited, they would still be in use.
  EXPECT_LT(mallinfo2().uordblks, in_use_before + (16u << 10));
#endif
}

}  // namespace
}  // namespace sqloop::alloc
