// bench/dispatch/manual_server.h
// -----------------------------------------------------------------------------
//
// The `manual` variant: the fake echo server written as explicit state machines driven by one
// poll loop, the way sqloop itself is written (an enum state per connection, a switch, a FIFO of
// connections that need processing, no allocation per connection). It is the baseline of the
// dispatch group.
//
// Connection state machine:
//
//        accept + register
//               |
//               v
//   +---------------------+   buffer holds '\n'   +---------------------+
//   |  kReceivingRequest  | --------------------> |  kSendingResponse   |
//   +---------------------+                       +---------------------+
//      |  ^ read would block:                        |  ^ write would block:   | all sent
//      v  | wait for readable                        v  | wait for writable    v
//     (parked until Poll() reports it)              (parked)             unregister + remove
//
// Transitions (all made by ManualServer::Process()):
//
//   from               event                          to                 action
//   ReceivingRequest   read returns n bytes, no '\n'  ReceivingRequest   received_bytes += n
//   ReceivingRequest   read returns bytes with '\n'   SendingResponse
//   ReceivingRequest   read would block               ReceivingRequest   can_read = false; park
//   SendingResponse    write returns n, more to send  SendingResponse    sent_bytes += n
//   SendingResponse    write would block              SendingResponse    can_write = false; park
//   SendingResponse    everything sent                (gone)             Unregister, Remove
//
// Invariants (checked by AssertInvariants() on every transition in debug builds):
//   1. sent_bytes <= received_bytes <= kRequestBytesMax.
//   2. In kReceivingRequest, sent_bytes == 0.
//   3. In kSendingResponse, the first received_bytes bytes of the buffer contain '\n'.
//   4. A connection is in the needs-process FIFO at most once: it is pushed when accepted and
//      when a poll reports it, and the FIFO is always drained before the next poll.
//
// Example:
//
//   IoStats stats(false);
//   FakePoller poller(&stats, kConnections + 1);
//   ManualServer server(&stats, &poller);
//   server.Run();  // One iteration: 256 connections served.
#ifndef SQLOOP_BENCH_DISPATCH_MANUAL_SERVER_H_
#define SQLOOP_BENCH_DISPATCH_MANUAL_SERVER_H_

#include <array>
#include <cstdint>

#include "bench/dispatch/containers.h"
#include "bench/dispatch/fake_io.h"

namespace sqloop::bench::dispatch {

class ManualServer {
 public:
  // Sizes the connection slab and the FIFO; Run() allocates nothing.
  ManualServer(IoStats* stats, FakePoller* poller);

  ManualServer(const ManualServer&) = delete;
  ManualServer& operator=(const ManualServer&) = delete;

  // Serves kConnections connections from a fresh listener, then returns.
  void Run();

 private:
  enum class State : uint8_t { kReceivingRequest, kSendingResponse };

  struct Connection {
    FakeStream stream;
    uint32_t registration = 0;
    State state = State::kReceivingRequest;
    bool can_read = false;
    bool can_write = false;
    uint8_t received_bytes = 0;  // kRequestBytesMax fits; checked by invariant 1.
    uint8_t sent_bytes = 0;
    std::array<char, kRequestBytesMax> buffer{};
  };
  static_assert(kRequestBytesMax <= UINT8_MAX, "byte counts are uint8_t");

  // The poller key of the listener; connection `k` is registered under key k + 1.
  static constexpr uintptr_t kListenerKey = 0;

  void AcceptWhileReady(FakeListener& listener);
  void DrainNeedsProcess();
  void DispatchEvents(std::span<const PollEvent> events);

  // Advances one connection until it would block or is done; true when done.
  bool Process(Connection& connection);
  static void AssertInvariants(const Connection& connection);

  IoStats* stats_;
  FakePoller* poller_;
  Slab<Connection> connections_;
  RingQueue<uint32_t> needs_process_;  // Connection keys, FIFO (invariant 4).
  bool can_accept_ = false;
  uint32_t accepts_left_ = 0;
};

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_MANUAL_SERVER_H_
