// Crash safety of the SQLite layer under the simulator (tests/workloads/db_crash.cc): seeds
// sweep random workloads, faults and crash points; each failure prints its replay command.
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "tests/sim_workload.h"

namespace sqloop::testing {
namespace {

#ifndef SQLOOP_SIM_BINARY
#define SQLOOP_SIM_BINARY "sqloop_sim"
#endif

// 500 seeds in CI; SQLOOP_DB_CRASH_SEEDS=N runs a larger sweep by hand
// (or: sqloop_sim --workload=db_crash --seeds=1-100000).
uint64_t SeedCount() { return SweepSeeds("SQLOOP_DB_CRASH_SEEDS", 500); }

std::string Replay(uint64_t seed, const WorkloadOptions& options) {
  return ReplayLine(SQLOOP_SIM_BINARY, "db_crash", seed, options);
}

const Workload& DbCrash() { return RegisteredWorkload("db_crash"); }

// Each seed also draws its configuration (checkpoint frequency, group size, write-behind
// limits, ...), so the database's rare paths run in a good share of the sweep; the sweep
// asserts each ran in at least its share of seeds (measured: about twice these over seeds
// 1-1500), so a change that stops exercising one is noticed. Every seed ends with the
// fault-free liveness phase.
TEST(DbCrashTest, EveryAcknowledgedTransactionSurvivesEveryCrash) {
  const WorkloadOptions options;  // Swarm: each seed draws its own fault mix and configuration.
  const std::map<std::string, double> share_min = {
      {"checkpoint", 0.20},
      {"multi_group_round", 0.15},
      {"read_yield", 0.25},
      {"submit_refused", 0.05},
      // Multi-statement transactions (db::Request::batch), and ones whose last statement
      // conflicts after the others wrote.
      {"batch", 0.4},
      {"batch_conflict", 0.1},
      // Rounds that started with the writer closed, as a trim closes it (measured: 39 % of
      // seeds 1-2000).
      {"writer_closed_idle", 0.2},
      {"backpressure", 0.015},
      {"group_retry", 0.015},
      // A group that read a page not in the simulator's page cache, rolled back and ran again
      // after its fetch (measured: 2.6% of seeds 1-500, 2.0% of 1-1500).
      {"group_restart", 0.01},
      {"fsync_failed", 0.02},
      {"metadata_fault", 0.015},
      // The fault classes above the disk (tests/workloads/db_crash_support.h) and the device
      // that keeps failing (SimFaults::device_failure); measured over seeds 1-1000 at about
      // twice these.
      {"sqlite_oom", 0.10},
      {"oom_then_acked", 0.03},
      {"corruption", 0.08},
      {"corruption_detected", 0.03},
      {"recovery_crash", 0.15},
      {"recovery_crash_while_open", 0.05},
      {"persistent_eio", 0.01},
      // The recovering open found frames in the WAL and read it ahead (measured: 66 % of seeds
      // 1-2000).
      {"wal_warmed", 0.4},
  };
  std::map<std::string, uint64_t> seeds_per_path;
  for (uint64_t seed = 1; seed <= SeedCount(); ++seed) {
    const WorkloadResult result = DbCrash().run(seed, options);
    ASSERT_TRUE(result.ok) << result.failure << "\n  " << result.summary << "\n  "
                           << Replay(seed, options);
    for (const auto& [path, count] : result.paths) seeds_per_path[path] += count > 0 ? 1 : 0;
  }
  for (const auto& [path, share] : share_min) {
    const uint64_t seeds = seeds_per_path[path];
    std::printf("rare path %-18s ran in %4llu of %llu seeds\n", path.c_str(),
                static_cast<unsigned long long>(seeds),
                static_cast<unsigned long long>(SeedCount()));
    EXPECT_GE(static_cast<double>(seeds), share * static_cast<double>(SeedCount()))
        << "rare path " << path << " ran in only " << seeds << " of " << SeedCount() << " seeds";
  }
}

// The liveness negative control: a database that stops starting group commits after the third
// must fail the fault-free liveness phase on every seed, with the stuck requests named
// (DatabaseOptions::stop_group_commits_after_for_testing).
TEST(DbCrashTest, NegativeControlStalledGroupCommitsFailLiveness) {
  const WorkloadOptions options{.stall_group_commits_after = 3};
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const WorkloadResult result = DbCrash().run(seed, options);
    EXPECT_FALSE(result.ok) << "a stalled database passed: " << result.summary << "\n  "
                            << Replay(seed, options);
    EXPECT_TRUE(absl::StrContains(result.failure, "liveness"))
        << result.failure << "\n  " << Replay(seed, options);
  }
}

// The corruption negative control: a byte inside an acknowledged value, in the durable
// database file, flipped before the restart (WorkloadOptions::corrupt_payload). No SQLite check
// sees it (pages carry no checksum), so the database serves the corrupted page as good data;
// the checker must catch the wrong answer on most seeds where the byte was found (the rest had
// a newer copy of the page in the WAL, which is what SQLite reads).
TEST(DbCrashTest, NegativeControlCorruptedPayloadServedAsGoodDataIsCaught) {
  const WorkloadOptions options{.corrupt_payload = true};
  uint64_t corrupted = 0;
  uint64_t caught = 0;
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    const WorkloadResult result = DbCrash().run(seed, options);
    if (!result.paths.contains("payload_corrupted")) {
      ASSERT_TRUE(result.ok) << result.failure << "\n  " << Replay(seed, options);
      continue;
    }
    ++corrupted;
    caught += result.ok ? 0 : 1;
  }
  EXPECT_GE(corrupted, 20u) << "the negative control rarely found a value to corrupt";
  EXPECT_GE(caught * 10, corrupted * 6) << "caught " << caught << " of " << corrupted;
  std::printf("corruption negative control: caught %llu of %llu corrupted seeds\n",
              static_cast<unsigned long long>(caught), static_cast<unsigned long long>(corrupted));
}

TEST(DbCrashTest, SameSeedSameTrace) {
  const WorkloadOptions options;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const WorkloadResult first = DbCrash().run(seed, options);
    const WorkloadResult second = DbCrash().run(seed, options);
    ASSERT_EQ(first.trace_hash, second.trace_hash) << "nondeterministic: " << Replay(seed, options);
    ASSERT_EQ(first.summary, second.summary) << Replay(seed, options);
  }
}

// The negative control: acknowledging at COMMIT, before the covering fsync, with a crash that
// drops everything not yet durable. The checker must never raise a false alarm, and must catch
// the loss on the seeds where an acknowledged transaction was not durable at the crash. The
// oracle reads the durable epoch at the crash; an fsync that completed in the same tick as the
// crash but whose callback had not run yet makes it pessimistic, so a small share of
// "possible" seeds may legitimately survive.
TEST(DbCrashTest, NegativeControlAckBeforeFsyncIsCaught) {
  const WorkloadOptions options{.swarm = false, .ack_before_fsync = true, .crash_drops_all = true};
  uint64_t possible = 0;
  uint64_t caught = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const WorkloadResult result = DbCrash().run(seed, options);
    if (!result.loss_possible) {
      ASSERT_TRUE(result.ok) << "false alarm: " << result.failure << "\n  " << result.summary
                             << "\n  " << Replay(seed, options);
      continue;
    }
    ++possible;
    caught += result.ok ? 0 : 1;
  }
  EXPECT_GT(possible, 20u) << "the negative control rarely had anything to lose";
  EXPECT_GE(caught * 10, possible * 9) << "caught " << caught << " of " << possible;
  std::printf("negative control: caught %llu of %llu seeds where loss was possible\n",
              static_cast<unsigned long long>(caught), static_cast<unsigned long long>(possible));
}

}  // namespace
}  // namespace sqloop::testing
