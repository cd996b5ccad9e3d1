// bench/alloc_bench.cc: small-object churn, the allocation pattern of per-request scratch.
//
// Each "request" makes N small allocations (16-256 bytes, sizes from a fixed pseudo-random
// sequence), touches each one, then releases them all at once. Variants:
//   alloc/malloc/N         malloc + free of every block: the baseline.
//   alloc/pmr_monotonic/N  std::pmr::monotonic_buffer_resource over a 64 KiB upstream buffer,
//                          release() per request.
//   alloc/arena/N          sqloop::alloc::Arena with a 64 KiB first chunk, Reset() per request.
// items_per_second counts allocations, so 1/items_per_second is the time per allocation.
// allocs_per_op is heap allocations (sqloop::heap_counter) per allocation performed: 1 for
// malloc, 0 for the other two once warm.
#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory_resource>
#include <vector>

#include "sqloop/alloc/arena.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/heap_counter.h"

namespace {

// The size range of "small objects": a list node at the low end, a short row at the high end.
constexpr uint32_t kSizeBytesMin = 16;
constexpr uint32_t kSizeBytesMax = 256;
// The most allocations a request makes (requests make 10 to 100).
constexpr size_t kRequestAllocationsMax = 100;
// Covers the largest request (100 x 256 bytes plus alignment padding) so neither the pmr
// resource nor the arena ever goes back to the heap inside the timed loop.
constexpr size_t kScratchBytes = 64 * 1024;
// Enough sizes that the sequence does not repeat within a request; a power of two so the
// index wraps with a mask.
constexpr size_t kSequenceLength = 4096;
// Any fixed odd constant: the sequence is the same in every run and on every machine.
constexpr uint32_t kSeed = 0x9e3779b9U;

// xorshift32 (Marsaglia): tiny, fixed, and versioned by this file, unlike std:: distributions.
uint32_t NextRandom(uint32_t& state) {
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

const std::array<uint16_t, kSequenceLength>& Sizes() {
  static const auto sizes = [] {
    std::array<uint16_t, kSequenceLength> out{};
    uint32_t state = kSeed;
    for (auto& size : out) {
      size = static_cast<uint16_t>(kSizeBytesMin +
                                   NextRandom(state) % (kSizeBytesMax - kSizeBytesMin + 1));
    }
    return out;
  }();
  return sizes;
}

// Runs the churn with `allocate(size)` per allocation and `release(pointers, count)` per
// request, and reports time per allocation and heap allocations per allocation.
template <typename Allocate, typename Release>
void RunChurn(benchmark::State& state, Allocate allocate, Release release) {
  const auto allocations_per_request = static_cast<size_t>(state.range(0));
  SQLOOP_CHECK(allocations_per_request <= kRequestAllocationsMax, "bench: request too large");
  const auto& sizes = Sizes();
  std::array<void*, kRequestAllocationsMax> pointers{};
  size_t next = 0;
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  for (auto _ : state) {
    for (size_t i = 0; i < allocations_per_request; ++i) {
      void* pointer = allocate(sizes[next]);
      next = (next + 1) & (kSequenceLength - 1);
      // Touch the block, as a real user would, and keep the compiler from eliding it.
      *static_cast<unsigned char*>(pointer) = static_cast<unsigned char>(i);
      benchmark::DoNotOptimize(pointer);
      pointers[i] = pointer;
    }
    release(pointers.data(), allocations_per_request);
    benchmark::ClobberMemory();
  }
  const sqloop::alloc::HeapCounts after = sqloop::alloc::CurrentHeapCounts();
  const auto performed = static_cast<int64_t>(state.iterations() * allocations_per_request);
  state.SetItemsProcessed(performed);
  state.counters["allocs_per_op"] =
      benchmark::Counter(static_cast<double>(after.allocations - before.allocations) /
                         static_cast<double>(performed > 0 ? performed : 1));
}

void BM_Malloc(benchmark::State& state) {
  RunChurn(
      state, [](size_t size) { return std::malloc(size); },
      [](void** pointers, size_t count) {
        for (size_t i = 0; i < count; ++i) std::free(pointers[i]);
      });
}

void BM_PmrMonotonic(benchmark::State& state) {
  std::vector<std::byte> upstream(kScratchBytes);
  std::pmr::monotonic_buffer_resource resource(upstream.data(), upstream.size());
  RunChurn(
      state, [&resource](size_t size) { return resource.allocate(size, alignof(max_align_t)); },
      [&resource](void**, size_t) { resource.release(); });
}

void BM_Arena(benchmark::State& state) {
  sqloop::alloc::Arena arena({.name = "bench", .first_chunk_bytes = kScratchBytes});
  // Take the first chunk before counting, as the pmr variant's buffer is allocated up front.
  SQLOOP_CHECK(arena.Allocate(1).ok(), "bench: warm-up allocation");
  arena.Reset();
  RunChurn(
      state,
      [&arena](size_t size) {
        absl::StatusOr<void*> pointer = arena.Allocate(size);
        SQLOOP_CHECK(pointer.ok(), "bench: the arena has no limit and cannot fail");
        return *pointer;
      },
      [&arena](void**, size_t) { arena.Reset(); });
}

// Request sizes: the two ends of the 10-100 range and one in between.
void RequestSizes(benchmark::internal::Benchmark* benchmark) {
  benchmark->Arg(10)->Arg(32)->Arg(100);
}

BENCHMARK(BM_Malloc)->Name("alloc/malloc")->Apply(RequestSizes);
BENCHMARK(BM_PmrMonotonic)->Name("alloc/pmr_monotonic")->Apply(RequestSizes);
BENCHMARK(BM_Arena)->Name("alloc/arena")->Apply(RequestSizes);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // bench/report.py divides every alloc/* result by the alloc/malloc result of the same run.
  benchmark::AddCustomContext("baseline:alloc", "malloc");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
