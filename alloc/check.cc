#include "sqloop/alloc/check.h"

#include <cstdio>
#include <cstdlib>

namespace sqloop::internal {
namespace {

FatalHook fatal_hook = nullptr;
bool failing = false;  // A check failed inside the hook: abort without running it again.

}  // namespace

FatalHook SetFatalHook(FatalHook hook) {
  FatalHook previous = fatal_hook;
  fatal_hook = hook;
  return previous;
}

void CheckFailed(const char* file, int line, const char* condition, const char* message) {
  // fprintf to stderr does not allocate on glibc for an unbuffered stream, so a failing check
  // inside an allocation hook cannot recurse.
  std::fprintf(stderr, "%s:%d: sqloop check failed: %s: %s\n", file, line, condition, message);
  std::fflush(stderr);
  if (fatal_hook != nullptr && !failing) {
    failing = true;
    fatal_hook();
    std::fflush(stderr);
    std::fflush(stdout);
  }
  std::abort();
}

}  // namespace sqloop::internal
