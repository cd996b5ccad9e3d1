#include "bench/dispatch/floor.h"

#include <array>
#include <cstdint>
#include <span>

namespace sqloop::bench::dispatch {

void RunFloor(IoStats* stats, FakePoller* poller) {
  FakeListener listener(stats);
  const uint32_t listener_index = poller->Register(/*key=*/0, kReadable);
  FakeStream stream;
  SQLOOP_CHECK(listener.Accept(&stream) == kWouldBlock, "RunFloor: the first accept blocks");
  std::array<char, kRequestBytesMax> buffer{};
  for (uint32_t accepted = 0; accepted < kConnections; ++accepted) {
    (void)poller->Poll();
    SQLOOP_CHECK(listener.Accept(&stream) == 0, "RunFloor: the second accept succeeds");
    const uint32_t index = poller->Register(/*key=*/accepted + 1, kReadable | kWritable);
    SQLOOP_CHECK(stream.Read(buffer) == kWouldBlock, "RunFloor: the first read blocks");
    const int64_t received = stream.Read(buffer);
    SQLOOP_CHECK(received > 0, "RunFloor: the second read returns the request");
    const std::span<const char> request(buffer.data(), static_cast<size_t>(received));
    SQLOOP_CHECK(stream.Write(request) == kWouldBlock, "RunFloor: the first write blocks");
    SQLOOP_CHECK(stream.Write(request) == received, "RunFloor: the second write takes all");
    poller->Unregister(index);
    if (accepted + 1 < kConnections) {
      SQLOOP_CHECK(listener.Accept(&stream) == kWouldBlock, "RunFloor: the next accept blocks");
    }
  }
  (void)poller->Poll();  // The real servers poll twice more while the last streams finish.
  (void)poller->Poll();
  poller->Unregister(listener_index);
}

}  // namespace sqloop::bench::dispatch
