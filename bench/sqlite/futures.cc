// sqlite_mixed/futures/T: plain SQLite behind an executor with futures (bench/sqlite/executor.h),
// T threads with a connection each, driven by one application thread that keeps kWindow
// operations in flight, as sqloop/64 keeps 64 clients: it waits for the oldest future
// (get()), records its latency and submits the next operation. Results are consumed in
// submission order, as code that holds a std::future per request does (the standard library
// has no when_any), so a read queued behind a write is only seen once the write's commit is.
//
// One iteration = one operation, as in the rest of the group; the operations are the mixed
// workload's (Prng{kMixedSeedBase}, one write in kWriteOneIn). Latency = from Submit to get()
// returning. Counters: allocs_per_op (every thread's: the future's shared state and the queue
// are allocated per request), ops_per_s, read_ and write_ percentiles (also written for the
// CDF), busy_per_op. Checks: every operation succeeded (reads return their row's values) and
// the file holds exactly the acknowledged writes.
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/env.h"
#include "bench/sqlite/executor.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

// Operations in flight: as many as sqloop/64 has clients, so both see the same concurrency.
constexpr size_t kWindow = 64;

struct InFlight {
  std::future<bool> result;
  PlainOp op;
  int64_t submitted_ns = 0;
};

struct FuturesRun {
  FuturesExecutor executor;
  Prng ops{kMixedSeedBase};
  int64_t seq = 0;
  Latencies reads;
  Latencies writes;
  uint64_t writes_acked = 0;
  int64_t seq_sum = 0;
  uint64_t failures = 0;

  void Submit(InFlight& slot) {
    const bool write = IsWrite(ops);
    slot.op = PlainOp{write, write ? ++seq : ops.NextRowId()};
    slot.submitted_ns = MonotonicNs();
    slot.result = executor.Submit(slot.op);
  }
  // Waits for `slot`'s result and records it; `record` is false while draining.
  void Collect(InFlight& slot, bool record) {
    const bool ok = slot.result.get();
    const int64_t latency_ns = MonotonicNs() - slot.submitted_ns;
    if (!ok) ++failures;
    if (ok && slot.op.write) {
      ++writes_acked;
      seq_sum += slot.op.key;
    }
    if (record) (slot.op.write ? writes : reads).Add(latency_ns);
  }
};

bool CreateMixedDatabase(const std::string& path) {
  if (!CopyDb(ReadDbPath(), path)) return false;
  sqlite3* db = OpenPlain(path, nullptr, /*no_mutex=*/true);
  const bool ok =
      db != nullptr && Exec(db, "PRAGMA journal_mode=WAL;") && Exec(db, kCreateWriteTable);
  sqlite3_close_v2(db);
  return ok;
}

}  // namespace

void FuturesMixed(benchmark::State& state) {
  const auto thread_count = static_cast<int>(state.range(0));
  const std::string path = FreshDbPath("futures-mixed");
  FuturesRun run;
  if (!CreateMixedDatabase(path) || !run.executor.Start(path, thread_count, /*reads=*/true)) {
    RemoveDb(path);
    return state.SkipWithError("plain SQLite: setting up the executor failed");
  }
  run.reads.Reserve(static_cast<size_t>(state.max_iterations));
  run.writes.Reserve(static_cast<size_t>(state.max_iterations));
  std::vector<InFlight> window(kWindow);
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (InFlight& slot : window) run.Submit(slot);
  size_t oldest = 0;
  for (auto _ : state) {
    run.Collect(window[oldest], /*record=*/true);
    run.Submit(window[oldest]);
    oldest = (oldest + 1) % kWindow;
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  const auto ops = static_cast<double>(state.iterations());
  state.counters["allocs_per_op"] =
      static_cast<double>(alloc::CurrentHeapCounts().allocations - before.allocations) / ops;
  for (size_t i = 0; i < kWindow; ++i) run.Collect(window[(oldest + i) % kWindow], false);
  run.executor.Stop();
  state.counters["ops_per_s"] = ops / (static_cast<double>(elapsed_ns) / 1e9);
  state.counters["busy_per_op"] = static_cast<double>(run.executor.busy()) / ops;
  SetLatencyCounters(state, "read_", run.reads);
  SetLatencyCounters(state, "write_", run.writes);
  WriteLatencyFile({{"read", &run.reads}, {"write", &run.writes}});
  absl::Status verified =
      run.failures == 0 ? VerifyWrites(path, run.writes_acked, run.seq_sum)
                        : absl::InternalError(absl::StrCat(run.failures, " operation(s) failed"));
  RemoveDb(path);
  if (!verified.ok()) state.SkipWithError(verified.ToString().c_str());
}

}  // namespace sqloop::bench
