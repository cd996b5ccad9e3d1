// io/sim_backend.h
// -----------------------------------------------------------------------------
//
// The deterministic simulator: a `Backend` whose clock, disk, network and faults are all
// decided by one seed, so a run can be replayed event for event.
//
// What it simulates:
//   * Time. `NowNs()` is a virtual clock. It moves only inside Tick(): by `tick_cost_ns` per
//     tick (so a host that busy-polls with kNoWait still sees time pass), and, when a waiting
//     Tick finds nothing finished, straight to the next event or the deadline. Nothing sleeps.
//   * Latency and reordering. Each op's completion is an event at now + a latency drawn per op
//     class (file read, file write, fsync, network, other). Ops finish in event order, so
//     ops in flight together come back in whatever order their latencies decide. An op's
//     effect (bytes written to the disk, a file created) happens when its event fires.
//   * Files, through `SimDisk` (io/sim_disk.h): durable vs written bytes, and Crash().
//     kFtruncate is a pending truncate on the disk (a crash may undo it, like a write);
//     kFileSize reports the visible size. Both take `other_latency`.
//   * Sockets, in memory (see "Sockets" below).
//   * Faults, each with its own probability per attempt (`SimFaults`), or drawn from the seed
//     in swarm mode.
//
// How faults meet the Backend contract (io/backend.h):
//   * EIO on read / write / fsync and ENOSPC on write complete the op with that error. A
//     failed fsync also calls SimDisk::FailSync: the file's unsynced writes can never become
//     durable (Linux's behaviour; it is why sqloop never retries an fsync).
//   * Short reads and writes (files) and short sends are not visible to the caller: contract
//     item 3 says they are completed in full, so the simulator does what the real backends do,
//     transfers a part (the part really reaches the disk or the peer), counts a resubmission
//     and sends the remainder as a new attempt with its own latency. That exercises the same
//     remainder bookkeeping (`Op::transferred`) as io_uring. Short *receives* are visible: recv
//     returns what arrived, as the contract allows.
//   * EINTR and EAGAIN are drawn per attempt of a read, write, fsync, send or recv and retried
//     internally (new attempt, new latency, `Op::retries` + 1) up to kRetriesMax times; the
//     next one is returned to the caller.
//
// Sockets: the Op table has no socket/bind/listen kinds, so the simulator adds its own calls:
// `Listen(port)` returns a virtual fd listening on 127.0.0.1:`port`, `Socket()` returns an
// unconnected one for kConnect (to a sockaddr_in whose port is a listening port; the address
// itself is not checked), and `SocketPair()` a connected pair. kAccept, kConnect, kRecv, kSend,
// kPoll and kClose then work as on Linux with a 64 KiB receive buffer per socket: a send waits
// for space, a receive waits for bytes, and both may move fewer bytes than asked per attempt.
// A send to a closed peer fails with -EPIPE; a receive after the peer closed returns 0.
//
// Descriptors are virtual: the lowest free number from 3 up, like POSIX. A descriptor of the
// host process means nothing here (-EBADF). kOpenAt accepts AT_FDCWD (the root "/") or a
// directory fd.
//
// Determinism: every choice comes from one `Prng` seeded with `options.seed`, in an order fixed
// by the virtual event order; the trace hash folds every submission, completion (with its
// result and, for reads, a hash of the bytes), cancel, crash, socket creation, timer firing
// (the loop calls TraceTimerFired) and `Trace()` call, over fixed-width fields. The one real wait:
// a waiting Tick with nothing scheduled and no deadline can only be ended by another thread's
// Wake(), so it blocks on the wake flag (or fails with FailedPrecondition when `hang_is_error`,
// which single-threaded simulations set: there it means the simulated program deadlocked).
//
// Lifecycle of an op inside the simulator:
//
//   Submit --> [queued] --Tick sends--> [scheduled] --event--> attempt --> [ready] --Tick--> caller
//                  |                      ^     |                 |
//                  |                      |     +--waits for a socket--> [parked]
//                  |                      +----short / EINTR / EAGAIN---+   | socket changes:
//                  |                      +-------------------------------- rescheduled
//                  +--Cancel / Crash (any state but ready)--> [ready] with -ECANCELED / -EIO
//
//   transition             function          note
//   queued -> scheduled    SendQueued        latency drawn, trace "submit" folded
//   scheduled -> ready     RunEvent/Finish   the op's effect happens here
//   scheduled -> scheduled RunEvent/Again    partial transfer or a retried EINTR/EAGAIN
//   scheduled -> parked    RunEvent/Park     recv/accept/poll/send must wait for a socket
//   parked -> scheduled    WakeWaiters       the socket changed; the attempt is redone
//   * -> ready             Cancel/Crash      never from ready (contract item 4)
//   ready -> caller        Tick              trace "complete" folded, in finishing order
//
// Example:
//
//   sqloop::io::SimBackendOptions options;
//   options.seed = 1234;
//   options.faults.write_eio = 0.01;
//   auto backend = std::make_unique<sqloop::io::SimBackend>(options);
//   sqloop::io::SimBackend& sim = *backend;
//   auto loop = std::make_unique<sqloop::loop::Loop>(std::move(backend), loop_options);
//   ...
//   sim.Crash();                        // power loss: fds gone, in-flight ops fail with -EIO
//   uint64_t trace = sim.trace_hash();  // equal for two runs of seed 1234
#ifndef SQLOOP_IO_SIM_BACKEND_H_
#define SQLOOP_IO_SIM_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/io/backend.h"
#include "sqloop/io/op.h"
#include "sqloop/io/prng.h"
#include "sqloop/io/sim_disk.h"
#include "sqloop/io/sim_trace.h"

namespace sqloop::io {

namespace sim {
struct Socket;
}  // namespace sim

// A latency range (inclusive). Draws are roughly log-uniform: a doubling bucket between min and max
// is picked uniformly, then a value uniformly inside it, so most ops are fast and a few are slow,
// in integer arithmetic (no exp/log, whose last bits differ between libm versions).
struct SimLatency {
  int64_t min_ns = 0;
  int64_t max_ns = 0;
};

// Per-attempt fault probabilities, in [0, 1]. All zero by default: a plain simulation.
struct SimFaults {
  double read_eio = 0;      // kRead fails with -EIO.
  double write_eio = 0;     // kWrite fails with -EIO (nothing written by that attempt).
  double write_enospc = 0;  // kWrite fails with -ENOSPC (nothing written by that attempt).
  double fsync_eio = 0;     // kFsync fails with -EIO and the file's unsynced writes are lost.
  double short_read = 0;    // A file read attempt moves only part of what it could.
  // ReadIfCached finds the bytes gone from the page cache (evicted under memory pressure) and
  // answers -EAGAIN, so a reader must fetch them again.
  double cache_miss = 0;
  double short_write = 0;  // A file write attempt moves only part.
  double short_net = 0;    // A send or recv attempt moves only part of what it could.
  double eintr = 0;        // An attempt is interrupted (retried up to kRetriesMax).
  double eagain = 0;       // An attempt would block (retried up to kRetriesMax).
  // Metadata operations on files fail with -EIO and change nothing: kOpenAt, kUnlink,
  // kFtruncate and kFileSize (fstat).
  double meta_eio = 0;
  // A file's kClose fails with -EIO after releasing the descriptor, as Linux's close may (the
  // descriptor is gone either way; an error there can mean lost writeback).
  double close_eio = 0;
  // A device that keeps failing: per file write or fsync attempt, the chance that the device
  // breaks; from then on every file write and fsync fails with -EIO (an fsync also loses the
  // file's unsynced writes, SimDisk::FailSync) until Crash(), as a disk that has dropped off
  // the bus does. Reads still work: the page cache keeps answering them.
  double device_failure = 0;
  // Network faults, per attempt of a send, recv or connect on a socket. TCP neither loses nor
  // reorders bytes within a connection, so what reaches the program is: a reset (the
  // connection dies at both ends, unread bytes lost, every op then fails with -ECONNRESET);
  // a lost segment, which the sender's retransmission timeout repairs (the attempt waits
  // `net_retransmit_latency` more); and a partition, during which nothing crosses the network
  // until it heals (below). Reordering across connections comes from the latencies.
  double net_reset = 0;
  double net_drop = 0;
  // A partition: from `partition_start_ns` after the backend's start, for `partition_ns`, every
  // network attempt waits until it heals. 0: none.
  int64_t partition_start_ns = 0;
  int64_t partition_ns = 0;
};

struct SimBackendOptions {
  // The seed of the one generator every choice comes from.
  uint64_t seed = 1;
  // Latency per op class. The defaults are in the range of a local NVMe SSD and loopback TCP,
  // wide enough (a factor of 10-100) that concurrent ops often finish out of order.
  SimLatency file_read_latency{.min_ns = 2'000, .max_ns = 100'000};
  SimLatency file_write_latency{.min_ns = 5'000, .max_ns = 200'000};
  SimLatency fsync_latency{.min_ns = 50'000, .max_ns = 5'000'000};
  SimLatency net_latency{.min_ns = 5'000, .max_ns = 500'000};
  SimLatency other_latency{.min_ns = 500, .max_ns = 20'000};  // openat, close, unlink, ...
  // A nop does no I/O; io_uring completes it at submission. Zero keeps that: nops submitted
  // together finish together in the next Tick (loop tests rely on it). Give it a range to use
  // nops as cheap reordering fodder.
  SimLatency nop_latency{.min_ns = 0, .max_ns = 0};
  // The wait a lost segment costs (SimFaults::net_drop): Linux's minimum retransmission
  // timeout is 200 ms; loopback RTTs make it that, the range gives a few doublings below it.
  SimLatency net_retransmit_latency{.min_ns = 10'000'000, .max_ns = 200'000'000};
  SimFaults faults;
  // Swarm mode: `faults` and the disk's crash probabilities are drawn from the seed (each
  // fault is off for about half the seeds), so a sweep explores different mixes of faults.
  bool swarm = false;
  // Virtual time one Tick() costs. 1 µs is the order of a real io_uring_enter round trip; any
  // positive value guarantees progress to a host that polls with kNoWait.
  int64_t tick_cost_ns = 1'000;
  // Virtual time at construction. Not zero, so code that treats time 0 as "unset" shows up.
  int64_t start_ns = 1'000'000'000;
  // A waiting Tick with nothing scheduled and no deadline fails instead of waiting for Wake().
  bool hang_is_error = false;
  // NEGATIVE CONTROL ONLY: every fsync after the first `fsyncs_before_hang` never completes
  // (until Crash() or Cancel()), like a device that stops answering. -1: never. Tests prove with
  // it that a workload's watchdogs end such a run with a verdict instead of hanging.
  int64_t fsyncs_before_hang = -1;
  SimDiskOptions disk;
};

// What the simulator did, for tests and sqloop_sim's summary.
struct SimStats {
  uint64_t events = 0;             // Attempts executed.
  uint64_t reordered = 0;          // Completions handed back before an earlier submission's.
  uint64_t short_transfers = 0;    // Partial attempts (resubmitted or, for recv, returned).
  uint64_t retries = 0;            // EINTR/EAGAIN attempts that were retried.
  uint64_t injected_errors = 0;    // Ops completed with an injected EIO/ENOSPC/EINTR/EAGAIN.
  uint64_t cache_misses = 0;       // ReadIfCached answers -EAGAIN (not cached, or injected).
  uint64_t metadata_errors = 0;    // Of those, on openat, unlink, ftruncate, fstat or close.
  uint64_t opens_refused = 0;      // Opens failed with -EMFILE by SetDescriptorLimit.
  uint64_t device_failures = 0;    // Times the device broke for good (SimFaults::device_failure).
  uint64_t persistent_errors = 0;  // Of the injected errors, those of the broken device.
  uint64_t net_resets = 0;         // Connections reset (SimFaults::net_reset).
  uint64_t net_drops = 0;          // Network attempts delayed by a retransmission.
  uint64_t net_partitioned = 0;    // Network attempts held back by a partition.
  uint64_t cancelled = 0;          // Ops completed with -ECANCELED by Cancel().
  uint64_t crashes = 0;
  uint64_t crash_failed_ops = 0;  // In-flight ops failed by Crash().
};

class SimBackend final : public Backend {
 public:
  // -EIO: what an op in flight at Crash() completes with. The machine is gone; code above
  // treats it like any other I/O failure and must not acknowledge anything based on it.
  static constexpr int64_t kCrashResult = -5;  // -EIO, spelled out to keep <cerrno> out.
  // Receive buffer per socket. 64 KiB is Linux's default loopback socket buffer order of
  // magnitude and small enough that bulk sends must wait for the reader.
  static constexpr uint32_t kSocketBufferBytes = 64 * 1024;
  // Connections waiting for accept per listening socket (SOMAXCONN's old default). Beyond it
  // kConnect fails with -ECONNREFUSED.
  static constexpr uint32_t kListenBacklogMax = 128;
  // Ops in flight at once. Far beyond any test; reaching it means ops are leaked, so it checks.
  static constexpr uint32_t kInFlightMax = 1U << 20;
  // Ops the bookkeeping is sized for at construction. Beyond it the vectors grow (amortised)
  // and then stay grown, so a steady state makes no heap allocation (tests/loop_test.cc checks
  // this on every backend); 256 matches the default ring size.
  static constexpr uint32_t kFlightsReserved = 256;
  // Trace event tags (the first word of every folded event).
  enum TraceTag : uint64_t {
    kTraceSubmit = 1,
    kTraceComplete,
    kTraceCancel,
    kTraceCrash,
    kTraceUser,
    kTraceSocket,
    kTraceTimer,
  };

  // Uses `disk` if given (e.g. the disk of a previous incarnation of the process, to simulate a
  // restart after Crash()), else a new disk built from `options.disk`.
  explicit SimBackend(SimBackendOptions options, std::shared_ptr<SimDisk> disk = nullptr);
  ~SimBackend() override;

  // ---- Backend -------------------------------------------------------------------------------
  [[nodiscard]] absl::string_view name() const override { return "simulator"; }
  void Submit(Op* op) override;
  void Cancel(Op* op) override;
  [[nodiscard]] absl::Status Tick(bool wait, int64_t deadline_ns, OpList& completed) override;
  [[nodiscard]] int64_t NowNs() override { return now_ns_; }
  void Wake() override;
  // The simulator has no descriptor to poll: everything happens inside Tick().
  [[nodiscard]] int PollableFd() override { return -1; }
  [[nodiscard]] bool HasReadyWork() const override { return !queued_.empty() || !ready_.empty(); }
  // From the disk's page-cache model (io/sim_disk.h); costs no virtual time.
  [[nodiscard]] int64_t ReadIfCached(int fd, void* buffer, uint32_t length,
                                     uint64_t offset) override;
  [[nodiscard]] uint32_t in_flight() const override { return in_flight_; }
  [[nodiscard]] BackendStats stats() const override { return stats_; }
  // The loop reports each timer firing; folded into the trace like any event.
  void TraceTimerFired(int64_t deadline_ns, uint64_t sequence) override;

  // ---- Simulation ----------------------------------------------------------------------------

  // Power loss: fails every op not yet finished with kCrashResult (handed back by the next
  // Tick; ops already finished keep their results), closes every descriptor and socket, and
  // crashes the disk with this backend's generator. The process may go on afterwards as its
  // own restarted successor (new descriptors, same disk).
  void Crash();
  // Folds a caller's event (a timer firing, a workload decision) into the trace hash.
  void Trace(uint64_t event);
  [[nodiscard]] uint64_t trace_hash() const { return trace_.value(); }

  // A listening socket on 127.0.0.1:`port`: its fd, or -EADDRINUSE.
  [[nodiscard]] int Listen(uint16_t port);
  // An unconnected socket for kConnect.
  [[nodiscard]] int Socket();
  // Two connected sockets (like socketpair(2)); fds written to `fds`.
  void SocketPair(int fds[2]);

  [[nodiscard]] SimDisk& disk() { return *disk_; }
  [[nodiscard]] std::shared_ptr<SimDisk> shared_disk() const { return disk_; }
  // The generator, for a workload's own choices (they then become part of the trace's order).
  [[nodiscard]] Prng& prng() { return prng_; }
  // The options in effect: after swarm mode drew the faults.
  [[nodiscard]] const SimBackendOptions& options() const { return options_; }
  [[nodiscard]] const SimStats& sim_stats() const { return sim_stats_; }
  // File descriptors open now (not directories or sockets): a workload that closed everything
  // it opened checks for leaks with it.
  [[nodiscard]] uint32_t open_files() const;
  // Changes the fault probabilities from now on (a test injecting a fault at one step).
  void SetFaults(const SimFaults& faults) { options_.faults = faults; }
  // The process's descriptor limit (RLIMIT_NOFILE) from now on: a kOpenAt fails with -EMFILE,
  // changing nothing, while `files` or more files and directories are open; 0 (the default)
  // lifts it. Unlike the faults it is not a draw: it lasts until the next call, as a host that
  // ran out of descriptors stays out until something closes one.
  void SetDescriptorLimit(uint32_t files) { descriptor_limit_ = files; }
  // Descriptors of files and directories open now: what SetDescriptorLimit counts.
  [[nodiscard]] uint32_t open_descriptors() const;
  // A one-line description of the faults in effect, for summaries and failure reports.
  [[nodiscard]] std::string DescribeFaults() const;

 private:
  enum class Stage : uint8_t { kFree, kQueued, kScheduled, kParked, kReady };
  enum class FdType : uint8_t { kFree, kFile, kDirectory, kSocket };
  struct FdEntry {
    FdType type = FdType::kFree;
    int access = 0;       // O_RDONLY / O_WRONLY / O_RDWR for files.
    uint64_t target = 0;  // Disk node or socket index.
  };
  // One op inside the simulator. Slots are reused through a free list (deterministically).
  struct Flight {
    Op* op = nullptr;
    Stage stage = Stage::kFree;
    uint64_t id = 0;         // Submission number: the op's name in the trace.
    uint64_t event = 0;      // Sequence of its live heap entry; older entries are stale.
    FdEntry target;          // The descriptor, resolved when the op is sent (as io_uring does).
    int64_t parked_on = -1;  // Socket index while parked.
  };
  struct Event {
    int64_t due_ns = 0;
    uint64_t sequence = 0;  // Tie-break: equal times fire in scheduling order.
    uint32_t slot = 0;
  };
  // What one attempt decided.
  enum class Outcome : uint8_t { kDone, kAgain, kPark };
  struct Attempt {
    Outcome outcome = Outcome::kDone;
    int64_t result = 0;
    int64_t socket = -1;    // kPark: the socket to wait on.
    int64_t delay_ns = -1;  // kAgain: the wait before the next attempt; -1: a drawn latency.
  };
  [[nodiscard]] static Attempt Done(int64_t result) { return {Outcome::kDone, result, -1, -1}; }
  [[nodiscard]] static Attempt Again() { return {Outcome::kAgain, 0, -1, -1}; }
  [[nodiscard]] static Attempt AgainAfter(int64_t delay_ns) {
    return {Outcome::kAgain, 0, -1, delay_ns};
  }
  [[nodiscard]] static Attempt ParkOn(int64_t socket) { return {Outcome::kPark, 0, socket, -1}; }

  void DrawSwarm();
  void DrawSwarmMetadataFaults();
  // Whether a metadata op fails now (SimFaults::meta_eio, close_eio). Draws only while
  // `probability` is above 0 (DrawSwarmMetadataFaults says why).
  [[nodiscard]] bool InjectMetadataError(double probability);
  // Whether a file write or fsync fails because the device is broken (SimFaults::
  // device_failure), breaking it first if the draw says so. Draws only while it is on.
  [[nodiscard]] bool DeviceFails();
  // Network faults (SimFaults::net_*, partition_*) for a send, recv or connect attempt: true
  // with `attempt` set when one strikes. Draws only while each is on.
  [[nodiscard]] bool InjectNetFault(Flight& flight, Attempt& attempt);
  void ResetConnection(int64_t socket);
  [[nodiscard]] int64_t DrawLatency(const SimLatency& latency);
  [[nodiscard]] const SimLatency& LatencyOf(OpKind kind) const;
  void SendQueued();
  [[nodiscard]] bool HangsFsync(const Op& op);
  void Schedule(uint32_t slot, int64_t delay_ns);
  [[nodiscard]] bool PopDueEvent(int64_t up_to_ns, uint32_t& slot);
  [[nodiscard]] int64_t NextEventNs();
  void RunDueEvents();
  void RunEvent(uint32_t slot);
  void Finish(uint32_t slot, int64_t result);
  void Park(uint32_t slot, int64_t socket);
  void WakeWaiters(int64_t socket);
  void HandBack(OpList& completed);
  [[nodiscard]] absl::Status WaitForWork(int64_t deadline_ns);
  [[nodiscard]] bool TakeWake();

  // Attempts, one per kind (sim_backend.cc) and per socket kind (sim_backend_net.cc).
  [[nodiscard]] Attempt TryRetryable(Flight& flight, bool& decided);
  [[nodiscard]] Attempt TryFile(Flight& flight);
  [[nodiscard]] Attempt TryRead(Flight& flight);
  [[nodiscard]] Attempt TryWrite(Flight& flight);
  [[nodiscard]] Attempt TryFsync(Flight& flight);
  [[nodiscard]] Attempt TryOpenAt(Flight& flight);
  [[nodiscard]] Attempt TryClose(Flight& flight);
  [[nodiscard]] Attempt TryUnlink(Flight& flight);
  [[nodiscard]] Attempt TryFtruncate(Flight& flight);
  [[nodiscard]] Attempt TryFileSize(Flight& flight);
  [[nodiscard]] Attempt TryAccept(Flight& flight);
  [[nodiscard]] Attempt TryConnect(Flight& flight);
  [[nodiscard]] Attempt TryRecv(Flight& flight);
  [[nodiscard]] Attempt TrySend(Flight& flight);
  [[nodiscard]] Attempt TryPoll(Flight& flight);
  [[nodiscard]] uint32_t PartialCount(uint32_t available, double probability);
  [[nodiscard]] uint32_t SocketEvents(int64_t index) const;
  void CloseSocket(int64_t index);

  [[nodiscard]] int AllocateFd(FdEntry entry);
  [[nodiscard]] FdEntry Resolve(int fd) const;
  [[nodiscard]] int64_t NewSocket();
  [[nodiscard]] sim::Socket& SocketAt(int64_t index);

  SimBackendOptions options_;
  std::shared_ptr<SimDisk> disk_;
  Prng prng_;
  TraceHash trace_;
  int64_t now_ns_ = 0;
  std::atomic<bool> woken_{false};

  std::vector<Flight> flights_;
  std::vector<uint32_t> free_slots_;
  absl::flat_hash_map<const Op*, uint32_t> slot_of_;  // Lookup only; never iterated.
  std::vector<Event> events_;                         // A binary min-heap on (due_ns, sequence).
  uint64_t event_sequence_ = 0;
  OpList queued_;
  OpList ready_;
  uint32_t in_flight_ = 0;
  uint64_t next_op_id_ = 0;
  uint64_t fsyncs_sent_ = 0;  // For fsyncs_before_hang.
  uint64_t highest_completed_id_ = 0;
  uint32_t descriptor_limit_ = 0;  // SetDescriptorLimit's; 0: none.
  bool device_failed_ = false;     // SimFaults::device_failure struck; cleared by Crash().

  std::vector<FdEntry> fds_;
  std::vector<std::unique_ptr<sim::Socket>> sockets_;  // Index = socket id; never reused.
  absl::flat_hash_map<uint16_t, int64_t> listeners_;   // Port -> socket. Lookup only.
  uint16_t next_ephemeral_port_ = 0;

  BackendStats stats_;
  SimStats sim_stats_;
};

}  // namespace sqloop::io

#endif  // SQLOOP_IO_SIM_BACKEND_H_
