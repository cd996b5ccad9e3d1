// The one writer of a tenant's state (declared in db/registry.h), the invariants each state
// keeps, and the statistics read off the states. The transitions themselves are in
// registry.cc (its diagram and table) and registry_idle.cc.
//
// Invariants per state, checked by AssertInvariants on every transition (SetState is the only
// writer of Tenant::state):
//   kClosed, kDeleting: no database, no memory id, no slot, nothing in flight; kDeleting has a
//     delete at its queue head, and its sub-machine (TenantDelete) is started right after the
//     transition.
//   kWaitingSlot: no slot, nothing in flight; in the policy's waiting FIFO. A database (and its
//     memory id) only if the tenant slept, and then the database is asleep.
//   kOpening: a slot and a database, nothing in flight.
//   kClosing: a database, nothing in flight; a slot unless it was asleep (then the database
//     is asleep, and its close touches no file).
//   kActive: a slot and a database.
//   kIdle: a slot and a database, nothing in flight or queued; in the idle list.
//   kAsleep: a database that is asleep (no descriptor), no slot, nothing in flight or queued;
//     in the asleep list, which holds at most asleep_max tenants once a transition is done.
//   Every state: at most open_max slots held; the queue within tenant_queue_max; in none of
//     the policy's state lists (idle, asleep, waiting, closed) unless kIdle, kAsleep,
//     kWaitingSlot or kClosed.
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/tenant.h"
#include "sqloop/db/internal/tenant_policy.h"
#include "sqloop/db/registry.h"

namespace sqloop::db {

using internal::TenantPolicy;

RegistryStats Registry::stats() const {
  RegistryStats stats = stats_;
  stats.tenants = static_cast<uint32_t>(tenants_.size());
  stats.open = policy_->open();
  stats.active = active_;
  stats.idle = policy_->idle();
  stats.asleep = policy_->asleep();
  stats.closing = policy_->closing();
  stats.sleeps_closing = policy_->sleeps_closing();
  stats.waiting = policy_->waiting();
  stats.buried = static_cast<uint32_t>(graveyard_.size());
  stats.open_high_water = policy_->open_high_water();
  stats.memory_bytes = policy_->MemoryLive(/*exclude_closing=*/false);
  return stats;
}

size_t Registry::ByName::operator()(absl::string_view name) const {
  return absl::Hash<absl::string_view>{}(name);
}
size_t Registry::ByName::operator()(const std::unique_ptr<Tenant>& t) const {
  return (*this)(absl::string_view(t->name));
}
bool Registry::ByName::operator()(const std::unique_ptr<Tenant>& a,
                                  const std::unique_ptr<Tenant>& b) const {
  return a->name == b->name;
}
bool Registry::ByName::operator()(const std::unique_ptr<Tenant>& a, absl::string_view b) const {
  return a->name == b;
}

absl::StatusOr<TenantStats> Registry::GetTenantStats(absl::string_view tenant) const {
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) {
    return absl::NotFoundError(absl::StrCat("registry does not know tenant '", tenant,
                                            "' (never used, or forgotten beyond tenants_max)"));
  }
  const Tenant& t = **it;
  TenantStats stats = t.stats;
  stats.state = t.state;
  stats.memory_bytes = TenantPolicy::TenantMemory(t);
  return stats;
}

// The one writer of Tenant::state. Keeps the counts that follow from states (active tenants,
// deletes and closes under way) and checks the new state's invariants.
void Registry::SetState(Tenant& t, TenantState state) {
  if (t.state == TenantState::kActive) active_--;
  if (t.state == TenantState::kDeleting) deleting_--;
  if (state == TenantState::kActive) active_++;
  if (state == TenantState::kDeleting) deleting_++;
  policy_->StateChanged(t, t.state, state);
  t.state = state;
  AssertInvariants(t);
}

void Registry::AssertInvariants(const Tenant& t) const {
  const bool has_db = t.database != nullptr;
  // Asked only where a state needs it: the Database is cold memory when 10,000 tenants take
  // turns, and most transitions (to kActive, to kIdle) need no answer from it.
  auto asleep = [&] { return has_db && t.database->asleep(); };
  switch (t.state) {
    case TenantState::kClosed:
    case TenantState::kDeleting:
      SQLOOP_CHECK(!has_db && !t.has_memory_id && !t.holds_slot() && t.in_flight == 0,
                   "Registry: a closed tenant holds a database, memory, a slot or requests");
      SQLOOP_CHECK(
          t.state != TenantState::kDeleting ||
              (!t.queue.empty() && t.deletion.state() == internal::TenantDelete::State::kIdle),
          "Registry: deleting without a delete request, or with a delete running");
      break;
    case TenantState::kWaitingSlot:
      SQLOOP_CHECK(!t.holds_slot() && t.in_flight == 0 && (!has_db || asleep()),
                   "Registry: waiting for a slot with one, with requests, or awake");
      SQLOOP_CHECK(policy_->IsWaiting(t), "Registry: waiting for a slot outside the waiting FIFO");
      break;
    case TenantState::kOpening:
    case TenantState::kClosing:
      SQLOOP_CHECK((t.holds_slot() || (t.state == TenantState::kClosing && asleep())) && has_db &&
                       t.in_flight == 0,
                   "Registry: opening or closing without a database, or with requests");
      break;
    case TenantState::kActive:
      SQLOOP_CHECK(t.holds_slot() && has_db, "Registry: active without a database");
      break;
    case TenantState::kIdle:
      SQLOOP_CHECK(t.holds_slot() && has_db && t.in_flight == 0 && t.queue.empty(),
                   "Registry: idle with work, or without a database");
      SQLOOP_CHECK(policy_->IsIdle(t), "Registry: idle outside the idle list");
      break;
    case TenantState::kAsleep:
      SQLOOP_CHECK(asleep() && !t.holds_slot() && t.in_flight == 0 && t.queue.empty(),
                   "Registry: asleep with a slot or work, or without a sleeping database");
      SQLOOP_CHECK(policy_->IsAsleep(t), "Registry: asleep outside the asleep list");
      break;
  }
  const bool listed = t.state == TenantState::kIdle || t.state == TenantState::kWaitingSlot ||
                      t.state == TenantState::kClosed || t.state == TenantState::kAsleep;
  SQLOOP_CHECK(listed || !t.state_link.linked(), "Registry: a busy tenant is in a state list");
  SQLOOP_CHECK(policy_->open() <= open_max_, "Registry: more tenants open than open_max");
  SQLOOP_CHECK(t.queue.size() <= options_.tenant_queue_max, "Registry: tenant queue overfull");
}

}  // namespace sqloop::db
