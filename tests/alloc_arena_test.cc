#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/arena.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/alloc/profile.h"

namespace sqloop::alloc {
namespace {

using ::testing::HasSubstr;

uintptr_t Address(void* pointer) { return reinterpret_cast<uintptr_t>(pointer); }

TEST(ArenaTest, HonoursEveryPowerOfTwoAlignment) {
  Arena arena({.name = "align", .first_chunk_bytes = 256});
  for (size_t alignment = 1; alignment <= 4096; alignment *= 2) {
    // An odd-sized allocation first, so the cursor is misaligned for the next request.
    ASSERT_TRUE(arena.Allocate(3, 1).ok());
    for (const size_t size : {size_t{1}, size_t{7}, size_t{64}, size_t{1000}}) {
      absl::StatusOr<void*> memory = arena.Allocate(size, alignment);
      ASSERT_TRUE(memory.ok()) << memory.status();
      EXPECT_EQ(Address(*memory) % alignment, 0u) << "alignment " << alignment;
      std::memset(*memory, 0xab, size);  // The sanitizer build checks the bytes are ours.
    }
  }
}

TEST(ArenaTest, AllocationsDoNotOverlap) {
  Arena arena({.name = "overlap", .first_chunk_bytes = 128});
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (size_t i = 0; i < 500; ++i) {
    const size_t size = 1 + (i * 37) % 200;
    absl::StatusOr<void*> memory = arena.Allocate(size, size_t{1} << (i % 6));
    ASSERT_TRUE(memory.ok());
    std::memset(*memory, static_cast<int>(i), size);
    ranges.emplace_back(Address(*memory), Address(*memory) + size);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "allocations " << i - 1 << " and " << i;
  }
}

TEST(ArenaTest, GrowsByChunksThatDouble) {
  Arena arena({.name = "grow", .first_chunk_bytes = 1024});
  EXPECT_EQ(arena.stats().chunks, 0u) << "an unused arena holds no memory";
  ASSERT_TRUE(arena.Allocate(100).ok());
  EXPECT_EQ(arena.stats().chunks, 1u);
  EXPECT_EQ(arena.stats().bytes_reserved, 1024u);
  // 100 bytes each at a 16-byte stride of 112: 9 fit in the first chunk (1024 bytes less the
  // 16-byte header), 18 in the 2 KiB one, 36 in the 4 KiB one; the 64th starts an 8 KiB one.
  for (int i = 0; i < 69; ++i) ASSERT_TRUE(arena.Allocate(100).ok());
  const ArenaStats& stats = arena.stats();
  EXPECT_EQ(stats.chunks, 4u);
  EXPECT_EQ(stats.bytes_reserved, 1024u + 2048u + 4096u + 8192u);
  EXPECT_EQ(stats.allocations, 70u);
  EXPECT_EQ(stats.bytes_requested, 7000u);
  EXPECT_GE(stats.bytes_used, 7000u);
  EXPECT_EQ(stats.bytes_reserved_peak, stats.bytes_reserved);
}

TEST(ArenaTest, LargeRequestGetsAChunkOfItsOwn) {
  Arena arena({.name = "large", .first_chunk_bytes = 1024});
  absl::StatusOr<void*> big = arena.Allocate(3 * kArenaChunkBytesMax, 64);
  ASSERT_TRUE(big.ok());
  std::memset(*big, 1, 3 * kArenaChunkBytesMax);
  EXPECT_EQ(Address(*big) % 64, 0u);
  EXPECT_GE(arena.stats().bytes_reserved, 3 * kArenaChunkBytesMax);
}

TEST(ArenaTest, ResetKeepsTheFirstChunkAndFreesTheRest) {
  Arena arena({.name = "reset", .first_chunk_bytes = 512});
  absl::StatusOr<void*> first = arena.Allocate(16);
  ASSERT_TRUE(first.ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(arena.Allocate(64).ok());
  EXPECT_GT(arena.stats().chunks, 1u);
  const uint64_t used_before_reset = arena.stats().bytes_used;

  arena.Reset();
  const ArenaStats& stats = arena.stats();
  EXPECT_EQ(stats.chunks, 1u);
  EXPECT_EQ(stats.bytes_reserved, 512u);
  EXPECT_EQ(stats.bytes_used, 0u);
  EXPECT_EQ(stats.bytes_used_peak, used_before_reset);
  EXPECT_EQ(stats.resets, 1u);
  // The first chunk is reused from its start.
  absl::StatusOr<void*> again = arena.Allocate(16);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
}

// A burst as the arena's first allocation (after construction or Release) took a first chunk
// of its own size, which Reset kept: 8 MiB pinned by an arena of 1 KiB chunks. Reset frees it,
// and the next allocation takes a first chunk of the usual size.
TEST(ArenaTest, AFirstChunkABurstEnlargedDoesNotOutliveReset) {
  Arena arena({.name = "burst", .first_chunk_bytes = 1024});
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(arena.Allocate(size_t{8} << 20).ok());
    EXPECT_GE(arena.stats().bytes_reserved, size_t{8} << 20);
    arena.Reset();
    EXPECT_EQ(arena.stats().bytes_reserved, 0u) << "round " << round;
    EXPECT_EQ(arena.stats().chunks, 0u);
    ASSERT_TRUE(arena.Allocate(16).ok());
    EXPECT_EQ(arena.stats().bytes_reserved, 1024u) << "round " << round;
    arena.Release();
  }
}

TEST(ArenaTest, ReleaseFreesEverything) {
  Arena arena({.name = "release", .first_chunk_bytes = 256});
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(arena.Allocate(64).ok());
  arena.Release();
  EXPECT_EQ(arena.stats().chunks, 0u);
  EXPECT_EQ(arena.stats().bytes_reserved, 0u);
  ASSERT_TRUE(arena.Allocate(64).ok()) << "a released arena is still usable";
  EXPECT_EQ(arena.stats().chunks, 1u);
}

TEST(ArenaTest, LimitFailsWithAUsefulMessageAndTheArenaStillWorks) {
  Arena arena({.name = "request-scratch", .first_chunk_bytes = 1024, .limit_bytes = 4096});
  // Fill up to the limit: 1 KiB + 2 KiB + the last 1 KiB (clamped to what the limit leaves).
  int successes = 0;
  absl::Status failure;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<void*> memory = arena.Allocate(200);
    if (!memory.ok()) {
      failure = memory.status();
      break;
    }
    ++successes;
  }
  ASSERT_FALSE(failure.ok()) << "the limit was never hit";
  EXPECT_GT(successes, 10);
  EXPECT_EQ(failure.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(failure.message(), HasSubstr("arena 'request-scratch'"));
  EXPECT_THAT(failure.message(), HasSubstr("200 bytes"));
  EXPECT_THAT(failure.message(), HasSubstr("limit of 4096 bytes"));
  EXPECT_THAT(failure.message(), HasSubstr("raise ArenaOptions::limit_bytes"));
  EXPECT_LE(arena.stats().bytes_reserved, 4096u);
  EXPECT_EQ(arena.stats().failures, 1u);

  // A request bigger than the whole limit fails too, without touching the heap.
  absl::StatusOr<void*> huge = arena.Allocate(1 << 20);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);

  // The arena is still usable: smaller requests fit in what is left, and a reset frees room.
  arena.Reset();
  for (int i = 0; i < successes; ++i) ASSERT_TRUE(arena.Allocate(200).ok()) << i;
  EXPECT_LE(arena.stats().bytes_reserved_peak, 4096u);
}

TEST(ArenaTest, SizeOverflowIsAnErrorNotACrash) {
  Arena arena({.name = "overflow"});
  EXPECT_EQ(arena.Allocate(SIZE_MAX - 8).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(arena.AllocateArray<uint64_t>(SIZE_MAX / 4).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::StatusOr<uint64_t*> values = arena.AllocateArray<uint64_t>(10);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(Address(*values) % alignof(uint64_t), 0u);
}

TEST(ArenaTest, ZeroSizeAllocationsSucceed) {
  Arena arena({.name = "zero"});
  absl::StatusOr<void*> a = arena.Allocate(0);
  absl::StatusOr<void*> b = arena.Allocate(0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, nullptr);
  EXPECT_NE(*b, nullptr);
}

TEST(ArenaTest, RecordsChunksInTheProfile) {
  AllocationProfile profile;
  {
    Arena arena({.name = "arena:parser", .first_chunk_bytes = 256, .profile = &profile});
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(arena.Allocate(100).ok());
    const ProfileCounters& counters = profile.counters(profile.Site("arena:parser"));
    EXPECT_EQ(counters.allocations, arena.stats().chunks_allocated);
    EXPECT_EQ(counters.live_bytes, arena.stats().bytes_reserved);
  }
  const ProfileCounters& counters = profile.counters(profile.Site("arena:parser"));
  EXPECT_EQ(counters.live_bytes, 0u) << "destroying the arena returns its chunks";
  EXPECT_EQ(counters.frees, counters.allocations);
  EXPECT_GT(counters.peak_live_bytes, 256u);
}

// Invariant 1 of arena.h: a warmed-up arena reset per request never touches the heap.
TEST(ArenaTest, WarmArenaMakesNoHeapAllocations) {
  Arena arena({.name = "warm", .first_chunk_bytes = 16 * 1024});
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(arena.Allocate(128).ok());
  arena.Reset();
  const HeapCounts before = CurrentHeapCounts();
  for (int request = 0; request < 100000; ++request) {
    for (int i = 0; i < 50; ++i) {
      absl::StatusOr<void*> memory = arena.Allocate(16 + (i * 13) % 112, 8);
      if (!memory.ok()) FAIL() << memory.status();
    }
    arena.Reset();
  }
  const HeapCounts after = CurrentHeapCounts();
  EXPECT_EQ(after.allocations - before.allocations, 0u);
  EXPECT_EQ(arena.stats().chunks_allocated, 1u);
}

}  // namespace
}  // namespace sqloop::alloc
