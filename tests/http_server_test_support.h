// tests/http_server_test_support.h
// -----------------------------------------------------------------------------
//
// Shared pieces of the tests that run HttpServer in this process (tests/http_server_test.cc,
// tests/http_hostile_client_test.cc):
//   * HoldingExecutor: a QueryExecutor that holds every request until the test calls
//     ReleaseAll(), which answers them in order, OK with no results, and logs each one. The test
//     decides when requests run (N of one tenant at once, none until a client has gone) and sees
//     which ones ran. Call ReleaseAll() between loop ticks or from a loop callback, never from
//     Submit(): an executor answers from a later callback (examples/http/executor.h).
//
// Example:
//
//   HoldingExecutor executor;
//   HttpServer server(*loop, executor, listen_fd, HttpServerOptions{});
//   // ... a client sends acme's "SELECT 1"; the loop runs until executor.held.size() == 1 ...
//   executor.ReleaseAll();  // on_done runs; executor.executed == {"acme:SELECT 1"}
#ifndef SQLOOP_TESTS_HTTP_SERVER_TEST_SUPPORT_H_
#define SQLOOP_TESTS_HTTP_SERVER_TEST_SUPPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "examples/http/executor.h"

namespace sqloop::examples::http::test_support {

class HoldingExecutor : public QueryExecutor {
 public:
  void Submit(ExecutorRequest& request) override {
    submitted++;
    held.push_back(&request);
  }
  [[nodiscard]] absl::string_view name() const override { return "holding"; }
  [[nodiscard]] std::vector<ExecutorStat> Stats() const override { return {}; }
  [[nodiscard]] uint64_t in_flight() const override { return held.size(); }

  // Answers every held request, in the order submitted; logs each as "tenant:first SQL".
  void ReleaseAll() {
    std::vector<ExecutorRequest*> answering;
    answering.swap(held);
    for (ExecutorRequest* request : answering) {
      const std::string sql = request->statements.empty() ? "" : request->statements[0].sql;
      executed.push_back(request->tenant + ":" + sql);
      request->results.assign(request->statements.size(), StatementResult{});
      request->on_done(*request, absl::OkStatus());
    }
  }

  uint64_t submitted = 0;
  std::vector<ExecutorRequest*> held;  // Submitted, not answered yet.
  std::vector<std::string> executed;   // One entry an answered request, in answering order.
};

}  // namespace sqloop::examples::http::test_support

#endif  // SQLOOP_TESTS_HTTP_SERVER_TEST_SUPPORT_H_
