// The integrity check at open (DatabaseOptions::check_at_open; db/internal/integrity_check.h):
// a large file is checked on a thread while the loop serves other databases, a corrupt one is
// refused the same way on and off the loop, and a WAL a crash left is in the file the thread
// reads. The thread reads the file system, so these run on the real backends only. Also run
// under ThreadSanitizer (tests/run).
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <latch>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "tests/db_database_fixture.h"
#include "tests/db_test_support.h"

namespace sqloop::db::testing {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;
using OpenCheckTest = DatabaseTest;

constexpr int kRows = 2000;  // Of 200 bytes: about 450 KiB, over check_on_loop_bytes_max.
constexpr char kFill[] =
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) "
    "INSERT INTO t SELECT randomblob(200) FROM c";

// Writes 2000 rows with stock SQLite (WAL mode, frames left in the WAL) into `path`.
void FillWithStockSqlite(const std::string& path, const char* then = "") {
  sqlite3* stock = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &stock), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock, "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE t(x)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock, kFill, nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock, then, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(stock);
}

void Garble(const std::string& path, int64_t offset) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const std::string junk(2048, '\x7f');
  ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), offset), 2048);
  ::close(fd);
}

// quick_check through stock SQLite: of the database as a reader sees it (the WAL included), or
// of the main file alone (immutable=1, what the check's thread reads).
std::string StockQuickCheck(const std::string& path, bool main_file_only) {
  sqlite3* stock = nullptr;
  const std::string name = main_file_only ? "file:" + path + "?immutable=1" : path;
  if (sqlite3_open_v2(name.c_str(), &stock, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(stock);
    return "cannot open";
  }
  sqlite3_stmt* check = nullptr;
  std::string result = "error";
  if (sqlite3_prepare_v2(stock, "PRAGMA quick_check", -1, &check, nullptr) == SQLITE_OK &&
      sqlite3_step(check) == SQLITE_ROW) {
    result = reinterpret_cast<const char*>(sqlite3_column_text(check, 0));
  }
  sqlite3_finalize(check);
  sqlite3_close(stock);
  return result;
}

// The first open of a large file in a process (a new Vfs) checks it on a thread. The thread is
// held at its start until another database on the same loop has answered a read and a durable
// write: the loop served them while the open was in kOpenChecking. Then the open completes, the
// data is there, and the verdict counts as a check, so a reopen skips it.
TEST_P(OpenCheckTest, ALargeFileIsCheckedOnAThreadWhileTheLoopServesAnotherDatabase) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "the simulator checks every file on the loop";
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write(kFill).ok());
  ASSERT_TRUE(CloseDb().ok());
  MakeVfs();  // A restarted process: the file must be checked again.
  std::unique_ptr<Database> hot = OpenOther(dir_->Path("hot.sqlite"));
  ASSERT_NE(hot, nullptr);
  Probe create;
  Prime(create, Request::Kind::kWrite, "CREATE TABLE h(y)");
  ASSERT_TRUE(hot->Submit(create.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(create.done && create.status.ok()) << create.status;

  std::latch gate(1);
  bool released = false;
  // A failed assertion returns early: the gate opens and hot closes all the same.
  absl::Cleanup finish = [&] {
    if (!released) gate.count_down();
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_TRUE(CloseAndRun(*hot).ok());
  };
  DatabaseOptions options;
  options.check_gate_for_testing = &gate;
  db_ = std::make_unique<Database>(*loop_, *vfs_, path_, options);
  absl::Status opened = absl::UnknownError("open never called back");
  db_->Open([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
            &opened);
  // A watchdog, so a loop that stops serving fails the test instead of hanging it.
  bool expired = false;
  loop::Completion watchdog;
  watchdog.callback = [](loop::Loop&, loop::Completion& c) {
    *static_cast<bool*>(c.user_data) = true;
    return loop::Action::kDisarm;
  };
  watchdog.user_data = &expired;
  loop_->Timer(watchdog, absl::Seconds(60));
  while (db_->state() != Database::State::kOpenChecking && absl::IsUnknown(opened) && !expired) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  ASSERT_EQ(db_->state(), Database::State::kOpenChecking) << "the open never reached its check";

  Probe read;
  Probe write;
  Prime(read, Request::Kind::kRead, "SELECT count(*) FROM h");
  Prime(write, Request::Kind::kWrite, "INSERT INTO h VALUES (1)");
  ASSERT_TRUE(hot->Submit(read.request).ok());
  ASSERT_TRUE(hot->Submit(write.request).ok());
  while (!(read.done && write.done) && !expired) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  EXPECT_TRUE(read.done && read.status.ok()) << read.status;
  EXPECT_EQ(read.rows, "0|\n");
  EXPECT_TRUE(write.done && write.status.ok()) << write.status;
  EXPECT_EQ(db_->state(), Database::State::kOpenChecking) << "the open did not wait for its check";
  EXPECT_FALSE(expired);

  gate.count_down();
  released = true;
  loop_->Cancel(watchdog);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(opened.ok()) << opened;
  EXPECT_EQ(db_->stats().integrity_checks, 1u);
  EXPECT_EQ(db_->stats().integrity_checks_off_loop, 1u);
  EXPECT_EQ(Read("SELECT count(*) FROM t"), absl::StrCat(kRows, "|\n"));
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(db_->stats().integrity_checks_skipped, 1u) << "the thread's verdict was not kept";
}

// Large files opened together are all checked on threads, fewer of them reading at once than
// there are files (integrity_check.h, invariant 4): every open completes, every file checked.
TEST_P(OpenCheckTest, LargeFilesOpenedTogetherAreEachCheckedOnAThread) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "the simulator checks every file on the loop";
  constexpr int kFiles = 4;
  std::vector<std::string> paths;
  for (int i = 0; i < kFiles; ++i) {
    paths.push_back(dir_->Path(absl::StrCat("large", i, ".sqlite")));
    FillWithStockSqlite(paths.back());
  }
  std::vector<std::unique_ptr<Database>> dbs;
  std::vector<absl::Status> opened(kFiles, absl::UnknownError("open never called back"));
  for (int i = 0; i < kFiles; ++i) {
    dbs.push_back(std::make_unique<Database>(*loop_, *vfs_, paths[i], DatabaseOptions{}));
    dbs.back()->Open(
        [](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
        &opened[i]);
  }
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (int i = 0; i < kFiles; ++i) {
    SCOPED_TRACE(paths[i]);
    ASSERT_TRUE(opened[i].ok()) << opened[i];
    EXPECT_EQ(dbs[i]->stats().integrity_checks_off_loop, 1u);
    EXPECT_TRUE(CloseAndRun(*dbs[i]).ok());
  }
}

// The ways an open checks a large file: on a thread; on the loop, when the file is under
// check_on_loop_bytes_max; or on the loop because no thread (or no eventfd) can be had, through
// the writer, reporting on the next tick (IntegrityCheck::RunOnLoop).
enum class CheckWay : uint8_t { kThread, kLoop, kNoThread };

DatabaseOptions OptionsCheckingBy(CheckWay way) {
  DatabaseOptions options;
  options.check_on_loop_bytes_max =
      way == CheckWay::kLoop ? std::numeric_limits<uint64_t>::max() : 0;
  options.check_thread_fails_for_testing = way == CheckWay::kNoThread;
  return options;
}

const char* Name(CheckWay way) {
  return way == CheckWay::kThread ? "on a thread"
         : way == CheckWay::kLoop ? "on the loop"
                                  : "on the loop, no thread to be had";
}

// A corrupt file is refused with the same DataLoss however the open checks it, and the failed
// open leaves nothing behind: a fixed file opens.
TEST_P(OpenCheckTest, ACorruptFileIsRefusedHoweverTheOpenChecksIt) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "corrupts the file with the host's tools";
  FillWithStockSqlite(path_, "PRAGMA wal_checkpoint(TRUNCATE)");
  const std::string good = path_ + ".good";
  std::filesystem::copy_file(path_, good);
  Garble(path_, 2 * 4096 + 8);  // The middle of page 3, a b-tree page of t.
  for (const CheckWay way : {CheckWay::kThread, CheckWay::kLoop, CheckWay::kNoThread}) {
    SCOPED_TRACE(Name(way));
    MakeVfs();
    const absl::Status s = OpenDb(OptionsCheckingBy(way));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find("is corrupt (quick_check: "), std::string::npos) << s;
    EXPECT_EQ(db_->state(), Database::State::kFailed);
    EXPECT_FALSE(db_->holds_files());
    EXPECT_EQ(db_->stats().integrity_checks, 1u);
    EXPECT_EQ(db_->stats().integrity_checks_off_loop, way == CheckWay::kThread ? 1u : 0u);
  }
  db_.reset();
  std::filesystem::copy_file(good, path_, std::filesystem::copy_options::overwrite_existing);
  for (const CheckWay way : {CheckWay::kThread, CheckWay::kNoThread}) {
    SCOPED_TRACE(Name(way));
    MakeVfs();
    ASSERT_TRUE(OpenDb(OptionsCheckingBy(way)).ok());
    EXPECT_EQ(db_->stats().integrity_checks, 1u);
    EXPECT_EQ(db_->stats().integrity_checks_off_loop, way == CheckWay::kThread ? 1u : 0u);
    EXPECT_EQ(Read("SELECT count(*) FROM t"), absl::StrCat(kRows, "|\n"));
    ASSERT_TRUE(CloseDb().ok());
  }
}

// A process died with frames in the WAL, one of them the only good copy of a page the main
// file has garbled (the write to the main file was torn, say, and the checkpoint never
// finished). The database is sound: a reader reads the page from the WAL. The thread reads the
// main file alone, so the open first empties the WAL into it; without that, this open would be
// refused.
TEST_P(OpenCheckTest, AWalACrashLeftIsInTheFileTheThreadChecks) {
  if (!GetParam().real_descriptors) GTEST_SKIP() << "makes the files with stock SQLite";
  const std::string source = path_ + ".source";
  sqlite3* stock = nullptr;
  ASSERT_EQ(sqlite3_open(source.c_str(), &stock), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock,
                         "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE t(x); "
                         "PRAGMA wal_autocheckpoint=0",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock, kFill, nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(stock, "PRAGMA wal_checkpoint(TRUNCATE); UPDATE t SET x = zeroblob(200)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  // The crash: the files as they are now, the connection still open.
  std::filesystem::copy_file(source, path_);
  std::filesystem::copy_file(source + "-wal", path_ + "-wal");
  sqlite3_close(stock);
  Garble(path_, 2 * 4096 + 8);  // Page 3: a leaf of t, rewritten by the UPDATE into the WAL.
  ASSERT_EQ(StockQuickCheck(path_, /*main_file_only=*/false), "ok") << "the test proves nothing";
  ASSERT_NE(StockQuickCheck(path_, /*main_file_only=*/true), "ok") << "the test proves nothing";

  DatabaseOptions options;
  options.check_on_loop_bytes_max = 0;
  const absl::Status s = OpenDb(options);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(db_->stats().integrity_checks_off_loop, 1u);
  EXPECT_EQ(Read("SELECT count(*), sum(x = zeroblob(200)) FROM t"),
            absl::StrCat(kRows, "|", kRows, "|\n"));
}

INSTANTIATE_TEST_SUITE_P(Backends, OpenCheckTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
