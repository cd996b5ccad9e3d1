#include "bench/sqlite/load.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/env.h"

namespace sqloop::bench {
namespace {

// One step of the run of record: a second is 125 requests at the lowest write rate (enough for
// a p99, not for a p99.9) and tens of thousands at the top, and the ~60 steps then take about
// two minutes, the load curves' share of the run's 20-minute budget (docs/overhead.md, 7).
constexpr int64_t kStepNs = 1'000'000'000;
// Under SQLOOP_BENCH_QUICK (CI): long enough for every check to run on a few requests.
constexpr int64_t kQuickStepNs = 40'000'000;

// The results of a step, from done_ns, computed after the drivers joined.
struct StepResult {
  Latencies latencies;
  uint64_t completed = 0;
  uint64_t unserved = 0;
  uint64_t writes_acked = 0;
  int64_t seq_sum = 0;
  int64_t last_done_ns = 0;
};

void Collect(LoadRun& run, StepResult& result) {
  const Schedule& s = run.schedule;
  result.latencies.Reserve(static_cast<size_t>(s.count));
  result.last_done_ns = s.start_ns;
  for (int64_t i = 0; i < s.count; ++i) {
    const auto index = static_cast<size_t>(i);
    const int64_t done_ns = run.done_ns[index];
    if (done_ns < 0) {  // Never issued: it had waited since its intended start when we stopped.
      ++result.unserved;
      result.latencies.Add(std::max<int64_t>(0, run.stop_ns - s.IntendedNs(i)));
      continue;
    }
    ++result.completed;
    result.latencies.Add(done_ns - s.IntendedNs(i));
    result.last_done_ns = std::max(result.last_done_ns, done_ns);
    if (run.ops[index].write) {
      ++result.writes_acked;
      result.seq_sum += run.ops[index].key;
    }
  }
}

}  // namespace

void LoadRun::Fail(const std::string& message) {
  const std::lock_guard<std::mutex> lock(failure_mutex);
  if (failures.fetch_add(1) == 0) first_failure = message;
}

void PrepareRun(benchmark::State& state, Workload workload, LoadRun& run) {
  const auto rate_per_s = static_cast<double>(state.range(0));
  const int64_t step_ns = QuickMode() ? kQuickStepNs : kStepNs;
  run.workload = workload;
  run.schedule.interval_ns = 1e9 / rate_per_s;
  run.schedule.count =
      std::max<int64_t>(1, static_cast<int64_t>(rate_per_s * static_cast<double>(step_ns) / 1e9));
  run.ops.resize(static_cast<size_t>(run.schedule.count));
  Prng draws{kMixedSeedBase};
  for (int64_t i = 0; i < run.schedule.count; ++i) {
    const bool write = workload == Workload::kWrite || IsWrite(draws);
    run.ops[static_cast<size_t>(i)] = PlainOp{write, write ? i + 1 : draws.NextRowId()};
  }
  run.done_ns.assign(static_cast<size_t>(run.schedule.count), -1);
}

void Begin(LoadRun& run) {
  // The first request is due a little after now, so every driver starts on time.
  run.schedule.start_ns = MonotonicNs() + 100'000;
  run.schedule.end_ns =
      run.schedule.start_ns +
      static_cast<int64_t>(static_cast<double>(run.schedule.count) * run.schedule.interval_ns);
}

std::string CreateLoadDb(Workload workload) {
  std::string path = FreshDbPath(workload == Workload::kWrite ? "load-write" : "load-mixed");
  if (workload == Workload::kMixed && !CopyDb(ReadDbPath(), path)) return "";
  sqlite3* db = OpenPlain(path, nullptr, /*no_mutex=*/true);
  const bool ok =
      db != nullptr && Exec(db, "PRAGMA journal_mode=WAL;") && Exec(db, kCreateWriteTable);
  sqlite3_close_v2(db);
  if (!ok) {
    RemoveDb(path);
    return "";
  }
  return path;
}

void FinishStep(benchmark::State& state, LoadRun& run, const std::string& path) {
  StepResult result;
  Collect(run, result);
  const Schedule& s = run.schedule;
  const double busy_s = static_cast<double>(result.last_done_ns - s.start_ns) / 1e9;
  const double completed = static_cast<double>(result.completed);
  state.SetIterationTime(completed > 0 ? busy_s / completed : busy_s);
  state.counters["offered_per_s"] = static_cast<double>(state.range(0));
  state.counters["achieved_per_s"] = busy_s > 0 ? completed / busy_s : 0;
  state.counters["unserved"] = static_cast<double>(result.unserved) / static_cast<double>(s.count);
  SetLatencyCounters(state, "", result.latencies);
  if (run.failures.load() == 0) {
    absl::Status verified = VerifyWrites(path, result.writes_acked, result.seq_sum);
    if (!verified.ok()) run.Fail(verified.ToString());
  }
  RemoveDb(path);
  if (run.failures.load() != 0) {
    state.SkipWithError(
        absl::StrCat(run.failures.load(), " failure(s), first: ", run.first_failure).c_str());
  }
}

void SleepUntilNs(int64_t ns) {
  // steady_clock is MonotonicNs()'s clock, so its time points are directly comparable.
  std::this_thread::sleep_until(
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns)));
}

}  // namespace sqloop::bench
