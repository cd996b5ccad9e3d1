// InstallSqliteMemory() after SQLite was initialised must fail with a clear status, not crash
// and not half-install. Its own binary: it initialises SQLite with the default allocator.
#include <sqlite3.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/sqlite_memory.h"

namespace sqloop::alloc {
namespace {

using ::testing::HasSubstr;

TEST(SqliteMemoryPreinitTest, InstallAfterInitialiseFailsClearly) {
  ASSERT_EQ(sqlite3_initialize(), SQLITE_OK);
  const absl::Status status = InstallSqliteMemory();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("before any other sqlite3_* function"));
  EXPECT_FALSE(SqliteMemoryInstalled());
  // SQLite keeps working with its own allocator, and nothing is charged to any tenant.
  void* block = sqlite3_malloc(64);
  ASSERT_NE(block, nullptr);
  sqlite3_free(block);
  EXPECT_EQ(GetTenantCounters(kSharedTenant)->allocations, 0u);
}

}  // namespace
}  // namespace sqloop::alloc
