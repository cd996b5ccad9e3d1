#include "sqloop/alloc/pmr.h"

#include <string>

#include "sqloop/alloc/check.h"

namespace sqloop::alloc {

ArenaResource::ArenaResource(Arena* arena) : arena_(arena) {
  SQLOOP_CHECK(arena_ != nullptr, "ArenaResource: the arena must not be null");
}

void* ArenaResource::do_allocate(size_t size_bytes, size_t alignment) {
  absl::StatusOr<void*> memory = arena_->Allocate(size_bytes, alignment);
  if (!memory.ok()) throw ArenaExhaustedError(std::string(memory.status().message()));
  return *memory;
}

void ArenaResource::do_deallocate(void* /*pointer*/, size_t /*size_bytes*/, size_t /*alignment*/) {
  // Nothing to do: the arena reclaims everything at Reset(). See pmr.h.
}

bool ArenaResource::do_is_equal(const std::pmr::memory_resource& other) const noexcept {
  if (this == &other) return true;
  const auto* adapter = dynamic_cast<const ArenaResource*>(&other);
  return adapter != nullptr && adapter->arena_ == arena_;
}

}  // namespace sqloop::alloc
