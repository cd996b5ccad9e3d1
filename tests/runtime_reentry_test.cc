// Re-entry through the front doors: done callbacks of Runtime::Submit and of Shards call back
// into them (resubmit at once after a failure, Exec, Query, Run, Shutdown, Stop, Stats), with
// requests queued or in flight. Every request is answered exactly once, retries give the loop
// back, refusals are the documented ones, and the counters agree with what the callers saw.
// No sleeps: tests wait on callbacks (a latch, the host's loop) or on Stop's return; every
// wait limit is a hang guard, never a timing assertion.
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/runtime.h"
#include "sqloop/db/shard_call.h"
#include "sqloop/db/shards.h"
#include "sqloop/loop/loop.h"
#include "tests/registry_test_util.h"

namespace sqloop::db::testing {
namespace {

using Code = absl::StatusCode;
using Kind = Request::Kind;

const bool kAccounting = InstallAccounting();
constexpr int kRetries = 1000;
constexpr absl::Duration kWaitMax = absl::Seconds(120);  // A hang guard only.

// ---- Runtime --------------------------------------------------------------------------------

class RuntimeReentryTest : public ::testing::Test {
 protected:
  void Make(uint32_t open_max = 0) {
    RuntimeOptions options;
    options.directory = dir_.path();
    options.registry.open_max = open_max;
    options.registry.idle_timeout = absl::InfiniteDuration();  // No timer: quiet means stuck.
    options.registry.idle_trim_after = absl::InfiniteDuration();
    absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create(std::move(options));
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
  }
  void TearDown() override {
    for (Call& call : calls_) call.then = nullptr;  // They capture the test's locals.
    runtime_.reset();
  }
  Call& NewCall(absl::string_view tenant, absl::string_view sql, Kind kind = Kind::kRead) {
    return calls_.emplace_back(tenant, sql, kind == Kind::kWrite, kind);
  }
  // Runs the loop until `done()`, counting Run calls; fails if the loop goes quiet first.
  bool RunUntil(const std::function<bool()>& done) {
    for (int n = 0; !done(); ++n, ++runs_) {
      if (runtime_->loop().pending() == 0 || n > 1'000'000 ||
          !runtime_->Run(loop::RunMode::kOnce).ok()) {
        ADD_FAILURE() << "the loop went quiet, spun without end or failed";
        return false;
      }
    }
    return true;
  }
  int64_t Count(absl::string_view database) {
    absl::StatusOr<Result> count = runtime_->Query(database, "SELECT count(*) FROM t");
    EXPECT_TRUE(count.ok()) << count.status();
    return count.ok() ? count->rows[0][0].int_value : -1;
  }

  TempDir dir_;
  std::deque<Call> calls_;  // Declared before the runtime: they outlive its shutdown.
  std::unique_ptr<Runtime> runtime_;
  int runs_ = 0;
};

// A read of a missing database resubmitted from each on_done as it fails NotFound: the
// retries take loop turns (a Query between two Run calls returns long before they end),
// nothing creates the file, and a creation after them succeeds.
TEST_F(RuntimeReentryTest, AMissingDatabaseRetriedAtOnceGivesTheLoopBackAndCreatesNothing) {
  ASSERT_NO_FATAL_FAILURE(Make());
  ASSERT_TRUE(runtime_->Exec("other", "CREATE TABLE t(x)").ok());
  Call& ghost = NewCall("ghost", "SELECT 1");
  int failures = 0;
  uint64_t first_tick = 0;
  absl::Status resubmitted;
  ghost.then = [&](Call& c) {
    EXPECT_EQ(c.result.code(), Code::kNotFound) << c.result;
    if (failures++ == 0) first_tick = runtime_->loop().stats().ticks;
    c.Reset();
    if (failures < kRetries) resubmitted = runtime_->Submit(c);
  };
  ASSERT_TRUE(runtime_->Submit(ghost).ok());
  ASSERT_TRUE(RunUntil([&] { return failures >= 10; }));
  EXPECT_GT(runs_, 1) << "ten retries failed inside one Run call";
  EXPECT_EQ(Count("other"), 0);
  EXPECT_LT(failures, kRetries) << "a Query waited for every retry";
  ASSERT_TRUE(RunUntil([&] { return failures == kRetries; }));
  EXPECT_GE(runtime_->loop().stats().ticks - first_tick, uint64_t{kRetries - 1}) << "a tick each";
  EXPECT_TRUE(resubmitted.ok()) << resubmitted;
  EXPECT_EQ(ghost.completions, kRetries);
  EXPECT_FALSE(dir_.Exists("ghost.db")) << "a NotFound created its database";
  EXPECT_EQ(runtime_->registry().stats().creations, 1u);
  ASSERT_TRUE(runtime_->Exec("ghost", "CREATE TABLE t(x)").ok());
  EXPECT_EQ(Count("ghost"), 0);
}

// From on_done, each call that runs the loop (Exec, a batch, Query, Run, Shutdown) is refused
// with nothing run, while Submit works; after the host's Shutdown, Submit and Exec are refused
// and the refused request is never answered.
TEST_F(RuntimeReentryTest, CallsThatRunTheLoopAreRefusedFromCallbacksAndRunNothing) {
  ASSERT_NO_FATAL_FAILURE(Make());
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  Call& read = NewCall("db", "SELECT 1");
  Call& after = NewCall("db", "INSERT INTO t VALUES (2)", Kind::kWrite);
  std::vector<absl::Status> refused;
  absl::Status submitted;
  read.then = [&](Call&) {
    std::array<Statement, 1> one{{{"INSERT INTO t VALUES (1)"}}};
    refused = {runtime_->Exec("db", "INSERT INTO t VALUES (1)").status(),
               runtime_->Exec("db", absl::MakeSpan(one)).status(),
               runtime_->Query("db", "SELECT count(*) FROM t").status(),
               runtime_->Run(loop::RunMode::kNoWait), runtime_->Shutdown()};
    submitted = runtime_->Submit(after);
  };
  ASSERT_TRUE(runtime_->Submit(read).ok());
  ASSERT_TRUE(RunUntil([&] { return after.done; }));
  ASSERT_EQ(refused.size(), 5u);
  for (const absl::Status& s : refused) EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(refused[4].message(), "callback")) << refused[4];
  EXPECT_TRUE(submitted.ok() && after.result.ok()) << submitted << after.result;
  EXPECT_EQ(Count("db"), 1) << "a refused Exec wrote";
  ASSERT_TRUE(runtime_->Shutdown().ok());
  Call& late = NewCall("db", "SELECT 1");
  const absl::Status late_status = runtime_->Submit(late);
  EXPECT_TRUE(absl::StrContains(late_status.message(), "shut down")) << late_status;
  EXPECT_EQ(late_status.code(), Code::kFailedPrecondition);
  EXPECT_EQ(runtime_->Exec("db", "SELECT 1").status().code(), Code::kFailedPrecondition);
  EXPECT_TRUE(runtime_->Shutdown().ok());
  EXPECT_EQ(late.completions, 0) << "a refused request was answered";
}

// One slot; requests queued, never run, when Shutdown starts: each is answered once inside it
// (the open tenant's run; the others fail Unavailable: they did not run), and each one's retry
// and Exec from its on_done are refused.
TEST_F(RuntimeReentryTest, ShutdownWithRequestsQueuedAnswersEachOnceAndRefusesTheirRetries) {
  ASSERT_NO_FATAL_FAILURE(Make(/*open_max=*/1));
  ASSERT_TRUE(runtime_->Exec("b", "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(runtime_->Exec("a", "CREATE TABLE t(x)").ok());  // a open and idle, b asleep.
  std::vector<Call*> queued = {&NewCall("a", "SELECT count(*) FROM t"),
                               &NewCall("a", "INSERT INTO t VALUES (1)", Kind::kWrite),
                               &NewCall("b", "INSERT INTO t VALUES (1)", Kind::kWrite),
                               &NewCall("ghost", "SELECT 1"),
                               &NewCall("c", "CREATE TABLE t(x)", Kind::kWrite)};
  int refused = 0;
  for (Call* call : queued) {
    call->then = [&](Call& c) {
      refused += runtime_->Submit(c).code() == Code::kFailedPrecondition;
      refused += runtime_->Exec("a", "INSERT INTO t VALUES (9)").status().code() ==
                 Code::kFailedPrecondition;
    };
    ASSERT_TRUE(runtime_->Submit(*call).ok());
  }
  ASSERT_TRUE(runtime_->Shutdown().ok());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(queued[i]->completions, 1) << queued[i]->tenant << ": " << queued[i]->sql;
    EXPECT_EQ(queued[i]->result.code(), i < 2 ? Code::kOk : Code::kUnavailable)
        << queued[i]->tenant << ": " << queued[i]->result;
  }
  EXPECT_EQ(refused, 10);
  runtime_.reset();
  ASSERT_NO_FATAL_FAILURE(Make());
  EXPECT_EQ(Count("a"), 1) << "the acknowledged write is not there";
  EXPECT_FALSE(dir_.Exists("c.db")) << "a creation answered Unavailable ran";
}

// Shutdown called again from a callback that the first Shutdown runs must not report the
// shutdown done (OK) while a database is still open.
TEST_F(RuntimeReentryTest, ShutdownFromACallbackInsideShutdownDoesNotReportItDone) {
  ASSERT_NO_FATAL_FAILURE(Make());
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  Call& read = NewCall("db", "SELECT count(*) FROM t");
  absl::Status nested = absl::UnknownError("not called");
  uint32_t open = 0;
  read.then = [&](Call&) {
    nested = runtime_->Shutdown();
    open = runtime_->registry().stats().open;
  };
  ASSERT_TRUE(runtime_->Submit(read).ok());
  ASSERT_TRUE(runtime_->Shutdown().ok());
  ASSERT_EQ(read.completions, 1);
  EXPECT_EQ(open, 1u) << "the scenario: the read's database was still open";
  EXPECT_FALSE(nested.ok()) << "Shutdown from a callback returned OK with " << open
                            << " database(s) still open";
}

// A callback tries to shut down (refused) and submits a write; the host then destroys the
// runtime without Shutdown: the destructor answers the write (durably) and refuses its retry.
TEST_F(RuntimeReentryTest, DestroyingTheRuntimeAfterARefusedShutdownAnswersWhatWasQueued) {
  ASSERT_NO_FATAL_FAILURE(Make());
  ASSERT_TRUE(runtime_->Exec("db", "CREATE TABLE t(x)").ok());
  Runtime* runtime = runtime_.get();  // runtime_ is null while the destructor runs.
  Call& read = NewCall("db", "SELECT 1");
  Call& write = NewCall("db", "INSERT INTO t VALUES (1)", Kind::kWrite);
  absl::Status shutdown, submitted, retried;
  read.then = [&](Call&) {
    shutdown = runtime->Shutdown();
    submitted = runtime->Submit(write);
  };
  write.then = [&](Call& c) { retried = runtime->Submit(c); };
  ASSERT_TRUE(runtime_->Submit(read).ok());
  ASSERT_TRUE(RunUntil([&] { return read.done; }));
  EXPECT_EQ(shutdown.code(), Code::kFailedPrecondition) << shutdown;
  ASSERT_TRUE(submitted.ok()) << submitted;
  ASSERT_FALSE(write.done) << "the scenario: the write is still queued";
  runtime_.reset();
  EXPECT_EQ(write.completions, 1);
  EXPECT_TRUE(write.result.ok()) << write.result;
  EXPECT_EQ(retried.code(), Code::kFailedPrecondition) << retried;
  ASSERT_NO_FATAL_FAILURE(Make());
  EXPECT_EQ(Count("db"), 1);
}

// ---- Shards ---------------------------------------------------------------------------------

struct Latch {  // Counts arrivals from any thread.
  void Arrive() {
    std::lock_guard<std::mutex> lock(mu);
    ++count;
    cv.notify_all();
  }
  bool Wait() {  // False only past the hang guard.
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, absl::ToChronoSeconds(kWaitMax), [&] { return count > 0; });
  }
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
};

// Counts its replies; runs `then` in on_done (where reply_loop says) and `row` in on_row.
struct Req : ShardRequest {
  Req(std::string tenant_name, absl::string_view statement, Kind request_kind) {
    Retarget(std::move(tenant_name));
    sql = statement;
    kind = request_kind;
    on_done = [](ShardRequest& r, absl::Status outcome) {
      auto& self = static_cast<Req&>(r);
      self.status = std::move(outcome);
      self.replies.fetch_add(1);
      if (self.then) self.then(self);
    };
    on_row = [](Request& r, const Row& /*row*/) {
      auto& self = static_cast<Req&>(ShardRequest::Of(r));
      if (self.row) self.row(self);
    };
  }
  void Retarget(std::string tenant_name) {
    name = std::move(tenant_name);
    tenant = name;
  }
  std::string name;
  absl::Status status;
  std::atomic<int> replies{0};
  std::function<void(Req&)> then, row;
};

class ShardsReentryTest : public ::testing::Test {
 protected:
  void Start(uint32_t shards, uint32_t in_flight_max = kShardsInFlightMaxDefault) {
    ShardsOptions options;
    options.shards = shards;
    options.in_flight_max = in_flight_max;
    options.registry.directory = dir_.path();
    options.registry.idle_timeout = absl::InfiniteDuration();
    absl::StatusOr<std::unique_ptr<loop::Loop>> host = loop::Loop::Create({});
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = *std::move(host);
    absl::StatusOr<std::unique_ptr<Shards>> started = Shards::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    shards_ = *std::move(started);
  }
  void TearDown() override {
    if (shards_ != nullptr) shards_->Stop();
    for (Req& r : reqs_) r.then = nullptr;
    if (host_ != nullptr) {
      EXPECT_TRUE(host_->Run(loop::RunMode::kUntilDone).ok());
    }
  }
  Req& NewReq(std::string tenant, absl::string_view sql, Kind kind = Kind::kRead) {
    return reqs_.emplace_back(std::move(tenant), sql, kind);
  }
  // Runs `sql` on `tenant` (created if missing) from this thread; a read keeps its first value.
  absl::Status Do(const std::string& tenant, absl::string_view sql, int64_t* first = nullptr) {
    ShardCall call;
    call.request().tenant = tenant;
    call.request().create_if_missing = true;
    call.request().kind = first == nullptr ? Kind::kWrite : Kind::kRead;
    call.request().sql = sql;
    (void)call.Start(*shards_);
    SQLOOP_CHECK(call.WaitWithTimeout(kWaitMax), "a setup call never completed");
    if (first != nullptr && call.status().ok()) *first = call.rows().at(0).at(0).int_value;
    return call.status();
  }
  // A tenant of `shard`, created with a table t.
  std::string On(absl::string_view prefix, uint32_t shard) {
    for (int i = 0;; ++i) {
      std::string name = absl::StrCat(prefix, i);
      if (shards_->ShardOf(name) != shard) continue;
      EXPECT_TRUE(Do(name, "CREATE TABLE t(x)").ok());
      return name;
    }
  }
  // Runs the host loop (a reply loop) until `done()`; a timer wakes it past the hang guard.
  bool RunHostUntil(const std::function<bool()>& done) {
    using State = loop::Completion::State;
    guard_.callback = [](loop::Loop&, loop::Completion&) { return loop::Action::kDisarm; };
    host_->Timer(guard_, kWaitMax);
    while (!done() && guard_.state() == State::kTimer && host_->Run(loop::RunMode::kOnce).ok()) {
    }
    if (guard_.state() == State::kTimer) host_->Cancel(guard_);
    while (guard_.state() != State::kIdle && host_->Run(loop::RunMode::kOnce).ok()) {
    }
    EXPECT_TRUE(done()) << "the host loop never saw the replies";
    return done();
  }
  // Where on_done runs: the shard's thread, then this thread's loop.
  std::array<loop::Loop*, 2> ReplyLoops() { return {nullptr, host_.get()}; }
  bool Wait(const loop::Loop* reply, Latch& latch) {
    return reply == nullptr ? latch.Wait() : RunHostUntil([&] { return latch.count > 0; });
  }

  TempDir dir_;
  std::unique_ptr<loop::Loop> host_;  // Declared first: it outlives Stop().
  std::deque<Req> reqs_;
  std::unique_ptr<Shards> shards_;
  loop::Completion guard_;
};

// A read of a missing tenant, and a read with a batch (which the tenant's Database refuses as
// it arrives, so Shards answers it from inside its arrival callback), each retried at once
// from on_done on both reply paths; the first failure also submits a read of the open tenant,
// which completes while the retries go on. One reply per Submit, no slot left taken, and the
// registry counted each refusal once.
TEST_F(ShardsReentryTest, FailuresRetriedAtOnceFromOnDoneLeaveTheShardToOthers) {
  ASSERT_NO_FATAL_FAILURE(Start(1));
  const std::string db = On("db", 0);
  std::array<Statement, 1> one{{{"INSERT INTO t VALUES (1)"}}};
  uint64_t submitted = 1, refusals = 0;
  for (loop::Loop* reply : ReplyLoops()) {
    for (const bool batch : {false, true}) {
      Req& bad = NewReq(batch ? db : "ghost", batch ? "" : "SELECT 1");
      Req& side = NewReq(db, "SELECT count(*) FROM t");
      bad.batch = batch ? absl::MakeSpan(one) : absl::Span<Statement>();
      bad.reply_loop = side.reply_loop = reply;
      Latch latch;
      bool side_done = false;  // One thread: the shard's or this one's.
      int failures = 0, wrong = 0;
      side.then = [&](Req& r) { side_done = r.status.ok(); };
      bad.then = [&](Req& r) {
        wrong += r.status.code() != (batch ? Code::kInvalidArgument : Code::kNotFound);
        if (++failures == 1) wrong += !shards_->Submit(side).ok();
        if (side_done || failures == kRetries || !shards_->Submit(r).ok()) latch.Arrive();
      };
      ASSERT_TRUE(shards_->Submit(bad).ok());
      ASSERT_TRUE(Wait(reply, latch));
      EXPECT_EQ(wrong, 0);
      EXPECT_TRUE(side_done) << side.status;
      EXPECT_LT(failures, kRetries) << "the retries kept the shard from another tenant";
      EXPECT_EQ(bad.replies.load(), failures);
      submitted += failures + 1;
      refusals += batch ? failures : 0;
    }
  }
  EXPECT_FALSE(dir_.Exists("ghost.db"));
  EXPECT_EQ(shards_->Stats().at(0).rejected, refusals);
  EXPECT_EQ(shards_->admission_stats().submitted, submitted);
  EXPECT_EQ(shards_->admission_stats().in_flight, 0u);
  int64_t rows = -1;
  EXPECT_TRUE(Do(db, "SELECT count(*) FROM t", &rows).ok());
  EXPECT_EQ(rows, 0) << "a refused batch ran";
}

// in_flight_max 1, two requests of one shard: each on_done submits the other and retries its
// own, refused while the other holds the slot (a request's own slot is free in its on_done).
// On both reply paths admission_stats count exactly what the callers saw, and every admitted
// request is answered once.
TEST_F(ShardsReentryTest, AFullQueueRefusesRetriesFromCallbacksAndCountsExactlyThose) {
  ASSERT_NO_FATAL_FAILURE(Start(1, /*in_flight_max=*/1));
  const std::string db = On("db", 0);
  constexpr int kTurns = 200;
  for (loop::Loop* reply : ReplyLoops()) {
    const ShardsAdmissionStats before = shards_->admission_stats();
    Req* pair[2] = {&NewReq(db, "SELECT count(*) FROM t"), &NewReq(db, "SELECT 1")};
    bool busy[2] = {true, false};  // One thread at a time: a chain of replies.
    int turns = 0, admitted = 1, refused = 0, wrong = 0;
    Latch latch;
    for (int i = 0; i < 2; ++i) {
      pair[i]->reply_loop = reply;
      pair[i]->then = [&, i](Req& r) {
        busy[i] = false;
        wrong += !r.status.ok();
        if (++turns >= kTurns) {
          if (!busy[0] && !busy[1]) latch.Arrive();
          return;
        }
        for (int j : {1 - i, i}) {
          const absl::Status s = busy[j] ? absl::OkStatus() : shards_->Submit(*pair[j]);
          admitted += !busy[j] && s.ok();
          busy[j] = busy[j] || s.ok();
          refused += s.code() == Code::kResourceExhausted;
          wrong += !s.ok() && s.code() != Code::kResourceExhausted;
        }
      };
    }
    ASSERT_TRUE(shards_->Submit(*pair[0]).ok());
    ASSERT_TRUE(Wait(reply, latch));
    const ShardsAdmissionStats after = shards_->admission_stats();
    EXPECT_EQ(wrong, 0);
    EXPECT_GT(refused, 0) << "the scenario: the queue was full";
    EXPECT_EQ(after.submitted - before.submitted, static_cast<uint64_t>(admitted));
    EXPECT_EQ(after.refused_full - before.refused_full, static_cast<uint64_t>(refused));
    EXPECT_EQ(pair[0]->replies.load() + pair[1]->replies.load(), admitted);
    EXPECT_EQ(after.in_flight, 0u);
  }
}

// On a shard's thread (on_done without reply_loop), Stop and Stats would wait for that very
// thread: both stop the process with a message that says so (shards.h: "not from a shard").
TEST_F(ShardsReentryTest, StopAndStatsOnAShardThreadStopTheProcessWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (const bool stop : {true, false}) {
    EXPECT_DEATH(
        {
          Start(1);
          Latch latch;
          Req& r = NewReq("db", "");
          r.create_if_missing = true;
          r.then = [&](Req&) {
            stop ? shards_->Stop() : (void)shards_->Stats();
            latch.Arrive();
          };
          (void)shards_->Submit(r);
          (void)latch.Wait();
          std::_Exit(0);
        },
        stop ? "Shards::Stop from a shard's own thread" : "Shards::Stats from a shard's own");
  }
}

// Two writes hop between the shards from on_done, one on the shard threads, one on the host's
// loop (reading Stats there: both shards, none once stopped); then the first reply of 24 more
// requests stops the shards from its on_done. Stop returns there with nothing in flight, every
// request is answered once with its own outcome, each resubmission after Stop is refused, and
// the rows on disk are exactly the writes acknowledged.
TEST_F(ShardsReentryTest, StopFromADoneCallbackWhileOthersHopBetweenShardsAnswersEachOnce) {
  ASSERT_NO_FATAL_FAILURE(Start(2));
  const std::string names[2] = {On("stop", 0), On("stop", 1)};
  // A chain's replies are ordered: each Submit happens before the next reply.
  int admitted[2] = {0, 0}, ended[2] = {0, 0}, answered = 0, refused = 0, wrong = 0;
  bool stopped = false;
  Latch hopping;
  for (int c = 0; c < 2; ++c) {
    Req& chain = NewReq(names[c], "INSERT INTO t VALUES (1)", Kind::kWrite);
    chain.reply_loop = c == 0 ? nullptr : host_.get();
    chain.then = [&, c](Req& q) {
      if (c == 1) wrong += shards_->Stats().size() != (stopped ? 0u : 2u);
      if (admitted[c] == 50) hopping.Arrive();
      if (!q.status.ok() || admitted[c] == 100 * kRetries) return void(ended[c] = -1);
      q.Retarget(names[(admitted[c] + c) % 2]);
      ++admitted[c];  // Before Submit: the next reply may run at once on another thread.
      if (const absl::Status again = shards_->Submit(q); !again.ok()) {
        --admitted[c];  // Only written when refused: no reply follows.
        ended[c] = again.code() == Code::kFailedPrecondition ? 1 : -1;
      }
    };
    ++admitted[c];
    ASSERT_TRUE(shards_->Submit(chain).ok());
  }
  ASSERT_TRUE(hopping.Wait());
  constexpr int kRequests = 24;
  ShardsAdmissionStats at_stop;
  for (int i = 0; i < kRequests; ++i) {
    Req& r = NewReq(i % 4 == 3 ? absl::StrCat("ghost", i) : names[i % 2],
                    i % 2 == 0 ? "INSERT INTO t VALUES (1)" : "SELECT count(*) FROM t",
                    i % 2 == 0 ? Kind::kWrite : Kind::kRead);
    r.reply_loop = host_.get();
    r.then = [&](Req& q) {
      if (answered++ == 0) {
        shards_->Stop();
        stopped = true;
        at_stop = shards_->admission_stats();
      }
      refused += absl::StrContains(shards_->Submit(q).message(), "Stop() has begun");
    };
    ASSERT_TRUE(shards_->Submit(r).ok());
  }
  ASSERT_TRUE(RunHostUntil([&] { return answered == kRequests && ended[1] != 0; }));
  EXPECT_EQ(wrong, 0) << "Stats from on_done did not report both shards, or none once stopped";
  EXPECT_EQ(at_stop.in_flight, 0u) << "Stop returned with requests unanswered";
  EXPECT_EQ(at_stop.submitted, 2u + admitted[0] + admitted[1] + kRequests);
  EXPECT_EQ(refused, kRequests);
  EXPECT_TRUE(ended[0] == 1 && ended[1] == 1) << "a chain did not end on a refusal";
  ASSERT_TRUE(host_->Run(loop::RunMode::kNoWait).ok());
  int64_t writes = 0;
  for (size_t i = 0; i < reqs_.size(); ++i) {
    const Req& r = reqs_[i];
    EXPECT_EQ(r.replies.load(), i < 2 ? admitted[i] : 1) << r.name;
    const bool ghost = absl::StartsWith(r.name, "ghost");
    EXPECT_EQ(r.status.code(), ghost ? Code::kNotFound : Code::kOk) << r.name << ": " << r.status;
    writes += i < 2 ? admitted[i] : r.kind == Kind::kWrite;
  }
  absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create(dir_.path());
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  for (const std::string& name : names) {
    absl::StatusOr<Result> count = (*runtime)->Query(name, "SELECT count(*) FROM t");
    ASSERT_TRUE(count.ok()) << count.status();
    writes -= count->rows[0][0].int_value;
  }
  EXPECT_EQ(writes, 0) << "the rows on disk are not the writes acknowledged";
}

// One shard parked in a gate's row callback, the queue full behind it: Submit is refused
// ResourceExhausted until another thread's Stop begins, then FailedPrecondition. Each request
// in flight then is answered once with its own outcome, and each retry from on_done is refused.
TEST_F(ShardsReentryTest, StopWithAFullQueueInFlightAnswersEachRequestOnce) {
  constexpr uint32_t kInFlightMax = 8;
  ASSERT_NO_FATAL_FAILURE(Start(1, kInFlightMax));
  const std::string a = On("a", 0), gate_name = On("gate", 0);
  Req& probe = NewReq(a, "SELECT 1");
  probe.then = [](Req&) { ADD_FAILURE() << "a refused probe was answered"; };
  Req& gate = NewReq(gate_name, "SELECT 1");
  gate.reply_loop = host_.get();
  Latch parked, filled;
  absl::Status gate_saw;
  gate.row = [&](Req&) {  // The shard's thread.
    parked.Arrive();
    const absl::Time limit = absl::Now() + kWaitMax;  // A hang guard only.
    while (filled.Wait() && absl::Now() < limit) {
      gate_saw = shards_->Submit(probe);
      if (gate_saw.code() != Code::kResourceExhausted) break;
      std::this_thread::yield();
    }
  };
  ASSERT_TRUE(shards_->Submit(gate).ok());
  ASSERT_TRUE(parked.Wait());
  int answered = 0, refused = 0;
  for (uint32_t i = 0; i + 1 < kInFlightMax; ++i) {
    Req& r = NewReq(i % 3 == 2 ? "ghost" : a, i % 3 == 0 ? "INSERT INTO t VALUES (1)" : "SELECT 1",
                    i % 3 == 0 ? Kind::kWrite : Kind::kRead);
    r.reply_loop = host_.get();
    r.then = [&](Req& q) {
      ++answered;
      refused += shards_->Submit(q).code() == Code::kFailedPrecondition;
    };
    ASSERT_TRUE(shards_->Submit(r).ok());
  }
  EXPECT_EQ(shards_->Submit(probe).code(), Code::kResourceExhausted);
  std::thread stopper([&] { shards_->Stop(); });
  filled.Arrive();
  const bool all = RunHostUntil([&] { return answered == kInFlightMax - 1 && gate.replies == 1; });
  stopper.join();
  ASSERT_TRUE(all);
  EXPECT_EQ(gate_saw.code(), Code::kFailedPrecondition) << gate_saw;
  EXPECT_EQ(refused, static_cast<int>(kInFlightMax) - 1);
  EXPECT_EQ(shards_->admission_stats().submitted, 2u + kInFlightMax);
  EXPECT_EQ(shards_->admission_stats().in_flight, 0u);
  for (size_t i = 1; i < reqs_.size(); ++i) {
    EXPECT_EQ(reqs_[i].replies.load(), 1) << reqs_[i].name;
    const Code want = reqs_[i].name == "ghost" ? Code::kNotFound : Code::kOk;
    EXPECT_EQ(reqs_[i].status.code(), want) << reqs_[i].name << ": " << reqs_[i].status;
  }
}

}  // namespace
}  // namespace sqloop::db::testing
