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
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace sqloop::io {
class SimBackend;
class SimDisk;
}  // namespace sqloop::io

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
[[nodiscard]] std::unique_ptr<io::SimBackend> RestartedSimulator(uint64_t seed,
                                                                 std::shared_ptr<io::SimDisk> disk);

// The sqloop_sim command line that replays (workload, seed, options), e.g.
// "build/debug/tests/sqloop_sim --workload=file_append --seed=1234".
[[nodiscard]] std::string ReplayCommand(absl::string_view binary, absl::string_view workload,
                                        uint64_t seed, const WorkloadOptions& options);

// For a sweep's failure message: "seed 1234; replay: <ReplayCommand>".
[[nodiscard]] std::string ReplayLine(absl::string_view binary, absl::string_view workload,
                                     uint64_t seed, const WorkloadOptions& options);

// The workload called `name`; a missing one (its .cc not linked) is a build error, so aborts.
[[nodiscard]] const Workload& RegisteredWorkload(absl::string_view name);

// How many seeds a sweep runs: the environment variable `variable` when set (a larger sweep by
// hand), otherwise `ci_count`.
[[nodiscard]] uint64_t SweepSeeds(const char* variable, uint64_t ci_count);

}  // namespace sqloop::testing

// Registers `function` as workload `name` at static-initialisation time. The workload's object
// file must be linked whole (tests/sim.cmake uses an OBJECT library for that).
#define SQLOOP_REGISTER_WORKLOAD(name, description, function)            \
  [[maybe_unused]] static const bool sqloop_workload_registered_##name = \
      ::sqloop::testing::RegisterWorkload(                               \
          ::sqloop::testing::Workload{#name, description, function})

#endif  // SQLOOP_TESTS_SIM_WORKLOAD_H_
