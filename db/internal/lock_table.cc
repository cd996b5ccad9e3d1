#include "sqloop/db/internal/lock_table.h"

#include <sqlite3.h>

#include "sqloop/alloc/check.h"

namespace sqloop::db::internal {
namespace {

// The lock-level transition table of lock_table.h, indexed by SQLite's levels
// (SQLITE_LOCK_NONE = 0 ... SQLITE_LOCK_EXCLUSIVE = 4): kLockTransitions[from][to].
constexpr int kLockLevels = SQLITE_LOCK_EXCLUSIVE + 1;
// clang-format off
constexpr bool kLockTransitions[kLockLevels][kLockLevels] = {
    //  to: NONE   SHARED RESERVED PENDING EXCLUSIVE
    /* NONE      */ {false, true,  false,   false,  false},
    /* SHARED    */ {true,  false, true,    true,   true},
    /* RESERVED  */ {false, true,  false,   true,   true},
    /* PENDING   */ {false, true,  false,   true,   true},
    /* EXCLUSIVE */ {false, true,  false,   false,  false},
};
// clang-format on

}  // namespace

// ---- Lock levels of the main file -------------------------------------------------------------

int LockTable::Lock(const void* owner, int& level, int wanted) {
  if (level >= wanted) return SQLITE_OK;
  if (wanted == SQLITE_LOCK_SHARED) {
    if ((pending_ != nullptr && pending_ != owner) || exclusive_ != nullptr) return SQLITE_BUSY;
    ++shared_;
    SetLockLevel(owner, level, SQLITE_LOCK_SHARED);
    return SQLITE_OK;
  }
  SQLOOP_CHECK(level >= SQLITE_LOCK_SHARED, "xLock above SHARED without holding SHARED");
  if (reserved_ != nullptr && reserved_ != owner) return SQLITE_BUSY;
  if (wanted == SQLITE_LOCK_RESERVED) {
    reserved_ = owner;
    SetLockLevel(owner, level, SQLITE_LOCK_RESERVED);
    return SQLITE_OK;
  }
  // EXCLUSIVE goes through PENDING: no new SHARED lock is granted while we wait for the
  // readers that hold one to leave.
  if (pending_ != nullptr && pending_ != owner) return SQLITE_BUSY;
  pending_ = owner;
  if (shared_ > 1) {
    SetLockLevel(owner, level, SQLITE_LOCK_PENDING);
    return SQLITE_BUSY;
  }
  exclusive_ = owner;
  SetLockLevel(owner, level, SQLITE_LOCK_EXCLUSIVE);
  return SQLITE_OK;
}

void LockTable::Unlock(const void* owner, int& level, int wanted) {
  if (level <= wanted) return;
  if (level > SQLITE_LOCK_SHARED) {
    if (reserved_ == owner) reserved_ = nullptr;
    if (pending_ == owner) pending_ = nullptr;
    if (exclusive_ == owner) exclusive_ = nullptr;
    SetLockLevel(owner, level, SQLITE_LOCK_SHARED);
  }
  if (wanted == SQLITE_LOCK_NONE && level == SQLITE_LOCK_SHARED) {
    SQLOOP_CHECK(shared_ > 0, "SHARED lock count underflow");
    --shared_;
    SetLockLevel(owner, level, SQLITE_LOCK_NONE);
  }
}

void LockTable::SetLockLevel(const void* owner, int& level, int next) {
  SQLOOP_CHECK(level >= SQLITE_LOCK_NONE && level <= SQLITE_LOCK_EXCLUSIVE,
               "a lock level outside SQLite's");
  SQLOOP_CHECK(next >= SQLITE_LOCK_NONE && next <= SQLITE_LOCK_EXCLUSIVE,
               "a lock level outside SQLite's");
  SQLOOP_CHECK(kLockTransitions[level][next],
               "LockTable: a lock transition its table (db/internal/lock_table.h) does not list");
  level = next;
  AssertLockInvariants(owner, level);
}

// The invariants per state of lock_table.h: a handful of comparisons, so always on.
void LockTable::AssertLockInvariants(const void* owner, int level) const {
  const bool holds_above_shared = reserved_ == owner || pending_ == owner || exclusive_ == owner;
  switch (level) {
    case SQLITE_LOCK_NONE:
      SQLOOP_CHECK(!holds_above_shared, "a handle at NONE holds a lock above SHARED");
      break;
    case SQLITE_LOCK_SHARED:
      SQLOOP_CHECK(shared_ >= 1, "a handle at SHARED is not counted");
      SQLOOP_CHECK(!holds_above_shared, "a handle at SHARED holds a lock above SHARED");
      break;
    case SQLITE_LOCK_RESERVED:
      SQLOOP_CHECK(shared_ >= 1 && reserved_ == owner, "a handle at RESERVED does not hold it");
      SQLOOP_CHECK(exclusive_ == nullptr, "RESERVED granted while a handle holds EXCLUSIVE");
      break;
    case SQLITE_LOCK_PENDING:
      SQLOOP_CHECK(shared_ >= 1 && pending_ == owner, "a handle at PENDING does not hold it");
      SQLOOP_CHECK(exclusive_ == nullptr, "a handle at PENDING while EXCLUSIVE is held");
      break;
    case SQLITE_LOCK_EXCLUSIVE:
      SQLOOP_CHECK(exclusive_ == owner && pending_ == owner,
                   "a handle at EXCLUSIVE does not hold EXCLUSIVE and PENDING");
      break;
    default:
      SQLOOP_CHECK(false, "a lock level outside SQLite's");
  }
  SQLOOP_CHECK(exclusive_ == nullptr || (pending_ == exclusive_ && shared_ == 1),
               "EXCLUSIVE held beside another SHARED, or without PENDING");
}

// ---- The WAL index ----------------------------------------------------------------------------

int LockTable::ShmMap(int region, int region_bytes, bool extend, void** out) {
  if (shm_region_bytes_ == 0) shm_region_bytes_ = region_bytes;
  SQLOOP_CHECK(region_bytes == shm_region_bytes_, "xShmMap with a different region size");
  const auto index = static_cast<size_t>(region);
  if (index >= shm_regions_.size()) {
    if (!extend) {
      *out = nullptr;
      return SQLITE_OK;
    }
    if (static_cast<uint64_t>(index + 1) * static_cast<uint64_t>(region_bytes) >
        wal_index_bytes_max_) {
      return SQLITE_IOERR_SHMSIZE;
    }
    while (shm_regions_.size() <= index) {
      char* created = static_cast<size_t>(region_bytes) == ShmRegionPool::kRegionBytes
                          ? pool_.Obtain()
                          : new char[static_cast<size_t>(region_bytes)]();
      if (created == nullptr) return SQLITE_IOERR_SHMMAP;
      shm_regions_.push_back(created);
    }
  }
  *out = shm_regions_[index];
  return SQLITE_OK;
}

void LockTable::FreeShmRegions() {
  const bool pooled = static_cast<size_t>(shm_region_bytes_) == ShmRegionPool::kRegionBytes;
  for (char* region : shm_regions_) {
    if (pooled) {
      pool_.Release(region);
    } else {
      delete[] region;
    }
  }
  shm_regions_.clear();
}

int LockTable::ShmLock(uint8_t& shared_mask, uint8_t& exclusive_mask, int offset, int n,
                       int flags) {
  SQLOOP_CHECK(offset >= 0 && n >= 1 && offset + n <= kShmLocks, "xShmLock range out of bounds");
  const auto bits = static_cast<uint8_t>(((1u << n) - 1) << offset);
  if ((flags & SQLITE_SHM_UNLOCK) != 0) {
    SetShmLocks(shared_mask, exclusive_mask, static_cast<uint8_t>(shared_mask & ~bits),
                static_cast<uint8_t>(exclusive_mask & ~bits));
    return SQLITE_OK;
  }
  if ((flags & SQLITE_SHM_SHARED) != 0) {
    // SQLite's contract (wal.c): a shared lock is always of one slot.
    SQLOOP_CHECK(n == 1, "xShmLock: a shared lock of more than one slot");
    if ((shared_mask & bits) != 0) return SQLITE_OK;
    if (shm_exclusive_[offset]) return SQLITE_BUSY;
    SetShmLocks(shared_mask, exclusive_mask, static_cast<uint8_t>(shared_mask | bits),
                exclusive_mask);
    return SQLITE_OK;
  }
  for (int i = offset; i < offset + n; ++i) {
    const auto bit = static_cast<uint8_t>(1u << i);
    if ((exclusive_mask & bit) != 0) continue;
    const uint16_t own_shared = (shared_mask & bit) != 0 ? 1 : 0;
    if (shm_exclusive_[i] || shm_shared_[i] > own_shared) return SQLITE_BUSY;
  }
  SetShmLocks(shared_mask, exclusive_mask, shared_mask,
              static_cast<uint8_t>(exclusive_mask | bits));
  return SQLITE_OK;
}

// Applies the difference between a handle's masks and the next ones to the slots, then checks
// the invariants of lock_table.h.
void LockTable::SetShmLocks(uint8_t& shared_mask, uint8_t& exclusive_mask, uint8_t shared_next,
                            uint8_t exclusive_next) {
  for (int i = 0; i < kShmLocks; ++i) {
    const auto bit = static_cast<uint8_t>(1u << i);
    const bool was_shared = (shared_mask & bit) != 0;
    const bool is_shared = (shared_next & bit) != 0;
    const bool is_exclusive = (exclusive_next & bit) != 0;
    if (((exclusive_mask & bit) != 0) != is_exclusive) shm_exclusive_[i] = is_exclusive;
    if (was_shared && !is_shared) {
      SQLOOP_CHECK(shm_shared_[i] > 0, "WAL index shared lock count underflow");
      --shm_shared_[i];
    } else if (!was_shared && is_shared) {
      ++shm_shared_[i];
    }
    SQLOOP_CHECK(!is_exclusive || shm_exclusive_[i], "a handle's exclusive slot is not exclusive");
    SQLOOP_CHECK(!is_shared || shm_shared_[i] >= 1, "a handle's shared slot is not counted");
    SQLOOP_DCHECK(!shm_exclusive_[i] || shm_shared_[i] <= 1,
                  "an exclusive WAL index slot has shared holders besides its own");
  }
  shared_mask = shared_next;
  exclusive_mask = exclusive_next;
}

// The last connection gone: forget the index. The next one rebuilds it from the WAL (SQLite's
// recovery), exactly as after a restart.
void LockTable::ShmDetach() {
  SQLOOP_CHECK(shm_users_ > 0, "xShmUnmap without xShmMap");
  if (--shm_users_ != 0) return;
  FreeShmRegions();
  shm_region_bytes_ = 0;
  shm_shared_.fill(0);
  shm_exclusive_.fill(false);
}

}  // namespace sqloop::db::internal
