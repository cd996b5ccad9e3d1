// Hostile clients against HttpServer in this process, on a real loop and loopback sockets: sizes
// over the limits, lying Content-Lengths, broken pipelines, half-closes, resets, a flood on one
// connection, and Stop() with requests half-sent. Each test checks that every complete request
// is answered exactly once (or, after a framing error, never executed), that one connection's
// input touches no other, and (in TearDown) that no descriptor outlives the server.
//
// No sleeps: the test turns the loop itself until a condition holds, bounded by a loop timer
// (kWaitBound) so that a broken server fails the test instead of hanging it.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
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

using testing::TestBackend;

constexpr absl::Duration kWaitBound = absl::Seconds(30);

int OpenDescriptors() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (dirent* entry = readdir(dir)) count += entry->d_name[0] != '.';
  closedir(dir);
  return count;
}

// A HoldingExecutor that, with `auto_release`, also answers by itself: from a zero timer on the
// loop after a Submit.
class RecordingExecutor final : public test_support::HoldingExecutor {
 public:
  void Submit(ExecutorRequest& request) override {
    HoldingExecutor::Submit(request);
    if (!auto_release || wake_armed) return;
    wake_armed = true;
    wake.user_data = this;
    wake.callback = [](loop::Loop&, loop::Completion& c) {
      auto& self = *static_cast<RecordingExecutor*>(c.user_data);
      self.wake_armed = false;
      self.ReleaseAll();
      return loop::Action::kDisarm;
    };
    loop->Timer(wake, absl::ZeroDuration());
  }
  loop::Loop* loop = nullptr;
  loop::Completion wake;
  bool wake_armed = false;
  bool auto_release = false;
};

struct Client {
  int fd = -1;
  std::string in;
  bool eof = false;
  std::vector<std::string> responses;  // Whole responses, in arrival order.

  // Reads what has arrived and splits off whole responses.
  void Pump() {
    char chunk[16384];
    ssize_t n;
    while ((n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT)) > 0) in.append(chunk, n);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
    for (;;) {
      const size_t end = in.find("\r\n\r\n");
      if (end == std::string::npos) return;
      size_t length = 0;
      const size_t at = in.find("Content-Length: ");
      if (at != std::string::npos && at < end) length = std::stoul(in.substr(at + 16));
      if (in.size() < end + 4 + length) return;
      responses.push_back(in.substr(0, end + 4 + length));
      in.erase(0, end + 4 + length);
    }
  }
};

std::string Query(const std::string& tenant, const std::string& sql) {
  const std::string body = absl::StrCat(R"({"statements":[{"sql":")", sql, R"("}]})");
  return absl::StrCat("POST /v1/db/", tenant, "/query HTTP/1.1\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

std::string Post(const std::string& body) {
  return absl::StrCat("POST /v1/db/acme/query HTTP/1.1\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

bool HasStatus(const std::string& response, int status) {
  return absl::StartsWith(response, absl::StrCat("HTTP/1.1 ", status, " "));
}

class HttpHostileClientTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  void SetUp() override {
    if (!GetParam().real_descriptors) GTEST_SKIP() << "needs real sockets";
    loop_ = std::make_unique<loop::Loop>(GetParam().make(), loop::LoopOptions{});
    executor_.loop = loop_.get();
    absl::StatusOr<int> fd = ListenTcp("127.0.0.1", 0, port_);
    ASSERT_TRUE(fd.ok()) << fd.status();
    listen_fd_ = *fd;
    descriptors_before_ = OpenDescriptors();
  }
  void TearDown() override {
    for (Client* client : clients_) close(client->fd);
    if (server_ != nullptr) {
      server_->Stop();
      executor_.auto_release = true;
      EXPECT_TRUE(RunUntil([&] { return server_->drained(); })) << "Stop() never drained";
      EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
      EXPECT_TRUE(executor_.held.empty()) << "a request was never answered";
      server_.reset();
      EXPECT_EQ(OpenDescriptors(), descriptors_before_) << "a descriptor leaked";
    }
    if (listen_fd_ >= 0) close(listen_fd_);
  }
  void StartServer(HttpServerOptions options = {}) {
    options.header_bytes_max = 1024;
    options.body_bytes_max = 4096;
    server_ = std::make_unique<HttpServer>(*loop_, executor_, listen_fd_, options);
    server_->Start();
  }

  // Turns the loop until `done()` (pumping every client first); false if kWaitBound passed.
  bool RunUntil(const std::function<bool()>& done) {
    return testing::RunLoopUntil(
        *loop_, kWaitBound,
        [&] {
          for (Client* client : clients_) client->Pump();
          return done();
        },
        [&] {
          if (executor_.auto_release) executor_.ReleaseAll();
        });
  }

  Client& Connect() {
    auto& client = owned_.emplace_back(std::make_unique<Client>());
    client->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port_);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(client->fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    clients_.push_back(client.get());
    return *client;
  }
  static void Write(Client& client, const std::string& bytes) {
    ASSERT_EQ(send(client.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // Sends `bytes` on a new connection and waits for `count` responses and the server's close.
  Client& Exchange(const std::string& bytes, size_t count) {
    Client& client = Connect();
    Write(client, bytes);
    EXPECT_TRUE(RunUntil([&] { return client.responses.size() >= count && client.eof; }))
        << "got " << client.responses.size() << " responses, eof " << client.eof;
    EXPECT_EQ(client.responses.size(), count);
    return client;
  }

  std::unique_ptr<loop::Loop> loop_;
  RecordingExecutor executor_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int descriptors_before_ = 0;
  std::vector<std::unique_ptr<Client>> owned_;
  std::vector<Client*> clients_;
};

TEST_P(HttpHostileClientTest, OversizedHeaderIs431AndLeavesAnotherTenantsRequestAlone) {
  StartServer();
  executor_.auto_release = true;
  Client& other = Connect();
  Write(other, Query("globex", "SELECT 1"));
  std::string big = Query("acme", "SELECT 2");
  big.insert(big.find("\r\n") + 2, "X-Pad: " + std::string(2000, 'p') + "\r\n");
  Client& hostile = Exchange(big, 1);
  EXPECT_TRUE(HasStatus(hostile.responses.at(0), 431)) << hostile.responses.at(0);
  ASSERT_TRUE(RunUntil([&] { return other.responses.size() == 1; }));
  EXPECT_TRUE(HasStatus(other.responses[0], 200)) << other.responses[0];
  EXPECT_EQ(executor_.executed, std::vector<std::string>{"globex:SELECT 1"});
}

// The limit is on the head as received: header lines with empty values take their bytes, though
// their names alone stay under it.
TEST_P(HttpHostileClientTest, ManyEmptyHeadersCountTowardTheHeaderLimit) {
  StartServer();
  std::string padded = Query("acme", "SELECT 1");
  std::string headers;
  while (headers.size() < 3 * 1024) headers += "A:\r\n";
  padded.insert(padded.find("\r\n") + 2, headers);
  Client& hostile = Exchange(padded, 1);
  EXPECT_TRUE(HasStatus(hostile.responses.at(0), 431)) << hostile.responses.at(0);
  EXPECT_TRUE(executor_.held.empty() && executor_.executed.empty());
}

TEST_P(HttpHostileClientTest, OversizedBodiesAre413BeforeTheExecutor) {
  StartServer();
  Client& declared = Exchange(
      "POST /v1/db/acme/query HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4097\r\n\r\n", 1);
  EXPECT_TRUE(HasStatus(declared.responses.at(0), 413)) << "no 100 Continue may come first";
  std::string chunked = "POST /v1/db/acme/query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; i++) chunked += "400\r\n" + std::string(1024, ' ') + "\r\n";
  Client& streamed = Exchange(chunked + "0\r\n\r\n", 1);
  EXPECT_TRUE(HasStatus(streamed.responses.at(0), 413)) << streamed.responses.at(0);
  EXPECT_TRUE(executor_.held.empty() && executor_.executed.empty());
  EXPECT_EQ(server_->stats().responses_by_status[413], 2u);
}

TEST_P(HttpHostileClientTest, ContentLengthWithChunkedIs400AndNeverExecuted) {
  StartServer();
  Client& client = Exchange(
      "POST /v1/db/acme/query HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n",
      1);
  EXPECT_TRUE(HasStatus(client.responses.at(0), 400)) << client.responses.at(0);
  EXPECT_TRUE(executor_.held.empty() && executor_.executed.empty());
}

TEST_P(HttpHostileClientTest, ShortBodyThenCloseIsNeverExecutedAndFreesTheConnection) {
  StartServer();
  Client& client = Connect();
  Write(client, "POST /v1/db/acme/query HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"statements\"");
  ASSERT_TRUE(RunUntil([&] { return server_->stats().connections_accepted == 1; }));
  shutdown(client.fd, SHUT_WR);
  ASSERT_TRUE(RunUntil([&] { return server_->open_connections() == 0; }));
  EXPECT_TRUE(client.responses.empty());
  EXPECT_EQ(server_->stats().requests, 0u);
  EXPECT_TRUE(executor_.held.empty() && executor_.executed.empty());
}

TEST_P(HttpHostileClientTest, BadJsonIsAnsweredOnAConnectionThatStillServes) {
  StartServer();
  executor_.auto_release = true;
  Client& client = Connect();
  Write(client, Post("{\"statements\":[{\"sql\":") + Post(R"({"statements":{"sql":"SELECT 1"}})") +
                    Post(R"([[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]])") +
                    Post(R"({"statements":[{"sql":7}]})") + Query("acme", "SELECT 9"));
  ASSERT_TRUE(RunUntil([&] { return client.responses.size() == 5; }));
  for (int i = 0; i < 4; i++) EXPECT_TRUE(HasStatus(client.responses[i], 400)) << i;
  EXPECT_TRUE(HasStatus(client.responses[4], 200)) << client.responses[4];
  EXPECT_EQ(executor_.executed, std::vector<std::string>{"acme:SELECT 9"});
  EXPECT_FALSE(client.eof);
}

TEST_P(HttpHostileClientTest, MalformedRequestMidPipelineEndsItAfterAnsweringThoseBefore) {
  StartServer();
  executor_.auto_release = true;
  Client& client = Exchange(Query("acme", "SELECT 1") + Query("acme", "SELECT 2") +
                                "POST /v1/db/acme/query HTTP/1.1\r\nContent-Length: zz\r\n\r\n" +
                                Query("acme", "SELECT 3"),
                            3);
  EXPECT_TRUE(HasStatus(client.responses.at(0), 200));
  EXPECT_TRUE(HasStatus(client.responses.at(1), 200));
  EXPECT_TRUE(HasStatus(client.responses.at(2), 400)) << client.responses.at(2);
  EXPECT_TRUE(absl::StrContains(client.responses.at(2), "Connection: close"));
  EXPECT_EQ(executor_.executed, (std::vector<std::string>{"acme:SELECT 1", "acme:SELECT 2"}));
}

TEST_P(HttpHostileClientTest, HalfClosedClientStillGetsItsAnswer) {
  StartServer();
  Client& client = Connect();
  Write(client, Query("acme", "INSERT 1"));
  shutdown(client.fd, SHUT_WR);
  ASSERT_TRUE(RunUntil([&] { return executor_.held.size() == 1; }));
  executor_.ReleaseAll();
  ASSERT_TRUE(RunUntil([&] { return client.responses.size() == 1 && client.eof; }));
  EXPECT_TRUE(HasStatus(client.responses[0], 200)) << client.responses[0];
  EXPECT_EQ(executor_.executed, std::vector<std::string>{"acme:INSERT 1"});
}

TEST_P(HttpHostileClientTest, ResetBeforeTheAnswerKeepsTheWriteAndTheServer) {
  StartServer();
  Client& rude = Connect();
  Write(rude, Query("acme", "INSERT 1") + Query("acme", "INSERT 2"));
  ASSERT_TRUE(RunUntil([&] { return executor_.held.size() == 1; }));
  const linger reset{.l_onoff = 1, .l_linger = 0};  // close() sends RST: the send gets EPIPE.
  ASSERT_EQ(setsockopt(rude.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
  close(rude.fd);
  rude.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // A placeholder TearDown closes.
  rude.eof = true;
  executor_.auto_release = true;
  ASSERT_TRUE(RunUntil([&] { return server_->open_connections() == 0; }));
  EXPECT_EQ(executor_.executed.at(0), "acme:INSERT 1") << "the first write was not kept";
  EXPECT_LE(executor_.executed.size(), 2u);
  Client& polite = Exchange(Query("acme", "SELECT 1") + "GET /v1/stats HTTP/1.0\r\n\r\n", 2);
  EXPECT_TRUE(HasStatus(polite.responses[0], 200) && HasStatus(polite.responses[1], 200));
}

TEST_P(HttpHostileClientTest, AFloodOnOneConnectionDoesNotStarveAnother) {
  constexpr int kFlood = 2000;
  StartServer();
  executor_.auto_release = true;
  Client& flood = Connect();
  Client& other = Connect();
  std::string requests;
  for (int i = 0; i < kFlood; i++) requests += Query("acme", absl::StrCat("SELECT ", i));
  size_t sent = 0;
  auto feed = [&] {  // Keeps the flood's pipe full without blocking the test.
    const ssize_t n =
        send(flood.fd, requests.data() + sent, requests.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<size_t>(n);
  };
  ASSERT_TRUE(RunUntil([&] {
    feed();
    return flood.responses.size() >= 10;
  }));
  Write(other, Query("globex", "SELECT 1"));
  ASSERT_TRUE(RunUntil([&] {
    feed();
    return other.responses.size() == 1;
  }));
  const size_t flood_answered = flood.responses.size();
  EXPECT_LT(flood_answered, static_cast<size_t>(kFlood) / 2) << "the other connection waited";
  ASSERT_TRUE(RunUntil([&] {
    feed();
    return flood.responses.size() == kFlood;
  }));
  for (int i = 0; i < kFlood; i++) {
    ASSERT_EQ(flood.responses[i].find("HTTP/1.1 200 "), 0u) << i;
  }
  EXPECT_EQ(executor_.executed.size(), static_cast<size_t>(kFlood) + 1);
  EXPECT_EQ(executor_.executed.back(), absl::StrCat("acme:SELECT ", kFlood - 1));
}

TEST_P(HttpHostileClientTest, StopAnswersCompleteRequestsAndClosesTheRest) {
  HttpServerOptions options;
  options.header_timeout = absl::Milliseconds(300);  // How long a half-sent request may hold Stop.
  options.linger_timeout = absl::Milliseconds(300);
  StartServer(options);
  Client& running = Connect();
  Write(running, Query("acme", "INSERT 1"));
  Client& pipelined = Connect();
  Write(pipelined, Query("globex", "INSERT 2") + Query("globex", "INSERT 3"));
  Client& idle = Connect();
  Client& half_headers = Connect();
  Write(half_headers, "POST /v1/db/acme/query HTTP/1.1\r\nContent-Le");
  Client& half_body = Connect();
  const std::string finishing = Query("initech", "INSERT 4");
  Write(half_body, finishing.substr(0, finishing.size() - 5));
  ASSERT_TRUE(RunUntil(
      [&] { return executor_.held.size() == 2 && server_->stats().connections_accepted == 5; }));
  server_->Stop();
  ASSERT_TRUE(RunUntil([&] { return idle.eof; })) << "an idle connection outlived Stop()";
  executor_.ReleaseAll();
  Write(half_body, finishing.substr(finishing.size() - 5));
  executor_.auto_release = true;
  ASSERT_TRUE(RunUntil([&] { return server_->drained(); }));
  for (Client* answered : {&running, &pipelined, &half_body}) {
    ASSERT_EQ(answered->responses.size(), 1u);
    EXPECT_TRUE(HasStatus(answered->responses[0], 200)) << answered->responses[0];
    EXPECT_TRUE(absl::StrContains(answered->responses[0], "Connection: close"));
    EXPECT_TRUE(answered->eof);
  }
  ASSERT_EQ(half_headers.responses.size(), 1u);
  EXPECT_TRUE(HasStatus(half_headers.responses[0], 408)) << half_headers.responses[0];
  EXPECT_TRUE(idle.responses.empty());
  EXPECT_EQ(executor_.executed,
            (std::vector<std::string>{"acme:INSERT 1", "globex:INSERT 2", "initech:INSERT 4"}));
}

INSTANTIATE_TEST_SUITE_P(Backends, HttpHostileClientTest,
                         ::testing::ValuesIn(testing::RealDescriptorBackends()),
                         [](const ::testing::TestParamInfo<TestBackend>& param) {
                           return param.param.name;
                         });

}  // namespace
}  // namespace sqloop::examples::http
