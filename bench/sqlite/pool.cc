// sqlite_write/pool/T and sqlite_mixed/pool/T: what a C++ team builds instead of sqloop.
//
// Plain SQLite behind a pool of T threads, each with its own connection on SQLite's default
// VFS and threading mode (WAL, synchronous=FULL, a busy timeout), running the same operations
// as the sqloop variants of the group, closed loop: each thread starts its next operation as
// soon as its previous one returned. Writes are serialised by SQLite's write lock (a thread
// that finds it taken waits in SQLite's busy handler, which sleeps); reads run in parallel
// (WAL readers block neither each other nor the writer).
//
// One iteration = one operation, as everywhere in sqloop_bench_sqlite. The pool shares exactly
// state.max_iterations operations through an atomic ticket counter; the first iteration of the
// timed loop releases the threads and joins them, and the remaining iterations are empty, so
// time per iteration is the pool's wall time over its operations. Each operation writes its
// latency into the preallocated slot of its ticket: recording takes no lock and no allocation.
// Threads are started and their connections opened before the timed region.
//
// Counters: allocs_per_op (every thread's), commits_per_s (write group) or ops_per_s (mixed),
// the latency percentiles (write group: p50_us...; mixed: read_ and write_ ones, also written
// for the report's CDF), busy_per_op (SQLITE_BUSY returned after the busy timeout and retried;
// expected 0). Checks: every read returned its row's values, and the file holds exactly the
// acknowledged writes.
#include <sqlite3.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

// How long a writer waits in SQLite's busy handler before SQLITE_BUSY: far above any wait
// for the write lock here, so a BUSY means starvation, which busy_per_op reports.
constexpr int kBusyTimeoutMs = 10'000;
// Retries after SQLITE_BUSY before the operation counts as failed.
constexpr int kBusyRetriesMax = 10;

enum class Mix { kWritesOnly, kMixed };

// One operation's outcome, in the slot of its ticket.
struct Slot {
  int64_t latency_ns = -1;  // -1: the ticket was never run.
  bool write = false;
};

struct Pool {
  std::string path;
  Mix mix = Mix::kWritesOnly;
  std::vector<Slot> slots;
  std::atomic<int64_t> tickets{0};  // Operations left to claim.
  std::atomic<int> ready{0};        // Threads with their connection open.
  std::atomic<bool> go{false};
  std::atomic<uint64_t> busy{0};
  std::atomic<uint64_t> writes_acked{0};
  std::atomic<int64_t> seq_sum{0};

  std::mutex failure_mutex;
  uint64_t failures = 0;  // Guarded by failure_mutex, like first_failure.
  std::string first_failure;

  void Fail(const std::string& message) {
    const std::lock_guard<std::mutex> lock(failure_mutex);
    if (failures++ == 0) first_failure = message;
  }
};

// Steps the INSERT with `seq`, retrying SQLITE_BUSY up to kBusyRetriesMax times.
int StepInsert(sqlite3_stmt* insert, int64_t seq, Pool& pool) {
  sqlite3_bind_int64(insert, 2, seq);
  int rc = SQLITE_OK;
  for (int attempt = 0;; ++attempt) {
    rc = sqlite3_step(insert);
    sqlite3_reset(insert);
    if ((rc & 0xff) != SQLITE_BUSY || attempt == kBusyRetriesMax) return rc;
    pool.busy.fetch_add(1, std::memory_order_relaxed);
  }
}

// One thread of the pool: opens its connection, waits for `go`, then runs tickets until none
// is left.
void RunWorker(Pool& pool, int index) {
  const BaselineScope scope(alloc::kSharedTenant);
  sqlite3* db = OpenPlain(pool.path, nullptr, /*no_mutex=*/false);
  sqlite3_stmt* select = nullptr;
  sqlite3_stmt* insert = nullptr;
  // The busy timeout first: opening the WAL index and reading the schema can meet another
  // thread's lock too.
  bool ok =
      db != nullptr && sqlite3_busy_timeout(db, kBusyTimeoutMs) == SQLITE_OK &&
      Exec(db, "PRAGMA synchronous=FULL;") &&
      (pool.mix == Mix::kWritesOnly ||  // Only the mixed database has the read table.
       sqlite3_prepare_v3(db, kPointSelect, -1, SQLITE_PREPARE_PERSISTENT, &select, nullptr) ==
           SQLITE_OK) &&
      sqlite3_prepare_v3(db, kInsert, -1, SQLITE_PREPARE_PERSISTENT, &insert, nullptr) == SQLITE_OK;
  if (!ok) pool.Fail(absl::StrCat("thread ", index, ": plain SQLite setup failed"));
  sqlite3_bind_int64(insert, 1, index);
  sqlite3_bind_text(insert, 3, kPayload.data(), static_cast<int>(kPayload.size()), SQLITE_STATIC);
  pool.ready.fetch_add(1);
  pool.ready.notify_all();
  pool.go.wait(false);
  Prng ops{kMixedSeedBase + static_cast<uint64_t>(index)};
  int64_t seq = 0;
  int64_t seq_sum = 0;
  uint64_t acked = 0;
  for (int64_t ticket = 0; ok && (ticket = pool.tickets.fetch_sub(1) - 1) >= 0;) {
    const bool write = pool.mix == Mix::kWritesOnly || IsWrite(ops);
    const int64_t start_ns = MonotonicNs();
    const bool done = write ? StepInsert(insert, ++seq, pool) == SQLITE_DONE
                            : StepPointRead(select, ops.NextRowId());
    pool.slots[static_cast<size_t>(ticket)] = Slot{MonotonicNs() - start_ns, write};
    if (!done) {
      pool.Fail(write ? absl::StrCat("an INSERT failed: ", sqlite3_errmsg(db))
                      : "a read failed or returned a wrong row");
    } else if (write) {
      ++acked;
      seq_sum += seq;
    }
  }
  pool.writes_acked.fetch_add(acked);
  pool.seq_sum.fetch_add(seq_sum);
  sqlite3_finalize(select);
  sqlite3_finalize(insert);
  sqlite3_close_v2(db);
}

// The database the pool works on: WAL (a persistent setting, made once here rather than raced
// by T threads) and the write table; for the mixed workload a copy of the read table too.
bool CreateDatabase(const std::string& path, Mix mix) {
  if (mix == Mix::kMixed && !CopyDb(ReadDbPath(), path)) return false;
  sqlite3* db = OpenPlain(path, nullptr, /*no_mutex=*/true);
  const bool ok =
      db != nullptr && Exec(db, "PRAGMA journal_mode=WAL;") && Exec(db, kCreateWriteTable);
  sqlite3_close_v2(db);
  return ok;
}

void SetPoolCounters(benchmark::State& state, Pool& pool, alloc::HeapCounts before,
                     int64_t elapsed_ns) {
  const auto ops = static_cast<double>(state.iterations());
  state.counters["allocs_per_op"] =
      static_cast<double>(alloc::CurrentHeapCounts().allocations - before.allocations) / ops;
  state.counters["busy_per_op"] = static_cast<double>(pool.busy.load()) / ops;
  Latencies reads;
  Latencies writes;
  reads.Reserve(pool.slots.size());
  writes.Reserve(pool.slots.size());
  for (const Slot& slot : pool.slots) {
    if (slot.latency_ns >= 0) (slot.write ? writes : reads).Add(slot.latency_ns);
  }
  const double per_s = ops / (static_cast<double>(elapsed_ns) / 1e9);
  if (pool.mix == Mix::kWritesOnly) {
    state.counters["commits_per_s"] = per_s;
    SetLatencyCounters(state, "", writes);
    WriteLatencyFile({{"write", &writes}});
  } else {
    state.counters["ops_per_s"] = per_s;
    SetLatencyCounters(state, "read_", reads);
    SetLatencyCounters(state, "write_", writes);
    WriteLatencyFile({{"read", &reads}, {"write", &writes}});
  }
}

void RunPool(benchmark::State& state, Mix mix, const char* stem) {
  const auto thread_count = static_cast<int>(state.range(0));
  Pool pool;
  pool.mix = mix;
  pool.path = FreshDbPath(stem);
  if (!CreateDatabase(pool.path, mix)) {
    RemoveDb(pool.path);
    return state.SkipWithError("plain SQLite: creating the database failed");
  }
  pool.slots.assign(static_cast<size_t>(state.max_iterations), Slot{});
  pool.tickets.store(static_cast<int64_t>(state.max_iterations));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(thread_count));
  for (int i = 0; i < thread_count; ++i) threads.emplace_back(RunWorker, std::ref(pool), i);
  for (int ready = 0; (ready = pool.ready.load()) < thread_count;) pool.ready.wait(ready);
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (auto _ : state) {
    if (pool.go.exchange(true)) continue;  // Every operation ran in the first iteration.
    pool.go.notify_all();
    for (std::thread& thread : threads) thread.join();
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  if (!pool.go.exchange(true)) {  // The timed loop never ran: release the threads anyway.
    pool.go.notify_all();
    for (std::thread& thread : threads) thread.join();
  }
  SetPoolCounters(state, pool, before, elapsed_ns);
  if (pool.failures == 0) {
    absl::Status verified = VerifyWrites(pool.path, pool.writes_acked, pool.seq_sum);
    if (!verified.ok()) pool.Fail(verified.ToString());
  }
  RemoveDb(pool.path);
  if (pool.failures != 0) {
    state.SkipWithError(
        absl::StrCat(pool.failures, " failure(s), first: ", pool.first_failure).c_str());
  }
}

}  // namespace

void PlainPoolWrite(benchmark::State& state) { RunPool(state, Mix::kWritesOnly, "pool-write"); }

void PlainPoolMixed(benchmark::State& state) { RunPool(state, Mix::kMixed, "pool-mixed"); }

}  // namespace sqloop::bench
