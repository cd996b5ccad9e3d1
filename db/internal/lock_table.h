// db/internal/lock_table.h
// -----------------------------------------------------------------------------
//
// `LockTable` holds what SQLite's connections to one database share in this process besides
// its files: the lock levels of the main file (SQLITE_LOCK_*) and the WAL index (xShm*) with
// its locks. Both live in process memory: the VFS takes an exclusive flock on the main file
// (db/internal/file_table.h), so no other process can hold any of these, and no -shm file is
// ever created. A connection's own state (its level, its shm lock masks) lives in its
// sqlite3_file handle and is passed in by reference, with the handle's address as `owner`.
//
// Lock levels of one handle (`level`), as this VFS implements them:
//
// clang-format off
//                    Lock                   Lock
//     +------+  ------------->  +--------+  ------------->  +----------+
//     | NONE |                  | SHARED |                  | RESERVED |
//     +------+  <-------------  +--------+  <-------------  +----------+
//                   Unlock       ^  |  |        Unlock         |    |
//                                |  |  | Lock: other handles   |    | Lock: no other
//                       Unlock   |  |  | hold SHARED (BUSY)    |    | handle holds SHARED
//                                |  |  v                       |    |
//                                |  |  +---------+  <----------+    |
//                                +--|--| PENDING |  ---+ Lock: they |
//                                |  |  +---------+  <--+ still do   |
//                                |  |       | Lock: the last other  |
//                                |  |       v SHARED handle left    |
//                                |  |  +-----------+                |
//                                +--|--| EXCLUSIVE |  <-------------+
//                                   |  +-----------+
//                                   |        ^
//                                   +--------+ Lock: no other handle holds SHARED
//
// Unlock to NONE from above SHARED (xClose) passes through SHARED.
// clang-format on
//
// SQLite's pager climbs SHARED -> RESERVED -> EXCLUSIVE for a rollback-journal transaction; in
// WAL mode it holds SHARED and asks for EXCLUSIVE straight from SHARED only when the last
// connection closes (to checkpoint and remove the WAL). PENDING is never asked for: a handle
// is left there when EXCLUSIVE was refused because other handles hold SHARED, and it keeps new
// SHARED locks out until they have left, so a writer cannot be starved by readers.
//
// clang-format off
//   transition              function     invariant in the new state
//   NONE -> SHARED          Lock         counted in shared_
//   SHARED -> RESERVED      Lock         holds reserved_
//   SHARED -> PENDING       Lock         holds pending_; other handles hold shared (busy)
//   RESERVED -> PENDING     Lock         holds pending_ and reserved_; others hold shared
//   PENDING -> PENDING      Lock         as above: the retry found shared holders left
//   SHARED -> EXCLUSIVE     Lock         holds exclusive_ and pending_; shared_ is 1
//   RESERVED -> EXCLUSIVE   Lock         as above
//   PENDING -> EXCLUSIVE    Lock         as above
//   RESERVED -> SHARED      Unlock       holds none of reserved_, pending_, exclusive_
//   PENDING -> SHARED       Unlock       as above
//   EXCLUSIVE -> SHARED     Unlock       as above
//   SHARED -> NONE          Unlock       not counted in shared_
// clang-format on
//
// Invariants per state (of the handle `owner` at that level), checked by SetLockLevel, the only
// writer of a level, on every transition:
//   NONE       owner is none of reserved_, pending_, exclusive_.
//   SHARED     shared_ >= 1 (owner is counted); owner is none of reserved_, pending_,
//              exclusive_.
//   RESERVED   shared_ >= 1; reserved_ == owner; no handle holds EXCLUSIVE.
//   PENDING    shared_ >= 1; pending_ == owner; no handle holds EXCLUSIVE (reserved_ may be
//              owner, nobody, or a handle that took RESERVED after owner went straight from
//              SHARED to PENDING).
//   EXCLUSIVE  exclusive_ == pending_ == owner; shared_ == 1 (owner's own).
// And for the whole table: at most one handle holds each of RESERVED, PENDING and EXCLUSIVE
// (one pointer each), and exclusive_ != nullptr implies pending_ == exclusive_, shared_ == 1.
//
// WAL index locks: SQLite's kShmLocks slots, each taken SHARED or EXCLUSIVE by a handle
// (bits in the handle's `shared_mask` / `exclusive_mask`). One slot:
//
// clang-format off
//                ShmLock(SHARED)                   ShmLock(SHARED), another handle
//     free  ------------------------> shared(1) ----------------------------> shared(n + 1)
//      ^ ^  <------------------------     |      <----------------------------
//      | |        ShmLock(UNLOCK)         |               ShmLock(UNLOCK)
//      | |                                | ShmLock(EXCLUSIVE) by the one holder
//      | |     ShmLock(UNLOCK)            v
//      | +------------------------- exclusive <------------------------------ free
//      |                                           ShmLock(EXCLUSIVE)
//      +---- ShmDetach: the last handle left; every slot free, the index forgotten
//
//   transition              function     invariant in the new state
//   free -> shared          ShmLock      shm_shared_ counts each holder; not exclusive
//   shared -> shared        ShmLock      as above, one holder more or less
//   shared -> free          ShmLock      count 0; not exclusive
//   free -> exclusive       ShmLock      exclusive; count 0
//   shared -> exclusive     ShmLock      exclusive; count 1, the holder's own shared lock
//   exclusive -> free       ShmLock      not exclusive; the holder's shared lock gone too
//   any -> free             ShmDetach    the last handle left: count 0, not exclusive
// clang-format on
//
// Invariants, checked by SetShmLocks, the only writer of the slots and of a handle's masks:
// a bit in a handle's exclusive_mask means its slot is exclusive; a bit in its shared_mask
// means its slot's count is at least 1; an exclusive slot's count is at most 1 (the holder's
// own). The first two are checked for the slots a call touched (SQLOOP_CHECK); the last over
// every slot (SQLOOP_DCHECK).
//
// Internal: DatabaseFiles owns one; the VFS glue (db/vfs.cc) calls it for xLock, xUnlock,
// xCheckReservedLock and xShm*.
//
// Example (xLock, then xShmMap):
//
//   ShmRegionPool pool;  // The Vfs's (VfsContext::shm_pool()).
//   LockTable table(kWalIndexBytesMaxDefault, pool);
//   int rc = table.Lock(&handle, handle.lock_level, SQLITE_LOCK_SHARED);
//   void* region = nullptr;
//   table.ShmAttach();
//   rc = table.ShmMap(0, 32768, /*extend=*/true, &region);
#ifndef SQLOOP_DB_INTERNAL_LOCK_TABLE_H_
#define SQLOOP_DB_INTERNAL_LOCK_TABLE_H_

#include <array>
#include <cstdint>
#include <vector>

#include "sqloop/db/internal/shm_region_pool.h"

namespace sqloop::db::internal {

// SQLite's shared-memory lock slots (SQLITE_SHM_NLOCK).
inline constexpr int kShmLocks = 8;

class LockTable {
 public:
  // `wal_index_bytes_max`: VfsOptions::wal_index_bytes_max. The WAL index's regions come from
  // `pool` (SQLite's usual region size) or the heap (any other), and go back when the last
  // handle detaches or the table goes.
  LockTable(uint64_t wal_index_bytes_max, ShmRegionPool& pool)
      : wal_index_bytes_max_(wal_index_bytes_max), pool_(pool) {}
  ~LockTable() { FreeShmRegions(); }
  LockTable(const LockTable&) = delete;
  LockTable& operator=(const LockTable&) = delete;

  // xLock and xUnlock of the main file: moves `owner`'s `level` towards `wanted`. Lock returns
  // SQLITE_OK or SQLITE_BUSY (see the diagram).
  [[nodiscard]] int Lock(const void* owner, int& level, int wanted);
  void Unlock(const void* owner, int& level, int wanted);
  // xCheckReservedLock: whether some handle holds RESERVED.
  [[nodiscard]] bool ReservedHeld() const { return reserved_ != nullptr; }

  // xShmMap: region `region` of `region_bytes` (the same size every time), created zero-filled
  // if `extend`. Returns SQLITE_OK (with *out null if it does not exist and !extend) or
  // SQLITE_IOERR_SHMSIZE beyond wal_index_bytes_max.
  [[nodiscard]] int ShmMap(int region, int region_bytes, bool extend, void** out);
  // xShmLock of slots [offset, offset + n) with SQLite's flags. SQLITE_OK or SQLITE_BUSY.
  [[nodiscard]] int ShmLock(uint8_t& shared_mask, uint8_t& exclusive_mask, int offset, int n,
                            int flags);
  // A handle starts or stops using the WAL index (its first xShmMap; xShmUnmap or close).
  void ShmAttach() { ++shm_users_; }
  void ShmDetach();
  [[nodiscard]] bool shm_unused() const { return shm_users_ == 0; }

 private:
  // The only writers of a handle's level and of its shm masks: they check the transition
  // against the tables above, then the invariants of the new state.
  void SetLockLevel(const void* owner, int& level, int next);
  void SetShmLocks(uint8_t& shared_mask, uint8_t& exclusive_mask, uint8_t shared_next,
                   uint8_t exclusive_next);
  void AssertLockInvariants(const void* owner, int level) const;
  void FreeShmRegions();

  const uint64_t wal_index_bytes_max_;
  ShmRegionPool& pool_;

  // Lock levels: holders by owner; SHARED is a count.
  uint32_t shared_ = 0;
  const void* reserved_ = nullptr;
  const void* pending_ = nullptr;
  const void* exclusive_ = nullptr;

  // The WAL index: regions of SQLite's chosen size, zero-filled on creation; from pool_ when
  // that size is ShmRegionPool::kRegionBytes, else from the heap (new[]).
  std::vector<char*> shm_regions_;
  int shm_region_bytes_ = 0;
  uint32_t shm_users_ = 0;
  std::array<uint16_t, kShmLocks> shm_shared_{};
  std::array<bool, kShmLocks> shm_exclusive_{};
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_LOCK_TABLE_H_
