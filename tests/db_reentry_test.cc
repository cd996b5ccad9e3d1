// Re-entry: a request's callbacks (on_row, on_done) call back into its Database (Submit, Cancel,
// Close, Sleep, ReleaseMemory, CloseWriterIfIdle) on every failure and completion path: a
// close, a deadline, a constraint, bad SQL, a failed wake, a failed fsync. Every request
// completes exactly once (Probe checks), nothing hangs, and each refusal is the documented one.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "sqloop/loop/loop.h"
#include "tests/db_database_fixture.h"
#include "tests/db_test_support.h"

namespace sqloop::db::testing {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;
using Code = absl::StatusCode;
using Kind = Request::Kind;

void Record(void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); }
int Lines(const std::string& rows) {
  return static_cast<int>(std::count(rows.begin(), rows.end(), '\n'));
}

// A read whose on_row also runs `on_each_row`.
struct RowProbe : Probe {
  std::function<void(RowProbe&)> on_each_row;
};

class ReentryTest : public DatabaseTest {
 protected:
  // t(x INTEGER PRIMARY KEY) holding 1..rows.
  void Fill(int rows, DatabaseOptions options = {}) {
    ASSERT_TRUE(OpenDb(options).ok());
    ASSERT_TRUE(Write("CREATE TABLE t(x INTEGER PRIMARY KEY)").ok());
    const absl::Status filled = Write(
        "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
        "SELECT i FROM c",
        {Value::Int(rows)});
    ASSERT_TRUE(filled.ok()) << filled;
  }
  static void PrimeRows(RowProbe& p, absl::string_view sql) {
    Prime(p, Kind::kRead, sql);
    p.request.on_row = [](Request& r, const Row& row) {
      auto* probe = static_cast<RowProbe*>(static_cast<Probe*>(r.user_data));
      probe->rows += Render(row);
      if (probe->on_each_row) probe->on_each_row(*probe);
    };
  }
  void Submit(std::initializer_list<Probe*> probes) {
    for (Probe* p : probes) ASSERT_TRUE(db_->Submit(p->request).ok()) << p->request.sql;
  }
  // Closes from a callback, then submits: refused (FailedPrecondition), its on_done never runs.
  void CloseAndSubmit() {
    db_->Close(&Record, &closed_);
    SubmitLate();
  }
  void SubmitLate() {
    Prime(late_, Kind::kRead, "SELECT 1");
    late_status_ = db_->Submit(late_.request);
  }
  void RunLoop() { ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok()); }
  void SleepAndWait() {
    ASSERT_TRUE(db_->Sleep().ok());
    RunLoop();
    ASSERT_TRUE(db_->asleep());
  }
  void ExpectLateRefused() {
    EXPECT_EQ(late_status_.code(), Code::kFailedPrecondition) << late_status_;
    EXPECT_FALSE(late_.done) << "a refused request reached on_done";
  }
  // Submits a request already past its deadline and resubmits it from each on_done (a client
  // that retries at once) until it failed kRetries times. Returns how many failures ran in the
  // tick of the first.
  static constexpr int kRetries = 1000;
  int FailuresInFirstTick(Kind kind, absl::string_view sql) {
    Probe p;
    Prime(p, kind, sql);
    p.request.deadline_ns = loop_->now_ns() + 1;
    int failures = 0;
    int in_first = 0;
    uint64_t first_tick = 0;
    p.on_ack = [&](Probe& probe) {
      EXPECT_EQ(probe.status.code(), Code::kDeadlineExceeded) << probe.status;
      if (failures++ == 0) first_tick = loop_->stats().ticks;
      if (loop_->stats().ticks == first_tick) ++in_first;
      if (failures == kRetries) return;
      probe.done = false;
      EXPECT_TRUE(db_->Submit(probe.request).ok());
    };
    Submit({&p});
    RunLoop();
    EXPECT_EQ(failures, kRetries);
    return in_first;
  }

  void ScanBesidePoint(RowProbe& scan, Probe& point) {
    ASSERT_NO_FATAL_FAILURE(Fill(50, {.rows_per_tick = 1}));
    PrimeRows(scan, "SELECT x FROM t");
    Prime(point, Kind::kRead, "SELECT 1");
  }
  void ExpectScanBesidePoint(const RowProbe& scan, const Probe& point) {
    EXPECT_EQ(db_->stats().readers_opened, 1u) << "the second reader never opened";
    EXPECT_EQ(db_->readers_open(), 1u) << "ReleaseMemory did not close the idle second reader";
    EXPECT_TRUE(point.status.ok() && scan.status.ok()) << point.status << scan.status;
    EXPECT_EQ(Lines(scan.rows), 50);
  }

  absl::Status closed_ = absl::UnknownError("close never called back");
  Probe late_;
  absl::Status late_status_ = absl::UnknownError("not submitted");
};

// ---- Close ----------------------------------------------------------------------------------

// The close fails a write, the read held behind it (same client) and a read, in that order;
// from the write's callback every other call is refused or too late.
TEST_P(ReentryTest, TheCloseFailsQueuedWritesReadsAndHeldReadsWhoseCallbacksCallBack) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  Client client;
  Probe write, held, read;
  Prime(write, Kind::kWrite, "INSERT INTO t VALUES (10)");
  Prime(held, Kind::kRead, "SELECT count(*) FROM t");
  Prime(read, Kind::kRead, "SELECT count(*) FROM t");
  write.request.client = held.request.client = &client;
  std::vector<std::string> order;
  for (auto [p, name] : {std::pair{&write, "write"}, {&held, "held"}, {&read, "read"}}) {
    p->order = &order;
    p->name = name;
  }
  bool cancelled = true;
  bool writer_closed = true;
  absl::Status slept;
  write.on_ack = [&](Probe&) {
    cancelled = db_->Cancel(held.request) || db_->Cancel(read.request);
    SubmitLate();
    slept = db_->Sleep();
    writer_closed = db_->CloseWriterIfIdle();
    db_->ReleaseMemory();
  };
  Submit({&write, &held, &read});
  ASSERT_EQ(db_->stats().reads_held, 1u);
  db_->Close(&Record, &closed_);
  RunLoop();
  EXPECT_TRUE(closed_.ok()) << closed_;
  EXPECT_EQ(db_->state(), Database::State::kClosed);
  EXPECT_EQ(order, (std::vector<std::string>{"write", "held", "read"}));
  for (Probe* p : {&write, &held, &read}) EXPECT_EQ(p->status.code(), Code::kCancelled);
  EXPECT_FALSE(cancelled) << "a request the close was failing was cancelled instead";
  ExpectLateRefused();
  EXPECT_EQ(slept.code(), Code::kFailedPrecondition) << slept;
  EXPECT_FALSE(writer_closed);
}

// A write fails in its group (a constraint) and its callback closes: the write queued behind
// is cancelled, the one that ran before it in the group still commits.
TEST_P(ReentryTest, ACloseFromAWriteThatFailsInItsGroupLetsTheGroupCommit) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  Probe ok, dup, queued;
  Prime(ok, Kind::kWrite, "INSERT INTO t VALUES (10)");
  Prime(dup, Kind::kWrite, "INSERT INTO t VALUES (1)");
  Prime(queued, Kind::kWrite, "INSERT INTO t VALUES (11)");
  bool cancelled = true;
  dup.on_ack = [&](Probe&) {
    CloseAndSubmit();
    cancelled = db_->Cancel(ok.request);
  };
  Submit({&ok, &dup, &queued});
  RunLoop();
  EXPECT_TRUE(closed_.ok()) << closed_;
  EXPECT_EQ(dup.status.code(), Code::kFailedPrecondition) << dup.status;  // UNIQUE.
  EXPECT_TRUE(ok.status.ok()) << ok.status;
  EXPECT_EQ(queued.status.code(), Code::kCancelled) << queued.status;
  EXPECT_FALSE(cancelled) << "a write running in its group was cancelled";
  ExpectLateRefused();
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT group_concat(x) FROM t WHERE x >= 10"), "'10'|\n");
}

// Close from a running read's on_row: the read runs to its end; a read queued behind fails.
TEST_P(ReentryTest, ACloseFromARowCallbackLetsTheRunningReadFinish) {
  ASSERT_NO_FATAL_FAILURE(Fill(10, {.rows_per_tick = 2}));
  RowProbe scan;
  Probe queued;
  PrimeRows(scan, "SELECT x FROM t");
  Prime(queued, Kind::kRead, "SELECT 1");
  scan.on_each_row = [&](RowProbe& p) {
    if (Lines(p.rows) != 1) return;
    CloseAndSubmit();
  };
  Submit({&scan, &queued});
  RunLoop();
  EXPECT_TRUE(closed_.ok()) << closed_;
  EXPECT_TRUE(scan.status.ok()) << scan.status;
  EXPECT_EQ(Lines(scan.rows), 10);
  EXPECT_GT(db_->stats().read_steps_yielded, 0u) << "the read ran in one slice";
  EXPECT_EQ(queued.status.code(), Code::kCancelled) << queued.status;
  ExpectLateRefused();
}

// Writes of one group are acknowledged together; the first one's callback closes.
TEST_P(ReentryTest, ACloseFromAnAcknowledgementStillAcknowledgesTheRestOfTheGroup) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  Probe first, second;
  Prime(first, Kind::kWrite, "INSERT INTO t VALUES (10)");
  Prime(second, Kind::kWrite, "INSERT INTO t VALUES (11)");
  bool cancelled = true;
  first.on_ack = [&](Probe&) {
    CloseAndSubmit();
    cancelled = db_->Cancel(second.request);
  };
  const uint64_t groups = db_->stats().groups;
  Submit({&first, &second});
  RunLoop();
  EXPECT_EQ(db_->stats().groups, groups + 1) << "not one group";
  EXPECT_TRUE(closed_.ok()) << closed_;
  EXPECT_TRUE(first.status.ok() && second.status.ok()) << first.status << second.status;
  EXPECT_FALSE(cancelled);
  ExpectLateRefused();
}

// ---- Failures before running: deadline, bad SQL ---------------------------------------------

// Requests that fail before they run: a write and a read past their deadline, a read of bad
// SQL. From their callbacks: a cancel of a queued read, a refused Sleep, a resubmission, and a
// close that cancels that resubmission and lets the committed write complete.
TEST_P(ReentryTest, CallbacksOfRequestsThatFailBeforeRunningCancelSubmitAndClose) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  Probe ok, late_write, late_read, sibling, bad, fresh;
  Prime(ok, Kind::kWrite, "INSERT INTO t VALUES (10)");
  Prime(late_write, Kind::kWrite, "INSERT INTO t VALUES (11)");
  Prime(late_read, Kind::kRead, "SELECT 1");
  Prime(sibling, Kind::kRead, "SELECT 2");
  Prime(bad, Kind::kRead, "SELEC 1");
  Prime(fresh, Kind::kRead, "SELECT count(*) FROM t");
  late_write.request.deadline_ns = late_read.request.deadline_ns = loop_->now_ns() + 1;
  bool cancelled = false;
  absl::Status slept, resubmitted;
  late_write.on_ack = [&](Probe&) {
    cancelled = db_->Cancel(sibling.request);
    slept = db_->Sleep();
  };
  late_read.on_ack = [&](Probe&) { resubmitted = db_->Submit(fresh.request); };
  bad.on_ack = [&](Probe&) { CloseAndSubmit(); };
  Submit({&ok, &late_write, &late_read, &sibling, &bad});
  RunLoop();
  EXPECT_TRUE(closed_.ok()) << closed_;
  EXPECT_TRUE(ok.status.ok()) << ok.status;
  EXPECT_EQ(late_write.status.code(), Code::kDeadlineExceeded) << late_write.status;
  EXPECT_EQ(late_read.status.code(), Code::kDeadlineExceeded) << late_read.status;
  EXPECT_EQ(bad.status.code(), Code::kInvalidArgument) << bad.status;
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(sibling.status.code(), Code::kCancelled) << sibling.status;
  EXPECT_EQ(slept.code(), Code::kFailedPrecondition) << slept;
  EXPECT_TRUE(resubmitted.ok()) << resubmitted;
  EXPECT_EQ(fresh.status.code(), Code::kCancelled) << fresh.status;
  ExpectLateRefused();
}

// A client that retries each failure at once: reads give the loop back between tries (at most
// kReadsStartedPerTickMax start in a tick); writes must too, or the retries never end.
TEST_P(ReentryTest, RequestsRetriedAtOnceAfterTheirDeadlineGiveTheLoopBack) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  EXPECT_LT(FailuresInFirstTick(Kind::kRead, "SELECT 1"), kRetries);
  EXPECT_LT(FailuresInFirstTick(Kind::kWrite, "INSERT INTO t VALUES (10)"), kRetries)
      << "every retry failed inside the group of the first: unbounded, it never ends";
}

// ---- Cancel of the request whose callback runs ------------------------------------------------

TEST_P(ReentryTest, ACancelFromARowStopsTheReadAndFromOnDoneIsTooLate) {
  ASSERT_NO_FATAL_FAILURE(Fill(10));
  RowProbe scan;
  Probe write, read;
  PrimeRows(scan, "SELECT x FROM t");
  Prime(write, Kind::kWrite, "INSERT INTO t VALUES (100)");
  Prime(read, Kind::kRead, "SELECT 1");
  bool from_row = false;
  bool from_done = false;
  scan.on_each_row = [&](RowProbe& p) {
    if (Lines(p.rows) == 3) from_row = db_->Cancel(p.request);
  };
  write.on_ack = read.on_ack = [&](Probe& p) { from_done = from_done || db_->Cancel(p.request); };
  Submit({&scan, &write, &read});
  RunLoop();
  EXPECT_TRUE(from_row);
  EXPECT_EQ(scan.status.code(), Code::kCancelled) << scan.status;
  EXPECT_EQ(Lines(scan.rows), 3) << "rows after the cancel";
  EXPECT_FALSE(from_done);
  EXPECT_TRUE(write.status.ok() && read.status.ok()) << write.status << read.status;
}

// ---- Failed wake ------------------------------------------------------------------------------

// The wake's open fails. A read submitted from a failed write's callback was not there when it
// failed, so it gets a wake of its own (as FailQueue promises); a cancel of a queued read from
// there either wins (Cancelled) or is too late (the wake's failure), never both.
TEST_P(ReentryTest, ARequestSubmittedFromTheCallbackOfAFailedWakeGetsAWakeOfItsOwn) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  ASSERT_NO_FATAL_FAILURE(SleepAndWait());
  trace_->FailNth(io::OpKind::kOpenAt, 1, EMFILE);
  Probe write, read, retry;
  Prime(write, Kind::kWrite, "INSERT INTO t VALUES (10)");
  Prime(read, Kind::kRead, "SELECT 1");
  Prime(retry, Kind::kRead, "SELECT count(*) FROM t");
  bool cancelled = false;
  write.on_ack = [&](Probe&) {
    cancelled = db_->Cancel(read.request);
    EXPECT_TRUE(db_->Submit(retry.request).ok());
  };
  Submit({&write, &read});
  RunLoop();
  EXPECT_EQ(db_->stats().wakes_failed, 1u);
  EXPECT_EQ(write.status.code(), Code::kUnavailable) << write.status;
  EXPECT_EQ(read.status.code(), cancelled ? Code::kCancelled : Code::kUnavailable) << read.status;
  EXPECT_TRUE(retry.status.ok()) << "failed by a wake it never waited for: " << retry.status;
  EXPECT_EQ(db_->stats().wakes, 1u);
}

TEST_P(ReentryTest, ACloseFromTheCallbackOfAFailedWakeClosesTheSleepingDatabase) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  ASSERT_NO_FATAL_FAILURE(SleepAndWait());
  trace_->FailNth(io::OpKind::kOpenAt, 1, EMFILE);
  Client client;
  Probe write, held, read;
  Prime(write, Kind::kWrite, "INSERT INTO t VALUES (10)");
  Prime(held, Kind::kRead, "SELECT 1");
  Prime(read, Kind::kRead, "SELECT 2");
  write.request.client = held.request.client = &client;
  write.on_ack = [&](Probe&) { CloseAndSubmit(); };
  Submit({&write, &held, &read});
  RunLoop();
  EXPECT_EQ(db_->stats().wakes_failed, 1u);
  EXPECT_TRUE(closed_.ok()) << closed_;
  EXPECT_EQ(db_->state(), Database::State::kClosed);
  EXPECT_EQ(write.status.code(), Code::kUnavailable) << write.status;
  EXPECT_TRUE(held.done && read.done);
  ExpectLateRefused();
}

// A wake left the empty WAL closed; its late open, for a write, fails. Sleep from that write's
// callback is refused, as from any request's callback (db/database.h, Sleep).
TEST_P(ReentryTest, ASleepFromTheCallbackOfAWriteTheWalsOpenFailedIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_NO_FATAL_FAILURE(SleepAndWait());
  ASSERT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_EQ(db_->stats().wal_opens_deferred, 1u) << "the wake opened the WAL: case not tested";
  trace_->FailNth(io::OpKind::kOpenAt, 1, EMFILE);
  Probe write;
  Prime(write, Kind::kWrite, "INSERT INTO t VALUES (10)");
  absl::Status slept;
  write.on_ack = [&](Probe&) { slept = db_->Sleep(); };
  Submit({&write});
  RunLoop();
  EXPECT_EQ(db_->stats().wal_late_opens_failed, 1u);
  EXPECT_EQ(write.status.code(), Code::kUnavailable) << write.status;
  EXPECT_EQ(slept.code(), Code::kFailedPrecondition) << slept;
  EXPECT_TRUE(Write("INSERT INTO t VALUES (11)").ok());
}

// ---- ReleaseMemory from a read's callbacks -------------------------------------------------
// A scan runs on the first reader, a point read opens the second; a callback then trims the
// idle readers, which closes the second one under the read loop (memory errors: ASan).

TEST_P(ReentryTest, ReleaseMemoryFromTheCallbackOfAReadThatFailedToStart) {
  RowProbe scan;
  Probe point, bad;
  ASSERT_NO_FATAL_FAILURE(ScanBesidePoint(scan, point));
  Prime(bad, Kind::kRead, "SELEC 1");
  size_t readers_in_callback = 0;
  bad.on_ack = [&](Probe&) {
    db_->ReleaseMemory();
    readers_in_callback = db_->readers_open();
  };
  Submit({&scan, &point, &bad});
  RunLoop();
  EXPECT_EQ(bad.status.code(), Code::kInvalidArgument) << bad.status;
  EXPECT_EQ(readers_in_callback, 2u) << "a reader closed under the database's own work";
  ExpectScanBesidePoint(scan, point);
}

// CloseWriterIfIdle from a read's callback is refused, as Sleep is; outside, it closes.
TEST_P(ReentryTest, CloseWriterIfIdleFromACallbackIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Fill(3));
  ASSERT_TRUE(db_->writer_open());
  Probe read;
  Prime(read, Kind::kRead, "SELECT count(*) FROM t");
  bool closed_in_callback = true;
  read.on_ack = [&](Probe&) { closed_in_callback = db_->CloseWriterIfIdle(); };
  Submit({&read});
  RunLoop();
  EXPECT_TRUE(read.status.ok()) << read.status;
  EXPECT_FALSE(closed_in_callback);
  EXPECT_TRUE(db_->writer_open());
  EXPECT_TRUE(db_->CloseWriterIfIdle());
  EXPECT_TRUE(Write("INSERT INTO t VALUES (10)").ok());
}

TEST_P(ReentryTest, ReleaseMemoryFromTheRowsOfAReadWhileTheOtherReaderIsIdle) {
  RowProbe scan;
  Probe point;
  ASSERT_NO_FATAL_FAILURE(ScanBesidePoint(scan, point));
  scan.on_each_row = [&](RowProbe&) {
    if (point.done) db_->ReleaseMemory();
  };
  Submit({&scan, &point});
  RunLoop();
  ExpectScanBesidePoint(scan, point);
}

INSTANTIATE_TEST_SUITE_P(Backends, ReentryTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
