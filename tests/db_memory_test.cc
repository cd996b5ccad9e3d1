// Per-tenant memory through the Database: every SQLite byte of a database is charged to its
// DatabaseOptions::tenant, a tenant over its limit fails its own request only, and once warm a
// request makes no heap allocation at all. A binary of its own: the accounting allocator must
// be installed before any other SQLite use.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/database.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using testing::ScratchDir;

class DatabaseMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(alloc::InstallSqliteMemory().ok()); }

  void SetUp() override {
    auto backend = io::CreateBackend({});
    ASSERT_TRUE(backend.ok());
    loop_ = std::make_unique<loop::Loop>(*std::move(backend), loop::LoopOptions{});
    dir_ = std::make_unique<ScratchDir>(true);
    auto vfs = Vfs::Create(*loop_);
    ASSERT_TRUE(vfs.ok());
    vfs_ = *std::move(vfs);
  }
  void TearDown() override {
    vfs_.reset();
    loop_.reset();
  }

  std::unique_ptr<Database> Open(const std::string& name, alloc::TenantId tenant,
                                 DatabaseOptions options = {}) {
    options.tenant = tenant;
    auto db = std::make_unique<Database>(*loop_, *vfs_, dir_->Path(name), options);
    absl::Status status = absl::UnknownError("open never called back");
    db->Open([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
             &status);
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_TRUE(status.ok()) << status;
    return db;
  }
  void Close(Database& db) {
    db.Close(nullptr, nullptr);
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  }
  absl::Status Write(Database& db, absl::string_view sql) {
    Request request;
    request.kind = Request::Kind::kWrite;
    request.sql = sql;
    absl::Status result = absl::UnknownError("never acknowledged");
    request.user_data = &result;
    request.on_done = [](Request& r, absl::Status s) {
      *static_cast<absl::Status*>(r.user_data) = std::move(s);
    };
    if (absl::Status admitted = db.Submit(request); !admitted.ok()) return admitted;
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    return result;
  }
  // Runs a read; returns its status and counts its rows in `rows`.
  absl::Status Read(Database& db, absl::string_view sql, int& rows) {
    struct Result {
      absl::Status status = absl::UnknownError("never answered");
      int* rows;
    } result{.rows = &rows};
    rows = 0;
    Request request;
    request.kind = Request::Kind::kRead;
    request.sql = sql;
    request.user_data = &result;
    request.on_row = [](Request& r, const Row&) { ++*static_cast<Result*>(r.user_data)->rows; };
    request.on_done = [](Request& r, absl::Status s) {
      static_cast<Result*>(r.user_data)->status = std::move(s);
    };
    if (absl::Status admitted = db.Submit(request); !admitted.ok()) return admitted;
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    return result.status;
  }
  // Fills table t(b BLOB) with `rows` random blobs of `bytes` each, in one write.
  absl::Status InsertBlobs(Database& db, int rows, int bytes) {
    return Write(db, absl::StrCat("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM "
                                  "c WHERE i < ",
                                  rows, ") INSERT INTO t SELECT randomblob(", bytes, ") FROM c"));
  }
  static uint64_t LiveBytes(alloc::TenantId tenant) {
    absl::StatusOr<alloc::ProfileCounters> counters = alloc::GetTenantCounters(tenant);
    return counters.ok() ? counters->live_bytes : UINT64_MAX;
  }

  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Vfs> vfs_;
};

TEST_F(DatabaseMemoryTest, EachDatabasesBytesGoToItsTenantAndLeaveWithIt) {
  auto small = alloc::RegisterTenant("small");
  auto large = alloc::RegisterTenant("large");
  ASSERT_TRUE(small.ok() && large.ok());
  auto a = Open("a.db", *small);
  auto b = Open("b.db", *large);
  ASSERT_TRUE(Write(*a, "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write(*b, "CREATE TABLE t(x)").ok());
  // Tenant `large` fills a few hundred pages of cache; `small` stays near its empty database.
  ASSERT_TRUE(Write(*b,
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE "
                    "i < 20000) INSERT INTO t SELECT randomblob(100) FROM c")
                  .ok());
  EXPECT_GT(LiveBytes(*small), 0u);
  EXPECT_GT(LiveBytes(*large), LiveBytes(*small) + (1u << 20));
  Close(*a);
  Close(*b);
  EXPECT_EQ(LiveBytes(*small), 0u) << "a closed database left memory charged to its tenant";
  EXPECT_EQ(LiveBytes(*large), 0u);
  EXPECT_TRUE(alloc::UnregisterTenant(*small).ok());
  EXPECT_TRUE(alloc::UnregisterTenant(*large).ok());
}

TEST_F(DatabaseMemoryTest, ATenantOverItsLimitFailsAloneAndRecovers) {
  auto capped = alloc::RegisterTenant("capped");
  auto free_tenant = alloc::RegisterTenant("free");
  ASSERT_TRUE(capped.ok() && free_tenant.ok());
  auto a = Open("capped.db", *capped);
  auto b = Open("free.db", *free_tenant);
  ASSERT_TRUE(Write(*a, "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write(*b, "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(alloc::SetTenantLimit(*capped, LiveBytes(*capped) + (64u << 10)).ok());
  const char* kBig =
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE "
      "i < 20000) INSERT INTO t SELECT randomblob(100) FROM c";
  const absl::Status over = Write(*a, kBig);
  EXPECT_TRUE(absl::IsResourceExhausted(over)) << over;
  EXPECT_NE(over.message().find("memory limit"), absl::string_view::npos) << over;
  EXPECT_TRUE(Write(*b, kBig).ok()) << "another tenant must not be affected";
  ASSERT_TRUE(alloc::SetTenantLimit(*capped, alloc::kTenantNoLimit).ok());
  EXPECT_TRUE(Write(*a, kBig).ok()) << "the capped database must stay usable";
  Close(*a);
  Close(*b);
  EXPECT_EQ(LiveBytes(*capped), 0u);
  EXPECT_TRUE(alloc::UnregisterTenant(*capped).ok());
  EXPECT_TRUE(alloc::UnregisterTenant(*free_tenant).ok());
}

// A sort larger than SQLite's sorter memory spills to a temporary file, which the VFS keeps in
// memory: that memory is the tenant's too. 16 MB of rows sorted under a limit 8 MB above what
// the database holds: SQLite's own sorter buffers fit, the temporary file does not.
TEST_F(DatabaseMemoryTest, ASortsTemporaryFileCountsAgainstItsTenantsLimit) {
  auto tenant = alloc::RegisterTenant("sorter");
  ASSERT_TRUE(tenant.ok());
  auto db = Open("sort.db", *tenant);
  ASSERT_TRUE(Write(*db, "CREATE TABLE t(b BLOB)").ok());
  ASSERT_TRUE(InsertBlobs(*db, 16000, 1000).ok());
  const char* kSort = "SELECT length(b) FROM t ORDER BY b";
  int rows = 0;
  ASSERT_TRUE(alloc::SetTenantLimit(*tenant, LiveBytes(*tenant) + (8u << 20)).ok());
  const absl::Status over = Read(*db, kSort, rows);
  EXPECT_TRUE(absl::IsResourceExhausted(over)) << over;
  EXPECT_NE(over.message().find("memory limit"), absl::string_view::npos) << over;
  EXPECT_EQ(rows, 0);
  // The same sort with room: it did need more than the 8 MB.
  ASSERT_TRUE(alloc::SetTenantLimit(*tenant, alloc::kTenantNoLimit).ok());
  const uint64_t before = LiveBytes(*tenant);
  ASSERT_TRUE(Read(*db, kSort, rows).ok());
  EXPECT_EQ(rows, 16000);
  absl::StatusOr<alloc::ProfileCounters> counters = alloc::GetTenantCounters(*tenant);
  ASSERT_TRUE(counters.ok());
  EXPECT_GT(counters->peak_live_bytes, before + (8u << 20));
  Close(*db);
  EXPECT_EQ(LiveBytes(*tenant), 0u) << "a temporary file's memory outlived it";
  EXPECT_TRUE(alloc::UnregisterTenant(*tenant).ok());
}

// A temporary file over VfsOptions::temp_file_bytes_max fails its statement with a message that
// names the option, not as a full disk would.
TEST_F(DatabaseMemoryTest, ATemporaryFileOverItsLimitNamesTheLimit) {
  vfs_.reset();
  auto vfs = Vfs::Create(*loop_, VfsOptions{.temp_file_bytes_max = 1u << 20});
  ASSERT_TRUE(vfs.ok());
  vfs_ = *std::move(vfs);
  auto db = Open("temp_limit.db", alloc::kSharedTenant);
  ASSERT_TRUE(Write(*db, "CREATE TABLE t(b BLOB)").ok());
  ASSERT_TRUE(InsertBlobs(*db, 8000, 1000).ok());
  int rows = 0;
  const absl::Status over = Read(*db, "SELECT length(b) FROM t ORDER BY b", rows);
  EXPECT_TRUE(absl::IsResourceExhausted(over)) << over;
  EXPECT_NE(over.message().find("temp_file_bytes_max"), absl::string_view::npos) << over;
  EXPECT_GT(vfs_->stats().temp_files_full, 0u);
  EXPECT_EQ(Read(*db, "SELECT count(*) FROM t", rows), absl::OkStatus());
  EXPECT_EQ(rows, 1);
  Close(*db);
}

// The allocation contract of docs/db.md: in steady state a request, read or durable write, makes
// no heap allocation: sqloop's own bookkeeping lives in the caller's Request and in structures
// sized up front, and SQLite's per-statement blocks (savepoints, bit vectors, the statement
// journal's chunk) come back from the block cache. "Steady state" means the working set no
// longer grows: here 64 keys updated and read over and over, across WAL checkpoints.
// A reopen leaves the writer closed until the first write (Database::MayDeferWriter). When
// it cannot open then (its tenant's limit refuses the memory), the writes waiting for it fail
// with why, reads go on, and the next write opens it.
TEST_F(DatabaseMemoryTest, AWriterThatCannotOpenLateFailsTheWritesAndNotTheReads) {
  auto tenant = alloc::RegisterTenant("late-writer");
  ASSERT_TRUE(tenant.ok());
  auto db = Open("late.db", *tenant);
  ASSERT_TRUE(Write(*db, "CREATE TABLE t(x)").ok());
  Close(*db);
  db = Open("late.db", *tenant);
  ASSERT_FALSE(db->writer_open());
  auto count = [&] {
    Request request;
    request.kind = Request::Kind::kRead;
    request.sql = "SELECT count(*) FROM t";
    int64_t rows = -1;
    request.user_data = &rows;
    request.on_row = [](Request& r, const Row& row) {
      *static_cast<int64_t*>(r.user_data) = row.Int(0);
    };
    request.on_done = [](Request& /*unused*/, absl::Status s) { EXPECT_TRUE(s.ok()) << s; };
    EXPECT_TRUE(db->Submit(request).ok());
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    return rows;
  };
  ASSERT_TRUE(alloc::SetTenantLimit(*tenant, LiveBytes(*tenant) + 512).ok());
  const absl::Status failed = Write(*db, "INSERT INTO t VALUES (1)");
  ASSERT_TRUE(alloc::SetTenantLimit(*tenant, alloc::kTenantNoLimit).ok());
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_NE(failed.message().find("cannot open database"), std::string::npos) << failed;
  EXPECT_FALSE(db->writer_open());
  EXPECT_EQ(count(), 0);
  EXPECT_TRUE(Write(*db, "INSERT INTO t VALUES (1)").ok());
  EXPECT_TRUE(db->writer_open());
  EXPECT_EQ(db->stats().writers_opened_late, 1u);
  EXPECT_EQ(count(), 1);
  Close(*db);
  db.reset();
  EXPECT_TRUE(alloc::UnregisterTenant(*tenant).ok());
}

TEST_F(DatabaseMemoryTest, WarmRequestsMakeNoHeapAllocations) {
  constexpr int kKeys = 64;
  DatabaseOptions options;
  options.checkpoint_frames = 50;  // So that the measured window spans several checkpoints.
  auto db = Open("steady.db", alloc::kSharedTenant, options);
  ASSERT_TRUE(Write(*db, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER)").ok());
  ASSERT_TRUE(Write(*db,
                    "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE "
                    "i < 63) INSERT INTO kv SELECT i, 'initial' FROM c")
                  .ok());
  struct Round {
    Request writes[kKeys];
    Request reads[kKeys];
    int done = 0;
    int failed = 0;
    int64_t rows = 0;     // Rows read that held the current round's value.
    int64_t current = 0;  // The round number the writes store.
  } round;
  const auto on_done = [](Request& r, absl::Status s) {
    auto& owner = *static_cast<Round*>(r.user_data);
    ++owner.done;
    if (!s.ok()) ++owner.failed;
  };
  for (int k = 0; k < kKeys; ++k) {
    Request& w = round.writes[k];
    w.kind = Request::Kind::kWrite;
    w.sql = "UPDATE kv SET v = ?2 WHERE k = ?1";
    w.params = {Value::Int(k), Value::Int(0)};  // ?2: the round, so every write changes its row.
    w.user_data = &round;
    w.on_done = on_done;
    Request& r = round.reads[k];
    r.kind = Request::Kind::kRead;
    r.sql = "SELECT v FROM kv WHERE k = ?1";
    r.params = {Value::Int(k)};
    r.user_data = &round;
    r.on_row = [](Request& request, const Row& row) {
      auto& owner = *static_cast<Round*>(request.user_data);
      owner.rows += row.Int(0) <= owner.current ? 1 : 0;
    };
    r.on_done = on_done;
  }
  const auto run_rounds = [&](int rounds) {
    for (int i = 0; i < rounds; ++i) {
      round.done = 0;
      ++round.current;
      for (int k = 0; k < kKeys; ++k) {
        round.writes[k].params[1].int_value = round.current;
        ASSERT_TRUE(db->Submit(round.writes[k]).ok());
        ASSERT_TRUE(db->Submit(round.reads[k]).ok());
      }
      ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
      ASSERT_EQ(round.done, 2 * kKeys);
    }
  };
  // Warm: caches filled, statements prepared, the WAL at its working size, and a checkpoint
  // run (its writes go behind, through the write-behind queue's recycled operations).
  run_rounds(20);
  for (int i = 0; i < 1000 && db->stats().checkpoints == 0; ++i) run_rounds(1);
  ASSERT_GT(db->stats().checkpoints, 0u);
  run_rounds(20);
  const uint64_t checkpoints_before = db->stats().checkpoints;
  const int64_t rows_before = round.rows;
  const alloc::HeapCounts heap_before = alloc::CurrentHeapCounts();
  const alloc::SqliteBlockCacheStats cache_before = alloc::GetSqliteBlockCacheStats();
  constexpr int kMeasuredRounds = 200;
  run_rounds(kMeasuredRounds);
  const alloc::HeapCounts heap_after = alloc::CurrentHeapCounts();
  const alloc::SqliteBlockCacheStats cache_after = alloc::GetSqliteBlockCacheStats();
  EXPECT_GT(db->stats().checkpoints, checkpoints_before) << "the window must span a checkpoint";
  EXPECT_EQ(round.failed, 0);
  EXPECT_EQ(round.rows - rows_before, int64_t{kKeys} * kMeasuredRounds);
  // Under AddressSanitizer only operator new is counted (ASan owns malloc); the block cache's
  // own miss count covers SQLite's blocks in both builds.
  EXPECT_EQ(heap_after.allocations - heap_before.allocations, 0u)
      << "heap allocations over " << kMeasuredRounds * 2 * kKeys << " warm requests";
  EXPECT_EQ(cache_after.misses - cache_before.misses, 0u);
  EXPECT_GT(cache_after.hits - cache_before.hits, uint64_t{kMeasuredRounds} * kKeys)
      << "every write allocates SQLite blocks (at least its savepoint) and must get them here";
  Close(*db);
}

// A commit that changes the file moves the readers to a new snapshot, and SQLite drops a
// re-pinned reader's whole page cache (the WAL changed) and reads its pages back. Over a table
// of hundreds of pages, read all over after every commit, those page blocks come back from the
// block cache's page class: no heap allocation. (A commit must change a page to count: SQLite
// leaves a page alone when an UPDATE writes the bytes it already holds.)
TEST_F(DatabaseMemoryTest, ReadsAfterEveryCommitTakeTheirPagesBackWithoutAllocating) {
  constexpr int kRows = 4000;  // 200-byte values: about 250 pages.
  constexpr int kReadsPerRound = 128;
  auto db = Open("pages.db", alloc::kSharedTenant);
  ASSERT_TRUE(Write(*db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)").ok());
  ASSERT_TRUE(Write(*db,
                    "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE "
                    "i < 3999) INSERT INTO t SELECT i, printf('%200d', i) FROM c")
                  .ok());
  struct Reads {
    Request write;  // Made once: the test's own Status messages would allocate.
    Request requests[kReadsPerRound];
    int rows = 0;
    int failed = 0;
  } reads;
  reads.write.kind = Request::Kind::kWrite;
  reads.write.sql = "UPDATE t SET v = printf('%200d', ?1) WHERE k = 0";
  reads.write.params = {Value::Int(0)};  // The round: every commit changes the row.
  reads.write.user_data = &reads;
  const auto on_done = [](Request& request, absl::Status status) {
    if (!status.ok()) ++static_cast<Reads*>(request.user_data)->failed;
  };
  reads.write.on_done = on_done;
  for (int i = 0; i < kReadsPerRound; ++i) {
    Request& r = reads.requests[i];
    r.kind = Request::Kind::kRead;
    r.sql = "SELECT length(v) FROM t WHERE k = ?1";
    r.params = {Value::Int(1 + int64_t{i} * (kRows - 1) / kReadsPerRound)};  // Every other leaf.
    r.user_data = &reads;
    r.on_row = [](Request& request, const Row& row) {
      static_cast<Reads*>(request.user_data)->rows += row.Int(0) == 200 ? 1 : 0;
    };
    r.on_done = on_done;
  }
  const auto run_rounds = [&](int rounds) {
    for (int i = 0; i < rounds; ++i) {
      ++reads.write.params[0].int_value;
      ASSERT_TRUE(db->Submit(reads.write).ok());
      ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
      for (Request& r : reads.requests) ASSERT_TRUE(db->Submit(r).ok());
      ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    }
  };
  run_rounds(10);  // Warm: statements prepared, the block cache holding the pages.
  const int rows_before = reads.rows;
  const uint64_t pins_before = db->stats().snapshot_pins;
  const uint64_t file_reads_before = vfs_->stats().reads;
  const alloc::HeapCounts heap_before = alloc::CurrentHeapCounts();
  const alloc::SqliteBlockCacheStats cache_before = alloc::GetSqliteBlockCacheStats();
  constexpr int kMeasuredRounds = 20;
  run_rounds(kMeasuredRounds);
  const alloc::HeapCounts heap_after = alloc::CurrentHeapCounts();
  const alloc::SqliteBlockCacheStats cache_after = alloc::GetSqliteBlockCacheStats();
  EXPECT_EQ(reads.failed, 0);
  EXPECT_EQ(reads.rows - rows_before, kMeasuredRounds * kReadsPerRound);
  // The scenario: every commit re-pinned a reader, and its reads went back to the file for the
  // pages SQLite dropped (one leaf per read at least).
  EXPECT_GE(db->stats().snapshot_pins - pins_before, uint64_t{kMeasuredRounds});
  EXPECT_GE(vfs_->stats().reads - file_reads_before, uint64_t{kMeasuredRounds} * kReadsPerRound)
      << "the readers kept their pages: no page cache was dropped";
  EXPECT_EQ(heap_after.allocations - heap_before.allocations, 0u)
      << "heap allocations over " << kMeasuredRounds << " rounds of a commit and " << kReadsPerRound
      << " reads";
  EXPECT_EQ(cache_after.misses - cache_before.misses, 0u);
  Close(*db);
}

// A write whose statement stops on a page not in memory is undone to its savepoint, waits for
// a fetch and runs again: a restart, not an error anyone reads, so it formats no message. Once
// warm (the fetch and the page it reads come from pools), such a write, alone or in a batch,
// makes no heap allocation. The miss is forced (MissProbes) on a leaf the writer's cache does
// not hold, after a warm write that brought page 1 and the root in, so that BEGIN reads nothing.
TEST_F(DatabaseMemoryTest, AWriteThatStopsOnAMissRestartsWithoutAllocating) {
  vfs_.reset();
  auto backend = io::CreateBackend({});
  ASSERT_TRUE(backend.ok());
  auto recording = std::make_unique<testing::RecordingBackend>(*std::move(backend));
  testing::RecordingBackend& trace = *recording;
  loop_ = std::make_unique<loop::Loop>(std::move(recording), loop::LoopOptions{});
  auto vfs = Vfs::Create(*loop_);
  ASSERT_TRUE(vfs.ok());
  vfs_ = *std::move(vfs);
  auto db = Open("cold_writes.db", alloc::kSharedTenant);
  ASSERT_TRUE(Write(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)").ok());
  ASSERT_TRUE(Write(*db,
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE "
                    "i < 3000) INSERT INTO t SELECT i, printf('%120d', i) FROM c")
                  .ok());
  struct Writes {
    Request warm;
    Request single;
    Request batch;
    Statement statements[2];
    int done = 0;
    int failed = 0;
  } w;
  const auto on_done = [](Request& r, absl::Status s) {
    auto& owner = *static_cast<Writes*>(r.user_data);
    ++owner.done;
    if (!s.ok()) ++owner.failed;
  };
  for (Request* r : {&w.warm, &w.single, &w.batch}) {
    r->kind = Request::Kind::kWrite;
    r->user_data = &w;
    r->on_done = on_done;
  }
  w.warm.sql = "UPDATE t SET s = s || '' WHERE id = 1";
  w.single.sql = "UPDATE t SET s = upper(s) WHERE id = ?";
  w.single.params = {Value::Int(0)};
  w.statements[0] = {"UPDATE t SET s = lower(s) WHERE id = ?", {Value::Int(0)}};
  w.statements[1] = {"UPDATE t SET s = lower(s) WHERE id = ?", {Value::Int(0)}};
  w.batch.batch = w.statements;
  const auto run = [&](Request& r) {
    w.done = 0;
    ASSERT_TRUE(db->Submit(r).ok());
    while (w.done == 0) ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  };
  for (int round = 0; round < 3; ++round) {  // Rounds 0 and 1 warm the pools up.
    // Each round's writes go to leaves the writer's cache lost (about 30 rows a leaf).
    const int64_t id = 400 + int64_t{round} * 900;
    w.single.params[0].int_value = id;
    w.statements[0].params[0].int_value = id + 300;
    w.statements[1].params[0].int_value = id + 600;
    db->ReleaseMemory();
    run(w.warm);  // Page 1 and the root back in the writer's cache, from the page cache.
    for (Request* r : {&w.single, &w.batch}) {
      trace.MissProbes(1);
      const uint64_t restarts = db->stats().group_restarts;
      const alloc::HeapCounts before = alloc::CurrentHeapCounts();
      run(*r);
      const uint64_t allocations = alloc::CurrentHeapCounts().allocations - before.allocations;
      EXPECT_EQ(db->stats().group_restarts, restarts + 1) << "the write did not stop once";
      if (round == 2) {
        EXPECT_EQ(allocations, 0u) << (r == &w.batch ? "the batch" : "the write");
      }
    }
  }
  EXPECT_EQ(w.failed, 0);
  Close(*db);
}

}  // namespace
}  // namespace sqloop::db
