// Host threads and Shards (db/shard_call.h, db/shards.h): the bounded in-flight queue refuses
// at once with a clear error, the ShardCall handle waits for and owns its answer, and four
// host threads at once, each using both the handle and the callback path (replies posted to
// the thread's own loop), see every request complete exactly once with the right result.
//
// The queue is overfilled deterministically: a "gate" request parks each shard's thread in its
// row callback, so nothing submitted behind it can finish until the test opens the gate. No
// sleeps and no wall-clock assertions; every wait has a generous limit that fails the test
// with a message instead of hanging. Built and run under ThreadSanitizer by tests/run.
#include "sqloop/db/shard_call.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/shards.h"
#include "sqloop/loop/loop.h"
#include "tests/registry_test_util.h"

namespace sqloop::db {
namespace {

using testing::TempDir;

const bool kAccounting = testing::InstallAccounting();

// A hang guard, never a timing assertion: far beyond what any wait here takes, even under
// ThreadSanitizer on a loaded two-core machine.
constexpr absl::Duration kWaitMax = absl::Seconds(120);

// Waits for `call` or ends the test: a call destroyed in flight would wait forever instead.
void WaitOrDie(ShardCall& call, const char* what) {
  SQLOOP_CHECK(call.WaitWithTimeout(kWaitMax), what);
}

// Parks its shard's thread inside on_row until Open(): everything submitted to that shard
// behind it stays in flight. Destroying it opens it and waits for its reply.
struct Gate : ShardRequest {
  explicit Gate(std::string name) : tenant_name(std::move(name)) {
    tenant = tenant_name;
    kind = Request::Kind::kRead;
    sql = "SELECT 1";
    on_row = [](Request& r, const Row& /*row*/) {  // The shard thread.
      auto& gate = static_cast<Gate&>(ShardRequest::Of(r));
      std::unique_lock<std::mutex> lock(gate.mu);
      gate.entered = true;
      gate.cv.notify_all();
      // Bounded, so a test that failed before opening it still ends.
      gate.cv.wait_for(lock, absl::ToChronoSeconds(kWaitMax), [&] { return gate.open; });
    };
    on_done = [](ShardRequest& r, absl::Status /*status*/) {  // The shard thread.
      auto& gate = static_cast<Gate&>(r);
      std::lock_guard<std::mutex> lock(gate.mu);
      gate.replied = true;
      gate.cv.notify_all();
    };
  }
  ~Gate() {
    if (!submitted) return;
    Open();
    std::unique_lock<std::mutex> lock(mu);
    SQLOOP_CHECK(cv.wait_for(lock, absl::ToChronoSeconds(kWaitMax), [&] { return replied; }),
                 "a gate request never replied");
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // Submits the gate and returns once its shard's thread is parked in it.
  void Close(Shards& shards) {
    ASSERT_TRUE(shards.Submit(*this).ok());
    submitted = true;
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoSeconds(kWaitMax), [&] { return entered; }))
        << "the gate never reached its shard's thread";
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }

  std::string tenant_name;
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool open = false;
  bool replied = false;
  bool submitted = false;
};

class ShardCallTest : public ::testing::Test {
 protected:
  void StartShards(uint32_t shards, uint32_t in_flight_max) {
    ShardsOptions options;
    options.shards = shards;
    options.in_flight_max = in_flight_max;
    options.registry.directory = dir_.path();
    options.registry.idle_timeout = absl::Seconds(60);
    options.registry.memory_name_prefix = "shard-call-test/";
    absl::StatusOr<std::unique_ptr<Shards>> started = Shards::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    shards_ = *std::move(started);
  }

  // Runs `sql` as a write on `tenant` (creating it) and waits for the answer.
  absl::Status Write(const std::string& tenant, absl::string_view sql) {
    ShardCall call;
    call.request().tenant = tenant;
    call.request().create_if_missing = true;
    call.request().kind = Request::Kind::kWrite;
    call.request().sql = sql;
    (void)call.Start(*shards_);
    WaitOrDie(call, "a setup write never completed");
    return call.status();
  }

  // A tenant name on `shard`, found by trying names in order (placement is a pure function).
  [[nodiscard]] std::string TenantOnShard(absl::string_view prefix, uint32_t shard) const {
    for (int i = 0;; ++i) {
      std::string name = absl::StrCat(prefix, i);
      if (shards_->ShardOf(name) == shard) return name;
    }
  }

  TempDir dir_;
  std::unique_ptr<Shards> shards_;
};

TEST_F(ShardCallTest, ZeroInFlightMaxIsRefusedAtStart) {
  ShardsOptions options;
  options.shards = 1;
  options.in_flight_max = 0;
  options.registry.directory = dir_.path();
  absl::StatusOr<std::unique_ptr<Shards>> shards = Shards::Start(options);
  ASSERT_FALSE(shards.ok());
  EXPECT_EQ(shards.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(shards.status().message(), "in_flight_max")) << shards.status();
}

TEST_F(ShardCallTest, CallCollectsRowsAndReportsWriteResults) {
  StartShards(2, 64);
  ASSERT_TRUE(Write("acme", "CREATE TABLE kv(k TEXT PRIMARY KEY, v)").ok());
  ShardCall insert;
  insert.request().tenant = "acme";
  insert.request().kind = Request::Kind::kWrite;
  insert.request().sql = "INSERT INTO kv VALUES (?, ?), ('b', 2.5), ('c', x'00ff') RETURNING k";
  insert.request().params = {Value::Text("a"), Value::Int(7)};
  ASSERT_TRUE(insert.Start(*shards_).ok());
  ASSERT_TRUE(insert.Wait().ok()) << insert.status();
  EXPECT_TRUE(insert.Ready());
  EXPECT_EQ(insert.request().changes, 3);
  EXPECT_EQ(insert.rows().size(), 3u);

  ShardCall read;
  read.request().tenant = "acme";
  read.request().sql = "SELECT k, v FROM kv ORDER BY k";
  ASSERT_TRUE(read.Start(*shards_).ok());
  WaitOrDie(read, "the read never completed");
  ASSERT_TRUE(read.status().ok()) << read.status();
  const std::vector<OwnedRow>& rows = read.rows();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0][0].bytes, "a");
  EXPECT_EQ(rows[0][1].int_value, 7);
  EXPECT_EQ(rows[1][1].type, Value::Type::kDouble);
  EXPECT_EQ(rows[1][1].double_value, 2.5);
  EXPECT_EQ(rows[2][1].type, Value::Type::kBlob);
  EXPECT_EQ(rows[2][1].bytes, std::string("\x00\xff", 2));
  EXPECT_EQ(rows[2][1].view().bytes, rows[2][1].bytes);

  // Reused: the earlier rows are gone, the new ones are there.
  read.request().sql = "SELECT count(*) FROM kv";
  ASSERT_TRUE(read.Start(*shards_).ok());
  ASSERT_TRUE(read.Wait().ok());
  ASSERT_EQ(read.rows().size(), 1u);
  EXPECT_EQ(read.rows()[0][0].int_value, 3);
  shards_->Stop();
}

TEST_F(ShardCallTest, TooManyRowsFailWithResourceExhausted) {
  StartShards(1, 64);
  ASSERT_TRUE(Write("acme", "CREATE TABLE t(x)").ok());
  ShardCall read;
  read.set_rows_max(10);
  read.request().tenant = "acme";
  read.request().sql =
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
      "SELECT i FROM n";
  ASSERT_TRUE(read.Start(*shards_).ok());
  const absl::Status status = read.Wait();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "rows_max (10)")) << status;
  EXPECT_EQ(read.rows().size(), 10u);
  shards_->Stop();
}

TEST_F(ShardCallTest, AnOpenMaxBelowTheShardCountIsRefusedAtStart) {
  ShardsOptions options;
  options.shards = 4;
  options.registry.directory = dir_.path();
  options.registry.open_max = 2;
  absl::StatusOr<std::unique_ptr<Shards>> shards = Shards::Start(options);
  ASSERT_FALSE(shards.ok());
  EXPECT_EQ(shards.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(shards.status().message(), "below the shard count"))
      << shards.status();
}

// Two Shards of one process on two directories serve tenants of the same name: the memory
// accounting's names (unique per process) default to each one's directory.
TEST_F(ShardCallTest, TwoShardsOnTwoDirectoriesServeTheSameTenantName) {
  TempDir other_dir;
  std::vector<std::unique_ptr<Shards>> both;
  for (const TempDir* dir : {&dir_, &other_dir}) {
    ShardsOptions options;
    options.shards = 2;
    options.registry.directory = dir->path();
    absl::StatusOr<std::unique_ptr<Shards>> started = Shards::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    both.push_back(*std::move(started));
  }
  for (const std::unique_ptr<Shards>& shards : both) {
    ShardCall call;
    call.request().tenant = "acme";
    call.request().create_if_missing = true;
    call.request().kind = Request::Kind::kWrite;
    call.request().sql = "CREATE TABLE t(x)";
    ASSERT_TRUE(call.Start(*shards).ok());
    WaitOrDie(call, "a creation never completed");
    EXPECT_TRUE(call.status().ok()) << call.status();
  }
  for (const std::unique_ptr<Shards>& shards : both) shards->Stop();
}

// A ShardCall started on a shard's thread (a ShardRequest's on_done without reply_loop) would
// wait for the thread that must answer it: Start refuses it, and Wait returns the refusal.
TEST_F(ShardCallTest, AShardCallOnAShardThreadIsRefusedNotDeadlocked) {
  StartShards(1, 64);
  struct Outer : ShardRequest {
    Shards* shards = nullptr;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    absl::Status started;
    absl::Status waited;
  } outer;
  outer.shards = shards_.get();
  outer.tenant = "acme";
  outer.create_if_missing = true;
  outer.kind = Request::Kind::kWrite;
  outer.sql = "CREATE TABLE t(x)";
  outer.on_done = [](ShardRequest& r, absl::Status /*status*/) {  // The shard thread.
    auto& self = static_cast<Outer&>(r);
    ShardCall inner;
    inner.request().tenant = "acme";
    inner.request().kind = Request::Kind::kRead;
    inner.request().sql = "SELECT 1";
    absl::Status started = inner.Start(*self.shards);
    absl::Status waited = inner.Wait();
    std::lock_guard<std::mutex> lock(self.mu);
    self.started = std::move(started);
    self.waited = std::move(waited);
    self.done = true;
    self.cv.notify_all();
  };
  ASSERT_TRUE(shards_->Submit(outer).ok());
  {
    std::unique_lock<std::mutex> lock(outer.mu);
    SQLOOP_CHECK(
        outer.cv.wait_for(lock, absl::ToChronoNanoseconds(kWaitMax), [&] { return outer.done; }),
        "the ShardCall on the shard thread never returned");
  }
  EXPECT_EQ(outer.started.code(), absl::StatusCode::kFailedPrecondition) << outer.started;
  EXPECT_TRUE(absl::StrContains(outer.started.message(), "shard's thread")) << outer.started;
  EXPECT_EQ(outer.waited, outer.started);
  shards_->Stop();
}

// A host thread cancels its ShardRequest while the shard runs it: the flag is atomic, so this
// is no data race (ThreadSanitizer runs this test), and the statement, which would never end
// on its own, ends Cancelled.
TEST_F(ShardCallTest, AHostThreadCancelsARequestRunningOnItsShard) {
  ShardsOptions options;
  options.shards = 1;
  options.registry.directory = dir_.path();
  options.registry.memory_name_prefix = "shard-call-test/";
  options.registry.database.slice_vm_steps_max = uint64_t{1} << 50;
  options.registry.database.request_vm_steps_max = uint64_t{1} << 50;
  absl::StatusOr<std::unique_ptr<Shards>> started = Shards::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  shards_ = *std::move(started);
  ASSERT_TRUE(Write("acme", "").ok());
  struct Endless : ShardRequest {
    std::mutex mu;
    std::condition_variable cv;
    bool row_seen = false;
    bool done = false;
    absl::Status status;
  } endless;
  endless.tenant = "acme";
  endless.kind = Request::Kind::kRead;
  endless.sql = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c";
  endless.on_row = [](Request& r, const Row& /*row*/) {  // The shard thread.
    auto& self = static_cast<Endless&>(ShardRequest::Of(r));
    std::lock_guard<std::mutex> lock(self.mu);
    if (!self.row_seen) {
      self.row_seen = true;
      self.cv.notify_all();
    }
  };
  endless.on_done = [](ShardRequest& r, absl::Status status) {
    auto& self = static_cast<Endless&>(r);
    std::lock_guard<std::mutex> lock(self.mu);
    self.status = std::move(status);
    self.done = true;
    self.cv.notify_all();
  };
  ASSERT_TRUE(shards_->Submit(endless).ok());
  {
    std::unique_lock<std::mutex> lock(endless.mu);
    SQLOOP_CHECK(endless.cv.wait_for(lock, absl::ToChronoNanoseconds(kWaitMax),
                                     [&] { return endless.row_seen || endless.done; }),
                 "the endless read never produced a row");
    ASSERT_FALSE(endless.done) << "the endless read ended on its own: " << endless.status
                               << " row seen " << endless.row_seen;
  }
  endless.Cancel();  // Unsynchronised with the shard thread, which checks it at every row.
  {
    std::unique_lock<std::mutex> lock(endless.mu);
    SQLOOP_CHECK(endless.cv.wait_for(lock, absl::ToChronoNanoseconds(kWaitMax),
                                     [&] { return endless.done; }),
                 "the cancelled read never ended");
  }
  EXPECT_EQ(endless.status.code(), absl::StatusCode::kCancelled) << endless.status;
  shards_->Stop();
}

// A monitoring thread polling Stats() through Stop(): each call either reports every shard
// or, once Stop() has begun, returns nothing; none reaches a shard that is going away (the
// sanitizers run this test). Submit after Stop() is refused the same way.
TEST_F(ShardCallTest, StatsAndSubmitRacingStopAreServedOrRefused) {
  StartShards(2, 64);
  std::atomic<int> reported{0};
  std::atomic<bool> saw_empty{false};
  std::thread monitor([&] {
    while (true) {
      const std::vector<RegistryStats> stats = shards_->Stats();
      if (stats.empty()) break;
      EXPECT_EQ(stats.size(), 2u);
      reported.fetch_add(1);
    }
    saw_empty = true;
  });
  while (reported.load() < 3) std::this_thread::yield();
  shards_->Stop();
  monitor.join();
  EXPECT_TRUE(saw_empty.load());
  EXPECT_TRUE(shards_->Stats().empty());
  ShardCall late;
  late.request().tenant = "acme";
  late.request().kind = Request::Kind::kRead;
  late.request().sql = "SELECT 1";
  const absl::Status refused = late.Start(*shards_);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "Stop() has begun")) << refused;
}

TEST_F(ShardCallTest, InvalidTenantIsRefusedByStartAndWait) {
  StartShards(1, 64);
  ShardCall call;
  call.request().tenant = "../etc";
  EXPECT_EQ(call.Start(*shards_).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(call.Ready());
  EXPECT_EQ(call.Wait().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shards_->admission_stats().submitted, 0u);
  shards_->Stop();
}

// One shard, in_flight_max 4: the gate and three calls fill the queue; the fifth request is
// refused at once, nothing of it runs, and once the queue drains a request is admitted again.
TEST_F(ShardCallTest, FullQueueIsRefusedAtOnceWithAClearError) {
  constexpr uint32_t kInFlightMax = 4;
  StartShards(1, kInFlightMax);
  ASSERT_TRUE(Write("acme", "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write("gate", "").ok());
  std::vector<ShardCall> calls(kInFlightMax);  // Before the gate: destroyed after it opened.
  ShardCall refused;
  Gate gate("gate");
  gate.Close(*shards_);
  for (uint32_t i = 0; i + 1 < kInFlightMax; ++i) {
    calls[i].request().tenant = "acme";
    calls[i].request().kind = Request::Kind::kWrite;
    calls[i].request().sql = "INSERT INTO t VALUES (1)";
    ASSERT_TRUE(calls[i].Start(*shards_).ok());
  }
  EXPECT_FALSE(calls[0].Ready());
  EXPECT_FALSE(calls[0].WaitWithTimeout(absl::Milliseconds(1)));  // The gate holds it.

  refused.request().tenant = "acme";
  refused.request().kind = Request::Kind::kWrite;
  refused.request().sql = "INSERT INTO t VALUES (2)";
  const absl::Status status = refused.Start(*shards_);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "4 requests are already in flight")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "in_flight_max")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "retry")) << status;
  EXPECT_TRUE(refused.Ready());
  EXPECT_EQ(refused.Wait(), status);
  ShardsAdmissionStats stats = shards_->admission_stats();
  EXPECT_EQ(stats.refused_full, 1u);
  EXPECT_EQ(stats.in_flight, kInFlightMax);
  EXPECT_EQ(stats.in_flight_max, kInFlightMax);

  gate.Open();
  for (uint32_t i = 0; i + 1 < kInFlightMax; ++i) {
    WaitOrDie(calls[i], "a call behind the gate never completed");
    EXPECT_TRUE(calls[i].status().ok()) << calls[i].status();
  }
  // Admitted again now that the queue drained (at most the gate's own slot is still taken).
  calls[kInFlightMax - 1].request().tenant = "acme";
  calls[kInFlightMax - 1].request().sql = "SELECT count(*) FROM t";
  ASSERT_TRUE(calls[kInFlightMax - 1].Start(*shards_).ok());
  ASSERT_TRUE(calls[kInFlightMax - 1].Wait().ok());
  EXPECT_EQ(calls[kInFlightMax - 1].rows()[0][0].int_value, kInFlightMax - 1);  // Not 2's row.
  stats = shards_->admission_stats();
  EXPECT_EQ(stats.refused_full, 1u);
  shards_->Stop();
  EXPECT_EQ(shards_->admission_stats().in_flight, 0u);
}

// ---- Four host threads, both paths ----------------------------------------------------------

constexpr int kHostThreads = 4;
constexpr int kTenants = 6;
constexpr int kRounds = 25;
constexpr int kCallsPerRound = 4;    // Through ShardCall, waited for.
constexpr int kRepliesPerRound = 4;  // Through ShardRequest, answered on the thread's own loop.
constexpr uint32_t kConcurrentInFlightMax = 16;

// What one host thread did to one tenant.
struct Tally {
  int admitted_writes = 0;  // Writes Shards admitted: each must be acknowledged.
  int acked_writes = 0;     // Writes whose reply was OK.
};

// One host thread. Each round it starts kCallsPerRound ShardCalls and submits kRepliesPerRound
// ShardRequests whose replies are posted to its own loop; half of each are writes of
// (thread, seq) rows, half are reads of its own row count, to tenants that vary by round.
// A refused request is counted and skipped; an admitted one must be answered exactly once.
class HostThread {
 public:
  HostThread(Shards& shards, int id, const std::vector<std::string>& tenants)
      : tallies_(tenants.size()), shards_(shards), id_(id), tenants_(tenants) {}

  // `first_round_submitted` runs once round 0 is submitted (the shards are gated until then).
  void Run(const std::function<void()>& first_round_submitted) {
    absl::StatusOr<std::unique_ptr<loop::Loop>> loop = loop::Loop::Create({});
    SQLOOP_CHECK(loop.ok(), "a host thread could not create its loop");
    loop_ = *std::move(loop);
    for (int round = 0; round < kRounds; ++round) {
      SubmitRound(round);
      if (round == 0) first_round_submitted();
      FinishRound();
    }
    // A reply delivered twice would still be pending here.
    EXPECT_TRUE(loop_->Run(loop::RunMode::kNoWait).ok());
    for (const Slot& slot : slots_) EXPECT_EQ(slot.replies, slot.admitted ? 1 : 0);
  }

  std::vector<Tally> tallies_;
  int admitted_ = 0;
  int answered_ = 0;
  int refused_ = 0;
  int refused_first_round_ = 0;
  int failures_ = 0;

 private:
  struct Slot : ShardRequest {
    HostThread* host = nullptr;
    size_t tenant_index = 0;
    int acked_before = 0;
    int64_t seq = 0;
    int64_t count = -1;
    int replies = 0;
    absl::Status status;  // on_done's.
    bool admitted = false;
  };

  [[nodiscard]] size_t TenantOf(int round, int slot) const {
    return static_cast<size_t>(id_ * 5 + round * 3 + slot) % tenants_.size();
  }
  static bool IsWrite(int round, int slot) { return (round + slot) % 2 == 0; }

  // Fills `r` for (round, slot): a write of (thread, seq) or a read of this thread's count.
  void Fill(ShardRequest& r, int round, int slot, absl::string_view write_sql, int64_t& seq,
            int& acked_before, size_t& tenant_index) {
    tenant_index = TenantOf(round, slot);
    r.tenant = tenants_[tenant_index];
    acked_before = tallies_[tenant_index].acked_writes;
    if (IsWrite(round, slot)) {
      seq = next_seq_++;
      r.kind = Request::Kind::kWrite;
      r.sql = write_sql;
      r.params = {Value::Int(id_), Value::Int(seq)};
    } else {
      r.kind = Request::Kind::kRead;
      r.sql = "SELECT count(*) FROM log WHERE thread = ?";
      r.params = {Value::Int(id_)};
    }
  }

  // Counts an admission or a refusal (which must say the queue is full).
  bool Admitted(const absl::Status& status, int round, bool write, size_t tenant_index) {
    if (status.ok()) {
      admitted_++;
      if (write) tallies_[tenant_index].admitted_writes++;
      return true;
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    refused_++;
    if (round == 0) refused_first_round_++;
    return false;
  }

  void SubmitRound(int round) {
    for (int i = 0; i < kCallsPerRound; ++i) {
      CallSlot& c = calls_[i];
      c.call.request().params.clear();
      Fill(c.call.request(), round, i, "INSERT INTO log VALUES (?, ?) RETURNING seq", c.seq,
           c.acked_before, c.tenant_index);
      c.write = IsWrite(round, i);
      c.admitted = Admitted(c.call.Start(shards_), round, c.write, c.tenant_index);
    }
    for (int j = 0; j < kRepliesPerRound; ++j) {
      Slot& s = slots_[j];
      const int pattern = kCallsPerRound + j;
      Fill(s, round, pattern, "INSERT INTO log VALUES (?, ?)", s.seq, s.acked_before,
           s.tenant_index);
      s.host = this;
      s.count = -1;
      s.replies = 0;
      s.reply_loop = loop_.get();
      s.on_row = [](Request& r, const Row& row) {  // The shard thread.
        static_cast<Slot&>(ShardRequest::Of(r)).count = row.Int(0);
      };
      s.on_done = [](ShardRequest& r, absl::Status status) {  // This host thread, from its loop.
        auto& slot = static_cast<Slot&>(r);
        slot.status = std::move(status);
        slot.replies++;
        slot.host->outstanding_--;
      };
      s.admitted = Admitted(shards_.Submit(s), round, IsWrite(round, pattern), s.tenant_index);
      if (s.admitted) outstanding_++;
    }
  }

  // Checks a write's or a read's answer against what this thread knows.
  void Check(const absl::Status& status, bool write, size_t tenant_index, int acked_before,
             int64_t changes, int64_t count) {
    answered_++;
    Tally& tally = tallies_[tenant_index];
    if (!status.ok()) {
      failures_++;
      ADD_FAILURE() << "thread " << id_ << ": " << status;
      return;
    }
    if (write) {
      EXPECT_EQ(changes, 1);
      tally.acked_writes++;
      return;
    }
    // The read saw every write acknowledged before it started, and at most those admitted.
    EXPECT_GE(count, acked_before) << tenants_[tenant_index];
    EXPECT_LE(count, tally.admitted_writes) << tenants_[tenant_index];
  }

  void FinishRound() {
    for (CallSlot& c : calls_) {
      if (!c.admitted) continue;
      WaitOrDie(c.call, "a ShardCall of a host thread never completed");
      const std::vector<OwnedRow>& rows = c.call.rows();
      int64_t value = -1;
      if (rows.size() == 1 && rows[0].size() == 1) value = rows[0][0].int_value;
      EXPECT_EQ(rows.size(), 1u);
      if (c.write && c.call.status().ok()) {
        EXPECT_EQ(value, c.seq);  // RETURNING seq.
      }
      Check(c.call.status(), c.write, c.tenant_index, c.acked_before, c.call.request().changes,
            value);
    }
    RunLoopUntilReplied();
    for (Slot& s : slots_) {
      if (!s.admitted) continue;
      EXPECT_EQ(s.replies, 1);
      Check(s.status, s.kind == Request::Kind::kWrite, s.tenant_index, s.acked_before, s.changes,
            s.count);
    }
  }

  // Runs this thread's loop until every admitted callback request replied, with a watchdog
  // timer so that a lost reply ends the test with a message instead of hanging it.
  void RunLoopUntilReplied() {
    loop::Completion watchdog;
    bool expired = false;
    watchdog.user_data = &expired;
    watchdog.callback = [](loop::Loop&, loop::Completion& c) {
      *static_cast<bool*>(c.user_data) = c.result() == 0;
      return loop::Action::kDisarm;
    };
    loop_->Timer(watchdog, kWaitMax);
    while (outstanding_ > 0 && !expired) {
      SQLOOP_CHECK(loop_->Run(loop::RunMode::kOnce).ok(), "a host thread's loop failed");
    }
    SQLOOP_CHECK(!expired, "a callback request's reply never reached its host thread's loop");
    loop_->Cancel(watchdog);
    SQLOOP_CHECK(loop_->Run(loop::RunMode::kUntilDone).ok(), "a host thread's loop failed");
  }

  struct CallSlot {
    ShardCall call;
    size_t tenant_index = 0;
    int acked_before = 0;
    int64_t seq = 0;
    bool write = false;
    bool admitted = false;
  };

  Shards& shards_;
  const int id_;
  const std::vector<std::string>& tenants_;
  std::unique_ptr<loop::Loop> loop_;
  CallSlot calls_[kCallsPerRound];
  Slot slots_[kRepliesPerRound];
  int outstanding_ = 0;
  int64_t next_seq_ = 0;
};

TEST_F(ShardCallTest, FourHostThreadsBothPathsEveryRequestOnceAndRight) {
  StartShards(2, kConcurrentInFlightMax);
  std::vector<std::string> tenants;
  for (int i = 0; i < kTenants; ++i) {
    tenants.push_back(absl::StrCat("host-tenant-", i));
    ASSERT_TRUE(Write(tenants.back(), "CREATE TABLE log(thread INTEGER, seq INTEGER)").ok());
  }
  // Park both shards, so that round 0 of the four threads (32 requests) overfills the queue:
  // the gates hold 2 of the 16 slots, so exactly 14 requests are admitted and 18 refused.
  std::vector<std::unique_ptr<Gate>> gates;
  for (uint32_t shard = 0; shard < 2; ++shard) {
    gates.push_back(std::make_unique<Gate>(TenantOnShard("gate-", shard)));
    ASSERT_TRUE(Write(gates.back()->tenant_name, "").ok());
    gates.back()->Close(*shards_);
  }
  const uint64_t submitted_before = shards_->admission_stats().submitted;

  std::mutex mu;
  std::condition_variable cv;
  int first_rounds = 0;
  auto first_round_submitted = [&] {
    std::lock_guard<std::mutex> lock(mu);
    first_rounds++;
    cv.notify_all();
  };
  std::vector<std::unique_ptr<HostThread>> hosts;
  std::vector<std::thread> threads;
  for (int id = 0; id < kHostThreads; ++id) {
    hosts.push_back(std::make_unique<HostThread>(*shards_, id, tenants));
    threads.emplace_back([&, host = hosts.back().get()] { host->Run(first_round_submitted); });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, absl::ToChronoSeconds(kWaitMax), [&] {
      return first_rounds == kHostThreads;
    })) << "the host threads never finished submitting their first round";
  }
  const ShardsAdmissionStats full = shards_->admission_stats();
  EXPECT_EQ(full.in_flight, kConcurrentInFlightMax);
  for (auto& gate : gates) gate->Open();
  for (std::thread& t : threads) t.join();
  gates.clear();  // Waits for the gates' own replies.

  int admitted = 0;
  int refused = 0;
  int refused_first_round = 0;
  for (const auto& host : hosts) {
    EXPECT_EQ(host->failures_, 0);
    EXPECT_EQ(host->answered_, host->admitted_) << "a request was not answered exactly once";
    admitted += host->admitted_;
    refused += host->refused_;
    refused_first_round += host->refused_first_round_;
  }
  // The scenario happened: the full queue refused exactly what did not fit.
  EXPECT_EQ(refused_first_round,
            kHostThreads * (kCallsPerRound + kRepliesPerRound) - (kConcurrentInFlightMax - 2));
  const ShardsAdmissionStats stats = shards_->admission_stats();
  EXPECT_EQ(stats.refused_full, static_cast<uint64_t>(refused));
  EXPECT_EQ(stats.submitted - submitted_before, static_cast<uint64_t>(admitted));
  EXPECT_EQ(stats.in_flight, 0u);
  // Every attempt was either admitted or refused, nothing in between.
  EXPECT_EQ(admitted + refused, kHostThreads * kRounds * (kCallsPerRound + kRepliesPerRound));

  // Every acknowledged write is there, once: per tenant, per thread.
  for (size_t t = 0; t < tenants.size(); ++t) {
    ShardCall read;
    read.request().tenant = tenants[t];
    read.request().sql = "SELECT thread, count(*), count(DISTINCT seq) FROM log GROUP BY thread";
    ASSERT_TRUE(read.Start(*shards_).ok());
    ASSERT_TRUE(read.Wait().ok()) << read.status();
    std::vector<int64_t> per_thread(kHostThreads, 0);
    for (const OwnedRow& row : read.rows()) {
      EXPECT_EQ(row[1].int_value, row[2].int_value) << "a write landed twice";
      per_thread[static_cast<size_t>(row[0].int_value)] = row[1].int_value;
    }
    for (int id = 0; id < kHostThreads; ++id) {
      EXPECT_EQ(hosts[id]->tallies_[t].acked_writes, hosts[id]->tallies_[t].admitted_writes);
      EXPECT_EQ(per_thread[id], hosts[id]->tallies_[t].acked_writes) << tenants[t] << " " << id;
    }
  }
  shards_->Stop();
}

}  // namespace
}  // namespace sqloop::db
