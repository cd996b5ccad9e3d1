// The "file_append" crash-checker workload: append records, fsync, acknowledge; crash at a
// random moment; recover in a new process; every acknowledged record must be there, intact.
//
// Record format (little-endian): magic u32 | sequence u32 | payload length u32 |
// checksum u64 over (sequence, payload) | payload. Recovery scans from offset 0 and stops at
// the first record that is incomplete, has the wrong magic, sequence or length, or fails its
// checksum: everything after a torn or missing record is treated as never written, which is
// exactly what an append-only log's recovery does.
//
// The run phase, one state machine on the loop (SQLite-style):
//
//   kOpenDirectory --ok--> kCreateFile --ok--> kSyncDirectory --ok--> kWriteBatch
//   kWriteBatch --every write ok--> kSyncFile --ok: acknowledge the batch--> kWriteBatch | kDone
//   any op error ------------------------------------------------------------> kStopped
//   crash timer, in any state -----------------------------------------------> kCrashed
//
//   transition                  function       invariant afterwards
//   * -> kWriteBatch            StartBatch     no write of an earlier batch is in flight
//   kWriteBatch -> kSyncFile    OnWrite        all writes of the batch returned their length
//   kSyncFile -> kWriteBatch    OnStep         acked_bytes == written bytes (all synced)
//   * -> kStopped               Stop           nothing is ever acknowledged again
//   * -> kCrashed               OnCrashTimer   the oracle was read before and after the crash
//
// The file's creation is made durable (fsync of /data) before anything is acknowledged, as a
// real log must. Nothing is retried after an error: a failed fsync means the outcome of the
// batch is unknown (and, on Linux, that its data may never become durable).
#include <fcntl.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/io/sim_trace.h"
#include "sqloop/loop/loop.h"
#include "tests/sim_workload.h"

namespace sqloop::testing {
namespace {

using loop::Action;
using loop::Completion;
using loop::Loop;

constexpr uint32_t kRecordMagic = 0x41'4c'51'53;  // "SQLA" in file order.
constexpr uint32_t kHeaderBytes = 4 + 4 + 4 + 8;
// Payloads up to 1500 bytes span up to four 512-byte sectors, so torn writes cut records in
// the middle as well as at their edges.
constexpr uint32_t kPayloadBytesMax = 1500;
// Records written concurrently per batch: enough for completions to come back reordered.
constexpr uint32_t kBatchRecordsMax = 8;
// Batches per run: a few hundred ops, so a 200-seed CI sweep stays well under a second.
constexpr uint32_t kBatchesMax = 32;
// The crash comes at a uniform time in [0, 60 ms]. With the default latencies a run of
// kBatchesMax batches takes 10-100 ms, so crashes land before, during and after the work.
constexpr int64_t kCrashWindowNs = 60'000'000;
// Recovery reads the log in chunks of this size.
constexpr uint32_t kRecoveryChunkBytes = 64 * 1024;
// Watchdogs in virtual time: the run ends at its crash (within kCrashWindowNs) and recovery
// reads a log of at most a megabyte without faults (the phase that must make progress: every
// read completes within this bound, or the run fails naming the stuck state). Two seconds is
// far past both.
constexpr int64_t kPhaseBudgetNs = 2'000'000'000;
// Trace event the workload folds when it acknowledges a batch (the ack is what is checked).
constexpr uint64_t kTraceAck = 0xac4;

constexpr char kDirectory[] = "/data";
constexpr char kFileName[] = "append.log";
constexpr char kFilePath[] = "/data/append.log";

void PutU32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
void PutU64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
uint64_t GetLittleEndian(absl::string_view bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[at + static_cast<size_t>(i)]);
  }
  return value;
}

uint64_t RecordChecksum(uint32_t sequence, absl::string_view payload) {
  io::TraceHash hash;
  hash.Fold(sequence);
  hash.FoldBytes(payload);
  uint64_t mixed = hash.value();
  return io::Prng::SplitMix64(mixed);  // FNV's low bits mix poorly; finish with a mixer.
}

// What recovery found: the valid prefix of the log.
struct ScanResult {
  std::vector<uint64_t> checksums;  // Of each valid record, in order.
  uint64_t valid_bytes = 0;
  std::string stop_reason;
};

ScanResult ScanRecords(absl::string_view file) {
  ScanResult scan;
  size_t at = 0;
  for (uint32_t sequence = 0;; ++sequence) {
    if (at == file.size()) {
      scan.stop_reason = "end of file";
      break;
    }
    if (file.size() - at < kHeaderBytes) {
      scan.stop_reason = "incomplete header";
      break;
    }
    const uint64_t magic = GetLittleEndian(file, at, 4);
    const uint64_t found_sequence = GetLittleEndian(file, at + 4, 4);
    const uint64_t length = GetLittleEndian(file, at + 8, 4);
    const uint64_t checksum = GetLittleEndian(file, at + 12, 8);
    if (magic != kRecordMagic || found_sequence != sequence || length == 0 ||
        length > kPayloadBytesMax || file.size() - at - kHeaderBytes < length) {
      scan.stop_reason = "invalid header";
      break;
    }
    if (RecordChecksum(sequence, file.substr(at + kHeaderBytes, length)) != checksum) {
      scan.stop_reason = "checksum mismatch";
      break;
    }
    scan.checksums.push_back(checksum);
    at += kHeaderBytes + length;
    scan.valid_bytes = at;
  }
  return scan;
}

// The run phase (see the file comment for its state machine).
class AppendRun {
 public:
  enum class State : uint8_t {
    kOpenDirectory,
    kCreateFile,
    kSyncDirectory,
    kWriteBatch,
    kSyncFile,
    kDone,
    kStopped,
    kCrashed,
  };

  AppendRun(io::SimBackend& sim, bool check_durability)
      : sim_(sim), check_durability_(check_durability) {
    // Reserved once, so in-flight writes' buffers (which point into it) never move.
    file_.reserve(size_t{kBatchesMax} * kBatchRecordsMax * (kHeaderBytes + kPayloadBytesMax));
    step_.user_data = this;
    step_.callback = &AppendRun::OnStep;
    crash_timer_.user_data = this;
    crash_timer_.callback = &AppendRun::OnCrashTimer;
    for (Completion& write : writes_) {
      write.user_data = this;
      write.callback = &AppendRun::OnWrite;
    }
  }

  void Start(Loop& loop) {
    const int64_t crash_ns = static_cast<int64_t>(sim_.prng().Below(kCrashWindowNs + 1));
    loop.Timer(crash_timer_, absl::Nanoseconds(crash_ns));
    state_ = State::kOpenDirectory;
    step_.op = io::Op{.kind = io::OpKind::kOpenAt,
                      .fd = AT_FDCWD,
                      .flags = O_RDONLY | O_DIRECTORY,
                      .path = kDirectory};
    loop.Submit(step_);
  }

  // The results the checker compares against.
  [[nodiscard]] const std::vector<uint64_t>& acked_checksums() const { return acked_checksums_; }
  [[nodiscard]] uint64_t acked_bytes() const { return acked_bytes_; }
  [[nodiscard]] uint32_t written_records() const { return written_records_; }
  [[nodiscard]] int64_t crash_at_ns() const { return crash_at_ns_; }
  [[nodiscard]] bool loss_possible() const { return loss_possible_; }
  [[nodiscard]] bool loss_happened() const { return loss_happened_; }
  [[nodiscard]] const std::string& stop_reason() const { return stop_reason_; }
  [[nodiscard]] const std::string& durability_violation() const { return durability_violation_; }
  [[nodiscard]] uint32_t batches() const { return batches_; }
  [[nodiscard]] State state_before_crash() const { return state_before_crash_; }

 private:
  static Action OnStep(Loop& loop, Completion& c) {
    auto* run = static_cast<AppendRun*>(c.user_data);
    if (run->state_ == State::kCrashed) return Action::kDisarm;
    const int64_t result = c.result();
    if (result < 0) {
      run->Stop(result);
      return Action::kDisarm;
    }
    switch (run->state_) {
      case State::kOpenDirectory:
        run->directory_fd_ = static_cast<int>(result);
        run->state_ = State::kCreateFile;
        c.op = io::Op{.kind = io::OpKind::kOpenAt,
                      .fd = run->directory_fd_,
                      .flags = O_CREAT | O_EXCL | O_RDWR,
                      .path = kFileName,
                      .mode = 0644};
        return Action::kRearm;
      case State::kCreateFile:
        run->file_fd_ = static_cast<int>(result);
        run->state_ = State::kSyncDirectory;  // The creation must be durable before any ack.
        c.op = io::Op{.kind = io::OpKind::kFsync, .fd = run->directory_fd_};
        return Action::kRearm;
      case State::kSyncDirectory:
        run->StartBatch(loop);
        return Action::kDisarm;
      case State::kSyncFile:
        run->Acknowledge();
        run->StartBatch(loop);
        return Action::kDisarm;
      default:
        SQLOOP_CHECK(false, "file_append: a step completed in a state without a step");
    }
    return Action::kDisarm;
  }

  static Action OnWrite(Loop& loop, Completion& c) {
    auto* run = static_cast<AppendRun*>(c.user_data);
    --run->writes_in_flight_;
    if (run->state_ == State::kCrashed) return Action::kDisarm;
    if (c.result() != c.op.length) run->batch_error_ = c.result() < 0 ? c.result() : -EIO;
    if (run->writes_in_flight_ > 0) return Action::kDisarm;
    if (run->batch_error_ != 0) {
      run->Stop(run->batch_error_);
      return Action::kDisarm;
    }
    run->state_ = State::kSyncFile;
    run->step_.op = io::Op{.kind = io::OpKind::kFsync, .fd = run->file_fd_};
    loop.Submit(run->step_);
    return Action::kDisarm;
  }

  static Action OnCrashTimer(Loop& loop, Completion& c) {
    auto* run = static_cast<AppendRun*>(c.user_data);
    run->crash_at_ns_ = loop.now_ns();
    const std::string acked = run->file_.substr(0, run->acked_bytes_);
    // Oracle, before: acknowledged bytes that only a lucky crash would keep.
    const std::optional<std::string> durable = run->sim_.disk().DurableContent(kFilePath);
    run->loss_possible_ =
        !acked.empty() && (!durable.has_value() || durable->compare(0, acked.size(), acked) != 0);
    run->state_before_crash_ = run->state_;
    run->sim_.Crash();
    run->state_ = State::kCrashed;
    // Oracle, after: what the crash really left.
    const std::optional<std::string> left = run->sim_.disk().VisibleContent(kFilePath);
    run->loss_happened_ =
        !acked.empty() && (!left.has_value() || left->compare(0, acked.size(), acked) != 0);
    return Action::kDisarm;
  }

  void StartBatch(Loop& loop) {
    if (batches_ == kBatchesMax) {
      state_ = State::kDone;
      return;
    }
    ++batches_;
    state_ = State::kWriteBatch;
    batch_error_ = 0;
    batch_records_ = static_cast<uint32_t>(sim_.prng().Range(1, kBatchRecordsMax));
    for (uint32_t i = 0; i < batch_records_; ++i) AppendRecord(i);
    // Every record of the batch is its own write, all in flight at once. Everything before
    // the batch was acknowledged (an error would have stopped the run).
    uint64_t offset = acked_bytes_;
    for (uint32_t i = 0; i < batch_records_; ++i) {
      const auto length = static_cast<uint32_t>(record_ends_[i] - offset);
      writes_[i].op = io::Op{.kind = io::OpKind::kWrite,
                             .fd = file_fd_,
                             .buffer = file_.data() + offset,
                             .length = length,
                             .offset = offset};
      offset = record_ends_[i];
      ++writes_in_flight_;
      loop.Submit(writes_[i]);
    }
  }

  // Encodes record `index` of the batch at the end of `file_`.
  void AppendRecord(uint32_t index) {
    const uint32_t sequence = written_records_++;
    std::string payload(sim_.prng().Range(1, kPayloadBytesMax), '\0');
    for (char& byte : payload) byte = static_cast<char>('a' + sim_.prng().Below(26));
    const uint64_t checksum = RecordChecksum(sequence, payload);
    PutU32(file_, kRecordMagic);
    PutU32(file_, sequence);
    PutU32(file_, static_cast<uint32_t>(payload.size()));
    PutU64(file_, checksum);
    file_ += payload;
    SQLOOP_CHECK(file_.size() <= file_.capacity(), "file_append: the record buffer moved");
    batch_checksums_[index] = checksum;
    record_ends_[index] = file_.size();
  }

  void Acknowledge() {
    for (uint32_t i = 0; i < batch_records_; ++i) acked_checksums_.push_back(batch_checksums_[i]);
    acked_bytes_ = file_.size();
    sim_.Trace(kTraceAck);
    sim_.Trace(acked_checksums_.size());
    // In a correct run the disk must agree that acknowledged means durable; if it does not,
    // the simulator or the ack discipline is broken (reported as a failure with the seed).
    if (check_durability_ && durability_violation_.empty()) {
      const std::optional<std::string> durable = sim_.disk().DurableContent(kFilePath);
      if (!durable.has_value() || durable->compare(0, acked_bytes_, file_, 0, acked_bytes_) != 0) {
        durability_violation_ = "record " + std::to_string(acked_checksums_.size() - 1) +
                                " was acknowledged after a successful fsync but is not durable";
      }
    }
  }

  void Stop(int64_t error) {
    state_ = State::kStopped;
    char reason[64];
    std::snprintf(reason, sizeof(reason), "stopped by error %lld", static_cast<long long>(error));
    stop_reason_ = reason;
  }

  io::SimBackend& sim_;
  const bool check_durability_;
  State state_ = State::kOpenDirectory;
  State state_before_crash_ = State::kOpenDirectory;
  Completion step_;
  Completion crash_timer_;
  Completion writes_[kBatchRecordsMax];
  uint32_t writes_in_flight_ = 0;
  int64_t batch_error_ = 0;
  uint32_t batches_ = 0;
  uint32_t batch_records_ = 0;
  uint64_t batch_checksums_[kBatchRecordsMax] = {};
  uint64_t record_ends_[kBatchRecordsMax] = {};
  int directory_fd_ = -1;
  int file_fd_ = -1;
  std::string file_;  // Every byte ever written, in file order.
  uint32_t written_records_ = 0;
  std::vector<uint64_t> acked_checksums_;
  uint64_t acked_bytes_ = 0;
  int64_t crash_at_ns_ = -1;
  bool loss_possible_ = false;
  bool loss_happened_ = false;
  std::string stop_reason_;
  std::string durability_violation_;
};

const char* StateName(AppendRun::State state) {
  switch (state) {
    case AppendRun::State::kOpenDirectory:
      return "opening /data";
    case AppendRun::State::kCreateFile:
      return "creating the log";
    case AppendRun::State::kSyncDirectory:
      return "syncing /data";
    case AppendRun::State::kWriteBatch:
      return "writing a batch";
    case AppendRun::State::kSyncFile:
      return "syncing the log";
    case AppendRun::State::kDone:
      return "done";
    case AppendRun::State::kStopped:
      return "stopped by an error";
    case AppendRun::State::kCrashed:
      return "crashed";
  }
  return "?";
}

// The recovery phase, in a restarted process: open the log, read it whole, close it.
//
//   kOpen --fd--> kRead --full chunk--> kRead --short chunk (EOF)--> kClose --> kDone
//   kOpen --ENOENT--> kDone (the log never became durable: an empty log)
//   any other error --> kDone with `error` set
class Recovery {
 public:
  enum class State : uint8_t { kOpen, kRead, kClose, kDone };

  Recovery() : chunk_(kRecoveryChunkBytes) {
    c_.user_data = this;
    c_.callback = &Recovery::OnStep;
  }

  void Start(Loop& loop) {
    c_.op =
        io::Op{.kind = io::OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_RDONLY, .path = kFilePath};
    loop.Submit(c_);
  }

  [[nodiscard]] const std::string& content() const { return content_; }
  [[nodiscard]] int64_t error() const { return error_; }
  [[nodiscard]] bool done() const { return state_ == State::kDone; }

 private:
  static Action OnStep(Loop& /*loop*/, Completion& c) {
    auto* r = static_cast<Recovery*>(c.user_data);
    const int64_t result = c.result();
    if (result < 0) {
      if (!(r->state_ == State::kOpen && result == -ENOENT)) r->error_ = result;
      r->state_ = State::kDone;
      return Action::kDisarm;
    }
    switch (r->state_) {
      case State::kOpen:
        r->fd_ = static_cast<int>(result);
        return r->ReadNext(c);
      case State::kRead:
        r->content_.append(r->chunk_.data(), static_cast<size_t>(result));
        if (result == kRecoveryChunkBytes) return r->ReadNext(c);
        r->state_ = State::kClose;
        c.op = io::Op{.kind = io::OpKind::kClose, .fd = r->fd_};
        return Action::kRearm;
      case State::kClose:
      case State::kDone:
        r->state_ = State::kDone;
        return Action::kDisarm;
    }
    return Action::kDisarm;
  }

  Action ReadNext(Completion& c) {
    state_ = State::kRead;
    c.op = io::Op{.kind = io::OpKind::kRead,
                  .fd = fd_,
                  .buffer = chunk_.data(),
                  .length = kRecoveryChunkBytes,
                  .offset = content_.size()};
    return Action::kRearm;
  }

  State state_ = State::kOpen;
  Completion c_;
  std::vector<char> chunk_;
  std::string content_;
  int fd_ = -1;
  int64_t error_ = 0;
};

// The checker: every acknowledged record is among the valid records recovery found, in order
// and unchanged. Returns the violation, or "" if none.
std::string CheckRecovered(const ScanResult& scan, const std::vector<uint64_t>& acked) {
  char text[200];
  if (scan.checksums.size() < acked.size()) {
    std::snprintf(text, sizeof(text),
                  "acknowledged record %zu of %zu is lost: recovery stops at byte %llu (%s)",
                  scan.checksums.size(), acked.size(),
                  static_cast<unsigned long long>(scan.valid_bytes), scan.stop_reason.c_str());
    return text;
  }
  for (size_t i = 0; i < acked.size(); ++i) {
    if (scan.checksums[i] == acked[i]) continue;
    std::snprintf(text, sizeof(text), "acknowledged record %zu came back with other contents", i);
    return text;
  }
  return "";
}

// What the run phase left for the checker and the summary.
struct RunOutcome {
  absl::Status status;
  uint64_t trace_hash = 0;
  std::string faults;
  io::SimDiskStats disk;
};

// The run phase: a process that appends until the crash. `run` must outlive only this call's
// use of the backend; afterwards only its recorded results are read.
RunOutcome RunUntilCrash(std::unique_ptr<io::SimBackend> backend, AppendRun& run) {
  io::SimBackend& sim = *backend;
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  run.Start(*loop);
  RunOutcome outcome;
  outcome.faults = sim.DescribeFaults();
  outcome.status = RunPhase(*loop, "the run phase", kPhaseBudgetNs, [&run] {
    return std::to_string(run.written_records()) + " records written, " +
           std::to_string(run.acked_checksums().size()) + " acknowledged";
  });
  if (!outcome.status.ok()) KillStuckPhase(sim, loop);
  if (loop == nullptr) return outcome;  // Abandoned: `sim` is out of reach.
  outcome.trace_hash = sim.trace_hash();
  outcome.disk = sim.disk().stats();
  return outcome;
}

// A new process on the same disk (RestartedSimulator) reads the log back.
absl::Status Recover(uint64_t seed, const WorkloadOptions& options,
                     std::shared_ptr<io::SimDisk> disk, Recovery& recovery, uint64_t& trace_hash) {
  std::unique_ptr<io::SimBackend> backend = RestartedSimulator(seed, std::move(disk), options);
  io::SimBackend& sim = *backend;
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  recovery.Start(*loop);
  absl::Status status = RunPhase(*loop, "recovery (reading the log back)", kPhaseBudgetNs, [&] {
    return std::to_string(recovery.content().size()) + " bytes read, not done";
  });
  if (!status.ok()) KillStuckPhase(sim, loop);
  if (loop != nullptr) trace_hash = sim.trace_hash();
  return status;
}

std::string Summarize(const AppendRun& run, const ScanResult& scan, const RunOutcome& outcome,
                      int64_t start_ns) {
  char summary[700];
  std::snprintf(
      summary, sizeof(summary),
      "acked %zu of %u records (%llu bytes) in %u batches; crash at +%.3f ms while %s%s%s; "
      "recovered %zu records (%s); crash kept %llu dropped %llu torn %llu vanished %llu; "
      "faults: %s",
      run.acked_checksums().size(), run.written_records(),
      static_cast<unsigned long long>(run.acked_bytes()), run.batches(),
      static_cast<double>(run.crash_at_ns() - start_ns) / 1e6, StateName(run.state_before_crash()),
      run.stop_reason().empty() ? "" : ", ", run.stop_reason().c_str(), scan.checksums.size(),
      scan.stop_reason.c_str(), static_cast<unsigned long long>(outcome.disk.crash_kept),
      static_cast<unsigned long long>(outcome.disk.crash_dropped),
      static_cast<unsigned long long>(outcome.disk.crash_torn),
      static_cast<unsigned long long>(outcome.disk.crash_vanished), outcome.faults.c_str());
  return summary;
}

WorkloadResult RunFileAppend(uint64_t seed, const WorkloadOptions& options) {
  std::unique_ptr<io::SimBackend> backend = FirstSimulator(seed, options, kDirectory);
  const int64_t start_ns = backend->options().start_ns;
  std::shared_ptr<io::SimDisk> disk = backend->shared_disk();
  AppendRun run(*backend, /*check_durability=*/!options.broken_fsync);
  const RunOutcome outcome = RunUntilCrash(std::move(backend), run);

  Recovery recovery;
  uint64_t recovery_trace = 0;
  const absl::Status recovered = Recover(seed, options, disk, recovery, recovery_trace);
  const ScanResult scan = ScanRecords(recovery.content());

  WorkloadResult result;
  if (!outcome.status.ok()) {
    result.failure = std::string(outcome.status.message());
  } else if (!recovered.ok() || recovery.error() != 0 || !recovery.done()) {
    result.failure = "recovery could not read the log: error " + std::to_string(recovery.error()) +
                     " " + std::string(recovered.message());
  } else {
    result.failure = CheckRecovered(scan, run.acked_checksums());
    if (result.failure.empty()) result.failure = run.durability_violation();
  }
  result.ok = result.failure.empty();
  if (result.ok) result.acked_checked = run.acked_checksums().size();
  io::TraceHash trace;
  trace.Fold(outcome.trace_hash);
  trace.Fold(recovery_trace);
  result.trace_hash = trace.value();
  result.loss_possible = run.loss_possible();
  result.loss_happened = run.loss_happened();
  result.summary = Summarize(run, scan, outcome, start_ns);
  return result;
}

}  // namespace

SQLOOP_REGISTER_WORKLOAD(file_append,
                         "append checksummed records, fsync, acknowledge; crash; recover; every "
                         "acknowledged record must be intact",
                         RunFileAppend);

}  // namespace sqloop::testing
