// alloc/check.h
// -----------------------------------------------------------------------------
//
// The always-on assertion used by every layer of sqloop for programmer errors.
//
// sqloop has two error channels (docs/architecture.md):
//   * operating errors (bad input, failed I/O, exhausted budgets) are returned as
//     `absl::Status` or as an operation's `-errno` result;
//   * programmer errors (submitting a completion twice, cancelling one that was never
//     submitted, destroying a loop with work pending) stop the process at a check whose
//     message says what was misused.
//
// Checks stay on in release builds: a broken invariant in a storage runtime must stop the
// process, not corrupt a database. They cost one predictable branch each; a check that would
// cost more (a walk over a whole structure) is a SQLOOP_DCHECK, on in debug and test builds.
//
// It lives in `alloc/` because `alloc` is the bottom layer that every other layer may use.
//
// Example:
//
//   SQLOOP_CHECK(c.state == Completion::State::kIdle,
//                "Loop::Submit: the completion is already in flight; wait for its callback");
#ifndef SQLOOP_ALLOC_CHECK_H_
#define SQLOOP_ALLOC_CHECK_H_

namespace sqloop::internal {

// Prints "file:line: check failed: condition: message" to stderr, runs the fatal hook (if
// set), and aborts.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message);

// Runs after a failed check has printed its message and before the process aborts. Tests set
// one to print what replays the failure (the simulator's seed and command line). It must not
// allocate much, and must not fail a check itself (a second failure aborts at once).
using FatalHook = void (*)();
// Installs `hook` (nullptr: none) and returns the previous one. Not thread-safe: set it before
// the threads that may fail start, as test drivers do.
FatalHook SetFatalHook(FatalHook hook);

}  // namespace sqloop::internal

// SQLOOP_CHECK(condition, message): `message` is a string literal that tells the caller what
// they misused and what to do instead.
#define SQLOOP_CHECK(condition, message)                                        \
  do {                                                                          \
    if (__builtin_expect(!(condition), 0)) {                                    \
      ::sqloop::internal::CheckFailed(__FILE__, __LINE__, #condition, message); \
    }                                                                           \
  } while (false)

// SQLOOP_DCHECK(condition, message): the same, for checks that cost more than a branch (walks
// over whole queues, as SQLite's assert_pager_state does). On in debug and test builds, compiled
// out where NDEBUG is defined (release builds, benchmarks). SQLOOP_DCHECK_IS_ON says which.
#ifdef NDEBUG
#define SQLOOP_DCHECK_IS_ON 0
#define SQLOOP_DCHECK(condition, message) \
  do {                                    \
  } while (false && (condition))
#else
#define SQLOOP_DCHECK_IS_ON 1
#define SQLOOP_DCHECK(condition, message) SQLOOP_CHECK(condition, message)
#endif

#endif  // SQLOOP_ALLOC_CHECK_H_
