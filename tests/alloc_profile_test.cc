#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/alloc/profile.h"

namespace sqloop::alloc {
namespace {

using ::testing::HasSubstr;

TEST(AllocationProfileTest, CountsBytesLiveAndPeak) {
  AllocationProfile profile;
  const ProfileEntryId site = profile.Site("parser");
  profile.RecordAllocation(site, 100);
  profile.RecordAllocation(site, 50);
  profile.RecordFree(site, 100);
  profile.RecordAllocation(site, 20);
  profile.RecordFailure(site);
  const ProfileCounters& c = profile.counters(site);
  EXPECT_EQ(c.allocations, 3u);
  EXPECT_EQ(c.frees, 1u);
  EXPECT_EQ(c.bytes_allocated, 170u);
  EXPECT_EQ(c.live_bytes, 70u);
  EXPECT_EQ(c.peak_live_bytes, 150u);
  EXPECT_EQ(c.failures, 1u);
}

TEST(AllocationProfileTest, SitesAndTenantsAreSeparateNamespaces) {
  AllocationProfile profile;
  const ProfileEntryId site = profile.Site("db-1");
  const ProfileEntryId tenant = profile.Tenant("db-1");
  EXPECT_NE(site, tenant);
  EXPECT_EQ(profile.Site("db-1"), site);
  EXPECT_EQ(profile.Tenant("db-1"), tenant);
  EXPECT_EQ(profile.size(), 2u);
}

TEST(AllocationProfileTest, TableIsAlignedAndOrdered) {
  AllocationProfile profile;
  profile.RecordAllocation(profile.Site("small-site"), 10);
  profile.RecordAllocation(profile.Site("a-much-longer-site-name"), 123456789);
  profile.RecordAllocation(profile.Tenant("db-7"), 4096);
  ProfileCounters shared;
  shared.allocations = 3;
  shared.live_bytes = 999;
  shared.peak_live_bytes = 1000;
  profile.Set(profile.Tenant("shared"), shared);

  const std::string table = profile.ToTable();
  const std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << table;
  EXPECT_THAT(lines[0], HasSubstr("kind"));
  EXPECT_THAT(lines[0], HasSubstr("peak_live_bytes"));
  // Tenants first, largest peak first; then sites, largest peak first.
  EXPECT_THAT(lines[1], HasSubstr("db-7"));
  EXPECT_THAT(lines[2], HasSubstr("shared"));
  EXPECT_THAT(lines[3], HasSubstr("a-much-longer-site-name"));
  EXPECT_THAT(lines[4], HasSubstr("small-site"));
  // Every line has the same length (right-aligned numbers end at the same column), and the
  // name column is as wide as the longest name.
  for (const std::string& line : lines) EXPECT_EQ(line.size(), lines[0].size()) << line;
  EXPECT_EQ(lines[3].find("123456789"), lines[1].find("4096") - 5);
  EXPECT_THAT(lines[2], HasSubstr("  999  "));
}

TEST(AllocationProfileTest, JsonHasEveryCounterAndEscapesNames) {
  AllocationProfile profile;
  const ProfileEntryId tenant = profile.Tenant("db \"quoted\"\\x");
  profile.RecordAllocation(tenant, 64);
  profile.RecordAllocation(tenant, 32);
  profile.RecordFree(tenant, 64);
  profile.RecordAllocation(profile.Site("arena:req"), 8);
  EXPECT_EQ(profile.ToJson(),
            "{\"tenants\":[{\"name\":\"db \\\"quoted\\\"\\\\x\",\"allocations\":2,\"frees\":1,"
            "\"bytes_allocated\":96,\"live_bytes\":32,\"peak_live_bytes\":96,\"failures\":0}],"
            "\"sites\":[{\"name\":\"arena:req\",\"allocations\":1,\"frees\":0,"
            "\"bytes_allocated\":8,\"live_bytes\":8,\"peak_live_bytes\":8,\"failures\":0}]}");
}

TEST(AllocationProfileTest, EmptyProfilePrintsHeaderAndEmptyJson) {
  AllocationProfile profile;
  EXPECT_EQ(profile.ToJson(), "{\"tenants\":[],\"sites\":[]}");
  EXPECT_THAT(profile.ToTable(), HasSubstr("bytes_allocated"));
}

// "Cheap enough to leave on": once an entry exists, recording and looking it up by name never
// allocate.
TEST(AllocationProfileTest, RecordingDoesNotAllocate) {
  AllocationProfile profile;
  const ProfileEntryId site = profile.Site("hot-path-with-a-name-longer-than-sso");
  const ProfileEntryId tenant = profile.Tenant("tenant-with-a-name-longer-than-sso");
  const HeapCounts before = CurrentHeapCounts();
  for (int i = 0; i < 100000; ++i) {
    profile.RecordAllocation(site, 64);
    profile.RecordAllocation(tenant, 32);
    profile.RecordFree(site, 64);
    if (profile.Site("hot-path-with-a-name-longer-than-sso") != site) FAIL();
  }
  EXPECT_EQ(CurrentHeapCounts().allocations - before.allocations, 0u);
  EXPECT_EQ(profile.counters(tenant).live_bytes, 3200000u);
}

}  // namespace
}  // namespace sqloop::alloc
