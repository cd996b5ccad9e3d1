// sqloop_http: SQL over HTTP for many tenants, on the sqloop loop (examples/http/server.h).
//
//   sqloop_http --data_dir=/tmp/tenants --port=8080
//   curl -X PUT localhost:8080/v1/db/acme
//   curl -d '{"statements":[{"sql":"SELECT ?1 + 1","args":[41]}]}' localhost:8080/v1/db/acme/query
//
// Prints "sqloop_http: listening on ADDRESS:PORT (backend NAME)" on stdout once it accepts
// (with --port=0, PORT is the one the kernel chose). SIGINT or SIGTERM stops it gracefully: no
// new connections, in-flight requests answered, tenants closed, exit status 0. SQLOOP_BACKEND
// (io_uring or fallback) picks the loop's backend.
//
// The executor is the tenant registry (examples/http/registry_executor.h): statements run on the
// loop's VFS with group commit, and a write is answered once durable, without blocking the loop.
//
// Auth (examples/http/auth.h) is required: --admin_token_file names a file holding the admin
// token (at least 32 characters, readable by its owner only, e.g. `openssl rand -hex 32`). The
// token never appears on the command line, where any local user could read it with `ps`. For
// development only, --insecure_no_auth runs without auth, and is refused unless --address is a
// loopback address (127.0.0.0/8 or ::1), so an open server is never reachable from the network.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "examples/http/auth.h"
#include "examples/http/registry_executor.h"
#include "examples/http/server.h"
#include "examples/http/shutdown_signal.h"
#include "sqloop/io/errno_status.h"
#include "sqloop/loop/loop.h"

ABSL_FLAG(std::string, address, "127.0.0.1", "Address to listen on (IPv4 or IPv6 literal).");
ABSL_FLAG(uint16_t, port, 8080, "Port to listen on; 0 picks a free one (printed on stdout).");
ABSL_FLAG(std::string, data_dir, "sqloop-http-data",
          "Directory of tenant databases (<tenant>.db); created if missing.");
ABSL_FLAG(uint32_t, connections_max, 1024, "Open connections at once; accept pauses beyond.");
ABSL_FLAG(uint32_t, header_bytes_max, 16 << 10, "Request line and headers, bytes (431 beyond).");
ABSL_FLAG(uint32_t, body_bytes_max, 1 << 20, "Request body, bytes (413 beyond).");
ABSL_FLAG(int64_t, header_timeout_ms, 10'000, "Time for a whole request to arrive (408 beyond).");
ABSL_FLAG(int64_t, idle_timeout_ms, 60'000, "Keep-alive wait for the next request.");
ABSL_FLAG(int64_t, write_timeout_ms, 10'000, "Time to send one response.");
// 256 open tenants: up to 1024 descriptors (db::kDescriptorsPerDatabase each), which fits the
// usual 4096+ soft limit next to the connections; 0 derives it from RLIMIT_NOFILE.
ABSL_FLAG(uint32_t, tenants_open_max, 256, "Tenant databases open at once (LRU beyond).");
ABSL_FLAG(int64_t, tenant_idle_timeout_ms, 30'000,
          "Close a tenant idle this long (registry only; its memory goes back).");
ABSL_FLAG(uint32_t, statements_max, 64, "Statements per request.");
ABSL_FLAG(uint32_t, tenant_requests_max, 64,
          "Requests of one tenant running at once; 503 tenant_busy beyond.");
// 50 ms: far above any single callback of a healthy loop (a statement slice, a parse, a send),
// and well below what a client notices, so a callback that holds every connection is reported.
ABSL_FLAG(int64_t, stall_budget_ms, 50, "Report loop callbacks that run longer (0: off).");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the admin bearer token (owner-only permissions). Required unless "
          "--insecure_no_auth.");
ABSL_FLAG(bool, insecure_no_auth, false,
          "Development only: no authentication at all. Refused unless --address is loopback.");

namespace {

using sqloop::examples::http::Authenticator;
using sqloop::examples::http::AuthOptions;
using sqloop::examples::http::HttpServer;
using sqloop::examples::http::HttpServerOptions;
using sqloop::examples::http::RegistryExecutor;
using sqloop::examples::http::RegistryExecutorOptions;
using sqloop::examples::http::ShutdownSignal;

void Log(sqloop::io::LogLevel level, absl::string_view message) {
  std::fprintf(stderr, "sqloop_http [%s] %.*s\n", sqloop::io::LogLevelName(level),
               static_cast<int>(message.size()), message.data());
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "sqloop_http: %s\n", status.ToString().c_str());
  return 1;
}

// 127.0.0.0/8 or ::1 (an IPv4-mapped loopback ::ffff:127.x.y.z too).
bool IsLoopback(const std::string& address) {
  in_addr v4{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, address.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

// Reads the admin token: the file's content without surrounding whitespace (a trailing newline
// from `openssl rand -hex 32 > file`). Refuses a file others may read, as ssh does a key.
absl::StatusOr<std::string> ReadAdminToken(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return sqloop::io::ErrnoStatus(absl::StatusCode::kInvalidArgument, errno,
                                   absl::StrCat("--admin_token_file=", path));
  }
  struct stat info {};
  std::string content;
  absl::Status status;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--admin_token_file=", path, ": not a regular file"));
  } else if ((info.st_mode & 077) != 0) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--admin_token_file=", path, " may be read by group or others; chmod 600 it"));
  } else {
    char buffer[4096];
    ssize_t n = 0;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0 && content.size() < size_t{64} * 1024) {
      content.append(buffer, static_cast<size_t>(n));
    }
    if (n < 0) {
      status = sqloop::io::ErrnoStatus(absl::StatusCode::kInvalidArgument, errno,
                                       absl::StrCat("--admin_token_file=", path));
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return std::string(absl::StripAsciiWhitespace(content));
}

// Auth from the flags: required, unless --insecure_no_auth on a loopback address.
absl::StatusOr<AuthOptions> AuthOptionsFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_admin_token_file);
  const std::string address = absl::GetFlag(FLAGS_address);
  AuthOptions auth;
  if (absl::GetFlag(FLAGS_insecure_no_auth)) {
    if (!path.empty()) {
      return absl::InvalidArgumentError("give --admin_token_file or --insecure_no_auth, not both");
    }
    if (!IsLoopback(address)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--insecure_no_auth is refused on --address=", address,
          ": without auth anyone who reaches the port owns every tenant; it is for loopback "
          "(127.0.0.1, ::1) only"));
    }
    return auth;  // Disabled.
  }
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "--admin_token_file is required (a file holding at least 32 characters, e.g. from "
        "`openssl rand -hex 32`, mode 600); for development on loopback, --insecure_no_auth");
  }
  absl::StatusOr<std::string> token = ReadAdminToken(path);
  if (!token.ok()) return token.status();
  auth.enabled = true;
  auth.admin_token = *std::move(token);
  if (absl::StatusOr<Authenticator> valid = Authenticator::FromOptions(auth); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--admin_token_file=", path, ": ", valid.status().message()));
  }
  return auth;
}

HttpServerOptions ServerOptionsFromFlags() {
  HttpServerOptions options;
  options.connections_max = absl::GetFlag(FLAGS_connections_max);
  options.header_bytes_max = absl::GetFlag(FLAGS_header_bytes_max);
  options.body_bytes_max = absl::GetFlag(FLAGS_body_bytes_max);
  options.header_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_header_timeout_ms));
  options.idle_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_idle_timeout_ms));
  options.write_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_write_timeout_ms));
  options.query.statements_max = absl::GetFlag(FLAGS_statements_max);
  options.tenant_requests_max = absl::GetFlag(FLAGS_tenant_requests_max);
  return options;
}

RegistryExecutorOptions RegistryOptionsFromFlags(const std::string& data_dir) {
  RegistryExecutorOptions options;
  options.registry.directory = data_dir;
  options.registry.open_max = absl::GetFlag(FLAGS_tenants_open_max);
  options.registry.idle_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_tenant_idle_timeout_ms));
  // The server runs at most one request per connection: one job each, never a 503 for it.
  options.requests_in_flight_max = absl::GetFlag(FLAGS_connections_max);
  return options;
}

// How often a stopping server is checked for having drained before the registry closes its
// tenants. The server has no "drained" callback; 5 ms is unnoticeable next to a shutdown and
// costs nothing while serving (the timer runs only after a signal).
constexpr absl::Duration kDrainPoll = absl::Milliseconds(5);

// After SIGINT/SIGTERM: stops the server, waits for it to drain, then shuts the registry down
// (every tenant closed) so that the loop runs out of work and Run(kUntilDone) returns.
struct Stopper {
  sqloop::loop::Loop* loop = nullptr;
  HttpServer* server = nullptr;
  RegistryExecutor* registry = nullptr;
  sqloop::loop::Completion poll;
  absl::Status registry_status;

  void Start() {
    server->Stop();
    if (registry == nullptr) return;
    poll.callback = &Stopper::OnPoll;
    poll.user_data = this;
    poll.name = "drain poll";
    loop->Timer(poll, kDrainPoll);
  }
  static sqloop::loop::Action OnPoll(sqloop::loop::Loop& /*loop*/, sqloop::loop::Completion& c) {
    auto& self = *static_cast<Stopper*>(c.user_data);
    if (!self.server->drained() || self.registry->in_flight() != 0) {
      return sqloop::loop::Action::kRearm;
    }
    self.registry->Shutdown(
        [](void* arg, absl::Status status) {
          static_cast<Stopper*>(arg)->registry_status = std::move(status);
        },
        &self);
    return sqloop::loop::Action::kDisarm;
  }
};

// The loop the server runs on, its ring deep enough for every connection (see below).
absl::StatusOr<std::unique_ptr<sqloop::loop::Loop>> CreateLoop() {
  sqloop::loop::LoopOptions loop_options;
  // Every open connection keeps one operation in the kernel (a receive while it waits for the
  // next request), so the ring must admit more than the connection limit, plus the listener,
  // the signal watch and the tenants' file I/O.
  loop_options.backend.in_flight_max = std::max<uint32_t>(
      loop_options.backend.in_flight_max, absl::GetFlag(FLAGS_connections_max) + 256);
  loop_options.log = &Log;
  loop_options.stall_budget = absl::Milliseconds(absl::GetFlag(FLAGS_stall_budget_ms));
  return sqloop::loop::Loop::Create(std::move(loop_options));
}

// The tenant registry over --data_dir, created if missing.
absl::StatusOr<std::unique_ptr<RegistryExecutor>> CreateExecutor(sqloop::loop::Loop& loop) {
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (mkdir(data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return sqloop::io::ErrnoStatus(absl::StatusCode::kInvalidArgument, errno,
                                   absl::StrCat("creating ", data_dir));
  }
  return RegistryExecutor::Create(loop, RegistryOptionsFromFlags(data_dir));
}

// Serves on `listen_fd` until a signal on `signal_fd` stops the server; returns how the
// registry's tenants closed. Leaves the process at once if the
// backend itself fails.
absl::Status RunServer(sqloop::loop::Loop& loop, RegistryExecutor& executor, AuthOptions auth,
                       int signal_fd, int listen_fd, const std::string& address, uint16_t port) {
  HttpServerOptions server_options = ServerOptionsFromFlags();
  server_options.auth = std::move(auth);
  if (!server_options.auth.enabled) {
    Log(sqloop::io::LogLevel::kWarning,
        "--insecure_no_auth: every tenant is open to anyone who reaches this port");
  }
  HttpServer server(loop, executor, listen_fd, server_options);
  Stopper stopper;
  stopper.loop = &loop;
  stopper.server = &server;
  stopper.registry = &executor;
  ShutdownSignal shutdown(
      loop, signal_fd,
      [](void* user_data, int signal_number) {
        Log(sqloop::io::LogLevel::kInfo,
            absl::StrCat("signal ", signal_number, ": stopping (finishing in-flight requests)"));
        static_cast<Stopper*>(user_data)->Start();
      },
      &stopper);
  server.Start();
  shutdown.Start();
  std::printf("sqloop_http: listening on %s:%u (backend %s)\n", address.c_str(), port,
              std::string(loop.backend().name()).c_str());
  std::fflush(stdout);
  const absl::Status status = loop.Run(sqloop::loop::RunMode::kUntilDone);
  if (!status.ok()) {
    // The backend itself failed: operations may still be pending and can never complete, so
    // the destructors' checks would abort. Report and leave at once.
    std::_Exit(Fail(status));
  }
  return stopper.registry_status;
}

absl::Status Serve() {
  // 1. Auth first: a misconfiguration is refused before anything is opened.
  absl::StatusOr<AuthOptions> auth = AuthOptionsFromFlags();
  if (!auth.ok()) return auth.status();
  if (absl::GetFlag(FLAGS_tenant_requests_max) == 0) {
    return absl::InvalidArgumentError("--tenant_requests_max must be at least 1");
  }
  // 2. Block the signals before anything could start a thread.
  absl::StatusOr<int> signal_fd = ShutdownSignal::Block();
  if (!signal_fd.ok()) return signal_fd.status();
  // Sends use MSG_NOSIGNAL; this covers any write to a closed socket we did not foresee.
  signal(SIGPIPE, SIG_IGN);

  // 3. The loop, the executor and the listener.
  absl::StatusOr<std::unique_ptr<sqloop::loop::Loop>> loop = CreateLoop();
  if (!loop.ok()) return loop.status();
  absl::StatusOr<std::unique_ptr<RegistryExecutor>> executor = CreateExecutor(**loop);
  if (!executor.ok()) return executor.status();
  uint16_t port = 0;
  const std::string address = absl::GetFlag(FLAGS_address);
  absl::StatusOr<int> listen_fd =
      sqloop::examples::http::ListenTcp(address, absl::GetFlag(FLAGS_port), port);
  if (!listen_fd.ok()) return listen_fd.status();

  // 4. Serve until a signal, then close what is left.
  absl::Status status =
      RunServer(**loop, **executor, *std::move(auth), *signal_fd, *listen_fd, address, port);
  close(*listen_fd);
  if (!status.ok()) return status;  // The registry could not close every tenant.
  std::printf("sqloop_http: stopped cleanly\n");
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = Serve();
  return status.ok() ? 0 : Fail(status);
}
