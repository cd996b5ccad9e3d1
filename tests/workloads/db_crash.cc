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
// every row, run PRAGMA integrity_check, close. The checker then requires:
//   1. integrity_check is "ok";
//   2. every acknowledged transaction is present with exactly its rows and values;
//   3. every present transaction was submitted, was not reported as failed (a failure other
//      than "outcome unknown" means nothing of it was committed), and has all of its rows:
//      transactions are all or nothing, and nothing that was never written appears.
// During the run, every acknowledgement is also checked against the VFS's durable epoch: an
// acknowledged write whose epoch is not durable yet is a violation on its own.
//
// The negative control (WorkloadOptions::ack_before_fsync) makes the Database acknowledge at
// COMMIT, before the covering fsync; with crash_drops_all the checker must then fail on exactly
// the seeds where an acknowledged transaction was not durable at the crash (loss_possible).
#include <sqlite3.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "db/database.h"
#include "db/database_files.h"
#include "db/vfs.h"
#include "io/sim_backend.h"
#include "io/sim_trace.h"
#include "loop/loop.h"
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
  Run(io::SimBackend& sim, Loop& loop, db::Vfs& vfs, bool ack_before_fsync)
      : sim_(sim),
        loop_(loop),
        database_(loop, vfs, kDatabasePath, Options(ack_before_fsync)),
        ack_before_fsync_(ack_before_fsync) {
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

 private:
  enum class State : uint8_t { kOpening, kCreating, kRound, kClosing, kCrashed };

  static db::DatabaseOptions Options(bool ack_before_fsync) {
    db::DatabaseOptions options;
    options.ack_before_fsync_for_testing = ack_before_fsync;
    return options;
  }

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
    if (!database_.Submit(txn.request).ok())
      return;  // Refused: never submitted, on_done won't run.
    txn.outcome = Transaction::Outcome::kPending;
    ++in_round_;
  }

  static void OnWritten(db::Request& request, absl::Status status) {
    auto& txn = *static_cast<Transaction*>(request.user_data);
    Run& run = *txn.run;
    if (status.ok()) {
      txn.outcome = Transaction::Outcome::kAcked;
      run.CheckDurable(request);
      if (run.state_ != State::kCrashed) {
        for (int64_t key : txn.keys) run.acked_keys_.push_back(key);
      } else if (run.violation_.empty()) {
        run.violation_ = absl::StrCat("transaction ", txn.id, " was acknowledged after the crash");
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
  bool loss_possible_ = false;
  std::string violation_;
};

// What recovery read back: rows by key, and integrity_check's answer.
struct Recovered {
  absl::Status open;
  absl::Status read;
  std::map<int64_t, std::pair<int64_t, std::string>> rows;  // key -> (txn, value)
  std::string integrity;
  db::Request select;
  db::Request check;
  db::Database* database = nullptr;
  int pending = 0;
};

void OnRow(db::Request& request, const db::Row& row) {
  auto& recovered = *static_cast<Recovered*>(request.user_data);
  if (&request == &recovered.check) {
    absl::StrAppend(&recovered.integrity, recovered.integrity.empty() ? "" : "; ", row.Text(0));
    return;
  }
  recovered.rows[row.Int(0)] = {row.Int(1), std::string(row.Text(2))};
}

void OnRecoveredRead(db::Request& request, absl::Status status) {
  auto& recovered = *static_cast<Recovered*>(request.user_data);
  if (!status.ok() && recovered.read.ok()) recovered.read = status;
  if (--recovered.pending == 0) recovered.database->Close([](void*, absl::Status) {}, nullptr);
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
  if (recovered.pending == 0) recovered.database->Close([](void*, absl::Status) {}, nullptr);
}

// A new process on the crashed disk (RestartedSimulator) opens the database and reads it back.
absl::Status Recover(uint64_t seed, std::shared_ptr<io::SimDisk> disk, Recovered& recovered,
                     uint64_t& trace_hash) {
  std::unique_ptr<io::SimBackend> backend = RestartedSimulator(seed, std::move(disk));
  io::SimBackend& sim = *backend;
  Loop loop(std::move(backend), loop::LoopOptions{});
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(loop);
  if (!vfs.ok()) return vfs.status();
  absl::Status status;
  {
    db::Database database(loop, **vfs, kDatabasePath);
    recovered.database = &database;
    database.Open(&OnRecoveryOpened, &recovered);
    status = loop.Run(loop::RunMode::kUntilDone);
    recovered.database = nullptr;
  }
  status.Update(loop.Run(loop::RunMode::kUntilDone));
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

WorkloadResult RunDbCrash(uint64_t seed, const WorkloadOptions& options) {
  // SQLite's own generator (WAL salts, temp names) is process-wide: seed it from the run's seed
  // so a run does not depend on the runs before it in the same process.
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed), nullptr);
  std::unique_ptr<io::SimBackend> backend = FirstSimulator(seed, options, kDirectory);
  std::shared_ptr<io::SimDisk> disk = backend->shared_disk();
  io::SimBackend& sim = *backend;
  WorkloadResult result;
  std::string faults = sim.DescribeFaults();
  Loop loop(std::move(backend), loop::LoopOptions{});
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(loop);
  SQLOOP_CHECK(vfs.ok(), "db_crash: the VFS could not be registered");
  std::unique_ptr<Run> run = std::make_unique<Run>(sim, loop, **vfs, options.ack_before_fsync);
  run->Start();
  absl::Status status = loop.Run(loop::RunMode::kUntilDone);
  const uint64_t run_trace = sim.trace_hash();

  Recovered recovered;
  uint64_t recovery_trace = 0;
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed ^ 0x5eed), nullptr);
  const absl::Status recovery = Recover(seed, disk, recovered, recovery_trace);
  if (!status.ok()) {
    result.failure = absl::StrCat("run phase: ", status.message());
  } else if (!recovery.ok()) {
    result.failure = absl::StrCat("recovery: ", recovery.message());
  } else {
    result.failure = run->violation().empty() ? Check(*run, recovered) : run->violation();
  }
  result.ok = result.failure.empty();
  result.loss_possible = run->loss_possible();
  result.loss_happened = !result.ok && result.loss_possible;
  result.summary = Summarize(*run, recovered, faults);
  io::TraceHash trace;
  trace.Fold(run_trace);
  trace.Fold(recovery_trace);
  result.trace_hash = trace.value();
  return result;
}

}  // namespace

SQLOOP_REGISTER_WORKLOAD(db_crash,
                         "SQLite transactions through sqloop; crash; recover; integrity_check ok, "
                         "every acknowledged transaction present, all or nothing",
                         RunDbCrash);

}  // namespace sqloop::testing
