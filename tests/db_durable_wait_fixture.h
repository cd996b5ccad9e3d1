// tests/db_durable_wait_fixture.h
// -----------------------------------------------------------------------------
//
// The fixture of the Vfs::WhenDurable tests (db/vfs.h), shared by the test files of the wait:
// raw connections of a host's own on a Vfs over a recording backend (tests/db_test_support.h),
// and `Waited`, a DurableWait with what its `done` saw. Every wait a test makes through NewWait
// lives until TearDown has drained the loop, which then checks that each armed one was
// delivered, and never inside WhenDurable or a SQLite call. Parameterised over DbTestBackends().
//
// Example:
//
//   TEST_P(DurableWaitTest, Something) {
//     sqlite3* db = Open(path_);
//     Exec(db, "INSERT INTO t VALUES (1)");
//     Waited& waited = NewWait(&Queue(path_));
//     ASSERT_TRUE(Arm(db, waited).ok());
//     ASSERT_TRUE(RunUntil([&] { return waited.runs > 0; }));
//   }
#ifndef SQLOOP_TESTS_DB_DURABLE_WAIT_FIXTURE_H_
#define SQLOOP_TESTS_DB_DURABLE_WAIT_FIXTURE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/epoch_queue.h"
#include "sqloop/db/internal/vfs_core.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"
#include "tests/db_test_support.h"
#include "tests/run_loop_until.h"

namespace sqloop::db::testing {

using sqloop::testing::RecordingBackend;
using sqloop::testing::ScratchDir;
using sqloop::testing::TestBackend;

inline constexpr int kCreate = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
// A hang guard on the loop's clock, never a timing assertion.
inline constexpr absl::Duration kHangGuard = absl::Seconds(60);

// What the test is doing when a `done` runs: it must never be inside WhenDurable or SQLite.
struct Observer {
  int deliveries = 0;
  bool inside_a_call = false;
};

// A DurableWait and what its `done` saw (RecordDone).
struct Waited {
  DurableWait wait;
  Observer* observer = nullptr;                 // Set by NewWait; may stay null.
  const internal::EpochQueue* queue = nullptr;  // Read at `done`, if set (and still there).
  int runs = 0;
  absl::Status status = absl::UnknownError("done never ran");
  uint64_t durable_at_done = 0;  // queue->durable_epoch() when `done` ran.
  int order = 0;                 // Among the test's deliveries, from 1.
  bool ran_inside_a_call = false;
};

inline void RecordDone(DurableWait& wait, absl::Status status) {
  auto& waited = *static_cast<Waited*>(wait.user_data);
  ++waited.runs;
  waited.status = std::move(status);
  if (waited.observer != nullptr) {
    waited.order = ++waited.observer->deliveries;
    waited.ran_inside_a_call = waited.ran_inside_a_call || waited.observer->inside_a_call;
  }
  if (waited.queue != nullptr) waited.durable_at_done = waited.queue->durable_epoch();
}

class DurableWaitFixture : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    auto recording = std::make_unique<RecordingBackend>(GetParam().make());
    trace_ = recording.get();
    loop_ = std::make_unique<loop::Loop>(std::move(recording), loop::LoopOptions{});
    dir_ = std::make_unique<ScratchDir>(real());
    MakeVfs({});
    path_ = dir_->Path("t.db");
  }
  void TearDown() override {
    for (sqlite3* db : open_) EXPECT_EQ(sqlite3_close(db), SQLITE_OK);
    open_.clear();
    trace_->ReleaseHeld();
    Drain();
    for (const std::unique_ptr<Waited>& waited : waits_) {
      EXPECT_FALSE(waited->wait.armed()) << "a wait was never delivered";
      EXPECT_FALSE(waited->ran_inside_a_call) << "done ran inside WhenDurable or SQLite";
    }
    vfs_.reset();
  }
  void MakeVfs(VfsOptions options) {
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*loop_, options);
    ASSERT_TRUE(vfs.ok()) << vfs.status();
    vfs_ = *std::move(vfs);
  }
  bool real() const { return GetParam().real_descriptors; }
  io::SimBackend& sim() { return static_cast<io::SimBackend&>(trace_->inner()); }

  // A raw connection on vfs_, with SQLite's defaults; null, and a failure, if it does not
  // open. Closed at TearDown unless the test closes it (Close) or takes it over (Forget).
  sqlite3* OpenRaw(const std::string& path, int flags = kCreate) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &db, flags, vfs_->name());
    EXPECT_EQ(rc, SQLITE_OK) << path << ": " << sqlite3_errmsg(db);
    if (rc != SQLITE_OK) {
      sqlite3_close(db);
      return nullptr;
    }
    open_.push_back(db);
    return db;
  }
  // A raw connection in WAL mode with synchronous=FULL, as a Database sets them, on a table
  // t(x), with everything it did so far durable.
  sqlite3* Open(const std::string& path) {
    sqlite3* db = OpenRaw(path);
    if (db == nullptr) return nullptr;
    Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE IF NOT EXISTS t(x)");
    Drain();
    return db;
  }
  void Close(sqlite3* db) {
    Forget(db);
    EXPECT_EQ(sqlite3_close(db), SQLITE_OK) << sqlite3_errmsg(db);
  }
  void Forget(sqlite3* db) { std::erase(open_, db); }
  // sqlite3_exec's result code, run as a call inside which no `done` may run; the error
  // message, if any, in last_error_.
  int Run(sqlite3* db, const std::string& sql) {
    observer_.inside_a_call = true;
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    observer_.inside_a_call = false;
    last_error_ = error != nullptr ? error : "";
    sqlite3_free(error);
    return rc;
  }
  void Exec(sqlite3* db, const std::string& sql) {
    EXPECT_EQ(Run(db, sql), SQLITE_OK) << sql << ": " << last_error_;
  }
  void Drain() { ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok()); }
  bool RunUntil(absl::FunctionRef<bool()> done) {
    return sqloop::testing::RunLoopUntil(*loop_, kHangGuard, done);
  }
  internal::DatabaseFiles* Files(const std::string& path) {
    return internal::VfsCore::Of(*vfs_).Find(path);
  }
  internal::EpochQueue& Queue(const std::string& path) {
    internal::DatabaseFiles* files = Files(path);
    SQLOOP_CHECK(files != nullptr, "the test's database has no files");
    return files->queue();
  }
  // A wait the fixture keeps until TearDown drained the loop, so a failed assertion never
  // destroys one that is still armed.
  Waited& NewWait(const internal::EpochQueue* queue = nullptr) {
    waits_.push_back(std::make_unique<Waited>());
    Waited& waited = *waits_.back();
    waited.wait.done = &RecordDone;
    waited.wait.user_data = &waited;
    waited.observer = &observer_;
    waited.queue = queue;
    return waited;
  }
  // WhenDurable, marked as a call inside which no `done` may run.
  absl::Status Arm(sqlite3* db, Waited& waited, const char* database = "main") {
    observer_.inside_a_call = true;
    absl::Status status = vfs_->WhenDurable(db, waited.wait, database);
    observer_.inside_a_call = false;
    return status;
  }
  // Completed fsyncs on `fd` so far.
  int FsyncsOn(int fd) const {
    int n = 0;
    for (const sqloop::testing::TraceEvent& e : trace_->events()) {
      if (e.type == sqloop::testing::TraceEvent::Type::kComplete && e.kind == io::OpKind::kFsync &&
          e.fd == fd && e.result >= 0) {
        ++n;
      }
    }
    return n;
  }

  RecordingBackend* trace_ = nullptr;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Vfs> vfs_;
  std::string path_;
  std::vector<sqlite3*> open_;
  Observer observer_;
  std::vector<std::unique_ptr<Waited>> waits_;
  std::string last_error_;
};

}  // namespace sqloop::db::testing

#endif  // SQLOOP_TESTS_DB_DURABLE_WAIT_FIXTURE_H_
