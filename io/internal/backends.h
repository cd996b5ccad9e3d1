// io/internal/backends.h
// -----------------------------------------------------------------------------
//
// Constructors of the concrete backends, used by CreateBackend() (io/backend.cc) and by tests.
// Not API: hosts call CreateBackend().
#ifndef SQLOOP_IO_INTERNAL_BACKENDS_H_
#define SQLOOP_IO_INTERNAL_BACKENDS_H_

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

// Backend::ReadIfCached for real descriptors: preadv2 with RWF_NOWAIT, retried on EINTR.
// tmpfs and ramfs keep files in memory only and answer RWF_NOWAIT with EOPNOTSUPP; such a
// descriptor is read with a plain pread, and remembered after its first read, so later reads
// take one system call instead of three (the probe, fstatfs, the read). The backend shows it
// every op it finishes (Observe): a descriptor closed, or returned by an open or an accept, is
// asked again, because its number may now name another file.
class PosixCachedReads {
 public:
  [[nodiscard]] int64_t Read(int fd, void* buffer, uint32_t length, uint64_t offset);
  // Whether a Read found `fd` on tmpfs or ramfs (and nothing made it forget since).
  [[nodiscard]] bool InMemory(int fd) const {
    return fd >= 0 && static_cast<size_t>(fd) < memory_.size() && memory_[static_cast<size_t>(fd)];
  }
  void Observe(const Op& op) {
    if (op.kind == OpKind::kClose) {
      Forget(op.fd);
    } else if ((op.kind == OpKind::kOpenAt || op.kind == OpKind::kAccept) && op.result >= 0) {
      Forget(static_cast<int>(op.result));
    }
  }

 private:
  void Forget(int fd) {
    if (fd >= 0 && static_cast<size_t>(fd) < memory_.size())
      memory_[static_cast<size_t>(fd)] = false;
  }
  std::vector<bool> memory_;  // By descriptor: a file on tmpfs or ramfs.
};

[[nodiscard]] inline bool IsMetadataOp(OpKind kind) {
  return kind == OpKind::kFtruncate || kind == OpKind::kFileSize;
}

}  // namespace sqloop::io::internal

#endif  // SQLOOP_IO_INTERNAL_BACKENDS_H_
