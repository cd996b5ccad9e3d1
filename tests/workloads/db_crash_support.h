// tests/workloads/db_crash_support.h
// -----------------------------------------------------------------------------
//
// What the db_crash workload (tests/workloads/db_crash.cc) draws per seed besides the
// simulator's own faults: the database's configuration (the configuration swarm) and the
// fault classes that live above the simulated disk and network:
//
//   * SQLite out of memory: the Nth allocation of the run's database fails
//     (alloc::FailSqliteAllocationForTesting through sqloop's SQLite memory hooks);
//   * corruption of synced data: a byte of a durable page of the database file flipped
//     between the crash and the restart (SimDisk::CorruptDurable);
//   * crashes during recovery: the recovering process itself crashes, once or twice, before a
//     last process recovers.
//
// Every draw comes from a generator of its own, seeded from the run's seed, so the simulator's
// stream (latencies, faults, crash fates) is the same whatever these draw, and a seed that
// draws none of them runs exactly as before they existed.
#ifndef SQLOOP_TESTS_WORKLOADS_DB_CRASH_SUPPORT_H_
#define SQLOOP_TESTS_WORKLOADS_DB_CRASH_SUPPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/database.h"
#include "sqloop/db/vfs.h"
#include "tests/sim_workload.h"

namespace sqloop::io {
class SimDisk;
}  // namespace sqloop::io

namespace sqloop::testing::db_crash {

// The configuration one seed runs with.
struct Config {
  db::DatabaseOptions database;
  db::VfsOptions vfs;
  std::string text;  // For the summary: what differs from the defaults.
};

// Draws the configuration from its own generator (seeded from the run's seed). Each setting
// keeps its default in about half the seeds, as SimBackend's swarm does with faults.
[[nodiscard]] Config DrawConfig(uint64_t seed, const WorkloadOptions& options);

[[nodiscard]] const char* StateName(db::Database::State state);
[[nodiscard]] const char* StateName(db::Request::State state);

// The most crashes of recovering processes per run: one is "a crash during recovery", two is
// a crash of the process that recovers from that one.
inline constexpr uint32_t kRecoveryCrashesMax = 2;

// The faults above the simulator that one seed draws (see the file comment).
struct FaultPlan {
  uint64_t oom_nth = 0;       // The run's database's Nth SQLite allocation fails; 0: none.
  bool corrupt = false;       // Flip a structural byte of a durable page before the restart.
  uint64_t corrupt_draw = 0;  // Which page.
  // NEGATIVE CONTROL ONLY (WorkloadOptions::corrupt_payload): flip a byte of an acknowledged
  // row's value instead, which no SQLite check can see.
  bool corrupt_payload = false;
  uint32_t recovery_crashes = 0;                        // 0 to kRecoveryCrashesMax.
  int64_t recovery_crash_ns[kRecoveryCrashesMax] = {};  // After each recovering start.
  std::string text;                                     // For the summary.
};

[[nodiscard]] FaultPlan DrawFaultPlan(uint64_t seed, const WorkloadOptions& options);

// Flips a structural byte of a durable page of the database file at `path`: the b-tree page's
// type (offset 100 on page 1, 0 elsewhere), which on an overflow or freelist page is the top
// byte of the next page's number. XOR 0xff turns every valid type (2, 5, 10, 13) into an
// invalid one and a page number into one far past the end, so SQLite's page checks (a read or
// quick_check) see it whenever the page is in use. A byte of a row's value has no check at all:
// SQLite pages carry no checksum (see docs/testing.md). Returns the page flipped, or 0 if the
// file has no durable page.
[[nodiscard]] uint64_t CorruptStructure(io::SimDisk& disk, const char* path, uint64_t draw);

// The negative control's corruption: flips a byte (XOR 3: a letter stays printable) inside the
// first of `values` found in the durable bytes of `path`. Returns whether it found one.
[[nodiscard]] bool CorruptPayload(io::SimDisk& disk, const char* path,
                                  const std::vector<const std::string*>& values);

// The run's database's own tenant of SQLite's heap (alloc/sqlite_memory.h), for the
// out-of-memory faults and a leak check: after the database closed, the tenant must own no
// bytes. Inactive when the accounting allocator could not be installed (SQLite was
// initialised before it in this process).
class MemoryTenant {
 public:
  MemoryTenant();
  ~MemoryTenant();
  MemoryTenant(const MemoryTenant&) = delete;
  MemoryTenant& operator=(const MemoryTenant&) = delete;

  [[nodiscard]] bool active() const { return active_; }
  [[nodiscard]] alloc::TenantId id() const { return id_; }
  // Arms the fault: the `nth` allocation from now on fails (0: disarms).
  void FailAllocation(uint64_t nth);
  // Allocations failed by the fault since construction.
  [[nodiscard]] uint64_t injected() const;
  // Bytes the tenant still owns; after its database closed, anything but 0 is a leak.
  [[nodiscard]] uint64_t live_bytes() const;

 private:
  bool active_ = false;
  alloc::TenantId id_ = alloc::kSharedTenant;
  uint64_t injected_before_ = 0;
};

}  // namespace sqloop::testing::db_crash

#endif  // SQLOOP_TESTS_WORKLOADS_DB_CRASH_SUPPORT_H_
