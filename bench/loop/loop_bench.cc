// sqloop_bench_loop: real io_uring operations through the loop, against raw liburing (the
// physical floor), three ways each:
//
//   raw_uring    liburing by hand: get_sqe, prep, one submit_and_wait, walk the CQ
//   sqloop       caller-owned completions with state-machine callbacks, Run(kUntilDone)
//   sqloop_coro  a C++20 coroutine layer over sqloop: each op is `co_await`ed from a long-lived
//                coroutine; the awaiter owns the Completion in the coroutine frame and the
//                callback resumes the coroutine (the layer a coroutine user would write)
//
// Families (one iteration = one batch; the argument is the batch size):
//   loop_nop      no-op round trips: the loop's own overhead per operation
//   loop_read4k   4 KiB reads at scattered offsets of a 16 MiB page-cached file
//   loop_timer    zero-delay timers: raw io_uring timeouts vs sqloop's in-loop heap
//
// Counters: enters_per_op (io_uring_enter calls per operation), allocs_per_op (heap
// allocations per operation, from sqloop::heap_counter), ops per second.
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/io/internal/backends.h"
#include "sqloop/loop/loop.h"

namespace sqloop::bench {
namespace {

constexpr uint32_t kRingEntries = 256;  // The same SQ size for raw liburing and sqloop.
constexpr uint32_t kReadBytes = 4096;
constexpr uint64_t kFileBytes = 16 << 20;  // Page-cached: small enough to stay resident.

enum class Work { kNop, kRead, kTimer };

// The file every read benchmark reads; created once, read once to warm the page cache.
int BenchFile() {
  static const int fd = [] {
    char path[] = "/tmp/sqloop_bench_loop_XXXXXX";
    const int file = mkstemp(path);
    if (file < 0) std::abort();
    unlink(path);
    std::vector<char> chunk(1 << 20, 'r');
    for (uint64_t done = 0; done < kFileBytes; done += chunk.size()) {
      if (pwrite(file, chunk.data(), chunk.size(), static_cast<off_t>(done)) < 0) std::abort();
    }
    for (uint64_t done = 0; done < kFileBytes; done += chunk.size()) {
      if (pread(file, chunk.data(), chunk.size(), static_cast<off_t>(done)) < 0) std::abort();
    }
    return file;
  }();
  return fd;
}

// Scattered, repeatable offsets: operation i of a batch reads page (i * 97 + round * 13).
uint64_t ReadOffset(uint64_t i, uint64_t round) {
  return ((i * 97 + round * 13) % (kFileBytes / kReadBytes)) * kReadBytes;
}

void Finish(benchmark::State& state, uint64_t enters, alloc::HeapCounts before) {
  const auto ops = static_cast<double>(state.iterations() * state.range(0));
  const alloc::HeapCounts after = alloc::CurrentHeapCounts();
  state.SetItemsProcessed(static_cast<int64_t>(ops));
  state.counters["enters_per_op"] = static_cast<double>(enters) / ops;
  state.counters["allocs_per_op"] =
      static_cast<double>(after.allocations - before.allocations) / ops;
}

// ---- raw liburing -------------------------------------------------------------------------

void RawUring(benchmark::State& state, Work work) {
  const auto batch = static_cast<uint32_t>(state.range(0));
  io_uring ring{};
  if (io_uring_queue_init(kRingEntries, &ring, 0) != 0) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  std::vector<char> buffers(static_cast<size_t>(batch) * kReadBytes);
  const int fd = work == Work::kRead ? BenchFile() : -1;
  __kernel_timespec zero{};
  uint64_t enters = 0;
  uint64_t round = 0;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  for (auto _ : state) {
    for (uint32_t i = 0; i < batch; i++) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (work == Work::kNop) io_uring_prep_nop(sqe);
      if (work == Work::kRead) {
        io_uring_prep_read(sqe, fd, &buffers[i * kReadBytes], kReadBytes, ReadOffset(i, round));
      }
      if (work == Work::kTimer) io_uring_prep_timeout(sqe, &zero, 0, 0);
    }
    io_uring_submit_and_wait(&ring, batch);
    enters++;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring, head, cqe) {
      seen++;
      const bool ok = work == Work::kTimer ? cqe->res == -ETIME : cqe->res >= 0;
      if (!ok) state.SkipWithError("raw io_uring op failed");
    }
    io_uring_cq_advance(&ring, seen);
    if (seen != batch) state.SkipWithError("raw io_uring: fewer completions than submitted");
    round++;
  }
  Finish(state, enters, before);
  io_uring_queue_exit(&ring);
}

// ---- sqloop with state-machine callbacks --------------------------------------------------

std::unique_ptr<loop::Loop> MakeLoop() {
  io::BackendOptions options;
  options.ring_entries = kRingEntries;
  auto backend = io::internal::CreateUringBackend(options, 0);
  if (!backend.ok()) return nullptr;
  return std::make_unique<loop::Loop>(*std::move(backend), loop::LoopOptions{});
}

struct Slot {
  loop::Completion c;
  uint64_t* failures;
};

loop::Action CountFailure(loop::Loop&, loop::Completion& c) {
  if (c.result() < 0) ++*static_cast<Slot*>(c.user_data)->failures;
  return loop::Action::kDisarm;
}

void Sqloop(benchmark::State& state, Work work) {
  const auto batch = static_cast<uint32_t>(state.range(0));
  std::unique_ptr<loop::Loop> loop = MakeLoop();
  if (loop == nullptr) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  uint64_t failures = 0;
  std::vector<Slot> slots(batch);
  std::vector<char> buffers(static_cast<size_t>(batch) * kReadBytes);
  for (Slot& slot : slots) {
    slot.failures = &failures;
    slot.c.user_data = &slot;
    slot.c.callback = &CountFailure;
  }
  const int fd = work == Work::kRead ? BenchFile() : -1;
  uint64_t round = 0;
  const uint64_t enters_before = loop->backend().stats().enter_calls;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  for (auto _ : state) {
    for (uint32_t i = 0; i < batch; i++) {
      loop::Completion& c = slots[i].c;
      if (work == Work::kTimer) {
        loop->Timer(c, absl::ZeroDuration());
        continue;
      }
      c.op = work == Work::kNop ? io::Op{.kind = io::OpKind::kNop}
                                : io::Op{.kind = io::OpKind::kRead,
                                         .fd = fd,
                                         .buffer = &buffers[i * kReadBytes],
                                         .length = kReadBytes,
                                         .offset = ReadOffset(i, round)};
      loop->Submit(c);
    }
    if (!loop->Run(loop::RunMode::kUntilDone).ok()) state.SkipWithError("Run failed");
    round++;
  }
  Finish(state, loop->backend().stats().enter_calls - enters_before, before);
  if (failures != 0) state.SkipWithError("sqloop op failed");
}

// ---- a coroutine layer over sqloop --------------------------------------------------------

// A long-lived task: its frame is allocated once, before the timed region. Each iteration the
// benchmark resumes every task; each awaits one operation and suspends again until the next.
struct Task {
  struct promise_type {
    Task get_return_object() { return Task{Handle::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::abort(); }
  };
  using Handle = std::coroutine_handle<promise_type>;
  explicit Task(Handle h) : handle(h) {}
  Task(Task&& other) noexcept : handle(std::exchange(other.handle, nullptr)) {}
  Task(const Task&) = delete;
  ~Task() {
    if (handle) handle.destroy();
  }
  Handle handle;
};

// Awaits one sqloop operation. The Completion lives in the awaiter, i.e. in the coroutine
// frame: no allocation per operation, exactly like the state machine's caller-owned struct.
struct OpAwaiter {
  loop::Loop& loop;
  io::Op op;
  bool timer = false;
  loop::Completion c{};
  std::coroutine_handle<> waiter;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> handle) {
    waiter = handle;
    c.op = op;
    c.user_data = this;
    c.callback = [](loop::Loop&, loop::Completion& self) {
      static_cast<OpAwaiter*>(self.user_data)->waiter.resume();
      return loop::Action::kDisarm;
    };
    if (timer) {
      loop.Timer(c, absl::ZeroDuration());
    } else {
      loop.Submit(c);
    }
  }
  int64_t await_resume() const noexcept { return c.result(); }
};

struct Parked {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}
};

Task Worker(loop::Loop& loop, Work work, uint32_t index, const uint64_t& round, int fd,
            char* buffer, uint64_t& failures) {
  for (;;) {
    io::Op op{.kind = io::OpKind::kNop};
    if (work == Work::kRead) {
      op = io::Op{.kind = io::OpKind::kRead,
                  .fd = fd,
                  .buffer = buffer,
                  .length = kReadBytes,
                  .offset = ReadOffset(index, round)};
    }
    const int64_t result = co_await OpAwaiter{loop, op, work == Work::kTimer, {}, {}};
    if (result < 0) failures++;
    co_await Parked{};  // Until the benchmark's next iteration resumes us.
  }
}

void SqloopCoro(benchmark::State& state, Work work) {
  const auto batch = static_cast<uint32_t>(state.range(0));
  std::unique_ptr<loop::Loop> loop = MakeLoop();
  if (loop == nullptr) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  const int fd = work == Work::kRead ? BenchFile() : -1;
  std::vector<char> buffers(static_cast<size_t>(batch) * kReadBytes);
  uint64_t round = 0;
  uint64_t failures = 0;
  std::vector<Task> tasks;
  tasks.reserve(batch);
  for (uint32_t i = 0; i < batch; i++) {
    tasks.push_back(Worker(*loop, work, i, round, fd, &buffers[i * kReadBytes], failures));
  }
  const uint64_t enters_before = loop->backend().stats().enter_calls;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  for (auto _ : state) {
    for (Task& task : tasks) task.handle.resume();  // Each submits one op and suspends.
    if (!loop->Run(loop::RunMode::kUntilDone).ok()) state.SkipWithError("Run failed");
    round++;
  }
  Finish(state, loop->backend().stats().enter_calls - enters_before, before);
  if (failures != 0) state.SkipWithError("coroutine op failed");
  // Tasks are parked (not inside an await on the loop), so destroying them is safe.
}

void Batches(benchmark::internal::Benchmark* b) {
  for (int batch : {1, 16, 64, 256}) b->Arg(batch);
}

BENCHMARK_CAPTURE(RawUring, nop, Work::kNop)->Name("loop_nop/raw_uring")->Apply(Batches);
BENCHMARK_CAPTURE(Sqloop, nop, Work::kNop)->Name("loop_nop/sqloop")->Apply(Batches);
BENCHMARK_CAPTURE(SqloopCoro, nop, Work::kNop)->Name("loop_nop/sqloop_coro")->Apply(Batches);
BENCHMARK_CAPTURE(RawUring, read, Work::kRead)->Name("loop_read4k/raw_uring")->Apply(Batches);
BENCHMARK_CAPTURE(Sqloop, read, Work::kRead)->Name("loop_read4k/sqloop")->Apply(Batches);
BENCHMARK_CAPTURE(SqloopCoro, read, Work::kRead)->Name("loop_read4k/sqloop_coro")->Apply(Batches);
BENCHMARK_CAPTURE(RawUring, timer, Work::kTimer)->Name("loop_timer/raw_uring")->Apply(Batches);
BENCHMARK_CAPTURE(Sqloop, timer, Work::kTimer)->Name("loop_timer/sqloop")->Apply(Batches);
BENCHMARK_CAPTURE(SqloopCoro, timer, Work::kTimer)->Name("loop_timer/sqloop_coro")->Apply(Batches);

}  // namespace
}  // namespace sqloop::bench

int main(int argc, char** argv) {
  for (const char* key : {"baseline:loop_nop", "baseline:loop_read4k", "baseline:loop_timer"}) {
    benchmark::AddCustomContext(key, "raw_uring");
  }
  benchmark::AddCustomContext("description:loop_nop",
                              "one iteration = a batch of N no-op round trips (N = argument)");
  benchmark::AddCustomContext(
      "description:loop_read4k",
      "one iteration = a batch of N 4 KiB reads from a page-cached 16 MiB file");
  benchmark::AddCustomContext(
      "description:loop_timer",
      "one iteration = N zero-delay timers (raw: io_uring timeout ops; sqloop: its timer heap)");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
