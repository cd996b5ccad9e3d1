// A tenant's idleness (declared in db/registry.h): going idle, falling asleep when evicted for
// a slot, and the registry's idle clock: the one sweeper timer that closes a tenant idle (or
// asleep) for idle_timeout and trims one idle for idle_trim_after, and the host's calls that
// do either at once. The rest of the lifecycle is in registry.cc; the idle and asleep lists,
// the trim cursor and the deadlines are the policy's (db/internal/tenant_policy.h).
#include <algorithm>
#include <cstdint>

#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/tenant.h"
#include "sqloop/db/internal/tenant_policy.h"
#include "sqloop/db/registry.h"

namespace sqloop::db {

using internal::CloseReason;
using internal::TenantPolicy;

// A tenant whose requests are done. Its database may still be asleep: the requests needed no
// wake (open-only ones), so it gives its slot back and sleeps on; or a wake since it took its
// slot failed (the files changed, or could not be opened again), and it is closed so that the
// next request opens the file afresh. (One that failed in an earlier turn, before a wake that
// succeeded, says nothing about the files now.)
void Registry::BecomeIdle(Tenant& t) {
  if (shutting_down_) {
    StartClose(t, CloseReason::kShutdown);
    return;
  }
  if (t.database->asleep()) {
    if (t.database->stats().wakes_failed > t.wakes_failed_before) {
      StartClose(t, CloseReason::kWakeFailed);
    } else {
      FallAsleep(t);
      GrantSlots();
    }
    return;
  }
  policy_->AddIdle(t, loop_.now_ns());
  SetState(t, TenantState::kIdle);
  EvictForMemory();
  // The waiters' victim may be `t` itself, whose Database is still in the callback that
  // finished its last request (or its open), where it cannot sleep: evict on the next tick.
  if (policy_->waiting() > 0) {
    evict_deferred_ = true;
    ArmDeferred();
  }
  ArmSweeper();
}

// An idle tenant evicted for a slot keeps its connections and closes its descriptors, unless
// sleepers are off, memory (which sleeping does not free) is what is short, or its Database
// refuses (db/database.h says when; the caller closes it then). It keeps its caches and its
// readers, since a tenant evicted for a slot is often used again soon (registry_zipf measured
// the wakes at half the cost with them kept); idle_trim_after trims a sleeper as it trims an
// idle tenant.
bool Registry::PutToSleep(Tenant& t) {
  if (options_.asleep_max == 0 || shutting_down_ || policy_->MemoryFull()) return false;
  if (!t.database->Sleep(&Registry::OnSleepClosed, &t).ok()) {
    stats_.sleeps_refused++;
    return false;
  }
  policy_->SleepClosing();
  policy_->RemoveIdle(t);
  t.stats.sleeps++;
  stats_.sleeps++;
  FallAsleep(t);
  return true;
}

// Gives the slot back and joins the asleep list; the one asleep the longest closes beyond
// asleep_max.
void Registry::FallAsleep(Tenant& t) {
  policy_->ReleaseSlot(t);
  policy_->AddAsleep(t, loop_.now_ns());
  SetState(t, TenantState::kAsleep);
  while (policy_->asleep() > options_.asleep_max) {
    StartClose(*policy_->OldestAsleep(), CloseReason::kEvicted);
  }
  ArmSweeper();
}

// One timer for all idle tenants, armed for the oldest one's deadline. Becoming idle appends
// to the idle list, whose head is therefore always the earliest deadline: a request costs no
// timer operation at all, and the timer fires once per idle close (or per head that woke up).
// A timer armed for a later deadline is cancelled and armed again: a tenant's trim deadline
// can come before the deadline the timer waits for (every idle tenant was trimmed, the oldest
// one's close is far off, and a new one goes idle).
void Registry::ArmSweeper() {
  if (shutting_down_) return;
  const int64_t deadline_ns = policy_->NextIdleDeadlineNs();
  if (deadline_ns < 0) return;
  if (sweeper_.state() == loop::Completion::State::kTimer && deadline_ns < sweeper_deadline_ns_) {
    loop_.Cancel(sweeper_);  // OnSweep arms it again.
    return;
  }
  if (sweeper_.state() != loop::Completion::State::kIdle) return;
  sweeper_deadline_ns_ = deadline_ns;
  loop_.Timer(sweeper_, absl::Nanoseconds(std::max<int64_t>(0, deadline_ns - loop_.now_ns())));
}

loop::Action Registry::OnSweep(loop::Loop& loop, loop::Completion& c) {
  auto& self = *static_cast<Registry*>(c.user_data);
  if (self.shutting_down_) {
    self.MaybeFinishShutdown();
    return loop::Action::kDisarm;
  }
  self.SweepDue(loop.now_ns());
  self.ArmSweeper();  // Due at once if the sweep stopped early: it goes on in the next tick.
  return loop::Action::kDisarm;
}

// Starts the closes and runs the trims due at `now_ns`, at least one and then until the loop's
// tick budget is spent: a trim closes a writer connection and gives back its pages (tens of
// microseconds), and hundreds of tenants that went idle together come due together.
void Registry::SweepDue(int64_t now_ns) {
  for (bool first = true;; first = false) {
    if (!first && loop_.TickBudgetSpent()) return;
    if (Tenant* idle = policy_->ExpiredIdle(now_ns)) {
      StartClose(*idle, CloseReason::kIdle);
    } else if (Tenant* asleep = policy_->ExpiredAsleep(now_ns)) {
      StartClose(*asleep, CloseReason::kIdle);
    } else if (Tenant* due = policy_->TrimDue(now_ns)) {
      Trim(*due);
    } else {
      return;
    }
  }
}

uint32_t Registry::CloseIdleTenants() {
  uint32_t closed = 0;
  while (Tenant* t = policy_->OldestIdle()) {
    StartClose(*t, CloseReason::kIdle);
    ++closed;
  }
  while (Tenant* t = policy_->OldestAsleep()) {
    StartClose(*t, CloseReason::kIdle);
    ++closed;
  }
  return closed;
}

uint32_t Registry::TrimIdleTenants() {
  uint32_t trimmed = 0;
  while (Tenant* t = policy_->TrimDue(/*now_ns=*/-1)) {
    Trim(*t);
    ++trimmed;
  }
  return trimmed;
}

// An idle tenant, or a sleeping one, keeps one reader, its schema and its pinned snapshot; its
// writer closes (it opens again at the next write, after the wake for a sleeper; a sleeper's
// closes without touching its files) and its connections give back the cached pages nothing
// holds.
void Registry::Trim(Tenant& t) {
  SQLOOP_CHECK(t.state == TenantState::kIdle || t.state == TenantState::kAsleep,
               "Registry: trimming a tenant that is neither idle nor asleep");
  (void)t.database->CloseWriterIfIdle();
  t.database->ReleaseMemory();
  t.stats.trims++;
  stats_.trims++;
}

}  // namespace sqloop::db
