// alloc/heap_counter.h
// -----------------------------------------------------------------------------
//
// An opt-in counter of every heap allocation the process makes, so "heap allocations per
// operation" can be measured by benchmarks and asserted by tests.
//
// Linking the separate target `sqloop::heap_counter` replaces the global `operator new` /
// `operator delete` family and, except under AddressSanitizer (which must own malloc itself),
// the `malloc` family. Nothing else in sqloop links it; a host app links it only to measure.
//
// The counters are process-wide relaxed atomics: cheap enough to leave on in a benchmark
// (one uncontended atomic add per allocation), exact when read from a quiescent point.
//
// Example:
//
//   const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
//   RunManyOperations();
//   const uint64_t allocations =
//       sqloop::alloc::CurrentHeapCounts().allocations - before.allocations;
#ifndef SQLOOP_ALLOC_HEAP_COUNTER_H_
#define SQLOOP_ALLOC_HEAP_COUNTER_H_

#include <cstdint>

namespace sqloop::alloc {

struct HeapCounts {
  uint64_t allocations = 0;    // Calls that returned memory (new, malloc, calloc, realloc...).
  uint64_t deallocations = 0;  // Calls that released memory.
  uint64_t bytes = 0;          // Bytes requested by the allocations above.
};

// Returns the counts since process start.
[[nodiscard]] HeapCounts CurrentHeapCounts();

// True when the malloc family is counted too (false under AddressSanitizer, where only
// `operator new` is counted).
[[nodiscard]] bool HeapCounterCountsMalloc();

}  // namespace sqloop::alloc

#endif  // SQLOOP_ALLOC_HEAP_COUNTER_H_
