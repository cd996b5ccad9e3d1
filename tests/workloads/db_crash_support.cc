#include "tests/workloads/db_crash_support.h"

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "sqloop/io/prng.h"
#include "sqloop/io/sim_disk.h"

namespace sqloop::testing::db_crash {
namespace {

// Shares of seeds that draw each fault class: enough that a CI sweep of 500 seeds meets each
// dozens of times, few enough that most seeds still test crash recovery on its own.
constexpr double kOomShare = 0.3;
constexpr double kCorruptShare = 0.2;
constexpr double kRecoveryCrashShare = 0.25;
constexpr double kSecondRecoveryCrashShare = 0.35;  // Of the seeds with a recovery crash.
// A run's database makes one to a few thousand SQLite allocations (open, schema, statements),
// so the failing one lands anywhere from the open to the last round, or nowhere.
constexpr uint64_t kOomNthMax = 1500;
// Recovery (open, WAL recovery, reading every row back) takes a few ms of virtual time with
// the default latencies: a crash in the first 8 ms lands before, in and after it.
constexpr int64_t kRecoveryCrashWindowNs = 8'000'000;
// The byte XORed into a structural byte (see CorruptStructure) and into a letter of a value.
constexpr uint8_t kStructureMask = 0xff;
constexpr uint8_t kPayloadMask = 0x03;
// SQLite's header: the page size is the big-endian 16-bit number at offset 16 (1 is 65536);
// page 1's b-tree header follows the 100-byte file header.
constexpr uint64_t kHeaderBytes = 100;
constexpr uint64_t kPageSizeOffset = 16;
constexpr absl::string_view kMagic("SQLite format 3\0", 16);
// A WAL's header is 32 bytes; the page size is the big-endian 32-bit number at offset 8.
constexpr uint64_t kWalHeaderBytes = 32;
constexpr uint64_t kWalPageSizeOffset = 8;
// The shortest value the payload corruption looks for: a shorter one may occur by chance.
constexpr size_t kPayloadNeedleBytesMin = 12;

}  // namespace

// Draws the configuration from its own generator (seeded from the run's seed), so the
// simulator's stream of latencies, faults and crash fates is the same with or without it. Each
// setting keeps its default in about half the seeds, as SimBackend's swarm does with faults.
Config DrawConfig(uint64_t seed, const WorkloadOptions& options) {
  Config config;
  db::DatabaseOptions& database = config.database;
  database.ack_before_fsync_for_testing = options.ack_before_fsync;
  if (options.stall_group_commits_after != 0) {
    StallGroupCommitsAfter(database, options.stall_group_commits_after);
    absl::StrAppend(&config.text, " stall_after=", options.stall_group_commits_after);
  }
  if (options.wal_reserve_bytes >= 0) {
    config.vfs.wal_reserve_bytes = static_cast<uint32_t>(options.wal_reserve_bytes);
    absl::StrAppend(&config.text, " wal_reserve_bytes=", options.wal_reserve_bytes, " (fixed)");
  }
  if (!options.swarm_config) return config;
  io::Prng prng(seed ^ 0xc0f1'9c0f'19c0'f19cULL);
  auto draw = [&prng, &config](const char* name, auto& field, uint64_t min, uint64_t max) {
    if (!prng.Chance(0.5)) return;
    field = static_cast<std::remove_reference_t<decltype(field)>>(prng.Range(min, max));
    absl::StrAppend(&config.text, " ", name, "=", field);
  };
  // A checkpoint every few frames: each round's group writes several (values up to 600 bytes).
  draw("checkpoint_frames", database.checkpoint_frames, 2, 16);
  // Rounds of up to 12 requests then take several groups (multi-group rounds).
  draw("group_requests_max", database.group_requests_max, 1, 6);
  draw("readers", database.readers, 1, 4);
  // db_crash runs about six distinct statements: one or two slots means evictions.
  draw("statement_cache_max", database.statement_cache_max, 1, 3);
  // Recovery reads every row: a few rows per tick makes it yield many times.
  draw("rows_per_tick", database.rows_per_tick, 1, 8);
  // Not below a round's requests (kRequestsPerRoundMax) plus the liveness phase's, so Submit
  // refusing work stays a run-phase event (the round simply has fewer transactions).
  draw("queued_requests_max", database.queued_requests_max, 4, 16);
  // A write-behind buffer of a few WAL frames (4 KiB pages): a group's frames, or a
  // checkpoint's pages, overflow it. Not below what one transaction of this workload needs
  // right after a checkpoint (a few frames of 4,120 bytes), which the Database refuses outright
  // rather than hold back; nor below 16 operations, under which even the open's switch to WAL
  // is refused (SQLITE_FULL at open, for good).
  draw("held_bytes_max", config.vfs.held_bytes_max, 12 * 1024, 20 * 1024);
  draw("held_ops_max", config.vfs.held_ops_max, 16, 48);
  // Without a reserve the growing WAL's writes run at once; with a small one they run behind
  // and the reserve's own write is one more operation in the queue, often.
  if (options.wal_reserve_bytes < 0) {
    draw("wal_reserve_bytes", config.vfs.wal_reserve_bytes, 0, 16 * 1024);
  }
  return config;
}

const char* StateName(db::Database::State state) {
  switch (state) {
    case db::Database::State::kNew:
      return "new";
    case db::Database::State::kOpening:
      return "opening";
    case db::Database::State::kOpenSyncing:
      return "open-syncing";
    case db::Database::State::kOpenChecking:
      return "open-checking";
    case db::Database::State::kReady:
      return "ready";
    case db::Database::State::kPoisoned:
      return "poisoned";
    case db::Database::State::kClosing:
      return "closing";
    case db::Database::State::kClosed:
      return "closed";
    case db::Database::State::kFailed:
      return "failed";
  }
  return "?";
}

const char* StateName(db::Request::State state) {
  switch (state) {
    case db::Request::State::kIdle:
      return "idle";
    case db::Request::State::kQueued:
      return "queued";
    case db::Request::State::kRunning:
      return "running";
    case db::Request::State::kFetching:
      return "fetching";
    case db::Request::State::kAwaitingDurable:
      return "awaiting durability";
    case db::Request::State::kDone:
      return "done";
  }
  return "?";
}

FaultPlan DrawFaultPlan(uint64_t seed, const WorkloadOptions& options) {
  FaultPlan plan;
  plan.corrupt_payload = options.corrupt_payload;
  if (!options.swarm) return plan;
  io::Prng prng(seed ^ 0xfa17'0b1a'2c0d'e5edULL);
  // Each draw is its own statement: the order of draws is the stream.
  const bool oom = prng.Chance(kOomShare);
  const uint64_t oom_nth = prng.Range(1, kOomNthMax);
  const bool corrupt = prng.Chance(kCorruptShare);
  const uint64_t corrupt_draw = prng.Next();
  const bool recovery_crash = prng.Chance(kRecoveryCrashShare);
  const bool second = prng.Chance(kSecondRecoveryCrashShare);
  for (int64_t& at_ns : plan.recovery_crash_ns) {
    at_ns = static_cast<int64_t>(prng.Below(kRecoveryCrashWindowNs + 1));
  }
  if (oom) {
    plan.oom_nth = oom_nth;
    absl::StrAppend(&plan.text, " oom_nth=", oom_nth);
  }
  // The liveness negative control needs every seed to reach its liveness phase, which a
  // tenant refused as corrupt (rightly) never does.
  if (corrupt && !plan.corrupt_payload && options.stall_group_commits_after == 0) {
    plan.corrupt = true;
    plan.corrupt_draw = corrupt_draw;
    absl::StrAppend(&plan.text, " corrupt");
  }
  if (recovery_crash) {
    plan.recovery_crashes = second ? 2 : 1;
    absl::StrAppend(&plan.text, " recovery_crashes=", plan.recovery_crashes);
  }
  return plan;
}

namespace {

// A page size SQLite accepts: a power of two from 512 to 65536.
bool ValidPageBytes(uint64_t bytes) {
  return bytes >= 512 && bytes <= 65536 && (bytes & (bytes - 1)) == 0;
}

// The page size of the database whose durable main file is `main`: from its header, or, when
// page 1 was torn by a crash in a checkpoint (SQLite then reads page 1 from the WAL), from the
// WAL's header. 0 if neither holds one: no page boundary is known.
uint64_t DurablePageBytes(const io::SimDisk& disk, const char* path, const std::string& main) {
  if (main.size() > kHeaderBytes && absl::string_view(main).substr(0, kMagic.size()) == kMagic) {
    const auto high = static_cast<uint8_t>(main[kPageSizeOffset]);
    const auto low = static_cast<uint8_t>(main[kPageSizeOffset + 1]);
    const uint64_t bytes = high == 0 && low == 1 ? 65536 : (uint64_t{high} << 8 | low);
    return ValidPageBytes(bytes) ? bytes : 0;
  }
  const std::optional<std::string> wal = disk.DurableContent(absl::StrCat(path, "-wal"));
  if (!wal.has_value() || wal->size() < kWalHeaderBytes) return 0;
  uint64_t bytes = 0;
  for (uint64_t i = 0; i < 4; ++i) {
    bytes = bytes << 8 | static_cast<uint8_t>((*wal)[kWalPageSizeOffset + i]);
  }
  return ValidPageBytes(bytes) ? bytes : 0;
}

}  // namespace

uint64_t CorruptStructure(io::SimDisk& disk, const char* path, uint64_t draw) {
  const std::optional<std::string> durable = disk.DurableContent(path);
  if (!durable.has_value()) return 0;
  // Without a known page size the flip could land in a row's payload, which SQLite cannot
  // tell from data (it keeps no checksums): that is the payload corruption's negative control,
  // not a structural fault.
  const uint64_t page_bytes = DurablePageBytes(disk, path, *durable);
  if (page_bytes == 0) return 0;
  const uint64_t pages = durable->size() / page_bytes;
  if (pages == 0) return 0;
  const uint64_t page = 1 + draw % pages;
  const uint64_t offset = (page - 1) * page_bytes + (page == 1 ? kHeaderBytes : 0);
  return disk.CorruptDurable(path, offset, kStructureMask) ? page : 0;
}

bool CorruptPayload(io::SimDisk& disk, const char* path,
                    const std::vector<const std::string*>& values) {
  const std::optional<std::string> durable = disk.DurableContent(path);
  if (!durable.has_value()) return false;
  for (const std::string* value : values) {
    if (value->size() < kPayloadNeedleBytesMin) continue;
    const size_t at = durable->find(*value);
    if (at == std::string::npos) continue;
    return disk.CorruptDurable(path, at + value->size() / 2, kPayloadMask);
  }
  return false;
}

MemoryTenant::MemoryTenant() {
  if (!alloc::InstallSqliteMemory().ok()) return;
  // Unique among live tenants even if an abandoned run (a failed watchdog) kept one alive.
  static uint64_t instance = 0;
  absl::StatusOr<alloc::TenantId> id = alloc::RegisterTenant(absl::StrCat("db_crash-", ++instance));
  if (!id.ok()) return;
  active_ = true;
  id_ = *id;
  injected_before_ = alloc::SqliteAllocationFailuresInjected();
}

MemoryTenant::~MemoryTenant() {
  if (!active_) return;
  alloc::FailSqliteAllocationForTesting(id_, 0);
  // A tenant that still owns bytes (a leak, or an abandoned run) stays registered: its id must
  // not be reused while blocks name it (alloc/sqlite_memory.h, invariant 5).
  if (live_bytes() == 0) alloc::UnregisterTenant(id_).IgnoreError();
}

void MemoryTenant::FailAllocation(uint64_t nth) {
  if (active_) alloc::FailSqliteAllocationForTesting(id_, nth);
}

uint64_t MemoryTenant::injected() const {
  return alloc::SqliteAllocationFailuresInjected() - injected_before_;
}

uint64_t MemoryTenant::live_bytes() const {
  if (!active_) return 0;
  absl::StatusOr<alloc::ProfileCounters> counters = alloc::GetTenantCounters(id_);
  return counters.ok() ? counters->live_bytes : 0;
}

}  // namespace sqloop::testing::db_crash
