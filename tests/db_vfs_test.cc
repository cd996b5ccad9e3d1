// The VFS over the loop: SQLite runs unchanged on every backend, epoch barriers hold writes
// behind an fsync, and the VFS contract SQLite relies on is kept.
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "gtest/gtest.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_table.h"
#include "sqloop/db/internal/vfs_core.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using testing::BackendParamName;
using testing::DbTestBackends;
using testing::RecordingBackend;
using testing::ScratchDir;
using testing::TestBackend;
using testing::TraceEvent;

class VfsTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    auto recording = std::make_unique<RecordingBackend>(GetParam().make());
    trace_ = recording.get();
    loop_ = std::make_unique<loop::Loop>(std::move(recording), loop::LoopOptions{});
    dir_ = std::make_unique<ScratchDir>(GetParam().real_descriptors);
    MakeVfs(VfsOptions{});
    path_ = dir_->Path("t.db");
  }
  void TearDown() override {
    if (db_ != nullptr) Close();
    Drain();
    vfs_.reset();
  }
  void MakeVfs(VfsOptions options) {
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*loop_, options);
    ASSERT_TRUE(vfs.ok()) << vfs.status();
    vfs_ = *std::move(vfs);
  }
  void Open() {
    ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                              vfs_->name()),
              SQLITE_OK)
        << sqlite3_errmsg(db_);
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=FULL");
  }
  void Close() {
    ASSERT_EQ(sqlite3_close(db_), SQLITE_OK);
    db_ = nullptr;
  }
  void Exec(const std::string& sql) {
    char* error = nullptr;
    ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
        << sql << ": " << (error != nullptr ? error : "");
  }
  std::string QueryText(const std::string& sql) {
    std::string out;
    auto on_row = [](void* arg, int n, char** values, char**) {
      auto* text = static_cast<std::string*>(arg);
      for (int i = 0; i < n; ++i)
        *text += (values[i] != nullptr ? values[i] : "NULL") + std::string("|");
      *text += "\n";
      return 0;
    };
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), on_row, &out, &error), SQLITE_OK)
        << (error != nullptr ? error : "");
    return out;
  }
  void Drain() { ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok()); }
  // The epoch queue of the database at path_ (its files must be open).
  internal::EpochQueue& Queue() {
    internal::DatabaseFiles* files = internal::VfsCore::Of(*vfs_).Find(path_);
    EXPECT_NE(files, nullptr);
    return files->queue();
  }

  RecordingBackend* trace_ = nullptr;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Vfs> vfs_;
  std::string path_;
  sqlite3* db_ = nullptr;
};

TEST_P(VfsTest, CrudRoundTripsAndBecomesDurable) {
  Open();
  Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)");
  for (int i = 0; i < 50; ++i) {
    Exec("INSERT INTO t(name, score, data) VALUES ('n" + std::to_string(i) + "', " +
         std::to_string(i * 1.5) + ", randomblob(100))");
  }
  Exec("UPDATE t SET name = upper(name) WHERE id % 2 = 0");
  Exec("DELETE FROM t WHERE id > 40");
  EXPECT_EQ(QueryText("SELECT count(*), sum(score) FROM t"), "40|1170.0|\n");
  EXPECT_EQ(QueryText("SELECT name FROM t WHERE id IN (1, 2)"), "n0|\nN1|\n");
  // Commits returned before their fsyncs completed; the loop finishes them.
  EXPECT_LT(Queue().durable_epoch(), Queue().epoch());
  Drain();
  EXPECT_EQ(Queue().durable_epoch(), Queue().epoch());
  EXPECT_FALSE(Queue().poisoned());
  EXPECT_EQ(QueryText("PRAGMA integrity_check"), "ok|\n");
  EXPECT_GT(vfs_->stats().fsyncs, 0u);
}

TEST_P(VfsTest, NoShmFileAndReopenSeesData) {
  Open();
  Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
  Drain();
  if (GetParam().real_descriptors) {
    EXPECT_FALSE(testing::RealFileExists(path_ + "-shm"));
    EXPECT_TRUE(testing::RealFileExists(path_ + "-wal"));
  }
  Close();
  Drain();
  EXPECT_EQ(internal::VfsCore::Of(*vfs_).Find(path_), nullptr)
      << "files released after the last close";
  Open();
  EXPECT_EQ(QueryText("SELECT sum(x) FROM t"), "6|\n");
}

TEST_P(VfsTest, WritesAfterBarrierAreHeldUntilItsFsyncCompleted) {
  Open();
  Exec("CREATE TABLE t(x)");
  Drain();
  // One commit: its WAL fsync is now in flight (the loop has not run).
  Exec("INSERT INTO t VALUES (1)");
  internal::EpochQueue& queue = Queue();
  ASSERT_EQ(queue.durable_epoch() + 1, queue.epoch());
  const uint64_t held_before = vfs_->stats().held_writes;
  // The next commit's writes are issued while the barrier is in flight: held, yet visible.
  Exec("INSERT INTO t VALUES (2)");
  EXPECT_GT(vfs_->stats().held_writes, held_before);
  EXPECT_GT(queue.held_bytes(), 0u);
  EXPECT_EQ(QueryText("SELECT group_concat(x) FROM t"), "1,2|\n");
  Drain();
  EXPECT_EQ(queue.held_bytes(), 0u);
  EXPECT_EQ(queue.durable_epoch(), queue.epoch());
  // On the trace: no write was submitted between an fsync's submission and its completion
  // (every held write waited for the barrier before it).
  const std::vector<TraceEvent>& events = trace_->events();
  std::vector<const io::Op*> fsyncs_in_flight;
  for (const TraceEvent& e : events) {
    if (e.kind == io::OpKind::kFsync) {
      if (e.type == TraceEvent::Type::kSubmit) {
        fsyncs_in_flight.push_back(e.op);
      } else {
        std::erase(fsyncs_in_flight, e.op);
      }
    }
    if (e.kind == io::OpKind::kWrite && e.type == TraceEvent::Type::kSubmit) {
      EXPECT_TRUE(fsyncs_in_flight.empty()) << "a write was submitted while a barrier's fsync "
                                               "was in flight";
    }
  }
}

TEST_P(VfsTest, FullBufferRefusesWritesUntilItDrains) {
  VfsOptions options;
  options.held_bytes_max = 16 * 1024;  // Four pages.
  vfs_.reset();
  MakeVfs(options);
  Open();
  Exec("CREATE TABLE t(x)");
  Drain();
  Exec("INSERT INTO t VALUES (1)");  // Barrier in flight.
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, "INSERT INTO t SELECT randomblob(1000) FROM generate_series",
                              nullptr, nullptr, &error);
  sqlite3_free(error);
  (void)rc;
  // A large transaction cannot fit behind the barrier: refused, not grown, not crashed.
  error = nullptr;
  const int big =
      sqlite3_exec(db_,
                   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200) "
                   "INSERT INTO t SELECT randomblob(1000) FROM c",
                   nullptr, nullptr, &error);
  sqlite3_free(error);
  EXPECT_EQ(big, SQLITE_FULL);
  EXPECT_GT(Queue().backpressure(), 0u);
  EXPECT_LE(Queue().held_bytes(), options.held_bytes_max);
  Drain();
  // Drained: the same transaction fits now (nothing is queued, so writes go straight through).
  Exec(
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200) "
      "INSERT INTO t SELECT randomblob(1000) FROM c");
  EXPECT_EQ(QueryText("SELECT count(*) FROM t"), "201|\n");
  Drain();
  EXPECT_EQ(QueryText("PRAGMA integrity_check"), "ok|\n");
}

// By a COMMIT's xSync its commit frame is written (or queued): a barrier refused there would
// have SQLite roll back a transaction that a crash could still find on disk and replay, and a
// request reported failed would come back. So a barrier is taken even with the queue full of
// writes, one operation past held_ops_max at most (the writes after it are refused).
TEST_P(VfsTest, ABarrierIsTakenEvenWithTheQueueFull) {
  VfsOptions options;
  options.held_ops_max = 64;
  vfs_.reset();
  MakeVfs(options);
  Open();
  Exec("CREATE TABLE t(x)");
  Drain();
  internal::EpochQueue& queue = Queue();
  trace_->Hold(io::OpKind::kFsync);
  const absl::Cleanup release = [&] { trace_->ReleaseHeld(); };  // Before TearDown's drain.
  Exec("INSERT INTO t VALUES (1)");  // Its barrier's fsync is held: what follows queues.
  // The main file's first bytes written again as they are: writes that queue and change nothing.
  char head[100];
  ASSERT_EQ(queue.Read(internal::FileRole::kMain, head, sizeof head, 0), SQLITE_OK);
  int rc = SQLITE_OK;
  for (int i = 0; i < 1000 && rc == SQLITE_OK; ++i) {
    rc = queue.Write(internal::FileRole::kMain, head, sizeof head, 0);
  }
  ASSERT_EQ(rc, SQLITE_FULL) << "the queue never filled: not the case tested";
  const uint64_t epoch = queue.epoch();
  EXPECT_EQ(queue.Sync(), SQLITE_OK) << "a barrier was refused with the queue full";
  EXPECT_EQ(queue.epoch(), epoch + 1);
  EXPECT_EQ(queue.Write(internal::FileRole::kMain, head, sizeof head, 0), SQLITE_FULL)
      << "a write was taken past the barrier";
  trace_->ReleaseHeld();
  Drain();
  EXPECT_FALSE(queue.poisoned());
  EXPECT_EQ(queue.durable_epoch(), epoch + 1);
  EXPECT_EQ(QueryText("SELECT count(*) FROM t"), "1|\n");
}

TEST_P(VfsTest, FsyncFailurePoisonsAndIsNeverRetried) {
  Open();
  Exec("CREATE TABLE t(x)");
  Drain();
  const uint64_t fsyncs_before = trace_->submitted_of(io::OpKind::kFsync);
  trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  Exec("INSERT INTO t VALUES (1)");
  Drain();
  internal::EpochQueue& queue = Queue();
  EXPECT_TRUE(queue.poisoned());
  EXPECT_LT(queue.durable_epoch(), queue.epoch());
  EXPECT_NE(queue.poison_status().message().find("never retried"), std::string::npos)
      << queue.poison_status();
  EXPECT_EQ(trace_->submitted_of(io::OpKind::kFsync), fsyncs_before + 1) << "no retry";
  char* error = nullptr;
  EXPECT_NE(sqlite3_exec(db_, "INSERT INTO t VALUES (2)", nullptr, nullptr, &error), SQLITE_OK);
  sqlite3_free(error);
}

// FileTable invariant 4: the head (the main file's first bytes, read ahead of an open) answers
// reads only until the main file is written; a checkpoint that copies a new page 1 from the WAL
// drops it, and what is read after is the new page 1.
TEST_P(VfsTest, AWriteToTheMainFileDropsTheHead) {
  Open();
  Exec("CREATE TABLE t(x)");
  Exec("PRAGMA wal_checkpoint(TRUNCATE)");
  Drain();
  internal::FileTable& table = internal::VfsCore::Of(*vfs_).Find(path_)->table();
  const auto head_bytes = static_cast<uint32_t>(table.file(internal::FileRole::kMain).size_bytes);
  ASSERT_GE(head_bytes, 100u);
  io::Op read{.kind = io::OpKind::kRead,
              .fd = table.file(internal::FileRole::kMain).fd,
              .buffer = table.PrepareHead(head_bytes),
              .length = head_bytes,
              .offset = 0};
  ASSERT_EQ(internal::RunNow(*loop_, read), static_cast<int64_t>(head_bytes));
  table.KeepHead(head_bytes);
  // A second connection reads page 1 afresh (db_ keeps the files open): from the head.
  auto schema_of_a_new_connection = [&] {
    sqlite3* other = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path_.c_str(), &other, SQLITE_OPEN_READWRITE, vfs_->name()),
              SQLITE_OK);
    std::string names;
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(other, "SELECT name FROM sqlite_schema", -1, &stmt, nullptr),
              SQLITE_OK);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      names += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
      names += ";";
    }
    sqlite3_finalize(stmt);
    sqlite3_close(other);
    return names;
  };
  const uint64_t from_head = vfs_->stats().reads_from_head;
  EXPECT_EQ(schema_of_a_new_connection(), "t;");
  EXPECT_GT(vfs_->stats().reads_from_head, from_head) << "the head answered nothing";
  Exec("CREATE TABLE u(y)");                // A new page 1, in the WAL.
  Exec("PRAGMA wal_checkpoint(TRUNCATE)");  // Copied into the main file.
  Drain();
  char byte = 0;
  EXPECT_FALSE(table.ReadHead(&byte, 1, 0)) << "the head outlived a write of the main file";
  EXPECT_EQ(schema_of_a_new_connection(), "t;u;");
}

TEST_P(VfsTest, ShortReadZeroFillsPastTheEnd) {
  Open();
  Exec("CREATE TABLE t(x)");
  Drain();
  sqlite3_file* file = nullptr;
  ASSERT_EQ(sqlite3_file_control(db_, "main", SQLITE_FCNTL_FILE_POINTER, &file), SQLITE_OK);
  sqlite3_int64 size = 0;
  ASSERT_EQ(file->pMethods->xFileSize(file, &size), SQLITE_OK);
  std::vector<char> buffer(8192, 'x');
  EXPECT_EQ(file->pMethods->xRead(file, buffer.data(), 8192, size - 100), SQLITE_IOERR_SHORT_READ);
  for (size_t i = 100; i < buffer.size(); ++i) ASSERT_EQ(buffer[i], 0) << i;
  EXPECT_EQ(file->pMethods->xDeviceCharacteristics(file), SQLITE_IOCAP_POWERSAFE_OVERWRITE);
}

TEST_P(VfsTest, ReadErrorIsReported) {
  Open();
  Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  Drain();
  Close();
  Drain();
  Open();
  // Nothing is in memory, so the next query reads the device, and the device fails.
  trace_->MissProbes(1000);
  trace_->FailNth(io::OpKind::kRead, 1, EIO, /*persistent=*/true);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db_, "SELECT * FROM t", nullptr, nullptr, &error) & 0xff, SQLITE_IOERR);
  sqlite3_free(error);
  trace_->ClearFaults();
  trace_->MissProbes(0);
}

TEST_P(VfsTest, SecondOpenerOfTheFileGetsAClearError) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "one process in the simulator";
  Open();
  Exec("CREATE TABLE t(x)");
  Drain();
  // A second Vfs has its own descriptor, so flock conflicts as with another process, and the
  // error says whose lock it is.
  absl::StatusOr<std::unique_ptr<Vfs>> other = Vfs::Create(*loop_);
  ASSERT_TRUE(other.ok());
  sqlite3* second = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path_.c_str(), &second, SQLITE_OPEN_READWRITE, (*other)->name()),
            SQLITE_CANTOPEN);
  sqlite3_close(second);
  EXPECT_NE((*other)->last_open_error().find("open already in this process"), std::string::npos)
      << (*other)->last_open_error();
  // And a real second process.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    absl::StatusOr<std::unique_ptr<loop::Loop>> loop = loop::Loop::Create({});
    if (!loop.ok()) _exit(2);
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(**loop);
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, (*vfs)->name());
    const bool clear =
        (*vfs)->last_open_error().find("locked by another process") != std::string::npos;
    _exit(rc == SQLITE_CANTOPEN && clear ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

INSTANTIATE_TEST_SUITE_P(Backends, VfsTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db
