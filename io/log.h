// io/log.h
// -----------------------------------------------------------------------------
//
// The host-supplied logging hook. sqloop never writes to stderr on its own for operating
// events; it reports them (backend choice, stalls, poisoned databases) through this hook so the
// host decides where they go. A default-constructed hook drops everything.
//
// Example:
//
//   sqloop::io::LogHook log = [](sqloop::io::LogLevel level, absl::string_view message) {
//     std::fprintf(stderr, "[sqloop %s] %.*s\n", sqloop::io::LogLevelName(level),
//                  static_cast<int>(message.size()), message.data());
//   };
#ifndef SQLOOP_IO_LOG_H_
#define SQLOOP_IO_LOG_H_

#include <functional>

#include "absl/strings/string_view.h"

namespace sqloop::io {

enum class LogLevel { kInfo, kWarning, kError };

[[nodiscard]] inline const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

// Called on the loop's thread. Set once at construction; it is not called per operation
// unless something is wrong (a stall), so std::function's one allocation is paid at setup.
using LogHook = std::function<void(LogLevel, absl::string_view)>;

}  // namespace sqloop::io

#endif  // SQLOOP_IO_LOG_H_
