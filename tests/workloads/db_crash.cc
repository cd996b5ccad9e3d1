// The "db_crash" workload: SQLite through sqloop on the simulator, crashed at a seeded moment,
// recovered by a new process, and checked against everything that was acknowledged.
//
// Run phase (one process): open /data/tenant.db, create the table, then rounds of concurrent
// write requests. Each request is one transaction of 1..4 rows tagged with the transaction's id:
// a single INSERT of them all, or (about one in four, drawn from a generator of its own so the
// seed's other draws do not move) a batch (db::Request::batch) of one single-row INSERT each.
// About one in eight deliberately reuses the key of an acknowledged row, so it must fail and
// leave nothing: a batch reuses it in its last statement, after the others have written, so a
// batch that is not all or nothing leaves a torn transaction for the checker to find. A crash timer
// fires at a uniform time in the crash window: the simulator drops the process (every pending op
// fails, the disk keeps, drops or tears each unsynced write) and the database is closed.
//
//   kOpening --open ok--> kCreating --ack--> kRound --all of the round done--> kRound | kClosing
//   any failure to open or create ------------------------------------------------> kClosing
//   crash timer, in any state -----------------------------------------------------> kCrashed
//
// Recovery phase (a new process on the same disk, no faults): open (WAL recovery runs), read
// every row, run PRAGMA integrity_check; then the liveness phase: with no faults, the database
// must make progress, so rounds of new writes (to a table of their own) must every one be
// acknowledged, and read back, within kLivenessBudgetNs of virtual time; then close. A
// liveness failure names the requests still stuck and their states. The checker requires:
//   1. integrity_check is "ok";
//   2. every acknowledged transaction is present with exactly its rows and values;
//   3. every present transaction was submitted, was not reported as failed (a failure other
//      than "outcome unknown" means nothing of it was committed), and has all of its rows:
//      transactions are all or nothing, and nothing that was never written appears.
// During the run, every acknowledgement is also checked against the VFS's durable epoch: an
// acknowledged write whose epoch is not durable yet is a violation on its own.
//
// Every phase runs under a watchdog in virtual time (RunPhase): a phase that does not end is a
// failure naming the phase and what is stuck, never a hang.
//
// Swarm over configuration (WorkloadOptions::swarm_config): each seed also draws the
// DatabaseOptions and VfsOptions (DrawConfig) from a generator of its own, so checkpoints,
// write-behind backpressure, multi-group rounds, small statement caches and yielding reads run
// in a good share of seeds. WorkloadResult::paths counts how often each rare path ran.
//
// The negative control (WorkloadOptions::ack_before_fsync) makes the Database acknowledge at
// COMMIT, before the covering fsync; with crash_drops_all the checker must then fail on exactly
// the seeds where an acknowledged transaction was not durable at the crash (loss_possible).
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "sqloop/db/database.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/prng.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/io/sim_trace.h"
#include "sqloop/loop/loop.h"
#include "tests/sim_workload.h"
#include "tests/workloads/db_crash_recovery.h"
#include "tests/workloads/db_crash_support.h"

namespace sqloop::testing {
namespace {

using db_crash::CloseRecovered;
using db_crash::Config;
using db_crash::DrawConfig;
using db_crash::FaultPlan;
using db_crash::kDatabasePath;
using db_crash::kLivenessBudgetNs;
using db_crash::kTeardownBudgetNs;
using db_crash::LivenessStuck;
using db_crash::MemoryTenant;
using db_crash::Recovered;
using db_crash::StateName;
using loop::Action;
using loop::Completion;
using loop::Loop;

constexpr char kDirectory[] = "/data";
constexpr char kCreateSql[] = "CREATE TABLE t(k INTEGER PRIMARY KEY, txn INTEGER NOT NULL, v TEXT)";
// Rounds per run and requests per round: a few hundred transactions, enough for group commits
// of many sizes, while 500 seeds stay within seconds in a debug build.
constexpr uint32_t kRoundsMax = 16;
constexpr uint32_t kRequestsPerRoundMax = 12;
constexpr uint32_t kRowsPerTransactionMax = 4;
// Values span several WAL frames' worth of cells now and then, up to 600 bytes.
constexpr uint32_t kValueBytesMax = 600;
// One request in this many reuses an acknowledged key and must fail.
constexpr uint32_t kConflictOneIn = 8;
// One transaction in this many is a batch of single-row statements.
constexpr uint32_t kBatchOneIn = 4;
// One round in this many starts with the writer closed, as a host's trim of an idle tenant
// closes it.
constexpr uint32_t kTrimOneIn = 4;
constexpr char kOneRowSql[] = "INSERT INTO t(k, txn, v) VALUES (?,?,?)";
// The crash comes at a uniform time in [0, 40 ms] of simulated time: a run with the default
// latencies takes about that long, so crashes land before, during and after the work.
constexpr int64_t kCrashWindowNs = 40'000'000;
constexpr uint64_t kTraceAck = 0xdbac;
// Watchdogs in virtual time. A run phase ends by its crash (within kCrashWindowNs) and then
// closes; a recovery and liveness phase takes a few tens of milliseconds without faults. Two
// seconds is far past both (and a loop spinning 1 µs ticks reaches it in a few real seconds):
// only a stuck phase reaches it.
constexpr int64_t kRunBudgetNs = 2'000'000'000;

struct Transaction {
  enum class Outcome : uint8_t { kNotSubmitted, kPending, kAcked, kFailed, kUnknown };
  class Run* run = nullptr;
  uint64_t id = 0;
  bool conflict = false;
  std::vector<int64_t> keys;
  std::vector<std::string> values;
  std::string sql;
  std::vector<db::Statement> batch;  // Empty unless the transaction is a batch.
  db::Request request;
  Outcome outcome = Outcome::kNotSubmitted;
  std::string failure;
};

class Run {
 public:
  Run(io::SimBackend& sim, Loop& loop, db::Vfs& vfs, const db::DatabaseOptions& options,
      uint64_t seed)
      : batch_prng_(seed ^ 0xba7c4),
        trim_prng_(seed ^ 0x7419),
        sim_(sim),
        loop_(loop),
        vfs_(vfs),
        database_(loop, vfs, kDatabasePath, options),
        ack_before_fsync_(options.ack_before_fsync_for_testing) {
    crash_timer_.user_data = this;
    crash_timer_.callback = &Run::OnCrash;
  }

  void Start() {
    const auto crash_ns = static_cast<int64_t>(sim_.prng().Below(kCrashWindowNs + 1));
    loop_.Timer(crash_timer_, absl::Nanoseconds(crash_ns));
    state_ = State::kOpening;
    database_.Open(&Run::OnOpened, this);
  }

  [[nodiscard]] const std::deque<Transaction>& transactions() const { return transactions_; }
  [[nodiscard]] bool loss_possible() const { return loss_possible_; }
  [[nodiscard]] const std::string& violation() const { return violation_; }
  [[nodiscard]] uint32_t rounds() const { return rounds_; }
  [[nodiscard]] bool crashed() const { return state_ == State::kCrashed; }
  [[nodiscard]] bool table_acked() const { return table_acked_; }
  [[nodiscard]] const db::Database& database() const { return database_; }
  [[nodiscard]] uint32_t refused() const { return refused_; }
  [[nodiscard]] uint32_t batches() const { return batches_; }
  [[nodiscard]] uint32_t batch_conflicts() const { return batch_conflicts_; }
  // Rounds that started with the writer closed (Database::CloseWriterIfIdle).
  [[nodiscard]] uint32_t writer_closes() const { return writer_closes_; }
  // The out-of-memory fault: its tenant, and the transactions acknowledged after it struck
  // (the database stayed usable).
  void set_memory(const MemoryTenant* memory) { memory_ = memory; }
  [[nodiscard]] uint32_t acked_after_oom() const { return acked_after_oom_; }
  // Databases poisoned by an injected fsync failure (not by the crash).
  [[nodiscard]] uint64_t injected_poisonings() const {
    return state_ == State::kCrashed ? poisonings_before_crash_ : vfs_.stats().poisonings;
  }
  // For a watchdog's verdict: where the run is, and its requests that are not done.
  [[nodiscard]] std::string Stuck() const {
    std::string text = absl::StrCat("run state ", static_cast<int>(state_), ", database ",
                                    StateName(database_.state()));
    for (const Transaction& txn : transactions_) {
      if (txn.outcome == Transaction::Outcome::kPending) {
        absl::StrAppend(&text, "; transaction ", txn.id, " ", StateName(txn.request.state()));
      }
    }
    return text;
  }
  // Ends a run whose watchdog fired: the process dies (every op in flight fails), and the
  // database closes.
  void Kill() {
    if (state_ != State::kCrashed) {
      state_ = State::kCrashed;
      sim_.Crash();
    }
    if (crash_timer_.state() == Completion::State::kTimer) loop_.Cancel(crash_timer_);
    CloseDatabase();
  }

 private:
  enum class State : uint8_t { kOpening, kCreating, kRound, kClosing, kCrashed };

  static void OnOpened(void* arg, absl::Status status) {
    auto* run = static_cast<Run*>(arg);
    if (!status.ok() || run->state_ == State::kCrashed) return run->Close();
    run->state_ = State::kCreating;
    run->create_.kind = db::Request::Kind::kWrite;
    run->create_.sql = kCreateSql;
    run->create_.user_data = run;
    run->create_.on_done = &Run::OnCreated;
    if (!run->database_.Submit(run->create_).ok()) run->Close();
  }

  static void OnCreated(db::Request& request, absl::Status status) {
    auto* run = static_cast<Run*>(request.user_data);
    if (status.ok()) {
      run->table_acked_ = true;
      run->CheckDurable(request);
    }
    if (!status.ok() || run->state_ == State::kCrashed) return run->Close();
    run->StartRound();
  }

  // A host's trim between rounds, one round in kTrimOneIn: on the next tick (the round ended
  // inside the database's pump, which has not finished its group yet), the writer closes; the
  // round's first write opens it again, and a close (or the crash) may find it closed.
  void StartRound() {
    if (trim_prng_.Below(kTrimOneIn) != 0) return StartRoundNow();
    trim_tick_.callback = [](Loop& /*loop*/, loop::Completion& c) {
      auto* run = static_cast<Run*>(c.user_data);
      if (run->state_ == State::kCrashed) return loop::Action::kDisarm;
      if (run->database_.CloseWriterIfIdle()) ++run->writer_closes_;
      run->StartRoundNow();
      return loop::Action::kDisarm;
    };
    trim_tick_.user_data = this;
    loop_.NextTick(trim_tick_);
  }

  void StartRoundNow() {
    if (rounds_ == kRoundsMax) return Close();
    ++rounds_;
    state_ = State::kRound;
    const auto count = static_cast<uint32_t>(sim_.prng().Range(1, kRequestsPerRoundMax));
    in_round_ = 0;
    for (uint32_t i = 0; i < count; ++i) Submit(NewTransaction());
    if (in_round_ == 0) Close();  // Nothing was accepted: the database refuses work.
  }

  Transaction& NewTransaction() {
    Transaction& txn = transactions_.emplace_back();
    txn.run = this;
    txn.id = transactions_.size();
    txn.conflict = !acked_keys_.empty() && sim_.prng().Below(kConflictOneIn) == 0;
    const auto rows = static_cast<uint32_t>(sim_.prng().Range(1, kRowsPerTransactionMax));
    const bool batch = batch_prng_.Below(kBatchOneIn) == 0;
    const uint32_t conflict_row = batch ? rows - 1 : 0;
    txn.sql = "INSERT INTO t(k, txn, v) VALUES ";
    for (uint32_t row = 0; row < rows; ++row) {
      const int64_t key = txn.conflict && row == conflict_row
                              ? acked_keys_[sim_.prng().Below(acked_keys_.size())]
                              : next_key_++;
      std::string value(sim_.prng().Range(1, kValueBytesMax), '\0');
      for (char& byte : value) byte = static_cast<char>('a' + sim_.prng().Below(26));
      txn.keys.push_back(key);
      txn.values.push_back(std::move(value));
      absl::StrAppend(&txn.sql, row == 0 ? "" : ",", "(?,?,?)");
    }
    db::Request& request = txn.request;
    request.kind = db::Request::Kind::kWrite;
    for (size_t row = 0; row < txn.keys.size(); ++row) {
      auto& params = batch ? txn.batch.emplace_back(kOneRowSql).params : request.params;
      params.push_back(db::Value::Int(txn.keys[row]));
      params.push_back(db::Value::Int(static_cast<int64_t>(txn.id)));
      params.push_back(db::Value::Text(txn.values[row]));
    }
    if (batch) {
      request.batch = absl::MakeSpan(txn.batch);
      ++batches_;
      // The failing statement comes after others that wrote: all must be rolled back.
      if (txn.conflict && rows > 1) ++batch_conflicts_;
    } else {
      request.sql = txn.sql;
    }
    request.user_data = &txn;
    request.on_done = &Run::OnWritten;
    return txn;
  }

  void Submit(Transaction& txn) {
    if (!database_.Submit(txn.request).ok()) {
      ++refused_;
      return;  // Refused: never submitted, on_done won't run.
    }
    txn.outcome = Transaction::Outcome::kPending;
    ++in_round_;
  }

  static void OnWritten(db::Request& request, absl::Status status) {
    auto& txn = *static_cast<Transaction*>(request.user_data);
    Run& run = *txn.run;
    if (status.ok()) {
      txn.outcome = Transaction::Outcome::kAcked;
      if (run.memory_ != nullptr && run.memory_->injected() > 0) ++run.acked_after_oom_;
      run.CheckDurable(request);
      // A database closing after the crash may still deliver a write: one whose fsync finished
      // before the crash (in the crash's tick, its callback not yet run), or that waited only
      // for a reader to show it (invariant 3's exception for a closing database). CheckDurable
      // above holds it to the durable epoch, and the checker requires it after recovery.
      if (run.state_ != State::kCrashed) {
        for (int64_t key : txn.keys) run.acked_keys_.push_back(key);
      }
      run.sim_.Trace(kTraceAck);
      run.sim_.Trace(txn.id);
    } else {
      txn.outcome =
          absl::IsUnknown(status) ? Transaction::Outcome::kUnknown : Transaction::Outcome::kFailed;
      txn.failure = std::string(status.message());
    }
    if (run.state_ == State::kRound && --run.in_round_ == 0) run.StartRound();
  }

  // The durable-acknowledgement invariant, checked at the moment of the acknowledgement.
  void CheckDurable(const db::Request& request) {
    const bool durable = database_.holds_files() && database_.durable_epoch() >= request.epoch;
    if (!durable && !ack_before_fsync_ && violation_.empty()) {
      violation_ = absl::StrCat("a write was acknowledged in epoch ", request.epoch,
                                " before that epoch was durable");
    }
  }

  static Action OnCrash(Loop& /*loop*/, Completion& c) {
    auto* run = static_cast<Run*>(c.user_data);
    // Oracle: an acknowledged write whose epoch is not durable can only survive by luck.
    // A closed database (no files) waited for everything to be durable: nothing is at risk.
    const db::Database& database = run->database_;
    const bool holds_files = database.holds_files();
    if (holds_files && run->table_acked_ && run->create_.epoch > database.durable_epoch()) {
      run->loss_possible_ = true;  // The acknowledged CREATE TABLE itself.
    }
    for (const Transaction& txn : run->transactions_) {
      if (holds_files && txn.outcome == Transaction::Outcome::kAcked &&
          txn.request.epoch > database.durable_epoch()) {
        run->loss_possible_ = true;
      }
    }
    run->state_ = State::kCrashed;
    // The crash fails every fsync in flight: count only the failures injected before it.
    run->poisonings_before_crash_ = run->vfs_.stats().poisonings;
    run->sim_.Crash();
    run->CloseDatabase();  // An opening database fails by itself; OnOpened closes it then.
    return Action::kDisarm;
  }

  // The run is over (finished, failed or crashed): close the database once it can be closed.
  void Close() {
    if (state_ != State::kCrashed) state_ = State::kClosing;
    CloseDatabase();
  }

  void CloseDatabase() {
    const db::Database::State state = database_.state();
    const bool closable = state == db::Database::State::kReady ||
                          state == db::Database::State::kPoisoned ||
                          state == db::Database::State::kFailed;
    if (close_requested_ || !closable) return;
    close_requested_ = true;
    database_.Close(&Run::OnClosed, this);
  }

  static void OnClosed(void* /*arg*/, absl::Status /*status*/) {}

  io::Prng batch_prng_;
  io::Prng trim_prng_;  // Its own generator too: the seed's other draws do not move.
  io::SimBackend& sim_;
  Loop& loop_;
  db::Vfs& vfs_;
  db::Database database_;
  const bool ack_before_fsync_;
  State state_ = State::kOpening;
  Completion crash_timer_;
  db::Request create_;
  bool close_requested_ = false;
  bool table_acked_ = false;
  std::deque<Transaction> transactions_;  // A deque: requests never move once submitted.
  std::vector<int64_t> acked_keys_;
  int64_t next_key_ = 1;
  uint32_t rounds_ = 0;
  uint32_t in_round_ = 0;
  uint32_t refused_ = 0;
  uint32_t batches_ = 0;
  uint32_t batch_conflicts_ = 0;
  uint32_t writer_closes_ = 0;
  loop::Completion trim_tick_;
  const MemoryTenant* memory_ = nullptr;
  uint32_t acked_after_oom_ = 0;
  uint64_t poisonings_before_crash_ = 0;
  bool loss_possible_ = false;
  std::string violation_;
};

// A database whose synced bytes were corrupted (FaultPlan::corrupt) may be refused, at open or
// by a read, with DataLoss, or reported by integrity_check; nothing else. Every row a read
// delivered before the refusal must still be right: corruption is never served as good data.
// Returns the violation, "" for a proper refusal, or nullopt if nothing noticed the corruption
// (then the whole checker runs: an unnoticed flip must have changed no answer).
std::optional<std::string> CheckCorruptionRefused(const Run& run, const Recovered& recovered) {
  if (absl::IsDataLoss(recovered.open)) return "";
  const bool refused =
      absl::IsDataLoss(recovered.read) || (recovered.read.ok() && recovered.integrity != "ok");
  if (!refused) return std::nullopt;
  for (const auto& [key, row] : recovered.rows) {
    const auto txn_id = static_cast<uint64_t>(row.first);
    const bool known = txn_id >= 1 && txn_id <= run.transactions().size();
    const Transaction* txn = known ? &run.transactions()[txn_id - 1] : nullptr;
    bool right = txn != nullptr && (txn->outcome == Transaction::Outcome::kAcked ||
                                    txn->outcome == Transaction::Outcome::kUnknown);
    bool found = false;
    for (size_t i = 0; right && i < txn->keys.size(); ++i) {
      if (txn->keys[i] != key) continue;
      found = true;
      right = txn->values[i] == row.second;
    }
    if (!right || !found)
      return absl::StrCat("a corrupted database served a wrong row (key ", key, ")");
  }
  return "";
}

// How a recovered value differs from the one acknowledged: enough to tell a torn write from a
// flipped byte from a stale row.
std::string Difference(const std::string& expected, int64_t got_txn, const std::string& got) {
  size_t at = 0;
  while (at < expected.size() && at < got.size() && expected[at] == got[at]) ++at;
  std::string text = absl::StrCat("expected ", expected.size(), " bytes, got ", got.size(),
                                  " bytes of transaction ", got_txn);
  if (at < expected.size() && at < got.size()) {
    absl::StrAppend(&text, absl::StrFormat(", first difference at byte %d: 0x%02x became 0x%02x",
                                           at, static_cast<unsigned char>(expected[at]),
                                           static_cast<unsigned char>(got[at])));
  }
  return text;
}

// The checker (see the file comment). Returns the first violation, or "".
std::string Check(const Run& run, const Recovered& recovered, bool corrupted) {
  if (corrupted) {
    if (std::optional<std::string> refused = CheckCorruptionRefused(run, recovered)) {
      return *refused;
    }
  }
  if (!recovered.open.ok())
    return absl::StrCat("recovery could not open: ", recovered.open.message());
  const bool no_table =
      !recovered.read.ok() && absl::StrContains(recovered.read.message(), "no such table");
  if (no_table && run.table_acked()) return "the acknowledged CREATE TABLE is lost";
  if (!recovered.read.ok() && !no_table) {
    return absl::StrCat("recovery could not read: ", recovered.read.message());
  }
  if (!no_table && recovered.integrity != "ok") {
    return absl::StrCat("integrity_check: ", recovered.integrity);
  }
  if (!recovered.liveness.empty()) return absl::StrCat("liveness: ", recovered.liveness);
  if (recovered.live_finished_ns == 0) {
    return absl::StrCat("liveness: the fault-free phase did not finish: ",
                        LivenessStuck(recovered));
  }
  if (recovered.live_finished_ns - recovered.live_started_ns > kLivenessBudgetNs) {
    return absl::StrCat("liveness: the fault-free phase took ",
                        (recovered.live_finished_ns - recovered.live_started_ns) / 1'000'000,
                        " ms of virtual time, more than ", kLivenessBudgetNs / 1'000'000);
  }
  std::map<int64_t, int64_t> rows_per_txn;
  for (const auto& [key, row] : recovered.rows) rows_per_txn[row.first]++;
  for (const Transaction& txn : run.transactions()) {
    const bool acked = txn.outcome == Transaction::Outcome::kAcked;
    const bool may_exist = acked || txn.outcome == Transaction::Outcome::kUnknown;
    const int64_t present = rows_per_txn.count(static_cast<int64_t>(txn.id))
                                ? rows_per_txn[static_cast<int64_t>(txn.id)]
                                : 0;
    if (acked && present == 0) return absl::StrCat("acknowledged transaction ", txn.id, " is lost");
    if (!may_exist && present > 0) {
      return absl::StrCat("transaction ", txn.id, " is present but was ",
                          txn.outcome == Transaction::Outcome::kFailed
                              ? absl::StrCat("reported failed (", txn.failure, ")")
                              : std::string("never submitted"));
    }
    if (present != 0 && present != static_cast<int64_t>(txn.keys.size())) {
      return absl::StrCat("transaction ", txn.id, " is torn: ", present, " of ", txn.keys.size(),
                          " rows");
    }
    for (size_t i = 0; present != 0 && i < txn.keys.size(); ++i) {
      auto it = recovered.rows.find(txn.keys[i]);
      if (it == recovered.rows.end() || it->second.first != static_cast<int64_t>(txn.id) ||
          it->second.second != txn.values[i]) {
        return absl::StrCat("transaction ", txn.id, " came back with other contents: key ",
                            txn.keys[i], ": ",
                            it == recovered.rows.end()
                                ? std::string("missing")
                                : Difference(txn.values[i], it->second.first, it->second.second));
      }
    }
    rows_per_txn.erase(static_cast<int64_t>(txn.id));
  }
  if (!rows_per_txn.empty()) {
    return absl::StrCat("rows of transaction ", rows_per_txn.begin()->first,
                        " were never written by this run");
  }
  return "";
}

std::string Summarize(const Run& run, const Recovered& recovered, const std::string& faults) {
  int acked = 0;
  int failed = 0;
  int unknown = 0;
  for (const Transaction& txn : run.transactions()) {
    acked += txn.outcome == Transaction::Outcome::kAcked;
    failed += txn.outcome == Transaction::Outcome::kFailed;
    unknown += txn.outcome == Transaction::Outcome::kUnknown;
  }
  return absl::StrCat(run.transactions().size(), " transactions in ", run.rounds(),
                      " rounds: acked ", acked, ", failed ", failed, ", outcome unknown ", unknown,
                      run.crashed() ? "; crashed" : "; finished before the crash", "; recovered ",
                      recovered.rows.size(), " rows; faults: ", faults);
}

// The rare paths this run took, from the databases' and the VFS's own counters.
std::map<std::string, uint64_t> RarePaths(const Run& run, const db::VfsStats& vfs,
                                          const io::SimStats& sim, const Recovered& recovered) {
  const db::DatabaseStats& ran = run.database().stats();
  const db::DatabaseStats& rec = recovered.stats;
  return {
      {"checkpoint", ran.checkpoints + rec.checkpoints},
      {"backpressure", vfs.backpressure},
      {"group_retry", ran.group_retries + rec.group_retries},
      // More groups than rounds (plus the CREATE TABLE's): some round took several groups.
      {"multi_group_round", ran.groups > run.rounds() + 1 ? 1 : 0},
      {"read_yield", ran.read_steps_yielded + rec.read_steps_yielded},
      // A statement read data not in memory: a read or a whole group ran again after a fetch.
      {"read_restart", ran.read_restarts + rec.read_restarts},
      {"group_restart", ran.group_restarts + rec.group_restarts},
      {"checkpoint_restart", ran.checkpoint_restarts + rec.checkpoint_restarts},
      {"submit_refused", run.refused()},
      {"batch", run.batches()},
      {"batch_conflict", run.batch_conflicts()},
      {"fsync_failed", run.injected_poisonings()},
      // An injected error on openat, unlink, ftruncate, fstat or close (SimFaults::meta_eio).
      {"metadata_fault", sim.metadata_errors},
      // The device broke for good (SimFaults::device_failure) and failed writes and fsyncs.
      {"persistent_eio", sim.persistent_errors},
  };
}

// Runs `run` to its end under the run phase's watchdog. A watchdog verdict kills the process
// and closes the database; if even that does not end, the objects are abandoned.
absl::Status RunRunPhase(std::unique_ptr<Loop>& loop, std::unique_ptr<db::Vfs>& vfs,
                         std::unique_ptr<Run>& run) {
  absl::Status status =
      RunPhase(*loop, "the run phase", kRunBudgetNs, [&run] { return run->Stuck(); });
  if (status.ok()) return status;
  run->Kill();
  if (!RunPhase(*loop, "closing after the watchdog", kTeardownBudgetNs).ok()) {
    Abandon(std::move(run));
    Abandon(std::move(vfs));
    Abandon(std::move(loop));
  }
  return status;
}

// Every recovering process of a run: FaultPlan::recovery_crashes processes that crash while
// they recover, then the one whose reads the checker judges (`last`). Each process's trace is
// folded into `trace`; a run without recovery crashes folds exactly what it did before they
// existed.
absl::Status RecoverAll(uint64_t seed, const WorkloadOptions& options,
                        const std::shared_ptr<io::SimDisk>& disk, const Config& config,
                        const FaultPlan& plan, Recovered& last, io::TraceHash& trace,
                        uint32_t& struck_open) {
  for (uint32_t i = 0; i < plan.recovery_crashes; ++i) {
    Recovered crashed;
    uint64_t crashed_trace = 0;
    const uint64_t process_seed = seed ^ (0x2ec0'7e12'c4a5'11edULL * (i + 1));
    sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(process_seed ^ 0x5eed),
                         nullptr);
    absl::Status status = Recover(process_seed, options, disk, config, crashed, crashed_trace,
                                  plan.recovery_crash_ns[i]);
    trace.Fold(crashed_trace);
    if (!status.ok()) return status;
    struck_open += crashed.crash_struck_open ? 1 : 0;
  }
  uint64_t last_trace = 0;
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed ^ 0x5eed), nullptr);
  absl::Status status = Recover(seed, options, disk, config, last, last_trace);
  trace.Fold(last_trace);
  return status;
}

// The values of acknowledged transactions, in order: what the payload corruption (the
// negative control) looks for in the durable file.
std::vector<const std::string*> AckedValues(const Run& run) {
  std::vector<const std::string*> values;
  for (const Transaction& txn : run.transactions()) {
    if (txn.outcome != Transaction::Outcome::kAcked) continue;
    for (const std::string& value : txn.values) values.push_back(&value);
  }
  return values;
}

// What happened between the run and the end, for the checker and the figures.
struct Aftermath {
  uint64_t oom_injected = 0;    // SQLite allocations failed by the fault.
  uint64_t corrupted_page = 0;  // The page CorruptStructure flipped; 0: none.
  bool payload_corrupted = false;
  uint32_t recovery_struck_open = 0;
  std::string leak;  // A tenant that still owned SQLite memory after its database closed.
};

// The run's verdict (first failure wins) and its figures.
void Judge(const Run& run, const Recovered& recovered, const Aftermath& after,
           const FaultPlan& plan, WorkloadResult& result) {
  const bool detected = after.corrupted_page != 0 &&
                        (absl::IsDataLoss(recovered.open) || absl::IsDataLoss(recovered.read) ||
                         (recovered.read.ok() && recovered.integrity != "ok"));
  if (result.failure.empty()) result.failure = run.violation();
  if (result.failure.empty()) result.failure = after.leak;
  if (result.failure.empty()) result.failure = Check(run, recovered, after.corrupted_page != 0);
  result.ok = result.failure.empty();
  for (const Transaction& txn : run.transactions()) {
    result.acked_checked += txn.outcome == Transaction::Outcome::kAcked && !detected ? 1 : 0;
  }
  result.paths["sqlite_oom"] = after.oom_injected;
  result.paths["oom_then_acked"] = after.oom_injected > 0 ? run.acked_after_oom() : 0;
  result.paths["writer_closed_idle"] = run.writer_closes();
  result.paths["corruption"] = after.corrupted_page != 0 ? 1 : 0;
  result.paths["corruption_detected"] = detected ? 1 : 0;
  result.paths["recovery_crash"] = plan.recovery_crashes;
  result.paths["recovery_crash_while_open"] = after.recovery_struck_open;
  // The crash left frames in the WAL, which the open read into memory ahead of SQLite.
  result.paths["wal_warmed"] = recovered.wal_bytes_warmed > 0 ? 1 : 0;
  if (after.payload_corrupted) result.paths["payload_corrupted"] = 1;
}

WorkloadResult RunDbCrash(uint64_t seed, const WorkloadOptions& options) {
  // First: the accounting allocator can only be installed before SQLite initialises.
  MemoryTenant memory;
  // SQLite's own generator (WAL salts, temp names) is process-wide: seed it from the run's seed
  // so a run does not depend on the runs before it in the same process.
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed), nullptr);
  Config config = DrawConfig(seed, options);
  if (memory.active()) config.database.tenant = memory.id();
  const FaultPlan plan = db_crash::DrawFaultPlan(seed, options);
  if (plan.oom_nth != 0) {
    // Which allocation is the Nth depends on every SQLite call before it, and a full statement
    // cache evicts an arbitrary entry (the first in a hash map's order, which follows the
    // process's address layout), so with evictions the same seed would fail a different
    // allocation from one process to the next. The default cache holds every statement.
    config.database.statement_cache_max = db::DatabaseOptions{}.statement_cache_max;
  }
  std::unique_ptr<io::SimBackend> backend = FirstSimulator(seed, options, kDirectory);
  std::shared_ptr<io::SimDisk> disk = backend->shared_disk();
  io::SimBackend& sim = *backend;
  WorkloadResult result;
  std::string faults = sim.DescribeFaults();
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(*loop, config.vfs);
  SQLOOP_CHECK(vfs.ok(), "db_crash: the VFS could not be registered");
  auto run = std::make_unique<Run>(sim, *loop, **vfs, config.database, seed);
  run->set_memory(&memory);
  memory.FailAllocation(plan.oom_nth);
  run->Start();
  const absl::Status status = RunRunPhase(loop, *vfs, run);
  memory.FailAllocation(0);
  if (run == nullptr) {  // Abandoned: the run could not even be closed.
    result.ok = false;
    result.failure = std::string(status.message());
    result.summary = absl::StrCat("abandoned after the run phase's watchdog; faults: ", faults);
    return result;
  }
  Aftermath after;
  after.oom_injected = memory.injected();
  if (memory.live_bytes() != 0) {
    after.leak = absl::StrCat("the closed database still owns ", memory.live_bytes(),
                              " bytes of SQLite memory (a leak)");
  }
  const uint64_t run_trace = sim.trace_hash();
  const db::VfsStats vfs_stats = (*vfs)->stats();
  const io::SimStats sim_stats = sim.sim_stats();
  if (plan.corrupt)
    after.corrupted_page = db_crash::CorruptStructure(*disk, kDatabasePath, plan.corrupt_draw);
  if (plan.corrupt_payload) {
    after.payload_corrupted = db_crash::CorruptPayload(*disk, kDatabasePath, AckedValues(*run));
  }
  Recovered recovered;
  io::TraceHash trace;
  trace.Fold(run_trace);
  const absl::Status recovery =
      RecoverAll(seed, options, disk, config, plan, recovered, trace, after.recovery_struck_open);
  if (!status.ok()) {
    result.failure = std::string(status.message());
  } else if (!recovery.ok()) {
    result.failure = std::string(recovery.message());
  }
  result.paths = RarePaths(*run, vfs_stats, sim_stats, recovered);
  Judge(*run, recovered, after, plan, result);
  result.loss_possible = run->loss_possible();
  result.loss_happened = !result.ok && result.loss_possible;
  result.summary = Summarize(*run, recovered, faults);
  if (!config.text.empty()) absl::StrAppend(&result.summary, "; config:", config.text);
  if (!plan.text.empty()) absl::StrAppend(&result.summary, "; above the disk:", plan.text);
  result.trace_hash = trace.value();
  return result;
}

}  // namespace

void StallGroupCommitsAfter(db::DatabaseOptions& options, uint32_t groups) {
  options.stop_group_commits_after_for_testing = groups;
}

SQLOOP_REGISTER_WORKLOAD(db_crash,
                         "SQLite transactions through sqloop; crash; recover; integrity_check ok, "
                         "every acknowledged transaction present, all or nothing",
                         RunDbCrash);

}  // namespace sqloop::testing
