#include "alloc/check.h"

#include <cstdio>
#include <cstdlib>

namespace sqloop::internal {

void CheckFailed(const char* file, int line, const char* condition, const char* message) {
  // fprintf to stderr does not allocate on glibc for an unbuffered stream, so a failing check
  // inside an allocation hook cannot recurse.
  std::fprintf(stderr, "%s:%d: sqloop check failed: %s: %s\n", file, line, condition, message);
  std::fflush(stderr);
  std::abort();
}

}  // namespace sqloop::internal
