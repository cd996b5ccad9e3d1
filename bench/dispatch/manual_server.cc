#include "bench/dispatch/manual_server.h"

#include <cstring>

namespace sqloop::bench::dispatch {

ManualServer::ManualServer(IoStats* stats, FakePoller* poller)
    : stats_(stats), poller_(poller), connections_(kConnections), needs_process_(kConnections) {}

void ManualServer::Run() {
  connections_.Reset();
  FakeListener listener(stats_);
  const uint32_t listener_registration = poller_->Register(kListenerKey, kReadable);
  can_accept_ = true;
  accepts_left_ = kConnections;
  for (;;) {
    AcceptWhileReady(listener);
    DrainNeedsProcess();
    if (accepts_left_ == 0 && connections_.size() == 0) break;
    DispatchEvents(poller_->Poll());
  }
  poller_->Unregister(listener_registration);
}

// Accepts until the listener would block or every connection has been accepted. Each new
// connection is registered and queued so that it makes its first read in this same pass.
void ManualServer::AcceptWhileReady(FakeListener& listener) {
  while (accepts_left_ > 0 && can_accept_) {
    FakeStream stream;
    if (listener.Accept(&stream) == kWouldBlock) {
      can_accept_ = false;
      break;
    }
    --accepts_left_;
    const uint32_t key = connections_.Insert();
    Connection& connection = connections_[key];
    connection.stream = stream;
    connection.state = State::kReceivingRequest;
    connection.can_read = true;
    connection.can_write = true;
    connection.received_bytes = 0;
    connection.sent_bytes = 0;
    connection.buffer.fill(0);
    connection.registration = poller_->Register(key + 1, kReadable | kWritable);
    needs_process_.Push(key);
  }
}

void ManualServer::DrainNeedsProcess() {
  while (!needs_process_.empty()) {
    const uint32_t key = needs_process_.Pop();
    Connection& connection = connections_[key];
    if (Process(connection)) {
      poller_->Unregister(connection.registration);
      connections_.Remove(key);
    }
  }
}

// Turns readiness into flags and queues the connections it concerns (invariant 4 holds because
// the FIFO was drained before Poll() and each registration appears once per poll).
void ManualServer::DispatchEvents(std::span<const PollEvent> events) {
  for (const PollEvent& event : events) {
    if (event.key == kListenerKey) {
      can_accept_ = true;
      continue;
    }
    const uint32_t key = static_cast<uint32_t>(event.key - 1);
    Connection& connection = connections_[key];
    if ((event.readiness & kReadable) != 0) connection.can_read = true;
    if ((event.readiness & kWritable) != 0) connection.can_write = true;
    needs_process_.Push(key);
  }
}

bool ManualServer::Process(Connection& connection) {
  for (;;) {
    AssertInvariants(connection);
    switch (connection.state) {
      case State::kReceivingRequest: {
        if (!connection.can_read) return false;
        const int64_t result =
            connection.stream.Read(std::span(connection.buffer).subspan(connection.received_bytes));
        if (result == kWouldBlock) {
          connection.can_read = false;
          return false;
        }
        SQLOOP_CHECK(result > 0, "ManualServer: the fake stream never fails or ends");
        connection.received_bytes += static_cast<uint8_t>(result);
        if (std::memchr(connection.buffer.data(), '\n', connection.received_bytes) != nullptr) {
          connection.state = State::kSendingResponse;
        }
        break;
      }
      case State::kSendingResponse: {
        if (!connection.can_write) return false;
        const int64_t result = connection.stream.Write(
            std::span<const char>(connection.buffer.data() + connection.sent_bytes,
                                  connection.received_bytes - connection.sent_bytes));
        if (result == kWouldBlock) {
          connection.can_write = false;
          return false;
        }
        connection.sent_bytes += static_cast<uint8_t>(result);
        if (connection.sent_bytes == connection.received_bytes) return true;
        break;
      }
    }
  }
}

void ManualServer::AssertInvariants([[maybe_unused]] const Connection& connection) {
#ifndef NDEBUG
  SQLOOP_CHECK(connection.sent_bytes <= connection.received_bytes &&
                   connection.received_bytes <= kRequestBytesMax,
               "ManualServer invariant 1: sent <= received <= buffer size");
  if (connection.state == State::kReceivingRequest) {
    SQLOOP_CHECK(connection.sent_bytes == 0, "ManualServer invariant 2: nothing sent yet");
  } else {
    SQLOOP_CHECK(std::memchr(connection.buffer.data(), '\n', connection.received_bytes) != nullptr,
                 "ManualServer invariant 3: a whole request line was received");
  }
#endif
}

}  // namespace sqloop::bench::dispatch
