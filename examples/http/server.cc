// The HTTP host's state machines.
//
// A connection (one per pooled `Connection`; `io` carries the socket op, `timer` the deadline):
//
// clang-format off
//
//                accept      (idle while no byte of a request has come)
//   +-------+  ---------->  +----------+  request complete        +----------+
//   | kFree |               | kReading | -----------------------> | kRunning |
//   +-------+               +----------+ ---+                     +----------+
//       ^                    ^  |   |       | bad route/body,          |  executor
//       |       next request |  |   |       | 401/403, 503 busy,       |  answers
//       |       (keep-alive) |  |   |       | stats, token, 100-cont.  v
//       |                    |  |   |       +-------------------> +----------+
//       |                    +--|---|---------------------------- | kWriting |
//       |                       |   | malformed, 413, 431,        +----------+
//       |                       |   | 408 (sent first)                 | | sent, close
//       |   peer closed, error, |   +--------------------------------> | | after, or
//       |   idle timeout, stop, |        +------------+  sent after    | | send failed
//       |   closed for room     |        | kLingering | <--------------+ |
//       |   (idle only)         v        +------------+  an error        |
//       |   close done   +-----------+         | EOF/timeout/cap         |
//       +--------------- | kClosing  | <-------+-------------------------+
//         and timer back +-----------+
//
// Transition table:
//
//   state       event                                       next        made by
//   kFree       accept returned a descriptor, or a client   kReading    OnAccept -> Place -> Open,
//               held for a place gets a freed one                       MaybeFree -> Place -> Open
//   kReading    recv: request incomplete                    kReading    OnRead -> NeedMoreInput
//   kReading    recv: headers want "100 Continue"           kWriting    NeedMoreInput -> Send
//   kReading    recv: complete, authorised, under the       kRunning    Dispatch ->
//               tenant's limit: goes to the executor                    SubmitToExecutor
//   kReading    recv: complete, answered here (route        kWriting    Dispatch -> Respond
//               error, 401/403, 503 tenant_busy, bad
//               JSON, /v1/stats, a minted token)
//   kReading    recv: malformed HTTP, 413, 431              kWriting    ProcessBuffered ->
//                                                                       RespondError
//   kReading    deadline, part of a request received        kWriting    OnReadTimedOut (408)
//   kReading    recv 0 / error, idle deadline, Stop()       kClosing    OnRead -> Close
//   kReading    idle and the oldest, the pool full, a       kClosing    CloseOldestIdle,
//               client waiting for a place                              OnRead -> Close
//   kRunning    executor's on_done                          kWriting    OnExecutorDone -> Respond
//   kWriting    sent 100 Continue                           kReading    OnWritten -> Recv
//   kWriting    sent, keep-alive                            kReading    OnWritten -> NextRequest
//   kWriting    sent, keep-alive, pipelined request ready   (as kReading with a complete request)
//   kWriting    sent, close after                           kClosing    OnWritten -> Close
//   kWriting    sent after an error                         kLingering  OnWritten -> Linger
//   kWriting    send failed, write deadline                 kClosing    OnWritten -> Close
//   kLingering  recv > 0 under the cap                      kLingering  OnLingered -> Recv
//   kLingering  EOF, error, cap, linger deadline            kClosing    OnLingered -> Close
//   kClosing    close done and the timer's callback ran     kFree       MaybeFree
//
// Invariants per state (AssertInvariants runs on every transition and every callback):
//   all            idle_.size() <= open_ <= connections_max; a client is held (pending_fd_) only
//                  while no connection is free and accept is not armed.
//   all but kFree  fd >= 0; parsed <= filled <= kReadBufferBytes.
//   kFree          fd == -1; no timer pending; not idle; no tenant slot.
//   kReading       `io` is a recv into an empty buffer (filled == parsed == 0); a deadline is set.
//                  In the idle list exactly when no byte of a request has arrived and the recv
//                  is not being cancelled (Enter and CancelIo keep it so, through SetIdle).
//   kRunning       no socket op pending; no deadline (the executor bounds its work); the
//                  executor holds `request`; the connection holds one of its tenant's slots.
//   kWriting       `io` is a send of `response`; a deadline is set.
//   kLingering     `io` is a recv that discards; our side is shut down for writing.
//   kClosing       `io` is the close (until close_done); the timer is cancelled or done.
//
// clang-format on
//
// The listener (invariants 1 and 1a in server.h): accept is armed while the next client can be
// given a connection: one is free, or one is idle and can be closed for it (CanTakeAClient).
// When neither holds it pauses (accept_pauses) and clients wait in the kernel's backlog; the
// first connection to become free or idle (SetIdle, MaybeFree -> MaybeArmAccept) resumes it.
//
// Deadlines are lazy: a connection's timer stays armed while its deadline only moves later
// (the callback re-arms for the remainder), and is cancelled only when the deadline moves
// earlier or the connection closes. A keep-alive request therefore costs no timer syscall and
// usually no cancel.
#include "examples/http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "examples/http/json_writer.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::examples::http {
namespace {

constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();
// The listen backlog: where clients wait while the pool is full (invariant 1). 512 absorbs a
// burst of connects; the kernel caps it at net.core.somaxconn anyway.
constexpr int kListenBacklog = 512;
constexpr absl::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

}  // namespace

HttpServer::Connection::Connection(HttpServer* owner, RequestParser::Limits limits)
    : server(owner), parser(limits) {
  io.user_data = this;
  io.callback = &HttpServer::OnIo;
  io.name = "http connection";
  timer.user_data = this;
  timer.callback = &HttpServer::OnTimer;
  timer.name = "http deadline";
  request.user_data = this;
  request.on_done = &HttpServer::OnExecutorDone;
}

HttpServer::HttpServer(loop::Loop& loop, QueryExecutor& executor, int listen_fd,
                       HttpServerOptions options)
    : loop_(loop), executor_(executor), listen_fd_(listen_fd), options_(std::move(options)) {
  SQLOOP_CHECK(options_.connections_max > 0, "HttpServer: connections_max must be > 0");
  SQLOOP_CHECK(options_.tenant_requests_max > 0, "HttpServer: tenant_requests_max must be > 0");
  absl::StatusOr<Authenticator> auth = Authenticator::FromOptions(options_.auth);
  SQLOOP_CHECK(auth.ok(),
               "HttpServer: invalid auth options (check them with "
               "Authenticator::FromOptions first)");
  auth_ = *std::move(auth);
  tenant_running_.reserve(options_.connections_max);
  accept_.user_data = this;
  accept_.callback = &HttpServer::OnAccept;
  accept_.name = "http accept";
  accept_retry_.user_data = this;
  accept_retry_.callback = &HttpServer::OnAcceptRetry;
  accept_retry_.name = "http accept retry";
  const RequestParser::Limits limits{options_.header_bytes_max, options_.body_bytes_max};
  pool_.reserve(options_.connections_max);
  free_.reserve(options_.connections_max);
  for (uint32_t i = 0; i < options_.connections_max; i++) {
    pool_.push_back(std::make_unique<Connection>(this, limits));
  }
  // Pushed in reverse so the first connection is taken first (easier to read in traces).
  for (auto it = pool_.rbegin(); it != pool_.rend(); ++it) free_.push_back(it->get());
  // A reasonable first allocation; simdjson grows it (up to the body limit) when needed.
  SQLOOP_CHECK(
      json_parser_.allocate(options_.body_bytes_max < 65536 ? options_.body_bytes_max : 65536,
                            kJsonDepthMax) == simdjson::SUCCESS,
      "HttpServer: simdjson could not allocate its parser");
}

HttpServer::~HttpServer() {
  SQLOOP_CHECK(open_ == 0 && !accepting_ && !accept_retrying_ && pending_fd_ < 0,
               "HttpServer: destroyed with connections open; Stop() and run the loop first");
}

void HttpServer::Start() {
  SQLOOP_CHECK(!started_, "HttpServer::Start: called twice");
  started_ = true;
  ArmAccept();
}

void HttpServer::Stop() {
  if (stopping_) return;
  stopping_ = true;
  if (accepting_) loop_.Cancel(accept_);
  if (accept_retrying_) loop_.Cancel(accept_retry_);
  if (pending_fd_ >= 0) {
    CloseUnserved(pending_fd_);  // A client nobody will serve now.
    pending_fd_ = -1;
  }
  // Statements still running stop soon with Cancelled (503): a stop must not wait for a
  // tenant's long query. Writes already committed are answered as usual.
  executor_.CancelRunning();
  // Idle connections (waiting for a request that has not begun) close now; the rest finish.
  for (const std::unique_ptr<Connection>& connection : pool_) {
    if (connection->state == State::kReading && !connection->parser.in_request()) {
      CancelIo(*connection);
    }
  }
}

// ---- The listener ----------------------------------------------------------------------------

void HttpServer::ArmAccept() {
  SQLOOP_CHECK(!accepting_, "HttpServer: accept armed twice");
  accept_.op = io::Op{.kind = io::OpKind::kAccept, .fd = listen_fd_, .flags = SOCK_CLOEXEC};
  accepting_ = true;
  loop_.Submit(accept_);
}

loop::Action HttpServer::OnAccept(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& server = *static_cast<HttpServer*>(c.user_data);
  server.accepting_ = false;
  if (c.result() < 0) {
    server.HandleAcceptError(c.result());
    return loop::Action::kDisarm;
  }
  const int fd = static_cast<int>(c.result());
  if (server.stopping_) {
    server.CloseUnserved(fd);  // Accepted in the same tick as Stop(): nobody will serve it.
    return loop::Action::kDisarm;
  }
  server.in_on_accept_ = true;
  server.Place(fd);
  server.in_on_accept_ = false;
  // Invariants 1 and 1a: accept again only while the next client can be given a connection.
  if (server.CanTakeAClient()) {
    server.accepting_ = true;
    return loop::Action::kRearm;
  }
  server.stats_.accept_pauses++;  // Full: clients wait (one held here, the rest in the backlog).
  return loop::Action::kDisarm;
}

bool HttpServer::CanTakeAClient() const {
  return !stopping_ && pending_fd_ < 0 && (!free_.empty() || !idle_.empty());
}

void HttpServer::MaybeArmAccept() {
  if (in_on_accept_ || accepting_ || accept_retrying_ || !CanTakeAClient()) return;
  ArmAccept();
}

void HttpServer::Place(int fd) {
  if (!free_.empty()) {
    Connection& connection = *free_.back();
    free_.pop_back();
    Open(connection, fd);
    return;
  }
  // Invariant 1a: the pool is full and a client waits. It takes the place of the oldest idle
  // connection once that one has closed (MaybeFree); if none is idle any more (it received a
  // request since accept was armed), of the first connection to close.
  pending_fd_ = fd;
  if (!idle_.empty()) CloseOldestIdle();
}

void HttpServer::CloseUnserved(int fd) {
  // Closed through the backend that made it, like every other descriptor here: under the
  // simulator a plain close() would hit a real descriptor of the process and leave the
  // simulated client waiting.
  io::Op close_op{.kind = io::OpKind::kClose, .fd = fd};
  (void)loop_.WaitForOp(close_op);
}

void HttpServer::CloseOldestIdle() {
  Connection& oldest = *idle_.front();
  SQLOOP_CHECK(oldest.idle && oldest.state == State::kReading,
               "HttpServer: the idle list holds a connection that is not idle");
  stats_.idle_closed_for_capacity++;
  oldest.evicted = true;
  // Its recv comes back (-ECANCELED, or data that arrived just now and is dropped: the client
  // sees its keep-alive connection closed, which HTTP clients expect and retry on); OnRead
  // closes it, and MaybeFree hands its place to pending_fd_.
  CancelIo(oldest);
}

// Invariant 1a's list: a connection joins at the tail when it becomes idle and leaves when it
// stops being idle, so the head is always the connection idle the longest. O(1) both ways.
void HttpServer::SetIdle(Connection& connection, bool idle) {
  if (connection.idle == idle) return;
  connection.idle = idle;
  if (idle) {
    idle_.PushBack(connection);
    MaybeArmAccept();  // A full pool of busy connections has something to give up again.
    return;
  }
  idle_.Remove(connection);
}

void HttpServer::HandleAcceptError(int64_t error) {
  if (error == -ECANCELED || stopping_) return;
  stats_.accept_errors++;
  const bool out_of_resources =
      error == -EMFILE || error == -ENFILE || error == -ENOBUFS || error == -ENOMEM;
  if (!out_of_resources) {
    // ECONNABORTED, EPROTO...: one client's trouble, not the listener's.
    ArmAccept();
  } else if (open_ == 0) {
    // Nothing of ours will free a descriptor: retry after a pause instead of spinning.
    accept_retrying_ = true;
    loop_.Timer(accept_retry_, kAcceptRetryDelay);
  } else {
    stats_.accept_pauses++;  // The next connection to close resumes accepting.
  }
}

loop::Action HttpServer::OnAcceptRetry(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& server = *static_cast<HttpServer*>(c.user_data);
  server.accept_retrying_ = false;
  if (!server.stopping_ && !server.accepting_) server.ArmAccept();
  return loop::Action::kDisarm;
}

// ---- Connection transitions ------------------------------------------------------------------

void HttpServer::Open(Connection& connection, int fd) {
  connection.fd = fd;
  connection.timed_out = connection.close_done = false;
  connection.continue_sent = false;
  connection.evicted = false;
  connection.io_cancel_requested = false;  // Not this connection's: its previous life's.
  connection.request_started = true;       // The header deadline runs from accept.
  connection.filled = connection.parsed = 0;
  connection.lingered_bytes = 0;
  connection.parser.Reset();
  open_++;
  if (open_ > stats_.connections_open_peak) stats_.connections_open_peak = open_;
  stats_.connections_accepted++;
  SetDeadline(connection, options_.header_timeout);
  Recv(connection);
}

void HttpServer::Recv(Connection& connection) {
  connection.filled = connection.parsed = 0;
  connection.io.op = io::Op{.kind = io::OpKind::kRecv,
                            .fd = connection.fd,
                            .buffer = connection.buffer,
                            .length = kReadBufferBytes};
  if (connection.state != State::kLingering) Enter(connection, State::kReading);
  SubmitIo(connection);
}

loop::Action HttpServer::OnIo(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& connection = *static_cast<Connection*>(c.user_data);
  HttpServer& server = *connection.server;
  server.AssertInvariants(connection);
  switch (connection.state) {
    case State::kReading:
      server.OnRead(connection, c.result());
      break;
    case State::kWriting:
      server.OnWritten(connection, c.result());
      break;
    case State::kLingering:
      server.OnLingered(connection, c.result());
      break;
    case State::kClosing:
      connection.close_done = true;
      server.MaybeFree(connection);
      break;
    case State::kFree:
    case State::kRunning:
      SQLOOP_CHECK(false, "HttpServer: socket completion in a state with no socket op");
  }
  return loop::Action::kDisarm;
}

void HttpServer::OnRead(Connection& connection, int64_t result) {
  if (connection.evicted) {
    Close(connection);  // Invariant 1a: its place goes to a waiting client.
    return;
  }
  if (connection.timed_out) {
    OnReadTimedOut(connection);
    return;
  }
  if (result <= 0) {
    // 0: the peer closed. -ECANCELED: Stop() closing an idle connection. Else a socket error.
    Close(connection);
    return;
  }
  connection.filled = static_cast<uint32_t>(result);
  connection.parsed = 0;
  ProcessBuffered(connection);
}

void HttpServer::OnReadTimedOut(Connection& connection) {
  connection.timed_out = false;
  if (!connection.parser.in_request()) {
    Close(connection);  // Idle: nothing to answer.
    return;
  }
  RespondError(connection,
               HttpError{408, "timeout",
                         absl::StrCat("the request did not arrive within ",
                                      absl::FormatDuration(options_.header_timeout)),
                         ""},
               AfterSend::kLingerThenClose);
}

void HttpServer::ProcessBuffered(Connection& connection) {
  size_t consumed = 0;
  const RequestParser::Result result = connection.parser.Feed(
      connection.buffer + connection.parsed, connection.filled - connection.parsed, consumed);
  connection.parsed += static_cast<uint32_t>(consumed);
  switch (result) {
    case RequestParser::Result::kNeedMore:
      NeedMoreInput(connection);
      return;
    case RequestParser::Result::kComplete:
      Dispatch(connection);
      return;
    case RequestParser::Result::kError: {
      const int status = connection.parser.error_status();
      const char* code = status == 413   ? "body_too_large"
                         : status == 431 ? "headers_too_large"
                                         : "malformed_http";
      RespondError(connection, HttpError{status, code, connection.parser.error_message(), ""},
                   AfterSend::kLingerThenClose);
      return;
    }
  }
}

void HttpServer::NeedMoreInput(Connection& connection) {
  if (!connection.request_started && connection.parser.in_request()) {
    // The first byte of a keep-alive request: the idle deadline gives way to the header one.
    connection.request_started = true;
    SetDeadline(connection, options_.header_timeout);
  }
  const HttpRequest& request = connection.parser.request();
  if (request.expect_continue && connection.parser.awaiting_body() && !connection.continue_sent) {
    Send(connection, kContinue, AfterSend::kReadBody);
    return;
  }
  Recv(connection);
}

void HttpServer::RespondError(Connection& connection, const HttpError& error, AfterSend after) {
  WriteErrorBody(error, connection.body);
  Respond(connection, error.status, error.headers, after);
}

void HttpServer::Respond(Connection& connection, int status, const char* extra_headers,
                         AfterSend after) {
  const HttpRequest& request = connection.parser.request();
  // Keep the connection only if the client wants it, we do (not stopping, no error that
  // leaves the byte stream in doubt) and it was a plain request (not an Upgrade).
  if (after == AfterSend::kKeepAlive && (!request.keep_alive || request.upgrade || stopping_)) {
    after = AfterSend::kClose;
  }
  const bool keep_alive = after == AfterSend::kKeepAlive;
  FormatResponse(status, connection.body, keep_alive, extra_headers, connection.response);
  if (status >= 100 && status < 600) stats_.responses_by_status[status]++;
  Send(connection, connection.response, after);
}

void HttpServer::Send(Connection& connection, absl::string_view bytes, AfterSend after) {
  SQLOOP_CHECK(bytes.size() <= std::numeric_limits<uint32_t>::max(),
               "HttpServer: a response over 4 GiB; the executor's limits should prevent it");
  connection.after_send = after;
  connection.io.op = io::Op{.kind = io::OpKind::kSend,
                            .fd = connection.fd,
                            .buffer = const_cast<char*>(bytes.data()),
                            .length = static_cast<uint32_t>(bytes.size()),
                            .flags = MSG_NOSIGNAL};
  SetDeadline(connection, options_.write_timeout);
  Enter(connection, State::kWriting);
  SubmitIo(connection);
}

void HttpServer::OnWritten(Connection& connection, int64_t result) {
  if (connection.timed_out || result < 0) {
    Close(connection);
    return;
  }
  switch (connection.after_send) {
    case AfterSend::kReadBody:
      connection.continue_sent = true;
      SetDeadline(connection, options_.header_timeout);
      Recv(connection);
      return;
    case AfterSend::kKeepAlive:
      NextRequest(connection);
      return;
    case AfterSend::kClose:
      Close(connection);
      return;
    case AfterSend::kLingerThenClose:
      Linger(connection);
      return;
  }
}

void HttpServer::NextRequest(Connection& connection) {
  TrimScratch(connection);
  connection.continue_sent = false;
  connection.request_started = false;
  if (stopping_) {
    Close(connection);  // Invariant 5: an idle keep-alive connection closes on Stop().
    return;
  }
  SetDeadline(connection, options_.idle_timeout);
  if (connection.parsed < connection.filled) {
    // A pipelined request already sits in the buffer.
    Enter(connection, State::kReading);
    ProcessBuffered(connection);
    return;
  }
  Recv(connection);
}

void HttpServer::Linger(Connection& connection) {
  // Our response is out; half-close so the client sees EOF after it, then drain what it still
  // sends so our close does not reset the connection before the response was read. shutdown()
  // is a plain call: it never blocks, and the loop has no operation for it.
  shutdown(connection.fd, SHUT_WR);
  Enter(connection, State::kLingering);
  SetDeadline(connection, options_.linger_timeout);
  Recv(connection);
}

void HttpServer::OnLingered(Connection& connection, int64_t result) {
  if (result > 0 && !connection.timed_out) {
    connection.lingered_bytes += static_cast<uint64_t>(result);
    if (connection.lingered_bytes < kLingerBytesMax) {
      Recv(connection);
      return;
    }
  }
  Close(connection);
}

void HttpServer::Close(Connection& connection) {
  connection.close_done = false;
  connection.deadline_ns = kNoDeadline;
  Enter(connection, State::kClosing);
  if (connection.timer_armed) loop_.Cancel(connection.timer);
  connection.io.op = io::Op{.kind = io::OpKind::kClose, .fd = connection.fd};
  SubmitIo(connection);
}

void HttpServer::MaybeFree(Connection& connection) {
  if (!connection.close_done || connection.timer_armed) return;  // Invariant 2.
  connection.fd = -1;
  TrimScratch(connection);
  Enter(connection, State::kFree);
  free_.push_back(&connection);
  open_--;
  stats_.connections_closed++;
  if (pending_fd_ >= 0) {
    // Invariant 1a: the client waiting for a place takes this one.
    const int fd = pending_fd_;
    pending_fd_ = -1;
    Place(fd);
  }
  // A free connection again: resume accepting if the full pool had paused it.
  MaybeArmAccept();
}

void HttpServer::TrimScratch(Connection& connection) {
  // Invariant 4: give back what one large request grew, keep what a typical one needs.
  HttpRequest& request = connection.parser.request();
  for (std::string* scratch :
       {&request.body, &request.url, &connection.body, &connection.response}) {
    if (scratch->capacity() > kRetainedBytesMax) std::string().swap(*scratch);
  }
  if (connection.request.results.capacity() > 64) connection.request.results = {};
}

// ---- Deadlines -------------------------------------------------------------------------------

void HttpServer::SetDeadline(Connection& connection, absl::Duration timeout) {
  const int64_t timeout_ns = absl::ToInt64Nanoseconds(timeout);
  connection.deadline_ns = loop_.now_ns() + timeout_ns;
  if (!connection.timer_armed) {
    connection.timer_armed = true;
    connection.timer_deadline_ns = connection.deadline_ns;
    loop_.Timer(connection.timer, timeout);
  } else if (connection.timer_deadline_ns > connection.deadline_ns) {
    // The deadline moved earlier than the armed timer: its callback re-arms for the new one.
    loop_.Cancel(connection.timer);
  }
}

void HttpServer::ClearDeadline(Connection& connection) {
  // The armed timer (if any) finds no deadline when it fires and stops.
  connection.deadline_ns = kNoDeadline;
}

loop::Action HttpServer::OnTimer(loop::Loop& loop, loop::Completion& c) {
  auto& connection = *static_cast<Connection*>(c.user_data);
  HttpServer& server = *connection.server;
  server.AssertInvariants(connection);
  connection.timer_armed = false;
  if (connection.state == State::kClosing) {
    server.MaybeFree(connection);
    return loop::Action::kDisarm;
  }
  if (connection.deadline_ns == kNoDeadline) return loop::Action::kDisarm;
  if (loop.now_ns() < connection.deadline_ns) {
    // Fired early (the deadline moved later) or was cancelled to move earlier: aim again.
    connection.timer_armed = true;
    connection.timer_deadline_ns = connection.deadline_ns;
    loop.Timer(c, absl::Nanoseconds(connection.deadline_ns - loop.now_ns()));
    return loop::Action::kDisarm;
  }
  server.Expire(connection);
  return loop::Action::kDisarm;
}

void HttpServer::Expire(Connection& connection) {
  SQLOOP_CHECK(connection.state == State::kReading || connection.state == State::kWriting ||
                   connection.state == State::kLingering,
               "HttpServer: a deadline expired in a state that has none");
  stats_.timeouts++;
  connection.deadline_ns = kNoDeadline;
  connection.timed_out = true;
  // The socket op comes back with -ECANCELED (or its real result if it just finished); its
  // callback sees timed_out and makes the transition.
  CancelIo(connection);
}

void HttpServer::SubmitIo(Connection& connection) {
  connection.io_cancel_requested = false;
  loop_.Submit(connection.io);
}

void HttpServer::CancelIo(Connection& connection) {
  // A connection whose recv is being cancelled is on its way out: no longer one to close
  // for room (invariant 1a).
  SetIdle(connection, false);
  // Stop() and a deadline may both want the same op cancelled: ask the loop once.
  if (connection.io_cancel_requested) return;
  connection.io_cancel_requested = true;
  loop_.Cancel(connection.io);
}

// ---- Invariants ------------------------------------------------------------------------------

void HttpServer::Enter(Connection& connection, State state) {
  connection.state = state;
  // Invariant 1a: idle is waiting for a request of which no byte has arrived. A connection
  // already idle keeps its place in the list (it has been idle since it first became so).
  SetIdle(connection, state == State::kReading && !connection.parser.in_request() &&
                          !connection.io_cancel_requested && !connection.evicted);
  AssertInvariants(connection);
}

void HttpServer::AssertInvariants(const Connection& connection) const {
  SQLOOP_CHECK(open_ <= pool_.size(), "HttpServer: more open connections than the pool holds");
  SQLOOP_CHECK(open_ + free_.size() == pool_.size(), "HttpServer: a connection is lost");
  SQLOOP_CHECK(idle_.size() <= open_, "HttpServer: more idle connections than open ones");
  SQLOOP_CHECK(connection.idle == idle_.Contains(connection),
               "HttpServer: a connection's idle flag and the idle list disagree");
  SQLOOP_CHECK(pending_fd_ < 0 || (free_.empty() && !accepting_),
               "HttpServer: a client waits for a place while one is free or accept is armed");
  SQLOOP_CHECK(!connection.idle || (connection.state == State::kReading && !connection.evicted),
               "HttpServer: an idle connection is not waiting for a request");
  SQLOOP_CHECK(!connection.holds_tenant_slot || connection.state == State::kRunning,
               "HttpServer: a tenant slot is held outside kRunning");
  if (connection.state == State::kFree) {
    SQLOOP_CHECK(connection.fd == -1 && !connection.timer_armed,
                 "HttpServer: a free connection holds a descriptor or a timer");
    return;
  }
  SQLOOP_CHECK(connection.fd >= 0, "HttpServer: a live connection has no descriptor");
  SQLOOP_CHECK(connection.parsed <= connection.filled && connection.filled <= kReadBufferBytes,
               "HttpServer: read buffer offsets out of range");
  switch (connection.state) {
    case State::kRunning:
      SQLOOP_CHECK(connection.deadline_ns == kNoDeadline,
                   "HttpServer: a running request has a socket deadline");
      break;
    case State::kReading:
    case State::kWriting:
    case State::kLingering:
      SQLOOP_CHECK(connection.deadline_ns != kNoDeadline || connection.timed_out,
                   "HttpServer: a connection waits on its socket without a deadline");
      break;
    case State::kClosing:
      SQLOOP_CHECK(connection.deadline_ns == kNoDeadline, "HttpServer: closing with a deadline");
      break;
    case State::kFree:
      break;
  }
}

// ---- Listening -------------------------------------------------------------------------------

absl::StatusOr<int> ListenTcp(absl::string_view address, uint16_t port, uint16_t& bound_port) {
  const std::string host(address);
  sockaddr_storage storage{};
  socklen_t size = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    size = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    size = sizeof(*v6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", host, "\" is not an IPv4 or IPv6 literal"));
  }
  // Blocking on purpose: io_uring supplies the asynchrony (docs/architecture.md).
  const int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return io::ErrnoStatus(absl::StatusCode::kInternal, errno, "socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Accepted connections inherit it: each answer goes out at once rather than waiting for the
  // client's (delayed) acknowledgement of the one before, which pipelined requests would.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), size) != 0 ||
      listen(fd, kListenBacklog) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &size) != 0) {
    const int error = errno;
    close(fd);
    return io::ErrnoStatus(absl::StatusCode::kUnavailable, error,
                           absl::StrCat("listening on ", host, ":", port));
  }
  bound_port = ntohs(storage.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  return fd;
}

}  // namespace sqloop::examples::http
