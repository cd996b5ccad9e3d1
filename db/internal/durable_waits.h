// db/internal/durable_waits.h
// -----------------------------------------------------------------------------
//
// `DurableWaits` holds the DurableWaits (db/vfs.h, Vfs::WhenDurable) armed on one database: a
// host's own connection asks to be told once everything written so far is on disk (the queue
// closes an epoch for it first when a write or a name change came after the last barrier:
// EpochQueue::WhenDurable). Each wait remembers the epoch it needs; the EpochQueue settles them
// where its durable epoch advances (FinishBarrier) and where it is poisoned (Poison), and a settled
// wait is handed to the loop, which runs its `done` from a callback of its own.
//
// The hand-off is the point. The queue settles waits inside SQLite's calls too (a barrier with
// nothing to sync finishes inside xSync; a poison can come from inside a VFS call), and a host's
// `done` may run SQL on the very connection that is inside SQLite at that moment. So `done`
// never runs here: a settled wait goes on the loop's FIFO (Loop::NextTick) with its status,
// and runs once the loop drains it, like any other completion.
//
// States of a DurableWait:
//
// clang-format off
//   kIdle --Arm, not durable yet--> kWaiting --Settle--> kDelivering --OnDelivered--> kIdle
//     \                                                     ^
//      +--Arm, durable already, or poisoned-----------------+
//
//   transition               function     invariant in the new state
//   kIdle -> kWaiting        Arm          in waiting_; epoch_ above the durable epoch; no poison
//   kIdle -> kDelivering     Arm          out of waiting_; status_ decided; delivery_ in the FIFO
//   kWaiting -> kDelivering  Settle       out of waiting_; status_ decided; delivery_ in the FIFO
//   kDelivering -> kIdle     OnDelivered  `done` is running or has run; nothing here holds it
// clang-format on
//
// Design invariants:
//   1. A wait is in one place at a time: waiting_ (kWaiting), the loop's FIFO (kDelivering), or
//      nowhere (kIdle). Arming one that is not idle is refused before anything is touched.
//   2. waiting_ is in arming order, and since the queue's epoch only grows, so are the epochs
//      the waits need: Settle stops at the first wait that must go on waiting.
//   3. A waiting wait needs an epoch above the durable epoch of a queue that is not poisoned, so
//      that epoch's barrier is still queued or in flight (EpochQueue::AssertInvariants checks
//      it). The queue is then not quiet, and its DatabaseFiles cannot be released
//      (DatabaseFiles::Releasable) even after the connection that armed the wait was closed.
//   4. `done` runs only from OnDelivered, a loop callback: never inside Arm (so never inside
//      Vfs::WhenDurable), never inside Settle, never inside a SQLite call.
//   5. Nothing allocates: the list is intrusive, the loop's completion is the wait's own, and a
//      status is OK (no allocation) or a copy of the poison (a reference count).
//
// Internal: one per EpochQueue; the Vfs arms waits through EpochQueue::WhenDurable.
//
// Example (the EpochQueue):
//
//   waits_.Arm(wait, epoch_, durable_epoch_, poison_);  // Vfs::WhenDurable
//   durable_epoch_ = barrier->epoch;
//   waits_.Settle(durable_epoch_, poison_);             // done runs at a later tick
#ifndef SQLOOP_DB_INTERNAL_DURABLE_WAITS_H_
#define SQLOOP_DB_INTERNAL_DURABLE_WAITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "sqloop/alloc/intrusive_list.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

class DurableWaits {
 public:
  explicit DurableWaits(loop::Loop& loop) : loop_(loop) {}
  // Checks that no wait is waiting (invariant 3 says none can be when the queue goes).
  ~DurableWaits();
  DurableWaits(const DurableWaits&) = delete;
  DurableWaits& operator=(const DurableWaits&) = delete;

  // Arms the idle `wait` for `epoch`: handed to the loop at once with OK if `durable_epoch`
  // covers it (even on a poisoned queue: those epochs are on disk), with `poison` if the queue
  // is poisoned, else kept until Settle decides it.
  void Arm(DurableWait& wait, uint64_t epoch, uint64_t durable_epoch, const absl::Status& poison);
  // The durable epoch advanced or the queue was poisoned: hands to the loop every waiting wait
  // whose epoch `durable_epoch` covers (OK), then, if `poison` is not OK, every other one with it.
  void Settle(uint64_t durable_epoch, const absl::Status& poison);

  [[nodiscard]] bool empty() const { return waiting_.empty(); }
  // The epoch the oldest waiting wait needs (the smallest, invariant 2); 0 if none waits.
  [[nodiscard]] uint64_t first_epoch() const;

 private:
  using WaitList = IntrusiveList<DurableWait, &DurableWait::link_>;

  // kIdle or kWaiting -> kDelivering: puts `wait` on the loop's FIFO with `status`.
  void Deliver(DurableWait& wait, absl::Status status);
  // kDelivering -> kIdle, then the wait's `done`.
  static loop::Action OnDelivered(loop::Loop& loop, loop::Completion& c);

  loop::Loop& loop_;
  WaitList waiting_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_DURABLE_WAITS_H_
