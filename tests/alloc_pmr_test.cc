#include <cstdint>
#include <memory_resource>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/alloc/pmr.h"

namespace sqloop::alloc {
namespace {

using ::testing::HasSubstr;

// True when the arena served an allocation since `bytes_requested_before` was read.
bool ArenaGrew(const Arena& arena, uint64_t bytes_requested_before) {
  return arena.stats().bytes_requested > bytes_requested_before;
}

TEST(ArenaResourceTest, VectorLivesInTheArena) {
  Arena arena({.name = "pmr-vector"});
  ArenaResource resource(&arena);
  const HeapCounts heap_before = CurrentHeapCounts();
  {
    std::pmr::vector<uint64_t> values(&resource);
    for (uint64_t i = 0; i < 1000; ++i) values.push_back(i * i);
    for (uint64_t i = 0; i < 1000; ++i) ASSERT_EQ(values[i], i * i);
    EXPECT_EQ(values.get_allocator().resource(), &resource);
  }
  // Every growth of the vector was served by the arena (several reallocations, 8 KB at the end).
  EXPECT_GE(arena.stats().allocations, 5u);
  EXPECT_GE(arena.stats().bytes_requested, 1000 * sizeof(uint64_t));
  // Only arena chunks came from the heap: far fewer than the vector's reallocations.
  EXPECT_LE(CurrentHeapCounts().allocations - heap_before.allocations,
            arena.stats().chunks_allocated);
}

TEST(ArenaResourceTest, StringAndUnorderedMapLiveInTheArena) {
  Arena arena({.name = "pmr-map"});
  ArenaResource resource(&arena);
  {
    std::pmr::unordered_map<std::pmr::string, std::pmr::string> map(&resource);
    for (int i = 0; i < 200; ++i) {
      // Long enough to defeat the small-string optimisation, so the strings allocate too.
      std::pmr::string key("key-number-" + std::to_string(i) + "-padding-padding", &resource);
      map.emplace(key, std::pmr::string(64, static_cast<char>('a' + i % 26), &resource));
    }
    ASSERT_EQ(map.size(), 200u);
    const auto it = map.find(std::pmr::string("key-number-7-padding-padding", &resource));
    ASSERT_NE(it, map.end());
    EXPECT_EQ(std::string_view(it->second), std::string(64, 'h'));
    // Keys and values propagate the allocator (uses-allocator construction).
    EXPECT_EQ(it->first.get_allocator().resource(), &resource);
    EXPECT_EQ(it->second.get_allocator().resource(), &resource);
  }
  // 200 nodes, 400 string buffers, the temporaries and the bucket arrays.
  EXPECT_GE(arena.stats().allocations, 600u);
  arena.Reset();
  EXPECT_EQ(arena.stats().chunks, 1u);
}

TEST(ArenaResourceTest, LimitThrowsBadAllocWithTheArenaMessage) {
  Arena arena({.name = "pmr-limited", .first_chunk_bytes = 1024, .limit_bytes = 8192});
  ArenaResource resource(&arena);
  std::pmr::vector<char> bytes(&resource);
  try {
    bytes.resize(100000);
    FAIL() << "the limit did not stop a 100000-byte vector";
  } catch (const std::bad_alloc& error) {
    EXPECT_THAT(error.what(), HasSubstr("arena 'pmr-limited'"));
    EXPECT_THAT(error.what(), HasSubstr("limit of 8192 bytes"));
  }
  // The arena and the adapter keep working below the limit.
  const uint64_t before = arena.stats().bytes_requested;
  std::pmr::string small("fits within the limit, longer than the SSO buffer", &resource);
  EXPECT_TRUE(ArenaGrew(arena, before));
}

TEST(ArenaResourceTest, AdaptersOverTheSameArenaCompareEqual) {
  Arena arena({.name = "eq"});
  Arena other({.name = "other"});
  ArenaResource a(&arena);
  ArenaResource b(&arena);
  ArenaResource c(&other);
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a == c);
  EXPECT_FALSE(a == *std::pmr::new_delete_resource());
}

TEST(ArenaResourceTest, HonoursOverAlignedTypes) {
  struct alignas(64) CacheLine {
    char bytes[64];
  };
  Arena arena({.name = "aligned"});
  ArenaResource resource(&arena);
  std::pmr::vector<CacheLine> lines(&resource);
  lines.resize(1);
  for (int i = 0; i < 10; ++i) {
    lines.emplace_back();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(lines.data()) % 64, 0u);
  }
}

}  // namespace
}  // namespace sqloop::alloc
