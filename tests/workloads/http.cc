// The "http" workload: the SQL-over-HTTP host of examples/http (HttpServer over the
// RegistryExecutor) on the simulator, driven by simulated HTTP clients, ended by a graceful
// stop or a crash, and read back through HTTP by a restarted process. It covers the host's
// state machines (connections, deadlines, accept pauses, stop) deterministically, seed by seed.
//
// A seed draws the setup (DrawSetup): 2..16 clients (tests/workloads/http_client.h), 1..4
// tenants, a pool of 1..4 connections (so accepting pauses and clients wait in the listen
// backlog), 1..3 open tenants (so tenants wait for a slot and are evicted), keep-alive and
// tenant idle timeouts of a few tens of milliseconds on the virtual clock, and how the run ends.
//
// Run phase (one simulated machine: the server and its clients share the simulator):
//   - each client asks a script of requests (http_sim::Ask): a PUT and a CREATE TABLE of its
//     tenant first, then writes of unique keys, reads of acknowledged keys, bad inputs
//     (malformed JSON, an unknown tenant, an invalid name, an SQL error, a conflicting INSERT,
//     an oversize body), GET /v1/stats, half a request then silence (the server must time it
//     out), half a request then a disconnect. It thinks between requests, now and then past
//     the keep-alive timeout, so the server closes idle connections under it;
//   - the run ends one of three ways: the clients run out of work, then the host stops; a
//     graceful stop at a random moment (what SIGTERM does to sqloop_http); or a crash
//     (SimBackend::Crash: every descriptor gone, unsynced writes kept, dropped or torn) at a
//     random moment or right after the n-th acknowledged write. A crash may also come while
//     the host is stopping.
//
//   The host (class Host), as sqloop_http's Stopper runs it:
//
//     +----------+ Stop(): clients done, stop timer +-----------+ drained, executor idle:
//     | kServing | --------------------------------> | kStopping | close the listener, then
//     +----------+                                   +-----------+ shut the registry down
//          |  Crash(): crash timer                        |  |                 |
//          v                                              |  | Crash()         v
//     +----------+ <--------------------------------------+  |          +-----------+
//     | kCrashed | <-----------------------------------------+          | kShutDown |
//     +----------+ registry shut down at once; drained -------------->  +-----------+
//
// Properties checked during and after the run:
//   1. Every request settles exactly once: one whole response, or its connection ended first
//      (the client reports bytes after a response and truncated responses).
//   2. Every answer's status is one its Ask allows (Allowed), with the error code the API
//      documents (ExpectedCode); a read of an acknowledged key returns its value; answers say
//      keep-alive unless the server is stopping or closes on purpose (408, 413).
//   3. Without EINTR/EAGAIN in the seed's fault mix (the server closes a connection whose recv
//      or send fails), a complete request is answered unless the server stopped or crashed, or
//      it went out on a keep-alive connection idle for over half the keep-alive timeout, or
//      the server closed an idle connection to make room for a waiting client (server.h,
//      invariant 1a) while the request was outstanding.
//   4. No hang: every client finishes and the host shuts down before a watchdog on the
//      virtual clock fires (and the simulator reports a deadlock as an error by itself).
//   5. After a graceful stop the server drained and (without EINTR/EAGAIN) answered every
//      request it parsed: the clients' answers equal HttpServer::stats().requests; and once
//      the registry shut down, no file is open (SimBackend::open_files).
//   6. HttpServer's and RegistryExecutor's own invariants (they check them as they run).
// Recovery (a restarted process on the same disk, without faults) builds a new registry,
// executor and server, and one client reads every tenant back through HTTP: all rows, and
// PRAGMA integrity_check. Then (CheckRecovered):
//   7. integrity_check says "ok" for every tenant that exists;
//   8. a tenant whose PUT was answered (201, or 409: it existed) still exists, and a table that
//      was acknowledged (its CREATE TABLE or a write into it answered 200) still exists;
//   9. every acknowledged write is present with its value; no write answered 4xx is present;
//      no half request was ever executed; nothing is present that no request wrote;
//  10. querying an unknown tenant left no file behind.
// The trace hash folds the traces of both processes.
//
// The negative control (WorkloadOptions::ack_before_fsync) passes
// DatabaseOptions::ack_before_fsync_for_testing through RegistryOptions: writes are answered
// before their fsync, and with crash_drops_all property 9 must catch lost writes on some seeds.
// WorkloadResult::loss_possible stays false: the registry does not expose its databases'
// durable epochs, so this workload has no oracle of its own for it.
#include <sqlite3.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "examples/http/registry_executor.h"
#include "examples/http/server.h"
#include "simdjson.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/io/sim_trace.h"
#include "sqloop/loop/loop.h"
#include "tests/sim_workload.h"
#include "tests/workloads/http_client.h"

namespace sqloop::testing {
namespace {

using examples::http::HttpServer;
using examples::http::HttpServerOptions;
using examples::http::RegistryExecutor;
using examples::http::RegistryExecutorOptions;
using http_sim::Ask;
using http_sim::Client;
using http_sim::Exchange;
using loop::Action;
using loop::Completion;
using loop::Loop;

constexpr char kDirectory[] = "/data";
constexpr int64_t kMs = 1'000'000;
// Clients per run: two is the least that makes connections race; sixteen against a pool of
// at most four keeps clients waiting in the listen backlog (128 deep: never full).
constexpr uint32_t kClientsMin = 2;
constexpr uint32_t kClientsMax = 16;
constexpr uint32_t kTenantsMax = 4;
constexpr uint32_t kConnectionsMax = 4;
constexpr uint32_t kOpenTenantsMax = 3;
// Requests per client, its PUT and CREATE TABLE included: up to a few hundred per run, enough
// for group commits, evictions and timeouts, while 200 seeds take seconds in a debug build.
constexpr uint32_t kRequestsPerClientMin = 3;
constexpr uint32_t kRequestsPerClientMax = 16;
// Small server limits: the oversize request costs one header, and a limit is reached.
constexpr uint32_t kHeaderBytesMax = 2048;
constexpr uint32_t kBodyBytesMax = 4096;
// The header and write deadlines: 50 ms is 100 times the simulator's slowest network latency
// (0.5 ms per attempt), so a request being sent always arrives in time, while a half request
// is shed quickly.
constexpr int64_t kHeaderTimeoutNs = 50 * kMs;
constexpr int64_t kWriteTimeoutNs = 50 * kMs;
constexpr int64_t kLingerTimeoutNs = 10 * kMs;
// The keep-alive idle timeout is drawn in [20, 40] ms; client think times straddle it.
constexpr int64_t kKeepAliveMinNs = 20 * kMs;
constexpr int64_t kKeepAliveMaxNs = 40 * kMs;
// The registry's idle timeout is drawn in [5, 50] ms: tenants close and reopen within a run.
constexpr int64_t kTenantIdleMinNs = 5 * kMs;
constexpr int64_t kTenantIdleMaxNs = 50 * kMs;
// The stop or crash comes at a uniform time in [0, 400 ms]: runs take from tens of
// milliseconds to seconds of simulated time, so it lands before, during and after the work.
constexpr int64_t kEndWindowNs = 400 * kMs;
// A crash after an acknowledgement follows one of the first 24 acknowledged writes (most runs
// acknowledge more), within 0.2 ms: the fsync that covers a write takes up to 5 ms, so the
// crash often comes before it completed (where the negative control loses the write).
constexpr uint64_t kCrashAfterAckMax = 24;
constexpr int64_t kCrashAfterAckDelayMaxNs = kMs / 5;
// Clients start within the first 5 ms, so their first connections race.
constexpr int64_t kStartSpreadNs = 5 * kMs;
// One think in five is long (past the keep-alive timeout); the rest are short.
constexpr uint64_t kLongThinkOneIn = 5;
// Nothing takes this long on the virtual clock (the longest runs take seconds): a run that
// is still going then hangs.
constexpr int64_t kWatchdogNs = 600'000 * kMs;
// The phases' own watchdogs (RunPhase), past the traffic's: the run phase gets a minute of
// virtual time after kWatchdogNs to stop, drain and shut down (a stalled database or a server
// that never drains would otherwise poll for ever); recovery, without faults, reads a few
// tenants back in milliseconds, and must within a minute (the liveness bound of the fault-free
// phase: its requests all complete, or the run fails naming what is stuck).
constexpr int64_t kShutdownBudgetNs = 60'000 * kMs;
constexpr int64_t kRecoveryBudgetNs = 60'000 * kMs;
// How often a stopping host looks whether the server drained (sqloop_http polls as well).
constexpr int64_t kDrainPollNs = 1 * kMs;
// Keys are (client + 1) * kKeysPerClient + sequence: unique per run.
constexpr int64_t kKeysPerClient = 1'000'000;
constexpr uint64_t kValueBytesMax = 48;
constexpr uint64_t kTraceSettled = 0x4775;
constexpr uint64_t kTraceEnd = 0x477e;

enum class End : uint8_t { kRunOut, kStop, kCrash };

struct Setup {
  uint32_t clients = 0;
  uint32_t tenants = 0;
  uint32_t connections_max = 0;
  uint32_t open_max = 0;
  int64_t keep_alive_ns = 0;
  int64_t tenant_idle_ns = 0;
  End end = End::kRunOut;
  int64_t end_ns = 0;            // When the stop or crash comes, or, with crash_after_ack,
  uint32_t crash_after_ack = 0;  // how long after the client got this write's 200 (1-based).
  bool ack_before_fsync = false;
  // NEGATIVE CONTROL ONLY (liveness): WorkloadOptions::stall_group_commits_after, in every
  // process's databases.
  uint32_t stall_group_commits_after = 0;
};

Setup DrawSetup(io::Prng& prng, bool ack_before_fsync) {
  Setup setup;
  setup.clients = static_cast<uint32_t>(prng.Range(kClientsMin, kClientsMax));
  setup.tenants = static_cast<uint32_t>(prng.Range(1, kTenantsMax));
  setup.connections_max = static_cast<uint32_t>(prng.Range(1, kConnectionsMax));
  setup.open_max = static_cast<uint32_t>(prng.Range(1, kOpenTenantsMax));
  setup.keep_alive_ns = static_cast<int64_t>(prng.Range(kKeepAliveMinNs, kKeepAliveMaxNs));
  setup.tenant_idle_ns = static_cast<int64_t>(prng.Range(kTenantIdleMinNs, kTenantIdleMaxNs));
  // A quarter of the seeds run out of work, a quarter stop gracefully, half crash.
  const uint64_t end = prng.Below(4);
  setup.end = end == 0 ? End::kRunOut : end == 1 ? End::kStop : End::kCrash;
  setup.end_ns = static_cast<int64_t>(prng.Range(0, kEndWindowNs));
  // Half the crashes come right after an acknowledgement instead: a uniform moment rarely
  // falls between a write's answer and the fsync that covers it, where a durability bug shows.
  if (setup.end == End::kCrash && prng.Chance(0.5)) {
    setup.crash_after_ack = static_cast<uint32_t>(prng.Range(1, kCrashAfterAckMax));
    setup.end_ns = static_cast<int64_t>(prng.Range(0, kCrashAfterAckDelayMaxNs));
  }
  setup.ack_before_fsync = ack_before_fsync;
  return setup;
}

HttpServerOptions ServerOptions(const Setup& setup) {
  HttpServerOptions options;
  options.connections_max = setup.connections_max;
  options.header_bytes_max = kHeaderBytesMax;
  options.body_bytes_max = kBodyBytesMax;
  options.header_timeout = absl::Nanoseconds(kHeaderTimeoutNs);
  options.idle_timeout = absl::Nanoseconds(setup.keep_alive_ns);
  options.write_timeout = absl::Nanoseconds(kWriteTimeoutNs);
  options.linger_timeout = absl::Nanoseconds(kLingerTimeoutNs);
  return options;
}

// ---- The host -----------------------------------------------------------------------------------

// One incarnation of the service: the registry executor on /data and the server on a
// simulated listening socket, with sqloop_http's shutdown sequence (its Stopper): stop the
// server, wait until it drained and the executor is idle, close the listener (clients still
// in its backlog are reset), shut the registry down. A crash shuts the registry down at once:
// it must not open anything after the crash, whose descriptors' numbers are free again.
class Host {
 public:
  using Hook = void (*)(void* arg);

  [[nodiscard]] static std::unique_ptr<Host> Create(Loop& loop, io::SimBackend& sim,
                                                    const Setup& setup) {
    RegistryExecutorOptions options;
    options.registry.directory = kDirectory;
    options.registry.open_max = setup.open_max;
    options.registry.idle_timeout = absl::Nanoseconds(setup.tenant_idle_ns);
    options.registry.database.ack_before_fsync_for_testing = setup.ack_before_fsync;
    if (setup.stall_group_commits_after != 0) {
      StallGroupCommitsAfter(options.registry.database, setup.stall_group_commits_after);
    }
    // One job per connection, as sqloop_http sizes it: never a 503 for want of one.
    options.requests_in_flight_max = setup.connections_max;
    // An injected metadata error (SimFaults::meta_eio) can fail the start, as it would fail a
    // real host's; its supervisor starts it again. Eight failures in a row, at most 1 % each,
    // do not happen.
    constexpr int kStartAttemptsMax = 8;
    absl::StatusOr<std::unique_ptr<RegistryExecutor>> executor;
    for (int attempt = 0; attempt < kStartAttemptsMax; ++attempt) {
      executor = RegistryExecutor::Create(loop, options);
      if (executor.ok()) break;
    }
    SQLOOP_CHECK(executor.ok(), "http workload: the registry executor could not be created");
    const int listen_fd = sim.Listen(http_sim::kPort);
    SQLOOP_CHECK(listen_fd >= 0, "http workload: the simulator refused to listen");
    return std::make_unique<Host>(loop, sim, *std::move(executor), listen_fd, ServerOptions(setup));
  }

  Host(Loop& loop, io::SimBackend& sim, std::unique_ptr<RegistryExecutor> executor, int listen_fd,
       const HttpServerOptions& options)
      : loop_(loop),
        sim_(sim),
        executor_(std::move(executor)),
        listen_fd_(listen_fd),
        server_(loop, *executor_, listen_fd, options) {
    poll_.user_data = close_.user_data = this;
    poll_.callback = &Host::OnPoll;
    close_.callback = &Host::OnListenerClosed;
  }

  void Start() { server_.Start(); }
  void OnShutDown(Hook hook, void* arg) {
    hook_ = hook;
    hook_arg_ = arg;
  }

  // Graceful: what SIGTERM does. Idempotent.
  void Stop() {
    if (stopping_) return;
    stopping_ = true;
    server_.Stop();
    loop_.Timer(poll_, absl::Nanoseconds(kDrainPollNs));
  }

  // Power loss. The objects live on only to be unwound: every op fails, nothing new opens.
  void Crash() {
    if (crashed_) return;
    crashed_ = true;
    poisonings_before_crash_ = executor_->vfs_stats().poisonings;  // The crash poisons more.
    sim_.Crash();
    server_.Stop();
    ShutDownExecutor();
    if (!stopping_) {
      stopping_ = true;
      loop_.Timer(poll_, absl::Nanoseconds(kDrainPollNs));
    }
  }

  // Databases poisoned (by a failed fsync or write) before any crash.
  [[nodiscard]] uint64_t poisonings() const {
    return crashed_ ? poisonings_before_crash_ : executor_->vfs_stats().poisonings;
  }
  [[nodiscard]] bool drained() const { return drained_; }
  [[nodiscard]] bool shut_down() const { return shut_down_; }
  // For a watchdog's verdict: how far the host's stop got.
  [[nodiscard]] std::string Describe() const {
    return absl::StrCat(
        "server open connections ", server_.open_connections(),
        server_.drained() ? " (drained)" : " (not drained)", ", executor in flight ",
        executor_->in_flight(), stopping_ ? ", stopping" : "", crashed_ ? ", crashed" : "",
        executor_stopping_ ? ", registry shutting down" : "", shut_down_ ? ", shut down" : "");
  }
  [[nodiscard]] const absl::Status& shutdown_status() const { return shutdown_status_; }
  [[nodiscard]] const HttpServer& server() const { return server_; }
  [[nodiscard]] const RegistryExecutor& executor() const { return *executor_; }

 private:
  static Action OnPoll(Loop&, Completion& c) {
    auto& host = *static_cast<Host*>(c.user_data);
    if (!host.server_.drained()) return Action::kRearm;
    if (!host.crashed_ && host.executor_->in_flight() != 0) return Action::kRearm;
    host.drained_ = true;
    if (host.crashed_) return Action::kDisarm;  // The listener went with the crash.
    host.close_.op = io::Op{.kind = io::OpKind::kClose, .fd = host.listen_fd_};
    host.loop_.Submit(host.close_);
    return Action::kDisarm;
  }

  static Action OnListenerClosed(Loop&, Completion& c) {
    static_cast<Host*>(c.user_data)->ShutDownExecutor();
    return Action::kDisarm;
  }

  void ShutDownExecutor() {
    if (executor_stopping_) return;
    executor_stopping_ = true;
    executor_->Shutdown(
        [](void* arg, absl::Status status) {
          auto& host = *static_cast<Host*>(arg);
          host.shut_down_ = true;
          host.shutdown_status_ = std::move(status);
          if (host.hook_ != nullptr) host.hook_(host.hook_arg_);
        },
        this);
  }

  Loop& loop_;
  io::SimBackend& sim_;
  std::unique_ptr<RegistryExecutor> executor_;  // Declared before server_: outlives it.
  const int listen_fd_;
  HttpServer server_;
  Completion poll_;
  Completion close_;
  bool stopping_ = false;
  bool crashed_ = false;
  bool drained_ = false;
  bool executor_stopping_ = false;
  bool shut_down_ = false;
  uint64_t poisonings_before_crash_ = 0;
  absl::Status shutdown_status_;
  Hook hook_ = nullptr;
  void* hook_arg_ = nullptr;
};

// ---- Reading answers ----------------------------------------------------------------------------

using Rows = std::vector<std::vector<std::string>>;

// The rows of the first result of a query's 200 answer, each cell as text (integers in
// decimal), or nullopt if the body is not a results object.
std::optional<Rows> FirstResultRows(simdjson::dom::parser& parser, const std::string& body) {
  simdjson::dom::array rows;
  if (parser.parse(body)["results"].at(0)["rows"].get_array().get(rows)) return std::nullopt;
  Rows out;
  for (simdjson::dom::element row : rows) {
    simdjson::dom::array cells;
    if (row.get_array().get(cells)) return std::nullopt;
    std::vector<std::string>& text = out.emplace_back();
    for (simdjson::dom::element cell : cells) {
      std::string_view s;
      int64_t n = 0;
      if (!cell.get_string().get(s)) {
        text.emplace_back(s);
      } else if (!cell.get_int64().get(n)) {
        text.push_back(absl::StrCat(n));
      } else {
        text.emplace_back("?");
      }
    }
  }
  return out;
}

// The "code" of an error answer, or "" if the body is not an error object.
std::string ErrorCode(simdjson::dom::parser& parser, const std::string& body) {
  std::string_view code;
  if (parser.parse(body)["error"]["code"].get_string().get(code)) return "";
  return std::string(code);
}

// The statuses an answer to `e` may have (property 2). A 5xx is allowed wherever the executor
// runs something: faults and crashes make "internal", "outcome_unknown" and "unavailable"
// legitimate. A 404 is allowed while the tenant's creation was not known, a 400 ("no such
// table") while its table's was not.
bool Allowed(const Exchange& e) {
  const int s = e.status;
  const bool server_error = s == 500 || s == 503;
  switch (e.ask) {
    case Ask::kCreateTenant:
      return s == 201 || s == 409 || server_error;
    case Ask::kCreateTable:
    case Ask::kWrite:
    case Ask::kRead:
    case Ask::kConflict:
    case Ask::kSqlError: {
      if (server_error || (s == 404 && !e.tenant_known)) return true;
      if (s == 400 && !e.table_known && e.ask != Ask::kCreateTable) return true;
      const int expected = e.ask == Ask::kConflict ? 409 : e.ask == Ask::kSqlError ? 400 : 200;
      return s == expected;
    }
    case Ask::kBadJson:
    case Ask::kInvalidTenant:
      return s == 400;
    case Ask::kUnknownTenant:
      return s == 404;
    case Ask::kOversize:
      return s == 413;
    case Ask::kStats:
      return s == 200;
    case Ask::kHalfThenIdle:
      return s == 408;
    case Ask::kHalfThenClose:
      return false;  // Never waits for an answer.
    case Ask::kVerifyRows:
    case Ask::kVerifyCheck:
      return s == 200 || s == 404 || s == 400;
  }
  return false;
}

// The error code the API documents (examples/http/handler.h) for an allowed error status.
const char* ExpectedCode(const Exchange& e) {
  switch (e.status) {
    case 400:
      return e.ask == Ask::kBadJson         ? "malformed_json"
             : e.ask == Ask::kInvalidTenant ? "invalid_tenant"
                                            : "invalid_argument";
    case 404:
      return "not_found";
    case 408:
      return "timeout";
    case 409:
      return "conflict";
    case 413:
      return "body_too_large";
    case 503:
      return "unavailable";
    default:
      return nullptr;  // 500: "internal" or "outcome_unknown"; both say the same to a client.
  }
}

// ---- The run phase: the clients' traffic --------------------------------------------------------

// The driver of the run phase's clients: hands out their scripts, checks every answer as it
// settles (properties 1 to 3), and ends the run (stop, crash, watchdog).
class Traffic final : public http_sim::ClientDriver {
 public:
  struct Tenant {
    std::string name;
    bool created = false;                // A PUT was answered 201 or 409.
    bool table = false;                  // A CREATE TABLE or a write was answered 200.
    std::vector<const Exchange*> acked;  // Writes answered 200.
  };

  Traffic(Loop& loop, io::SimBackend& sim, const Setup& setup, bool strict_network, Host& host)
      : loop_(loop), sim_(sim), setup_(setup), strict_network_(strict_network), host_(host) {
    for (uint32_t t = 0; t < setup.tenants; ++t) {
      tenants_.emplace_back().name = absl::StrCat("t", t);
    }
    end_.user_data = watchdog_.user_data = this;
    end_.callback = &Traffic::OnEnd;
    watchdog_.callback = &Traffic::OnWatchdog;
    host.OnShutDown([](void* arg) { static_cast<Traffic*>(arg)->MaybeFinish(); }, this);
  }

  void Start() {
    for (uint32_t id = 0; id < setup_.clients; ++id) {
      plans_.push_back(Plan{.requests = static_cast<uint32_t>(
                                sim_.prng().Range(kRequestsPerClientMin, kRequestsPerClientMax)),
                            .home = id % setup_.tenants});
      clients_.push_back(std::make_unique<Client>(loop_, sim_, *this, id));
    }
    running_ = setup_.clients;
    for (const std::unique_ptr<Client>& client : clients_) {
      client->Start(static_cast<int64_t>(sim_.prng().Below(kStartSpreadNs)));
    }
    if (setup_.end != End::kRunOut && setup_.crash_after_ack == 0) {
      loop_.Timer(end_, absl::Nanoseconds(setup_.end_ns));
    }
    loop_.Timer(watchdog_, absl::Nanoseconds(kWatchdogNs));
  }

  Exchange* Next(Client& client) override {
    Plan& plan = plans_[client.id()];
    if (crashed_ || plan.refused || plan.asked == plan.requests) return nullptr;
    const uint32_t sequence = plan.asked++;
    const uint64_t capacity_closes = host_.server().stats().idle_closed_for_capacity;
    plan.capacity_closes_baseline =
        plan.last_answer_ns < 0 ? capacity_closes : plan.capacity_closes_at_last_next;
    plan.capacity_closes_at_last_next = capacity_closes;
    Exchange& e = exchanges_.emplace_back();
    e.client = client.id();
    e.id = static_cast<uint32_t>(exchanges_.size());
    e.ask = sequence == 0 ? Ask::kCreateTenant : sequence == 1 ? Ask::kCreateTable : DrawAsk();
    e.tenant_index =
        sequence < 2 ? plan.home : static_cast<uint32_t>(sim_.prng().Below(setup_.tenants));
    const Tenant& tenant = tenants_[e.tenant_index];
    e.tenant = tenant.name;
    e.tenant_known = tenant.created;
    e.table_known = tenant.table;
    if (e.ask == Ask::kRead && tenant.acked.empty()) e.ask = Ask::kWrite;  // Nothing to read.
    if (e.ask == Ask::kRead) {
      const Exchange& write = *tenant.acked[sim_.prng().Below(tenant.acked.size())];
      e.key = write.key;
      e.value = write.value;
    } else {
      e.key = (static_cast<int64_t>(client.id()) + 1) * kKeysPerClient + sequence;
      e.value = RandomValue();
    }
    if (e.ask == Ask::kUnknownTenant) e.tenant = absl::StrCat("ghost-", client.id());
    if (e.ask == Ask::kInvalidTenant) e.tenant = "Not.A.Tenant";
    return &e;
  }

  void Settled(Client& client, Exchange& e) override {
    Plan& plan = plans_[client.id()];
    if (e.outcome == Exchange::Outcome::kAnswered) {
      CheckAnswer(e);
      Learn(e);
      plan.last_answer_ns = e.keep_alive ? loop_.now_ns() : -1;
    } else {
      CheckUnanswered(e, plan);
      plan.last_answer_ns = -1;
      plan.refused = plan.refused || e.why_unanswered == "connect refused";
    }
    sim_.Trace(kTraceSettled);
    sim_.Trace(e.id);
    sim_.Trace(static_cast<uint64_t>(e.status));
  }

  void Violation(const std::string& what) override {
    if (violation_.empty()) violation_ = what;
  }

  void Finished(Client&) override {
    --running_;
    if (running_ == 0 && !crashed_) {
      stopping_ = true;  // The clients ran out of work: the host stops, as after SIGTERM.
      host_.Stop();
    }
    MaybeFinish();
  }

  int64_t ThinkNs(Client&) override {
    if (sim_.prng().Below(kLongThinkOneIn) == 0) {
      return static_cast<int64_t>(
          sim_.prng().Range(setup_.keep_alive_ns * 3 / 2, setup_.keep_alive_ns * 2));
    }
    return static_cast<int64_t>(sim_.prng().Range(0, setup_.keep_alive_ns / 4));
  }

  [[nodiscard]] bool halted() const override { return crashed_; }

  // For a watchdog's verdict: the clients still running, and the host.
  [[nodiscard]] std::string Stuck() const {
    std::vector<std::string> stuck;
    for (const std::unique_ptr<Client>& client : clients_) {
      if (!client->done()) stuck.push_back(absl::StrCat(client->id(), ":", client->state_name()));
    }
    return absl::StrCat("clients [", absl::StrJoin(stuck, " "), "] are running; ",
                        host_.Describe());
  }

  // Properties 1, 4 and 5, once the loop ran out of work. Returns the first violation or "".
  [[nodiscard]] std::string CheckEnd() const {
    if (!violation_.empty()) return violation_;
    for (const Exchange& e : exchanges_) {
      if (e.outcome == Exchange::Outcome::kPending) {
        return absl::StrCat("exchange ", e.id, " (", http_sim::AskName(e.ask), ") never settled");
      }
    }
    if (!host_.shut_down()) return "the host never shut down";
    if (crashed_) return "";
    if (!host_.drained()) return "the server never drained after Stop()";
    // The registry closed every tenant: each file it opened is closed again.
    if (const uint32_t open = sim_.open_files(); open != 0) {
      return absl::StrCat("the host shut down with ", open, " files still open");
    }
    const HttpServer::Stats& stats = host_.server().stats();
    if (stats.connections_accepted != stats.connections_closed) {
      return absl::StrCat("the server accepted ", stats.connections_accepted,
                          " connections but closed ", stats.connections_closed);
    }
    uint64_t answered = 0;  // Complete requests answered; 408 and 413 come before parsing.
    for (const Exchange& e : exchanges_) {
      answered += e.outcome == Exchange::Outcome::kAnswered && e.ask != Ask::kOversize &&
                  e.ask != Ask::kHalfThenIdle && e.status != 408;
    }
    if (answered > stats.requests || (strict_network_ && answered != stats.requests)) {
      return absl::StrCat("the server parsed ", stats.requests, " requests; the clients got ",
                          answered, " answers to them");
    }
    return "";
  }

  [[nodiscard]] const std::deque<Exchange>& exchanges() const { return exchanges_; }
  [[nodiscard]] const std::vector<Tenant>& tenants() const { return tenants_; }
  [[nodiscard]] bool crashed() const { return crashed_; }
  [[nodiscard]] int64_t ended_ns() const { return ended_ns_; }
  [[nodiscard]] int64_t finished_ns() const { return finished_ns_; }

 private:
  struct Plan {
    uint32_t requests = 0;  // In the script.
    uint32_t home = 0;      // The tenant of its PUT and CREATE TABLE.
    uint32_t asked = 0;
    bool refused = false;         // A connect was refused: the server is gone.
    int64_t last_answer_ns = -1;  // The last keep-alive answer on the open connection.
    // The server's idle_closed_for_capacity before the connection of the current exchange last
    // became idle: when the exchange before it was handed out (on a keep-alive connection), or
    // when this one was (on a fresh one). Any close for room of this connection came later.
    uint64_t capacity_closes_baseline = 0;
    uint64_t capacity_closes_at_last_next = 0;
  };

  Ask DrawAsk() {
    // Weights out of 100: mostly writes and reads, a few of every bad input.
    static constexpr std::pair<Ask, uint32_t> kWeights[] = {
        {Ask::kWrite, 36},        {Ask::kRead, 16},         {Ask::kConflict, 5},
        {Ask::kSqlError, 5},      {Ask::kBadJson, 5},       {Ask::kUnknownTenant, 5},
        {Ask::kInvalidTenant, 5}, {Ask::kStats, 5},         {Ask::kOversize, 4},
        {Ask::kHalfThenIdle, 4},  {Ask::kHalfThenClose, 4}, {Ask::kCreateTenant, 3},
        {Ask::kCreateTable, 3}};
    uint64_t draw = sim_.prng().Below(100);
    for (const auto& [ask, weight] : kWeights) {
      if (draw < weight) return ask;
      draw -= weight;
    }
    return Ask::kWrite;
  }

  std::string RandomValue() {
    std::string value(sim_.prng().Range(1, kValueBytesMax), 'a');
    for (char& c : value) c = static_cast<char>('a' + sim_.prng().Below(26));
    return value;
  }

  void CheckAnswer(const Exchange& e) {
    const std::string where = absl::StrCat("exchange ", e.id, " (", http_sim::AskName(e.ask),
                                           " on ", e.tenant, ", client ", e.client, ")");
    // With metadata faults, opening an unknown tenant's file may fail with EIO, so the server
    // cannot tell whether the tenant exists: 503 "unavailable" is the honest answer there.
    const bool unknown_unavailable =
        e.ask == Ask::kUnknownTenant && e.status == 503 && sim_.options().faults.meta_eio > 0;
    // A request slowed by the network (lost segments, a partition) may miss the server's
    // header deadline: 408 "timeout", and the server closes, as for a half request.
    const io::SimFaults& f = sim_.options().faults;
    const bool late = e.status == 408 && (f.net_drop > 0 || f.partition_ns > 0);
    if (!Allowed(e) && !unknown_unavailable && !late) {
      return Violation(absl::StrCat(where, " answered ", e.status, ": ", e.body));
    }
    const char* code = late ? "timeout" : ExpectedCode(e);
    if (code != nullptr && ErrorCode(json_, e.body) != code) {
      return Violation(
          absl::StrCat(where, " answered ", e.status, " without code \"", code, "\": ", e.body));
    }
    // 408 and 413 leave the byte stream in doubt: the server closes. Otherwise it keeps the
    // connection unless it is stopping.
    const bool closes = e.status == 408 || e.status == 413;
    if ((closes && e.keep_alive) || (!closes && !e.keep_alive && !stopping_)) {
      return Violation(absl::StrCat(where, " answered ", e.status,
                                    e.keep_alive ? " with keep-alive" : " with close"));
    }
    if (e.ask == Ask::kRead && e.status == 200) {
      const std::optional<Rows> rows = FirstResultRows(json_, e.body);
      if (!rows.has_value() || *rows != Rows{{e.value}}) {
        Violation(absl::StrCat(where, ": the acknowledged key ", e.key, " read back as ", e.body));
      }
    }
  }

  void Learn(const Exchange& e) {
    Tenant& tenant = tenants_[e.tenant_index];
    if (e.ask == Ask::kCreateTenant && (e.status == 201 || e.status == 409)) tenant.created = true;
    if ((e.ask == Ask::kCreateTable || e.ask == Ask::kWrite) && e.status == 200) {
      tenant.created = tenant.table = true;
      if (e.ask == Ask::kWrite) tenant.acked.push_back(&e);
      if (e.ask == Ask::kWrite && ++acks_ == setup_.crash_after_ack && !finished_) {
        loop_.Timer(end_, absl::Nanoseconds(setup_.end_ns));
      }
    }
  }

  // Property 3. An unanswered request is fine after a stop or crash, for the disconnecting
  // client, and with EINTR/EAGAIN in the fault mix; otherwise only on a keep-alive connection
  // the server may have closed for idleness.
  void CheckUnanswered(const Exchange& e, const Plan& plan) {
    const std::string where =
        absl::StrCat("exchange ", e.id, " (", http_sim::AskName(e.ask), ", client ", e.client, ")");
    // The server sends a response whole or not at all, unless its send fails.
    if (e.truncated && strict_network_ && !crashed_) {
      return Violation(absl::StrCat(where, ": the connection ended inside the response"));
    }
    if (e.ask == Ask::kHalfThenClose || crashed_ || stopping_) return;
    if (e.why_unanswered == "connect refused") {
      return Violation(absl::StrCat(where, ": connect refused while the server was serving"));
    }
    if (!strict_network_) return;
    // The server closed its oldest idle connection for a waiting client (server.h, invariant
    // 1a): a connection whose request had not reached the server yet may have been the one.
    if (host_.server().stats().idle_closed_for_capacity > plan.capacity_closes_baseline) return;
    if (e.fresh_connection) {
      return Violation(
          absl::StrCat(where, " got no answer on a fresh connection (", e.why_unanswered, ")"));
    }
    const int64_t idle_ns = e.sent_ns - plan.last_answer_ns;
    if (plan.last_answer_ns >= 0 && idle_ns < setup_.keep_alive_ns / 2) {
      Violation(absl::StrCat(where, " got no answer (", e.why_unanswered,
                             ") on a keep-alive connection idle for only ", idle_ns / 1000, " us"));
    }
  }

  static Action OnEnd(Loop& loop, Completion& c) {
    auto& self = *static_cast<Traffic*>(c.user_data);
    if (self.finished_) return Action::kDisarm;  // Fired in the tick everything finished.
    self.ended_ns_ = loop.now_ns();
    self.sim_.Trace(kTraceEnd);
    if (self.setup_.end == End::kStop) {
      self.stopping_ = true;
      self.host_.Stop();
    } else {
      self.crashed_ = true;
      self.host_.Crash();
    }
    return Action::kDisarm;
  }

  static Action OnWatchdog(Loop& loop, Completion& c) {
    auto& self = *static_cast<Traffic*>(c.user_data);
    if (self.finished_) return Action::kDisarm;
    self.Violation(
        absl::StrCat("hang: after ", loop.now_ns() / kMs, " ms of simulated time ", self.Stuck()));
    self.crashed_ = true;  // Unwind as after a crash, so the run can end and report.
    self.host_.Crash();
    return Action::kDisarm;
  }

  void MaybeFinish() {
    if (!host_.shut_down() || running_ != 0) return;
    finished_ = true;
    finished_ns_ = loop_.now_ns();
    for (Completion* timer : {&end_, &watchdog_}) {
      if (timer->state() != Completion::State::kIdle) loop_.Cancel(*timer);
    }
  }

  Loop& loop_;
  io::SimBackend& sim_;
  const Setup setup_;
  const bool strict_network_;
  Host& host_;
  std::vector<Tenant> tenants_;
  std::vector<Plan> plans_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::deque<Exchange> exchanges_;  // A deque: exchanges never move once handed out.
  uint32_t running_ = 0;
  uint32_t acks_ = 0;  // Writes answered 200 so far.
  bool stopping_ = false;
  bool crashed_ = false;
  int64_t ended_ns_ = -1;  // When the stop or crash timer fired; -1 if it did not.
  bool finished_ = false;  // Every client done and the host shut down.
  int64_t finished_ns_ = 0;
  Completion end_;
  Completion watchdog_;
  simdjson::dom::parser json_;
  std::string violation_;
};

// ---- Recovery: reading every tenant back through HTTP -------------------------------------------

// The driver of the recovering process's one client: for each tenant, all rows and
// PRAGMA integrity_check; then the liveness phase (no faults, so the service must make
// progress): a new tenant, its table, kLivenessWrites writes and a read of the last, each
// answered as on a healthy server (201, 200, 200 with the value) within kLivenessBoundNs of
// virtual time of being sent; then the host stops.
class Verifier final : public http_sim::ClientDriver {
 public:
  // The liveness phase's tenant: a valid name no run tenant ("t<n>") or made-up one has.
  static constexpr char kLivenessTenant[] = "liveness";
  static constexpr uint32_t kLivenessWrites = 4;
  // A request of the fault-free phase is answered within this much virtual time: an fsync takes
  // at most 5 ms, an open a few; one second is far past a healthy answer.
  static constexpr int64_t kLivenessBoundNs = 1'000 * kMs;

  Verifier(Loop& loop, io::SimBackend& sim, Host& host, const std::vector<std::string>& tenants)
      : host_(host), tenants_(tenants), client_(loop, sim, *this, 0) {}

  void Start() { client_.Start(0); }

  Exchange* Next(Client&) override {
    if (exchanges_.size() == total()) return nullptr;
    Exchange& e = exchanges_.emplace_back();
    e.id = static_cast<uint32_t>(exchanges_.size());
    const size_t index = exchanges_.size() - 1;
    if (index < verify_count()) {
      e.ask = index % 2 == 0 ? Ask::kVerifyRows : Ask::kVerifyCheck;
      e.tenant_index = static_cast<uint32_t>(index / 2);
      e.tenant = tenants_[e.tenant_index];
      return &e;
    }
    // The liveness phase: PUT, CREATE TABLE, the writes, a read of the last write.
    const size_t step = index - verify_count();
    e.tenant = kLivenessTenant;
    e.tenant_known = e.table_known = step >= 2;
    e.ask = step == 0                    ? Ask::kCreateTenant
            : step == 1                  ? Ask::kCreateTable
            : step < 2 + kLivenessWrites ? Ask::kWrite
                                         : Ask::kRead;
    e.key = static_cast<int64_t>(std::min<size_t>(step - 1, kLivenessWrites));
    e.value = absl::StrCat("live", e.key);
    return &e;
  }
  void Settled(Client&, Exchange& e) override {
    if (e.ask == Ask::kVerifyRows || e.ask == Ask::kVerifyCheck) return;
    const int expected = e.ask == Ask::kCreateTenant ? 201 : 200;
    if (e.outcome != Exchange::Outcome::kAnswered || e.status != expected) {
      Violation(absl::StrCat("liveness: the fault-free ", http_sim::AskName(e.ask), " of tenant ",
                             kLivenessTenant, " was ",
                             e.outcome == Exchange::Outcome::kAnswered
                                 ? absl::StrCat("answered ", e.status, ": ", e.body)
                                 : absl::StrCat("not answered (", e.why_unanswered, ")"),
                             ", not ", expected));
    } else if (e.ask == Ask::kRead && !absl::StrContains(e.body, e.value)) {
      Violation(absl::StrCat("liveness: the read of the last write returned ", e.body));
    } else if (e.settled_ns - e.sent_ns > kLivenessBoundNs) {
      Violation(absl::StrCat("liveness: the fault-free ", http_sim::AskName(e.ask), " took ",
                             (e.settled_ns - e.sent_ns) / kMs, " ms of virtual time, more than ",
                             kLivenessBoundNs / kMs));
    }
  }
  void Violation(const std::string& what) override {
    if (violation_.empty()) violation_ = what;
  }
  void Finished(Client&) override { host_.Stop(); }
  int64_t ThinkNs(Client&) override { return 0; }
  [[nodiscard]] bool halted() const override { return false; }

  // The answers for tenant `t`: its rows, and its integrity check.
  [[nodiscard]] const Exchange& rows(uint32_t t) const { return exchanges_[2 * size_t{t}]; }
  [[nodiscard]] const Exchange& check(uint32_t t) const { return exchanges_[2 * size_t{t} + 1]; }
  [[nodiscard]] bool complete() const { return exchanges_.size() == total(); }
  [[nodiscard]] const char* client_state() const { return client_.state_name(); }
  [[nodiscard]] std::string progress() const {
    return absl::StrCat("request ", exchanges_.size(), " of ", total(),
                        exchanges_.size() > verify_count() ? " (liveness phase)" : "");
  }
  [[nodiscard]] const std::string& violation() const { return violation_; }

 private:
  [[nodiscard]] size_t verify_count() const { return 2 * tenants_.size(); }
  [[nodiscard]] size_t total() const { return verify_count() + 3 + kLivenessWrites; }

  Host& host_;
  const std::vector<std::string> tenants_;
  Client client_;
  std::deque<Exchange> exchanges_;
  std::string violation_;
};

// ---- The checker --------------------------------------------------------------------------------

struct Verdict {
  std::string failure;
  bool lost = false;  // An acknowledged write (or table, or tenant) is missing or changed.
  uint64_t rows = 0;  // Rows read back, all tenants.

  // Acknowledged data is gone (`loss`) or a tenant is damaged.
  void Damage(std::string what, bool loss) {
    lost = loss;
    failure = std::move(what);
  }
};

bool IsWriteAsk(Ask ask) {
  return ask == Ask::kWrite || ask == Ask::kConflict || ask == Ask::kHalfThenIdle ||
         ask == Ask::kHalfThenClose;
}

// Property 9 for one tenant, given the rows read back (key -> value).
void CheckRows(const Traffic& traffic, uint32_t t, std::map<int64_t, std::string> present,
               Verdict& verdict) {
  const std::string& name = traffic.tenants()[t].name;
  for (const Exchange& e : traffic.exchanges()) {
    if (!IsWriteAsk(e.ask) || e.tenant_index != t || e.tenant != name) continue;
    const bool answered = e.outcome == Exchange::Outcome::kAnswered;
    const bool acked = e.ask == Ask::kWrite && answered && e.status == 200;
    // A half request never completes, so it never runs; a 4xx means it did not run.
    const bool absent = e.ask == Ask::kHalfThenIdle || e.ask == Ask::kHalfThenClose ||
                        (answered && e.status >= 400 && e.status < 500);
    const auto it = present.find(e.key);
    const std::string what = absl::StrCat("write ", e.id, " (", http_sim::AskName(e.ask), ", key ",
                                          e.key, ") to ", name);
    if (acked && it == present.end()) {
      verdict.Damage(absl::StrCat("acknowledged ", what, " is lost"), /*loss=*/true);
    } else if (it != present.end() && it->second != e.value) {
      verdict.lost = acked;
      verdict.failure = absl::StrCat(what, " came back as \"", it->second, "\"");
    } else if (absent && it != present.end()) {
      verdict.failure = absl::StrCat(what, " answered ", e.status, " is present");
    }
    if (!verdict.failure.empty()) return;
    if (it != present.end()) present.erase(it);
  }
  if (!present.empty()) {
    verdict.failure = absl::StrCat("key ", present.begin()->first, " of ", name,
                                   " is present, but no request wrote it");
  }
}

// Properties 7 and 8 for one tenant, then 9 through CheckRows.
void CheckTenant(const Traffic& traffic, const Verifier& verifier, uint32_t t,
                 simdjson::dom::parser& json, Verdict& verdict) {
  const Traffic::Tenant& tenant = traffic.tenants()[t];
  const Exchange& rows = verifier.rows(t);
  const Exchange& check = verifier.check(t);
  if (rows.status == 404 || check.status == 404) {
    if (tenant.created || tenant.table) {
      verdict.Damage(absl::StrCat("tenant ", tenant.name, " was created but is gone: ", rows.body),
                     /*loss=*/true);
    }
    return;  // Nothing was acknowledged into it (a table would imply a PUT's success).
  }
  if (check.status != 200 || FirstResultRows(json, check.body) != Rows{{"ok"}}) {
    verdict.Damage(absl::StrCat("integrity_check of ", tenant.name, ": ", check.body),
                   /*loss=*/false);
    return;  // Nothing more to read from a damaged tenant.
  }
  std::map<int64_t, std::string> present;
  const std::optional<Rows> read =
      rows.status == 200 ? FirstResultRows(json, rows.body) : std::nullopt;
  const bool no_table = rows.status == 400 && absl::StrContains(rows.body, "no such table");
  if (no_table && tenant.table) {
    verdict.Damage(absl::StrCat("the acknowledged table of ", tenant.name, " is gone: ", rows.body),
                   /*loss=*/true);
    if (!verdict.failure.empty()) return;
  }
  if (!no_table && !read.has_value()) {
    verdict.failure = absl::StrCat("recovery could not read ", tenant.name, ": ", rows.body);
    return;
  }
  for (const std::vector<std::string>& row : read.value_or(Rows{})) {
    if (row.size() == 2) present[std::stoll(row[0])] = row[1];
  }
  verdict.rows += present.size();
  CheckRows(traffic, t, std::move(present), verdict);
}

Verdict CheckRecovered(const Traffic& traffic, const Verifier& verifier, const io::SimDisk& disk) {
  Verdict verdict;
  simdjson::dom::parser json;
  if (!verifier.violation().empty()) {
    verdict.failure = absl::StrCat("recovery: ", verifier.violation());
    return verdict;
  }
  for (uint32_t t = 0; t < traffic.tenants().size() && verdict.failure.empty(); ++t) {
    if (verifier.rows(t).outcome != Exchange::Outcome::kAnswered ||
        verifier.check(t).outcome != Exchange::Outcome::kAnswered) {
      verdict.failure = absl::StrCat("recovery: no answer for tenant ", traffic.tenants()[t].name);
      return verdict;
    }
    CheckTenant(traffic, verifier, t, json, verdict);
  }
  for (const Exchange& e : traffic.exchanges()) {
    if (!verdict.failure.empty()) break;
    const std::string path = absl::StrCat(kDirectory, "/", e.tenant, ".db");
    if (e.ask == Ask::kUnknownTenant && disk.Lookup(path).has_value()) {
      verdict.failure = absl::StrCat("querying the unknown tenant ", e.tenant, " created ", path);
    }
  }
  return verdict;
}

// ---- Running one seed ---------------------------------------------------------------------------

// What the run phase leaves for the checker and the summary.
struct RunReport {
  std::unique_ptr<Traffic> traffic;  // The exchanges and what was learnt about each tenant.
  std::string failure;               // Properties 1 to 5; "" if they held.
  std::string figures;               // The server's counters, for the summary.
  uint64_t poisonings = 0;           // Databases poisoned before any crash.
};

// The run phase, under its watchdog (RunPhase). Returns false if it did not end (the simulator
// found a deadlock, or the host never shut down): then operations are still pending and
// nothing can be destroyed safely, so the caller abandons the loop on purpose and reports.
bool RunService(Loop& loop, io::SimBackend& sim, const Setup& setup, bool strict_network,
                RunReport& report) {
  std::unique_ptr<Host> host = Host::Create(loop, sim, setup);
  report.traffic = std::make_unique<Traffic>(loop, sim, setup, strict_network, *host);
  host->Start();
  report.traffic->Start();
  const absl::Status status =
      RunPhase(loop, "the run phase (traffic, stop, drain, shutdown)",
               kWatchdogNs + kShutdownBudgetNs, [&report] { return report.traffic->Stuck(); });
  if (!status.ok()) {
    report.failure = std::string(status.message());
    Abandon(std::move(host));  // Pending operations point into it.
    Abandon(std::move(report.traffic));
    return false;
  }
  report.failure = report.traffic->CheckEnd();
  report.poisonings = host->poisonings();
  const HttpServer::Stats& stats = host->server().stats();
  report.figures =
      absl::StrCat("server: ", stats.connections_accepted, " connections, ", stats.accept_pauses,
                   " accept pauses, ", stats.timeouts, " timeouts, ", stats.requests,
                   " requests parsed; databases poisoned: ", report.poisonings,
                   "; registry shutdown: ", host->shutdown_status().ok() ? "ok" : "failed");
  return true;
}

// The recovering process: a restarted simulator on the crashed disk, a new host, one client.
absl::Status Recover(uint64_t seed, const WorkloadOptions& options,
                     std::shared_ptr<io::SimDisk> disk, const Setup& setup,
                     const std::vector<std::string>& tenants, std::unique_ptr<Verifier>& verifier,
                     uint64_t& trace_hash) {
  std::unique_ptr<io::SimBackend> backend = RestartedSimulator(seed, std::move(disk), options);
  io::SimBackend& sim = *backend;
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  Setup restarted = setup;
  restarted.ack_before_fsync = false;  // The recovering process is a correct one.
  std::unique_ptr<Host> host = Host::Create(*loop, sim, restarted);
  verifier = std::make_unique<Verifier>(*loop, sim, *host, tenants);
  host->Start();
  verifier->Start();
  Host& stopping = *host;
  absl::Status status =
      RunPhase(*loop, "recovery (every tenant read back through HTTP, no faults)",
               kRecoveryBudgetNs, [&verifier, &stopping] {
                 return absl::StrCat("the verifying client is in state ", verifier->client_state(),
                                     " at ", verifier->progress(), "; ", stopping.Describe());
               });
  trace_hash = sim.trace_hash();
  if (!status.ok()) {
    Abandon(std::move(host));  // Pending operations point into them: leave them, and report.
    Abandon(std::move(loop));
    return status;
  }
  return absl::OkStatus();
}

std::string Summarize(const Setup& setup, const Traffic& traffic, const std::string& figures,
                      const Verdict& verdict, const std::string& faults) {
  std::map<int, int> statuses;
  int unanswered = 0;
  int acked = 0;
  for (const Exchange& e : traffic.exchanges()) {
    if (e.outcome == Exchange::Outcome::kAnswered) statuses[e.status]++;
    unanswered += e.outcome == Exchange::Outcome::kUnanswered;
    acked += e.ask == Ask::kWrite && e.status == 200;
  }
  const std::string end = setup.end == End::kRunOut ? "ran out"
                          : setup.end == End::kStop ? "stop"
                          : setup.crash_after_ack == 0
                              ? "crash"
                              : absl::StrCat("crash after ack ", setup.crash_after_ack);
  return absl::StrCat(
      setup.clients, " clients, ", setup.tenants, " tenants, pool ", setup.connections_max,
      ", open_max ", setup.open_max, ", keep-alive ", setup.keep_alive_ns / kMs, " ms; ",
      traffic.exchanges().size(), " requests: ", acked, " writes acked; statuses {",
      absl::StrJoin(statuses, " ", absl::PairFormatter(":")), "}, ", unanswered,
      " unanswered; end: ", end,
      traffic.ended_ns() >= 0 ? absl::StrCat(" at +", traffic.ended_ns() / 1000, " us")
                              : std::string(" did not come"),
      ", finished at +", traffic.finished_ns() / 1000, " us; ", figures, "; recovered ",
      verdict.rows, " rows; faults: ", faults);
}

WorkloadResult RunHttp(uint64_t seed, const WorkloadOptions& options) {
  // SQLite's own generator is process-wide: seed it so a run does not depend on earlier runs.
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed), nullptr);
  std::unique_ptr<io::SimBackend> backend = FirstSimulator(seed, options, kDirectory);
  std::shared_ptr<io::SimDisk> disk = backend->shared_disk();
  io::SimBackend& sim = *backend;
  const std::string faults = sim.DescribeFaults();
  // The server closes a connection whose recv or send fails; with EINTR/EAGAIN in the mix an
  // op may exhaust its retries, so property 3 holds only without them, and without network
  // faults (a reset loses the answer; a partition or a lost segment may outlast a deadline).
  const io::SimFaults& f = sim.options().faults;
  const bool strict_network =
      f.eintr == 0 && f.eagain == 0 && f.net_reset == 0 && f.net_drop == 0 && f.partition_ns == 0;
  Setup setup = DrawSetup(sim.prng(), options.ack_before_fsync);
  setup.stall_group_commits_after = options.stall_group_commits_after;
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});

  WorkloadResult result;
  RunReport run;
  if (!RunService(*loop, sim, setup, strict_network, run)) {
    Abandon(std::move(loop));
    result.ok = false;
    result.failure = run.failure;
    result.trace_hash = sim.trace_hash();  // Abandoned, not destroyed: `sim` is still there.
    return result;
  }
  const Traffic& traffic = *run.traffic;
  const uint64_t run_trace = sim.trace_hash();
  const io::SimStats net = sim.sim_stats();  // `sim` goes with the loop.
  loop.reset();

  std::vector<std::string> tenants;
  for (const Traffic::Tenant& tenant : traffic.tenants()) tenants.push_back(tenant.name);
  std::unique_ptr<Verifier> verifier;
  uint64_t recovery_trace = 0;
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed ^ 0x5eed), nullptr);
  const absl::Status recovery =
      Recover(seed, options, disk, setup, tenants, verifier, recovery_trace);
  Verdict verdict;
  if (!recovery.ok()) {
    verdict.failure = std::string(recovery.message());
  } else if (!verifier->complete()) {
    verdict.failure = "recovery: the verifying client did not finish";
  } else {
    verdict = CheckRecovered(traffic, *verifier, *disk);
  }
  result.failure = run.failure.empty() ? verdict.failure : run.failure;
  result.ok = result.failure.empty();
  result.loss_happened = verdict.lost;
  result.summary = Summarize(setup, traffic, run.figures, verdict, faults);
  // The network faults that struck, and what the checker verified: acknowledged writes read
  // back after recovery, and writes whose answer was lost (outcome unknown, either way right).
  uint64_t unknown = 0;
  for (const Exchange& e : traffic.exchanges()) {
    const bool write = e.ask == Ask::kWrite;
    result.acked_checked += write && e.outcome == Exchange::Outcome::kAnswered && e.status == 200;
    unknown += write && e.outcome != Exchange::Outcome::kAnswered;
  }
  result.paths = {{"net_reset", net.net_resets},
                  {"net_drop", net.net_drops},
                  {"partition", net.net_partitioned},
                  {"persistent_eio", net.persistent_errors},
                  {"write_outcome_unknown", unknown}};
  io::TraceHash trace;
  trace.Fold(run_trace);
  trace.Fold(recovery_trace);
  result.trace_hash = trace.value();
  if (!recovery.ok()) Abandon(std::move(verifier));
  return result;
}

}  // namespace

SQLOOP_REGISTER_WORKLOAD(http,
                         "the HTTP host (server + registry executor) with simulated clients; "
                         "stop or crash; every answer as documented, every acked write back",
                         RunHttp);

}  // namespace sqloop::testing
