// io/sim_socket.h
// -----------------------------------------------------------------------------
//
// Internal to the simulator (namespace sqloop::io::sim): the state of one in-memory socket.
// Only io/sim_backend*.cc include it; tests talk to sockets through descriptors and ops.
//
// States:
//
//   kUnconnected --kConnect--> kConnected --kClose--> kClosed
//   kListening ---kClose----------------------------> kClosed
//   (accepted sockets are born kConnected; SocketPair makes two kConnected at once)
//
// Invariants: a kConnected socket has a peer; `inbox` never exceeds
// SimBackend::kSocketBufferBytes; only a kListening socket has a backlog; a slot is in
// `waiters` exactly while its flight is parked on this socket.
#ifndef SQLOOP_IO_SIM_SOCKET_H_
#define SQLOOP_IO_SIM_SOCKET_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace sqloop::io::sim {

struct Socket {
  enum class State : uint8_t { kUnconnected, kListening, kConnected, kClosed };

  State state = State::kUnconnected;
  uint16_t port = 0;         // Listening port, or the local (ephemeral) port once connected.
  int64_t peer = -1;         // The other end's socket index while connected.
  bool peer_closed = false;  // The peer's descriptor is closed: EOF after `inbox`, EPIPE on send.
  bool reset = false;        // The connection was reset (SimFaults::net_reset): ECONNRESET.
  std::string inbox;         // Bytes received and not yet read, oldest first.
  std::deque<int64_t> backlog;    // kListening: connected sockets not yet accepted.
  std::vector<uint32_t> waiters;  // Flight slots parked until this socket changes.
};

}  // namespace sqloop::io::sim

#endif  // SQLOOP_IO_SIM_SOCKET_H_
