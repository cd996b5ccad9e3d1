// The echo server's state machines. Transition table (docs/state-machines.md):
//
//   state      event                    next       made by
//   kFree      accept returned fd       kReading   OnAccept -> Read
//   kReading   recv > 0                 kWriting   OnConnection -> Write
//   kReading   recv == 0 or < 0         kClosing   OnConnection -> Close
//   kWriting   send complete            kReading   OnConnection -> Read
//   kWriting   send < 0                 kClosing   OnConnection -> Close
//   kClosing   close done               kFree      OnConnection
#include "examples/echo.h"

#include "sqloop/alloc/check.h"

namespace sqloop::examples {

EchoServer::EchoServer(loop::Loop& loop, int listen_fd, uint32_t connections_max)
    : loop_(loop), listen_fd_(listen_fd), pool_(connections_max) {
  SQLOOP_CHECK(connections_max > 0, "EchoServer: connections_max must be > 0");
  accept_.user_data = this;
  accept_.callback = &EchoServer::OnAccept;
  accept_.name = "echo accept";
  for (Connection& connection : pool_) {
    connection.server = this;
    connection.c.user_data = &connection;
    connection.c.callback = &EchoServer::OnConnection;
    connection.c.name = "echo connection";
  }
}

void EchoServer::Start() { ArmAccept(); }

void EchoServer::Stop() {
  stopped_ = true;
  if (accepting_) loop_.Cancel(accept_);
}

void EchoServer::ArmAccept() {
  SQLOOP_CHECK(!accepting_, "EchoServer: accept armed twice");
  accept_.op = io::Op{.kind = io::OpKind::kAccept, .fd = listen_fd_, .flags = SOCK_CLOEXEC};
  accepting_ = true;
  loop_.Submit(accept_);
}

EchoServer::Connection* EchoServer::TakeFree() {
  for (Connection& connection : pool_) {
    if (connection.state == State::kFree) return &connection;
  }
  return nullptr;
}

loop::Action EchoServer::OnAccept(loop::Loop& /*loop*/, loop::Completion& c) {
  auto* server = static_cast<EchoServer*>(c.user_data);
  server->accepting_ = false;
  if (c.result() < 0) {
    // -ECANCELED after Stop(). Other errors (ECONNABORTED, EMFILE) concern one client, not the
    // listener: keep accepting.
    if (!server->stopped_) server->ArmAccept();
    return loop::Action::kDisarm;
  }
  Connection* connection = server->TakeFree();
  SQLOOP_CHECK(connection != nullptr, "EchoServer: accepted while the pool was full");
  connection->fd = static_cast<int>(c.result());
  connection->filled = 0;
  server->open_++;
  server->stats_.accepted++;
  server->Read(*connection);
  // Backpressure: accept again only while a connection is free to take the next client.
  if (server->stopped_) return loop::Action::kDisarm;
  if (server->open_ < server->pool_.size()) {
    server->accepting_ = true;
    return loop::Action::kRearm;
  }
  server->stats_.accept_pauses++;
  return loop::Action::kDisarm;
}

void EchoServer::Read(Connection& connection) {
  connection.state = State::kReading;
  connection.c.op = io::Op{.kind = io::OpKind::kRecv,
                           .fd = connection.fd,
                           .buffer = connection.buffer,
                           .length = kBufferBytes};
  loop_.Submit(connection.c);
}

void EchoServer::Write(Connection& connection) {
  connection.state = State::kWriting;
  connection.c.op = io::Op{.kind = io::OpKind::kSend,
                           .fd = connection.fd,
                           .buffer = connection.buffer,
                           .length = connection.filled,
                           .flags = MSG_NOSIGNAL};
  loop_.Submit(connection.c);
}

void EchoServer::Close(Connection& connection) {
  connection.state = State::kClosing;
  connection.c.op = io::Op{.kind = io::OpKind::kClose, .fd = connection.fd};
  loop_.Submit(connection.c);
}

loop::Action EchoServer::OnConnection(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& connection = *static_cast<Connection*>(c.user_data);
  EchoServer& server = *connection.server;
  server.AssertInvariants(connection);
  const int64_t result = c.result();
  switch (connection.state) {
    case State::kReading:
      if (result <= 0) {
        server.Close(connection);
      } else {
        connection.filled = static_cast<uint32_t>(result);
        server.Write(connection);
      }
      return loop::Action::kDisarm;
    case State::kWriting:
      if (result < 0) {
        server.Close(connection);
      } else {
        server.stats_.bytes_echoed += static_cast<uint64_t>(result);
        server.Read(connection);
      }
      return loop::Action::kDisarm;
    case State::kClosing:
      connection.state = State::kFree;
      connection.fd = -1;
      server.open_--;
      server.stats_.closed++;
      // A free connection again: resume accepting if the full pool had paused it.
      if (!server.accepting_ && !server.stopped_) server.ArmAccept();
      return loop::Action::kDisarm;
    case State::kFree:
      break;
  }
  SQLOOP_CHECK(false, "EchoServer: a free connection received a completion");
  return loop::Action::kDisarm;
}

void EchoServer::AssertInvariants(const Connection& connection) const {
  SQLOOP_CHECK(connection.state != State::kFree, "EchoServer: completion on a free connection");
  SQLOOP_CHECK(connection.fd >= 0, "EchoServer: a live connection has no descriptor");
  SQLOOP_CHECK(connection.filled <= kBufferBytes, "EchoServer: buffer overfilled");
  SQLOOP_CHECK(open_ <= pool_.size(), "EchoServer: more open connections than the pool holds");
}

}  // namespace sqloop::examples
