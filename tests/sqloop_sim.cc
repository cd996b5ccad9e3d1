// sqloop_sim: runs simulation workloads (tests/sim_workload.h) for one seed or a range.
//
//   sqloop_sim --list
//   sqloop_sim [--workload=NAME] --seed=N [options]      one seed: trace hash and summary
//   sqloop_sim [--workload=NAME] --seeds=A-B [options]   sweep; stops at the first failure and
//                                                        prints the command that replays it
// Options: --no_swarm (no faults), --no_swarm_config (the layer's default configuration),
//          --broken_fsync, --ack_before_fsync, --corrupt_payload, --stall_group_commits_after=N and
//          --fsyncs_before_hang=N (negative controls), --crash=drop_all, --wal_reserve_bytes=N
//          (the VFS's WAL reserve for every seed), --verbose (a line per seed in a sweep).
// A sweep ends with how many seeds ran each rare path (WorkloadResult::paths).
// Exit status: 0 all seeds ok, 1 a seed failed, 2 bad usage.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "sqloop/io/prng.h"
#include "tests/sim_workload.h"

namespace sqloop::testing {
namespace {

struct Flags {
  std::string workload = "file_append";
  bool list = false;
  bool sweep = false;
  bool verbose = false;
  bool keep_going = false;  // A sweep goes on past failures and counts them (the long sweep).
  uint64_t first = 0;
  uint64_t last = 0;
  WorkloadOptions options;
};

int Usage(const char* message) {
  std::fprintf(stderr,
               "sqloop_sim: %s\n"
               "usage: sqloop_sim [--workload=NAME] (--seed=N | --seeds=A-B) [--no_swarm]\n"
               "                  [--no_swarm_config] [--broken_fsync] [--ack_before_fsync]\n"
               "                  [--stall_group_commits_after=N] [--fsyncs_before_hang=N]\n"
               "                  [--corrupt_payload] [--crash=drop_all] [--wal_reserve_bytes=N]\n"
               "                  [--verbose] [--keep_going]\n"
               "       sqloop_sim --list\n",
               message);
  return 2;
}

// Accepts "--name=value" and "--name value".
bool Value(int argc, char** argv, int& i, absl::string_view name, absl::string_view& value) {
  const absl::string_view arg = argv[i];
  if (arg.substr(0, name.size()) != name) return false;
  if (arg.size() > name.size() && arg[name.size()] == '=') {
    value = arg.substr(name.size() + 1);
    return true;
  }
  if (arg.size() == name.size() && i + 1 < argc) {
    value = argv[++i];
    return true;
  }
  return false;
}

bool ParseRange(absl::string_view text, uint64_t& first, uint64_t& last) {
  const size_t dash = text.find('-');
  if (dash == absl::string_view::npos) return false;
  return absl::SimpleAtoi(text.substr(0, dash), &first) &&
         absl::SimpleAtoi(text.substr(dash + 1), &last) && first <= last;
}

// Returns 0 on success, else the exit status for a usage error.
int Parse(int argc, char** argv, Flags& flags) {
  bool seeded = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    absl::string_view value;
    if (arg == "--list") {
      flags.list = true;
    } else if (arg == "--no_swarm") {
      flags.options.swarm = false;
    } else if (arg == "--no_swarm_config") {
      flags.options.swarm_config = false;
    } else if (Value(argc, argv, i, "--stall_group_commits_after", value)) {
      if (!absl::SimpleAtoi(value, &flags.options.stall_group_commits_after)) {
        return Usage("--stall_group_commits_after wants a number");
      }
    } else if (Value(argc, argv, i, "--wal_reserve_bytes", value)) {
      if (!absl::SimpleAtoi(value, &flags.options.wal_reserve_bytes) ||
          flags.options.wal_reserve_bytes < 0) {
        return Usage("--wal_reserve_bytes wants a number of bytes");
      }
    } else if (Value(argc, argv, i, "--fsyncs_before_hang", value)) {
      if (!absl::SimpleAtoi(value, &flags.options.fsyncs_before_hang)) {
        return Usage("--fsyncs_before_hang wants a number");
      }
    } else if (arg == "--broken_fsync") {
      flags.options.broken_fsync = true;
    } else if (arg == "--corrupt_payload") {
      flags.options.corrupt_payload = true;
    } else if (arg == "--ack_before_fsync") {
      flags.options.ack_before_fsync = true;
    } else if (arg == "--keep_going") {
      flags.keep_going = true;
    } else if (arg == "--verbose") {
      flags.verbose = true;
    } else if (Value(argc, argv, i, "--workload", value)) {
      flags.workload = std::string(value);
    } else if (Value(argc, argv, i, "--crash", value)) {
      if (value != "drop_all" && value != "random") return Usage("--crash is drop_all or random");
      flags.options.crash_drops_all = value == "drop_all";
    } else if (Value(argc, argv, i, "--seeds", value)) {
      if (!ParseRange(value, flags.first, flags.last)) return Usage("--seeds wants A-B, A <= B");
      flags.sweep = seeded = true;
    } else if (Value(argc, argv, i, "--seed", value)) {
      if (!absl::SimpleAtoi(value, &flags.first)) return Usage("--seed wants a number");
      flags.last = flags.first;
      seeded = true;
    } else {
      return Usage(("unknown argument " + std::string(arg)).c_str());
    }
  }
  if (!flags.list && !seeded) return Usage("give --seed=N or --seeds=A-B");
  return 0;
}

// What a --keep_going sweep counts of its failing seeds.
struct Failures {
  uint64_t seeds = 0;
  uint64_t losses = 0;     // An acknowledged write, record or transaction was lost.
  uint64_t integrity = 0;  // PRAGMA integrity_check did not say "ok".
};

void PrintFailure(const char* binary, const Flags& flags, uint64_t seed,
                  const WorkloadResult& result) {
  std::printf("FAILED workload=%s seed=%" PRIu64 " trace=%016" PRIx64 "\n  %s\n  summary: %s\n",
              flags.workload.c_str(), seed, result.trace_hash, result.failure.c_str(),
              result.summary.c_str());
  std::printf("replay: %s\n", ReplayCommand(binary, flags.workload, seed, flags.options).c_str());
}

int Main(int argc, char** argv) {
  Flags flags;
  if (const int usage = Parse(argc, argv, flags); usage != 0) return usage;
  if (flags.list) {
    for (const Workload& workload : AllWorkloads()) {
      std::printf("%-16s %s\n", workload.name, workload.description);
    }
    return 0;
  }
  const Workload* workload = FindWorkload(flags.workload);
  if (workload == nullptr) return Usage(("no workload named " + flags.workload).c_str());
  SetReplayBinary(argv[0]);
  uint64_t possible = 0;
  uint64_t happened = 0;
  std::map<std::string, uint64_t> seeds_per_path;
  std::map<std::string, uint64_t> runs_per_path;  // Total count over the sweep.
  uint64_t acked_checked = 0;
  Failures failures;
  for (uint64_t seed = flags.first;; ++seed) {
    const WorkloadResult result = workload->run(seed, flags.options);
    possible += result.loss_possible ? 1 : 0;
    happened += result.loss_happened ? 1 : 0;
    acked_checked += result.acked_checked;
    for (const auto& [path, count] : result.paths) {
      seeds_per_path[path] += count > 0 ? 1 : 0;
      runs_per_path[path] += count;
    }
    if (!result.ok) {
      PrintFailure(argv[0], flags, seed, result);
      if (!flags.keep_going) return 1;
      ++failures.seeds;
      failures.losses += absl::StrContains(result.failure, " is lost") ? 1 : 0;
      failures.integrity += absl::StrContains(result.failure, "integrity_check") ? 1 : 0;
    } else if (!flags.sweep || flags.verbose) {
      std::printf("ok workload=%s seed=%" PRIu64 " prng=v%u trace=%016" PRIx64 "\n  %s\n",
                  flags.workload.c_str(), seed, io::kPrngVersion, result.trace_hash,
                  result.summary.c_str());
    }
    if (seed == flags.last) break;
  }
  if (flags.sweep) {
    std::printf("%s", failures.seeds == 0 ? "" : "NOT ");
    std::printf("ok workload=%s seeds=%" PRIu64 "-%" PRIu64 " (%" PRIu64
                " seeds; acknowledged data at risk at the crash in %" PRIu64 ", lost in %" PRIu64
                ")\n",
                flags.workload.c_str(), flags.first, flags.last, flags.last - flags.first + 1,
                possible, happened);
    const uint64_t seeds = flags.last - flags.first + 1;
    std::printf("  failed seeds: %" PRIu64 " (acknowledged data lost: %" PRIu64
                ", integrity_check failed: %" PRIu64 ")\n",
                failures.seeds, failures.losses, failures.integrity);
    std::printf("  acknowledged and checked after recovery: %" PRIu64 "\n", acked_checked);
    for (const auto& [path, count] : seeds_per_path) {
      std::printf("  %-26s ran in %6" PRIu64 " seeds (%5.1f %%), %" PRIu64 " times\n", path.c_str(),
                  count, 100.0 * static_cast<double>(count) / static_cast<double>(seeds),
                  runs_per_path[path]);
    }
  }
  return failures.seeds == 0 ? 0 : 1;
}

}  // namespace
}  // namespace sqloop::testing

int main(int argc, char** argv) { return sqloop::testing::Main(argc, argv); }
