// alloc/sqlite_memory.h
// -----------------------------------------------------------------------------
//
// Accounting for SQLite's own heap. `InstallSqliteMemory()` routes every SQLite allocation
// (page cache, schema, prepared statements, sorter memory...) through an allocator that
// charges it to the *current tenant*: the database that whoever steps SQLite marked with a
// `ScopedTenant`. The loop is single-threaded, so the marker is exact; it is thread_local, so
// two loops on two threads stay exact too.
//
// Design invariants:
//   1. Every block carries a 16-byte header naming its owner and size. A free or a realloc is
//      credited to the owner, whichever tenant is current at the time: a statement prepared by
//      tenant A and finalised while B runs still leaves A's account balanced.
//   2. Blocks stay 16-byte aligned (the header is 16 bytes and malloc's alignment is 16).
//   3. A tenant over its limit gets NULL from the allocator. SQLite turns that into SQLITE_NOMEM
//      for the statement at hand, rolls it back and frees what it took; the connection stays
//      usable and nothing leaks. Raising the limit makes the tenant work again. Only a request
//      past the limit is refused: the limit is checked and the bytes charged in one
//      compare-and-swap, so a refused request never shows in the live bytes, where a request of
//      the same tenant on another thread (an integrity check's) would meet it.
//   4. Bytes allocated with no tenant marked (SQLite's global state, the host's own
//      sqlite3_malloc calls) go to the "shared" tenant, `kSharedTenant`, which has no limit.
//   5. A tenant can only be unregistered with zero live bytes, so an id is never recycled while
//      blocks still point at it. Each registration has a generation of its own: a scope still
//      open on another thread when its tenant is unregistered keeps its statistics out of the
//      next tenant given that id (they are dropped), and an allocation in it is a programmer
//      error, caught.
//   6. The allocation path takes no lock and never allocates beyond the block itself: per-tenant
//      counters are relaxed atomics in a fixed table (one cache line per tenant). Live bytes
//      (what limits and groups read) change at every allocation and free. The statistics of a
//      `ScopedTenant`'s own tenant (allocations, frees, bytes allocated, its peak) collect in
//      thread-local fields and reach its counters when the scope ends, a nested scope starts,
//      or the thread reads counters: an atomic read-modify-write costs about as much as the
//      rest of the allocation, and opening a database makes hundreds of them. So another
//      thread sees a tenant's statistics as of the end of its last scope; its live bytes always
//      as they are.
//   7. Freed blocks of up to 128 KiB are kept in a per-thread block cache and handed out again
//      (SQLite's lookaside does the same for small blocks, and Debian's SQLite is built without
//      it), so a statement that frees what it allocated makes no heap allocation the next time
//      it runs. Each of the 48 size classes keeps at most `SetSqliteBlockCacheBytesPerClass()`
//      bytes, or two blocks if that is more, per thread; the class of page blocks (a 4 KiB page
//      and the page cache's header for it) keeps up to kSqliteBlockCachePageBytes, because a
//      connection that sees another's commit drops its whole page cache at its next read
//      transaction and reads the pages back. About 5.5 MiB per thread at most with the
//      defaults, and only what the thread's work really freed.
//      The cache is freed when its thread exits, and is not charged to any tenant: tenants are
//      charged for what SQLite holds.
//
// Order of operations for a host:
//   1. Make any other process-wide `sqlite3_config()` calls.
//   2. `InstallSqliteMemory()`: configures the allocator and initialises SQLite, outside any
//      tenant, so SQLite's global state is charged to "shared".
//   3. Per database: `RegisterTenant()`, and wrap every SQLite call for it (open, prepare,
//      step, finalize, close) in a `ScopedTenant`. `UnregisterTenant()` after closing it.
//
// Example:
//
//   SQLOOP_CHECK(sqloop::alloc::InstallSqliteMemory().ok(), "install before any sqlite3 use");
//   absl::StatusOr<TenantId> tenant = sqloop::alloc::RegisterTenant("db-42", 64 << 20);
//   {
//     sqloop::alloc::ScopedTenant scope(*tenant);
//     sqlite3_step(statement);  // Allocations here count against db-42's 64 MiB.
//   }
//   sqloop::alloc::AllocationProfile profile;
//   sqloop::alloc::ExportSqliteMemoryProfile(&profile);
#ifndef SQLOOP_ALLOC_SQLITE_MEMORY_H_
#define SQLOOP_ALLOC_SQLITE_MEMORY_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sqloop/alloc/profile.h"

namespace sqloop::alloc {

// A small integer naming a tenant of SQLite's heap (normally one database). Ids are recycled
// after `UnregisterTenant()`.
using TenantId = uint32_t;

// The bucket for bytes not attributable to a tenant. Always registered, never limited.
inline constexpr TenantId kSharedTenant = 0;

// The most tenants registered at once, shared bucket included: room for the registry's most
// open databases (kOpenMaxLimit, db/registry.h) with some to spare. The table is 262,144 cache
// lines (16 MiB) of zero-filled memory; a page of it costs memory only once one of its 64
// slots has been used.
inline constexpr size_t kTenantsMax = size_t{1} << 18;

// `limit_bytes` value for "no limit".
inline constexpr uint64_t kTenantNoLimit = UINT64_MAX;

// Installs the accounting allocator with `sqlite3_config(SQLITE_CONFIG_MALLOC)` and calls
// `sqlite3_initialize()`. Idempotent. Fails with `absl::FailedPreconditionError` when SQLite
// was initialised before the first call (its allocator can then no longer be replaced).
// It also turns off SQLite's up-front page-cache allocation per connection
// (`SQLITE_CONFIG_PAGECACHE` with no memory and 0 lines), so an open connection holds only
// the pages it has read: an idle tenant's three connections would otherwise hold room for 60
// pages between them whether they read them or not. And it turns off SQLite's own memory
// statistics (`SQLITE_CONFIG_MEMSTATUS`), which lock a process-wide mutex around every
// allocation to count what the tenants' counters count already: `sqlite3_memory_used()` then
// says 0 (use `SqliteLiveBytes()`), and SQLite's soft and hard heap limits do nothing (use
// `SetTenantLimit()`).
[[nodiscard]] absl::Status InstallSqliteMemory();

// True once `InstallSqliteMemory()` has succeeded in this process.
[[nodiscard]] bool SqliteMemoryInstalled();

// Registers a tenant named `name` (unique among registered tenants; "shared" is taken) whose
// live SQLite bytes may not exceed `limit_bytes`. Fails with `AlreadyExists` for a duplicate
// name and `ResourceExhausted` when `kTenantsMax` tenants are registered.
//
// With a `group` (a registered tenant that is in no group itself), every byte charged to the
// new tenant is charged to the group too: the group's live_bytes and peak_live_bytes are those
// of its members together (plus its own, if SQLite ever runs for it), kept as allocations
// happen, so a host reads the total of many tenants in O(1); its limit caps them together.
// Its other counters are its own only: a member's allocation its limit refuses is the
// member's failure, and raises no peak.
[[nodiscard]] absl::StatusOr<TenantId> RegisterTenant(absl::string_view name,
                                                      uint64_t limit_bytes = kTenantNoLimit,
                                                      TenantId group = kSharedTenant);

// Frees the tenant's id for reuse. Fails with `FailedPrecondition` while the tenant still owns
// SQLite memory (close its connections first) or, for a group, still has members, and
// `InvalidArgument` for an unknown id or the shared tenant.
[[nodiscard]] absl::Status UnregisterTenant(TenantId tenant);

// Changes a tenant's limit. Lowering it below the live bytes frees nothing; it refuses the
// tenant's next allocations until enough is freed.
[[nodiscard]] absl::Status SetTenantLimit(TenantId tenant, uint64_t limit_bytes);

// A snapshot of one tenant's counters (allocations, frees, bytes, live, peak, refusals).
[[nodiscard]] absl::StatusOr<ProfileCounters> GetTenantCounters(TenantId tenant);

// Copies every registered tenant's counters (and the shared bucket's) into `profile` as
// tenant entries named after the tenants. Groups are left out: their bytes are their
// members' (sqloop never runs SQLite for a group; a host that does finds those bytes in
// SqliteLiveBytes and the group's counters, not here).
void ExportSqliteMemoryProfile(AllocationProfile* profile);

// The live bytes of every registered tenant, the shared one included: SQLite's heap in the
// whole process (what `sqlite3_memory_used()` says when SQLite keeps its own statistics).
[[nodiscard]] uint64_t SqliteLiveBytes();

// Bytes of freed blocks the block cache keeps per size class and thread (invariant 7) by
// default: 64 KiB holds thousands of the small blocks a statement's savepoints, bit vectors and
// cursors use, and a few page-sized ones.
inline constexpr uint32_t kSqliteBlockCacheBytesPerClassDefault = 64 << 10;
// Bytes the class of page blocks keeps (invariant 7), unless the per-class limit is higher or
// 0: SQLite's default page cache (cache_size -2000). A reader re-pinned after a commit drops
// that much at once, and the reads that follow take the blocks back.
inline constexpr uint32_t kSqliteBlockCachePageBytes = 2000 << 10;

// Sets the block cache's per-class limit for every thread; 0 turns the cache off (blocks already
// cached stay until their thread calls ReleaseSqliteBlockCache() or exits).
void SetSqliteBlockCacheBytesPerClass(uint32_t bytes);

// The calling thread's block cache counters.
struct SqliteBlockCacheStats {
  uint64_t hits = 0;          // Allocations served from the cache.
  uint64_t misses = 0;        // Allocations of a cacheable size that went to malloc.
  uint64_t kept = 0;          // Frees that put the block in the cache.
  uint64_t released = 0;      // Frees of a cacheable block that went to free(): class full.
  uint64_t cached_bytes = 0;  // Bytes in the cache now.
};
[[nodiscard]] SqliteBlockCacheStats GetSqliteBlockCacheStats();

// Frees every block in the calling thread's cache (a host trimming memory after a burst).
void ReleaseSqliteBlockCache();

// The tenant that SQLite allocations on this thread are charged to right now.
[[nodiscard]] TenantId CurrentTenant();

// TEST HOOK (the simulator's out-of-memory faults): the `nth` allocation charged to `tenant`
// from now on (a malloc, or a realloc that grows) returns NULL as if the tenant were over its
// limit, once; 0 disarms. Invariant 3 then holds as for a real limit. The tenant's `failures`
// counter counts refusals by its limit only; SqliteAllocationFailuresInjected counts these.
// Process-wide, not for concurrent use by two tests.
void FailSqliteAllocationForTesting(TenantId tenant, uint64_t nth);

// How many allocations FailSqliteAllocationForTesting has failed in this process.
[[nodiscard]] uint64_t SqliteAllocationFailuresInjected();

// Marks `tenant` as current on this thread for the scope's lifetime and restores the previous
// one after, so scopes nest. Marking an unregistered tenant is a programmer error.
class ScopedTenant {
 public:
  explicit ScopedTenant(TenantId tenant);
  ~ScopedTenant();

  ScopedTenant(const ScopedTenant&) = delete;
  ScopedTenant& operator=(const ScopedTenant&) = delete;

 private:
  TenantId previous_;             // The enclosing scope's tenant, or none (outside every scope).
  uint32_t previous_generation_;  // Its registration, to tell it from a later tenant of its id.
};

}  // namespace sqloop::alloc

#endif  // SQLOOP_ALLOC_SQLITE_MEMORY_H_
