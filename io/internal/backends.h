// io/internal/backends.h
// -----------------------------------------------------------------------------
//
// Constructors of the concrete backends, used by CreateBackend() (io/backend.cc) and by tests.
// Not API: hosts call CreateBackend().
#ifndef SQLOOP_IO_INTERNAL_BACKENDS_H_
#define SQLOOP_IO_INTERNAL_BACKENDS_H_

#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/backend.h"

namespace sqloop::io::internal {

// Sets up a ring. Fails with PermissionDenied (EPERM/EACCES: io_uring disabled by sysctl or a
// seccomp policy), Unimplemented (ENOSYS, or a required opcode the kernel lacks) or another
// code for other setup errors; the message names the errno or the missing opcodes.
// `forced_setup_errno` != 0 makes setup fail as if the kernel had returned it (test hook).
[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> CreateUringBackend(
    const BackendOptions& options, int forced_setup_errno);

[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> CreateFallbackBackend(
    const BackendOptions& options);

// Applies the part of a finished read/write/send/recv result that every backend shares:
// accumulates `transferred`, and decides whether the op must be sent again for the remainder or
// after a transient error. Returns true when the op is finished (its `result` is then set).
// What every backend does to an op it accepts (contract: Submit resets the bookkeeping):
// checks it is not queued anywhere and clears what a previous use left behind.
inline void ResetForSubmit(Op& op) {
  SQLOOP_CHECK(op.next == nullptr, "Backend::Submit: op is already queued somewhere");
  op.result = 0;
  op.transferred = 0;
  op.retries = 0;
  op.cancel_requested = false;
  op.finished = false;
}

// Inline: it runs once per completion on the hot path of every backend.
[[nodiscard]] inline bool FinishTransfer(Op& op, int64_t syscall_result, uint64_t& resubmissions) {
  const bool whole_length =
      op.kind == OpKind::kRead || op.kind == OpKind::kWrite || op.kind == OpKind::kSend;
  if (syscall_result >= 0 && !whole_length) {  // The common case: one answer, final.
    op.result = syscall_result;
    return true;
  }
  if (syscall_result == -EINTR || syscall_result == -EAGAIN) {
    if (!op.cancel_requested && op.retries < kRetriesMax) {
      op.retries++;
      resubmissions++;
      return false;
    }
    op.result = op.cancel_requested ? -ECANCELED : syscall_result;
    return true;
  }
  if (syscall_result < 0) {
    op.result = syscall_result;
    return true;
  }
  op.transferred += static_cast<uint32_t>(syscall_result);
  // A zero-byte answer is EOF for a read; for a write or send it would repeat forever, so it
  // ends the op with what moved. A cancelled op reports the bytes that moved before the cancel.
  if (op.transferred >= op.length || syscall_result == 0 || op.cancel_requested) {
    op.result = op.transferred;
    return true;
  }
  resubmissions++;
  return false;
}

// Runs kFtruncate or kFileSize as a plain syscall; returns the op's result (>= 0 or -errno).
[[nodiscard]] int64_t RunMetadataOp(const Op& op);

// One pread or pwrite of what is left of a kRead or kWrite (from op.transferred on): the bytes
// moved, or -errno. FinishTransfer decides whether the op is done.
[[nodiscard]] int64_t TransferFileOp(const Op& op);

// Backend::ReadIfCached for real descriptors: preadv2 with RWF_NOWAIT, retried on EINTR.
// tmpfs and ramfs keep files in memory only and answer RWF_NOWAIT with EOPNOTSUPP; such a
// descriptor is read with a plain pread, and remembered after its first read, so later reads
// take one system call instead of three (the probe, fstatfs, the read). The backend shows it
// every op it finishes (Observe): a descriptor closed, or returned by an open or an accept, is
// asked again, because its number may now name another file.
//
// A preadv2(RWF_NOWAIT) that misses still starts the device read of the missing page before it
// says EAGAIN (the kernel's readahead does), alone: one request, and on a virtual machine one
// notification of the device, per miss. With `defer_misses` (io_uring: the caller's fetch
// follows through the ring, whose submissions of one tick reach the device together), a
// descriptor that missed within its last kColdProbes reads first asks cachestat(2) whether the
// bytes are in memory and, when they are not, answers EAGAIN without starting anything; the
// fetch brings them in with the rest of its tick's batch. A read that overlaps one completed
// lately (the fetch itself, as the missed read runs again) does not ask. A warm descriptor keeps
// the one system call. A kernel without cachestat (before Linux 6.5) or a sandbox that forbids it
// turns the question off for good.
class PosixCachedReads {
 public:
  // Reads of a descriptor, after a miss, that ask before they read (defer_misses).
  static constexpr uint16_t kColdProbes = 256;

  explicit PosixCachedReads(bool defer_misses = false) : ask_first_(defer_misses) {}
  [[nodiscard]] int64_t Read(int fd, void* buffer, uint32_t length, uint64_t offset,
                             bool batch = true);
  // Whether a Read found `fd` on tmpfs or ramfs (and nothing made it forget since).
  [[nodiscard]] bool InMemory(int fd) const {
    return fd >= 0 && static_cast<size_t>(fd) < files_.size() &&
           files_[static_cast<size_t>(fd)].memory;
  }
  // Backend::MarkInMemoryFile: `fd` is on tmpfs or ramfs, until it is closed or reused.
  void MarkInMemory(int fd) {
    if (fd >= 0) At(fd).memory = true;
  }
  // How many times Read asked cachestat, and how many preadv2 calls it made (each retry counts).
  [[nodiscard]] uint64_t asked() const { return asked_; }
  [[nodiscard]] uint64_t preads() const { return preads_; }
  void Observe(const Op& op) {
    if (op.kind == OpKind::kClose) {
      Forget(op.fd);
    } else if ((op.kind == OpKind::kOpenAt || op.kind == OpKind::kAccept) && op.result >= 0) {
      Forget(static_cast<int>(op.result));
    } else if (op.kind == OpKind::kRead && op.result >= 0 && ask_first_ && op.fd >= 0) {
      Remember(op);
    }
  }

 private:
  struct File {
    bool memory = false;       // On tmpfs or ramfs.
    uint16_t cold_probes = 0;  // Reads left that ask cachestat first.
    uint8_t recent = 0;        // Its entries in recent_, so Forget and ReadLately skip a scan.
  };
  File& At(int fd) {
    if (static_cast<size_t>(fd) >= files_.size()) files_.resize(static_cast<size_t>(fd) + 1);
    return files_[static_cast<size_t>(fd)];
  }
  // The reads that completed lately (Observe), so that a read overlapping one does not ask
  // cachestat: its bytes were just read in (the fetch its miss asked for), or lie past the end
  // of the file, where "no page in memory" does not mean that a read would wait (it answers 0
  // at once); asking there would send the read to fetch again, until its restarts ran out.
  struct RecentRead {
    int fd = -1;
    uint64_t begin = 0;
    uint64_t end = 0;
  };
  static constexpr size_t kRecentReads = 128;  // Fits File::recent.
  void Remember(const Op& read);
  [[nodiscard]] bool ReadLately(int fd, uint64_t offset, uint32_t length) const;
  void Forget(int fd);
  bool ask_first_;           // defer_misses, until cachestat turns out to be missing.
  std::vector<File> files_;  // By descriptor.
  std::array<RecentRead, kRecentReads> recent_{};
  size_t recent_next_ = 0;
  uint64_t asked_ = 0;
  uint64_t preads_ = 0;
};

// How many of the pages holding bytes [offset, offset + length) of `fd` are in the page cache,
// and how many there are, through cachestat(2), which starts no I/O. -errno when the kernel
// cannot say (ENOSYS before Linux 6.5).
struct PagesInMemory {
  int64_t cached = 0;
  int64_t pages = 0;
};
[[nodiscard]] int64_t CountPagesInMemory(int fd, uint64_t offset, uint32_t length,
                                         PagesInMemory& out);

[[nodiscard]] inline bool IsMetadataOp(OpKind kind) {
  return kind == OpKind::kFtruncate || kind == OpKind::kFileSize;
}

}  // namespace sqloop::io::internal

#endif  // SQLOOP_IO_INTERNAL_BACKENDS_H_
