#include "sqloop/alloc/arena.h"

#include <algorithm>
#include <new>

#include "absl/strings/str_format.h"
#include "sqloop/alloc/profile.h"

namespace sqloop::alloc {

// Sits at the start of every chunk. Chunks form a list from the newest (`current_`) to the
// oldest (`first_`).
struct Arena::Chunk {
  Chunk* older;
  size_t size_bytes;  // The whole heap block, this header included.
};

namespace {

// `operator new` returns blocks aligned to this; usable memory starts right after the header,
// which keeps that alignment, so requests up to it never need padding for a fresh chunk.
constexpr size_t kHeapAlignment = __STDCPP_DEFAULT_NEW_ALIGNMENT__;
// Room for `Arena::Chunk` (two words), rounded to the heap's alignment.
constexpr size_t kChunkHeaderBytes = 16;
static_assert(kChunkHeaderBytes % kHeapAlignment == 0, "the header must keep heap alignment");

// The size growth takes after a chunk of `chunk_bytes`: double, capped.
size_t GrowthAfter(size_t chunk_bytes) {
  return std::max(chunk_bytes, std::min(chunk_bytes * 2, kArenaChunkBytesMax));
}

}  // namespace

Arena::Arena(const ArenaOptions& options)
    : name_(options.name),
      first_chunk_bytes_(options.first_chunk_bytes),
      limit_bytes_(options.limit_bytes),
      profile_(options.profile),
      next_chunk_bytes_(GrowthAfter(options.first_chunk_bytes)) {
  static_assert(sizeof(Chunk) <= kChunkHeaderBytes, "Arena::Chunk outgrew its header");
  SQLOOP_CHECK(first_chunk_bytes_ >= kArenaChunkBytesMin,
               "ArenaOptions::first_chunk_bytes is below kArenaChunkBytesMin");
  SQLOOP_CHECK(first_chunk_bytes_ <= limit_bytes_,
               "ArenaOptions::first_chunk_bytes exceeds limit_bytes; no allocation could succeed");
  if (profile_ != nullptr) profile_site_ = profile_->Site(name_);
}

Arena::~Arena() { Release(); }

absl::StatusOr<void*> Arena::AllocateSlow(size_t size_bytes, size_t alignment) {
  uintptr_t aligned = AlignUp(cursor_, alignment);
  const bool fits = current_ != nullptr && aligned <= end_ && size_bytes <= end_ - aligned;
  if (!fits) {
    if (absl::Status status = AddChunk(size_bytes, alignment); !status.ok()) {
      stats_.failures++;
      if (profile_ != nullptr) profile_->RecordFailure(profile_site_);
      return status;
    }
    aligned = AlignUp(cursor_, alignment);
  }
  cursor_ = aligned + size_bytes;
  SQLOOP_CHECK(cursor_ <= end_, "Arena: a fresh chunk is too small for its request");
  stats_.allocations++;
  stats_.bytes_requested += size_bytes;
  return PointerInCurrentChunk(aligned);
}

absl::Status Arena::AddChunk(size_t size_bytes, size_t alignment) {
  // Padding is only needed when the request wants more than the heap's own alignment.
  const size_t padding_bytes = alignment > kHeapAlignment ? alignment - 1 : 0;
  const size_t overhead_bytes = kChunkHeaderBytes + padding_bytes;
  if (size_bytes > SIZE_MAX - overhead_bytes) {
    return LimitError(size_bytes, alignment, SIZE_MAX);
  }
  const size_t needed_bytes = size_bytes + overhead_bytes;
  size_t chunk_bytes =
      std::max(first_ == nullptr ? first_chunk_bytes_ : next_chunk_bytes_, needed_bytes);
  const size_t available_bytes = limit_bytes_ - stats_.bytes_reserved;
  if (chunk_bytes > available_bytes) {
    // Under a limit, a smaller chunk that still holds the request beats failing it.
    if (needed_bytes > available_bytes) return LimitError(size_bytes, alignment, needed_bytes);
    chunk_bytes = available_bytes;
  }
  void* block = ::operator new(chunk_bytes, std::nothrow);
  if (block == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "arena '%s': the heap refused a chunk of %d bytes for a request of %d bytes; the "
        "process is out of memory",
        name_, chunk_bytes, size_bytes));
  }
  auto* chunk = new (block) Chunk{current_, chunk_bytes};
  if (first_ == nullptr) {
    first_ = chunk;
  } else {
    bytes_used_in_previous_chunks_ += cursor_ - chunk_begin_;
    next_chunk_bytes_ = GrowthAfter(next_chunk_bytes_);
  }
  current_ = chunk;
  chunk_begin_ = reinterpret_cast<uintptr_t>(block) + kChunkHeaderBytes;
  cursor_ = chunk_begin_;
  end_ = reinterpret_cast<uintptr_t>(block) + chunk_bytes;
  stats_.chunks++;
  stats_.chunks_allocated++;
  stats_.bytes_reserved += chunk_bytes;
  stats_.bytes_reserved_peak = std::max(stats_.bytes_reserved_peak, stats_.bytes_reserved);
  if (profile_ != nullptr) profile_->RecordAllocation(profile_site_, chunk_bytes);
  return absl::OkStatus();
}

absl::Status Arena::LimitError(size_t size_bytes, size_t alignment, size_t chunk_bytes) const {
  UpdatePeaks();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "arena '%s': cannot allocate %d bytes (alignment %d): it needs a chunk of %d bytes but "
      "only %d of the arena's limit of %d bytes are left (%d reserved in %d chunks, %d used); "
      "raise ArenaOptions::limit_bytes for this arena, or Reset() it sooner",
      name_, size_bytes, alignment, chunk_bytes, limit_bytes_ - stats_.bytes_reserved, limit_bytes_,
      stats_.bytes_reserved, stats_.chunks, stats_.bytes_used));
}

void Arena::FreeChunk(Chunk* chunk) {
  const size_t chunk_bytes = chunk->size_bytes;
  stats_.chunks--;
  stats_.bytes_reserved -= chunk_bytes;
  if (profile_ != nullptr) profile_->RecordFree(profile_site_, chunk_bytes);
  chunk->~Chunk();
  ::operator delete(static_cast<void*>(chunk));
}

void Arena::Reset() {
  UpdatePeaks();
  stats_.resets++;
  if (first_ == nullptr) return;
  while (current_ != first_) {
    Chunk* older = current_->older;
    FreeChunk(current_);
    current_ = older;
  }
  next_chunk_bytes_ = GrowthAfter(first_chunk_bytes_);
  // Invariant 2: a first chunk that an early burst made larger than first_chunk_bytes goes
  // too; the next allocation takes one of the usual size.
  if (first_->size_bytes > first_chunk_bytes_) {
    FreeFirst();
    return;
  }
  chunk_begin_ = reinterpret_cast<uintptr_t>(first_) + kChunkHeaderBytes;
  cursor_ = chunk_begin_;
  end_ = reinterpret_cast<uintptr_t>(first_) + first_->size_bytes;
  bytes_used_in_previous_chunks_ = 0;
}

void Arena::Release() {
  Reset();
  if (first_ != nullptr) FreeFirst();
}

void Arena::FreeFirst() {
  FreeChunk(first_);
  first_ = nullptr;
  current_ = nullptr;
  cursor_ = 0;
  end_ = 0;
  chunk_begin_ = 0;
  bytes_used_in_previous_chunks_ = 0;
}

const ArenaStats& Arena::stats() const {
  UpdatePeaks();
  return stats_;
}

void Arena::UpdatePeaks() const {
  stats_.bytes_used = bytes_used_in_previous_chunks_ + (cursor_ - chunk_begin_);
  stats_.bytes_used_peak = std::max(stats_.bytes_used_peak, stats_.bytes_used);
}

}  // namespace sqloop::alloc
