// tests/sim_workload.h
// -----------------------------------------------------------------------------
//
// Simulation workloads: named programs that run on the simulator for one seed and say whether
// the properties they check held. `sqloop_sim` and the simulation tests run them by name, so a
// layer adds its own workload by adding one .cc file with a registration (below) to the
// `sqloop_sim_workloads` object library in tests/sim.cmake; nothing else changes.
//
// A workload must be a pure function of (seed, options): all randomness from the simulator's
// generator, no wall clock, no real I/O, no global state carried between runs. Then the same
// seed gives the same trace hash, and a failing seed replays exactly.
//
// Example:
//
//   namespace {
//   sqloop::testing::WorkloadResult RunMine(uint64_t seed, const WorkloadOptions& options) {
//     ...
//   }
//   }  // namespace
//   SQLOOP_REGISTER_WORKLOAD(mine, "what it checks, in one line", RunMine);
//
//   // Elsewhere:
//   const Workload* workload = FindWorkload("mine");
//   WorkloadResult result = workload->run(/*seed=*/42, WorkloadOptions{});
#ifndef SQLOOP_TESTS_SIM_WORKLOAD_H_
#define SQLOOP_TESTS_SIM_WORKLOAD_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sqloop::io {
class SimBackend;
class SimDisk;
}  // namespace sqloop::io

namespace sqloop::loop {
class Loop;
}  // namespace sqloop::loop

namespace sqloop::db {
struct DatabaseOptions;
}  // namespace sqloop::db

namespace sqloop::testing {

struct WorkloadOptions {
  // Draw the fault mix from the seed (SimBackendOptions::swarm). Off: no faults at all.
  bool swarm = true;
  // NEGATIVE CONTROL ONLY: fsync succeeds and does nothing (SimDiskOptions::broken_fsync).
  bool broken_fsync = false;
  // NEGATIVE CONTROL ONLY: the workload's own layer acknowledges before the covering fsync
  // (for the SQLite workload, DatabaseOptions::ack_before_fsync_for_testing).
  bool ack_before_fsync = false;
  // The crash drops every pending operation (keep and tear probabilities 0), so data that was
  // not durable at the crash is certainly lost. Used to make "loss possible" exact.
  bool crash_drops_all = false;
  // Draw the layer's configuration from the seed as well (for db_crash: DatabaseOptions such as
  // checkpoint frequency, group size, readers), so rare paths run in a good share of seeds.
  // Off: the defaults, as a production host runs them (and as old replay commands ran).
  bool swarm_config = true;
  // NEGATIVE CONTROL ONLY (liveness): the database stops starting group commits after this
  // many (0: never stops). The liveness phase must then fail. See StallGroupCommitsAfter in
  // tests/workloads/db_crash.cc for what carries it to the database.
  uint32_t stall_group_commits_after = 0;
  // NEGATIVE CONTROL ONLY (watchdogs): in every process of the run, fsyncs after the first this
  // many never complete (SimBackendOptions::fsyncs_before_hang); -1: never. The run must end
  // with a verdict that names the stuck phase, never hang.
  int64_t fsyncs_before_hang = -1;
  // NEGATIVE CONTROL ONLY (corruption): between the crash and the restart, flip a byte inside
  // an acknowledged value in the durable database file, a corruption no SQLite check can see,
  // so a corrupted page is served as good data. The checker must catch the wrong answer.
  // db_crash only.
  bool corrupt_payload = false;
  // The VFS's WAL reserve (VfsOptions::wal_reserve_bytes) for every seed; -1: drawn from the
  // seed where the workload draws it (db_reads; db_crash with swarm_config), else the default.
  int64_t wal_reserve_bytes = -1;
};

struct WorkloadResult {
  bool ok = true;
  std::string failure;      // What was violated; empty when ok.
  std::string summary;      // One line: what the run did (for humans).
  uint64_t trace_hash = 0;  // Equal for two runs of the same (seed, options).
  // The crash oracle, from the simulated disk's own bookkeeping rather than from the workload's
  // recovery code (the negative control compares the two):
  bool loss_possible = false;  // At the crash, some acknowledged data was not durable.
  bool loss_happened = false;  // After the crash, some acknowledged data was not intact.
  // How often each rare path ran in this run, by name (e.g. "checkpoint" -> 3): a sweep counts
  // the seeds where each ran, and a test asserts each runs in a set share of seeds.
  std::map<std::string, uint64_t> paths;
  // Acknowledged transactions (or records, or writes) the checker found intact after recovery:
  // the long sweep's "acknowledged transactions checked".
  uint64_t acked_checked = 0;
};

using WorkloadFunction = WorkloadResult (*)(uint64_t seed, const WorkloadOptions& options);

struct Workload {
  const char* name;
  const char* description;
  WorkloadFunction run;
};

// Adds `workload` to the registry (name must be new). Returns true, for static registration.
bool RegisterWorkload(const Workload& workload);
// The registered workload called `name`, or nullptr.
[[nodiscard]] const Workload* FindWorkload(absl::string_view name);
// Every registered workload, sorted by name.
[[nodiscard]] std::vector<Workload> AllWorkloads();

// The process a run starts with: a simulator seeded with `seed`, its fault mix drawn from the
// seed unless `options.swarm` is off, the options' fsync and crash behaviour, a deadlock
// reported as an error, and `directory` created on its fresh disk.
[[nodiscard]] std::unique_ptr<io::SimBackend> FirstSimulator(uint64_t seed,
                                                             const WorkloadOptions& options,
                                                             const char* directory);

// The process that recovers after a crash: a simulator on the crashed `disk` with no faults
// (recovery must see the disk as the crash left it, not an injected error), a seed derived
// from the run's `seed`, and a deadlock reported as an error, as in the run itself.
// `options` carries only the negative controls that hold in every process (fsyncs_before_hang).
[[nodiscard]] std::unique_ptr<io::SimBackend> RestartedSimulator(
    uint64_t seed, std::shared_ptr<io::SimDisk> disk, const WorkloadOptions& options = {});

// The sqloop_sim command line that replays (workload, seed, options), e.g.
// "build/debug/tests/sqloop_sim --workload=file_append --seed=1234".
[[nodiscard]] std::string ReplayCommand(absl::string_view binary, absl::string_view workload,
                                        uint64_t seed, const WorkloadOptions& options);

// For a sweep's failure message: "seed 1234; replay: <ReplayCommand>".
[[nodiscard]] std::string ReplayLine(absl::string_view binary, absl::string_view workload,
                                     uint64_t seed, const WorkloadOptions& options);

// The workload called `name`; a missing one (its .cc not linked) is a build error, so aborts.
[[nodiscard]] const Workload& RegisteredWorkload(absl::string_view name);

// The program a failure's replay command names (ReplayCommand's `binary`) when a failed
// SQLOOP_CHECK prints it (below). Defaults to the sqloop_sim this build made; sqloop_sim sets
// its own argv[0].
void SetReplayBinary(absl::string_view binary);

// While alive, a failed SQLOOP_CHECK (an internal assertion, anywhere in the process) prints
// "  <ReplayLine>" to stderr before aborting, so a crash in the middle of a sweep still names
// the seed and the command that replays it. SQLOOP_REGISTER_WORKLOAD wraps every workload in
// one, so every caller of Workload::run gets it. Nests: the innermost wins, the destructor
// restores the one before.
class ReplayOnFatal {
 public:
  ReplayOnFatal(absl::string_view workload, uint64_t seed, const WorkloadOptions& options);
  ~ReplayOnFatal();
  ReplayOnFatal(const ReplayOnFatal&) = delete;
  ReplayOnFatal& operator=(const ReplayOnFatal&) = delete;

 private:
  std::string previous_;
};

// The watchdog every phase of a workload runs under: runs `loop` until nothing is pending (as
// Run(kUntilDone) does), but for at most `budget_ns` of virtual time. Returns OK, the loop's
// own error (e.g. the simulator found a deadlock), or DeadlineExceeded naming `phase` and what
// `stuck` (if given) says is not done. On a deadline the phase's objects are still busy: the
// caller ends them (a crash, a close) under a second RunPhase, or gives them to Abandon().
[[nodiscard]] absl::Status RunPhase(loop::Loop& loop, absl::string_view phase, int64_t budget_ns,
                                    const std::function<std::string()>& stuck = nullptr);

// Ends a phase whose watchdog fired: the process dies (SimBackend::Crash fails every op in
// flight, which completes what was stuck on I/O), and the loop runs what that completes for at
// most a second of virtual time. A loop that still has work is abandoned (`loop` becomes null:
// the caller must not touch `sim` or the phase's objects afterwards). The caller closes its
// own objects (a database) before or after, as its layer needs.
void KillStuckPhase(io::SimBackend& sim, std::unique_ptr<loop::Loop>& loop);

// Keeps `object` alive and reachable until the process exits: for a run whose watchdog fired
// and whose objects could not be brought to an end (destroying them would abort on their
// "nothing in flight" checks). Only failing runs abandon anything.
void KeepReachable(const void* object);
template <typename T>
void Abandon(std::unique_ptr<T> object) {
  KeepReachable(object.release());
}

// Sets the database's test hook that stops starting group commits after the `groups`-th (the
// liveness negative control, WorkloadOptions::stall_group_commits_after). In db_crash.cc.
void StallGroupCommitsAfter(db::DatabaseOptions& options, uint32_t groups);

// How many seeds a sweep runs: the environment variable `variable` when set (a larger sweep by
// hand), otherwise `ci_count`.
[[nodiscard]] uint64_t SweepSeeds(const char* variable, uint64_t ci_count);

}  // namespace sqloop::testing

// Registers `function` as workload `name` at static-initialisation time. The workload's object
// file must be linked whole (tests/sim.cmake uses an OBJECT library for that).
// Every run is wrapped in a ReplayOnFatal, so an internal assertion prints the replay line.
#define SQLOOP_REGISTER_WORKLOAD(name, description, function)                             \
  [[maybe_unused]] static const bool sqloop_workload_registered_##name =                  \
      ::sqloop::testing::RegisterWorkload(::sqloop::testing::Workload{                    \
          #name, description,                                                             \
          +[](uint64_t seed, const ::sqloop::testing::WorkloadOptions& options) {         \
            const ::sqloop::testing::ReplayOnFatal replay_on_fatal(#name, seed, options); \
            return function(seed, options);                                               \
          }})

#endif  // SQLOOP_TESTS_SIM_WORKLOAD_H_
