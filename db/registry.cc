// The Registry: a tenant's lifecycle as a state machine on the loop.
//
//                       Submit: no slot, nothing evictable yet
//             +------------------------------------------------> kWaitingSlot
//             |                                                       |
//             |        Submit: slot free              slot granted    |
//   kClosed --+---------------------------------+<--------------------+
//      ^                                        |
//      |                      not create_if_missing     create_if_missing
//      |                         v                          |
//      |   ENOENT          +-----------+   fd   +---------------+   |
//      +<------------------| kProbing  |------->| kProbeClosing |   |
//      |  (NotFound)       +-----------+        +---------------+   |
//      |                                         closed |           v
//      |   open failed                                  +----> +-----------+
//      +<--------------------------------------------------------| kOpening  |
//      |                                                         +-----------+
//      |                                               open ok        |
//      |                                                              v
//      |                request arrives               +-----------+  queue served,
//      |          +---------------------------------> | kActive   |  requests in flight
//      |          |                                   +-----------+
//      |     +---------+   last request done               |
//      |     |  kIdle  | <---------------------------------+
//      |     +---------+
//      |          | idle timeout, evicted, delete queued, shutdown
//      |          v
//      |     +-----------+  close done, a delete at the queue head   +-----------+
//      +-----| kClosing  |------------------------------------------>| kDeleting |
//      |     +-----------+                                           +-----------+
//      |          | close done, requests queued meanwhile: reopen          |
//      |          +--> kOpening / kWaitingSlot (keeps its place)           |
//      +<--------------------------------------------------------------------+
//                              unlinked (or NotFound), directory synced
//
//   transition                     made by                 invariant in the new state
//   kClosed -> kWaitingSlot        RequestSlot             in waiting_; no slot; queue non-empty
//   kClosed -> kProbing            StartOpen               holds a slot; probe open in flight
//   kWaitingSlot -> kProbing       GrantSlots->StartOpen   (as above)
//   kProbing -> kProbeClosing      OnTenantIo              probe_fd >= 0; its close in flight
//   kProbing -> kClosed            OnTenantIo->FailOpen->AfterClosed  no slot; queued executes
//   failed (ENOENT: those in front of the first create_if_missing, which reopens and creates)
//   kProbeClosing -> kOpening      OnTenantIo->StartDatabase  has a Database and a memory id
//   k(Closed|WaitingSlot) -> kOpening  StartOpen->StartDatabase  (as above, create allowed)
//   kOpening -> kActive / kIdle    OnOpened->ServeQueue    Database ready
//   kOpening -> kClosed            OnOpened->FailOpen      no Database, no slot, no memory id
//   kActive -> kIdle               OnRequestDone->BecomeIdle  in idle_; nothing in flight
//   kIdle -> kActive               Submit                  not in idle_; in_flight > 0
//   kIdle|kActive -> kClosing      StartClose              in_flight == 0; not in idle_
//   kClosing -> kClosed            OnClosed->AfterClosed   no Database, no slot, no memory id
//   kClosing -> kDeleting          AfterClosed->StartDelete  no Database; queue head is delete
//   kClosing -> kOpening|kWaiting  AfterClosed->RequestSlot  requests arrived while closing
//   kClosed -> kDeleting           Kick->StartDelete       (as above)
//   kDeleting -> kClosed, ...      FinishDelete            the delete request completed
//
// Every transition goes through SetState, which checks the new state's invariants.
#include "sqloop/db/registry.h"

#include <fcntl.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"

namespace sqloop::db {
namespace {

// The file of a tenant is `<directory>/<name>` + this. The journal and WAL add "-journal" and
// "-wal" (SQLite's names), which the delete removes too.
constexpr absl::string_view kFileSuffix = ".db";

bool IsLowerOrDigit(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// A byte as a reader can see it in an error message: 'a', or \x0a for a control byte.
std::string Printable(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return absl::StrCat("'", std::string(1, c), "'");
  return absl::StrFormat("\\x%02x", byte);
}

// Database gains a `tenant` option (alloc::TenantId) that it marks around its SQLite calls;
// until it has one, the registry cannot attribute memory per tenant and says so.
template <typename Options>
constexpr bool kOptionsHaveTenant = requires(Options o) {
  o.tenant = alloc::TenantId{};
};

template <typename Options>
void AttachTenant(Options& options, alloc::TenantId id) {
  if constexpr (kOptionsHaveTenant<Options>) {
    options.tenant = id;
  } else {
    (void)options;
    (void)id;
  }
}

std::string ErrnoText(int64_t result) { return std::strerror(static_cast<int>(-result)); }

// The soft limit on descriptors; "unlimited" (and an unreadable limit) as UINT64_MAX.
uint64_t DescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  return limit.rlim_cur;
}

}  // namespace

uint32_t DescriptorBoundOpenMax(uint32_t reserved) {
  const uint64_t descriptors = DescriptorLimit();
  if (descriptors < uint64_t{reserved} + kDescriptorsPerDatabase) return 0;
  return static_cast<uint32_t>(
      std::min<uint64_t>((descriptors - reserved) / kDescriptorsPerDatabase, kOpenMaxLimit));
}

absl::Status ValidateTenantName(absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "tenant name is empty; use 1 to 64 characters of [a-z0-9_-], starting with a letter or "
        "digit");
  }
  if (name.size() > kTenantNameBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tenant name is %d bytes long; the limit is %d (characters [a-z0-9_-])",
                        name.size(), kTenantNameBytesMax));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (IsLowerOrDigit(c)) continue;
    if (i > 0 && (c == '_' || c == '-')) continue;
    const char* why = "";
    if (c == '/' || c == '\\') {
      why = " (a path separator: tenant names are file names, not paths)";
    } else if (c == '.') {
      why = " ('.' is refused so that no name can be '..' or a hidden file)";
    } else if (c >= 'A' && c <= 'Z') {
      why = " (uppercase is refused so names cannot alias on case-insensitive file systems)";
    } else if (c == '_' || c == '-') {
      why = " (a name must start with a lowercase letter or a digit)";
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "tenant name has an invalid byte %s at position %d%s; allowed: [a-z0-9] first, then "
        "[a-z0-9_-], at most %d bytes",
        Printable(c), i, why, kTenantNameBytesMax));
  }
  return absl::OkStatus();
}

absl::string_view TenantStateName(TenantState state) {
  switch (state) {
    case TenantState::kClosed:
      return "closed";
    case TenantState::kWaitingSlot:
      return "waiting_slot";
    case TenantState::kProbing:
      return "probing";
    case TenantState::kProbeClosing:
      return "probe_closing";
    case TenantState::kOpening:
      return "opening";
    case TenantState::kActive:
      return "active";
    case TenantState::kIdle:
      return "idle";
    case TenantState::kClosing:
      return "closing";
    case TenantState::kDeleting:
      return "deleting";
  }
  return "unknown";
}

// ---- The tenant entry -----------------------------------------------------------------------

struct Registry::Tenant {
  Registry* registry = nullptr;
  std::string name;
  std::string path;
  TenantState state = TenantState::kClosed;
  std::unique_ptr<Database> database;
  alloc::TenantId memory_id = alloc::kSharedTenant;
  bool has_memory_id = false;
  bool holds_slot = false;
  uint32_t in_flight = 0;  // Requests submitted to the Database and not done.
  // The tenant's queue: requests that arrived while it could not take them (not open yet,
  // closing, or behind a delete). FIFO, intrusive through TenantRequest::tenant_next_.
  TenantRequest* queue_head = nullptr;
  TenantRequest* queue_tail = nullptr;
  uint32_t queue_size = 0;
  // Link in exactly one of idle_, closed_ or waiting_ (which one follows from `state`).
  TenantList* list = nullptr;
  Tenant* prev = nullptr;
  Tenant* next = nullptr;
  // Link in open_ while holding a slot.
  Tenant* open_prev = nullptr;
  Tenant* open_next = nullptr;
  CloseReason close_reason = CloseReason::kIdle;
  loop::Completion io;  // The probe's open and close; the delete's unlinks and fsync.
  int probe_fd = -1;
  DeleteStep delete_step = DeleteStep::kUnlinkWal;
  bool delete_found = false;  // The main file existed (its unlink succeeded).
  std::string delete_path;    // The path of the unlink in flight.
  int64_t idle_since_ns = 0;
  TenantStats stats;
};

// ---- Creation and destruction ---------------------------------------------------------------

bool Registry::memory_per_tenant() { return kOptionsHaveTenant<DatabaseOptions>; }

absl::StatusOr<std::unique_ptr<Registry>> Registry::Create(loop::Loop& loop, Vfs& vfs,
                                                           RegistryOptions options) {
  if (options.directory.empty()) {
    return absl::InvalidArgumentError(
        "RegistryOptions::directory is empty; name the directory "
        "that holds the tenants' databases");
  }
  if (options.idle_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("RegistryOptions::idle_timeout must be positive");
  }
  if (options.memory_bytes_max > 0 && !alloc::SqliteMemoryInstalled()) {
    return absl::FailedPreconditionError(
        "RegistryOptions::memory_bytes_max needs SQLite's memory accounting: call "
        "alloc::InstallSqliteMemory() at startup, before any other SQLite use");
  }
  const uint64_t descriptors = DescriptorLimit();
  uint64_t open_max = options.open_max;
  if (open_max == 0) {
    open_max = DescriptorBoundOpenMax(options.descriptors_reserved);
    if (open_max == 0) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "RLIMIT_NOFILE is %d, too low to open even one database after reserving %d "
          "descriptors; raise it (ulimit -n) or lower descriptors_reserved",
          descriptors, options.descriptors_reserved));
    }
  } else if (open_max > kOpenMaxLimit ||
             open_max * kDescriptorsPerDatabase + options.descriptors_reserved > descriptors) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "open_max %d needs up to %d descriptors plus %d reserved, but RLIMIT_NOFILE is %d "
        "(and the registry allows at most %d); lower open_max or raise the limit (ulimit -n)",
        open_max, open_max * kDescriptorsPerDatabase, options.descriptors_reserved, descriptors,
        kOpenMaxLimit));
  }
  io::Op dir_op{.kind = io::OpKind::kOpenAt,
                .fd = AT_FDCWD,
                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                .path = options.directory.c_str()};
  const int64_t dir_fd = loop.WaitForOp(dir_op);
  if (dir_fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open the tenants' directory '",
                                            options.directory, "': ", ErrnoText(dir_fd),
                                            "; create it before starting the registry"));
  }
  return std::unique_ptr<Registry>(new Registry(
      loop, vfs, std::move(options), static_cast<uint32_t>(open_max), static_cast<int>(dir_fd)));
}

Registry::Registry(loop::Loop& loop, Vfs& vfs, RegistryOptions options, uint32_t open_max,
                   int dir_fd)
    : loop_(loop),
      vfs_(vfs),
      options_(std::move(options)),
      open_max_(open_max),
      dir_fd_(dir_fd),
      idle_timeout_ns_(absl::ToInt64Nanoseconds(options_.idle_timeout)) {
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

// ---- Intrusive lists ------------------------------------------------------------------------

void Registry::PushBack(TenantList& list, Tenant& t) {
  SQLOOP_CHECK(t.list == nullptr, "Registry: a tenant is already in a list");
  t.list = &list;
  t.prev = list.tail;
  t.next = nullptr;
  if (list.tail == nullptr) {
    list.head = &t;
  } else {
    list.tail->next = &t;
  }
  list.tail = &t;
  ++list.size;
}

void Registry::Unlink(TenantList& list, Tenant& t) {
  SQLOOP_CHECK(t.list == &list, "Registry: the tenant is not in this list");
  (t.prev == nullptr ? list.head : t.prev->next) = t.next;
  (t.next == nullptr ? list.tail : t.next->prev) = t.prev;
  t.prev = t.next = nullptr;
  t.list = nullptr;
  --list.size;
}

void Registry::TakeSlot(Tenant& t) {
  SQLOOP_CHECK(!t.holds_slot, "Registry: a tenant took a second slot");
  t.holds_slot = true;
  t.open_prev = open_.tail;
  t.open_next = nullptr;
  if (open_.tail == nullptr) {
    open_.head = &t;
  } else {
    open_.tail->open_next = &t;
  }
  open_.tail = &t;
  ++open_.size;
  stats_.open_high_water = std::max(stats_.open_high_water, open_.size);
  SQLOOP_CHECK(open_.size <= open_max_, "Registry: more tenants open than open_max");
}

void Registry::ReleaseSlot(Tenant& t) {
  SQLOOP_CHECK(t.holds_slot, "Registry: releasing a slot the tenant does not hold");
  (t.open_prev == nullptr ? open_.head : t.open_prev->open_next) = t.open_next;
  (t.open_next == nullptr ? open_.tail : t.open_next->open_prev) = t.open_prev;
  t.open_prev = t.open_next = nullptr;
  t.holds_slot = false;
  --open_.size;
}

// ---- Admission ------------------------------------------------------------------------------

absl::Status Registry::Submit(TenantRequest& request) {
  SQLOOP_CHECK(!request.submitted_,
               "Registry::Submit: the request is already submitted; wait "
               "for on_tenant_done");
  SQLOOP_CHECK(request.on_tenant_done != nullptr, "Registry::Submit: on_tenant_done is not set");
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
  request.on_done = &Registry::OnRequestDone;
  request.tenant_ = &t;
  request.tenant_status_ = absl::OkStatus();
  const bool direct = (t.state == TenantState::kActive || t.state == TenantState::kIdle) &&
                      t.queue_head == nullptr && request.action == TenantRequest::Action::kExecute;
  if (!direct) {
    request.submitted_ = true;
    Enqueue(t, request);
    Kick(t);
    return absl::OkStatus();
  }
  if (request.sql.empty() &&
      request.batch.empty()) {  // Open-only, and it is open: done (on the loop, as promised).
    request.submitted_ = true;
    if (t.state == TenantState::kIdle) {  // A use: it goes to the back of the idle line.
      Unlink(idle_, t);
      t.idle_since_ns = loop_.now_ns();
      PushBack(idle_, t);
    }
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
    Unlink(idle_, t);
    SetState(t, TenantState::kActive);
  }
  return absl::OkStatus();
}

// Finds the tenant (adding an entry if it is new) after checking that there is room for what
// the request needs, so a refused request changes nothing.
absl::StatusOr<Registry::Tenant*> Registry::Admit(const TenantRequest& request) {
  auto it = tenants_.find(request.tenant);
  Tenant* t = it == tenants_.end() ? nullptr : it->second.get();
  const bool needs_slot = request.action == TenantRequest::Action::kExecute &&
                          (t == nullptr || t->state == TenantState::kClosed);
  if (needs_slot) {
    if (absl::Status room = CheckRoomForOpen(); !room.ok()) return room;
  }
  if (t != nullptr) {
    if (t->queue_size >= options_.tenant_queue_max) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "tenant '%s' has %d requests waiting for it to open or close; retry after some "
          "complete (raise tenant_queue_max if bursts this large are expected)",
          t->name, t->queue_size));
    }
    return t;
  }
  if (tenants_.size() >= options_.tenants_max) {
    if (closed_.head == nullptr) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "registry tracks %d tenants and none is closed; retry later or raise tenants_max",
          tenants_.size()));
    }
    Tenant& forget = *closed_.head;  // Least recently closed: its statistics are the oldest.
    Unlink(closed_, forget);
    stats_.forgotten++;
    tenants_.erase(forget.name);
  }
  auto entry = std::make_unique<Tenant>();
  entry->registry = this;
  entry->name = std::string(request.tenant);
  entry->path = PathOf(request.tenant);
  entry->io.callback = &Registry::OnTenantIo;
  entry->io.user_data = entry.get();
  entry->io.name = "registry tenant io";
  t = entry.get();
  tenants_.emplace(t->name, std::move(entry));
  PushBack(closed_, *t);
  return t;
}

absl::Status Registry::CheckRoomForOpen() const {
  if (waiting_.size == 0 && HasRoom()) return absl::OkStatus();
  // Relief is coming if an idle tenant can be evicted or a close already under way frees a
  // slot that no earlier waiter has claimed.
  const bool relief = idle_.size > 0 || closing_ > waiting_.size;
  if (options_.when_full == WhenFull::kFail && !relief) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "registry has %d of %d databases open (SQLite memory %d of %d bytes, 0 = no budget) "
        "and none is idle; retry later, or raise open_max / memory_bytes_max",
        open_.size, open_max_, MemoryLive(/*exclude_closing=*/false), options_.memory_bytes_max));
  }
  if (waiting_.size >= options_.waiting_opens_max) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "registry has %d tenants waiting for one of its %d open slots (the limit of "
        "waiting_opens_max); retry later, or raise open_max or waiting_opens_max",
        waiting_.size, open_max_));
  }
  return absl::OkStatus();
}

bool Registry::HasRoom() const {
  if (open_.size >= open_max_) return false;
  // One tenant may always open, so a budget smaller than one database cannot deadlock.
  if (options_.memory_bytes_max == 0 || open_.size == 0) return true;
  return MemoryLive(/*exclude_closing=*/false) < options_.memory_bytes_max;
}

void Registry::Enqueue(Tenant& t, TenantRequest& request) {
  request.tenant_next_ = nullptr;
  if (t.queue_tail == nullptr) {
    t.queue_head = &request;
  } else {
    t.queue_tail->tenant_next_ = &request;
  }
  t.queue_tail = &request;
  t.queue_size++;
}

TenantRequest* Registry::Dequeue(Tenant& t) {
  TenantRequest* r = t.queue_head;
  if (r == nullptr) return nullptr;
  t.queue_head = r->tenant_next_;
  if (t.queue_head == nullptr) t.queue_tail = nullptr;
  r->tenant_next_ = nullptr;
  t.queue_size--;
  return r;
}

// Moves a tenant whose queue just gained a request towards serving it. States that are in the
// middle of something pick the queue up when they finish.
void Registry::Kick(Tenant& t) {
  switch (t.state) {
    case TenantState::kClosed:
      Unlink(closed_, t);
      if (t.queue_head->action == TenantRequest::Action::kDelete) {
        StartDelete(t);
      } else {
        RequestSlot(t);
      }
      return;
    case TenantState::kIdle:  // Only a delete is ever queued behind an open tenant.
      StartClose(t, CloseReason::kDelete);
      return;
    case TenantState::kActive:  // Closes for the delete when its last request is done.
    case TenantState::kWaitingSlot:
    case TenantState::kProbing:
    case TenantState::kProbeClosing:
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
    request.on_tenant_done(request, std::move(status));
    return;
  }
  request.tenant_status_ = std::move(status);
  request.tenant_next_ = nullptr;
  if (deferred_tail_ == nullptr) {
    deferred_head_ = &request;
  } else {
    deferred_tail_->tenant_next_ = &request;
  }
  deferred_tail_ = &request;
  ArmDeferred();
}

// Fails the queued executes in front of the first queued delete (which still runs).
void Registry::FailQueue(Tenant& t, const absl::Status& status) {
  while (t.queue_head != nullptr && t.queue_head->action == TenantRequest::Action::kExecute) {
    Complete(t, *Dequeue(t), status, /*defer=*/true);
  }
}

// As FailQueue, but stops also at the first execute that may create the tenant: a probe's
// NotFound answers only the requests that may not.
void Registry::FailQueueBeforeCreate(Tenant& t, const absl::Status& status) {
  while (t.queue_head != nullptr && t.queue_head->action == TenantRequest::Action::kExecute &&
         !t.queue_head->create_if_missing) {
    Complete(t, *Dequeue(t), status, /*defer=*/true);
  }
}

// ---- Opening --------------------------------------------------------------------------------

void Registry::RequestSlot(Tenant& t) {
  if (waiting_.size == 0 && HasRoom()) {
    StartOpen(t);
    return;
  }
  SetState(t, TenantState::kWaitingSlot);
  PushBack(waiting_, t);
  stats_.slot_waits++;
  EvictForWaiters();
}

void Registry::StartOpen(Tenant& t) {
  TakeSlot(t);
  bool create = false;
  for (TenantRequest* r = t.queue_head; r != nullptr; r = r->tenant_next_) {
    if (r->action == TenantRequest::Action::kDelete) break;
    create = create || r->create_if_missing;
  }
  if (create) {
    t.stats.creations++;
    stats_.creations++;
    StartDatabase(t);
    return;
  }
  // Invariant 2: without create_if_missing the file must exist. Checked with an open through
  // the loop rather than by letting SQLite create it.
  SetState(t, TenantState::kProbing);
  t.io.op = io::Op{.kind = io::OpKind::kOpenAt,
                   .fd = AT_FDCWD,
                   .flags = O_RDONLY | O_CLOEXEC,
                   .path = t.path.c_str()};
  loop_.Submit(t.io);
}

void Registry::StartDatabase(Tenant& t) {
  DatabaseOptions database_options = options_.database;
  if (alloc::SqliteMemoryInstalled() && memory_per_tenant()) {
    absl::StatusOr<alloc::TenantId> id = alloc::RegisterTenant(
        absl::StrCat(options_.memory_name_prefix, t.name), options_.tenant_memory_bytes_max);
    if (!id.ok()) {
      FailOpen(t,
               absl::Status(id.status().code(), absl::StrCat("cannot account tenant '", t.name,
                                                             "' memory: ", id.status().message())));
      return;
    }
    t.memory_id = *id;
    t.has_memory_id = true;
    AttachTenant(database_options, t.memory_id);
  }
  t.database = std::make_unique<Database>(loop_, vfs_, t.path, database_options);
  t.stats.opens++;
  stats_.opens++;
  SetState(t, TenantState::kOpening);
  t.database->Open(&Registry::OnOpened, &t);
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature is Database::Callback.
void Registry::OnOpened(void* arg, absl::Status status) {
  auto& t = *static_cast<Tenant*>(arg);
  Registry& self = *t.registry;
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
  ReleaseSlot(t);
  AfterClosed(t);
  GrantSlots();
}

// Submits the queue to the ready Database, stopping at a delete (which needs the tenant
// closed first).
void Registry::ServeQueue(Tenant& t) {
  while (TenantRequest* r = t.queue_head) {
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
  while (waiting_.head != nullptr && HasRoom()) {
    Tenant& t = *waiting_.head;
    Unlink(waiting_, t);
    StartOpen(t);
  }
  EvictForWaiters();
}

// Evicts least recently used idle tenants until the closes under way cover the waiters.
// LRU because the tenant idle the longest is the least likely to be used soon and the next
// to go anyway; its idle-since order is kept by the idle list at O(1) per request.
void Registry::EvictForWaiters() {
  while (waiting_.size > closing_ && idle_.head != nullptr) {
    StartClose(*idle_.head, CloseReason::kEvicted);
  }
}

void Registry::EvictForMemory() {
  if (options_.memory_bytes_max == 0) return;
  uint64_t live = MemoryLive(/*exclude_closing=*/true);
  while (live > options_.memory_bytes_max && idle_.head != nullptr) {
    Tenant& victim = *idle_.head;
    const uint64_t freed = memory_per_tenant() ? TenantMemory(victim) : 0;
    StartClose(victim, CloseReason::kEvicted);
    live = live > freed ? live - freed : 0;
    if (!memory_per_tenant()) live = MemoryLive(/*exclude_closing=*/true);
    if (!memory_per_tenant()) break;  // The shared bucket only drops once the close is done.
  }
}

// ---- Requests -------------------------------------------------------------------------------

// The owner hears first: a client that answers a result with its next request (the common
// shape of a session) keeps its tenant active instead of seeing it go idle and, with waiters
// queued for a slot, evicted in between.
void Registry::OnRequestDone(Request& request, absl::Status status) {
  auto& r = static_cast<TenantRequest&>(request);
  auto& t = *static_cast<Tenant*>(r.tenant_);
  Registry& self = *t.registry;
  SQLOOP_CHECK(t.in_flight > 0, "Registry: a request finished that was not in flight");
  t.in_flight--;
  self.Complete(t, r, std::move(status), /*defer=*/false);  // May submit to `t` again.
  if (t.in_flight != 0 || t.state != TenantState::kActive) return;
  if (t.database->state() == Database::State::kPoisoned) {
    self.StartClose(t, CloseReason::kPoisoned);
  } else if (t.queue_head != nullptr) {
    self.ServeQueue(t);  // A delete is waiting.
  } else {
    self.BecomeIdle(t);
  }
}

// ---- Idleness and closing -------------------------------------------------------------------

void Registry::BecomeIdle(Tenant& t) {
  if (shutting_down_) {
    StartClose(t, CloseReason::kShutdown);
    return;
  }
  t.idle_since_ns = loop_.now_ns();
  SetState(t, TenantState::kIdle);
  PushBack(idle_, t);
  EvictForMemory();
  EvictForWaiters();
  ArmSweeper();
}

// One timer for all idle tenants, armed for the oldest one's deadline. Becoming idle appends
// to the idle list, whose head is therefore always the earliest deadline: a request costs no
// timer operation at all, and the timer fires once per idle close (or per head that woke up).
void Registry::ArmSweeper() {
  if (sweeper_armed_ || idle_.head == nullptr || shutting_down_) return;
  const int64_t deadline_ns = idle_.head->idle_since_ns + idle_timeout_ns_;
  sweeper_armed_ = true;
  loop_.Timer(sweeper_, absl::Nanoseconds(std::max<int64_t>(0, deadline_ns - loop_.now_ns())));
}

loop::Action Registry::OnSweep(loop::Loop& loop, loop::Completion& c) {
  auto& self = *static_cast<Registry*>(c.user_data);
  self.sweeper_armed_ = false;
  if (c.result() == -ECANCELED || self.shutting_down_) {
    self.MaybeFinishShutdown();
    return loop::Action::kDisarm;
  }
  const int64_t now_ns = loop.now_ns();
  while (self.idle_.head != nullptr &&
         self.idle_.head->idle_since_ns + self.idle_timeout_ns_ <= now_ns) {
    self.StartClose(*self.idle_.head, CloseReason::kIdle);
  }
  self.ArmSweeper();
  return loop::Action::kDisarm;
}

uint32_t Registry::CloseIdleTenants() {
  uint32_t closed = 0;
  while (idle_.head != nullptr) {
    StartClose(*idle_.head, CloseReason::kIdle);
    ++closed;
  }
  return closed;
}

void Registry::StartClose(Tenant& t, CloseReason reason) {
  SQLOOP_CHECK(t.in_flight == 0, "Registry: closing a tenant with requests in flight");
  if (t.state == TenantState::kIdle) Unlink(idle_, t);
  t.close_reason = reason;
  if (reason == CloseReason::kIdle) {
    t.stats.idle_closes++;
    stats_.idle_closes++;
  } else if (reason == CloseReason::kEvicted) {
    t.stats.evictions++;
    stats_.evictions++;
  }
  closing_++;
  SetState(t, TenantState::kClosing);
  // Database::Close runs on the next tick, never inside one of that database's own callbacks
  // (a request's on_done is where a tenant usually goes idle and may be evicted at once).
  PushBack(to_close_, t);
  ArmDeferred();
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature is Database::Callback.
void Registry::OnClosed(void* arg, absl::Status status) {
  auto& t = *static_cast<Tenant*>(arg);
  Registry& self = *t.registry;
  // A poisoned database reports its poison here; its requests already heard about it.
  (void)status;
  self.closing_--;
  self.Bury(std::move(t.database));
  self.UnregisterMemory(t);
  self.ReleaseSlot(t);
  // Requests that arrived while it closed reopen it (behind earlier waiters, if any).
  self.AfterClosed(t);
  self.GrantSlots();
  self.MaybeFinishShutdown();
}

// A tenant that holds nothing any more: run its queued delete, queue it for a slot if requests
// are waiting, or rest in kClosed.
void Registry::AfterClosed(Tenant& t) {
  if (t.queue_head == nullptr) {
    SetState(t, TenantState::kClosed);
    PushBack(closed_, t);
    return;
  }
  if (t.queue_head->action == TenantRequest::Action::kDelete) {
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
  if (deferred_armed_) return;
  deferred_armed_ = true;
  loop_.Timer(deferred_, absl::ZeroDuration());
}

loop::Action Registry::OnDeferred(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<Registry*>(c.user_data);
  self.deferred_armed_ = false;
  self.graveyard_.clear();
  while (Tenant* t = self.to_close_.head) {
    Unlink(self.to_close_, *t);
    t->database->Close(&Registry::OnClosed, t);
  }
  // Deliver what is on the list now; what these callbacks add goes out on the next tick.
  TenantRequest* r = self.deferred_head_;
  self.deferred_head_ = self.deferred_tail_ = nullptr;
  while (r != nullptr) {
    TenantRequest* next = r->tenant_next_;
    r->tenant_next_ = nullptr;
    r->submitted_ = false;
    r->on_tenant_done(*r, std::move(r->tenant_status_));
    r = next;
  }
  self.MaybeFinishShutdown();
  return loop::Action::kDisarm;
}

// ---- Deleting -------------------------------------------------------------------------------

void Registry::StartDelete(Tenant& t) {
  SetState(t, TenantState::kDeleting);
  deleting_++;
  t.delete_step = DeleteStep::kUnlinkWal;
  t.delete_found = false;
  RunDeleteStep(t);
}

// The delete's steps, one operation each, in this order (the DeleteStep enum): the WAL and the
// journal go first, so a crash in the middle leaves a main file that is still a valid database
// (its last close checkpointed the WAL into it), never a WAL without its database that a later
// tenant of the same name could replay. Then the directory fsync makes the removal durable
// before the delete is acknowledged.
void Registry::RunDeleteStep(Tenant& t) {
  static constexpr absl::string_view kSuffixes[] = {"-wal", "-journal", ""};
  if (t.delete_step != DeleteStep::kSyncDirectory) {
    t.delete_path = absl::StrCat(t.path, kSuffixes[static_cast<int>(t.delete_step)]);
    t.io.op = io::Op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = t.delete_path.c_str()};
    loop_.Submit(t.io);
    return;
  }
  if (!t.delete_found) {
    FinishDelete(t, absl::NotFoundError(absl::StrCat(
                        "tenant '", t.name, "' does not exist; there is nothing to delete")));
    return;
  }
  t.io.op = io::Op{.kind = io::OpKind::kFsync, .fd = dir_fd_};
  loop_.Submit(t.io);
}

void Registry::OnDeleteIo(Tenant& t, int64_t result) {
  const bool unlink = t.delete_step != DeleteStep::kSyncDirectory;
  if (unlink && result < 0 && result != -ENOENT) {
    FinishDelete(
        t, absl::UnavailableError(absl::StrCat(
               "cannot delete '", internal::FileNameOf(t.delete_path), "': ", ErrnoText(result),
               "; the tenant may be partly deleted, send the delete again")));
    return;
  }
  if (t.delete_step == DeleteStep::kUnlinkMain) t.delete_found = result == 0;
  if (!unlink) {
    FinishDelete(t, result < 0 ? absl::UnavailableError(absl::StrCat(
                                     "tenant '", t.name,
                                     "' was deleted but syncing its "
                                     "directory failed (",
                                     ErrnoText(result),
                                     "); after a crash it may reappear, send the delete again"))
                               : absl::OkStatus());
    return;
  }
  t.delete_step = static_cast<DeleteStep>(static_cast<int>(t.delete_step) + 1);
  RunDeleteStep(t);
}

void Registry::FinishDelete(Tenant& t, absl::Status status) {
  deleting_--;
  if (status.ok()) stats_.deletes++;
  TenantRequest* request = Dequeue(t);
  SQLOOP_CHECK(request != nullptr && request->action == TenantRequest::Action::kDelete,
               "Registry: a delete finished without a delete at the queue head");
  Complete(t, *request, std::move(status), /*defer=*/true);
  SetState(t, TenantState::kClosed);
  AfterClosed(t);
  MaybeFinishShutdown();
}

loop::Action Registry::OnTenantIo(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& t = *static_cast<Tenant*>(c.user_data);
  Registry& self = *t.registry;
  const int64_t result = c.result();
  switch (t.state) {
    case TenantState::kProbing:
      if (result == -ENOENT) {
        // The probe ran for the requests queued when it started, none of which may create the
        // tenant. One that may (create_if_missing) can have joined the queue since: an HTTP
        // create probes first and sends its create only after its own probe said NotFound, so
        // two clients creating the same tenant meet here (http seed 5486). The NotFound answers
        // the requests in front of it; it and those behind it stay queued, and AfterClosed
        // reopens the tenant for them, creating it (StartOpen).
        self.FailQueueBeforeCreate(
            t, absl::NotFoundError(absl::StrCat("tenant '", t.name,
                                                "' does not exist; send the request with "
                                                "create_if_missing to create it")));
        self.FailOpen(t, absl::OkStatus());
        return loop::Action::kDisarm;
      }
      if (result < 0) {
        self.FailOpen(t, absl::UnavailableError(absl::StrCat("cannot open tenant '", t.name,
                                                             "': ", ErrnoText(result))));
        return loop::Action::kDisarm;
      }
      t.probe_fd = static_cast<int>(result);
      self.SetState(t, TenantState::kProbeClosing);
      t.io.op = io::Op{.kind = io::OpKind::kClose, .fd = t.probe_fd};
      self.loop_.Submit(t.io);
      return loop::Action::kDisarm;
    case TenantState::kProbeClosing:
      t.probe_fd = -1;
      self.StartDatabase(t);
      return loop::Action::kDisarm;
    case TenantState::kDeleting:
      self.OnDeleteIo(t, result);
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
  while (waiting_.head != nullptr) {
    Tenant& t = *waiting_.head;
    Unlink(waiting_, t);
    FailQueue(t, closing);
    SetState(t, TenantState::kClosed);
    AfterClosed(t);  // A queued delete still runs.
  }
  CloseIdleTenants();
  if (sweeper_armed_) loop_.Cancel(sweeper_);
  ArmDeferred();  // Finishes the shutdown on the loop even if nothing was open.
}

void Registry::MaybeFinishShutdown() {
  if (!shutting_down_ || dir_closing_ || shut_down_) return;
  if (open_.size != 0 || waiting_.size != 0 || deleting_ != 0) return;
  if (sweeper_armed_ || deferred_armed_ || deferred_head_ != nullptr || !graveyard_.empty() ||
      to_close_.head != nullptr) {
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

// ---- Statistics and invariants --------------------------------------------------------------

uint64_t Registry::TenantMemory(const Tenant& t) {
  if (!t.has_memory_id) return 0;
  absl::StatusOr<alloc::ProfileCounters> counters = alloc::GetTenantCounters(t.memory_id);
  return counters.ok() ? counters->live_bytes : 0;
}

// Per tenant when Database marks its tenant; otherwise the process-wide unattributed bucket,
// which is this registry's memory only when it is the process's one registry. A tenant whose
// open has not finished is charged at least `open_memory_estimate_bytes`: its real cost only
// shows once SQLite has opened it, and without the estimate a burst of opens would all pass
// the budget check at once.
uint64_t Registry::MemoryLive(bool exclude_closing) const {
  uint64_t total = 0;
  if (alloc::SqliteMemoryInstalled() && !memory_per_tenant()) {
    absl::StatusOr<alloc::ProfileCounters> shared = alloc::GetTenantCounters(alloc::kSharedTenant);
    total = shared.ok() ? shared->live_bytes : 0;
  }
  for (const Tenant* t = open_.head; t != nullptr; t = t->open_next) {
    if (exclude_closing && t->state == TenantState::kClosing) continue;
    const bool opening = t->state == TenantState::kProbing ||
                         t->state == TenantState::kProbeClosing ||
                         t->state == TenantState::kOpening;
    const uint64_t known = memory_per_tenant() ? TenantMemory(*t) : 0;
    total += opening ? std::max(known, options_.open_memory_estimate_bytes) : known;
  }
  return total;
}

RegistryStats Registry::stats() const {
  RegistryStats stats = stats_;
  stats.tenants = static_cast<uint32_t>(tenants_.size());
  stats.open = open_.size;
  stats.active = active_;
  stats.idle = idle_.size;
  stats.waiting = waiting_.size;
  stats.memory_bytes = MemoryLive(/*exclude_closing=*/false);
  return stats;
}

absl::StatusOr<TenantStats> Registry::GetTenantStats(absl::string_view tenant) const {
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) {
    return absl::NotFoundError(absl::StrCat("registry does not know tenant '", tenant,
                                            "' (never used, or forgotten beyond tenants_max)"));
  }
  TenantStats stats = it->second->stats;
  stats.state = it->second->state;
  stats.memory_bytes = TenantMemory(*it->second);
  return stats;
}

void Registry::SetState(Tenant& t, TenantState state) {
  if (t.state == TenantState::kActive) active_--;
  if (state == TenantState::kActive) active_++;
  t.state = state;
  AssertInvariants(t);
}

void Registry::AssertInvariants(const Tenant& t) const {
  const bool has_db = t.database != nullptr;
  switch (t.state) {
    case TenantState::kClosed:
    case TenantState::kWaitingSlot:
    case TenantState::kDeleting:
      SQLOOP_CHECK(!has_db && !t.has_memory_id && t.in_flight == 0,
                   "Registry: a closed tenant holds a database, memory or requests");
      SQLOOP_CHECK(t.state != TenantState::kDeleting || t.queue_head != nullptr,
                   "Registry: deleting without a delete request");
      break;
    case TenantState::kProbing:
    case TenantState::kProbeClosing:
      SQLOOP_CHECK(t.holds_slot && !has_db, "Registry: probing without a slot");
      break;
    case TenantState::kOpening:
    case TenantState::kClosing:
      SQLOOP_CHECK(t.holds_slot && has_db && t.in_flight == 0,
                   "Registry: opening or closing without a database, or with requests");
      break;
    case TenantState::kActive:
      SQLOOP_CHECK(t.holds_slot && has_db, "Registry: active without a database");
      break;
    case TenantState::kIdle:
      SQLOOP_CHECK(t.holds_slot && has_db && t.in_flight == 0 && t.queue_head == nullptr,
                   "Registry: idle with work, or without a database");
      break;
  }
  SQLOOP_CHECK(open_.size <= open_max_, "Registry: more tenants open than open_max");
  SQLOOP_CHECK(t.queue_size <= options_.tenant_queue_max, "Registry: tenant queue overfull");
}

}  // namespace sqloop::db
