// bench/dispatch/floor.h
// -----------------------------------------------------------------------------
//
// The dispatch group's floor: the same fake I/O calls every variant makes (kExpectedCallCounts:
// 2,308 per iteration) in one straight line, with no dispatch at all: no readiness tracking,
// no queue, no state machine, no coroutine. Every dispatch variant is also reported as a
// multiple of it, which separates what the dispatch costs from what the fake calls cost.
//
// The order keeps each object's call sequence the study's (every object alternates "would
// block" and success): the listener's first accept would block; then, per connection, a poll,
// the accept that succeeds, register, a read that would block, the read that returns the
// request, a write that would block, the write that echoes it, unregister, and (but after the
// last connection) the accept that would block; two final polls and the listener's unregister
// make the counts exact. Only one stream is ever registered at a poll, where the real servers
// have about three, so the floor's polls are a little cheaper than theirs.
//
// Example:
//
//   IoStats stats(false);
//   FakePoller poller(&stats, kConnections + 1);
//   RunFloor(&stats, &poller);  // One iteration; stats.counts() == kExpectedCallCounts.
#ifndef SQLOOP_BENCH_DISPATCH_FLOOR_H_
#define SQLOOP_BENCH_DISPATCH_FLOOR_H_

#include "bench/dispatch/fake_io.h"

namespace sqloop::bench::dispatch {

// Makes one iteration's fake calls on `stats` and `poller` (both caller-owned).
void RunFloor(IoStats* stats, FakePoller* poller);

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_FLOOR_H_
