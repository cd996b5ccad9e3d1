// bench/sqlite/executor.h
// -----------------------------------------------------------------------------
//
// The "executor with futures" baseline: plain SQLite behind a fixed pool of threads, each with
// its own connection (bench/sqlite/plain_conn.h), to which the application hands one operation
// at a time and gets a std::future back. This is the other design a C++ team builds instead of
// sqloop (besides the bare thread pool of pool.cc): what it adds to the pool is the future
// itself, a shared state allocated per request, a task queue under a mutex, and a wake-up of
// the caller blocked in get().
//
// Tasks run in FIFO order from one queue; any thread takes the next. Writes serialise on
// SQLite's write lock (a thread that finds it taken waits in SQLite's busy handler); reads run
// in parallel (WAL).
//
// Example:
//
//   FuturesExecutor executor;
//   if (!executor.Start(path, /*threads=*/4, /*reads=*/true)) ...;
//   std::future<bool> read = executor.Submit(PlainOp{.write = false, .key = 42});
//   bool ok = read.get();
//   executor.Stop();  // Runs what is queued, then joins.
#ifndef SQLOOP_BENCH_SQLITE_EXECUTOR_H_
#define SQLOOP_BENCH_SQLITE_EXECUTOR_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace sqloop::bench {

// One operation of the suite's workloads: a point read of row `key`, or an INSERT with `key`
// as its seq.
struct PlainOp {
  bool write = false;
  int64_t key = 0;
};

class FuturesExecutor {
 public:
  FuturesExecutor() = default;
  // Stops (and joins) the threads if Stop() was not called.
  ~FuturesExecutor();
  FuturesExecutor(const FuturesExecutor&) = delete;
  FuturesExecutor& operator=(const FuturesExecutor&) = delete;

  // Starts `threads` threads and waits until each has opened its connection to `path` (see
  // PlainConnection::Open for `reads`). False if any connection failed (the threads are
  // stopped again).
  [[nodiscard]] bool Start(const std::string& path, int threads, bool reads);
  // Queues `op`; the future becomes ready with true once it succeeded (a read returned its
  // row's values, an INSERT committed durably), false if it failed. Never blocks.
  [[nodiscard]] std::future<bool> Submit(PlainOp op);
  // Runs every queued task, then joins the threads. Idempotent.
  void Stop();

  // SQLITE_BUSY results retried, over every thread; valid after Stop().
  [[nodiscard]] uint64_t busy() const { return busy_; }

 private:
  struct Task {
    PlainOp op;
    std::promise<bool> done;
  };

  void RunWorker(const std::string& path, bool reads, int64_t index);

  std::mutex mutex_;
  std::condition_variable wake_;  // A task arrived, a thread got ready, or Stop was called.
  std::deque<Task> queue_;        // Guarded by mutex_, like the three below.
  bool stopping_ = false;
  int ready_ = 0;
  int failed_ = 0;
  uint64_t busy_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_EXECUTOR_H_
