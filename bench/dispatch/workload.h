// bench/dispatch/workload.h
// -----------------------------------------------------------------------------
//
// The dispatch workload: a C++ port of the reference Rust study (jkarneges/rust-async-bench)
// that measures what an async abstraction costs against a hand-written poll loop. One iteration
// is a fake echo server handling kConnections connections over in-memory I/O (fake_io.h); the
// variants differ only in how the work is dispatched:
//
//   kManual     explicit state machines driven by the poll loop (manual_server.h), the baseline
//   kCoro       C++20 coroutines, frames from the global operator new
//   kCoroPool   the same coroutines, frames from a preallocated pool via the promise
//   kCoroLarge  kCoro with a 16 KiB buffer alive across suspension points in each frame
//   kFloor      the same fake I/O calls in a straight line, no dispatch at all (floor.h)
// each with or without `syscalls` (one failing 1-byte read() of an empty pipe per fake I/O call).
//
// Setup (slabs, queues, the frame pool, the pipe) happens in the constructor; RunOnce() is the
// timed iteration and allocates nothing in kManual, kCoroPool and kFloor.
//
// Why every variant makes exactly these calls per iteration
// ----------------------------------------------------------
// register 257, unregister 257, poll 258, accept 512, read 512, write 512. Readiness is tracked
// per object and an object is only called when believed ready; a would-block clears the belief
// and the next poll restores it. Let "round k" be what runs after poll k (round 0 before poll 1):
//
//   round 0:   register the listener; accept #1 would block.
//   round k, 1 <= k <= 256:
//              the listener is ready: accept #2k returns stream k, which is registered and
//              makes read #1 (would block); then, if k < 256, accept #2k+1 would block. After
//              the 256th stream nothing accepts again (the coroutine Listen task ends there).
//              stream k-1 (k >= 2): read #2 returns "hello world\n" (holds '\n'), write #3
//              would block.
//              stream k-2 (k >= 3): write #4 takes all 12 bytes; unregister; done.
//   round 257: stream 255 finishes (write #4), stream 256 reads and its write would block.
//   round 258: stream 256 finishes. No task or connection is left, so no further poll.
//   end:       the listener is unregistered (manual: after the loop; coroutines: when Listen
//              returns after its 256th accept).
//
// So: polls = 258 (rounds 1..258); accepts = 1 + 2 * 255 + 1 = 512; each stream makes 2 reads
// and 2 writes (its one call counter runs 1..4) = 512 each; registers = unregisters = 1 + 256.
// These are exactly the study's counts (its README shows the same structure for 32: poll=34,
// accept=64). The test asserts them for every variant, so no variant can skip work.
//
// Example:
//
//   Workload workload(WorkloadOptions{Variant::kCoroPool, /*syscalls=*/false});
//   const CallCounts counts = workload.RunOnce();
//   SQLOOP_CHECK(counts == kExpectedCallCounts, "...");
#ifndef SQLOOP_BENCH_DISPATCH_WORKLOAD_H_
#define SQLOOP_BENCH_DISPATCH_WORKLOAD_H_

#include <cstddef>
#include <memory>
#include <string>

#include "bench/dispatch/fake_io.h"

namespace sqloop::bench::dispatch {

class ManualServer;
class CoroServer;

enum class Variant { kManual, kCoro, kCoroPool, kCoroLarge, kFloor };

// "manual", "coro", "coro_pool", "coro_large", "floor": the benchmark name's variant part.
[[nodiscard]] const char* VariantName(Variant variant);

struct WorkloadOptions {
  Variant variant = Variant::kManual;
  bool syscalls = false;  // One empty-pipe read() per fake I/O call.
};

class Workload {
 public:
  explicit Workload(WorkloadOptions options);
  ~Workload();

  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  // Runs one iteration and returns the I/O calls it made.
  CallCounts RunOnce();

  // Records what each connection writes back into `echo_log` (null: stop recording).
  void set_echo_log(EchoLog* echo_log) { stats_.set_echo_log(echo_log); }

  // The largest coroutine frame in bytes, when the variant allocates frames from a pool.
  [[nodiscard]] size_t frame_bytes_max() const;

 private:
  IoStats stats_;
  FakePoller poller_;
  std::unique_ptr<ManualServer> manual_;  // At most one of these two is set (none: kFloor).
  std::unique_ptr<CoroServer> coro_;
};

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_WORKLOAD_H_
