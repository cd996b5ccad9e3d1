// A host that uses the Vfs directly (db/vfs.h: Vfs::Create, then sqlite3_open_v2 with its name)
// and does everything SQLite allows: pragmas the Database refuses, several connections and
// attachments on one file, copies, odd paths, files changed behind the VFS's back, closes in odd
// orders, commits while the loop does not run, and a failed fsync. Each test states what such a
// host may rely on; none of them goes through the Database layer.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/db/internal/vfs_core.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using testing::BackendParamName;
using testing::DbTestBackends;
using testing::RecordingBackend;
using testing::ScratchDir;
using testing::TestBackend;

constexpr int kCreate = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

class VfsHostileTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    auto recording = std::make_unique<RecordingBackend>(GetParam().make());
    trace_ = recording.get();
    loop_ = std::make_unique<loop::Loop>(std::move(recording), loop::LoopOptions{});
    dir_ = std::make_unique<ScratchDir>(real());
    MakeVfs(VfsOptions{});
    path_ = dir_->Path("t.db");
  }
  void TearDown() override {
    // A test that stopped early may have left statements open and operations held: a zombie
    // connection would stop ~Vfs, and a held operation would keep Drain from returning.
    for (sqlite3* db : open_) {
      while (sqlite3_stmt* stmt = sqlite3_next_stmt(db, nullptr)) sqlite3_finalize(stmt);
      EXPECT_EQ(sqlite3_close(db), SQLITE_OK);
    }
    open_.clear();
    trace_->ReleaseHeld();
    Drain();
    vfs_.reset();
  }
  bool real() const { return GetParam().real_descriptors; }
  io::SimBackend& sim() { return static_cast<io::SimBackend&>(trace_->inner()); }
  void MakeVfs(VfsOptions options) {
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*loop_, options);
    ASSERT_TRUE(vfs.ok()) << vfs.status();
    vfs_ = *std::move(vfs);
  }
  // A connection on `vfs` (vfs_ by default); null, and a failure, if it does not open. Closed at
  // TearDown unless the test closes it with Close().
  sqlite3* Connect(const std::string& path, Vfs* vfs = nullptr, int flags = kCreate) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &db, flags, (vfs ? vfs : vfs_.get())->name());
    EXPECT_EQ(rc, SQLITE_OK) << path << ": " << sqlite3_errmsg(db);
    if (rc != SQLITE_OK) {
      sqlite3_close(db);
      return nullptr;
    }
    open_.push_back(db);
    return db;
  }
  // The result code of an open that is expected to fail (nothing is left open).
  int FailedOpen(const std::string& path, Vfs* vfs = nullptr) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &db, kCreate, (vfs ? vfs : vfs_.get())->name());
    EXPECT_EQ(sqlite3_close(db), SQLITE_OK);
    return rc;
  }
  void Close(sqlite3* db) {
    std::erase(open_, db);
    EXPECT_EQ(sqlite3_close(db), SQLITE_OK) << sqlite3_errmsg(db);
  }
  // sqlite3_exec's result code; the error message, if any, in last_error_.
  int Run(sqlite3* db, const std::string& sql) {
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    last_error_ = error != nullptr ? error : "";
    sqlite3_free(error);
    return rc;
  }
  void Exec(sqlite3* db, const std::string& sql) {
    ASSERT_EQ(Run(db, sql), SQLITE_OK) << sql << ": " << last_error_;
  }
  // Rows as "a|b\n" lines.
  std::string Query(sqlite3* db, const std::string& sql) {
    std::string out;
    auto on_row = [](void* arg, int n, char** values, char** /*names*/) {
      auto* text = static_cast<std::string*>(arg);
      for (int i = 0; i < n; ++i) {
        if (i > 0) text->push_back('|');
        text->append(values[i] != nullptr ? values[i] : "NULL");
      }
      text->push_back('\n');
      return 0;
    };
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), on_row, &out, &error), SQLITE_OK)
        << sql << ": " << (error != nullptr ? error : "");
    sqlite3_free(error);
    return out;
  }
  void Drain() { ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok()); }
  internal::DatabaseFiles* Files(const std::string& path, Vfs* vfs = nullptr) {
    return internal::VfsCore::Of(vfs ? *vfs : *vfs_).Find(path);
  }
  // What the disk (or the simulator) holds for `path`, read beside the VFS as another process
  // would: its size, or -errno.
  int64_t DiskBytes(const std::string& path) {
    io::Op open{
        .kind = io::OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_RDONLY, .path = path.c_str()};
    const int64_t fd = loop_->WaitForOp(open);
    if (fd < 0) return fd;
    io::Op size{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
    const int64_t bytes = loop_->WaitForOp(size);
    io::Op close{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
    (void)loop_->WaitForOp(close);
    return bytes;
  }
  // Another process writes `bytes` at `offset` of `path`, or truncates it there (bytes empty).
  void ChangeBehindTheVfs(const std::string& path, uint64_t offset, const std::string& bytes) {
    io::Op open{.kind = io::OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_RDWR, .path = path.c_str()};
    const int64_t fd = loop_->WaitForOp(open);
    ASSERT_GE(fd, 0);
    io::Op change{.kind = bytes.empty() ? io::OpKind::kFtruncate : io::OpKind::kWrite,
                  .fd = static_cast<int>(fd),
                  .buffer = const_cast<char*>(bytes.data()),
                  .length = static_cast<uint32_t>(bytes.size()),
                  .offset = offset};
    EXPECT_GE(loop_->WaitForOp(change), 0);
    io::Op close{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
    (void)loop_->WaitForOp(close);
  }
  // Closes every connection, runs the loop until the files are released, and opens `path` again
  // on a fresh Vfs, as a restarted host would; with `power_loss` (the simulator only), the disk
  // keeps only what was durable.
  sqlite3* Reopen(const std::string& path, bool power_loss = false) {
    for (sqlite3* db : open_) EXPECT_EQ(sqlite3_close(db), SQLITE_OK);
    open_.clear();
    Drain();
    vfs_.reset();
    if (power_loss) sim().Crash();
    MakeVfs(VfsOptions{});
    return Connect(path);
  }

  RecordingBackend* trace_ = nullptr;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Vfs> vfs_;
  std::string path_;
  std::vector<sqlite3*> open_;
  std::string last_error_;
};

// ---- Pragmas the Database refuses --------------------------------------------------------------

TEST_P(VfsHostileTest, EveryRollbackJournalModeCommitsRollsBackAndSurvivesAReopen) {
  for (const std::string mode : {"delete", "truncate", "persist", "memory", "off"}) {
    SCOPED_TRACE(mode);
    const std::string path = dir_->Path("j-" + mode + ".db");
    sqlite3* db = Connect(path);
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(Query(db, "PRAGMA journal_mode=" + mode), mode + "\n");
    Exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    if (mode != "off") {  // SQLite cannot roll back without a journal.
      Exec(db, "BEGIN; INSERT INTO t VALUES (100); UPDATE t SET x = x + 1000; ROLLBACK");
    }
    Exec(db, "BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (3); COMMIT");
    EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2,3\n");
    // What each mode leaves of the journal once the loop ran what SQLite asked for.
    Drain();
    const int64_t journal = DiskBytes(path + "-journal");
    if (mode == "truncate") {
      EXPECT_EQ(journal, 0);
    } else if (mode == "persist") {
      EXPECT_GT(journal, 0);
    } else {
      EXPECT_EQ(journal, -ENOENT);
    }
    db = Reopen(path);
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2,3\n");
    EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
  }
}

// A raw connection's SQLITE_FCNTL_PERSIST_WAL is off, as in SQLite's own VFS (the Database's
// connections turn it on, with a journal_size_limit). Were it on, a raw connection, which has no
// journal_size_limit, leaving WAL mode would keep the WAL with its frames; the next transaction
// would find it, quietly go back to WAL mode while PRAGMA journal_mode still said "delete", and
// every reopen would be in WAL mode.
TEST_P(VfsHostileTest, LeavingWalModeForDeleteSticksAcrossAReopen) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  EXPECT_EQ(Query(db, "PRAGMA journal_mode=DELETE"), "delete\n");
  Drain();
  const int64_t wal_bytes = DiskBytes(path_ + "-wal");
  EXPECT_TRUE(wal_bytes == -ENOENT || wal_bytes == 0)
      << "a WAL with frames was kept: " << wal_bytes;
  const internal::SharedFile& wal = Files(path_)->table().file(internal::FileRole::kWal);
  const uint64_t wal_seen = wal.size_bytes;
  Exec(db, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(wal.size_bytes, wal_seen) << "a write after leaving WAL mode went to the WAL";
  EXPECT_EQ(Query(db, "PRAGMA journal_mode"), "delete\n");
  db = Reopen(path_);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "PRAGMA journal_mode"), "delete\n");
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2\n");
}

// A tiny cache spills dirty pages in the middle of a rollback transaction: the journal is synced
// (a barrier) and the main file's pages are written behind it. With the loop not running they
// are all held, and every read of the transaction must see them.
TEST_P(VfsHostileTest, ATinyCacheSpillsMidTransactionAndReadsItsHeldWritesBack) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=DELETE; PRAGMA cache_size=2");
  Exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, n INT)");
  Drain();
  const uint64_t held_before = vfs_->stats().held_writes;
  const uint64_t barriers_before = vfs_->stats().barriers;
  Exec(db,
       "BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 600) "
       "INSERT INTO t SELECT i, randomblob(600), i FROM c");
  Exec(db, "SAVEPOINT s; UPDATE t SET n = n * 2; ROLLBACK TO s; RELEASE s");
  Exec(db, "UPDATE t SET n = n + 1 WHERE id % 3 = 0");
  EXPECT_GT(vfs_->stats().barriers, barriers_before) << "the cache never spilled";
  EXPECT_GT(vfs_->stats().held_writes, held_before) << "nothing was held behind a barrier";
  EXPECT_EQ(Query(db, "SELECT count(*), sum(n), sum(length(v)) FROM t"), "600|180500|360000\n");
  Exec(db, "COMMIT");
  EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
  db = Reopen(path_);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "SELECT count(*), sum(n) FROM t"), "600|180500\n");
}

TEST_P(VfsHostileTest, APageSizeChangedByVacuumSurvivesAReopenInWalMode) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x)");
  Exec(db,
       "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) "
       "INSERT INTO t SELECT randomblob(200) FROM c");
  Exec(db, "PRAGMA page_size=8192; VACUUM");
  EXPECT_EQ(Query(db, "PRAGMA page_size"), "8192\n");
  Exec(db,
       "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; VACUUM; DELETE FROM t WHERE rowid > 200");
  db = Reopen(path_);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "PRAGMA page_size"), "8192\n") << "WAL mode keeps the page size";
  EXPECT_EQ(Query(db, "SELECT count(*), sum(length(x)) FROM t"), "200|40000\n");
  EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
}

TEST_P(VfsHostileTest, ATruncateCheckpointWaitsForAReaderThenEmptiesTheWal) {
  sqlite3* writer = Connect(path_);
  sqlite3* reader = Connect(path_);
  ASSERT_NE(reader, nullptr);
  Exec(writer, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  Exec(reader, "BEGIN");
  EXPECT_EQ(Query(reader, "SELECT count(*) FROM t"), "1\n");  // The snapshot is taken here.
  Exec(writer, "INSERT INTO t VALUES (2)");
  // No busy handler: the checkpoint gives up at once and says so (its first column).
  EXPECT_EQ(Query(writer, "PRAGMA wal_checkpoint(TRUNCATE)").substr(0, 2), "1|");
  EXPECT_EQ(Query(reader, "SELECT count(*) FROM t"), "1\n") << "the snapshot moved";
  Exec(reader, "COMMIT");
  EXPECT_EQ(Query(writer, "PRAGMA wal_checkpoint(TRUNCATE)"), "0|0|0\n");
  Drain();
  EXPECT_EQ(DiskBytes(path_ + "-wal"), 0) << "the reserve ahead of the WAL outlived TRUNCATE";
  EXPECT_EQ(Query(reader, "SELECT count(*) FROM t"), "2\n");
}

// mmap_size cannot map the file (the io methods have no xFetch), EXCLUSIVE locking holds
// against the Vfs's other connections, and synchronous=OFF closes no epoch.
TEST_P(VfsHostileTest, MmapExclusiveLockingAndSynchronousOffKeepTheVfsInCharge) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  sqlite3* mapped = Connect(path_);
  Exec(mapped, "PRAGMA mmap_size=268435456");
  const uint64_t reads_before = vfs_->stats().reads;
  EXPECT_EQ(Query(mapped, "SELECT x FROM t"), "1\n");
  EXPECT_GT(vfs_->stats().reads, reads_before) << "pages came from somewhere other than the VFS";
  Close(mapped);  // In WAL mode it would hold a shared lock for as long as it is open.

  Exec(db, "PRAGMA locking_mode=EXCLUSIVE; INSERT INTO t VALUES (2)");
  sqlite3* other = Connect(path_);
  EXPECT_EQ(Run(other, "SELECT x FROM t"), SQLITE_BUSY) << last_error_;
  EXPECT_EQ(Run(other, "INSERT INTO t VALUES (99)"), SQLITE_BUSY) << last_error_;
  // The next access of the file after the switch back lets go of the lock.
  Exec(db, "PRAGMA locking_mode=NORMAL; SELECT count(*) FROM t");
  EXPECT_EQ(Query(other, "SELECT group_concat(x) FROM t"), "1,2\n");

  Drain();
  Exec(db, "PRAGMA synchronous=OFF");
  const uint64_t barriers_before = vfs_->stats().barriers;
  Exec(db, "INSERT INTO t VALUES (3)");
  EXPECT_EQ(vfs_->stats().barriers, barriers_before) << "synchronous=OFF still synced";
  db = Reopen(path_);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2,3\n");
}

// ---- Several connections, attachments and copies ----------------------------------------------

// Every table of the Vfs is keyed by the full path, so "dir/./t.db" must be "dir/t.db". Were it
// not, it would get DatabaseFiles of its own (lock table, WAL index, descriptor): on real
// descriptors its flock would fail as if another process held the file, on the simulator (no
// flock) it would see none of the first connection's commits and could write beside it, and
// once "dir/t.db" is poisoned the taint (VfsContext::CheckNotTainted) would not stop "dir//t.db"
// from opening it again and reading bytes that may not be on disk.
TEST_P(VfsHostileTest, AnotherSpellingOfThePathIsTheSameDatabaseAndTheSamePoison) {
  sqlite3* first = Connect(path_);
  ASSERT_NE(first, nullptr);
  Exec(first, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  sqlite3* second = Connect(dir_->dir() + "/./t.db");
  EXPECT_NE(second, nullptr) << vfs_->last_open_error();
  if (second != nullptr) {
    EXPECT_EQ(Query(second, "SELECT x FROM t"), "1\n");
    Exec(first, "BEGIN IMMEDIATE; INSERT INTO t VALUES (2)");
    EXPECT_EQ(Run(second, "INSERT INTO t VALUES (3)"), SQLITE_BUSY) << "two writers at once";
    Exec(first, "COMMIT");
    EXPECT_EQ(Query(second, "SELECT group_concat(x) FROM t"), "1,2\n");
    Close(second);
  }
  Drain();
  trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  Exec(first, "INSERT INTO t VALUES (4)");
  Drain();
  ASSERT_TRUE(Files(path_)->queue().poisoned());
  Close(first);
  Drain();
  for (const std::string& spelled : {dir_->dir() + "/./t.db", dir_->dir() + "//t.db"}) {
    SCOPED_TRACE(spelled);
    EXPECT_EQ(FailedOpen(spelled), SQLITE_CANTOPEN);
    EXPECT_NE(vfs_->last_open_error().find("is not opened again"), std::string::npos)
        << vfs_->last_open_error();
  }
}

TEST_P(VfsHostileTest, TwoVfsOnTwoLoopsGetAClearLockErrorUntilTheFirstLetsGo) {
  if (!real()) GTEST_SKIP() << "one process and no flock in the simulator";
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  absl::StatusOr<std::unique_ptr<loop::Loop>> other_loop = loop::Loop::Create({});
  ASSERT_TRUE(other_loop.ok()) << other_loop.status();
  absl::StatusOr<std::unique_ptr<Vfs>> other = Vfs::Create(**other_loop);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(FailedOpen(path_, other->get()), SQLITE_CANTOPEN);
  EXPECT_NE((*other)->last_open_error().find("'t.db' is open already in this process"),
            std::string::npos)
      << (*other)->last_open_error();
  EXPECT_EQ(Files(path_, other->get()), nullptr);
  Close(db);
  Drain();
  sqlite3* second = Connect(path_, other->get());
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(Query(second, "SELECT x FROM t"), "1\n");
  Close(second);
  ASSERT_TRUE((*other_loop)->Run(loop::RunMode::kUntilDone).ok());
}

// Two paths that name one file otherwise than by spelling (a symbolic link, "..") are two keys to
// the VFS, so the second open is refused by the first one's flock; the error says that this
// process holds it, not another one, and the first connection goes on as before.
TEST_P(VfsHostileTest, ALinkOrDotDotToAnOpenFileIsRefusedAsOpenInThisProcess) {
  if (!real()) GTEST_SKIP() << "no flock in the simulator";
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  const std::string link = dir_->Path("link.db");
  ASSERT_EQ(symlink(path_.c_str(), link.c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(mkdir(dir_->Path("sub").c_str(), 0755), 0) << std::strerror(errno);
  for (const std::string& other : {link, dir_->dir() + "/sub/../t.db"}) {
    SCOPED_TRACE(other);
    EXPECT_EQ(FailedOpen(other), SQLITE_CANTOPEN);
    EXPECT_NE(
        vfs_->last_open_error().find("database file '" + std::string(internal::FileNameOf(other)) +
                                     "' is open already in this process"),
        std::string::npos)
        << vfs_->last_open_error();
    EXPECT_EQ(Files(other), nullptr);
  }
  Exec(db, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2\n");
  Close(db);
  Drain();
  // Once the first lets go, the link opens the same rows.
  sqlite3* through_link = Connect(link);
  ASSERT_NE(through_link, nullptr);
  EXPECT_EQ(Query(through_link, "SELECT group_concat(x) FROM t"), "1,2\n");
}

// A super-journal (SQLITE_OPEN_SUPER_JOURNAL) is refused with a clear error, and SQLite rolls the
// whole transaction back. One kept among the in-memory temporary files (as it once was) is never
// on disk: SQLite's xDelete of it, the step that commits, fails with SQLITE_IOERR_DELETE_NOENT,
// and the host is told "disk I/O error" for a commit whose rows are all there, since journals
// naming a super-journal that does not exist read as "committed". A crash inside such a commit
// leaves the same journals, and SQLite then rolls neither database back.
TEST_P(VfsHostileTest, ACommitAcrossTwoAttachedRollbackDatabasesSucceedsOrFailsWhole) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "ATTACH '" + dir_->Path("other.db") + "' AS other");
  Exec(db, "PRAGMA main.journal_mode=DELETE; PRAGMA other.journal_mode=DELETE");
  Exec(db, "CREATE TABLE main.a(x); CREATE TABLE other.b(y)");
  const int rc = Run(db, "BEGIN; INSERT INTO a VALUES (1); INSERT INTO b VALUES (2); COMMIT");
  const int extended = sqlite3_extended_errcode(db);
  if (sqlite3_get_autocommit(db) == 0) Exec(db, "ROLLBACK");
  const std::string both = Query(db, "SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)");
  if (rc == SQLITE_OK) {
    EXPECT_EQ(both, "1|1\n");
  } else {
    EXPECT_EQ(both, "0|0\n") << "the commit failed with " << extended << " ("
                             << sqlite3_errstr(extended) << ": " << last_error_
                             << ") yet both its rows are there";
    EXPECT_FALSE(vfs_->last_open_error().empty()) << "nothing says why the commit failed";
  }
  Drain();
  EXPECT_EQ(Query(db, "PRAGMA main.integrity_check; PRAGMA other.integrity_check"), "ok\nok\n");
}

TEST_P(VfsHostileTest, TheSameFileAttachedTwiceSharesItsLocks) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  Exec(db, "ATTACH '" + path_ + "' AS again");
  Exec(db, "INSERT INTO again.t VALUES (2)");
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM main.t"), "1,2\n");
  // One write transaction on the file at a time, even inside one connection.
  EXPECT_EQ(Run(db, "BEGIN; INSERT INTO main.t VALUES (3); INSERT INTO again.t VALUES (4)"),
            SQLITE_BUSY)
      << last_error_;
  Exec(db, "ROLLBACK; DETACH again");
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2\n");
  Drain();
  EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
}

TEST_P(VfsHostileTest, VacuumIntoAndTheBackupApiMakeCopiesThatReopen) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x)");
  Exec(db,
       "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500) "
       "INSERT INTO t SELECT i FROM c");
  const std::string vacuumed = dir_->Path("vacuumed.db");
  Exec(db, "VACUUM INTO '" + vacuumed + "'");
  // From the Vfs into memory, and from memory into a new file on the Vfs.
  sqlite3* memory = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &memory), SQLITE_OK);
  sqlite3_backup* out = sqlite3_backup_init(memory, "main", db, "main");
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(sqlite3_backup_step(out, 3), SQLITE_OK);  // Part of it, then the rest.
  EXPECT_EQ(sqlite3_backup_step(out, -1), SQLITE_DONE);
  EXPECT_EQ(sqlite3_backup_finish(out), SQLITE_OK);
  EXPECT_EQ(Query(memory, "SELECT count(*), sum(x) FROM t"), "500|125250\n");
  const std::string restored = dir_->Path("restored.db");
  sqlite3* target = Connect(restored);
  ASSERT_NE(target, nullptr);
  sqlite3_backup* in = sqlite3_backup_init(target, "main", memory, "main");
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(sqlite3_backup_step(in, -1), SQLITE_DONE);
  EXPECT_EQ(sqlite3_backup_finish(in), SQLITE_OK);
  sqlite3_close(memory);
  for (const std::string& copy : {vacuumed, restored}) {
    SCOPED_TRACE(copy);
    sqlite3* reopened = Reopen(copy);
    ASSERT_NE(reopened, nullptr);
    EXPECT_EQ(Query(reopened, "SELECT count(*), sum(x) FROM t"), "500|125250\n");
    EXPECT_EQ(Query(reopened, "PRAGMA integrity_check"), "ok\n");
  }
}

// db/vfs.h: "a sort larger than that fails with SQLITE_FULL instead of eating the host's memory".
TEST_P(VfsHostileTest, ASortPastTheTempFileBoundFailsWithFullAndTheConnectionGoesOn) {
  VfsOptions options;
  options.temp_file_bytes_max = 256 << 10;
  vfs_.reset();
  MakeVfs(options);
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  // A small cache makes the sorter spill to a temporary file early.
  Exec(db, "PRAGMA journal_mode=WAL; PRAGMA cache_size=10; PRAGMA temp_store=FILE");
  Exec(db,
       "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
       "WHERE i < 2000) INSERT INTO t SELECT randomblob(1000) FROM c");
  EXPECT_EQ(Run(db, "SELECT x FROM t ORDER BY x"), SQLITE_FULL) << last_error_;
  EXPECT_GT(vfs_->stats().temp_files_full, 0u);
  EXPECT_EQ(Run(db, "CREATE TEMP TABLE big AS SELECT x, x AS y FROM t"), SQLITE_FULL)
      << last_error_;
  EXPECT_EQ(Query(db, "SELECT count(*) FROM t"), "2000\n");
  Exec(db, "INSERT INTO t VALUES (1)");
  EXPECT_EQ(Query(db, "SELECT count(*) FROM (SELECT x FROM t ORDER BY x LIMIT 50)"), "50\n");
  EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
}

// ---- Paths --------------------------------------------------------------------------------------

// A path longer than the Vfs's limit fails in xFullPathname, before xOpen: it must say so in
// last_open_error(), not leave there the reason of the previous failed open.
TEST_P(VfsHostileTest, BadDatabasePathsAreRefusedWithAClearError) {
  const std::string directory = dir_->Path("adir");
  if (real()) {
    ASSERT_EQ(mkdir(directory.c_str(), 0755), 0);
  } else {
    ASSERT_EQ(sim().disk().MakeDirectory(directory), 0);
  }
  struct Case {
    std::string path;
    std::string why;  // In last_open_error().
  };
  // Past the Vfs's path limit SQLite never reaches xOpen: the error must not be the one the
  // case before it left.
  std::string deep = dir_->dir();
  while (deep.size() < 1100) deep += "/deep";
  std::vector<Case> cases = {{directory, "Is a directory"},
                             {dir_->Path("missing/t.db"), "No such file or directory"},
                             {deep + "/t.db", "long"}};
  if (real()) cases.push_back({dir_->Path(std::string(300, 'n') + ".db"), "File name too long"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path.substr(0, 80));
    EXPECT_EQ(FailedOpen(c.path), SQLITE_CANTOPEN);
    const std::string& error = vfs_->last_open_error();
    EXPECT_NE(error.find(c.why), std::string::npos) << error;
    if (real()) {
      EXPECT_EQ(error.find(dir_->dir()), std::string::npos) << "names the directory";
    }
    EXPECT_FALSE(internal::VfsCore::Of(*vfs_).has_databases());
  }
  EXPECT_EQ(DiskBytes(dir_->Path("missing")), -ENOENT);
  if (real()) {
    EXPECT_EQ(rmdir(directory.c_str()), 0);
  }
}

// A main database is named by its own path. Classified like a journal's or a WAL's (Classify
// strips "-journal" and "-wal"), a database named "notes-journal" was stored in "notes", a file
// the host never named, and its WAL in "notes-wal".
TEST_P(VfsHostileTest, ADatabaseNamedLikeAJournalIsStoredUnderItsOwnName) {
  const std::string named = dir_->Path("notes-journal");
  sqlite3* db = Connect(named);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  Drain();
  EXPECT_GT(DiskBytes(named), 0) << "nothing was written under the database's own name";
  EXPECT_EQ(DiskBytes(dir_->Path("notes")), -ENOENT) << "the database went to another file";
  db = Reopen(named);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "SELECT x FROM t"), "1\n");
}

// Nothing but the VFS should write a database's files; when something does, SQLite must see
// an error rather than an empty database, and the VFS must not crash.
TEST_P(VfsHostileTest, AFileChangedBehindTheVfsIsAnErrorNotACrash) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)");
  Exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
  Drain();
  const int64_t bytes = DiskBytes(path_);
  ASSERT_GT(bytes, 0);
  // Bytes past the database's pages are ignored (as the VFS's own reserves are).
  ChangeBehindTheVfs(path_, static_cast<uint64_t>(bytes) + 4096, std::string(8192, '\xab'));
  sqlite3* fresh = Connect(path_);
  EXPECT_EQ(Query(fresh, "SELECT sum(x) FROM t"), "3\n");
  EXPECT_EQ(Query(fresh, "PRAGMA integrity_check"), "ok\n");
  Close(fresh);
  ChangeBehindTheVfs(path_, 0, "");
  fresh = Connect(path_);
  const int rc = Run(fresh, "SELECT sum(x) FROM t");
  EXPECT_TRUE(rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_IOERR)
      << sqlite3_errstr(rc) << ": " << last_error_;
  Close(fresh);
  Close(db);
  Drain();
  EXPECT_EQ(Files(path_), nullptr);
}

// ---- Closes, the loop, and failures -------------------------------------------------------------

// xOpen refuses a rollback journal whose unlink (the last commit's) is in flight with
// SQLITE_BUSY, which the Database retries; last_open_error() must say why, or a raw host with
// one connection is told "database is locked" and nothing else.
TEST_P(VfsHostileTest, AJournalReopenedWhileItsUnlinkIsInFlightSaysWhyItIsBusy) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x)");
  Drain();
  trace_->Hold(io::OpKind::kUnlink);
  Exec(db, "INSERT INTO t VALUES (1)");  // Its journal's unlink waits behind the barriers.
  // Each callback starts what follows it; stop once the unlink is the one thing in flight.
  while (trace_->held() == 0 && loop_->pending() > 0) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  ASSERT_EQ(trace_->held(), 1u);
  EXPECT_EQ(Run(db, "INSERT INTO t VALUES (2)"), SQLITE_BUSY) << last_error_;
  EXPECT_NE(vfs_->last_open_error().find("journal"), std::string::npos)
      << "last_open_error: \"" << vfs_->last_open_error() << "\"";
  trace_->ReleaseHeld();
  Drain();
  Exec(db, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), "1,2\n");
}

TEST_P(VfsHostileTest, ConnectionsClosedInAnyOrderWithStatementsOpenReleaseTheFiles) {
  sqlite3* a = Connect(path_);
  sqlite3* b = Connect(path_);
  ASSERT_NE(b, nullptr);
  Exec(a, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
  sqlite3_stmt* in_a = nullptr;
  sqlite3_stmt* in_b = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(a, "SELECT x FROM t", -1, &in_a, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_prepare_v2(b, "SELECT x FROM t", -1, &in_b, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(in_a), SQLITE_ROW);
  ASSERT_EQ(sqlite3_step(in_b), SQLITE_ROW);
  EXPECT_EQ(sqlite3_close(a), SQLITE_BUSY);  // A statement is open: refused, nothing closed.
  std::erase(open_, b);
  EXPECT_EQ(sqlite3_close_v2(b), SQLITE_OK);  // A zombie until its statement goes.
  Exec(a, "INSERT INTO t VALUES (4)");        // Its snapshot is b's reader's business.
  Drain();
  EXPECT_NE(Files(path_), nullptr);
  EXPECT_EQ(sqlite3_finalize(in_b), SQLITE_OK);  // b closes now, before a.
  EXPECT_NE(Files(path_), nullptr) << "released under a's open statement";
  EXPECT_EQ(sqlite3_step(in_a), SQLITE_ROW);
  EXPECT_EQ(sqlite3_finalize(in_a), SQLITE_OK);
  Close(a);
  Drain();
  EXPECT_EQ(Files(path_), nullptr) << "the files outlived every connection";
  sqlite3* reopened = Connect(path_);
  EXPECT_EQ(Query(reopened, "SELECT group_concat(x) FROM t"), "1,2,3,4\n");
}

// db/vfs.h: "Every connection on it must be closed ... (the Database's Close does both)". A
// zombie left by sqlite3_close_v2 is not closed, and destroying the Vfs says so instead of
// leaving SQLite with a dangling VFS.
TEST_P(VfsHostileTest, DestroyingTheVfsUnderAZombieConnectionStopsWithAClearMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        sqlite3* db = Connect(path_);
        Exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
        sqlite3_stmt* stmt = nullptr;
        (void)sqlite3_prepare_v2(db, "SELECT x FROM t", -1, &stmt, nullptr);
        (void)sqlite3_step(stmt);
        open_.clear();
        (void)sqlite3_close_v2(db);
        Drain();
        dir_.reset();  // This child dies before its TearDown; open files outlive their names.
        vfs_.reset();
      },
      "Vfs destroyed while databases are open");
}

// A raw connection's COMMIT returns before its fsync: durability comes only from running the
// loop, and a host that never does fills the write-behind buffer and gets SQLITE_FULL.
TEST_P(VfsHostileTest, CommitsWhileTheLoopIsStoppedAreHeldAndBoundedByTheBuffer) {
  VfsOptions options;
  options.held_bytes_max = 64 << 10;
  vfs_.reset();
  MakeVfs(options);
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x)");
  Drain();
  int committed = 0;
  int rc = SQLITE_OK;
  while (committed < 1000 && (rc = Run(db, "INSERT INTO t VALUES (randomblob(3000))")) == SQLITE_OK)
    ++committed;
  EXPECT_EQ(rc, SQLITE_FULL) << last_error_;
  EXPECT_GT(committed, 0);
  EXPECT_GT(vfs_->stats().backpressure, 0u);
  internal::EpochQueue& queue = Files(path_)->queue();
  EXPECT_LT(queue.durable_epoch(), queue.epoch()) << "a commit became durable without the loop";
  EXPECT_LE(queue.held_bytes(), options.held_bytes_max);
  EXPECT_EQ(Query(db, "SELECT count(*) FROM t"), std::to_string(committed) + "\n");
  Drain();
  EXPECT_EQ(queue.durable_epoch(), queue.epoch());
  Exec(db, "INSERT INTO t VALUES (randomblob(3000))");
  db = Reopen(path_);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "SELECT count(*) FROM t"), std::to_string(committed + 1) + "\n");
  EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
}

// The simulator's own fault (SimFaults::fsync_eio) also drops the file's unsynced writes, as
// Linux does; the real backends get the failure from RecordingBackend.
TEST_P(VfsHostileTest, AFailedFsyncPoisonsAndEveryReopenIsRefusedWithAClearError) {
  sqlite3* db = Connect(path_);
  ASSERT_NE(db, nullptr);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  Drain();
  if (real()) {
    trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  } else {
    sim().SetFaults(io::SimFaults{.fsync_eio = 1.0});
  }
  Exec(db, "INSERT INTO t VALUES (2)");  // SQLite's COMMIT returns; its fsync fails later.
  Drain();
  if (!real()) sim().SetFaults(io::SimFaults{});
  ASSERT_TRUE(Files(path_)->queue().poisoned());
  EXPECT_EQ(vfs_->stats().poisonings, 1u);
  EXPECT_EQ(Run(db, "INSERT INTO t VALUES (3)") & 0xff, SQLITE_IOERR) << last_error_;
  EXPECT_EQ(Run(db, "SELECT * FROM t") & 0xff, SQLITE_IOERR) << "served bytes it cannot trust";
  Close(db);
  Drain();
  EXPECT_EQ(Files(path_), nullptr);
  EXPECT_EQ(FailedOpen(path_), SQLITE_CANTOPEN);
  const std::string& error = vfs_->last_open_error();
  EXPECT_NE(error.find("'t.db' is not opened again in this process"), std::string::npos) << error;
  EXPECT_NE(error.find("fsync"), std::string::npos) << error;
  EXPECT_EQ(FailedOpen(path_), SQLITE_CANTOPEN) << "refused once, then forgotten";
  // Only the file failed, not the directory: its neighbours open.
  sqlite3* neighbour = Connect(dir_->Path("neighbour.db"));
  ASSERT_NE(neighbour, nullptr);
  Exec(neighbour, "CREATE TABLE n(x)");
  // A restarted host (a new Vfs) opens it; after a power loss it finds exactly what was durable.
  db = Reopen(path_, /*power_loss=*/!real());
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Query(db, "SELECT group_concat(x) FROM t"), real() ? "1,2\n" : "1\n");
  EXPECT_EQ(Query(db, "PRAGMA integrity_check"), "ok\n");
}

// The key of a database's files: one spelling per path, but ".." kept, since after a symbolic
// link its lexical reduction names another file (file_names.cc).
TEST(FullPathTest, EmptyAndDotComponentsGoAndDotDotStays) {
  EXPECT_EQ(internal::FullPathOf("/d//e/./t.db"), "/d/e/t.db");
  EXPECT_EQ(internal::FullPathOf("/d/e/"), "/d/e");
  EXPECT_EQ(internal::FullPathOf("//"), "/");
  EXPECT_EQ(internal::FullPathOf("/d/link/../t.db"), "/d/link/../t.db");
  const std::string relative = internal::FullPathOf("./x//t.db");
  ASSERT_FALSE(relative.empty());
  EXPECT_EQ(relative.front(), '/');
  EXPECT_TRUE(relative.ends_with("/x/t.db")) << relative;
  EXPECT_EQ(relative.find("/./"), std::string::npos) << relative;
}

INSTANTIATE_TEST_SUITE_P(Backends, VfsHostileTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db
