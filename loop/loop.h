// loop/loop.h
// -----------------------------------------------------------------------------
//
// The sqloop event loop: single-threaded, zero allocations per operation, and impossible to
// re-enter.
//
// A `Completion` is a caller-owned operation: an `io::Op` descriptor, a callback, a user
// pointer and the loop's bookkeeping. The loop never allocates one and never copies one; the
// caller keeps it alive (and untouched) from Submit/Timer/Post until its callback has run.
//
// One tick of Run():
//   1. read the backend's clock once (`now_ns()` stays fixed for the whole tick);
//   2. move expired timers and posted completions to the completed FIFO;
//   3. Tick the backend: send queued submissions, reap finished ops into the FIFO (waiting if
//      the run mode asks for it and nothing is ready);
//   4. drain the FIFO, running each callback once, until the tick has run
//      LoopOptions::tick_budget; the rest stays, in order, at the FIFO's front for the next
//      tick. Callbacks run only here, never from inside a reap or a submit, so a callback can
//      submit, cancel or re-arm without recursion.
//
// Run modes (libxev's vocabulary):
//   kNoWait     one tick that never sleeps: run what is ready and return.
//   kOnce       tick until at least one callback ran (sleeping if nothing is ready).
//   kUntilDone  tick until no operation, timer or post is pending.
//
// Calling Run() from inside a callback returns FailedPrecondition: a callback must never block
// waiting for the loop, and there is no BlockOn. That is the rule that makes the "block_on under
// a mutex" deadlock impossible by construction.
//
// Example (a timer that fires three times):
//
//   struct Ticker { int fired = 0; };
//   sqloop::loop::Completion timer;
//   Ticker ticker;
//   timer.user_data = &ticker;
//   timer.callback = [](sqloop::loop::Loop& loop, sqloop::loop::Completion& c) {
//     auto* t = static_cast<Ticker*>(c.user_data);
//     return ++t->fired < 3 ? sqloop::loop::Action::kRearm : sqloop::loop::Action::kDisarm;
//   };
//   loop->Timer(timer, absl::Milliseconds(10));
//   absl::Status status = loop->Run(sqloop::loop::RunMode::kUntilDone);
#ifndef SQLOOP_LOOP_LOOP_H_
#define SQLOOP_LOOP_LOOP_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sqloop/io/backend.h"
#include "sqloop/io/log.h"
#include "sqloop/io/op.h"

namespace sqloop::loop {

class Loop;
struct Completion;

// What a callback wants done with its completion afterwards.
enum class Action : uint8_t {
  kDisarm,  // The completion is idle again; the caller may reuse or free it.
  kRearm,   // Submit it again as it is now (same op, or the same timer duration).
};

// Runs on the loop's thread from the completed FIFO. `c.result()` holds the outcome.
using Callback = Action (*)(Loop& loop, Completion& c);

enum class RunMode : uint8_t { kNoWait, kOnce, kUntilDone };

// A caller-owned operation. Fill `op` (for Submit), `callback` and `user_data`; the rest belongs
// to the loop while the completion is armed.
//
// States (every transition checks the state it leaves):
//
// clang-format off
//   kIdle --Submit--> kInFlight --reaped--------------> kCompleted --callback--> kIdle
//   kIdle --Timer---> kTimer ----expired or cancelled--> kCompleted
//   kIdle --Post----> kPosted ---taken by a tick-------> kCompleted
//   kIdle --NextTick--------------------------------------> kCompleted
//
//   transition              function                   invariant in the new state
//   kIdle -> kInFlight      Submit                     the backend holds the op; pending counted
//   kIdle -> kTimer         Timer                      in the timer heap at heap_index_
//   kIdle -> kPosted        Post                       on the lock-free post stack
//   kIdle -> kCompleted     NextTick                   in the completed FIFO; result 0
//   kInFlight -> kCompleted Tick, WaitForOp            in the completed FIFO with the backend's result
//   kTimer -> kCompleted    FireExpiredTimers, Cancel  out of the heap; result 0 or -ECANCELED
//   kPosted -> kCompleted   TakePosts                  in the completed FIFO; result 0
//   kCompleted -> kIdle     Dispatch                   its callback is running or has run
// clang-format on
//
// The completion is kIdle while its callback runs, so the callback may submit it again for a
// different operation, free it (after returning kDisarm), or return kRearm to repeat it.
struct Completion {
  enum class State : uint8_t { kIdle, kInFlight, kTimer, kPosted, kCompleted };
  enum class Kind : uint8_t { kIo, kTimer, kPost, kNextTick };

  io::Op op;  // First member: the loop maps an io::Op* back to its Completion.
  Callback callback = nullptr;
  void* user_data = nullptr;
  // Shown in stall reports; defaults to the op kind ("read", "timer", "post"). Read before the
  // callback runs (copied, up to 127 bytes), so the callback may free what it points into.
  const char* name = nullptr;

  // -errno or a non-negative value; -ECANCELED after a successful cancel; 0 for a fired timer.
  [[nodiscard]] int64_t result() const { return op.result; }
  [[nodiscard]] State state() const { return state_; }

  // Loop bookkeeping; do not touch.
  State state_ = State::kIdle;
  Kind kind_ = Kind::kIo;
  uint32_t heap_index_ = 0;          // Position in the timer heap while kTimer.
  int64_t timeout_ns_ = 0;           // Timer duration, reused by kRearm.
  int64_t deadline_ns_ = 0;          // Absolute expiry on the backend clock.
  uint64_t sequence_ = 0;            // Orders timers with equal deadlines by submission.
  Completion* post_next_ = nullptr;  // Link in the thread-safe post stack.
};

// LoopOptions::tick_budget: long enough that a tick of ordinary requests (microseconds each)
// never reaches it, short enough that during a burst the backend is ticked (the burst's
// submissions sent, new completions reaped) and a host's own loop gets its turn about every
// millisecond.
inline constexpr absl::Duration kTickBudgetDefault = absl::Milliseconds(1);
// The drain reads the clock once per this many callbacks, so a loop of no-op callbacks pays a
// sixteenth of a clock read per callback. Callbacks that may run long read it themselves
// (Loop::TickBudgetSpent) before they start their work, and the tick ends after the first one
// that finds the budget spent.
inline constexpr uint32_t kTickBudgetCheckEvery = 16;

struct LoopOptions {
  io::BackendOptions backend;
  // Report callbacks that run longer than this on the backend clock (stall watch); 0 turns the
  // watch off and saves the two clock reads per callback it costs.
  absl::Duration stall_budget = absl::ZeroDuration();
  // Where backend choice, stalls and other operating events are reported.
  io::LogHook log;
  // How long one tick may run callbacks. Once the tick has run this long (from now_ns()), by
  // the drain's own reading of the backend's clock every kTickBudgetCheckEvery callbacks or by
  // any reading a callback made (TickElapsedNs), the drain stops after the running callback and
  // leaves the rest of the FIFO, in order, for the next tick: a burst of hundreds of
  // completions (a creation burst's commits, a fan-out of cold reads) then takes several short
  // ticks. It does not reorder: a timer that expires meanwhile runs after the callbacks ahead
  // of it. A single callback is never cut. Zero turns the bound off (a tick drains everything
  // that was ready at its start).
  absl::Duration tick_budget = kTickBudgetDefault;
  // Initial timer heap capacity. The heap grows beyond it (amortised, counted in stats), so this
  // only decides when steady state begins; 1024 covers a host with a timer per open tenant.
  uint32_t timers_reserved = 1024;
  // Before a tick blocks in the backend, poll it without blocking for up to this long (or until
  // the first timer is due): a completion, a post or a timer found then costs no wake-up. A
  // thread woken from a blocking wait starts tens of microseconds late on a busy machine; a
  // host that would rather pay that in CPU sets this (a few tens of microseconds is enough
  // under steady load). Zero (the default) never polls; the simulator's virtual clock ignores it.
  absl::Duration poll_before_wait = absl::ZeroDuration();
};

struct LoopStats {
  uint64_t ticks = 0;
  uint64_t callbacks = 0;
  uint64_t stalls = 0;
  uint64_t posts = 0;
  uint64_t timer_heap_growths = 0;
  uint64_t waited_ops = 0;  // Operations run through WaitForOp().
  // Ticks that let the backend block (it returns at once if something is already done).
  uint64_t blocking_ticks = 0;
  uint64_t polls = 0;        // Ticks that polled first (LoopOptions::poll_before_wait) ...
  uint64_t polls_found = 0;  // ... and found something to run without blocking.
  // Ticks that stopped on LoopOptions::tick_budget with callbacks left for the next one.
  uint64_t budget_cuts = 0;
};

class Loop {
 public:
  // Creates a loop on the backend `options.backend` selects (io_uring, or the fallback).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Loop>> Create(LoopOptions options);
  // Creates a loop on a given backend, e.g. the simulator.
  Loop(std::unique_ptr<io::Backend> backend, LoopOptions options);
  // Checks that nothing is pending: destroying a loop with operations in flight would leave the
  // kernel writing into freed completions.
  ~Loop();

  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs the loop (see the file comment). Returns FailedPrecondition when called from inside a
  // callback, or the backend's error if the backend itself failed.
  [[nodiscard]] absl::Status Run(RunMode mode);

  // Starts the I/O operation described by `c.op`. `c` must be idle.
  void Submit(Completion& c);
  // Arms a timer that completes `c` with result 0 after `timeout` (on the backend clock),
  // counted from now_ns(): inside a callback that is the tick's start, not the moment of the
  // call, so a timer for an absolute time T takes `T - now_ns()`. Outside Run() it counts from
  // the clock read at the call. A timeout past the clock's range (absl::InfiniteDuration())
  // never expires: the timer completes only when cancelled.
  void Timer(Completion& c, absl::Duration timeout);
  // Completes a pending `c` early with -ECANCELED (exactly once; if the operation already
  // finished it completes with its real result instead). No-op if `c` already completed and
  // only waits for its callback. Checks that `c` was submitted.
  void Cancel(Completion& c);
  // Thread-safe: completes `c` (result 0) on the loop's thread during a coming tick, waking the
  // loop if it sleeps. The one entry point that may be called from any thread. Its callback
  // may run before Post has returned (Post wakes the loop after publishing `c`), so the loop
  // may even be destroyed from that callback's aftermath: ~Loop waits for a Post still
  // returning, a few instructions, before it frees the backend Post wakes.
  void Post(Completion& c);
  // Completes `c` (result 0) straight onto the completed FIFO: its callback runs in the next
  // drain, after every callback already completed, and never from inside this call. The
  // next-tick operation ("run this soon, outside the current call stack"): no clock read, no
  // timer heap. Called from a callback, `c` runs in a later tick, so a completion that
  // keeps asking for the next tick cannot starve the others. Cancel leaves it to run.
  void NextTick(Completion& c);

  // For code that must finish one operation before it returns to a synchronous caller (the
  // SQLite VFS: xRead must return with the data). Submits `op` (caller-owned, idle) straight to
  // the backend and waits for it alone. Other operations that finish meanwhile are queued; their
  // callbacks run later from Run(), never from here, and timers do not fire here. This is not
  // BlockOn: no callback runs inside it, so nothing can re-enter. An op that waits for no
  // device (a close, a size, a truncate) the backend runs right here, without a round trip
  // (Backend::RunInline); it still counts in waited_ops. Returns op.result (-EIO if the backend
  // itself failed).
  [[nodiscard]] int64_t WaitForOp(io::Op& op);

  // The backend clock, read once per tick.
  [[nodiscard]] int64_t now_ns() const { return now_ns_; }
  // How long the current tick has run: the backend clock now, less now_ns(). Reads the clock.
  // The loop's tick budget and the databases' open and read budgets all measure this. A
  // reading past the tick budget ends the tick after the running callback.
  [[nodiscard]] int64_t TickElapsedNs() const;
  // Whether the current tick has run for LoopOptions::tick_budget (never with the budget 0).
  // A callback with a batch of work (the registry closing and trimming idle tenants) or a long
  // piece of it (a database's group commit) stops when it is spent and does the rest in a
  // later tick; the tick then ends after it.
  [[nodiscard]] bool TickBudgetSpent() const;
  // For hosts that embed the loop: a descriptor that becomes readable when the backend has
  // completions or a Post() arrived. Watch it and call Run(kNoWait); between calls, wait at most
  // NextTimeoutMs() (0: work is ready now; -1: only the descriptor matters; at most INT_MAX).
  [[nodiscard]] int fd() { return backend_->PollableFd(); }
  [[nodiscard]] int NextTimeoutMs() const;

  // Operations, timers and taken posts whose callbacks have not run yet.
  [[nodiscard]] uint64_t pending() const { return pending_; }
  [[nodiscard]] bool in_callback() const { return running_callback_ != nullptr; }
  [[nodiscard]] io::Backend& backend() { return *backend_; }
  [[nodiscard]] const LoopStats& stats() const { return stats_; }

 private:
  // The deadline of a timer that never expires.
  static constexpr int64_t kNeverNs = std::numeric_limits<int64_t>::max();

  void ArmTimer(Completion& c);
  // The first timer's deadline, or io::kNoDeadline if none can expire.
  [[nodiscard]] int64_t NextDeadlineNs() const;
  void FireExpiredTimers();
  void TakePosts();
  void Complete(Completion& c, int64_t result);
  void Dispatch(Completion& c);
  static void MarkReaped(Completion& c);
  void Rearm(Completion& c);
  [[nodiscard]] absl::Status Tick(bool may_wait, uint64_t& callbacks_run);
  [[nodiscard]] absl::Status Poll(int64_t deadline_ns, io::OpList& reaped, bool& found);
  [[nodiscard]] bool Idle() const;

  // Timer heap ordered by (deadline, sequence). O(log n) insert and remove.
  [[nodiscard]] static bool Earlier(const Completion* a, const Completion* b);
  void HeapPush(Completion* c);
  void HeapRemove(Completion* c);
  void HeapSiftUp(uint32_t index);
  void HeapSiftDown(uint32_t index);
  void HeapPlace(uint32_t index, Completion* c);

  std::unique_ptr<io::Backend> backend_;
  LoopOptions options_;
  int64_t stall_budget_ns_ = 0;  // options_.stall_budget, read once per callback.
  int64_t tick_budget_ns_ = 0;   // options_.tick_budget.
  int64_t poll_ns_ = 0;          // options_.poll_before_wait; 0 on a virtual clock.
  io::OpList completed_;         // The FIFO; ops are the first member of their Completion.
  std::vector<Completion*> timers_;
  std::atomic<Completion*> posts_{nullptr};  // Lock-free LIFO, reversed when taken.
  int64_t now_ns_ = 0;
  // A reading of TickElapsedNs() in this tick found the budget spent (a database that put off
  // its open or its group read it): the drain stops after the running callback.
  mutable bool budget_spent_seen_ = false;
  uint64_t pending_ = 0;
  uint64_t sequence_ = 0;
  std::atomic<uint64_t> posts_in_flight_{0};
  std::atomic<uint32_t> posts_returning_{0};  // Post calls between their start and return.
  bool running_ = false;
  Completion* running_callback_ = nullptr;
  LoopStats stats_;
};

}  // namespace sqloop::loop

#endif  // SQLOOP_LOOP_LOOP_H_
