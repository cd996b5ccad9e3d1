// Database: requests, group commit, durable acknowledgements, fault handling and bad input, on
// every backend (tests/db_test_support.h).
#include <fcntl.h>
#include <linux/magic.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/db/internal/vfs_core.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"
#include "tests/db_database_fixture.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;
using sqloop::testing::RecordingBackend;
using sqloop::testing::ScratchDir;
using sqloop::testing::TestBackend;
using sqloop::testing::TraceEvent;
using testing::DatabaseTest;
using testing::Probe;
using testing::Render;

// ---- Functional: the same statements against stock SQLite ------------------------------------

struct Step {
  bool write;
  const char* sql;
  std::vector<Value> params;
};

std::string RunOnStockSqlite(sqlite3* db, const Step& step) {
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, step.sql, -1, &stmt, nullptr), SQLITE_OK) << step.sql;
  for (size_t i = 0; i < step.params.size(); ++i) {
    const Value& v = step.params[i];
    const int index = static_cast<int>(i) + 1;
    switch (v.type) {
      case Value::Type::kNull:
        sqlite3_bind_null(stmt, index);
        break;
      case Value::Type::kInt:
        sqlite3_bind_int64(stmt, index, v.int_value);
        break;
      case Value::Type::kDouble:
        sqlite3_bind_double(stmt, index, v.double_value);
        break;
      case Value::Type::kText:
        sqlite3_bind_text(stmt, index, v.bytes.data(), static_cast<int>(v.bytes.size()),
                          SQLITE_TRANSIENT);
        break;
      case Value::Type::kBlob:
        sqlite3_bind_blob(stmt, index, v.bytes.data(), static_cast<int>(v.bytes.size()),
                          SQLITE_TRANSIENT);
        break;
    }
  }
  std::string rows;
  while (sqlite3_step(stmt) == SQLITE_ROW) rows += Render(Row(stmt));
  sqlite3_finalize(stmt);
  return rows;
}

TEST_P(DatabaseTest, CrudMatchesStockSqlite) {
  ASSERT_TRUE(OpenDb().ok());
  const std::string blob("\x00\x01\x02zz", 5);
  const std::vector<Step> steps = {
      {true, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, n)", {}},
      {true,
       "INSERT INTO t(name, score, data, n) VALUES (?, ?, ?, ?)",
       {Value::Text("alpha"), Value::Double(1.5), Value::Blob(blob), Value::Null()}},
      {true,
       "INSERT INTO t(name, score, data, n) VALUES (?, ?, ?, ?)",
       {Value::Text("beta"), Value::Double(-2.25), Value::Blob(""), Value::Int(7)}},
      {true,
       "INSERT INTO t(name, score) SELECT 'gen' || value, value * 0.5 FROM "
       "(WITH RECURSIVE c(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM c "
       "WHERE value < 100) SELECT value FROM c)",
       {}},
      {false, "SELECT count(*), sum(score), min(name), max(name) FROM t", {}},
      {true, "UPDATE t SET score = score * 2 WHERE id % ? = 0", {Value::Int(3)}},
      {true, "DELETE FROM t WHERE score > ?", {Value::Double(40)}},
      {false, "SELECT * FROM t WHERE id < 5 ORDER BY id", {}},
      {false, "SELECT count(*), total(score) FROM t", {}},
      {true, "CREATE INDEX t_name ON t(name)", {}},
      {false, "SELECT name FROM t WHERE name LIKE ? ORDER BY name LIMIT 5", {Value::Text("gen1%")}},
      {true, "INSERT INTO t(id, name) VALUES (1000, 'x') RETURNING id, name", {}},
      {false, "SELECT typeof(n), typeof(data), length(data) FROM t WHERE id <= 2", {}},
  };
  sqlite3* stock = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &stock), SQLITE_OK);
  for (const Step& step : steps) {
    std::string rows;
    absl::Status s = Run(step.write ? Request::Kind::kWrite : Request::Kind::kRead, step.sql,
                         step.params, &rows);
    ASSERT_TRUE(s.ok()) << step.sql << ": " << s;
    EXPECT_EQ(rows, RunOnStockSqlite(stock, step)) << step.sql;
  }
  sqlite3_close(stock);
  EXPECT_EQ(Read("PRAGMA integrity_check"), "'ok'|\n");
}

TEST_P(DatabaseTest, FailingRequestInAGroupFailsAlone) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE kv(k TEXT PRIMARY KEY, v)").ok());
  Probe a, b, c;
  Prime(a, Request::Kind::kWrite, "INSERT INTO kv VALUES ('a', 1)");
  Prime(b, Request::Kind::kWrite, "INSERT INTO kv VALUES ('a', 2)");  // Duplicate key.
  Prime(c, Request::Kind::kWrite, "INSERT INTO kv VALUES ('c', 3)");
  ASSERT_TRUE(db_->Submit(a.request).ok());
  ASSERT_TRUE(db_->Submit(b.request).ok());
  ASSERT_TRUE(db_->Submit(c.request).ok());
  const uint64_t groups = db_->stats().groups;
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(a.status.ok()) << a.status;
  EXPECT_EQ(b.status.code(), absl::StatusCode::kFailedPrecondition) << b.status;
  EXPECT_NE(b.status.message().find("UNIQUE constraint failed"), std::string::npos) << b.status;
  EXPECT_TRUE(c.status.ok()) << c.status;
  EXPECT_EQ(db_->stats().groups, groups + 1) << "one transaction for the three";
  EXPECT_EQ(Read("SELECT k, v FROM kv ORDER BY k"), "'a'|1|\n'c'|3|\n");
}

// ---- Group commit and the durable-ack invariant ----------------------------------------------

// Checks on the trace, at the moment of an acknowledgement, that every write the backend was
// given so far completed and was followed by a completed fsync of the same descriptor submitted
// after that write completed. That is "no acknowledgement before its covering fsync", checked
// independently of the database's own epoch bookkeeping. Reserves (zeros past what SQLite
// wrote: EpochQueue invariants 9 and 10) carry no data and need no fsync.
bool EverythingWrittenIsSynced(const std::vector<TraceEvent>& events, std::string* why) {
  absl::flat_hash_map<int, size_t> last_write;  // fd -> index of its last completed write.
  absl::flat_hash_map<const io::Op*, size_t> fsync_submitted;
  absl::flat_hash_map<int, size_t> synced_upto;  // fd -> submission index of a completed fsync.
  absl::flat_hash_map<const io::Op*, int> writes_in_flight;  // Submitted, not completed: op -> fd.
  for (size_t i = 0; i < events.size(); ++i) {
    const TraceEvent& e = events[i];
    if (e.kind == io::OpKind::kWrite && e.type == TraceEvent::Type::kSubmit) {
      writes_in_flight[e.op] = e.fd;
    }
    if (e.kind == io::OpKind::kWrite && e.type == TraceEvent::Type::kComplete) {
      writes_in_flight.erase(e.op);
      if (e.result >= 0 && !e.reserve) last_write[e.fd] = i;
    }
    if (e.kind == io::OpKind::kFsync && e.type == TraceEvent::Type::kSubmit) {
      fsync_submitted[e.op] = i;
    }
    if (e.kind == io::OpKind::kFsync && e.type == TraceEvent::Type::kComplete && e.result == 0) {
      synced_upto[e.fd] = std::max(synced_upto[e.fd], fsync_submitted[e.op]);
    }
  }
  if (!writes_in_flight.empty()) {
    *why = absl::StrCat("fd ", writes_in_flight.begin()->second,
                        ": a write submitted before the acknowledgement has not completed");
    return false;
  }
  for (const auto& [fd, index] : last_write) {
    if (synced_upto[fd] < index) {
      *why = absl::StrCat("fd ", fd, ": write completed at event ", index,
                          " has no completed fsync submitted after it");
      return false;
    }
  }
  return true;
}

TEST_P(DatabaseTest, GroupCommitNeedsFarFewerFsyncsThanCommits) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").ok());
  constexpr int kWrites = 1000;
  std::vector<Probe> probes(kWrites);
  std::vector<std::string> texts(kWrites);
  int violations = 0;
  std::string first_violation;
  for (int i = 0; i < kWrites; ++i) {
    texts[i] = absl::StrCat("value-", i);
    Prime(probes[i], Request::Kind::kWrite, "INSERT INTO t(id, v) VALUES (?, ?)",
          {Value::Int(i), Value::Text(texts[i])});
    probes[i].on_ack = [&](Probe& p) {
      std::string why;
      if (p.status.ok() && !EverythingWrittenIsSynced(trace_->events(), &why)) {
        if (violations++ == 0) first_violation = why;
      }
    };
  }
  const uint64_t fsyncs_before = trace_->completed_of(io::OpKind::kFsync);
  const uint64_t groups_before = db_->stats().groups;
  for (Probe& p : probes) ASSERT_TRUE(db_->Submit(p.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (Probe& p : probes) ASSERT_TRUE(p.done && p.status.ok()) << p.status;
  const uint64_t fsyncs = trace_->completed_of(io::OpKind::kFsync) - fsyncs_before;
  const uint64_t groups = db_->stats().groups - groups_before;
  // 1000 requests in groups of at most 256: at least 4 groups, and no more than 5 (the first
  // group may start before all were queued). Each group costs one WAL fsync, plus a checkpoint
  // (WAL + database file, and the directory once) when the WAL passes 1000 frames: at most
  // 3 per group + 1, far below the 1000 commits one fsync per request would cost.
  EXPECT_GE(groups, 4u);
  EXPECT_LE(groups, 5u);
  EXPECT_LE(fsyncs, 3 * groups + 1);
  EXPECT_EQ(violations, 0) << first_violation;
  std::printf("[ group commit ] %d commits, %llu groups, %llu fsyncs (%s)\n", kWrites,
              static_cast<unsigned long long>(groups), static_cast<unsigned long long>(fsyncs),
              GetParam().name.c_str());
  EXPECT_EQ(Read("SELECT count(*), sum(id) FROM t"), "1000|499500|\n");
}

// A group rolled back for backpressure runs again; the RETURNING rows its writes delivered the
// first time are voided through on_rows_discarded, so a caller that collects them ends up with
// each row exactly once. The write-behind buffer is made small and a checkpoint put right
// before the group, so the group's commit is held behind the checkpoint's fsync and overflows.
TEST_P(DatabaseTest, ReturningRowsOfARetriedGroupAreDiscardedBeforeTheRerun) {
  VfsOptions vfs_options;
  vfs_options.held_bytes_max = 20 * 1024;  // Five pages: less than the group below writes.
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  DatabaseOptions options;
  options.checkpoint_frames = 1;  // Checkpoint before every group.
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)").ok());
  constexpr int kWrites = 8;
  std::vector<Probe> probes(kWrites);
  for (Probe& p : probes) {
    Prime(p, Request::Kind::kWrite, "INSERT INTO t(v) VALUES (zeroblob(3000)) RETURNING id");
  }
  const uint64_t retries_before = db_->stats().group_retries;
  for (Probe& p : probes) ASSERT_TRUE(db_->Submit(p.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_GT(db_->stats().group_retries, retries_before) << "the test must exercise a retry";
  int discards = 0;
  std::string all_rows;
  for (Probe& p : probes) {
    ASSERT_TRUE(p.done && p.status.ok()) << p.status;
    discards += p.discards;
    EXPECT_EQ(p.rows, absl::StrCat(p.request.last_insert_rowid, "|\n"))
        << "each write's RETURNING row, once, and the one that was committed";
    all_rows += p.rows;
  }
  EXPECT_GT(discards, 0);
  EXPECT_EQ(all_rows, "1|\n2|\n3|\n4|\n5|\n6|\n7|\n8|\n");
  EXPECT_EQ(Read("SELECT count(*), min(id), max(id) FROM t"), "8|1|8|\n");
}

// A checkpoint the write-behind buffer refuses waits for the next commit. Here its first
// attempt misses the page cache at its 21st frame, so when it runs again after the fetch the
// pages that attempt wrote are still queued, and its own do not fit behind them. Tried again at
// every pump, as it was, it queued the same pages behind the same writes at every completion
// that woke the database; on a loaded machine the buffer never drained and a 16 MB insert never
// finished. The next commit's checkpoint copies the whole WAL.
TEST_P(DatabaseTest, ARefusedCheckpointWaitsForTheNextCommit) {
  VfsOptions vfs_options;
  vfs_options.held_bytes_max = 20 * 1024;  // Five pages; the checkpoint copies about forty.
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  DatabaseOptions options;
  options.checkpoint_frames = 16;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)").ok());
  const uint64_t checkpoints = db_->stats().checkpoints;
  const uint64_t complete = db_->stats().checkpoints_complete;
  const uint64_t refusals = vfs_->stats().backpressure;
  // The checkpoint reads each WAL frame through a probe: the 21st misses, after twenty pages
  // went to the buffer (or, beyond its five, straight to the file).
  trace_->MissProbes(1, /*skip=*/20);
  ASSERT_TRUE(Write("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 40) "
                    "INSERT INTO t(v) SELECT zeroblob(3000) FROM c")
                  .ok());
  ASSERT_GT(db_->stats().checkpoint_restarts, 0u) << "the checkpoint did not miss";
  ASSERT_GT(vfs_->stats().backpressure, refusals) << "the buffer refused nothing";
  EXPECT_EQ(db_->stats().checkpoints, checkpoints + 2)
      << "the refused checkpoint ran again before the next commit";
  EXPECT_EQ(db_->stats().checkpoints_complete, complete);
  ASSERT_TRUE(Write("INSERT INTO t(v) VALUES (zeroblob(10))").ok());
  EXPECT_EQ(db_->stats().checkpoints, checkpoints + 3);
  EXPECT_EQ(db_->stats().checkpoints_complete, complete + 1) << "the next commit's did not copy";
  EXPECT_EQ(Read("SELECT count(*), sum(length(v)) FROM t"), "41|120010|\n");
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb(options).ok());
  EXPECT_EQ(Read("SELECT count(*), sum(length(v)) FROM t"), "41|120010|\n");
}

// A group commit that would start in a tick past the loop's tick budget waits for the next
// tick, once: put off once, it runs wherever its turn falls, so it cannot be starved. With no
// budget nothing is put off; with a budget of 1 ns each group is put off exactly once.
TEST_P(DatabaseTest, AGroupPastTheTickBudgetRunsInTheNextTickOnce) {
  for (const absl::Duration budget : {absl::ZeroDuration(), absl::Nanoseconds(1)}) {
    SCOPED_TRACE(absl::StrCat("tick budget ", absl::FormatDuration(budget)));
    db_.reset();
    vfs_.reset();
    loop::LoopOptions loop_options;
    loop_options.tick_budget = budget;
    MakeLoop(std::move(loop_options));
    ASSERT_NO_FATAL_FAILURE(MakeVfs());
    path_ = dir_->Path(budget == absl::ZeroDuration() ? "unbounded.sqlite" : "bounded.sqlite");
    ASSERT_TRUE(OpenDb().ok());
    const uint64_t put_off = budget == absl::ZeroDuration() ? 0 : 1;
    for (const char* sql : {"CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"}) {
      const uint64_t groups = db_->stats().groups;
      const uint64_t groups_put_off = db_->stats().groups_put_off;
      Probe p;
      Prime(p, Request::Kind::kWrite, sql);
      ASSERT_TRUE(db_->Submit(p.request).ok());
      for (int tick = 0; tick < 1000 && !p.done; ++tick) {  // A group never run would hang.
        ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
      }
      ASSERT_TRUE(p.done) << sql << ": the write never completed";
      EXPECT_TRUE(p.status.ok()) << sql << ": " << p.status;
      EXPECT_EQ(db_->stats().groups, groups + 1) << sql;
      EXPECT_EQ(db_->stats().groups_put_off, groups_put_off + put_off) << sql;
    }
    EXPECT_EQ(Read("SELECT count(*) FROM t"), "1|\n");
    ASSERT_TRUE(CloseDb().ok());
  }
}

// A close that finds the writer blocked (its group rolled back by a full write-behind buffer)
// waits for the buffer to drain, then checkpoints from memory only like every close (it used to
// leave the copy to SQLite's checkpoint inside the writer's close, which reads by waiting). The
// writes that were waiting fail as closing; what was acknowledged is there after the close.
TEST_P(DatabaseTest, ACloseWithTheWriterBlockedCheckpointsFromMemoryFirst) {
  VfsOptions vfs_options;
  vfs_options.held_bytes_max = 20 * 1024;
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  DatabaseOptions options;
  options.checkpoint_frames = 1;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)").ok());
  ASSERT_TRUE(Write("INSERT INTO t(v) VALUES (zeroblob(3000))").ok());
  std::vector<Probe> probes(8);
  for (Probe& p : probes) {
    Prime(p, Request::Kind::kWrite, "INSERT INTO t(v) VALUES (zeroblob(3000))");
  }
  const uint64_t retries = db_->stats().group_retries;
  for (Probe& p : probes) ASSERT_TRUE(db_->Submit(p.request).ok());
  while (db_->stats().group_retries == retries) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  const uint64_t waited = vfs_->stats().reads_waited;
  const uint64_t checkpoints = db_->stats().checkpoints;
  const uint64_t closes_unsettled = db_->stats().closes_writer_unsettled;
  trace_->MissProbes(1);
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(db_->stats().closes_writer_unsettled, closes_unsettled + 1)
      << "the writer was not blocked when the close came";
  int acked = 1;
  for (Probe& p : probes) {
    ASSERT_TRUE(p.done);
    EXPECT_TRUE(p.status.ok() || absl::IsCancelled(p.status)) << p.status;
    acked += p.status.ok() ? 1 : 0;
  }
  EXPECT_LT(acked, 9) << "no write was waiting when the close came";
  EXPECT_GT(db_->stats().checkpoints, checkpoints) << "the close did not checkpoint first";
  EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U) << "the close waited for the disk";
  ASSERT_TRUE(OpenDb(options).ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), absl::StrCat(acked, "|\n"));
}

// A write that alone overflows the write-behind buffer, from a state with nothing in flight,
// would overflow on every retry: it fails with a clear error, nothing of it is written, and the
// database goes on. (This used to retry for ever.)
TEST_P(DatabaseTest, AWriteTooLargeForTheBufferAfterACheckpointFailsAlone) {
  VfsOptions vfs_options;
  vfs_options.held_bytes_max = 16 * 1024;
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  DatabaseOptions options;
  options.checkpoint_frames = 1;  // A checkpoint, then a WAL restart, before every group.
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)").ok());
  const absl::Status big = Write("INSERT INTO t(v) VALUES (zeroblob(100000))");
  EXPECT_TRUE(absl::IsResourceExhausted(big)) << big;
  EXPECT_NE(big.message().find("held_bytes_max"), absl::string_view::npos) << big;
  EXPECT_TRUE(Write("INSERT INTO t(v) VALUES (x'01')").ok());
  EXPECT_EQ(Read("SELECT count(*), sum(length(v)) FROM t"), "1|1|\n");
}

// The negative control: acknowledging before the fsync must be caught by the same check.
TEST_P(DatabaseTest, AckBeforeFsyncIsCaught) {
  DatabaseOptions options;
  options.ack_before_fsync_for_testing = true;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY)").ok());
  constexpr int kWrites = 50;
  std::vector<Probe> probes(kWrites);
  int violations = 0;
  for (int i = 0; i < kWrites; ++i) {
    Prime(probes[i], Request::Kind::kWrite, "INSERT INTO t(id) VALUES (?)", {Value::Int(i)});
    probes[i].on_ack = [&](Probe& p) {
      std::string why;
      if (p.status.ok() && !EverythingWrittenIsSynced(trace_->events(), &why)) ++violations;
    };
  }
  for (Probe& p : probes) ASSERT_TRUE(db_->Submit(p.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_GT(violations, 0) << "the durable-ack check must catch an early acknowledgement";
}

// Runs the loop without blocking until `done()` or a bound: with an fsync held back the loop is
// never idle, so RunMode::kUntilDone would not return.
bool RunWithoutWaitingUntil(loop::Loop& loop, const std::function<bool()>& done) {
  for (int tick = 0; tick < 100'000 && !done(); ++tick) {
    if (!loop.Run(loop::RunMode::kNoWait).ok()) return false;
  }
  return done();
}

// The core promise of snapshot reads: while a group's fsync is in flight, reads are answered
// from the last durable state, neither waiting for the fsync nor seeing the syncing group.
// The fsync is held back for as long as the test likes (tests/db_test_support.h), so "while"
// is a fact of the trace, not a race.
class SnapshotReadTest : public DatabaseTest {
 protected:
  // Commits INSERT 2 after INSERT 1 with its fsync held, then runs `reads` to completion.
  void ReadWhileAGroupSyncs(std::vector<Probe>& reads, Probe& write) {
    ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
    ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
    trace_->Hold(io::OpKind::kFsync);
    Prime(write, Request::Kind::kWrite, "INSERT INTO t VALUES (2)");
    ASSERT_TRUE(db_->Submit(write.request).ok());
    // The group's writes may wait in the kernel (a page still under the last fsync's writeback
    // took ~4 ms on ext4 here): run, waiting, until its fsync is held.
    while (trace_->held() == 0) {
      ASSERT_GT(loop_->pending(), 0u) << "the group's fsync never came";
      ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    }
    ASSERT_EQ(db_->stats().groups, 3u) << "the INSERT's group committed and waits for its fsync";
    for (Probe& read : reads) {
      Prime(read, Request::Kind::kRead, "SELECT count(*), sum(x) FROM t");
      ASSERT_TRUE(db_->Submit(read.request).ok());
    }
    ASSERT_TRUE(RunWithoutWaitingUntil(*loop_, [&] {
      for (const Probe& read : reads) {
        if (!read.done) return false;
      }
      return true;
    })) << "reads waited for the held fsync";
    EXPECT_GT(trace_->held(), 0u) << "the fsync must still be in flight";
    EXPECT_FALSE(write.done) << "the write must not be acknowledged before its fsync";
    EXPECT_EQ(db_->stats().reads_on_syncing, reads.size());
  }
};

TEST_P(SnapshotReadTest, ReadsAreAnsweredFromTheDurableStateWhileAGroupsFsyncIsInFlight) {
  ASSERT_TRUE(OpenDb().ok());
  std::vector<Probe> reads(20);
  Probe write;
  ReadWhileAGroupSyncs(reads, write);
  for (const Probe& read : reads) {
    EXPECT_TRUE(read.status.ok()) << read.status;
    EXPECT_EQ(read.rows, "1|1|\n") << "a read saw the group whose fsync is in flight";
    EXPECT_LE(read.request.epoch, db_->durable_epoch());
  }
  trace_->ReleaseHeld();
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(write.status.ok()) << write.status;
  // Linearizable with acknowledgements: a read submitted after the ack sees the write.
  EXPECT_EQ(Read("SELECT count(*), sum(x) FROM t"), "2|3|\n");
}

// The negative control: reads that run on the newest snapshot, durable or not, are caught by
// the same check.
TEST_P(SnapshotReadTest, ReadsOfTheUndurableSnapshotAreCaught) {
  DatabaseOptions options;
  options.read_undurable_for_testing = true;
  ASSERT_TRUE(OpenDb(options).ok());
  std::vector<Probe> reads(20);
  Probe write;
  ReadWhileAGroupSyncs(reads, write);
  int saw_undurable = 0;
  for (const Probe& read : reads) saw_undurable += read.rows == "2|3|\n";
  EXPECT_GT(saw_undurable, 0) << "the check must catch a read of the syncing group";
  trace_->ReleaseHeld();
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
}

// Every read submitted from a write's acknowledgement sees that write, however the groups and
// their fsyncs interleave with the readers' snapshots.
TEST_P(DatabaseTest, AReadSubmittedAfterAnAcknowledgementSeesTheWrite) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  constexpr int kWrites = 40;
  std::vector<Probe> writes(kWrites);
  std::vector<Probe> reads(kWrites);
  int stale = 0;
  for (int i = 0; i < kWrites; ++i) {
    Prime(writes[i], Request::Kind::kWrite, "INSERT INTO t VALUES (?)", {Value::Int(i)});
    Prime(reads[i], Request::Kind::kRead, "SELECT count(*) FROM t WHERE x = ?", {Value::Int(i)});
    reads[i].on_ack = [&stale](Probe& p) { stale += p.rows != "1|\n"; };
    writes[i].on_ack = [this, &reads, i](Probe& p) {
      ASSERT_TRUE(p.status.ok()) << p.status;
      ASSERT_TRUE(db_->Submit(reads[i].request).ok());
    };
  }
  for (Probe& write : writes) ASSERT_TRUE(db_->Submit(write.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (const Probe& read : reads) ASSERT_TRUE(read.done && read.status.ok()) << read.status;
  EXPECT_EQ(stale, 0) << "a read did not see a write acknowledged before it was submitted";
}

// A Client reads its own writes even when it does not wait for them: its read starts once its
// earlier write is acknowledged.
TEST_P(DatabaseTest, AClientReadsItsOwnEarlierWrite) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  Client client;
  Probe write, read, other;
  Prime(write, Request::Kind::kWrite, "INSERT INTO t VALUES (7)");
  Prime(read, Request::Kind::kRead, "SELECT count(*) FROM t");
  Prime(other, Request::Kind::kRead, "SELECT count(*) FROM t");
  write.request.client = read.request.client = &client;
  ASSERT_TRUE(db_->Submit(write.request).ok());
  ASSERT_TRUE(db_->Submit(read.request).ok());
  ASSERT_TRUE(db_->Submit(other.request).ok());  // No client: answered from the durable state.
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(write.status.ok() && read.status.ok() && other.status.ok());
  EXPECT_EQ(read.rows, "1|\n");
  EXPECT_EQ(other.rows, "0|\n") << "a read outside the client did not wait for the write";
  EXPECT_EQ(db_->stats().reads_held, 1u);
}

// The statement cache answers a request by its SQL text, wherever the text lives: a client that
// rewrites one buffer between requests, on a cache that keeps two statements of the three it
// uses, gets each text's own rows.
TEST_P(DatabaseTest, EachRequestRunsTheStatementItsTextSaysWhileTheCacheEvicts) {
  DatabaseOptions options;
  options.statement_cache_max = 2;
  ASSERT_TRUE(OpenDb(options).ok());
  const std::array<const char*, 3> texts = {"SELECT 1 + ?", "SELECT 2 + ?", "SELECT 3 + ?"};
  std::string sql;  // Short enough to live inside the string: one address, three statements.
  const char* const address = sql.data();
  for (const int i : {0, 0, 1, 1, 0, 2, 1, 2, 0, 0, 2, 2, 1}) {
    sql = texts[static_cast<size_t>(i)];
    ASSERT_EQ(sql.data(), address);
    EXPECT_EQ(Read(sql, {Value::Int(10)}), absl::StrCat(11 + i, "|\n")) << sql;
  }
}

// ---- Faults ----------------------------------------------------------------------------------

TEST_P(DatabaseTest, FsyncEioPoisonsWithOutcomeUnknownAndKeepsAcknowledgedData) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());  // Acknowledged.
  trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  absl::Status lost = Write("INSERT INTO t VALUES (2)");
  EXPECT_EQ(lost.code(), absl::StatusCode::kUnknown) << lost;
  EXPECT_NE(lost.message().find("outcome unknown"), std::string::npos) << lost;
  EXPECT_NE(lost.message().find("Restart the process"), std::string::npos) << lost;
  EXPECT_EQ(db_->state(), Database::State::kPoisoned);
  absl::Status refused = Write("INSERT INTO t VALUES (3)");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_FALSE(CloseDb().ok()) << "Close reports the poison";
  trace_->ClearFaults();
  // This process may read bytes the failed fsync never wrote (Linux keeps them in the page
  // cache and marks them clean), so it must not open the file again and build on them.
  const absl::Status reopened = OpenDb();
  EXPECT_EQ(reopened.code(), absl::StatusCode::kFailedPrecondition) << reopened;
  EXPECT_NE(reopened.message().find("Restart the process"), std::string::npos) << reopened;
  db_.reset();
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  // A new Vfs is what a restarted process has: it opens the file and recovers.
  ASSERT_NO_FATAL_FAILURE(MakeVfs());
  ASSERT_TRUE(OpenDb().ok());
  const std::string rows = Read("SELECT x FROM t ORDER BY x");
  EXPECT_TRUE(rows == "1|\n" || rows == "1|\n2|\n") << rows;  // 2's outcome was unknown.
}

// Two Databases of one process may have the same file open: they share its descriptors and its
// write queue. Each is told when the queue's epochs become durable, so the writes of each are
// acknowledged, while both are open and after one of them closed.
TEST_P(DatabaseTest, TwoDatabasesOnOneFileEachHaveTheirWritesAcknowledged) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  std::unique_ptr<Database> other = OpenOther(path_);
  ASSERT_NE(other, nullptr);
  EXPECT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  Probe p;
  Prime(p, Request::Kind::kWrite, "INSERT INTO t VALUES (2)");
  ASSERT_TRUE(other->Submit(p.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(p.done) << "the second Database's write was never acknowledged";
  EXPECT_TRUE(p.status.ok()) << p.status;
  ASSERT_TRUE(CloseAndRun(*other).ok());
  other.reset();
  EXPECT_TRUE(Write("INSERT INTO t VALUES (3)").ok());
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t"), "'1,2,3'|\n");
}

// A failed write poisons the database; an open of its path started in Close's callback, while
// the poisoned files may still be in the VFS, is refused as a tainted path is, saying to
// restart, rather than failing with the old files' I/O error.
TEST_P(DatabaseTest, AReopenRightAfterAPoisonedCloseSaysToRestart) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  trace_->FailNth(io::OpKind::kWrite, 1, EIO);
  EXPECT_FALSE(Write("INSERT INTO t VALUES (1)").ok());
  trace_->ClearFaults();
  ASSERT_EQ(db_->state(), Database::State::kPoisoned);
  struct Reopen {
    loop::Loop* loop;
    Vfs* vfs;
    std::string path;
    std::unique_ptr<Database> db;
    absl::Status closed = absl::UnknownError("close never called back");
    absl::Status opened = absl::UnknownError("open never called back");
  } reopen{loop_.get(), vfs_.get(), path_, nullptr};
  db_->Close(
      [](void* arg, absl::Status status) {
        auto& r = *static_cast<Reopen*>(arg);
        r.closed = std::move(status);
        r.db = std::make_unique<Database>(*r.loop, *r.vfs, r.path);
        r.db->Open([](void* a, absl::Status s) { static_cast<Reopen*>(a)->opened = std::move(s); },
                   &r);
      },
      &reopen);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_FALSE(reopen.closed.ok()) << "Close reports the poison";
  EXPECT_EQ(reopen.opened.code(), absl::StatusCode::kFailedPrecondition) << reopen.opened;
  EXPECT_NE(reopen.opened.message().find("Restart the process"), std::string::npos)
      << reopen.opened;
}

// A failed fsync of the directory may lose file creations and unlinks of every database in it:
// all of them are poisoned, including one whose own fsyncs never failed, and none is opened
// again in this process.
// The size of `path` through the loop (any backend, the simulator's too); -errno if it fails.
int64_t FileBytes(loop::Loop& loop, const std::string& path) {
  io::Op open{.kind = io::OpKind::kOpenAt,
              .fd = AT_FDCWD,
              .flags = O_RDONLY | O_CLOEXEC,
              .path = path.c_str()};
  const int64_t fd = loop.WaitForOp(open);
  if (fd < 0) return fd;
  io::Op size{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
  const int64_t bytes = loop.WaitForOp(size);
  io::Op close{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
  (void)loop.WaitForOp(close);
  return bytes;
}

TEST_P(DatabaseTest, AFailedDirectoryFsyncPoisonsEveryDatabaseInTheDirectory) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  internal::VfsCore& core = internal::VfsCore::Of(*vfs_);
  internal::DatabaseFiles* files = core.Find(path_);
  ASSERT_NE(files, nullptr);
  std::unique_ptr<Database> other = OpenOther(dir_->Path("other.sqlite"));
  ASSERT_NE(other, nullptr);
  ASSERT_NE(core.Find(dir_->Path("other.sqlite")), nullptr);
  // The directory fsync of the first database's files stands for any directory fsync failing.
  files->queue().Poison(absl::DataLossError("test: fsync of the directory failed"));
  core.context().Taint(files->main_path(), files->table().dir_path(),
                       files->queue().poison_status().message(), /*directory=*/true);
  EXPECT_TRUE(core.Find(dir_->Path("other.sqlite"))->queue().poisoned());
  EXPECT_FALSE(core.context().CheckNotTainted(dir_->Path("third.sqlite")).ok())
      << "a new database in that directory is refused too";
  EXPECT_FALSE(CloseAndRun(*other).ok()) << "its close reports the poison";
  // Without create_if_missing, a database that is not there is still NotFound, and nothing is
  // created (the open only looks); one that is there is refused like any other open there.
  DatabaseOptions existing_only;
  existing_only.create_if_missing = false;
  Database third(*loop_, *vfs_, dir_->Path("third.sqlite"), existing_only);
  const absl::Status missing = OpenAndRun(third);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_EQ(FileBytes(*loop_, dir_->Path("third.sqlite")), -ENOENT);
  Database again(*loop_, *vfs_, dir_->Path("other.sqlite"), existing_only);
  const absl::Status refused = OpenAndRun(again);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("Restart the process"), std::string::npos) << refused;
}

// EpochQueue invariant 8: a failed directory fsync poisons every database in the directory
// when its completion arrives, not when its barrier's last fsync does. Another database's
// barrier, syncing the same directory meanwhile, could otherwise acknowledge a write whose
// file creation the failed fsync may have dropped (http seeds 26226, 29065, 5760 and 76300
// lost an acknowledged table or tenant that way). Here the barrier's WAL fsync is held in
// flight while its directory fsync fails: the other database is poisoned before it completes.
TEST_P(DatabaseTest, AFailedDirectoryFsyncPoisonsTheOthersBeforeItsBarrierEnds) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  internal::VfsCore& core = internal::VfsCore::Of(*vfs_);
  std::unique_ptr<Database> other = OpenOther(dir_->Path("other.sqlite"));
  ASSERT_NE(other, nullptr);
  internal::DatabaseFiles* files = core.Find(path_);
  ASSERT_NE(files, nullptr);
  // The next barrier syncs the directory too (as after an open), and that fsync fails.
  files->table().file(internal::FileRole::kWal).needs_dir_sync = true;
  const int dir_fd = files->table().directory_fd();  // Opened by the first barrier.
  ASSERT_GE(dir_fd, 0);
  trace_->FailNth(io::OpKind::kFsync, 1, EIO, false, 0, dir_fd);
  trace_->Hold(io::OpKind::kFsync);
  Probe write;
  Prime(write, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
  ASSERT_TRUE(db_->Submit(write.request).ok());
  // The group's WAL write may wait in the kernel for milliseconds on ext4 (longer than the
  // ticks below take): run, waiting, until the barrier's WAL fsync is held.
  while (trace_->held() == 0) {
    ASSERT_GT(loop_->pending(), 0u) << "the barrier's fsync never came";
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  internal::EpochQueue& others = core.Find(dir_->Path("other.sqlite"))->queue();
  ASSERT_TRUE(RunWithoutWaitingUntil(*loop_, [&] { return others.poisoned(); }))
      << "the other database was not poisoned while the barrier's WAL fsync was in flight";
  EXPECT_GT(trace_->held(), 0u) << "the barrier's other fsync must still be in flight";
  EXPECT_FALSE(write.done) << "the write must not be acknowledged";
  trace_->ReleaseHeld();
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(write.done);
  EXPECT_FALSE(write.status.ok()) << "a write in a barrier whose directory fsync failed";
  EXPECT_FALSE(CloseAndRun(*other).ok()) << "its close reports the poison";
}

// A file found at open may have been created without its directory being synced: by an open
// of this process that failed after SQLite had created the WAL (a metadata error), or by a
// process that died. Its name is durable only once the directory is synced, so writes
// acknowledged in it must wait for that (http seeds 1269, 2853 and 4746 lost them: the next
// open found the empty WAL, synced only the file, and a crash dropped the WAL's name).
TEST_P(DatabaseTest, AWriteInAFileFoundAtOpenWaitsForItsNameToBeDurable) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(CloseDb().ok());  // SQLite checkpoints and keeps the WAL, empty.
  // Remove the WAL and make that durable, then create it again without syncing the directory.
  const std::string wal = path_ + "-wal";
  io::Op unlink_wal{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = wal.c_str()};
  ASSERT_EQ(loop_->WaitForOp(unlink_wal), 0);
  const std::string dir = internal::DirectoryOf(path_);
  io::Op open_dir{.kind = io::OpKind::kOpenAt,
                  .fd = AT_FDCWD,
                  .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                  .path = dir.c_str()};
  const int64_t dir_fd = loop_->WaitForOp(open_dir);
  ASSERT_GE(dir_fd, 0) << dir_fd;
  io::Op sync_dir{.kind = io::OpKind::kFsync, .fd = static_cast<int>(dir_fd)};
  ASSERT_EQ(loop_->WaitForOp(sync_dir), 0);
  io::Op close_dir{.kind = io::OpKind::kClose, .fd = static_cast<int>(dir_fd)};
  (void)loop_->WaitForOp(close_dir);
  io::Op create_wal{.kind = io::OpKind::kOpenAt,
                    .fd = AT_FDCWD,
                    .flags = O_RDWR | O_CREAT | O_CLOEXEC,
                    .path = wal.c_str(),
                    .mode = 0644};
  const int64_t wal_fd = loop_->WaitForOp(create_wal);
  ASSERT_GE(wal_fd, 0) << wal_fd;
  io::Op close_wal{.kind = io::OpKind::kClose, .fd = static_cast<int>(wal_fd)};
  (void)loop_->WaitForOp(close_wal);
  ASSERT_TRUE(OpenDb().ok());  // Finds the empty WAL, and writes into it.
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  if (auto* sim = dynamic_cast<io::SimBackend*>(&trace_->inner()); sim != nullptr) {
    EXPECT_TRUE(sim->disk().DurableContent(wal).has_value())
        << "an acknowledged write is in a WAL whose name a crash may drop";
  }
  EXPECT_EQ(Read("SELECT x FROM t"), "1|\n");
}

// Writes `bytes` as the whole of `path` through the loop (any backend, the simulator's too).
void WriteWholeFile(loop::Loop& loop, const std::string& path, const std::string& bytes) {
  io::Op create{.kind = io::OpKind::kOpenAt,
                .fd = AT_FDCWD,
                .flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                .path = path.c_str(),
                .mode = 0644};
  const int64_t fd = loop.WaitForOp(create);
  ASSERT_GE(fd, 0) << fd;
  io::Op write{.kind = io::OpKind::kWrite,
               .fd = static_cast<int>(fd),
               .buffer = const_cast<char*>(bytes.data()),
               .length = static_cast<uint32_t>(bytes.size())};
  EXPECT_EQ(loop.WaitForOp(write), static_cast<int64_t>(bytes.size()));
  io::Op close{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
  (void)loop.WaitForOp(close);
}

// A crash in a new database's first transaction (the switch to WAL, which rewrites page 1 with
// a rollback journal saying the file had 0 pages) can leave page 1 torn beside that journal.
// SQLite reads the torn header's vacuum settings before it rolls the journal back, and writes
// them into the new page 1: every later integrity check failed (db_crash seed 6962). The VFS
// rolls such a journal back before SQLite reads a byte (FileTable::RollBackFirstTransaction),
// so the database opens empty and stays usable, also for the next process.
TEST_P(DatabaseTest, ACrashInANewDatabasesFirstTransactionLeavesAnEmptyUsableDatabase) {
  // The torn page 1: its header asks for incremental vacuum without auto-vacuum (a largest
  // root page of 0), which quick_check reports as corruption once SQLite has copied it.
  std::string page(4096, '\0');
  page.replace(0, 16, std::string("SQLite format 3\0", 16));
  page[16] = 0x10;  // Page size 4096 (big-endian at 16).
  page[18] = page[19] = 1;
  page[21] = 64;
  page[22] = page[23] = 32;
  page[31] = 1;      // 1 page.
  page[47] = 4;      // Schema format 4.
  page[59] = 1;      // UTF-8.
  page[67] = 1;      // Incremental vacuum.
  page[100] = 0x0d;  // An empty table leaf.
  page[105] = 0x10;
  std::string journal(512, '\0');  // Its journal's header: the file had 0 pages before.
  const unsigned char magic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
  journal.replace(0, 8, reinterpret_cast<const char*>(magic), 8);
  journal[15] = 0x2a;  // Checksum seed.
  journal[22] = 0x02;  // Sector size 512.
  journal[26] = 0x10;  // Page size 4096.
  ASSERT_NO_FATAL_FAILURE(WriteWholeFile(*loop_, path_, page));
  ASSERT_NO_FATAL_FAILURE(WriteWholeFile(*loop_, path_ + "-journal", journal));
  const absl::Status opened = OpenDb();
  ASSERT_TRUE(opened.ok()) << opened;
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1), (2)").ok());
  ASSERT_TRUE(CloseDb().ok());
  MakeVfs();  // The next process checks the file again.
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 1u);
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "3|\n");
}

// Without a reserve (EpochQueue invariant 9) every write that grows the WAL runs at once, so a
// full disk fails the statement.
TEST_P(DatabaseTest, WriteEnospcFailsTheGroupCleanlyAndTheDatabaseStaysUsable) {
  VfsOptions vfs_options;
  vfs_options.wal_reserve_bytes = 0;
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  trace_->FailNth(io::OpKind::kWrite, 1, ENOSPC);
  absl::Status full = Write("INSERT INTO t VALUES (2)");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_NE(full.message().find("nothing was committed"), std::string::npos) << full;
  EXPECT_EQ(db_->state(), Database::State::kReady);
  ASSERT_TRUE(Write("INSERT INTO t VALUES (3)").ok());
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t"), "'1,3'|\n");
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t"), "'1,3'|\n");
}

// A device that broke for good fails every write: each group's COMMIT fails, nothing is
// poisoned (no fsync ran) and no fsync is in flight to wake the database for the writes behind
// the group. They must run as the next groups and fail, not stay queued (db_reads seed 5323).
TEST_P(DatabaseTest, WritesQueuedBehindAFailedGroupAllComplete) {
  VfsOptions vfs_options;
  vfs_options.wal_reserve_bytes = 0;  // The WAL's writes run at once and fail the group.
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  DatabaseOptions options;
  options.group_requests_max = 1;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  trace_->FailNth(io::OpKind::kWrite, 1, EIO, /*persistent=*/true);
  Probe writes[3];
  for (Probe& p : writes) {
    Prime(p, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
    ASSERT_TRUE(db_->Submit(p.request).ok());
  }
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (const Probe& p : writes) {
    ASSERT_TRUE(p.done) << "a write stayed queued behind a failed group";
    EXPECT_EQ(p.status.code(), absl::StatusCode::kUnavailable) << p.status;
    EXPECT_NE(p.status.message().find("nothing was committed"), std::string::npos) << p.status;
  }
  trace_->ClearFaults();
  ASSERT_TRUE(Write("INSERT INTO t VALUES (2)").ok());
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t"), "'2'|\n");
}

TEST_P(DatabaseTest, ReadEioFailsTheReadOnly) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  ASSERT_TRUE(CloseDb().ok());
  DatabaseOptions options;
  options.check_at_open = false;
  ASSERT_TRUE(OpenDb(options).ok());
  // The table's page is not in memory, and reading it in fails.
  trace_->MissProbes(1);
  trace_->FailNth(io::OpKind::kRead, 1, EIO, /*persistent=*/true);
  std::string rows;
  absl::Status failed = Run(Request::Kind::kRead, "SELECT * FROM t", {}, &rows);
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_NE(failed.message().find("Input/output error"), std::string::npos) << failed;
  EXPECT_EQ(db_->stats().read_restarts, 1U) << "the read did not stop on the missing page";
  trace_->ClearFaults();
  EXPECT_EQ(Read("SELECT * FROM t"), "1|\n");
}

// ---- Bad input: a clear error and no change ----------------------------------------------------

TEST_P(DatabaseTest, BadInputIsRefusedWithAClearErrorAndNoChange) {
  DatabaseOptions options;
  options.value_bytes_max = 1000;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  const std::string big(1001, 'b');
  const std::string bad_utf8("\xff\xfe", 2);
  struct Case {
    bool write;
    const char* sql;
    std::vector<Value> params;
    absl::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {true, "INSERT INTO t VALUSE (1)", {}, absl::StatusCode::kInvalidArgument, "syntax error"},
      {true,
       "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)",
       {},
       absl::StatusCode::kInvalidArgument,
       "more than one statement"},
      {true,
       "INSERT INTO t VALUES (?)",
       {},
       absl::StatusCode::kInvalidArgument,
       "has 1 parameters but the request gives 0"},
      {true,
       "INSERT INTO t VALUES (?)",
       {Value::Int(1), Value::Int(2)},
       absl::StatusCode::kInvalidArgument,
       "gives 2"},
      {true,
       "INSERT INTO t VALUES (?)",
       {Value::Text(bad_utf8)},
       absl::StatusCode::kInvalidArgument,
       "not valid UTF-8"},
      {true,
       "INSERT INTO t VALUES (?)",
       {Value::Blob(big)},
       absl::StatusCode::kInvalidArgument,
       "over the limit"},
      {true,
       "INSERT INTO t VALUES (zeroblob(5000))",
       {},
       absl::StatusCode::kInvalidArgument,
       "too big"},
      {true,
       "PRAGMA journal_mode=DELETE",
       {},
       absl::StatusCode::kPermissionDenied,
       "changes durability or locking"},
      {true, "PRAGMA synchronous=OFF", {}, absl::StatusCode::kPermissionDenied, "synchronous"},
      {true,
       "PRAGMA locking_mode=EXCLUSIVE",
       {},
       absl::StatusCode::kPermissionDenied,
       "locking_mode"},
      {true,
       "ATTACH DATABASE '/tmp/other.db' AS other",
       {},
       absl::StatusCode::kPermissionDenied,
       "ATTACH and DETACH are disabled"},
      {false,
       "SELECT load_extension('libfoo')",
       {},
       absl::StatusCode::kPermissionDenied,
       "extension loading is disabled"},
      {true, "BEGIN", {}, absl::StatusCode::kPermissionDenied, "transaction control"},
      {false, "DELETE FROM t", {}, absl::StatusCode::kInvalidArgument, "must not write"},
      {true, "", {}, absl::StatusCode::kInvalidArgument, "empty"},
  };
  for (const Case& c : cases) {
    absl::Status s = Run(c.write ? Request::Kind::kWrite : Request::Kind::kRead, c.sql, c.params);
    EXPECT_EQ(s.code(), c.code) << c.sql << ": " << s;
    EXPECT_NE(s.message().find(c.message), std::string::npos) << c.sql << ": " << s;
  }
  EXPECT_EQ(Read("SELECT count(*), sum(x) FROM t"), "1|1|\n");
  std::string mode;
  EXPECT_TRUE(Run(Request::Kind::kWrite, "PRAGMA journal_mode", {}, &mode).ok());
  EXPECT_EQ(mode, "'wal'|\n");  // Reading it is fine, as a write request and as a read.
  mode.clear();
  EXPECT_TRUE(Run(Request::Kind::kRead, "PRAGMA journal_mode", {}, &mode).ok());
  EXPECT_EQ(mode, "'wal'|\n");
  EXPECT_EQ(Read("SELECT count(*) FROM sqlite_schema"), "1|\n");
}

// The callback of a failed Open, and Close's, are the last a Database makes: its owner may
// destroy it there (ASan checks that nothing touches it afterwards).
TEST_P(DatabaseTest, ADatabaseMayBeDestroyedInsideItsLastCallback) {
  struct Owner {
    std::unique_ptr<Database> db;
    absl::Status status = absl::UnknownError("never called back");
  };
  const Database::Callback destroy = [](void* arg, absl::Status s) {
    auto& owner = *static_cast<Owner*>(arg);
    owner.status = std::move(s);
    owner.db.reset();
  };
  Owner failed{std::make_unique<Database>(*loop_, *vfs_, path_, DatabaseOptions{.readers = 0})};
  failed.db->Open(destroy, &failed);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kInvalidArgument) << failed.status;
  EXPECT_EQ(failed.db, nullptr);

  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  Owner closed{std::move(db_)};
  closed.db->Close(destroy, &closed);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(closed.status.ok()) << closed.status;
  EXPECT_EQ(closed.db, nullptr);
}

// Without create_if_missing, a database whose file does not exist is NotFound and nothing is
// created; nor is one whose file is empty (what a creation that failed before its first
// transaction leaves), which stays as it was. One that exists opens as usual.
TEST_P(DatabaseTest, WithoutCreateIfMissingAMissingOrEmptyFileIsNotFound) {
  DatabaseOptions existing_only;
  existing_only.create_if_missing = false;
  auto expect_nothing_created = [&](int64_t main_bytes) {
    EXPECT_EQ(db_->state(), Database::State::kFailed);
    EXPECT_EQ(FileBytes(*loop_, path_), main_bytes);
    EXPECT_EQ(FileBytes(*loop_, path_ + "-journal"), -ENOENT);
    EXPECT_EQ(FileBytes(*loop_, path_ + "-wal"), -ENOENT);
  };
  const absl::Status missing = OpenDb(existing_only);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_NE(missing.message().find("does not exist"), std::string::npos) << missing;
  expect_nothing_created(-ENOENT);

  io::Op create{.kind = io::OpKind::kOpenAt,
                .fd = AT_FDCWD,
                .flags = O_RDWR | O_CREAT | O_CLOEXEC,
                .path = path_.c_str(),
                .mode = 0644};
  const int64_t fd = loop_->WaitForOp(create);
  ASSERT_GE(fd, 0);
  io::Op close_it{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
  ASSERT_EQ(loop_->WaitForOp(close_it), 0);
  const absl::Status empty = OpenDb(existing_only);
  EXPECT_EQ(empty.code(), absl::StatusCode::kNotFound) << empty;
  expect_nothing_created(0);

  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb(existing_only).ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "0|\n");
}

TEST_P(DatabaseTest, FileThatIsNotSqliteIsRefusedAtOpen) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "writes the file with the host's file system";
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const std::string junk(8192, 'J');
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  absl::Status s = OpenDb();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("not a SQLite database"), std::string::npos) << s;
  EXPECT_EQ(db_->state(), Database::State::kFailed);
}

TEST_P(DatabaseTest, CorruptDatabaseIsRefusedAtOpen) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "corrupts the file with the host's tools";
  sqlite3* stock = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &stock), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock,
                         "PRAGMA page_size=4096; CREATE TABLE t(x); WITH RECURSIVE c(i) AS "
                         "(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) INSERT INTO t "
                         "SELECT randomblob(200) FROM c;",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(stock);
  // Overwrite the middle of page 3 (a b-tree page of t) with garbage.
  const int fd = ::open(path_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const std::string junk(2048, '\x7f');
  ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 2 * 4096 + 8), 2048);
  ::close(fd);
  absl::Status s = OpenDb();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("corrupt"), std::string::npos) << s;
}

// quick_check reads the whole file, so it runs at the first open in a Vfs and again only when
// the files changed since that Vfs closed them after a check. A reopen of the unchanged file
// skips it; a file changed behind the Vfs's back (corrupted, with new timestamps) is checked
// and refused; a new Vfs (a restarted process) checks again.
TEST_P(DatabaseTest, TheIntegrityCheckRunsAgainOnlyWhenTheFileChanged) {
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 1u);
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < "
                    "2000) INSERT INTO t SELECT randomblob(200) FROM c")
                  .ok());
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 0u);
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u) << "the file is as this Vfs left it";
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "2000|\n");
  ASSERT_TRUE(CloseDb().ok());
  if (GetParam().real_descriptors) {
    // Overwrite the middle of page 3 (a b-tree page of t) and give the file new timestamps:
    // the size and the inode stay.
    const int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string junk(2048, '\x7f');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 2 * 4096 + 8), 2048);
    const timespec an_hour_ago[2] = {{.tv_sec = time(nullptr) - 3600, .tv_nsec = 0},
                                     {.tv_sec = time(nullptr) - 3600, .tv_nsec = 0}};
    ASSERT_EQ(::futimens(fd, an_hour_ago), 0);
    ::close(fd);
    absl::Status s = OpenDb();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_EQ(db_->stats().integrity_checks, 1u);
    return;
  }
  MakeVfs();  // A restarted process knows nothing of earlier checks.
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 1u);
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 0u);
}

// FilePreopen invariant 10 at a close: a session that wrote nothing leaves the main file as the
// preopen's fstat found it, so the close remembers that identity for the next open's check with
// no fstat of its own; a session that wrote reads it again. Either way the next open finds the
// files unchanged and skips the check.
TEST_P(DatabaseTest, ACloseThatWroteNothingRemembersThePreopensIdentity) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "the simulator's files have no identity";
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u);
  EXPECT_EQ(db_->stats().identities_reused, 1u) << "the open's check made an fstat";
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "0|\n");
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(db_->stats().identities_reused, 2u) << "the close of a read made an fstat";
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u) << "the close remembered a wrong identity";
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(db_->stats().identities_reused, 1u) << "the close of a write kept the open's identity";
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u);
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "1|\n");
}

// A reopen of a closed database whose files are in the page cache: the files are opened
// through the loop (FilePreopen), the hot-journal checks are answered from what that found,
// the integrity check is skipped (the same Vfs checked the file), and every read is answered
// from memory, so the loop never waits.
TEST_P(DatabaseTest, AReopenMakesTheLoopWaitForNothing) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1), (2), (3)").ok());
  ASSERT_TRUE(CloseDb().ok());
  const uint64_t waited = loop_->stats().waited_ops;
  const uint64_t reads = vfs_->stats().reads;
  const size_t first_event = trace_->events().size();
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "6|\n");
  EXPECT_GT(vfs_->stats().reads, reads) << "the reopen read nothing: the test proves nothing";
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "the reopen waited for the disk on the loop";
  // Both files exist, so no open may create (io_uring would run it on a kernel worker thread).
  int opens = 0;
  for (size_t i = first_event; i < trace_->events().size(); ++i) {
    const TraceEvent& e = trace_->events()[i];
    if (e.type != TraceEvent::Type::kSubmit || e.kind != io::OpKind::kOpenAt) continue;
    ++opens;
    EXPECT_EQ(e.flags & O_CREAT, 0u) << "open " << opens << " of the reopen asked to create";
  }
  EXPECT_GE(opens, 2) << "the main file and the WAL open through the loop";
  // The header and page 1 (read twice: before SQLite knows the file is in WAL mode and after)
  // came from the head FilePreopen read through the loop, with no system call.
  EXPECT_GE(vfs_->stats().reads_from_head, 2u);
}

// The open that creates a database: its files, the rollback journal of its first transaction
// (the switch to WAL) included, and the directory (synced for the new names) are opened
// through the loop, so the loop never waits for an open, an open that creates least of all
// (io_uring hands those to a kernel worker; the first such hand-off of a process took 14 ms).
// What may still wait is a write that allocates (EpochQueue invariant 2) and a close.
TEST_P(DatabaseTest, ACreationNeverWaitsForAnOpen) {
  trace_->WatchWaits(*loop_);
  const size_t first_event = trace_->events().size();
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "0|\n");
  bool created_journal = false;
  bool unlinked_journal = false;
  std::string waited;
  for (size_t i = first_event; i < trace_->events().size(); ++i) {
    const TraceEvent& e = trace_->events()[i];
    if (e.type != TraceEvent::Type::kSubmit) continue;
    if (e.waited) {
      absl::StrAppend(&waited, " ", io::OpKindName(e.kind), e.path.empty() ? "" : " ", e.path);
      EXPECT_NE(e.kind, io::OpKind::kOpenAt) << "the loop waited to open " << e.path;
      EXPECT_NE(e.kind, io::OpKind::kFileSize) << "the loop waited for a file's size";
    }
    if (!absl::EndsWith(e.path, "-journal")) continue;
    created_journal |= e.kind == io::OpKind::kOpenAt && (e.flags & O_CREAT) != 0;
    unlinked_journal |= e.kind == io::OpKind::kUnlink;
  }
  EXPECT_TRUE(created_journal) << "the first transaction had no rollback journal: proves nothing";
  EXPECT_TRUE(unlinked_journal) << "the switch to WAL did not commit by deleting the journal";
  EXPECT_LE(loop_->stats().waited_ops, 3u) << "waited for:" << waited;
}

// FilePreopen invariant 7 on tmpfs, where io_uring hands a read and the open of a missing name
// to a kernel worker: a reopen reads the head from memory and probes for the journal at once,
// so neither goes through the loop.
TEST_P(DatabaseTest, AReopenOnTmpfsReadsTheHeadAndProbesTheJournalInMemory) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "tmpfs is a real file system";
  struct statfs fs {};
  if (statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC) GTEST_SKIP() << "no /dev/shm";
  const ScratchDir shm(/*real=*/true, "/dev/shm");
  path_ = shm.Path("db.sqlite");
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1), (2), (3)").ok());
  ASSERT_TRUE(CloseDb().ok());
  const uint64_t from_head = vfs_->stats().reads_from_head;
  const size_t first_event = trace_->events().size();
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "6|\n");
  EXPECT_GE(vfs_->stats().reads_from_head, from_head + 2) << "the reopen used no head";
  int opens = 0;
  for (size_t i = first_event; i < trace_->events().size(); ++i) {
    const TraceEvent& e = trace_->events()[i];
    if (e.type != TraceEvent::Type::kSubmit) continue;
    EXPECT_NE(e.kind, io::OpKind::kRead) << "a read of the tenant on tmpfs went through the loop";
    if (e.kind != io::OpKind::kOpenAt) continue;
    ++opens;
    EXPECT_FALSE(absl::EndsWith(e.path, "-journal")) << "the journal's probe went through the loop";
  }
  EXPECT_GE(opens, 2) << "the main file and the WAL open through the loop";
  ASSERT_TRUE(CloseDb().ok());
  // FilePreopen invariant 10: that reopen found the device in memory, so the next marks its
  // main file so before reading it, and its integrity check's fingerprint is the preopen's.
  const uint64_t marked = trace_->marked_in_memory();
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(trace_->marked_in_memory(), marked + 1);
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u) << "the file seemed changed";
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "6|\n");
  ASSERT_TRUE(CloseDb().ok());
  db_.reset();
}

// A hot journal with a head read ahead of the open. A process died while committing a
// transaction that added a table: the file holds the new page 1 (the schema), and the hot
// journal the old one. Opening it, SQLite rolls the journal back, writing page 1 while the head
// (the new page 1) is kept; what is read after must be the old schema. (The rollback's write is
// still queued when the reader reads page 1, so this passes even if the head were not dropped:
// VfsTest.AWriteToTheMainFileDropsTheHead is the test of FileTable invariant 4 itself.)
TEST_P(DatabaseTest, AHotJournalRolledBackAtOpenIsWhatReadsSeeDespiteTheHead) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "makes the files with stock SQLite";
  const std::string source = path_ + ".source";
  sqlite3* stock = nullptr;
  ASSERT_EQ(sqlite3_open(source.c_str(), &stock), SQLITE_OK);
  // synchronous=OFF: the journal's header does not count its pages, so a copy of it taken
  // before the commit is whole.
  ASSERT_EQ(sqlite3_exec(stock,
                         "PRAGMA page_size=4096; CREATE TABLE t(x); INSERT INTO t VALUES (1); "
                         "PRAGMA synchronous=OFF; BEGIN; CREATE TABLE u(y)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  std::filesystem::copy_file(source + "-journal", path_ + "-journal");
  ASSERT_EQ(sqlite3_exec(stock, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(stock);
  std::filesystem::copy_file(source, path_);
  std::filesystem::remove(source);
  std::string page1(4096, '\0');
  const int fd = ::open(path_.c_str(), O_RDONLY);
  ASSERT_EQ(::pread(fd, page1.data(), page1.size(), 0), 4096);
  ::close(fd);
  ASSERT_TRUE(absl::StrContains(page1, "CREATE TABLE u")) << "the test proves nothing";

  const uint64_t from_head = vfs_->stats().reads_from_head;
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_GT(vfs_->stats().reads_from_head, from_head) << "the open used no head";
  EXPECT_EQ(Read("SELECT name FROM sqlite_schema"), "'t'|\n");
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "1|\n");
}

// A reopen whose files need no check, in WAL mode with no journal, opens only a reader: a
// tenant reopened to be read pays one connection. The first write opens the writer, and
// kAuto requests are classified before it does.
TEST_P(DatabaseTest, AReopenOpensTheWriterAtTheFirstWrite) {
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_TRUE(db_->writer_open()) << "a new database opens its writer (it sets WAL mode)";
  EXPECT_EQ(db_->stats().writer_opens_deferred, 0u);
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u);
  EXPECT_EQ(db_->stats().writer_opens_deferred, 1u);
  EXPECT_FALSE(db_->writer_open());
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "1|\n");
  EXPECT_EQ(Run(Request::Kind::kAuto, "SELECT count(*) FROM t"), absl::OkStatus());
  EXPECT_FALSE(db_->writer_open()) << "reads opened the writer";
  EXPECT_TRUE(Run(Request::Kind::kAuto, "INSERT INTO t VALUES (2)").ok());
  EXPECT_TRUE(db_->writer_open());
  EXPECT_EQ(db_->stats().writers_opened_late, 1u);
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "3|\n");
  ASSERT_TRUE(CloseDb().ok());
  // What the late writer wrote is in the file, for a new Vfs (a restarted process) too.
  ASSERT_NO_FATAL_FAILURE(MakeVfs());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "3|\n");
}

// A trimmed idle database closes its writer (CloseWriterIfIdle, the registry's trim), never
// while a read runs or a write is queued; reads go on with the reader, the next write
// opens the writer again and sees what the first one wrote, and the close opens it again so
// that the WAL is emptied as at every close.
TEST_P(DatabaseTest, AnIdleWriterClosesAndTheNextWriteOpensItAgain) {
  DatabaseOptions options;
  options.rows_per_tick = 1;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1)").ok());
  ASSERT_TRUE(db_->writer_open());
  Probe scan;  // One row a tick: still running after the first.
  Prime(scan, Request::Kind::kRead, "SELECT x FROM t, (SELECT 1 UNION ALL SELECT 2)");
  ASSERT_TRUE(db_->Submit(scan.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  ASSERT_FALSE(scan.done);
  ASSERT_FALSE(scan.rows.empty()) << "the scan has not started";
  EXPECT_FALSE(db_->CloseWriterIfIdle()) << "closed with a read running";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(scan.rows, "1|\n1|\n");
  Probe queued;
  Prime(queued, Request::Kind::kWrite, "INSERT INTO t VALUES (2)");
  ASSERT_TRUE(db_->Submit(queued.request).ok());
  EXPECT_FALSE(db_->CloseWriterIfIdle()) << "closed with a write queued";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(queued.done && queued.status.ok()) << queued.status;
  EXPECT_TRUE(db_->writer_open());
  EXPECT_TRUE(db_->CloseWriterIfIdle());
  EXPECT_FALSE(db_->writer_open());
  EXPECT_EQ(db_->stats().writers_closed_idle, 1u);
  EXPECT_FALSE(db_->CloseWriterIfIdle()) << "closed twice";
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "3|\n");
  EXPECT_FALSE(db_->writer_open()) << "a read opened the writer";
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4)").ok());
  EXPECT_TRUE(db_->writer_open());
  EXPECT_EQ(db_->stats().writers_opened_late, 1u);
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "7|\n");
  // Closed again while idle, the writer reopens at the close to close last: its close empties
  // the WAL into the main file and truncates it, which a reader's cannot.
  ASSERT_GT(FileBytes(*loop_, path_ + "-wal"), 0) << "the test proves nothing";
  EXPECT_TRUE(db_->CloseWriterIfIdle());
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(FileBytes(*loop_, path_ + "-wal"), 0) << "the WAL was left to the reader";
  ASSERT_NO_FATAL_FAILURE(MakeVfs());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "7|\n");
}

// After a checkpoint SQLite writes the WAL again from its start, over bytes the disk already
// holds: those writes allocate nothing, so they go behind (EpochQueue invariant 2) and a group
// commit makes the loop wait for nothing. While the WAL grows, its writes run at once, so a full
// disk is reported to the statement.
TEST_P(DatabaseTest, WritesOverBytesTheDiskHoldsDoNotMakeTheLoopWait) {
  VfsOptions vfs_options;
  vfs_options.wal_reserve_bytes = 0;  // Growing files' writes run at once.
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  DatabaseOptions options;
  options.checkpoint_frames = 4;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  const uint64_t direct = vfs_->stats().direct_writes;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(Write("INSERT INTO t VALUES (?)", {Value::Int(i)}).ok());
  }
  EXPECT_GT(vfs_->stats().direct_writes, direct) << "the growing WAL is written at once";
  ASSERT_GT(db_->stats().checkpoints, 0u) << "no checkpoint: the WAL was never written again";
  const uint64_t waited = loop_->stats().waited_ops;
  const uint64_t held = vfs_->stats().held_writes;
  ASSERT_TRUE(Write("INSERT INTO t VALUES (100)").ok());
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "a write over the restarted WAL waited";
  EXPECT_GT(vfs_->stats().held_writes, held);
  EXPECT_EQ(Read("SELECT count(*), sum(x) FROM t"), "21|290|\n");
}

// While the WAL grows, it is reserved ahead with zeros at each barrier (EpochQueue invariant 9),
// so after the first group its writes allocate nothing, go behind and make the loop wait for
// nothing. The zeros past the last frame are harmless: a new process recovers every row.
TEST_P(DatabaseTest, AGrowingWalIsReservedAheadAndItsWritesDoNotMakeTheLoopWait) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x, pad)").ok());
  ASSERT_GE(vfs_->stats().wal_reserves, 1u) << "the first group reserved nothing";
  const VfsStats before = vfs_->stats();
  const uint64_t waited = loop_->stats().waited_ops;
  constexpr int kWrites = 100;  // About 100 frames of 4 KiB: the WAL grows past two reserves.
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(Write("INSERT INTO t VALUES (?, zeroblob(2000))", {Value::Int(i)}).ok());
  }
  EXPECT_EQ(db_->stats().checkpoints, 0u) << "a checkpoint restarted the WAL: nothing grew";
  EXPECT_GE(vfs_->stats().wal_reserves, before.wal_reserves + 2) << "the reserve did not keep up";
  EXPECT_EQ(vfs_->stats().direct_writes, before.direct_writes) << "a write ran at once";
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "the loop waited for a write";
  EXPECT_GE(vfs_->stats().held_writes, before.held_writes + kWrites);
  EXPECT_EQ(vfs_->stats().poisonings, 0u);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_NO_FATAL_FAILURE(MakeVfs());  // A new process: WAL recovery reads past the last frame.
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*), sum(x) FROM t"), "100|4950|\n");
}

// A checkpoint that grows the main file writes over bytes reserved at the commits before it
// (EpochQueue invariant 10), so the loop waits for none of its writes. The zeros past the
// database's pages are harmless: a new process's integrity check passes and every row is back.
TEST_P(DatabaseTest, ACheckpointThatGrowsTheMainFileDoesNotMakeTheLoopWait) {
  DatabaseOptions options;
  options.checkpoint_frames = 16;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x, pad)").ok());
  const VfsStats before = vfs_->stats();
  const uint64_t waited = loop_->stats().waited_ops;
  const uint64_t checkpoints = db_->stats().checkpoints;
  constexpr int kWrites = 100;  // About 100 pages: the file grows at every checkpoint.
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(Write("INSERT INTO t VALUES (?, zeroblob(2000))", {Value::Int(i)}).ok());
  }
  EXPECT_GE(db_->stats().checkpoints, checkpoints + 3) << "too few checkpoints grew the file";
  EXPECT_GE(vfs_->stats().main_reserves, before.main_reserves + 2) << "the reserve did not keep up";
  EXPECT_EQ(vfs_->stats().direct_writes, before.direct_writes) << "a write ran at once";
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "the loop waited for a write";
  EXPECT_EQ(vfs_->stats().poisonings, 0u);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_NO_FATAL_FAILURE(MakeVfs());  // A new process: its first open runs quick_check.
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 1u);
  EXPECT_EQ(Read("SELECT count(*), sum(x) FROM t"), "100|4950|\n");
}

// A reserve the disk refuses (it is full) fails nothing: no request sees it and the database is
// not poisoned. The WAL's writes past what is allocated then run at once again, so a full disk
// reaches the statement, and once such a write succeeded the reserves resume.
TEST_P(DatabaseTest, AReserveTheDiskRefusesPoisonsNothing) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x, pad)").ok());
  trace_->FailNth(io::OpKind::kWrite, 1, ENOSPC, /*persistent=*/false, kWalReserveBytesDefault);
  int i = 0;
  auto write_until = [&](auto done) {
    for (int bound = i + 200; i < bound && !done(); ++i) {
      ASSERT_TRUE(Write("INSERT INTO t VALUES (?, zeroblob(2000))", {Value::Int(i)}).ok());
    }
    ASSERT_TRUE(done()) << "not reached within 200 writes";
  };
  ASSERT_NO_FATAL_FAILURE(write_until([&] { return vfs_->stats().reserve_failures == 1; }));
  EXPECT_EQ(db_->state(), Database::State::kReady);
  EXPECT_EQ(vfs_->stats().poisonings, 0u);
  const VfsStats refused = vfs_->stats();
  ASSERT_NO_FATAL_FAILURE(
      write_until([&] { return vfs_->stats().direct_writes > refused.direct_writes; }));
  ASSERT_NO_FATAL_FAILURE(
      write_until([&] { return vfs_->stats().wal_reserves > refused.wal_reserves; }));
  EXPECT_EQ(vfs_->stats().reserve_failures, 1u);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), absl::StrCat(i, "|\n"));
}

// ---- Bursts of opens and closes ----------------------------------------------------------------

// Opens `count` databases named `stem`0.db... at once and runs the loop one tick at a time
// until every one called back; returns the longest time a tick spent running callbacks, on the
// backend's clock (virtual time on the simulator), and checks that every open succeeded.
int64_t OpenBurst(loop::Loop& loop, Vfs& vfs, const std::string& stem, int count,
                  std::vector<std::unique_ptr<Database>>& dbs) {
  std::vector<absl::Status> results(count, absl::UnknownError("open never called back"));
  for (int i = 0; i < count; ++i) {
    dbs.push_back(std::make_unique<Database>(loop, vfs, absl::StrCat(stem, i, ".db")));
    dbs.back()->Open(
        [](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
        &results[i]);
  }
  int64_t longest = 0;
  auto all_called_back = [&] {
    for (const absl::Status& r : results) {
      if (r.code() == absl::StatusCode::kUnknown) return false;
    }
    return true;
  };
  while (!all_called_back()) {
    EXPECT_TRUE(loop.Run(loop::RunMode::kOnce).ok());
    // The tick's work: from the clock reading after its wait to now.
    longest = std::max(longest, loop.backend().NowNs() - loop.now_ns());
  }
  for (const absl::Status& r : results) EXPECT_TRUE(r.ok()) << r;
  return longest;
}

void CloseAll(loop::Loop& loop, std::vector<std::unique_ptr<Database>>& dbs) {
  for (auto& db : dbs) db->Close(nullptr, nullptr);
  EXPECT_TRUE(loop.Run(loop::RunMode::kUntilDone).ok());
  for (auto& db : dbs) EXPECT_EQ(db->state(), Database::State::kClosed);
  dbs.clear();
}

// With a budget of 0 a tick opens (or closes) one database: a burst of 12 takes 12 ticks at
// least, and both the opens and the closes were deferred. The loop's own tick budget is off:
// on a loaded machine it could end a tick before a database had asked.
TEST_P(DatabaseTest, ABurstOfOpensAndClosesIsSpreadOverTicks) {
  vfs_.reset();
  loop::LoopOptions loop_options;
  loop_options.tick_budget = absl::ZeroDuration();
  MakeLoop(std::move(loop_options));
  MakeVfs(VfsOptions{.open_tick_budget_ns = 0});
  const std::string stem = internal::DirectoryOf(path_) + "/burst";
  std::vector<std::unique_ptr<Database>> dbs;
  const uint64_t ticks = loop_->stats().ticks;
  (void)OpenBurst(*loop_, *vfs_, stem, 12, dbs);
  EXPECT_GE(loop_->stats().ticks - ticks, 12u);
  const uint64_t deferred_opens = vfs_->stats().opens_deferred;
  EXPECT_GE(deferred_opens, 11u) << "every open after a tick's first waits for a later tick";
  CloseAll(*loop_, dbs);
  EXPECT_GE(vfs_->stats().opens_deferred - deferred_opens, 11u) << "so does every close";
}

// On the simulator, where creating a database waits for the device inside the open (its first
// transaction's journal): a burst of 48 creations keeps every tick within the budget plus the
// one creation that crosses it, while without the budget one tick runs them all. Every
// latency is fixed, so a creation costs the same virtual time alone as in the burst (with drawn
// latencies, the one measured alone is just one draw).
TEST_P(DatabaseTest, ABurstOfCreationsKeepsTicksWithinTheBudgetInVirtualTime) {
  if (GetParam().real_descriptors) GTEST_SKIP() << "a bound on time is checked in virtual time";
  io::SimBackendOptions fixed;
  fixed.file_read_latency = {.min_ns = 20'000, .max_ns = 20'000};
  fixed.file_write_latency = {.min_ns = 30'000, .max_ns = 30'000};
  fixed.fsync_latency = {.min_ns = 500'000, .max_ns = 500'000};
  fixed.other_latency = {.min_ns = 3'000, .max_ns = 3'000};
  // A loop on the fixed simulator; the unpaced bursts turn its tick budget off too, since a
  // reading of the clock past it (the open budget's) would end their ticks.
  auto use_loop = [&](absl::Duration tick_budget) {
    vfs_.reset();
    trace_ = nullptr;
    loop::LoopOptions loop_options;
    loop_options.tick_budget = tick_budget;
    loop_ = std::make_unique<loop::Loop>(std::make_unique<io::SimBackend>(fixed),
                                         std::move(loop_options));
  };
  use_loop(absl::ZeroDuration());
  const std::string dir = internal::DirectoryOf(path_);
  std::vector<std::unique_ptr<Database>> dbs;
  MakeVfs(VfsOptions{.open_tick_budget_ns = INT64_MAX});
  const int64_t one_open = OpenBurst(*loop_, *vfs_, dir + "/one", 1, dbs);
  CloseAll(*loop_, dbs);
  ASSERT_GT(one_open, 0) << "a creation takes no virtual time: the test would prove nothing";
  const int64_t unbounded = OpenBurst(*loop_, *vfs_, dir + "/unpaced", 48, dbs);
  CloseAll(*loop_, dbs);
  use_loop(loop::kTickBudgetDefault);
  MakeVfs(VfsOptions{});
  const int64_t paced = OpenBurst(*loop_, *vfs_, dir + "/paced", 48, dbs);
  CloseAll(*loop_, dbs);
  const int64_t bound = kOpenTickBudgetNsDefault + 2 * one_open;
  EXPECT_GT(unbounded, bound) << "without the budget the burst must overrun it";
  EXPECT_LE(paced, bound) << "one creation: " << one_open
                          << " ns; without the budget: " << unbounded;
  EXPECT_GT(vfs_->stats().opens_deferred, 0u);
  std::printf("longest tick: one creation %lld ns, 48 unpaced %lld ns, 48 paced %lld ns\n",
              static_cast<long long>(one_open), static_cast<long long>(unbounded),
              static_cast<long long>(paced));
}

// ---- Reads, ordering, deadlines, cancellation ------------------------------------------------

TEST_P(DatabaseTest, LongReadsAreSteppedAndDoNotBlockPointReads) {
  DatabaseOptions options;
  options.rows_per_tick = 10;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < "
                    "1000) INSERT INTO t SELECT i FROM c")
                  .ok());
  Probe scan, point;
  std::vector<std::string> order;
  Prime(scan, Request::Kind::kRead, "SELECT x FROM t");
  Prime(point, Request::Kind::kRead, "SELECT x FROM t WHERE rowid = 7");
  scan.order = point.order = &order;
  scan.name = "scan";
  point.name = "point";
  EXPECT_EQ(db_->readers_open(), 1u) << "the second reader opens when a read needs it";
  ASSERT_TRUE(db_->Submit(scan.request).ok());
  ASSERT_TRUE(db_->Submit(point.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(scan.status.ok() && point.status.ok());
  EXPECT_EQ(order, (std::vector<std::string>{"point", "scan"}));
  EXPECT_GE(db_->stats().read_steps_yielded, 99u);
  EXPECT_EQ(point.rows, "7|\n");
  EXPECT_EQ(db_->readers_open(), 2u);
  EXPECT_EQ(db_->stats().readers_opened, 1u);
}

// A database opens one reader; a read that finds it busy opens the next (up to
// DatabaseOptions::readers), and ReleaseMemory closes the idle ones beyond the first (what
// that gives back is measured in db_memory_test). Reads after that still answer.
TEST_P(DatabaseTest, ReadersOpenOnDemandAndATrimClosesTheExtraOnes) {
  DatabaseOptions options;
  options.rows_per_tick = 1;
  options.readers = 3;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (1), (2), (3)").ok());
  EXPECT_EQ(db_->readers_open(), 1u);
  std::vector<Probe> scans(5);
  for (Probe& scan : scans) {
    Prime(scan, Request::Kind::kRead, "SELECT x FROM t");
    ASSERT_TRUE(db_->Submit(scan.request).ok());
  }
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (const Probe& scan : scans) EXPECT_EQ(scan.rows, "1|\n2|\n3|\n");
  EXPECT_EQ(db_->readers_open(), 3u) << "five scans stepping one row a tick need every reader";
  EXPECT_EQ(db_->stats().readers_opened, 2u);
  db_->ReleaseMemory();
  EXPECT_EQ(db_->readers_open(), 1u);
  EXPECT_EQ(Read("SELECT sum(x) FROM t"), "6|\n");
}

// More reads than reader connections, with nothing else in flight: the queued ones must still
// be started as readers free up (a stall here once left the loop idle with reads waiting).
TEST_P(DatabaseTest, MoreQueuedReadsThanReadersAllComplete) {
  ASSERT_TRUE(OpenDb().ok());  // kReadersDefault readers.
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (42)").ok());
  std::vector<Probe> reads(50);
  for (Probe& read : reads) {
    Prime(read, Request::Kind::kRead, "SELECT x FROM t");
    ASSERT_TRUE(db_->Submit(read.request).ok());
  }
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (const Probe& read : reads) {
    ASSERT_TRUE(read.done) << "a queued read was never started";
    EXPECT_TRUE(read.status.ok()) << read.status;
    EXPECT_EQ(read.rows, "42|\n");
  }
}

TEST_P(DatabaseTest, OneClientsRequestsCompleteInSubmissionOrder) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  Client client;
  std::vector<Probe> probes(6);
  std::vector<std::string> order;
  for (size_t i = 0; i < probes.size(); ++i) {
    const bool write = i % 2 == 0;
    Prime(probes[i], write ? Request::Kind::kWrite : Request::Kind::kRead,
          write ? "INSERT INTO t VALUES (1)" : "SELECT count(*) FROM t");
    probes[i].request.client = &client;
    probes[i].order = &order;
    probes[i].name = std::to_string(i);
  }
  for (Probe& p : probes) ASSERT_TRUE(db_->Submit(p.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(order, (std::vector<std::string>{"0", "1", "2", "3", "4", "5"}));
}

// A Client orders one database's requests. A request whose client has requests in flight on
// another database is refused (each database would deliver through the other's FIFO), and the
// client is free again once they are delivered.
TEST_P(DatabaseTest, AClientServesOneDatabaseAtATime) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  std::unique_ptr<Database> other = OpenOther(dir_->Path("other.sqlite"));
  ASSERT_NE(other, nullptr);
  Client client;
  Probe here;
  Probe there;
  Prime(here, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
  Prime(there, Request::Kind::kRead, "SELECT 7");
  here.request.client = there.request.client = &client;
  ASSERT_TRUE(db_->Submit(here.request).ok());
  const absl::Status refused = other->Submit(there.request);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "one Client per database")) << refused;
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(here.status.ok()) << here.status;
  EXPECT_FALSE(there.done);
  ASSERT_TRUE(other->Submit(there.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(there.status.ok()) << there.status;
  EXPECT_EQ(there.rows, "7|\n");
  ASSERT_TRUE(CloseAndRun(*other).ok());
}

// Misuse of a Client's lifetime stops the process with a message instead of corrupting memory:
// destroying it with requests in flight, and resubmitting a request that is done but still
// waits behind its client's earlier one (its on_done has not run).
TEST_P(DatabaseTest, AClientsRequestsInFlightAreCheckedNotCorrupted) {
  DatabaseOptions options;
  options.rows_per_tick = 4;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < "
                    "200) INSERT INTO t SELECT i FROM c")
                  .ok());
  EXPECT_DEATH(
      {
        Probe p;
        Client doomed;
        Prime(p, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
        p.request.client = &doomed;
        (void)db_->Submit(p.request);
      },
      "Client destroyed with requests in flight");

  Client client;
  Probe scan;
  Probe point;
  Prime(scan, Request::Kind::kRead, "SELECT x FROM t");
  Prime(point, Request::Kind::kRead, "SELECT 1");
  scan.request.client = point.request.client = &client;
  ASSERT_TRUE(db_->Submit(scan.request).ok());
  ASSERT_TRUE(db_->Submit(point.request).ok());
  for (int i = 0; i < 1000 && point.request.state() != Request::State::kDone; ++i) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  }
  ASSERT_EQ(point.request.state(), Request::State::kDone);
  ASSERT_FALSE(point.done) << "the point read was delivered before the scan ahead of it";
  EXPECT_DEATH((void)db_->Submit(point.request), "already submitted; wait for on_done");
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(scan.status.ok()) << scan.status;
  EXPECT_TRUE(point.status.ok()) << point.status;
}

TEST_P(DatabaseTest, DeadlinesAndCancellation) {
  DatabaseOptions options;
  options.rows_per_tick = 1;
  ASSERT_TRUE(OpenDb(options).ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  // A write whose deadline passes while it runs fails alone; its group neighbours commit.
  Probe before, slow, after;
  Prime(before, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
  Prime(slow, Request::Kind::kWrite,
        "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT "
        "i + 1 FROM c WHERE i < 100000000) SELECT i FROM c)");
  Prime(after, Request::Kind::kWrite, "INSERT INTO t VALUES (3)");
  slow.request.deadline_ns = loop_->now_ns() + 1;
  ASSERT_TRUE(db_->Submit(before.request).ok());
  ASSERT_TRUE(db_->Submit(slow.request).ok());
  ASSERT_TRUE(db_->Submit(after.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(before.status.ok()) << before.status;
  EXPECT_EQ(slow.status.code(), absl::StatusCode::kDeadlineExceeded) << slow.status;
  EXPECT_TRUE(after.status.ok()) << after.status;
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t"), "'1,3'|\n");
  // A running read is cancelled between its steps.
  Probe scan;
  Prime(scan, Request::Kind::kRead, "SELECT x FROM t");
  ASSERT_TRUE(db_->Submit(scan.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  EXPECT_TRUE(db_->Cancel(scan.request) || scan.done);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  // One row per tick: the cancel lands after the first row, before the second.
  EXPECT_EQ(scan.status.code(), absl::StatusCode::kCancelled) << scan.status;
  EXPECT_EQ(scan.rows, "1|\n");
}

// A request submitted from the callback of one the close cancelled is refused, not queued
// and cancelled in turn: a client that resubmits whatever was cancelled would otherwise keep
// the close in that callback for ever.
TEST_P(DatabaseTest, ARequestSubmittedWhileTheCloseCancelsIsRefused) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  Probe queued;
  Probe again;
  Prime(queued, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
  Prime(again, Request::Kind::kWrite, "INSERT INTO t VALUES (2)");
  absl::Status resubmitted = absl::UnknownError("not resubmitted");
  queued.on_ack = [&](Probe& /*p*/) { resubmitted = db_->Submit(again.request); };
  ASSERT_TRUE(db_->Submit(queued.request).ok());
  absl::Status closed = absl::UnknownError("close never called back");
  db_->Close([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
             &closed);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(closed.ok()) << closed;
  EXPECT_EQ(queued.status.code(), absl::StatusCode::kCancelled) << queued.status;
  EXPECT_EQ(resubmitted.code(), absl::StatusCode::kFailedPrecondition) << resubmitted;
  EXPECT_FALSE(again.done) << "the refused request still reached on_done";
}

// A host may cancel a request from the callback of another: when the close is failing both, the
// second is already on its way out, so the cancel is too late and it completes as closing.
TEST_P(DatabaseTest, ACancelFromTheCallbackOfARequestTheCloseFailsIsTooLate) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  Probe first;
  Probe second;
  Prime(first, Request::Kind::kWrite, "INSERT INTO t VALUES (1)");
  Prime(second, Request::Kind::kWrite, "INSERT INTO t VALUES (2)");
  bool cancelled = true;
  first.on_ack = [&](Probe& /*p*/) { cancelled = db_->Cancel(second.request); };
  ASSERT_TRUE(db_->Submit(first.request).ok());
  ASSERT_TRUE(db_->Submit(second.request).ok());
  ASSERT_TRUE(CloseAndRun(*db_).ok());
  EXPECT_FALSE(cancelled);
  EXPECT_EQ(first.status.code(), absl::StatusCode::kCancelled) << first.status;
  EXPECT_EQ(second.status.code(), absl::StatusCode::kCancelled) << second.status;
  EXPECT_TRUE(absl::StrContains(second.status.message(), "closing")) << second.status;
}

// A close copies the WAL into the main file itself first, from memory only; if that fails (a
// write error), SQLite's own close checkpoint, which would read the WAL by waiting, is skipped:
// the WAL keeps its frames, all durable, and the next open recovers every row from it. Without
// the WAL reserve the checkpoint's writes that grow the main file run at once, so the error
// reaches the checkpoint.
TEST_P(DatabaseTest, ACloseWhoseCheckpointFailsLeavesTheWalToTheNextOpen) {
  VfsOptions vfs_options;
  vfs_options.wal_reserve_bytes = 0;
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Write("INSERT INTO t VALUES (randomblob(3000))").ok());
  const uint64_t checkpoints = db_->stats().checkpoints;
  const uint64_t waited = vfs_->stats().reads_waited;
  trace_->FailNth(io::OpKind::kWrite, 1, EIO);
  ASSERT_TRUE(CloseDb().ok());
  trace_->ClearFaults();
  EXPECT_EQ(db_->stats().checkpoints, checkpoints + 1) << "the close did not checkpoint first";
  EXPECT_EQ(vfs_->stats().reads_waited, waited) << "the close read by waiting";
  EXPECT_GT(WalBytes(), 0) << "SQLite's close checkpointed the WAL after all";
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));  // A new process recovers the WAL.
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*), sum(length(x)) FROM t"), "20|60000|\n");
}

// ---- Interoperability ---------------------------------------------------------------------

// The VFS keeps the WAL across close (SQLITE_FCNTL_PERSIST_WAL), emptied by the close's
// checkpoint, so closing deletes no file and reopening creates none; the data is in the main
// file and a reopen reads it.
TEST_P(DatabaseTest, ACloseLeavesAnEmptyWalForTheNextOpen) {
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Write("INSERT INTO t VALUES (randomblob(3000))").ok());
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(WalBytes(), 0) << "the close's checkpoint left frames in the WAL";
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*), sum(length(x)) FROM t"), "20|60000|\n");
}

TEST_P(DatabaseTest, StockSqliteShellReadsWhatSqloopWrote) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "the shell reads the host's file system";
  if (system("command -v sqlite3 >/dev/null 2>&1") != 0) GTEST_SKIP() << "no sqlite3 shell";
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)").ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(Write("INSERT INTO kv VALUES (?, ?)",
                      {Value::Text(absl::StrCat("key", i)), Value::Int(i * i)})
                    .ok());
  }
  const std::string ours = Read("SELECT group_concat(k || '=' || v, ',') FROM kv");
  ASSERT_TRUE(CloseDb().ok());
  const std::string command =
      absl::StrCat("sqlite3 '", path_,
                   "' \"PRAGMA integrity_check; SELECT group_concat(k || '=' || v, ',') "
                   "FROM kv;\" 2>&1");
  FILE* shell = popen(command.c_str(), "r");
  ASSERT_NE(shell, nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), shell)) output.append(buffer, n);
  ASSERT_EQ(pclose(shell), 0) << output;
  EXPECT_EQ(output, absl::StrCat("ok\n", ours.substr(1, ours.size() - 4), "\n"));
}

INSTANTIATE_TEST_SUITE_P(Backends, DatabaseTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);
INSTANTIATE_TEST_SUITE_P(Backends, SnapshotReadTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db
