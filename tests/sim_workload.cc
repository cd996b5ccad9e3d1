#include "tests/sim_workload.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "alloc/check.h"
#include "io/prng.h"
#include "io/sim_backend.h"

namespace sqloop::testing {
namespace {

// Function-local, so registrations from other translation units' static initialisers never
// run before the registry exists.
std::vector<Workload>& Registry() {
  static auto* registry = new std::vector<Workload>();
  return *registry;
}

}  // namespace

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
  auto backend = std::make_unique<io::SimBackend>(sim_options);
  if (options.crash_drops_all) backend->disk().SetCrashProbabilities(0, 0, 0);
  SQLOOP_CHECK(backend->disk().MakeDirectory(directory) == 0,
               "FirstSimulator: could not create the directory on a fresh disk");
  return backend;
}

std::unique_ptr<io::SimBackend> RestartedSimulator(uint64_t seed,
                                                   std::shared_ptr<io::SimDisk> disk) {
  io::SimBackendOptions options;
  uint64_t derived = seed;
  options.seed = io::Prng::SplitMix64(derived);
  options.hang_is_error = true;
  return std::make_unique<io::SimBackend>(options, std::move(disk));
}

}  // namespace sqloop::testing
