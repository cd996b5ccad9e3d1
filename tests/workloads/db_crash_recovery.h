// tests/workloads/db_crash_recovery.h
// -----------------------------------------------------------------------------
//
// The db_crash workload's recovering process (tests/workloads/db_crash.cc): a new process on
// the crashed disk opens the database (WAL recovery runs), reads every row back, runs
// PRAGMA integrity_check, and then the liveness phase: with no faults the database must make
// progress, so rounds of new writes (to a table of their own) must every one be acknowledged,
// and read back, within kLivenessBudgetNs of virtual time. A recovering process may itself be
// crashed (FaultPlan::recovery_crash_ns): it then skips the liveness phase, and a later
// process recovers from what its crash left. Everything runs under a watchdog (RunPhase).
#ifndef SQLOOP_TESTS_WORKLOADS_DB_CRASH_RECOVERY_H_
#define SQLOOP_TESTS_WORKLOADS_DB_CRASH_RECOVERY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "sqloop/db/database.h"
#include "sqloop/io/prng.h"
#include "sqloop/loop/loop.h"
#include "tests/sim_workload.h"
#include "tests/workloads/db_crash_support.h"

namespace sqloop::io {
class SimBackend;
class SimDisk;
}  // namespace sqloop::io

namespace sqloop::testing::db_crash {

inline constexpr char kDatabasePath[] = "/data/tenant.db";
// The recovering process's watchdog: recovery and liveness take a few tens of milliseconds of
// virtual time without faults; two seconds is far past that.
inline constexpr int64_t kRecoveryBudgetNs = 2'000'000'000;
// The liveness bound: every write of the fault-free liveness phase is acknowledged, and read
// back, within this much virtual time of its submission. The slowest fsync takes 5 ms
// (SimBackendOptions::fsync_latency); a round is a group or a few, plus a checkpoint; one
// second is a hundred times that.
inline constexpr int64_t kLivenessBudgetNs = 1'000'000'000;
// Liveness rounds, and writes per round (each its own transaction).
inline constexpr uint32_t kLivenessRounds = 3;
inline constexpr uint32_t kLivenessWritesPerRoundMax = 8;
// Ending a phase whose watchdog fired (a crash, then closing) gets this much virtual time
// before its objects are abandoned.
inline constexpr int64_t kTeardownBudgetNs = 1'000'000'000;

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
  int64_t live_finished_ns = 0;   // 0 while the liveness phase runs.
  std::string liveness;           // The first liveness violation; empty when it held.
  db::DatabaseStats stats;        // The recovery database's, at close.
  uint64_t wal_bytes_warmed = 0;  // Its Vfs's: the WAL the crash left, read ahead at the open.
  // A crash of this recovering process (FaultPlan::recovery_crash_ns): it reads back, skips
  // the liveness phase and closes, unless the crash strikes first.
  io::SimBackend* sim = nullptr;
  loop::Completion crash_timer;
  bool crash_planned = false;
  bool crash_struck_open = false;  // The crash came while the database was still open(ing).
};

// Closes the recovering database (once), keeping its counters.
void CloseRecovered(Recovered& recovered);

// For a watchdog's verdict: the liveness requests that are not done, and their states.
[[nodiscard]] std::string LivenessStuck(const Recovered& recovered);

// Runs one recovering process on `disk` (RestartedSimulator with `seed`): open, read back,
// then the liveness phase, all under a watchdog; `trace_hash` gets its trace. With
// `crash_at_ns` >= 0 the process crashes that long after it started, and skips the liveness
// phase (a later process runs it).
[[nodiscard]] absl::Status Recover(uint64_t seed, const WorkloadOptions& options,
                                   std::shared_ptr<io::SimDisk> disk, const Config& config,
                                   Recovered& recovered, uint64_t& trace_hash,
                                   int64_t crash_at_ns = -1);

}  // namespace sqloop::testing::db_crash

#endif  // SQLOOP_TESTS_WORKLOADS_DB_CRASH_RECOVERY_H_
