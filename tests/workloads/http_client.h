// tests/workloads/http_client.h
// -----------------------------------------------------------------------------
//
// A simulated HTTP/1.1 client for the "http" workload (tests/workloads/http.cc): one explicit
// state machine per client, driving loop socket operations (kConnect, kSend, kRecv, kClose) on
// the simulator's sockets exactly as a real client would drive its kernel's, and reading
// responses with http_parser in response mode (the parser the server itself uses for requests).
//
// A client does not decide what to ask: a `ClientDriver` hands it one `Exchange` at a time (a
// request and, once settled, its outcome) and is told how each one settled. The workload's
// traffic and its recovery check are two drivers over the same client.
//
// One client, one connection at a time, keep-alive, no pipelining, no retries:
//
//                      next exchange, not connected
//   +-----------+ --------------------------------> +-------------+
//   | kThinking |                                   | kConnecting |
//   +-----------+ ---------------+                  +-------------+
//    ^   ^   |  |  next exchange, |                    |       |
//    |   |   |  |  connected      v        connected   |       | refused
//    |   |   |  |            +----------+ <-----------+        |
//    |   |   |  |            | kSending | ----------------+    |
//    |   |   |  |            +----------+  half-then-    |    |
//    |   |   |  |                 | sent   close, EPIPE  v    v
//    |   |   |  |                 v                   +----------+
//    |   |   |  |           +------------+  EOF, error, | kClosing |
//    |   |   |  |           | kReceiving | -----------> |          |
//    |   |   |  |           +------------+  close       +----------+
//    |   |   |  | nothing left, connected      |           ^  |
//    |   |   |  +------------------------------|-----------+  | closed
//    |   |   | nothing left, not connected     |              |
//    |   |   v                                 |              |
//    |   | +-------+    answered, keep-alive   |              |
//    |   | | kDone |                           |              |
//    |   | +-------+                           |              |
//    |   +-------------------------------------+              |
//    +--------------------------------------------------------+
//   (and from any state: the simulated machine crashed -> kDone, by Halt)
//
//   state        event                                   next         made by
//   kThinking    timer, an exchange, not connected       kConnecting  OnThought -> Connect
//   kThinking    timer, an exchange, connected           kSending     OnThought -> Send
//   kThinking    timer, nothing left, connected          kClosing     OnThought -> Close
//   kThinking    timer, nothing left, not connected      kDone        OnThought
//   kConnecting  connected                               kSending     OnConnected -> Send
//   kConnecting  refused (stopped server) or error       kClosing     OnConnected -> Close
//   kSending     sent a whole request                    kReceiving   OnSent -> Recv
//   kSending     sent half a request, then close         kClosing     OnSent -> Close
//   kSending     error (EPIPE: the server closed first)  kClosing     OnSent -> Close
//   kReceiving   part of a response                      kReceiving   OnReceived -> Recv
//   kReceiving   a whole response, keep-alive            kThinking    OnReceived -> Think
//   kReceiving   a whole response, "Connection: close"   kClosing     OnReceived -> Close
//   kReceiving   EOF or error                            kClosing     OnReceived -> Close
//   kClosing     closed                                  kThinking    OnClosed -> Think
//   any          the simulated machine crashed           kDone        Halt
//
// Invariants: exactly one completion (`c_`) per client, pending in every state but kDone; a
// connection (fd_ >= 0) exists in kSending, kReceiving and kClosing; an exchange is in
// progress (`exchange_` != nullptr) from its send to its settlement, and is settled exactly
// once: answered (a whole response, parsed) or unanswered (the connection ended first, perhaps
// inside the response: `truncated`, which the driver judges).
#ifndef SQLOOP_TESTS_WORKLOADS_HTTP_CLIENT_H_
#define SQLOOP_TESTS_WORKLOADS_HTTP_CLIENT_H_

#include <http_parser.h>
#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"

namespace sqloop::testing::http_sim {

// The port the simulated server listens on (any port works; this one reads well in traces).
inline constexpr uint16_t kPort = 8080;

// What a request is, and so which statuses may answer it (tests/workloads/http.cc).
enum class Ask : uint8_t {
  kCreateTenant,   // PUT /v1/db/{tenant}
  kCreateTable,    // CREATE TABLE IF NOT EXISTS kv(...)
  kWrite,          // INSERT of a key unique to the client and the sequence number
  kRead,           // SELECT of an acknowledged key: must return its value
  kConflict,       // INSERT of one new key twice in one statement: 409, nothing written
  kSqlError,       // a syntax error: 400
  kBadJson,        // a body that is not JSON: 400 malformed_json
  kUnknownTenant,  // a query to a tenant nobody created: 404, and no file appears
  kInvalidTenant,  // a query to a name the server refuses: 400 invalid_tenant
  kOversize,       // Content-Length over the body limit: 413, and the server closes
  kStats,          // GET /v1/stats: 200
  kHalfThenIdle,   // part of a request, then silence: 408 (or closed) at the header timeout
  kHalfThenClose,  // part of a request, then the client disconnects: no answer
  kVerifyRows,     // recovery: every row of a tenant
  kVerifyCheck,    // recovery: PRAGMA integrity_check
};

// Returns "create_tenant", "write", ... for summaries and failure messages.
[[nodiscard]] const char* AskName(Ask ask);

// One request and its outcome. Owned by the driver; the client fills the outcome.
struct Exchange {
  enum class Outcome : uint8_t { kPending, kAnswered, kUnanswered };

  Ask ask = Ask::kStats;
  uint32_t client = 0;
  uint32_t id = 0;  // Unique in the run; names the exchange in failures.
  std::string tenant;
  uint32_t tenant_index = 0;  // The driver's number for the tenant (unused for made-up names).
  int64_t key = 0;            // kWrite, kRead, kConflict.
  std::string value;          // kWrite (written), kRead (expected).
  // What the driver knew when it handed the exchange out (the statuses allowed depend on it):
  bool tenant_known = false;  // A PUT of the tenant had been answered 201 or 409.
  bool table_known = false;   // A CREATE TABLE or a write of it had been answered 200.
  // Filled by the client when it sends the request:
  bool fresh_connection = false;  // Sent on a connection opened for it.
  int64_t sent_ns = 0;
  int64_t settled_ns = 0;
  // The outcome:
  Outcome outcome = Outcome::kPending;
  int status = 0;           // HTTP status when answered.
  bool keep_alive = false;  // The response's Connection header allowed another request.
  std::string body;
  std::string why_unanswered;  // "EOF", "EPIPE", "crash", ...
  bool truncated = false;      // The connection ended (EOF) inside the response.
};

// Formats the HTTP/1.1 request of `exchange` into `out` (replaced).
void FormatRequest(const Exchange& exchange, std::string& out);

class Client;

// What a client asks its driver. All calls come from loop callbacks of the client.
class ClientDriver {
 public:
  virtual ~ClientDriver() = default;
  // The next exchange for `client`, or nullptr when it has nothing more to ask. The exchange
  // must stay alive until Settled() and after it (the driver keeps it).
  virtual Exchange* Next(Client& client) = 0;
  // `exchange` was answered or will never be; outcome, status and body are filled.
  virtual void Settled(Client& client, Exchange& exchange) = 0;
  // A violation the client saw itself (bytes after a response, an unparsable response).
  virtual void Violation(const std::string& what) = 0;
  // The client reached kDone.
  virtual void Finished(Client& client) = 0;
  // How long to wait before the next exchange.
  virtual int64_t ThinkNs(Client& client) = 0;
  // True once the simulated machine crashed: the client stops at once and touches nothing
  // (its descriptors are gone; their numbers may belong to someone else by now).
  [[nodiscard]] virtual bool halted() const = 0;
};

class Client {
 public:
  Client(loop::Loop& loop, io::SimBackend& sim, ClientDriver& driver, uint32_t id);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Starts thinking for `delay_ns`, then asks the driver for its first exchange.
  void Start(int64_t delay_ns);

  [[nodiscard]] uint32_t id() const { return id_; }
  [[nodiscard]] bool done() const { return state_ == State::kDone; }
  // "thinking", "connecting", ... for hang reports.
  [[nodiscard]] const char* state_name() const;

 private:
  enum class State : uint8_t { kThinking, kConnecting, kSending, kReceiving, kClosing, kDone };
  // Bytes per recv: one page, as the server reads.
  static constexpr uint32_t kReadBufferBytes = 4096;

  static loop::Action OnEvent(loop::Loop& loop, loop::Completion& c);
  static int OnMessageBegin(http_parser* parser);
  static int OnBody(http_parser* parser, const char* at, size_t length);
  static int OnMessageComplete(http_parser* parser);

  void OnThought();
  void OnConnected(int64_t result);
  void OnSent(int64_t result);
  void OnReceived(int64_t result);
  void OnClosed();
  void Think();
  void Connect();
  void Send();
  void Recv();
  void Close();
  void Settle(Exchange::Outcome outcome, const char* why);
  void Halt();
  void Enter(State state);

  loop::Loop& loop_;
  io::SimBackend& sim_;
  ClientDriver& driver_;
  const uint32_t id_;
  State state_ = State::kDone;
  loop::Completion c_;
  int fd_ = -1;
  bool fresh_ = false;  // The connection has carried no request yet.
  Exchange* exchange_ = nullptr;
  sockaddr_in address_{};
  std::string request_;   // The bytes being sent.
  http_parser parser_{};  // The response being read.
  bool message_begun_ = false;
  bool message_done_ = false;
  char buffer_[kReadBufferBytes];
};

}  // namespace sqloop::testing::http_sim

#endif  // SQLOOP_TESTS_WORKLOADS_HTTP_CLIENT_H_
