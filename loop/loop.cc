// The event loop. See loop.h for the tick and the run modes, docs/state-machines.md for the
// completion state machine.
//
// Design invariants:
//   1. Callbacks run only from Dispatch(), called only from the drain at the end of Tick().
//      Nothing else (Submit, Cancel, Post, a backend reap) ever calls user code.
//   2. `pending_` counts completions in kInFlight, kTimer and kCompleted. A kPosted completion
//      is counted in `posts_in_flight_` (atomic: other threads post) until a tick takes it.
//   3. The loop never allocates per operation: completions are caller-owned and linked
//      intrusively; the timer heap is a vector reserved up front (it grows, counted in stats,
//      only when more timers are armed at once than ever before).
//   4. Run() is never re-entered: `running_` refuses a nested call with FailedPrecondition.
//   5. `now_ns_` changes only at the start of a tick and after the backend's wait (or the poll
//      that replaced it).
#include "sqloop/loop/loop.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <thread>
#include <type_traits>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"

namespace sqloop::loop {

static_assert(std::is_standard_layout_v<Completion> && offsetof(Completion, op) == 0,
              "the loop maps io::Op* back to Completion*; op must be the first member");

namespace {

Completion& CompletionOf(io::Op* op) { return *reinterpret_cast<Completion*>(op); }

// The longest name a stall report keeps (longer ones are cut).
constexpr size_t kStallNameMax = 128;

const char* NameOf(const Completion& c) {
  if (c.name != nullptr) return c.name;
  if (c.kind_ == Completion::Kind::kTimer) return "timer";
  if (c.kind_ == Completion::Kind::kPost) return "post";
  if (c.kind_ == Completion::Kind::kNextTick) return "next tick";
  return io::OpKindName(c.op.kind).data();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Loop>> Loop::Create(LoopOptions options) {
  if (!options.backend.log) options.backend.log = options.log;
  absl::StatusOr<std::unique_ptr<io::Backend>> backend = io::CreateBackend(options.backend);
  if (!backend.ok()) return backend.status();
  return std::make_unique<Loop>(*std::move(backend), std::move(options));
}

Loop::Loop(std::unique_ptr<io::Backend> backend, LoopOptions options)
    : backend_(std::move(backend)), options_(std::move(options)) {
  SQLOOP_CHECK(backend_ != nullptr, "Loop: a backend is required");
  timers_.reserve(options_.timers_reserved);
  stall_budget_ns_ = absl::ToInt64Nanoseconds(options_.stall_budget);
  tick_budget_ns_ = std::max<int64_t>(0, absl::ToInt64Nanoseconds(options_.tick_budget));
  // Virtual time moves only when the simulator is asked to wait: polling it would never end.
  if (backend_->name() != "simulator") {
    poll_ns_ = std::max<int64_t>(0, absl::ToInt64Nanoseconds(options_.poll_before_wait));
  }
  now_ns_ = backend_->NowNs();
}

Loop::~Loop() {
  // A thread whose post already ran may still be inside Post, about to wake the backend.
  while (posts_returning_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  SQLOOP_CHECK(pending_ == 0 && posts_in_flight_.load() == 0 && backend_->in_flight() == 0,
               "Loop destroyed with operations, timers or posts pending: cancel them and run "
               "the loop until their callbacks have run before destroying it");
}

void Loop::Submit(Completion& c) {
  SQLOOP_CHECK(c.state_ == Completion::State::kIdle,
               "Loop::Submit: the completion is still pending (in flight, armed as a timer, "
               "posted or completed and waiting for its callback); wait for its callback");
  SQLOOP_CHECK(c.callback != nullptr, "Loop::Submit: the completion has no callback");
  c.kind_ = Completion::Kind::kIo;
  c.state_ = Completion::State::kInFlight;
  pending_++;
  backend_->Submit(&c.op);
}

void Loop::Timer(Completion& c, absl::Duration timeout) {
  SQLOOP_CHECK(c.state_ == Completion::State::kIdle,
               "Loop::Timer: the completion is still pending; wait for its callback");
  SQLOOP_CHECK(c.callback != nullptr, "Loop::Timer: the completion has no callback");
  SQLOOP_CHECK(timeout >= absl::ZeroDuration(), "Loop::Timer: negative timeout");
  // Outside Run() the cached clock may be old; a timer armed then counts from the real now.
  if (!running_) now_ns_ = backend_->NowNs();
  c.kind_ = Completion::Kind::kTimer;
  c.timeout_ns_ = absl::ToInt64Nanoseconds(timeout);
  ArmTimer(c);
}

void Loop::ArmTimer(Completion& c) {
  // A timeout past the clock's range (absl::InfiniteDuration()) never expires: kNeverNs.
  c.deadline_ns_ = c.timeout_ns_ >= kNeverNs - now_ns_ ? kNeverNs : now_ns_ + c.timeout_ns_;
  c.sequence_ = sequence_++;
  c.op.result = 0;
  c.state_ = Completion::State::kTimer;
  pending_++;
  HeapPush(&c);
}

void Loop::Cancel(Completion& c) {
  switch (c.state_) {
    case Completion::State::kIdle:
      SQLOOP_CHECK(false,
                   "Loop::Cancel: the completion was never submitted, or its callback already "
                   "ran (a callback cannot cancel its own completion; it is idle there)");
      break;
    case Completion::State::kPosted:
      SQLOOP_CHECK(false, "Loop::Cancel: a posted completion cannot be cancelled");
      break;
    case Completion::State::kCompleted:
      break;  // Its callback runs with its real result.
    case Completion::State::kTimer:
      HeapRemove(&c);
      Complete(c, -ECANCELED);
      break;
    case Completion::State::kInFlight:
      backend_->Cancel(&c.op);
      break;
  }
}

void Loop::Post(Completion& c) {
  SQLOOP_CHECK(c.state_ == Completion::State::kIdle,
               "Loop::Post: the completion is still pending; wait for its callback");
  SQLOOP_CHECK(c.callback != nullptr, "Loop::Post: the completion has no callback");
  // Counted before `c` is published, so whoever sees its callback run also sees this Post
  // as still returning (the release of the exchange below orders it).
  posts_returning_.fetch_add(1, std::memory_order_relaxed);
  c.kind_ = Completion::Kind::kPost;
  c.state_ = Completion::State::kPosted;
  c.op.result = 0;
  posts_in_flight_.fetch_add(1, std::memory_order_relaxed);
  Completion* head = posts_.load(std::memory_order_relaxed);
  do {
    c.post_next_ = head;
  } while (!posts_.compare_exchange_weak(head, &c, std::memory_order_release,
                                         std::memory_order_relaxed));
  // Only the post that finds the stack empty wakes the loop: the loop empties the stack in
  // one exchange, so the first post after that is always the one that wakes it again.
  if (head == nullptr) backend_->Wake();
  posts_returning_.fetch_sub(1, std::memory_order_release);
}

void Loop::NextTick(Completion& c) {
  SQLOOP_CHECK(c.state_ == Completion::State::kIdle,
               "Loop::NextTick: the completion is still pending; wait for its callback");
  SQLOOP_CHECK(c.callback != nullptr, "Loop::NextTick: the completion has no callback");
  c.kind_ = Completion::Kind::kNextTick;
  c.op.result = 0;
  c.state_ = Completion::State::kCompleted;
  pending_++;
  completed_.PushBack(&c.op);
}

void Loop::TakePosts() {
  Completion* stack = posts_.exchange(nullptr, std::memory_order_acquire);
  if (stack == nullptr) return;
  // The stack is newest first; reverse it so posts run in the order they were made.
  Completion* fifo = nullptr;
  uint64_t count = 0;
  while (stack != nullptr) {
    Completion* next = stack->post_next_;
    stack->post_next_ = fifo;
    fifo = stack;
    stack = next;
    count++;
  }
  for (Completion* c = fifo; c != nullptr;) {
    Completion* next = c->post_next_;
    c->post_next_ = nullptr;
    pending_++;
    Complete(*c, 0);
    c = next;
  }
  stats_.posts += count;
  posts_in_flight_.fetch_sub(count, std::memory_order_relaxed);
}

void Loop::Complete(Completion& c, int64_t result) {
  SQLOOP_CHECK(c.state_ == Completion::State::kTimer || c.state_ == Completion::State::kPosted,
               "Loop: a timer or post completed that was not armed");
  c.op.result = result;
  c.state_ = Completion::State::kCompleted;
  completed_.PushBack(&c.op);
}

void Loop::FireExpiredTimers() {
  while (!timers_.empty() && timers_.front()->deadline_ns_ <= now_ns_) {
    Completion* c = timers_.front();
    HeapRemove(c);
    backend_->TraceTimerFired(c->deadline_ns_, c->sequence_);
    Complete(*c, 0);
  }
}

absl::Status Loop::Run(RunMode mode) {
  if (running_) {
    return absl::FailedPreconditionError(
        "Loop::Run was called while the loop is already running (from inside a callback). "
        "sqloop never blocks inside the loop and has no BlockOn: return from the callback and "
        "continue the work in the callback of the operation you are waiting for");
  }
  running_ = true;
  absl::Cleanup not_running = [this] { running_ = false; };
  for (;;) {
    if (mode == RunMode::kUntilDone && Idle()) return absl::OkStatus();
    uint64_t callbacks_run = 0;
    absl::Status status = Tick(/*may_wait=*/mode != RunMode::kNoWait, callbacks_run);
    if (!status.ok()) return status;
    if (mode == RunMode::kNoWait) return absl::OkStatus();
    if (mode == RunMode::kOnce && callbacks_run > 0) return absl::OkStatus();
  }
}

// Ticks the backend without blocking until it hands back an op, a post arrives, the first
// timer is due (`deadline_ns`) or poll_ns_ passed; `found` says whether the first three ended it.
absl::Status Loop::Poll(int64_t deadline_ns, io::OpList& reaped, bool& found) {
  stats_.polls++;
  const int64_t start_ns = backend_->NowNs();
  const int64_t end_ns = start_ns + poll_ns_;
  for (int64_t now_ns = start_ns;; now_ns = backend_->NowNs()) {
    if (deadline_ns != io::kNoDeadline && now_ns >= deadline_ns) break;
    if (!reaped.empty() || posts_.load(std::memory_order_relaxed) != nullptr) break;
    if (now_ns >= end_ns) return absl::OkStatus();
    if (absl::Status s = backend_->Tick(/*wait=*/false, deadline_ns, reaped); !s.ok()) return s;
  }
  found = true;
  stats_.polls_found++;
  return absl::OkStatus();
}

bool Loop::Idle() const {
  return pending_ == 0 && posts_in_flight_.load(std::memory_order_relaxed) == 0;
}

absl::Status Loop::Tick(bool may_wait, uint64_t& callbacks_run) {
  stats_.ticks++;
  now_ns_ = backend_->NowNs();
  budget_spent_seen_ = false;
  TakePosts();
  FireExpiredTimers();
  // A tick that may wait polls first if asked to, and blocks only if the poll found nothing.
  const bool wait = may_wait && completed_.empty();
  const int64_t deadline_ns = NextDeadlineNs();
  io::OpList reaped;
  bool polled = false;
  absl::Status status = absl::OkStatus();
  if (wait && poll_ns_ > 0) status = Poll(deadline_ns, reaped, polled);
  const bool block = wait && !polled;
  if (status.ok()) status = backend_->Tick(block, deadline_ns, reaped);
  if (block) stats_.blocking_ticks++;
  for (io::Op* op = reaped.front(); op != nullptr; op = op->next) {
    MarkReaped(CompletionOf(op));
  }
  completed_.Splice(reaped);
  if (!status.ok()) return status;
  if (wait) {
    now_ns_ = backend_->NowNs();
    TakePosts();
    FireExpiredTimers();
  }
  // Drain a snapshot: whatever callbacks complete now (a cancelled timer) runs next tick, so
  // one tick is bounded and a callback that re-arms itself cannot starve the others. The
  // snapshot itself stops at the tick budget; what is left goes back to the front of the FIFO,
  // ahead of what completed meanwhile, so the order of callbacks is the same either way.
  io::OpList batch;
  batch.Splice(completed_);
  // The tick ends after a callback that found the budget spent (a database that put off its
  // open or its group reads the clock before it), or at the drain's own reading.
  uint32_t run = 0;
  while (io::Op* op = batch.PopFront()) {
    Dispatch(CompletionOf(op));
    callbacks_run++;
    if (batch.empty() || tick_budget_ns_ == 0) continue;
    if (!budget_spent_seen_ && (++run % kTickBudgetCheckEvery != 0 || !TickBudgetSpent())) {
      continue;
    }
    stats_.budget_cuts++;
    batch.Splice(completed_);
    completed_.Splice(batch);
    break;
  }
  return absl::OkStatus();
}

int64_t Loop::TickElapsedNs() const {
  const int64_t elapsed_ns = backend_->NowNs() - now_ns_;
  if (tick_budget_ns_ > 0 && elapsed_ns >= tick_budget_ns_) budget_spent_seen_ = true;
  return elapsed_ns;
}

bool Loop::TickBudgetSpent() const {
  return tick_budget_ns_ > 0 && TickElapsedNs() >= tick_budget_ns_;
}

// A reaped op's completion is in the completed FIFO; a late Cancel is now a no-op.
void Loop::MarkReaped(Completion& c) {
  SQLOOP_CHECK(c.state_ == Completion::State::kInFlight,
               "Loop: the backend handed back an op that was not in flight");
  c.state_ = Completion::State::kCompleted;
}

void Loop::Dispatch(Completion& c) {
  SQLOOP_CHECK(c.state_ == Completion::State::kCompleted,
               "Loop: a completion reached the drain without completing");
  c.state_ = Completion::State::kIdle;
  pending_--;
  stats_.callbacks++;
  const bool watch = stall_budget_ns_ > 0;
  // The name is copied before the callback, which may free `c` and what its name points into
  // (a Database's pump is named by the Database's path); only when watching.
  std::array<char, kStallNameMax> name;
  if (watch) absl::SNPrintF(name.data(), name.size(), "%s", NameOf(c));
  const int64_t start_ns = watch ? backend_->NowNs() : 0;
  running_callback_ = &c;
  const Action action = c.callback(*this, c);
  running_callback_ = nullptr;
  if (watch) {
    const int64_t elapsed_ns = backend_->NowNs() - start_ns;
    if (elapsed_ns > stall_budget_ns_) {
      stats_.stalls++;
      if (options_.log) {
        options_.log(io::LogLevel::kWarning,
                     absl::StrFormat("sqloop stall: the callback of '%s' ran for %d us (budget "
                                     "%d us); something blocked the loop thread",
                                     name.data(), elapsed_ns / 1000,
                                     absl::ToInt64Microseconds(options_.stall_budget)));
      }
    }
  }
  // After kDisarm the callback may have freed `c`: touch it only when re-arming.
  if (action == Action::kRearm) Rearm(c);
}

void Loop::Rearm(Completion& c) {
  SQLOOP_CHECK(c.state_ == Completion::State::kIdle,
               "callback returned Action::kRearm after submitting its completion again; "
               "do one or the other");
  switch (c.kind_) {
    case Completion::Kind::kIo:
      Submit(c);
      break;
    case Completion::Kind::kTimer:
      ArmTimer(c);
      break;
    case Completion::Kind::kNextTick:
      NextTick(c);
      break;
    case Completion::Kind::kPost:
      SQLOOP_CHECK(false, "a posted completion cannot be re-armed; Post() it again");
  }
}

int64_t Loop::WaitForOp(io::Op& op) {
  SQLOOP_CHECK(op.next == nullptr, "Loop::WaitForOp: the op is already queued somewhere");
  stats_.waited_ops++;
  if (backend_->RunInline(op)) return op.result;
  backend_->Submit(&op);
  io::OpList reaped;
  for (bool done = false; !done;) {
    if (!backend_->Tick(/*wait=*/true, io::kNoDeadline, reaped).ok()) {
      // The op's fate is unknown; callers treat -EIO as a failed I/O, the loop reports the
      // backend failure from its next Run().
      return -EIO;
    }
    while (io::Op* finished = reaped.PopFront()) {
      if (finished == &op) {
        done = true;
        continue;
      }
      MarkReaped(CompletionOf(finished));
      completed_.PushBack(finished);
    }
  }
  return op.result;
}

int Loop::NextTimeoutMs() const {
  // A submission not yet sent is the backend's ready work too (Backend::HasReadyWork).
  if (!completed_.empty() || backend_->HasReadyWork() ||
      posts_.load(std::memory_order_relaxed) != nullptr) {
    return 0;
  }
  const int64_t deadline_ns = NextDeadlineNs();
  if (deadline_ns == io::kNoDeadline) return -1;
  return io::TimeoutMsFor(deadline_ns - backend_->NowNs());
}

int64_t Loop::NextDeadlineNs() const {
  if (timers_.empty() || timers_.front()->deadline_ns_ == kNeverNs) return io::kNoDeadline;
  return timers_.front()->deadline_ns_;
}

// The timer heap: a binary min-heap of Completion* by (deadline, sequence); each completion
// knows its index so cancel removes it in O(log n).

bool Loop::Earlier(const Completion* a, const Completion* b) {
  if (a->deadline_ns_ != b->deadline_ns_) return a->deadline_ns_ < b->deadline_ns_;
  return a->sequence_ < b->sequence_;
}

void Loop::HeapPlace(uint32_t index, Completion* c) {
  timers_[index] = c;
  c->heap_index_ = index;
}

void Loop::HeapPush(Completion* c) {
  if (timers_.size() == timers_.capacity()) stats_.timer_heap_growths++;
  timers_.push_back(c);
  c->heap_index_ = static_cast<uint32_t>(timers_.size() - 1);
  HeapSiftUp(c->heap_index_);
}

void Loop::HeapRemove(Completion* c) {
  const uint32_t index = c->heap_index_;
  SQLOOP_CHECK(index < timers_.size() && timers_[index] == c, "timer heap index is stale");
  Completion* last = timers_.back();
  timers_.pop_back();
  if (last != c) {
    HeapPlace(index, last);
    HeapSiftUp(index);
    HeapSiftDown(last->heap_index_);
  }
}

void Loop::HeapSiftUp(uint32_t index) {
  Completion* c = timers_[index];
  while (index > 0) {
    const uint32_t parent = (index - 1) / 2;
    if (!Earlier(c, timers_[parent])) break;
    HeapPlace(index, timers_[parent]);
    index = parent;
  }
  HeapPlace(index, c);
}

void Loop::HeapSiftDown(uint32_t index) {
  const auto size = static_cast<uint32_t>(timers_.size());
  Completion* c = timers_[index];
  for (;;) {
    uint32_t child = 2 * index + 1;
    if (child >= size) break;
    if (child + 1 < size && Earlier(timers_[child + 1], timers_[child])) child++;
    if (!Earlier(timers_[child], c)) break;
    HeapPlace(index, timers_[child]);
    index = child;
  }
  HeapPlace(index, c);
}

}  // namespace sqloop::loop
