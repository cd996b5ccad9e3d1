#include "bench/dispatch/alloc_count.h"

#include <cstdlib>
#include <new>

namespace sqloop::bench::dispatch {
namespace {

// Plain globals: counting happens on the benchmark's thread only, in the untimed pass.
bool counting = false;
AllocationCounts counts;

void* Allocate(size_t bytes) {
  if (counting) {
    ++counts.allocations;
    counts.bytes += bytes;
  }
  // malloc(0) may return null; operator new must not.
  void* memory = std::malloc(bytes == 0 ? 1 : bytes);
  if (memory == nullptr) throw std::bad_alloc();
  return memory;
}

}  // namespace

void StartCountingAllocations() {
  counts = AllocationCounts{};
  counting = true;
}

AllocationCounts StopCountingAllocations() {
  counting = false;
  return counts;
}

}  // namespace sqloop::bench::dispatch

// The replaceable global allocation functions ([replacement.functions]); the aligned forms
// keep the library's own, which pair among themselves.
void* operator new(size_t bytes) { return sqloop::bench::dispatch::Allocate(bytes); }
void* operator new[](size_t bytes) { return sqloop::bench::dispatch::Allocate(bytes); }
void* operator new(size_t bytes, const std::nothrow_t& /*tag*/) noexcept {
  try {
    return sqloop::bench::dispatch::Allocate(bytes);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](size_t bytes, const std::nothrow_t& tag) noexcept {
  return operator new(bytes, tag);
}
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete[](void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, size_t /*bytes*/) noexcept { std::free(memory); }
void operator delete[](void* memory, size_t /*bytes*/) noexcept { std::free(memory); }
void operator delete(void* memory, const std::nothrow_t& /*tag*/) noexcept { std::free(memory); }
void operator delete[](void* memory, const std::nothrow_t& /*tag*/) noexcept { std::free(memory); }
