// tests/db_database_fixture.h
// -----------------------------------------------------------------------------
//
// The Database tests' fixture, shared by the test files of db/database.h: a Database on a
// recording backend (tests/db_test_support.h), opened and closed on the loop, and a Probe that
// collects one request's rows and status. Parameterised over DbTestBackends().
//
// Example:
//
//   TEST_P(DatabaseTest, Something) {
//     ASSERT_TRUE(OpenDb().ok());
//     ASSERT_TRUE(Write("CREATE TABLE t(x)").ok());
//     EXPECT_EQ(Read("SELECT count(*) FROM t"), "0|\n");
//   }
#ifndef SQLOOP_TESTS_DB_DATABASE_FIXTURE_H_
#define SQLOOP_TESTS_DB_DATABASE_FIXTURE_H_

#include <fcntl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"
#include "tests/db_test_support.h"

namespace sqloop::db::testing {

using sqloop::testing::RecordingBackend;
using sqloop::testing::ScratchDir;
using sqloop::testing::TestBackend;

// One request plus what it produced, for tests.
struct Probe {
  Request request;
  std::string rows;
  int discards = 0;  // on_rows_discarded calls: rows voided before a re-run.
  bool done = false;
  absl::Status status;
  std::vector<std::string>* order = nullptr;  // Appends `name` when done.
  std::string name;
  std::function<void(Probe&)> on_ack;  // Runs inside on_done (the durable-ack check).
};

inline std::string Render(const Row& row) {
  std::string out;
  for (int i = 0; i < row.size(); ++i) {
    switch (row.type(i)) {
      case Value::Type::kNull:
        out += "NULL";
        break;
      case Value::Type::kInt:
        out += std::to_string(row.Int(i));
        break;
      case Value::Type::kDouble:
        out += absl::StrCat(row.Double(i));
        break;
      case Value::Type::kText:
        out += absl::StrCat("'", row.Text(i), "'");
        break;
      case Value::Type::kBlob:
        out += absl::StrCat("x", row.Blob(i).size());
        break;
    }
    out += "|";
  }
  return out + "\n";
}

class DatabaseTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    MakeLoop();
    dir_ = std::make_unique<ScratchDir>(GetParam().real_descriptors);
    MakeVfs();
    path_ = dir_->Path("db.sqlite");
  }
  // A new loop on a new backend in place of the current one (whose Vfs and databases must be
  // gone); call MakeVfs after it.
  void MakeLoop(loop::LoopOptions options = {}) {
    auto recording = std::make_unique<RecordingBackend>(GetParam().make());
    trace_ = recording.get();
    loop_ = std::make_unique<loop::Loop>(std::move(recording), std::move(options));
  }
  // A new Vfs in place of the current one (whose databases must be closed): other limits, or
  // the fresh view of the files a restarted process has.
  void MakeVfs(VfsOptions options = {}) {
    vfs_.reset();
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*loop_, options);
    ASSERT_TRUE(vfs.ok());
    vfs_ = *std::move(vfs);
  }
  void TearDown() override {
    if (db_ != nullptr &&
        (db_->state() == Database::State::kReady || db_->state() == Database::State::kPoisoned)) {
      (void)CloseDb();
    }
    db_.reset();
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    vfs_.reset();
  }

  absl::Status OpenDb(DatabaseOptions options = {}) {
    db_ = std::make_unique<Database>(*loop_, *vfs_, path_, options);
    return OpenAndRun(*db_);
  }
  absl::Status CloseDb() { return CloseAndRun(*db_); }
  // The size of path_'s WAL, read through the loop (the simulator's files too); -1 if there is
  // none.
  int64_t WalBytes() {
    const std::string wal = path_ + "-wal";
    io::Op open_wal{.kind = io::OpKind::kOpenAt,
                    .fd = AT_FDCWD,
                    .flags = O_RDONLY | O_CLOEXEC,
                    .path = wal.c_str()};
    const int64_t fd = loop_->WaitForOp(open_wal);
    if (fd < 0) return -1;
    io::Op size{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
    const int64_t bytes = loop_->WaitForOp(size);
    io::Op close_wal{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
    (void)loop_->WaitForOp(close_wal);
    return bytes;
  }
  // A second database (beside path_'s, on the same loop and Vfs); null if it failed to open.
  std::unique_ptr<Database> OpenOther(const std::string& path) {
    auto other = std::make_unique<Database>(*loop_, *vfs_, path, DatabaseOptions{});
    const absl::Status opened = OpenAndRun(*other);
    EXPECT_TRUE(opened.ok()) << opened;
    return opened.ok() ? std::move(other) : nullptr;
  }
  // Opens or closes `db` and runs the loop until it called back.
  absl::Status OpenAndRun(Database& db) {
    absl::Status result = absl::UnknownError("open never called back");
    db.Open([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
            &result);
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    return result;
  }
  absl::Status CloseAndRun(Database& db) {
    absl::Status result = absl::UnknownError("close never called back");
    db.Close([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
             &result);
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    return result;
  }

  static void Prime(Probe& p, Request::Kind kind, absl::string_view sql,
                    std::vector<Value> params = {}) {
    p.request.kind = kind;
    p.request.sql = sql;
    p.request.params.assign(params.begin(), params.end());
    p.request.user_data = &p;
    p.request.on_row = [](Request& r, const Row& row) {
      static_cast<Probe*>(r.user_data)->rows += Render(row);
    };
    p.request.on_rows_discarded = [](Request& r) {
      auto* probe = static_cast<Probe*>(r.user_data);
      EXPECT_FALSE(probe->rows.empty()) << "rows discarded that were never delivered";
      probe->rows.clear();
      ++probe->discards;
    };
    p.request.on_done = [](Request& r, absl::Status s) {
      auto* probe = static_cast<Probe*>(r.user_data);
      EXPECT_FALSE(probe->done) << "on_done ran twice";
      probe->done = true;
      probe->status = std::move(s);
      if (probe->order != nullptr) probe->order->push_back(probe->name);
      if (probe->on_ack) probe->on_ack(*probe);
    };
  }
  // Submits and runs the loop until the request is done.
  absl::Status Run(Request::Kind kind, absl::string_view sql, std::vector<Value> params = {},
                   std::string* rows = nullptr) {
    Probe p;
    Prime(p, kind, sql, std::move(params));
    if (absl::Status admitted = db_->Submit(p.request); !admitted.ok()) return admitted;
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_TRUE(p.done);
    if (rows != nullptr) *rows = p.rows;
    return p.status;
  }
  absl::Status Write(absl::string_view sql, std::vector<Value> params = {}) {
    return Run(Request::Kind::kWrite, sql, std::move(params));
  }
  std::string Read(absl::string_view sql, std::vector<Value> params = {}) {
    std::string rows;
    absl::Status s = Run(Request::Kind::kRead, sql, std::move(params), &rows);
    EXPECT_TRUE(s.ok()) << sql << ": " << s;
    return rows;
  }

  RecordingBackend* trace_ = nullptr;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Vfs> vfs_;
  std::unique_ptr<Database> db_;
  std::string path_;
};

}  // namespace sqloop::db::testing

#endif  // SQLOOP_TESTS_DB_DATABASE_FIXTURE_H_
