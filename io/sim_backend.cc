// The simulator's core: clock, event heap, op lifecycle, faults, trace, and file operations.
// Sockets are in sim_backend_net.cc.
#include "sqloop/io/sim_backend.h"

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "sqloop/alloc/check.h"
#include "sqloop/io/internal/backends.h"
#include "sqloop/io/sim_socket.h"

namespace sqloop::io {
namespace {

static_assert(SimBackend::kCrashResult == -EIO, "kCrashResult must stay -EIO");

// Swarm-mode ceilings on drawn probabilities, per attempt.
// Errors: at most 1% per attempt, so a workload of a few hundred ops sometimes meets none
// (and runs to the end) and sometimes stops early; a sweep sees both.
constexpr double kSwarmErrorMax = 0.01;
// Short transfers cost nothing but a resubmission, so they may be frequent.
constexpr double kSwarmShortMax = 0.5;
// EINTR/EAGAIN: at 0.3, exhausting kRetriesMax (9 in a row) happens about once in 50,000 ops,
// rare enough not to swamp runs yet reachable by a sweep.
constexpr double kSwarmRetryMax = 0.3;
// A device that breaks for good: at most 0.2% per write or fsync attempt, so in the seeds that
// draw it the device often breaks in the middle of a run of a few hundred writes, and often
// not at all.
constexpr double kSwarmDeviceFailureMax = 0.002;
// Network: a reset in at most 1 % of attempts (a run makes a few hundred), lost segments in at
// most 2 % (each costs up to 200 ms); a partition of up to 100 ms starting in the first 100 ms,
// the span of a typical http run, so it lands before, in and after the traffic.
constexpr double kSwarmNetResetMax = 0.01;
constexpr double kSwarmNetDropMax = 0.02;
constexpr uint64_t kSwarmPartitionStartMaxNs = 100'000'000;
// Page-cache evictions: at most 20 % of probes find their bytes gone, often enough that reads
// restart several times, rarely enough that a read reaches its restart limit only in a sweep.
constexpr double kSwarmCacheMissMax = 0.2;
constexpr uint64_t kSwarmPartitionMaxNs = 100'000'000;

// Orders the event heap as a min-heap on (due_ns, sequence).
struct Later {
  template <typename E>
  bool operator()(const E& a, const E& b) const {
    return a.due_ns != b.due_ns ? a.due_ns > b.due_ns : a.sequence > b.sequence;
  }
};

bool IsRetryable(OpKind kind) {
  return kind == OpKind::kRead || kind == OpKind::kWrite || kind == OpKind::kFsync ||
         kind == OpKind::kRecv || kind == OpKind::kSend;
}

// The path an openat/unlink names: absolute as given, else relative to `base`.
std::string JoinPath(const std::string& base, const char* path) {
  if (path[0] == '/') return path;
  // Appended piece by piece: gcc 12's -Wrestrict misfires on `"/" + std::string(path)` at -O2.
  std::string joined = base;
  if (joined != "/") joined.push_back('/');
  joined.append(path);
  return joined;
}

}  // namespace

SimBackend::SimBackend(SimBackendOptions options, std::shared_ptr<SimDisk> disk)
    : options_(options),
      disk_(disk != nullptr ? std::move(disk) : std::make_shared<SimDisk>(options.disk)),
      prng_(options.seed),
      now_ns_(options.start_ns) {
  SQLOOP_CHECK(options_.tick_cost_ns >= 0, "SimBackendOptions: tick_cost_ns must be >= 0");
  if (options_.swarm) DrawSwarm();
  trace_.Fold(kPrngVersion);
  trace_.Fold(options_.seed);
  fds_.resize(3);  // 0, 1 and 2 stay taken, as stdin/stdout/stderr are in a real process.
  flights_.reserve(kFlightsReserved);
  free_slots_.reserve(kFlightsReserved);
  events_.reserve(kFlightsReserved);
  slot_of_.reserve(kFlightsReserved);
}

SimBackend::~SimBackend() = default;

void SimBackend::DrawSwarm() {
  // Each draw is its own statement: argument evaluation order is unspecified in C++, and the
  // order of draws is the stream.
  auto maybe = [this](double max) {
    const bool on = prng_.Chance(0.5);
    const uint64_t permille = prng_.Below(1001);
    return on ? max * static_cast<double>(permille) / 1000.0 : 0.0;
  };
  SimFaults& f = options_.faults;
  f.read_eio = maybe(kSwarmErrorMax);
  f.write_eio = maybe(kSwarmErrorMax);
  f.write_enospc = maybe(kSwarmErrorMax);
  f.fsync_eio = maybe(kSwarmErrorMax);
  f.short_read = maybe(kSwarmShortMax);
  f.short_write = maybe(kSwarmShortMax);
  f.short_net = maybe(kSwarmShortMax);
  f.eintr = maybe(kSwarmRetryMax);
  f.eagain = maybe(kSwarmRetryMax);
  DrawSwarmMetadataFaults();
  const double keep = prng_.Unit();
  const double tear = prng_.Unit() * (1.0 - keep);
  const double keep_name = prng_.Unit();
  options_.disk.crash_keep_probability = keep;
  options_.disk.crash_tear_probability = tear;
  options_.disk.crash_keep_name_probability = keep_name;
  disk_->SetCrashProbabilities(keep, tear, keep_name);
}

// Fault classes added after the first: drawn from a generator of their own, and each op draws
// for them only while they are on, so every seed that has them off runs exactly as it did
// before they existed (old replay commands and pinned traces hold).
void SimBackend::DrawSwarmMetadataFaults() {
  Prng draws(options_.seed ^ 0x3e7a'da7a'fa17'5eedULL);
  auto maybe = [&draws](double max) {
    const bool on = draws.Chance(0.5);
    const uint64_t permille = draws.Below(1001);
    return on ? max * static_cast<double>(permille) / 1000.0 : 0.0;
  };
  SimFaults& f = options_.faults;
  f.meta_eio = maybe(kSwarmErrorMax);
  f.close_eio = maybe(kSwarmErrorMax);
  // Drawn after the two above from the same generator, so their values stay what they were.
  f.device_failure = maybe(kSwarmDeviceFailureMax);
  f.net_reset = maybe(kSwarmNetResetMax);
  f.net_drop = maybe(kSwarmNetDropMax);
  const bool partition = draws.Chance(0.5);
  const auto partition_start_ns = static_cast<int64_t>(draws.Below(kSwarmPartitionStartMaxNs));
  const auto partition_ns = static_cast<int64_t>(draws.Range(1, kSwarmPartitionMaxNs));
  if (partition) {
    f.partition_start_ns = partition_start_ns;
    f.partition_ns = partition_ns;
  }
  f.cache_miss = maybe(kSwarmCacheMissMax);
}

bool SimBackend::DeviceFails() {
  if (!device_failed_) {
    const double probability = options_.faults.device_failure;
    if (probability <= 0 || !prng_.Chance(probability)) return false;
    device_failed_ = true;
    ++sim_stats_.device_failures;
  }
  ++sim_stats_.injected_errors;
  ++sim_stats_.persistent_errors;
  return true;
}

bool SimBackend::InjectMetadataError(double probability) {
  if (probability <= 0 || !prng_.Chance(probability)) return false;
  ++sim_stats_.injected_errors;
  ++sim_stats_.metadata_errors;
  return true;
}

std::string SimBackend::DescribeFaults() const {
  const SimFaults& f = options_.faults;
  const SimDiskOptions& d = disk_->options();
  char text[640];
  std::snprintf(
      text, sizeof(text),
      "read_eio=%.4f write_eio=%.4f write_enospc=%.4f fsync_eio=%.4f short_read=%.3f "
      "short_write=%.3f short_net=%.3f eintr=%.3f eagain=%.3f crash_keep=%.3f "
      "crash_tear=%.3f crash_keep_name=%.3f meta_eio=%.4f close_eio=%.4f "
      "device_failure=%.4f net_reset=%.4f net_drop=%.4f partition=%lld+%lldms cache_miss=%.3f%s",
      f.read_eio, f.write_eio, f.write_enospc, f.fsync_eio, f.short_read, f.short_write,
      f.short_net, f.eintr, f.eagain, d.crash_keep_probability, d.crash_tear_probability,
      d.crash_keep_name_probability, f.meta_eio, f.close_eio, f.device_failure, f.net_reset,
      f.net_drop, static_cast<long long>(f.partition_start_ns / 1'000'000),
      static_cast<long long>(f.partition_ns / 1'000'000), f.cache_miss,
      d.broken_fsync ? " BROKEN_FSYNC" : "");
  return text;
}

// ---- Time and events --------------------------------------------------------------------------

int64_t SimBackend::DrawLatency(const SimLatency& latency) {
  SQLOOP_CHECK(latency.min_ns >= 0 && latency.min_ns <= latency.max_ns,
               "SimLatency: need 0 <= min_ns <= max_ns");
  const auto min = static_cast<uint64_t>(latency.min_ns);
  const auto max = static_cast<uint64_t>(latency.max_ns);
  if (min == max) return latency.min_ns;
  // Doubling buckets [base, 2 base), [2 base, 4 base), ... up to the one holding max.
  const uint64_t base = std::max<uint64_t>(min, 1);
  uint32_t buckets = 0;
  for (uint64_t edge = base; edge <= max; edge = edge > max / 2 ? max + 1 : edge * 2) ++buckets;
  const auto bucket = static_cast<uint32_t>(prng_.Below(buckets));
  const uint64_t low = bucket == 0 ? min : base << bucket;
  const uint64_t high = bucket + 1 == buckets ? max : (base << (bucket + 1)) - 1;
  return static_cast<int64_t>(prng_.Range(low, high));
}

const SimLatency& SimBackend::LatencyOf(OpKind kind) const {
  switch (kind) {
    case OpKind::kNop:
      return options_.nop_latency;
    case OpKind::kRead:
      return options_.file_read_latency;
    case OpKind::kWrite:
      return options_.file_write_latency;
    case OpKind::kFsync:
      return options_.fsync_latency;
    case OpKind::kAccept:
    case OpKind::kConnect:
    case OpKind::kRecv:
    case OpKind::kSend:
    case OpKind::kPoll:
      return options_.net_latency;
    default:
      return options_.other_latency;
  }
}

void SimBackend::Schedule(uint32_t slot, int64_t delay_ns) {
  Flight& flight = flights_[slot];
  flight.stage = Stage::kScheduled;
  flight.event = ++event_sequence_;
  events_.push_back(Event{.due_ns = now_ns_ + delay_ns, .sequence = flight.event, .slot = slot});
  std::push_heap(events_.begin(), events_.end(), Later{});
}

int64_t SimBackend::NextEventNs() {
  // Entries of flights that were cancelled, crashed or rescheduled are stale: drop them.
  while (!events_.empty()) {
    const Event& top = events_.front();
    const Flight& flight = flights_[top.slot];
    if (flight.stage == Stage::kScheduled && flight.event == top.sequence) return top.due_ns;
    std::pop_heap(events_.begin(), events_.end(), Later{});
    events_.pop_back();
  }
  return -1;
}

bool SimBackend::PopDueEvent(int64_t up_to_ns, uint32_t& slot) {
  const int64_t due_ns = NextEventNs();
  if (due_ns < 0 || due_ns > up_to_ns) return false;
  slot = events_.front().slot;
  std::pop_heap(events_.begin(), events_.end(), Later{});
  events_.pop_back();
  return true;
}

void SimBackend::RunDueEvents() {
  uint32_t slot = 0;
  while (PopDueEvent(now_ns_, slot)) RunEvent(slot);
}

// ---- Op lifecycle -----------------------------------------------------------------------------

void SimBackend::Submit(Op* op) {
  SQLOOP_CHECK(op != nullptr && op->next == nullptr,
               "SimBackend::Submit: the op is null or still linked in a list");
  SQLOOP_CHECK(!slot_of_.contains(op), "SimBackend::Submit: the op is already in flight");
  SQLOOP_CHECK(in_flight_ < kInFlightMax, "SimBackend::Submit: kInFlightMax ops in flight");
  internal::ResetForSubmit(*op);
  uint32_t slot = 0;
  if (free_slots_.empty()) {
    slot = static_cast<uint32_t>(flights_.size());
    flights_.emplace_back();
    // Every slot may be free at once; growing here keeps HandBack from ever allocating.
    free_slots_.reserve(flights_.capacity());
  } else {
    slot = free_slots_.back();
    free_slots_.pop_back();
  }
  flights_[slot] = Flight{};
  flights_[slot].op = op;
  flights_[slot].stage = Stage::kQueued;
  flights_[slot].id = ++next_op_id_;
  slot_of_[op] = slot;
  queued_.PushBack(op);
  ++in_flight_;
  ++stats_.submitted;

  trace_.Fold(kTraceSubmit);
  trace_.Fold(flights_[slot].id);
  trace_.Fold(static_cast<uint64_t>(op->kind));
  trace_.FoldSigned(op->fd);
  trace_.Fold(op->length);
  trace_.Fold(op->flags);
  trace_.Fold(op->offset);
  trace_.Fold(op->mode);
  trace_.Fold(op->path == nullptr ? 0 : TraceHash::Of(op->path));
  if ((op->kind == OpKind::kWrite || op->kind == OpKind::kSend) && op->buffer != nullptr) {
    trace_.Fold(TraceHash::Of(absl::string_view(static_cast<const char*>(op->buffer), op->length)));
  }
}

void SimBackend::SendQueued() {
  while (Op* op = queued_.PopFront()) {
    const uint32_t slot = slot_of_.at(op);
    Flight& flight = flights_[slot];
    flight.target = Resolve(op->fd);
    if (HangsFsync(*op)) {
      flight.stage = Stage::kParked;  // On no socket (parked_on -1): only Crash or Cancel end it.
      flight.parked_on = -1;
      continue;
    }
    const bool on_socket = flight.target.type == FdType::kSocket;
    Schedule(slot, DrawLatency(on_socket ? options_.net_latency : LatencyOf(op->kind)));
  }
}

bool SimBackend::HangsFsync(const Op& op) {
  if (op.kind != OpKind::kFsync || options_.fsyncs_before_hang < 0) return false;
  return fsyncs_sent_++ >= static_cast<uint64_t>(options_.fsyncs_before_hang);
}

void SimBackend::RunEvent(uint32_t slot) {
  ++sim_stats_.events;
  Flight& flight = flights_[slot];
  bool decided = false;
  Attempt attempt = TryRetryable(flight, decided);
  if (!decided) decided = InjectNetFault(flight, attempt);
  if (!decided) {
    switch (flight.op->kind) {
      case OpKind::kNop:
        attempt = Done(0);
        break;
      case OpKind::kAccept:
        attempt = TryAccept(flight);
        break;
      case OpKind::kConnect:
        attempt = TryConnect(flight);
        break;
      case OpKind::kRecv:
        attempt = TryRecv(flight);
        break;
      case OpKind::kSend:
        attempt = TrySend(flight);
        break;
      case OpKind::kPoll:
        attempt = TryPoll(flight);
        break;
      default:
        attempt = TryFile(flight);
        break;
    }
  }
  switch (attempt.outcome) {
    case Outcome::kDone:
      Finish(slot, attempt.result);
      break;
    case Outcome::kAgain: {
      ++stats_.resubmitted;
      const bool on_socket = flight.target.type == FdType::kSocket;
      Schedule(slot, attempt.delay_ns >= 0 ? attempt.delay_ns
                                           : DrawLatency(on_socket ? options_.net_latency
                                                                   : LatencyOf(flight.op->kind)));
      break;
    }
    case Outcome::kPark:
      Park(slot, attempt.socket);
      break;
  }
}

SimBackend::Attempt SimBackend::TryRetryable(Flight& flight, bool& decided) {
  decided = false;
  Op& op = *flight.op;
  if (!IsRetryable(op.kind)) return Attempt{};
  // Both draws always happen (Prng invariant 2: enabling one fault does not shift the stream).
  const bool interrupted = prng_.Chance(options_.faults.eintr);
  const bool would_block = prng_.Chance(options_.faults.eagain);
  if (!interrupted && !would_block) return Attempt{};
  decided = true;
  if (op.retries < kRetriesMax) {
    ++op.retries;
    ++sim_stats_.retries;
    return Again();
  }
  ++sim_stats_.injected_errors;
  return Done(interrupted ? -EINTR : -EAGAIN);
}

void SimBackend::Finish(uint32_t slot, int64_t result) {
  Flight& flight = flights_[slot];
  flight.op->result = result;
  flight.stage = Stage::kReady;
  flight.parked_on = -1;
  ready_.PushBack(flight.op);
}

void SimBackend::HandBack(OpList& completed) {
  while (Op* op = ready_.PopFront()) {
    const auto it = slot_of_.find(op);
    const uint32_t slot = it->second;
    const Flight& flight = flights_[slot];
    trace_.Fold(kTraceComplete);
    trace_.Fold(flight.id);
    trace_.FoldSigned(op->result);
    trace_.FoldSigned(now_ns_);
    const bool reads = op->kind == OpKind::kRead || op->kind == OpKind::kRecv;
    if (reads && op->result > 0 && op->buffer != nullptr) {
      const auto bytes = static_cast<size_t>(std::min<int64_t>(op->result, op->length));
      trace_.Fold(TraceHash::Of(absl::string_view(static_cast<const char*>(op->buffer), bytes)));
    }
    if (flight.id < highest_completed_id_) {
      ++sim_stats_.reordered;
    } else {
      highest_completed_id_ = flight.id;
    }
    flights_[slot] = Flight{};
    free_slots_.push_back(slot);
    slot_of_.erase(it);
    --in_flight_;
    ++stats_.completed;
    completed.PushBack(op);
  }
}

void SimBackend::Cancel(Op* op) {
  const auto it = slot_of_.find(op);
  SQLOOP_CHECK(it != slot_of_.end(), "SimBackend::Cancel: the op is not in flight here");
  const uint32_t slot = it->second;
  Flight& flight = flights_[slot];
  trace_.Fold(kTraceCancel);
  trace_.Fold(flight.id);
  op->cancel_requested = true;
  switch (flight.stage) {
    case Stage::kReady:
      return;  // Finished already: it comes back with its real result.
    case Stage::kQueued:
      queued_.Remove(op);
      break;
    case Stage::kScheduled:
      break;  // Its heap entry goes stale with the stage change.
    case Stage::kParked: {
      if (flight.parked_on < 0) break;  // A hung fsync (fsyncs_before_hang) waits on nothing.
      std::vector<uint32_t>& waiters = SocketAt(flight.parked_on).waiters;
      waiters.erase(std::find(waiters.begin(), waiters.end(), slot));
      break;
    }
    case Stage::kFree:
      SQLOOP_CHECK(false, "SimBackend::Cancel: a free slot is mapped");
  }
  ++sim_stats_.cancelled;
  Finish(slot, -ECANCELED);
}

absl::Status SimBackend::Tick(bool wait, int64_t deadline_ns, OpList& completed) {
  now_ns_ += options_.tick_cost_ns;
  SendQueued();
  RunDueEvents();
  if (wait && ready_.empty()) {
    absl::Status status = WaitForWork(deadline_ns);
    if (!status.ok()) return status;
  }
  HandBack(completed);
  return absl::OkStatus();
}

absl::Status SimBackend::WaitForWork(int64_t deadline_ns) {
  if (TakeWake()) return absl::OkStatus();
  while (ready_.empty()) {
    const int64_t next_ns = NextEventNs();
    if (next_ns >= 0 && (deadline_ns == kNoDeadline || next_ns <= deadline_ns)) {
      now_ns_ = std::max(now_ns_, next_ns);  // The jump: nothing happens in between.
      RunDueEvents();
      continue;
    }
    if (deadline_ns != kNoDeadline) {
      now_ns_ = std::max(now_ns_, deadline_ns);
      return absl::OkStatus();
    }
    if (options_.hang_is_error) {
      return absl::FailedPreconditionError(
          "simulator: Tick(wait) with nothing scheduled and no deadline would wait forever; "
          "the simulated program is deadlocked (ops parked on sockets nobody serves?)");
    }
    // Only another thread can end this wait: block on the wake flag, as the real backends
    // block in the kernel.
    woken_.wait(false, std::memory_order_acquire);
    static_cast<void>(TakeWake());
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

void SimBackend::Wake() {
  woken_.store(true, std::memory_order_release);
  woken_.notify_one();
}

bool SimBackend::TakeWake() { return woken_.exchange(false, std::memory_order_acq_rel); }

void SimBackend::Trace(uint64_t event) {
  trace_.Fold(kTraceUser);
  trace_.Fold(event);
}

void SimBackend::TraceTimerFired(int64_t deadline_ns, uint64_t sequence) {
  trace_.Fold(kTraceTimer);
  trace_.FoldSigned(deadline_ns);
  trace_.Fold(sequence);
}

void SimBackend::Crash() {
  trace_.Fold(kTraceCrash);
  trace_.FoldSigned(now_ns_);
  ++sim_stats_.crashes;
  while (queued_.PopFront() != nullptr) {
  }
  // Fail what has not finished in submission order, so the order is independent of slots.
  std::vector<std::pair<uint64_t, uint32_t>> unfinished;
  for (uint32_t slot = 0; slot < flights_.size(); ++slot) {
    const Stage stage = flights_[slot].stage;
    if (stage == Stage::kQueued || stage == Stage::kScheduled || stage == Stage::kParked) {
      unfinished.emplace_back(flights_[slot].id, slot);
    }
  }
  std::sort(unfinished.begin(), unfinished.end());
  for (const auto& [id, slot] : unfinished) {
    ++sim_stats_.crash_failed_ops;
    Finish(slot, kCrashResult);
  }
  events_.clear();
  sockets_.clear();
  listeners_.clear();
  fds_.assign(3, FdEntry{});
  device_failed_ = false;  // Power cycled: the device answers again.
  disk_->Crash(prng_);
  // What the crash decided is part of the run: fold its tallies (cumulative, fixed-width).
  const SimDiskStats& disk = disk_->stats();
  trace_.Fold(disk.crash_kept);
  trace_.Fold(disk.crash_dropped);
  trace_.Fold(disk.crash_torn);
  trace_.Fold(disk.crash_vanished);
  trace_.Fold(disk_->used_bytes());
}

// ---- Descriptors ------------------------------------------------------------------------------

int SimBackend::AllocateFd(FdEntry entry) {
  for (size_t fd = 3; fd < fds_.size(); ++fd) {
    if (fds_[fd].type == FdType::kFree) {
      fds_[fd] = entry;
      return static_cast<int>(fd);
    }
  }
  fds_.push_back(entry);
  return static_cast<int>(fds_.size() - 1);
}

uint32_t SimBackend::open_files() const {
  uint32_t open = 0;
  for (const FdEntry& entry : fds_) open += entry.type == FdType::kFile ? 1 : 0;
  return open;
}

uint32_t SimBackend::open_descriptors() const {
  uint32_t open = 0;
  for (const FdEntry& entry : fds_) {
    open += entry.type == FdType::kFile || entry.type == FdType::kDirectory ? 1 : 0;
  }
  return open;
}

SimBackend::FdEntry SimBackend::Resolve(int fd) const {
  if (fd < 0 || static_cast<size_t>(fd) >= fds_.size()) return FdEntry{};
  return fds_[static_cast<size_t>(fd)];
}

// ---- File operations --------------------------------------------------------------------------

int64_t SimBackend::ReadIfCached(int fd, void* buffer, uint32_t length, uint64_t offset) {
  const FdEntry target = Resolve(fd);
  if (target.type == FdType::kDirectory) return -EISDIR;
  if (target.type != FdType::kFile || target.access == O_WRONLY) return -EBADF;
  int64_t got = disk_->ReadCached(target.target, buffer, length, offset);
  // Draws only while the fault is on, so seeds without it keep their stream.
  if (got > 0 && options_.faults.cache_miss > 0 && prng_.Chance(options_.faults.cache_miss)) {
    got = -EAGAIN;
  }
  if (got == -EAGAIN) ++sim_stats_.cache_misses;
  return got;
}

SimBackend::Attempt SimBackend::TryFile(Flight& flight) {
  switch (flight.op->kind) {
    case OpKind::kRead:
      return TryRead(flight);
    case OpKind::kWrite:
      return TryWrite(flight);
    case OpKind::kFsync:
      return TryFsync(flight);
    case OpKind::kOpenAt:
      return TryOpenAt(flight);
    case OpKind::kClose:
      return TryClose(flight);
    case OpKind::kUnlink:
      return TryUnlink(flight);
    case OpKind::kFtruncate:
      return TryFtruncate(flight);
    case OpKind::kFileSize:
      return TryFileSize(flight);
    default:
      return Done(-EINVAL);
  }
}

uint32_t SimBackend::PartialCount(uint32_t available, double probability) {
  const bool partial = prng_.Chance(probability);
  if (!partial || available < 2) return available;
  ++sim_stats_.short_transfers;
  return static_cast<uint32_t>(1 + prng_.Below(available - 1));
}

SimBackend::Attempt SimBackend::TryRead(Flight& flight) {
  const FdEntry& target = flight.target;
  if (target.type == FdType::kSocket) return TryRecv(flight);
  if (target.type == FdType::kDirectory) return Done(-EISDIR);
  if (target.type != FdType::kFile || target.access == O_WRONLY) return Done(-EBADF);
  if (prng_.Chance(options_.faults.read_eio)) {
    ++sim_stats_.injected_errors;
    return Done(-EIO);
  }
  Op& op = *flight.op;
  const uint32_t want = PartialCount(op.length - op.transferred, options_.faults.short_read);
  const int64_t got = disk_->Read(target.target, static_cast<char*>(op.buffer) + op.transferred,
                                  want, op.offset + op.transferred);
  if (got < 0) return Done(got);
  op.transferred += static_cast<uint32_t>(got);
  // Fewer bytes than asked is end of file; the whole length is done. Anything else was short.
  if (op.transferred == op.length || got < want) return Done(op.transferred);
  return Again();
}

SimBackend::Attempt SimBackend::TryWrite(Flight& flight) {
  const FdEntry& target = flight.target;
  if (target.type == FdType::kSocket) return TrySend(flight);
  if (target.type != FdType::kFile || target.access == O_RDONLY) return Done(-EBADF);
  if (DeviceFails()) return Done(-EIO);
  const bool eio = prng_.Chance(options_.faults.write_eio);
  const bool enospc = prng_.Chance(options_.faults.write_enospc);
  if (eio || enospc) {
    ++sim_stats_.injected_errors;
    return Done(eio ? -EIO : -ENOSPC);
  }
  Op& op = *flight.op;
  const uint32_t count = PartialCount(op.length - op.transferred, options_.faults.short_write);
  const int64_t written =
      disk_->Write(target.target, static_cast<const char*>(op.buffer) + op.transferred, count,
                   op.offset + op.transferred);
  if (written < 0) return Done(written);
  op.transferred += static_cast<uint32_t>(written);
  if (op.transferred == op.length) return Done(op.length);
  return Again();
}

SimBackend::Attempt SimBackend::TryFsync(Flight& flight) {
  const FdEntry& target = flight.target;
  if (target.type == FdType::kSocket) return Done(-EINVAL);
  if (target.type == FdType::kFree) return Done(-EBADF);
  if (target.type == FdType::kFile && DeviceFails()) {
    disk_->FailSync(target.target);
    return Done(-EIO);
  }
  if (prng_.Chance(options_.faults.fsync_eio)) {
    ++sim_stats_.injected_errors;
    disk_->FailSync(target.target);
    return Done(-EIO);
  }
  return Done(disk_->Sync(target.target));
}

SimBackend::Attempt SimBackend::TryOpenAt(Flight& flight) {
  const Op& op = *flight.op;
  if (op.path == nullptr || op.path[0] == '\0') return Done(-ENOENT);
  std::string base = "/";
  if (op.fd != AT_FDCWD && op.path[0] != '/') {
    if (flight.target.type == FdType::kFree) return Done(-EBADF);
    if (flight.target.type != FdType::kDirectory) return Done(-ENOTDIR);
    base = disk_->DirectoryPath(flight.target.target);
  }
  if (InjectMetadataError(options_.faults.meta_eio)) return Done(-EIO);
  if (descriptor_limit_ != 0 && open_descriptors() >= descriptor_limit_) {
    ++sim_stats_.opens_refused;
    return Done(-EMFILE);
  }
  const int64_t node = disk_->Open(JoinPath(base, op.path), static_cast<int>(op.flags), op.mode);
  if (node < 0) return Done(node);
  const bool directory = disk_->IsDirectory(static_cast<uint64_t>(node));
  const int fd = AllocateFd(FdEntry{.type = directory ? FdType::kDirectory : FdType::kFile,
                                    .access = static_cast<int>(op.flags) & O_ACCMODE,
                                    .target = static_cast<uint64_t>(node)});
  return Done(fd);
}

SimBackend::Attempt SimBackend::TryClose(Flight& flight) {
  const int fd = flight.op->fd;
  const FdEntry entry = Resolve(fd);
  if (fd < 3 || entry.type == FdType::kFree) return Done(-EBADF);
  fds_[static_cast<size_t>(fd)] = FdEntry{};
  if (entry.type == FdType::kSocket) {
    CloseSocket(static_cast<int64_t>(entry.target));
    return Done(0);
  }
  disk_->Release(entry.target);
  return Done(InjectMetadataError(options_.faults.close_eio) ? -EIO : 0);
}

SimBackend::Attempt SimBackend::TryUnlink(Flight& flight) {
  const Op& op = *flight.op;
  if (op.path == nullptr || op.path[0] == '\0') return Done(-ENOENT);
  std::string base = "/";
  if (op.fd != AT_FDCWD && op.path[0] != '/') {
    if (flight.target.type == FdType::kFree) return Done(-EBADF);
    if (flight.target.type != FdType::kDirectory) return Done(-ENOTDIR);
    base = disk_->DirectoryPath(flight.target.target);
  }
  const bool remove_directory = (op.flags & AT_REMOVEDIR) != 0;
  if (InjectMetadataError(options_.faults.meta_eio)) return Done(-EIO);
  return Done(disk_->Unlink(JoinPath(base, op.path), remove_directory));
}

// ftruncate(2): a pending truncate on the disk (a crash may drop it), like a write.
SimBackend::Attempt SimBackend::TryFtruncate(Flight& flight) {
  const FdEntry& target = flight.target;
  if (target.type == FdType::kFree) return Done(-EBADF);
  if (target.type != FdType::kFile || target.access == O_RDONLY) return Done(-EINVAL);
  if (InjectMetadataError(options_.faults.meta_eio)) return Done(-EIO);
  return Done(disk_->Truncate(target.target, flight.op->offset));
}

// fstat(2)'s st_size: the visible size. Sockets report 0, as they do on Linux.
SimBackend::Attempt SimBackend::TryFileSize(Flight& flight) {
  const FdEntry& target = flight.target;
  if (target.type == FdType::kFree) return Done(-EBADF);
  if (target.type == FdType::kSocket) return Done(0);
  if (InjectMetadataError(options_.faults.meta_eio)) return Done(-EIO);
  return Done(static_cast<int64_t>(disk_->SizeBytes(target.target)));
}

}  // namespace sqloop::io
