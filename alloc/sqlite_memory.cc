#include "sqloop/alloc/sqlite_memory.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace sqloop::alloc {
namespace {

// One tenant's counters. A cache line each, so two loops charging two tenants on two threads
// do not slow each other down through false sharing.
struct alignas(64) TenantSlot {
  std::atomic<uint64_t> live_bytes{0};
  std::atomic<uint64_t> peak_live_bytes{0};
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> frees{0};
  std::atomic<uint64_t> bytes_allocated{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> limit_bytes{0};
  // The registration's generation while registered (never 0), 0 while the id is free: a scope
  // that outlives its tenant's registration can tell that its id now names another tenant.
  std::atomic<uint32_t> registered{0};
  // The group whose live bytes also carry this tenant's (RegisterTenant); kSharedTenant: none.
  std::atomic<TenantId> group{kSharedTenant};
};
static_assert(sizeof(TenantSlot) == 64, "one cache line per tenant");

// Zero-initialised at load time, so the allocation path needs no initialisation guard.
TenantSlot g_slots[kTenantsMax];

// Invariant 6's deferred statistics: inside a ScopedTenant, the counts of its tenant's own
// allocations and frees, the bytes allocated and the highest live bytes seen collect here, in
// plain thread-local fields, and reach the slot in one go when the scope ends (or a nested one
// starts, or this thread reads counters). The live bytes are charged at once, since limits
// read them. Constant-initialised and trivially destructible: no TLS guard on the path.
constexpr TenantId kNoScope = UINT32_MAX;
// The shared tenant's generation (TenantSlot::registered): registered once, at the install, and
// never recycled, so a scope of it opened before the install is its own after it too.
constexpr uint32_t kSharedGeneration = 1;
struct PendingCounts {
  TenantId tenant = kNoScope;  // The innermost ScopedTenant's tenant; kNoScope outside any.
  uint32_t generation = 0;     // Its TenantSlot::registered when the scope began.
  uint64_t allocations = 0;
  uint64_t frees = 0;
  uint64_t bytes_allocated = 0;
  uint64_t peak_live_bytes = 0;
};
thread_local PendingCounts t_pending;

// The tenant SQLite allocations on this thread are charged to: the innermost scope's, or the
// shared one outside any.
TenantId Current() { return t_pending.tenant == kNoScope ? kSharedTenant : t_pending.tenant; }

// FailSqliteAllocationForTesting: the tenant and how many of its allocations are left until the
// one that fails (0: disarmed). One relaxed load on the allocation path while disarmed.
std::atomic<uint32_t> g_fail_tenant{kSharedTenant};
std::atomic<uint64_t> g_fail_countdown{0};
std::atomic<uint64_t> g_failures_injected{0};

// Whether this allocation for `tenant` is the armed one (SQLite's own OOM tests do the same
// with a countdown in its malloc hooks: fail the Nth allocation, then go on).
bool InjectedFailure(TenantId tenant) {
  if (g_fail_countdown.load(std::memory_order_relaxed) == 0) return false;
  if (tenant != g_fail_tenant.load(std::memory_order_relaxed)) return false;
  if (g_fail_countdown.fetch_sub(1, std::memory_order_relaxed) != 1) return false;
  g_failures_injected.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Precedes every block SQLite gets. 16 bytes keeps the block at malloc's 16-byte alignment.
struct BlockHeader {
  uint32_t size_bytes;  // Rounded size charged to the owner, what xSize reports.
  uint32_t size_class;  // The block cache's class of the whole block, or kDirectBlock.
  uint32_t tenant;      // The owner: charged at allocation, credited at free.
  uint32_t magic;       // kBlockMagic while live: catches frees of foreign or freed pointers.
};
constexpr uint32_t kBlockHeaderBytes = 16;
static_assert(sizeof(BlockHeader) == kBlockHeaderBytes, "the header must be 16 bytes");
constexpr uint32_t kBlockMagic = 0x5a10c0deU;
// A block too large for the cache (or allocated while the cache was off): malloc'd exactly.
constexpr uint32_t kDirectBlock = UINT32_MAX;

// xRoundup granularity: SQLite requires at least 8; 8 keeps the charge close to the request.
constexpr uint64_t kRoundupBytes = 8;

// ---- The block cache (SQLite's lookaside, which Debian builds without) -------------------------
//
// Blocks of up to kSizeClassMaxBytes (header included) come in kSizeClasses sizes: every 16
// bytes up to 128, then four per doubling (160, 192, 224, 256, 320, ...), so rounding up wastes
// at most a quarter of a block. A freed block goes onto its thread's list for its class unless
// that list is full (it may hold the per-class byte limit, and at least two blocks, so the
// largest classes work too); a malloc takes from the list first. In steady state (a request
// frees what it allocated before the next one allocates it again) SQLite's allocations never
// reach malloc. 128 KiB covers the largest block a write makes per request: the 64 KiB chunk
// of the in-memory statement journal behind each savepoint (SQLITE_CONFIG_STMTJRNL_SPILL).
// The lists are per thread, so the path takes no lock; a block freed on another thread than
// the one that allocated it simply joins that thread's list. While a block sits in the cache
// its first 8 bytes link the list, its magic is kCachedMagic (so a double free is caught), and
// under AddressSanitizer its payload is poisoned.
constexpr uint32_t kSizeClasses = 48;
constexpr uint32_t kSizeClassMaxBytes = 128 << 10;
constexpr uint32_t kCachedMagic = 0x5a1cac4eU;

constexpr uint32_t SizeClassOf(uint32_t block_bytes) {
  if (block_bytes <= 128) return (block_bytes + 15) / 16 - 1;  // Classes 0..7: 16..128.
  const uint32_t top_bit = 31 - static_cast<uint32_t>(__builtin_clz(block_bytes - 1));  // >= 7.
  const uint32_t quarter = (block_bytes - 1 - (1U << top_bit)) >> (top_bit - 2);
  return 8 + (top_bit - 7) * 4 + quarter;
}

constexpr uint32_t SizeClassBytes(uint32_t size_class) {
  if (size_class < 8) return (size_class + 1) * 16;
  const uint32_t top_bit = 7 + (size_class - 8) / 4;
  return (1U << top_bit) + ((size_class - 8) % 4 + 1) * (1U << (top_bit - 2));
}
static_assert(kSizeClasses == 8 + 4 * 10, "classes 8..47 cover (128 B, 128 KiB]");

struct CachedBlock {
  CachedBlock* next;
};

// Per thread and trivially destructible, so it is zero-initialised with no TLS guard and stays
// usable (as "closed") after the thread's destructors ran.
struct ThreadCache {
  CachedBlock* heads[kSizeClasses];
  uint32_t cached_bytes[kSizeClasses];
  bool drain_registered;
  bool closed;  // The thread is exiting: frees go straight to free().
  SqliteBlockCacheStats stats;
};
thread_local ThreadCache t_cache;

// Bytes each class may hold per thread; 0 turns the cache off.
std::atomic<uint32_t> g_class_limit_bytes{kSqliteBlockCacheBytesPerClassDefault};

// The class of a page block: a 4 KiB page (SQLite's default page size) and the page cache's
// header for it, which is far smaller than the next quarter step (5 KiB).
constexpr uint32_t kPageClass = SizeClassOf(4096 + 1);
static_assert(SizeClassBytes(kPageClass) == 5120, "a 4 KiB page block has its own class");

// What a class may hold under the per-class `limit`: the limit, or two blocks if that is
// more; the page blocks' class holds kSqliteBlockCachePageBytes, a whole default page cache.
uint32_t ClassLimitBytes(uint32_t limit, uint32_t size_class) {
  const uint32_t floor = size_class == kPageClass ? kSqliteBlockCachePageBytes : 0;
  return std::max({limit, 2 * SizeClassBytes(size_class), floor});
}

void PoisonPayload(void* block, uint32_t block_bytes) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(block) + kBlockHeaderBytes,
                            block_bytes - kBlockHeaderBytes);
#else
  (void)block;
  (void)block_bytes;
#endif
}

void UnpoisonPayload(void* block, uint32_t block_bytes) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(block) + kBlockHeaderBytes,
                              block_bytes - kBlockHeaderBytes);
#else
  (void)block;
  (void)block_bytes;
#endif
}

void DrainThreadCache() {
  for (uint32_t size_class = 0; size_class < kSizeClasses; ++size_class) {
    CachedBlock* block = t_cache.heads[size_class];
    while (block != nullptr) {
      CachedBlock* next = block->next;
      UnpoisonPayload(block, SizeClassBytes(size_class));
      std::free(block);
      block = next;
    }
    t_cache.heads[size_class] = nullptr;
    t_cache.cached_bytes[size_class] = 0;
  }
  t_cache.stats.cached_bytes = 0;
}

struct ThreadCacheDrain {
  ~ThreadCacheDrain() {
    DrainThreadCache();
    t_cache.closed = true;
  }
};

// Registers the drain on the thread's first cached free (a thread_local with a destructor is
// constructed when first used).
void RegisterDrain() {
  static thread_local ThreadCacheDrain drain;
  (void)drain;
  t_cache.drain_registered = true;
}

// Whether a block of `block_bytes` gets a size class (and so may come from and go to the cache).
bool Cacheable(uint32_t block_bytes) {
  return block_bytes <= kSizeClassMaxBytes &&
         g_class_limit_bytes.load(std::memory_order_relaxed) != 0;
}

// A block of at least `block_bytes`, its class in `size_class`: from the cache when it can be.
void* ObtainBlock(uint32_t block_bytes, uint32_t& size_class) {
  if (!Cacheable(block_bytes)) {
    size_class = kDirectBlock;
    return std::malloc(block_bytes);
  }
  size_class = SizeClassOf(block_bytes);
  const uint32_t capacity = SizeClassBytes(size_class);
  if (CachedBlock* block = t_cache.heads[size_class]; block != nullptr) {
    UnpoisonPayload(block, capacity);
    t_cache.heads[size_class] = block->next;
    t_cache.cached_bytes[size_class] -= capacity;
    t_cache.stats.cached_bytes -= capacity;
    ++t_cache.stats.hits;
    return block;
  }
  ++t_cache.stats.misses;
  return std::malloc(capacity);
}

void ReleaseBlock(BlockHeader* header) {
  const uint32_t size_class = header->size_class;
  header->magic = 0;
  if (size_class == kDirectBlock) {
    std::free(header);
    return;
  }
  const uint32_t capacity = SizeClassBytes(size_class);
  const uint32_t limit = g_class_limit_bytes.load(std::memory_order_relaxed);
  if (t_cache.closed || limit == 0 ||
      uint64_t{t_cache.cached_bytes[size_class]} + capacity > ClassLimitBytes(limit, size_class)) {
    ++t_cache.stats.released;
    std::free(header);
    return;
  }
  if (!t_cache.drain_registered) RegisterDrain();
  header->magic = kCachedMagic;
  auto* block = reinterpret_cast<CachedBlock*>(header);
  block->next = t_cache.heads[size_class];
  t_cache.heads[size_class] = block;
  t_cache.cached_bytes[size_class] += capacity;
  t_cache.stats.cached_bytes += capacity;
  ++t_cache.stats.kept;
  PoisonPayload(header, capacity);
}

BlockHeader* HeaderOf(void* pointer) {
  auto* header = reinterpret_cast<BlockHeader*>(static_cast<char*>(pointer) - kBlockHeaderBytes);
  SQLOOP_CHECK(header->magic == kBlockMagic,
               "sqlite_memory: SQLite freed or resized a block this allocator does not own");
  return header;
}

void RaisePeak(TenantSlot& slot, uint64_t live_bytes) {
  uint64_t peak = slot.peak_live_bytes.load(std::memory_order_relaxed);
  while (live_bytes > peak &&
         !slot.peak_live_bytes.compare_exchange_weak(peak, live_bytes, std::memory_order_relaxed)) {
  }
}

// Adds `size_bytes` to one slot's live bytes unless that crosses its limit; `live` is the sum.
// A compare-and-swap, not an add taken back: a refused request must never show in the live
// bytes, or another thread's request that fits would be refused meanwhile.
bool TryAdd(TenantSlot& slot, uint64_t size_bytes, uint64_t& live) {
  const uint64_t limit = slot.limit_bytes.load(std::memory_order_relaxed);
  if (limit == kTenantNoLimit) {
    live = slot.live_bytes.fetch_add(size_bytes, std::memory_order_relaxed) + size_bytes;
    return true;
  }
  uint64_t current = slot.live_bytes.load(std::memory_order_relaxed);
  do {
    if (size_bytes > limit || current > limit - size_bytes) return false;
    live = current + size_bytes;
  } while (!slot.live_bytes.compare_exchange_weak(current, live, std::memory_order_relaxed));
  return true;
}

// Adds the thread's deferred statistics to their slot and clears them.
void FlushPending() {
  PendingCounts& pending = t_pending;
  if (pending.tenant == kNoScope) return;
  TenantSlot& slot = g_slots[pending.tenant];
  if (slot.registered.load(std::memory_order_acquire) != pending.generation) {
    // The tenant was unregistered while the scope was open (its bytes were all freed), and the
    // id may name another tenant now: these counts are no one's.
    pending.allocations = pending.frees = pending.bytes_allocated = pending.peak_live_bytes = 0;
    return;
  }
  if (pending.allocations != 0) {
    slot.allocations.fetch_add(pending.allocations, std::memory_order_relaxed);
    slot.bytes_allocated.fetch_add(pending.bytes_allocated, std::memory_order_relaxed);
  }
  if (pending.frees != 0) slot.frees.fetch_add(pending.frees, std::memory_order_relaxed);
  if (pending.peak_live_bytes != 0) RaisePeak(slot, pending.peak_live_bytes);
  pending.allocations = pending.frees = pending.bytes_allocated = pending.peak_live_bytes = 0;
}

// One allocation of `size_bytes` for `tenant`, and its live bytes after it: into the scope's
// deferred statistics when `tenant` is the scope's, into its slot otherwise.
void NoteAllocated(TenantId tenant, uint64_t size_bytes, uint64_t live) {
  PendingCounts& pending = t_pending;
  if (tenant == pending.tenant) {
    ++pending.allocations;
    pending.bytes_allocated += size_bytes;
    pending.peak_live_bytes = std::max(pending.peak_live_bytes, live);
    return;
  }
  TenantSlot& slot = g_slots[tenant];
  slot.allocations.fetch_add(1, std::memory_order_relaxed);
  slot.bytes_allocated.fetch_add(size_bytes, std::memory_order_relaxed);
  RaisePeak(slot, live);
}

void NoteFreed(TenantId tenant) {
  if (tenant == t_pending.tenant) {
    ++t_pending.frees;
    return;
  }
  g_slots[tenant].frees.fetch_add(1, std::memory_order_relaxed);
}

// Adds `size_bytes` to the tenant's live bytes and its group's, unless that crosses either
// limit; then neither changes, and the refusal is the tenant's (a group's failures are its
// own). `live`: the tenant's live bytes after it. The group's peak rises here, the tenant's
// with the allocation's statistics (NoteAllocated); only for bytes that were charged.
bool Charge(TenantSlot& slot, uint64_t size_bytes, uint64_t& live) {
  uint64_t group_live = 0;
  const TenantId group = slot.group.load(std::memory_order_relaxed);
  if (!TryAdd(slot, size_bytes, live)) {
    slot.failures.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (group != kSharedTenant && !TryAdd(g_slots[group], size_bytes, group_live)) {
    slot.live_bytes.fetch_sub(size_bytes, std::memory_order_relaxed);
    slot.failures.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (group != kSharedTenant) RaisePeak(g_slots[group], group_live);
  return true;
}

void Uncharge(TenantSlot& slot, uint64_t size_bytes) {
  slot.live_bytes.fetch_sub(size_bytes, std::memory_order_relaxed);
  const TenantId group = slot.group.load(std::memory_order_relaxed);
  if (group != kSharedTenant) {
    g_slots[group].live_bytes.fetch_sub(size_bytes, std::memory_order_relaxed);
  }
}

int RoundUp(int size_bytes) {
  return static_cast<int>((static_cast<uint64_t>(size_bytes) + kRoundupBytes - 1) &
                          ~(kRoundupBytes - 1));
}

void* SqliteMalloc(int size_bytes) {
  if (size_bytes <= 0) return nullptr;
  const auto rounded_bytes = static_cast<uint32_t>(RoundUp(size_bytes));
  const TenantId tenant = Current();
  TenantSlot& slot = g_slots[tenant];
  const uint32_t generation = slot.registered.load(std::memory_order_relaxed);
  SQLOOP_CHECK(
      generation != 0 && (t_pending.tenant == kNoScope || generation == t_pending.generation),
      "sqlite_memory: the current tenant was unregistered inside its ScopedTenant");
  uint64_t live = 0;
  if (InjectedFailure(tenant) || !Charge(slot, rounded_bytes, live)) return nullptr;
  uint32_t size_class = kDirectBlock;
  void* block = ObtainBlock(rounded_bytes + kBlockHeaderBytes, size_class);
  if (block == nullptr) {
    Uncharge(slot, rounded_bytes);
    slot.failures.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  NoteAllocated(tenant, rounded_bytes, live);
  auto* header = new (block) BlockHeader{rounded_bytes, size_class, tenant, kBlockMagic};
  return reinterpret_cast<char*>(header) + kBlockHeaderBytes;
}

void SqliteFree(void* pointer) {
  if (pointer == nullptr) return;
  BlockHeader* header = HeaderOf(pointer);
  TenantSlot& slot = g_slots[header->tenant];
  Uncharge(slot, header->size_bytes);
  NoteFreed(header->tenant);
  ReleaseBlock(header);
}

// Moves a block to one of `new_block_bytes`: in place when its class has room, by realloc when
// neither block is a cache block, and otherwise by copying into a block from ObtainBlock.
// Returns the new header, or nullptr with the old block intact.
BlockHeader* ResizeBlock(BlockHeader* header, uint32_t new_block_bytes) {
  const uint32_t old_class = header->size_class;
  if (old_class != kDirectBlock && new_block_bytes <= SizeClassBytes(old_class)) return header;
  if (old_class == kDirectBlock && !Cacheable(new_block_bytes)) {
    return static_cast<BlockHeader*>(std::realloc(header, new_block_bytes));
  }
  uint32_t new_class = kDirectBlock;
  void* block = ObtainBlock(new_block_bytes, new_class);
  if (block == nullptr) return nullptr;
  const uint32_t old_block_bytes = header->size_bytes + kBlockHeaderBytes;
  std::memcpy(block, header, std::min(old_block_bytes, new_block_bytes));
  ReleaseBlock(header);
  auto* moved = static_cast<BlockHeader*>(block);
  moved->size_class = new_class;
  moved->magic = kBlockMagic;
  return moved;
}

// Resizes in place of the owner: the growth counts against the owner's limit, not the current
// tenant's, because the owner is who will free it.
void* SqliteRealloc(void* pointer, int size_bytes) {
  if (pointer == nullptr) return SqliteMalloc(size_bytes);
  if (size_bytes <= 0) return nullptr;  // SQLite never asks; refusing keeps the block intact.
  BlockHeader* header = HeaderOf(pointer);
  const TenantId tenant = header->tenant;  // The header may move with the block.
  TenantSlot& slot = g_slots[tenant];
  const uint32_t old_bytes = header->size_bytes;
  const auto new_bytes = static_cast<uint32_t>(RoundUp(size_bytes));
  uint64_t live = 0;
  if (new_bytes > old_bytes &&
      (InjectedFailure(tenant) || !Charge(slot, new_bytes - old_bytes, live))) {
    return nullptr;
  }
  BlockHeader* resized = ResizeBlock(header, new_bytes + kBlockHeaderBytes);
  if (resized == nullptr) {
    if (new_bytes > old_bytes) Uncharge(slot, new_bytes - old_bytes);
    slot.failures.fetch_add(1, std::memory_order_relaxed);
    return nullptr;  // The old block is untouched, as realloc promises.
  }
  if (new_bytes < old_bytes) Uncharge(slot, old_bytes - new_bytes);
  // One allocation and one free, matching heap_counter's convention for realloc.
  NoteAllocated(tenant, new_bytes, live);
  NoteFreed(tenant);
  resized->size_bytes = new_bytes;
  return reinterpret_cast<char*>(resized) + kBlockHeaderBytes;
}

int SqliteSize(void* pointer) {
  if (pointer == nullptr) return 0;
  return static_cast<int>(HeaderOf(pointer)->size_bytes);
}

int SqliteRoundup(int size_bytes) { return RoundUp(size_bytes); }
int SqliteInit(void* /*app_data*/) { return SQLITE_OK; }
void SqliteShutdown(void* /*app_data*/) {}

constexpr sqlite3_mem_methods kMethods = {SqliteMalloc,  SqliteFree, SqliteRealloc,  SqliteSize,
                                          SqliteRoundup, SqliteInit, SqliteShutdown, nullptr};

// Everything that is not on the allocation path: registration and installation, under a mutex.
struct Registry {
  std::mutex mu;
  bool installed = false;
  TenantId next_unused = kSharedTenant + 1;
  std::vector<TenantId> free_ids;
  std::vector<std::string> names;  // Indexed by TenantId; empty for free slots.
  std::vector<uint32_t> members;   // Indexed by TenantId: tenants registered in its group.
  std::vector<bool> is_group;      // Indexed by TenantId: a tenant was ever registered in it.
  absl::flat_hash_map<std::string, TenantId> ids_by_name;
  uint32_t generation = kSharedGeneration;  // The last registration's TenantSlot::registered.

  uint32_t NextGeneration() {
    if (++generation <= kSharedGeneration) generation = kSharedGeneration + 1;  // Wrapped.
    return generation;
  }
};

Registry& GetRegistry() {
  // Leaked on purpose: SQLite may free blocks during static destruction.
  static Registry* registry = new Registry();
  return *registry;
}

bool IsRegistered(TenantId tenant) {
  return tenant < kTenantsMax && g_slots[tenant].registered.load(std::memory_order_acquire) != 0;
}

absl::Status CheckTenant(TenantId tenant, absl::string_view operation) {
  if (IsRegistered(tenant)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: tenant %d is not registered (RegisterTenant returns valid ids)", operation, tenant));
}

ProfileCounters Snapshot(const TenantSlot& slot) {
  ProfileCounters counters;
  counters.allocations = slot.allocations.load(std::memory_order_relaxed);
  counters.frees = slot.frees.load(std::memory_order_relaxed);
  counters.bytes_allocated = slot.bytes_allocated.load(std::memory_order_relaxed);
  counters.live_bytes = slot.live_bytes.load(std::memory_order_relaxed);
  counters.peak_live_bytes = slot.peak_live_bytes.load(std::memory_order_relaxed);
  counters.failures = slot.failures.load(std::memory_order_relaxed);
  return counters;
}

void ActivateSlot(TenantId tenant, uint64_t limit_bytes, TenantId group, uint32_t generation) {
  TenantSlot& slot = g_slots[tenant];
  slot.group.store(group, std::memory_order_relaxed);
  slot.peak_live_bytes.store(0, std::memory_order_relaxed);
  slot.allocations.store(0, std::memory_order_relaxed);
  slot.frees.store(0, std::memory_order_relaxed);
  slot.bytes_allocated.store(0, std::memory_order_relaxed);
  slot.failures.store(0, std::memory_order_relaxed);
  slot.limit_bytes.store(limit_bytes, std::memory_order_relaxed);
  slot.registered.store(generation, std::memory_order_release);
}

// Calls `visit(tenant, name)` for every registered tenant except groups, under the registry's
// lock: a group's bytes are its members', so counting it too would count them twice.
template <typename Visit>
void ForEachTenantOutsideGroups(Visit visit) {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mu);
  for (TenantId tenant = 0; tenant < registry.names.size(); ++tenant) {
    if (IsRegistered(tenant) && !registry.is_group[tenant]) visit(tenant, registry.names[tenant]);
  }
}

}  // namespace

absl::Status InstallSqliteMemory() {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mu);
  if (registry.installed) return absl::OkStatus();
  ActivateSlot(kSharedTenant, kTenantNoLimit, kSharedTenant, kSharedGeneration);
  // A tenant registered before the install made room for the shared one's name, empty.
  if (registry.names.empty()) registry.names.emplace_back();
  registry.names[kSharedTenant] = "shared";
  registry.members.resize(registry.names.size());
  registry.is_group.resize(registry.names.size());
  registry.ids_by_name.try_emplace("shared", kSharedTenant);
  const int config_rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &kMethods);
  if (config_rc != SQLITE_OK) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "InstallSqliteMemory: sqlite3_config(SQLITE_CONFIG_MALLOC) failed with %s: SQLite was "
        "already initialised with another allocator; call InstallSqliteMemory() before any "
        "other sqlite3_* function (first thing in main, before opening a database)",
        sqlite3_errstr(config_rc)));
  }
  // No up-front page-cache allocation per connection: by default each connection takes room
  // for SQLITE_DEFAULT_PCACHE_INITSZ pages (about 80 KiB) at its first read, used or not, and
  // keeps it until it closes. Pages then come one at a time, and go back to the block cache.
  const int pagecache_rc = sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
  SQLOOP_CHECK(pagecache_rc == SQLITE_OK, "InstallSqliteMemory: SQLITE_CONFIG_PAGECACHE refused");
  // SQLite's own statistics take a process-wide mutex around every allocation and free, to
  // count what the tenants' counters already count (SqliteLiveBytes).
  const int memstatus_rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  SQLOOP_CHECK(memstatus_rc == SQLITE_OK, "InstallSqliteMemory: SQLITE_CONFIG_MEMSTATUS refused");
  // Initialise now, outside any tenant, so SQLite's global state is charged to "shared"
  // rather than to whichever tenant happens to open the first database.
  const ScopedTenant shared(kSharedTenant);
  const int init_rc = sqlite3_initialize();
  if (init_rc != SQLITE_OK) {
    return absl::InternalError(absl::StrFormat(
        "InstallSqliteMemory: sqlite3_initialize failed with %s", sqlite3_errstr(init_rc)));
  }
  registry.installed = true;
  return absl::OkStatus();
}

bool SqliteMemoryInstalled() {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mu);
  return registry.installed;
}

absl::StatusOr<TenantId> RegisterTenant(absl::string_view name, uint64_t limit_bytes,
                                        TenantId group) {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mu);
  if (name == "shared" || registry.ids_by_name.contains(name)) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "RegisterTenant: a tenant named '%s' is already registered; tenant names must be unique",
        name));
  }
  if (group != kSharedTenant) {
    if (absl::Status status = CheckTenant(group, "RegisterTenant"); !status.ok()) return status;
    if (g_slots[group].group.load(std::memory_order_relaxed) != kSharedTenant) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RegisterTenant('%s'): group '%s' is itself in a group; groups do not nest", name,
          registry.names[group]));
    }
  }
  TenantId tenant;
  if (!registry.free_ids.empty()) {
    tenant = registry.free_ids.back();
    registry.free_ids.pop_back();
  } else if (registry.next_unused < kTenantsMax) {
    tenant = registry.next_unused++;
  } else {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "RegisterTenant('%s'): all %d tenant slots are in use; unregister tenants whose "
        "databases are closed, or raise kTenantsMax",
        name, kTenantsMax));
  }
  if (registry.names.size() <= tenant) {
    registry.names.resize(tenant + 1);
    registry.members.resize(tenant + 1);
    registry.is_group.resize(tenant + 1);
  }
  registry.names[tenant] = std::string(name);
  registry.ids_by_name.emplace(std::string(name), tenant);
  registry.is_group[tenant] = false;
  if (group != kSharedTenant) {
    registry.members[group]++;
    registry.is_group[group] = true;
  }
  ActivateSlot(tenant, limit_bytes, group, registry.NextGeneration());
  return tenant;
}

absl::Status UnregisterTenant(TenantId tenant) {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mu);
  if (tenant == kSharedTenant) {
    return absl::InvalidArgumentError("UnregisterTenant: the shared tenant is permanent");
  }
  if (absl::Status status = CheckTenant(tenant, "UnregisterTenant"); !status.ok()) return status;
  TenantSlot& slot = g_slots[tenant];
  if (registry.members[tenant] != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "UnregisterTenant('%s'): %d tenants are still registered in this group; unregister "
        "them first",
        registry.names[tenant], registry.members[tenant]));
  }
  const uint64_t live_bytes = slot.live_bytes.load(std::memory_order_relaxed);
  if (live_bytes != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "UnregisterTenant('%s'): the tenant still owns %d bytes of SQLite memory; close its "
        "connections (sqlite3_close) and finalise its statements first",
        registry.names[tenant], live_bytes));
  }
  FlushPending();  // A scope of the tenant's on this thread has nothing left for the slot.
  slot.registered.store(0, std::memory_order_release);
  const TenantId group = slot.group.load(std::memory_order_relaxed);
  if (group != kSharedTenant) registry.members[group]--;
  registry.ids_by_name.erase(registry.names[tenant]);
  registry.names[tenant].clear();
  registry.free_ids.push_back(tenant);
  return absl::OkStatus();
}

absl::Status SetTenantLimit(TenantId tenant, uint64_t limit_bytes) {
  if (tenant == kSharedTenant) {
    return absl::InvalidArgumentError(
        "SetTenantLimit: the shared tenant has no limit; SQLite's global state lives there");
  }
  if (absl::Status status = CheckTenant(tenant, "SetTenantLimit"); !status.ok()) return status;
  g_slots[tenant].limit_bytes.store(limit_bytes, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<ProfileCounters> GetTenantCounters(TenantId tenant) {
  if (absl::Status status = CheckTenant(tenant, "GetTenantCounters"); !status.ok()) {
    return status;
  }
  FlushPending();
  return Snapshot(g_slots[tenant]);
}

void ExportSqliteMemoryProfile(AllocationProfile* profile) {
  FlushPending();
  ForEachTenantOutsideGroups([&](TenantId tenant, const std::string& name) {
    profile->Set(profile->Tenant(name), Snapshot(g_slots[tenant]));
  });
}

// The tenants in no group: a group's live bytes are its members' and its own, and a tenant in
// a group is counted there.
uint64_t SqliteLiveBytes() {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mu);
  uint64_t live_bytes = 0;
  for (TenantId tenant = 0; tenant < registry.names.size(); ++tenant) {
    const TenantSlot& slot = g_slots[tenant];
    if (IsRegistered(tenant) && slot.group.load(std::memory_order_relaxed) == kSharedTenant) {
      live_bytes += slot.live_bytes.load(std::memory_order_relaxed);
    }
  }
  return live_bytes;
}

void SetSqliteBlockCacheBytesPerClass(uint32_t bytes) {
  g_class_limit_bytes.store(bytes, std::memory_order_relaxed);
}

SqliteBlockCacheStats GetSqliteBlockCacheStats() { return t_cache.stats; }

void ReleaseSqliteBlockCache() { DrainThreadCache(); }

TenantId CurrentTenant() { return Current(); }

void FailSqliteAllocationForTesting(TenantId tenant, uint64_t nth) {
  g_fail_countdown.store(0, std::memory_order_relaxed);
  g_fail_tenant.store(tenant, std::memory_order_relaxed);
  g_fail_countdown.store(nth, std::memory_order_relaxed);
}

uint64_t SqliteAllocationFailuresInjected() {
  return g_failures_injected.load(std::memory_order_relaxed);
}

ScopedTenant::ScopedTenant(TenantId tenant)
    : previous_(t_pending.tenant), previous_generation_(t_pending.generation) {
  SQLOOP_CHECK(IsRegistered(tenant) || tenant == kSharedTenant,
               "ScopedTenant: the tenant is not registered (use an id from RegisterTenant)");
  FlushPending();
  t_pending.tenant = tenant;
  t_pending.generation = tenant == kSharedTenant
                             ? kSharedGeneration
                             : g_slots[tenant].registered.load(std::memory_order_acquire);
}

ScopedTenant::~ScopedTenant() {
  FlushPending();
  t_pending.tenant = previous_;
  t_pending.generation = previous_generation_;
}

}  // namespace sqloop::alloc
