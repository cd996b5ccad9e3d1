// examples/http/server.h
// -----------------------------------------------------------------------------
//
// SQL over HTTP for many tenants, on the sqloop loop: the largest example host application.
//
// The server accepts on a listening socket and serves HTTP/1.1 with keep-alive through the
// loop's socket operations (io_uring or the fallback), one explicit state machine per connection
// (diagram and transition table in server.cc and docs/embedding.md). Requests go to a
// `QueryExecutor` (examples/http/executor.h); routes and the JSON formats are in
// examples/http/handler.h.
//
// Design invariants:
//   1. Connections come from a pool sized at construction (`connections_max`). When every
//      connection is busy the listener stops accepting and clients wait in the kernel's listen
//      backlog; the first connection to close resumes accepting. We chose that over "accept and
//      answer 503": it costs no descriptor, no memory and no send per refused client, and it is
//      what examples/echo.h does, so the pattern is the same everywhere. (A client that must
//      know quickly uses a connect timeout.)
//   1a. Idle connections never lock a client out. A connection is idle while it waits for a
//      request of which no byte has arrived: just accepted, or kept alive after a response. Idle
//      connections sit in a list ordered by when they became idle. While the pool is full but
//      some connection is idle the listener keeps accepting; a client accepted then is held
//      (one at most, `pending_fd_`) while the oldest idle connection is closed, and takes its
//      place. O(1) per accept. Otherwise an attacker holding connections_max idle sockets (and
//      reconnecting before idle_timeout) would keep every real request waiting in the backlog.
//   1b. One tenant cannot take all the executor's capacity: at most `tenant_requests_max`
//      requests per tenant run at once; one more is answered 503 tenant_busy with Retry-After.
//   1c. With auth enabled (`auth`, examples/http/auth.h) every route but an unknown one needs a
//      bearer token, checked before the body is parsed and before the executor is asked, so a
//      401 or 403 never depends on whether the tenant exists.
//   2. Each connection has exactly two completions: `io` (the one socket operation in flight:
//      recv, send or close) and `timer` (its deadline). No other operation is ever pending for
//      it, and it returns to the pool only when both have come back.
//   3. Nothing waits without a deadline: reading a request (header_timeout, from accept or from
//      the request's first byte), waiting for the next keep-alive request (idle_timeout), writing
//      a response (write_timeout) and draining before an error close (linger_timeout). Running
//      statements has no deadline here: the executor bounds its own work.
//   4. A connection holds at most header_bytes_max + body_bytes_max of request and one response;
//      between requests it keeps at most kRetainedBytesMax of scratch, so idle keep-alive
//      connections stay cheap.
//   5. Stop() is graceful: no new connection is accepted, idle connections close at once, and a
//      request already received is answered (with "Connection: close") before its connection
//      closes. When every connection is back in the pool the server holds no loop operation, so
//      Run(kUntilDone) returns.
//
// Example:
//
//   uint16_t port = 0;
//   absl::StatusOr<int> listen_fd = ListenTcp("127.0.0.1", 0, port);
//   HttpServer server(*loop, executor, *listen_fd, HttpServerOptions{});
//   server.Start();
//   // ... a signal handler on the loop calls server.Stop() ...
//   absl::Status status = loop->Run(sqloop::loop::RunMode::kUntilDone);
#ifndef SQLOOP_EXAMPLES_HTTP_SERVER_H_
#define SQLOOP_EXAMPLES_HTTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "examples/http/auth.h"
#include "examples/http/executor.h"
#include "examples/http/handler.h"
#include "examples/http/json_writer.h"
#include "examples/http/request_parser.h"
#include "simdjson.h"
#include "sqloop/alloc/intrusive_list.h"
#include "sqloop/loop/loop.h"

namespace sqloop::examples::http {

struct HttpServerOptions {
  // Open connections at once. 1024 fits the default descriptor soft limit with room for the
  // executor's files; raise both together (http_idle/10000 runs with 10,000).
  uint32_t connections_max = 1024;
  // Request line plus headers. 16 KiB is what common proxies allow (nginx's large buffers are
  // 4 x 8 KiB); our API needs a few hundred bytes.
  uint32_t header_bytes_max = 16 << 10;
  // Request body. 1 MiB holds a generous batch of statements; bulk loads belong in many requests.
  uint32_t body_bytes_max = 1 << 20;
  // From accept, or from the first byte of a request, until the whole request has arrived.
  // 10 s is long for a real client and short enough to shed slowloris-style connections.
  absl::Duration header_timeout = absl::Seconds(10);
  // How long a keep-alive connection may wait for its next request: 60 s, nginx's default.
  absl::Duration idle_timeout = absl::Seconds(60);
  // How long sending one response may take (a client that stops reading): 10 s.
  absl::Duration write_timeout = absl::Seconds(10);
  // After an error response we close our side for writing and read (and discard) what the
  // client still sends, so its unread request does not turn our close into a reset that
  // destroys the response. 2 s is ample on any network that delivered the request.
  absl::Duration linger_timeout = absl::Seconds(2);
  // Requests of one tenant running at once (invariant 1b). 64 is 1/16 of the default pool (and
  // of the registry executor's jobs, sized to it), so a tenant that floods the host still leaves
  // room for at least 15 others at full concurrency; and a tenant's writes are serialised by
  // its one database writer (group commit), so more than 64 of its requests at once would only
  // queue inside the database, holding connections, without adding throughput.
  uint32_t tenant_requests_max = 64;
  // Bearer-token auth (invariant 1c); off by default, required by sqloop_http.
  AuthOptions auth;
  QueryLimits query;
};

class HttpServer {
 public:
  struct Stats {
    uint64_t connections_accepted = 0;
    uint64_t connections_closed = 0;
    uint32_t connections_open_peak = 0;
    uint64_t accept_pauses = 0;             // Times the pool was full and accepting stopped.
    uint64_t idle_closed_for_capacity = 0;  // Idle connections closed for a waiting client.
    uint64_t tenant_busy = 0;               // Requests refused (503) at the per-tenant limit.
    uint64_t accept_errors = 0;
    uint64_t requests = 0;  // Complete requests parsed (answered or in flight).
    uint64_t timeouts = 0;  // Deadlines that expired and closed (or 408'd) a connection.
    uint64_t responses_by_status[600] = {};  // Indexed by HTTP status; 100..599 used.
  };

  // `listen_fd` is a listening socket in blocking mode (see ListenTcp); the server does not own
  // it. `loop` and `executor` must outlive the server.
  HttpServer(loop::Loop& loop, QueryExecutor& executor, int listen_fd, HttpServerOptions options);
  // Checks that every connection is back in the pool and accept is not pending.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts accepting. Call once.
  void Start();
  // Graceful stop (invariant 5). Idempotent.
  void Stop();

  [[nodiscard]] const Stats& stats() const { return stats_; }
  [[nodiscard]] const Authenticator::Stats& auth_stats() const { return auth_.stats(); }
  [[nodiscard]] uint32_t open_connections() const { return open_; }
  [[nodiscard]] uint32_t idle_connections() const { return static_cast<uint32_t>(idle_.size()); }
  // True after Stop() once every connection has closed and accept is no longer pending.
  [[nodiscard]] bool drained() const {
    return stopping_ && open_ == 0 && !accepting_ && pending_fd_ < 0;
  }

 private:
  // A connection's states; see the diagram in server.cc.
  enum class State : uint8_t { kFree, kReading, kRunning, kWriting, kLingering, kClosing };
  // What happens once the response in flight has been sent.
  enum class AfterSend : uint8_t { kReadBody, kKeepAlive, kClose, kLingerThenClose };

  // 4 KiB: one page. Requests to this API fit in it; a larger one is parsed in pieces (the
  // parser keeps the URL and body itself), so this bounds only how much one recv takes.
  static constexpr uint32_t kReadBufferBytes = 4096;
  // Scratch a connection keeps between requests (invariant 4): 64 KiB covers typical
  // responses without reallocating, and bounds an idle connection's memory.
  static constexpr size_t kRetainedBytesMax = 64 << 10;
  // Bytes read and discarded while lingering before we give up and close: one body's worth.
  static constexpr uint64_t kLingerBytesMax = 1 << 20;
  // Listener retry after running out of descriptors with no connection open to free one.
  static constexpr absl::Duration kAcceptRetryDelay = absl::Milliseconds(100);

  struct Connection {
    explicit Connection(HttpServer* owner, RequestParser::Limits limits);

    loop::Completion io;     // recv, send or close: what the state says.
    loop::Completion timer;  // The deadline (invariant 2).
    HttpServer* server;
    State state = State::kFree;
    AfterSend after_send = AfterSend::kClose;
    int fd = -1;
    bool timer_armed = false;          // `timer` is pending: its callback has not run yet.
    bool timed_out = false;            // The deadline expired; `io` is being cancelled.
    bool io_cancel_requested = false;  // Cancel(io) was called for the op in flight.
    bool close_done = false;           // kClosing: the close came back.
    bool continue_sent = false;        // "100 Continue" went out for the current request.
    bool request_started = false;      // The header deadline runs for the current request.
    bool idle = false;                 // In the idle list (invariant 1a).
    bool evicted = false;              // Closed to make room: its recv was cancelled.
    bool holds_tenant_slot = false;    // Counted in tenant_running_ (invariant 1b).
    ListLink<Connection> idle_link;    // In the idle list, oldest first.
    int64_t deadline_ns = 0;           // Absolute, on the loop clock; kNoDeadline when none.
    int64_t timer_deadline_ns = 0;     // When the armed timer fires.
    uint32_t filled = 0;               // Bytes in `buffer` from the last recv.
    uint32_t parsed = 0;               // Of those, bytes the parser has consumed.
    uint64_t lingered_bytes = 0;
    RequestParser parser;
    ExecutorRequest request;
    std::string body;      // The JSON response body being built.
    std::string response;  // The whole response being sent.
    char buffer[kReadBufferBytes];
  };

  static loop::Action OnAccept(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnAcceptRetry(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnIo(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnTimer(loop::Loop& loop, loop::Completion& c);
  static void OnExecutorDone(ExecutorRequest& request, absl::Status status);

  void ArmAccept();
  [[nodiscard]] bool CanTakeAClient() const;
  void MaybeArmAccept();
  void HandleAcceptError(int64_t error);
  void Place(int fd);
  void CloseUnserved(int fd);
  void CloseOldestIdle();
  void SetIdle(Connection& connection, bool idle);
  void Open(Connection& connection, int fd);
  void OnRead(Connection& connection, int64_t result);
  void OnReadTimedOut(Connection& connection);
  void OnWritten(Connection& connection, int64_t result);
  void OnLingered(Connection& connection, int64_t result);
  void ProcessBuffered(Connection& connection);
  void NeedMoreInput(Connection& connection);
  void Dispatch(Connection& connection);
  void RunQuery(Connection& connection, absl::string_view tenant);
  void SubmitToExecutor(Connection& connection, ExecutorRequest::Kind kind,
                        absl::string_view tenant);
  void ReleaseTenantSlot(Connection& connection);
  void WriteTokenBody(absl::string_view tenant, std::string& body) const;
  void WriteStatsBody(std::string& body) const;
  void WriteLoopStats(JsonWriter& json) const;
  void WriteServerStats(JsonWriter& json) const;
  void Respond(Connection& connection, int status, const char* extra_headers, AfterSend after);
  void RespondError(Connection& connection, const HttpError& error, AfterSend after);
  void Send(Connection& connection, absl::string_view bytes, AfterSend after);
  void NextRequest(Connection& connection);
  void Recv(Connection& connection);
  void Linger(Connection& connection);
  void Close(Connection& connection);
  void MaybeFree(Connection& connection);
  static void TrimScratch(Connection& connection);

  void SubmitIo(Connection& connection);
  void CancelIo(Connection& connection);
  void SetDeadline(Connection& connection, absl::Duration timeout);
  static void ClearDeadline(Connection& connection);
  void Expire(Connection& connection);

  void Enter(Connection& connection, State state);
  void AssertInvariants(const Connection& connection) const;

  loop::Loop& loop_;
  QueryExecutor& executor_;
  const int listen_fd_;
  const HttpServerOptions options_;
  bool started_ = false;
  bool accepting_ = false;        // `accept_` is pending.
  bool accept_retrying_ = false;  // `accept_retry_` is pending.
  bool stopping_ = false;
  bool in_on_accept_ = false;  // OnAccept decides itself whether to accept again.
  uint32_t open_ = 0;
  // A client accepted while the pool was full, waiting for the oldest idle connection to close
  // (invariant 1a); -1 when none. Accept stays disarmed while one waits.
  int pending_fd_ = -1;
  IntrusiveList<Connection, &Connection::idle_link> idle_;  // Invariant 1a: oldest first.
  // Requests running per tenant (invariant 1b); a tenant with none has no entry, so the map
  // holds at most connections_max entries (reserved up front).
  absl::flat_hash_map<std::string, uint32_t> tenant_running_;
  Authenticator auth_;
  loop::Completion accept_;
  loop::Completion accept_retry_;
  std::vector<std::unique_ptr<Connection>> pool_;
  std::vector<Connection*> free_;      // A stack of kFree connections: O(1) take and return.
  simdjson::dom::parser json_parser_;  // Shared: one request is parsed at a time.
  Stats stats_;
};

// Creates a blocking (as the loop wants), close-on-exec TCP socket listening on `address`
// (IPv4 or IPv6 literal) and `port` (0 picks a free one), with SO_REUSEADDR and TCP_NODELAY
// (which the connections it accepts inherit: without it, the answers to pipelined requests
// each wait for the client's delayed acknowledgement of the one before). Sets `bound_port` to
// the port actually bound. The caller owns the descriptor; a host that makes its own listening
// socket should set TCP_NODELAY on it too.
[[nodiscard]] absl::StatusOr<int> ListenTcp(absl::string_view address, uint16_t port,
                                            uint16_t& bound_port);

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_SERVER_H_
