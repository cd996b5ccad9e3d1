// Database: what one tenant's request cannot do to another's, or to the host. Budgets of SQLite
// work, the allow-list of pragmas, connection state, bounded retries and error messages, on
// every backend. The HTTP host's end-to-end attacks are in tests/http_*.
#include <sqlite3.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "tests/db_database_fixture.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using testing::DatabaseTest;
using testing::Probe;

// Never ends on its own: counts rows of a recursive CTE without a bound.
constexpr const char* kRunawayCount =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
// Never ends on its own either, but returns a row per step, so it yields between rows.
constexpr const char* kRunawayStream =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";

// ---- Budgets ----------------------------------------------------------------------------------

TEST_P(DatabaseTest, ARunawayStatementFailsWithItsSliceBudgetAndTheDatabaseStaysUsable) {
  ASSERT_TRUE(OpenDb().ok());  // Default budgets: a host that sets nothing is protected.
  std::string rows;
  const absl::Status status = Run(Request::Kind::kRead, kRunawayCount, {}, &rows);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(IsBudgetExceeded(status)) << status;
  EXPECT_NE(status.message().find("slice_vm_steps_max"), std::string::npos) << status;
  EXPECT_EQ(rows, "");
  EXPECT_EQ(db_->stats().budget_exceeded, 1u);
  EXPECT_EQ(Read("SELECT 1 + 1"), "2|\n");
}

// count(*) is one step of SQLite's (OP_Count) and integrity_check another (OP_IntegrityCk), each
// reading every page of the table or file without calling the progress handler: the pages they
// read count against the slice too (kPageReadVmSteps each). About 600 pages, 60,000 steps'
// worth, against a slice of 10,000.
TEST_P(DatabaseTest, ASingleStepThatReadsTheWholeFileIsStoppedByItsSlice) {
  DatabaseOptions options;
  options.slice_vm_steps_max = 10'000;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(b BLOB)").ok());
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(Write("INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                      "FROM c WHERE x < 200) SELECT randomblob(1000) FROM c")
                    .ok());
  }
  for (const char* sql : {"SELECT count(*) FROM t", "PRAGMA quick_check"}) {
    const uint64_t reads = vfs_->stats().reads;
    std::string rows;
    const absl::Status status = Run(Request::Kind::kRead, sql, {}, &rows);
    EXPECT_TRUE(IsBudgetExceeded(status)) << sql << ": " << status;
    EXPECT_NE(status.message().find("slice_vm_steps_max"), std::string::npos) << status;
    EXPECT_EQ(rows, "") << sql;
    // Stopped soon after the slice's worth of pages, not at the end of the file.
    EXPECT_GE(vfs_->stats().reads - reads, 100u) << sql;
    EXPECT_LT(vfs_->stats().reads - reads, 300u) << sql;
  }
  EXPECT_EQ(Read("SELECT count(*) FROM t WHERE rowid <= 3"), "3|\n");
  // The writer's statements too: reopened, its cache is cold.
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb(options).ok());
  const uint64_t reads = vfs_->stats().reads;
  const absl::Status write = Write("CREATE TABLE n AS SELECT count(*) AS c FROM t");
  EXPECT_TRUE(IsBudgetExceeded(write)) << write;
  EXPECT_GE(vfs_->stats().reads - reads, 100u);
  EXPECT_EQ(Read("SELECT count(*) FROM sqlite_master WHERE name = 'n'"), "0|\n");
}

TEST_P(DatabaseTest, TheStallWatchNamesTheDatabaseWhoseStatementHeldTheLoop) {
  // The simulator's clock stands still while a callback runs: only real time shows a stall.
  if (!GetParam().real_descriptors) GTEST_SKIP() << "virtual time does not pass in a callback";
  std::vector<std::string> reports;
  loop::LoopOptions options;
  options.stall_budget = absl::Nanoseconds(1);  // Every callback is over it.
  options.log = [&reports](io::LogLevel, absl::string_view message) {
    reports.emplace_back(message);
  };
  loop::Loop watched(GetParam().make(), options);
  absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(watched, {});
  ASSERT_TRUE(vfs.ok()) << vfs.status();
  const std::string path = dir_->Path("watched.sqlite");
  {
    Database db(watched, **vfs, path, {});
    absl::Status status = absl::UnknownError("never called back");
    auto store = [](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); };
    db.Open(store, &status);
    ASSERT_TRUE(watched.Run(loop::RunMode::kUntilDone).ok());
    ASSERT_TRUE(status.ok()) << status;
    db.Close(store, &status);
    ASSERT_TRUE(watched.Run(loop::RunMode::kUntilDone).ok());
  }
  vfs->reset();
  bool named = false;
  for (const std::string& report : reports) {
    named = named || (report.find("sqloop stall") != std::string::npos &&
                      report.find("watched.sqlite") != std::string::npos);
  }
  EXPECT_TRUE(named) << "no stall report names the database; reports: " << reports.size();
}

TEST_P(DatabaseTest, AStreamingRunawayYieldsEveryTickWhileAnotherDatabaseIsServed) {
  DatabaseOptions options;
  options.request_vm_steps_max = 2'000'000;
  ASSERT_TRUE(OpenDb(options).ok());
  Database other(*loop_, *vfs_, dir_->Path("other.sqlite"), {});
  absl::Status opened = absl::UnknownError("open never called back");
  other.Open([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
             &opened);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(opened.ok()) << opened;

  // The other database's reads run one after another, each submitted from the last one's
  // completion: they can only all finish before the runaway does if the runaway yields.
  struct Chain {
    Database* db;
    Request request;
    int done = 0;
    int done_when_runaway_failed = -1;
  } chain;
  chain.db = &other;
  constexpr int kChainReads = 50;
  chain.request.kind = Request::Kind::kRead;
  chain.request.sql = "SELECT 42";
  chain.request.user_data = &chain;
  chain.request.on_done = [](Request& r, absl::Status s) {
    auto* c = static_cast<Chain*>(r.user_data);
    EXPECT_TRUE(s.ok()) << s;
    if (++c->done < kChainReads) {
      EXPECT_TRUE(c->db->Submit(r).ok());
    }
  };
  Probe runaway;
  Prime(runaway, Request::Kind::kRead, kRunawayStream);
  runaway.on_ack = [&chain](Probe&) { chain.done_when_runaway_failed = chain.done; };
  ASSERT_TRUE(db_->Submit(runaway.request).ok());
  ASSERT_TRUE(other.Submit(chain.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());

  EXPECT_EQ(runaway.status.code(), absl::StatusCode::kResourceExhausted) << runaway.status;
  EXPECT_TRUE(IsBudgetExceeded(runaway.status));
  EXPECT_NE(runaway.status.message().find("request_vm_steps_max"), std::string::npos);
  EXPECT_GT(db_->stats().read_steps_yielded, 100u);  // It did stream, a slice per tick.
  EXPECT_EQ(chain.done_when_runaway_failed, kChainReads);
  absl::Status closed = absl::UnknownError("close never called back");
  other.Close([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
              &closed);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(closed.ok()) << closed;
}

TEST_P(DatabaseTest, ARequestCancelledFromItsRowCallbackStopsAtOnce) {
  ASSERT_TRUE(OpenDb().ok());
  struct Count {
    int rows = 0;
    bool done = false;
    absl::Status status;
  } count;
  Request read;
  read.kind = Request::Kind::kRead;
  read.sql = kRunawayStream;
  read.user_data = &count;
  read.on_row = [](Request& r, const Row&) {
    if (++static_cast<Count*>(r.user_data)->rows == 10) r.Cancel();  // Enough: stop it.
  };
  read.on_done = [](Request& r, absl::Status s) {
    auto* c = static_cast<Count*>(r.user_data);
    c->done = true;
    c->status = std::move(s);
  };
  ASSERT_TRUE(db_->Submit(read).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(count.done);
  EXPECT_EQ(count.status.code(), absl::StatusCode::kCancelled) << count.status;
  EXPECT_EQ(count.rows, 10);
  EXPECT_EQ(db_->stats().read_steps_yielded, 0u);  // Stopped in its first slice.
  // Cancelled before it ran (a host stopping while the request waited): it never starts, and
  // the next run of the same request is not cancelled.
  read.sql = "SELECT 1";
  read.on_row = nullptr;
  read.Cancel();
  ASSERT_TRUE(db_->Submit(read).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(count.status.code(), absl::StatusCode::kCancelled) << count.status;
  EXPECT_NE(count.status.message().find("before it ran"), std::string::npos) << count.status;
  ASSERT_TRUE(db_->Submit(read).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(count.status.ok()) << count.status;
}

TEST_P(DatabaseTest, ARunawayWriteFailsAloneAndTheRestOfItsGroupCommits) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  Probe a, runaway, c;
  Prime(a, Request::Kind::kWrite, "INSERT INTO t VALUES ('a')");
  Prime(runaway, Request::Kind::kWrite,
        "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT x FROM c");
  Prime(c, Request::Kind::kWrite, "INSERT INTO t VALUES ('c')");
  ASSERT_TRUE(db_->Submit(a.request).ok());
  ASSERT_TRUE(db_->Submit(runaway.request).ok());
  ASSERT_TRUE(db_->Submit(c.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(a.status.ok()) << a.status;
  EXPECT_TRUE(IsBudgetExceeded(runaway.status)) << runaway.status;
  EXPECT_TRUE(c.status.ok()) << c.status;
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t"), "'a,c'|\n");
}

TEST_P(DatabaseTest, ARequestsOwnBudgetOverridesTheDatabasesTotal) {
  ASSERT_TRUE(OpenDb().ok());
  constexpr const char* kCount =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
      "SELECT count(*) FROM c";
  EXPECT_EQ(Read(kCount), "20000|\n");
  Probe tight;
  Prime(tight, Request::Kind::kRead, kCount);
  tight.request.vm_steps_max = 10'000;
  ASSERT_TRUE(db_->Submit(tight.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(IsBudgetExceeded(tight.status)) << tight.status;
  EXPECT_NE(tight.status.message().find("Request::vm_steps_max"), std::string::npos);
}

// The largest budgets mean no budget in effect, not none: rounding them up to whole
// progress-handler calls once wrapped to 0, and a read then ended OK with no rows.
TEST_P(DatabaseTest, TheLargestBudgetsLetEveryStatementRun) {
  DatabaseOptions options;
  options.slice_vm_steps_max = UINT64_MAX;
  options.request_vm_steps_max = UINT64_MAX;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1), (2), (3)").ok());
  EXPECT_EQ(Read("SELECT x FROM t ORDER BY x"), "1|\n2|\n3|\n");
  Probe own;
  Prime(own, Request::Kind::kRead, "SELECT count(*) FROM t");
  own.request.vm_steps_max = UINT64_MAX;
  ASSERT_TRUE(db_->Submit(own.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(own.status.ok()) << own.status;
  EXPECT_EQ(own.rows, "3|\n");
}

TEST_P(DatabaseTest, AGroupThatUsedItsSliceCommitsWhatItHasAndTheRestFollows) {
  DatabaseOptions options;
  options.slice_vm_steps_max = 20'000;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  // Each write inserts 200 rows: a few thousand steps, so a slice holds a handful of them.
  constexpr int kWrites = 30;
  std::vector<Probe> writes(kWrites);
  for (Probe& p : writes) {
    Prime(p, Request::Kind::kWrite,
          "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
          "WHERE x < 200) SELECT x FROM c");
    ASSERT_TRUE(db_->Submit(p.request).ok());
  }
  const uint64_t groups = db_->stats().groups;
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (const Probe& p : writes) EXPECT_TRUE(p.status.ok()) << p.status;
  EXPECT_GT(db_->stats().groups_cut_short, 0u);
  EXPECT_GE(db_->stats().groups - groups, 3u);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), absl::StrCat(kWrites * 200, "|\n"));
}

TEST_P(DatabaseTest, OptionsThatWouldStallTheDatabaseAreRefusedAtOpen) {
  DatabaseOptions no_readers;
  no_readers.readers = 0;
  const absl::Status status = OpenDb(no_readers);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("readers is 0"), std::string::npos) << status;
  EXPECT_EQ(db_->state(), Database::State::kFailed);
}

// ---- Bounded retries --------------------------------------------------------------------------

TEST_P(DatabaseTest, AWriterThatCannotBeginFailsItsWritesAfterBoundedRetries) {
  DatabaseOptions options;
  options.fail_begin_for_testing = true;
  ASSERT_TRUE(OpenDb(options).ok());
  std::vector<Probe> writes(3);
  for (Probe& p : writes) {
    Prime(p, Request::Kind::kWrite, "CREATE TABLE IF NOT EXISTS t(x)");
    ASSERT_TRUE(db_->Submit(p.request).ok());
  }
  // Tick by tick, so a writer that retried for ever would fail here instead of hanging.
  int ticks = 0;
  while (!writes.back().done && ticks < 50) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    ++ticks;
  }
  for (const Probe& p : writes) {
    ASSERT_TRUE(p.done);
    EXPECT_EQ(p.status.code(), absl::StatusCode::kResourceExhausted) << p.status;
    EXPECT_NE(p.status.message().find("could not begin a write transaction"), std::string::npos)
        << p.status;
  }
  EXPECT_EQ(db_->stats().begin_failures, kBeginAttemptsMax);
  EXPECT_LE(ticks, 2 * kBeginAttemptsMax);
  EXPECT_EQ(loop_->pending(), 0u) << "the failed writer still has work scheduled: it would spin";
}

// ---- What SQL a request may run ---------------------------------------------------------------

constexpr auto kWrite = Request::Kind::kWrite;
constexpr auto kRead = Request::Kind::kRead;
constexpr auto kDenied = absl::StatusCode::kPermissionDenied;

struct Refusal {
  Request::Kind kind;
  const char* sql;
  absl::StatusCode code;
  const char* message;
};

class PolicyTest : public DatabaseTest {
 protected:
  void ExpectRefused(const std::vector<Refusal>& cases) {
    for (const Refusal& c : cases) {
      const absl::Status status = Run(c.kind, c.sql);
      EXPECT_EQ(status.code(), c.code) << c.sql << ": " << status;
      EXPECT_NE(status.message().find(c.message), std::string::npos) << c.sql << ": " << status;
    }
  }
};

TEST_P(PolicyTest, HostilePragmasAreRefusedAndChangeNothing) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x CHECK (x > 0))").ok());
  const sqlite3_int64 hard_limit = sqlite3_hard_heap_limit64(-1);
  const sqlite3_int64 soft_limit = sqlite3_soft_heap_limit64(-1);
  const std::vector<Refusal> cases = {
      {kWrite, "PRAGMA hard_heap_limit=100000", kDenied, "not on the list"},
      {kRead, "PRAGMA hard_heap_limit", kDenied, "not on the list"},
      {kWrite, "PRAGMA soft_heap_limit=100000", kDenied, "not on the list"},
      {kWrite, "PRAGMA threads=8", kDenied, "not on the list"},
      {kWrite, "PRAGMA query_only=1", kDenied, "may be read but not set"},
      {kWrite, "PRAGMA ignore_check_constraints=ON", kDenied, "not on the list"},
      {kWrite, "PRAGMA writable_schema=ON", kDenied, "not on the list"},
      {kWrite, "PRAGMA trusted_schema=ON", kDenied, "may be read but not set"},
      {kWrite, "PRAGMA schema_version=99", kDenied, "may be read but not set"},
      {kWrite, "PRAGMA cell_size_check=ON", kDenied, "not on the list"},
      {kWrite, "PRAGMA cache_size=-2000000", kDenied, "may be read but not set"},
      {kWrite, "PRAGMA max_page_count=2147483647", kDenied, "may be read but not set"},
      {kWrite, "PRAGMA mmap_size=1000000000", kDenied, "not on the list"},
      {kWrite, "PRAGMA journal_mode=DELETE", kDenied, "changes durability or locking"},
      {kWrite, "PRAGMA main.synchronous=OFF", kDenied, "changes durability or locking"},
      {kWrite, "PRAGMA foreign_keys=ON", kDenied, "DatabaseOptions::foreign_keys"},
      {kWrite, "PRAGMA case_sensitive_like=1", kDenied, "DatabaseOptions::case_sensitive_like"},
      {kWrite, "PRAGMA recursive_triggers=1", kDenied, "DatabaseOptions::recursive_triggers"},
      {kWrite, "PRAGMA wal_checkpoint(TRUNCATE)", kDenied, "checkpoints the WAL itself"},
      {kRead, "PRAGMA database_list", kDenied, "not on the list"},
      {kRead, "SELECT * FROM pragma_database_list", kDenied, "not on the list"},
      {kWrite, "SELECT * FROM pragma_hard_heap_limit(100000)", absl::StatusCode::kInvalidArgument,
       "too many arguments"},
      {kWrite, "PRAGMA no_such_pragma=1", kDenied, "not on the list"},
  };
  ExpectRefused(cases);
  EXPECT_EQ(sqlite3_hard_heap_limit64(-1), hard_limit);
  EXPECT_EQ(sqlite3_soft_heap_limit64(-1), soft_limit);
  EXPECT_TRUE(Write("INSERT INTO t VALUES (1)").ok());  // Not query_only.
  const absl::Status check = Write("INSERT INTO t VALUES (-1)");
  EXPECT_EQ(check.code(), absl::StatusCode::kFailedPrecondition) << check;  // CHECK holds.
  EXPECT_EQ(Read("PRAGMA foreign_keys"), "0|\n");
  EXPECT_EQ(Read("PRAGMA quick_check"), "'ok'|\n");
}

TEST_P(PolicyTest, PragmasOnTheAllowListWork) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)").ok());
  ASSERT_TRUE(Write("PRAGMA user_version=7").ok());
  EXPECT_EQ(Read("PRAGMA user_version"), "7|\n");
  EXPECT_EQ(Read("SELECT name, type FROM pragma_table_info('t') ORDER BY cid"),
            "'id'|'INTEGER'|\n'name'|'TEXT'|\n");
  EXPECT_EQ(Read("PRAGMA integrity_check"), "'ok'|\n");
  EXPECT_EQ(Read("PRAGMA journal_mode"), "'wal'|\n");
  // EXPLAIN only describes a statement: EXPLAIN of a write is a read.
  std::string plan;
  EXPECT_TRUE(Run(Request::Kind::kRead, "EXPLAIN INSERT INTO t VALUES (1, 'x')", {}, &plan).ok());
  EXPECT_NE(plan.find("'Insert'"), std::string::npos) << plan;
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "0|\n");
}

TEST_P(PolicyTest, SettingsThatMustHoldOnEveryConnectionAreDatabaseOptions) {
  DatabaseOptions options;
  options.foreign_keys = true;
  options.case_sensitive_like = true;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE parent(id INTEGER PRIMARY KEY)").ok());
  ASSERT_TRUE(Write("CREATE TABLE child(parent_id REFERENCES parent(id))").ok());
  const absl::Status orphan = Write("INSERT INTO child VALUES (42)");
  EXPECT_EQ(orphan.code(), absl::StatusCode::kFailedPrecondition) << orphan;
  EXPECT_NE(orphan.message().find("FOREIGN KEY"), std::string::npos) << orphan;
  // Reads run on other connections than the writer, and see the same settings.
  EXPECT_EQ(Read("SELECT 'a' LIKE 'A'"), "0|\n");
  EXPECT_EQ(Read("PRAGMA foreign_keys"), "1|\n");
}

TEST_P(PolicyTest, ConnectionStateAndHostDetailsAreRefusedWithAClearError) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  const std::vector<Refusal> cases = {
      {kRead, "SELECT last_insert_rowid()", kDenied, "use RETURNING"},
      {kWrite, "INSERT INTO t VALUES (last_insert_rowid())", kDenied, "use RETURNING"},
      {kRead, "SELECT changes()", kDenied, "Request::changes"},
      {kRead, "SELECT total_changes()", kDenied, "reports on the connection"},
      {kWrite, "CREATE TEMP TABLE scratch(x)", kDenied, "belong to one connection"},
      {kWrite, "CREATE TABLE temp.scratch(x)", kDenied, "belong to one connection"},
      {kWrite, "CREATE TEMP VIEW v AS SELECT 1", kDenied, "belong to one connection"},
      {kWrite, "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", kDenied,
       "belong to one connection"},
      // Virtual tables whose modules make no shadow tables: a read-only reader could create
      // them in its temp schema too.
      {kWrite, "CREATE VIRTUAL TABLE temp.t USING fts3tokenize(simple)", kDenied,
       "belong to one connection"},
      {kRead, "CREATE VIRTUAL TABLE temp.words USING fts3tokenize(simple)", kDenied,
       "belong to one connection"},
      {kRead, "SELECT hex(fts3_tokenizer('simple'))", kDenied, "process pointers"},
      {kWrite, "VACUUM", kDenied, "VACUUM is not available"},
      {kWrite, "ATTACH DATABASE 'other.db' AS other", kDenied, "ATTACH and DETACH"},
  };
  ExpectRefused(cases);
  // Had the writer taken temp.t, it would hide t: a virtual table may not be modified.
  EXPECT_TRUE(Write("DELETE FROM t WHERE x = 0").ok());
  // A NUL inside the SQL would make SQLite ignore the rest of it silently.
  const std::string with_nul("INSERT INTO t VALUES (1)\0; DROP TABLE t", 39);
  const absl::Status nul = Write(with_nul);
  EXPECT_EQ(nul.code(), absl::StatusCode::kInvalidArgument) << nul;
  EXPECT_NE(nul.message().find("NUL character at byte 24"), std::string::npos) << nul;
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "0|\n");
}

TEST_P(PolicyTest, AValueOfExactlyTheLimitIsStoredAndOneByteMoreIsRefusedByName) {
  DatabaseOptions options;
  options.value_bytes_max = 1000;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)").ok());
  const std::string largest(1000, 'x');
  const absl::Status stored =
      Write("INSERT INTO t(name, data) VALUES ('a', ?)", {Value::Blob(largest)});
  EXPECT_TRUE(stored.ok()) << stored;
  const absl::Status over =
      Write("INSERT INTO t(name, data) VALUES ('b', ?)", {Value::Blob(largest + "x")});
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument) << over;
  EXPECT_NE(over.message().find("value_bytes_max"), std::string::npos) << over;
  EXPECT_EQ(Read("SELECT count(*), max(length(data)) FROM t"), "1|1000|\n");
}

TEST_P(PolicyTest, TextMustBeValidUtf8ByTheOneRule) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x TEXT)").ok());
  for (const char* valid :
       {"plain", "caf\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF"}) {
    EXPECT_TRUE(Write("INSERT INTO t VALUES (?)", {Value::Text(valid)}).ok()) << valid;
  }
  for (const char* invalid : {"\xC0\xAF",             // Overlong '/'.
                              "\xE0\x80\xAF",         // Overlong, three bytes.
                              "\xED\xA0\x80",         // A UTF-16 surrogate.
                              "\xF4\x90\x80\x80",     // Above U+10FFFF.
                              "\xF8\x88\x80\x80",     // A five-byte form.
                              "\x80", "\xE2\x82"}) {  // Stray continuation; truncated.
    const absl::Status status = Write("INSERT INTO t VALUES (?)", {Value::Text(invalid)});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find("not valid UTF-8"), std::string::npos) << status;
  }
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "5|\n");
}

TEST_P(PolicyTest, ValuesOverTheLengthLimitBecomeNullInsideSqlitesOwnFunctions) {
  // Documented behaviour (docs/db.md): SQLite's printf() and format() return NULL, not an
  // error, when their result would exceed value_bytes_max.
  DatabaseOptions options;
  options.value_bytes_max = 1000;
  ASSERT_TRUE(OpenDb(options).ok());
  EXPECT_EQ(Read("SELECT printf('%.*c', 999, 'x') IS NULL, printf('%.*c', 9000, 'x') IS NULL"),
            "0|1|\n");
}

TEST_P(PolicyTest, ErrorsNameTheFileButNeverTheHostsDirectory) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  const absl::Status unknown = Write("INSERT INTO t VALUES (2)");
  ASSERT_EQ(unknown.code(), absl::StatusCode::kUnknown) << unknown;
  EXPECT_NE(unknown.message().find("db.sqlite"), std::string::npos) << unknown;
  if (!dir_->dir().empty()) {  // The simulator keeps its files at the root.
    EXPECT_EQ(unknown.message().find(dir_->dir()), std::string::npos) << unknown;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, DatabaseTest,
                         ::testing::ValuesIn(sqloop::testing::DbTestBackends()),
                         sqloop::testing::BackendParamName);
INSTANTIATE_TEST_SUITE_P(Backends, PolicyTest,
                         ::testing::ValuesIn(sqloop::testing::DbTestBackends()),
                         sqloop::testing::BackendParamName);

}  // namespace
}  // namespace sqloop::db
