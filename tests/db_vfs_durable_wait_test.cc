// What a host that opens connections of its own on the Vfs learns from Vfs::WhenDurable (db/vfs.h):
// a DurableWait armed after a COMMIT returned runs its `done` once that commit's fsync completed
// (the wait's own, when the COMMIT issued none or left a journal's deletion unsynced), with OK,
// or with the database's poison if the fsync failed; always from the loop, never inside
// WhenDurable or a SQLite call; even after the connection closed; at no heap allocation once warm.
// Bad arguments are refused at once and leave the wait alone. On every backend.
#include <sqlite3.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/epoch_queue.h"
#include "sqloop/db/internal/vfs_core.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"
#include "tests/db_durable_wait_fixture.h"
#include "tests/db_test_support.h"
#include "tests/run_loop_until.h"

namespace sqloop::db::testing {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;

class DurableWaitTest : public DurableWaitFixture {};

// The heart of it: the COMMIT returned before its fsync ran, and the wait says so only once the
// fsync completed, from the loop.
TEST_P(DurableWaitTest, ARawCommitIsReportedDurableOnlyOnceItsFsyncCompleted) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  const uint64_t fsyncs_before = trace_->completed_of(io::OpKind::kFsync);
  Exec(db, "INSERT INTO t VALUES (1)");
  const uint64_t commit_epoch = queue.epoch();
  ASSERT_LT(queue.durable_epoch(), commit_epoch) << "the commit's fsync must still be to come";
  Waited& waited = NewWait(&queue);
  ASSERT_TRUE(Arm(db, waited).ok());
  EXPECT_TRUE(waited.wait.armed());
  EXPECT_EQ(waited.runs, 0) << "done ran inside WhenDurable";
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  EXPECT_EQ(waited.runs, 1);
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_GE(waited.durable_at_done, commit_epoch) << "done said OK before the commit was durable";
  EXPECT_GT(trace_->completed_of(io::OpKind::kFsync), fsyncs_before);
  EXPECT_FALSE(waited.wait.armed());
  Drain();
  EXPECT_EQ(waited.runs, 1) << "one arming, one done";
}

// Everything is durable already: the answer is still never given inside the call, but by the
// loop's next tick; and `done` may arm its wait again, which then runs at a later tick.
TEST_P(DurableWaitTest, AnAlreadyDurableCommitIsStillReportedFromTheNextTick) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  Exec(db, "INSERT INTO t VALUES (1)");
  Drain();
  ASSERT_GT(queue.epoch(), 0u);
  ASSERT_EQ(queue.durable_epoch(), queue.epoch());
  Waited& waited = NewWait(&queue);
  ASSERT_TRUE(Arm(db, waited).ok());
  EXPECT_EQ(waited.runs, 0) << "done ran inside WhenDurable";
  EXPECT_TRUE(waited.wait.armed());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_EQ(waited.runs, 1);
  EXPECT_TRUE(waited.status.ok()) << waited.status;

  // Armed again from its own `done`: idle there, and delivered at a later tick, not in the
  // drain that ran the first one.
  struct Again {
    Vfs* vfs;
    sqlite3* db;
    int runs = 0;
    absl::Status rearmed = absl::UnknownError("not armed again");
  } again{.vfs = vfs_.get(), .db = db};
  Waited& twice = NewWait();
  twice.wait.user_data = &again;
  twice.wait.done = [](DurableWait& wait, absl::Status status) {
    auto& a = *static_cast<Again*>(wait.user_data);
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_FALSE(wait.armed());
    if (++a.runs == 1) a.rearmed = a.vfs->WhenDurable(a.db, wait);
  };
  ASSERT_TRUE(vfs_->WhenDurable(db, twice.wait).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_EQ(again.runs, 1);
  EXPECT_TRUE(again.rearmed.ok()) << again.rearmed;
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_EQ(again.runs, 2);
}

// Two waits armed at two epochs: the fsync of the first commit alone completes the first wait
// and not the second; the second's own fsync completes it. Each runs once, in order.
TEST_P(DurableWaitTest, TwoWaitsAtTwoEpochsCompleteInOrderEachAtItsOwnFsync) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  trace_->Hold(io::OpKind::kFsync);
  Exec(db, "INSERT INTO t VALUES (1)");
  const uint64_t first_epoch = queue.epoch();
  Waited& first = NewWait(&queue);
  ASSERT_TRUE(Arm(db, first).ok());
  Exec(db, "INSERT INTO t VALUES (2)");
  const uint64_t second_epoch = queue.epoch();
  Waited& second = NewWait(&queue);
  ASSERT_TRUE(Arm(db, second).ok());
  ASSERT_LT(first_epoch, second_epoch);
  // The first barrier starts once the first commit's writes went behind; its fsync is held.
  ASSERT_TRUE(RunUntil([&] { return trace_->held() > 0; }));
  ASSERT_LT(queue.durable_epoch(), first_epoch);
  EXPECT_EQ(first.runs, 0);
  // The first barrier's fsync runs; the second's (started once the first completed) is held.
  trace_->ReleaseHeld();
  trace_->Hold(io::OpKind::kFsync);
  ASSERT_TRUE(RunUntil([&] { return first.runs > 0; }));
  EXPECT_TRUE(first.status.ok()) << first.status;
  EXPECT_GE(first.durable_at_done, first_epoch);
  EXPECT_LT(queue.durable_epoch(), second_epoch) << "the second fsync must still be held";
  EXPECT_EQ(second.runs, 0) << "the second wait completed before its commit was durable";
  EXPECT_TRUE(second.wait.armed());
  trace_->ReleaseHeld();
  ASSERT_TRUE(RunUntil([&] { return second.runs > 0; }));
  EXPECT_TRUE(second.status.ok()) << second.status;
  EXPECT_GE(second.durable_at_done, second_epoch);
  Drain();
  EXPECT_EQ(first.runs, 1);
  EXPECT_EQ(second.runs, 1);
  EXPECT_EQ(first.order, 1);
  EXPECT_EQ(second.order, 2);
}

// In WAL mode with synchronous=NORMAL a COMMIT issues no xSync: the wait closes an epoch of
// its own, whose fsync makes the commit durable, and a second wait with nothing written since
// adds none.
TEST_P(DurableWaitTest, ACommitThatIssuedNoFsyncGetsABarrierOfItsOwn) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA synchronous=NORMAL");
  internal::EpochQueue& queue = Queue(path_);
  const uint64_t before_commit = queue.epoch();
  Exec(db, "INSERT INTO t VALUES (1)");
  ASSERT_EQ(queue.epoch(), before_commit) << "the COMMIT closed an epoch: not the case tested";
  const uint64_t fsyncs_before = trace_->completed_of(io::OpKind::kFsync);
  Waited& waited = NewWait(&queue);
  ASSERT_TRUE(Arm(db, waited).ok());
  EXPECT_EQ(queue.epoch(), before_commit + 1) << "the wait closed no epoch of its own";
  EXPECT_EQ(waited.runs, 0);
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_GE(waited.durable_at_done, before_commit + 1);
  EXPECT_GT(trace_->completed_of(io::OpKind::kFsync), fsyncs_before);
  Waited& again = NewWait(&queue);
  ASSERT_TRUE(Arm(db, again).ok());
  EXPECT_EQ(queue.epoch(), before_commit + 1) << "nothing was written, yet a barrier was added";
  ASSERT_TRUE(RunUntil([&] { return again.runs > 0; }));
  EXPECT_TRUE(again.status.ok()) << again.status;
}

// In the DELETE journal mode the commit ends by deleting its journal, after its last xSync: the
// wait's own barrier syncs the directory, so OK means the deletion is on disk too.
TEST_P(DurableWaitTest, ARollbackJournalsDeletionIsCoveredToo) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, kCreate, vfs_->name()), SQLITE_OK);
  open_.push_back(db);
  Exec(db, "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL; CREATE TABLE t(x)");
  Drain();
  internal::EpochQueue& queue = Queue(path_);
  Exec(db, "INSERT INTO t VALUES (1)");
  const uint64_t after_commit = queue.epoch();
  ASSERT_GT(after_commit, 0u) << "the COMMIT issued no xSync";
  Waited& waited = NewWait(&queue);
  ASSERT_TRUE(Arm(db, waited).ok());
  EXPECT_EQ(queue.epoch(), after_commit + 1) << "the journal's deletion got no barrier";
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_GE(waited.durable_at_done, after_commit + 1);
}

// A failed fsync poisons the database: the wait gets the poison (DataLoss, in the poison's
// words) and never OK, and so does a wait armed once the database is poisoned.
TEST_P(DurableWaitTest, AFailedFsyncGivesTheWaitThePoisonAndNeverOk) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  // The simulator's own fault also drops the file's unsynced writes, as Linux does; the real
  // backends get the failure from RecordingBackend.
  if (real()) {
    trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  } else {
    sim().SetFaults(io::SimFaults{.fsync_eio = 1.0});
  }
  Exec(db, "INSERT INTO t VALUES (1)");
  const uint64_t commit_epoch = queue.epoch();
  ASSERT_LT(queue.durable_epoch(), commit_epoch);
  Waited& waited = NewWait(&queue);
  ASSERT_TRUE(Arm(db, waited).ok());
  EXPECT_EQ(waited.runs, 0);
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  if (!real()) sim().SetFaults(io::SimFaults{});
  ASSERT_TRUE(queue.poisoned()) << "the fsync did not fail";
  EXPECT_EQ(waited.status.code(), absl::StatusCode::kDataLoss) << waited.status;
  EXPECT_EQ(waited.status, queue.poison_status());
  EXPECT_LT(waited.durable_at_done, commit_epoch);
  // Poisoned already, the commit not durable: the poison again, from the loop.
  Waited& later = NewWait(&queue);
  ASSERT_TRUE(Arm(db, later).ok());
  EXPECT_EQ(later.runs, 0) << "done ran inside WhenDurable";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_EQ(later.runs, 1);
  EXPECT_EQ(later.status, queue.poison_status());
  Drain();
  EXPECT_EQ(waited.runs, 1) << "one arming, one done: never an OK after the poison";
}

// A poison can come from inside a VFS call (EpochQueue::Poison): the wait is told from the loop,
// never from inside it.
TEST_P(DurableWaitTest, APoisonReachesTheWaitFromTheLoopNotFromInsideThePoison) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  trace_->Hold(io::OpKind::kFsync);
  Exec(db, "INSERT INTO t VALUES (1)");
  Waited& waited = NewWait(&queue);
  ASSERT_TRUE(Arm(db, waited).ok());
  observer_.inside_a_call = true;
  queue.Poison(absl::DataLossError("test: the disk went away"));
  observer_.inside_a_call = false;
  EXPECT_EQ(waited.runs, 0) << "done ran inside Poison";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_EQ(waited.runs, 1);
  EXPECT_EQ(waited.status, absl::DataLossError("test: the disk went away"));
  trace_->ReleaseHeld();
  Drain();
  EXPECT_EQ(waited.runs, 1);
}

// Each bad argument has its own error, and the wait is left as it was: never armed, no `done`.
// A wait armed already is refused without disturbing it: it completes once, with OK.
TEST_P(DurableWaitTest, BadArgumentsAreRefusedAndLeaveTheWaitAlone) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  Waited& refused = NewWait();
  const auto expect_refused = [&](sqlite3* connection, absl::StatusCode code,
                                  const std::string& words) {
    const absl::Status status = Arm(connection, refused);
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_NE(status.message().find(words), absl::string_view::npos) << status;
    EXPECT_FALSE(refused.wait.armed());
  };
  expect_refused(nullptr, absl::StatusCode::kInvalidArgument, "null");

  sqlite3* elsewhere = nullptr;  // On SQLite's default VFS.
  ASSERT_EQ(sqlite3_open_v2(":memory:", &elsewhere, kCreate, nullptr), SQLITE_OK);
  expect_refused(elsewhere, absl::StatusCode::kInvalidArgument, "not on this Vfs");
  EXPECT_EQ(sqlite3_close(elsewhere), SQLITE_OK);

  for (const char* nameless : {":memory:", ""}) {  // On this Vfs, but with no file.
    SCOPED_TRACE(nameless);
    sqlite3* memory = nullptr;
    ASSERT_EQ(sqlite3_open_v2(nameless, &memory, kCreate, vfs_->name()), SQLITE_OK);
    expect_refused(memory, absl::StatusCode::kInvalidArgument, "in memory or temporary");
    EXPECT_EQ(sqlite3_close(memory), SQLITE_OK);
  }

  {  // A file on another Vfs of this process: a connection of that Vfs, not of this one.
    absl::StatusOr<std::unique_ptr<Vfs>> other = Vfs::Create(*loop_);
    ASSERT_TRUE(other.ok()) << other.status();
    sqlite3* theirs = nullptr;
    ASSERT_EQ(sqlite3_open_v2(dir_->Path("other.db").c_str(), &theirs, kCreate, (*other)->name()),
              SQLITE_OK);
    expect_refused(theirs, absl::StatusCode::kInvalidArgument, "not on this Vfs");
    EXPECT_TRUE((*other)->WhenDurable(theirs, refused.wait).ok()) << "its own Vfs takes it";
    EXPECT_EQ(sqlite3_close(theirs), SQLITE_OK);
    Drain();
    EXPECT_EQ(refused.runs, 1);
    EXPECT_TRUE(refused.status.ok()) << refused.status;
    refused.runs = 0;
  }

  refused.wait.done = nullptr;
  expect_refused(db, absl::StatusCode::kInvalidArgument, "no done");
  refused.wait.done = &RecordDone;

  Waited& armed = NewWait();
  Exec(db, "INSERT INTO t VALUES (1)");
  ASSERT_TRUE(Arm(db, armed).ok());
  const absl::Status twice = Arm(db, armed);
  EXPECT_EQ(twice.code(), absl::StatusCode::kFailedPrecondition) << twice;
  EXPECT_NE(twice.message().find("armed already"), absl::string_view::npos) << twice;
  EXPECT_TRUE(armed.wait.armed());
  Drain();
  EXPECT_EQ(armed.runs, 1);
  EXPECT_TRUE(armed.status.ok()) << armed.status;
  EXPECT_EQ(refused.runs, 0) << "a refused wait ran its done";
}

// The connection closes right after WhenDurable: the database's files stay until the barrier
// the wait needs is done, and the wait completes with OK.
TEST_P(DurableWaitTest, TheConnectionMayCloseRightAfterWhenDurable) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "INSERT INTO t VALUES (1)");
  internal::EpochQueue& queue = Queue(path_);
  ASSERT_LT(queue.durable_epoch(), queue.epoch());
  Waited& waited = NewWait();  // No queue to read at `done`: it may be gone by then.
  ASSERT_TRUE(Arm(db, waited).ok());
  Close(db);
  EXPECT_NE(internal::VfsCore::Of(*vfs_).Find(path_), nullptr)
      << "the files went while a barrier the wait needs was pending";
  EXPECT_EQ(waited.runs, 0);
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_EQ(internal::VfsCore::Of(*vfs_).Find(path_), nullptr) << "the files were never released";
}

// A transaction's writes to an attached database are that database's: a wait named for it
// closes an epoch on its files, not on the main one's, and says OK once they are synced. A
// name the connection does not have, or one with no file, is refused.
TEST_P(DurableWaitTest, AWaitNamedForAnAttachedDatabaseCoversItsCommits) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  const std::string other = dir_->Path("other.db");
  Exec(db, "ATTACH '" + other + "' AS aux");
  Exec(db, "PRAGMA aux.journal_mode=WAL; PRAGMA aux.synchronous=NORMAL; CREATE TABLE aux.u(y)");
  Drain();
  internal::EpochQueue& main_queue = Queue(path_);
  internal::EpochQueue& aux_queue = Queue(other);
  const uint64_t main_epoch = main_queue.epoch();
  const uint64_t aux_epoch = aux_queue.epoch();
  Exec(db, "INSERT INTO aux.u VALUES (1)");
  ASSERT_EQ(aux_queue.epoch(), aux_epoch) << "the COMMIT closed an epoch: not the case tested";

  Waited& waited = NewWait(&aux_queue);
  observer_.inside_a_call = true;
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait, "aux").ok());
  observer_.inside_a_call = false;
  EXPECT_EQ(aux_queue.epoch(), aux_epoch + 1) << "the wait closed no epoch on the attached files";
  EXPECT_EQ(main_queue.epoch(), main_epoch) << "the wait closed an epoch on the main files";
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_GE(waited.durable_at_done, aux_epoch + 1);

  Waited& refused = NewWait();
  for (const auto& [name, words] : {std::pair{"nosuch", "no database named 'nosuch'"},
                                    std::pair{"temp", "'temp' is in memory or temporary"}}) {
    SCOPED_TRACE(name);
    const absl::Status status = vfs_->WhenDurable(db, refused.wait, name);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find(words), absl::string_view::npos) << status;
    EXPECT_FALSE(refused.wait.armed());
  }
  Drain();
  EXPECT_EQ(refused.runs, 0) << "a refused wait ran its done";
}

// Once warm, arming a wait and having it delivered allocates nothing: the wait is the caller's
// memory, the list intrusive, the delivery the wait's own completion. Measured apart from the
// backend's work (the recording backend's trace grows as it likes).
TEST_P(DurableWaitTest, ArmingAndDeliveringAWaitAllocatesNothingOnceWarm) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  Waited& waited = NewWait(&queue);
  uint64_t allocations = 0;
  int armed = 0;
  const auto measured = [&](absl::FunctionRef<void()> body) {
    const alloc::HeapCounts before = alloc::CurrentHeapCounts();
    body();
    allocations += alloc::CurrentHeapCounts().allocations - before.allocations;
  };
  const auto round = [&] {
    // Waiting for its commit: armed, then delivered in the tick after the one whose fsync
    // completion made the commit durable.
    Exec(db, "INSERT INTO t VALUES (1)");
    const uint64_t epoch = queue.epoch();
    ASSERT_LT(queue.durable_epoch(), epoch);
    absl::Status status;
    measured([&] { status = vfs_->WhenDurable(db, waited.wait); });
    ASSERT_TRUE(status.ok()) << status;
    ++armed;
    for (int i = 0; i < 1000 && queue.durable_epoch() < epoch; ++i) {
      ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    }
    ASSERT_GE(queue.durable_epoch(), epoch);
    ASSERT_EQ(waited.runs, armed - 1) << "delivered in the tick that made it durable";
    measured([&] { ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok()); });
    ASSERT_EQ(waited.runs, armed);
    // Durable already: armed and delivered at the next tick.
    Drain();
    measured([&] {
      status = vfs_->WhenDurable(db, waited.wait);
      ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
    });
    ASSERT_TRUE(status.ok()) << status;
    ++armed;
    ASSERT_EQ(waited.runs, armed);
  };
  // The counter sees an allocation when there is one, so the zero below means something.
  measured([&] { waits_.reserve(waits_.capacity() + 8); });
  ASSERT_GT(allocations, 0u) << "the heap counter counts nothing in this binary";
  for (int i = 0; i < 20; ++i) round();
  allocations = 0;
  constexpr int kMeasuredRounds = 100;
  for (int i = 0; i < kMeasuredRounds; ++i) round();
  EXPECT_EQ(allocations, 0u) << "heap allocations over " << 2 * kMeasuredRounds << " waits";
  EXPECT_TRUE(waited.status.ok()) << waited.status;
}

INSTANTIATE_TEST_SUITE_P(Backends, DurableWaitTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
