#include "sqloop/db/internal/fetched_pages.h"

#include <cstring>

#include "sqloop/alloc/check.h"

namespace sqloop::db::internal {

char* FetchedPages::Take(const void* owner, int fd, uint64_t offset, uint64_t version) {
  Slot* chosen = nullptr;
  for (Slot& slot : slots_) {
    if (slot.state == State::kFree) {
      chosen = &slot;
      break;
    }
    if (slot.state == State::kReady &&
        (chosen == nullptr || slot.ready_order < chosen->ready_order)) {
      chosen = &slot;
    }
  }
  if ((chosen == nullptr || chosen->state != State::kFree) && slots_.size() < kSlotsMax) {
    slots_.emplace_back();
    chosen = &slots_.back();
    chosen->bytes = std::make_unique_for_overwrite<char[]>(kPageBytes);
  }
  if (chosen == nullptr) return nullptr;  // Every slot in flight.
  if (chosen->state == State::kReady) Free(*chosen);
  chosen->state = State::kFetching;
  chosen->owner = owner;
  chosen->fd = fd;
  chosen->offset = offset;
  chosen->version = version;
  return chosen->bytes.get();
}

void FetchedPages::Fetched(const char* buffer, int64_t bytes) {
  for (Slot& slot : slots_) {
    if (slot.bytes.get() != buffer) continue;
    SQLOOP_CHECK(slot.state == State::kFetching, "FetchedPages: a fetch ended twice");
    if (bytes == kPageBytes && slot.owner != nullptr) {
      slot.state = State::kReady;
      slot.ready_order = readied_++;
      ++ready_;
    } else {
      slot.state = State::kFree;
    }
    return;
  }
}

bool FetchedPages::TakeCopy(const void* owner, int fd, uint64_t offset, uint64_t length,
                            uint64_t version, char* out) {
  for (Slot& slot : slots_) {
    if (slot.state != State::kReady || slot.owner != owner || slot.fd != fd) continue;
    if (offset < slot.offset || offset + length > slot.offset + kPageBytes) continue;
    const bool current = slot.version == version;
    if (current) std::memcpy(out, slot.bytes.get() + (offset - slot.offset), length);
    Free(slot);  // Used, or stale (invariant 1).
    if (current) return true;
  }
  return false;
}

void FetchedPages::Forget(const void* owner) {
  for (Slot& slot : slots_) {
    if (slot.owner != owner) continue;
    if (slot.state == State::kReady) Free(slot);
    // Invariant 3: a fetch in flight keeps its slot; once over it cannot become kReady.
    slot.owner = nullptr;
  }
}

void FetchedPages::Free(Slot& slot) {
  if (slot.state == State::kReady) --ready_;
  slot.state = State::kFree;
  slot.owner = nullptr;
}

}  // namespace sqloop::db::internal
