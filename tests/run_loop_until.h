// A loop run a tick at a time until a test's condition holds, under a hang guard.
#ifndef SQLOOP_TESTS_RUN_LOOP_UNTIL_H_
#define SQLOOP_TESTS_RUN_LOOP_UNTIL_H_

#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "sqloop/loop/loop.h"

namespace sqloop::testing {

// Runs `loop` one Run(kOnce) at a time, `between()` before each, until `done()`; false if
// `bound` passed first on the loop's clock (a hang guard, never a timing assertion). The
// guard's timer is over before it returns, so the loop is left as it was found.
inline bool RunLoopUntil(
    loop::Loop& loop, absl::Duration bound, absl::FunctionRef<bool()> done,
    absl::FunctionRef<void()> between = [] {}) {
  bool expired = false;
  loop::Completion guard;
  guard.user_data = &expired;
  guard.callback = [](loop::Loop& /*loop*/, loop::Completion& c) {
    *static_cast<bool*>(c.user_data) = true;
    return loop::Action::kDisarm;
  };
  loop.Timer(guard, bound);
  while (!done() && !expired) {
    between();
    if (!loop.Run(loop::RunMode::kOnce).ok()) break;
  }
  const bool ok = done();
  if (!expired) loop.Cancel(guard);
  while (!expired) (void)loop.Run(loop::RunMode::kOnce);  // The guard's callback runs.
  return ok;
}

}  // namespace sqloop::testing

#endif  // SQLOOP_TESTS_RUN_LOOP_UNTIL_H_
