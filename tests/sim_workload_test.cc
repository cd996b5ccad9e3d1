// Simulation workloads end to end: determinism (same seed, same trace), golden traces (the
// trace does not depend on machine or build), the file_append crash checker, and its negative
// control (with fsync broken, the checker catches every loss).
//
// Every failure prints the seed and the sqloop_sim command that replays it.
#include "tests/sim_workload.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace sqloop::testing {
namespace {

#ifndef SQLOOP_SIM_BINARY
#define SQLOOP_SIM_BINARY "sqloop_sim"
#endif

// 256 seeds (the issue asks for at least 200): about a second in a debug build per pass.
constexpr uint64_t kSeedsFirst = 1;
constexpr uint64_t kSeedsLast = 256;

std::string Replay(uint64_t seed, const WorkloadOptions& options) {
  return ReplayLine(SQLOOP_SIM_BINARY, "file_append", seed, options);
}

const Workload& FileAppend() { return RegisteredWorkload("file_append"); }

TEST(SimWorkloadTest, RegistryFindsWorkloadsByName) {
  EXPECT_NE(FindWorkload("file_append"), nullptr);
  EXPECT_EQ(FindWorkload("no_such_workload"), nullptr);
  EXPECT_FALSE(AllWorkloads().empty());
  EXPECT_EQ(ReplayCommand("bin/sqloop_sim", "file_append", 7,
                          WorkloadOptions{.swarm = false, .broken_fsync = true}),
            "bin/sqloop_sim --workload=file_append --seed=7 --no_swarm --broken_fsync");
}

// Every seed, run twice, gives the same trace; and every seed passes the crash checker.
TEST(SimWorkloadTest, EverySeedIsDeterministicAndKeepsEveryAcknowledgedRecord) {
  for (const bool swarm : {true, false}) {
    const WorkloadOptions options{.swarm = swarm};
    for (uint64_t seed = kSeedsFirst; seed <= kSeedsLast; ++seed) {
      const WorkloadResult first = FileAppend().run(seed, options);
      const WorkloadResult second = FileAppend().run(seed, options);
      ASSERT_EQ(first.trace_hash, second.trace_hash)
          << "nondeterministic: " << Replay(seed, options);
      ASSERT_EQ(first.summary, second.summary) << Replay(seed, options);
      ASSERT_TRUE(first.ok) << first.failure << "\n  " << first.summary << "\n  "
                            << Replay(seed, options);
      ASSERT_FALSE(first.loss_possible) << "acked but not durable: " << Replay(seed, options);
    }
  }
}

// The traces of two seeds, pinned. They depend only on the simulator, the loop and the
// workload, never on the machine, compiler, build type or time of day, so every build (debug,
// release, sanitizers) must reproduce them. Seed 21 was picked because its swarm mix has short
// writes, EINTR retries, injected read errors and a torn write at the crash; seed 2 is a plain
// run without faults. A change that alters the event order on purpose (the simulator, the
// loop's tick, the workload or kPrngVersion) updates them and says why in its description.
TEST(SimWorkloadTest, GoldenTracesArePinned) {
  EXPECT_EQ(FileAppend().run(21, WorkloadOptions{}).trace_hash, 0x8b0c622db4dd99efULL)
      << Replay(21, WorkloadOptions{});
  EXPECT_EQ(FileAppend().run(2, WorkloadOptions{.swarm = false}).trace_hash, 0x7d3dcf5137af51c6ULL)
      << Replay(2, WorkloadOptions{.swarm = false});
}

// The negative control, exact form: the crash drops everything not durable, so "loss
// possible" (some acknowledged record was not made durable by a real fsync when the crash
// came, per the disk's own bookkeeping) means the loss certainly happened. The checker must
// flag exactly those seeds: all of them (no missed loss) and only them (no false alarm).
TEST(SimWorkloadTest, NegativeControlCatchesEveryPossibleLossWhenTheCrashDropsEverything) {
  const WorkloadOptions options{.broken_fsync = true, .crash_drops_all = true};
  uint64_t possible = 0;
  for (uint64_t seed = kSeedsFirst; seed <= kSeedsLast; ++seed) {
    const WorkloadResult result = FileAppend().run(seed, options);
    possible += result.loss_possible ? 1 : 0;
    ASSERT_EQ(result.loss_possible, result.loss_happened) << Replay(seed, options);
    ASSERT_EQ(result.ok, !result.loss_possible)
        << (result.ok ? "the checker missed a loss: " : "false alarm: ") << result.failure << "\n  "
        << result.summary << "\n  " << Replay(seed, options);
  }
  // Not vacuous: most seeds acknowledge something before the crash.
  EXPECT_GT(possible, (kSeedsLast - kSeedsFirst + 1) / 2);
}

// The negative control under the ordinary crash model, where the crash may keep some or all of
// the non-durable data by luck: the checker must flag exactly the seeds where acknowledged
// bytes really came back damaged or missing (per the disk), and such seeds must be common.
TEST(SimWorkloadTest, NegativeControlCatchesEveryLossThatHappened) {
  const WorkloadOptions options{.broken_fsync = true};
  uint64_t happened = 0;
  for (uint64_t seed = kSeedsFirst; seed <= kSeedsLast; ++seed) {
    const WorkloadResult result = FileAppend().run(seed, options);
    happened += result.loss_happened ? 1 : 0;
    ASSERT_TRUE(result.loss_possible || !result.loss_happened) << Replay(seed, options);
    ASSERT_EQ(result.ok, !result.loss_happened)
        << (result.ok ? "the checker missed a loss: " : "false alarm: ") << result.failure << "\n  "
        << result.summary << "\n  " << Replay(seed, options);
  }
  EXPECT_GT(happened, (kSeedsLast - kSeedsFirst + 1) / 4);
}

}  // namespace
}  // namespace sqloop::testing
