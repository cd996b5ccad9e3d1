// sqloop_bench_load: latency against offered load, open loop (bench/sqlite/load.h), for the
// durable-write and the mixed 90/10 workloads of sqloop_bench_sqlite.
//
// Benchmarks: load_<workload>/<system>/<offered requests per second>, one step of the offered
// rate each, the rates doubling from the workload's lowest:
//   sqloop     db::Database on the loop (load_sqloop.cc)
//   plain      plain SQLite on one thread, the baseline           (load_threads.cc, as below)
//   pool4      plain SQLite behind a dispatcher and 4 threads with a connection each
//   pool16     the same with 16 threads
//   futures4   plain SQLite behind an executor of 4 threads returning a std::future each
// Each system's ladder goes a few doublings past where it saturated on the run-of-record VM
// (sqloop's group commit reaches rates the baselines' fsync per commit cannot); on a faster
// disk the baselines' ladders may end before they saturate, which the report's "sustained"
// column then shows as the top step.
//
// Every step runs once (Iterations(1)): the step is the measurement, and Google Benchmark's
// calibration would run it again and again. Its time per op is 1 / achieved throughput.
// Under SQLOOP_BENCH_QUICK (CI) each system runs only its lowest and highest step, briefly.
#include <sys/prctl.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/env.h"
#include "bench/sqlite/load.h"
#include "benchmark/benchmark.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/sqlite_memory.h"

namespace sqloop::bench {
namespace {

struct Ladder {
  int64_t lowest_per_s;
  int steps;  // Doublings from lowest_per_s, inclusive of it.
};

// Where the ladders stop, from the run-of-record VM (a shared disk whose fsync took 1.5 to 5 ms
// across runs): sqloop's group commit saturated between 16,000 and 32,000 commits/s and near
// 100,000 mixed requests/s; one fsync per commit held the baselines to a few hundred commits/s,
// and the mixed workload's writes held them to a few thousand requests/s. Each ladder goes at
// least one doubling past that.
constexpr Ladder kSqloopWrite{250, 9};   // 250 ... 64,000/s
constexpr Ladder kPlainWrite{125, 5};    // 125 ... 2,000/s
constexpr Ladder kSqloopMixed{1000, 8};  // 1,000 ... 128,000/s
constexpr Ladder kPlainMixed{500, 6};    // 500 ... 16,000/s

template <typename Function>
void Add(const char* workload, const char* system, Ladder ladder, Function function) {
  benchmark::internal::Benchmark* b =
      benchmark::RegisterBenchmark(absl::StrCat("load_", workload, "/", system).c_str(), function);
  for (int step = 0; step < ladder.steps; ++step) {
    if (QuickMode() && step != 0 && step != ladder.steps - 1) continue;
    b->Arg(ladder.lowest_per_s << step);
  }
  b->Iterations(1)->UseManualTime();
}

void AddWorkload(const char* name, Workload w, Ladder sqloop, Ladder plain) {
  Add(name, "sqloop", sqloop, [w](benchmark::State& s) { SqloopLoad(s, w); });
  Add(name, "plain", plain, [w](benchmark::State& s) { PlainLoad(s, w); });
  Add(name, "pool4", plain, [w](benchmark::State& s) { PoolLoad(s, w, 4); });
  Add(name, "pool16", plain, [w](benchmark::State& s) { PoolLoad(s, w, 16); });
  Add(name, "futures4", plain, [w](benchmark::State& s) { FuturesLoad(s, w, 4); });
}

}  // namespace
}  // namespace sqloop::bench

int main(int argc, char** argv) {
  using sqloop::bench::Workload;
  SQLOOP_CHECK(sqloop::alloc::InstallSqliteMemory().ok(), "bench: install SQLite's allocator");
  const sqloop::bench::BaselineScope scope(sqloop::alloc::kSharedTenant);
  // The drivers sleep until each request's intended start; Linux's default timer slack (50 us)
  // would make every wake-up late by up to that much and charge it to the system under test.
  // Threads inherit the setting, so it is set before any is created.
  SQLOOP_CHECK(prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) == 0, "bench: set the timer slack");
  sqloop::bench::AddWorkload("write", Workload::kWrite, sqloop::bench::kSqloopWrite,
                             sqloop::bench::kPlainWrite);
  sqloop::bench::AddWorkload("mixed", Workload::kMixed, sqloop::bench::kSqloopMixed,
                             sqloop::bench::kPlainMixed);
  for (const char* group : {"load_write", "load_mixed"}) {
    benchmark::AddCustomContext(absl::StrCat("baseline:", group), "plain");
    benchmark::AddCustomContext(absl::StrCat("load:", group), "achieved_per_s");
  }
  benchmark::AddCustomContext(
      "description:load_write",
      "open loop: durable single-row INSERTs arriving at the offered rate (the argument, "
      "requests/s) for one step; latency from each request's intended start to its durable "
      "acknowledgement. pool4/pool16: plain SQLite behind a dispatcher and 4 or 16 threads; "
      "futures4: behind an executor of 4 threads returning a std::future per request");
  benchmark::AddCustomContext(
      "description:load_mixed",
      "open loop: the 90% point-read / 10% durable-insert mix arriving at the offered rate "
      "(requests/s); latency from each request's intended start to its acknowledgement, over "
      "reads and writes together (p50 is a read's, p99 a write's). Systems as in load_write");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
