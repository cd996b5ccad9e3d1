// db/registry.h
// -----------------------------------------------------------------------------
//
// `Registry` serves many SQLite databases ("tenants") from one loop, by name, out of one
// directory: `<directory>/<tenant>.db`. A tenant is opened on its first request, closed again
// after it has been idle for a while (scale to zero), and the number of databases open at once
// and the SQLite memory they hold are bounded by budgets. docs/multitenancy.md has the whole
// story; this header has the contracts.
//
// When to use it: a host that serves thousands of small databases (one per customer, per
// user, per document) from one process. For one database, use `Database` directly.
//
// What a tenant costs: closed, nothing but its entry in the tenant table (kept for its
// statistics, forgotten least-recently-closed first beyond `tenants_max`; the registry_memory
// benchmark's closed_tenant_heap_bytes measures it). Open, a
// `Database` (a writer and `database.readers` reader connections, their page caches and
// statement caches) and at most `kDescriptorsPerDatabase` file descriptors. Asleep (an idle
// tenant evicted to free its slot, up to `asleep_max` of them), its Database's connections
// and schema with their caches given back, and no descriptor: its next request wakes it
// (Database::Sleep) instead of opening it again.
//
// Design invariants:
//   1. Names are validated (`ValidateTenantName`) before anything else happens: an invalid
//      name never reaches the tenant table, the file system or the memory accounting.
//   2. A database file is created only by a request with `create_if_missing`. Any other
//      request for a tenant whose file does not exist fails with NotFound and creates nothing.
//      An empty file counts as missing: it is what a creation that failed inside SQLite's
//      open (or a crash during one) leaves, since a created tenant's first transaction (the
//      switch to WAL) writes the database's first page before its creation is answered.
//   3. At most `open_max` tenants hold a slot at once, only a tenant with a slot holds a
//      descriptor, and each holds at most kDescriptorsPerDatabase, so the registry never
//      exhausts descriptors. A sleeping tenant holds a database but no slot and no descriptor;
//      at most `asleep_max` tenants sleep. Its descriptors close through the loop: until
//      they are closed, they count as a slot still taken (no one else takes it meanwhile).
//   4. Each request completes exactly once: its `on_done` runs on the loop, or Submit
//      returns an error and nothing runs. Requests of one tenant reach its Database in
//      submission order (from there the Database's rules apply; a Client orders completions).
//   5. An idle tenant (open, nothing in flight, nothing queued) is closed after `idle_timeout`
//      of the loop's clock, and a sleeping one `idle_timeout` after it fell asleep; a closed
//      tenant holds no descriptor, no connection, no SQLite memory (its accounting tenant is
//      unregistered, which checks that it is at zero).
//   6. Eviction takes only idle tenants, chosen by SIEVE (a tenant used again since it opened
//      outlives one used once; db/internal/tenant_policy.h); a request in flight is never
//      cancelled to make room. A victim evicted for a slot sleeps when it can (asleep_max, and
//      the memory budget is not what is full); otherwise, and for memory, it is closed, and
//      sleepers are closed before idle tenants when memory is short.
//   7. Nothing here blocks the loop: every file operation of the registry itself (deleting a
//      file, syncing the directory) is a loop operation, and so is its Databases' check that
//      a file exists (DatabaseOptions::create_if_missing). Create grows the process's
//      descriptor table to the whole budget (open_max's descriptors and descriptors_reserved)
//      at once, so no open of a tenant waits for the kernel to grow it.
//
// A tenant's states (the diagram and transition table are in registry.cc and
// docs/multitenancy.md):
//   kClosed -> [kWaitingSlot] -> kOpening -> kActive <-> kIdle
//   kIdle -> kAsleep -> [kWaitingSlot] -> kActive (its next request wakes it)
//   kIdle, kAsleep -> kClosing -> kClosed;   kClosing -> kDeleting -> kClosed (a delete)
//
// The registry belongs to its loop's thread: every call is made on that thread (from a loop
// callback or between Run() calls). `Shards` (db/shards.h) runs one registry per thread and
// hands requests across with Loop::Post.
//
// Example:
//
//   sqloop::db::RegistryOptions options;
//   options.directory = "/var/lib/app/tenants";
//   options.idle_timeout = absl::Seconds(30);
//   auto registry = sqloop::db::Registry::Create(*loop, *vfs, options);
//   if (!registry.ok()) return registry.status();
//
//   sqloop::db::TenantRequest request;                // caller-owned, like a Completion
//   request.tenant = "acme";
//   request.create_if_missing = true;
//   request.kind = sqloop::db::Request::Kind::kWrite;
//   request.sql = "CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v)";
//   request.on_done = [](sqloop::db::TenantRequest& r, absl::Status status) { ... };
//   absl::Status admitted = (*registry)->Submit(request);  // on_done runs later
//   ... loop->Run(...) ...
//   (*registry)->Shutdown([](void*, absl::Status) { ... }, nullptr);
#ifndef SQLOOP_DB_REGISTRY_H_
#define SQLOOP_DB_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sqloop/alloc/intrusive_list.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/database.h"
#include "sqloop/db/request.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db {

class Registry;
namespace internal {
struct Tenant;                     // db/internal/tenant.h
class TenantPolicy;                // db/internal/tenant_policy.h
enum class CloseReason : uint8_t;  // db/internal/tenant.h
}  // namespace internal

// ---- Tenant names ---------------------------------------------------------------------------

// The longest tenant name. 64 bytes holds a UUID (36) or a 128-bit hex id (32) with a prefix,
// and keeps `<directory>/<name>.db-journal` far below PATH_MAX.
inline constexpr size_t kTenantNameBytesMax = 64;

// Checks that `name` is a valid tenant name: 1 to kTenantNameBytesMax bytes of
// [a-z0-9_-], starting with [a-z0-9]; as a regular expression [a-z0-9][a-z0-9_-]{0,63}.
//
// Why so strict: the name becomes a file name. No '/' and no '.' means no path traversal
// ("..", "a/b", "/etc/passwd") and no hidden files; lowercase only means two names never
// alias on a case-insensitive file system; no leading '-' or '_' means a name is never read
// as a command-line option by the tools an operator points at the directory. Everything
// else (spaces, control characters, NUL, UTF-8) is refused rather than escaped.
//
// Returns OK, or InvalidArgument whose message names the offending byte and its position.
// Pure and thread-safe: the HTTP host and Shards call it on any thread.
[[nodiscard]] absl::Status ValidateTenantName(absl::string_view name);

// ---- Limits ---------------------------------------------------------------------------------

// Descriptors one open database may hold: its main file, rollback journal and WAL (one each,
// shared by all its connections, db/vfs.h) and the directory the VFS keeps open to fsync a
// file it created.
inline constexpr uint32_t kDescriptorsPerDatabase = 4;
// Descriptors left to the rest of the process when open_max is derived from RLIMIT_NOFILE:
// the ring, eventfds, the registry's directory, a host's listening and client sockets, logs.
inline constexpr uint32_t kDescriptorsReservedDefault = 64;
// Closed Databases freed per tick: freeing one takes a microsecond or so, and a shutdown closes
// thousands of sleepers at once.
inline constexpr uint32_t kBuriedFreedPerTick = 64;
// A host that sets no limit still gets a bound: 30 s idle keeps a tenant that is used every
// few seconds warm while an abandoned one gives its memory back within a minute.
inline constexpr absl::Duration kIdleTimeoutDefault = absl::Seconds(30);
// An idle tenant gives its page caches back after this long (RegistryOptions::idle_trim_after).
inline constexpr absl::Duration kIdleTrimAfterDefault = absl::Seconds(1);
// Tenants that may wait for an open slot at once. A wait is one list link in the tenant entry,
// but a longer queue only adds latency: past 4096 waiters the host is overloaded and the
// client should hear so (ResourceExhausted) rather than wait.
inline constexpr uint32_t kWaitingOpensMaxDefault = 4096;
// Requests queued per tenant while it opens or closes: 1024 covers a burst from many clients
// of one tenant during its open (a few milliseconds), and bounds what one tenant can pin.
inline constexpr uint32_t kTenantQueueMaxDefault = 1024;
// Tenant entries kept (open ones plus closed ones remembered for their statistics). What one
// costs is measured (registry_memory's closed_tenant_heap_bytes): lower this where 131072 of
// them is too much memory. Closed entries are forgotten oldest first.
inline constexpr uint32_t kTenantsMaxDefault = 1u << 17;
// The memory budget charges a tenant that is still opening this much (its real cost is only
// known once SQLite opened it). 256 KiB is about what a freshly opened database with the
// default three connections holds (schema, connection structures, first cache pages); see the
// registry_memory benchmark for the measured value.
inline constexpr uint64_t kOpenMemoryEstimateBytesDefault = uint64_t{256} * 1024;
// The most open databases one registry will ever allow, whatever RLIMIT_NOFILE says: the
// memory accounting has kTenantsMax ids for the whole process. 131,072 open tenants hold
// 524,288 descriptors at most, half of Linux's default fs.nr_open.
inline constexpr uint32_t kOpenMaxLimit = 1u << 17;
// The most open databases a registry derives from RLIMIT_NOFILE when open_max is 0. Container
// runtimes often set the limit to a million; an open tenant costs memory (registry_memory
// measures it), so a host that wants more than this many open at once says so in open_max.
inline constexpr uint32_t kOpenMaxDerivedMax = 8192;
// Tenants kept asleep at most (RegistryOptions::asleep_max). A sleeper costs its connections'
// schema and structures (registry_memory's asleep_tenant_bytes measures it), so 4096 of them
// are a few hundred megabytes at most; they go after idle_timeout like idle ones.
inline constexpr uint32_t kAsleepMaxDefault = 4096;

// The open databases the process's soft RLIMIT_NOFILE allows after `reserved` descriptors:
// (limit - reserved) / kDescriptorsPerDatabase, at most kOpenMaxDerivedMax; 0 if not even one.
[[nodiscard]] uint32_t DescriptorBoundOpenMax(uint32_t reserved);

// Grows the process's descriptor table, once, to hold `descriptors` (numbers 0 to
// descriptors - 1), so that no later open grows it. Linux grows the table by doubling when a
// new descriptor does not fit, and while another thread shares the table (io_uring's kernel
// workers do) each growth waits for an RCU grace period inside the call that made the
// descriptor: for a loop, a ring submission in the middle of a tick. Registry::Create calls it
// for its budget (invariant 7) and Shards::Start for all of its shards'. A table never shrinks:
// this costs that wait here at most once, and 8 bytes and two bits per descriptor.
[[nodiscard]] absl::Status ReserveDescriptorTable(uint64_t descriptors);

// What a request does when no open slot (or no memory) is free and no idle tenant can be
// evicted to make room.
enum class WhenFull : uint8_t {
  kWait,  // Wait in a FIFO of at most waiting_opens_max tenants; beyond it, ResourceExhausted.
  kFail,  // Fail at once with ResourceExhausted, so the client can back off.
};

// Which idle tenant is evicted to make room (db/internal/tenant_policy.h has both).
enum class Eviction : uint8_t {
  kSieve,  // A tenant used again since it opened outlives one used once. The default.
  kLru,    // The tenant idle the longest: the baseline the registry_zipf benchmark compares to.
};

struct RegistryOptions {
  // Where the tenants' files live. Must exist; the registry never creates directories.
  std::string directory;
  // Close a tenant that had nothing to do for this long (on the loop's clock). Must be > 0.
  // InfiniteDuration (or any delay the loop's clock cannot reach): never.
  absl::Duration idle_timeout = kIdleTimeoutDefault;
  // Trim a tenant that had nothing to do for this long: its connections give back the cached
  // pages they do not need (Database::ReleaseMemory), so an idle open tenant costs little
  // more than its schema. Its next reads fetch those pages again. InfiniteDuration: never.
  absl::Duration idle_trim_after = kIdleTrimAfterDefault;
  // The most tenants holding a database at once, up to kOpenMaxLimit. 0: derive it from the
  // process's soft RLIMIT_NOFILE: (limit - descriptors_reserved) / kDescriptorsPerDatabase,
  // at most kOpenMaxDerivedMax.
  uint32_t open_max = 0;
  uint32_t descriptors_reserved = kDescriptorsReservedDefault;
  // Budget for the SQLite memory of all open tenants together (0: none). Checked when a tenant
  // is opened and when one goes idle; idle tenants are evicted to get back under it.
  uint64_t memory_bytes_max = 0;
  // What a tenant whose open has not finished is assumed to hold, for the memory budget.
  uint64_t open_memory_estimate_bytes = kOpenMemoryEstimateBytesDefault;
  // Hard limit per tenant (alloc::RegisterTenant): a request past it fails with an
  // out-of-memory error and the tenant stays usable.
  uint64_t tenant_memory_bytes_max = alloc::kTenantNoLimit;
  // The most tenants kept asleep: an idle tenant evicted to free its slot for another closes
  // its descriptors and keeps its connections (Database::Sleep), and its next request wakes it
  // (two opens through the loop, no schema parse) instead of opening it again. Beyond
  // asleep_max the one asleep the longest is closed. 0: evicted tenants close. While a tenant
  // sleeps its file is not locked: db/database.h says what the wake checks.
  uint32_t asleep_max = kAsleepMaxDefault;
  WhenFull when_full = WhenFull::kWait;
  Eviction eviction = Eviction::kSieve;
  uint32_t waiting_opens_max = kWaitingOpensMaxDefault;
  uint32_t tenant_queue_max = kTenantQueueMaxDefault;
  uint32_t tenants_max = kTenantsMaxDefault;
  // Prefixed to tenant names in the SQLite memory accounting, whose names are unique per
  // process: each registry of a process needs its own ("shard0/"). Empty: the directory and a
  // slash, so registries of different directories never collide.
  std::string memory_name_prefix;
  // Options of every Database the registry opens.
  DatabaseOptions database;
};

// A request for one tenant: a `Request` (fill kind, sql, params, batch, on_row, user_data and
// deadline_ns as for Database::Submit), plus the tenant, what to do with it, and its own
// `on_done`, which receives the TenantRequest. Caller-owned: keep it alive and untouched from
// Submit until on_done ran.
//
// The Request is a private base: a TenantRequest is not a Request to its users, so there is
// exactly one completion callback to set. Every other public member of Request is re-exported
// here. The Database finishes the Request through a private hook the registry sets at Submit,
// and the registry then calls on_done; nothing but the caller writes on_done. A row callback
// receives the Request: `TenantRequest::Of(request)` is the TenantRequest around it.
//
// kExecute with an empty `sql` only makes sure the tenant is open (creating it if allowed):
// that is how a host creates a database without running a statement.
struct TenantRequest : private Request {
  // The base's own name, public again: a private base's injected name would otherwise make
  // `Request` inaccessible in types derived from this one.
  using Request = ::sqloop::db::Request;

  enum class Action : uint8_t {
    kExecute,  // Run `sql` (or nothing) against the tenant's database.
    kDelete,   // Close the tenant and delete its files. NotFound if it has none.
  };
  using DoneCallback = void (*)(TenantRequest& request, absl::Status status);

  // The Request's public members (see db/request.h for each).
  using Request::batch;
  using Request::batch_index;
  using Request::Cancel;
  using Request::cancel_requested;
  using Request::changes;
  using Request::client;
  using Request::deadline_ns;
  using Request::DiscardCallback;
  using Request::epoch;
  using Request::Kind;
  using Request::kind;
  using Request::last_insert_rowid;
  using Request::on_row;
  using Request::on_rows_discarded;
  using Request::params;
  using Request::RowCallback;
  using Request::sql;
  using Request::State;
  using Request::state;
  using Request::user_data;
  using Request::vm_steps_max;

  // The TenantRequest whose Request `request` is: in on_row and on_rows_discarded of a
  // TenantRequest (or of a type built on one, such as ShardRequest), that is the request the
  // caller submitted. `request` must be such a Request.
  [[nodiscard]] static TenantRequest& Of(Request& request) {
    return static_cast<TenantRequest&>(request);
  }

  // ---- Filled by the caller -----------------------------------------------------------------
  absl::string_view tenant;  // Must outlive the request.
  Action action = Action::kExecute;
  // Create the database file if it does not exist. Without it, a missing tenant is NotFound.
  bool create_if_missing = false;
  // Required: the request is done (or failed) with this status; runs exactly once per
  // admitted Submit, on the registry's loop. Set only by the caller.
  DoneCallback on_done = nullptr;

 private:
  friend class Registry;
  friend class Shards;  // Sets tenant_layer_done_.
  friend struct internal::Tenant;

  // Called by the registry when the request is done: the layer's hook if one is set, else the
  // caller's on_done.
  void CallTenantDone(absl::Status status) {
    if (tenant_layer_done_ != nullptr) {
      tenant_layer_done_(*this, std::move(status));
      return;
    }
    on_done(*this, std::move(status));
  }

  // ---- A layer's hook ---------------------------------------------------------------------------
  // Set by a layer that builds its own request type on this one (Shards, at Submit, for a
  // ShardRequest): the registry calls it instead of on_done, and the layer finishes its own
  // request through that request's on_done. Null for a TenantRequest submitted directly.
  DoneCallback tenant_layer_done_ = nullptr;

  // ---- The Registry's bookkeeping -------------------------------------------------------------
  internal::Tenant* tenant_ = nullptr;   // The registry's entry for the tenant.
  ListLink<TenantRequest> tenant_link_;  // In the tenant's queue or the deferred list.
  absl::Status tenant_status_;           // The outcome, while on the deferred list.
  bool submitted_ = false;
};

// Where a tenant is in its lifecycle (registry.cc has the diagram and the transitions).
enum class TenantState : uint8_t {
  kClosed,       // No database, no descriptor, no memory.
  kWaitingSlot,  // Requests queued; waiting for an open slot or memory.
  kOpening,      // Database::Open in progress.
  kActive,       // Open, requests in flight.
  kIdle,         // Open, nothing in flight: evictable, closes after idle_timeout.
  kAsleep,       // Evicted, its database asleep: no slot, no descriptor, its connections kept.
  kClosing,      // Database::Close in progress (idle timeout, eviction, delete, shutdown).
  kDeleting,     // Unlinking the files and syncing the directory.
};

// Returns "closed", "waiting_slot", ...
[[nodiscard]] absl::string_view TenantStateName(TenantState state);

struct TenantStats {
  TenantState state = TenantState::kClosed;
  uint64_t opens = 0;        // Times the database was opened (creations included).
  uint64_t creations = 0;    // Opens that were allowed to create (and found no file).
  uint64_t idle_closes = 0;  // Closed after idle_timeout.
  uint64_t evictions = 0;    // Closed early to make room for another tenant.
  uint64_t trims = 0;        // Page caches given back after idle_trim_after (or TrimIdleTenants).
  uint64_t sleeps = 0;       // Evictions that put it to sleep instead of closing it.
  uint64_t wakes = 0;        // Slots taken again by a sleeping tenant for a request.
  uint64_t requests = 0;     // Requests completed (any outcome).
  uint64_t requests_failed = 0;
  uint64_t memory_bytes = 0;  // SQLite bytes held now (0 when closed).
  int64_t last_use_ns = 0;    // Loop clock when its last request completed.
};

struct RegistryStats {
  uint32_t tenants = 0;  // Entries in the table (open and remembered closed ones).
  uint32_t open = 0;     // Tenants holding a slot (opening, active, idle, closing).
  uint32_t active = 0;
  uint32_t idle = 0;
  uint32_t asleep = 0;   // Tenants asleep: a database, no slot, no descriptor.
  uint32_t closing = 0;  // Tenants closing (a sleeper's close holds no slot).
  // Tenants just put to sleep whose descriptors' closes are still in flight: each counts as a
  // slot taken until they are done.
  uint32_t sleeps_closing = 0;
  uint32_t waiting = 0;  // Tenants waiting for a slot.
  uint32_t buried = 0;   // Closed Databases not yet freed (kBuriedFreedPerTick per tick).
  uint32_t open_max = 0;
  uint32_t open_high_water = 0;  // Most slots ever held at once.
  uint64_t opens = 0;
  uint64_t creations = 0;
  uint64_t open_failures = 0;
  uint64_t idle_closes = 0;
  uint64_t evictions = 0;
  uint64_t trims = 0;
  uint64_t sleeps = 0;          // Evicted tenants put to sleep.
  uint64_t sleeps_refused = 0;  // ... that could not sleep (Database::Sleep refused) and closed.
  uint64_t wakes = 0;           // Sleeping tenants that took a slot again for a request.
  uint64_t wakes_failed = 0;    // Closed because their database's wake failed.
  uint64_t deletes = 0;
  uint64_t requests = 0;  // Completed through on_done.
  uint64_t requests_failed = 0;
  uint64_t rejected = 0;      // Submit refused (invalid name, budget, queue full).
  uint64_t slot_waits = 0;    // Tenants that had to wait for a slot.
  uint64_t forgotten = 0;     // Closed entries dropped beyond tenants_max.
  uint64_t memory_leaks = 0;  // Closed tenants whose SQLite memory was not back at zero.
  uint64_t memory_bytes = 0;  // SQLite bytes of the open tenants now.
};

class Registry {
 public:
  using Callback = void (*)(void* arg, absl::Status status);

  // Checks the options (the directory must exist: it is opened once, for the directory fsync
  // that makes a delete durable) and derives open_max. Errors say which option is wrong.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Registry>> Create(loop::Loop& loop, Vfs& vfs,
                                                                        RegistryOptions options);
  // Checks that Shutdown() completed: destroying an open registry would strand requests.
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Admits `request` (idle, with tenant and on_done set). Returns an error and runs nothing
  // for: an invalid name (InvalidArgument), no room (ResourceExhausted: the tenant's queue, the
  // waiting FIFO, the tenant table, or when_full == kFail with no slot), a database that
  // refused it at once (its Submit error), or a registry that is shutting down
  // (FailedPrecondition). Otherwise on_done runs later, exactly once, on the loop.
  [[nodiscard]] absl::Status Submit(TenantRequest& request);

  // Starts closing every idle and every sleeping tenant now (memory pressure, tests,
  // benchmarks). Returns how many. Their next request reopens them, as after the idle timeout.
  uint32_t CloseIdleTenants();
  // Trims every idle tenant not trimmed since it went idle, now, as idle_trim_after would
  // (memory pressure, tests, benchmarks). Returns how many.
  uint32_t TrimIdleTenants();

  // Refuses new requests, lets those running on an open tenant finish, fails those still
  // waiting for a slot with Unavailable (they did not run: send them elsewhere), closes every
  // tenant, stops the idle timer, then calls `done` on the loop. The registry may be destroyed
  // after that. Called once (a second call is a programming error and stops the process).
  void Shutdown(Callback done, void* arg);

  // Totals now. O(open tenants): reads each open tenant's memory counter.
  [[nodiscard]] RegistryStats stats() const;
  // One tenant's statistics; NotFound if the registry does not know (or forgot) it.
  [[nodiscard]] absl::StatusOr<TenantStats> GetTenantStats(absl::string_view tenant) const;
  [[nodiscard]] uint32_t open_max() const { return open_max_; }
  // The file of a tenant: `<directory>/<tenant>.db`.
  [[nodiscard]] std::string PathOf(absl::string_view tenant) const;

 private:
  using Tenant = internal::Tenant;
  using DeferredList = IntrusiveList<TenantRequest, &TenantRequest::tenant_link_>;

  Registry(loop::Loop& loop, Vfs& vfs, RegistryOptions options, uint32_t open_max, int dir_fd);

  // Admission and queues.
  absl::StatusOr<Tenant*> Admit(const TenantRequest& request);
  absl::Status SubmitToOpen(Tenant& t, TenantRequest& request);
  void Kick(Tenant& t);
  static void Enqueue(Tenant& t, TenantRequest& request);
  static TenantRequest& Dequeue(Tenant& t);
  void ServeQueue(Tenant& t);
  void Complete(Tenant& t, TenantRequest& request, absl::Status status, bool defer);
  void FailQueue(Tenant& t, const absl::Status& status);
  void FailQueueBeforeCreate(Tenant& t, const absl::Status& status);

  // Slots and opening.
  void RequestSlot(Tenant& t);
  void GrantSlots();
  void EvictForWaiters();
  void EvictForMemory();
  void StartOpen(Tenant& t);
  void StartDatabase(Tenant& t, bool create);
  void NotFound(Tenant& t);
  void FailOpen(Tenant& t, const absl::Status& status);

  // Idleness, sleeping and closing.
  void BecomeIdle(Tenant& t);
  bool PutToSleep(Tenant& t);
  void FallAsleep(Tenant& t);
  void ArmSweeper();
  void StartClose(Tenant& t, internal::CloseReason reason);
  void Trim(Tenant& t);
  void SweepDue(int64_t now_ns);
  void AfterClosed(Tenant& t);
  void UnregisterMemory(Tenant& t);
  void Bury(std::unique_ptr<Database> database);
  void ArmDeferred();

  // Deleting (the files themselves: db/internal/tenant_delete.h).
  void StartDelete(Tenant& t);
  void FinishDelete(Tenant& t, absl::Status status);

  // Shutdown and checks.
  void SetState(Tenant& t, TenantState state);
  void MaybeFinishShutdown();
  void AssertInvariants(const Tenant& t) const;

  // Callbacks.
  static loop::Action OnTenantIo(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnSweep(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnDeferred(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnDirClosed(loop::Loop& loop, loop::Completion& c);
  static void OnOpened(void* arg, absl::Status status);
  static void OnClosed(void* arg, absl::Status status);
  // A sleeper's descriptors are closed (Database::Sleep's `closed`): its slot is free.
  static void OnSleepClosed(void* arg, absl::Status status);
  static void OnRequestDone(Request& request, absl::Status status);

  loop::Loop& loop_;
  Vfs& vfs_;
  RegistryOptions options_;
  uint32_t open_max_;
  int dir_fd_;  // The tenants' directory, kept open for the fsync after a delete.

  // The entries, found by their own name: a lookup reads the table's 8-byte slot and the entry
  // it points to, where a map would keep a copy of the name in a larger slot of its own.
  struct ByName {
    using is_transparent = void;
    size_t operator()(absl::string_view name) const;
    size_t operator()(const std::unique_ptr<Tenant>& t) const;
    bool operator()(const std::unique_ptr<Tenant>& a, const std::unique_ptr<Tenant>& b) const;
    bool operator()(const std::unique_ptr<Tenant>& a, absl::string_view b) const;
  };
  absl::flat_hash_set<std::unique_ptr<Tenant>, ByName, ByName> tenants_;
  // Who may open, who waits, who is evicted or forgotten; owns the lists of tenants.
  std::unique_ptr<internal::TenantPolicy> policy_;
  uint32_t active_ = 0;    // Tenants in kActive.
  uint32_t deleting_ = 0;  // Tenants in kDeleting.

  loop::Completion sweeper_;         // The one idle timer (see ArmSweeper); armed unless kIdle.
  int64_t sweeper_deadline_ns_ = 0;  // When the armed sweeper fires.
  // A next tick for work that must not run where it was decided: completing requests that did
  // not come from a Database, freeing closed Database objects, and evicting for the waiters
  // after a tenant went idle (inside its own Database's callback, where it cannot sleep).
  // Armed unless kIdle.
  loop::Completion deferred_;
  DeferredList deferred_requests_;
  std::vector<std::unique_ptr<Database>> graveyard_;
  bool evict_deferred_ = false;
  loop::Completion dir_close_;  // Closes dir_fd_ at the end of Shutdown.
  bool dir_closing_ = false;

  bool shutting_down_ = false;
  bool shut_down_ = false;
  Callback shutdown_done_ = nullptr;
  void* shutdown_arg_ = nullptr;
  RegistryStats stats_;
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_REGISTRY_H_
