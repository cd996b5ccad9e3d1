// The plain-SQLite stand-in executor on a real loop: answers arrive from a loop callback,
// statements run as one transaction, user SQL is fenced in, every request is bounded.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "db/request.h"
#include "examples/http/handler.h"
#include "examples/http/sqlite_executor.h"
#include "gtest/gtest.h"
#include "loop/loop.h"
#include "tests/test_backends.h"

namespace sqloop::examples::http {
namespace {

using testing::TestBackend;

struct Answer {
  int calls = 0;
};

class SqliteExecutorTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/sqloop_http_executor_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    loop_ = std::make_unique<loop::Loop>(GetParam().make(), loop::LoopOptions{});
    MakeExecutor(SqliteExecutorOptions{});
  }
  void TearDown() override {
    executor_.reset();
    loop_.reset();
    ASSERT_EQ(std::system(("rm -rf " + dir_).c_str()), 0);
  }
  void MakeExecutor(SqliteExecutorOptions options) {
    executor_.reset();
    options.data_dir = dir_;
    auto created = SqliteExecutor::Create(*loop_, options);
    ASSERT_TRUE(created.ok()) << created.status();
    executor_ = *std::move(created);
  }

  // Submits and runs the loop until the answer arrives; checks it never arrives inline.
  ExecutorRequest& Run(ExecutorRequest::Kind kind, const std::string& tenant,
                       std::vector<Statement> statements = {}) {
    request_.Reset();
    request_.kind = kind;
    request_.tenant = tenant;
    request_.statements = std::move(statements);
    answer_.calls = 0;
    request_.user_data = &answer_;
    request_.on_done = [](ExecutorRequest& r) { static_cast<Answer*>(r.user_data)->calls++; };
    executor_->Submit(request_);
    EXPECT_EQ(answer_.calls, 0) << "on_done ran inside Submit";
    EXPECT_EQ(executor_->in_flight(), 1u);
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_EQ(answer_.calls, 1);
    EXPECT_EQ(executor_->in_flight(), 0u);
    return request_;
  }
  ExecutorRequest& Query(const std::string& tenant, std::vector<Statement> statements) {
    return Run(ExecutorRequest::Kind::kQuery, tenant, std::move(statements));
  }
  void Create(const std::string& tenant) {
    ASSERT_TRUE(Run(ExecutorRequest::Kind::kCreateTenant, tenant).status.ok());
  }

  std::string dir_;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<SqliteExecutor> executor_;
  ExecutorRequest request_;
  Answer answer_;
};

TEST_P(SqliteExecutorTest, WritesAndReadsBackEveryType) {
  Create("acme");
  ExecutorRequest& write =
      Query("acme", {{"CREATE TABLE t(a INTEGER PRIMARY KEY, i, r, s, b)", {}},
                     {"INSERT INTO t(i, r, s, b) VALUES (?, ?, ?, ?), (NULL, 0, '', x'')",
                      {Value::Integer(-5), Value::Real(0.25), Value::Text("h\xC3\xA9"),
                       Value::Blob(std::string("\0\1", 2))}}});
  ASSERT_TRUE(write.status.ok()) << write.status;
  ASSERT_EQ(write.results.size(), 2u);
  EXPECT_EQ(write.results[0].rows_changed, 0);
  EXPECT_EQ(write.results[1].rows_changed, 2);
  EXPECT_EQ(write.results[1].last_insert_id, 2);
  ExecutorRequest& read = Query("acme", {{"SELECT i, r, s, b FROM t ORDER BY a", {}}});
  ASSERT_TRUE(read.status.ok()) << read.status;
  const StatementResult& result = read.results[0];
  EXPECT_EQ(result.columns, (std::vector<std::string>{"i", "r", "s", "b"}));
  ASSERT_EQ(result.rows.size(), 2u);
  EXPECT_EQ(result.rows[0],
            (std::vector<Value>{Value::Integer(-5), Value::Real(0.25), Value::Text("h\xC3\xA9"),
                                Value::Blob(std::string("\0\1", 2))}));
  EXPECT_EQ(result.rows[1], (std::vector<Value>{Value::Null(), Value::Integer(0), Value::Text(""),
                                                Value::Blob("")}));
  EXPECT_EQ(result.rows_changed, 0);
}

TEST_P(SqliteExecutorTest, ARequestIsOneTransaction) {
  Create("acme");
  ASSERT_TRUE(Query("acme", {{"CREATE TABLE t(x UNIQUE)", {}}}).status.ok());
  ExecutorRequest& failed =
      Query("acme", {{"INSERT INTO t VALUES (1)", {}}, {"INSERT INTO t VALUES (1)", {}}});
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(failed.status.message().find("statements[1]: UNIQUE constraint failed"),
            absl::string_view::npos)
      << failed.status;
  EXPECT_TRUE(failed.results.empty());
  ExecutorRequest& count = Query("acme", {{"SELECT count(*) FROM t", {}}});
  ASSERT_TRUE(count.status.ok());
  EXPECT_EQ(count.results[0].rows[0][0], Value::Integer(0)) << "the first insert survived";
}

TEST_P(SqliteExecutorTest, TenantLifecycleErrors) {
  EXPECT_EQ(Query("ghost", {{"SELECT 1", {}}}).status.code(), absl::StatusCode::kNotFound);
  Create("acme");
  EXPECT_EQ(Run(ExecutorRequest::Kind::kCreateTenant, "acme").status.code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(access((dir_ + "/acme.db").c_str(), F_OK), 0);
  EXPECT_TRUE(Run(ExecutorRequest::Kind::kDeleteTenant, "acme").status.ok());
  EXPECT_NE(access((dir_ + "/acme.db").c_str(), F_OK), 0);
  EXPECT_EQ(Run(ExecutorRequest::Kind::kDeleteTenant, "acme").status.code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Query("acme", {{"SELECT 1", {}}}).status.code(), absl::StatusCode::kNotFound);
  for (const char* bad : {"..", "a/b", "", "UPPER"}) {
    EXPECT_EQ(Run(ExecutorRequest::Kind::kCreateTenant, bad).status.code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST_P(SqliteExecutorTest, NewTenantsAreWalDatabases) {
  Create("acme");
  // Bytes 18 and 19 of the header are the read/write format versions: 2 means WAL.
  const int fd = open((dir_ + "/acme.db").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  unsigned char header[20] = {};
  ASSERT_EQ(pread(fd, header, sizeof(header), 0), static_cast<ssize_t>(sizeof(header)));
  close(fd);
  EXPECT_EQ(header[18], 2);
  EXPECT_EQ(header[19], 2);
}

TEST_P(SqliteExecutorTest, UserSqlIsFencedIn) {
  Create("acme");
  const char* denied[] = {"ATTACH 'other.db' AS o",
                          "BEGIN",
                          "COMMIT",
                          "SAVEPOINT s",
                          "PRAGMA synchronous=OFF",
                          "PRAGMA journal_mode=DELETE",
                          "PRAGMA writable_schema",
                          "VACUUM"};
  for (const char* sql : denied) {
    EXPECT_EQ(Query("acme", {{sql, {}}}).status.code(), absl::StatusCode::kInvalidArgument) << sql;
  }
  EXPECT_TRUE(Query("acme", {{"PRAGMA table_info(sqlite_master)", {}}}).status.ok());
  EXPECT_TRUE(Query("acme", {{"PRAGMA integrity_check", {}}}).status.ok());
}

TEST_P(SqliteExecutorTest, StatementShapeErrors) {
  Create("acme");
  const std::pair<const char*, const char*> cases[] = {
      {"SELECT 1; SELECT 2", "more than one statement"},
      {"  -- nothing", "holds no statement"},
      {"SELECT * FROM nope", "no such table: nope"},
      {"SELECT ?, ?", "has 2 parameters but 0 args"},
  };
  for (const auto& [sql, message] : cases) {
    ExecutorRequest& request = Query("acme", {{sql, {}}});
    EXPECT_EQ(request.status.code(), absl::StatusCode::kInvalidArgument) << sql;
    EXPECT_NE(request.status.message().find(message), absl::string_view::npos) << request.status;
  }
  EXPECT_TRUE(Query("acme", {{"SELECT 1;  -- trailing comment", {}}}).status.ok());
}

TEST_P(SqliteExecutorTest, EveryRequestIsBounded) {
  SqliteExecutorOptions options;
  options.rows_max = 10;
  options.result_bytes_max = 1000;
  options.vm_steps_max = 100'000;
  MakeExecutor(options);
  Create("acme");
  const char* series = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT %d) ";
  auto sql = [&](const char* tail, int limit) {
    char buffer[256];
    std::snprintf(buffer, sizeof(buffer), series, limit);
    return std::string(buffer) + tail;
  };
  EXPECT_TRUE(Query("acme", {{sql("SELECT x FROM c", 10), {}}}).status.ok());
  EXPECT_NE(
      Query("acme", {{sql("SELECT x FROM c", 11), {}}}).status.message().find("more than 10 rows"),
      absl::string_view::npos);
  EXPECT_NE(Query("acme", {{sql("SELECT zeroblob(2000) FROM c", 1), {}}})
                .status.message()
                .find("exceeds 1000 bytes"),
            absl::string_view::npos);
  ExecutorRequest& runaway = Query("acme", {{sql("SELECT count(*) FROM c", 100'000'000), {}}});
  // Over the budget of SQLite work: the same status as the Database's, so the same answer
  // (422 budget_exceeded, not a 503 that invites a retry bound to fail again).
  EXPECT_EQ(runaway.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(db::IsBudgetExceeded(runaway.status)) << runaway.status;
  EXPECT_NE(runaway.status.message().find("VM steps"), absl::string_view::npos) << runaway.status;
  const HttpError answer = ErrorFromStatus(runaway.status);
  EXPECT_EQ(answer.status, 422);
  EXPECT_STREQ(answer.code, "budget_exceeded");
  EXPECT_STREQ(answer.headers, "");
}

TEST_P(SqliteExecutorTest, OpenTenantsStayWithinTheBudget) {
  SqliteExecutorOptions options;
  options.tenants_open_max = 2;
  MakeExecutor(options);
  for (const char* tenant : {"a", "b", "c"}) {
    Create(tenant);
    ASSERT_TRUE(Query(tenant, {{"CREATE TABLE t(x)", {}},
                               {"INSERT INTO t VALUES (?)", {Value::Text(tenant)}}})
                    .status.ok());
    EXPECT_LE(executor_->tenants_open(), 2u);
  }
  ExecutorRequest& read = Query("a", {{"SELECT x FROM t", {}}});
  ASSERT_TRUE(read.status.ok()) << read.status;
  EXPECT_EQ(read.results[0].rows[0][0], Value::Text("a"));
  EXPECT_LE(executor_->tenants_open(), 2u);
}

TEST_P(SqliteExecutorTest, AnswersInSubmissionOrder) {
  Create("acme");
  ExecutorRequest requests[3];
  std::vector<int> order;
  for (int i = 0; i < 3; i++) {
    requests[i].tenant = "acme";
    requests[i].statements = {{"SELECT ?", {Value::Integer(i)}}};
    requests[i].user_data = &order;
    requests[i].on_done = [](ExecutorRequest& r) {
      static_cast<std::vector<int>*>(r.user_data)
          ->push_back(static_cast<int>(r.results[0].rows[0][0].integer()));
    };
    executor_->Submit(requests[i]);
  }
  EXPECT_TRUE(order.empty());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST(SqliteExecutorCreateTest, RefusesAMissingDataDirectory) {
  auto loop = loop::Loop::Create({});
  ASSERT_TRUE(loop.ok());
  SqliteExecutorOptions options;
  options.data_dir = "/nonexistent/sqloop";
  auto executor = SqliteExecutor::Create(**loop, options);
  EXPECT_EQ(executor.status().code(), absl::StatusCode::kInvalidArgument);
}

std::string ParamName(const ::testing::TestParamInfo<TestBackend>& param) {
  return param.param.name;
}

INSTANTIATE_TEST_SUITE_P(Backends, SqliteExecutorTest,
                         ::testing::ValuesIn(testing::AllTestBackends()), ParamName);

}  // namespace
}  // namespace sqloop::examples::http
