// The in-process locks of db/internal/lock_table.h: SQLite's lock levels between the handles
// of one process, the WAL index's slot locks and its memory (db/internal/shm_region_pool.h),
// and the setters that refuse what the tables do not list.
#include <sqlite3.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"
#include "sqloop/db/internal/lock_table.h"

namespace sqloop::db::internal {
namespace {

constexpr uint64_t kWalIndexBytesMax = uint64_t{1} << 20;

// A writer's EXCLUSIVE waits at PENDING for the readers that hold SHARED, and PENDING keeps new
// readers out meanwhile, so readers cannot starve it.
TEST(LockTableTest, ExclusiveWaitsAtPendingForTheReadersAndKeepsNewOnesOut) {
  ShmRegionPool pool;
  LockTable table(kWalIndexBytesMax, pool);
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
  ShmRegionPool pool;
  LockTable table(kWalIndexBytesMax, pool);
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
// The pages of `region` (ShmRegionPool::kRegionBytes) that are in memory, by mincore.
std::vector<bool> ResidentPages(const char* region) {
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in(ShmRegionPool::kRegionBytes / page);
  EXPECT_EQ(mincore(const_cast<char*>(region), ShmRegionPool::kRegionBytes, in.data()), 0);
  std::vector<bool> resident;
  for (const unsigned char bit : in) resident.push_back((bit & 1) != 0);
  return resident;
}

bool AllZero(const char* region) {
  return std::all_of(region, region + ShmRegionPool::kRegionBytes, [](char c) { return c == 0; });
}

// A WAL-index region costs memory only for the pages SQLite touches (a reopened tenant's WAL is
// empty: the header's page alone), and is zero-filled for its next holder whatever the last
// one wrote: its pages go back to the kernel, but for a header page touched alone, zeroed.
TEST(ShmRegionPoolTest, ARegionHoldsOnlyThePagesTouchedAndComesBackZero) {
  ShmRegionPool pool;
  char* region = pool.Obtain();
  ASSERT_NE(region, nullptr);
  std::vector<bool> resident = ResidentPages(region);
  EXPECT_EQ(std::count(resident.begin(), resident.end(), true), 0);
  region[100] = 7;  // The WAL index's header.
  resident = ResidentPages(region);
  EXPECT_TRUE(resident[0]);
  EXPECT_EQ(std::count(resident.begin(), resident.end(), true), 1);
  // Only the header's page touched: it is zeroed and kept for the next holder, who writes
  // its header at once.
  pool.Release(region);
  ASSERT_EQ(pool.Obtain(), region);
  resident = ResidentPages(region);
  EXPECT_TRUE(resident[0]);
  EXPECT_EQ(std::count(resident.begin(), resident.end(), true), 1);
  EXPECT_TRUE(AllZero(region)) << "the header's page kept its bytes";
  std::fill(region, region + ShmRegionPool::kRegionBytes, 'x');
  pool.Release(region);
  EXPECT_EQ(pool.regions_in_use(), 0u);
  char* again = pool.Obtain();
  ASSERT_EQ(again, region) << "the region released last goes out first";
  resident = ResidentPages(again);
  EXPECT_EQ(std::count(resident.begin(), resident.end(), true), 0) << "its memory was kept";
  EXPECT_TRUE(AllZero(again)) << "the last holder's bytes came back";
  pool.Release(again);
}

TEST(ShmRegionPoolTest, APoolGrowsByWholeMappingsAndTablesGiveTheirRegionsBack) {
  ShmRegionPool pool;
  std::vector<char*> regions;
  for (size_t i = 0; i <= ShmRegionPool::kRegionsPerMapping; ++i) regions.push_back(pool.Obtain());
  EXPECT_EQ(pool.mappings(), 2u);
  EXPECT_EQ(regions[1], regions[0] + ShmRegionPool::kRegionBytes) << "in address order";
  for (char* region : regions) pool.Release(region);
  {
    LockTable table(kWalIndexBytesMax, pool);
    table.ShmAttach();
    void* first = nullptr;
    void* second = nullptr;
    ASSERT_EQ(table.ShmMap(0, ShmRegionPool::kRegionBytes, /*extend=*/true, &first), SQLITE_OK);
    ASSERT_EQ(table.ShmMap(1, ShmRegionPool::kRegionBytes, /*extend=*/true, &second), SQLITE_OK);
    EXPECT_TRUE(AllZero(static_cast<char*>(second)));
    EXPECT_EQ(pool.regions_in_use(), 2u);
    table.ShmDetach();  // The last user: the regions go back.
    EXPECT_EQ(pool.regions_in_use(), 0u);
    table.ShmAttach();  // Left attached: the table's end gives them back.
    ASSERT_EQ(table.ShmMap(0, ShmRegionPool::kRegionBytes, /*extend=*/true, &first), SQLITE_OK);
    EXPECT_EQ(pool.regions_in_use(), 1u);
  }
  EXPECT_EQ(pool.regions_in_use(), 0u);
  EXPECT_EQ(pool.mappings(), 2u) << "the address space is kept for the next tables";
}

// Any other region size SQLite might be built with comes from the heap, zero-filled too.
TEST(ShmRegionPoolTest, ARegionOfAnotherSizeComesFromTheHeap) {
  ShmRegionPool pool;
  LockTable table(kWalIndexBytesMax, pool);
  table.ShmAttach();
  void* region = nullptr;
  ASSERT_EQ(table.ShmMap(0, 4096, /*extend=*/true, &region), SQLITE_OK);
  ASSERT_NE(region, nullptr);
  const char* bytes = static_cast<const char*>(region);
  EXPECT_TRUE(std::all_of(bytes, bytes + 4096, [](char c) { return c == 0; }));
  EXPECT_EQ(pool.regions_in_use(), 0u);
  table.ShmDetach();
}

TEST(LockTableDeathTest, ALevelOutsideTheTableIsRefused) {
  ShmRegionPool pool;
  LockTable table(kWalIndexBytesMax, pool);
  int owner = 0;
  int level = SQLITE_LOCK_EXCLUSIVE + 3;
  EXPECT_DEATH(table.Unlock(&owner, level, SQLITE_LOCK_SHARED), "a lock level outside SQLite's");
}

}  // namespace
}  // namespace sqloop::db::internal
