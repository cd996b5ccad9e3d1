// The pool of fetched pages (db/internal/fetched_pages.h): a page a fetch read whole is copied
// out once, to its owner, at the version it was fetched at, and never while the kernel may
// still be writing it.
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "sqloop/db/internal/fetched_pages.h"

namespace sqloop::db::internal {
namespace {

constexpr uint32_t kPage = FetchedPages::kPageBytes;
constexpr int kFd = 7;
constexpr uint64_t kOffset = 3 * kPage;

// What a fetch would do: fill the buffer with `fill` and report the whole page read.
void Fetch(FetchedPages& pages, char* buffer, char fill, int64_t bytes = kPage) {
  std::memset(buffer, fill, kPage);
  pages.Fetched(buffer, bytes);
}

TEST(FetchedPagesTest, AWholePageIsCopiedOnceToItsOwnerAtItsVersion) {
  FetchedPages pages;
  int owner = 0;
  int other = 0;
  char* buffer = pages.Take(&owner, kFd, kOffset, /*version=*/5);
  ASSERT_NE(buffer, nullptr);
  EXPECT_EQ(pages.ready(), 0u) << "a page in flight is not ready";
  Fetch(pages, buffer, 'x');
  EXPECT_EQ(pages.ready(), 1u);
  std::vector<char> out(kPage, 0);
  EXPECT_FALSE(pages.TakeCopy(&other, kFd, kOffset, kPage, 5, out.data())) << "another owner";
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd + 1, kOffset, kPage, 5, out.data())) << "another fd";
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd, kOffset + kPage, kPage, 5, out.data()))
      << "another page";
  EXPECT_EQ(pages.ready(), 1u) << "a question about another page dropped this one";
  // Part of the page: SQLite reads a page's first bytes alone at times.
  ASSERT_TRUE(pages.TakeCopy(&owner, kFd, kOffset + 100, 24, 5, out.data()));
  EXPECT_EQ(std::string(out.data(), 24), std::string(24, 'x'));
  EXPECT_EQ(pages.ready(), 0u);
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd, kOffset, kPage, 5, out.data())) << "copied twice";
}

TEST(FetchedPagesTest, APageFetchedBeforeTheFilesChangedIsDroppedNotCopied) {
  FetchedPages pages;
  int owner = 0;
  Fetch(pages, pages.Take(&owner, kFd, kOffset, /*version=*/5), 'x');
  std::vector<char> out(kPage, 'o');
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd, kOffset, kPage, /*version=*/6, out.data()));
  EXPECT_EQ(out[0], 'o') << "stale bytes were copied";
  EXPECT_EQ(pages.ready(), 0u) << "the stale page was kept";
}

TEST(FetchedPagesTest, AShortOrFailedFetchLeavesNothingToCopy) {
  FetchedPages pages;
  int owner = 0;
  Fetch(pages, pages.Take(&owner, kFd, kOffset, 1), 'x', /*bytes=*/kPage - 1);
  Fetch(pages, pages.Take(&owner, kFd, kOffset, 1), 'x', /*bytes=*/-5);
  EXPECT_EQ(pages.ready(), 0u);
  std::vector<char> out(kPage);
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd, kOffset, kPage, 1, out.data()));
}

// The owner goes (its files close) while its fetch is in flight: the slot stays the kernel's
// until the fetch is over, and then holds nothing anyone may copy.
TEST(FetchedPagesTest, AnOwnerForgottenMidFetchGetsNoCopyAndItsSlotIsNotReused) {
  FetchedPages pages;
  int owner = 0;
  char* in_flight = pages.Take(&owner, kFd, kOffset, 1);
  ASSERT_NE(in_flight, nullptr);
  pages.Forget(&owner);
  for (uint32_t i = 1; i < FetchedPages::kSlotsMax; ++i) {
    EXPECT_NE(pages.Take(&owner, kFd, kOffset + i * kPage, 1), in_flight);
  }
  Fetch(pages, in_flight, 'x');
  EXPECT_EQ(pages.ready(), 0u);
  std::vector<char> out(kPage);
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd, kOffset, kPage, 1, out.data()));
}

// kSlotsMax pages at most: with every slot in flight a fetch gets none (it reads into the
// sink); with some ready and none free, the oldest ready one is reused.
TEST(FetchedPagesTest, AFullPoolReusesItsOldestReadyPageOrGivesNone) {
  FetchedPages pages;
  int owner = 0;
  std::vector<char*> buffers;
  for (uint32_t i = 0; i < FetchedPages::kSlotsMax; ++i) {
    buffers.push_back(pages.Take(&owner, kFd, i * kPage, 1));
    ASSERT_NE(buffers.back(), nullptr);
  }
  EXPECT_EQ(pages.Take(&owner, kFd, 1000 * kPage, 1), nullptr) << "a slot in flight was handed out";
  Fetch(pages, buffers[9], '9');
  Fetch(pages, buffers[4], '4');
  EXPECT_EQ(pages.Take(&owner, kFd, 1000 * kPage, 1), buffers[9]) << "not the oldest ready page";
  EXPECT_EQ(pages.ready(), 1u);
  std::vector<char> out(kPage);
  EXPECT_FALSE(pages.TakeCopy(&owner, kFd, 9 * kPage, kPage, 1, out.data()))
      << "reused, yet copied";
  ASSERT_TRUE(pages.TakeCopy(&owner, kFd, 4 * kPage, kPage, 1, out.data()));
  EXPECT_EQ(out[0], '4');
}

}  // namespace
}  // namespace sqloop::db::internal
