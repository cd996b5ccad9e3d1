// Adversarial cases of Vfs::WhenDurable (db/vfs.h) on a host's own raw connections: a wait armed
// while its connection closes (sqlite3_close_v2, a zombie, the last connection to the file), on
// connections that cannot be waited for, re-armed or freed from its own `done`, armed past
// held_ops_max, on a database that is poisoned, and with the Loop or the Vfs destroyed under it.
// Each `done` must run exactly once with a clear status, and never OK for a commit a crash could
// still undo. On every backend.
#include <fcntl.h>
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

class DurableWaitAdversarialTest : public DurableWaitFixture {};

// Scenario 1: sqlite3_close_v2 while the wait's fsync is held in flight, and the connection
// is the last one on the file: the files stay until the barrier is done, the wait gets OK once,
// and then the files go.
TEST_P(DurableWaitAdversarialTest, CloseV2OfTheLastConnectionWhileTheFsyncIsInFlight) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  trace_->Hold(io::OpKind::kFsync);
  Exec(db, "INSERT INTO t VALUES (1)");
  Waited& waited = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait).ok());
  Forget(db);
  ASSERT_EQ(sqlite3_close_v2(db), SQLITE_OK);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_EQ(waited.runs, 0) << "OK before the held fsync ran";
  EXPECT_NE(Files(path_), nullptr) << "the files went while the wait's barrier was in flight";
  trace_->ReleaseHeld();
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_EQ(Files(path_), nullptr) << "the files were never released";
}

// Scenario 1, a zombie: close_v2 with a statement still open leaves the connection a zombie;
// the wait still completes once, and finalizing the statement then releases everything.
TEST_P(DurableWaitAdversarialTest, CloseV2LeavingAZombieWhileArmed) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  trace_->Hold(io::OpKind::kFsync);
  Exec(db, "INSERT INTO t VALUES (1)");
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT x FROM t", -1, &stmt, nullptr), SQLITE_OK);
  Waited& waited = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait).ok());
  Forget(db);
  ASSERT_EQ(sqlite3_close_v2(db), SQLITE_OK);  // A zombie until the statement goes.
  trace_->ReleaseHeld();
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_NE(Files(path_), nullptr) << "the zombie's files went";
  ASSERT_EQ(sqlite3_finalize(stmt), SQLITE_OK);
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_EQ(Files(path_), nullptr);
}

// Scenario 1 + 4: the last connection closes while the wait is armed, and the wait's fsync
// fails: DataLoss once, the files released, never a dangling wait.
TEST_P(DurableWaitAdversarialTest, CloseWhileArmedAndTheFsyncFails) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  if (real()) {
    trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  } else {
    sim().SetFaults(io::SimFaults{.fsync_eio = 1.0});
  }
  Exec(db, "INSERT INTO t VALUES (1)");
  Waited& waited = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait).ok());
  Forget(db);
  ASSERT_EQ(sqlite3_close_v2(db), SQLITE_OK);
  ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
  if (!real()) sim().SetFaults(io::SimFaults{});
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_EQ(waited.status.code(), absl::StatusCode::kDataLoss) << waited.status;
  EXPECT_NE(waited.status.message().find("fsync"), absl::string_view::npos) << waited.status;
  EXPECT_EQ(Files(path_), nullptr);
}

// Scenario 2: connections that cannot be waited for. A failed open's handle, SQLITE_OPEN_MEMORY,
// and the default VFS on a real file are refused with a clear InvalidArgument; a read-only
// connection on this Vfs is a connection like any other (nothing of its own to sync: OK).
TEST_P(DurableWaitAdversarialTest, ConnectionsThatCannotBeWaitedForAreRefusedClearly) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  Waited& refused = NewWait();
  const auto expect_refused = [&](sqlite3* connection, const std::string& words) {
    const absl::Status status = vfs_->WhenDurable(connection, refused.wait);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find(words), absl::string_view::npos) << status;
    EXPECT_FALSE(refused.wait.armed());
  };
  {  // An open that failed still hands back a handle.
    sqlite3* failed = nullptr;
    ASSERT_NE(sqlite3_open_v2(dir_->Path("absent.db").c_str(), &failed, SQLITE_OPEN_READONLY,
                              vfs_->name()),
              SQLITE_OK);
    ASSERT_NE(failed, nullptr);
    expect_refused(failed, "no database named 'main'");
    sqlite3_close(failed);
  }
  {
    sqlite3* memory = nullptr;
    ASSERT_EQ(sqlite3_open_v2("m", &memory, kCreate | SQLITE_OPEN_MEMORY, vfs_->name()), SQLITE_OK);
    expect_refused(memory, "in memory or temporary");
    EXPECT_EQ(sqlite3_close(memory), SQLITE_OK);
  }
  if (real()) {  // SQLite's own unix VFS, on a real file.
    sqlite3* unix_db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(dir_->Path("unix.db").c_str(), &unix_db, kCreate, nullptr),
              SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(unix_db, "CREATE TABLE u(x)", nullptr, nullptr, nullptr), SQLITE_OK);
    expect_refused(unix_db, "not on this Vfs");
    EXPECT_EQ(sqlite3_close(unix_db), SQLITE_OK);
  }
  sqlite3* readonly = OpenRaw(path_, SQLITE_OPEN_READONLY);
  ASSERT_NE(readonly, nullptr);
  Waited& reader = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(readonly, reader.wait).ok());
  Drain();
  EXPECT_EQ(reader.runs, 1);
  EXPECT_TRUE(reader.status.ok()) << reader.status;
  EXPECT_EQ(refused.runs, 0);
}

// Scenario 3: `done` commits again and re-arms its own wait before the new commit is durable;
// the second `done` is OK only once that commit's epoch is durable. A third `done` frees the wait.
TEST_P(DurableWaitAdversarialTest, DoneCommitsAgainAndReArmsThenFreesItsWait) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  struct Chain {
    Vfs* vfs;
    sqlite3* db;
    internal::EpochQueue* queue;
    int runs = 0;
    uint64_t needed = 0;
    bool early = false;
    absl::Status rearmed;
  };
  auto* wait = new DurableWait;
  Chain chain{.vfs = vfs_.get(), .db = db, .queue = &queue, .rearmed = absl::OkStatus()};
  wait->user_data = &chain;
  wait->done = [](DurableWait& w, absl::Status status) {
    auto& c = *static_cast<Chain*>(w.user_data);
    EXPECT_TRUE(status.ok()) << status;
    if (c.queue->durable_epoch() < c.needed) c.early = true;
    if (++c.runs == 3) {
      delete &w;  // Idle once `done` started: the caller may free it here.
      return;
    }
    EXPECT_EQ(sqlite3_exec(c.db, "INSERT INTO t VALUES (2)", nullptr, nullptr, nullptr), SQLITE_OK);
    c.needed = c.queue->epoch();
    c.rearmed = c.vfs->WhenDurable(c.db, w);
  };
  Exec(db, "INSERT INTO t VALUES (1)");
  chain.needed = queue.epoch();
  ASSERT_TRUE(vfs_->WhenDurable(db, *wait).ok());
  ASSERT_TRUE(RunUntil([&] { return chain.runs == 3 || !chain.rearmed.ok(); }));
  EXPECT_TRUE(chain.rearmed.ok()) << chain.rearmed;
  EXPECT_FALSE(chain.early) << "a done said OK before its commit's epoch was durable";
  Drain();
  EXPECT_EQ(chain.runs, 3);
}

// Scenario 3: many waits on one epoch each get one `done`; a barrier needed while the queue is
// at held_ops_max is refused with ResourceExhausted, the wait untouched, and taken once drained.
TEST_P(DurableWaitAdversarialTest, HeldOpsMaxRefusesClearlyAndLeavesTheWaitIdle) {
  VfsOptions options;
  options.held_ops_max = 16;
  options.held_bytes_max = uint64_t{64} << 20;
  vfs_.reset();
  MakeVfs(options);
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA synchronous=NORMAL");
  trace_->Hold(io::OpKind::kFsync);
  Exec(db, "PRAGMA synchronous=FULL; INSERT INTO t VALUES (0); PRAGMA synchronous=NORMAL");
  // The barrier's fsync is held: every commit's writes queue behind it, until one is refused.
  int rc = SQLITE_OK;
  for (int i = 0; i < 100 && rc == SQLITE_OK; ++i) rc = Run(db, "INSERT INTO t VALUES (1)");
  ASSERT_EQ(rc, SQLITE_FULL) << last_error_;
  Waited& waited = NewWait();
  const absl::Status status = vfs_->WhenDurable(db, waited.wait);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("held_ops_max"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("run the loop"), absl::string_view::npos) << status;
  EXPECT_FALSE(waited.wait.armed());
  trace_->ReleaseHeld();
  Drain();
  EXPECT_EQ(waited.runs, 0) << "a refused wait ran its done";
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait).ok());
  std::vector<std::unique_ptr<Waited>> many;
  for (int i = 0; i < 1000; ++i) {
    many.push_back(std::make_unique<Waited>());
    many.back()->wait.done = &RecordDone;
    many.back()->wait.user_data = many.back().get();
    ASSERT_TRUE(vfs_->WhenDurable(db, many.back()->wait).ok()) << i;
  }
  Drain();
  EXPECT_EQ(waited.runs, 1);
  for (const auto& w : many) EXPECT_EQ(w->runs, 1);
}

// Scenario 4: waits at several epochs when the first barrier's fsync fails: each gets the
// poison exactly once, never OK.
TEST_P(DurableWaitAdversarialTest, EveryWaitOfAPoisonedDatabaseGetsDataLossOnce) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  if (real()) {
    trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  } else {
    sim().SetFaults(io::SimFaults{.fsync_eio = 1.0});
  }
  std::vector<Waited*> armed;
  for (int i = 0; i < 5; ++i) {
    Exec(db, "INSERT INTO t VALUES (1)");
    armed.push_back(&NewWait());
    ASSERT_TRUE(vfs_->WhenDurable(db, armed.back()->wait).ok());
    armed.push_back(&NewWait());
    ASSERT_TRUE(vfs_->WhenDurable(db, armed.back()->wait).ok());
  }
  ASSERT_TRUE(RunUntil([&] { return armed.back()->runs > 0; }));
  if (!real()) sim().SetFaults(io::SimFaults{});
  Drain();
  ASSERT_TRUE(queue.poisoned());
  for (Waited* w : armed) {
    EXPECT_EQ(w->runs, 1);
    EXPECT_EQ(w->status, queue.poison_status());
  }
}

// Scenario 4: a raw commit at synchronous=NORMAL returned, then its write-behind write failed
// (the loop ran before the host armed its wait). The commit is lost: the wait must say DataLoss,
// never OK.
TEST_P(DurableWaitAdversarialTest, ACommitWhoseWriteFailedBeforeTheWaitIsNeverOk) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  internal::EpochQueue& queue = Queue(path_);
  Exec(db, "PRAGMA synchronous=NORMAL");
  Drain();
  ASSERT_EQ(queue.durable_epoch(), queue.epoch());
  trace_->FailNth(io::OpKind::kWrite, 1, EIO);
  Exec(db, "INSERT INTO t VALUES (1)");  // Returns: its WAL frames go behind.
  Drain();
  ASSERT_TRUE(queue.poisoned()) << "the write did not go behind: not the case tested";
  Waited& waited = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait).ok());
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_EQ(waited.status.code(), absl::StatusCode::kDataLoss)
      << "OK for a commit whose write failed: " << waited.status;
}

// A rollback journal in TRUNCATE mode at synchronous=NORMAL: the commit's last step, the
// journal's truncate, issues no xSync. If the loop ran before the wait was armed, the journal's
// descriptor may be closed already; the wait's barrier must still make the truncate durable
// (else a crash leaves a hot journal that rolls the commit back).
// (FileTable::CloseIdle used to close the journal's descriptor while it was dirty, and the
// barrier, finding no descriptor, synced nothing and said OK: EpochQueue invariant 11.)
TEST_P(DurableWaitAdversarialTest, ATruncatedJournalWhoseDescriptorClosedIsStillSynced) {
  sqlite3* db = OpenRaw(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=TRUNCATE; PRAGMA synchronous=NORMAL; CREATE TABLE t(x)");
  Drain();
  internal::DatabaseFiles* files = Files(path_);
  ASSERT_NE(files, nullptr);
  Exec(db, "INSERT INTO t VALUES (1)");
  const internal::SharedFile& journal = files->table().file(internal::FileRole::kJournal);
  ASSERT_TRUE(journal.dirty) << "the truncate was synced: not the case tested";
  Drain();
  const uint64_t fsyncs_before = trace_->completed_of(io::OpKind::kFsync);
  Waited& waited = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(db, waited.wait).ok());
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  EXPECT_GT(trace_->completed_of(io::OpKind::kFsync), fsyncs_before)
      << "OK for a journal truncate that no fsync covered (journal fd " << journal.fd << ")";
}

// synchronous=OFF: a connection commits and closes, the last one on the file, so its files
// go; a new connection's wait covers "everything this process wrote to db's main database,
// from any connection", so by its OK an fsync of the main file must have followed the closed
// connection's last write there (its close's checkpoint).
// (VfsCore used to release a database's files while a file was dirty, so the table after the
// reopen had no dirty file and the wait said OK with no fsync: EpochQueue invariant 11.)
TEST_P(DurableWaitAdversarialTest, WritesOfAClosedConnectionAreCoveredAfterAReopen) {
  sqlite3* db = Open(path_);
  ASSERT_NE(db, nullptr);
  const int old_fd = Files(path_)->table().file(internal::FileRole::kMain).fd;
  Exec(db, "PRAGMA synchronous=OFF; INSERT INTO t VALUES (1)");
  Forget(db);
  ASSERT_EQ(sqlite3_close(db), SQLITE_OK);  // Checkpoints into the main file, unsynced.
  Drain();
  ASSERT_EQ(Files(path_), nullptr) << "the files stayed: not the case tested";
  sqlite3* again = OpenRaw(path_);
  ASSERT_NE(again, nullptr);
  const int new_fd = Files(path_)->table().file(internal::FileRole::kMain).fd;
  Waited& waited = NewWait();
  ASSERT_TRUE(vfs_->WhenDurable(again, waited.wait).ok());
  Drain();
  EXPECT_EQ(waited.runs, 1);
  EXPECT_TRUE(waited.status.ok()) << waited.status;
  // The trace, oldest first: the last completed write to the main file, then an fsync of it.
  bool written = false;
  bool synced_after = false;
  for (const sqloop::testing::TraceEvent& e : trace_->events()) {
    if (e.type != sqloop::testing::TraceEvent::Type::kComplete || e.result < 0) continue;
    if (e.kind == io::OpKind::kWrite && !e.reserve && e.fd == old_fd) {
      written = true;
      synced_after = false;
    }
    if (e.kind == io::OpKind::kFsync && (e.fd == old_fd || e.fd == new_fd)) synced_after = true;
  }
  ASSERT_TRUE(written) << "the close wrote nothing to the main file: not the case tested";
  EXPECT_TRUE(synced_after) << "OK with the closed connection's writes never synced";
}

// Scenario 5: the Loop or the Vfs destroyed under an armed wait stops the process with a
// message that says what to do, instead of a use-after-free.
TEST_P(DurableWaitAdversarialTest, DestroyingTheVfsUnderAWaitingWaitStopsClearly) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        sqlite3* db = Open(path_);
        trace_->Hold(io::OpKind::kFsync);
        Exec(db, "INSERT INTO t VALUES (1)");
        static Waited waited;  // Never destroyed: the Vfs's check is the one under test.
        waited.wait.done = &RecordDone;
        waited.wait.user_data = &waited;
        (void)vfs_->WhenDurable(db, waited.wait);
        open_.clear();
        (void)sqlite3_close(db);
        (void)loop_->Run(loop::RunMode::kNoWait);
        dir_.reset();
        vfs_.reset();
      },
      "Vfs destroyed while databases are open or their files are still in flight");
}

TEST_P(DurableWaitAdversarialTest, DestroyingTheLoopUnderADeliveringWaitStopsClearly) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        sqlite3* db = Open(path_);
        static Waited waited;
        waited.wait.done = &RecordDone;
        waited.wait.user_data = &waited;
        (void)vfs_->WhenDurable(db, waited.wait);  // Durable already: on the loop's FIFO.
        loop_.reset();
      },
      "Loop destroyed with operations, timers or posts pending");
}

TEST_P(DurableWaitAdversarialTest, DestroyingAnArmedWaitStopsClearly) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        sqlite3* db = Open(path_);
        auto waited = std::make_unique<Waited>();
        waited->wait.done = &RecordDone;
        waited->wait.user_data = waited.get();
        (void)vfs_->WhenDurable(db, waited->wait);
        waited.reset();
      },
      "DurableWait destroyed while armed");
}

INSTANTIATE_TEST_SUITE_P(Backends, DurableWaitAdversarialTest,
                         ::testing::ValuesIn(DbTestBackends()), BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
