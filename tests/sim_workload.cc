#include "tests/sim_workload.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/prng.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/loop/loop.h"

#ifndef SQLOOP_SIM_BINARY
#define SQLOOP_SIM_BINARY "sqloop_sim"
#endif

namespace sqloop::testing {
namespace {

// Function-local, so registrations from other translation units' static initialisers never
// run before the registry exists.
std::vector<Workload>& Registry() {
  static auto* registry = new std::vector<Workload>();
  return *registry;
}

// What the fatal hook prints. A fixed buffer, filled before the run: the hook runs after a
// failed check, where allocating could fail again.
constexpr size_t kReplayLineBytesMax = 1024;
char replay_line[kReplayLineBytesMax] = "";
std::string& ReplayBinary() {
  static auto* binary = new std::string(SQLOOP_SIM_BINARY);
  return *binary;
}

void PrintReplayLine() {
  if (replay_line[0] != '\0') std::fprintf(stderr, "  %s\n", replay_line);
}

void SetReplayLine(absl::string_view line) {
  const size_t size = std::min(line.size(), kReplayLineBytesMax - 1);
  std::copy_n(line.data(), size, replay_line);
  replay_line[size] = '\0';
}

}  // namespace

void SetReplayBinary(absl::string_view binary) { ReplayBinary() = std::string(binary); }

ReplayOnFatal::ReplayOnFatal(absl::string_view workload, uint64_t seed,
                             const WorkloadOptions& options)
    : previous_(replay_line) {
  SetReplayLine(ReplayLine(ReplayBinary(), workload, seed, options));
  internal::SetFatalHook(&PrintReplayLine);
}

ReplayOnFatal::~ReplayOnFatal() {
  SetReplayLine(previous_);
  if (previous_.empty()) internal::SetFatalHook(nullptr);
}

absl::Status RunPhase(loop::Loop& loop, absl::string_view phase, int64_t budget_ns,
                      const std::function<std::string()>& stuck) {
  const int64_t start_ns = loop.now_ns();
  while (loop.pending() > 0) {
    if (loop.now_ns() - start_ns > budget_ns) {
      return absl::DeadlineExceededError(
          absl::StrCat(phase, " did not finish within ", budget_ns / 1'000'000,
                       " ms of virtual time", stuck ? absl::StrCat(": ", stuck()) : std::string(),
                       " (", loop.pending(), " loop operations pending)"));
    }
    if (absl::Status status = loop.Run(loop::RunMode::kOnce); !status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat(phase, ": ", status.message(),
                                       stuck ? absl::StrCat("; ", stuck()) : std::string()));
    }
  }
  return absl::OkStatus();
}

void KillStuckPhase(io::SimBackend& sim, std::unique_ptr<loop::Loop>& loop) {
  // A second of virtual time: everything in flight failed at once; only a layer that keeps
  // re-arming work without end is still busy after it.
  constexpr int64_t kTeardownBudgetNs = 1'000'000'000;
  sim.Crash();
  if (!RunPhase(*loop, "ending the stuck phase", kTeardownBudgetNs).ok()) Abandon(std::move(loop));
}

void KeepReachable(const void* object) {
  static auto* graveyard = new std::vector<const void*>();
  graveyard->push_back(object);
}

bool RegisterWorkload(const Workload& workload) {
  SQLOOP_CHECK(FindWorkload(workload.name) == nullptr,
               "RegisterWorkload: two workloads share a name");
  Registry().push_back(workload);
  return true;
}

const Workload* FindWorkload(absl::string_view name) {
  for (const Workload& workload : Registry()) {
    if (name == workload.name) return &workload;
  }
  return nullptr;
}

std::vector<Workload> AllWorkloads() {
  std::vector<Workload> workloads = Registry();
  std::sort(workloads.begin(), workloads.end(), [](const Workload& a, const Workload& b) {
    return absl::string_view(a.name) < absl::string_view(b.name);
  });
  return workloads;
}

std::string ReplayCommand(absl::string_view binary, absl::string_view workload, uint64_t seed,
                          const WorkloadOptions& options) {
  std::string command(binary);
  command += " --workload=";
  command.append(workload.data(), workload.size());
  command += " --seed=" + std::to_string(seed);
  if (!options.swarm) command += " --no_swarm";
  if (options.broken_fsync) command += " --broken_fsync";
  if (options.ack_before_fsync) command += " --ack_before_fsync";
  if (options.crash_drops_all) command += " --crash=drop_all";
  if (!options.swarm_config) command += " --no_swarm_config";
  if (options.fsyncs_before_hang >= 0) {
    command += " --fsyncs_before_hang=" + std::to_string(options.fsyncs_before_hang);
  }
  if (options.stall_group_commits_after != 0) {
    command += " --stall_group_commits_after=" + std::to_string(options.stall_group_commits_after);
  }
  if (options.corrupt_payload) command += " --corrupt_payload";
  if (options.wal_reserve_bytes >= 0) {
    command += " --wal_reserve_bytes=" + std::to_string(options.wal_reserve_bytes);
  }
  return command;
}

std::string ReplayLine(absl::string_view binary, absl::string_view workload, uint64_t seed,
                       const WorkloadOptions& options) {
  return "seed " + std::to_string(seed) +
         "; replay: " + ReplayCommand(binary, workload, seed, options);
}

const Workload& RegisteredWorkload(absl::string_view name) {
  const Workload* workload = FindWorkload(name);
  SQLOOP_CHECK(workload != nullptr, "RegisteredWorkload: no such workload is linked in");
  return *workload;
}

uint64_t SweepSeeds(const char* variable, uint64_t ci_count) {
  const char* value = std::getenv(variable);
  return value != nullptr ? std::strtoull(value, nullptr, 10) : ci_count;
}

std::unique_ptr<io::SimBackend> FirstSimulator(uint64_t seed, const WorkloadOptions& options,
                                               const char* directory) {
  io::SimBackendOptions sim_options;
  sim_options.seed = seed;
  sim_options.swarm = options.swarm;
  sim_options.hang_is_error = true;
  sim_options.disk.broken_fsync = options.broken_fsync;
  sim_options.fsyncs_before_hang = options.fsyncs_before_hang;
  auto backend = std::make_unique<io::SimBackend>(sim_options);
  if (options.crash_drops_all) backend->disk().SetCrashProbabilities(0, 0, 0);
  SQLOOP_CHECK(backend->disk().MakeDirectory(directory) == 0,
               "FirstSimulator: could not create the directory on a fresh disk");
  return backend;
}

std::unique_ptr<io::SimBackend> RestartedSimulator(uint64_t seed, std::shared_ptr<io::SimDisk> disk,
                                                   const WorkloadOptions& workload) {
  io::SimBackendOptions options;
  uint64_t derived = seed;
  options.seed = io::Prng::SplitMix64(derived);
  options.hang_is_error = true;
  options.fsyncs_before_hang = workload.fsyncs_before_hang;
  return std::make_unique<io::SimBackend>(options, std::move(disk));
}

}  // namespace sqloop::testing
