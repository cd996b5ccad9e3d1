// Re-entry into the loop from its callbacks, on every backend: cancels of what is behind in the
// drain or in flight, resubmits at once (failing, cancelled, re-arms doing nothing), posts beside
// other threads', freed or reused completions, Run. Each arming runs once with its own result and
// nobody is held back. No sleeps: threads meet through atomics under a hang guard.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"
#include "tests/test_backends.h"

namespace sqloop::loop {
namespace {

using testing::TestBackend;

constexpr uint64_t kTicksMax = 10'000'000;  // Hang guard of every RunUntil.
constexpr int kCancelRounds = 20;
constexpr int kRetries = 1000;
constexpr int kGenerations = 20;

// Records each run of its callback, then runs `then` (kDisarm if unset).
struct Probe {
  Completion c;
  int calls = 0;
  int64_t result = 0;
  uint64_t tick = 0;
  bool twice_in_a_tick = false;
  std::function<Action(Loop&, Probe&)> then;
  Probe() {
    c.user_data = this;
    c.callback = [](Loop& l, Completion& self) {
      auto* p = static_cast<Probe*>(self.user_data);
      if (p->calls++ > 0 && p->tick == l.stats().ticks) p->twice_in_a_tick = true;
      p->result = self.result();
      p->tick = l.stats().ticks;
      return p->then ? p->then(l, *p) : Action::kDisarm;
    };
  }
};

io::Op BadRead(char* buffer) {
  return io::Op{.kind = io::OpKind::kRead, .fd = -1, .buffer = buffer, .length = 8};
}

// Yields until `done`; false after the hang guard (never a timing assertion).
bool SpinUntil(const std::function<bool()>& done) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

// Busy until the backend's clock moves (the simulator's moved in Tick, before the drain).
void UntilTheClockMoves(Loop& l) {
  const int64_t start = l.backend().NowNs();
  for (int spin = 0; spin < 1'000'000 && l.backend().NowNs() == start; spin++) {
  }
}

// 1 if thread `tid` sleeps in a backend's wait (epoll, io_uring_enter, the simulator's futex),
// 0 if not, -1 if /proc cannot tell. Reads without allocating.
int InBackendWait(pid_t tid) {
  char text[64];
  std::snprintf(text, sizeof(text), "/proc/self/task/%d/syscall", static_cast<int>(tid));
  const int fd = open(text, O_RDONLY | O_CLOEXEC);
  const ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof(text) - 1);
  if (fd >= 0) close(fd);
  if (n <= 0) return -1;
  text[n] = '\0';
  const long nr = text[0] == 'r' ? -1 : std::strtol(text, nullptr, 10);  // "running"
  return nr == SYS_epoll_wait || nr == SYS_epoll_pwait || nr == SYS_io_uring_enter ||
         nr == SYS_futex;
}

class LoopReentryTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  Loop& MakeLoop(LoopOptions options = {}) {
    loop_ = std::make_unique<Loop>(GetParam().make(), std::move(options));
    return *loop_;
  }
  // Every test ends with nothing pending: callbacks ran once each, no op left in the backend.
  void TearDown() override {
    if (loop_ == nullptr) return;
    EXPECT_EQ(loop_->pending(), 0u);
    EXPECT_EQ(loop_->backend().in_flight(), 0u);
  }
  bool Simulated() const { return !GetParam().real_descriptors; }
  // Runs the loop until `done`, false if it failed or ran kTicksMax ticks first. With nothing
  // pending it ticks without waiting, so a loop gone quiet too early fails instead of hanging.
  bool RunUntil(const std::function<bool()>& done) {
    const uint64_t start = loop_->stats().ticks;
    while (!done()) {
      const RunMode mode = loop_->pending() == 0 ? RunMode::kNoWait : RunMode::kOnce;
      if (loop_->stats().ticks - start > kTicksMax || !loop_->Run(mode).ok()) return false;
    }
    return true;
  }
  std::unique_ptr<Loop> loop_;
};

// A callback cancels completions queued behind it in its drain (a fired timer, a nop, a failed
// read where it failed at once): too late, each runs once with its own result. A timer still in
// the heap, and one it arms already due and cancels, complete with -ECANCELED a tick later. Its
// Run, in every mode, is refused and runs nothing; the stats count each callback once.
TEST_P(LoopReentryTest, CancelsAndRunFromACallbackLeaveTheDrainItsOwnResults) {
  Loop& loop = MakeLoop();
  Probe canceller, fired, nop, bad_read, far, armed_here, post;
  char buffer[8];
  bad_read.c.op = BadRead(buffer);
  std::vector<bool> completed;  // Each target's state at its Cancel.
  std::vector<absl::Status> runs;
  uint64_t ran_inside = 0;  // Callbacks and ticks run by the refused Runs.
  canceller.then = [&](Loop& l, Probe&) {
    const uint64_t before = l.stats().callbacks + l.stats().ticks;
    for (RunMode mode : {RunMode::kNoWait, RunMode::kOnce, RunMode::kUntilDone}) {
      runs.push_back(l.Run(mode));
    }
    ran_inside = l.stats().callbacks + l.stats().ticks - before;
    for (Probe* p : {&fired, &nop, &bad_read, &far}) {
      completed.push_back(p->c.state() == Completion::State::kCompleted);
      l.Cancel(p->c);
      l.Cancel(p->c);  // A second cancel changes nothing.
    }
    l.Timer(armed_here.c, absl::ZeroDuration());
    l.Cancel(armed_here.c);
    return Action::kDisarm;
  };
  loop.NextTick(canceller.c);  // First in the first drain.
  loop.Timer(fired.c, absl::ZeroDuration());
  loop.Timer(far.c, absl::Hours(1));
  loop.Submit(nop.c);
  loop.Submit(bad_read.c);
  loop.Post(post.c);
  EXPECT_EQ(loop.pending(), 5u) << "a post counts once a tick has taken it";
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  ASSERT_EQ(runs.size(), 3u);
  for (const absl::Status& s : runs) EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_EQ(ran_inside, 0u);
  ASSERT_EQ(completed.size(), 4u);
  ASSERT_TRUE(completed[0] && completed[1]) << "the timer and the nop were not in the drain";
  EXPECT_FALSE(completed[3]);
  EXPECT_TRUE(Simulated() || completed[2]) << "the bad read fails at once";
  for (Probe* p : {&fired, &nop, &bad_read, &far, &armed_here}) {
    const bool late = p == &far || p == &armed_here || (p == &bad_read && !completed[2]);
    EXPECT_EQ(p->calls, 1);
    EXPECT_EQ(p->result, late ? -ECANCELED : p == &bad_read ? -EBADF : 0);
    EXPECT_EQ(p->tick > canceller.tick, late);
  }
  EXPECT_EQ(loop.stats().callbacks, 7u);
  EXPECT_EQ(loop.stats().posts, 1u);
}

// A receive cancelled in flight is resubmitted from its -ECANCELED callback and cancelled again,
// alternately at once (still queued) and from the next tick (waiting in the backend). The last
// resubmission, left alone, receives the byte sent to it: no earlier cancel reaches it.
TEST_P(LoopReentryTest, AnOpCancelledInFlightIsResubmittedFromItsCancelledCallback) {
  Loop& loop = MakeLoop();
  int fds[2];
  if (Simulated()) {
    static_cast<io::SimBackend&>(loop.backend()).SocketPair(fds);
  } else {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  }
  Probe recv, canceller, guard;  // `guard`: a hang guard, should an op never come back.
  char byte = 0;
  char x = 'x';
  int cancelled = 0;
  recv.c.op = io::Op{.kind = io::OpKind::kRecv, .fd = fds[0], .buffer = &byte, .length = 1};
  recv.then = [&](Loop& l, Probe& p) {
    if (p.result != -ECANCELED || ++cancelled > kCancelRounds) return Action::kDisarm;
    l.Submit(p.c);  // The last is left alone.
    if (cancelled < kCancelRounds && cancelled % 2 == 0) l.Cancel(p.c);
    if (cancelled < kCancelRounds && cancelled % 2 == 1) l.NextTick(canceller.c);
    return Action::kDisarm;
  };
  canceller.then = [&](Loop& l, Probe&) {
    l.Cancel(recv.c);
    return Action::kDisarm;
  };
  loop.Timer(guard.c, absl::Seconds(60));
  loop.Submit(recv.c);
  loop.NextTick(canceller.c);
  ASSERT_TRUE(RunUntil([&] { return cancelled >= kCancelRounds || guard.calls > 0; }));
  io::Op send{.kind = io::OpKind::kSend, .fd = fds[1], .buffer = &x, .length = 1};
  EXPECT_EQ(loop.WaitForOp(send), 1);
  ASSERT_TRUE(RunUntil([&] { return recv.calls > kCancelRounds || guard.calls > 0; }));
  if (guard.calls == 0) loop.Cancel(guard.c);
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  EXPECT_EQ(guard.result, -ECANCELED) << "an op never came back";
  EXPECT_EQ(cancelled, kCancelRounds) << "a cancel of an earlier round hit a resubmission";
  EXPECT_EQ(recv.calls, kCancelRounds + 1);
  EXPECT_EQ(recv.result, 1);
  EXPECT_EQ(byte, 'x');
  for (int fd : fds) {
    io::Op close_op{.kind = io::OpKind::kClose, .fd = fd};
    EXPECT_EQ(loop.WaitForOp(close_op), 0);
  }
}

// Completions that re-arm at once doing nothing (a next tick, a nop, a zero timer) and a read
// that fails at once (a bad descriptor), resubmitted 1000 times by Submit or kRearm, run at most
// once a tick, each retry a new op; a next tick runs between every two failures, and a timer, a
// post and a nop armed beside them still run.
TEST_P(LoopReentryTest, CompletionsResubmittedAtOnceRunOnceATickAndLetTheOthersRun) {
  Loop& loop = MakeLoop();
  const io::BackendStats before = loop.backend().stats();
  bool stop = false;
  Probe spinners[3], retry, timer, post, nop;
  for (Probe& s : spinners) {
    s.then = [&stop](Loop&, Probe& p) {  // Stops if it ever runs twice in one tick.
      return stop || p.twice_in_a_tick ? Action::kDisarm : Action::kRearm;
    };
  }
  char buffer[8];
  int wrong_results = 0;
  int starved = 0;  // Failures with no turn of spinners[0] since the previous one.
  int spins_seen = -1;
  retry.c.op = BadRead(buffer);
  retry.then = [&](Loop& l, Probe& p) {
    wrong_results += p.result == -EBADF ? 0 : 1;
    starved += spinners[0].calls <= spins_seen ? 1 : 0;
    spins_seen = spinners[0].calls;
    if (p.calls >= kRetries) return Action::kDisarm;
    if (p.calls % 2 == 0) return Action::kRearm;
    l.Submit(p.c);
    return Action::kDisarm;
  };
  loop.NextTick(spinners[0].c);
  loop.Submit(spinners[1].c);
  loop.Timer(spinners[2].c, absl::ZeroDuration());
  loop.Submit(retry.c);
  loop.Timer(timer.c, absl::Milliseconds(1));
  loop.Post(post.c);
  loop.Submit(nop.c);
  ASSERT_TRUE(RunUntil([&] {
    return retry.calls == kRetries && timer.calls + post.calls + nop.calls == 3 &&
           spinners[1].calls > 1 && spinners[2].calls > 1;
  })) << "starved";
  stop = true;
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  for (Probe* p : {&timer, &post, &nop}) EXPECT_EQ(p->calls, 1);
  EXPECT_EQ(timer.result, 0);
  for (const Probe* p : {&spinners[0], &spinners[1], &spinners[2], &retry}) {
    EXPECT_FALSE(p->twice_in_a_tick);
  }
  EXPECT_EQ(wrong_results, 0);
  EXPECT_EQ(starved, 0) << "retries that ran back to back without the next tick's turn";
  const uint64_t ops = kRetries + spinners[1].calls + 1;  // The retries, the nops.
  EXPECT_EQ(loop.backend().stats().submitted - before.submitted, ops);
  EXPECT_EQ(loop.backend().stats().completed - before.completed, ops);
  EXPECT_GE(loop.stats().ticks, uint64_t{kRetries});
}

// With a budget of 1 ns a drain of 100 next ticks stops after the step that reads the budget
// spent, later ticks stop at the drain's own check, and the order is the order of queueing:
// what the steps queued (a next tick, a re-arm) runs after the whole first batch.
TEST_P(LoopReentryTest, TheTickBudgetCutsALongDrainWithoutReorderingIt) {
  constexpr int kSteps = 100;
  constexpr int kReader = 5;
  constexpr int kRearmer = 3;
  LoopOptions options;
  options.tick_budget = absl::Nanoseconds(1);
  Loop& loop = MakeLoop(std::move(options));
  std::vector<int> order;
  bool found_spent = false;
  std::vector<Probe> steps(kSteps + 1);  // The last is queued by the first.
  for (int i = 0; i <= kSteps; i++) {
    steps[i].then = [&, i](Loop& l, Probe& p) {
      order.push_back(i);
      if (i == 0) l.NextTick(steps[kSteps].c);
      if (i == kReader) {
        UntilTheClockMoves(l);
        found_spent = l.TickBudgetSpent();
      }
      return i == kRearmer && p.calls == 1 ? Action::kRearm : Action::kDisarm;
    };
    if (i < kSteps) loop.NextTick(steps[i].c);
  }
  ASSERT_TRUE(loop.Run(RunMode::kNoWait).ok());
  ASSERT_TRUE(found_spent) << "the scenario needs the budget spent at the reading";
  EXPECT_EQ(order.size(), size_t{kReader + 1}) << "the tick went on past a spent budget";
  for (int runs = 0; loop.pending() > 0 && runs < 1000; runs++) {
    ASSERT_TRUE(loop.Run(RunMode::kNoWait).ok());
  }
  std::vector<int> expected;
  for (int i = 0; i <= kSteps; i++) expected.push_back(i);
  expected.push_back(kRearmer);
  EXPECT_EQ(order, expected);
  // Then 96 callbacks (the 94 left, the next tick, the re-arm): cut after each 16 but the last.
  EXPECT_EQ(loop.stats().budget_cuts, 1u + (kSteps - kReader) / kTickBudgetCheckEvery);
  EXPECT_EQ(loop.stats().callbacks, uint64_t{kSteps + 2});
}

// A thread posts while the loop is inside a callback (which waits until it has), and each post's
// callback posts it once more, beside the thread's next post: every post runs in a later tick
// than the callback it raced, its re-post in a later tick still, each once.
TEST_P(LoopReentryTest, PostsMadeWhileTheLoopDrainsAndRepostedFromTheirCallbacksRunOnce) {
  constexpr int kRounds = 50;
  Loop& loop = MakeLoop();
  std::atomic<int> asked{0};
  std::atomic<int> posted{0};
  std::vector<uint64_t> drain_ticks, post_ticks(kRounds);
  bool hung = false;
  Probe drainer;
  drainer.then = [&](Loop&, Probe& p) {
    const int round = asked.load();
    drain_ticks.push_back(p.tick);
    asked.store(round + 1);
    hung = !SpinUntil([&] { return posted.load() > round; });
    return !hung && round + 1 < kRounds ? Action::kRearm : Action::kDisarm;
  };
  std::vector<Probe> posts(kRounds);
  for (int round = 0; round < kRounds; round++) {
    posts[round].then = [&, round](Loop& l, Probe& p) {
      if (p.calls == 1) post_ticks[round] = p.tick;
      if (p.calls == 1) l.Post(p.c);
      return Action::kDisarm;
    };
  }
  std::thread poster([&] {
    for (int round = 0; round < kRounds; round++) {
      if (!SpinUntil([&] { return asked.load() > round; })) return;
      loop.Post(posts[round].c);
      posted.store(round + 1);
    }
  });
  loop.NextTick(drainer.c);
  const bool ran = RunUntil([&] { return hung || posts.back().calls == 2; });
  poster.join();
  ASSERT_TRUE(ran && !hung);
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  for (int round = 0; round < kRounds; round++) {
    EXPECT_EQ(posts[round].calls, 2) << round;
    EXPECT_FALSE(posts[round].twice_in_a_tick) << round;
    EXPECT_GT(post_ticks[round], drain_ticks[round]) << round;
  }
  EXPECT_EQ(loop.stats().posts, uint64_t{2 * kRounds});
  EXPECT_EQ(loop.stats().callbacks, uint64_t{3 * kRounds});
}

// A thread posts only once the loop thread sleeps in the backend's wait (seen in /proc): the
// post wakes it, and each Run(kOnce) returns having run that post.
TEST_P(LoopReentryTest, APostWakesTheLoopWhileItSleeps) {
  constexpr int kRounds = 20;
  Loop& loop = MakeLoop();
  const auto loop_tid = static_cast<pid_t>(syscall(SYS_gettid));
  if (InBackendWait(loop_tid) < 0) GTEST_SKIP() << "/proc/<tid>/syscall is not readable";
  std::vector<Probe> posts(kRounds);
  std::atomic<int> delivered{0};
  std::atomic<int> posted_asleep{0};
  std::thread poster([&] {
    for (int round = 0; round < kRounds; round++) {
      if (!SpinUntil([&] { return delivered.load() >= round; })) return;
      if (SpinUntil([&] { return InBackendWait(loop_tid) == 1; })) posted_asleep++;
      loop.Post(posts[round].c);
    }
  });
  for (int round = 0; round < kRounds; round++) {
    ASSERT_TRUE(loop.Run(RunMode::kOnce).ok());
    delivered.store(round + 1);
  }
  poster.join();
  EXPECT_EQ(posted_asleep.load(), kRounds) << "the scenario needs the loop asleep";
  for (const Probe& p : posts) EXPECT_EQ(p.calls, 1);
  EXPECT_GE(loop.stats().blocking_ticks, uint64_t{kRounds});
  EXPECT_EQ(loop.stats().posts, uint64_t{kRounds});
}

// Each generation's callback deletes its completion and arms the next, of the next kind (nop,
// failing read, timer, next tick, post), likely in the memory just freed; the stall watch is on.
// The loop must not touch the freed one after its callback: each runs once, with its own result.
struct Generation {
  Completion c;
  int index;
  std::vector<int64_t>* results;
  char buffer[8];
};

void ArmGeneration(Loop& l, int index, std::vector<int64_t>* results) {
  auto* g = new Generation{Completion{}, index, results, {}};
  g->c.user_data = g;
  g->c.callback = [](Loop& loop, Completion& self) {
    auto* done = static_cast<Generation*>(self.user_data);
    const int next = done->index + 1;
    std::vector<int64_t>* all = done->results;
    all->push_back(self.result());
    delete done;
    if (next < kGenerations) ArmGeneration(loop, next, all);
    return Action::kDisarm;
  };
  if (index % 5 == 1) g->c.op = BadRead(g->buffer);
  if (index % 5 <= 1) l.Submit(g->c);
  if (index % 5 == 2) l.Timer(g->c, absl::ZeroDuration());
  if (index % 5 == 3) l.NextTick(g->c);
  if (index % 5 == 4) l.Post(g->c);
}

TEST_P(LoopReentryTest, ACallbackFreesItsCompletionAndArmsAnotherInItsPlace) {
  LoopOptions options;
  options.stall_budget = absl::Nanoseconds(1);
  Loop& loop = MakeLoop(std::move(options));
  std::vector<int64_t> results;
  ArmGeneration(loop, 0, &results);
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  std::vector<int64_t> expected;
  for (int i = 0; i < kGenerations; i++) expected.push_back(i % 5 == 1 ? -EBADF : 0);
  EXPECT_EQ(results, expected);
  EXPECT_EQ(loop.stats().callbacks, uint64_t{kGenerations});
}

// One completion reused by its own callback as another kind each time: a cancelled timer, a
// failing read, a next tick re-armed once (as a next tick, not as the read), a post. Nothing of
// one use leaks into the next: result, kind, cancel.
TEST_P(LoopReentryTest, ACompletionReusedAsAnotherKindKeepsNothingOfItsLastUse) {
  Loop& loop = MakeLoop();
  Probe reused, canceller;
  char buffer[8];
  std::vector<int64_t> results;
  std::vector<uint64_t> ticks;
  reused.then = [&](Loop& l, Probe& p) {
    results.push_back(p.result);
    ticks.push_back(p.tick);
    if (p.calls == 1) p.c.op = BadRead(buffer);
    if (p.calls == 1) l.Submit(p.c);
    if (p.calls == 2) l.NextTick(p.c);
    if (p.calls == 4) l.Post(p.c);
    return p.calls == 3 ? Action::kRearm : Action::kDisarm;
  };
  canceller.then = [&](Loop& l, Probe&) {
    l.Cancel(reused.c);
    return Action::kDisarm;
  };
  loop.Timer(reused.c, absl::Hours(1));
  loop.NextTick(canceller.c);
  const uint64_t submitted = loop.backend().stats().submitted;
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  EXPECT_EQ(results, (std::vector<int64_t>{-ECANCELED, -EBADF, 0, 0, 0}));
  ASSERT_EQ(ticks.size(), 5u);
  EXPECT_EQ(ticks[3], ticks[2] + 1) << "the re-armed next tick ran as a next tick";
  EXPECT_EQ(loop.backend().stats().submitted - submitted, 1u) << "only the read reached it";
  EXPECT_EQ(loop.stats().posts, 1u);
}

// A stall report names the callback's completion, and the name may belong to what the callback
// frees (a database names its pump after its path). The report must still name it rightly.
TEST_P(LoopReentryTest, AStallReportOfACallbackThatFreedItsNameStillNamesIt) {
  if (Simulated()) GTEST_SKIP() << "the virtual clock stands still in a callback: no stall";
  static constexpr const char* kName = "tenant-0123456789abcdefghijklmnopqrstuvwxyz.db";
  struct Owner {
    Completion c;
    std::string name = kName;
  };
  std::vector<std::string> reports;
  LoopOptions options;
  options.stall_budget = absl::Nanoseconds(1);
  options.log = [&](io::LogLevel, absl::string_view m) { reports.emplace_back(m); };
  Loop& loop = MakeLoop(std::move(options));
  auto* owner = new Owner;
  owner->c.name = owner->name.c_str();
  owner->c.user_data = owner;
  owner->c.callback = [](Loop& l, Completion& self) {
    UntilTheClockMoves(l);
    delete static_cast<Owner*>(self.user_data);
    return Action::kDisarm;
  };
  loop.NextTick(owner->c);
  ASSERT_TRUE(loop.Run(RunMode::kUntilDone).ok());
  ASSERT_EQ(loop.stats().stalls, 1u) << "the scenario needs the callback reported as a stall";
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].find(kName), std::string::npos) << reports[0];
}

std::string ParamName(const ::testing::TestParamInfo<TestBackend>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(AllBackends, LoopReentryTest,
                         ::testing::ValuesIn(testing::AllTestBackends()), ParamName);

}  // namespace
}  // namespace sqloop::loop
