// tests/db_test_support.h
// -----------------------------------------------------------------------------
//
// Shared pieces of the db/ tests:
//   * DbTestBackends(): the backends the db tests run on: io_uring and the fallback, plus the
//     simulator once it implements what the VFS needs (kFileSize and kFtruncate; probed at run
//     time, so the tests pick it up the day it lands).
//   * RecordingBackend: wraps any backend, records every submission and completion in order
//     (the trace the durable-ack tests check), and injects faults: the Nth operation of a kind
//     completes with -errno instead of running (SQLite's SimulateIOError idea, from outside the
//     production code).
//   * ScratchDir: a fresh directory (real backends) or path prefix (simulator) per test.
//
// Example:
//
//   auto recording = std::make_unique<RecordingBackend>(param.make());
//   RecordingBackend& trace = *recording;
//   loop::Loop loop(std::move(recording), {});
//   trace.FailNth(io::OpKind::kFsync, /*nth=*/1, EIO);
#ifndef SQLOOP_TESTS_DB_TEST_SUPPORT_H_
#define SQLOOP_TESTS_DB_TEST_SUPPORT_H_

#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "sqloop/io/backend.h"
#include "sqloop/loop/loop.h"
#include "tests/test_backends.h"

namespace sqloop::testing {

// io_uring, fallback, and the simulator when it supports the VFS's operations.
std::vector<TestBackend> DbTestBackends();
// gtest parameter names.
std::string BackendParamName(const ::testing::TestParamInfo<TestBackend>& info);

struct TraceEvent {
  enum class Type : uint8_t { kSubmit, kComplete };
  Type type;
  io::OpKind kind;
  int fd;
  uint64_t offset;
  uint32_t length;
  int64_t result;  // kComplete only.
  uint32_t flags;  // The op's flags (O_* for kOpenAt).
  const io::Op* op;
  bool reserve = false;  // A write of the VFS's reserve zeros (internal::kReserveZeros).
  std::string path;      // kSubmit of an op with a path (an open, an unlink): the path.
  bool waited = false;   // kSubmit through Loop::WaitForOp (seen once WatchWaits is called).
};

class RecordingBackend final : public io::Backend {
 public:
  explicit RecordingBackend(std::unique_ptr<io::Backend> inner) : inner_(std::move(inner)) {}

  // The `nth` (1-based, counted from now) submission of `kind` completes with -`error`
  // without running. `persistent`: that one and every later one of the kind. `length`: if not
  // 0, only submissions of exactly that many bytes count; `fd`: if not -1, only those on it.
  void FailNth(io::OpKind kind, uint32_t nth, int error, bool persistent = false,
               uint32_t length = 0, int fd = -1);
  void ClearFaults() { rules_.clear(); }
  // From now on, marks each submission `loop` runs through WaitForOp (TraceEvent::waited): the
  // loop counts such an op just before submitting it.
  void WatchWaits(const loop::Loop& loop) {
    loop_ = &loop;
    waits_seen_ = loop.stats().waited_ops;
  }
  // Submissions of `kind` from now on are held back instead of reaching the backend, so they
  // stay in flight for as long as the test needs (an fsync the database is waiting for, say);
  // ReleaseHeld() submits them. While any is held, run the loop with RunMode::kNoWait.
  void Hold(io::OpKind kind) { hold_ = kind; }
  void ReleaseHeld();
  [[nodiscard]] size_t held() const { return held_ops_.size(); }

  [[nodiscard]] const std::vector<TraceEvent>& events() const { return events_; }
  [[nodiscard]] uint64_t completed_of(io::OpKind kind) const;
  [[nodiscard]] uint64_t submitted_of(io::OpKind kind) const;
  [[nodiscard]] io::Backend& inner() { return *inner_; }

  [[nodiscard]] absl::string_view name() const override { return inner_->name(); }
  void Submit(io::Op* op) override;
  void Cancel(io::Op* op) override { inner_->Cancel(op); }
  [[nodiscard]] absl::Status Tick(bool wait, int64_t deadline_ns, io::OpList& completed) override;
  [[nodiscard]] int64_t NowNs() override { return inner_->NowNs(); }
  void Wake() override { inner_->Wake(); }
  [[nodiscard]] int PollableFd() override { return inner_->PollableFd(); }
  // The inner backend's answer, unless the next `n` probes were told to miss (MissProbes).
  [[nodiscard]] int64_t ReadIfCached(int fd, void* buffer, uint32_t length,
                                     uint64_t offset) override {
    ++probes_;
    if (probes_to_pass_ > 0) {
      --probes_to_pass_;
    } else if (probes_to_miss_ > 0) {
      --probes_to_miss_;
      return -EAGAIN;
    }
    return inner_->ReadIfCached(fd, buffer, length, offset);
  }
  [[nodiscard]] bool InMemoryFile(int fd) const override { return inner_->InMemoryFile(fd); }
  void MarkInMemoryFile(int fd) override {
    ++marked_in_memory_;
    inner_->MarkInMemoryFile(fd);
  }
  // MarkInMemoryFile calls so far: files a caller knew to be on tmpfs before reading them.
  [[nodiscard]] uint64_t marked_in_memory() const { return marked_in_memory_; }
  // The next `n` ReadIfCached calls answer -EAGAIN: bytes evicted from the page cache.
  // With `skip`, the `skip` probes before those answer as usual.
  void MissProbes(uint32_t n, uint32_t skip = 0) {
    probes_to_miss_ = n;
    probes_to_pass_ = skip;
  }
  // ReadIfCached calls so far: what asked the page cache.
  [[nodiscard]] uint64_t probes() const { return probes_; }
  [[nodiscard]] uint32_t in_flight() const override {
    return inner_->in_flight() + static_cast<uint32_t>(held_ops_.size());
  }
  [[nodiscard]] io::BackendStats stats() const override { return inner_->stats(); }
  [[nodiscard]] bool HasReadyWork() const override { return inner_->HasReadyWork(); }
  void TraceTimerFired(int64_t deadline_ns, uint64_t sequence) override {
    inner_->TraceTimerFired(deadline_ns, sequence);
  }

 private:
  struct Rule {
    io::OpKind kind;
    uint32_t countdown;
    int error;
    bool persistent;
    uint32_t length;
    int fd;
  };
  struct Faked {
    io::OpKind kind;
    int error;
  };

  std::unique_ptr<io::Backend> inner_;
  std::vector<Rule> rules_;
  absl::flat_hash_map<const io::Op*, Faked> faked_;
  std::vector<TraceEvent> events_;
  std::optional<io::OpKind> hold_;
  std::vector<io::Op*> held_ops_;
  uint32_t probes_to_miss_ = 0;
  uint32_t probes_to_pass_ = 0;
  uint64_t probes_ = 0;
  uint64_t marked_in_memory_ = 0;
  const loop::Loop* loop_ = nullptr;
  uint64_t waits_seen_ = 0;
};

// A directory for one test's databases: a fresh mkdtemp directory on real backends (removed
// with its files at destruction), "/sqloop-test" on the simulator.
class ScratchDir {
 public:
  // `parent`: where the real directory is made (default $TMPDIR, else /tmp).
  explicit ScratchDir(bool real, const char* parent = nullptr);
  ~ScratchDir();
  [[nodiscard]] std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  [[nodiscard]] const std::string& dir() const { return dir_; }

 private:
  bool real_;
  std::string dir_;
};

// Whether `path` exists on the real file system.
bool RealFileExists(const std::string& path);

}  // namespace sqloop::testing

#endif  // SQLOOP_TESTS_DB_TEST_SUPPORT_H_
