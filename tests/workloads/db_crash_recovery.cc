#include "tests/workloads/db_crash_recovery.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"

namespace sqloop::testing::db_crash {

using loop::Action;
using loop::Completion;
using loop::Loop;

void CloseRecovered(Recovered& recovered) {
  if (recovered.closing) return;
  recovered.closing = true;
  recovered.stats = recovered.database->stats();
  recovered.database->Close([](void*, absl::Status) {}, nullptr);
}

namespace {

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

}  // namespace

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

namespace {

void OnRecoveredRead(db::Request& request, absl::Status status) {
  auto& recovered = *static_cast<Recovered*>(request.user_data);
  if (!status.ok() && recovered.read.ok()) recovered.read = status;
  if (--recovered.pending != 0) return;
  if (recovered.crash_planned) return CloseRecovered(recovered);
  StartLiveness(recovered);
}

void OnRecoveryOpened(void* arg, absl::Status status) {
  auto& recovered = *static_cast<Recovered*>(arg);
  recovered.open = status;
  if (!status.ok()) {
    // A crash of this process (the only fault it has) may leave the open poisoned rather
    // than failed: that database still needs closing.
    if (recovered.database->state() == db::Database::State::kPoisoned) CloseRecovered(recovered);
    return;
  }
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

// The recovering process crashes (FaultPlan::recovery_crash_ns): power loss, then the
// database closes, unless it is still opening (the open then fails by itself).
Action OnRecoveryCrash(Loop& /*loop*/, Completion& c) {
  auto& recovered = *static_cast<Recovered*>(c.user_data);
  const db::Database::State state = recovered.database->state();
  recovered.crash_struck_open =
      state != db::Database::State::kClosed && state != db::Database::State::kFailed;
  recovered.sim->Crash();
  if (state == db::Database::State::kReady || state == db::Database::State::kPoisoned) {
    CloseRecovered(recovered);
  }
  return Action::kDisarm;
}

}  // namespace

absl::Status Recover(uint64_t seed, const WorkloadOptions& options,
                     std::shared_ptr<io::SimDisk> disk, const Config& config, Recovered& recovered,
                     uint64_t& trace_hash, int64_t crash_at_ns) {
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
  recovered.sim = &sim;
  if (crash_at_ns >= 0) {
    recovered.crash_planned = true;
    recovered.crash_timer.user_data = &recovered;
    recovered.crash_timer.callback = &OnRecoveryCrash;
    loop->Timer(recovered.crash_timer, absl::Nanoseconds(crash_at_ns));
  }
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
  recovered.wal_bytes_warmed = (*vfs)->stats().wal_bytes_warmed;
  trace_hash = sim.trace_hash();
  return status;
}

}  // namespace sqloop::testing::db_crash
