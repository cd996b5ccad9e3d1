// bench/dispatch/fake_io.h
// -----------------------------------------------------------------------------
//
// The fake in-memory I/O of the dispatch workload: a listener, streams and a poller that behave
// exactly like those of the reference Rust study (jkarneges/rust-async-bench, `src/fakeio.rs`),
// so that every variant makes the same I/O calls and only the dispatch mechanism differs.
//
// Behaviour, per object:
//   * FakeListener::Accept: odd-numbered calls would block (-EAGAIN), even-numbered calls return
//     a new stream.
//   * FakeStream: ONE call counter shared by Read and Write; odd-numbered calls would block.
//     Read #2 returns "hello world\n" (12 bytes); Write #2 takes the whole buffer.
//   * FakePoller: Register/Unregister are slab insert/remove; Poll reports every registered
//     handle ready for its full interest.
//   * IoStats counts every call by kind, and in the `+syscalls` variants makes one non-blocking
//     1-byte read() of an empty pipe per call (including Register, Unregister and Poll, as the
//     study does), so a real kernel crossing is added to every fake I/O operation.
//
// Errors follow the house rule: a negative result is `-errno` (kWouldBlock is -EAGAIN).
//
// Everything on the hot path is inline so the compiler sees the same code from the state
// machine and from the coroutines; only the pipe read lives in fake_io.cc.
//
// Example:
//
//   IoStats stats(/*syscalls=*/false);
//   FakePoller poller(&stats, /*capacity=*/kConnections + 1);
//   FakeListener listener(&stats);
//   FakeStream stream;
//   while (listener.Accept(&stream) == kWouldBlock) poller.Poll();
#ifndef SQLOOP_BENCH_DISPATCH_FAKE_IO_H_
#define SQLOOP_BENCH_DISPATCH_FAKE_IO_H_

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bench/dispatch/containers.h"
#include "sqloop/alloc/check.h"

namespace sqloop::bench::dispatch {

// The number of connections per iteration, as in the published Rust results.
inline constexpr uint32_t kConnections = 256;

// Each connection's request buffer, as in the study: room for a request line, zeroed per
// connection.
inline constexpr size_t kRequestBytesMax = 128;

// What every stream's second call (its successful read) returns.
inline constexpr std::string_view kRequest = "hello world\n";

// The "would block" result of every fake I/O call.
inline constexpr int64_t kWouldBlock = -EAGAIN;

// Calls made during one iteration, by kind.
struct CallCounts {
  uint64_t registers = 0;
  uint64_t unregisters = 0;
  uint64_t polls = 0;
  uint64_t accepts = 0;
  uint64_t reads = 0;
  uint64_t writes = 0;

  friend bool operator==(const CallCounts&, const CallCounts&) = default;
};

// The counts every variant must produce per iteration (see workload.h for why).
inline constexpr CallCounts kExpectedCallCounts{.registers = kConnections + 1,
                                                .unregisters = kConnections + 1,
                                                .polls = kConnections + 2,
                                                .accepts = 2 * kConnections,
                                                .reads = 2 * kConnections,
                                                .writes = 2 * kConnections};

// "register=257 unregister=257 poll=258 accept=512 read=512 write=512", the study's format.
[[nodiscard]] std::string ToString(const CallCounts& counts);

// What each connection wrote back, for tests. Recording is off (a null pointer in IoStats) in
// benchmarks; the check costs one predictable branch per write in every variant alike.
class EchoLog {
 public:
  EchoLog() : echoes_(kConnections) {}

  void Record(uint32_t stream_id, std::span<const char> data) {
    SQLOOP_CHECK(stream_id < echoes_.size(), "EchoLog::Record: stream id out of range");
    echoes_[stream_id].append(data.data(), data.size());
  }

  // Bytes written by the `stream_id`-th accepted stream (0-based).
  [[nodiscard]] const std::string& echo(uint32_t stream_id) const { return echoes_[stream_id]; }

  void Clear() {
    for (std::string& echo : echoes_) echo.clear();
  }

 private:
  std::vector<std::string> echoes_;
};

// Per-iteration call counters, plus the empty pipe of the `+syscalls` variants.
class IoStats {
 public:
  // With `syscalls`, opens a pipe whose read end is non-blocking and never written.
  explicit IoStats(bool syscalls);
  ~IoStats();

  IoStats(const IoStats&) = delete;
  IoStats& operator=(const IoStats&) = delete;

  void CountRegister() { Count(counts_.registers); }
  void CountUnregister() { Count(counts_.unregisters); }
  void CountPoll() { Count(counts_.polls); }
  void CountAccept() { Count(counts_.accepts); }
  void CountRead() { Count(counts_.reads); }
  void CountWrite() { Count(counts_.writes); }

  [[nodiscard]] const CallCounts& counts() const { return counts_; }
  void ResetCounts() { counts_ = CallCounts{}; }

  [[nodiscard]] EchoLog* echo_log() const { return echo_log_; }
  void set_echo_log(EchoLog* echo_log) { echo_log_ = echo_log; }

 private:
  void Count(uint64_t& counter) {
    ++counter;
    if (pipe_read_fd_ >= 0) ReadEmptyPipe();
  }

  // One read() syscall that must fail with EAGAIN (checked).
  void ReadEmptyPipe() const;

  CallCounts counts_;
  EchoLog* echo_log_ = nullptr;
  int pipe_read_fd_ = -1;
  int pipe_write_fd_ = -1;
};

// One accepted connection. Trivially copyable (16 bytes) so it moves into a frame for free.
class FakeStream {
 public:
  FakeStream() = default;
  FakeStream(IoStats* stats, uint32_t id) : stats_(stats), id_(id) {}

  // Reads into `buffer`: bytes read, or kWouldBlock.
  [[nodiscard]] int64_t Read(std::span<char> buffer) {
    stats_->CountRead();
    if (++calls_ % 2 == 1) return kWouldBlock;
    SQLOOP_CHECK(buffer.size() >= kRequest.size(), "FakeStream::Read: buffer too small");
    std::memcpy(buffer.data(), kRequest.data(), kRequest.size());
    return static_cast<int64_t>(kRequest.size());
  }

  // Writes `data`: the whole size, or kWouldBlock.
  [[nodiscard]] int64_t Write(std::span<const char> data) {
    stats_->CountWrite();
    if (++calls_ % 2 == 1) return kWouldBlock;
    if (EchoLog* log = stats_->echo_log(); log != nullptr) log->Record(id_, data);
    return static_cast<int64_t>(data.size());
  }

  // The accept sequence number (0-based) of this stream.
  [[nodiscard]] uint32_t id() const { return id_; }

 private:
  IoStats* stats_ = nullptr;
  uint32_t id_ = 0;
  uint32_t calls_ = 0;  // Shared by Read and Write, as in the study.
};

class FakeListener {
 public:
  explicit FakeListener(IoStats* stats) : stats_(stats) {}

  // On success stores a new stream in `*stream` and returns 0; otherwise kWouldBlock.
  [[nodiscard]] int64_t Accept(FakeStream* stream) {
    stats_->CountAccept();
    if (++calls_ % 2 == 1) return kWouldBlock;
    *stream = FakeStream(stats_, accepted_++);
    return 0;
  }

 private:
  IoStats* stats_;
  uint32_t calls_ = 0;
  uint32_t accepted_ = 0;
};

// Interest and readiness bits.
inline constexpr uint8_t kReadable = 1;
inline constexpr uint8_t kWritable = 2;

// A registration as stored by the poller, and an event as reported by Poll(): the caller's key
// (an index or a pointer, like epoll's data) and the interest/readiness bits.
struct PollEvent {
  uintptr_t key = 0;
  uint8_t readiness = 0;
};

class FakePoller {
 public:
  // Room for `capacity` simultaneous registrations; both slabs are sized here, once.
  FakePoller(IoStats* stats, uint32_t capacity)
      : stats_(stats), registrations_(capacity), events_(capacity) {}

  // Returns the registration index to pass to Unregister().
  [[nodiscard]] uint32_t Register(uintptr_t key, uint8_t interest) {
    stats_->CountRegister();
    const uint32_t index = registrations_.Insert();
    registrations_[index] = PollEvent{key, interest};
    return index;
  }

  void Unregister(uint32_t index) {
    stats_->CountUnregister();
    registrations_.Remove(index);
  }

  // Reports every registered handle as ready for its full interest. The span stays valid until
  // the next Poll(); registrations made while it is being walked are not in it.
  [[nodiscard]] std::span<const PollEvent> Poll() {
    stats_->CountPoll();
    size_t count = 0;
    registrations_.ForEach([&](const PollEvent& registration) { events_[count++] = registration; });
    return {events_.data(), count};
  }

  // Called between iterations: every handle must have been unregistered.
  void Reset() { registrations_.Reset(); }

  [[nodiscard]] uint32_t registered() const { return registrations_.size(); }

 private:
  IoStats* stats_;
  Slab<PollEvent> registrations_;
  std::vector<PollEvent> events_;  // Sized to the capacity; Poll() never grows it.
};

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_FAKE_IO_H_
