// bench/dispatch/coro_runtime.h
// -----------------------------------------------------------------------------
//
// A minimal single-threaded C++20 coroutine runtime over the fake poller: the C++ counterpart of
// the reference study's allocation-free Rust executor. It exists to measure what the coroutine
// abstraction costs against the hand-written state machine (manual_server.h), so it is written
// the way an expert would write it for speed, not for generality:
//
//   * Executor: a fixed ring of ready coroutine handles. Waking a task = pushing its handle.
//     No std::function, no type-erased task objects, no allocation after construction.
//   * Task<Frames>: a fire-and-forget coroutine type. `Frames` chooses where the frame lives:
//     DefaultFrames (global operator new, like boxed futures) or PooledFrames (fixed slots of a
//     preallocated FramePool via the promise's operator new/delete, the analogue of the study's
//     unboxed executor). The promise finds its Context through the coroutine's first parameter,
//     so there is no global or thread-local state.
//   * AsyncListener / AsyncStream: register with the poller on construction and unregister on
//     destruction (RAII, as in the study), remember their readiness, and hand out awaiters whose
//     await_ready() is the fast path: when the object is believed ready the operation is tried
//     at once and, if it succeeds, the coroutine never suspends. An object known not to be ready
//     is never called, so the coroutine variants make exactly the same I/O calls as `manual`.
//   * Symmetric transfer: a coroutine that suspends (on I/O or at its end) transfers control
//     straight to the next ready task instead of returning to the run loop; the run loop is
//     re-entered only when the ready queue is empty, to poll. No coroutine here awaits another
//     coroutine: like Rust's nested async fns (which compile into their caller's state
//     machine), each task is one flat frame, because a nested C++ coroutine would cost one more
//     frame allocation per call (gcc 12 does not elide them).
//
// Invariants:
//   1. A handle is in the ready queue at most once: it is pushed when spawned or when its one
//      parked I/O object is woken, and waking clears the parked handle.
//   2. Each I/O object has at most one parked coroutine (one task owns each object).
//   3. A finished task's frame is destroyed by the run loop, never by the coroutine itself, so no
//      code ever runs on a destroyed frame.
//
// Example:
//
//   Executor executor(kConnections + 1);
//   Context context{executor, poller, stats, /*frame_pool=*/nullptr};
//   executor.Spawn(Listen<DefaultFrames>(context).Release());
//   executor.Run(poller);  // Returns when every task has finished.
#ifndef SQLOOP_BENCH_DISPATCH_CORO_RUNTIME_H_
#define SQLOOP_BENCH_DISPATCH_CORO_RUNTIME_H_

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <span>
#include <utility>

#include "bench/dispatch/containers.h"
#include "bench/dispatch/fake_io.h"

namespace sqloop::bench::dispatch {

class Executor {
 public:
  // Room for `tasks_max` live tasks (each in the ready queue at most once, invariant 1).
  explicit Executor(uint32_t tasks_max) : ready_(tasks_max), retired_(tasks_max) {}

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Takes ownership of a task created suspended and queues its first run.
  void Spawn(std::coroutine_handle<> task) {
    ++live_tasks_;
    ready_.Push(task);
  }

  // Queues a parked coroutine whose I/O object became ready.
  void Wake(std::coroutine_handle<> parked) { ready_.Push(parked); }

  // What a suspending coroutine transfers to: the next ready task, or back to Run().
  [[nodiscard]] std::coroutine_handle<> NextReady() {
    if (ready_.empty()) return std::noop_coroutine();
    return ready_.Pop();
  }

  // Called from a finished task's final suspend point; Run() destroys it (invariant 3).
  void Retire(std::coroutine_handle<> finished) { retired_.Push(finished); }

  // Runs ready tasks and polls for readiness until every task has finished.
  void Run(FakePoller& poller);

 private:
  RingQueue<std::coroutine_handle<>> ready_;
  RingQueue<std::coroutine_handle<>> retired_;
  uint32_t live_tasks_ = 0;
};

// Fixed-size slots for coroutine frames, with a LIFO free list so that the frame of the
// connection that just finished is the next one handed out (hot in cache). Each slot starts
// with a header holding the pool's address, so operator delete (which only gets the pointer
// and size) finds its pool without global state.
class FramePool {
 public:
  FramePool(size_t slot_bytes, uint32_t slots);
  ~FramePool();

  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  // A frame of `frame_bytes`; aborts if it does not fit a slot or the pool is exhausted.
  [[nodiscard]] void* Allocate(size_t frame_bytes) {
    SQLOOP_CHECK(frame_bytes + kHeaderBytes <= slot_bytes_,
                 "FramePool::Allocate: coroutine frame larger than a slot; raise kFrameSlotBytes");
    SQLOOP_CHECK(free_head_ != nullptr, "FramePool::Allocate: every slot is in use");
    FreeSlot* slot = free_head_;
    free_head_ = slot->next;
    if (frame_bytes > frame_bytes_max_) frame_bytes_max_ = frame_bytes;
    new (slot) FramePool*(this);
    return reinterpret_cast<std::byte*>(slot) + kHeaderBytes;
  }

  // Returns `frame` (from Allocate() of any pool) to its pool.
  static void Deallocate(void* frame) {
    std::byte* slot = static_cast<std::byte*>(frame) - kHeaderBytes;
    FramePool* pool = *reinterpret_cast<FramePool**>(slot);
    pool->free_head_ = new (slot) FreeSlot{pool->free_head_};
  }

  // The largest frame requested so far, to report every byte a task costs.
  [[nodiscard]] size_t frame_bytes_max() const { return frame_bytes_max_; }

 private:
  // The header keeps frames at operator new's guaranteed alignment.
  static constexpr size_t kHeaderBytes = __STDCPP_DEFAULT_NEW_ALIGNMENT__;
  // Slots are whole cache lines so that two frames never share one.
  static constexpr size_t kSlotAlignment = 64;

  struct FreeSlot {
    FreeSlot* next;
  };

  std::byte* storage_;
  size_t slot_bytes_;
  FreeSlot* free_head_ = nullptr;
  size_t frame_bytes_max_ = 0;
};

// What every coroutine of the workload receives as its first parameter.
struct Context {
  Executor& executor;
  FakePoller& poller;
  IoStats& stats;
  FramePool* frame_pool;  // Null unless the tasks use PooledFrames.
};

// Frame allocation policies, mixed into the promise type.
struct DefaultFrames {};  // No operator new in the promise: the global one is used.

struct PooledFrames {
  // The coroutine's parameters are passed after the size; the first one is the Context.
  template <typename... Args>
  static void* operator new(size_t frame_bytes, Context& context, const Args&... /*unused*/) {
    return context.frame_pool->Allocate(frame_bytes);
  }
  static void operator delete(void* frame, size_t /*frame_bytes*/) noexcept {
    FramePool::Deallocate(frame);
  }
};

// A task spawned on the Executor. The coroutine starts suspended; Release() hands it over.
template <typename Frames>
class [[nodiscard]] Task {
 public:
  class promise_type : public Frames {
   public:
    template <typename... Args>
    explicit promise_type(Context& context, const Args&... /*unused*/)
        : executor_(&context.executor) {}

    Task get_return_object() { return Task(Handle::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct FinalAwaiter {
        bool await_ready() noexcept { return false; }
        std::coroutine_handle<> await_suspend(Handle finished) noexcept {
          Executor& executor = *finished.promise().executor_;
          executor.Retire(finished);
          return executor.NextReady();
        }
        void await_resume() noexcept {}
      };
      return FinalAwaiter{};
    }
    void return_void() {}
    // The workload cannot throw; an exception here is a bug, so stop at once.
    void unhandled_exception() { std::terminate(); }

   private:
    Executor* executor_;
  };

  using Handle = std::coroutine_handle<promise_type>;

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Task& operator=(Task&&) = delete;
  ~Task() {
    if (handle_) handle_.destroy();
  }

  // Gives up ownership, typically to Executor::Spawn().
  [[nodiscard]] std::coroutine_handle<> Release() && { return std::exchange(handle_, nullptr); }

 private:
  explicit Task(Handle handle) : handle_(handle) {}
  Handle handle_;
};

// The state shared by AsyncListener and AsyncStream: registration, readiness, parked task.
class AsyncIo {
 public:
  AsyncIo(const AsyncIo&) = delete;
  AsyncIo& operator=(const AsyncIo&) = delete;

  // Called by the Executor for each poll event naming this object.
  void OnReady(uint8_t readiness) {
    readiness_ |= readiness;
    if (parked_) {
      context_.executor.Wake(parked_);
      parked_ = nullptr;
    }
  }

 protected:
  // Registers under the object's own address, like epoll's data.ptr. An object starts out
  // believed ready: the first attempt finds out, as with edge-triggered epoll.
  AsyncIo(Context& context, uint8_t interest)
      : context_(context),
        registration_(context.poller.Register(reinterpret_cast<uintptr_t>(this), interest)),
        readiness_(interest) {}
  ~AsyncIo() { context_.poller.Unregister(registration_); }

  // An awaiter for one operation; `Attempt` is a lambda that makes the call. await_ready() tries
  // the call only if the object is believed ready; after a wake-up, await_resume() tries once.
  // The result is kWouldBlock only after a spurious wake-up, which the caller retries.
  template <typename Attempt>
  class Awaiter {
   public:
    Awaiter(AsyncIo& io, uint8_t readiness, Attempt attempt)
        : io_(io), readiness_(readiness), attempt_(attempt) {}

    bool await_ready() { return (io_.readiness_ & readiness_) != 0 && TryOnce(); }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> parked) {
      io_.parked_ = parked;  // Invariant 2: the one owning task parks here.
      return io_.context_.executor.NextReady();
    }
    int64_t await_resume() {
      if (result_ == kWouldBlock && (io_.readiness_ & readiness_) != 0) TryOnce();
      return result_;
    }

   private:
    bool TryOnce() {
      result_ = attempt_();
      if (result_ != kWouldBlock) return true;
      io_.readiness_ &= static_cast<uint8_t>(~readiness_);
      return false;
    }

    AsyncIo& io_;
    uint8_t readiness_;
    Attempt attempt_;
    int64_t result_ = kWouldBlock;
  };

  Context& context_;
  uint32_t registration_;
  uint8_t readiness_;
  std::coroutine_handle<> parked_;
};

class AsyncListener : public AsyncIo {
 public:
  explicit AsyncListener(Context& context)
      : AsyncIo(context, kReadable), listener_(&context.stats) {}

  // co_await Accept(&stream): 0 with `*stream` set, or kWouldBlock after a spurious wake-up.
  [[nodiscard]] auto Accept(FakeStream* stream) {
    auto attempt = [this, stream] { return listener_.Accept(stream); };
    return Awaiter<decltype(attempt)>(*this, kReadable, attempt);
  }

 private:
  FakeListener listener_;
};

class AsyncStream : public AsyncIo {
 public:
  AsyncStream(Context& context, FakeStream stream)
      : AsyncIo(context, kReadable | kWritable), stream_(stream) {}

  // co_await Read(buffer): bytes read, or kWouldBlock after a spurious wake-up.
  [[nodiscard]] auto Read(std::span<char> buffer) {
    auto attempt = [this, buffer] { return stream_.Read(buffer); };
    return Awaiter<decltype(attempt)>(*this, kReadable, attempt);
  }

  // co_await Write(data): bytes written, or kWouldBlock after a spurious wake-up.
  [[nodiscard]] auto Write(std::span<const char> data) {
    auto attempt = [this, data] { return stream_.Write(data); };
    return Awaiter<decltype(attempt)>(*this, kWritable, attempt);
  }

 private:
  FakeStream stream_;
};

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_CORO_RUNTIME_H_
