// The "db_crash" workload: SQLite through sqloop on the simulator, crashed at a seeded moment,
// recovered by a new process, and checked against everything that was acknowledged.
//
// Run phase (one process): open /data/tenant.db, create the table, then rounds of concurrent
// write requests. Each request is one transaction: a single INSERT of 1..4 rows tagged with the
// transaction's id. About one in eight deliberately reuses the key of an acknowledged row, so it
// must fail and leave nothing. A crash timer fires at a uniform time in the crash window:
// the simulator drops the process (every pending op fails, the disk keeps, drops or tears each
// unsynced write) and the database is closed.
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
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "sqloop/db/database.h"
#include "sqloop/db/database_files.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/prng.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/io/sim_trace.h"
#include "sqloop/loop/loop.h"
#include "tests/sim_workload.h"

namespace sqloop::testing {
namespace {

using loop::Action;
using loop::Completion;
using loop::Loop;

constexpr char kDirectory[] = "/data";
constexpr char kDatabasePath[] = "/data/tenant.db";
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
// The crash comes at a uniform time in [0, 40 ms] of simulated time: a run with the default
// latencies takes about that long, so crashes land before, during and after the work.
constexpr int64_t kCrashWindowNs = 40'000'000;
constexpr uint64_t kTraceAck = 0xdbac;
// Watchdogs in virtual time. A run phase ends by its crash (within kCrashWindowNs) and then
// closes; a recovery and liveness phase takes a few tens of milliseconds without faults. Two
// seconds is far past both (and a loop spinning 1 µs ticks reaches it in a few real seconds):
// only a stuck phase reaches it.
constexpr int64_t kRunBudgetNs = 2'000'000'000;
constexpr int64_t kRecoveryBudgetNs = 2'000'000'000;
// The liveness bound: every write of the fault-free liveness phase is acknowledged, and read
// back, within this much virtual time of its submission. The slowest fsync takes 5 ms
// (SimBackendOptions::fsync_latency); a round is a group or a few, plus a checkpoint; one
// second is a hundred times that.
constexpr int64_t kLivenessBudgetNs = 1'000'000'000;
// Liveness rounds, and writes per round (each its own transaction).
constexpr uint32_t kLivenessRounds = 3;
constexpr uint32_t kLivenessWritesPerRoundMax = 8;
// Ending a phase whose watchdog fired (a crash, then closing) gets this much virtual time
// before its objects are abandoned.
constexpr int64_t kTeardownBudgetNs = 1'000'000'000;

// The configuration one seed runs with.
struct Config {
  db::DatabaseOptions database;
  db::VfsOptions vfs;
  std::string text;  // For the summary: what differs from the defaults.
};

// Draws the configuration from its own generator (seeded from the run's seed), so the
// simulator's stream of latencies, faults and crash fates is the same with or without it. Each
// setting keeps its default in about half the seeds, as SimBackend's swarm does with faults.
Config DrawConfig(uint64_t seed, const WorkloadOptions& options) {
  Config config;
  db::DatabaseOptions& database = config.database;
  database.ack_before_fsync_for_testing = options.ack_before_fsync;
  if (options.stall_group_commits_after != 0) {
    StallGroupCommitsAfter(database, options.stall_group_commits_after);
    absl::StrAppend(&config.text, " stall_after=", options.stall_group_commits_after);
  }
  if (!options.swarm_config) return config;
  io::Prng prng(seed ^ 0xc0f1'9c0f'19c0'f19cULL);
  auto draw = [&prng, &config](const char* name, auto& field, uint64_t min, uint64_t max) {
    if (!prng.Chance(0.5)) return;
    field = static_cast<std::remove_reference_t<decltype(field)>>(prng.Range(min, max));
    absl::StrAppend(&config.text, " ", name, "=", field);
  };
  // A checkpoint every few frames: each round's group writes several (values up to 600 bytes).
  draw("checkpoint_frames", database.checkpoint_frames, 2, 16);
  // Rounds of up to 12 requests then take several groups (multi-group rounds).
  draw("group_requests_max", database.group_requests_max, 1, 6);
  draw("readers", database.readers, 1, 4);
  // db_crash runs about six distinct statements: one or two slots means evictions.
  draw("statement_cache_max", database.statement_cache_max, 1, 3);
  // Recovery reads every row: a few rows per tick makes it yield many times.
  draw("rows_per_tick", database.rows_per_tick, 1, 8);
  // Not below a round's requests (kRequestsPerRoundMax) plus the liveness phase's, so Submit
  // refusing work stays a run-phase event (the round simply has fewer transactions).
  draw("queued_requests_max", database.queued_requests_max, 4, 16);
  // A write-behind buffer of a few WAL frames (4 KiB pages): a group's frames, or a
  // checkpoint's pages, overflow it. Not below what one transaction of this workload needs
  // right after a checkpoint (a few frames of 4,120 bytes), which the Database refuses outright
  // rather than hold back; nor below 16 operations, under which even the open's switch to WAL
  // is refused (SQLITE_FULL at open, for good).
  draw("held_bytes_max", config.vfs.held_bytes_max, 12 * 1024, 20 * 1024);
  draw("held_ops_max", config.vfs.held_ops_max, 16, 48);
  return config;
}

const char* StateName(db::Database::State state) {
  switch (state) {
    case db::Database::State::kNew:
      return "new";
    case db::Database::State::kOpening:
      return "opening";
    case db::Database::State::kOpenSyncing:
      return "open-syncing";
    case db::Database::State::kReady:
      return "ready";
    case db::Database::State::kPoisoned:
      return "poisoned";
    case db::Database::State::kClosing:
      return "closing";
    case db::Database::State::kClosed:
      return "closed";
    case db::Database::State::kFailed:
      return "failed";
  }
  return "?";
}

const char* StateName(db::Request::State state) {
  switch (state) {
    case db::Request::State::kIdle:
      return "idle";
    case db::Request::State::kQueued:
      return "queued";
    case db::Request::State::kRunning:
      return "running";
    case db::Request::State::kAwaitingDurable:
      return "awaiting durability";
    case db::Request::State::kDone:
      return "done";
  }
  return "?";
}

struct Transaction {
  enum class Outcome : uint8_t { kNotSubmitted, kPending, kAcked, kFailed, kUnknown };
  class Run* run = nullptr;
  uint64_t id = 0;
  bool conflict = false;
  std::vector<int64_t> keys;
  std::vector<std::string> values;
  std::string sql;
  db::Request request;
  Outcome outcome = Outcome::kNotSubmitted;
  std::string failure;
};

class Run {
 public:
  Run(io::SimBackend& sim, Loop& loop, db::Vfs& vfs, const db::DatabaseOptions& options)
      : sim_(sim),
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

  void StartRound() {
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
    txn.sql = "INSERT INTO t(k, txn, v) VALUES ";
    for (uint32_t row = 0; row < rows; ++row) {
      const int64_t key = txn.conflict && row == 0
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
    request.sql = txn.sql;
    for (size_t row = 0; row < txn.keys.size(); ++row) {
      request.params.push_back(db::Value::Int(txn.keys[row]));
      request.params.push_back(db::Value::Int(static_cast<int64_t>(txn.id)));
      request.params.push_back(db::Value::Text(txn.values[row]));
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
    const db::DatabaseFiles* files = database_.files();
    const bool durable = files != nullptr && files->durable_epoch() >= request.epoch;
    if (!durable && !ack_before_fsync_ && violation_.empty()) {
      violation_ = absl::StrCat("a write was acknowledged in epoch ", request.epoch,
                                " before that epoch was durable");
    }
  }

  static Action OnCrash(Loop& /*loop*/, Completion& c) {
    auto* run = static_cast<Run*>(c.user_data);
    // Oracle: an acknowledged write whose epoch is not durable can only survive by luck.
    // A closed database (no files) waited for everything to be durable: nothing is at risk.
    const db::DatabaseFiles* files = run->database_.files();
    if (files != nullptr && run->table_acked_ && run->create_.epoch > files->durable_epoch()) {
      run->loss_possible_ = true;  // The acknowledged CREATE TABLE itself.
    }
    for (const Transaction& txn : run->transactions_) {
      if (files != nullptr && txn.outcome == Transaction::Outcome::kAcked &&
          txn.request.epoch > files->durable_epoch()) {
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
  uint64_t poisonings_before_crash_ = 0;
  bool loss_possible_ = false;
  std::string violation_;
};

// What recovery read back: rows by key, and integrity_check's answer; then the liveness phase.
struct Recovered {
  absl::Status open;
  absl::Status read;
  std::map<int64_t, std::pair<int64_t, std::string>> rows;  // key -> (txn, value)
  std::string integrity;
  db::Request select;
  db::Request check;
  db::Database* database = nullptr;
  loop::Loop* loop = nullptr;
  io::Prng* prng = nullptr;
  uint32_t live_writes_max = kLivenessWritesPerRoundMax;  // Within queued_requests_max.
  int pending = 0;
  bool closing = false;
  // The liveness phase: rounds of writes, then a count of what they wrote.
  db::Request live_table;
  std::deque<db::Request> live_writes;  // A deque: requests never move once submitted.
  std::vector<std::string> live_sql;
  db::Request live_count;
  int64_t live_counted = -1;
  uint32_t live_round = 0;
  uint32_t live_acked = 0;
  int64_t live_started_ns = 0;
  int64_t live_finished_ns = 0;  // 0 while the liveness phase runs.
  std::string liveness;          // The first liveness violation; empty when it held.
  db::DatabaseStats stats;       // The recovery database's, at close.
};

void CloseRecovered(Recovered& recovered) {
  if (recovered.closing) return;
  recovered.closing = true;
  recovered.stats = recovered.database->stats();
  recovered.database->Close([](void*, absl::Status) {}, nullptr);
}

void LivenessFailed(Recovered& recovered, std::string why) {
  if (recovered.liveness.empty()) recovered.liveness = std::move(why);
  CloseRecovered(recovered);
}

void OnRow(db::Request& request, const db::Row& row) {
  auto& recovered = *static_cast<Recovered*>(request.user_data);
  if (&request == &recovered.check) {
    absl::StrAppend(&recovered.integrity, recovered.integrity.empty() ? "" : "; ", row.Text(0));
    return;
  }
  if (&request == &recovered.live_count) {
    recovered.live_counted = row.Int(0);
    return;
  }
  recovered.rows[row.Int(0)] = {row.Int(1), std::string(row.Text(2))};
}

void SubmitLive(Recovered& recovered, db::Request& request) {
  request.user_data = &recovered;
  absl::Status submitted = recovered.database->Submit(request);
  if (!submitted.ok()) {
    LivenessFailed(recovered, absl::StrCat("the fault-free database refused a liveness request: ",
                                           submitted.message()));
  }
}

void OnLiveDone(db::Request& request, absl::Status status);

// The next liveness round: a few writes, each its own transaction; after the last round, a
// read of what they wrote.
void NextLiveRound(Recovered& recovered) {
  if (recovered.closing) return;
  if (recovered.live_round == kLivenessRounds) {
    recovered.live_count.kind = db::Request::Kind::kRead;
    recovered.live_count.sql = "SELECT count(*) FROM live";
    recovered.live_count.on_row = &OnRow;
    recovered.live_count.on_done = &OnLiveDone;
    return SubmitLive(recovered, recovered.live_count);
  }
  ++recovered.live_round;
  const auto count = static_cast<uint32_t>(recovered.prng->Range(1, recovered.live_writes_max));
  recovered.pending = static_cast<int>(count);
  for (uint32_t i = 0; i < count && !recovered.closing; ++i) {
    db::Request& write = recovered.live_writes.emplace_back();
    write.kind = db::Request::Kind::kWrite;
    write.sql = "INSERT INTO live(v) VALUES (?)";
    write.params.push_back(db::Value::Int(static_cast<int64_t>(recovered.live_writes.size())));
    write.on_done = &OnLiveDone;
    SubmitLive(recovered, write);
  }
}

void OnLiveDone(db::Request& request, absl::Status status) {
  auto& recovered = *static_cast<Recovered*>(request.user_data);
  if (!status.ok()) {
    return LivenessFailed(
        recovered, absl::StrCat("a liveness request failed without faults: ", status.message()));
  }
  if (&request == &recovered.live_count) {
    recovered.live_finished_ns = recovered.loop->now_ns();
    if (recovered.live_counted != static_cast<int64_t>(recovered.live_acked)) {
      LivenessFailed(recovered,
                     absl::StrCat("the liveness phase acknowledged ", recovered.live_acked,
                                  " writes but reads back ", recovered.live_counted));
    }
    return CloseRecovered(recovered);
  }
  if (&request != &recovered.live_table) ++recovered.live_acked;
  if (&request == &recovered.live_table || --recovered.pending == 0) NextLiveRound(recovered);
}

void StartLiveness(Recovered& recovered) {
  recovered.live_started_ns = recovered.loop->now_ns();
  recovered.live_table.kind = db::Request::Kind::kWrite;
  recovered.live_table.sql = "CREATE TABLE live(k INTEGER PRIMARY KEY, v INTEGER)";
  recovered.live_table.on_done = &OnLiveDone;
  SubmitLive(recovered, recovered.live_table);
}

// For the watchdog: the liveness requests that are not done, and their states.
std::string LivenessStuck(const Recovered& recovered) {
  std::string text = absl::StrCat(
      "database ", recovered.database != nullptr ? StateName(recovered.database->state()) : "gone",
      ", liveness round ", recovered.live_round, " of ", kLivenessRounds, ", ",
      recovered.live_acked, " writes acked");
  const auto busy = [](const db::Request& request) {
    return request.state() != db::Request::State::kIdle &&
           request.state() != db::Request::State::kDone;
  };
  if (busy(recovered.live_table)) {
    absl::StrAppend(&text, "; CREATE TABLE live ", StateName(recovered.live_table.state()));
  }
  for (size_t i = 0; i < recovered.live_writes.size(); ++i) {
    const db::Request& write = recovered.live_writes[i];
    if (busy(write))
      absl::StrAppend(&text, "; liveness write ", i + 1, " ", StateName(write.state()));
  }
  if (busy(recovered.live_count)) {
    absl::StrAppend(&text, "; liveness read ", StateName(recovered.live_count.state()));
  }
  return text;
}

void OnRecoveredRead(db::Request& request, absl::Status status) {
  auto& recovered = *static_cast<Recovered*>(request.user_data);
  if (!status.ok() && recovered.read.ok()) recovered.read = status;
  if (--recovered.pending == 0) StartLiveness(recovered);
}

void OnRecoveryOpened(void* arg, absl::Status status) {
  auto& recovered = *static_cast<Recovered*>(arg);
  recovered.open = status;
  if (!status.ok()) return;
  for (db::Request* request : {&recovered.select, &recovered.check}) {
    request->kind = db::Request::Kind::kRead;
    request->user_data = &recovered;
    request->on_row = &OnRow;
    request->on_done = &OnRecoveredRead;
  }
  recovered.select.sql = "SELECT k, txn, v FROM t ORDER BY k";
  recovered.check.sql = "PRAGMA integrity_check";
  for (db::Request* request : {&recovered.select, &recovered.check}) {
    absl::Status submitted = recovered.database->Submit(*request);
    if (submitted.ok()) {
      ++recovered.pending;
    } else if (recovered.read.ok()) {
      recovered.read = submitted;
    }
  }
  if (recovered.pending == 0) CloseRecovered(recovered);
}

// A new process on the crashed disk (RestartedSimulator) opens the database, reads it back,
// and runs the liveness phase, all under a watchdog.
absl::Status Recover(uint64_t seed, const WorkloadOptions& options,
                     std::shared_ptr<io::SimDisk> disk, const Config& config, Recovered& recovered,
                     uint64_t& trace_hash) {
  std::unique_ptr<io::SimBackend> backend = RestartedSimulator(seed, std::move(disk), options);
  io::SimBackend& sim = *backend;
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(*loop, config.vfs);
  if (!vfs.ok()) return vfs.status();
  db::DatabaseOptions database_options = config.database;
  // The run phase's negative control only.
  database_options.ack_before_fsync_for_testing = false;
  auto database = std::make_unique<db::Database>(*loop, **vfs, kDatabasePath, database_options);
  recovered.database = database.get();
  recovered.loop = loop.get();
  recovered.prng = &sim.prng();
  recovered.live_writes_max = std::max<uint32_t>(
      1, std::min(kLivenessWritesPerRoundMax, database_options.queued_requests_max - 1));
  database->Open(&OnRecoveryOpened, &recovered);
  absl::Status status = RunPhase(*loop, "the recovery and liveness phase", kRecoveryBudgetNs,
                                 [&recovered] { return LivenessStuck(recovered); });
  const auto ended = [&database] {
    return database->state() == db::Database::State::kClosed ||
           database->state() == db::Database::State::kFailed;
  };
  if (status.ok() && !ended()) {
    status = absl::DeadlineExceededError(
        absl::StrCat("the recovery and liveness phase stopped with nothing in flight, its "
                     "requests not done: ",
                     LivenessStuck(recovered)));
  }
  if (!status.ok()) {
    // Watchdog: end the process (ops in flight fail), close, and give up after a bound.
    sim.Crash();
    const db::Database::State state = database->state();
    if (state == db::Database::State::kReady || state == db::Database::State::kPoisoned ||
        state == db::Database::State::kFailed) {
      CloseRecovered(recovered);
    }
    if (!RunPhase(*loop, "closing after the watchdog", kTeardownBudgetNs).ok() || !ended()) {
      recovered.database = nullptr;
      Abandon(std::move(database));
      Abandon(std::move(*vfs));
      Abandon(std::move(loop));
      return status;
    }
  }
  recovered.database = nullptr;
  database.reset();
  status.Update(loop->Run(loop::RunMode::kUntilDone));
  trace_hash = sim.trace_hash();
  return status;
}

// The checker (see the file comment). Returns the first violation, or "".
std::string Check(const Run& run, const Recovered& recovered) {
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
        return absl::StrCat("transaction ", txn.id, " came back with other contents");
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
      {"submit_refused", run.refused()},
      {"fsync_failed", run.injected_poisonings()},
      // An injected error on openat, unlink, ftruncate, fstat or close (SimFaults::meta_eio).
      {"metadata_fault", sim.metadata_errors},
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

WorkloadResult RunDbCrash(uint64_t seed, const WorkloadOptions& options) {
  // SQLite's own generator (WAL salts, temp names) is process-wide: seed it from the run's seed
  // so a run does not depend on the runs before it in the same process.
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed), nullptr);
  const Config config = DrawConfig(seed, options);
  std::unique_ptr<io::SimBackend> backend = FirstSimulator(seed, options, kDirectory);
  std::shared_ptr<io::SimDisk> disk = backend->shared_disk();
  io::SimBackend& sim = *backend;
  WorkloadResult result;
  std::string faults = sim.DescribeFaults();
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(*loop, config.vfs);
  SQLOOP_CHECK(vfs.ok(), "db_crash: the VFS could not be registered");
  auto run = std::make_unique<Run>(sim, *loop, **vfs, config.database);
  run->Start();
  const absl::Status status = RunRunPhase(loop, *vfs, run);
  if (run == nullptr) {  // Abandoned: the run could not even be closed.
    result.ok = false;
    result.failure = std::string(status.message());
    result.summary = absl::StrCat("abandoned after the run phase's watchdog; faults: ", faults);
    return result;
  }
  const uint64_t run_trace = sim.trace_hash();
  const db::VfsStats vfs_stats = (*vfs)->stats();
  const io::SimStats sim_stats = sim.sim_stats();

  Recovered recovered;
  uint64_t recovery_trace = 0;
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed ^ 0x5eed), nullptr);
  const absl::Status recovery = Recover(seed, options, disk, config, recovered, recovery_trace);
  if (!status.ok()) {
    result.failure = std::string(status.message());
  } else if (!recovery.ok()) {
    result.failure = std::string(recovery.message());
  } else {
    result.failure = run->violation().empty() ? Check(*run, recovered) : run->violation();
  }
  result.ok = result.failure.empty();
  result.loss_possible = run->loss_possible();
  result.loss_happened = !result.ok && result.loss_possible;
  result.summary = Summarize(*run, recovered, faults);
  if (!config.text.empty()) absl::StrAppend(&result.summary, "; config:", config.text);
  result.paths = RarePaths(*run, vfs_stats, sim_stats, recovered);
  io::TraceHash trace;
  trace.Fold(run_trace);
  trace.Fold(recovery_trace);
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
