// bench/sqlite/load.h
// -----------------------------------------------------------------------------
//
// sqloop_bench_load: latency against offered load, open loop.
//
// A closed-loop benchmark (sqlite_write, sqlite_mixed) starts each operation when a previous
// one finished, so when the system stalls the clients stall with it and the operations that
// would have arrived meanwhile are never issued: their waiting time is omitted from the
// latencies (coordinated omission). Here requests arrive on a fixed schedule instead, one every
// 1/R seconds for a step of kStepNs (R = the offered rate, the benchmark's argument), whatever
// the system does, and each latency is measured from the request's *intended* start time on
// that schedule to its acknowledgement. Queueing anywhere (behind the schedule, in a queue,
// behind an fsync) is therefore in the latency.
//
// Every driver keeps at most kInFlightMax requests issued and not yet acknowledged (a client
// with that many connections). A request that is due while all of them are busy waits, and its
// wait counts. Issuing stops at the end of the step: requests still not issued then are
// "unserved"; they enter the percentiles with the time they had waited by then (a lower bound
// of their latency), so an overloaded step cannot look fast by leaving work undone, and the
// step ends in bounded time. What was issued is drained before the file is verified.
//
// Request i of a step is the same in every system: for the write workload an INSERT with
// seq = i + 1; for the mixed workload the draws of Prng{kMixedSeedBase} as in sqlite_mixed (one
// write in kWriteOneIn, reads of a uniform row).
//
// Counters of every step: offered_per_s, achieved_per_s (acknowledged requests / time from
// the first intended start to the last acknowledgement), unserved (a fraction of the
// scheduled requests), p50_us ... max_us over every scheduled request (unserved included, as
// above). The benchmark's time per op is 1 / achieved_per_s (manual time).
//
// The binary does not link the counting allocator (its atomic updates would sit on every timed
// path); allocations per operation are sqlite_write's and sqlite_mixed's to report. The sqloop
// driver allocates its request slots before the step and none per request.
#ifndef SQLOOP_BENCH_SQLITE_LOAD_H_
#define SQLOOP_BENCH_SQLITE_LOAD_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "bench/sqlite/executor.h"
#include "benchmark/benchmark.h"

namespace sqloop::bench {

enum class Workload { kWrite, kMixed };

// Requests issued and not yet acknowledged, per system: far above what a system that keeps up
// has in flight (rate x latency: 64,000/s x 2 ms = 128), so it only binds past saturation,
// where it bounds the drain at the end of a step to a fraction of a second.
inline constexpr size_t kInFlightMax = 256;

// The schedule of one step: request i is due at IntendedNs(i).
struct Schedule {
  int64_t start_ns = 0;
  int64_t end_ns = 0;  // Issuing stops here; every request is due before it.
  double interval_ns = 0;
  int64_t count = 0;
  [[nodiscard]] int64_t IntendedNs(int64_t i) const {
    return start_ns + static_cast<int64_t>(static_cast<double>(i) * interval_ns);
  }
};

// One step's requests and what became of them. The drivers fill done_ns (each slot by one
// thread, read only after the drivers joined), stop_ns and the failure.
struct LoadRun {
  Workload workload = Workload::kWrite;
  Schedule schedule;
  std::vector<PlainOp> ops;      // Request i.
  std::vector<int64_t> done_ns;  // Acknowledgement time of request i; -1 if none.
  int64_t stop_ns = 0;           // When issuing stopped.

  std::atomic<uint64_t> failures{0};
  std::mutex failure_mutex;
  std::string first_failure;  // Guarded by failure_mutex.
  void Fail(const std::string& message);
};

// Fills `run` for a step at `state.range(0)` requests per second (duration: kStepNs, shorter
// under SQLOOP_BENCH_QUICK). The schedule starts at Begin().
void PrepareRun(benchmark::State& state, Workload workload, LoadRun& run);
// Starts the schedule now (call right before the driver runs).
void Begin(LoadRun& run);
// A fresh database for the workload (WAL, the write table; for kMixed a copy of the read
// table): its path, or "" on error.
[[nodiscard]] std::string CreateLoadDb(Workload workload);
// Sets the counters and the manual time of the step, verifies the file holds exactly the
// acknowledged writes, removes it, and reports any failure with SkipWithError.
void FinishStep(benchmark::State& state, LoadRun& run, const std::string& path);
// Blocks the calling thread until `ns` on MonotonicNs()'s clock (returns at once if past).
void SleepUntilNs(int64_t ns);

// The drivers, one per system (load_sqloop.cc, load_threads.cc).
void SqloopLoad(benchmark::State& state, Workload workload);
void PlainLoad(benchmark::State& state, Workload workload);
void PoolLoad(benchmark::State& state, Workload workload, int threads);
void FuturesLoad(benchmark::State& state, Workload workload, int threads);

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_LOAD_H_
