// The simulated HTTP client's state machine; the diagram and the transition table are in
// tests/workloads/http_client.h.
#include "tests/workloads/http_client.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"

namespace sqloop::testing::http_sim {
namespace {

constexpr char kTable[] = "CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)";
// Far over the server's body limit in the workload (kBodyBytesMax there): 413 at the headers.
constexpr uint64_t kOversizeBytes = 1 << 20;

// The JSON body of a query request: one statement, its arguments already JSON.
std::string QueryBody(absl::string_view sql, absl::string_view args_json) {
  return absl::StrCat(R"({"statements":[{"sql":")", sql, R"(","args":[)", args_json, "]}]}");
}

std::string KeyValueArgs(const Exchange& e) { return absl::StrCat(e.key, ",\"", e.value, "\""); }

std::string BodyOf(const Exchange& e) {
  switch (e.ask) {
    case Ask::kCreateTable:
      return QueryBody(kTable, "");
    case Ask::kWrite:
    case Ask::kHalfThenIdle:
    case Ask::kHalfThenClose:
      return QueryBody("INSERT INTO kv(k, v) VALUES (?1, ?2)", KeyValueArgs(e));
    case Ask::kRead:
      return QueryBody("SELECT v FROM kv WHERE k = ?1", absl::StrCat(e.key));
    case Ask::kConflict:
      // Both rows carry the same new key: the statement fails as a whole, the first row too.
      return QueryBody("INSERT INTO kv(k, v) VALUES (?1, ?2), (?1, ?2)", KeyValueArgs(e));
    case Ask::kSqlError:
      return QueryBody("SELEKT v FROM kv", "");
    case Ask::kBadJson:
      return R"({"statements":[{"sql":"SELECT 1")";  // Cut short: not JSON.
    case Ask::kUnknownTenant:
    case Ask::kInvalidTenant:
      return QueryBody("SELECT 1", "");
    case Ask::kVerifyRows:
      return QueryBody("SELECT k, v FROM kv ORDER BY k", "");
    case Ask::kVerifyCheck:
      return QueryBody("PRAGMA integrity_check", "");
    case Ask::kCreateTenant:
    case Ask::kOversize:
    case Ask::kStats:
      break;
  }
  return "";
}

// Connection states' names, indexed by Client::State.
constexpr const char* kStateNames[] = {"thinking",  "connecting", "sending",
                                       "receiving", "closing",    "done"};

}  // namespace

const char* AskName(Ask ask) {
  static constexpr const char* kNames[] = {
      "create_tenant", "create_table", "write",      "read",           "conflict",
      "sql_error",     "bad_json",     "unknown",    "invalid_tenant", "oversize",
      "stats",         "half_idle",    "half_close", "verify_rows",    "verify_check"};
  static_assert(std::size(kNames) == static_cast<size_t>(Ask::kVerifyCheck) + 1,
                "one name per Ask");
  return kNames[static_cast<int>(ask)];
}

void FormatRequest(const Exchange& e, std::string& out) {
  constexpr char kVersionHost[] = " HTTP/1.1\r\nHost: sim\r\n";
  switch (e.ask) {
    case Ask::kCreateTenant:
      out = absl::StrCat("PUT /v1/db/", e.tenant, kVersionHost, "Content-Length: 0\r\n\r\n");
      return;
    case Ask::kStats:
      out = absl::StrCat("GET /v1/stats", kVersionHost, "\r\n");
      return;
    case Ask::kOversize:
      out = absl::StrCat("POST /v1/db/", e.tenant, "/query", kVersionHost,
                         "Content-Type: application/json\r\nContent-Length: ", kOversizeBytes,
                         "\r\n\r\n");
      return;
    default:
      break;
  }
  const std::string body = BodyOf(e);
  out = absl::StrCat("POST /v1/db/", e.tenant, "/query", kVersionHost,
                     "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n\r\n",
                     body);
}

// ---- The state machine --------------------------------------------------------------------------

Client::Client(loop::Loop& loop, io::SimBackend& sim, ClientDriver& driver, uint32_t id)
    : loop_(loop), sim_(sim), driver_(driver), id_(id) {
  c_.user_data = this;
  c_.callback = &Client::OnEvent;
  c_.name = "http client";
  address_.sin_family = AF_INET;
  address_.sin_port = htons(kPort);
  address_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

const char* Client::state_name() const { return kStateNames[static_cast<int>(state_)]; }

void Client::Start(int64_t delay_ns) {
  SQLOOP_CHECK(state_ == State::kDone && fd_ < 0, "http client: started twice");
  Enter(State::kThinking);
  loop_.Timer(c_, absl::Nanoseconds(delay_ns));
}

loop::Action Client::OnEvent(loop::Loop&, loop::Completion& c) {
  auto& client = *static_cast<Client*>(c.user_data);
  if (client.driver_.halted()) {
    client.Halt();
    return loop::Action::kDisarm;
  }
  switch (client.state_) {
    case State::kThinking:
      client.OnThought();
      break;
    case State::kConnecting:
      client.OnConnected(c.result());
      break;
    case State::kSending:
      client.OnSent(c.result());
      break;
    case State::kReceiving:
      client.OnReceived(c.result());
      break;
    case State::kClosing:
      client.OnClosed();
      break;
    case State::kDone:
      SQLOOP_CHECK(false, "http client: a completion after kDone");
  }
  return loop::Action::kDisarm;
}

void Client::OnThought() {
  exchange_ = driver_.Next(*this);
  if (exchange_ == nullptr) {
    if (fd_ >= 0) return Close();
    Enter(State::kDone);
    driver_.Finished(*this);
    return;
  }
  FormatRequest(*exchange_, request_);
  if (exchange_->ask == Ask::kHalfThenIdle || exchange_->ask == Ask::kHalfThenClose) {
    // Any proper prefix: a cut in the request line, the headers or the body.
    request_.resize(sim_.prng().Range(1, request_.size() - 1));
  }
  if (fd_ < 0) return Connect();
  Send();
}

void Client::Connect() {
  fd_ = sim_.Socket();
  fresh_ = true;
  c_.op = io::Op{.kind = io::OpKind::kConnect,
                 .fd = fd_,
                 .buffer = &address_,
                 .length = static_cast<uint32_t>(sizeof(address_))};
  Enter(State::kConnecting);
  loop_.Submit(c_);
}

void Client::OnConnected(int64_t result) {
  if (result < 0) {
    // ECONNREFUSED: the server stopped and closed its listener. Nothing more to ask of it.
    Settle(Exchange::Outcome::kUnanswered, "connect refused");
    return Close();
  }
  Send();
}

void Client::Send() {
  exchange_->fresh_connection = fresh_;
  exchange_->sent_ns = loop_.now_ns();
  fresh_ = false;
  c_.op = io::Op{.kind = io::OpKind::kSend,
                 .fd = fd_,
                 .buffer = request_.data(),
                 .length = static_cast<uint32_t>(request_.size()),
                 .flags = MSG_NOSIGNAL};
  Enter(State::kSending);
  loop_.Submit(c_);
}

void Client::OnSent(int64_t result) {
  if (result < 0) {
    // EPIPE: the server closed this keep-alive connection (idle timeout, Stop) before it.
    Settle(Exchange::Outcome::kUnanswered, result == -EPIPE ? "EPIPE" : "send failed");
    return Close();
  }
  if (exchange_->ask == Ask::kHalfThenClose) {
    Settle(Exchange::Outcome::kUnanswered, "client disconnected mid-request");
    return Close();
  }
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
  message_begun_ = message_done_ = false;
  exchange_->body.clear();
  Recv();
}

void Client::Recv() {
  c_.op =
      io::Op{.kind = io::OpKind::kRecv, .fd = fd_, .buffer = buffer_, .length = sizeof(buffer_)};
  Enter(State::kReceiving);
  loop_.Submit(c_);
}

void Client::OnReceived(int64_t result) {
  if (result <= 0) {
    exchange_->truncated = result == 0 && message_begun_;
    Settle(Exchange::Outcome::kUnanswered, result == 0 ? "EOF" : "recv failed");
    return Close();
  }
  static const http_parser_settings kSettings = [] {
    http_parser_settings settings;
    http_parser_settings_init(&settings);
    settings.on_message_begin = &Client::OnMessageBegin;
    settings.on_body = &Client::OnBody;
    settings.on_message_complete = &Client::OnMessageComplete;
    return settings;
  }();
  const auto length = static_cast<size_t>(result);
  const size_t consumed = http_parser_execute(&parser_, &kSettings, buffer_, length);
  const auto error = static_cast<http_errno>(parser_.http_errno);
  if (!message_done_ && error != HPE_OK) {
    driver_.Violation(absl::StrCat("exchange ", exchange_->id,
                                   ": unparsable response: ", http_errno_description(error)));
    Settle(Exchange::Outcome::kUnanswered, "unparsable response");
    return Close();
  }
  if (!message_done_) return Recv();
  if (consumed != length) {
    // The server answers one request with one response: bytes after it are a second answer.
    driver_.Violation(absl::StrCat("exchange ", exchange_->id, " (", AskName(exchange_->ask),
                                   "): ", length - consumed, " bytes after its response"));
  }
  exchange_->status = parser_.status_code;
  exchange_->keep_alive = http_should_keep_alive(&parser_) != 0;
  const bool keep_alive = exchange_->keep_alive;
  Settle(Exchange::Outcome::kAnswered, "");
  if (!keep_alive) return Close();
  Think();
}

void Client::Close() {
  c_.op = io::Op{.kind = io::OpKind::kClose, .fd = fd_};
  Enter(State::kClosing);
  loop_.Submit(c_);
}

void Client::OnClosed() {
  fd_ = -1;
  Think();
}

void Client::Think() {
  Enter(State::kThinking);
  loop_.Timer(c_, absl::Nanoseconds(driver_.ThinkNs(*this)));
}

void Client::Settle(Exchange::Outcome outcome, const char* why) {
  SQLOOP_CHECK(exchange_ != nullptr && exchange_->outcome == Exchange::Outcome::kPending,
               "http client: an exchange settled twice");
  exchange_->outcome = outcome;
  exchange_->settled_ns = loop_.now_ns();
  exchange_->why_unanswered = why;
  Exchange& exchange = *exchange_;
  exchange_ = nullptr;
  driver_.Settled(*this, exchange);
}

void Client::Halt() {
  // The machine is gone, and this client with it: its descriptor was closed by the crash.
  if (exchange_ != nullptr) Settle(Exchange::Outcome::kUnanswered, "crash");
  fd_ = -1;
  Enter(State::kDone);
  driver_.Finished(*this);
}

void Client::Enter(State state) {
  state_ = state;
  const bool connected =
      state == State::kSending || state == State::kReceiving || state == State::kClosing;
  SQLOOP_CHECK(!connected || fd_ >= 0, "http client: a socket state without a socket");
  SQLOOP_CHECK(state != State::kReceiving || exchange_ != nullptr,
               "http client: receiving with no exchange in progress");
}

// ---- http_parser callbacks ----------------------------------------------------------------------

int Client::OnMessageBegin(http_parser* parser) {
  static_cast<Client*>(parser->data)->message_begun_ = true;
  return 0;
}

int Client::OnBody(http_parser* parser, const char* at, size_t length) {
  static_cast<Client*>(parser->data)->exchange_->body.append(at, length);
  return 0;
}

int Client::OnMessageComplete(http_parser* parser) {
  static_cast<Client*>(parser->data)->message_done_ = true;
  // Stop right after this response, so bytes after it are seen (and reported) by the caller.
  http_parser_pause(parser, 1);
  return 0;
}

}  // namespace sqloop::testing::http_sim
