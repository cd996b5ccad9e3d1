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
// The executor is the plain-SQLite stand-in (examples/http/sqlite_executor.h): commits block the
// loop on fsync until the tenant registry replaces it.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "examples/http/server.h"
#include "examples/http/shutdown_signal.h"
#include "examples/http/sqlite_executor.h"
#include "loop/loop.h"

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
ABSL_FLAG(uint32_t, tenants_open_max, 256, "Tenant databases open at once (LRU beyond).");
ABSL_FLAG(uint32_t, statements_max, 64, "Statements per request.");
ABSL_FLAG(int64_t, stall_budget_ms, 0, "Report loop callbacks that run longer (0: off).");

namespace {

using sqloop::examples::http::HttpServer;
using sqloop::examples::http::HttpServerOptions;
using sqloop::examples::http::ShutdownSignal;
using sqloop::examples::http::SqliteExecutor;
using sqloop::examples::http::SqliteExecutorOptions;

void Log(sqloop::io::LogLevel level, absl::string_view message) {
  std::fprintf(stderr, "sqloop_http [%s] %.*s\n", sqloop::io::LogLevelName(level),
               static_cast<int>(message.size()), message.data());
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "sqloop_http: %s\n", status.ToString().c_str());
  return 1;
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
  return options;
}

absl::Status Serve() {
  // First: block the signals before anything could start a thread.
  absl::StatusOr<int> signal_fd = ShutdownSignal::Block();
  if (!signal_fd.ok()) return signal_fd.status();
  // Sends use MSG_NOSIGNAL; this covers any write to a closed socket we did not foresee.
  signal(SIGPIPE, SIG_IGN);

  sqloop::loop::LoopOptions loop_options;
  // Every open connection keeps one operation in the kernel (a receive while it waits for the
  // next request), so the ring must admit more than the connection limit, plus the listener,
  // the signal watch and the tenants' file I/O.
  loop_options.backend.in_flight_max = std::max<uint32_t>(
      loop_options.backend.in_flight_max, absl::GetFlag(FLAGS_connections_max) + 256);
  loop_options.log = &Log;
  loop_options.stall_budget = absl::Milliseconds(absl::GetFlag(FLAGS_stall_budget_ms));
  absl::StatusOr<std::unique_ptr<sqloop::loop::Loop>> loop =
      sqloop::loop::Loop::Create(std::move(loop_options));
  if (!loop.ok()) return loop.status();

  SqliteExecutorOptions executor_options;
  executor_options.data_dir = absl::GetFlag(FLAGS_data_dir);
  executor_options.tenants_open_max = absl::GetFlag(FLAGS_tenants_open_max);
  if (mkdir(executor_options.data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(
        absl::StrCat("creating ", executor_options.data_dir, ": ", std::strerror(errno)));
  }
  absl::StatusOr<std::unique_ptr<SqliteExecutor>> executor =
      SqliteExecutor::Create(**loop, executor_options);
  if (!executor.ok()) return executor.status();

  uint16_t port = 0;
  const std::string address = absl::GetFlag(FLAGS_address);
  absl::StatusOr<int> listen_fd =
      sqloop::examples::http::ListenTcp(address, absl::GetFlag(FLAGS_port), port);
  if (!listen_fd.ok()) return listen_fd.status();

  absl::Status status;
  {
    HttpServer server(**loop, **executor, *listen_fd, ServerOptionsFromFlags());
    ShutdownSignal shutdown(
        **loop, *signal_fd,
        [](void* user_data, int signal_number) {
          Log(sqloop::io::LogLevel::kInfo,
              absl::StrCat("signal ", signal_number, ": stopping (finishing in-flight requests)"));
          static_cast<HttpServer*>(user_data)->Stop();
        },
        &server);
    server.Start();
    shutdown.Start();
    std::printf("sqloop_http: listening on %s:%u (backend %s)\n", address.c_str(), port,
                std::string((*loop)->backend().name()).c_str());
    std::fflush(stdout);
    status = (*loop)->Run(sqloop::loop::RunMode::kUntilDone);
    if (!status.ok()) {
      // The backend itself failed: operations may still be pending and can never complete, so
      // the destructors' checks would abort. Report and leave at once.
      std::_Exit(Fail(status));
    }
  }
  close(*listen_fd);
  (*executor)->CloseTenants();
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
