// The in-process locks of db/internal/lock_table.h: SQLite's lock levels between the handles
// of one process, the WAL index's slot locks, and the setters that refuse what the tables do
// not list.
#include <sqlite3.h>

#include "gtest/gtest.h"
#include "sqloop/db/internal/lock_table.h"

namespace sqloop::db::internal {
namespace {

constexpr uint64_t kWalIndexBytesMax = uint64_t{1} << 20;

// A writer's EXCLUSIVE waits at PENDING for the readers that hold SHARED, and PENDING keeps new
// readers out meanwhile, so readers cannot starve it.
TEST(LockTableTest, ExclusiveWaitsAtPendingForTheReadersAndKeepsNewOnesOut) {
  LockTable table(kWalIndexBytesMax);
  int writer = 0;  // The handles' addresses are the owners.
  int reader = 0;
  int late = 0;
  int writer_level = SQLITE_LOCK_NONE;
  int reader_level = SQLITE_LOCK_NONE;
  int late_level = SQLITE_LOCK_NONE;
  ASSERT_EQ(table.Lock(&writer, writer_level, SQLITE_LOCK_SHARED), SQLITE_OK);
  ASSERT_EQ(table.Lock(&reader, reader_level, SQLITE_LOCK_SHARED), SQLITE_OK);
  ASSERT_EQ(table.Lock(&writer, writer_level, SQLITE_LOCK_RESERVED), SQLITE_OK);
  EXPECT_TRUE(table.ReservedHeld());
  EXPECT_EQ(table.Lock(&reader, reader_level, SQLITE_LOCK_RESERVED), SQLITE_BUSY);
  EXPECT_EQ(table.Lock(&writer, writer_level, SQLITE_LOCK_EXCLUSIVE), SQLITE_BUSY);
  EXPECT_EQ(writer_level, SQLITE_LOCK_PENDING);
  EXPECT_EQ(table.Lock(&late, late_level, SQLITE_LOCK_SHARED), SQLITE_BUSY);
  EXPECT_EQ(late_level, SQLITE_LOCK_NONE);
  table.Unlock(&reader, reader_level, SQLITE_LOCK_NONE);
  EXPECT_EQ(reader_level, SQLITE_LOCK_NONE);
  ASSERT_EQ(table.Lock(&writer, writer_level, SQLITE_LOCK_EXCLUSIVE), SQLITE_OK);
  EXPECT_EQ(writer_level, SQLITE_LOCK_EXCLUSIVE);
  table.Unlock(&writer, writer_level, SQLITE_LOCK_NONE);  // As xClose does: through SHARED.
  EXPECT_EQ(writer_level, SQLITE_LOCK_NONE);
  EXPECT_FALSE(table.ReservedHeld());
  EXPECT_EQ(table.Lock(&late, late_level, SQLITE_LOCK_SHARED), SQLITE_OK);
}

// An exclusive slot lock is granted over the holder's own shared lock and refused over
// another's; unlocking frees both.
TEST(LockTableTest, WalIndexSlotsAreSharedOrExclusive) {
  LockTable table(kWalIndexBytesMax);
  uint8_t a_shared = 0;
  uint8_t a_exclusive = 0;
  uint8_t b_shared = 0;
  uint8_t b_exclusive = 0;
  const int shared = SQLITE_SHM_LOCK | SQLITE_SHM_SHARED;
  const int exclusive = SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE;
  const int unlock_exclusive = SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE;
  ASSERT_EQ(table.ShmLock(a_shared, a_exclusive, 3, 1, shared), SQLITE_OK);
  ASSERT_EQ(table.ShmLock(a_shared, a_exclusive, 3, 1, exclusive), SQLITE_OK);
  EXPECT_EQ(table.ShmLock(b_shared, b_exclusive, 3, 1, shared), SQLITE_BUSY);
  ASSERT_EQ(table.ShmLock(a_shared, a_exclusive, 3, 1, unlock_exclusive), SQLITE_OK);
  EXPECT_EQ(a_shared | a_exclusive, 0);
  ASSERT_EQ(table.ShmLock(b_shared, b_exclusive, 3, 1, shared), SQLITE_OK);
  EXPECT_EQ(table.ShmLock(a_shared, a_exclusive, 0, 8, exclusive), SQLITE_BUSY);
}

// The negative control: a level outside SQLite's reaches SetLockLevel, which stops there.
TEST(LockTableDeathTest, ALevelOutsideTheTableIsRefused) {
  LockTable table(kWalIndexBytesMax);
  int owner = 0;
  int level = SQLITE_LOCK_EXCLUSIVE + 3;
  EXPECT_DEATH(table.Unlock(&owner, level, SQLITE_LOCK_SHARED), "a lock level outside SQLite's");
}

}  // namespace
}  // namespace sqloop::db::internal
