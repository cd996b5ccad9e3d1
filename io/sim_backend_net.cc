// The simulator's in-memory sockets: Listen/Socket/SocketPair and the kAccept, kConnect,
// kRecv, kSend and kPoll attempts. An attempt that cannot proceed parks its op on a socket; any
// change to a socket reschedules the ops parked on it and on its peer, which then try again.
// Spurious wake-ups are harmless (the attempt parks again) and keep the rule simple.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "sqloop/alloc/check.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/io/sim_socket.h"

namespace sqloop::io {
namespace {

// Local ports handed to connecting sockets: Linux's default ephemeral range starts here.
constexpr uint16_t kEphemeralPortFirst = 32768;

// Events a regular file or directory always reports: it is always readable and writable.
constexpr uint32_t kFileEvents = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;

}  // namespace

sim::Socket& SimBackend::SocketAt(int64_t index) {
  SQLOOP_CHECK(index >= 0 && static_cast<size_t>(index) < sockets_.size(),
               "SimBackend: a socket index is out of range");
  return *sockets_[static_cast<size_t>(index)];
}

int64_t SimBackend::NewSocket() {
  sockets_.push_back(std::make_unique<sim::Socket>());
  return static_cast<int64_t>(sockets_.size() - 1);
}

int SimBackend::Listen(uint16_t port) {
  trace_.Fold(kTraceSocket);
  trace_.Fold(port);
  if (listeners_.contains(port)) return -EADDRINUSE;
  const int64_t index = NewSocket();
  SocketAt(index).state = sim::Socket::State::kListening;
  SocketAt(index).port = port;
  listeners_[port] = index;
  return AllocateFd(
      FdEntry{.type = FdType::kSocket, .access = O_RDWR, .target = static_cast<uint64_t>(index)});
}

int SimBackend::Socket() {
  trace_.Fold(kTraceSocket);
  const int64_t index = NewSocket();
  return AllocateFd(
      FdEntry{.type = FdType::kSocket, .access = O_RDWR, .target = static_cast<uint64_t>(index)});
}

void SimBackend::SocketPair(int fds[2]) {
  trace_.Fold(kTraceSocket);
  const int64_t a = NewSocket();
  const int64_t b = NewSocket();
  for (const auto& [self, peer] : {std::pair{a, b}, std::pair{b, a}}) {
    SocketAt(self).state = sim::Socket::State::kConnected;
    SocketAt(self).peer = peer;
    SocketAt(self).port = static_cast<uint16_t>(kEphemeralPortFirst + next_ephemeral_port_++);
  }
  fds[0] = AllocateFd(
      FdEntry{.type = FdType::kSocket, .access = O_RDWR, .target = static_cast<uint64_t>(a)});
  fds[1] = AllocateFd(
      FdEntry{.type = FdType::kSocket, .access = O_RDWR, .target = static_cast<uint64_t>(b)});
}

void SimBackend::Park(uint32_t slot, int64_t socket_index) {
  Flight& flight = flights_[slot];
  flight.stage = Stage::kParked;
  flight.parked_on = socket_index;
  SocketAt(socket_index).waiters.push_back(slot);
}

void SimBackend::WakeWaiters(int64_t socket_index) {
  const int64_t peer = SocketAt(socket_index).peer;
  for (const int64_t index : {socket_index, peer}) {
    if (index < 0) continue;
    std::vector<uint32_t> waiters;
    waiters.swap(SocketAt(index).waiters);
    for (const uint32_t slot : waiters) {
      Flight& flight = flights_[slot];
      if (flight.stage != Stage::kParked || flight.parked_on != index) continue;
      flight.parked_on = -1;
      Schedule(slot, DrawLatency(options_.net_latency));
    }
  }
}

void SimBackend::CloseSocket(int64_t index) {
  sim::Socket& s = SocketAt(index);
  if (s.state == sim::Socket::State::kListening) {
    listeners_.erase(s.port);
    // Connections never accepted are reset: their clients see the peer gone.
    for (const int64_t accepted : s.backlog) {
      SocketAt(accepted).state = sim::Socket::State::kClosed;
      const int64_t client = SocketAt(accepted).peer;
      SocketAt(client).peer_closed = true;
      WakeWaiters(client);
    }
    s.backlog.clear();
  } else if (s.state == sim::Socket::State::kConnected) {
    SocketAt(s.peer).peer_closed = true;
  }
  s.state = sim::Socket::State::kClosed;
  // Ops still parked on this socket stay parked (io_uring holds its own file reference until
  // the op is cancelled); the peer's ops wake to see EOF / EPIPE.
  WakeWaiters(index);
}

// Both ends die at once, as when a RST arrives: unread bytes are gone, and every op on either
// end fails with -ECONNRESET from now on.
void SimBackend::ResetConnection(int64_t socket_index) {
  const int64_t peer = SocketAt(socket_index).peer;
  for (const int64_t index : {socket_index, peer}) {
    sim::Socket& s = SocketAt(index);
    s.reset = true;
    s.peer_closed = true;
    s.inbox.clear();
  }
  WakeWaiters(socket_index);  // Wakes the peer's waiters too.
}

bool SimBackend::InjectNetFault(Flight& flight, Attempt& attempt) {
  if (flight.target.type != FdType::kSocket) return false;
  const OpKind kind = flight.op->kind;
  const bool transfer = kind == OpKind::kSend || kind == OpKind::kRecv || kind == OpKind::kRead ||
                        kind == OpKind::kWrite;
  if (!transfer && kind != OpKind::kConnect) return false;
  const SimFaults& f = options_.faults;
  const int64_t heal_ns = options_.start_ns + f.partition_start_ns + f.partition_ns;
  if (f.partition_ns > 0 && now_ns_ >= options_.start_ns + f.partition_start_ns &&
      now_ns_ < heal_ns) {
    ++sim_stats_.net_partitioned;
    attempt = AgainAfter(heal_ns - now_ns_);  // TCP retransmits once the path is back.
    return true;
  }
  if (f.net_drop > 0 && prng_.Chance(f.net_drop)) {
    ++sim_stats_.net_drops;
    attempt = AgainAfter(DrawLatency(options_.net_retransmit_latency));
    return true;
  }
  const auto index = static_cast<int64_t>(flight.target.target);
  if (!transfer || f.net_reset <= 0 || SocketAt(index).state != sim::Socket::State::kConnected ||
      SocketAt(index).reset || !prng_.Chance(f.net_reset)) {
    return false;
  }
  ++sim_stats_.net_resets;
  ++sim_stats_.injected_errors;
  ResetConnection(index);
  attempt = Done(-ECONNRESET);
  return true;
}

SimBackend::Attempt SimBackend::TryConnect(Flight& flight) {
  if (flight.target.type != FdType::kSocket) {
    return Done(flight.target.type == FdType::kFree ? -EBADF : -ENOTSOCK);
  }
  const Op& op = *flight.op;
  const auto index = static_cast<int64_t>(flight.target.target);
  sim::Socket& s = SocketAt(index);
  if (s.state == sim::Socket::State::kConnected) return Done(-EISCONN);
  if (s.state != sim::Socket::State::kUnconnected) return Done(-EINVAL);
  if (op.buffer == nullptr) return Done(-EFAULT);
  sockaddr_in address{};
  if (op.length < sizeof(address)) return Done(-EINVAL);
  std::memcpy(&address, op.buffer, sizeof(address));
  if (address.sin_family != AF_INET) return Done(-EAFNOSUPPORT);
  const auto listener = listeners_.find(ntohs(address.sin_port));
  if (listener == listeners_.end()) return Done(-ECONNREFUSED);
  const int64_t listener_index = listener->second;
  if (SocketAt(listener_index).backlog.size() >= kListenBacklogMax) {
    return Done(-ECONNREFUSED);
  }
  const int64_t accepted = NewSocket();
  // Sockets live behind unique_ptr: NewSocket moving `sockets_` leaves references valid.
  sim::Socket& server = SocketAt(accepted);
  server.state = sim::Socket::State::kConnected;
  server.port = SocketAt(listener_index).port;
  server.peer = index;
  sim::Socket& client = SocketAt(index);
  client.state = sim::Socket::State::kConnected;
  client.peer = accepted;
  client.port = static_cast<uint16_t>(kEphemeralPortFirst + next_ephemeral_port_++);
  SocketAt(listener_index).backlog.push_back(accepted);
  WakeWaiters(listener_index);
  return Done(0);
}

SimBackend::Attempt SimBackend::TryAccept(Flight& flight) {
  if (flight.target.type != FdType::kSocket) {
    return Done(flight.target.type == FdType::kFree ? -EBADF : -ENOTSOCK);
  }
  const auto index = static_cast<int64_t>(flight.target.target);
  sim::Socket& listener = SocketAt(index);
  if (listener.state != sim::Socket::State::kListening) return Done(-EINVAL);
  if (listener.backlog.empty()) return ParkOn(index);
  const int64_t accepted = listener.backlog.front();
  listener.backlog.pop_front();
  Op& op = *flight.op;
  if (op.buffer != nullptr && op.address_length >= sizeof(sockaddr_in)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(SocketAt(SocketAt(accepted).peer).port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::memcpy(op.buffer, &address, sizeof(address));
    op.address_length = sizeof(address);
  }
  const int fd = AllocateFd(FdEntry{
      .type = FdType::kSocket, .access = O_RDWR, .target = static_cast<uint64_t>(accepted)});
  return Done(fd);
}

SimBackend::Attempt SimBackend::TryRecv(Flight& flight) {
  if (flight.target.type != FdType::kSocket) {
    return Done(flight.target.type == FdType::kFree ? -EBADF : -ENOTSOCK);
  }
  const auto index = static_cast<int64_t>(flight.target.target);
  sim::Socket& s = SocketAt(index);
  if (s.state == sim::Socket::State::kClosed) return Done(-EBADF);
  if (s.state != sim::Socket::State::kConnected) return Done(-ENOTCONN);
  if (s.reset) return Done(-ECONNRESET);
  Op& op = *flight.op;
  if (s.inbox.empty()) {
    if (s.peer_closed || op.length == 0) return Done(0);
    return ParkOn(index);
  }
  if (op.buffer == nullptr) return Done(-EFAULT);
  const auto available = static_cast<uint32_t>(std::min<size_t>(s.inbox.size(), op.length));
  const uint32_t count = PartialCount(available, options_.faults.short_net);
  std::memcpy(op.buffer, s.inbox.data(), count);
  s.inbox.erase(0, count);
  op.transferred = count;
  WakeWaiters(index);  // Space for the peer's sends.
  return Done(count);
}

SimBackend::Attempt SimBackend::TrySend(Flight& flight) {
  if (flight.target.type != FdType::kSocket) {
    return Done(flight.target.type == FdType::kFree ? -EBADF : -ENOTSOCK);
  }
  const auto index = static_cast<int64_t>(flight.target.target);
  sim::Socket& s = SocketAt(index);
  if (s.state == sim::Socket::State::kClosed) return Done(-EBADF);
  if (s.state != sim::Socket::State::kConnected) return Done(-ENOTCONN);
  if (s.reset) return Done(-ECONNRESET);
  if (s.peer_closed) return Done(-EPIPE);
  Op& op = *flight.op;
  if (op.transferred == op.length) return Done(op.length);
  if (op.buffer == nullptr) return Done(-EFAULT);
  sim::Socket& peer = SocketAt(s.peer);
  const auto space = static_cast<uint32_t>(kSocketBufferBytes - peer.inbox.size());
  if (space == 0) return ParkOn(s.peer);
  const uint32_t count =
      PartialCount(std::min(op.length - op.transferred, space), options_.faults.short_net);
  peer.inbox.append(static_cast<const char*>(op.buffer) + op.transferred, count);
  op.transferred += count;
  WakeWaiters(s.peer);  // Bytes for the peer's receives.
  if (op.transferred == op.length) return Done(op.length);
  return Again();
}

uint32_t SimBackend::SocketEvents(int64_t index) const {
  const sim::Socket& s = *sockets_[static_cast<size_t>(index)];
  uint32_t events = 0;
  if (s.state == sim::Socket::State::kListening && !s.backlog.empty())
    events |= POLLIN | POLLRDNORM;
  if (s.state != sim::Socket::State::kConnected) return events;
  if (s.reset) return events | POLLERR | POLLHUP;
  if (!s.inbox.empty() || s.peer_closed) events |= POLLIN | POLLRDNORM;
  if (s.peer_closed) return events | POLLHUP;
  const sim::Socket& peer = *sockets_[static_cast<size_t>(s.peer)];
  if (peer.inbox.size() < kSocketBufferBytes) events |= POLLOUT | POLLWRNORM;
  return events;
}

SimBackend::Attempt SimBackend::TryPoll(Flight& flight) {
  const uint32_t mask = flight.op->flags;
  switch (flight.target.type) {
    case FdType::kFree:
      return Done(-EBADF);
    case FdType::kFile:
    case FdType::kDirectory:
      return Done(kFileEvents & mask);
    case FdType::kSocket:
      break;
  }
  const auto index = static_cast<int64_t>(flight.target.target);
  if (SocketAt(index).state == sim::Socket::State::kClosed) return Done(POLLNVAL);
  const uint32_t events = SocketEvents(index) & (mask | POLLERR | POLLHUP);
  if (events != 0) return Done(events);
  return ParkOn(index);
}

}  // namespace sqloop::io
