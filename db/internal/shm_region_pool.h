// db/internal/shm_region_pool.h
// -----------------------------------------------------------------------------
//
// `ShmRegionPool` holds the memory of the WAL indexes of one Vfs's databases: the regions
// SQLite asks for through xShmMap (db/internal/lock_table.h), kRegionBytes each, carved from
// anonymous mappings of kRegionsPerMapping regions.
//
// Why not the heap: a region must start zero-filled, and zero-filling it on the heap makes all
// of it resident, while SQLite touches little of it. The region holds the WAL index's header,
// then, for each frame of the WAL, a page number and a slot of a hash table spread over the
// region's second half. A tenant whose WAL is empty (every reopened tenant, every tenant after
// a checkpoint that restarted its WAL on a fresh region) touches the first page and no other.
// A page of an anonymous mapping costs memory only once it is touched, so an idle open tenant
// holds 4 KiB of WAL index instead of 32 KiB.
//
//   1. A region handed out by Obtain() is zero-filled, touched or not by an earlier holder.
//      Release() asks the kernel which pages are in memory (mincore): when only the first is
//      (a holder whose WAL stayed empty), it zeroes that page and keeps it, since the next
//      holder writes its header at once; otherwise it gives the region's pages back to the
//      kernel (MADV_DONTNEED), which refills them with zeros on the next touch. A page fault and
//      an madvise at every reopen would cost more than the rest of the pool's bookkeeping.
//   2. Mappings are never unmapped before the pool goes: a released region waits in the free
//      list for the next Obtain(). The address space is kept; the memory is not.
//   3. Loop thread only (a Vfs's databases live on one loop).
//
// Internal: VfsContext owns one; LockTable is its only user.
#ifndef SQLOOP_DB_INTERNAL_SHM_REGION_POOL_H_
#define SQLOOP_DB_INTERNAL_SHM_REGION_POOL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sqloop::db::internal {

class ShmRegionPool {
 public:
  // SQLite's WAL-index region size (WALINDEX_PGSZ, the same in every build since 3.7.0).
  static constexpr size_t kRegionBytes = 32768;
  // Regions per mapping: 2 MiB of address space at a time.
  static constexpr size_t kRegionsPerMapping = 64;

  ShmRegionPool() = default;
  // Unmaps everything: every region must have been released (checked).
  ~ShmRegionPool();
  ShmRegionPool(const ShmRegionPool&) = delete;
  ShmRegionPool& operator=(const ShmRegionPool&) = delete;

  // A zero-filled region of kRegionBytes, or nullptr when the kernel refuses a new mapping.
  [[nodiscard]] char* Obtain();
  // Gives `region` (from Obtain) back: its memory to the kernel (its first page kept, zeroed,
  // when no other was touched), its address to the pool.
  void Release(char* region);

  [[nodiscard]] size_t regions_in_use() const { return in_use_; }
  [[nodiscard]] size_t mappings() const { return mappings_.size(); }

 private:
  std::vector<void*> mappings_;
  std::vector<char*> free_;  // A stack: the region released last is handed out first.
  size_t in_use_ = 0;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_SHM_REGION_POOL_H_
