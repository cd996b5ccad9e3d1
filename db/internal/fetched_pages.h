// db/internal/fetched_pages.h
// -----------------------------------------------------------------------------
//
// `FetchedPages` keeps the pages that fetches read in, for the read that runs again after its
// fetch.
//
// A read that stops on a page not in memory fetches it through the loop and runs again (the
// "Reads never wait for the disk" section of db/database.h). Without this, its second read of
// the page asks the page cache once more: a system call per missed read, whose removal cut the
// loop's CPU time per read in sqlite_read_cold by 13-25 % in hand A/B runs. A fetch of exactly one
// page reads into a slot of this pool instead of the Vfs's sink; the read that runs again copies
// the page from the slot (EpochQueue::Read) and frees it.
//
// A slot belongs to one database's EpochQueue (its `owner`) and carries that queue's version at
// the moment the fetch was submitted. The queue counts every change to its files (a write,
// truncate or unlink issued or completed, a descriptor closed), so an unchanged version means
// the file held the slot's bytes the whole time; writes still queued are applied over the copy
// as over bytes from the disk (EpochQueue::Overlay).
//
// Slot states:
//
// clang-format off
//   kFree --Take--> kFetching --Fetched(whole page)--> kReady --TakeCopy--> kFree
//     ^                  \--Fetched(short, failed)--> kFree       \--Take (reused)--> kFetching
//     +------------------------------------- Forget(owner) ---------------------------------+
//
//   transition             function   when
//   kFree -> kFetching     Take       a fetch of one page starts
//   kReady -> kFetching    Take       no slot is free and the pool is full: the oldest copy
//                                     nobody took yet is dropped (its read asks the page cache)
//   kFetching -> kReady    Fetched    the fetch read the whole page
//   kFetching -> kFree     Fetched    it read less (the end of the file) or failed, or its
//                                     owner was forgotten meanwhile
//   kReady -> kFree        TakeCopy   a read of the owner found the page at the same version
//                                     (a copy at another version is dropped on sight)
//   kReady -> kFree        Forget     the owner goes (its files close)
// clang-format on
//
// Invariants:
//   1. A kReady slot holds [offset, offset + kPageBytes) of the owner's descriptor `fd` as the
//      file held it while the owner's version was `version`; it is copied out only at that
//      version, and at most once.
//   2. At most kSlotsMax slots, each kPageBytes, allocated the first time they are needed and
//      kept while the Vfs lives (like its fetch sink): memory of the loop, not of any tenant.
//      When every slot is in flight a fetch reads into the sink, as before.
//   3. A kFetching slot is written by the kernel: it is never handed out or freed until its
//      fetch is over (Fetched), whatever the owner does meanwhile.
//
// Internal: VfsContext owns one per Vfs; the Database's fetches take slots, its EpochQueue
// copies from them. Loop thread only.
#ifndef SQLOOP_DB_INTERNAL_FETCHED_PAGES_H_
#define SQLOOP_DB_INTERNAL_FETCHED_PAGES_H_

#include <cstdint>
#include <memory>
#include <vector>

namespace sqloop::db::internal {

class FetchedPages {
 public:
  // SQLite's default page size: the fetch window of a point read (kFetchWindowBytes).
  static constexpr uint32_t kPageBytes = 4096;
  static constexpr uint32_t kSlotsMax = 64;

  // A buffer for a fetch of the page at `offset` of `fd`, for `owner` at `version`; null when
  // no slot can be had (invariant 2).
  [[nodiscard]] char* Take(const void* owner, int fd, uint64_t offset, uint64_t version);
  // The fetch into `buffer` is over, having read `bytes` (< 0: failed). A buffer that is not a
  // slot's (the sink) is ignored.
  void Fetched(const char* buffer, int64_t bytes);
  // Copies [offset, offset + length) of `fd` into `out` if a kReady slot of `owner` at
  // `version` holds all of it, and frees that slot.
  [[nodiscard]] bool TakeCopy(const void* owner, int fd, uint64_t offset, uint64_t length,
                              uint64_t version, char* out);
  // Frees the kReady slots of `owner`; kFetching ones stay until their fetch is over.
  void Forget(const void* owner);
  [[nodiscard]] uint32_t ready() const { return ready_; }

 private:
  enum class State : uint8_t { kFree, kFetching, kReady };
  struct Slot {
    State state = State::kFree;
    int fd = -1;
    const void* owner = nullptr;
    uint64_t offset = 0;
    uint64_t version = 0;
    uint64_t ready_order = 0;  // When it became kReady: the oldest is reused first.
    std::unique_ptr<char[]> bytes;
  };
  void Free(Slot& slot);

  std::vector<Slot> slots_;
  uint32_t ready_ = 0;
  uint64_t readied_ = 0;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_FETCHED_PAGES_H_
