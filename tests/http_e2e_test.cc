// End to end: the real sqloop_http program on loopback, driven by curl (a client nobody here
// wrote) and by raw sockets for what curl will not do (half a request, pipelining, a full
// pool). Each test starts its own server on port 0 in a fresh data directory, with the backend
// chosen through SQLOOP_BACKEND, and stops it with SIGTERM, expecting a clean exit.
//
// No sleeps: every wait is on an event (a line on the child's stdout, a response, EOF), each
// bounded by a receive or poll timeout (kWaitBound) so a broken server fails the test instead
// of hanging it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "examples/http/child_process.h"
#include "gtest/gtest.h"
#include "simdjson.h"
#include "tests/http_test_util.h"

namespace sqloop::examples::http {
namespace {

using sqloop::testing::JsonAt;
using sqloop::testing::WriteTokenFile;

// The longest any single wait may take before the test gives up on the server: generous, so a
// loaded machine never fails a correct server, and finite, so a broken one cannot hang the run.
constexpr int kWaitBoundSeconds = 30;

pid_t Spawn(std::vector<std::string> argv, std::vector<std::string> env, int& stdout_fd) {
  return SpawnWithStdoutPipe(std::move(argv), std::move(env), stdout_fd);
}

// ReadUntil with the test's bound on every wait.
bool ReadUntil(int fd, std::string& text, absl::FunctionRef<bool(const std::string&)> done) {
  return http::ReadUntil(fd, text, done, kWaitBoundSeconds);
}

struct Response {
  int status = 0;
  std::string headers;  // The final response's header block.
  std::string body;
};

// Splits what curl -i printed: skips interim "100 Continue" blocks.
Response ParseCurlOutput(const std::string& output) {
  Response response;
  std::string rest = output;
  for (;;) {
    const size_t end = rest.find("\r\n\r\n");
    if (end == std::string::npos) return response;
    response.headers = rest.substr(0, end + 2);
    rest = rest.substr(end + 4);
    const std::vector<std::string> words = absl::StrSplit(response.headers, ' ');
    if (words.size() < 2 || !absl::SimpleAtoi(words[1], &response.status)) return response;
    if (response.status != 100) break;
  }
  response.body = rest;
  return response;
}

class SqloopHttp {
 public:
  // Starts sqloop_http with `flags` on `backend`; port 0, a fresh temporary data directory.
  // Without --admin_token_file in `flags` it runs with --insecure_no_auth (on loopback).
  void Start(const std::string& backend, std::vector<std::string> flags) {
    char pattern[] = "/tmp/sqloop_http_e2e_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    backend_ = backend;
    std::vector<std::string> argv = {SQLOOP_HTTP_BINARY, "--port=0", "--data_dir=" + dir_};
    const bool with_auth = std::any_of(flags.begin(), flags.end(), [](const std::string& flag) {
      return absl::StartsWith(flag, "--admin_token_file=");
    });
    if (!with_auth) argv.push_back("--insecure_no_auth");
    argv.insert(argv.end(), flags.begin(), flags.end());
    pid_ = Spawn(argv, ChildEnvironment(backend), stdout_fd_);
    ASSERT_GT(pid_, 0) << "could not start " << SQLOOP_HTTP_BINARY;
    ASSERT_TRUE(ReadUntil(stdout_fd_, stdout_,
                          [](const std::string& text) { return absl::StrContains(text, "\n"); }));
    // "sqloop_http: listening on 127.0.0.1:PORT (backend NAME)"
    const size_t colon = stdout_.find("127.0.0.1:");
    ASSERT_NE(colon, std::string::npos) << stdout_;
    const std::string rest = stdout_.substr(colon + 10);
    ASSERT_TRUE(absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &port_)) << stdout_;
    ASSERT_TRUE(absl::StrContains(stdout_, "(backend " + backend + ")")) << stdout_;
  }

  // SIGTERM, then waits (bounded) for the program to say it stopped and exit.
  void Stop(int& exit_status) {
    ASSERT_GT(pid_, 0);
    ASSERT_EQ(kill(pid_, SIGTERM), 0);
    const bool finished = ReadUntil(stdout_fd_, stdout_, [](const std::string& text) {
      return absl::StrContains(text, "stopped cleanly");
    });
    if (!finished) kill(pid_, SIGKILL);  // Our own child, by pid: do not leave it behind.
    int status = 0;
    ASSERT_EQ(waitpid(pid_, &status, 0), pid_);
    pid_ = -1;
    ASSERT_TRUE(finished) << "sqloop_http did not stop within the bound";
    ASSERT_TRUE(WIFEXITED(status)) << "sqloop_http died from signal " << WTERMSIG(status);
    exit_status = WEXITSTATUS(status);
  }

  ~SqloopHttp() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    if (!dir_.empty()) {
      EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0);
    }
  }

  // Runs curl -i with `args` against this server; `path` is appended to the base URL.
  Response Curl(const std::string& method, const std::string& path,
                std::vector<std::string> args = {}) {
    std::vector<std::string> argv = {
        "curl", "-sS", "-i", "--noproxy", "*", "--max-time", absl::StrCat(kWaitBoundSeconds),
        "-X",   method};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(absl::StrCat("http://127.0.0.1:", port_, path));
    int out_fd = -1;
    const pid_t pid = Spawn(argv, ChildEnvironment(""), out_fd);
    EXPECT_GT(pid, 0) << "curl is missing: install it (.ci/install-deps test)";
    std::string output;
    ReadUntil(out_fd, output, [](const std::string&) { return false; });
    close(out_fd);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "curl failed: " << output;
    return ParseCurlOutput(output);
  }
  Response Query(const std::string& tenant, const std::string& body) {
    return Curl("POST", "/v1/db/" + tenant + "/query",
                {"-H", "Content-Type: application/json", "--data-binary", body});
  }

  // A raw, blocking client socket with a receive timeout of kWaitBoundSeconds.
  int Connect() const {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval bound{kWaitBoundSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    return fd;
  }

  const std::string& dir() const { return dir_; }
  const std::string& backend() const { return backend_; }

  // SIGKILL: the process dies wherever it is, with no chance to flush or close anything.
  void Kill() {
    ASSERT_GT(pid_, 0);
    ASSERT_EQ(kill(pid_, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid_, &status, 0), pid_);
    pid_ = -1;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }

 private:
  std::string dir_;
  std::string backend_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stdout_;
  uint32_t port_ = 0;
};

void SendAll(int fd, const std::string& bytes) {
  ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

// Reads one response with a Content-Length body. `eof` is set if the server closed first.
Response ReadResponse(int fd, std::string& buffer, bool& eof) {
  Response response;
  eof = false;
  char chunk[4096];
  for (;;) {
    const size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      const size_t length_at = buffer.find("Content-Length: ");
      size_t length = 0;
      if (length_at != std::string::npos && length_at < end) {
        length = std::strtoul(buffer.c_str() + length_at + 16, nullptr, 10);
      }
      if (buffer.size() >= end + 4 + length) {
        response = ParseCurlOutput(buffer.substr(0, end + 4));
        response.body = buffer.substr(end + 4, length);
        buffer.erase(0, end + 4 + length);
        return response;
      }
    }
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      // A reset is the peer closing too (a killed server's sockets are reset).
      eof = n == 0 || errno == ECONNRESET;
      EXPECT_TRUE(eof) << "no response within the bound: " << std::strerror(errno);
      return response;
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

// Waits (bounded by the socket's receive timeout) for the server to close; returns what it
// sent first, and whether EOF (not the timeout) ended the wait.
bool DrainUntilClosed(int fd, std::string& received) {
  char chunk[4096];
  for (;;) {
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;  // A reset is a close too; a timeout is not.
    received.append(chunk, static_cast<size_t>(n));
  }
}

void ExpectError(const Response& response, int status, const std::string& code,
                 const std::string& message_part) {
  EXPECT_EQ(response.status, status) << response.headers << response.body;
  EXPECT_EQ(JsonAt(response.body, "/error/code"), "\"" + code + "\"") << response.body;
  EXPECT_TRUE(absl::StrContains(JsonAt(response.body, "/error/message"), message_part))
      << response.body;
}

class HttpEndToEndTest : public ::testing::TestWithParam<std::string> {
 protected:
  void StartServer(std::vector<std::string> flags = {}) {
    server_.Start(GetParam(), std::move(flags));
  }
  void StopServerCleanly() {
    int exit_status = -1;
    server_.Stop(exit_status);
    EXPECT_EQ(exit_status, 0);
  }
  SqloopHttp server_;
};

TEST_P(HttpEndToEndTest, CreateWriteReadBackDelete) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Response created = server_.Curl("PUT", "/v1/db/acme");
  EXPECT_EQ(created.status, 201);
  EXPECT_EQ(created.body, R"({"created":"acme"})");
  EXPECT_TRUE(absl::StrContains(created.headers, "Content-Type: application/json"));
  ExpectError(server_.Curl("PUT", "/v1/db/acme"), 409, "conflict", "already exists");

  Response write = server_.Query(
      "acme",
      R"j({"statements":[{"sql":"CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)"},)j"
      R"j({"sql":"INSERT INTO t(name, score) VALUES (?, ?), (?, ?)",)j"
      R"("args":["h\u00e9 \"q\"\n", 1.5, null, 7]}]})");
  ASSERT_EQ(write.status, 200) << write.body;
  EXPECT_EQ(JsonAt(write.body, "/results/1/rows_changed"), "2");
  EXPECT_EQ(JsonAt(write.body, "/results/1/last_insert_id"), "2");

  Response read =
      server_.Query("acme", R"({"statements":[{"sql":"SELECT * FROM t ORDER BY id"}]})");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(read.body,
            "{\"results\":[{\"columns\":[\"id\",\"name\",\"score\"],\"rows\":[[1,\"h\xC3\xA9 "
            "\\\"q\\\"\\n\",1.5],[2,null,7.0]],\"rows_changed\":0,\"last_insert_id\":0}]}");

  Response stats = server_.Curl("GET", "/v1/stats");
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(JsonAt(stats.body, "/loop/backend"), "\"" + GetParam() + "\"");
  EXPECT_EQ(JsonAt(stats.body, "/executor/name"), "\"registry\"");
  EXPECT_EQ(JsonAt(stats.body, "/server/responses_by_status/201"), "1");
  EXPECT_EQ(JsonAt(stats.body, "/server/responses_by_status/409"), "1");
  EXPECT_EQ(JsonAt(stats.body, "/server/requests"), "5");

  EXPECT_EQ(server_.Curl("DELETE", "/v1/db/acme").status, 200);
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"SELECT 1"}]})"), 404, "not_found",
              "does not exist");
  StopServerCleanly();
}

TEST_P(HttpEndToEndTest, BadInputGetsTheRightStatusAndAJsonError) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--body_bytes_max=4096", "--header_bytes_max=2048"}));
  ASSERT_EQ(server_.Curl("PUT", "/v1/db/acme").status, 201);
  const std::string select = R"({"statements":[{"sql":"SELECT 1"}]})";

  ExpectError(server_.Query("acme", std::string(5000, ' ')), 413, "body_too_large", "4096");
  ExpectError(server_.Curl("GET", "/v1/stats", {"-H", "X-Big: " + std::string(3000, 'x')}), 431,
              "headers_too_large", "2048");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"SELECT 1"})"), 400, "malformed_json",
              "malformed JSON");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"SELECT ?","args":[[1]]}]})"), 400,
              "invalid_request", "statements[0].args[0]");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":42}]})"), 400, "invalid_request",
              "\\\"sql\\\" must be a string");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"SELECT * FROM nope"}]})"), 400,
              "invalid_argument", "no such table: nope");
  ExpectError(server_.Query("Acme", select), 400, "invalid_tenant", "'A' at position 0");
  ExpectError(server_.Curl("PUT", "/v1/db/..", {"--path-as-is"}), 400, "invalid_tenant", "'.'");
  ExpectError(server_.Curl("PUT", "/v1/db/" + std::string(65, 'a')), 400, "invalid_tenant",
              "limit is 64");
  ExpectError(server_.Query("ghost", select), 404, "not_found", "ghost");
  ExpectError(server_.Curl("GET", "/v1/nothing"), 404, "no_route", "/v1/nothing");
  const Response wrong_method = server_.Curl("GET", "/v1/db/acme/query");
  ExpectError(wrong_method, 405, "method_not_allowed", "use POST");
  EXPECT_TRUE(absl::StrContains(wrong_method.headers, "Allow: POST\r\n"));

  // Malformed HTTP is something curl will not send: a raw socket does.
  const int fd = server_.Connect();
  SendAll(fd, "GARBAGE / HTTP/1.1\r\n\r\n");
  std::string received;
  EXPECT_TRUE(DrainUntilClosed(fd, received)) << "the server kept a broken connection open";
  close(fd);
  const Response malformed = ParseCurlOutput(received);
  EXPECT_EQ(malformed.status, 400) << received;
  EXPECT_TRUE(absl::StrContains(received, "Connection: close"));
  EXPECT_TRUE(absl::StrContains(received, R"("code":"malformed_http")")) << received;

  // The server is still healthy, and it counted every error.
  const Response stats = server_.Curl("GET", "/v1/stats");
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(JsonAt(stats.body, "/server/errors"), "13");
  StopServerCleanly();
}

TEST_P(HttpEndToEndTest, ASlowClientIsAnswered408AndClosed) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--header_timeout_ms=200"}));
  const int fd = server_.Connect();
  SendAll(fd, "POST /v1/db/acme/query HTTP/1.1\r\nHost: x\r\nContent-Le");
  std::string received;
  EXPECT_TRUE(DrainUntilClosed(fd, received)) << "the server never closed the slow connection";
  close(fd);
  EXPECT_TRUE(absl::StartsWith(received, "HTTP/1.1 408 Request Timeout\r\n")) << received;
  EXPECT_TRUE(absl::StrContains(received, R"("code":"timeout")")) << received;

  // A connection that sends nothing is closed without an answer.
  const int silent = server_.Connect();
  std::string nothing;
  EXPECT_TRUE(DrainUntilClosed(silent, nothing));
  close(silent);
  EXPECT_EQ(nothing, "");

  const Response stats = server_.Curl("GET", "/v1/stats");
  EXPECT_EQ(JsonAt(stats.body, "/server/timeouts"), "2");
  StopServerCleanly();
}

TEST_P(HttpEndToEndTest, AnIdleKeepAliveConnectionIsClosed) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--idle_timeout_ms=200"}));
  const int fd = server_.Connect();
  SendAll(fd, "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buffer;
  bool eof = false;
  const Response first = ReadResponse(fd, buffer, eof);
  EXPECT_EQ(first.status, 200);
  EXPECT_TRUE(absl::StrContains(first.headers, "Connection: keep-alive"));
  std::string rest;
  EXPECT_TRUE(DrainUntilClosed(fd, rest)) << "the idle connection was never closed";
  EXPECT_EQ(rest, "");
  close(fd);
  StopServerCleanly();
}

TEST_P(HttpEndToEndTest, PipelinedRequestsAreAnsweredInOrder) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const int fd = server_.Connect();
  const std::string body = R"({"statements":[{"sql":"SELECT 1"}]})";
  SendAll(fd,
          "PUT /v1/db/p HTTP/1.1\r\n\r\n"
          "POST /v1/db/p/query HTTP/1.1\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n\r\n" + body +
              "GET /v1/nowhere HTTP/1.1\r\nConnection: close\r\n\r\n");
  std::string buffer;
  bool eof = false;
  EXPECT_EQ(ReadResponse(fd, buffer, eof).status, 201);
  const Response query = ReadResponse(fd, buffer, eof);
  EXPECT_EQ(query.status, 200);
  EXPECT_EQ(JsonAt(query.body, "/results/0/rows/0/0"), "1");
  const Response last = ReadResponse(fd, buffer, eof);
  EXPECT_EQ(last.status, 404);
  EXPECT_TRUE(absl::StrContains(last.headers, "Connection: close"));
  std::string rest;
  EXPECT_TRUE(DrainUntilClosed(fd, rest));
  close(fd);
  StopServerCleanly();
}

TEST_P(HttpEndToEndTest, ExpectContinueGets100BeforeTheBody) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_EQ(server_.Curl("PUT", "/v1/db/acme").status, 201);
  const int fd = server_.Connect();
  const std::string body = R"({"statements":[{"sql":"SELECT 2"}]})";
  SendAll(fd, "POST /v1/db/acme/query HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n");
  // Without the interim response this recv would wait for the whole bound and fail.
  std::string interim(25, '\0');
  ASSERT_EQ(recv(fd, interim.data(), interim.size(), MSG_WAITALL), 25);
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  SendAll(fd, body);
  std::string buffer;
  bool eof = false;
  const Response response = ReadResponse(fd, buffer, eof);
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(JsonAt(response.body, "/results/0/rows/0/0"), "2");
  close(fd);
  StopServerCleanly();
}

// Sends headers asking for "100 Continue" and waits for it: from then on the server has part of a
// request from `fd`, so the connection is busy (not idle) until the body comes.
void StartRequestAndWaitForContinue(int fd) {
  SendAll(fd,
          "POST /v1/db/acme/query HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 40\r\n\r\n");
  std::string interim(25, '\0');
  ASSERT_EQ(recv(fd, interim.data(), interim.size(), MSG_WAITALL), 25);
  ASSERT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
}

TEST_P(HttpEndToEndTest, AFullPoolOfBusyConnectionsPausesAccept) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--connections_max=2"}));
  const std::string stats_request = "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string buffer_c;
  bool eof = false;
  // A and B take the whole pool, each in the middle of a request: busy, so neither may be
  // closed to make room (only idle connections are).
  const int a = server_.Connect();
  ASSERT_NO_FATAL_FAILURE(StartRequestAndWaitForContinue(a));
  const int b = server_.Connect();
  ASSERT_NO_FATAL_FAILURE(StartRequestAndWaitForContinue(b));
  // C connects (the kernel's backlog takes it) and asks; only A's close lets it in.
  const int c = server_.Connect();
  SendAll(c, stats_request);
  close(a);
  const Response stats = ReadResponse(c, buffer_c, eof);
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(JsonAt(stats.body, "/server/connections_open_peak"), "2");
  EXPECT_EQ(JsonAt(stats.body, "/server/connections_max"), "2");
  EXPECT_NE(JsonAt(stats.body, "/server/accept_pauses"), "0");
  EXPECT_EQ(JsonAt(stats.body, "/server/idle_closed_for_capacity"), "0");
  EXPECT_EQ(JsonAt(stats.body, "/server/connections_accepted"), "3");
  close(b);
  close(c);
  StopServerCleanly();
}

// The security review's finding: connections_max idle keep-alive sockets used to fill the pool
// and stop accept, so a real request waited for an idle timeout. Now the oldest idle connection
// (accepted and silent, or kept alive after a response) is closed for a waiting client.
TEST_P(HttpEndToEndTest, IdleConnectionsAreClosedOldestFirstSoARealRequestGetsIn) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--connections_max=3", "--idle_timeout_ms=600000"}));
  const std::string stats_request = "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n";
  bool eof = false;
  // A connects and says nothing; B and C are answered once and stay open (keep-alive). The
  // kernel hands connections to accept in order, so A (before B's answer) is accepted first:
  // the pool is full of idle connections, A the oldest, then B, then C.
  const int a = server_.Connect();
  const int b = server_.Connect();
  std::string buffer_b;
  SendAll(b, stats_request);
  ASSERT_EQ(ReadResponse(b, buffer_b, eof).status, 200);
  const int c = server_.Connect();
  std::string buffer_c;
  SendAll(c, stats_request);
  const Response c_first = ReadResponse(c, buffer_c, eof);
  ASSERT_EQ(c_first.status, 200);
  ASSERT_EQ(JsonAt(c_first.body, "/server/connections_open"), "3") << "the pool is not full";
  ASSERT_EQ(JsonAt(c_first.body, "/server/idle_closed_for_capacity"), "0");

  // D is a real request: it is answered at once (the idle timeout is 10 minutes), and A, the
  // oldest idle connection, was closed for it.
  const int d = server_.Connect();
  std::string buffer_d;
  SendAll(d, stats_request);
  const Response d_stats = ReadResponse(d, buffer_d, eof);
  ASSERT_EQ(d_stats.status, 200) << "a real request was locked out by idle connections";
  EXPECT_EQ(JsonAt(d_stats.body, "/server/idle_closed_for_capacity"), "1");
  EXPECT_EQ(JsonAt(d_stats.body, "/server/connections_open_peak"), "3");
  std::string nothing;
  EXPECT_TRUE(DrainUntilClosed(a, nothing)) << "the oldest idle connection was not closed";
  EXPECT_EQ(nothing, "");

  // E: the next oldest idle connection is B (idle since its answer, before C's). C is kept.
  const int e = server_.Connect();
  std::string buffer_e;
  SendAll(e, stats_request);
  const Response e_stats = ReadResponse(e, buffer_e, eof);
  ASSERT_EQ(e_stats.status, 200);
  EXPECT_EQ(JsonAt(e_stats.body, "/server/idle_closed_for_capacity"), "2");
  EXPECT_TRUE(DrainUntilClosed(b, nothing)) << "B, the oldest idle connection, was not closed";
  // A busy connection was never taken: the limit held, and every close was of an idle one.
  EXPECT_EQ(JsonAt(e_stats.body, "/server/connections_accepted"), "5");
  EXPECT_EQ(JsonAt(e_stats.body, "/server/connections_open_peak"), "3");
  close(a);
  close(b);
  close(c);
  close(d);
  close(e);
  StopServerCleanly();
}

TEST_P(HttpEndToEndTest, SigtermClosesIdleConnectionsAndExitsZero) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_EQ(server_.Curl("PUT", "/v1/db/keep").status, 201);
  ASSERT_EQ(server_
                .Query("keep", R"j({"statements":[{"sql":"CREATE TABLE t(x)"},)j"
                               R"j({"sql":"INSERT INTO t VALUES (42)"}]})j")
                .status,
            200);
  const int idle = server_.Connect();
  SendAll(idle, "GET /v1/stats HTTP/1.1\r\n\r\n");
  std::string buffer;
  bool eof = false;
  ASSERT_EQ(ReadResponse(idle, buffer, eof).status, 200);
  StopServerCleanly();
  std::string rest;
  EXPECT_TRUE(DrainUntilClosed(idle, rest));
  close(idle);
  // What was acknowledged is on disk, in a file SQLite itself can read (the shell is not
  // needed: a second server run reads it back).
  SqloopHttp again;
  ASSERT_NO_FATAL_FAILURE(again.Start(GetParam(), {"--data_dir=" + server_.dir()}));
  const Response read = again.Query("keep", R"({"statements":[{"sql":"SELECT x FROM t"}]})");
  EXPECT_EQ(JsonAt(read.body, "/results/0/rows/0/0"), "42") << read.body;
  int exit_status = -1;
  again.Stop(exit_status);
  EXPECT_EQ(exit_status, 0);
}

TEST_P(HttpEndToEndTest, EmptySqlANulInSqlAndRepeatedKeysAre400AndRunNothing) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_EQ(server_.Curl("PUT", "/v1/db/acme").status, 201);
  // Before: an empty statement answered 200; text after an escaped NUL was dropped silently;
  // a repeated "sql" ran the last copy.
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":""}]})"), 400, "invalid_request",
              "\\\"sql\\\" is empty");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"  \n "}]})"), 400, "invalid_request",
              "\\\"sql\\\" is empty");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"CREATE TABLE a(x)\u0000 junk"}]})"),
              400, "invalid_request", "NUL character");
  ExpectError(server_.Query("acme", R"j({"statements":[{"sql":"CREATE TABLE b(x)",)j"
                                    R"j("sql":"CREATE TABLE c(x)"}]})j"),
              400, "invalid_request", "\\\"sql\\\" is given twice");
  ExpectError(server_.Query("acme", R"({"statements":[{"sql":"SELECT ?","args":[1],"args":[2]}]})"),
              400, "invalid_request", "\\\"args\\\" is given twice");
  // None of them ran: the tenant has no table.
  const Response tables =
      server_.Query("acme", R"({"statements":[{"sql":"SELECT count(*) FROM sqlite_master"}]})");
  ASSERT_EQ(tables.status, 200) << tables.body;
  EXPECT_EQ(JsonAt(tables.body, "/results/0/rows/0/0"), "0");
  StopServerCleanly();
}

std::vector<std::string> BearerHeader(const std::string& token) {
  return {"-H", "Authorization: Bearer " + token};
}

TEST_P(HttpEndToEndTest, EveryRouteNeedsItsTokenAndRefusalsRevealNoTenant) {
  char pattern[] = "/tmp/sqloop_http_token_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string token_dir = pattern;
  const std::string admin = "3b9f1c0e7a5d42b8a6e0c4f19d2b7e6a";
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--admin_token_file=" + WriteTokenFile(token_dir, admin, 0600)}));
  const std::string select = R"({"statements":[{"sql":"SELECT 1"}]})";
  auto query = [&](const std::string& tenant, std::vector<std::string> auth) {
    auth.insert(auth.end(), {"-H", "Content-Type: application/json", "--data-binary", select});
    return server_.Curl("POST", "/v1/db/" + tenant + "/query", auth);
  };

  // Without a token: 401 with the challenge, for every route, existing tenant or not.
  const Response no_token = server_.Curl("PUT", "/v1/db/acme");
  ExpectError(no_token, 401, "unauthenticated", "Bearer");
  EXPECT_TRUE(absl::StrContains(no_token.headers, "WWW-Authenticate: Bearer")) << no_token.headers;
  ExpectError(server_.Curl("GET", "/v1/stats"), 401, "unauthenticated", "Bearer");
  ExpectError(server_.Curl("POST", "/v1/db/acme/token"), 401, "unauthenticated", "Bearer");

  // The admin creates acme and gets its token; the token route mints the same one.
  const Response created = server_.Curl("PUT", "/v1/db/acme", BearerHeader(admin));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string acme_token = JsonAt(created.body, "/token");
  ASSERT_TRUE(absl::StartsWith(acme_token, "\"acme.")) << created.body;
  const std::string acme = acme_token.substr(1, acme_token.size() - 2);
  const Response minted = server_.Curl("POST", "/v1/db/acme/token", BearerHeader(admin));
  ASSERT_EQ(minted.status, 200) << minted.body;
  EXPECT_EQ(JsonAt(minted.body, "/token"), acme_token);
  ASSERT_EQ(server_.Curl("PUT", "/v1/db/globex", BearerHeader(admin)).status, 201);

  // acme's token: its own queries only.
  EXPECT_EQ(query("acme", BearerHeader(acme)).status, 200);
  EXPECT_EQ(query("acme", BearerHeader(admin)).status, 200) << "the admin token works anywhere";
  const Response other_existing = query("globex", BearerHeader(acme));
  const Response other_missing = query("ghost", BearerHeader(acme));
  ExpectError(other_existing, 403, "forbidden", "acme");
  EXPECT_EQ(other_missing.status, 403);
  // Identical but for the name the caller itself sent: nothing says globex exists.
  std::string missing_body = other_missing.body;
  missing_body.replace(missing_body.find("ghost"), 5, "globex");
  EXPECT_EQ(missing_body, other_existing.body);
  for (const auto& [method, path] :
       {std::pair<std::string, std::string>{"POST", "/v1/db/acme/token"}, {"GET", "/v1/stats"}}) {
    ExpectError(server_.Curl(method, path, BearerHeader(acme)), 403, "forbidden", "admin token");
  }
  // A tenant's token on PUT or DELETE: the same 403 for a tenant that exists and one that does
  // not.
  for (const std::string method : {"PUT", "DELETE"}) {
    const Response existing = server_.Curl(method, "/v1/db/globex", BearerHeader(acme));
    const Response missing = server_.Curl(method, "/v1/db/ghost", BearerHeader(acme));
    ExpectError(existing, 403, "forbidden", "admin token");
    EXPECT_EQ(existing.body, missing.body) << method;
    EXPECT_EQ(missing.status, 403) << method;
  }
  // PUT and DELETE without a valid token answer alike for a tenant that exists and one that
  // does not, and change nothing.
  const Response delete_existing = server_.Curl("DELETE", "/v1/db/globex", BearerHeader("x.y"));
  const Response delete_missing = server_.Curl("DELETE", "/v1/db/ghost", BearerHeader("x.y"));
  EXPECT_EQ(delete_existing.status, 401);
  EXPECT_EQ(delete_existing.body, delete_missing.body);
  EXPECT_EQ(server_.Curl("PUT", "/v1/db/globex").body, server_.Curl("PUT", "/v1/db/ghost").body);
  EXPECT_EQ(query("globex", BearerHeader(admin)).status, 200) << "globex was deleted";

  // Stats need the admin token, and show the checks went through the constant-time compare.
  const Response stats = server_.Curl("GET", "/v1/stats", BearerHeader(admin));
  ASSERT_EQ(stats.status, 200) << stats.body;
  EXPECT_EQ(JsonAt(stats.body, "/server/auth_enabled"), "1");
  EXPECT_EQ(JsonAt(stats.body, "/server/auth_unauthenticated"), "7");
  EXPECT_EQ(JsonAt(stats.body, "/server/auth_forbidden"), "8");
  uint64_t compares = 0;
  ASSERT_TRUE(
      absl::SimpleAtoi(JsonAt(stats.body, "/server/auth_constant_time_compares"), &compares));
  EXPECT_GE(compares, 15u);
  // The executor was never asked for a refused request: only the admin's and acme's own
  // requests reached it (2 PUTs, 3 queries).
  EXPECT_EQ(JsonAt(stats.body, "/executor/requests"), "5") << stats.body;
  StopServerCleanly();
  EXPECT_EQ(std::system(("rm -rf " + token_dir).c_str()), 0);
}

// Runs sqloop_http with `flags` (stderr joined to stdout) and returns what it printed; sets
// `exit_status`. For configurations it must refuse: it exits at once.
std::string RunRefused(const std::vector<std::string>& flags, int& exit_status) {
  std::string command = absl::StrCat(SQLOOP_HTTP_BINARY, " --port=0 --data_dir=/tmp/unused");
  for (const std::string& flag : flags) absl::StrAppend(&command, " '", flag, "'");
  int out_fd = -1;
  const pid_t pid =
      SpawnWithStdoutPipe({"sh", "-c", command + " 2>&1"}, ChildEnvironment(""), out_fd);
  EXPECT_GT(pid, 0);
  std::string output;
  const bool ended = ReadUntil(out_fd, output, [](const std::string& text) {
    return absl::StrContains(text, "listening on");
  });
  close(out_fd);
  if (absl::StrContains(output, "listening on")) kill(pid, SIGKILL);  // Our child, by pid.
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(ended);
  exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return output;
}

TEST(HttpProgramTest, RefusesToRunWithoutAuthExceptOnLoopbackInDevelopment) {
  int exit_status = 0;
  std::string out = RunRefused({}, exit_status);
  EXPECT_EQ(exit_status, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "--admin_token_file is required")) << out;
  out = RunRefused({"--insecure_no_auth", "--address=0.0.0.0"}, exit_status);
  EXPECT_EQ(exit_status, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "refused on --address=0.0.0.0")) << out;
  char pattern[] = "/tmp/sqloop_http_token_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  out = RunRefused({"--admin_token_file=" + WriteTokenFile(dir, std::string(40, 'k'), 0644)},
                   exit_status);
  EXPECT_EQ(exit_status, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "chmod 600")) << out;
  out = RunRefused({"--admin_token_file=" + WriteTokenFile(dir, "short", 0600)}, exit_status);
  EXPECT_EQ(exit_status, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "at least") || absl::StrContains(out, "must be 32")) << out;
  EXPECT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

// One keep-alive writer: inserts (writer, seq) for seq = 0, 1, ... and records every insert the
// server acknowledged, until the connection dies.
void RunWriter(const SqloopHttp& server, int writer, std::vector<int>& acked,
               std::atomic<int>& acked_total) {
  const int fd = server.Connect();
  std::string buffer;
  for (int seq = 0;; ++seq) {
    const std::string body = absl::StrCat(
        R"j({"statements":[{"sql":"INSERT INTO t(writer, seq) VALUES (?, ?)","args":[)j", writer,
        ",", seq, "]}]}");
    const std::string request = absl::StrCat(
        "POST /v1/db/durable/query HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
        "\r\n\r\n", body);
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      break;
    }
    bool eof = false;
    const Response response = ReadResponse(fd, buffer, eof);
    if (eof || response.status != 200) break;
    acked.push_back(seq);
    acked_total.fetch_add(1);
  }
  close(fd);
}

// Durability against a real process death. Four keep-alive writers insert rows and record each
// acknowledged one; the server is killed with SIGKILL once a varying number of writes (drawn
// per run and printed) has been acknowledged, so the kill lands while writes are in flight. A
// new server on the same directory must return every acknowledged row, and integrity_check must
// be ok. (Power loss, which SIGKILL does not model, is the simulator's job: db_crash_test.)
TEST_P(HttpEndToEndTest, EveryAcknowledgedWriteSurvivesSigkill) {
  constexpr int kWriters = 4;
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_EQ(server_.Curl("PUT", "/v1/db/durable").status, 201);
  ASSERT_EQ(server_
                .Query("durable",
                       R"j({"statements":[{"sql":)j"
                       R"j("CREATE TABLE t(writer INT, seq INT, PRIMARY KEY(writer, seq))"}]})j")
                .status,
            200);
  const int kill_after = 20 + static_cast<int>(getpid() % 100);
  std::atomic<int> acked_total{0};
  std::vector<std::vector<int>> acked(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] { RunWriter(server_, w, acked[w], acked_total); });
  }
  // Writers stop on their own only if the server fails them; then the kill comes at once.
  std::atomic<int> done{0};
  std::thread watcher([&] {
    for (std::thread& writer : writers) writer.join();
    done.store(1);
  });
  while (acked_total.load() < kill_after && done.load() == 0) std::this_thread::yield();
  ASSERT_NO_FATAL_FAILURE(server_.Kill());
  watcher.join();
  ASSERT_GE(acked_total.load(), kill_after) << "writes failed before the kill";

  SqloopHttp again;
  ASSERT_NO_FATAL_FAILURE(again.Start(GetParam(), {"--data_dir=" + server_.dir()}));
  const Response check =
      again.Query("durable", R"({"statements":[{"sql":"PRAGMA integrity_check"}]})");
  EXPECT_EQ(JsonAt(check.body, "/results/0/rows/0/0"), "\"ok\"") << check.body;
  const Response rows =
      again.Query("durable", R"({"statements":[{"sql":"SELECT writer, seq FROM t"}]})");
  ASSERT_EQ(rows.status, 200) << rows.body;
  simdjson::dom::parser parser;
  simdjson::dom::element document;
  ASSERT_EQ(parser.parse(rows.body).get(document), simdjson::SUCCESS);
  std::set<std::pair<int64_t, int64_t>> present;
  for (simdjson::dom::element row : document["results"].at(0)["rows"].get_array()) {
    present.insert({row.at(0).get_int64().value(), row.at(1).get_int64().value()});
  }
  for (int w = 0; w < kWriters; ++w) {
    for (int seq : acked[w]) {
      ASSERT_TRUE(present.count({w, seq}))
          << "acknowledged write (" << w << ", " << seq
          << ") is missing after SIGKILL; kill_after=" << kill_after;
    }
  }
  int exit_status = -1;
  again.Stop(exit_status);
  EXPECT_EQ(exit_status, 0);
}

std::string ParamName(const ::testing::TestParamInfo<std::string>& param) { return param.param; }

INSTANTIATE_TEST_SUITE_P(Backends, HttpEndToEndTest, ::testing::Values("io_uring", "fallback"),
                         ParamName);

}  // namespace
}  // namespace sqloop::examples::http
