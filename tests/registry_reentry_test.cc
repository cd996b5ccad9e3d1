// Registry re-entry: the callbacks of tenant requests (on_done) call back into the Registry on
// every failure and completion path: a failed open, a NotFound, a failed wake, a poisoned
// tenant, a refusal, a deadline, a delete, Shutdown, CloseIdleTenants, TrimIdleTenants. Every
// request completes exactly once (Call checks; TearDown compares the registry's count), retries
// give the loop back, one tenant's failure stays its own, and the registry ends with no slot,
// no sleeper, no descriptor, and a Shutdown that calls back.
#include <cerrno>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/db/registry.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"
#include "tests/db_test_support.h"
#include "tests/registry_test_util.h"

namespace sqloop::db::testing {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;
using sqloop::testing::RecordingBackend;
using sqloop::testing::TestBackend;
using Code = absl::StatusCode;
using Kind = Request::Kind;

const bool kAccounting = InstallAccounting();
constexpr int kRetries = 1000;

class RegistryReentryTest : public ::testing::TestWithParam<TestBackend> {
 protected:
  static RegistryOptions Options(uint32_t open_max) {
    RegistryOptions options;
    options.open_max = open_max;
    options.idle_timeout = absl::InfiniteDuration();  // No timer: nothing closes on its own.
    options.idle_trim_after = absl::InfiniteDuration();
    return options;
  }
  void Make(RegistryOptions options) {
    auto recording = std::make_unique<RecordingBackend>(GetParam().make());
    trace_ = recording.get();
    loop_ = std::make_unique<loop::Loop>(std::move(recording), loop::LoopOptions{});
    options.directory = dir_.path();
    if (!GetParam().real_descriptors) {
      ASSERT_EQ(dynamic_cast<io::SimBackend&>(trace_->inner()).disk().MakeDirectory("/tenants"), 0);
      options.directory = "/tenants";
    }
    options.memory_name_prefix = absl::StrCat("registry-reentry-", serial_++, "/");
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*loop_);
    ASSERT_TRUE(vfs.ok());
    vfs_ = *std::move(vfs);
    absl::StatusOr<std::unique_ptr<Registry>> registry = Registry::Create(*loop_, *vfs_, options);
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
    fds_ = GetParam().real_descriptors ? CountOpenFds() - 1 : 0;  // Less the directory's.
  }
  // Makes the registry and creates `tenants` in order.
  void MakeWith(RegistryOptions options, std::initializer_list<absl::string_view> tenants) {
    ASSERT_NO_FATAL_FAILURE(Make(std::move(options)));
    for (absl::string_view name : tenants) ASSERT_NO_FATAL_FAILURE(Create(name));
  }
  // One slot: `first` created, then `second`, which put `first` to sleep.
  void AsleepBehind(absl::string_view first, absl::string_view second,
                    RegistryOptions options = Options(1)) {
    ASSERT_NO_FATAL_FAILURE(MakeWith(std::move(options), {first, second}));
    ASSERT_EQ(StateOf(first), TenantState::kAsleep);
  }
  // Two slots: c asleep, a (used twice, so SIEVE keeps it) and b open and idle.
  void CAsleepAAndBIdle() {
    ASSERT_NO_FATAL_FAILURE(MakeWith(Options(2), {"c", "a"}));
    ASSERT_TRUE(Do(NewCall("a", "SELECT 1")).ok());
    ASSERT_NO_FATAL_FAILURE(Create("b"));
    ASSERT_EQ(StateOf("c"), TenantState::kAsleep);
  }
  // Shuts down (unless the test did): nothing may be left, and the registry counted exactly the
  // on_done calls that ran.
  void TearDown() override {
    if (registry_ == nullptr) return;
    for (Call& call : calls_) call.then = nullptr;  // They capture the test's locals.
    if (!shutdown_started_) StartShutdown();
    if (!RunUntil([&] { return shut_down_; })) {  // Leaked: ~Registry would stop the process.
      (void)registry_.release(), (void)vfs_.release(), (void)loop_.release();
      return;
    }
    const RegistryStats s = registry_->stats();
    for (uint32_t left :
         {s.open, s.active, s.idle, s.asleep, s.closing, s.sleeps_closing, s.waiting, s.buried}) {
      EXPECT_EQ(left, 0u) << "a tenant, a slot or a Database was left";
    }
    uint64_t completions = 0;
    for (const Call& call : calls_) completions += static_cast<uint64_t>(call.completions);
    EXPECT_EQ(s.requests, completions) << "the registry and the callbacks disagree";
    EXPECT_TRUE(!GetParam().real_descriptors || CountOpenFds() == fds_) << "a descriptor leaked";
    registry_.reset();
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  }

  // Runs the loop until `done()`; fails if the loop goes quiet first or spins without end.
  bool RunUntil(const std::function<bool()>& done) {
    for (uint64_t ticks = 0; !done(); ++ticks) {
      const bool stuck = loop_->pending() == 0 || ticks > 1'000'000;
      if (stuck || !loop_->Run(loop::RunMode::kOnce).ok()) {
        ADD_FAILURE() << "the loop went quiet, spun without end or failed";
        return false;
      }
    }
    return true;
  }
  Call& NewCall(absl::string_view tenant, absl::string_view sql, bool create = false,
                Kind kind = Kind::kRead) {
    return calls_.emplace_back(tenant, sql, create, kind);
  }
  // Submits `call` (again: Call checks that on_done runs once per submission).
  absl::Status Again(Call& call) {
    call.Reset();
    return registry_->Submit(call);
  }
  absl::Status Do(Call& call) {
    if (absl::Status admitted = Again(call); !admitted.ok()) return admitted;
    RunUntil([&] { return call.done; });
    return call.result;
  }
  void Create(absl::string_view name) {
    Call& create = NewCall(name, "CREATE TABLE t(x)", true, Kind::kWrite);
    ASSERT_TRUE(Do(create).ok()) << create.result;
  }
  TenantState StateOf(absl::string_view name) { return registry_->GetTenantStats(name)->state; }
  void StartShutdown() {
    shutdown_started_ = true;
    registry_->Shutdown(
        [](void* arg, absl::Status) {
          auto& self = *static_cast<RegistryReentryTest*>(arg);
          EXPECT_FALSE(self.shut_down_) << "Shutdown called back twice";
          self.shut_down_ = true;
        },
        this);
  }

  // Submits `call` and resubmits it from each on_done (a client that retries at once, and
  // again while Submit refuses) until it failed kRetries times, with `code` if given; `each`
  // runs in every on_done. Returns how many failures ran in the tick of the first.
  int RetriedAtOnce(Call& call, std::optional<Code> code,
                    const std::function<void()>& each = nullptr) {
    int failures = 0, in_first = 0;
    uint64_t first_tick = 0;
    call.then = [&](Call& c) {
      EXPECT_TRUE(!c.result.ok() && c.result.code() == code.value_or(c.result.code())) << c.result;
      if (failures++ == 0) first_tick = loop_->stats().ticks;
      in_first += loop_->stats().ticks == first_tick;
      if (each) each();
      if (failures == kRetries) return;
      for (int n = 0; !Again(c).ok(); ++n, ++refusals_) {
        if (n == kRetries) return ADD_FAILURE() << "refused without end";
      }
    };
    EXPECT_TRUE(Again(call).ok());
    RunUntil([&] { return failures == kRetries; });
    call.then = nullptr;
    EXPECT_EQ(failures, kRetries);
    return in_first;
  }

  TempDir dir_;
  RecordingBackend* trace_ = nullptr;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<Vfs> vfs_;
  std::unique_ptr<Registry> registry_;  // Declared after the Vfs: destroyed before it.
  std::deque<Call> calls_;              // Outlive the registry's work, whatever the test did.
  int fds_ = 0;
  int refusals_ = 0;  // Resubmissions RetriedAtOnce saw refused.
  bool shutdown_started_ = false;
  bool shut_down_ = false;
  static inline int serial_ = 0;
};

// ---- Failures retried at once ---------------------------------------------------------------

// Every open of a fails (then a never existed): its retries take a tick each, and a read of b,
// open meanwhile, never hears of them.
TEST_P(RegistryReentryTest, FailedOpensRetriedAtOnceGiveTheLoopBackAndSpareOtherTenants) {
  ASSERT_NO_FATAL_FAILURE(MakeWith(Options(2), {"a", "b"}));
  ASSERT_EQ(registry_->CloseIdleTenants(), 2u);
  Call& b = NewCall("b", "SELECT count(*) FROM t");
  ASSERT_TRUE(Do(b).ok()) << b.result;
  trace_->FailNth(io::OpKind::kOpenAt, 1, EMFILE, /*persistent=*/true);
  ASSERT_TRUE(Again(b).ok());
  Call& a = NewCall("a", "SELECT count(*) FROM t");
  EXPECT_LT(RetriedAtOnce(a, Code::kUnavailable), kRetries)
      << "every retry failed inside the tick of the first";
  EXPECT_EQ(registry_->stats().open_failures, uint64_t{kRetries});
  EXPECT_TRUE(b.done && b.result.ok()) << b.result;
  trace_->ClearFaults();
  EXPECT_TRUE(Do(a).ok()) << a.result;
  Call& ghost = NewCall("ghost", "SELECT 1");
  EXPECT_LT(RetriedAtOnce(ghost, Code::kNotFound), kRetries);
  EXPECT_EQ(registry_->stats().creations, 2u) << "a NotFound created its tenant";
}

// Past their deadline: on a closed tenant (queued while it opens) and on an open one (straight
// to its Database), reads and writes.
TEST_P(RegistryReentryTest, RequestsRetriedAtOnceAfterTheirDeadlineGiveTheLoopBack) {
  ASSERT_NO_FATAL_FAILURE(MakeWith(Options(2), {"a", "c"}));
  ASSERT_EQ(registry_->CloseIdleTenants(), 2u);
  ASSERT_TRUE(RunUntil([&] { return StateOf("c") == TenantState::kClosed; }));
  for (auto [tenant, kind, sql] : {std::tuple{"c", Kind::kRead, "SELECT 1"},
                                   {"a", Kind::kRead, "SELECT 1"},
                                   {"a", Kind::kWrite, "INSERT INTO t VALUES (1)"}}) {
    Call& late = NewCall(tenant, sql, false, kind);
    late.deadline_ns = loop_->now_ns() + 1;
    EXPECT_LT(RetriedAtOnce(late, Code::kDeadlineExceeded), kRetries) << tenant << ": " << sql;
  }
  Call& count = NewCall("a", "SELECT count(*) FROM t");
  ASSERT_TRUE(Do(count).ok()) << count.result;
  EXPECT_EQ(count.rows, "0\n") << "a write past its deadline ran";
}

// One slot: b sleeps for a, whose wake fails every time; once the retries stop, a closes.
TEST_P(RegistryReentryTest, FailedWakesRetriedAtOnceGiveTheLoopBackAndCloseTheTenant) {
  ASSERT_NO_FATAL_FAILURE(AsleepBehind("a", "b"));
  trace_->FailNth(io::OpKind::kOpenAt, 1, EMFILE, /*persistent=*/true);
  Call& a = NewCall("a", "SELECT count(*) FROM t");
  EXPECT_LT(RetriedAtOnce(a, Code::kUnavailable), kRetries);
  ASSERT_TRUE(RunUntil([&] { return StateOf("a") == TenantState::kClosed; }));
  EXPECT_EQ(registry_->stats().wakes_failed, 1u);
  trace_->ClearFaults();
  EXPECT_TRUE(Do(a).ok()) << a.result;
  Call& b = NewCall("b", "SELECT count(*) FROM t");
  EXPECT_TRUE(Do(b).ok()) << b.result;
}

// One slot. A read submitted from the callback of a read whose wake failed (once) gets a wake
// of its own; a read of b from there waits for a's slot. Later, asleep again, a takes a slot
// for an open-only request (no wake) and gives it back asleep: the old failure is no reason
// to close it.
TEST_P(RegistryReentryTest, ARequestSubmittedFromTheCallbackOfAFailedWakeGetsAWakeOfItsOwn) {
  ASSERT_NO_FATAL_FAILURE(AsleepBehind("a", "b"));
  trace_->FailNth(io::OpKind::kOpenAt, 1, EMFILE);
  Call& first = NewCall("a", "SELECT count(*) FROM t");
  Call& retry = NewCall("a", "SELECT count(*) FROM t");
  Call& other = NewCall("b", "SELECT count(*) FROM t");
  first.then = [&](Call&) {
    EXPECT_TRUE(registry_->Submit(retry).ok());
    EXPECT_TRUE(registry_->Submit(other).ok());
  };
  ASSERT_TRUE(registry_->Submit(first).ok());
  ASSERT_TRUE(RunUntil([&] { return retry.done && other.done; }));
  EXPECT_EQ(first.result.code(), Code::kUnavailable) << first.result;
  EXPECT_TRUE(retry.result.ok()) << "failed by a wake it never waited for: " << retry.result;
  EXPECT_TRUE(other.result.ok()) << other.result;
  ASSERT_EQ(StateOf("a"), TenantState::kAsleep);
  ASSERT_TRUE(Do(NewCall("a", "")).ok());
  EXPECT_EQ(StateOf("a"), TenantState::kAsleep) << "closed for a wake that failed long ago";
  EXPECT_EQ(registry_->stats().wakes_failed, 0u) << "a wake that did not happen was counted";
}

// A failed fsync poisons a: its retries are refused, then fail (its reopen refused), while b,
// open beside it, serves a read from each of a's callbacks.
TEST_P(RegistryReentryTest, APoisonedTenantRetriedAtOnceFailsAloneAndGivesTheLoopBack) {
  ASSERT_NO_FATAL_FAILURE(MakeWith(Options(2), {"a", "b"}));
  trace_->FailNth(io::OpKind::kFsync, 1, EIO);
  Call& write = NewCall("a", "INSERT INTO t VALUES (1)", false, Kind::kWrite);
  Call& read_b = NewCall("b", "SELECT count(*) FROM t");
  read_b.done = true;
  const auto each = [&] { EXPECT_TRUE(!read_b.done || Again(read_b).ok()); };
  EXPECT_LT(RetriedAtOnce(write, std::nullopt, each), kRetries);
  ASSERT_TRUE(RunUntil([&] { return read_b.done; }));
  EXPECT_GT(refusals_, 0) << "the poisoned database never refused a retry";
  EXPECT_GT(read_b.completions, 1);
  EXPECT_EQ(registry_->GetTenantStats("b")->requests_failed, 0u) << "a's failure reached b";
}

// ---- Refusals -------------------------------------------------------------------------------

// One slot, when_full kFail, tenant queues of 2. From b's callbacks (b active), the sleeping a
// is refused each time, and nothing of it runs. From an open-only request's completion (b idle)
// a is admitted and b evicted; a third request overflows a's queue and is resubmitted from a's
// first completion.
TEST_P(RegistryReentryTest, RefusalsFromCallbacksRunNothingAndLaterRetriesSucceed) {
  RegistryOptions options = Options(1);
  options.when_full = WhenFull::kFail;
  options.tenant_queue_max = 2;
  ASSERT_NO_FATAL_FAILURE(AsleepBehind("a", "b", options));
  Call& chain = NewCall("b", "SELECT count(*) FROM t");
  Call& touch = NewCall("b", "");
  Call& a1 = NewCall("a", "SELECT count(*) FROM t");
  Call& a2 = NewCall("a", "SELECT count(*) FROM t");
  Call& a3 = NewCall("a", "SELECT count(*) FROM t");
  constexpr int kChain = 20;
  int refused = 0;
  chain.then = [&](Call& c) {
    const absl::Status status = registry_->Submit(a1);
    EXPECT_EQ(status.code(), Code::kResourceExhausted) << status;
    refused += status.code() == Code::kResourceExhausted;
    EXPECT_TRUE((refused < kChain ? Again(c) : registry_->Submit(touch)).ok());
  };
  absl::Status overflow;
  touch.then = [&](Call&) {
    EXPECT_EQ(StateOf("b"), TenantState::kIdle);
    EXPECT_TRUE(registry_->Submit(a1).ok());
    EXPECT_TRUE(registry_->Submit(a2).ok());
    overflow = registry_->Submit(a3);
  };
  a1.then = [&](Call&) { EXPECT_TRUE(registry_->Submit(a3).ok()); };
  ASSERT_TRUE(registry_->Submit(chain).ok());
  ASSERT_TRUE(RunUntil([&] { return a3.done && a2.done; }));
  EXPECT_EQ(refused, kChain);
  EXPECT_EQ(overflow.code(), Code::kResourceExhausted) << overflow;
  EXPECT_EQ(registry_->stats().rejected, uint64_t{kChain} + 1);
  for (Call* c : {&chain, &touch, &a1, &a2, &a3}) EXPECT_TRUE(c->result.ok()) << c->result;
  EXPECT_EQ(a1.completions + a2.completions + a3.completions, 3) << "a refused Submit ran";
}

// One slot, kFail. From a's callback, d (new) is refused; then c, asleep, is deleted, whose
// close frees no slot: d must still be refused (TenantPolicy::CheckRoomForOpen: relief is "a
// close under way that frees a slot").
TEST_P(RegistryReentryTest, ASleepersCloseIsNoSlotForWhenFullFail) {
  RegistryOptions options = Options(1);
  options.when_full = WhenFull::kFail;
  ASSERT_NO_FATAL_FAILURE(AsleepBehind("c", "a", options));
  Call& read = NewCall("a", "SELECT count(*) FROM t");
  Call& remove = NewCall("c", "");
  remove.action = TenantRequest::Action::kDelete;
  Call& d = NewCall("d", "CREATE TABLE t(x)", true, Kind::kWrite);
  absl::Status without_delete, with_delete;
  uint32_t closing = 0;
  read.then = [&](Call&) {
    without_delete = registry_->Submit(d);
    if (without_delete.ok() || !registry_->Submit(remove).ok()) return;
    closing = registry_->stats().closing;
    with_delete = registry_->Submit(d);
  };
  ASSERT_TRUE(registry_->Submit(read).ok());
  ASSERT_TRUE(RunUntil([&] { return remove.done && (!with_delete.ok() || d.done); }));
  EXPECT_EQ(without_delete.code(), Code::kResourceExhausted) << without_delete;
  EXPECT_EQ(closing, 1u);
  EXPECT_EQ(with_delete.code(), Code::kResourceExhausted)
      << "admitted on the strength of a close that frees no slot";
}

// ---- Deleting and switching tenants from callbacks ------------------------------------------

// One slot. a's write deletes a from its callback, asks for b (asleep: it needs a's slot) and
// for a again without create_if_missing (behind the delete: NotFound).
TEST_P(RegistryReentryTest, ACallbackDeletesItsOwnTenantAndAsksForAnotherWithOneSlot) {
  ASSERT_NO_FATAL_FAILURE(AsleepBehind("b", "a"));
  Call& write = NewCall("a", "INSERT INTO t VALUES (1)", false, Kind::kWrite);
  Call& remove = NewCall("a", "");
  remove.action = TenantRequest::Action::kDelete;
  Call& other = NewCall("b", "SELECT count(*) FROM t");
  Call& after = NewCall("a", "SELECT count(*) FROM t");
  write.then = [&](Call&) {
    for (Call* c : {&remove, &other, &after}) EXPECT_TRUE(registry_->Submit(*c).ok());
  };
  ASSERT_TRUE(registry_->Submit(write).ok());
  ASSERT_TRUE(RunUntil([&] { return remove.done && other.done && after.done; }));
  for (Call* c : {&write, &remove, &other}) EXPECT_TRUE(c->result.ok()) << c->result;
  EXPECT_EQ(after.result.code(), Code::kNotFound) << after.result;
  EXPECT_EQ(registry_->stats().deletes, 1u);
  EXPECT_FALSE(GetParam().real_descriptors && dir_.Exists("a.db"));
}

// One slot, three tenants in turn, each completion asking for the next: every hop evicts the
// tenant whose callback runs, which sleeps, and the sleeper before it closes (asleep_max 1).
TEST_P(RegistryReentryTest, TenantsTakeTurnsAtOneSlotFromTheirCallbacks) {
  RegistryOptions options = Options(1);
  options.asleep_max = 1;
  ASSERT_NO_FATAL_FAILURE(MakeWith(options, {"a", "b", "c"}));
  std::vector<Call*> calls;
  for (const char* name : {"a", "b", "c"}) {
    calls.push_back(&NewCall(name, "INSERT INTO t VALUES (1)", false, Kind::kWrite));
  }
  constexpr int kHops = 99;
  int hops = 0;
  for (Call* call : calls) {
    call->then = [&](Call& done) {
      EXPECT_TRUE(done.result.ok()) << done.tenant << ": " << done.result;
      EXPECT_TRUE(++hops >= kHops || Again(*calls[hops % 3]).ok());
    };
  }
  ASSERT_TRUE(registry_->Submit(*calls[0]).ok());
  ASSERT_TRUE(RunUntil([&] { return hops == kHops; }));
  EXPECT_GE(registry_->stats().sleeps, uint64_t{kHops} - 1) << "a hop did not evict";
  EXPECT_GT(registry_->stats().evictions, 0u) << "no sleeper closed";
  Call& count = NewCall("c", "SELECT count(*) FROM t");
  ASSERT_TRUE(Do(count).ok()) << count.result;
  EXPECT_EQ(count.rows, absl::StrCat(kHops / 3, "\n"));
}

// ---- Shutdown from callbacks ----------------------------------------------------------------

// a (two reads) and b (one) active, c asleep, d waiting for a slot. The first read to finish
// shuts down: the running reads finish, d fails Unavailable, every Submit from then on is
// refused with nothing run, and CloseIdleTenants and TrimIdleTenants find nothing to do.
TEST_P(RegistryReentryTest, ShutdownFromARequestsCallbackFinishesRunningWorkAndRefusesTheRest) {
  ASSERT_NO_FATAL_FAILURE(CAsleepAAndBIdle());
  Call& a1 = NewCall("a", "SELECT count(*) FROM t");
  Call& a2 = NewCall("a", "SELECT count(*) FROM t");
  Call& b1 = NewCall("b", "SELECT count(*) FROM t");
  Call& d = NewCall("d", "CREATE TABLE t(x)", true, Kind::kWrite);
  Call& late = NewCall("a", "SELECT 1");
  int refused = 0;
  for (Call* c : {&a1, &a2, &b1}) {
    c->then = [&](Call&) {
      if (!shutdown_started_) StartShutdown();
      refused += registry_->Submit(late).code() == Code::kFailedPrecondition;
      EXPECT_EQ(registry_->CloseIdleTenants() + registry_->TrimIdleTenants(), 0u);
    };
    ASSERT_TRUE(registry_->Submit(*c).ok());
  }
  ASSERT_TRUE(registry_->Submit(d).ok());
  ASSERT_EQ(registry_->stats().waiting, 1u);
  ASSERT_TRUE(RunUntil([&] { return shut_down_; }));
  for (Call* c : {&a1, &a2, &b1}) EXPECT_TRUE(c->result.ok()) << c->result;
  EXPECT_EQ(d.result.code(), Code::kUnavailable) << d.result;
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(late.completions, 0) << "a refused request ran";
}

// One slot. ghost (no file) holds it, e waits and gets it when ghost's open finds nothing, f
// waits behind e. ghost's NotFound (a deferred completion) shuts down: e, opening, runs; f
// fails Unavailable; e's callback is refused.
TEST_P(RegistryReentryTest, ShutdownFromAFailedOpensCallbackLetsTheOpeningTenantRun) {
  ASSERT_NO_FATAL_FAILURE(Make(Options(1)));
  Call& ghost = NewCall("ghost", "SELECT 1");
  Call& e = NewCall("e", "CREATE TABLE t(x)", true, Kind::kWrite);
  Call& f = NewCall("f", "CREATE TABLE t(x)", true, Kind::kWrite);
  Call& late = NewCall("e", "SELECT 1");
  TenantState e_state = TenantState::kClosed;
  ghost.then = [&](Call&) {
    e_state = StateOf("e");
    StartShutdown();
  };
  absl::Status refused;
  e.then = [&](Call&) { refused = registry_->Submit(late); };
  for (Call* c : {&ghost, &e, &f}) ASSERT_TRUE(registry_->Submit(*c).ok());
  ASSERT_TRUE(RunUntil([&] { return shut_down_; }));
  EXPECT_EQ(ghost.result.code(), Code::kNotFound) << ghost.result;
  EXPECT_EQ(e_state, TenantState::kOpening);
  EXPECT_TRUE(e.result.ok()) << e.result;
  EXPECT_EQ(f.result.code(), Code::kUnavailable) << f.result;
  EXPECT_EQ(refused.code(), Code::kFailedPrecondition) << refused;
}

// ---- CloseIdleTenants and TrimIdleTenants from callbacks -------------------------------------

// a's callback asks for d (b falls asleep for it, its descriptors' closes in flight), then
// trims and closes both sleepers at once; d's callback closes a (idle or asleep by then) and
// asks for b again, which reopens.
TEST_P(RegistryReentryTest, CloseAndTrimIdleTenantsFromCallbacksWhileOthersSleepAndWait) {
  ASSERT_NO_FATAL_FAILURE(CAsleepAAndBIdle());
  Call& a = NewCall("a", "SELECT count(*) FROM t");
  Call& d = NewCall("d", "CREATE TABLE t(x)", true, Kind::kWrite);
  Call& b = NewCall("b", "SELECT count(*) FROM t");
  uint32_t sleeps_closing = 0, trimmed_from_a = 0, closed_from_a = 0, closed_from_d = 0;
  a.then = [&](Call&) {
    EXPECT_TRUE(registry_->Submit(d).ok());
    sleeps_closing = registry_->stats().sleeps_closing;
    trimmed_from_a = registry_->TrimIdleTenants();
    closed_from_a = registry_->CloseIdleTenants();
  };
  d.then = [&](Call&) {
    (void)registry_->TrimIdleTenants();
    closed_from_d = registry_->CloseIdleTenants();
    EXPECT_TRUE(registry_->Submit(b).ok());
  };
  ASSERT_TRUE(registry_->Submit(a).ok());
  ASSERT_TRUE(RunUntil([&] { return b.done; }));
  EXPECT_EQ(sleeps_closing, 1u) << "b did not fall asleep for d";
  EXPECT_EQ(trimmed_from_a, 2u) << "b and c, asleep";
  EXPECT_EQ(closed_from_a, 2u) << "b and c, asleep";
  EXPECT_EQ(closed_from_d, 1u) << "a";
  for (Call* c : {&a, &d, &b}) EXPECT_TRUE(c->result.ok()) << c->tenant << ": " << c->result;
  EXPECT_EQ(registry_->GetTenantStats("b")->opens, 2u);
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryReentryTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
