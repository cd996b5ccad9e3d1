#include "sqloop/io/errno_status.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace sqloop::io {

std::string ErrnoText(int64_t error) {
  const int number = static_cast<int>(error < 0 ? -error : error);
  return absl::StrCat(std::strerror(number), " (errno ", number, ")");
}

absl::Status ErrnoStatus(int64_t error, absl::string_view what) {
  const int number = static_cast<int>(error < 0 ? -error : error);
  return ErrnoStatus(absl::ErrnoToStatus(number, "").code(), number, what);
}

absl::Status ErrnoStatus(absl::StatusCode code, int64_t error, absl::string_view what) {
  return absl::Status(code, absl::StrCat(what, ": ", ErrnoText(error)));
}

}  // namespace sqloop::io
