// sqloop_bench_http: the SQL-over-HTTP host (examples/http) under load from wrk, a client
// nobody here wrote, on loopback, against 1,000 tenants.
//
//   http/read         wrk POSTs a point SELECT to a random tenant (the baseline)
//   http/write        wrk POSTs a single-row INSERT to a random tenant, answered only once durable
//   http/mixed        both at once: one wrk reading on 56 connections, another writing on 8;
//                     the latency counters are the reads' (write_p99_us the writes')
//   http_idle/10000   10,000 open keep-alive connections: the server's memory and descriptors
//
// One iteration of http/* is one wrk run; its time is wrk's duration divided by its requests
// (time per request at 64 connections, the inverse of throughput); counters carry wrk's
// requests per second and latency percentiles (p50 to max, and the distribution for the
// report's CDF, from wrk's own histogram). Quick mode (SQLOOP_BENCH_QUICK=1, set by
// bench/report.py --quick) shortens the runs to a second, the tenants to 100 and the idle test
// to 1,000.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "benchmark/benchmark.h"
#include "examples/http/child_process.h"

namespace sqloop::bench {
namespace {

using examples::http::ChildEnvironment;
using examples::http::ReadUntil;
using examples::http::SpawnWithStdoutPipe;

constexpr int kWaitSeconds = 60;  // Bound on any wait for the server or wrk.
constexpr int kIdleConnections = 10'000;
// http/mixed: the connections that read; the other 8 of the 64 write.
constexpr int kMixedReadConnections = 56;
// Both sides of 10,000 connections plus 1,000 tenants' files, with room to spare.
constexpr rlim_t kDescriptorsWanted = 32'768;

bool Quick() { return std::getenv("SQLOOP_BENCH_QUICK") != nullptr; }
int WrkSeconds() { return Quick() ? 1 : 5; }
// Creating them is most of a quick run's time (they are created through the server, durably).
int Tenants() { return Quick() ? 100 : 1000; }

// One blocking keep-alive request; returns the status code (0 on failure).
int Request(int fd, const std::string& method, const std::string& path, const std::string& body) {
  const std::string request = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: b\r\n",
                                           "Content-Length: ", body.size(), "\r\n\r\n", body);
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return 0;
  }
  std::string response;
  char chunk[4096];
  for (;;) {
    const size_t end = response.find("\r\n\r\n");
    if (end != std::string::npos) {
      const size_t at = response.find("Content-Length: ");
      const size_t length = at < end ? std::strtoul(response.c_str() + at + 16, nullptr, 10) : 0;
      if (response.size() >= end + 4 + length) break;
    }
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return 0;
    response.append(chunk, static_cast<size_t>(n));
  }
  int status = 0;
  const std::vector<std::string> words = absl::StrSplit(response.substr(0, 20), ' ');
  return words.size() > 1 && absl::SimpleAtoi(words[1], &status) ? status : 0;
}

// The server under test, started once for the whole binary with 1,000 tenants created.
class Server {
 public:
  // Destroyed at exit, which stops the child: a leaked server would outlive the benchmark.
  static Server& Get() {
    static Server server;
    return server;
  }
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string Url() const { return absl::StrCat("http://127.0.0.1:", port_); }

  int Connect() const {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval bound{kWaitSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }

  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }

 private:
  Server() {
    // 10,000 connections on each side: raise the descriptor limit (children inherit it). Root
    // may raise the hard limit too; otherwise the soft limit goes up to the hard one.
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    const rlimit wanted{kDescriptorsWanted, kDescriptorsWanted};
    if (limit.rlim_max >= kDescriptorsWanted || setrlimit(RLIMIT_NOFILE, &wanted) != 0) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
    }
    char pattern[] = "/tmp/sqloop_bench_http_XXXXXX";
    dir_ = mkdtemp(pattern);
    const std::vector<std::string> argv = {
        SQLOOP_HTTP_BINARY,
        "--port=0",
        "--data_dir=" + dir_,
        absl::StrCat("--connections_max=", kIdleConnections + 256),
        absl::StrCat("--tenants_open_max=", Tenants() + 24),
        "--idle_timeout_ms=600000",
        "--insecure_no_auth"};  // On loopback: the loop and the executor are measured, not auth.
    pid_ = SpawnWithStdoutPipe(argv, ChildEnvironment(""), stdout_fd_);
    std::string out;
    if (pid_ < 0 ||
        !ReadUntil(
            stdout_fd_, out, [](const std::string& t) { return absl::StrContains(t, "\n"); },
            kWaitSeconds)) {
      error_ = "sqloop_http did not start";
      return;
    }
    // "sqloop_http: listening on 127.0.0.1:PORT (backend NAME)"
    const size_t colon = out.find("127.0.0.1:");
    const std::string rest = colon == std::string::npos ? "" : out.substr(colon + 10);
    if (!absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &port_)) {
      error_ = "could not read the port: " + out;
      return;
    }
    CreateTenants();
  }

  void CreateTenants() {
    const int fd = Connect();
    for (int t = 0; t < Tenants() && error_.empty(); ++t) {
      const std::string path = absl::StrCat("/v1/db/t", t);
      if (Request(fd, "PUT", path, "") != 201 ||
          Request(fd, "POST", path + "/query",
                  R"j({"statements":[{"sql":"CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)"},)j"
                  R"j({"sql":"INSERT INTO kv(k, v) VALUES (1, 'hello')"}]})j") != 200) {
        error_ = absl::StrCat("could not create tenant t", t);
      }
    }
    close(fd);
  }

  std::string dir_;
  std::string error_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int port_ = 0;
};

// wrk's Lua script: a random tenant per request.
std::string WriteScript(bool write) {
  std::string path = absl::StrCat("/tmp/sqloop_bench_http_", write ? "write" : "read", ".lua");
  std::ofstream script(path);
  script << "local tenants = " << Tenants() << "\n"
         << "request = function()\n"
         << "  local t = math.random(0, tenants - 1)\n"
         << (write ? "  local body = '{\"statements\":[{\"sql\":\"INSERT INTO kv(v) VALUES (?)\","
                     "\"args\":[\"' .. math.random(1, 1000000) .. '\"]}]}'\n"
                   : "  local body = '{\"statements\":[{\"sql\":\"SELECT v FROM kv WHERE k = "
                     "1\"}]}'\n")
         << "  return wrk.format('POST', '/v1/db/t' .. t .. '/query', "
            "{['Content-Type'] = 'application/json'}, body)\n"
         << "end\n"
         << "done = function(summary, latency, requests)\n"
         << "  io.write(string.format('SQLOOP %d %d %d %d %d %d %d %d\\n', summary.requests, "
            "summary.duration, summary.errors.status + summary.errors.connect + "
            "summary.errors.read + summary.errors.write + summary.errors.timeout, "
            "latency:percentile(50), latency:percentile(90), latency:percentile(99), "
            "latency:percentile(99.9), latency.max))\n"
         // The distribution for the report's CDF: the body in steps of 5 %, then the tail at
         // 1 - 10^-(1.25, 1.5, ..., 4), as bench/sqlite/env.h's WriteLatencyFile.
         << "  for i = 1, 18 do io.write(string.format('SQLOOPQ %.6f %d\\n', i * 0.05, "
            "latency:percentile(i * 5))) end\n"
         << "  for i = 5, 16 do local q = 1 - 10 ^ (-0.25 * i)\n"
         << "    io.write(string.format('SQLOOPQ %.6f %d\\n', q, latency:percentile(q * 100)))\n"
         << "  end\n"
         << "  io.write(string.format('SQLOOPQ 1 %d\\n', latency.max))\n"
         << "end\n";
  return path;
}

// Copies wrk's "SQLOOPQ <quantile> <us>" lines to $SQLOOP_BENCH_LATENCY_FILE (set by
// bench/report.py) as the "request" series of the report's CDF plot.
void WriteLatencyFile(const std::string& wrk_output) {
  const char* path = std::getenv("SQLOOP_BENCH_LATENCY_FILE");
  if (path == nullptr || *path == '\0') return;
  std::ofstream file(path, std::ios::trunc);
  for (absl::string_view line : absl::StrSplit(wrk_output, '\n')) {
    if (absl::ConsumePrefix(&line, "SQLOOPQ ")) file << "request " << line << "\n";
  }
}

// One wrk run's summary, as the Lua script printed it.
struct WrkResult {
  int64_t requests = 0;
  int64_t duration_us = 0;
  int64_t errors = 0;
  int64_t latency_us[5] = {};  // p50, p90, p99, p99.9, max.
  std::string output;
  std::string error;  // Why there is no result, if there is none.
};

constexpr const char* kLatencyCounters[] = {"p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"};

pid_t SpawnWrk(const std::string& script, int connections, const std::string& url, int& out) {
  return SpawnWithStdoutPipe(
      {"wrk", connections > 8 ? "-t2" : "-t1", absl::StrCat("-c", connections),
       absl::StrCat("-d", WrkSeconds(), "s"), "-s", script, url},
      ChildEnvironment(""), out);
}

WrkResult FinishWrk(pid_t pid, int out) {
  WrkResult result;
  if (pid < 0) {
    result.error = "wrk is not installed (apt-get install wrk)";
    return result;
  }
  ReadUntil(
      out, result.output, [](const std::string&) { return false; }, WrkSeconds() + kWaitSeconds);
  close(out);
  waitpid(pid, nullptr, 0);
  const size_t at = result.output.find("SQLOOP ");
  std::vector<int64_t> values;
  if (at != std::string::npos) {
    const size_t end = result.output.find('\n', at);
    const std::string line =
        result.output.substr(at + 7, end == std::string::npos ? end : end - at - 7);
    for (absl::string_view word : absl::StrSplit(line, ' ')) {
      int64_t value = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(word), &value)) values.push_back(value);
    }
  }
  if (values.size() < 8 || values[0] == 0) {
    result.error = "wrk: " + result.output;
    return result;
  }
  result.requests = values[0];
  result.duration_us = values[1];
  result.errors = values[2];
  for (size_t i = 0; i < std::size(result.latency_us); ++i) result.latency_us[i] = values[3 + i];
  if (result.errors != 0) result.error = absl::StrCat("wrk saw ", result.errors, " errors");
  return result;
}

void Wrk(benchmark::State& state, bool write) {
  Server& server = Server::Get();
  if (!server.error().empty()) return state.SkipWithError(server.error().c_str());
  const std::string script = WriteScript(write);
  for (auto _ : state) {
    int out = -1;
    const pid_t pid = SpawnWrk(script, 64, server.Url(), out);
    const WrkResult result = FinishWrk(pid, out);
    if (!result.error.empty()) return state.SkipWithError(result.error.c_str());
    // Time per request (wrk's duration over its requests): the inverse of throughput, so the
    // ratio of writes to reads says what durability costs per request.
    state.SetIterationTime(static_cast<double>(result.duration_us) / 1e6 /
                           static_cast<double>(result.requests));
    state.counters["requests_per_second"] =
        static_cast<double>(result.requests) * 1e6 / static_cast<double>(result.duration_us);
    for (size_t i = 0; i < std::size(kLatencyCounters); ++i) {
      state.counters[kLatencyCounters[i]] = static_cast<double>(result.latency_us[i]);
    }
    WriteLatencyFile(result.output);
  }
}

// http/mixed: reads and durable writes at once, from two wrk processes on 56 and 8 of the 64
// connections (wrk's script cannot time two kinds of request apart). The latency counters are
// the reads': a read never waits for a group's fsync, whatever the writes do. The time per
// request is over both.
void WrkMixed(benchmark::State& state) {
  Server& server = Server::Get();
  if (!server.error().empty()) return state.SkipWithError(server.error().c_str());
  const std::string read_script = WriteScript(false);
  const std::string write_script = WriteScript(true);
  for (auto _ : state) {
    int read_out = -1;
    int write_out = -1;
    const pid_t reader = SpawnWrk(read_script, kMixedReadConnections, server.Url(), read_out);
    const pid_t writer =
        SpawnWrk(write_script, 64 - kMixedReadConnections, server.Url(), write_out);
    const WrkResult reads = FinishWrk(reader, read_out);
    const WrkResult writes = FinishWrk(writer, write_out);
    for (const WrkResult* r : {&reads, &writes}) {
      if (!r->error.empty()) return state.SkipWithError(r->error.c_str());
    }
    const int64_t requests = reads.requests + writes.requests;
    const int64_t duration_us = std::max(reads.duration_us, writes.duration_us);
    state.SetIterationTime(static_cast<double>(duration_us) / 1e6 / static_cast<double>(requests));
    state.counters["requests_per_second"] =
        static_cast<double>(requests) * 1e6 / static_cast<double>(duration_us);
    state.counters["write_share"] =
        static_cast<double>(writes.requests) / static_cast<double>(requests);
    for (size_t i = 0; i < std::size(kLatencyCounters); ++i) {
      state.counters[kLatencyCounters[i]] = static_cast<double>(reads.latency_us[i]);
    }
    state.counters["write_p99_us"] = static_cast<double>(writes.latency_us[2]);
    WriteLatencyFile(reads.output);
  }
}

int64_t ReadStatusKilobytes(pid_t pid, const char* field) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, field)) continue;
    int64_t value = 0;
    const std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (words.size() > 1 && absl::SimpleAtoi(words[1], &value)) return value;
  }
  return -1;
}

// Opens N keep-alive connections, each served one request so the server really holds it, and
// reports the server's resident memory and descriptors per connection.
void IdleConnections(benchmark::State& state) {
  Server& server = Server::Get();
  if (!server.error().empty()) return state.SkipWithError(server.error().c_str());
  const int count = Quick() ? 1000 : static_cast<int>(state.range(0));
  for (auto _ : state) {
    const int64_t rss_before_kb = ReadStatusKilobytes(server.pid(), "VmRSS:");
    std::vector<int> fds;
    fds.reserve(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      const int fd = server.Connect();
      if (fd < 0 || Request(fd, "GET", "/v1/stats", "") != 200) {
        for (int open_fd : fds) close(open_fd);
        if (fd >= 0) close(fd);
        return state.SkipWithError(absl::StrCat("connection ", i, " failed").c_str());
      }
      fds.push_back(fd);
    }
    const int64_t rss_after_kb = ReadStatusKilobytes(server.pid(), "VmRSS:");
    state.counters["connections"] = count;
    state.counters["rss_bytes_per_connection"] =
        static_cast<double>(rss_after_kb - rss_before_kb) * 1024.0 / count;
    state.counters["server_rss_mb"] = static_cast<double>(rss_after_kb) / 1024.0;
    for (int fd : fds) close(fd);
  }
}

BENCHMARK_CAPTURE(Wrk, read, false)->Name("http/read")->UseManualTime()->Iterations(1);
BENCHMARK_CAPTURE(Wrk, write, true)->Name("http/write")->UseManualTime()->Iterations(1);
BENCHMARK(WrkMixed)->Name("http/mixed")->UseManualTime()->Iterations(1);
BENCHMARK(IdleConnections)->Name("http_idle")->Arg(kIdleConnections)->Iterations(1);

}  // namespace
}  // namespace sqloop::bench

int main(int argc, char** argv) {
  benchmark::AddCustomContext("baseline:http", "read");
  benchmark::AddCustomContext(
      "description:http",
      "time per request over one wrk run (2 threads, 64 connections) of POSTs to 1,000 "
      "tenants; writes are answered only once durable; mixed: one wrk reading on 56 "
      "connections and one writing on 8 at once, latencies of the reads");
  benchmark::AddCustomContext("description:http_idle",
                              "N open keep-alive connections, each served once");
  // A memory benchmark: the report plots bytes per connection, not the time to open them.
  benchmark::AddCustomContext("metric:http_idle", "rss_bytes_per_connection");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
