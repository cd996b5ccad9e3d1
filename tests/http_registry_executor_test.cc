// The registry executor (examples/http/registry_executor.h) on the real backends: tenants are
// created, written, read back and deleted through the registry; errors carry the codes the
// server maps; a write is answered only after its fsync; answers never arrive inside Submit.
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "examples/http/handler.h"
#include "examples/http/registry_executor.h"
#include "gtest/gtest.h"
#include "sqloop/db/request.h"
#include "sqloop/loop/loop.h"
#include "tests/test_backends.h"

namespace sqloop::examples::http {
namespace {

using testing::TestBackend;

Statement Sql(std::string sql) { return Statement{.sql = std::move(sql), .args = {}}; }

struct Answer {
  int calls = 0;
  uint64_t fsyncs_at_answer = 0;
  const RegistryExecutor* executor = nullptr;
};

// A request that keeps the status its on_done received, for the test to read afterwards.
struct Answered : ExecutorRequest {
  absl::Status status;
};

class RegistryExecutorTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/sqloop_http_registry_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    loop_ = std::make_unique<loop::Loop>(GetParam().make(), loop::LoopOptions{});
    RegistryExecutorOptions options;
    options.registry.directory = dir_;
    options.registry.open_max = 4;
    auto created = RegistryExecutor::Create(*loop_, std::move(options));
    ASSERT_TRUE(created.ok()) << created.status();
    executor_ = *std::move(created);
  }
  void TearDown() override {
    bool done = false;
    executor_->Shutdown([](void* arg, absl::Status) { *static_cast<bool*>(arg) = true; }, &done);
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_TRUE(done);
    executor_.reset();
    loop_.reset();
    ASSERT_EQ(std::system(("rm -rf " + dir_).c_str()), 0);
  }

  // Submits and runs the loop until the answer arrives; checks it never arrives inline.
  Answered& Run(ExecutorRequest::Kind kind, const std::string& tenant,
                std::vector<Statement> statements = {}) {
    request_.Reset();
    request_.kind = kind;
    request_.tenant = tenant;
    request_.statements = std::move(statements);
    answer_ = Answer{.executor = executor_.get()};
    request_.user_data = &answer_;
    request_.status = absl::UnknownError("on_done has not run");
    request_.on_done = [](ExecutorRequest& r, absl::Status status) {
      static_cast<Answered&>(r).status = std::move(status);
      auto& a = *static_cast<Answer*>(r.user_data);
      a.calls++;
      a.fsyncs_at_answer = a.executor->vfs_stats().fsyncs;
    };
    executor_->Submit(request_);
    EXPECT_EQ(answer_.calls, 0) << "on_done ran inside Submit";
    EXPECT_EQ(executor_->in_flight(), 1u);
    // Not kUntilDone: an idle tenant keeps the registry's idle timer armed for 30 s.
    while (answer_.calls == 0) EXPECT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    EXPECT_EQ(answer_.calls, 1);
    EXPECT_EQ(executor_->in_flight(), 0u);
    return request_;
  }
  Answered& Query(const std::string& tenant, std::vector<Statement> statements) {
    return Run(ExecutorRequest::Kind::kQuery, tenant, std::move(statements));
  }
  bool FileExists(const std::string& tenant) const {
    return access((dir_ + "/" + tenant + ".db").c_str(), F_OK) == 0;
  }

  std::string dir_;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<RegistryExecutor> executor_;
  Answered request_;
  Answer answer_;
};

TEST_P(RegistryExecutorTest, CreateWriteReadBackDelete) {
  EXPECT_EQ(executor_->name(), "registry");
  ASSERT_TRUE(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.ok());
  EXPECT_TRUE(FileExists("acme"));
  EXPECT_EQ(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.code(),
            absl::StatusCode::kAlreadyExists);

  Answered& write = Query(
      "acme",
      {Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, b BLOB)"),
       {.sql = "INSERT INTO t(name, score, b) VALUES (?, ?, ?), (?, ?, ?)",
        .args = {Value::Text("h\xC3\xA9"), Value::Real(1.5), Value::Blob(std::string("\0x", 2)),
                 Value::Null(), Value::Integer(7), Value::Null()}}});
  ASSERT_TRUE(write.status.ok()) << write.status;
  ASSERT_EQ(write.results.size(), 2u);
  EXPECT_EQ(write.results[1].rows_changed, 2);
  EXPECT_EQ(write.results[1].last_insert_id, 2);

  Answered& read = Query("acme", {Sql("  -- a comment\n SELECT * FROM t ORDER BY id")});
  ASSERT_TRUE(read.status.ok()) << read.status;
  ASSERT_EQ(read.results.size(), 1u);
  EXPECT_EQ(read.results[0].columns, (std::vector<std::string>{"id", "name", "score", "b"}));
  ASSERT_EQ(read.results[0].rows.size(), 2u);
  EXPECT_EQ(read.results[0].rows[0],
            (std::vector<Value>{Value::Integer(1), Value::Text("h\xC3\xA9"), Value::Real(1.5),
                                Value::Blob(std::string("\0x", 2))}));
  EXPECT_EQ(read.results[0].rows[1],
            (std::vector<Value>{Value::Integer(2), Value::Null(), Value::Real(7), Value::Null()}));
  EXPECT_EQ(read.results[0].rows_changed, 0);

  ASSERT_TRUE(Run(ExecutorRequest::Kind::kDeleteTenant, "acme").status.ok());
  EXPECT_FALSE(FileExists("acme"));
  EXPECT_EQ(Run(ExecutorRequest::Kind::kDeleteTenant, "acme").status.code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(executor_->registry().stats().deletes, 1u);
}

TEST_P(RegistryExecutorTest, AnUnknownTenantIsNotFoundAndNothingIsCreated) {
  Answered& r = Query("ghost", {Sql("SELECT 1")});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status.message(), "\"ghost\" does not exist")) << r.status;
  EXPECT_TRUE(r.results.empty());
  EXPECT_FALSE(FileExists("ghost"));
}

TEST_P(RegistryExecutorTest, InvalidNamesAreRefusedBeforeTheRegistry) {
  for (const char* name : {"Acme", "..", "a/b", ""}) {
    EXPECT_EQ(Query(name, {Sql("SELECT 1")}).status.code(), absl::StatusCode::kInvalidArgument)
        << name;
    EXPECT_EQ(Run(ExecutorRequest::Kind::kCreateTenant, name).status.code(),
              absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_EQ(executor_->registry().stats().tenants, 0u);
}

TEST_P(RegistryExecutorTest, SqlErrorsAreInvalidArgumentAndStopTheRequest) {
  ASSERT_TRUE(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.ok());
  Answered& missing = Query("acme", {Sql("SELECT * FROM nope")});
  EXPECT_EQ(missing.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(missing.status.message(), "no such table: nope")) << missing.status;
  // One transaction (see the header): the statement before the failure is rolled back with
  // it, the one after it never runs, and the message says which statement failed and that
  // nothing was committed.
  Answered& partial =
      Query("acme", {Sql("CREATE TABLE kv(k PRIMARY KEY)"), Sql("INSERT INTO nope VALUES (1)"),
                     Sql("INSERT INTO kv VALUES (1)")});
  EXPECT_EQ(partial.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(partial.status.message(), "statements[1]")) << partial.status;
  EXPECT_TRUE(absl::StrContains(partial.status.message(), "no such table: nope")) << partial.status;
  EXPECT_TRUE(absl::StrContains(partial.status.message(), "nothing of it was committed"));
  EXPECT_TRUE(partial.results.empty());
  Answered& gone = Query("acme", {Sql("SELECT count(*) FROM kv")});
  EXPECT_TRUE(absl::StrContains(gone.status.message(), "no such table: kv")) << gone.status;
  // The same statements without the failing one commit together.
  Answered& whole =
      Query("acme", {Sql("CREATE TABLE kv(k PRIMARY KEY)"), Sql("INSERT INTO kv VALUES (1)")});
  ASSERT_TRUE(whole.status.ok()) << whole.status;
  ASSERT_EQ(whole.results.size(), 2u);
  EXPECT_EQ(whole.results[1].rows_changed, 1);
  Answered& count = Query("acme", {Sql("SELECT count(*) FROM kv")});
  ASSERT_TRUE(count.status.ok()) << count.status;
  EXPECT_EQ(count.results[0].rows[0][0].integer(), 1);
  // Forbidden SQL (the Database's authorizer says PermissionDenied) is the client's error too.
  EXPECT_EQ(Query("acme", {Sql("ATTACH 'x.db' AS x")}).status.code(),
            absl::StatusCode::kInvalidArgument);
  // A constraint violation is a conflict.
  EXPECT_EQ(Query("acme", {Sql("INSERT INTO kv VALUES (1)")}).status.code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(RegistryExecutorTest, AWriteIsAnsweredAfterItsFsyncAndReadsSeeEarlierStatements) {
  ASSERT_TRUE(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.ok());
  ASSERT_TRUE(Query("acme", {Sql("CREATE TABLE kv(k, v)")}).status.ok());
  const uint64_t fsyncs_before = executor_->vfs_stats().fsyncs;
  Answered& r =
      Query("acme",
            {{.sql = "INSERT INTO kv VALUES (?, ?)", .args = {Value::Text("a"), Value::Integer(1)}},
             Sql("SELECT v FROM kv WHERE k = 'a'"),
             Sql("UPDATE kv SET v = v + 1 RETURNING v")});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(answer_.fsyncs_at_answer, fsyncs_before) << "answered before any fsync";
  ASSERT_EQ(r.results.size(), 3u);
  EXPECT_EQ(r.results[0].rows_changed, 1);
  ASSERT_EQ(r.results[1].rows.size(), 1u) << "the read ran before the write it follows";
  EXPECT_EQ(r.results[1].rows[0][0].integer(), 1);
  // Each statement's own: the INSERT's rowid, none for the SELECT and the UPDATE.
  EXPECT_EQ(r.results[0].last_insert_id, 1);
  EXPECT_EQ(r.results[1].last_insert_id, 0);
  EXPECT_EQ(r.results[1].rows_changed, 0);
  EXPECT_EQ(r.results[2].last_insert_id, 0);
  EXPECT_EQ(r.results[2].rows_changed, 1);
  EXPECT_EQ(r.results[2].columns, std::vector<std::string>{"v"});
  ASSERT_EQ(r.results[2].rows.size(), 1u);
  EXPECT_EQ(r.results[2].rows[0][0].integer(), 2);
}

TEST_P(RegistryExecutorTest, StatsReportTheRegistry) {
  ASSERT_TRUE(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.ok());
  ASSERT_TRUE(Query("acme", {Sql("SELECT 1")}).status.ok());
  uint64_t open = 0, created = 0, requests = 0;
  for (const ExecutorStat& stat : executor_->Stats()) {
    if (std::string(stat.name) == "tenants_open") open = stat.value;
    if (std::string(stat.name) == "tenants_created") created = stat.value;
    if (std::string(stat.name) == "requests") requests = stat.value;
  }
  EXPECT_EQ(open, 1u);
  EXPECT_EQ(created, 1u);
  EXPECT_EQ(requests, 2u);
}

// A statement over the Database's budget of SQLite work keeps its db::IsBudgetExceeded payload
// through the executor, also when the error is reworded with its position in a longer request,
// so the server answers 422 budget_exceeded (retrying would fail again), not 503.
TEST_P(RegistryExecutorTest, AStatementOverItsWorkBudgetIs422NotARetry) {
  ASSERT_TRUE(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.ok());
  Answered& runaway =
      Query("acme",
            {Sql("SELECT 1"), Sql("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                  "SELECT count(*) FROM c")});
  EXPECT_EQ(runaway.status.code(), absl::StatusCode::kResourceExhausted) << runaway.status;
  EXPECT_TRUE(db::IsBudgetExceeded(runaway.status)) << runaway.status;
  EXPECT_NE(runaway.status.message().find("statements[1]"), absl::string_view::npos)
      << runaway.status;
  const HttpError answer = ErrorFromStatus(runaway.status);
  EXPECT_EQ(answer.status, 422);
  EXPECT_STREQ(answer.code, "budget_exceeded");
  EXPECT_STREQ(answer.headers, "");
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryExecutorTest,
                         ::testing::ValuesIn(testing::RealDescriptorBackends()),
                         [](const ::testing::TestParamInfo<TestBackend>& param) {
                           return param.param.name;
                         });

}  // namespace
}  // namespace sqloop::examples::http
