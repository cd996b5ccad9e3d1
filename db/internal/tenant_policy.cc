// The Registry's admission, eviction and forgetting policy (db/internal/tenant_policy.h).
#include "sqloop/db/internal/tenant_policy.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::db {
namespace {

// The soft limit on descriptors; "unlimited" (and an unreadable limit) as UINT64_MAX.
uint64_t DescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  return limit.rlim_cur;
}

}  // namespace

// Declared in db/registry.h; defined here, next to the check that uses it.
uint32_t DescriptorBoundOpenMax(uint32_t reserved) {
  const uint64_t descriptors = DescriptorLimit();
  if (descriptors < uint64_t{reserved} + kDescriptorsPerDatabase) return 0;
  return static_cast<uint32_t>(
      std::min<uint64_t>((descriptors - reserved) / kDescriptorsPerDatabase, kOpenMaxDerivedMax));
}

// Declared in db/registry.h: by F_DUPFD to the last descriptor, closed again at once.
absl::Status ReserveDescriptorTable(uint64_t descriptors) {
  if (descriptors > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("ReserveDescriptorTable: ", descriptors,
                                                   " descriptors is more than a process can have"));
  }
  const int probe = open("/", O_PATH | O_CLOEXEC);
  if (probe < 0) return io::ErrnoStatus(-errno, "cannot open '/' to size the descriptor table");
  const absl::Cleanup close_probe = [probe] { close(probe); };
  if (static_cast<uint64_t>(probe) + 1 >= descriptors) return absl::OkStatus();
  const int last = fcntl(probe, F_DUPFD_CLOEXEC, static_cast<int>(descriptors - 1));
  if (last < 0) {
    return io::ErrnoStatus(
        -errno, absl::StrCat("cannot grow the descriptor table to ", descriptors,
                             " descriptors; RLIMIT_NOFILE must allow that many (ulimit -n), "
                             "or ask for fewer (open_max, descriptors_reserved)"));
  }
  close(last);
  return absl::OkStatus();
}

namespace internal {

absl::StatusOr<uint32_t> TenantPolicy::CheckOptions(const RegistryOptions& options) {
  if (options.directory.empty()) {
    return absl::InvalidArgumentError(
        "RegistryOptions::directory is empty; name the directory "
        "that holds the tenants' databases");
  }
  if (options.idle_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("RegistryOptions::idle_timeout must be positive");
  }
  if (options.idle_trim_after < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "RegistryOptions::idle_trim_after must be 0 or more (InfiniteDuration: never trim)");
  }
  if (options.memory_bytes_max > 0 && !alloc::SqliteMemoryInstalled()) {
    return absl::FailedPreconditionError(
        "RegistryOptions::memory_bytes_max needs SQLite's memory accounting: call "
        "alloc::InstallSqliteMemory() at startup, before any other SQLite use");
  }
  return OpenMax(options);
}

absl::StatusOr<uint32_t> TenantPolicy::OpenMax(const RegistryOptions& options) {
  const uint64_t descriptors = DescriptorLimit();
  const uint64_t open_max = options.open_max;
  if (open_max == 0) {
    const uint32_t derived = DescriptorBoundOpenMax(options.descriptors_reserved);
    if (derived == 0) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "RLIMIT_NOFILE is %d, too low to open even one database after reserving %d "
          "descriptors; raise it (ulimit -n) or lower descriptors_reserved",
          descriptors, options.descriptors_reserved));
    }
    return derived;
  }
  if (open_max > kOpenMaxLimit ||
      open_max * kDescriptorsPerDatabase + options.descriptors_reserved > descriptors) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "open_max %d needs up to %d descriptors plus %d reserved, but RLIMIT_NOFILE is %d "
        "(and the registry allows at most %d); lower open_max or raise the limit (ulimit -n)",
        open_max, open_max * kDescriptorsPerDatabase, options.descriptors_reserved, descriptors,
        kOpenMaxLimit));
  }
  return static_cast<uint32_t>(open_max);
}

namespace {

// A delay in nanoseconds; -1 (never) for InfiniteDuration.
int64_t DelayNs(absl::Duration delay) {
  return delay == absl::InfiniteDuration() ? -1 : absl::ToInt64Nanoseconds(delay);
}

// `delay_ns` after `since_ns`, or -1 (never) when the delay is never or the sum would not fit:
// a delay of centuries is never for a loop's clock, and must not wrap into the past.
int64_t After(int64_t since_ns, int64_t delay_ns) {
  if (delay_ns < 0 || since_ns > std::numeric_limits<int64_t>::max() - delay_ns) return -1;
  return since_ns + delay_ns;
}

}  // namespace

TenantPolicy::TenantPolicy(const RegistryOptions& options, uint32_t open_max)
    : options_(options),
      open_max_(open_max),
      idle_timeout_ns_(DelayNs(options.idle_timeout)),
      idle_trim_after_ns_(DelayNs(options.idle_trim_after)) {}

// ---- Admission ------------------------------------------------------------------------------

// The closes under way that free what an open waits for: with every slot taken, those that
// give one back (a sleeper's close holds none, its descriptors' closes do); with memory short,
// every close.
uint32_t TenantPolicy::ClosesUnderWay() const {
  const bool slots_full = open_.size() + sleeps_closing_ >= open_max_;
  return (slots_full ? slot_closes_ : closing_) + sleeps_closing_;
}

absl::Status TenantPolicy::CheckRoomForOpen() const {
  if (MayOpenNow()) return absl::OkStatus();
  // Relief is coming if an idle tenant can be evicted or a close already under way frees a
  // slot that no earlier waiter has claimed.
  const bool relief = !idle_.empty() || ClosesUnderWay() > waiting_.size();
  if (options_.when_full == WhenFull::kFail && !relief) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "registry has %d of %d databases open (SQLite memory %d of %d bytes, 0 = no budget) "
        "and none is idle; retry later, or raise open_max / memory_bytes_max",
        open_.size(), open_max_, MemoryLive(/*exclude_closing=*/false), options_.memory_bytes_max));
  }
  if (waiting_.size() >= options_.waiting_opens_max) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "registry has %d tenants waiting for one of its %d open slots (the limit of "
        "waiting_opens_max); retry later, or raise open_max or waiting_opens_max",
        waiting_.size(), open_max_));
  }
  return absl::OkStatus();
}

absl::Status TenantPolicy::CheckRoomInQueue(const Tenant& t) const {
  if (t.queue.size() < options_.tenant_queue_max) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "tenant '%s' has %d requests waiting for it to open or close; retry after some "
      "complete (raise tenant_queue_max if bursts this large are expected)",
      t.name, t.queue.size()));
}

bool TenantPolicy::HasRoom() const {
  return open_.size() + sleeps_closing_ < open_max_ && !MemoryFull();
}

// One tenant may always open, so a budget smaller than one database cannot deadlock.
bool TenantPolicy::MemoryFull() const {
  if (options_.memory_bytes_max == 0 || open_.empty()) return false;
  return MemoryLive(/*exclude_closing=*/false) >= options_.memory_bytes_max;
}

// ---- Slots and the waiting FIFO -------------------------------------------------------------

void TenantPolicy::TakeSlot(Tenant& t) {
  SQLOOP_CHECK(!t.holds_slot(), "TenantPolicy: a tenant took a second slot");
  open_.PushBack(t);
  open_high_water_ = std::max(open_high_water_, open());
  SQLOOP_CHECK(open_.size() + sleeps_closing_ <= open_max_,
               "TenantPolicy: more tenants open (or closing a sleep's descriptors) than open_max");
}

void TenantPolicy::SleepClosed() {
  SQLOOP_CHECK(sleeps_closing_ > 0, "TenantPolicy: a sleep's closes ended that were not counted");
  sleeps_closing_--;
}

void TenantPolicy::ReleaseSlot(Tenant& t) {
  SQLOOP_CHECK(t.holds_slot(), "TenantPolicy: releasing a slot the tenant does not hold");
  if (hand_ == &t) hand_ = SlotList::Next(t);
  if (t.state == TenantState::kClosing) {  // Its close ended (Registry::OnClosed).
    SQLOOP_CHECK(slot_closes_ > 0, "TenantPolicy: a close gave back a slot it was not counted for");
    slot_closes_--;
  }
  open_.Remove(t);
  t.visited = false;
}

Tenant* TenantPolicy::Grant() {
  if (waiting_.empty() || !HasRoom()) return nullptr;
  return waiting_.PopFront();
}

// ---- Idle tenants and eviction --------------------------------------------------------------

void TenantPolicy::AddIdle(Tenant& t, int64_t now_ns) {
  t.idle_since_ns = now_ns;
  idle_.PushBack(t);
  if (trim_next_ == nullptr) trim_next_ = &t;  // Every tenant ahead of it is trimmed.
}

void TenantPolicy::RemoveIdle(Tenant& t) {
  if (trim_next_ == &t) trim_next_ = TenantList::Next(t);
  idle_.Remove(t);
}

void TenantPolicy::TouchIdle(Tenant& t, int64_t now_ns) {
  RemoveIdle(t);
  AddIdle(t, now_ns);
}

// A sleeper is trimmed idle_trim_after after it fell asleep (the trim it missed while idle, if
// it was evicted sooner than that), as an idle tenant is.
void TenantPolicy::AddAsleep(Tenant& t, int64_t now_ns) {
  t.idle_since_ns = now_ns;
  asleep_.PushBack(t);
  if (asleep_trim_next_ == nullptr) asleep_trim_next_ = &t;
}

void TenantPolicy::RemoveAsleep(Tenant& t) {
  if (asleep_trim_next_ == &t) asleep_trim_next_ = TenantList::Next(t);
  asleep_.Remove(t);
}

Tenant* TenantPolicy::TrimDue(int64_t now_ns) {
  for (Tenant** cursor : {&trim_next_, &asleep_trim_next_}) {
    Tenant* t = *cursor;
    if (t == nullptr) continue;
    const int64_t due_ns = After(t->idle_since_ns, idle_trim_after_ns_);
    if (now_ns >= 0 && (due_ns < 0 || due_ns > now_ns)) continue;
    *cursor = TenantList::Next(*t);
    return t;
  }
  return nullptr;
}

// One victim per waiter not yet covered by a close under way, so nothing is evicted twice over.
Tenant* TenantPolicy::WaiterVictim() {
  if (waiting_.size() <= ClosesUnderWay()) return nullptr;
  if (Tenant* idle = NextVictim()) return idle;
  return MemoryFull() ? asleep_.front() : nullptr;
}

void TenantPolicy::ChooseMemoryVictims(absl::FunctionRef<void(Tenant&)> evict) {
  if (options_.memory_bytes_max == 0) return;
  uint64_t live = MemoryLive(/*exclude_closing=*/true);
  while (live > options_.memory_bytes_max) {
    Tenant* victim = asleep_.empty() ? NextVictim() : asleep_.front();
    if (victim == nullptr) return;
    const uint64_t freed = TenantMemory(*victim);
    evict(*victim);
    SQLOOP_CHECK(!victim->state_link.linked(), "TenantPolicy: an evicted tenant is still listed");
    live = live > freed ? live - freed : 0;
  }
}

// Two rounds at most: the first clears the bit of every idle tenant it passes, so the second
// stops at one. The victim keeps its slot until its close finishes; the hand moves past it.
Tenant* TenantPolicy::NextVictim() {
  if (idle_.empty()) return nullptr;
  if (options_.eviction == Eviction::kLru) return idle_.front();
  Tenant* t = hand_ != nullptr ? hand_ : open_.front();
  for (size_t steps = 0;; ++steps) {
    SQLOOP_CHECK(steps <= 2 * open_.size(), "TenantPolicy: the hand found no idle tenant");
    Tenant* next = SlotList::Next(*t);
    if (next == nullptr) next = open_.front();
    if (t->state == TenantState::kIdle) {
      if (!t->visited) {
        hand_ = next == t ? nullptr : next;
        return t;
      }
      t->visited = false;
    }
    t = next;
  }
}

int64_t TenantPolicy::CloseDeadlineNs() const {
  return idle_.empty() ? -1 : After(idle_.front()->idle_since_ns, idle_timeout_ns_);
}

Tenant* TenantPolicy::ExpiredIdle(int64_t now_ns) const {
  const int64_t deadline_ns = CloseDeadlineNs();
  return deadline_ns >= 0 && deadline_ns <= now_ns ? idle_.front() : nullptr;
}

Tenant* TenantPolicy::ExpiredAsleep(int64_t now_ns) const {
  const Tenant* t = asleep_.front();
  const int64_t deadline_ns = t != nullptr ? After(t->idle_since_ns, idle_timeout_ns_) : -1;
  return deadline_ns >= 0 && deadline_ns <= now_ns ? asleep_.front() : nullptr;
}

int64_t TenantPolicy::NextIdleDeadlineNs() const {
  int64_t next_ns = CloseDeadlineNs();
  const auto earlier = [&next_ns](int64_t deadline_ns) {  // -1: never, so no earlier.
    if (deadline_ns >= 0) next_ns = next_ns < 0 ? deadline_ns : std::min(next_ns, deadline_ns);
  };
  for (const Tenant* t : {trim_next_, asleep_trim_next_}) {
    if (t != nullptr) earlier(After(t->idle_since_ns, idle_trim_after_ns_));
  }
  if (!asleep_.empty()) earlier(After(asleep_.front()->idle_since_ns, idle_timeout_ns_));
  return next_ns;
}

// ---- Closes under way and closed entries ----------------------------------------------------

namespace {
bool InTransit(TenantState state) {
  return state == TenantState::kOpening || state == TenantState::kClosing;
}
}  // namespace

void TenantPolicy::StateChanged(Tenant& t, TenantState from, TenantState to) {
  if (from == TenantState::kClosing) {
    SQLOOP_CHECK(closing_ > 0, "TenantPolicy: a close finished that was not under way");
    closing_--;
  }
  if (to == TenantState::kClosing) {
    closing_++;
    if (t.holds_slot()) slot_closes_++;
  }
  if (InTransit(from) && !InTransit(to)) transit_.Remove(t);
  if (!InTransit(from) && InTransit(to)) transit_.PushBack(t);
}

absl::StatusOr<Tenant*> TenantPolicy::EntryToForget(size_t entries) {
  if (entries < options_.tenants_max) return nullptr;
  if (closed_.empty()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "registry tracks %d tenants and none is closed; retry later or raise tenants_max",
        entries));
  }
  return closed_.PopFront();  // Least recently closed: its statistics are the oldest.
}

// ---- Memory ---------------------------------------------------------------------------------

uint64_t TenantPolicy::TenantMemory(const Tenant& t) {
  if (!t.has_memory_id) return 0;
  absl::StatusOr<alloc::ProfileCounters> counters = alloc::GetTenantCounters(t.memory_id);
  return counters.ok() ? counters->live_bytes : 0;
}

absl::StatusOr<alloc::TenantId> TenantPolicy::MemoryGroup(absl::string_view name) {
  if (memory_group_ != alloc::kSharedTenant) return memory_group_;
  absl::StatusOr<alloc::TenantId> group = alloc::RegisterTenant(name);
  if (group.ok()) memory_group_ = *group;
  return group;
}

TenantPolicy::~TenantPolicy() {
  // Fails only if a tenant's bytes leaked (its id could not be unregistered either); the
  // group's id then stays registered with it, counted where that leak was.
  if (memory_group_ != alloc::kSharedTenant) alloc::UnregisterTenant(memory_group_).IgnoreError();
}

// A tenant whose open has not finished is charged at least open_memory_estimate_bytes: its
// real cost only shows once SQLite has opened it, and without the estimate a burst of opens
// would all pass the budget check at once.
uint64_t TenantPolicy::MemoryLive(bool exclude_closing) const {
  uint64_t total = 0;
  if (memory_group_ != alloc::kSharedTenant) {
    absl::StatusOr<alloc::ProfileCounters> group = alloc::GetTenantCounters(memory_group_);
    if (group.ok()) total = group->live_bytes;
  }
  for (const Tenant* t = transit_.front(); t != nullptr; t = TransitList::Next(*t)) {
    const uint64_t known = TenantMemory(*t);
    if (t->state == TenantState::kOpening) {
      total += std::max(known, options_.open_memory_estimate_bytes) - known;
    } else if (exclude_closing) {
      total -= std::min(known, total);
    }
  }
  return total;
}

}  // namespace internal
}  // namespace sqloop::db
