// HttpServer in this process, on a real loop and loopback sockets, with an executor that holds
// every request until the test releases it: what an end-to-end run cannot make happen on
// purpose (N requests of one tenant running at once) happens here exactly.
//
// No sleeps: the test runs the loop one tick at a time until a condition holds, and a loop timer
// (kWaitBound) bounds every wait, so a broken server fails the test instead of hanging it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "examples/http/server.h"
#include "gtest/gtest.h"
#include "sqloop/loop/loop.h"
#include "tests/http_server_test_support.h"
#include "tests/run_loop_until.h"
#include "tests/test_backends.h"

namespace sqloop::examples::http {
namespace {

using test_support::HoldingExecutor;
using testing::TestBackend;

constexpr absl::Duration kWaitBound = absl::Seconds(30);

class HttpServerTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    if (!GetParam().real_descriptors) GTEST_SKIP() << "needs real sockets";
    loop_ = std::make_unique<loop::Loop>(GetParam().make(), loop::LoopOptions{});
    absl::StatusOr<int> fd = ListenTcp("127.0.0.1", 0, port_);
    ASSERT_TRUE(fd.ok()) << fd.status();
    listen_fd_ = *fd;
  }
  void TearDown() override {
    for (const int fd : clients_) close(fd);
    if (server_ != nullptr) {
      server_->Stop();
      executor_.ReleaseAll();
      EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
      server_.reset();
    }
    if (listen_fd_ >= 0) close(listen_fd_);
  }
  void StartServer(HttpServerOptions options) {
    server_ = std::make_unique<HttpServer>(*loop_, executor_, listen_fd_, options);
    server_->Start();
  }

  // Runs loop ticks until `done()`; false if kWaitBound passed first.
  bool RunUntil(const std::function<bool()>& done) {
    return testing::RunLoopUntil(*loop_, kWaitBound, done);
  }

  // A non-blocking client that has sent `request`.
  int Send(const std::string& request) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port_);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    clients_.push_back(fd);
    return fd;
  }

  // Runs the loop until a whole response (headers and Content-Length body) is on `fd`.
  std::string Answer(int fd) {
    std::string received;
    const bool whole = RunUntil([&] {
      char chunk[4096];
      const ssize_t n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) received.append(chunk, static_cast<size_t>(n));
      const size_t end = received.find("\r\n\r\n");
      const size_t length_at = received.find("Content-Length: ");
      if (end == std::string::npos || length_at == std::string::npos) return false;
      return received.size() >= end + 4 + std::stoul(received.substr(length_at + 16));
    });
    EXPECT_TRUE(whole) << "no whole response within the bound: " << received;
    return received;
  }

  static std::string Query(const std::string& tenant) {
    const std::string body = R"({"statements":[{"sql":"SELECT 1"}]})";
    return absl::StrCat("POST /v1/db/", tenant, "/query HTTP/1.1\r\nContent-Length: ", body.size(),
                        "\r\n\r\n", body);
  }

  std::unique_ptr<loop::Loop> loop_;
  HoldingExecutor executor_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::vector<int> clients_;
};

TEST_P(HttpServerTest, ATenantOverItsLimitGets503WhileOthersRun) {
  HttpServerOptions options;
  options.tenant_requests_max = 2;
  StartServer(options);
  // Two of acme's requests run (held by the executor): acme is at its limit.
  Send(Query("acme"));
  Send(Query("acme"));
  ASSERT_TRUE(RunUntil([&] { return executor_.held.size() == 2; }));
  // A third is refused without reaching the executor, naming the limit.
  const std::string refused = Answer(Send(Query("acme")));
  EXPECT_TRUE(absl::StartsWith(refused, "HTTP/1.1 503 ")) << refused;
  EXPECT_TRUE(absl::StrContains(refused, "Retry-After: 1\r\n")) << refused;
  EXPECT_TRUE(absl::StrContains(refused, R"("code":"tenant_busy")")) << refused;
  EXPECT_TRUE(absl::StrContains(refused, "tenant_requests_max")) << refused;
  EXPECT_EQ(executor_.submitted, 2u);
  EXPECT_EQ(server_->stats().tenant_busy, 1u);
  // Another tenant is not held back by acme.
  Send(Query("globex"));
  ASSERT_TRUE(RunUntil([&] { return executor_.held.size() == 3; }));
  EXPECT_EQ(executor_.held.back()->tenant, "globex");
  // Once acme's requests are answered, acme runs again: the slots come back.
  executor_.ReleaseAll();
  const int again = Send(Query("acme"));
  ASSERT_TRUE(RunUntil([&] { return executor_.held.size() == 1; }));
  executor_.ReleaseAll();
  EXPECT_TRUE(absl::StartsWith(Answer(again), "HTTP/1.1 200 ")) << "acme's slots were not freed";
  EXPECT_EQ(server_->stats().tenant_busy, 1u);
}

TEST_P(HttpServerTest, RefusedTokensNeverReachTheExecutor) {
  HttpServerOptions options;
  options.auth = {.enabled = true, .admin_token = std::string(32, 'a')};
  StartServer(options);
  const absl::StatusOr<Authenticator> auth = Authenticator::FromOptions(options.auth);
  ASSERT_TRUE(auth.ok());
  const std::string globex = auth->TenantToken("globex");
  const std::string no_token = Answer(Send(Query("acme")));
  EXPECT_TRUE(absl::StartsWith(no_token, "HTTP/1.1 401 ")) << no_token;
  std::string with_other = Query("acme");
  with_other.insert(with_other.find("\r\n") + 2, "Authorization: Bearer " + globex + "\r\n");
  const std::string forbidden = Answer(Send(with_other));
  EXPECT_TRUE(absl::StartsWith(forbidden, "HTTP/1.1 403 ")) << forbidden;
  EXPECT_EQ(executor_.submitted, 0u) << "a refused request reached the executor";
  // Negative control: globex's own token does reach it.
  std::string own = Query("globex");
  own.insert(own.find("\r\n") + 2, "Authorization: Bearer " + globex + "\r\n");
  Send(own);
  ASSERT_TRUE(RunUntil([&] { return executor_.submitted == 1; }));
  EXPECT_EQ(server_->auth_stats().tenant_grants, 1u);
}

// ListenTcp's socket has TCP_NODELAY, and the connections it accepts inherit it, so an answer
// never waits for the client's acknowledgement of the one before (pipelined requests did).
TEST_P(HttpServerTest, ListenTcpsConnectionsSendAtOnce) {
  const int client = Send("");
  const int accepted = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0);
  int on = 0;
  socklen_t size = sizeof(on);
  EXPECT_EQ(getsockopt(listen_fd_, IPPROTO_TCP, TCP_NODELAY, &on, &size), 0);
  EXPECT_NE(on, 0) << "the listening socket";
  on = 0;
  EXPECT_EQ(getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &on, &size), 0);
  EXPECT_NE(on, 0) << "an accepted connection";
  close(accepted);
  EXPECT_GE(client, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, HttpServerTest,
                         ::testing::ValuesIn(testing::RealDescriptorBackends()),
                         [](const ::testing::TestParamInfo<TestBackend>& param) {
                           return param.param.name;
                         });

}  // namespace
}  // namespace sqloop::examples::http
