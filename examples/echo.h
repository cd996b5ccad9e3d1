// examples/echo.h
// -----------------------------------------------------------------------------
//
// An echo server written as explicit state machines on the sqloop loop: the worked example of
// docs/state-machines.md. One listener re-arms its accept; each connection reads, writes back
// what it read, and repeats until the peer closes.
//
// Every connection lives in a pool sized at construction: no allocation per connection or per
// operation. When the pool is full the listener stops accepting (backpressure) and resumes when a
// connection closes, so a flood of clients can never exhaust memory or descriptors.
//
// Sockets must be in blocking mode (no SOCK_NONBLOCK): io_uring supplies the asynchrony, and
// the fallback backend never blocks on them (docs/architecture.md).
//
// Example:
//
//   EchoServer server(*loop, listen_fd, /*connections_max=*/64);
//   server.Start();
//   absl::Status status = loop->Run(sqloop::loop::RunMode::kUntilDone);
#ifndef SQLOOP_EXAMPLES_ECHO_H_
#define SQLOOP_EXAMPLES_ECHO_H_

#include <cstdint>
#include <vector>

#include "sqloop/loop/loop.h"

namespace sqloop::examples {

class EchoServer {
 public:
  struct Stats {
    uint64_t accepted = 0;
    uint64_t closed = 0;
    uint64_t bytes_echoed = 0;
    uint64_t accept_pauses = 0;  // Times the pool was full and accepting stopped.
  };

  EchoServer(loop::Loop& loop, int listen_fd, uint32_t connections_max);
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  // Starts accepting. Call once.
  void Start();
  // Stops accepting (the pending accept is cancelled); open connections finish on their own.
  void Stop();

  [[nodiscard]] const Stats& stats() const { return stats_; }
  [[nodiscard]] uint32_t open_connections() const { return open_; }

 private:
  // A connection's states. See docs/state-machines.md for the diagram and transition table.
  enum class State : uint8_t { kFree, kReading, kWriting, kClosing };

  // 4 KiB: one page, large enough that a typical request is echoed in one read and one write.
  static constexpr uint32_t kBufferBytes = 4096;

  struct Connection {
    loop::Completion c;  // One operation in flight at a time: the state says which.
    EchoServer* server = nullptr;
    State state = State::kFree;
    int fd = -1;
    uint32_t filled = 0;  // Bytes in `buffer` read and not yet written back.
    char buffer[kBufferBytes];
  };

  static loop::Action OnAccept(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnConnection(loop::Loop& loop, loop::Completion& c);
  void ArmAccept();
  Connection* TakeFree();
  void Read(Connection& connection);
  void Write(Connection& connection);
  void Close(Connection& connection);
  void AssertInvariants(const Connection& connection) const;

  loop::Loop& loop_;
  int listen_fd_;
  bool accepting_ = false;
  bool stopped_ = false;
  uint32_t open_ = 0;
  loop::Completion accept_;
  std::vector<Connection> pool_;
  Stats stats_;
};

}  // namespace sqloop::examples

#endif  // SQLOOP_EXAMPLES_ECHO_H_
