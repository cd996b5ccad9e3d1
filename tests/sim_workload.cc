#include "tests/sim_workload.h"

#include <algorithm>
#include <cstdio>
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

std::unique_ptr<io::SimBackend> RestartedSimulator(uint64_t seed,
                                                   std::shared_ptr<io::SimDisk> disk) {
  io::SimBackendOptions options;
  uint64_t derived = seed;
  options.seed = io::Prng::SplitMix64(derived);
  options.hang_is_error = true;
  return std::make_unique<io::SimBackend>(options, std::move(disk));
}

}  // namespace sqloop::testing
