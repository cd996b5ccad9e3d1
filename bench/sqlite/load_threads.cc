// The open-loop schedule (bench/sqlite/load.h) driven against the thread-based baselines,
// every one on SQLite's default VFS, WAL, synchronous=FULL (bench/sqlite/plain_conn.h):
//
//   plain       one thread, one connection: it runs request i at its intended start, or at once
//               if it is already late (the backlog is the schedule itself).
//   pool<T>     a dispatcher thread (the benchmark's) enqueues request i at its intended start
//               into a bounded FIFO (kInFlightMax) that T threads with a connection each take
//               from; a full queue makes the dispatcher wait, and that wait counts.
//   futures<T>  the executor of bench/sqlite/executor.h: the dispatcher submits request i at
//               its intended start and keeps its std::future in a window of kInFlightMax; between
//               arrivals it waits for the oldest future, so results are taken in order.
//
// Latency ends where the caller sees the result: when the plain thread's step returned, when a
// pool thread finished the request, when the dispatcher's get() returned.
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/env.h"
#include "bench/sqlite/load.h"
#include "bench/sqlite/plain_conn.h"

namespace sqloop::bench {
namespace {

bool RunOp(PlainConnection& conn, const PlainOp& op) {
  return op.write ? conn.Insert(op.key) : conn.Read(op.key);
}

void DrivePlain(LoadRun& run, PlainConnection& conn) {
  const Schedule& s = run.schedule;
  int64_t next = 0;
  int64_t now_ns = MonotonicNs();
  for (; next < s.count && now_ns < s.end_ns; ++next) {
    SleepUntilNs(s.IntendedNs(next));
    const auto index = static_cast<size_t>(next);
    const bool ok = RunOp(conn, run.ops[index]);
    now_ns = MonotonicNs();
    if (ok) {
      run.done_ns[index] = now_ns;
    } else {
      run.Fail(absl::StrCat("plain SQLite: ", conn.errmsg()));
    }
  }
  run.stop_ns = now_ns;
}

// ---- pool -------------------------------------------------------------------------------------

// The pool's bounded FIFO of request indices.
struct Queue {
  std::mutex mutex;
  std::condition_variable not_empty;
  std::condition_variable not_full;
  std::vector<int64_t> ring = std::vector<int64_t>(kInFlightMax);  // Guarded by mutex,
  size_t head = 0;                                                 // like these three.
  size_t size = 0;
  bool closed = false;
};

void PoolWorker(LoadRun& run, Queue& queue, const std::string& path, int64_t index,
                std::atomic<int>& ready) {
  const BaselineScope scope(alloc::kSharedTenant);
  PlainConnection conn;
  if (!conn.Open(path, run.workload == Workload::kMixed, index)) {
    run.Fail(absl::StrCat("pool thread ", index, ": opening its connection failed"));
  }
  ready.fetch_add(1);
  ready.notify_all();
  for (;;) {
    std::unique_lock<std::mutex> lock(queue.mutex);
    queue.not_empty.wait(lock, [&] { return queue.size > 0 || queue.closed; });
    if (queue.size == 0) return;  // Closed and drained.
    const int64_t request = queue.ring[queue.head];
    queue.head = (queue.head + 1) % kInFlightMax;
    --queue.size;
    lock.unlock();
    queue.not_full.notify_one();
    const auto slot = static_cast<size_t>(request);
    if (RunOp(conn, run.ops[slot])) {
      run.done_ns[slot] = MonotonicNs();
    } else {
      run.Fail(absl::StrCat("pool thread ", index, ": ", conn.errmsg()));
    }
  }
}

void DispatchPool(LoadRun& run, Queue& queue) {
  const Schedule& s = run.schedule;
  const auto end = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(s.end_ns));
  int64_t next = 0;
  while (next < s.count && MonotonicNs() < s.end_ns && run.failures.load() == 0) {
    SleepUntilNs(s.IntendedNs(next));
    std::unique_lock<std::mutex> lock(queue.mutex);
    if (!queue.not_full.wait_until(lock, end, [&] { return queue.size < kInFlightMax; })) break;
    queue.ring[(queue.head + queue.size) % kInFlightMax] = next++;
    ++queue.size;
    lock.unlock();
    queue.not_empty.notify_one();
  }
  run.stop_ns = MonotonicNs();
  {
    const std::lock_guard<std::mutex> lock(queue.mutex);
    queue.closed = true;
  }
  queue.not_empty.notify_all();
}

// ---- futures ----------------------------------------------------------------------------------

struct Pending {
  std::future<bool> result;
  int64_t index = 0;
};

void Take(LoadRun& run, Pending& pending) {
  const bool ok = pending.result.get();
  if (ok) {
    run.done_ns[static_cast<size_t>(pending.index)] = MonotonicNs();
  } else {
    run.Fail("a request through the executor failed");
  }
}

void DispatchFutures(LoadRun& run, FuturesExecutor& executor) {
  const Schedule& s = run.schedule;
  std::vector<Pending> window(kInFlightMax);
  size_t oldest = 0;
  size_t count = 0;
  int64_t next = 0;
  for (int64_t now_ns = MonotonicNs(); next < s.count && now_ns < s.end_ns;
       now_ns = MonotonicNs()) {
    if (count < kInFlightMax && s.IntendedNs(next) <= now_ns) {
      const auto index = static_cast<size_t>(next);
      window[(oldest + count++) % kInFlightMax] = {executor.Submit(run.ops[index]), next++};
      continue;
    }
    if (count == 0) {
      SleepUntilNs(s.IntendedNs(next));
      continue;
    }
    // Until the next arrival (or, with the window full, the end of the step), wait for the
    // oldest result.
    const int64_t until_ns = count == kInFlightMax ? s.end_ns : s.IntendedNs(next);
    const auto until = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(until_ns));
    if (window[oldest].result.wait_until(until) != std::future_status::ready) continue;
    Take(run, window[oldest]);
    oldest = (oldest + 1) % kInFlightMax;
    --count;
  }
  // As in load_sqloop.cc: what fell due while the dispatcher waited is handed over now.
  const int64_t stop_ns = MonotonicNs();
  for (; next < s.count && s.IntendedNs(next) <= stop_ns && count < kInFlightMax; ++next) {
    window[(oldest + count++) % kInFlightMax] = {
        executor.Submit(run.ops[static_cast<size_t>(next)]), next};
  }
  run.stop_ns = stop_ns;
  for (; count > 0; --count, oldest = (oldest + 1) % kInFlightMax) Take(run, window[oldest]);
}

}  // namespace

void PlainLoad(benchmark::State& state, Workload workload) {
  LoadRun run;
  PrepareRun(state, workload, run);
  const std::string path = CreateLoadDb(workload);
  PlainConnection conn;
  if (path.empty() || !conn.Open(path, workload == Workload::kMixed, 0)) {
    RemoveDb(path);
    return state.SkipWithError("plain SQLite setup failed");
  }
  for (auto _ : state) {
    Begin(run);
    DrivePlain(run, conn);
  }
  FinishStep(state, run, path);
}

void PoolLoad(benchmark::State& state, Workload workload, int threads) {
  LoadRun run;
  PrepareRun(state, workload, run);
  const std::string path = CreateLoadDb(workload);
  if (path.empty()) return state.SkipWithError("plain SQLite: creating the database failed");
  Queue queue;
  std::atomic<int> ready{0};
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back(PoolWorker, std::ref(run), std::ref(queue), std::cref(path), i,
                         std::ref(ready));
  }
  for (int seen = 0; (seen = ready.load()) < threads;) ready.wait(seen);
  for (auto _ : state) {
    Begin(run);
    DispatchPool(run, queue);  // Closes the queue: the workers drain it and return.
    for (std::thread& worker : workers) worker.join();
  }
  if (!queue.closed) {  // The timed loop did not run; release the workers anyway.
    {
      const std::lock_guard<std::mutex> lock(queue.mutex);
      queue.closed = true;
    }
    queue.not_empty.notify_all();
    for (std::thread& worker : workers) worker.join();
  }
  FinishStep(state, run, path);
}

void FuturesLoad(benchmark::State& state, Workload workload, int threads) {
  LoadRun run;
  PrepareRun(state, workload, run);
  const std::string path = CreateLoadDb(workload);
  FuturesExecutor executor;
  if (path.empty() || !executor.Start(path, threads, workload == Workload::kMixed)) {
    RemoveDb(path);
    return state.SkipWithError("plain SQLite: setting up the executor failed");
  }
  for (auto _ : state) {
    Begin(run);
    DispatchFutures(run, executor);
  }
  executor.Stop();
  FinishStep(state, run, path);
}

}  // namespace sqloop::bench
