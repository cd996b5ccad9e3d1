// Backend selection and the bookkeeping shared by the real backends.
#include "sqloop/io/backend.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "gtest/gtest.h"
#include "sqloop/io/errno_status.h"
#include "sqloop/io/internal/backends.h"

namespace sqloop::io {
namespace {

// Every layer words an errno the same way, whether it holds errno or an op's -errno.
TEST(ErrnoStatusTest, AnErrnoAndAnOpsNegativeResultReadTheSame) {
  EXPECT_EQ(ErrnoText(ENOENT), ErrnoText(-ENOENT));
  EXPECT_NE(ErrnoText(ENOENT).find("(errno 2)"), std::string::npos) << ErrnoText(ENOENT);
  const absl::Status missing = ErrnoStatus(-ENOENT, "opening '/x.db'");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "opening '/x.db': " + ErrnoText(ENOENT));
  EXPECT_EQ(ErrnoStatus(ENOSPC, "write").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(absl::StatusCode::kFailedPrecondition, EACCES, "mkdir").code(),
            absl::StatusCode::kFailedPrecondition);
}

struct Logged {
  std::vector<std::string> lines;
  LogHook Hook() {
    return [this](LogLevel, absl::string_view message) { lines.emplace_back(message); };
  }
};

TEST(CreateBackendTest, FallsBackWhenIoUringIsDisabled) {
  for (const int error : {EPERM, ENOSYS}) {
    Logged logged;
    BackendOptions options;
    options.read_environment = false;
    options.log = logged.Hook();
    options.uring_setup_errno_for_testing = error;
    absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    EXPECT_EQ((*backend)->name(), "fallback");
    ASSERT_EQ(logged.lines.size(), 1u);
    EXPECT_NE(logged.lines[0].find("fallback, because io_uring setup failed"), std::string::npos)
        << logged.lines[0];
    EXPECT_NE(logged.lines[0].find(std::strerror(error)), std::string::npos) << logged.lines[0];
  }
}

TEST(CreateBackendTest, ExplainsTheSysctlWhenPermissionIsDenied) {
  BackendOptions options;
  options.read_environment = false;
  options.kind = BackendKind::kIoUring;
  options.uring_setup_errno_for_testing = EPERM;
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(options);
  ASSERT_TRUE(absl::IsPermissionDenied(backend.status())) << backend.status();
  EXPECT_NE(backend.status().message().find("kernel.io_uring_disabled"), absl::string_view::npos);
  EXPECT_NE(backend.status().message().find("SQLOOP_BACKEND=fallback"), absl::string_view::npos);
}

TEST(CreateBackendTest, OtherSetupFailuresAreNotHiddenByTheFallback) {
  BackendOptions options;
  options.read_environment = false;
  options.uring_setup_errno_for_testing = ENOMEM;
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(options);
  EXPECT_FALSE(backend.ok());
  EXPECT_NE(backend.status().message().find(std::strerror(ENOMEM)), absl::string_view::npos);
}

TEST(CreateBackendTest, EnvironmentForcesEitherBackendAndRejectsNonsense) {
  BackendOptions options;
  options.kind = BackendKind::kIoUring;
  ASSERT_EQ(setenv("SQLOOP_BACKEND", "fallback", 1), 0);
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->name(), "fallback");
  ASSERT_EQ(setenv("SQLOOP_BACKEND", "io_uring", 1), 0);
  options.kind = BackendKind::kFallback;
  backend = CreateBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->name(), "io_uring");
  ASSERT_EQ(setenv("SQLOOP_BACKEND", "epoll-please", 1), 0);
  backend = CreateBackend(options);
  EXPECT_TRUE(absl::IsInvalidArgument(backend.status())) << backend.status();
  unsetenv("SQLOOP_BACKEND");
}

TEST(FinishTransferTest, ShortTransfersAskForTheRemainder) {
  char data[100];
  Op op{.kind = OpKind::kWrite, .buffer = data, .length = 100};
  uint64_t resubmissions = 0;
  EXPECT_FALSE(internal::FinishTransfer(op, 30, resubmissions));
  EXPECT_EQ(op.transferred, 30u);
  EXPECT_FALSE(internal::FinishTransfer(op, 50, resubmissions));
  EXPECT_TRUE(internal::FinishTransfer(op, 20, resubmissions));
  EXPECT_EQ(op.result, 100);
  EXPECT_EQ(resubmissions, 2u);
}

TEST(FinishTransferTest, ReadStopsAtEndOfFile) {
  char data[100];
  Op op{.kind = OpKind::kRead, .buffer = data, .length = 100};
  uint64_t resubmissions = 0;
  EXPECT_FALSE(internal::FinishTransfer(op, 40, resubmissions));
  EXPECT_TRUE(internal::FinishTransfer(op, 0, resubmissions));
  EXPECT_EQ(op.result, 40);
}

TEST(FinishTransferTest, TransientErrorsAreRetriedABoundedNumberOfTimes) {
  Op op{.kind = OpKind::kRead, .length = 10};
  uint64_t resubmissions = 0;
  for (int i = 0; i < kRetriesMax; i++) {
    EXPECT_FALSE(internal::FinishTransfer(op, i % 2 ? -EINTR : -EAGAIN, resubmissions));
  }
  EXPECT_TRUE(internal::FinishTransfer(op, -EAGAIN, resubmissions));
  EXPECT_EQ(op.result, -EAGAIN);
  EXPECT_EQ(resubmissions, kRetriesMax);
}

TEST(FinishTransferTest, ReceiveReturnsWhatArrived) {
  Op op{.kind = OpKind::kRecv, .length = 100};
  uint64_t resubmissions = 0;
  EXPECT_TRUE(internal::FinishTransfer(op, 7, resubmissions));
  EXPECT_EQ(op.result, 7);
}

// A ring far smaller than the burst: ops beyond the in-kernel limit wait in user space and
// the CQ never overflows (the backend checks the kernel's overflow counter on every tick).
TEST(UringBackendTest, TinyRingCompletesABurstInOrderOfSubmissionBatches) {
  BackendOptions options;
  options.ring_entries = 4;
  options.in_flight_max = 8;
  absl::StatusOr<std::unique_ptr<Backend>> backend = internal::CreateUringBackend(options, 0);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::vector<Op> ops(5000);
  for (Op& op : ops) (*backend)->Submit(&op);
  size_t completed = 0;
  OpList done;
  while (completed < ops.size()) {
    ASSERT_TRUE((*backend)->Tick(true, kNoDeadline, done).ok());
    while (Op* op = done.PopFront()) {
      EXPECT_EQ(op->result, 0);
      completed++;
    }
  }
  EXPECT_EQ((*backend)->in_flight(), 0u);
  EXPECT_EQ((*backend)->stats().completed, ops.size());
}

// The smallest ring the options allow (one SQE, one op in flight) completes its ops: its CQ
// used to leave room for none, and every op waited for ever.
TEST(UringBackendTest, ARingOfOneEntryForOneOpInFlightCompletesEveryOp) {
  BackendOptions options;
  options.ring_entries = 1;
  options.in_flight_max = 1;
  absl::StatusOr<std::unique_ptr<Backend>> backend = internal::CreateUringBackend(options, 0);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::vector<Op> ops(3);
  for (Op& op : ops) (*backend)->Submit(&op);
  size_t completed = 0;
  OpList done;
  for (int tick = 0; tick < 1000 && completed < ops.size(); ++tick) {
    ASSERT_TRUE((*backend)->Tick(/*wait=*/false, kNoDeadline, done).ok());
    while (done.PopFront() != nullptr) completed++;
  }
  EXPECT_EQ(completed, ops.size()) << "ops waited for room the CQ never had";
}

TEST(TimeoutMsForTest, RoundsUpAndStaysAPositiveInt) {
  EXPECT_EQ(TimeoutMsFor(-5), 0);
  EXPECT_EQ(TimeoutMsFor(0), 0);
  EXPECT_EQ(TimeoutMsFor(1), 1);
  EXPECT_EQ(TimeoutMsFor(1'000'000), 1);
  EXPECT_EQ(TimeoutMsFor(1'000'001), 2);
  EXPECT_EQ(TimeoutMsFor(int64_t{30} * 24 * 3600 * 1'000'000'000), std::numeric_limits<int>::max());
  EXPECT_EQ(TimeoutMsFor(std::numeric_limits<int64_t>::max()), std::numeric_limits<int>::max());
}

// A file on disk of kColdPages pages, written and synced (so its pages are clean and
// POSIX_FADV_DONTNEED can drop them), then dropped until at least `wanted` pages at least
// kColdGap apart (and past the first, whose miss the kernel reads ahead from) are out of
// memory, as cachestat says. DONTNEED is advice: a page another CPU holds in its batch of
// recently used pages stays, so it is asked again.
constexpr uint64_t kColdPageBytes = 4096;
constexpr uint64_t kColdPages = 256;
constexpr uint64_t kColdGap = 32;
constexpr int kColdDropAttempts = 1000;

bool Absent(int fd, uint64_t page) {
  internal::PagesInMemory in{};
  return internal::CountPagesInMemory(fd, page * kColdPageBytes, kColdPageBytes, in) == 0 &&
         in.cached == 0;
}

std::vector<uint64_t> DropPages(int fd, size_t wanted) {
  std::vector<uint64_t> absent;
  for (int attempt = 0; attempt < kColdDropAttempts && absent.size() < wanted; ++attempt) {
    EXPECT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    absent.clear();
    for (uint64_t page = kColdGap; page < kColdPages && absent.size() < wanted; ++page) {
      if (Absent(fd, page) && (absent.empty() || page >= absent.back() + kColdGap)) {
        absent.push_back(page);
      }
    }
  }
  return absent;
}

// A tmpfs file refuses RWF_NOWAIT: found so, it costs one refused preadv2 (and a statfs) before
// the read. Marked in memory first (a caller that knows the device), the read is one preadv2.
TEST(PosixCachedReadsTest, AFileMarkedInMemoryIsReadWithOneCall) {
  struct statfs fs {};
  if (statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC) GTEST_SKIP() << "no /dev/shm";
  char path[] = "/dev/shm/sqloop_backend_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  unlink(path);
  absl::Cleanup closer = [fd] { close(fd); };
  const std::string data(4096, 'm');
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  std::string back(data.size(), '\0');
  internal::PosixCachedReads found;
  EXPECT_FALSE(found.InMemory(fd));
  EXPECT_EQ(found.Read(fd, back.data(), 4096, 0), 4096);
  EXPECT_TRUE(found.InMemory(fd));
  EXPECT_EQ(found.preads(), 2u) << "the refused read, then the plain one";
  internal::PosixCachedReads marked;
  marked.MarkInMemory(fd);
  EXPECT_TRUE(marked.InMemory(fd));
  EXPECT_EQ(marked.Read(fd, back.data(), 4096, 0), 4096);
  EXPECT_EQ(marked.preads(), 1u);
  EXPECT_EQ(back, data);
}

// Once a file has missed, PosixCachedReads with defer_misses (io_uring's) asks cachestat before
// it reads, so a miss answers EAGAIN without a preadv2, which would start the device read of the
// page alone: the caller's fetch through the ring reads it, with the rest of its tick. With
// nothing else in flight (batch false) there is no batch to join, and the read goes straight to
// preadv2, as before. The counters say which system calls ran; the kernel decides only whether
// a preadv2 on a page not in memory misses (on a fast device the read it starts may finish
// within the call and answer the bytes), so the first miss is sought, not assumed.
TEST(PosixCachedReadsTest, AFileThatMissedAsksBeforeItReadsSoAMissStartsNothing) {
  char path[] = "/var/tmp/sqloop_backend_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  unlink(path);
  absl::Cleanup closer = [fd] { close(fd); };
  struct statfs fs {};
  ASSERT_EQ(fstatfs(fd, &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << "/var/tmp is tmpfs: nothing there is ever cold";
  internal::PagesInMemory probe{};
  const int64_t asked = internal::CountPagesInMemory(fd, 0, 1, probe);
  if (asked == -ENOSYS || asked == -EPERM) {
    GTEST_SKIP() << "this kernel has no cachestat (Linux 6.5): " << std::strerror(-asked);
  }
  ASSERT_EQ(asked, 0);
  const std::string data(kColdPages * kColdPageBytes, 'p');
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(fsync(fd), 0);

  internal::PosixCachedReads reads(/*defer_misses=*/true);
  std::string page(kColdPageBytes, '\0');
  // The first miss: the file was not known to be cold, so every read went to preadv2.
  constexpr int kMissAttempts = 200;
  int attempts = 0;
  for (bool missed = false; !missed && attempts < kMissAttempts; ++attempts) {
    const std::vector<uint64_t> absent = DropPages(fd, 4);
    ASSERT_FALSE(absent.empty()) << "the kernel kept the pages in memory";
    const uint64_t at = absent[static_cast<size_t>(attempts) % absent.size()];
    missed = reads.Read(fd, page.data(), kColdPageBytes, at * kColdPageBytes) == -EAGAIN;
  }
  if (attempts == kMissAttempts) {
    GTEST_SKIP() << "every preadv2(RWF_NOWAIT) of a page not in memory answered its bytes";
  }
  EXPECT_EQ(reads.asked(), 0u);
  EXPECT_EQ(reads.preads(), static_cast<uint64_t>(attempts));

  // The next miss asks, answers EAGAIN, and reads nothing.
  const std::vector<uint64_t> absent = DropPages(fd, 2);
  ASSERT_EQ(absent.size(), 2u) << "the kernel kept the pages in memory";
  uint64_t preads = reads.preads();
  EXPECT_EQ(reads.Read(fd, page.data(), kColdPageBytes, absent[0] * kColdPageBytes), -EAGAIN);
  EXPECT_EQ(reads.asked(), 1u);
  EXPECT_EQ(reads.preads(), preads) << "a known-cold file's miss ran preadv2";
  EXPECT_TRUE(Absent(fd, absent[0])) << "the miss started a read of its page";
  // Nothing else in flight: the read does not ask, it reads (whatever the kernel answers).
  const int64_t alone = reads.Read(fd, page.data(), kColdPageBytes, absent[1] * kColdPageBytes,
                                   /*batch=*/false);
  EXPECT_TRUE(alone == -EAGAIN || alone == static_cast<int64_t>(kColdPageBytes)) << alone;
  EXPECT_EQ(reads.asked(), 1u);
  EXPECT_EQ(reads.preads(), preads + 1);
  // Past the end of the file no page is in memory either, yet a read there waits for nothing:
  // once the caller's fetch of it completed (the backend observes it), the read asks no more
  // and answers 0, rather than being sent to fetch again until its restarts run out.
  const uint64_t past_end = data.size() + 2 * kColdPageBytes;
  EXPECT_EQ(reads.Read(fd, page.data(), kColdPageBytes, past_end), -EAGAIN);
  EXPECT_EQ(reads.asked(), 2u);
  Op fetched{.kind = OpKind::kRead, .fd = fd, .length = kColdPageBytes, .offset = past_end};
  fetched.result = 0;
  reads.Observe(fetched);
  EXPECT_EQ(reads.Read(fd, page.data(), kColdPageBytes, past_end), 0);
  EXPECT_EQ(reads.asked(), 2u);
  // Brought in by an ordinary read, the page is answered: asked, then read.
  ASSERT_EQ(pread(fd, page.data(), kColdPageBytes, static_cast<off_t>(absent[0] * kColdPageBytes)),
            static_cast<ssize_t>(kColdPageBytes));
  std::fill(page.begin(), page.end(), '\0');
  preads = reads.preads();
  EXPECT_EQ(reads.Read(fd, page.data(), kColdPageBytes, absent[0] * kColdPageBytes),
            static_cast<int64_t>(kColdPageBytes));
  EXPECT_EQ(reads.asked(), 3u);
  EXPECT_EQ(reads.preads(), preads + 1);
  EXPECT_EQ(page, data.substr(0, kColdPageBytes));
}

// On the fallback a send into a small socket buffer is always short, so this pins the
// resubmission path itself (the loop test checks the end-to-end result on every backend).
TEST(FallbackBackendTest, ShortSendIsCompletedAcrossTicks) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  const int small = 4096;
  setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  absl::StatusOr<std::unique_ptr<Backend>> backend = internal::CreateFallbackBackend({});
  ASSERT_TRUE(backend.ok());
  std::string payload(256 * 1024, 'p');
  Op send{.kind = OpKind::kSend,
          .fd = fds[0],
          .buffer = payload.data(),
          .length = static_cast<uint32_t>(payload.size())};
  (*backend)->Submit(&send);
  OpList done;
  std::string received;
  char chunk[8192];
  while (done.empty()) {
    ASSERT_TRUE((*backend)->Tick(false, kNoDeadline, done).ok());
    const ssize_t n = recv(fds[1], chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n > 0) received.append(chunk, static_cast<size_t>(n));
  }
  EXPECT_EQ(send.result, static_cast<int64_t>(payload.size()));
  EXPECT_GT((*backend)->stats().resubmitted, 0u);
  for (ssize_t n; (n = recv(fds[1], chunk, sizeof(chunk), MSG_DONTWAIT)) > 0;) {
    received.append(chunk, static_cast<size_t>(n));
  }
  EXPECT_EQ(received, payload);
  close(fds[0]);
  close(fds[1]);
}

// Contract item 8 on both real backends: a Tick starts at most submit_batch_max ops, the rest
// wait in order for the next Tick, and a Tick that leaves some waiting does not block.
TEST(BackendBatchTest, ATickStartsAtMostTheBatchAndDoesNotBlockWhileOpsWait) {
  for (const bool uring : {true, false}) {
    SCOPED_TRACE(uring ? "io_uring" : "fallback");
    BackendOptions options;
    options.submit_batch_max = 4;
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        uring ? internal::CreateUringBackend(options, 0) : internal::CreateFallbackBackend(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    std::vector<Op> nops(9);
    for (Op& op : nops) (*backend)->Submit(&op);
    std::vector<size_t> per_tick;
    std::vector<Op*> order;
    OpList done;
    while (order.size() < nops.size()) {
      ASSERT_TRUE((*backend)->Tick(false, kNoDeadline, done).ok());
      per_tick.push_back(0);
      while (Op* op = done.PopFront()) {
        order.push_back(op);
        ++per_tick.back();
      }
    }
    EXPECT_EQ(per_tick, (std::vector<size_t>{4, 4, 1}));
    for (size_t i = 0; i < nops.size(); ++i) EXPECT_EQ(order[i], &nops[i]) << "out of order";
    EXPECT_EQ((*backend)->stats().batch_deferrals, 2u);

    // Five receives that nothing answers: the Tick that sends four leaves one waiting, so it
    // must return at once although it may wait and nothing finished.
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    char buffers[5][8];
    std::vector<Op> receives(5);
    for (size_t i = 0; i < receives.size(); ++i) {
      receives[i] = Op{.kind = OpKind::kRecv, .fd = fds[0], .buffer = buffers[i], .length = 8};
      (*backend)->Submit(&receives[i]);
    }
    const int64_t deadline_ns = (*backend)->NowNs() + 60'000'000'000;
    ASSERT_TRUE((*backend)->Tick(true, deadline_ns, done).ok());
    EXPECT_TRUE(done.empty());
    EXPECT_LT((*backend)->NowNs(), deadline_ns) << "the Tick blocked with an op left waiting";
    EXPECT_EQ((*backend)->stats().batch_deferrals, 3u);
    for (Op& receive : receives) (*backend)->Cancel(&receive);
    for (size_t finished = 0; finished < receives.size();) {
      ASSERT_TRUE((*backend)->Tick(true, kNoDeadline, done).ok());
      while (Op* op = done.PopFront()) {
        EXPECT_EQ(op->result, -ECANCELED);
        ++finished;
      }
    }
    close(fds[0]);
    close(fds[1]);
  }
}

}  // namespace
}  // namespace sqloop::io

namespace sqloop::io {
namespace {

// Long-lived ops (a receive per idle connection) can fill the ring's in-kernel budget; new
// ops then wait in user space. That must be said once through the log hook, not happen
// silently, and the waiting op must still run once room is made.
TEST(UringBackendTest, WarnsOnceWhenOpsMustWaitForRoomInTheRing) {
  std::vector<std::string> logged;
  BackendOptions options;
  options.ring_entries = 4;
  options.in_flight_max = 4;  // CQ of 8: 3 user ops in the kernel at most.
  options.log = [&](LogLevel, absl::string_view message) { logged.emplace_back(message); };
  absl::StatusOr<std::unique_ptr<Backend>> backend = internal::CreateUringBackend(options, 0);
  ASSERT_TRUE(backend.ok()) << backend.status();
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  char buffers[6][8];
  std::vector<Op> receives(6);
  for (size_t i = 0; i < receives.size(); ++i) {
    receives[i] = Op{.kind = OpKind::kRecv, .fd = fds[0], .buffer = buffers[i], .length = 8};
    (*backend)->Submit(&receives[i]);
  }
  Op nop{.kind = OpKind::kNop};
  (*backend)->Submit(&nop);
  OpList done;
  ASSERT_TRUE((*backend)->Tick(false, kNoDeadline, done).ok());
  EXPECT_TRUE(done.empty());  // The nop waits behind the receives.
  EXPECT_GT((*backend)->stats().ring_full_waits, 0u);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find("raise BackendOptions::in_flight_max"), std::string::npos);
  for (Op& receive : receives) (*backend)->Cancel(&receive);
  size_t finished = 0;
  bool nop_done = false;
  while (finished < receives.size() + 1) {
    ASSERT_TRUE((*backend)->Tick(true, kNoDeadline, done).ok());
    while (Op* op = done.PopFront()) {
      finished++;
      nop_done = nop_done || op == &nop;
    }
  }
  EXPECT_TRUE(nop_done);
  EXPECT_EQ(nop.result, 0);
  EXPECT_EQ(logged.size(), 1u);  // Once, not per op.
  close(fds[0]);
  close(fds[1]);
}

}  // namespace
}  // namespace sqloop::io
