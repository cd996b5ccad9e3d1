#include "bench/dispatch/coro_server.h"

#include <array>
#include <cstring>
#include <span>

// gcc 12 pairs each coroutine's frame allocation with its deallocation and flags the promise's
// operator new(size, Context&, ...) against operator delete(void*, size) as mismatched. That is
// the pairing the standard prescribes for coroutine frames ([dcl.fct.def.coroutine]: the
// deallocation function is looked up as a usual, non-placement one), so the warning is a false
// positive here; PooledFrames finds the pool from the slot header, not from the arguments.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace sqloop::bench::dispatch {
namespace {

// One connection: read a line, echo it. `kBufferBytes` is the buffer kept in the frame, zeroed
// whole as the study zeroes its buffer; only its first kRequestBytesMax bytes are used.
template <typename Frames, size_t kBufferBytes>
Task<Frames> Serve(Context& context, FakeStream fake_stream) {
  static_assert(kBufferBytes >= kRequestBytesMax);
  AsyncStream stream(context, fake_stream);  // Registers now, unregisters when the task ends.
  std::array<char, kBufferBytes> buffer;     // Zeroed below, as the study's `[0; N]`.
  std::memset(buffer.data(), 0, kBufferBytes);
  const std::span<char> request(buffer.data(), kRequestBytesMax);

  size_t received_bytes = 0;
  while (std::memchr(request.data(), '\n', received_bytes) == nullptr) {
    const int64_t result = co_await stream.Read(request.subspan(received_bytes));
    if (result == kWouldBlock) continue;  // Spurious wake-up: wait again.
    SQLOOP_CHECK(result > 0, "Serve: the fake stream never fails or ends");
    received_bytes += static_cast<size_t>(result);
  }
  size_t sent_bytes = 0;
  while (sent_bytes < received_bytes) {
    const int64_t result =
        co_await stream.Write(request.subspan(sent_bytes, received_bytes - sent_bytes));
    if (result == kWouldBlock) continue;
    sent_bytes += static_cast<size_t>(result);
  }
}

template <typename Frames, size_t kBufferBytes>
Task<Frames> Listen(Context& context) {
  AsyncListener listener(context);  // Registers now, unregisters after the last accept.
  for (uint32_t accepted = 0; accepted < kConnections;) {
    FakeStream stream;
    if (co_await listener.Accept(&stream) == kWouldBlock) continue;
    context.executor.Spawn(Serve<Frames, kBufferBytes>(context, stream).Release());
    ++accepted;
  }
}

}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

CoroServer::CoroServer(IoStats* stats, FakePoller* poller, Kind kind)
    : poller_(poller),
      kind_(kind),
      executor_(kConnections + 1),
      // Only the pooled kind uses the pool; the others keep a one-slot pool so that they do not
      // pay for memory they never touch.
      frame_pool_(kFrameSlotBytes, kind == Kind::kPooledFrames ? kFrameSlots : 1),
      context_{executor_, *poller, *stats, &frame_pool_} {}

void CoroServer::Run() {
  switch (kind_) {
    case Kind::kDefaultFrames:
      executor_.Spawn(Listen<DefaultFrames, kRequestBytesMax>(context_).Release());
      break;
    case Kind::kPooledFrames:
      executor_.Spawn(Listen<PooledFrames, kRequestBytesMax>(context_).Release());
      break;
    case Kind::kLargeFrames:
      executor_.Spawn(Listen<DefaultFrames, kLargeBufferBytes>(context_).Release());
      break;
  }
  executor_.Run(*poller_);
}

}  // namespace sqloop::bench::dispatch
