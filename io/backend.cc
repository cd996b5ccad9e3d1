// CreateBackend(): picks io_uring or the fallback and reports the choice; and the transfer
// bookkeeping every backend shares.
#include "sqloop/io/backend.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "sqloop/io/internal/backends.h"

namespace sqloop::io {
namespace {

void Log(const BackendOptions& options, LogLevel level, absl::string_view message) {
  if (options.log) options.log(level, message);
}

absl::StatusOr<BackendKind> ResolveKind(const BackendOptions& options, std::string& why) {
  why = "configured";
  if (!options.read_environment) return options.kind;
  const char* value = std::getenv("SQLOOP_BACKEND");
  if (value == nullptr || *value == '\0') return options.kind;
  why = absl::StrCat("SQLOOP_BACKEND=", value);
  const absl::string_view name(value);
  if (name == "io_uring") return BackendKind::kIoUring;
  if (name == "fallback") return BackendKind::kFallback;
  if (name == "auto") return BackendKind::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("SQLOOP_BACKEND=", name, " is not a backend; use io_uring, fallback or auto"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options) {
  std::string why;
  absl::StatusOr<BackendKind> kind = ResolveKind(options, why);
  if (!kind.ok()) return kind.status();
  if (*kind == BackendKind::kFallback) {
    Log(options, LogLevel::kInfo, absl::StrCat("sqloop backend: fallback (", why, ")"));
    return internal::CreateFallbackBackend(options);
  }
  absl::StatusOr<std::unique_ptr<Backend>> ring =
      internal::CreateUringBackend(options, options.uring_setup_errno_for_testing);
  if (ring.ok()) {
    Log(options, LogLevel::kInfo, absl::StrCat("sqloop backend: io_uring (", why, ")"));
    return ring;
  }
  // Only "io_uring is not allowed or not there" selects the fallback. Other setup failures
  // (out of memory, out of descriptors) are real problems the fallback would only hide.
  const bool unavailable =
      absl::IsPermissionDenied(ring.status()) || absl::IsUnimplemented(ring.status());
  if (*kind == BackendKind::kIoUring || !unavailable) return ring.status();
  Log(options, LogLevel::kWarning,
      absl::StrCat("sqloop backend: fallback, because ", ring.status().message()));
  return internal::CreateFallbackBackend(options);
}

int TimeoutMsFor(int64_t delay_ns) {
  if (delay_ns <= 0) return 0;
  const int64_t delay_ms = delay_ns / 1'000'000 + (delay_ns % 1'000'000 != 0 ? 1 : 0);
  return static_cast<int>(std::min<int64_t>(delay_ms, std::numeric_limits<int>::max()));
}

namespace internal {

int64_t RunMetadataOp(const Op& op) {
  if (op.kind == OpKind::kFtruncate) {
    return ftruncate(op.fd, static_cast<off_t>(op.offset)) == 0 ? 0 : -errno;
  }
  struct stat status {};
  return fstat(op.fd, &status) == 0 ? static_cast<int64_t>(status.st_size) : -errno;
}

int64_t TransferFileOp(const Op& op) {
  char* const data = static_cast<char*>(op.buffer) + op.transferred;
  const size_t remaining = op.length - op.transferred;
  const auto offset = static_cast<off_t>(op.offset + op.transferred);
  const ssize_t moved = op.kind == OpKind::kRead ? pread(op.fd, data, remaining, offset)
                                                 : pwrite(op.fd, data, remaining, offset);
  return moved >= 0 ? moved : -errno;
}

namespace {

// tmpfs and ramfs keep a file's bytes in memory only (tmpfs may swap; a swapped page is the
// one read here that can wait). Linux answers RWF_NOWAIT on them with EOPNOTSUPP.
bool InMemoryFileSystem(int fd) {
  struct statfs fs {};
  return fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
}

}  // namespace

int64_t CountPagesInMemory(int fd, uint64_t offset, uint32_t length, PagesInMemory& out) {
  // The kernel's struct cachestat_range and struct cachestat (linux/mman.h from 6.5 on; Debian
  // bookworm's headers predate them). The system call's number is the same on every
  // architecture.
  struct Range {
    uint64_t offset;
    uint64_t length;
  };
  struct Counts {
    uint64_t cache, dirty, writeback, evicted, recently_evicted;
  };
  constexpr int64_t kCachestat = 451;
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t first = offset / page;
  const uint64_t last = (offset + std::max<uint32_t>(length, 1) - 1) / page;
  Range range{.offset = first * page, .length = (last - first + 1) * page};
  Counts counts{};
  if (syscall(kCachestat, fd, &range, &counts, 0) != 0) return -errno;
  out.cached = static_cast<int64_t>(counts.cache);
  out.pages = static_cast<int64_t>(last - first + 1);
  return 0;
}

int64_t PosixCachedReads::Read(int fd, void* buffer, uint32_t length, uint64_t offset, bool batch) {
  iovec vec{.iov_base = buffer, .iov_len = length};
  int flags = InMemory(fd) ? 0 : RWF_NOWAIT;
  if (ask_first_ && batch && flags != 0 && fd >= 0 && static_cast<size_t>(fd) < files_.size() &&
      files_[static_cast<size_t>(fd)].cold_probes > 0 && !ReadLately(fd, offset, length)) {
    --files_[static_cast<size_t>(fd)].cold_probes;
    PagesInMemory in{};
    ++asked_;
    if (CountPagesInMemory(fd, offset, length, in) != 0) {
      ask_first_ = false;  // No cachestat here (an old kernel, a sandbox): never ask again.
    } else if (in.cached < in.pages) {
      return -EAGAIN;  // Not all there, and nothing started: the caller's fetch reads them.
    }
  }
  for (;;) {
    ++preads_;
    const ssize_t got = preadv2(fd, &vec, 1, static_cast<off_t>(offset), flags);
    if (got >= 0) return got;
    const int error = errno;
    if (error == EOPNOTSUPP && flags != 0 && InMemoryFileSystem(fd)) {
      flags = 0;  // The file is memory: a plain read cannot wait for a device.
      At(fd).memory = true;
      continue;
    }
    if (error == EAGAIN && ask_first_ && fd >= 0) At(fd).cold_probes = kColdProbes;
    if (error != EINTR) return -error;
  }
}

void PosixCachedReads::Remember(const Op& read) {
  RecentRead& slot = recent_[recent_next_++ % kRecentReads];
  if (slot.fd >= 0) --files_[static_cast<size_t>(slot.fd)].recent;
  slot = {.fd = read.fd, .begin = read.offset, .end = read.offset + read.length};
  ++At(read.fd).recent;
}

bool PosixCachedReads::ReadLately(int fd, uint64_t offset, uint32_t length) const {
  if (files_[static_cast<size_t>(fd)].recent == 0) return false;
  const uint64_t end = offset + std::max<uint32_t>(length, 1);
  return std::any_of(recent_.begin(), recent_.end(), [&](const RecentRead& read) {
    return read.fd == fd && read.begin < end && offset < std::max(read.end, read.begin + 1);
  });
}

// Runs at every open and close: the scan of recent_ only for a descriptor that has entries.
void PosixCachedReads::Forget(int fd) {
  if (fd < 0 || static_cast<size_t>(fd) >= files_.size()) return;
  if (files_[static_cast<size_t>(fd)].recent > 0) {
    for (RecentRead& read : recent_) {
      if (read.fd == fd) read = {};
    }
  }
  files_[static_cast<size_t>(fd)] = {};
}

}  // namespace internal
}  // namespace sqloop::io
