// CreateBackend(): picks io_uring or the fallback and reports the choice; and the transfer
// bookkeeping every backend shares.
#include "sqloop/io/backend.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

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

namespace internal {

int64_t RunMetadataOp(const Op& op) {
  if (op.kind == OpKind::kFtruncate) {
    return ftruncate(op.fd, static_cast<off_t>(op.offset)) == 0 ? 0 : -errno;
  }
  struct stat status {};
  return fstat(op.fd, &status) == 0 ? static_cast<int64_t>(status.st_size) : -errno;
}

namespace {

// tmpfs and ramfs keep a file's bytes in memory only (tmpfs may swap; a swapped page is the
// one read here that can wait). Linux answers RWF_NOWAIT on them with EOPNOTSUPP.
bool InMemoryFileSystem(int fd) {
  struct statfs fs {};
  return fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
}

}  // namespace

int64_t PosixCachedReads::Read(int fd, void* buffer, uint32_t length, uint64_t offset) {
  iovec vec{.iov_base = buffer, .iov_len = length};
  int flags = InMemory(fd) ? 0 : RWF_NOWAIT;
  for (;;) {
    const ssize_t got = preadv2(fd, &vec, 1, static_cast<off_t>(offset), flags);
    if (got >= 0) return got;
    if (errno == EOPNOTSUPP && flags != 0 && InMemoryFileSystem(fd)) {
      flags = 0;  // The file is memory: a plain read cannot wait for a device.
      if (static_cast<size_t>(fd) >= memory_.size()) memory_.resize(static_cast<size_t>(fd) + 1);
      memory_[static_cast<size_t>(fd)] = true;
      continue;
    }
    if (errno != EINTR) return -errno;
  }
}

}  // namespace internal
}  // namespace sqloop::io
