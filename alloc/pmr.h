// alloc/pmr.h
// -----------------------------------------------------------------------------
//
// `ArenaResource` adapts an `Arena` to `std::pmr::memory_resource`, so standard containers
// (`std::pmr::vector`, `std::pmr::string`, `std::pmr::unordered_map`...) can keep their storage
// in an arena and disappear with it at `Arena::Reset()`.
//
// Contract, and how it differs from `Arena::Allocate()`:
//   * `deallocate()` is a no-op: arena memory is reclaimed only by `Reset()`. A container that
//     grows repeatedly leaves its old buffers behind until then, so reserve() when the size is
//     known.
//   * When the arena's limit refuses a request, `allocate()` throws `ArenaExhaustedError`
//     (a `std::bad_alloc`), because `std::pmr::memory_resource` has no other way to fail. Its
//     `what()` carries the arena's full resource-exhausted message. Code that must not throw
//     should use `Arena::Allocate()` directly.
//   * Two adapters compare equal when they share an arena: memory from one may be "freed"
//     through the other, since freeing does nothing.
//   * The containers must be destroyed (or abandoned, if their element type is trivially
//     destructible) before the arena is reset: after `Reset()` their storage is reused.
//
// Example:
//
//   sqloop::alloc::Arena arena({.name = "parse"});
//   sqloop::alloc::ArenaResource resource(&arena);
//   {
//     std::pmr::vector<int> ids(&resource);
//     ids.reserve(64);
//     ...
//   }
//   arena.Reset();
#ifndef SQLOOP_ALLOC_PMR_H_
#define SQLOOP_ALLOC_PMR_H_

#include <cstddef>
#include <memory_resource>
#include <new>
#include <string>
#include <utility>

#include "sqloop/alloc/arena.h"

namespace sqloop::alloc {

// Thrown by `ArenaResource::allocate()` when the arena's limit is reached.
class ArenaExhaustedError : public std::bad_alloc {
 public:
  explicit ArenaExhaustedError(std::string message) : message_(std::move(message)) {}
  [[nodiscard]] const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

class ArenaResource final : public std::pmr::memory_resource {
 public:
  // `arena` must outlive the adapter and every container using it.
  explicit ArenaResource(Arena* arena);

  [[nodiscard]] Arena* arena() const { return arena_; }

 private:
  void* do_allocate(size_t size_bytes, size_t alignment) override;
  void do_deallocate(void* pointer, size_t size_bytes, size_t alignment) override;
  [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override;

  Arena* arena_;
};

}  // namespace sqloop::alloc

#endif  // SQLOOP_ALLOC_PMR_H_
