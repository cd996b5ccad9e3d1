// bench/dispatch/coro_server.h
// -----------------------------------------------------------------------------
//
// The coroutine variants of the fake echo server, written as straight-line C++20 coroutines on
// the runtime of coro_runtime.h:
//
//   Listen:  accept kConnections streams, spawning one Serve task per stream.
//   Serve:   read into a zeroed 128-byte buffer until it holds '\n', then write back what was
//            read.
//
// Kinds (the same coroutine bodies, instantiated three ways):
//   kDefaultFrames  frames from the global operator new (one heap allocation per task: the
//                   analogue of the study's boxed futures).
//   kPooledFrames   frames from a FramePool preallocated at construction, through the promise's
//                   operator new/delete (the analogue of the study's unboxed executor).
//   kLargeFrames    default frames whose Serve keeps a 16 KiB buffer alive across its
//                   suspension points (a typical server's I/O buffer), to show what frame size
//                   costs. The whole buffer is zeroed, as the study zeroes its 16 KiB buffer,
//                   so the variant does the study's work: the allocation, its cache footprint
//                   and the 16 KiB memset.
//
// Example:
//
//   CoroServer server(&stats, &poller, CoroServer::Kind::kPooledFrames);
//   server.Run();  // One iteration.
#ifndef SQLOOP_BENCH_DISPATCH_CORO_SERVER_H_
#define SQLOOP_BENCH_DISPATCH_CORO_SERVER_H_

#include <cstddef>
#include <cstdint>

#include "bench/dispatch/coro_runtime.h"
#include "bench/dispatch/fake_io.h"

namespace sqloop::bench::dispatch {

class CoroServer {
 public:
  enum class Kind { kDefaultFrames, kPooledFrames, kLargeFrames };

  // The buffer kept alive across suspension points by kLargeFrames.
  static constexpr size_t kLargeBufferBytes = 16 * 1024;

  // Room for the listener's frame and every connection's; with frames recycled LIFO only a few
  // are ever live at once, but the pool must cover the worst case the workload allows.
  static constexpr uint32_t kFrameSlots = kConnections + 1;

  // Larger than any frame gcc 12 or clang 14 produce for Listen/Serve at -O0 with sanitizers
  // (the pool checks every allocation, and reports the largest as frame_bytes_max()).
  static constexpr size_t kFrameSlotBytes = 1024;

  CoroServer(IoStats* stats, FakePoller* poller, Kind kind);

  CoroServer(const CoroServer&) = delete;
  CoroServer& operator=(const CoroServer&) = delete;

  // Serves kConnections connections from a fresh listener, then returns.
  void Run();

  // The largest coroutine frame allocated from the pool (0 unless kPooledFrames).
  [[nodiscard]] size_t frame_bytes_max() const { return frame_pool_.frame_bytes_max(); }

 private:
  FakePoller* poller_;
  Kind kind_;
  Executor executor_;
  FramePool frame_pool_;
  Context context_;
};

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_CORO_SERVER_H_
