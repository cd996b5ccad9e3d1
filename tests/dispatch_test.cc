// Tests of the dispatch workload (bench/dispatch/workload.h): every variant, with and without
// syscalls, makes exactly the study's I/O calls, echoes every request, and allocates only what
// its design says it allocates.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "bench/dispatch/workload.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench::dispatch {
namespace {

using ::testing::Combine;
using ::testing::TestParamInfo;
using ::testing::Values;

class DispatchTest : public ::testing::TestWithParam<std::tuple<Variant, bool>> {
 protected:
  Variant variant() const { return std::get<0>(GetParam()); }
  bool syscalls() const { return std::get<1>(GetParam()); }
};

TEST_P(DispatchTest, MakesExactlyTheStudysCallCounts) {
  Workload workload(WorkloadOptions{variant(), syscalls()});
  // Twice: the second iteration must not depend on state left by the first.
  for (int iteration = 0; iteration < 2; ++iteration) {
    const CallCounts counts = workload.RunOnce();
    EXPECT_EQ(counts, kExpectedCallCounts) << "iteration " << iteration << ": " << ToString(counts)
                                           << ", expected " << ToString(kExpectedCallCounts);
  }
}

TEST_P(DispatchTest, EveryConnectionEchoesItsRequestExactly) {
  Workload workload(WorkloadOptions{variant(), syscalls()});
  EchoLog echo_log;
  workload.set_echo_log(&echo_log);
  (void)workload.RunOnce();
  for (uint32_t id = 0; id < kConnections; ++id) {
    EXPECT_EQ(echo_log.echo(id), kRequest) << "connection " << id;
  }
  // And again, so the second iteration's connections are checked too.
  echo_log.Clear();
  (void)workload.RunOnce();
  for (uint32_t id = 0; id < kConnections; ++id) {
    EXPECT_EQ(echo_log.echo(id), kRequest) << "second iteration, connection " << id;
  }
}

TEST_P(DispatchTest, AllocatesOnlyCoroutineFramesFromTheHeap) {
  Workload workload(WorkloadOptions{variant(), syscalls()});
  (void)workload.RunOnce();  // Warm-up: nothing lazily allocated may be counted.
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  (void)workload.RunOnce();
  const alloc::HeapCounts after = alloc::CurrentHeapCounts();
  const uint64_t allocations = after.allocations - before.allocations;
  // One frame per task (the listener and each connection) when frames come from operator new;
  // none for the state machine and the pooled frames. Coroutine frames go through operator new,
  // which is counted even under AddressSanitizer.
  const bool heap_frames = variant() == Variant::kCoro || variant() == Variant::kCoroLarge;
  EXPECT_EQ(allocations, heap_frames ? kConnections + 1 : 0u);
  EXPECT_EQ(after.deallocations - before.deallocations, allocations);
}

TEST(DispatchVariantTest, NamesMatchTheBenchmarkNames) {
  EXPECT_STREQ(VariantName(Variant::kManual), "manual");
  EXPECT_STREQ(VariantName(Variant::kCoro), "coro");
  EXPECT_STREQ(VariantName(Variant::kCoroPool), "coro_pool");
  EXPECT_STREQ(VariantName(Variant::kCoroLarge), "coro_large");
  EXPECT_STREQ(VariantName(Variant::kFloor), "floor");
}

INSTANTIATE_TEST_SUITE_P(AllVariants, DispatchTest,
                         Combine(Values(Variant::kManual, Variant::kCoro, Variant::kCoroPool,
                                        Variant::kCoroLarge, Variant::kFloor),
                                 Values(false, true)),
                         [](const TestParamInfo<DispatchTest::ParamType>& param_info) {
                           return std::string(VariantName(std::get<0>(param_info.param))) +
                                  (std::get<1>(param_info.param) ? "_syscalls" : "");
                         });

}  // namespace
}  // namespace sqloop::bench::dispatch
