// Adversarial end to end: the real sqloop_http program on loopback, attacked the way a hostile
// tenant would (docs/db.md, "One tenant among many"; docs/embedding.md, capacity and auth). Each
// test proves the attack happened (the answer that shows the statement ran, or was refused, and
// why), then checks what must hold afterwards through an ordinary request, and ends with SIGTERM
// and a clean exit within a bound.
//
// Every client here is a raw socket: an attacker does not use a polite client, and a raw socket
// can do what curl will not (hold a request open with "Expect: 100-continue", open 40 silent
// connections). No sleeps: every wait is on an event (a response, EOF, the child's exit), each
// bounded so that a broken server fails the test instead of hanging it. The bounds are hang
// detectors, never performance assertions.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "examples/http/child_process.h"
#include "gtest/gtest.h"
#include "simdjson.h"
#include "tests/http_test_util.h"

namespace sqloop::examples::http {
namespace {

using sqloop::testing::JsonAt;
using sqloop::testing::WriteTokenFile;

// The longest any one receive may wait before the test gives up on the server: generous, so a
// loaded machine never fails a correct server, and finite, so a broken one cannot hang the run.
constexpr int kWaitBoundSeconds = 30;

// The bound from SIGTERM to exit. A stopping server finishes the requests it has begun, so the
// longest drain it can justify is one request running out its whole budget of SQLite work
// after the signal (a streaming read: DatabaseOptions::request_vm_steps_max, 100 million
// steps: 5 to 8 s measured on a 2-core machine, more under a parallel test run). A server that
// has not exited within this is hung, or lets a tenant hold it open.
constexpr int kExitBoundSeconds = 30;

// How long a real request may wait behind idle connections (test 5). Far below the idle and
// header timeouts the test sets (10 minutes), so only closing idle connections for capacity can
// get it answered in time.
constexpr int kPromptBoundSeconds = 10;

constexpr const char* kRunawayCount =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
// Returns a row per step; the executor sees a WITH statement as a write (one slice in all).
constexpr const char* kRunawayStream =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c";
// The same stream as a read: it yields between rows, so only the request budget (or the
// executor's row cap) can end it.
constexpr const char* kRunawayStreamRead =
    "SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c)";
// A read that streams slowly: a row every 50,000 values (well inside one slice), so it runs
// for seconds without reaching the row cap, until its whole request budget is spent.
constexpr const char* kSlowStreamRead =
    "SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c) "
    "WHERE x % 50000 = 0";

struct Response {
  int status = 0;
  std::string headers;  // Status line and header block, up to the blank line.
  std::string body;
  bool eof = false;  // The server closed before a whole response arrived.
};

// {"statements":[{"sql":...},...]}, the SQL escaped for JSON.
std::string Statements(const std::vector<std::string>& sqls) {
  std::string body = R"({"statements":[)";
  for (size_t i = 0; i < sqls.size(); ++i) {
    const std::string sql = absl::StrReplaceAll(sqls[i], {{"\\", "\\\\"}, {"\"", "\\\""}});
    absl::StrAppend(&body, i == 0 ? "" : ",", R"({"sql":")", sql, R"("})");
  }
  return body + "]}";
}

std::string RequestBytes(const std::string& method, const std::string& path,
                         const std::string& body, const std::string& token,
                         const std::string& extra_headers = "") {
  std::string request = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: x\r\n");
  if (!token.empty()) absl::StrAppend(&request, "Authorization: Bearer ", token, "\r\n");
  if (!body.empty() || method == "POST") {
    absl::StrAppend(&request, "Content-Type: application/json\r\nContent-Length: ", body.size(),
                    "\r\n");
  }
  absl::StrAppend(&request, extra_headers, "\r\n");
  return request;
}

// One keep-alive client connection: a raw, blocking socket whose every receive is bounded.
class Client {
 public:
  Client(uint16_t port, int receive_bound_seconds, std::vector<std::string>* log) : log_(log) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    timeval bound{receive_bound_seconds, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
    timeval connect_bound{kWaitBoundSeconds, 0};  // Bounds connect() too, on Linux.
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &connect_bound, sizeof(connect_bound));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0)
        << std::strerror(errno);
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void SendRaw(const std::string& bytes) {
    ASSERT_EQ(send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()))
        << std::strerror(errno);
  }
  void Send(const std::string& method, const std::string& path, const std::string& body = "",
            const std::string& token = "") {
    SendRaw(RequestBytes(method, path, body, token) + body);
  }
  void SendQuery(const std::string& tenant, const std::vector<std::string>& sqls,
                 const std::string& token = "") {
    Send("POST", "/v1/db/" + tenant + "/query", Statements(sqls), token);
  }

  // Reads one response with a Content-Length body (interim "100 Continue" skipped).
  Response Read() {
    Response response;
    char chunk[4096];
    for (;;) {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos && absl::StartsWith(buffer_, "HTTP/1.1 100 ")) {
        buffer_.erase(0, end + 4);
        continue;
      }
      if (end != std::string::npos) {
        const std::string headers = buffer_.substr(0, end + 2);
        size_t length = 0;
        const size_t at = headers.find("Content-Length: ");
        if (at != std::string::npos) length = std::strtoul(headers.c_str() + at + 16, nullptr, 10);
        if (buffer_.size() >= end + 4 + length) {
          response.headers = headers;
          response.body = buffer_.substr(end + 4, length);
          buffer_.erase(0, end + 4 + length);
          const std::vector<std::string> words = absl::StrSplit(headers, ' ');
          if (words.size() < 2 || !absl::SimpleAtoi(words[1], &response.status)) {
            ADD_FAILURE() << "no status line: " << headers;
          }
          if (log_ != nullptr) log_->push_back(response.headers + response.body);
          return response;
        }
      }
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) {
        response.eof = n == 0 || errno == ECONNRESET;
        EXPECT_TRUE(response.eof) << "no response within the bound: " << std::strerror(errno);
        return response;
      }
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  // Waits for "HTTP/1.1 100 Continue": the server has begun reading this request, so it is no
  // longer idle and neither capacity nor a stop may drop it unanswered.
  void WaitForContinue() {
    std::string interim(25, '\0');
    ASSERT_EQ(recv(fd_, interim.data(), interim.size(), MSG_WAITALL), 25);
    ASSERT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  }

  // Waits (bounded) for the server to close; true on EOF or reset, false on the timeout.
  bool ClosedByServer() {
    char chunk[4096];
    for (;;) {
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }
  // Whether the server has closed this connection already (no wait).
  bool AlreadyClosed() {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return false;
    char byte = 0;
    const ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  int fd_ = -1;
  std::string buffer_;
  std::vector<std::string>* log_;
};

class Server {
 public:
  // Starts sqloop_http on `backend` with `flags`, port 0, in `dir` (a fresh temporary directory
  // when empty). Without --admin_token_file in `flags` it runs with --insecure_no_auth.
  void Start(const std::string& backend, std::vector<std::string> flags, std::string dir = "") {
    if (dir.empty()) {
      char pattern[] = "/tmp/sqloop_http_adv_XXXXXX";
      ASSERT_NE(mkdtemp(pattern), nullptr);
      dir = pattern;
      owns_dir_ = true;
    }
    dir_ = dir;
    std::vector<std::string> argv = {SQLOOP_HTTP_BINARY, "--port=0", "--data_dir=" + dir_};
    if (std::none_of(flags.begin(), flags.end(), [](const std::string& flag) {
          return absl::StartsWith(flag, "--admin_token_file=");
        })) {
      argv.push_back("--insecure_no_auth");
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    pid_ = SpawnWithStdoutPipe(argv, ChildEnvironment(backend), stdout_fd_);
    ASSERT_GT(pid_, 0) << "could not start " << SQLOOP_HTTP_BINARY;
    ASSERT_TRUE(ReadUntil(
        stdout_fd_, stdout_, [](const std::string& text) { return absl::StrContains(text, "\n"); },
        kWaitBoundSeconds));
    // "sqloop_http: listening on 127.0.0.1:PORT (backend NAME)"
    const size_t colon = stdout_.find("127.0.0.1:");
    ASSERT_NE(colon, std::string::npos) << stdout_;
    const std::string rest = stdout_.substr(colon + 10);
    uint32_t port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &port)) << stdout_;
    port_ = static_cast<uint16_t>(port);
    ASSERT_TRUE(absl::StrContains(stdout_, "(backend " + backend + ")")) << stdout_;
  }

  // Sends `signal_number` to the server (our own child, by pid).
  void Signal(int signal_number) {
    ASSERT_GT(pid_, 0);
    ASSERT_EQ(kill(pid_, signal_number), 0);
    signalled_ = std::chrono::steady_clock::now();
  }

  // After Signal(SIGTERM): waits for the exit with a deadline kExitBoundSeconds after the
  // signal: waitpid(WNOHANG) in a loop, sleeping only in poll() on the process (a pidfd,
  // readable when it exits) and on its stdout. Fails the test if it has not exited by then (and
  // kills it), if a signal ended it, or if it exited other than 0 after saying it stopped
  // cleanly.
  void ExpectExitWithinBound() {
    ASSERT_GT(pid_, 0);
    int status = 0;
    const bool exited = WaitForExit(status);
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    ASSERT_TRUE(exited) << "sqloop_http did not exit within " << kExitBoundSeconds
                        << " s of SIGTERM; it printed: " << stdout_;
    // Not asserted (a hang detector is not a performance test), but worth seeing in the log.
    std::printf(
        "sqloop_http exited %.3f s after SIGTERM\n",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled_).count());
    ASSERT_TRUE(WIFEXITED(status)) << "sqloop_http died from signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0) << stdout_;
    EXPECT_TRUE(absl::StrContains(stdout_, "stopped cleanly")) << stdout_;
    ExpectNoResponseRevealsTheDataDirectory();
  }

  // SIGTERM, and a clean exit within the bound.
  void StopWithinBound() {
    ASSERT_NO_FATAL_FAILURE(Signal(SIGTERM));
    ASSERT_NO_FATAL_FAILURE(ExpectExitWithinBound());
  }

  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);  // Our own child, by pid: never left behind.
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    if (owns_dir_) {
      EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0);
    }
  }

  // A new connection whose every response is logged for the data-directory check.
  std::unique_ptr<Client> Connect(int receive_bound_seconds = kWaitBoundSeconds) {
    return std::make_unique<Client>(port_, receive_bound_seconds, &responses_);
  }
  // One request on its own connection.
  Response Call(const std::string& method, const std::string& path, const std::string& body = "",
                const std::string& token = "") {
    std::unique_ptr<Client> client = Connect();
    client->Send(method, path, body, token);
    return client->Read();
  }
  Response Query(const std::string& tenant, const std::vector<std::string>& sqls,
                 const std::string& token = "") {
    return Call("POST", "/v1/db/" + tenant + "/query", Statements(sqls), token);
  }
  // The value at `pointer` in /v1/stats.
  std::string Stat(const std::string& pointer, const std::string& token = "") {
    const Response stats = Call("GET", "/v1/stats", "", token);
    EXPECT_EQ(stats.status, 200) << stats.body;
    return JsonAt(stats.body, pointer);
  }

  const std::string& dir() const { return dir_; }

 private:
  bool WaitForExit(int& status) {
    const auto deadline = signalled_ + std::chrono::seconds(kExitBoundSeconds);
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    bool exited = false;
    for (;;) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited = true;
        break;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      // Without a pidfd (an old kernel) the pipe's EOF comes just before the exit: poll it, and
      // wake every 10 ms to ask waitpid again.
      const int wait_ms = pidfd >= 0 ? static_cast<int>(left.count())
                                     : std::min(10, static_cast<int>(left.count()));
      pollfd fds[2] = {{pidfd, POLLIN, 0}, {stdout_fd_, POLLIN, 0}};
      poll(fds, 2, wait_ms);
      if (stdout_fd_ >= 0 && (fds[1].revents & (POLLIN | POLLHUP)) != 0) {
        char chunk[4096];
        const ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
        if (n > 0) stdout_.append(chunk, static_cast<size_t>(n));
        if (n <= 0) {
          close(stdout_fd_);
          stdout_fd_ = -1;  // poll() ignores a negative descriptor.
        }
      }
    }
    if (pidfd >= 0) close(pidfd);
    // What the program printed last ("stopped cleanly") may still be in the pipe.
    if (exited && stdout_fd_ >= 0) {
      ReadUntil(
          stdout_fd_, stdout_, [](const std::string&) { return false; }, kWaitBoundSeconds);
    }
    return exited;
  }

  // A refusal may say what was refused, never where the host keeps its files.
  void ExpectNoResponseRevealsTheDataDirectory() const {
    char resolved[PATH_MAX];
    const std::string real = realpath(dir_.c_str(), resolved) != nullptr ? resolved : dir_;
    for (const std::string& response : responses_) {
      EXPECT_FALSE(absl::StrContains(response, dir_) || absl::StrContains(response, real))
          << "a response reveals the data directory " << dir_ << ":\n"
          << response;
    }
  }

  std::string dir_;
  bool owns_dir_ = false;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stdout_;
  uint16_t port_ = 0;
  std::chrono::steady_clock::time_point signalled_;
  std::vector<std::string> responses_;
};

void ExpectError(const Response& response, int status, const std::string& code,
                 const std::string& message_part) {
  EXPECT_EQ(response.status, status) << response.headers << response.body;
  EXPECT_EQ(JsonAt(response.body, "/error/code"), "\"" + code + "\"") << response.body;
  EXPECT_TRUE(absl::StrContains(JsonAt(response.body, "/error/message"), message_part))
      << "expected \"" << message_part << "\" in " << response.body;
}

// The statement ran and returned `rows` (JSON) as its first result.
void ExpectRows(const Response& response, const std::string& rows) {
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(JsonAt(response.body, "/results/0/rows"), rows) << response.body;
}

class HttpAdversarialTest : public ::testing::TestWithParam<std::string> {
 protected:
  void StartServer(std::vector<std::string> flags = {}) {
    server_.Start(GetParam(), std::move(flags));
  }
  void CreateTenant(const std::string& tenant, const std::string& token = "") {
    const Response created = server_.Call("PUT", "/v1/db/" + tenant, "", token);
    ASSERT_EQ(created.status, 201) << created.body;
  }
  Server server_;
};

// ---- 1. Runaway queries ------------------------------------------------------------------------

TEST_P(HttpAdversarialTest, ARunawayQueryFailsAloneOnItsBudgetWhileAnotherTenantIsAnswered) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  ASSERT_NO_FATAL_FAILURE(CreateTenant("b"));
  ASSERT_EQ(server_.Query("b", {"CREATE TABLE t(x)", "INSERT INTO t VALUES (7)"}).status, 200);

  // A's runaway first, then B's query on another connection before A's answer is read: B is
  // served although A's statement runs on the same single thread.
  std::unique_ptr<Client> a = server_.Connect();
  std::unique_ptr<Client> b = server_.Connect();
  a->SendQuery("a", {kRunawayCount});
  b->SendQuery("b", {"SELECT x FROM t"});
  ASSERT_NO_FATAL_FAILURE(ExpectRows(b->Read(), "[[7]]"));
  const Response runaway = a->Read();
  ExpectError(runaway, 422, "budget_exceeded", "slice_vm_steps_max");
  EXPECT_FALSE(absl::StrContains(runaway.headers, "Retry-After")) << "retrying cannot help";

  // Streaming runaways end with an error too: as a write (one slice in all) and as a read (it
  // yields between rows; the executor's row cap or the request budget ends it).
  int over_budget = 1;
  for (const char* stream : {kRunawayStream, kRunawayStreamRead}) {
    a->SendQuery("a", {stream});
    const Response streamed = a->Read();
    ASSERT_FALSE(streamed.eof) << stream;
    if (streamed.status == 422) {
      ExpectError(streamed, 422, "budget_exceeded", "vm_steps_max");
      ++over_budget;
    } else {
      ExpectError(streamed, 400, "invalid_argument", "rows in one request");
    }
  }

  // A's database is unharmed (the rolled-back runaway writes left nothing held), and the host
  // counted each refusal.
  a->SendQuery("a", {"CREATE TABLE u(x)", "INSERT INTO u VALUES (1)", "SELECT x FROM u"});
  const Response after = a->Read();
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(JsonAt(after.body, "/results/2/rows"), "[[1]]") << after.body;
  EXPECT_EQ(server_.Stat("/server/responses_by_status/422"), absl::StrCat(over_budget));
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
}

// Sends `sqls` to `tenant` held open with "Expect: 100-continue": once the interim response
// arrives the server is reading this request, so a stop must finish it rather than drop it.
// Then the body, and SIGTERM at once, before any answer. Returns the answer; the server must
// close the connection after it. (The answer itself may say keep-alive: a statement that holds
// the loop for its whole slice can be answered in the tick before the signal is read.)
Response SendThenSigterm(Server& server, const std::string& tenant,
                         const std::vector<std::string>& sqls) {
  std::unique_ptr<Client> client = server.Connect();
  const std::string body = Statements(sqls);
  client->SendRaw(
      RequestBytes("POST", "/v1/db/" + tenant + "/query", body, "", "Expect: 100-continue\r\n"));
  EXPECT_NO_FATAL_FAILURE(client->WaitForContinue());
  client->SendRaw(body);
  EXPECT_NO_FATAL_FAILURE(server.Signal(SIGTERM));
  const Response response = client->Read();
  EXPECT_TRUE(client->ClosedByServer()) << "a stopping server kept the connection open";
  return response;
}

TEST_P(HttpAdversarialTest, SigtermRightAfterARunawayQueryExitsZeroWithinTheBound) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  // Either the budget stopped it before the signal was read (422), or the stop cancelled it
  // before it ran (503).
  const Response response = SendThenSigterm(server_, "a", {kRunawayCount});
  if (response.status == 422) {
    ExpectError(response, 422, "budget_exceeded", "slice_vm_steps_max");
  } else {
    ExpectError(response, 503, "unavailable", "cancelled");
  }
  ASSERT_NO_FATAL_FAILURE(server_.ExpectExitWithinBound());
}

TEST_P(HttpAdversarialTest, SigtermDuringAStreamingRunawayReadExitsZeroWithinTheBound) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  // The read yields between rows; the stop cancels it (503), unless the executor's row cap
  // stopped it first (400).
  const Response streamed = SendThenSigterm(server_, "a", {kRunawayStreamRead});
  if (streamed.status == 503) {
    ExpectError(streamed, 503, "unavailable", "cancelled");
  } else {
    ExpectError(streamed, 400, "invalid_argument", "rows in one request");
  }
  ASSERT_NO_FATAL_FAILURE(server_.ExpectExitWithinBound());
}

// A stopping server must not wait for tenants' long statements: each slow read below would run
// its whole request budget (seconds each, two at a time per database), so without
// HttpServer::Stop() cancelling running statements the drain took over a minute (measured:
// 8 reads answered at 16.6 ... 66.0 s, exit 65.2 s after SIGTERM). Each begun request is
// answered (503, Cancelled) and its connection closed.
TEST_P(HttpAdversarialTest, SigtermWithManySlowReadsExitsWithinTheBound) {
  constexpr int kReads = 8;
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  std::vector<std::unique_ptr<Client>> readers;
  const std::string body = Statements({kSlowStreamRead});
  for (int i = 0; i < kReads; ++i) {
    readers.push_back(server_.Connect());
    readers.back()->SendRaw(
        RequestBytes("POST", "/v1/db/a/query", body, "", "Expect: 100-continue\r\n"));
    ASSERT_NO_FATAL_FAILURE(readers.back()->WaitForContinue());
    readers.back()->SendRaw(body);
  }
  // Every read has reached the executor before the signal (each round trip is an event; the
  // reads yield between rows, so stats are answered while they run).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitBoundSeconds);
  std::string in_flight;
  while ((in_flight = server_.Stat("/executor/in_flight")) != absl::StrCat(kReads) &&
         std::chrono::steady_clock::now() < deadline) {
  }
  ASSERT_EQ(in_flight, absl::StrCat(kReads)) << "the reads never all reached the executor";
  ASSERT_NO_FATAL_FAILURE(server_.Signal(SIGTERM));
  ASSERT_NO_FATAL_FAILURE(server_.ExpectExitWithinBound());
  for (const std::unique_ptr<Client>& reader : readers) {
    const Response response = reader->Read();
    EXPECT_FALSE(response.eof) << "a begun request was dropped unanswered";
    EXPECT_EQ(response.status, 503) << response.body;
    EXPECT_TRUE(absl::StrContains(response.body, "cancelled")) << response.body;
    EXPECT_TRUE(absl::StrContains(response.headers, "Connection: close")) << response.headers;
  }
}

// ---- 2. Hostile pragmas ------------------------------------------------------------------------

struct Refusal {
  std::string sql;
  std::string message_part;
};

void ExpectRefused(Server& server, const std::string& tenant, const Refusal& refusal) {
  SCOPED_TRACE(refusal.sql);
  ExpectError(server.Query(tenant, {refusal.sql}), 400, "invalid_argument", refusal.message_part);
}

constexpr const char* kNotOnTheList = "is not on the list of pragmas";
constexpr const char* kReadOnly = "may be read but not set";

TEST_P(HttpAdversarialTest, PragmasOnTheProcessAreRefusedAndEveryTenantStillWorks) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  ASSERT_NO_FATAL_FAILURE(CreateTenant("b"));
  ASSERT_EQ(server_.Query("b", {"CREATE TABLE t(x)"}).status, 200);
  for (const Refusal& refusal : std::vector<Refusal>{
           {"PRAGMA hard_heap_limit=100000", kNotOnTheList},
           {"PRAGMA soft_heap_limit=1", kNotOnTheList},
           {"PRAGMA threads=8", kNotOnTheList},
           {"PRAGMA hard_heap_limit", kNotOnTheList},  // Not even read.
       }) {
    ExpectRefused(server_, "a", refusal);
  }
  // A 100 KB heap limit, had it been set, would fail a 1 MB value and the opening of a tenant.
  ASSERT_NO_FATAL_FAILURE(
      ExpectRows(server_.Query("a", {"SELECT length(randomblob(1000000))"}), "[[1000000]]"));
  const Response b = server_.Query(
      "b", {"INSERT INTO t VALUES (randomblob(500000))", "SELECT count(*), sum(length(x)) FROM t"});
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(JsonAt(b.body, "/results/1/rows"), "[[1,500000]]");
  ASSERT_NO_FATAL_FAILURE(CreateTenant("newcomer"));
  const Response newcomer = server_.Query(
      "newcomer", {"CREATE TABLE n(v)", "INSERT INTO n VALUES ('fresh')", "SELECT v FROM n"});
  ASSERT_EQ(newcomer.status, 200) << newcomer.body;
  EXPECT_EQ(JsonAt(newcomer.body, "/results/2/rows"), R"([["fresh"]])");
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
}

TEST_P(HttpAdversarialTest, PragmasOnIntegrityAndSizeAreRefusedAndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  ASSERT_EQ(
      server_
          .Query("a", {"CREATE TABLE c(x CHECK (x > 0))", "CREATE TABLE parent(id PRIMARY KEY)",
                       "CREATE TABLE child(p REFERENCES parent(id))"})
          .status,
      200);
  const std::vector<std::string> settings = {"PRAGMA query_only",     "PRAGMA cache_size",
                                             "PRAGMA schema_version", "PRAGMA trusted_schema",
                                             "PRAGMA max_page_count", "PRAGMA foreign_keys",
                                             "PRAGMA journal_mode"};
  std::vector<std::string> before;
  for (const std::string& setting : settings) {
    const Response read = server_.Query("a", {setting});
    ASSERT_EQ(read.status, 200) << setting << ": " << read.body;
    before.push_back(JsonAt(read.body, "/results/0/rows"));
  }
  ASSERT_EQ(before.back(), R"([["wal"]])");

  for (const Refusal& refusal : std::vector<Refusal>{
           {"PRAGMA query_only=1", kReadOnly},
           {"PRAGMA ignore_check_constraints=ON", kNotOnTheList},
           {"PRAGMA cache_size=-2000000", kReadOnly},
           {"PRAGMA schema_version=1", kReadOnly},
           {"PRAGMA trusted_schema=ON", kReadOnly},
           {"PRAGMA max_page_count=1", kReadOnly},
           {"PRAGMA foreign_keys=ON", "DatabaseOptions::foreign_keys"},
           {"PRAGMA wal_checkpoint", "checkpoints the WAL itself"},
           {"PRAGMA wal_checkpoint(TRUNCATE)", "checkpoints the WAL itself"},
       }) {
    ExpectRefused(server_, "a", refusal);
  }

  // Nothing changed: every setting reads as before ...
  for (size_t i = 0; i < settings.size(); ++i) {
    const Response read = server_.Query("a", {settings[i]});
    EXPECT_EQ(JsonAt(read.body, "/results/0/rows"), before[i]) << settings[i];
  }
  // ... a write succeeds (not query_only), one larger than a page fits (max_page_count is not
  // 1), the CHECK constraint still holds, and foreign keys are still the database's option
  // (off: an orphan is accepted).
  const Response write = server_.Query(
      "a", {"INSERT INTO c VALUES (1)", "INSERT INTO c VALUES (length(randomblob(100000)))"});
  ASSERT_EQ(write.status, 200) << write.body;
  EXPECT_EQ(JsonAt(write.body, "/results/1/rows_changed"), "1");
  ExpectError(server_.Query("a", {"INSERT INTO c VALUES (-1)"}), 409, "conflict",
              "CHECK constraint failed");
  EXPECT_EQ(server_.Query("a", {"INSERT INTO child VALUES (42)"}).status, 200);
  ASSERT_NO_FATAL_FAILURE(ExpectRows(server_.Query("a", {"SELECT count(*) FROM c"}), "[[2]]"));
  ASSERT_NO_FATAL_FAILURE(ExpectRows(server_.Query("a", {"PRAGMA quick_check"}), R"([["ok"]])"));
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
}

TEST_P(HttpAdversarialTest, NothingRevealsTheHostsFilesOrProcessPointers) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  for (const Refusal& refusal : std::vector<Refusal>{
           {"PRAGMA database_list", kNotOnTheList},
           {"SELECT * FROM pragma_database_list", kNotOnTheList},
           {"SELECT file FROM pragma_database_list()", kNotOnTheList},
           {"SELECT hex(fts3_tokenizer('simple'))", "process pointers"},
           {"ATTACH DATABASE 'spy.db' AS spy", "ATTACH and DETACH"},
       }) {
    ExpectRefused(server_, "a", refusal);
  }
  // Errors SQLite words itself name no file either.
  ExpectError(server_.Query("a", {"SELECT * FROM nope"}), 400, "invalid_argument",
              "no such table: nope");
  ASSERT_NO_FATAL_FAILURE(ExpectRows(server_.Query("a", {"SELECT 1"}), "[[1]]"));
  // StopWithinBound checks that no response of this run contains the data directory.
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
}

// ---- 3. One connection's state -----------------------------------------------------------------

TEST_P(HttpAdversarialTest, ConnectionStateIsRefusedAndExplainIsARead) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  ASSERT_EQ(server_.Query("a", {"CREATE TABLE kv(k, v)"}).status, 200);
  for (const Refusal& refusal : std::vector<Refusal>{
           {"SELECT last_insert_rowid()", "use RETURNING"},
           {"INSERT INTO kv VALUES (1, last_insert_rowid())", "use RETURNING"},
           {"SELECT changes()", "Request::changes"},
           {"SELECT total_changes()", "reports on the connection"},
           {"CREATE TEMP TABLE t(x)", "belong to one connection"},
           {"CREATE TABLE temp.t(x)", "belong to one connection"},
       }) {
    ExpectRefused(server_, "a", refusal);
  }
  // EXPLAIN describes the insert (200, its program) and runs nothing.
  const Response explain = server_.Query("a", {"EXPLAIN INSERT INTO kv VALUES (1,2)"});
  ASSERT_EQ(explain.status, 200) << explain.body;
  EXPECT_TRUE(absl::StrContains(explain.body, R"("Insert")")) << explain.body;
  ASSERT_NO_FATAL_FAILURE(ExpectRows(server_.Query("a", {"SELECT count(*) FROM kv"}), "[[0]]"));
  // What to use instead works: RETURNING, and the request's own results.
  const Response returning = server_.Query("a", {"INSERT INTO kv VALUES (1,2) RETURNING rowid"});
  ASSERT_NO_FATAL_FAILURE(ExpectRows(returning, "[[1]]"));
  EXPECT_EQ(JsonAt(returning.body, "/results/0/last_insert_id"), "1");
  // No table t anywhere: the refused TEMP tables were never created.
  ASSERT_NO_FATAL_FAILURE(ExpectRows(
      server_.Query("a", {"SELECT count(*) FROM sqlite_master WHERE name = 't'"}), "[[0]]"));
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
}

// ---- 4. SIGTERM after a refused setting --------------------------------------------------------

TEST_P(HttpAdversarialTest, SigtermAfterQueryOnlyAndAnInsertExitsZeroAndKeepsTheRow) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(CreateTenant("a"));
  ASSERT_EQ(server_.Query("a", {"CREATE TABLE t(x)"}).status, 200);
  ExpectRefused(server_, "a", {"PRAGMA query_only=1", kReadOnly});
  const Response insert = server_.Query("a", {"INSERT INTO t VALUES (42)"});
  ASSERT_EQ(insert.status, 200) << insert.body;
  EXPECT_EQ(JsonAt(insert.body, "/results/0/rows_changed"), "1");
  // A write racing the stop is either committed and acknowledged (200) or cancelled before it
  // ran (503): never both, never neither.
  const Response raced = SendThenSigterm(server_, "a", {"INSERT INTO t VALUES (43)"});
  ASSERT_TRUE(raced.status == 200 || raced.status == 503) << raced.body;
  if (raced.status == 503) ExpectError(raced, 503, "unavailable", "cancelled before it ran");
  ASSERT_NO_FATAL_FAILURE(server_.ExpectExitWithinBound());

  // The acknowledged rows are on disk, the cancelled one is not, and the database is not
  // query_only.
  Server again;
  ASSERT_NO_FATAL_FAILURE(again.Start(GetParam(), {}, server_.dir()));
  ASSERT_NO_FATAL_FAILURE(ExpectRows(again.Query("a", {"SELECT x FROM t ORDER BY x"}),
                                     raced.status == 200 ? "[[42],[43]]" : "[[42]]"));
  ASSERT_NO_FATAL_FAILURE(ExpectRows(again.Query("a", {"PRAGMA query_only"}), "[[0]]"));
  ASSERT_NO_FATAL_FAILURE(again.StopWithinBound());
}

// ---- 5. Idle sockets ---------------------------------------------------------------------------

TEST_P(HttpAdversarialTest, IdleSocketsCannotStarveARealRequest) {
  constexpr int kConnectionsMax = 16;
  constexpr int kIdle = 40;
  // Timeouts of 10 minutes: nothing but closing idle connections for room can free a slot
  // within the test's bounds.
  ASSERT_NO_FATAL_FAILURE(StartServer({absl::StrCat("--connections_max=", kConnectionsMax),
                                       "--idle_timeout_ms=600000", "--header_timeout_ms=600000"}));
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < kIdle; ++i) idle.push_back(server_.Connect());  // They send nothing.

  std::unique_ptr<Client> real = server_.Connect(kPromptBoundSeconds);
  real->Send("GET", "/v1/stats");
  const Response stats = real->Read();
  ASSERT_EQ(stats.status, 200) << "a real request waited more than " << kPromptBoundSeconds
                               << " s behind " << kIdle << " idle connections";
  // The kernel hands connections to accept in connect order: each one past the pool closed the
  // oldest idle one, and the real request took the last place.
  constexpr int kClosed = kIdle + 1 - kConnectionsMax;
  EXPECT_EQ(JsonAt(stats.body, "/server/connections_accepted"), absl::StrCat(kIdle + 1));
  EXPECT_EQ(JsonAt(stats.body, "/server/idle_closed_for_capacity"), absl::StrCat(kClosed));
  EXPECT_EQ(JsonAt(stats.body, "/server/connections_open_peak"), absl::StrCat(kConnectionsMax));
  for (int i = 0; i < kClosed; ++i) {
    EXPECT_TRUE(idle[i]->ClosedByServer()) << "idle connection " << i << " was not closed";
  }
  for (int i = kClosed; i < kIdle; ++i) {
    EXPECT_FALSE(idle[i]->AlreadyClosed()) << "idle connection " << i << " was closed early";
  }
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
  for (int i = kClosed; i < kIdle; ++i) {
    EXPECT_TRUE(idle[i]->ClosedByServer()) << "idle connection " << i << " outlived the stop";
  }
}

// ---- 6. Auth -----------------------------------------------------------------------------------

// The whole response as bytes, with the tenant name the caller itself sent replaced.
std::string Bytes(const Response& response, const std::string& tenant) {
  return absl::StrReplaceAll(response.headers + response.body, {{tenant, "<tenant>"}});
}

TEST_P(HttpAdversarialTest, ATenantTokenReachesOnlyItsTenantAndRefusalsRevealNoTenant) {
  char pattern[] = "/tmp/sqloop_http_adv_token_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string token_dir = pattern;
  const std::string admin = "9c41e0d7b2a85f36e1c07d4a9b2f58e3";
  ASSERT_NO_FATAL_FAILURE(StartServer({"--admin_token_file=" + WriteTokenFile(token_dir, admin)}));
  // "bravo1" exists, "bravo2" (as long) never does.
  const Response created = server_.Call("PUT", "/v1/db/alpha1", "", admin);
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string quoted = JsonAt(created.body, "/token");
  ASSERT_TRUE(absl::StartsWith(quoted, "\"alpha1.")) << created.body;
  const std::string alpha = quoted.substr(1, quoted.size() - 2);
  ASSERT_NO_FATAL_FAILURE(CreateTenant("bravo1", admin));
  ASSERT_EQ(
      server_.Query("bravo1", {"CREATE TABLE secret(s)", "INSERT INTO secret VALUES ('x')"}, admin)
          .status,
      200);

  // alpha1's token works on alpha1 (the attack below is with a valid token) ...
  ASSERT_NO_FATAL_FAILURE(ExpectRows(server_.Query("alpha1", {"SELECT 1"}, alpha), "[[1]]"));
  // ... and on no other tenant, existing or not: the same 403, byte for byte.
  const Response existing = server_.Query("bravo1", {"SELECT s FROM secret"}, alpha);
  const Response missing = server_.Query("bravo2", {"SELECT s FROM secret"}, alpha);
  ExpectError(existing, 403, "forbidden", "alpha1");
  EXPECT_FALSE(absl::StrContains(existing.body, "\"x\"")) << existing.body;
  EXPECT_EQ(Bytes(existing, "bravo1"), Bytes(missing, "bravo2"));

  // PUT and DELETE: 401 without a token or with a forged one, 403 with a tenant's; each the
  // same bytes for a tenant that exists and one that does not.
  const std::string forged = "bravo1." + std::string(64, '0');
  for (const std::string method : {"PUT", "DELETE"}) {
    for (const std::string& token : {std::string(), forged, alpha}) {
      SCOPED_TRACE(method + " with token \"" + token + "\"");
      const Response on_existing = server_.Call(method, "/v1/db/bravo1", "", token);
      const Response on_missing = server_.Call(method, "/v1/db/bravo2", "", token);
      if (token == alpha) {
        ExpectError(on_existing, 403, "forbidden", "admin token");
      } else {
        ExpectError(on_existing, 401, "unauthenticated", "");
        EXPECT_TRUE(absl::StrContains(on_existing.headers, "WWW-Authenticate: Bearer"));
      }
      EXPECT_EQ(Bytes(on_existing, "bravo1"), Bytes(on_missing, "bravo2"));
    }
  }
  // A forged token on a query is 401 too, and the tenant's token cannot read the host's stats.
  ExpectError(server_.Query("bravo1", {"SELECT 1"}, forged), 401, "unauthenticated", "");
  ExpectError(server_.Call("GET", "/v1/stats", "", alpha), 403, "forbidden", "admin token");

  // The refusals changed nothing: bravo1 and its data are there, bravo2 still is not.
  ASSERT_NO_FATAL_FAILURE(
      ExpectRows(server_.Query("bravo1", {"SELECT s FROM secret"}, admin), R"([["x"]])"));
  ExpectError(server_.Query("bravo2", {"SELECT 1"}, admin), 404, "not_found", "bravo2");
  ASSERT_NO_FATAL_FAILURE(server_.StopWithinBound());
  EXPECT_EQ(std::system(("rm -rf " + token_dir).c_str()), 0);
}

std::string ParamName(const ::testing::TestParamInfo<std::string>& param) { return param.param; }

INSTANTIATE_TEST_SUITE_P(Backends, HttpAdversarialTest, ::testing::Values("io_uring", "fallback"),
                         ParamName);

}  // namespace
}  // namespace sqloop::examples::http
