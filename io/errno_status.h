// io/errno_status.h
// -----------------------------------------------------------------------------
//
// The one place an errno becomes words or an absl::Status. Backends report failures as an op's
// negative result (-errno) and system calls through `errno`; every layer that turns either into
// an error for a user goes through these two functions, so the wording is the same everywhere:
// "<what failed>: <strerror> (errno N)".
//
// Example:
//
//   if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
//     return sqloop::io::ErrnoStatus(absl::StatusCode::kFailedPrecondition, errno,
//                                    absl::StrCat("cannot create the directory ", path));
//   }
//   ... an op completed with op.result < 0 ...
//   message = absl::StrCat("fsync of '", name, "' failed: ", sqloop::io::ErrnoText(op.result));
#ifndef SQLOOP_IO_ERRNO_STATUS_H_
#define SQLOOP_IO_ERRNO_STATUS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sqloop::io {

// An errno, or an op's negative result (either sign is taken as the same error), in words:
// "No such file or directory (errno 2)".
[[nodiscard]] std::string ErrnoText(int64_t error);

// "<what>: <ErrnoText(error)>", with the code that fits the errno (absl::ErrnoToStatus: ENOENT is
// NotFound, EACCES PermissionDenied, ENOSPC ResourceExhausted, EAGAIN Unavailable, ...).
[[nodiscard]] absl::Status ErrnoStatus(int64_t error, absl::string_view what);
// The same with a code the caller chooses, where the errno alone does not say what the user
// should do (a directory that cannot be created is a precondition of the host, whatever errno).
[[nodiscard]] absl::Status ErrnoStatus(absl::StatusCode code, int64_t error,
                                       absl::string_view what);

}  // namespace sqloop::io

#endif  // SQLOOP_IO_ERRNO_STATUS_H_
