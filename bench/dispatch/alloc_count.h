// bench/dispatch/alloc_count.h
// -----------------------------------------------------------------------------
//
// Heap allocations of sqloop_bench_dispatch, counted in an untimed pass so that the timed pass
// runs at the speed of the ordinary operator new.
//
// sqloop::heap_counter (alloc/heap_counter.h) makes three atomic updates per call: fine for the
// SQLite benchmarks, where a call is a small part of an operation, but the dispatch workload
// allocates one coroutine frame per connection, and with the counter linked `coro` and
// `coro_large` measured 20-25 % slower than with plain glibc. So this binary links this file
// instead: it replaces the global operator new and delete with calls to malloc and free that
// count only between StartCountingAllocations() and StopCountingAllocations(). Outside that
// window the cost is one predictable branch per call against the libstdc++ operator new it
// replaces (which also just calls malloc). Only operator new is counted: the coroutine frames
// are the workload's only allocations (tests/dispatch_test.cc checks that with heap_counter).
//
// Example:
//
//   StartCountingAllocations();
//   (void)workload.RunOnce();  // The untimed pass.
//   const AllocationCounts counts = StopCountingAllocations();
#ifndef SQLOOP_BENCH_DISPATCH_ALLOC_COUNT_H_
#define SQLOOP_BENCH_DISPATCH_ALLOC_COUNT_H_

#include <cstdint>

namespace sqloop::bench::dispatch {

struct AllocationCounts {
  uint64_t allocations = 0;  // operator new calls that returned memory.
  uint64_t bytes = 0;        // Bytes they requested.
};

// Starts counting from zero. Single-threaded: the benchmark's own thread only.
void StartCountingAllocations();

// Stops counting and returns what was counted since StartCountingAllocations().
[[nodiscard]] AllocationCounts StopCountingAllocations();

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_ALLOC_COUNT_H_
