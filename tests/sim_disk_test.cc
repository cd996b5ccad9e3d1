// io/sim_disk.h: what is visible, what is durable, and what a crash keeps, drops and tears.
#include "sqloop/io/sim_disk.h"

#include <fcntl.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "sqloop/io/prng.h"

namespace sqloop::io {
namespace {

// Every test prints the command that replays it when it fails (its seeds are in its code).
class SimDiskTest : public ::testing::Test {
 protected:
  SimDiskTest() : trace_(__FILE__, __LINE__, Replay()) {}

 private:
  static std::string Replay() {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    return std::string("replay: ") + ::testing::internal::GetArgvs()[0] +
           " --gtest_filter=" + test->test_suite_name() + "." + test->name();
  }
  ::testing::ScopedTrace trace_;
};

// Crash policies that make the outcome certain, so single-seed tests can assert it.
SimDiskOptions KeepNothing() {
  SimDiskOptions options;
  options.crash_keep_probability = 0;
  options.crash_tear_probability = 0;
  options.crash_keep_name_probability = 0;
  return options;
}
SimDiskOptions KeepEverything() {
  SimDiskOptions options;
  options.crash_keep_probability = 1;
  options.crash_tear_probability = 0;
  options.crash_keep_name_probability = 1;
  return options;
}

uint64_t OpenOrDie(SimDisk& disk, const char* path, int flags) {
  const int64_t node = disk.Open(path, flags, 0644);
  EXPECT_GE(node, 0) << path;
  return static_cast<uint64_t>(node);
}

void WriteOrDie(SimDisk& disk, uint64_t node, const std::string& bytes, uint64_t offset) {
  ASSERT_EQ(disk.Write(node, bytes.data(), static_cast<uint32_t>(bytes.size()), offset),
            static_cast<int64_t>(bytes.size()));
}

// A file "/d/f" with `durable` bytes whose name and data are both durable.
uint64_t DurableFile(SimDisk& disk, const std::string& durable) {
  EXPECT_EQ(disk.MakeDirectory("/d"), 0);
  const uint64_t node = OpenOrDie(disk, "/d/f", O_CREAT | O_RDWR);
  WriteOrDie(disk, node, durable, 0);
  EXPECT_EQ(disk.Sync(node), 0);
  EXPECT_EQ(disk.Sync(*disk.Lookup("/d")), 0);
  return node;
}

TEST_F(SimDiskTest, ReadsSeeWritesThatAreNotDurableYet) {
  SimDisk disk;
  const uint64_t node = OpenOrDie(disk, "/f", O_CREAT | O_RDWR);
  WriteOrDie(disk, node, "hello", 0);
  WriteOrDie(disk, node, "J", 0);
  char buffer[16] = {};
  EXPECT_EQ(disk.Read(node, buffer, sizeof(buffer), 0), 5);  // Short only at end of file.
  EXPECT_EQ(std::string(buffer, 5), "Jello");
  EXPECT_EQ(disk.Read(node, buffer, sizeof(buffer), 5), 0);
  EXPECT_EQ(disk.PendingOperations("/f"), 3u);         // Two writes and the creation of the name.
  EXPECT_EQ(disk.DurableContent("/f"), std::nullopt);  // Not even the name is durable.
  disk.AssertInvariants();
}

TEST_F(SimDiskTest, FileSyncMakesDataDurableAndDirectorySyncMakesTheNameDurable) {
  SimDisk disk;
  const uint64_t node = OpenOrDie(disk, "/f", O_CREAT | O_RDWR);
  WriteOrDie(disk, node, "abc", 0);
  ASSERT_EQ(disk.Sync(node), 0);
  EXPECT_EQ(disk.DurableContent("/f"), std::nullopt);  // Data durable, name not.
  ASSERT_EQ(disk.Sync(*disk.Lookup("/")), 0);
  EXPECT_EQ(disk.DurableContent("/f"), "abc");
  WriteOrDie(disk, node, "def", 3);
  EXPECT_EQ(disk.DurableContent("/f"), "abc");
  EXPECT_EQ(disk.VisibleContent("/f"), "abcdef");
  EXPECT_EQ(disk.PendingOperations("/f"), 1u);
}

TEST_F(SimDiskTest, CrashThatKeepsNothingLeavesExactlyTheDurableState) {
  SimDisk disk(KeepNothing());
  const uint64_t node = DurableFile(disk, "durable");
  WriteOrDie(disk, node, "-pending", 7);
  ASSERT_EQ(disk.Truncate(node, 3), 0);
  const uint64_t other = OpenOrDie(disk, "/d/new", O_CREAT | O_RDWR);
  WriteOrDie(disk, other, "x", 0);
  ASSERT_EQ(disk.Sync(other), 0);  // Data synced, but the directory never was.
  Prng prng(1);
  disk.Crash(prng);
  EXPECT_EQ(disk.VisibleContent("/d/f"), "durable");
  EXPECT_EQ(disk.VisibleContent("/d/new"), std::nullopt) << "a name never synced survived";
  EXPECT_EQ(disk.Read(other, nullptr, 0, 0), -EBADF) << "the vanished file's node survived";
  EXPECT_EQ(disk.Read(node, nullptr, 0, 0), 0) << "a surviving file keeps its node id";
  EXPECT_EQ(disk.stats().crash_vanished, 1u);
}

TEST_F(SimDiskTest, CrashThatKeepsEverythingLeavesExactlyTheVisibleState) {
  SimDisk disk(KeepEverything());
  const uint64_t node = DurableFile(disk, "durable");
  WriteOrDie(disk, node, "-pending", 7);
  const uint64_t other = OpenOrDie(disk, "/d/new", O_CREAT | O_RDWR);
  WriteOrDie(disk, other, "x", 0);
  Prng prng(1);
  disk.Crash(prng);
  EXPECT_EQ(disk.VisibleContent("/d/f"), "durable-pending");
  EXPECT_EQ(disk.VisibleContent("/d/new"), "x");
  EXPECT_EQ(disk.PendingOperations("/d/f"), 0u);
}

TEST_F(SimDiskTest, UnlinkIsUndoneByACrashUnlessTheDirectoryWasSynced) {
  for (const bool sync_directory : {false, true}) {
    SimDisk disk(KeepNothing());
    const uint64_t node = DurableFile(disk, "data");
    ASSERT_EQ(disk.Unlink("/d/f", /*remove_directory=*/false), 0);
    EXPECT_EQ(disk.VisibleContent("/d/f"), std::nullopt);
    char byte = 0;
    EXPECT_EQ(disk.Read(node, &byte, 1, 0), 1) << "an unlinked file stays readable while open";
    if (sync_directory) {
      ASSERT_EQ(disk.Sync(*disk.Lookup("/d")), 0);
    }
    Prng prng(2);
    disk.Crash(prng);
    EXPECT_EQ(disk.VisibleContent("/d/f"),
              sync_directory ? std::nullopt : std::optional<std::string>("data"));
  }
}

TEST_F(SimDiskTest, PendingTruncateIsKeptOrDroppedAsAWhole) {
  for (const bool keep : {false, true}) {
    SimDisk disk(keep ? KeepEverything() : KeepNothing());
    const uint64_t node = DurableFile(disk, std::string(1000, 'a'));
    ASSERT_EQ(disk.Truncate(node, 100), 0);
    EXPECT_EQ(disk.SizeBytes(node), 100u);
    Prng prng(3);
    disk.Crash(prng);
    EXPECT_EQ(disk.VisibleContent("/d/f")->size(), keep ? 100u : 1000u);
  }
}

TEST_F(SimDiskTest, OpenWithTruncIsAPendingTruncate) {
  SimDisk disk(KeepNothing());
  const uint64_t node = DurableFile(disk, "hello");
  disk.Release(node);
  const uint64_t again = OpenOrDie(disk, "/d/f", O_RDWR | O_TRUNC);
  EXPECT_EQ(disk.SizeBytes(again), 0u);
  Prng prng(4);
  disk.Crash(prng);
  EXPECT_EQ(disk.VisibleContent("/d/f"), "hello");
}

// Torn writes: sectors are 512 bytes at absolute file offsets; each gets the new bytes, keeps
// the old ones, or holds garbage; bytes outside the write never change.
TEST_F(SimDiskTest, TornWritesChangeWholeSectorsOnlyInsideTheWrite) {
  int fates[3] = {};  // new, old, garbage
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SimDiskOptions options;
    options.crash_keep_probability = 0;
    options.crash_tear_probability = 1;
    SimDisk disk(options);
    const uint64_t node = DurableFile(disk, std::string(2048, 'O'));
    // [100, 1700): a partial first sector, two whole sectors, a partial last sector.
    WriteOrDie(disk, node, std::string(1600, 'N'), 100);
    SCOPED_TRACE(::testing::Message() << "crash seed " << seed);
    Prng prng(seed);
    disk.Crash(prng);
    const std::string after = *disk.VisibleContent("/d/f");
    ASSERT_EQ(after.size(), 2048u);
    EXPECT_EQ(after.substr(0, 100), std::string(100, 'O'));
    EXPECT_EQ(after.substr(1700), std::string(348, 'O'));
    for (uint64_t begin : {100, 512, 1024, 1536}) {
      const uint64_t end = std::min<uint64_t>((begin / 512 + 1) * 512, 1700);
      const std::string sector = after.substr(begin, end - begin);
      if (sector == std::string(sector.size(), 'N')) {
        fates[0]++;
      } else if (sector == std::string(sector.size(), 'O')) {
        fates[1]++;
      } else {
        fates[2]++;
      }
    }
    EXPECT_EQ(disk.stats().crash_torn, 1u);
  }
  EXPECT_GT(fates[0], 0) << "no sector ever got the new bytes";
  EXPECT_GT(fates[1], 0) << "no sector ever kept the old bytes";
  EXPECT_GT(fates[2], 0) << "no sector ever held garbage";
}

// Linux's fsync error semantics: the failed writes are marked clean, so a retried fsync
// "succeeds" without making them durable.
TEST_F(SimDiskTest, AFailedSyncLosesTheUnsyncedWritesForGood) {
  SimDisk disk(KeepEverything());
  const uint64_t node = DurableFile(disk, "old");
  WriteOrDie(disk, node, "NEW", 0);
  disk.FailSync(node);
  EXPECT_EQ(disk.VisibleContent("/d/f"), "NEW");  // The page cache still shows it...
  ASSERT_EQ(disk.Sync(node), 0);
  EXPECT_EQ(disk.DurableContent("/d/f"), "old");  // ...but the retry did not save it.
  Prng prng(5);
  disk.Crash(prng);  // Even a crash that keeps every pending write.
  EXPECT_EQ(disk.VisibleContent("/d/f"), "old");
}

TEST_F(SimDiskTest, BrokenFsyncClaimsSuccessAndKeepsNothing) {
  SimDiskOptions options = KeepNothing();
  options.broken_fsync = true;
  SimDisk disk(options);
  ASSERT_EQ(disk.MakeDirectory("/d"), 0);
  const uint64_t node = OpenOrDie(disk, "/d/f", O_CREAT | O_RDWR);
  WriteOrDie(disk, node, "acked", 0);
  EXPECT_EQ(disk.Sync(node), 0);
  EXPECT_EQ(disk.Sync(*disk.Lookup("/d")), 0);
  EXPECT_EQ(disk.DurableContent("/d/f"), std::nullopt);
  Prng prng(6);
  disk.Crash(prng);
  EXPECT_EQ(disk.VisibleContent("/d/f"), std::nullopt);
}

TEST_F(SimDiskTest, WritesBeyondTheCapacityFailWithENOSPC) {
  SimDiskOptions options;
  options.capacity_bytes = 1000;
  SimDisk disk(options);
  const uint64_t node = OpenOrDie(disk, "/f", O_CREAT | O_RDWR);
  WriteOrDie(disk, node, std::string(900, 'x'), 0);
  const std::string more(200, 'y');
  EXPECT_EQ(disk.Write(node, more.data(), 200, 900), -ENOSPC);
  EXPECT_EQ(disk.Write(node, more.data(), 1, uint64_t{1} << 40), -ENOSPC);
  EXPECT_EQ(disk.Truncate(node, 2000), -ENOSPC);
  EXPECT_EQ(disk.SizeBytes(node), 900u);
  EXPECT_EQ(disk.Write(node, more.data(), 100, 800), 100);  // Overwrites need no space.
  EXPECT_EQ(disk.used_bytes(), 900u);
}

TEST_F(SimDiskTest, NamesBehaveLikePosix) {
  SimDisk disk;
  ASSERT_EQ(disk.MakeDirectory("/d"), 0);
  EXPECT_EQ(disk.MakeDirectory("/d"), -EEXIST);
  EXPECT_EQ(disk.MakeDirectory("/x/y"), -ENOENT);
  EXPECT_EQ(disk.Open("/d/missing", O_RDONLY, 0), -ENOENT);
  EXPECT_EQ(disk.Open("relative", O_RDONLY, 0), -EINVAL);
  EXPECT_EQ(disk.Open("/d/../f", O_RDONLY, 0), -EINVAL);
  const uint64_t file = OpenOrDie(disk, "//d/./f", O_CREAT | O_RDWR);
  EXPECT_EQ(disk.Lookup("/d/f"), file);
  EXPECT_EQ(disk.Open("/d/f", O_CREAT | O_EXCL | O_RDWR, 0), -EEXIST);
  EXPECT_EQ(disk.Open("/d/f", O_RDONLY | O_DIRECTORY, 0), -ENOTDIR);
  EXPECT_EQ(disk.Open("/d/f/g", O_CREAT | O_RDWR, 0), -ENOTDIR);
  EXPECT_EQ(disk.Open("/d", O_RDWR, 0), -EISDIR);
  EXPECT_EQ(disk.Open("/d/n", O_CREAT | O_DIRECTORY | O_RDONLY, 0), -EINVAL);
  const int64_t directory = disk.Open("/d", O_RDONLY | O_DIRECTORY, 0);
  ASSERT_GE(directory, 0);
  char byte = 0;
  EXPECT_EQ(disk.Read(static_cast<uint64_t>(directory), &byte, 1, 0), -EISDIR);
  EXPECT_EQ(disk.Unlink("/d", /*remove_directory=*/false), -EISDIR);
  EXPECT_EQ(disk.Unlink("/d", /*remove_directory=*/true), -ENOTEMPTY);
  EXPECT_EQ(disk.Unlink("/d/f", /*remove_directory=*/true), -ENOTDIR);
  EXPECT_EQ(disk.Unlink("/", /*remove_directory=*/true), -EBUSY);
  EXPECT_EQ(disk.Unlink("/d/f", /*remove_directory=*/false), 0);
  EXPECT_EQ(disk.Unlink("/d", /*remove_directory=*/true), 0);
  disk.AssertInvariants();
}

TEST_F(SimDiskTest, AnUnlinkedFileGoesAwayWithItsLastReferenceOnceTheRemovalIsDurable) {
  SimDisk disk;
  const uint64_t node = DurableFile(disk, "x");
  ASSERT_EQ(disk.Unlink("/d/f", false), 0);
  ASSERT_EQ(disk.Sync(*disk.Lookup("/d")), 0);
  char byte = 0;
  EXPECT_EQ(disk.Read(node, &byte, 1, 0), 1);
  disk.Release(node);
  EXPECT_EQ(disk.Read(node, &byte, 1, 0), -EBADF);
}

// Bit rot in synced data: the flipped byte is in the durable bytes and the visible ones, and
// stays under later synced writes; a file with pending writes, or an offset past the end, is
// refused.
TEST_F(SimDiskTest, CorruptDurableFlipsASyncedByteForGood) {
  SimDisk disk;
  const uint64_t node = DurableFile(disk, "abc");
  EXPECT_FALSE(disk.CorruptDurable("/d/f", 3, 0xff)) << "past the durable end";
  EXPECT_FALSE(disk.CorruptDurable("/d/nothing", 0, 0xff));
  ASSERT_TRUE(disk.CorruptDurable("/d/f", 1, 0x03));
  EXPECT_EQ(disk.DurableContent("/d/f"), "aac");
  EXPECT_EQ(disk.VisibleContent("/d/f"), "aac");
  ASSERT_EQ(disk.Write(node, "z", 1, 0), 1);
  EXPECT_FALSE(disk.CorruptDurable("/d/f", 0, 0xff)) << "a file with pending writes";
  ASSERT_EQ(disk.Sync(node), 0);
  EXPECT_EQ(disk.DurableContent("/d/f"), "zac") << "the flip stays under later writes";
  disk.AssertInvariants();
  disk.Release(node);
}

TEST_F(SimDiskTest, CrashesAreAFunctionOfTheSeed) {
  auto run = [](uint64_t seed) {
    SimDisk disk;  // Default probabilities: keep, tear and drop all possible.
    const uint64_t node = DurableFile(disk, std::string(4096, 'o'));
    for (uint32_t i = 0; i < 8; ++i) WriteOrDie(disk, node, std::string(700, 'a' + i), i * 500);
    Prng prng(seed);
    disk.Crash(prng);
    return *disk.VisibleContent("/d/f");
  };
  int different = 0;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    EXPECT_EQ(run(seed), run(seed)) << "seed " << seed;
    different += run(seed) != run(seed + 100) ? 1 : 0;
  }
  EXPECT_GT(different, 5);
}

// A random mix of every mutation, with the invariants checked after each step.
TEST_F(SimDiskTest, InvariantsHoldUnderRandomOperations) {
  SimDiskOptions options;
  options.capacity_bytes = 64 * 1024;
  SimDisk disk(options);
  Prng prng(77);
  ASSERT_EQ(disk.MakeDirectory("/d"), 0);
  const char* const paths[] = {"/d/a", "/d/b", "/c"};
  for (int step = 0; step < 3000; ++step) {
    const char* path = paths[prng.Below(3)];
    const int64_t node = disk.Open(path, O_CREAT | O_RDWR, 0);
    ASSERT_GE(node, 0);
    const auto id = static_cast<uint64_t>(node);
    const std::string bytes(prng.Range(1, 3000), static_cast<char>('a' + prng.Below(26)));
    const uint64_t choice = prng.Below(7);
    switch (choice) {
      case 0:
        static_cast<void>(
            disk.Write(id, bytes.data(), static_cast<uint32_t>(bytes.size()), prng.Below(20'000)));
        break;
      case 1:
        static_cast<void>(disk.Truncate(id, prng.Below(20'000)));
        break;
      case 2:
        ASSERT_EQ(disk.Sync(id), 0);
        break;
      case 3:
        ASSERT_EQ(disk.Sync(*disk.Lookup(prng.Chance(0.5) ? "/d" : "/")), 0);
        break;
      case 4:
        disk.FailSync(id);
        break;
      case 5:
        ASSERT_EQ(disk.Unlink(path, false), 0);
        break;
      default:
        disk.Crash(prng);
        break;
    }
    if (choice != 6) disk.Release(id);  // A crash already dropped every reference.
    disk.AssertInvariants();
  }
  EXPECT_GT(disk.stats().crashes, 100u);
}

}  // namespace
}  // namespace sqloop::io
