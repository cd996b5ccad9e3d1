// A sleeping database (Database::Sleep, db/internal/file_sleep.h): it holds no descriptor,
// wakes for the next request through the loop without reopening its connections, and refuses
// to serve from its connections if the files changed while it slept. On every backend.
#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "sqloop/db/internal/vfs_core.h"
#include "tests/db_database_fixture.h"
#include "tests/db_test_support.h"

namespace sqloop::db::testing {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;

// A Database::Callback that records that it ran.
void SetTrue(void* arg, absl::Status /*unused*/) { *static_cast<bool*>(arg) = true; }

class SleepTest : public DatabaseTest {
 protected:
  bool real() const { return GetParam().real_descriptors; }

  // Descriptors of this process open on path_ or its WAL (real backends only).
  int OpenDescriptors() const {
    int count = 0;
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return -1;
    while (dirent* entry = readdir(dir)) {
      char target[PATH_MAX];
      const std::string link = absl::StrCat("/proc/self/fd/", entry->d_name);
      const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (absl::StartsWith(target, path_)) ++count;
    }
    closedir(dir);
    return count;
  }

  // Sleep, then the loop run until the descriptors' closes are done (Sleep's `closed`).
  void SleepAndClose() {
    bool closed = false;
    ASSERT_TRUE(db_->Sleep(&SetTrue, &closed).ok());
    EXPECT_FALSE(closed) << "Sleep's closed ran inside Sleep, not from the loop";
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    ASSERT_TRUE(closed) << "Sleep's closed never ran";
  }

  // A database's first open in a Vfs opens its writer (to run the integrity check), so the
  // writer is open at a wake that leaves the WAL, emptied by the close before, closed. From a
  // closed database.
  void WakeWithTheWriterOpenAndTheWalClosed() {
    MakeVfs({});  // A new Vfs checks the file again at its first open.
    ASSERT_TRUE(OpenDb().ok());
    ASSERT_EQ(db_->stats().integrity_checks, 1u);
    ASSERT_TRUE(db_->writer_open());
    ASSERT_EQ(WalBytes(), 0);
    SleepAndClose();
    ASSERT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
    ASSERT_EQ(db_->stats().wal_opens_deferred, 1u);
  }

  // Another writer on the real files: stock SQLite inserts a row (7, 'g') and closes, which
  // copies its WAL into the main file.
  void InsertWithPlainSqlite() {
    sqlite3* plain = nullptr;
    ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &plain, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    const int rc = sqlite3_exec(plain, "INSERT INTO t VALUES (7, 'g')", nullptr, nullptr, nullptr);
    EXPECT_EQ(rc, SQLITE_OK) << sqlite3_errmsg(plain);
    sqlite3_close(plain);
  }

  // A table of three rows, written with the WAL left holding them (no checkpoint).
  void Fill() {
    ASSERT_TRUE(OpenDb().ok());
    ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)").ok());
    ASSERT_TRUE(Write("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')").ok());
  }

  // Appends `bytes` zeros to `path` through the loop: what another writer would do to a file.
  void Append(const std::string& path, uint32_t bytes) {
    io::Op open{.kind = io::OpKind::kOpenAt,
                .fd = AT_FDCWD,
                .flags = O_RDWR | O_CLOEXEC,
                .path = path.c_str()};
    const int64_t fd = loop_->WaitForOp(open);
    ASSERT_GE(fd, 0);
    io::Op size{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
    const int64_t end = loop_->WaitForOp(size);
    ASSERT_GE(end, 0);
    std::string zeros(bytes, '\0');
    io::Op write{.kind = io::OpKind::kWrite,
                 .fd = static_cast<int>(fd),
                 .buffer = zeros.data(),
                 .length = bytes,
                 .offset = static_cast<uint64_t>(end)};
    ASSERT_EQ(loop_->WaitForOp(write), bytes);
    io::Op close{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
    (void)loop_->WaitForOp(close);
  }
};

TEST_P(SleepTest, ASleepingDatabaseHoldsNoDescriptorAndWakesWithoutAReopen) {
  Fill();
  if (real()) {
    EXPECT_GT(OpenDescriptors(), 0);
  }
  const DatabaseStats before = db_->stats();
  SleepAndClose();
  EXPECT_TRUE(db_->asleep());
  EXPECT_EQ(db_->stats().sleeps, 1u);
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 0) << "a sleeping database holds a descriptor";
  }

  const uint64_t waited = loop_->stats().waited_ops;
  EXPECT_EQ(Read("SELECT id, s FROM t ORDER BY id"), "1|'a'|\n2|'b'|\n3|'c'|\n");
  EXPECT_FALSE(db_->asleep());
  EXPECT_EQ(db_->stats().wakes, 1u);
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "the wake or its read waited on the loop";
  // Woken, not reopened: the same reader served, and no reader was opened.
  EXPECT_EQ(db_->stats().readers_opened, before.readers_opened);
  if (real()) {
    EXPECT_GT(OpenDescriptors(), 0);
  }

  // A write after the wake is durable: it is there after a close and a reopen.
  ASSERT_TRUE(db_->Sleep().ok());
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  EXPECT_EQ(db_->stats().wakes, 2u);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*), max(s) FROM t"), "4|'d'|\n");
}

// Every open leaves the files' names waiting for a directory fsync until the first barrier, so
// a database that only read since it opened sleeps with them pending, and neither the open nor
// the wake opens the directory: the first write's barrier opens it through the loop and syncs
// it. That write waits on the loop only for its empty WAL's header, written at once (a full
// disk must reach SQLite), after a plain reopen as after a wake.
TEST_P(SleepTest, AFirstWriteAfterAReopenOrAWakeOpensTheDirectoryWithoutWaiting) {
  Fill();
  auto directory_fd = [&] {
    return internal::VfsCore::Of(*vfs_).Find(path_)->table().directory_fd();
  };
  auto reopen_read_write = [&](bool sleep, int row) {
    EXPECT_TRUE(CloseDb().ok());
    EXPECT_TRUE(OpenDb().ok());
    EXPECT_EQ(Read("SELECT count(*) > 0 FROM t"), "1|\n");
    if (sleep) {
      EXPECT_TRUE(db_->Sleep().ok());
    }
    const uint64_t before_read = loop_->stats().waited_ops;
    EXPECT_EQ(Read("SELECT count(*) > 0 FROM t"), "1|\n");
    EXPECT_EQ(loop_->stats().waited_ops, before_read) << "the wake or its read waited";
    EXPECT_LT(directory_fd(), 0) << "the directory was opened before a write needed it";
    const uint64_t before_write = loop_->stats().waited_ops;
    EXPECT_TRUE(Write(absl::StrCat("INSERT INTO t VALUES (", row, ", 'x')")).ok());
    EXPECT_GE(directory_fd(), 0) << "the write's barrier did not open the directory to sync it";
    return loop_->stats().waited_ops - before_write;
  };
  const uint64_t reopened = reopen_read_write(/*sleep=*/false, 4);
  const uint64_t woken = reopen_read_write(/*sleep=*/true, 5);
  EXPECT_EQ(db_->stats().wakes, 1u);
  EXPECT_EQ(reopened, 1u) << "the first write after a reopen waited for more than its WAL header";
  EXPECT_EQ(woken, 1u) << "the first write after a wake waited for more than its WAL header";
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "5|\n");
}

// A trim of a sleeper closes its writer too (the registry trims sleepers as it trims idle
// tenants), so a trimmed sleeper holds one connection. The close touches no file: the wake
// checks that the files are what the sleep left, and a checkpoint in that close would have
// written the main file. The writer opens again at the next write, and the close after it
// checkpoints as every close does.
TEST_P(SleepTest, AWriterClosedWhileAsleepTouchesNoFileAndOpensAgainAtTheNextWrite) {
  Fill();
  SleepAndClose();
  const DatabaseStats before = db_->stats();
  EXPECT_TRUE(db_->CloseWriterIfIdle()) << "a sleeper's writer was not closed";
  db_->ReleaseMemory();
  EXPECT_EQ(db_->stats().writers_closed_idle, before.writers_closed_idle + 1);
  EXPECT_TRUE(db_->asleep());
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 0) << "closing the writer opened a file";
  }
  const uint64_t waited = loop_->stats().waited_ops;
  EXPECT_EQ(Read("SELECT id, s FROM t ORDER BY id"), "1|'a'|\n2|'b'|\n3|'c'|\n");
  EXPECT_EQ(db_->stats().wakes, 1u) << "the wake failed: the writer's close changed a file";
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "the wake or its read waited on the loop";
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  EXPECT_EQ(db_->stats().writers_opened_late, before.writers_opened_late + 1);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*), max(s) FROM t"), "4|'d'|\n");
}

TEST_P(SleepTest, SleepIsRefusedWhileAnythingIsInFlight) {
  Fill();
  Probe write;
  Prime(write, Request::Kind::kWrite, "INSERT INTO t VALUES (5, 'e')");
  ASSERT_TRUE(db_->Submit(write.request).ok());
  const absl::Status refused = db_->Sleep();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_FALSE(db_->asleep());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(write.done);
  EXPECT_TRUE(write.status.ok()) << write.status;

  // Nor from a request's callback: the database is in the middle of its own work there.
  Probe read;
  Prime(read, Request::Kind::kRead, "SELECT count(*) FROM t");
  absl::Status from_callback;
  read.on_ack = [&](Probe&) { from_callback = db_->Sleep(); };
  ASSERT_TRUE(db_->Submit(read.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(read.done);
  EXPECT_EQ(read.rows, "4|\n");
  EXPECT_EQ(from_callback.code(), absl::StatusCode::kFailedPrecondition) << from_callback;
  EXPECT_FALSE(db_->asleep());

  EXPECT_TRUE(db_->Sleep().ok());
  EXPECT_EQ(db_->stats().sleeps, 1u);
}

// Another writer appended to the WAL while the database slept: the connections' view of it is
// stale, so the wake fails and nothing is served; the close touches no file, and a reopen
// (which recovers the WAL, ignoring what is not a valid frame) finds every acknowledged row.
TEST_P(SleepTest, AFileChangedWhileAsleepFailsTheWakeAndServesNothingStale) {
  Fill();
  ASSERT_TRUE(db_->Sleep().ok());
  Append(path_ + "-wal", 4096);

  std::string rows;
  const absl::Status read = Run(Request::Kind::kRead, "SELECT count(*) FROM t", {}, &rows);
  EXPECT_EQ(read.code(), absl::StatusCode::kFailedPrecondition) << read;
  EXPECT_TRUE(absl::StrContains(read.message(), "changed while the database slept")) << read;
  EXPECT_EQ(rows, "");
  EXPECT_EQ(db_->stats().wakes_failed, 1u);
  EXPECT_TRUE(db_->asleep());
  // Every try fails the same way: the change does not go away.
  EXPECT_EQ(Write("INSERT INTO t VALUES (6, 'f')").code(), absl::StatusCode::kFailedPrecondition);
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 0);
  }

  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
}

// A wake that found the files as recorded keeps that record while nothing is written: the next
// sleep reads no fingerprint again (invariant 4 of FileSleep). So a change another writer makes
// while the database is awake and only reading is caught at the next wake as well, where the
// sleep would have taken it in had it read the files again. A write of the database's own
// after a wake is taken in (the next wake succeeds), and so is everything after a reopen.
TEST_P(SleepTest, ASleepAfterOnlyReadsKeepsTheWakesRecordAndAWriteRenewsIt) {
  MakeVfs({.wal_reserve_bytes = 0});  // No reserve: the write itself must count as a change.
  Fill();
  ASSERT_TRUE(db_->Sleep().ok());
  ASSERT_EQ(Read("SELECT count(*) FROM t"), "3|\n");  // The wake checked the record.
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  ASSERT_TRUE(db_->Sleep().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n") << "the write after the wake was not recorded";
  EXPECT_EQ(db_->stats().wakes, 2u);

  Append(path_ + "-wal", 4096);  // Awake, nothing written by the database since its wake.
  ASSERT_TRUE(db_->Sleep().ok());
  const absl::Status read = Run(Request::Kind::kRead, "SELECT count(*) FROM t");
  EXPECT_EQ(read.code(), absl::StatusCode::kFailedPrecondition) << read;
  EXPECT_TRUE(absl::StrContains(read.message(), "changed while the database slept")) << read;
  EXPECT_EQ(db_->stats().wakes_failed, 1u);

  // A reopen reads the files afresh (the appended bytes are no valid frame: recovery drops
  // them), and its first sleep records them.
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(db_->Sleep().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
  ASSERT_TRUE(db_->Sleep().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

// Close of a sleeping database skips SQLite's checkpoint (it would write through descriptors
// the database no longer holds): the WAL keeps its frames and the next open recovers them.
TEST_P(SleepTest, ACloseWhileAsleepKeepsEveryRowInTheWal) {
  Fill();
  ASSERT_TRUE(db_->Sleep().ok());
  const int64_t wal = WalBytes();
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(WalBytes(), wal) << "the close wrote to the WAL";
  EXPECT_GT(wal, 0);
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT group_concat(s, '') FROM t"), "'abc'|\n");
}

// A request that comes before the loop ran the sleep's closes: its wake waits for them. The
// old main file descriptor holds the flock until it is closed, so a wake that opened and
// locked the file before then would fail with "locked" on the real backends.
TEST_P(SleepTest, ARequestBeforeTheSleepsClosesRanWakesAfterThem) {
  Fill();
  bool closed = false;
  bool closed_before_read = false;
  ASSERT_TRUE(db_->Sleep(&SetTrue, &closed).ok());
  ASSERT_FALSE(closed) << "the closes ran inside Sleep: the case is not tested";
  Probe read;
  Prime(read, Request::Kind::kRead, "SELECT count(*) FROM t");
  read.on_ack = [&](Probe&) { closed_before_read = closed; };
  ASSERT_TRUE(db_->Submit(read.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(read.done);
  EXPECT_TRUE(read.status.ok()) << read.status;
  EXPECT_EQ(read.rows, "3|\n");
  EXPECT_TRUE(closed_before_read) << "the read was served before the sleep's closes ran";
  EXPECT_EQ(db_->stats().wakes, 1u);
  EXPECT_EQ(db_->stats().wakes_failed, 0u);
  if (real()) {
    EXPECT_GT(OpenDescriptors(), 0);
  }
}

// A close while asleep touches no file, so the files are what the sleep recorded: the check the
// database passed at its open still covers them, and the next open skips it (and with it the
// writer's early open), as after a close of an awake database. A file changed after such a
// close is checked again.
TEST_P(SleepTest, ACloseWhileAsleepKeepsTheOpensCheckForAnUnchangedFile) {
  Fill();
  ASSERT_EQ(db_->stats().integrity_checks, 1u);
  SleepAndClose();
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 0u);
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u) << "the sleeper's close forgot the check";
  EXPECT_EQ(db_->stats().writer_opens_deferred, 1u);
  EXPECT_EQ(Read("SELECT group_concat(s, '') FROM t"), "'abc'|\n");

  SleepAndClose();
  ASSERT_TRUE(CloseDb().ok());
  Append(path_ + "-wal", 4096);  // Another writer, after the close.
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks, 1u) << "a file changed after the close was not checked";
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 0u);
  EXPECT_EQ(Read("SELECT group_concat(s, '') FROM t"), "'abc'|\n");
}

// Another process holding the database's flock when a request comes: the wake fails with why,
// and succeeds at the next request once the lock is gone (nothing changed the files).
TEST_P(SleepTest, AWakeWhileAnotherProcessHoldsTheLockFailsUntilItLetsGo) {
  if (!real()) GTEST_SKIP() << "the simulator has one process and no flock";
  Fill();
  SleepAndClose();
  // Another process takes the lock, says so through `locked`, and holds it until `release`
  // reaches end of file.
  int locked[2];
  int release[2];
  ASSERT_EQ(pipe2(locked, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(release, O_CLOEXEC), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(release[1]);
    const int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
    const char ok = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 ? 1 : 0;
    if (write(locked[1], &ok, 1) != 1) _exit(2);
    char byte = 0;
    while (read(release[0], &byte, 1) > 0) {
    }
    _exit(ok == 1 ? 0 : 1);
  }
  close(locked[1]);
  close(release[0]);
  char ok = 0;
  ASSERT_EQ(read(locked[0], &ok, 1), 1);
  close(locked[0]);
  ASSERT_EQ(ok, 1) << "the other process could not take the lock";

  const absl::Status refused = Run(Request::Kind::kRead, "SELECT count(*) FROM t");
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "locked by another process")) << refused;
  EXPECT_TRUE(db_->asleep());

  close(release[1]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  EXPECT_EQ(db_->stats().wakes, 1u);
  EXPECT_EQ(db_->stats().wakes_failed, 1u);
}

// The sleep lets go of the main file's flock at once, before the loop has run the close of its
// descriptor: the ring's close may complete before the kernel frees the file, and a wake right
// after it then found its own old lock held.
TEST_P(SleepTest, ASleepReleasesTheLockBeforeItsCloseRuns) {
  if (!real()) GTEST_SKIP() << "the simulator has one process and no flock";
  Fill();
  bool closed = false;
  ASSERT_TRUE(db_->Sleep(&SetTrue, &closed).ok());
  ASSERT_FALSE(closed) << "the close ran inside Sleep: the case is not tested";
  const int other = open(path_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(other, 0);
  EXPECT_EQ(flock(other, LOCK_EX | LOCK_NB), 0) << "the sleeping database still holds the lock";
  close(other);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(closed);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
}

// A plain SQLite connection writes a row while the database sleeps: the wake sees the change.
TEST_P(SleepTest, AWriteByPlainSqliteWhileAsleepIsCaught) {
  if (!real()) GTEST_SKIP() << "plain SQLite writes real files only";
  Fill();
  ASSERT_TRUE(db_->Sleep().ok());
  ASSERT_NO_FATAL_FAILURE(InsertWithPlainSqlite());

  const absl::Status read = Run(Request::Kind::kRead, "SELECT count(*) FROM t");
  EXPECT_EQ(read.code(), absl::StatusCode::kFailedPrecondition) << read;
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

// Two Databases of one process on one file share its descriptors: neither may sleep while the
// other has it open, and none opens it while one holds it asleep.
TEST_P(SleepTest, ADatabaseSharingItsFilesDoesNotSleepAndNoneOpensASleepingOnesFile) {
  Fill();
  {
    std::unique_ptr<Database> other = OpenOther(path_);
    ASSERT_NE(other, nullptr);
    const absl::Status refused = db_->Sleep();
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
    EXPECT_TRUE(absl::StrContains(refused.message(), "same file")) << refused;
    EXPECT_FALSE(db_->asleep());
    ASSERT_TRUE(CloseAndRun(*other).ok());
  }
  ASSERT_TRUE(db_->Sleep().ok());
  Database other(*loop_, *vfs_, path_);
  const absl::Status opened = OpenAndRun(other);
  EXPECT_EQ(opened.code(), absl::StatusCode::kUnavailable) << opened;
  EXPECT_TRUE(absl::StrContains(opened.message(), "asleep")) << opened;
  // The sleeping one is untouched: it wakes and answers.
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
}

// A WAL that slept empty (FileSleep invariant 5): a reopen truncated it, and the database only
// read since.
class EmptyWalSleepTest : public SleepTest {
 protected:
  void SetUp() override {
    SleepTest::SetUp();
    Fill();
    ASSERT_TRUE(CloseDb().ok());
    ASSERT_TRUE(OpenDb().ok());
    ASSERT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
    ASSERT_EQ(WalBytes(), 0) << "the close left the WAL with bytes: the case is not tested";
    SleepAndClose();
  }
};

// A wake for reads opens the main file only, and the reads are served; the first write opens
// the WAL through the loop (the wake's check of it included) and is durable; the write's WAL
// has bytes, so the next wake opens both files again.
TEST_P(EmptyWalSleepTest, AWakeForReadsLeavesTheWalClosedUntilTheFirstWrite) {
  const uint64_t waited = loop_->stats().waited_ops;
  EXPECT_EQ(Read("SELECT id, s FROM t ORDER BY id"), "1|'a'|\n2|'b'|\n3|'c'|\n");
  EXPECT_EQ(db_->stats().wakes, 1u);
  EXPECT_EQ(db_->stats().wal_opens_deferred, 1u) << "the wake opened the empty WAL";
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "the wake or its read waited on the loop";
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 1) << "not the main file alone";
  }
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");  // Served again, the WAL still closed.
  EXPECT_EQ(db_->stats().wal_opened_late, 0u);

  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  EXPECT_EQ(db_->stats().wal_opened_late, 1u);
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 2) << "the write did not open the WAL";
  }
  EXPECT_GT(WalBytes(), 0);
  SleepAndClose();
  EXPECT_EQ(Read("SELECT count(*), max(s) FROM t"), "4|'d'|\n");
  EXPECT_EQ(db_->stats().wakes, 2u);
  EXPECT_EQ(db_->stats().wal_opens_deferred, 1u) << "a WAL with frames was left closed";
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*), max(s) FROM t"), "4|'d'|\n");
}

// A write waiting at the wake opens the WAL with the main file: it waits for no second open.
TEST_P(EmptyWalSleepTest, AWriteWaitingAtTheWakeOpensTheWalWithTheMainFile) {
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  EXPECT_EQ(db_->stats().wakes, 1u);
  EXPECT_EQ(db_->stats().wal_opens_deferred, 0u);
  EXPECT_EQ(db_->stats().wal_opened_late, 0u);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

// A sleeper with its WAL left closed sleeps again, and wakes, without the WAL's record going
// stale: nothing of the process touched the file. Closing it writes nothing to the WAL.
TEST_P(EmptyWalSleepTest, ASleepAndACloseWithTheWalLeftClosedTouchNothing) {
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  SleepAndClose();
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  EXPECT_EQ(db_->stats().wakes, 2u);
  EXPECT_EQ(db_->stats().wakes_failed, 0u);
  EXPECT_EQ(db_->stats().wal_opens_deferred, 2u);
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(WalBytes(), 0);
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

// Another writer appended to the WAL alone while the database slept. The wake checks the main
// file, which did not change, so the reads see the database as this process left it; the
// first write opens the WAL, finds the change, and fails without writing to it, every time.
TEST_P(EmptyWalSleepTest, AChangeToTheEmptyWalAloneIsFoundAtTheFirstWrite) {
  Append(path_ + "-wal", 4096);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  EXPECT_EQ(db_->stats().wal_opens_deferred, 1u);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const absl::Status write = Write("INSERT INTO t VALUES (4, 'd')");
    EXPECT_EQ(write.code(), absl::StatusCode::kFailedPrecondition) << write;
    EXPECT_TRUE(absl::StrContains(write.message(), "changed while the database slept")) << write;
  }
  EXPECT_EQ(db_->stats().wal_opened_late, 0u);
  EXPECT_EQ(db_->stats().wal_late_opens_failed, 2u);
  EXPECT_EQ(WalBytes(), 4096) << "the failed writes wrote to the WAL";
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 1) << "a WAL found changed was kept open";
  }
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(WalBytes(), 4096) << "the close wrote to the WAL";
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
}

// Plain SQLite's write copies itself into the main file when it closes: the wake finds that,
// as it does when the WAL slept with frames.
TEST_P(EmptyWalSleepTest, AWriteByPlainSqliteIsCaughtAtTheWake) {
  if (!real()) GTEST_SKIP() << "plain SQLite writes real files only";
  ASSERT_NO_FATAL_FAILURE(InsertWithPlainSqlite());
  const absl::Status read = Run(Request::Kind::kRead, "SELECT count(*) FROM t");
  EXPECT_EQ(read.code(), absl::StatusCode::kFailedPrecondition) << read;
  EXPECT_EQ(db_->stats().wakes_failed, 1u);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

// Another Database of the process opening the files while the WAL is left closed opens the
// WAL itself (it has no sleep of its own to open it later), so both write without an open of
// their own; every row is there after a reopen.
TEST_P(EmptyWalSleepTest, AnotherDatabaseOpeningTheFilesOpensTheWal) {
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_EQ(db_->stats().wal_opens_deferred, 1u);
  {
    std::unique_ptr<Database> other = OpenOther(path_);
    ASSERT_NE(other, nullptr);
    Probe write;
    Prime(write, Request::Kind::kWrite, "INSERT INTO t VALUES (4, 'd')");
    ASSERT_TRUE(other->Submit(write.request).ok());
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    ASSERT_TRUE(write.done);
    EXPECT_TRUE(write.status.ok()) << write.status;
    ASSERT_TRUE(Write("INSERT INTO t VALUES (5, 'e')").ok());
    EXPECT_EQ(db_->stats().wal_opened_late, 0u) << "the WAL was not opened by the other's open";
    ASSERT_TRUE(CloseAndRun(*other).ok());
  }
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "5|\n");
}

// With the writer open at the close, the close skips its checkpoint, which would have nothing
// to copy; with the writer closed while idle, the close does not open it again for one.
TEST_P(SleepTest, AWriterOfAWakeThatLeftTheWalClosedDoesNotCheckpointItAtTheClose) {
  Fill();
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_NO_FATAL_FAILURE(WakeWithTheWriterOpenAndTheWalClosed());
  const uint64_t checkpoints = db_->stats().checkpoints;
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(db_->stats().checkpoints, checkpoints) << "the close checkpointed an empty WAL";
  EXPECT_EQ(WalBytes(), 0);

  ASSERT_NO_FATAL_FAILURE(WakeWithTheWriterOpenAndTheWalClosed());
  ASSERT_TRUE(db_->CloseWriterIfIdle());
  const uint64_t opened = db_->stats().writers_opened_late;
  ASSERT_TRUE(CloseDb().ok());
  EXPECT_EQ(db_->stats().writers_opened_late, opened) << "the close opened the writer";
  EXPECT_EQ(WalBytes(), 0);
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
}

// A write starts the WAL's open, which is held in flight, and the write is cancelled: a sleep is
// refused until the open is over, and a close waits for it.
TEST_P(EmptyWalSleepTest, ASleepOrACloseWaitsForTheWalsOpen) {
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  auto start_open_and_cancel = [&](Probe& write) {
    trace_->Hold(io::OpKind::kOpenAt);
    Prime(write, Request::Kind::kWrite, "INSERT INTO t VALUES (4, 'd')");
    ASSERT_TRUE(db_->Submit(write.request).ok());
    ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
    ASSERT_EQ(trace_->held(), 1u) << "the write did not start the WAL's open";
    ASSERT_TRUE(db_->Cancel(write.request));
    ASSERT_TRUE(write.done);
  };
  Probe first;
  ASSERT_NO_FATAL_FAILURE(start_open_and_cancel(first));
  const absl::Status refused = db_->Sleep();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  trace_->ReleaseHeld();
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(db_->stats().wal_opened_late, 1u);
  SleepAndClose();  // With the WAL open now, and still empty.

  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_EQ(db_->stats().wal_opens_deferred, 2u);
  Probe second;
  ASSERT_NO_FATAL_FAILURE(start_open_and_cancel(second));
  bool closed = false;
  db_->Close(&SetTrue, &closed);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
  EXPECT_FALSE(closed) << "the close went on with the WAL's open in flight";
  trace_->ReleaseHeld();
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(closed);
  EXPECT_EQ(db_->stats().wal_opened_late, 2u);
  if (real()) {
    EXPECT_EQ(OpenDescriptors(), 0) << "the WAL opened during the close is still open";
  }
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
}

// The WAL's open fails: the writes waiting fail with why, the reads go on, and the next write
// opens it.
TEST_P(EmptyWalSleepTest, AFailedOpenOfTheWalFailsTheWritesAndTheNextOneTriesAgain) {
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  trace_->FailNth(io::OpKind::kOpenAt, /*nth=*/1, EMFILE);
  const absl::Status failed = Write("INSERT INTO t VALUES (4, 'd')");
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_TRUE(absl::StrContains(failed.message(), "-wal")) << failed;
  EXPECT_EQ(db_->stats().wal_opened_late, 0u);
  EXPECT_EQ(db_->stats().wal_late_opens_failed, 1u);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  ASSERT_TRUE(Write("INSERT INTO t VALUES (4, 'd')").ok());
  EXPECT_EQ(db_->stats().wal_opened_late, 1u);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

// A failed open fails the writes that waited for it, not one submitted from their callbacks:
// that one was not there when the open failed, so it gets an open of its own. (A client that
// writes again at once when a write fails would otherwise have every retry failed inside the
// same callback, for ever.)
TEST_P(EmptyWalSleepTest, AWriteSubmittedAfterAFailedOpenOfTheWalGetsAnOpenOfItsOwn) {
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "3|\n");
  trace_->FailNth(io::OpKind::kOpenAt, /*nth=*/1, EMFILE);
  Probe first;
  Probe retry;
  Prime(first, Request::Kind::kWrite, "INSERT INTO t VALUES (4, 'd')");
  Prime(retry, Request::Kind::kWrite, "INSERT INTO t VALUES (4, 'd')");
  first.on_ack = [&](Probe& /*p*/) { EXPECT_TRUE(db_->Submit(retry.request).ok()); };
  ASSERT_TRUE(db_->Submit(first.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(first.done && retry.done);
  EXPECT_EQ(first.status.code(), absl::StatusCode::kUnavailable) << first.status;
  EXPECT_TRUE(retry.status.ok()) << retry.status;
  EXPECT_EQ(db_->stats().wal_late_opens_failed, 1u);
  EXPECT_EQ(db_->stats().wal_opened_late, 1u);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), "4|\n");
}

INSTANTIATE_TEST_SUITE_P(Backends, EmptyWalSleepTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

INSTANTIATE_TEST_SUITE_P(Backends, SleepTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
