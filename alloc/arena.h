// alloc/arena.h
// -----------------------------------------------------------------------------
//
// `Arena` is a bump allocator: memory is carved from large chunks by moving a cursor, individual
// allocations are never freed, and the whole arena is released at once by `Reset()`. It is the
// allocator for per-request and per-database scratch (docs/allocation.md): the owner resets the
// arena at a well-defined point (end of a request, idle close of a database), so every byte has
// an owner and a lifetime that a reader can see.
//
// Use it when many small objects share one lifetime. Do not use it for objects that are freed
// one by one over a long time: nothing is reclaimed before `Reset()`.
//
// Design invariants:
//   1. An allocation is a pointer bump in the current chunk. Only a chunk change calls the heap
//      (`operator new`), so a warmed-up arena that is reset per request makes zero heap
//      allocations per request.
//   2. `Reset()` keeps the first chunk and frees every later one, so an arena whose first chunk
//      covers a typical request never touches the heap again, and a burst does not pin memory:
//      a first chunk that a burst made larger than `first_chunk_bytes` is freed too.
//   3. With a limit, the bytes reserved from the heap never exceed it. Exceeding it is an
//      operating error: `Allocate()` returns `absl::ResourceExhaustedError` naming the arena,
//      the limit and the request, and the arena stays usable.
//   4. Alignment is honoured for any power of two.
//
// An arena is not thread-safe; each belongs to one loop.
//
// Example:
//
//   sqloop::alloc::Arena scratch({.name = "request-scratch", .limit_bytes = 1 << 20});
//   absl::StatusOr<void*> row = scratch.Allocate(row_size_bytes, alignof(Row));
//   if (!row.ok()) return row.status();  // "arena 'request-scratch': ... limit of 1048576 ..."
//   ...
//   scratch.Reset();  // End of the request: everything above is gone at once.
#ifndef SQLOOP_ALLOC_ARENA_H_
#define SQLOOP_ALLOC_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sqloop/alloc/check.h"

namespace sqloop::alloc {

class AllocationProfile;

// The default size of an arena's first chunk. 4 KiB is one page: small enough that an idle
// tenant's arena costs little, large enough for a typical request's scratch (a few dozen small
// objects). Size it up per arena when `stats().chunks` shows growth on every request.
inline constexpr size_t kArenaFirstChunkBytesDefault = 4096;

// The largest chunk growth produces. Chunks double from the first chunk size so the number of
// chunks grows logarithmically with use; capping at 1 MiB keeps one chunk's unused tail (the
// waste of a bump allocator) bounded. Larger single requests get a chunk of their own size.
inline constexpr size_t kArenaChunkBytesMax = size_t{1} << 20;

// The smallest allowed chunk: a chunk spends 16 bytes on its header, so anything smaller than
// this would be mostly overhead.
inline constexpr size_t kArenaChunkBytesMin = 64;

// `ArenaOptions::limit_bytes` value for "no limit".
inline constexpr size_t kArenaNoLimit = SIZE_MAX;

struct ArenaOptions {
  // Names the arena in error messages and in the allocation profile ("request-scratch",
  // "db:tenant-42"). Copied once at construction.
  absl::string_view name = "arena";
  // The size of the first chunk, kept across `Reset()`, header included. Must be at least
  // `kArenaChunkBytesMin` and at most `limit_bytes`.
  size_t first_chunk_bytes = kArenaFirstChunkBytesDefault;
  // The most bytes the arena may reserve from the heap (chunk sizes, headers included).
  size_t limit_bytes = kArenaNoLimit;
  // When set, chunk reservations and releases are recorded under the site `name`. Must outlive
  // the arena. Recording is per chunk, not per allocation, so it stays off the fast path.
  AllocationProfile* profile = nullptr;
};

// Statistics since construction, except where noted. Cheap to read.
struct ArenaStats {
  uint64_t allocations = 0;          // Successful `Allocate()` calls.
  uint64_t failures = 0;             // `Allocate()` calls refused by the limit or the heap.
  uint64_t bytes_requested = 0;      // Sum of the sizes passed to successful `Allocate()` calls.
  uint64_t bytes_used = 0;           // Current: bytes handed out since the last `Reset()`,
                                     // alignment padding included.
  uint64_t bytes_used_peak = 0;      // Most `bytes_used` ever reached.
  uint64_t bytes_reserved = 0;       // Current: bytes held from the heap (all chunks).
  uint64_t bytes_reserved_peak = 0;  // Most `bytes_reserved` ever reached.
  uint64_t chunks = 0;               // Current: chunks held.
  uint64_t chunks_allocated = 0;     // Chunks ever taken from the heap.
  uint64_t resets = 0;               // `Reset()` calls.
};

class Arena {
 public:
  explicit Arena(const ArenaOptions& options = {});
  ~Arena();

  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Returns `size_bytes` of uninitialised memory aligned to `alignment` (a power of two; a
  // programmer error otherwise), valid until the next `Reset()`, `Release()` or destruction.
  // A size of 0 returns a non-null pointer that must not be dereferenced (it may equal the
  // next allocation's).
  //
  // Fails with `absl::ResourceExhaustedError` when the limit (or the heap) cannot supply the
  // bytes; the arena is unchanged and later smaller requests may still succeed.
  [[nodiscard]] absl::StatusOr<void*> Allocate(size_t size_bytes,
                                               size_t alignment = alignof(std::max_align_t)) {
    // Folds away when `alignment` is a constant, which it nearly always is.
    SQLOOP_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0,
                 "Arena::Allocate: alignment must be a power of two");
    const uintptr_t aligned = AlignUp(cursor_, alignment);
    // Strictly less-than: an empty arena has cursor_ == end_ == 0, and the rare allocation that
    // fills a chunk exactly takes the slow path, which handles both.
    if (aligned < end_ && size_bytes < end_ - aligned) {
      cursor_ = aligned + size_bytes;
      stats_.allocations++;
      stats_.bytes_requested += size_bytes;
      return PointerInCurrentChunk(aligned);
    }
    return AllocateSlow(size_bytes, alignment);
  }

  // Uninitialised storage for `count` objects of type T. The caller constructs them, and must
  // not rely on destructors running: the arena never calls them.
  template <typename T>
  [[nodiscard]] absl::StatusOr<T*> AllocateArray(size_t count) {
    if (count > SIZE_MAX / sizeof(T)) {
      return absl::ResourceExhaustedError("Arena::AllocateArray: count * sizeof(T) overflows");
    }
    absl::StatusOr<void*> memory = Allocate(count * sizeof(T), alignof(T));
    if (!memory.ok()) return memory.status();
    return static_cast<T*>(*memory);
  }

  // Invalidates every allocation, keeps the first chunk (unless a burst made it larger than
  // first_chunk_bytes) and frees the others. Growth restarts from the first chunk size, so the
  // arena behaves the same after every reset.
  void Reset();

  // Like `Reset()`, but frees the first chunk too: the arena holds no heap memory afterwards
  // (an idle tenant scaled to zero). The next `Allocate()` takes a new first chunk.
  void Release();

  // Statistics; `bytes_used` and the peaks are brought up to date by the call.
  [[nodiscard]] const ArenaStats& stats() const;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] size_t limit_bytes() const { return limit_bytes_; }

 private:
  struct Chunk;

  static uintptr_t AlignUp(uintptr_t value, size_t alignment) {
    return (value + alignment - 1) & ~static_cast<uintptr_t>(alignment - 1);
  }

  // The pointer to `address`, a byte of the current chunk. Derived from the chunk's own pointer
  // rather than cast from the integer, so the optimizer still knows which object it points into.
  void* PointerInCurrentChunk(uintptr_t address) const {
    char* const chunk = reinterpret_cast<char*>(current_);
    return chunk + (address - reinterpret_cast<uintptr_t>(chunk));
  }

  absl::StatusOr<void*> AllocateSlow(size_t size_bytes, size_t alignment);
  // Takes a chunk able to hold `size_bytes` at `alignment` and makes it current.
  absl::Status AddChunk(size_t size_bytes, size_t alignment);
  absl::Status LimitError(size_t size_bytes, size_t alignment, size_t chunk_bytes) const;
  void FreeChunk(Chunk* chunk);
  void FreeFirst();  // Frees the first (and only) chunk: the arena holds no heap memory.
  void UpdatePeaks() const;

  std::string name_;
  size_t first_chunk_bytes_;
  size_t limit_bytes_;
  AllocationProfile* profile_;
  uint32_t profile_site_ = 0;

  Chunk* first_ = nullptr;     // The chunk `Reset()` keeps; the tail of the list.
  Chunk* current_ = nullptr;   // The head of the list; allocations come from here.
  size_t next_chunk_bytes_;    // Size of the next chunk growth will take.
  uintptr_t cursor_ = 0;       // Next free byte in `current_`.
  uintptr_t end_ = 0;          // One past the last usable byte in `current_`.
  uintptr_t chunk_begin_ = 0;  // First usable byte in `current_`.
  uint64_t bytes_used_in_previous_chunks_ = 0;

  // The bump allocator's `bytes_used` only grows between resets, so its peak is computed when
  // someone looks (stats(), Reset()) instead of on every allocation: hence mutable.
  mutable ArenaStats stats_;
};

}  // namespace sqloop::alloc

#endif  // SQLOOP_ALLOC_ARENA_H_
