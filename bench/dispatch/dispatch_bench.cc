// bench/dispatch/dispatch_bench.cc
// -----------------------------------------------------------------------------
//
// sqloop_bench_dispatch: the dispatch group of the benchmark suite (see workload.h for the
// workload and why its call counts are what they are).
//
// Naming and report conventions (bench/report.py documents them for every group):
//   * Benchmarks are named `<family>/<variant>`: dispatch/manual, dispatch/coro,
//     dispatch/coro_pool, dispatch/coro_large, dispatch/manual+syscalls, ...
//   * The report's group is the family plus the variant's `+modifier` suffix, so
//     `dispatch/coro+syscalls` is in group `dispatch+syscalls`. Each group names its baseline
//     variant in a custom context entry: `baseline:dispatch` = `manual` and
//     `baseline:dispatch+syscalls` = `manual+syscalls`. Ratios are only taken within a group,
//     against the baseline measured in the same run.
//   * Time is reported per iteration (one iteration = 256 connections served) in microseconds.
//   * `floor` (and `floor+syscalls`) makes the same fake I/O calls in a straight line, with no
//     dispatch (floor.h). The context entries `floor:dispatch` and `floor:dispatch+syscalls`
//     name it, and the report shows every variant as a multiple of it too.
//   * Counters: allocs_per_op and bytes_per_op (operator new calls and bytes per iteration,
//     counted in an untimed iteration by alloc_count.h, so the timed loop runs on the plain
//     allocator), frame_bytes (largest coroutine frame, pooled variants only).
//   * Each benchmark checks the I/O call counts of its last timed iteration, then runs untimed
//     iterations that count allocations and record and check every echo; any mismatch is
//     reported with SkipWithError, which the report turns into a failing exit status.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

#include "bench/dispatch/alloc_count.h"
#include "bench/dispatch/workload.h"

namespace sqloop::bench::dispatch {
namespace {

// Returns an empty string if every connection of the last run echoed exactly the request.
std::string CheckEchoes(const EchoLog& log) {
  for (uint32_t id = 0; id < kConnections; ++id) {
    if (log.echo(id) != kRequest) {
      return "connection " + std::to_string(id) + " echoed \"" + log.echo(id) + "\"";
    }
  }
  return "";
}

void BM_Dispatch(benchmark::State& state, Variant variant, bool syscalls) {
  Workload workload(WorkloadOptions{variant, syscalls});
  CallCounts counts;
  for (auto _ : state) {
    counts = workload.RunOnce();
    benchmark::ClobberMemory();
  }

  if (counts != kExpectedCallCounts) {
    const std::string message =
        "call counts " + ToString(counts) + ", expected " + ToString(kExpectedCallCounts);
    state.SkipWithError(message.c_str());
    return;
  }
  StartCountingAllocations();  // Every iteration allocates alike: one untimed one is exact.
  (void)workload.RunOnce();
  const AllocationCounts allocations = StopCountingAllocations();
  EchoLog echo_log;
  workload.set_echo_log(&echo_log);
  (void)workload.RunOnce();
  workload.set_echo_log(nullptr);
  if (const std::string error = CheckEchoes(echo_log); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }

  state.counters["allocs_per_op"] = static_cast<double>(allocations.allocations);
  state.counters["bytes_per_op"] = static_cast<double>(allocations.bytes);
  if (variant == Variant::kCoroPool) {
    state.counters["frame_bytes"] = static_cast<double>(workload.frame_bytes_max());
  }
}

void RegisterAll() {
  const Variant kPlain[] = {Variant::kFloor, Variant::kManual, Variant::kCoro, Variant::kCoroPool,
                            Variant::kCoroLarge};
  const Variant kWithSyscalls[] = {Variant::kFloor, Variant::kManual, Variant::kCoro,
                                   Variant::kCoroPool};
  for (const Variant variant : kPlain) {
    const std::string name = std::string("dispatch/") + VariantName(variant);
    benchmark::RegisterBenchmark(name.c_str(), BM_Dispatch, variant, false)
        ->Unit(benchmark::kMicrosecond);
  }
  for (const Variant variant : kWithSyscalls) {
    const std::string name = std::string("dispatch/") + VariantName(variant) + "+syscalls";
    benchmark::RegisterBenchmark(name.c_str(), BM_Dispatch, variant, true)
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::AddCustomContext("baseline:dispatch", "manual");
  benchmark::AddCustomContext("baseline:dispatch+syscalls", "manual+syscalls");
  benchmark::AddCustomContext("floor:dispatch", "floor");
  benchmark::AddCustomContext("floor:dispatch+syscalls", "floor+syscalls");
  benchmark::AddCustomContext(
      "description:dispatch",
      "One op is one iteration of the fake echo server of the Rust study "
      "(jkarneges/rust-async-bench): 256 connections accepted, each reading \"hello world\\n\" "
      "and writing it back, over in-memory I/O; 2308 fake I/O calls.");
  benchmark::AddCustomContext(
      "description:dispatch+syscalls",
      "The same iteration with one failing 1-byte read() of an empty pipe per fake I/O call "
      "(2308 real syscalls per op), as in the study's syscalls variant.");
}

// The compiler that built the benchmarks, for the report's machine section.
const char* CompilerName() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace
}  // namespace sqloop::bench::dispatch

int main(int argc, char** argv) {
  sqloop::bench::dispatch::RegisterAll();
  benchmark::AddCustomContext("compiler", sqloop::bench::dispatch::CompilerName());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
