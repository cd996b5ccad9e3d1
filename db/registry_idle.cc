// The registry's idle clock (declared in db/registry.h): the one sweeper timer that closes a
// tenant idle for idle_timeout and trims one idle for idle_trim_after, and the host's calls
// that do either at once. The tenant lifecycle it drives is in registry.cc; the idle list, its
// trim cursor and the deadlines are the policy's (db/internal/tenant_policy.h).
#include <algorithm>
#include <cstdint>

#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/tenant.h"
#include "sqloop/db/internal/tenant_policy.h"
#include "sqloop/db/registry.h"

namespace sqloop::db {

using internal::CloseReason;
using internal::TenantPolicy;

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
  while (Tenant* t = self.policy_->ExpiredIdle(loop.now_ns())) {
    self.StartClose(*t, CloseReason::kIdle);
  }
  while (Tenant* t = self.policy_->TrimDue(loop.now_ns())) self.Trim(*t);
  self.ArmSweeper();
  return loop::Action::kDisarm;
}

uint32_t Registry::CloseIdleTenants() {
  uint32_t closed = 0;
  while (Tenant* t = policy_->OldestIdle()) {
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

// An idle tenant keeps one reader, its schema and its pinned snapshot; its writer closes (it
// opens again at the next write) and its connections give back the cached pages nothing holds.
void Registry::Trim(Tenant& t) {
  SQLOOP_CHECK(t.state == TenantState::kIdle, "Registry: trimming a tenant that is not idle");
  (void)t.database->CloseWriterIfIdle();
  t.database->ReleaseMemory();
  t.stats.trims++;
  stats_.trims++;
}

}  // namespace sqloop::db
