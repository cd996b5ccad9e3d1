#include "bench/dispatch/coro_runtime.h"

#include <new>

namespace sqloop::bench::dispatch {

void Executor::Run(FakePoller& poller) {
  while (live_tasks_ > 0) {
    if (ready_.empty()) {
      // Every live task is parked on an I/O object: ask the poller which ones may proceed. The
      // key of each event is the AsyncIo that registered it.
      for (const PollEvent& event : poller.Poll()) {
        reinterpret_cast<AsyncIo*>(event.key)->OnReady(event.readiness);
      }
      continue;
    }
    // Runs every ready task: each one transfers to the next when it suspends, and the last one
    // returns here (through std::noop_coroutine) when the queue is empty.
    ready_.Pop().resume();
    while (!retired_.empty()) {
      retired_.Pop().destroy();
      --live_tasks_;
    }
  }
}

FramePool::FramePool(size_t slot_bytes, uint32_t slots) : slot_bytes_(slot_bytes) {
  SQLOOP_CHECK(slot_bytes % kSlotAlignment == 0 && slots > 0,
               "FramePool: the slot size must be a whole number of cache lines");
  storage_ =
      static_cast<std::byte*>(::operator new (slot_bytes* slots, std::align_val_t{kSlotAlignment}));
  // Thread the free list so that slot 0 is handed out first.
  for (uint32_t i = slots; i > 0; --i) {
    free_head_ = new (storage_ + (i - 1) * slot_bytes) FreeSlot{free_head_};
  }
}

FramePool::~FramePool() { ::operator delete (storage_, std::align_val_t{kSlotAlignment}); }

}  // namespace sqloop::bench::dispatch
