// db/internal/tenant.h
// -----------------------------------------------------------------------------
//
// `Tenant`: the Registry's entry for one tenant, shared by the lifecycle (db/registry.cc, the
// only writer of `state`) and the policy (db/internal/tenant_policy.h, which owns the lists
// the entry is linked into). One per tenant the registry knows, open or remembered closed.
//
// An entry is in at most one list through `state_link` (which one follows from its state: the
// idle LRU when kIdle, the asleep LRU when kAsleep, the waiting FIFO when kWaitingSlot, the
// closed LRU when resting in kClosed) and in the open list through `slot_link` while it holds
// an open slot.
//
// Internal: not installed; only db/registry.cc and db/internal/ include it.
#ifndef SQLOOP_DB_INTERNAL_TENANT_H_
#define SQLOOP_DB_INTERNAL_TENANT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "sqloop/alloc/intrusive_list.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/database.h"
#include "sqloop/db/internal/tenant_delete.h"
#include "sqloop/db/registry.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

// Why a tenant is being closed; counted in its statistics.
enum class CloseReason : uint8_t { kIdle, kEvicted, kDelete, kPoisoned, kWakeFailed, kShutdown };

struct Tenant {
  // Requests that arrived while the tenant could not take them (not open yet, closing, or
  // behind a delete), in submission order.
  using Queue = IntrusiveList<TenantRequest, &TenantRequest::tenant_link_>;

  Registry* registry = nullptr;
  // The state next to the name, in the entry's first cache line: a request's lookup compares
  // the name and then reads the state.
  TenantState state = TenantState::kClosed;
  std::string name;
  std::string path;
  std::unique_ptr<Database> database;
  alloc::TenantId memory_id = alloc::kSharedTenant;
  bool has_memory_id = false;
  uint32_t in_flight = 0;  // Requests submitted to the Database and not done.
  // The database's DatabaseStats::wakes_failed when it took its slot asleep (StartOpen): a
  // wake of this turn failed if the count grew since.
  uint64_t wakes_failed_before = 0;
  Queue queue;
  ListLink<Tenant> state_link;  // In the idle, asleep, waiting or closed list (see above).
  ListLink<Tenant> slot_link;   // In the open list while holding a slot.
  // In the policy's transit list while opening or closing: the tenants whose memory is
  // counted other than as its live bytes (TenantPolicy::MemoryLive).
  ListLink<Tenant> transit_link;
  CloseReason close_reason = CloseReason::kIdle;
  // The close's next tick, the delete's unlinks and fsync: one at a time, told apart by `state`.
  loop::Completion io;
  TenantDelete deletion;      // The kDeleting sub-machine.
  int64_t idle_since_ns = 0;  // kIdle: since it went idle; kAsleep: since it fell asleep.
  // SIEVE's bit: a request reached the tenant while it was open since the eviction hand last
  // passed it (TenantPolicy::Used, NextVictim).
  bool visited = false;
  TenantStats stats;

  [[nodiscard]] bool holds_slot() const { return slot_link.linked(); }
};

// The lists of tenants, by the link they use.
using TenantList = IntrusiveList<Tenant, &Tenant::state_link>;
using SlotList = IntrusiveList<Tenant, &Tenant::slot_link>;
using TransitList = IntrusiveList<Tenant, &Tenant::transit_link>;

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_TENANT_H_
