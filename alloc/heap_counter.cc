// Replaces the global allocation functions to count them. See heap_counter.h.
//
// Without AddressSanitizer the malloc family is interposed (glibc exports __libc_malloc and
// friends for exactly this) and `operator new` forwards to malloc, so each allocation is
// counted once whichever API made it. Under AddressSanitizer the sanitizer owns malloc, so only
// `operator new` is counted.
#include "sqloop/alloc/heap_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define SQLOOP_COUNT_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SQLOOP_COUNT_MALLOC 0
#endif
#endif
#ifndef SQLOOP_COUNT_MALLOC
#define SQLOOP_COUNT_MALLOC 1
#endif

namespace {

std::atomic<uint64_t> g_allocations{0};
std::atomic<uint64_t> g_deallocations{0};
std::atomic<uint64_t> g_bytes{0};

void CountAllocation(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add(size, std::memory_order_relaxed);
}

void CountDeallocation(void* pointer) {
  if (pointer != nullptr) g_deallocations.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

namespace sqloop::alloc {

HeapCounts CurrentHeapCounts() {
  return HeapCounts{g_allocations.load(std::memory_order_relaxed),
                    g_deallocations.load(std::memory_order_relaxed),
                    g_bytes.load(std::memory_order_relaxed)};
}

bool HeapCounterCountsMalloc() { return SQLOOP_COUNT_MALLOC != 0; }

}  // namespace sqloop::alloc

#if SQLOOP_COUNT_MALLOC
extern "C" {
// glibc's own entry points, which the replacements below forward to: their names are glibc's,
// reserved to the implementation, and the one way to reach the real allocator from inside it.
// NOLINTBEGIN(bugprone-reserved-identifier)
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* pointer, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
void __libc_free(void* pointer);
// NOLINTEND(bugprone-reserved-identifier)

// The replacements keep this file's parameter names: glibc's declarations name them with
// reserved identifiers (`__size`), which this file may not copy.
// NOLINTBEGIN(readability-inconsistent-declaration-parameter-name)

void* malloc(size_t size) {
  CountAllocation(size);
  return __libc_malloc(size);
}
void* calloc(size_t count, size_t size) {
  CountAllocation(count * size);
  return __libc_calloc(count, size);
}
void* realloc(void* pointer, size_t size) {
  // A realloc is one allocation and, when it moves or frees, one release: count both so that
  // allocations - deallocations stays the number of live blocks.
  CountAllocation(size);
  CountDeallocation(pointer);
  return __libc_realloc(pointer, size);
}
void free(void* pointer) {
  CountDeallocation(pointer);
  __libc_free(pointer);
}
void* memalign(size_t alignment, size_t size) {
  CountAllocation(size);
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(size_t alignment, size_t size) {
  CountAllocation(size);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, size_t alignment, size_t size) {
  CountAllocation(size);
  *out = __libc_memalign(alignment, size);
  return *out == nullptr ? ENOMEM : 0;
}
// NOLINTEND(readability-inconsistent-declaration-parameter-name)
}  // extern "C"

namespace {
void* NewImpl(size_t size) { return std::malloc(size == 0 ? 1 : size); }
void* NewAlignedImpl(size_t size, std::align_val_t alignment) {
  return aligned_alloc(static_cast<size_t>(alignment), size == 0 ? 1 : size);
}
void DeleteImpl(void* pointer) { std::free(pointer); }
}  // namespace
#else
namespace {
void* NewImpl(size_t size) {
  CountAllocation(size);
  return std::malloc(size == 0 ? 1 : size);
}
void* NewAlignedImpl(size_t size, std::align_val_t alignment) {
  CountAllocation(size);
  const size_t align = static_cast<size_t>(alignment);
  return std::aligned_alloc(align, (size + align - 1) / align * align);
}
void DeleteImpl(void* pointer) {
  CountDeallocation(pointer);
  std::free(pointer);
}
}  // namespace
#endif

void* operator new(size_t size) {
  void* pointer = NewImpl(size);
  if (pointer == nullptr) throw std::bad_alloc();
  return pointer;
}
void* operator new[](size_t size) { return operator new(size); }
void* operator new(size_t size, const std::nothrow_t& /*tag*/) noexcept { return NewImpl(size); }
void* operator new[](size_t size, const std::nothrow_t& /*tag*/) noexcept { return NewImpl(size); }
void* operator new(size_t size, std::align_val_t alignment) {
  void* pointer = NewAlignedImpl(size, alignment);
  if (pointer == nullptr) throw std::bad_alloc();
  return pointer;
}
void* operator new[](size_t size, std::align_val_t alignment) {
  return operator new(size, alignment);
}
void operator delete(void* pointer) noexcept { DeleteImpl(pointer); }
void operator delete[](void* pointer) noexcept { DeleteImpl(pointer); }
void operator delete(void* pointer, size_t /*size*/) noexcept { DeleteImpl(pointer); }
void operator delete[](void* pointer, size_t /*size*/) noexcept { DeleteImpl(pointer); }
void operator delete(void* pointer, std::align_val_t /*alignment*/) noexcept {
  DeleteImpl(pointer);
}
void operator delete[](void* pointer, std::align_val_t /*alignment*/) noexcept {
  DeleteImpl(pointer);
}
void operator delete(void* pointer, size_t /*size*/, std::align_val_t /*alignment*/) noexcept {
  DeleteImpl(pointer);
}
void operator delete[](void* pointer, size_t /*size*/, std::align_val_t /*alignment*/) noexcept {
  DeleteImpl(pointer);
}
