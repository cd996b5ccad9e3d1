// tests/alloc_sqlite_test_support.h
// -----------------------------------------------------------------------------
//
// Shared pieces of the tests that run SQLite on sqloop's accounting allocator
// (alloc/sqlite_memory.h). SQLITE_CONFIG_MALLOC must come before any other sqlite3 use in the
// process, so each such test is a binary of its own, and including this header in it installs
// the allocator before the first test runs (a gtest environment).
#ifndef SQLOOP_TESTS_ALLOC_SQLITE_TEST_SUPPORT_H_
#define SQLOOP_TESTS_ALLOC_SQLITE_TEST_SUPPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/profile.h"
#include "sqloop/alloc/sqlite_memory.h"

namespace sqloop::alloc::test_support {

class InstallEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_TRUE(InstallSqliteMemory().ok()); }
};
inline const auto* const kInstall = ::testing::AddGlobalTestEnvironment(new InstallEnvironment());

inline ProfileCounters Counters(TenantId tenant) {
  absl::StatusOr<ProfileCounters> counters = GetTenantCounters(tenant);
  SQLOOP_CHECK(counters.ok(), "test: unknown tenant");
  return *counters;
}

inline uint64_t LiveBytes(TenantId tenant) { return Counters(tenant).live_bytes; }

inline TenantId Register(const std::string& name, uint64_t limit_bytes = kTenantNoLimit) {
  absl::StatusOr<TenantId> tenant = RegisterTenant(name, limit_bytes);
  SQLOOP_CHECK(tenant.ok(), "test: RegisterTenant failed");
  return *tenant;
}

}  // namespace sqloop::alloc::test_support

#endif  // SQLOOP_TESTS_ALLOC_SQLITE_TEST_SUPPORT_H_
