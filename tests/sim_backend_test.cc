// io/sim_backend.h through the Backend interface: virtual time, latency, reordering, every
// injected fault, files, sockets, cancel, crash, and the trace hash. No test sleeps or looks at
// a real clock: every time below is virtual.
#include "sqloop/io/sim_backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/sim_test_backend.h"

namespace sqloop::io {
namespace {

const uint64_t kSeed = testing::SeedFromEnvironment(testing::kDefaultTestSeed);

// "seed N; replay: SQLOOP_SEED=N <this binary> --gtest_filter=<this test>".
std::string ReplayMessage(uint64_t seed) {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  return "seed " + std::to_string(seed) + "; replay: SQLOOP_SEED=" + std::to_string(seed) + " " +
         ::testing::internal::GetArgvs()[0] + " --gtest_filter=" + test->test_suite_name() + "." +
         test->name();
}

// Every test prints its seed and the command that replays it when it fails.
class SimBackendTest : public ::testing::Test {
 protected:
  SimBackendTest() : trace_(__FILE__, __LINE__, ReplayMessage(kSeed)) {}

 private:
  ::testing::ScopedTrace trace_;
};
using SimBackendDeathTest = SimBackendTest;

SimBackendOptions Quiet(uint64_t seed = kSeed) {
  SimBackendOptions options;
  options.seed = seed;
  options.tick_cost_ns = 0;  // So measured latencies are exactly the drawn ones.
  options.hang_is_error = true;
  return options;
}

// Ticks (waiting) until `count` ops came back; returns them in completion order.
std::vector<Op*> Reap(SimBackend& sim, size_t count) {
  std::vector<Op*> done;
  for (int ticks = 0; done.size() < count; ++ticks) {
    EXPECT_LT(ticks, 1'000'000) << "ops never completed";
    OpList completed;
    const absl::Status status = sim.Tick(/*wait=*/true, kNoDeadline, completed);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) break;
    while (Op* op = completed.PopFront()) done.push_back(op);
  }
  return done;
}

// Submits one op and waits for it; returns its result.
int64_t RunOne(SimBackend& sim, Op& op) {
  sim.Submit(&op);
  const std::vector<Op*> done = Reap(sim, 1);
  EXPECT_EQ(done.size(), 1u);
  EXPECT_EQ(done.empty() ? nullptr : done[0], &op);
  return op.result;
}

int OpenFile(SimBackend& sim, const char* path, uint32_t flags) {
  Op open{.kind = OpKind::kOpenAt, .fd = AT_FDCWD, .flags = flags, .path = path, .mode = 0644};
  const int64_t fd = RunOne(sim, open);
  EXPECT_GE(fd, 3) << path;
  return static_cast<int>(fd);
}

int64_t WriteAt(SimBackend& sim, int fd, const std::string& bytes, uint64_t offset) {
  Op write{.kind = OpKind::kWrite,
           .fd = fd,
           .buffer = const_cast<char*>(bytes.data()),
           .length = static_cast<uint32_t>(bytes.size()),
           .offset = offset};
  return RunOne(sim, write);
}

TEST_F(SimBackendTest, IdentifiesItselfAndHasNoDescriptor) {
  SimBackend sim(Quiet());
  EXPECT_EQ(sim.name(), "simulator");
  EXPECT_EQ(sim.PollableFd(), -1);
  EXPECT_EQ(sim.in_flight(), 0u);
}

TEST_F(SimBackendTest, IdleWaitJumpsToTheDeadlineAndADayPassesAtOnce) {
  SimBackendOptions options = Quiet();
  options.tick_cost_ns = 1'000;
  SimBackend sim(options);
  const int64_t start_ns = sim.NowNs();
  OpList completed;
  ASSERT_TRUE(sim.Tick(/*wait=*/false, kNoDeadline, completed).ok());
  EXPECT_EQ(sim.NowNs(), start_ns + 1'000) << "a tick costs tick_cost_ns, no more";
  constexpr int64_t kSecondNs = 1'000'000'000;
  for (int second = 1; second <= 86'400; ++second) {
    ASSERT_TRUE(sim.Tick(/*wait=*/true, start_ns + second * kSecondNs, completed).ok());
    ASSERT_EQ(sim.NowNs(), start_ns + second * kSecondNs);
  }
  EXPECT_TRUE(completed.empty());
}

TEST_F(SimBackendTest, WaitingTickJumpsToTheNextEventButNotPastTheDeadline) {
  SimBackendOptions options = Quiet();
  options.nop_latency = {.min_ns = 5'000'000, .max_ns = 5'000'000};
  SimBackend sim(options);
  const int64_t start_ns = sim.NowNs();
  Op nop{.kind = OpKind::kNop};
  sim.Submit(&nop);
  EXPECT_EQ(sim.in_flight(), 1u);
  OpList completed;
  ASSERT_TRUE(sim.Tick(/*wait=*/true, start_ns + 1'000'000, completed).ok());
  EXPECT_TRUE(completed.empty());
  EXPECT_EQ(sim.NowNs(), start_ns + 1'000'000);
  ASSERT_TRUE(sim.Tick(/*wait=*/true, kNoDeadline, completed).ok());
  EXPECT_EQ(completed.PopFront(), &nop);
  EXPECT_EQ(sim.NowNs(), start_ns + 5'000'000);
  EXPECT_EQ(sim.in_flight(), 0u);
}

TEST_F(SimBackendTest, SubmitNeverCompletesInlineAndNopsTakeNoTime) {
  SimBackend sim(Quiet());
  const int64_t start_ns = sim.NowNs();
  Op nop{.kind = OpKind::kNop};
  sim.Submit(&nop);
  EXPECT_EQ(sim.in_flight(), 1u);
  EXPECT_EQ(sim.stats().completed, 0u);
  const std::vector<Op*> done = Reap(sim, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0], &nop);
  EXPECT_EQ(nop.result, 0);
  EXPECT_EQ(sim.NowNs(), start_ns);
}

// Each op class draws from its own range; draws spread over the range (log-uniform buckets).
TEST_F(SimBackendTest, LatenciesStayInTheirRangeAndSpreadOverIt) {
  SimBackendOptions options = Quiet();
  options.nop_latency = {.min_ns = 1'000, .max_ns = 64'000};
  options.file_write_latency = {.min_ns = 100'000, .max_ns = 200'000};
  SimBackend sim(options);
  ASSERT_EQ(sim.disk().MakeDirectory("/d"), 0);
  const int fd = OpenFile(sim, "/d/f", O_CREAT | O_RDWR);
  int64_t shortest_ns = INT64_MAX;
  int64_t longest_ns = 0;
  for (int i = 0; i < 2000; ++i) {
    const int64_t before_ns = sim.NowNs();
    Op nop{.kind = OpKind::kNop};
    ASSERT_EQ(RunOne(sim, nop), 0);
    const int64_t latency_ns = sim.NowNs() - before_ns;
    ASSERT_GE(latency_ns, 1'000);
    ASSERT_LE(latency_ns, 64'000);
    shortest_ns = std::min(shortest_ns, latency_ns);
    longest_ns = std::max(longest_ns, latency_ns);
    const int64_t write_start_ns = sim.NowNs();
    ASSERT_EQ(WriteAt(sim, fd, "x", 0), 1);
    ASSERT_GE(sim.NowNs() - write_start_ns, 100'000);
    ASSERT_LE(sim.NowNs() - write_start_ns, 200'000);
  }
  EXPECT_LT(shortest_ns, 2'000) << "the fastest bucket was never drawn";
  EXPECT_GT(longest_ns, 32'000) << "the slowest bucket was never drawn";
}

TEST_F(SimBackendTest, InFlightOpsComeBackReorderedAndTheOrderIsAFunctionOfTheSeed) {
  auto order_for = [](uint64_t seed) {
    SimBackendOptions options = Quiet(seed);
    options.nop_latency = {.min_ns = 1'000, .max_ns = 100'000};
    SimBackend sim(options);
    std::vector<Op> ops(20, Op{.kind = OpKind::kNop});
    for (Op& op : ops) sim.Submit(&op);
    std::vector<int> order;
    for (Op* op : Reap(sim, ops.size())) order.push_back(static_cast<int>(op - ops.data()));
    return std::make_pair(order, sim.sim_stats().reordered);
  };
  int reordered_seeds = 0;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    SCOPED_TRACE(::testing::Message() << "with seed " << seed);
    const auto [order, reordered] = order_for(seed);
    EXPECT_EQ(order, order_for(seed).first);
    std::vector<int> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted.size(), 20u);
    if (order != sorted) {
      ++reordered_seeds;
      EXPECT_GT(reordered, 0u);
    }
  }
  EXPECT_GT(reordered_seeds, 5);
}

// Each injected fault surfaces as the documented result.
struct FaultCase {
  const char* name;
  SimFaults faults;
  OpKind kind;
  int64_t expected;
};

TEST_F(SimBackendTest, EachInjectedFaultSurfacesAsItsErrno) {
  const std::vector<FaultCase> cases = {
      {"read_eio", {.read_eio = 1}, OpKind::kRead, -EIO},
      {"write_eio", {.write_eio = 1}, OpKind::kWrite, -EIO},
      {"write_enospc", {.write_enospc = 1}, OpKind::kWrite, -ENOSPC},
      {"fsync_eio", {.fsync_eio = 1}, OpKind::kFsync, -EIO},
      {"eintr", {.eintr = 1}, OpKind::kRead, -EINTR},
      {"eagain", {.eagain = 1}, OpKind::kWrite, -EAGAIN},
  };
  for (const FaultCase& fault : cases) {
    SCOPED_TRACE(fault.name);
    SimBackend sim(Quiet());
    const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
    ASSERT_EQ(WriteAt(sim, fd, "before", 0), 6);
    sim.SetFaults(fault.faults);
    std::string buffer = "AFTER!";
    Op op{.kind = fault.kind, .fd = fd, .buffer = buffer.data(), .length = 6};
    EXPECT_EQ(RunOne(sim, op), fault.expected);
    EXPECT_EQ(sim.disk().VisibleContent("/f"), "before") << "a failed op changed the file";
    const bool retried = fault.expected == -EINTR || fault.expected == -EAGAIN;
    EXPECT_EQ(op.retries, retried ? kRetriesMax : 0) << "retried at most kRetriesMax times";
    EXPECT_GT(sim.sim_stats().injected_errors, 0u);
  }
}

TEST_F(SimBackendTest, RetriedInterruptionsAreInvisibleToTheCaller) {
  SimBackendOptions options = Quiet();
  options.faults.eintr = 0.3;
  options.faults.eagain = 0.3;
  SimBackend sim(options);
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  int retried_ops = 0;
  for (int i = 0; i < 200; ++i) {
    Op op{.kind = OpKind::kWrite, .fd = fd, .buffer = const_cast<char*>("x"), .length = 1};
    const int64_t result = RunOne(sim, op);
    // 9 interruptions in a row would surface (p ~ 0.51^9 ~ 0.2% per op); allow for it.
    EXPECT_TRUE(result == 1 || result == -EINTR || result == -EAGAIN) << result;
    retried_ops += op.retries > 0 ? 1 : 0;
  }
  EXPECT_GT(retried_ops, 50);
  EXPECT_EQ(sim.stats().resubmitted, sim.sim_stats().retries);
}

// A failed fsync loses the writes it covered even if a later fsync succeeds.
TEST_F(SimBackendTest, FailedFsyncIsNotSavedByARetry) {
  SimBackend sim(Quiet());
  ASSERT_EQ(sim.disk().MakeDirectory("/d"), 0);
  const int fd = OpenFile(sim, "/d/f", O_CREAT | O_RDWR);
  const int dir = OpenFile(sim, "/d", O_RDONLY | O_DIRECTORY);
  Op sync_dir{.kind = OpKind::kFsync, .fd = dir};
  ASSERT_EQ(RunOne(sim, sync_dir), 0);
  ASSERT_EQ(WriteAt(sim, fd, "lost", 0), 4);
  sim.SetFaults({.fsync_eio = 1});
  Op sync{.kind = OpKind::kFsync, .fd = fd};
  EXPECT_EQ(RunOne(sim, sync), -EIO);
  sim.SetFaults({});
  EXPECT_EQ(RunOne(sim, sync), 0);
  EXPECT_EQ(sim.disk().DurableContent("/d/f"), "");
}

TEST_F(SimBackendTest, ShortTransfersAreResubmittedUntilComplete) {
  SimBackendOptions options = Quiet();
  options.faults.short_read = 1;
  options.faults.short_write = 1;
  SimBackend sim(options);
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  std::string data(10'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + i / 97);
  EXPECT_EQ(WriteAt(sim, fd, data, 100), 10'000);
  EXPECT_EQ(sim.disk().VisibleContent("/f")->substr(100), data);
  std::string back(20'000, '\0');
  Op read{.kind = OpKind::kRead, .fd = fd, .buffer = back.data(), .length = 20'000, .offset = 100};
  EXPECT_EQ(RunOne(sim, read), 10'000) << "only end of file may shorten a read";
  EXPECT_EQ(back.substr(0, 10'000), data);
  EXPECT_GT(sim.sim_stats().short_transfers, 2u);
  EXPECT_GT(sim.stats().resubmitted, 2u);
}

// The metadata faults: openat, unlink, ftruncate and fstat fail with -EIO and change nothing;
// close fails with -EIO but the descriptor is gone all the same, as on Linux.
TEST_F(SimBackendTest, MetadataFaultsFailAndChangeNothingButCloseStillReleases) {
  SimBackend sim(Quiet());
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  ASSERT_EQ(WriteAt(sim, fd, "kept", 0), 4);
  sim.SetFaults(SimFaults{.meta_eio = 1});
  Op create{.kind = OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_CREAT | O_RDWR, .path = "/g"};
  EXPECT_EQ(RunOne(sim, create), -EIO);
  EXPECT_FALSE(sim.disk().VisibleContent("/g").has_value()) << "a failed open created the file";
  Op unlink{.kind = OpKind::kUnlink, .fd = AT_FDCWD, .path = "/f"};
  EXPECT_EQ(RunOne(sim, unlink), -EIO);
  Op truncate{.kind = OpKind::kFtruncate, .fd = fd, .offset = 0};
  EXPECT_EQ(RunOne(sim, truncate), -EIO);
  Op size{.kind = OpKind::kFileSize, .fd = fd};
  EXPECT_EQ(RunOne(sim, size), -EIO);
  EXPECT_EQ(sim.disk().VisibleContent("/f"), "kept") << "a failed metadata op changed the file";
  EXPECT_EQ(sim.sim_stats().injected_errors, 4u);
  sim.SetFaults(SimFaults{.close_eio = 1});
  Op close{.kind = OpKind::kClose, .fd = fd};
  EXPECT_EQ(RunOne(sim, close), -EIO);
  EXPECT_EQ(RunOne(sim, close), -EBADF) << "the descriptor must be released despite the error";
}

// A device that keeps failing: once it breaks, every file write and fsync fails (an fsync also
// loses the unsynced writes), reads still work, and only a crash (a power cycle) ends it.
TEST_F(SimBackendTest, ABrokenDeviceFailsEveryWriteAndFsyncUntilTheCrash) {
  SimBackend sim(Quiet());
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  ASSERT_EQ(WriteAt(sim, fd, "kept", 0), 4);
  sim.SetFaults(SimFaults{.device_failure = 1});
  EXPECT_EQ(WriteAt(sim, fd, "x", 4), -EIO);
  sim.SetFaults(SimFaults{});  // Off again: the device stays broken all the same.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(WriteAt(sim, fd, "x", 4), -EIO);
  Op sync{.kind = OpKind::kFsync, .fd = fd};
  EXPECT_EQ(RunOne(sim, sync), -EIO);
  char byte = 0;
  Op read{.kind = OpKind::kRead, .fd = fd, .buffer = &byte, .length = 1, .offset = 0};
  EXPECT_EQ(RunOne(sim, read), 1) << "reads still work on a broken device";
  EXPECT_EQ(sim.sim_stats().device_failures, 1u);
  EXPECT_EQ(sim.sim_stats().persistent_errors, 7u);
  sim.Crash();
  const int again = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  EXPECT_EQ(WriteAt(sim, again, "y", 0), 1) << "a power cycle brings the device back";
}

// A reset kills both ends at once: the op that met it and every later op on either end fail
// with -ECONNRESET, unread bytes are gone, and poll reports the error.
TEST_F(SimBackendTest, AResetConnectionFailsBothEnds) {
  SimBackend sim(Quiet());
  int fds[2];
  sim.SocketPair(fds);
  char bytes[4] = {'a', 'b', 'c', 'd'};
  Op first{.kind = OpKind::kSend, .fd = fds[0], .buffer = bytes, .length = 4};
  ASSERT_EQ(RunOne(sim, first), 4);
  sim.SetFaults(SimFaults{.net_reset = 1});
  Op send{.kind = OpKind::kSend, .fd = fds[0], .buffer = bytes, .length = 4};
  EXPECT_EQ(RunOne(sim, send), -ECONNRESET);
  sim.SetFaults(SimFaults{});
  Op recv{.kind = OpKind::kRecv, .fd = fds[1], .buffer = bytes, .length = 4};
  EXPECT_EQ(RunOne(sim, recv), -ECONNRESET) << "the unread bytes must be lost with the reset";
  Op poll{.kind = OpKind::kPoll, .fd = fds[0], .flags = POLLIN};
  EXPECT_NE(RunOne(sim, poll) & POLLERR, 0);
  EXPECT_EQ(sim.sim_stats().net_resets, 1u);
}

// A partition holds every network attempt until it heals; it loses and reorders nothing.
TEST_F(SimBackendTest, APartitionDelaysButLosesNothing) {
  SimBackendOptions options = Quiet();
  options.faults.partition_start_ns = 0;
  options.faults.partition_ns = 50'000'000;
  SimBackend sim(options);
  int fds[2];
  sim.SocketPair(fds);
  char bytes[3] = {'x', 'y', 'z'};
  Op send{.kind = OpKind::kSend, .fd = fds[0], .buffer = bytes, .length = 3};
  EXPECT_EQ(RunOne(sim, send), 3);
  EXPECT_GE(sim.NowNs(), options.start_ns + 50'000'000) << "the send crossed a partition";
  EXPECT_GT(sim.sim_stats().net_partitioned, 0u);
  char back[3] = {};
  Op recv{.kind = OpKind::kRecv, .fd = fds[1], .buffer = back, .length = 3};
  EXPECT_EQ(RunOne(sim, recv), 3);
  EXPECT_EQ(std::string(back, 3), "xyz");
}

TEST_F(SimBackendTest, FileOpsBehaveLikeTheirSyscalls) {
  SimBackend sim(Quiet());
  ASSERT_EQ(sim.disk().MakeDirectory("/d"), 0);
  const int dir = OpenFile(sim, "/d", O_RDONLY | O_DIRECTORY);
  Op create{.kind = OpKind::kOpenAt, .fd = dir, .flags = O_CREAT | O_RDWR, .path = "f"};
  const int fd = static_cast<int>(RunOne(sim, create));
  EXPECT_EQ(fd, dir + 1) << "descriptors are the lowest free numbers";
  EXPECT_EQ(sim.open_files(), 1u) << "files count, directories do not";
  EXPECT_EQ(WriteAt(sim, fd, "hello", 0), 5);
  EXPECT_EQ(sim.disk().VisibleContent("/d/f"), "hello");
  Op poll{.kind = OpKind::kPoll, .fd = fd, .flags = POLLIN};
  EXPECT_EQ(RunOne(sim, poll), POLLIN);
  Op close{.kind = OpKind::kClose, .fd = fd};
  EXPECT_EQ(RunOne(sim, close), 0);
  EXPECT_EQ(sim.open_files(), 0u);
  EXPECT_EQ(RunOne(sim, close), -EBADF);
  char byte = 0;
  Op read{.kind = OpKind::kRead, .fd = fd, .buffer = &byte, .length = 1};
  EXPECT_EQ(RunOne(sim, read), -EBADF);
  Op unlink{.kind = OpKind::kUnlink, .fd = dir, .path = "f"};
  EXPECT_EQ(RunOne(sim, unlink), 0);
  EXPECT_EQ(RunOne(sim, unlink), -ENOENT);
  Op missing{.kind = OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_RDONLY, .path = "/d/f"};
  EXPECT_EQ(RunOne(sim, missing), -ENOENT);
  Op real_fd{.kind = OpKind::kRead, .fd = 1'000'000, .buffer = &byte, .length = 1};
  EXPECT_EQ(RunOne(sim, real_fd), -EBADF);
}

// The descriptor limit counts files and directories, refuses an open at it with -EMFILE and
// creates nothing, holds until lifted, and lets an open through again once a close makes room.
TEST_F(SimBackendTest, TheDescriptorLimitRefusesOpensUntilADescriptorCloses) {
  SimBackend sim(Quiet());
  ASSERT_EQ(sim.disk().MakeDirectory("/d"), 0);
  const int dir = OpenFile(sim, "/d", O_RDONLY | O_DIRECTORY);
  const int a = OpenFile(sim, "/d/a", O_CREAT | O_RDWR);
  sim.SetDescriptorLimit(2);
  Op create{.kind = OpKind::kOpenAt, .fd = dir, .flags = O_CREAT | O_RDWR, .path = "b"};
  EXPECT_EQ(RunOne(sim, create), -EMFILE) << "a directory and a file are two descriptors";
  EXPECT_EQ(RunOne(sim, create), -EMFILE) << "the limit is not a draw: it holds";
  EXPECT_EQ(sim.sim_stats().opens_refused, 2u);
  Op close{.kind = OpKind::kClose, .fd = a};
  ASSERT_EQ(RunOne(sim, close), 0);
  Op existing{.kind = OpKind::kOpenAt, .fd = dir, .flags = O_RDONLY, .path = "b"};
  EXPECT_EQ(RunOne(sim, existing), -ENOENT) << "a refused O_CREAT created nothing";
  EXPECT_GE(RunOne(sim, create), 0) << "a close made room";
  EXPECT_EQ(RunOne(sim, create), -EMFILE);
  sim.SetDescriptorLimit(0);
  EXPECT_GE(RunOne(sim, create), 0) << "0 lifts the limit";
  EXPECT_EQ(sim.sim_stats().opens_refused, 3u);
}

TEST_F(SimBackendTest, FtruncateIsAPendingTruncateAndFileSizeSeesIt) {
  SimBackendOptions options = Quiet();
  options.disk.crash_keep_probability = 0;  // The crash below drops every pending operation.
  options.disk.crash_tear_probability = 0;
  SimBackend sim(options);
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  ASSERT_EQ(WriteAt(sim, fd, std::string(10'000, 'd'), 0), 10'000);
  Op sync{.kind = OpKind::kFsync, .fd = fd};
  ASSERT_EQ(RunOne(sim, sync), 0);
  Op size{.kind = OpKind::kFileSize, .fd = fd};
  EXPECT_EQ(RunOne(sim, size), 10'000);
  Op truncate{.kind = OpKind::kFtruncate, .fd = fd, .offset = 4096};
  EXPECT_EQ(RunOne(sim, truncate), 0);
  EXPECT_EQ(RunOne(sim, size), 4096);
  EXPECT_EQ(sim.disk().PendingOperations("/f"), 2u);  // The truncate and the unsynced name.
  const int read_only = OpenFile(sim, "/f", O_RDONLY);
  Op refused{.kind = OpKind::kFtruncate, .fd = read_only, .offset = 0};
  EXPECT_EQ(RunOne(sim, refused), -EINVAL);
  Op dir_sync_name{.kind = OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_RDONLY, .path = "/"};
  const int root = static_cast<int>(RunOne(sim, dir_sync_name));
  Op sync_root{.kind = OpKind::kFsync, .fd = root};
  ASSERT_EQ(RunOne(sim, sync_root), 0);
  sim.Crash();
  EXPECT_EQ(sim.disk().VisibleContent("/f")->size(), 10'000u) << "the unsynced truncate survived";
}

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

// Connects a new socket to `port` and accepts it; returns {client, server}.
std::pair<int, int> Connect(SimBackend& sim, int listener, uint16_t port) {
  const int client = sim.Socket();
  sockaddr_in address = Loopback(port);
  sockaddr_in peer{};
  Op accept{
      .kind = OpKind::kAccept, .fd = listener, .buffer = &peer, .address_length = sizeof(peer)};
  Op connect{.kind = OpKind::kConnect, .fd = client, .buffer = &address, .length = sizeof(address)};
  sim.Submit(&accept);  // Parked until the connection arrives.
  sim.Submit(&connect);
  Reap(sim, 2);
  EXPECT_EQ(connect.result, 0);
  EXPECT_GE(accept.result, 3);
  EXPECT_EQ(accept.address_length, sizeof(sockaddr_in));
  EXPECT_EQ(peer.sin_family, AF_INET);
  EXPECT_EQ(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
  return {client, static_cast<int>(accept.result)};
}

TEST_F(SimBackendTest, SocketsMoveEveryByteInOrderWithPartialTransfers) {
  SimBackendOptions options = Quiet();
  options.faults.short_net = 0.5;
  SimBackend sim(options);
  const int listener = sim.Listen(5432);
  ASSERT_GE(listener, 3);
  EXPECT_EQ(sim.Listen(5432), -EADDRINUSE);
  const auto [client, server] = Connect(sim, listener, 5432);
  // 1 MiB through a 64 KiB socket buffer: the send must wait for the reader and resume.
  std::string sent(1 << 20, '\0');
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 7 + i / 251);
  Op send{.kind = OpKind::kSend,
          .fd = client,
          .buffer = sent.data(),
          .length = static_cast<uint32_t>(sent.size())};
  sim.Submit(&send);
  std::string received;
  char chunk[3000];
  int partial_receives = 0;
  bool send_done = false;
  while (received.size() < sent.size()) {
    Op recv{.kind = OpKind::kRecv, .fd = server, .buffer = chunk, .length = sizeof(chunk)};
    sim.Submit(&recv);
    for (bool recv_done = false; !recv_done;) {
      for (Op* op : Reap(sim, 1)) {
        send_done = send_done || op == &send;
        recv_done = recv_done || op == &recv;
      }
    }
    ASSERT_GT(recv.result, 0);
    received.append(chunk, static_cast<size_t>(recv.result));
    partial_receives += recv.result < static_cast<int64_t>(sizeof(chunk)) ? 1 : 0;
  }
  if (!send_done) {
    EXPECT_EQ(Reap(sim, 1)[0], &send);
  }
  EXPECT_EQ(send.result, static_cast<int64_t>(sent.size())) << "sends complete in full";
  EXPECT_TRUE(received == sent);
  EXPECT_GT(partial_receives, 10) << "receives return what arrived";
  EXPECT_GT(sim.stats().resubmitted, 10u) << "the send was resumed many times";
}

TEST_F(SimBackendTest, ClosedPeersGiveEndOfFileAndEPIPE) {
  SimBackend sim(Quiet());
  int fds[2];
  sim.SocketPair(fds);
  char byte = 0;
  Op recv{.kind = OpKind::kRecv, .fd = fds[0], .buffer = &byte, .length = 1};
  sim.Submit(&recv);
  Op poll{.kind = OpKind::kPoll, .fd = fds[0], .flags = POLLIN};
  sim.Submit(&poll);
  Op close{.kind = OpKind::kClose, .fd = fds[1]};
  sim.Submit(&close);
  Reap(sim, 3);
  EXPECT_EQ(recv.result, 0) << "a receive waiting on a closed peer returns end of file";
  EXPECT_NE(poll.result & POLLIN, 0);
  EXPECT_NE(poll.result & POLLHUP, 0);
  Op send{.kind = OpKind::kSend, .fd = fds[0], .buffer = &byte, .length = 1};
  EXPECT_EQ(RunOne(sim, send), -EPIPE);
  const int lonely = sim.Socket();
  sockaddr_in nowhere = Loopback(1);
  Op connect{.kind = OpKind::kConnect, .fd = lonely, .buffer = &nowhere, .length = sizeof(nowhere)};
  EXPECT_EQ(RunOne(sim, connect), -ECONNREFUSED);
}

TEST_F(SimBackendTest, PollWaitsForTheEventsItAsksFor) {
  SimBackend sim(Quiet());
  int fds[2];
  sim.SocketPair(fds);
  Op poll_in{.kind = OpKind::kPoll, .fd = fds[0], .flags = POLLIN};
  Op poll_out{.kind = OpKind::kPoll, .fd = fds[0], .flags = POLLOUT};
  sim.Submit(&poll_in);
  sim.Submit(&poll_out);
  EXPECT_EQ(Reap(sim, 1)[0], &poll_out) << "writable at once; readable only after a send";
  EXPECT_EQ(poll_out.result, POLLOUT);
  Op send{.kind = OpKind::kSend, .fd = fds[1], .buffer = const_cast<char*>("x"), .length = 1};
  sim.Submit(&send);
  Reap(sim, 2);
  EXPECT_EQ(poll_in.result, POLLIN);
}

TEST_F(SimBackendTest, CancelCompletesOnceWithECANCELEDWhateverStageTheOpIsIn) {
  SimBackend sim(Quiet());
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  int fds[2];
  sim.SocketPair(fds);
  char byte = 0;
  // Parked on a socket nobody writes to (the wait lets its first attempt run and park).
  Op parked{.kind = OpKind::kRecv, .fd = fds[0], .buffer = &byte, .length = 1};
  sim.Submit(&parked);
  OpList completed;
  ASSERT_TRUE(sim.Tick(/*wait=*/true, sim.NowNs() + 10'000'000, completed).ok());
  ASSERT_TRUE(completed.empty());
  // Scheduled: sent, its event pending. Its effect (the write) must never happen.
  Op write{.kind = OpKind::kWrite, .fd = fd, .buffer = const_cast<char*>("x"), .length = 1};
  sim.Submit(&write);
  ASSERT_TRUE(sim.Tick(/*wait=*/false, kNoDeadline, completed).ok());
  ASSERT_TRUE(completed.empty());
  // Queued: never sent.
  Op queued{.kind = OpKind::kNop};
  sim.Submit(&queued);
  sim.Cancel(&parked);
  sim.Cancel(&queued);
  sim.Cancel(&write);
  sim.Cancel(&write);  // Already finished (with -ECANCELED): a second cancel changes nothing.
  const std::vector<Op*> done = Reap(sim, 3);
  EXPECT_EQ(done.size(), 3u);
  EXPECT_EQ(parked.result, -ECANCELED);
  EXPECT_EQ(queued.result, -ECANCELED);
  EXPECT_EQ(write.result, -ECANCELED);
  EXPECT_TRUE(parked.cancel_requested);
  EXPECT_EQ(sim.disk().VisibleContent("/f"), "");
  EXPECT_EQ(sim.sim_stats().cancelled, 3u);
  EXPECT_EQ(sim.in_flight(), 0u);
  // Time runs on with nothing left: the cancelled events are gone, not merely ignored.
  ASSERT_TRUE(sim.Tick(/*wait=*/true, sim.NowNs() + 1'000'000'000, completed).ok());
  EXPECT_TRUE(completed.empty());
}

TEST_F(SimBackendDeathTest, CancellingAnOpNotInFlightStops) {
  SimBackend sim(Quiet());
  Op op{.kind = OpKind::kNop};
  EXPECT_DEATH(sim.Cancel(&op), "not in flight");
}

TEST_F(SimBackendTest, CrashFailsInFlightOpsAndForgetsDescriptors) {
  SimBackend sim(Quiet());
  const int fd = OpenFile(sim, "/f", O_CREAT | O_RDWR);
  Op write{.kind = OpKind::kWrite, .fd = fd, .buffer = const_cast<char*>("x"), .length = 1};
  sim.Submit(&write);
  int fds[2];
  sim.SocketPair(fds);
  char byte = 0;
  Op recv{.kind = OpKind::kRecv, .fd = fds[0], .buffer = &byte, .length = 1};
  sim.Submit(&recv);
  const uint64_t before = sim.trace_hash();
  sim.Crash();
  EXPECT_NE(sim.trace_hash(), before);
  sim.Cancel(&recv);  // Finished by the crash: keeps the crash's result.
  Reap(sim, 2);
  EXPECT_EQ(write.result, SimBackend::kCrashResult);
  EXPECT_EQ(recv.result, SimBackend::kCrashResult);
  Op read{.kind = OpKind::kRead, .fd = fd, .buffer = &byte, .length = 1};
  EXPECT_EQ(RunOne(sim, read), -EBADF) << "descriptors die with the process";
  EXPECT_EQ(sim.open_files(), 0u);
  EXPECT_EQ(sim.sim_stats().crash_failed_ops, 2u);
}

// The trace hash covers what happened, and nothing else.
TEST_F(SimBackendTest, TraceHashIsAFunctionOfTheSeedAndTheEvents) {
  auto trace_for = [](uint64_t seed, uint64_t extra_event) {
    SimBackend sim(Quiet(seed));
    std::vector<Op> ops(10, Op{.kind = OpKind::kNop});
    for (Op& op : ops) sim.Submit(&op);
    Reap(sim, ops.size());
    sim.TraceTimerFired(sim.NowNs(), 1);
    if (extra_event != 0) sim.Trace(extra_event);
    return sim.trace_hash();
  };
  EXPECT_EQ(trace_for(1, 0), trace_for(1, 0));
  EXPECT_NE(trace_for(1, 0), trace_for(2, 0));
  EXPECT_NE(trace_for(1, 0), trace_for(1, 7));
}

TEST_F(SimBackendTest, WakeEndsAWaitThatNothingElseCould) {
  SimBackendOptions options = Quiet();
  SimBackend sim(options);
  OpList completed;
  const absl::Status hang = sim.Tick(/*wait=*/true, kNoDeadline, completed);
  EXPECT_TRUE(absl::IsFailedPrecondition(hang)) << hang;
  EXPECT_NE(hang.message().find("deadlocked"), absl::string_view::npos) << hang;
  sim.Wake();
  EXPECT_TRUE(sim.Tick(/*wait=*/true, kNoDeadline, completed).ok());
  options.hang_is_error = false;
  SimBackend waiting(options);
  waiting.Wake();  // Without this the Tick below would block forever, as a real backend would.
  EXPECT_TRUE(waiting.Tick(/*wait=*/true, kNoDeadline, completed).ok());
}

TEST_F(SimBackendTest, SwarmDrawsTheFaultMixFromTheSeed) {
  SimBackendOptions options = Quiet();
  options.swarm = true;
  std::vector<std::string> mixes;
  int with_errors = 0;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    options.seed = seed;
    SimBackend sim(options);
    mixes.push_back(sim.DescribeFaults());
    EXPECT_EQ(SimBackend(options).DescribeFaults(), mixes.back()) << "seed " << seed;
    const SimFaults& f = sim.options().faults;
    with_errors += f.read_eio + f.write_eio + f.fsync_eio + f.write_enospc > 0 ? 1 : 0;
  }
  std::sort(mixes.begin(), mixes.end());
  EXPECT_EQ(std::unique(mixes.begin(), mixes.end()), mixes.end()) << "two seeds, one mix";
  // Each of the four error kinds is on for about half the seeds: ~94 of 100 have one.
  EXPECT_GT(with_errors, 80);
  EXPECT_LT(with_errors, 100) << "some seeds should run without injected errors";
  options.swarm = false;
  const SimBackend plain(options);
  const SimFaults& none = plain.options().faults;
  EXPECT_EQ(none.read_eio + none.short_write + none.eintr, 0.0);
}

}  // namespace
}  // namespace sqloop::io
