#include "sqloop/db/internal/durable_waits.h"

#include <utility>

#include "sqloop/alloc/check.h"

namespace sqloop::db::internal {

DurableWaits::~DurableWaits() {
  SQLOOP_CHECK(waiting_.empty(),
               "DatabaseFiles destroyed with a DurableWait still waiting for its epoch");
}

uint64_t DurableWaits::first_epoch() const {
  return waiting_.empty() ? 0 : waiting_.front()->epoch_;
}

void DurableWaits::Arm(DurableWait& wait, uint64_t epoch, uint64_t durable_epoch,
                       const absl::Status& poison) {
  SQLOOP_CHECK(wait.state_ == DurableWait::State::kIdle && !wait.link_.linked(),
               "DurableWaits::Arm: the wait is armed already (Vfs::WhenDurable checks this)");
  wait.epoch_ = epoch;
  wait.delivery_.callback = &DurableWaits::OnDelivered;
  wait.delivery_.user_data = &wait;
  wait.delivery_.name = "sqloop-db-durable-wait";
  if (epoch <= durable_epoch) {
    Deliver(wait, absl::OkStatus());
    return;
  }
  if (!poison.ok()) {
    Deliver(wait, poison);
    return;
  }
  SQLOOP_CHECK(waiting_.empty() || waiting_.back()->epoch_ <= epoch,
               "DurableWaits: a wait armed for an older epoch than the one before it");
  wait.state_ = DurableWait::State::kWaiting;
  waiting_.PushBack(wait);
}

void DurableWaits::Settle(uint64_t durable_epoch, const absl::Status& poison) {
  while (DurableWait* wait = waiting_.front()) {
    const bool durable = wait->epoch_ <= durable_epoch;
    if (!durable && poison.ok()) return;  // Invariant 2: every later one waits too.
    waiting_.Remove(*wait);
    Deliver(*wait, durable ? absl::OkStatus() : poison);
  }
}

void DurableWaits::Deliver(DurableWait& wait, absl::Status status) {
  wait.status_ = std::move(status);
  wait.state_ = DurableWait::State::kDelivering;
  loop_.NextTick(wait.delivery_);
}

loop::Action DurableWaits::OnDelivered(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& wait = *static_cast<DurableWait*>(c.user_data);
  SQLOOP_CHECK(wait.state_ == DurableWait::State::kDelivering,
               "DurableWaits: a wait's delivery ran while it was not being delivered");
  absl::Status status = std::exchange(wait.status_, absl::OkStatus());
  // Idle before `done` runs, which may arm the wait again or free it: nothing touches it after.
  wait.state_ = DurableWait::State::kIdle;
  wait.done(wait, std::move(status));
  return loop::Action::kDisarm;
}

}  // namespace sqloop::db::internal
