// io/backend.h
// -----------------------------------------------------------------------------
//
// The interface between the event loop and whatever performs I/O: io_uring, the synchronous
// fallback, or the deterministic simulator. A backend takes caller-owned `Op` descriptors and
// hands the same descriptors back with `result` set; it also owns the clock the loop uses and
// the way the loop sleeps, so the simulator can replace time as well as I/O.
//
// Contract every backend keeps (tests/loop_test.cc holds all three to it):
//   1. Every submitted op comes back exactly once, through Tick(), with `result` >= 0 or -errno.
//   2. Submit() never blocks, never fails and never completes the op inline: completion is
//      only ever observed in a later Tick(). That keeps callbacks out of the submit path.
//   3. Reads/writes on files and sends are completed in full (or a read at EOF); -EINTR and
//      -EAGAIN are retried at most kRetriesMax times before being returned.
//   4. Cancel(op) makes a submitted op come back promptly with -ECANCELED, unless it already
//      finished, in which case it comes back with its real result. Never twice.
//   5. Time is monotonic nanoseconds from NowNs(); nothing in the loop reads another clock.
//   6. Only Wake() is thread-safe. Everything else runs on the loop's thread.
//   7. ReadIfCached() never waits for a device: it answers from memory (the kernel's page
//      cache, or the simulator's model of it) or says the bytes are not there.
//   8. A Tick() starts at most BackendOptions::submit_batch_max ops: io_uring sends no more to
//      the kernel (which runs many of them inline, in the loop's thread, inside the call), the
//      fallback runs no more. The rest wait, in order, for the next Tick(), and a Tick() that
//      leaves ops waiting this way does not block. So one burst of submissions (hundreds of
//      opens granted at once) cannot make one tick as long as all of them. The simulator's
//      ops take no time on the loop's thread: it has no such bound.
//
// Example:
//
//   absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(BackendOptions{});
//   if (!backend.ok()) return backend.status();
//   Op op{.kind = OpKind::kNop};
//   (*backend)->Submit(&op);
//   OpList done;
//   absl::Status status = (*backend)->Tick(/*wait=*/true, kNoDeadline, done);
#ifndef SQLOOP_IO_BACKEND_H_
#define SQLOOP_IO_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sqloop/io/log.h"
#include "sqloop/io/op.h"

namespace sqloop::io {

// Tick() deadline meaning "no deadline".
inline constexpr int64_t kNoDeadline = -1;

// A delay as the timeout, in milliseconds, of a poll-style wait (epoll_wait, a host's loop):
// rounded up, so that a wait never ends before its deadline and spins; 0 for a delay already
// past; at most INT_MAX (24.8 days), since the timeout is an int and a negative one waits for
// ever.
[[nodiscard]] int TimeoutMsFor(int64_t delay_ns);

// -EINTR / -EAGAIN retries per op before the error is handed to the caller. Eight covers the
// transient cases seen in practice (a signal during a syscall, a momentarily full socket buffer
// on the fallback) while keeping a persistent -EAGAIN from spinning forever.
inline constexpr uint8_t kRetriesMax = 8;

// Counters a backend keeps for benchmarks and diagnostics. Never reset.
struct BackendStats {
  uint64_t submitted = 0;        // Ops accepted by Submit().
  uint64_t completed = 0;        // Ops handed back by Tick().
  uint64_t enter_calls = 0;      // Kernel entries (io_uring_enter, epoll_wait, ...).
  uint64_t resubmitted = 0;      // Short transfers and retries sent again.
  uint64_t sq_full_flushes = 0;  // Times the submission queue was full and flushed early.
  uint64_t ring_full_waits = 0;  // Ops that waited in user space: in_flight_max was reached.
  uint64_t batch_deferrals = 0;  // Ticks that left ops for the next by submit_batch_max (8).
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "io_uring", "fallback" or "simulator".
  [[nodiscard]] virtual absl::string_view name() const = 0;

  // Queues `op` for the next Tick(). `op` must stay valid and untouched until it is handed
  // back. Resets the op's bookkeeping fields.
  virtual void Submit(Op* op) = 0;

  // Requests early completion of a submitted op that has not been handed back yet (see the
  // contract, item 4). Checks (aborts) if `op` is not in flight in this backend.
  virtual void Cancel(Op* op) = 0;

  // Sends the queued submissions (up to the batch bound, contract item 8), then appends the
  // ops that finished to `completed` in the order they finished. When `wait` is true, nothing
  // has finished and no submission was left for later, blocks until something finishes,
  // Wake() is called, or NowNs() reaches `deadline_ns` (kNoDeadline: no limit).
  // A non-OK status means the backend itself failed (not an op): the loop reports it.
  [[nodiscard]] virtual absl::Status Tick(bool wait, int64_t deadline_ns, OpList& completed) = 0;

  // Runs `op` at once on the calling thread, setting its result, when running it there waits
  // no longer than the backend's round trip would (a close, a metadata call, a buffered write:
  // the caller waits either way): for Loop::WaitForOp. Returns false (and does nothing) for
  // any other op, and always on the simulator, whose ops all go through its queue. The op is
  // never submitted: it does not count in in_flight or stats.
  [[nodiscard]] virtual bool RunInline(Op& op) {
    (void)op;
    return false;
  }

  // Monotonic nanoseconds; the simulator's virtual time.
  [[nodiscard]] virtual int64_t NowNs() = 0;

  // Thread-safe. Makes a waiting Tick() return (or the next one not wait).
  virtual void Wake() = 0;

  // A descriptor that becomes readable when a Tick() would find completions or a Wake(), for
  // hosts that embed the loop in their own poll/epoll loop. -1 if the backend has none.
  [[nodiscard]] virtual int PollableFd() = 0;
  // Whether the next Tick() has work that no descriptor will signal: submissions not sent yet
  // (left by the batch bound, a cancel request, the remainder of a short transfer) or ops
  // finished in user space and not handed back. A host loop must then not wait.
  [[nodiscard]] virtual bool HasReadyWork() const = 0;

  // Reads up to `length` bytes of the file `fd` at `offset` only if they are in memory (the
  // page cache), synchronously and without waiting for the device (contract item 7). Returns
  // the bytes read: fewer than asked where the next byte is not in memory or at end of file
  // (0 at or past the end); -EAGAIN if the byte at `offset` is not in memory; -EOPNOTSUPP if
  // the file system cannot tell, when the caller must read another way; or -errno. A file on
  // tmpfs or ramfs is memory, so it is read (the kernel cannot say for those).
  // For code that must answer at once if it can (the SQLite VFS's reads) and otherwise fetch
  // the bytes with an ordinary kRead and try again: a kRead brings them into memory.
  [[nodiscard]] virtual int64_t ReadIfCached(int fd, void* buffer, uint32_t length,
                                             uint64_t offset) = 0;

  // Whether `fd` is known to be a file on tmpfs or ramfs, memory only: a ReadIfCached on it
  // found so. A system call on such a file, or on a name in its directory, never waits for a
  // device. False when unknown, and always on the simulator.
  [[nodiscard]] virtual bool InMemoryFile(int fd) const {
    (void)fd;
    return false;
  }
  // Tells the backend that `fd` is a file on tmpfs or ramfs, as its caller knows from another
  // file of the same device: its ReadIfCached reads at once, without first asking for a read
  // that cannot wait (which such a file system refuses, costing a refused read and a statfs),
  // and InMemoryFile(fd) says so. A no-op on the simulator.
  virtual void MarkInMemoryFile(int fd) { (void)fd; }

  // Ops submitted and not yet handed back.
  [[nodiscard]] virtual uint32_t in_flight() const = 0;

  [[nodiscard]] virtual BackendStats stats() const = 0;

  // Called by the loop when a timer fires, so a backend that keeps a trace (the simulator)
  // can fold timer events into it. `sequence` is the timer's submission number.
  virtual void TraceTimerFired(int64_t deadline_ns, uint64_t sequence) {
    (void)deadline_ns;
    (void)sequence;
  }
};

enum class BackendKind {
  kAuto,      // io_uring, or the fallback if the ring cannot be set up (reason is logged).
  kIoUring,   // io_uring or an error.
  kFallback,  // Synchronous files + epoll sockets.
};

struct BackendOptions {
  BackendKind kind = BackendKind::kAuto;
  // Submission queue entries. 256 covers a tick's worth of submissions for the workloads we
  // benchmark (a group commit of 64 writers) with room to spare; more are queued, not lost.
  uint32_t ring_entries = 256;
  // Maximum ops in the kernel at once; more wait in user space, in order. The completion queue
  // gets 2x this many entries (room for one cancel request per op), so it cannot overflow.
  // 1024 is 4x the SQ: headroom for long-lived socket ops (accepts, receives) on a busy host.
  // A host whose long-lived ops can outnumber it (a receive per open connection) must raise
  // it above their count, or new ops wait behind them; the backend logs a warning when ops
  // first have to wait.
  uint32_t in_flight_max = 1024;
  // The most ops a Tick() starts (contract item 8); more wait for the next Tick(). io_uring
  // runs an op it can complete at once (an open of an existing file, a buffered write)
  // inline, in the thread that enters the ring, so a full SQ of a creation burst's opens made
  // one call, and one tick, as long as all of them (docs/architecture.md). 64 still sends a group
  // commit of 64 writers at once. At least 1; io_uring uses at most ring_entries.
  uint32_t submit_batch_max = 64;
  // Honour the SQLOOP_BACKEND environment variable ("io_uring" or "fallback"), which
  // overrides `kind`. Tests use it to run the whole suite on either backend.
  bool read_environment = true;
  LogHook log;
  // Test hook (SQLite's SimulateIOError idea): when non-zero, io_uring setup fails as if the
  // kernel had returned this errno, so tests reach the automatic-fallback path on any machine.
  int uring_setup_errno_for_testing = 0;
};

// Creates the backend `options` asks for. With kAuto, a ring setup refused with EPERM
// (kernel.io_uring_disabled), ENOSYS (no io_uring) or a seccomp denial, or a kernel missing a
// required opcode, selects the fallback and logs which backend was chosen and why.
[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

}  // namespace sqloop::io

#endif  // SQLOOP_IO_BACKEND_H_
