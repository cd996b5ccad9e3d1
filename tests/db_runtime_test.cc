// The front door (db/runtime.h) and atomic batches (Request::batch), on the real default
// backend: what a host writes first.
#include <array>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "sqloop/db/runtime.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using ::sqloop::testing::ScratchDir;

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override { runtime_ = Open(); }

  std::unique_ptr<Runtime> Open() {
    absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create(dir_.dir());
    EXPECT_TRUE(runtime.ok()) << runtime.status();
    return runtime.ok() ? *std::move(runtime) : nullptr;
  }

  void CreateAccounts() {
    ASSERT_TRUE(runtime_
                    ->Exec("bank",
                           "CREATE TABLE account(id INTEGER PRIMARY KEY, "
                           "balance INTEGER NOT NULL CHECK (balance >= 0))")
                    .ok());
    ASSERT_TRUE(runtime_->Exec("bank", "INSERT INTO account VALUES (1, 100), (2, 0)").ok());
  }

  int64_t Balance(int64_t id) {
    absl::StatusOr<Result> rows =
        runtime_->Query("bank", "SELECT balance FROM account WHERE id = ?", {Value::Int(id)});
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (!rows.ok() || rows->rows.size() != 1) return -1;
    return rows->rows[0][0].int_value;
  }

  ScratchDir dir_{true};
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(RuntimeTest, WritesDurablyAndReadsRowsThatOutliveTheCall) {
  ASSERT_NE(runtime_, nullptr);
  ASSERT_TRUE(runtime_->Exec("notes", "CREATE TABLE note(id INTEGER PRIMARY KEY, body TEXT)").ok());
  absl::StatusOr<Result> inserted =
      runtime_->Exec("notes", "INSERT INTO note(body) VALUES (?), (?)",
                     {Value::Text("a note longer than any small-string buffer"), Value::Text("b")});
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->changes, 2);
  EXPECT_EQ(inserted->last_insert_rowid, 2);

  absl::StatusOr<Result> read = runtime_->Query("notes", "SELECT id, body AS text FROM note");
  ASSERT_TRUE(read.ok()) << read.status();
  Result moved = *std::move(read);  // The values point into storage the Result owns.
  ASSERT_EQ(moved.rows.size(), 2u);
  EXPECT_EQ(moved.columns, (std::vector<std::string>{"id", "text"}));
  EXPECT_EQ(moved.rows[0][1].bytes, "a note longer than any small-string buffer");
  EXPECT_EQ(moved.rows[1][0].int_value, 2);
  EXPECT_EQ(moved.rows[1][1].bytes, "b");
}

TEST_F(RuntimeTest, WhatWasAcknowledgedIsThereAfterANewRuntimeOpensTheDirectory) {
  CreateAccounts();
  ASSERT_TRUE(runtime_->Shutdown().ok());
  runtime_ = Open();
  EXPECT_EQ(Balance(1), 100);
  EXPECT_EQ(Balance(2), 0);
}

TEST_F(RuntimeTest, AQueryOfADatabaseThatDoesNotExistIsNotFoundAndCreatesNothing) {
  absl::StatusOr<Result> read = runtime_->Query("missing", "SELECT 1");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound) << read.status();
  EXPECT_FALSE(sqloop::testing::RealFileExists(dir_.Path("missing.db")));
}

TEST_F(RuntimeTest, BadSqlIsAClearErrorAndTheRuntimeStaysUsable) {
  absl::StatusOr<Result> bad = runtime_->Exec("db", "CREATE TABLE t(");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
}

TEST_F(RuntimeTest, ABatchCommitsEveryStatementWithItsOwnResults) {
  CreateAccounts();
  std::array<Statement, 3> transfer{{
      {"UPDATE account SET balance = balance - ? WHERE id = 1", {Value::Int(30)}},
      {"UPDATE account SET balance = balance + ? WHERE id = 2", {Value::Int(30)}},
      {"INSERT INTO account VALUES (7, 5)"},
  }};
  absl::StatusOr<Result> done = runtime_->Exec("bank", absl::MakeSpan(transfer));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->changes, 3);
  EXPECT_EQ(transfer[0].changes, 1);
  EXPECT_EQ(transfer[1].changes, 1);
  EXPECT_EQ(transfer[2].changes, 1);
  EXPECT_EQ(transfer[2].last_insert_rowid, 7);
  EXPECT_EQ(Balance(1), 70);
  EXPECT_EQ(Balance(2), 30);
  EXPECT_EQ(Balance(7), 5);
}

// SQLite keeps changes() and last_insert_rowid() on the connection, which every write of the
// database shares, and sets them only for rows a statement inserts or changes: a write that
// changes none must report none, not the previous write's (another client's) counts.
TEST_F(RuntimeTest, AWriteThatChangesNoRowReportsNoneNotThePreviousWrites) {
  CreateAccounts();  // Its INSERT changed 2 rows, the last rowid 2.
  absl::StatusOr<Result> ddl = runtime_->Exec("bank", "CREATE TABLE other(x)");
  ASSERT_TRUE(ddl.ok()) << ddl.status();
  EXPECT_EQ(ddl->changes, 0);
  EXPECT_EQ(ddl->last_insert_rowid, 0);
  absl::StatusOr<Result> none =
      runtime_->Exec("bank", "UPDATE account SET balance = 1 WHERE id = 9");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->changes, 0);
  EXPECT_EQ(none->last_insert_rowid, 0);
  std::array<Statement, 3> mixed{{
      {"INSERT INTO account VALUES (8, 1)"},
      {"CREATE TABLE IF NOT EXISTS other(x)"},
      {"SELECT 1"},
  }};
  absl::StatusOr<Result> batch = runtime_->Exec("bank", absl::MakeSpan(mixed));
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->changes, 1);
  EXPECT_EQ(mixed[0].changes, 1);
  EXPECT_EQ(mixed[0].last_insert_rowid, 8);
  EXPECT_EQ(mixed[1].changes, 0);
  EXPECT_EQ(mixed[1].last_insert_rowid, 0);
  EXPECT_EQ(mixed[2].changes, 0);
}

TEST_F(RuntimeTest, ABatchWhoseMiddleStatementFailsLeavesNothingAndSaysWhichFailed) {
  CreateAccounts();
  std::array<Statement, 3> transfer{{
      {"UPDATE account SET balance = balance + 500 WHERE id = 2"},
      {"UPDATE account SET balance = balance - 500 WHERE id = 1"},  // CHECK fails.
      {"INSERT INTO account VALUES (9, 9)"},
  }};
  absl::StatusOr<Result> done = runtime_->Exec("bank", absl::MakeSpan(transfer));
  ASSERT_FALSE(done.ok());
  EXPECT_NE(done.status().message().find("statement 2 of 3"), absl::string_view::npos)
      << done.status();
  EXPECT_EQ(Balance(1), 100);
  EXPECT_EQ(Balance(2), 0);  // The first statement ran, and was rolled back with the batch.
  EXPECT_EQ(Balance(9), -1);
  // The writer is fine: the next write commits.
  EXPECT_TRUE(runtime_->Exec("bank", "UPDATE account SET balance = 1 WHERE id = 2").ok());
  EXPECT_EQ(Balance(2), 1);
}

// A failing batch beside good requests in the same group commit: only the batch is undone.
TEST_F(RuntimeTest, AFailedBatchInAGroupUndoesOnlyItself) {
  CreateAccounts();
  std::array<Statement, 2> bad{{
      {"INSERT INTO account VALUES (3, 3)"},
      {"INSERT INTO account VALUES (1, 1)"},  // Duplicate key.
  }};
  TenantRequest before, batch, after;
  int done = 0;
  absl::Status batch_status;
  auto on_done = [](TenantRequest& r, absl::Status status) {
    if (r.user_data != nullptr) *static_cast<absl::Status*>(r.user_data) = status;
    EXPECT_TRUE(r.user_data != nullptr || status.ok()) << status;
  };
  for (TenantRequest* r : {&before, &batch, &after}) {
    r->tenant = "bank";
    r->kind = Request::Kind::kWrite;
    r->on_done = on_done;
  }
  before.sql = "INSERT INTO account VALUES (4, 4)";
  after.sql = "INSERT INTO account VALUES (5, 5)";
  batch.batch = absl::MakeSpan(bad);
  batch.user_data = &batch_status;
  for (TenantRequest* r : {&before, &batch, &after}) ASSERT_TRUE(runtime_->Submit(*r).ok());
  while (before.state() != Request::State::kDone || batch.state() != Request::State::kDone ||
         after.state() != Request::State::kDone) {
    ASSERT_TRUE(runtime_->Run(loop::RunMode::kOnce).ok());
    ASSERT_LT(++done, 10000) << "the requests never completed";
  }
  // The three ran in one group commit (one epoch), and the constraint failure is the batch's.
  EXPECT_EQ(before.epoch, after.epoch);
  EXPECT_EQ(batch_status.code(), absl::StatusCode::kFailedPrecondition) << batch_status;
  EXPECT_NE(batch_status.message().find("statement 2 of 2"), absl::string_view::npos);
  EXPECT_EQ(batch.batch_index(), 1u);
  EXPECT_EQ(Balance(3), -1);
  EXPECT_EQ(Balance(4), 4);
  EXPECT_EQ(Balance(5), 5);
}

TEST_F(RuntimeTest, RowsOfABatchSayWhichStatementReturnedThem) {
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x INTEGER)").ok());
  std::array<Statement, 2> batch{{
      {"INSERT INTO t VALUES (1) RETURNING x"},
      {"INSERT INTO t VALUES (2), (3) RETURNING x * 10"},
  }};
  TenantRequest request;
  request.tenant = "db";
  request.kind = Request::Kind::kWrite;
  request.batch = absl::MakeSpan(batch);
  std::vector<std::pair<uint32_t, int64_t>> rows;
  request.user_data = &rows;
  request.on_row = [](Request& r, const Row& row) {
    static_cast<std::vector<std::pair<uint32_t, int64_t>>*>(r.user_data)
        ->emplace_back(r.batch_index(), row.Int(0));
  };
  request.on_done = [](TenantRequest&, absl::Status status) { EXPECT_TRUE(status.ok()) << status; };
  ASSERT_TRUE(runtime_->Submit(request).ok());
  for (int ticks = 0; request.state() != Request::State::kDone; ++ticks) {
    ASSERT_TRUE(runtime_->Run(loop::RunMode::kOnce).ok());
    ASSERT_LT(ticks, 10000) << "the batch never completed";
  }
  using P = std::pair<uint32_t, int64_t>;
  EXPECT_EQ(rows, (std::vector<P>{P{0, 1}, P{1, 20}, P{1, 30}}));
}

TEST_F(RuntimeTest, MalformedBatchesAreRefusedAtSubmit) {
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  std::array<Statement, 1> one{{{"INSERT INTO t VALUES (1)"}}};
  TenantRequest request;
  request.tenant = "db";
  request.on_done = [](TenantRequest&, absl::Status) {};
  request.batch = absl::MakeSpan(one);
  request.kind = Request::Kind::kRead;
  EXPECT_EQ(runtime_->Submit(request).code(), absl::StatusCode::kInvalidArgument);
  request.kind = Request::Kind::kWrite;
  request.sql = "INSERT INTO t VALUES (2)";
  EXPECT_EQ(runtime_->Submit(request).code(), absl::StatusCode::kInvalidArgument);
  std::array<Statement, 2> control{{{"BEGIN"}, {"INSERT INTO t VALUES (3)"}}};
  absl::StatusOr<Result> refused = runtime_->Exec("db", absl::MakeSpan(control));
  EXPECT_FALSE(refused.ok());
  absl::StatusOr<Result> count = runtime_->Query("db", "SELECT count(*) FROM t");
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->rows[0][0].int_value, 0);
}

TEST_F(RuntimeTest, ExecFromInsideALoopCallbackIsRefusedNotRunReentrantly) {
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  struct Probe {
    Runtime* runtime;
    absl::Status status;
    bool ran = false;
  } probe{runtime_.get(), absl::OkStatus(), false};
  TenantRequest request;
  request.tenant = "db";
  request.sql = "SELECT 1";
  request.user_data = &probe;
  request.on_done = [](TenantRequest& r, absl::Status) {
    auto* p = static_cast<Probe*>(r.user_data);
    p->ran = true;
    p->status = p->runtime->Exec("db", "INSERT INTO t VALUES (1)").status();
  };
  ASSERT_TRUE(runtime_->Submit(request).ok());
  while (!probe.ran) ASSERT_TRUE(runtime_->Run(loop::RunMode::kOnce).ok());
  EXPECT_EQ(probe.status.code(), absl::StatusCode::kFailedPrecondition) << probe.status;
  absl::StatusOr<Result> count = runtime_->Query("db", "SELECT count(*) FROM t");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->rows[0][0].int_value, 0);
}

TEST_F(RuntimeTest, AfterShutdownEveryCallFailsClearlyAndShutdownIsIdempotent) {
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  EXPECT_TRUE(runtime_->Shutdown().ok());
  EXPECT_TRUE(runtime_->Shutdown().ok());
  EXPECT_EQ(runtime_->Exec("db", "INSERT INTO t VALUES (1)").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// A runtime belongs to one thread at a time: a call from a second thread while the first is
// inside the runtime (here, inside a callback that Run runs) is refused before it touches the
// loop or the registry. Between calls the runtime may change threads.
TEST_F(RuntimeTest, ASecondThreadIsRefusedWhileTheFirstIsInside) {
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  struct Probe {
    Runtime* runtime;
    absl::Status query;
    absl::Status submit;
    bool ran = false;
  } probe{runtime_.get(), absl::OkStatus(), absl::OkStatus(), false};
  TenantRequest request;
  request.tenant = "db";
  request.sql = "SELECT 1";
  request.user_data = &probe;
  request.on_done = [](TenantRequest& r, absl::Status) {  // This thread, inside Run.
    auto* p = static_cast<Probe*>(r.user_data);
    p->ran = true;
    std::thread other([p] {
      p->query = p->runtime->Query("db", "SELECT count(*) FROM t").status();
      TenantRequest late;
      late.tenant = "db";
      late.sql = "SELECT 1";
      late.on_done = [](TenantRequest&, absl::Status) {};
      p->submit = p->runtime->Submit(late);
    });
    other.join();
  };
  ASSERT_TRUE(runtime_->Submit(request).ok());
  while (!probe.ran) ASSERT_TRUE(runtime_->Run(loop::RunMode::kOnce).ok());
  EXPECT_EQ(probe.query.code(), absl::StatusCode::kFailedPrecondition) << probe.query;
  EXPECT_TRUE(absl::StrContains(probe.query.message(), "another thread")) << probe.query;
  EXPECT_EQ(probe.submit.code(), absl::StatusCode::kFailedPrecondition) << probe.submit;

  absl::Status elsewhere;
  std::thread next([&] { elsewhere = runtime_->Exec("db", "INSERT INTO t VALUES (1)").status(); });
  next.join();
  EXPECT_TRUE(elsewhere.ok()) << elsewhere;
}

// Two runtimes of one process on two directories serve databases of the same name (the
// memory accounting's names, unique per process, default to each one's directory).
TEST_F(RuntimeTest, TwoRuntimesOnTwoDirectoriesShareDatabaseNames) {
  ScratchDir other_dir{true};
  absl::StatusOr<std::unique_ptr<Runtime>> other = Runtime::Create(other_dir.dir());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  const absl::StatusOr<Result> second = (*other)->Exec("db", "CREATE TABLE t(x)");
  EXPECT_TRUE(second.ok()) << second.status();
}

TEST(RuntimeCreateTest, AnEmptyDirectoryOptionIsRefused) {
  EXPECT_EQ(Runtime::Create(RuntimeOptions{}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sqloop::db
