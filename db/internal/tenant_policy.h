// db/internal/tenant_policy.h
// -----------------------------------------------------------------------------
//
// `TenantPolicy` decides who may open, who waits, who is evicted and who is forgotten; the
// Registry's lifecycle (db/registry.cc) carries the decisions out. It owns the lists that the
// decisions read, and the Registry tells it of each change:
//
//   - open slots: the tenants holding one (at most open_max), in the order they opened, and
//     its high-water mark; the eviction hand walks this list (below);
//   - the waiting FIFO: tenants that asked for a slot when none was free, first come first
//     served, at most waiting_opens_max;
//   - the idle list: open tenants with nothing to do, ordered by idle-since time, so its head
//     is the next idle deadline (the one sweeper timer), and a cursor into it: the first idle
//     tenant not yet trimmed (every one before it was), whose trim is the other deadline;
//   - the asleep LRU: tenants evicted for a slot whose database sleeps (no slot, no
//     descriptor), asleep the longest first: closed beyond asleep_max, after idle_timeout, and
//     first when memory is short;
//   - the closed LRU: entries remembered for their statistics, forgotten oldest first beyond
//     tenants_max;
//   - the closes under way, which count as slots about to free.
//
// Budgets (docs/multitenancy.md has the table): open_max, bounded by the descriptors of
// RLIMIT_NOFILE (`CheckOptions`); memory_bytes_max over the SQLite memory of the open tenants
// (`MemoryLive`, with an estimate for tenants still opening); waiting_opens_max and
// tenant_queue_max. Every check here changes nothing, so a refused request leaves no trace.
//
// The memory total costs no walk over the open tenants: every tenant's accounting id is in the
// policy's accounting group (alloc::RegisterTenant), whose live bytes the allocator keeps as
// the sum of its members'. Only the tenants in transit (opening, charged at least an estimate;
// closing, left out when counting what eviction must free) are looked at one by one, and there
// are only as many as opens and closes under way.
//
// Eviction is SIEVE (Zhang et al., NSDI '24): every request to an open tenant sets its
// `visited` bit, and a tenant takes its slot without it (an open and a wake alike: the request
// that brought it in is no reuse, nor are those that queued behind it meanwhile, which arrived
// with it as a burst does); to find a victim, a hand walks the open tenants from the
// oldest opened to the newest (and round again), clearing the bit of each idle tenant it passes
// that has it and stopping at the first idle tenant without it. A tenant used once since it took
// its slot goes before one used again, however recently, so a burst of one-off tenants cannot
// flush the popular ones as it does under LRU. Tenants that are not idle are passed over
// untouched. The `registry_zipf` benchmark reports the opens and wakes per request it leads to,
// against LRU (Eviction::kLru: the victim is the head of the idle list) on the same trace.
//
// The policy never starts or stops anything itself: a choice is returned (`Grant`,
// `WaiterVictim`, `ExpiredIdle`) or handed to a callback (`ChooseMemoryVictims`), and the
// Registry makes the transition, which takes the tenant out of the list it was chosen from.
//
// Internal: the Registry is the only user.
#ifndef SQLOOP_DB_INTERNAL_TENANT_POLICY_H_
#define SQLOOP_DB_INTERNAL_TENANT_POLICY_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sqloop/db/internal/tenant.h"
#include "sqloop/db/registry.h"

namespace sqloop::db::internal {

class TenantPolicy {
 public:
  // Checks the options that are budgets or limits (the directory's existence is the
  // Registry's to check) and returns open_max: as given if the descriptor limit allows it,
  // derived from that limit when 0. Errors say which option to change.
  [[nodiscard]] static absl::StatusOr<uint32_t> CheckOptions(const RegistryOptions& options);

  // `options` must outlive the policy; `open_max` comes from CheckOptions.
  TenantPolicy(const RegistryOptions& options, uint32_t open_max);
  ~TenantPolicy();
  TenantPolicy(const TenantPolicy&) = delete;
  TenantPolicy& operator=(const TenantPolicy&) = delete;

  // ---- Admission ----------------------------------------------------------------------------

  // Whether a closed tenant may ask for a slot: OK if it can open now or wait; otherwise
  // ResourceExhausted (when_full == kFail with no relief coming, or the waiting FIFO full).
  [[nodiscard]] absl::Status CheckRoomForOpen() const;
  // ResourceExhausted if `t`'s queue is at tenant_queue_max.
  [[nodiscard]] absl::Status CheckRoomInQueue(const Tenant& t) const;
  // A slot is free (and the memory budget allows another open) and no one waits ahead.
  [[nodiscard]] bool MayOpenNow() const { return waiting_.empty() && HasRoom(); }

  // ---- Slots and the waiting FIFO -----------------------------------------------------------

  void TakeSlot(Tenant& t);
  void ReleaseSlot(Tenant& t);
  // A tenant gave its slot back to sleep and its descriptors' closes are in flight: until
  // SleepClosed, they count as a slot still taken (registry invariant 3).
  void SleepClosing() { sleeps_closing_++; }
  void SleepClosed();
  void Wait(Tenant& t) { waiting_.PushBack(t); }
  // The head of the waiting FIFO, taken out of it, when there is room for it; else null.
  [[nodiscard]] Tenant* Grant();
  // The head of the waiting FIFO, taken out of it whatever the room (shutdown); else null.
  [[nodiscard]] Tenant* PopWaiting() { return waiting_.PopFront(); }
  [[nodiscard]] bool IsWaiting(const Tenant& t) const { return waiting_.Contains(t); }

  // ---- Idle tenants and eviction ------------------------------------------------------------

  // `t` became idle at `now_ns`: it goes to the back of the LRU (its deadline is the latest).
  void AddIdle(Tenant& t, int64_t now_ns);
  void RemoveIdle(Tenant& t);
  // A use that keeps `t` idle (an open-only request): back of the line, deadline renewed.
  void TouchIdle(Tenant& t, int64_t now_ns);
  // A request reached `t` while it was open: SIEVE's bit.
  static void Used(Tenant& t) { t.visited = true; }
  [[nodiscard]] bool IsIdle(const Tenant& t) const { return idle_.Contains(t); }
  // The idle tenant idle the longest, or null.
  [[nodiscard]] Tenant* OldestIdle() const { return idle_.front(); }
  // The tenant to evict for the waiters, or null once the closes under way cover them: an idle
  // one (SIEVE), or when only memory is short and none is idle, the one asleep the longest.
  // Moves the hand: the caller must put the victim to sleep or start its close.
  [[nodiscard]] Tenant* WaiterVictim();
  // Calls `evict` on sleeping tenants, the longest asleep first, then on idle tenants chosen
  // by SIEVE, until the tenants' memory (counting what the evicted ones will free) fits
  // memory_bytes_max. `evict` must start the tenant's close, which takes it out of its list.
  void ChooseMemoryVictims(absl::FunctionRef<void(Tenant&)> evict);
  // Whether the memory budget is what keeps a tenant from opening: sleeping frees no memory.
  [[nodiscard]] bool MemoryFull() const;
  // The oldest idle tenant if its idle_timeout has passed at `now_ns`, or null.
  [[nodiscard]] Tenant* ExpiredIdle(int64_t now_ns) const;

  // ---- Sleeping tenants ---------------------------------------------------------------------

  // `t` fell asleep at `now_ns`: the back of the asleep LRU, not trimmed yet.
  void AddAsleep(Tenant& t, int64_t now_ns);
  void RemoveAsleep(Tenant& t);
  [[nodiscard]] bool IsAsleep(const Tenant& t) const { return asleep_.Contains(t); }
  [[nodiscard]] Tenant* OldestAsleep() const { return asleep_.front(); }
  // The tenant asleep the longest if its idle_timeout since it fell asleep has passed at
  // `now_ns`, or null.
  [[nodiscard]] Tenant* ExpiredAsleep(int64_t now_ns) const;
  // The first idle tenant not yet trimmed, or else the first sleeping one, taken past, if its
  // idle_trim_after has passed at `now_ns` (or whatever its time if `now_ns` is -1); else
  // null. The caller trims it.
  [[nodiscard]] Tenant* TrimDue(int64_t now_ns);
  // The sweeper's next deadline: the oldest idle or sleeping tenant's close or the next trim,
  // whichever comes first; -1 when none is idle or asleep.
  [[nodiscard]] int64_t NextIdleDeadlineNs() const;

  // ---- Opens and closes under way -----------------------------------------------------------

  // Told of every change of a tenant's state (Registry::SetState): keeps the tenants in
  // transit and the count of closes under way.
  void StateChanged(Tenant& t, TenantState from, TenantState to);

  // ---- Closed entries -----------------------------------------------------------------------

  void AddClosed(Tenant& t) { closed_.PushBack(t); }
  void RemoveClosed(Tenant& t) { closed_.Remove(t); }
  // The entry to forget to make room for a new one when the table holds `entries`: null if
  // there is room; the least recently closed (taken out of the list) if not; an error if none
  // is closed.
  [[nodiscard]] absl::StatusOr<Tenant*> EntryToForget(size_t entries);

  // ---- Memory -------------------------------------------------------------------------------

  // The accounting group every tenant's accounting id is registered in (created on the first
  // call, named `name`, unique in the process; unregistered with the policy).
  [[nodiscard]] absl::StatusOr<alloc::TenantId> MemoryGroup(absl::string_view name);
  // The SQLite bytes `t` holds now (0 without an accounting tenant).
  [[nodiscard]] static uint64_t TenantMemory(const Tenant& t);
  // The SQLite bytes of the registry's tenants, each one still opening counted at least
  // open_memory_estimate_bytes; without the closing ones if `exclude_closing`. O(tenants in
  // transit), not O(open). A tenant whose accounting id could not be unregistered (its bytes
  // leaked) stays counted: the bytes are still held.
  [[nodiscard]] uint64_t MemoryLive(bool exclude_closing) const;

  // ---- Counts -------------------------------------------------------------------------------

  [[nodiscard]] uint32_t open() const { return static_cast<uint32_t>(open_.size()); }
  [[nodiscard]] uint32_t open_high_water() const { return open_high_water_; }
  [[nodiscard]] uint32_t idle() const { return static_cast<uint32_t>(idle_.size()); }
  [[nodiscard]] uint32_t waiting() const { return static_cast<uint32_t>(waiting_.size()); }
  [[nodiscard]] uint32_t asleep() const { return static_cast<uint32_t>(asleep_.size()); }
  [[nodiscard]] uint32_t closing() const { return closing_; }
  [[nodiscard]] uint32_t sleeps_closing() const { return sleeps_closing_; }
  [[nodiscard]] uint32_t open_max() const { return open_max_; }

 private:
  [[nodiscard]] uint32_t ClosesUnderWay() const;
  // The open_max part of CheckOptions.
  [[nodiscard]] static absl::StatusOr<uint32_t> OpenMax(const RegistryOptions& options);
  // A slot is free and the memory budget allows one more open tenant.
  [[nodiscard]] bool HasRoom() const;
  // When the oldest idle tenant's idle_timeout runs out; -1 when none is idle.
  [[nodiscard]] int64_t CloseDeadlineNs() const;
  // SIEVE: the next idle tenant without its bit, from the hand on; null when none is idle.
  [[nodiscard]] Tenant* NextVictim();

  const RegistryOptions& options_;
  const uint32_t open_max_;
  int64_t idle_timeout_ns_;      // -1: never.
  SlotList open_;                // Tenants holding a slot, oldest opened first.
  Tenant* hand_ = nullptr;       // SIEVE's hand: in open_, or null for its front.
  TenantList waiting_;           // kWaitingSlot tenants, first come first served.
  TenantList idle_;              // kIdle tenants, idle the longest (earliest deadline) first.
  Tenant* trim_next_ = nullptr;  // In idle_: the first not yet trimmed; null if none.
  Tenant* asleep_trim_next_ = nullptr;  // In asleep_: the same.
  int64_t idle_trim_after_ns_;          // -1: never.
  TenantList asleep_;                   // kAsleep tenants, asleep the longest first.
  TenantList closed_;                   // Resting kClosed tenants, least recently closed first.
  TransitList transit_;                 // kOpening and kClosing tenants.
  // Tenants in kClosing: slots (or, for a sleeper, memory) about to free. A sleeper's close
  // frees no slot, so a waiter it covered is looked at again when it ends (OnClosed grants).
  uint32_t closing_ = 0;
  // Of those, the ones that hold a slot until their close ends (a sleeper's close has none).
  uint32_t slot_closes_ = 0;
  // Sleepers whose descriptors are still closing: slots about to free, as closing_'s.
  uint32_t sleeps_closing_ = 0;
  alloc::TenantId memory_group_ = alloc::kSharedTenant;  // kSharedTenant until MemoryGroup.
  uint32_t open_high_water_ = 0;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_TENANT_POLICY_H_
