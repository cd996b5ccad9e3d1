// The Registry: a tenant's lifecycle as a state machine on the loop. What the lifecycle may do
// (who opens, who waits, who is evicted or forgotten) is the policy's decision
// (db/internal/tenant_policy.h); how a deleted tenant's files go is the delete sub-machine
// (db/internal/tenant_delete.h). This file carries out the transitions.
//
// clang-format off
//                       Submit: no slot, nothing evictable yet
//             +------------------------------------------------> kWaitingSlot
//             |                                                       |
//             |        Submit: slot free              slot granted    |
//   kClosed --+---------------------------------+<--------------------+
//      ^                                        |
//      |                                        +-------------------+
//      |                                                            v
//      |   open failed, or NotFound: no file                  +-----------+
//      +<-----------------------------------------------------| kOpening  |  the Database creates
//      |   (or an empty one), and no queued                   +-----------+  the file only for
//      |   request may create it                                    |       create_if_missing
//      |                                                    open ok |
//      |                                                            v
//      |                request arrives               +-----------+  queue served,
//      |          +---------------------------------> | kActive   |  requests in flight
//      |          |                                   +-----------+
//      |     +---------+   last request done               |
//      |     |  kIdle  | <---------------------------------+
//      |     +---------+                                   ^ slot taken (a wake),
//      |          |    evicted for a slot: sleeps          | at once or from kWaitingSlot
//      |          +-------------------------------> +-----------+
//      |          |                                 | kAsleep   |
//      |          |                                 +-----------+
//      |          | idle timeout, evicted,                 | idle timeout, beyond asleep_max,
//      |          | delete queued, shutdown                | memory, delete, shutdown
//      |          v <--------------------------------------+
//      |     +-----------+  close done, a delete at the queue head   +-----------+
//      +-----| kClosing  |------------------------------------------>| kDeleting |
//      |     +-----------+                                           +-----------+
//      |          | close done, requests queued meanwhile: reopen          |
//      |          +--> kOpening / kWaitingSlot (keeps its place)           |
//      +<--------------------------------------------------------------------+
//                              unlinked (or NotFound), directory synced
//
//   transition                  function                    invariant in the new state
//   kClosed -> kWaitingSlot     Kick->RequestSlot           in the waiting FIFO; no slot
//   kClosed -> kOpening         StartOpen->StartDatabase    holds a slot, a database, a memory id
//   kWaitingSlot -> kOpening    GrantSlots->StartOpen       (as from kClosed)
//   kWaitingSlot -> kClosed     Shutdown                    its queued executes failed
//   kWaitingSlot -> kActive     GrantSlots->StartOpen       (it slept) a slot; its database wakes
//                                                           itself for the queued requests
//   kWaitingSlot -> kClosing    Shutdown->StartClose        (it slept) its queued executes failed;
//                                                           no slot; the close touches no file
//   kOpening -> kActive         OnOpened                    the database is ready
//   kOpening -> kClosed         OnOpened->FailOpen          no database, slot or memory id
//   kOpening -> kClosed         OnOpened->NotFound          as above; the requests in front of the
//                                                           first create_if_missing one failed
//   kOpening -> kClosing        OnOpened->StartClose        (poisoned) as below
//   kActive -> kIdle            ServeQueue->BecomeIdle      in the idle list; no request at all
//   kActive -> kIdle            OnRequestDone->BecomeIdle   (as above)
//   kIdle -> kActive            Submit->SubmitToOpen        not in the idle list; in flight > 0
//   kIdle -> kAsleep            EvictForWaiters->PutToSleep no slot; the database asleep; in the
//                                                           asleep list (its oldest closed beyond
//                                                           asleep_max); a slot counted taken
//                                                           until its descriptors are closed
//                                                           (OnSleepClosed)
//   kAsleep -> kActive          Kick->RequestSlot->StartOpen  a slot again; the database wakes
//                                                           itself for the queued requests
//   kAsleep -> kWaitingSlot     Kick->RequestSlot           (as from kClosed), keeping its database
//   kActive -> kAsleep          BecomeIdle->FallAsleep      it took a slot for requests that needed
//                                                           no wake (open-only ones)
//   kIdle -> kClosing           StartClose                  slot and database; nothing in flight;
//                                                           the close runs on the next tick
//   kAsleep -> kClosing         StartClose                  no slot; the close touches no file
//   kActive -> kClosing         BecomeIdle->StartClose      (wake failed) the database still asleep
//   kActive -> kClosing         OnRequestDone->StartClose   (as above: poisoned, delete, shutdown)
//   kClosing -> kClosed         OnClosed->AfterClosed       no database, slot or memory id
//   kClosing -> kDeleting       AfterClosed->StartDelete    as kClosed; a delete at the queue head
//   kClosing -> kWaitingSlot    AfterClosed->RequestSlot    requests arrived while it closed
//   kClosed -> kDeleting        Kick->StartDelete           (as from kClosing)
//   kDeleting -> kClosed        OnTenantIo->FinishDelete    the delete request completed
// clang-format on
//
// The invariants of each state are in registry_state.cc, next to AssertInvariants.
#include "sqloop/db/registry.h"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/tenant.h"
#include "sqloop/db/internal/tenant_policy.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::db {
namespace {

using internal::CloseReason;
using internal::TenantPolicy;

// The file of a tenant is `<directory>/<name>` + this. The journal and WAL add "-journal" and
// "-wal" (SQLite's names), which the delete removes too.
constexpr absl::string_view kFileSuffix = ".db";

}  // namespace

// ---- Creation and destruction ---------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Registry>> Registry::Create(loop::Loop& loop, Vfs& vfs,
                                                           RegistryOptions options) {
  absl::StatusOr<uint32_t> open_max = TenantPolicy::CheckOptions(options);
  if (!open_max.ok()) return open_max.status();
  if (absl::Status table = ReserveDescriptorTable(uint64_t{*open_max} * kDescriptorsPerDatabase +
                                                  options.descriptors_reserved);
      !table.ok()) {
    return table;
  }
  io::Op dir_op = io::OpenDirectoryOp(options.directory.c_str());
  const int64_t dir_fd = loop.WaitForOp(dir_op);
  if (dir_fd < 0) {
    // Only a missing directory is the host's to create; the rest say what they are (a file in
    // its place, descriptors or permission short) with the code that fits the errno.
    const std::string what =
        absl::StrCat("cannot open the tenants' directory '", options.directory, "'");
    if (dir_fd == -ENOENT) {
      return absl::NotFoundError(absl::StrCat(what, ": ", io::ErrnoText(dir_fd),
                                              "; create it before starting the registry"));
    }
    return io::ErrnoStatus(dir_fd, what);
  }
  // Accounting names are unique per process: by default a registry's are its directory's.
  if (options.memory_name_prefix.empty()) {
    options.memory_name_prefix = absl::StrCat(options.directory, "/");
  }
  return std::unique_ptr<Registry>(
      new Registry(loop, vfs, std::move(options), *open_max, static_cast<int>(dir_fd)));
}

Registry::Registry(loop::Loop& loop, Vfs& vfs, RegistryOptions options, uint32_t open_max,
                   int dir_fd)
    : loop_(loop),
      vfs_(vfs),
      options_(std::move(options)),
      open_max_(open_max),
      dir_fd_(dir_fd),
      policy_(std::make_unique<TenantPolicy>(options_, open_max)) {
  sweeper_.callback = &Registry::OnSweep;
  sweeper_.user_data = this;
  sweeper_.name = "registry idle sweep";
  deferred_.callback = &Registry::OnDeferred;
  deferred_.user_data = this;
  deferred_.name = "registry deferred";
  dir_close_.callback = &Registry::OnDirClosed;
  dir_close_.user_data = this;
  dir_close_.name = "registry directory close";
  stats_.open_max = open_max_;
}

Registry::~Registry() {
  SQLOOP_CHECK(shut_down_,
               "Registry destroyed before Shutdown() called back; call Shutdown() "
               "and run the loop until it does");
}

std::string Registry::PathOf(absl::string_view tenant) const {
  return absl::StrCat(options_.directory, "/", tenant, kFileSuffix);
}

// ---- Admission ------------------------------------------------------------------------------

absl::Status Registry::Submit(TenantRequest& request) {
  SQLOOP_CHECK(!request.submitted_,
               "Registry::Submit: the request is already submitted; wait for on_done");
  SQLOOP_CHECK(request.on_done != nullptr || request.tenant_layer_done_ != nullptr,
               "Registry::Submit: on_done is not set");
  if (shutting_down_) {
    stats_.rejected++;
    return absl::FailedPreconditionError("registry is shutting down and takes no requests");
  }
  if (absl::Status valid = ValidateTenantName(request.tenant); !valid.ok()) {
    stats_.rejected++;
    return valid;
  }
  absl::StatusOr<Tenant*> found = Admit(request);
  if (!found.ok()) {
    stats_.rejected++;
    return found.status();
  }
  Tenant& t = **found;
  static_cast<Request&>(request).layer_done_ = &Registry::OnRequestDone;
  request.tenant_ = &t;
  request.tenant_status_ = absl::OkStatus();
  const bool direct = (t.state == TenantState::kActive || t.state == TenantState::kIdle) &&
                      t.queue.empty() && request.action == TenantRequest::Action::kExecute;
  if (direct) return SubmitToOpen(t, request);
  request.submitted_ = true;
  Enqueue(t, request);
  Kick(t);
  return absl::OkStatus();
}

// A request enters and leaves a tenant's queue only through these two, so that its Client
// counts it while it waits there: the Database it goes to later delivers it through the Client,
// which must still be alive (~Client checks).
void Registry::Enqueue(Tenant& t, TenantRequest& request) {
  t.queue.PushBack(request);
  if (request.client != nullptr) request.client->queued_++;
}

TenantRequest& Registry::Dequeue(Tenant& t) {
  TenantRequest* request = t.queue.PopFront();
  SQLOOP_CHECK(request != nullptr, "Registry: a tenant's queue is empty");
  if (request->client != nullptr) request->client->queued_--;
  return *request;
}

// The common case: an execute for an open tenant with nothing queued goes straight to its
// Database.
absl::Status Registry::SubmitToOpen(Tenant& t, TenantRequest& request) {
  TenantPolicy::Used(t);
  if (request.sql.empty() && request.batch.empty()) {
    // Open-only, and it is open: done (on the loop, as promised). A use: the tenant goes to
    // the back of the idle line.
    request.submitted_ = true;
    if (t.state == TenantState::kIdle) policy_->TouchIdle(t, loop_.now_ns());
    Complete(t, request, absl::OkStatus(), /*defer=*/true);
    return absl::OkStatus();
  }
  if (absl::Status admitted = t.database->Submit(request); !admitted.ok()) {
    stats_.rejected++;
    if (t.database->state() == Database::State::kPoisoned && t.in_flight == 0) {
      StartClose(t, CloseReason::kPoisoned);  // Its reopen is refused (VfsContext::Taint).
    }
    return admitted;
  }
  request.submitted_ = true;
  t.in_flight++;
  if (t.state == TenantState::kIdle) {
    policy_->RemoveIdle(t);
    SetState(t, TenantState::kActive);
  }
  return absl::OkStatus();
}

// Finds the tenant (adding an entry if it is new) after checking that there is room for what
// the request needs, so a refused request changes nothing.
absl::StatusOr<Registry::Tenant*> Registry::Admit(const TenantRequest& request) {
  auto it = tenants_.find(request.tenant);
  Tenant* t = it == tenants_.end() ? nullptr : it->get();
  const bool needs_slot =
      request.action == TenantRequest::Action::kExecute &&
      (t == nullptr || t->state == TenantState::kClosed || t->state == TenantState::kAsleep);
  if (needs_slot) {
    if (absl::Status room = policy_->CheckRoomForOpen(); !room.ok()) return room;
  }
  if (t != nullptr) {
    if (absl::Status room = policy_->CheckRoomInQueue(*t); !room.ok()) return room;
    return t;
  }
  absl::StatusOr<Tenant*> forget = policy_->EntryToForget(tenants_.size());
  if (!forget.ok()) return forget.status();
  if (*forget != nullptr) {
    stats_.forgotten++;
    tenants_.erase(tenants_.find((*forget)->name));
  }
  auto entry = std::make_unique<Tenant>();
  entry->registry = this;
  entry->name = std::string(request.tenant);
  entry->path = PathOf(request.tenant);
  entry->io.callback = &Registry::OnTenantIo;
  entry->io.user_data = entry.get();
  entry->io.name = "registry tenant io";
  t = entry.get();
  tenants_.insert(std::move(entry));
  policy_->AddClosed(*t);
  return t;
}

// Moves a tenant whose queue just gained a request towards serving it. States that are in the
// middle of something pick the queue up when they finish.
void Registry::Kick(Tenant& t) {
  switch (t.state) {
    case TenantState::kClosed:
      policy_->RemoveClosed(t);
      if (t.queue.front()->action == TenantRequest::Action::kDelete) {
        StartDelete(t);
      } else {
        RequestSlot(t);
      }
      return;
    case TenantState::kIdle:  // Only a delete is ever queued behind an open tenant.
      StartClose(t, CloseReason::kDelete);
      return;
    case TenantState::kAsleep:
      if (t.queue.front()->action == TenantRequest::Action::kDelete) {
        StartClose(t, CloseReason::kDelete);
        return;
      }
      policy_->RemoveAsleep(t);
      RequestSlot(t);  // Its database wakes itself once it has the requests (StartOpen).
      return;
    case TenantState::kActive:  // Closes for the delete when its last request is done.
    case TenantState::kWaitingSlot:
    case TenantState::kOpening:
    case TenantState::kClosing:
    case TenantState::kDeleting:
      return;
  }
}

// Records the outcome of `request` and hands it to its owner: at once (we are in a loop
// callback that came from the Database) or on the next tick (anything else, so no callback
// ever runs inside Submit or inside one of the registry's own transitions).
void Registry::Complete(Tenant& t, TenantRequest& request, absl::Status status, bool defer) {
  t.stats.requests++;
  stats_.requests++;
  if (!status.ok()) {
    t.stats.requests_failed++;
    stats_.requests_failed++;
  }
  t.stats.last_use_ns = loop_.now_ns();
  request.tenant_ = nullptr;
  if (!defer) {
    request.submitted_ = false;
    request.CallTenantDone(std::move(status));
    return;
  }
  request.tenant_status_ = std::move(status);
  deferred_requests_.PushBack(request);
  ArmDeferred();
}

// Fails the queued executes in front of the first queued delete (which still runs).
void Registry::FailQueue(Tenant& t, const absl::Status& status) {
  while (!t.queue.empty() && t.queue.front()->action == TenantRequest::Action::kExecute) {
    Complete(t, Dequeue(t), status, /*defer=*/true);
  }
}

// As FailQueue, but stops also at the first execute that may create the tenant: an open's
// NotFound answers only the requests that may not.
void Registry::FailQueueBeforeCreate(Tenant& t, const absl::Status& status) {
  while (!t.queue.empty() && t.queue.front()->action == TenantRequest::Action::kExecute &&
         !t.queue.front()->create_if_missing) {
    Complete(t, Dequeue(t), status, /*defer=*/true);
  }
}

// ---- Opening --------------------------------------------------------------------------------

void Registry::RequestSlot(Tenant& t) {
  if (policy_->MayOpenNow()) {
    StartOpen(t);
    return;
  }
  policy_->Wait(t);
  SetState(t, TenantState::kWaitingSlot);
  stats_.slot_waits++;
  EvictForWaiters();
}

void Registry::StartOpen(Tenant& t) {
  policy_->TakeSlot(t);
  if (t.database != nullptr) {  // It slept: the requests wake it, through the loop.
    // Like an open, a wake enters the slots unvisited: the request that brought it back is
    // not a reuse, so a tenant woken for one request goes before one used again (SIEVE).
    t.stats.wakes++;
    stats_.wakes++;
    t.wakes_failed_before = t.database->stats().wakes_failed;
    SetState(t, TenantState::kActive);
    ServeQueue(t);
    return;
  }
  bool create = false;
  for (TenantRequest* r = t.queue.front(); r != nullptr; r = Tenant::Queue::Next(*r)) {
    if (r->action == TenantRequest::Action::kDelete) break;
    create = create || r->create_if_missing;
  }
  if (create) {
    t.stats.creations++;
    stats_.creations++;
  }
  // Invariant 2: without create_if_missing the file must exist and have bytes (an empty main
  // file is what a creation that failed inside SQLite's open, or a crash during one, leaves).
  // The Database's open checks both on its way (DatabaseOptions::create_if_missing), with no
  // operation of its own, and fails with NotFound (OnOpened).
  StartDatabase(t, create);
}

// An open without create_if_missing found no tenant. It ran for the requests queued when it
// started, none of which may create the tenant. One that may (create_if_missing) can have
// joined the queue since: an HTTP create probes first and sends its create only after its own
// probe said NotFound, so two clients creating the same tenant meet here. The NotFound answers
// the requests in front of it; it and those behind it stay queued, and AfterClosed reopens the
// tenant for them, creating it (StartOpen).
void Registry::NotFound(Tenant& t) {
  FailQueueBeforeCreate(t, absl::NotFoundError(absl::StrCat(
                               "tenant '", t.name,
                               "' does not exist; send the request with create_if_missing to "
                               "create it")));
  FailOpen(t, absl::OkStatus());
}

void Registry::StartDatabase(Tenant& t, bool create) {
  DatabaseOptions database_options = options_.database;
  database_options.create_if_missing = create;
  if (alloc::SqliteMemoryInstalled()) {
    // Every SQLite byte of the tenant is charged to its own accounting tenant, which the
    // Database marks around its SQLite calls.
    // The group is the registry's total (TenantPolicy::MemoryLive), named after the registry's
    // address: unique while it lives, whatever the prefix.
    absl::StatusOr<alloc::TenantId> group =
        policy_->MemoryGroup(absl::StrFormat("%sregistry@%p", options_.memory_name_prefix, this));
    absl::StatusOr<alloc::TenantId> id =
        group.ok() ? alloc::RegisterTenant(absl::StrCat(options_.memory_name_prefix, t.name),
                                           options_.tenant_memory_bytes_max, *group)
                   : group;
    if (!id.ok()) {
      const bool taken = id.status().code() == absl::StatusCode::kAlreadyExists;
      FailOpen(t, absl::Status(id.status().code(),
                               absl::StrCat("cannot account tenant '", t.name,
                                            "' memory: ", id.status().message(),
                                            taken ? " (another registry of this process uses the "
                                                    "same RegistryOptions::memory_name_prefix; "
                                                    "give each its own)"
                                                  : "")));
      return;
    }
    t.memory_id = *id;
    t.has_memory_id = true;
    database_options.tenant = t.memory_id;
  }
  t.database = std::make_unique<Database>(loop_, vfs_, t.path, database_options);
  SetState(t, TenantState::kOpening);
  t.database->Open(&Registry::OnOpened, &t);
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature is Database::Callback.
void Registry::OnOpened(void* arg, absl::Status status) {
  auto& t = *static_cast<Tenant*>(arg);
  Registry& self = *t.registry;
  if (status.code() == absl::StatusCode::kNotFound) {  // Invariant 2: no tenant, no open.
    self.Bury(std::move(t.database));
    self.NotFound(t);
    return;
  }
  t.stats.opens++;
  self.stats_.opens++;
  if (status.ok()) {
    self.SetState(t, TenantState::kActive);
    self.ServeQueue(t);
    return;
  }
  self.stats_.open_failures++;
  const absl::Status failure(status.code(),
                             absl::StrCat("cannot open tenant '", t.name, "': ", status.message()));
  self.FailQueue(t, failure);
  if (t.database->state() == Database::State::kPoisoned) {
    self.StartClose(t, CloseReason::kPoisoned);
    return;
  }
  self.Bury(std::move(t.database));  // kFailed: nothing open; freed outside its callback.
  self.FailOpen(t, absl::OkStatus());
}

// Gives back what an open that did not happen took, fails the queued executes with `status`
// (if not OK), and moves on to what is left in the queue.
void Registry::FailOpen(Tenant& t, const absl::Status& status) {
  if (!status.ok()) FailQueue(t, status);
  UnregisterMemory(t);
  policy_->ReleaseSlot(t);
  AfterClosed(t);
  GrantSlots();
}

// Submits the queue to the ready Database, stopping at a delete (which needs the tenant
// closed first).
void Registry::ServeQueue(Tenant& t) {
  while (TenantRequest* r = t.queue.front()) {
    if (r->action == TenantRequest::Action::kDelete) {
      if (t.in_flight == 0) StartClose(t, CloseReason::kDelete);
      return;
    }
    (void)Dequeue(t);
    if (r->sql.empty() && r->batch.empty()) {
      Complete(t, *r, absl::OkStatus(), /*defer=*/true);
      continue;
    }
    if (absl::Status admitted = t.database->Submit(*r); !admitted.ok()) {
      Complete(t, *r, std::move(admitted), /*defer=*/true);
      continue;
    }
    t.in_flight++;
  }
  if (t.in_flight == 0) BecomeIdle(t);
}

void Registry::GrantSlots() {
  while (Tenant* t = policy_->Grant()) StartOpen(*t);
  EvictForWaiters();
}

// The policy picks the victims (idle tenants, by SIEVE); putting them to sleep or closing
// them is ours. A victim that sleeps frees its slot once its descriptors' closes are done, in
// the next tick at the latest (OnSleepClosed grants it), as a closing victim's frees when its
// close is done (OnClosed).
//
// A victim's sleep and a grant's open cost tens of microseconds each, and a burst has hundreds
// of waiters: at least one victim, then until the tick budget is spent, and the rest from the
// deferred callback on the next tick.
void Registry::EvictForWaiters() {
  for (bool first = true;; first = false) {
    if (!first && policy_->waiting() > 0 && loop_.TickBudgetSpent()) {
      evict_deferred_ = true;
      ArmDeferred();
      return;
    }
    Tenant* victim = policy_->WaiterVictim();
    if (victim == nullptr) return;
    if (!PutToSleep(*victim)) {
      StartClose(*victim, CloseReason::kEvicted);
      continue;
    }
    while (Tenant* t = policy_->Grant()) StartOpen(*t);
  }
}

void Registry::EvictForMemory() {
  policy_->ChooseMemoryVictims(
      [this](Tenant& victim) { StartClose(victim, CloseReason::kEvicted); });
}

// ---- Requests -------------------------------------------------------------------------------

// The owner hears first: a client that answers a result with its next request (the common
// shape of a session) keeps its tenant active instead of seeing it go idle and, with waiters
// queued for a slot, evicted in between.
void Registry::OnRequestDone(Request& request, absl::Status status) {
  TenantRequest& r = TenantRequest::Of(request);
  Tenant& t = *r.tenant_;
  Registry& self = *t.registry;
  SQLOOP_CHECK(t.in_flight > 0, "Registry: a request finished that was not in flight");
  t.in_flight--;
  self.Complete(t, r, std::move(status), /*defer=*/false);  // May submit to `t` again.
  if (t.in_flight != 0 || t.state != TenantState::kActive) return;
  if (t.database->state() == Database::State::kPoisoned) {
    self.StartClose(t, CloseReason::kPoisoned);
  } else if (!t.queue.empty()) {
    self.ServeQueue(t);  // A delete is waiting.
  } else {
    self.BecomeIdle(t);
  }
}

// ---- Idleness and closing -------------------------------------------------------------------

void Registry::StartClose(Tenant& t, CloseReason reason) {
  SQLOOP_CHECK(t.in_flight == 0, "Registry: closing a tenant with requests in flight");
  if (t.state == TenantState::kIdle) policy_->RemoveIdle(t);
  if (t.state == TenantState::kAsleep) policy_->RemoveAsleep(t);
  t.close_reason = reason;
  if (reason == CloseReason::kIdle) {
    t.stats.idle_closes++;
    stats_.idle_closes++;
  } else if (reason == CloseReason::kEvicted) {
    t.stats.evictions++;
    stats_.evictions++;
  } else if (reason == CloseReason::kWakeFailed) {
    stats_.wakes_failed++;
  }
  SetState(t, TenantState::kClosing);
  // Database::Close runs on the next tick (OnTenantIo), never inside one of that database's
  // own callbacks (a request's completion, OnRequestDone, is where a tenant usually goes idle
  // and may be evicted at once).
  loop_.NextTick(t.io);
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature is Database::Callback.
void Registry::OnClosed(void* arg, absl::Status status) {
  auto& t = *static_cast<Tenant*>(arg);
  Registry& self = *t.registry;
  // A poisoned database reports its poison here; its requests already heard about it.
  (void)status;
  self.Bury(std::move(t.database));
  self.UnregisterMemory(t);
  if (t.holds_slot()) self.policy_->ReleaseSlot(t);  // A sleeper's close had none.
  // Requests that arrived while it closed reopen it (behind earlier waiters, if any).
  self.AfterClosed(t);
  self.GrantSlots();
  self.MaybeFinishShutdown();
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature is Database::Callback.
void Registry::OnSleepClosed(void* arg, absl::Status /*unused*/) {
  auto& t = *static_cast<Tenant*>(arg);
  Registry& self = *t.registry;
  self.policy_->SleepClosed();
  self.GrantSlots();
  self.MaybeFinishShutdown();
}

// A tenant that holds nothing any more: run its queued delete, queue it for a slot if requests
// are waiting, or rest in kClosed.
void Registry::AfterClosed(Tenant& t) {
  if (t.queue.empty()) {
    policy_->AddClosed(t);
    SetState(t, TenantState::kClosed);
    return;
  }
  if (t.queue.front()->action == TenantRequest::Action::kDelete) {
    StartDelete(t);
    return;
  }
  SetState(t, TenantState::kClosed);
  RequestSlot(t);
}

void Registry::UnregisterMemory(Tenant& t) {
  if (!t.has_memory_id) return;
  t.has_memory_id = false;
  // Invariant 5: a closed tenant holds no SQLite memory. The accounting refuses to unregister
  // a tenant that still owns bytes; such an id is left registered (leaked) and counted.
  if (!alloc::UnregisterTenant(t.memory_id).ok()) stats_.memory_leaks++;
}

// A Database is freed on a later tick: its Open and Close callbacks run inside its own
// methods, which still use the object after the callback returns.
void Registry::Bury(std::unique_ptr<Database> database) {
  if (database == nullptr) return;
  graveyard_.push_back(std::move(database));
  ArmDeferred();
}

void Registry::ArmDeferred() {
  if (deferred_.state() != loop::Completion::State::kIdle) return;
  loop_.NextTick(deferred_);
}

loop::Action Registry::OnDeferred(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<Registry*>(c.user_data);
  for (uint32_t n = 0; n < kBuriedFreedPerTick && !self.graveyard_.empty(); ++n) {
    self.graveyard_.pop_back();
  }
  if (!self.graveyard_.empty()) self.ArmDeferred();
  if (std::exchange(self.evict_deferred_, false)) self.EvictForWaiters();
  // Deliver what is on the list now; what these callbacks add goes out on the next tick.
  for (size_t n = self.deferred_requests_.size(); n > 0; --n) {
    TenantRequest& r = *self.deferred_requests_.PopFront();
    r.submitted_ = false;
    r.CallTenantDone(std::move(r.tenant_status_));
  }
  self.MaybeFinishShutdown();
  return loop::Action::kDisarm;
}

// ---- Deleting -------------------------------------------------------------------------------

void Registry::StartDelete(Tenant& t) {
  SetState(t, TenantState::kDeleting);
  t.deletion.Start(loop_, t.io, dir_fd_, t.path, t.name);
}

void Registry::FinishDelete(Tenant& t, absl::Status status) {
  if (status.ok()) stats_.deletes++;
  SQLOOP_CHECK(!t.queue.empty() && t.queue.front()->action == TenantRequest::Action::kDelete,
               "Registry: a delete finished without a delete at the queue head");
  Complete(t, Dequeue(t), std::move(status), /*defer=*/true);
  SetState(t, TenantState::kClosed);
  AfterClosed(t);
  MaybeFinishShutdown();
}

// The tenant's one completion, told apart by its state: the close's next tick and the delete's
// operations.
loop::Action Registry::OnTenantIo(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& t = *static_cast<Tenant*>(c.user_data);
  Registry& self = *t.registry;
  const int64_t result = c.result();
  switch (t.state) {
    case TenantState::kClosing:
      t.database->Close(&Registry::OnClosed, &t);
      return loop::Action::kDisarm;
    case TenantState::kDeleting:
      if (std::optional<absl::Status> outcome = t.deletion.OnIo(result)) {
        self.FinishDelete(t, *std::move(outcome));
      }
      return loop::Action::kDisarm;
    default:
      break;
  }
  SQLOOP_CHECK(false, "Registry: a tenant operation completed in a state that has none");
  return loop::Action::kDisarm;
}

// ---- Shutdown -------------------------------------------------------------------------------

void Registry::Shutdown(Callback done, void* arg) {
  SQLOOP_CHECK(!shutting_down_, "Registry::Shutdown called twice");
  shutting_down_ = true;
  shutdown_done_ = done;
  shutdown_arg_ = arg;
  const absl::Status closing = absl::UnavailableError(
      "registry is shutting down; the request did not run, send it to the next instance");
  while (Tenant* t = policy_->PopWaiting()) {
    FailQueue(*t, closing);
    if (t->database != nullptr) {  // It slept: its close touches no file.
      StartClose(*t, CloseReason::kShutdown);
      continue;
    }
    SetState(*t, TenantState::kClosed);
    AfterClosed(*t);  // A queued delete still runs.
  }
  CloseIdleTenants();
  if (sweeper_.state() != loop::Completion::State::kIdle) loop_.Cancel(sweeper_);
  ArmDeferred();  // Finishes the shutdown on the loop even if nothing was open.
}

void Registry::MaybeFinishShutdown() {
  if (!shutting_down_ || dir_closing_ || shut_down_) return;
  if (policy_->open() != 0 || policy_->waiting() != 0 || policy_->asleep() != 0 ||
      policy_->closing() != 0 || policy_->sleeps_closing() != 0 || deleting_ != 0) {
    return;
  }
  if (sweeper_.state() != loop::Completion::State::kIdle ||
      deferred_.state() != loop::Completion::State::kIdle || !deferred_requests_.empty() ||
      !graveyard_.empty()) {
    return;
  }
  dir_closing_ = true;
  dir_close_.op = io::Op{.kind = io::OpKind::kClose, .fd = dir_fd_};
  loop_.Submit(dir_close_);
}

loop::Action Registry::OnDirClosed(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<Registry*>(c.user_data);
  self.dir_fd_ = -1;
  self.shut_down_ = true;
  if (self.shutdown_done_ != nullptr) self.shutdown_done_(self.shutdown_arg_, absl::OkStatus());
  return loop::Action::kDisarm;
}

}  // namespace sqloop::db
