// sqloop_bench_sqlite: sqloop against plain synchronous SQLite on its default VFS, the thing a
// user would pick instead (docs/overhead.md, section 3).
//
// Groups (one iteration = one operation; every benchmark checks its own results and calls
// SkipWithError when they are wrong, so a quick run in CI catches rot):
//   sqlite_read    point SELECT by rowid: plain_default (baseline), plain_in_txn (the same
//                  inside one read transaction: SQLite's floor), plain_best, sqloop,
//                  sqloop_coro                                       (point_read.cc)
//   sqlite_request  a prepared SELECT ?1 that touches no table: plain (baseline) against
//                  sqloop, what a request costs beyond SQLite's own work  (point_read.cc)
//   sqlite_read_cold  the same SELECT of a random row of a 64 MiB table with SQLite's and the
//                  OS's page caches dropped every 256 reads: plain (baseline, one read at a
//                  time) against sqloop with 1 and 64 reads in flight    (cold_read.cc)
//   sqlite_write_cold  the same with a durable UPDATE of the row: plain (baseline, one
//                  write at a time, each its own fsync) against sqloop with 64 in flight
//                  (cold_read.cc)
//   sqlite_write   durable single-row INSERT: plain_full (baseline, synchronous=FULL, one
//                  transaction per write) and plain_full_default_vfs (the same without the
//                  counting VFS wrapper), pool/4 and pool/16 (plain SQLite behind a thread
//                  pool, pool.cc), against sqloop with 1, 8, 64, 256 concurrent
//                  writers (group commit)                             (durable_write.cc)
//                  and sqloop_malloc/64 (64 writers, the SQLite block cache off)
//   sqlite_mixed   90% reads / 10% durable inserts: plain_full sequentially (baseline) and
//                  plain_full_default_vfs, pool/4 and pool/16, futures/4 (plain SQLite behind
//                  an executor returning a std::future per operation, futures.cc), against
//                  sqloop with 1 and 64 concurrent clients (mixed.cc)
//   sqlite_transfer  a durable two-statement transaction (debit, credit): plain_full (baseline,
//                  BEGIN ... COMMIT) against sqloop/1, /8 and /64, each transfer one batch
//                  (transfer.cc)
//
// The process installs sqloop's SQLite allocator (alloc/sqlite_memory.h) before anything else,
// so plain SQLite and sqloop allocate through the same functions and the ratios measure the
// loop and the VFS, not the allocator. sqlite_write/sqloop_malloc turns the allocator's block
// cache off, to show what it saves.
//
// Every run is timed on the wall clock (UseRealTime): the fsync-bound benchmarks spend most of
// their time waiting, so CPU time would let Google Benchmark run them for minutes.
// The sqloop variants use io_uring, or the synchronous fallback when the ring cannot be set up;
// each run's label and the context entry "sqlite_backend" say which.
#include <cstdlib>
#include <memory>
#include <string>

#include "bench/sqlite/benchmarks.h"
#include "benchmark/benchmark.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/loop/loop.h"

namespace sqloop::bench {
namespace {

// SQLOOP_BENCH_ITERATIONS=<n> runs every benchmark for exactly n iterations, once: for
// instruction counts under `valgrind --tool=callgrind`, where two runs with different n
// differ only by (n2 - n1) operations, so setup cancels out.
void Register() {
  const char* fixed = std::getenv("SQLOOP_BENCH_ITERATIONS");
  const int64_t iterations = fixed != nullptr ? std::atoll(fixed) : 0;
  auto add = [iterations](const char* name, auto function) {
    benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name, function);
    b->UseRealTime();
    if (iterations > 0) b->Iterations(iterations);
    return b;
  };
  // The paced variants' read tail is a p99 over what arrived in the run: Google Benchmark's
  // default half second at 50,000 operations per second leaves a few hundred reads past the p99,
  // so one stall of the virtual machine decides it. Three seconds make it the run's.
  auto paced = [&add, iterations](const char* name, auto function) {
    benchmark::internal::Benchmark* b = add(name, function);
    if (iterations == 0 && !QuickMode()) b->MinTime(kPacedMinTimeS);
    return b;
  };
  add("sqlite_read/plain_default",
      [](benchmark::State& s) { PlainRead(s, PlainReadConfig::kDefault); });
  add("sqlite_read/plain_in_txn",
      [](benchmark::State& s) { PlainRead(s, PlainReadConfig::kInTxn); });
  add("sqlite_read/plain_best", [](benchmark::State& s) { PlainRead(s, PlainReadConfig::kBest); });
  add("sqlite_read/sqloop", &SqloopRead);
  add("sqlite_read/sqloop_coro", &SqloopCoroRead);
  add("sqlite_request/plain", &PlainRequest);
  add("sqlite_request/sqloop", &SqloopRequest);
  add("sqlite_read_cold/plain", &PlainColdRead);
  add("sqlite_read_cold/sqloop", &SqloopColdRead)->Arg(1)->Arg(64);
  add("sqlite_write_cold/plain", &PlainColdWrite);
  add("sqlite_write_cold/sqloop", &SqloopColdWrite)->Arg(64);
  add("sqlite_write/plain_full",
      [](benchmark::State& s) { PlainFullWrite(s, PlainVfs::kCounting); });
  add("sqlite_write/plain_full_default_vfs",
      [](benchmark::State& s) { PlainFullWrite(s, PlainVfs::kDefault); });
  add("sqlite_write/pool", &PlainPoolWrite)->Arg(4)->Arg(16);
  add("sqlite_write/sqloop", &SqloopWrite)->Arg(1)->Arg(8)->Arg(64)->Arg(256);
  add("sqlite_write/sqloop_malloc", [](benchmark::State& s) {
    alloc::SetSqliteBlockCacheBytesPerClass(0);
    alloc::ReleaseSqliteBlockCache();
    SqloopWrite(s);
    alloc::SetSqliteBlockCacheBytesPerClass(alloc::kSqliteBlockCacheBytesPerClassDefault);
  })->Arg(64);
  add("sqlite_mixed/plain_full",
      [](benchmark::State& s) { PlainFullMixed(s, PlainVfs::kCounting); });
  add("sqlite_mixed/plain_full_default_vfs",
      [](benchmark::State& s) { PlainFullMixed(s, PlainVfs::kDefault); });
  paced("sqlite_mixed/plain_paced",
        [](benchmark::State& s) { PlainPacedMixed(s, PacedReads::kPoint, PacedWait::kSpin); });
  paced("sqlite_mixed/idle_paced",
        [](benchmark::State& s) { PlainPacedMixed(s, PacedReads::kNone, PacedWait::kSpin); });
  paced("sqlite_mixed/plain_paced_sleep",
        [](benchmark::State& s) { PlainPacedMixed(s, PacedReads::kPoint, PacedWait::kSleep); });
  paced("sqlite_mixed/idle_paced_sleep",
        [](benchmark::State& s) { PlainPacedMixed(s, PacedReads::kNone, PacedWait::kSleep); });
  add("sqlite_mixed/pool", &PlainPoolMixed)->Arg(4)->Arg(16);
  add("sqlite_mixed/futures", &FuturesMixed)->Arg(4);
  add("sqlite_mixed/sqloop", [](benchmark::State& s) { SqloopMixed(s, /*paced=*/false); })
      ->Arg(1)
      ->Arg(64);
  paced("sqlite_mixed/sqloop_paced", [](benchmark::State& s) {
    SqloopMixed(s, /*paced=*/true);
  })->Arg(64);
  paced("sqlite_mixed/sqloop_paced_no_reserve", [](benchmark::State& s) {
    SqloopMixed(s, /*paced=*/true, db::VfsOptions{.wal_reserve_bytes = 0});
  })->Arg(64);
  paced("sqlite_mixed/sqloop_paced_poll", [](benchmark::State& s) {
    loop::LoopOptions polling;
    polling.poll_before_wait = kPacedPoll;
    SqloopMixed(s, /*paced=*/true, {}, std::move(polling));
  })->Arg(64);
  add("sqlite_transfer/plain_full", &PlainFullTransfer);
  add("sqlite_transfer/sqloop", &SqloopTransfer)->Arg(1)->Arg(8)->Arg(64);
}

// The backend a default loop gets here: "io_uring", or "fallback (<why>)".
std::string ProbeBackend() {
  absl::StatusOr<std::unique_ptr<loop::Loop>> loop = loop::Loop::Create(loop::LoopOptions{});
  if (!loop.ok()) return "none: " + loop.status().ToString();
  return std::string((*loop)->backend().name());
}

}  // namespace
}  // namespace sqloop::bench

int main(int argc, char** argv) {
  SQLOOP_CHECK(sqloop::alloc::InstallSqliteMemory().ok(), "bench: install SQLite's allocator");
  const sqloop::bench::BaselineScope scope(sqloop::alloc::kSharedTenant);
  benchmark::AddCustomContext("baseline:sqlite_read", "plain_default");
  // SQLite's own floor for a warm point read (no transaction per read): every variant is also
  // shown as a multiple of it, round by round.
  benchmark::AddCustomContext("floor:sqlite_read", "plain_in_txn");
  benchmark::AddCustomContext("baseline:sqlite_request", "plain");
  benchmark::AddCustomContext("baseline:sqlite_read_cold", "plain");
  benchmark::AddCustomContext("baseline:sqlite_write_cold", "plain");
  benchmark::AddCustomContext("baseline:sqlite_write", "plain_full");
  benchmark::AddCustomContext("baseline:sqlite_mixed", "plain_full");
  benchmark::AddCustomContext("baseline:sqlite_transfer", "plain_full");
  benchmark::AddCustomContext(
      "description:sqlite_read",
      "one iteration = one point SELECT by rowid (prepared) on a 100,000-row table, "
      "page cache warm");
  benchmark::AddCustomContext(
      "description:sqlite_request",
      "one iteration = one prepared SELECT ?1, which touches no table: bind, step and reset, "
      "alone (plain, a connection without a mutex) or as a request through db::Database (sqloop)");
  benchmark::AddCustomContext(
      "description:sqlite_read_cold",
      "one iteration = one point SELECT by rowid (prepared) of a random row of a 64 MiB table "
      "(8 MiB in quick mode), SQLite's page cache and the OS page cache dropped every 256 reads "
      "(sqloop/N: N reads in flight)");
  benchmark::AddCustomContext(
      "description:sqlite_write_cold",
      "one iteration = one durable UPDATE by rowid (prepared, writing the row's own values back) "
      "of a random row of the sqlite_read_cold table, both page caches dropped every 256 writes "
      "(plain: autocommit, synchronous=FULL; sqloop/N: N writes in flight, group commit)");
  benchmark::AddCustomContext(
      "description:sqlite_write",
      "one iteration = one durable single-row INSERT acknowledged (sqloop/N: N concurrent "
      "writers, group commit; pool/T: plain SQLite behind T threads, one connection each, "
      "writes serialised by SQLite's lock); disk under $TMPDIR or /tmp");
  benchmark::AddCustomContext(
      "description:sqlite_mixed",
      "one iteration = one operation of a 90% point-read / 10% durable-insert mix "
      "(sqloop/N: N concurrent clients; pool/T: plain SQLite behind T threads, one "
      "connection each, reads in parallel; futures/T: the same behind an executor of T threads "
      "returning a std::future per operation, 64 in flight, results taken in order; "
      "sqloop_paced/N: N clients whose operations arrive at 50,000 per second in all, "
      "latency counted from each arrival; sqloop_paced_no_reserve/N: the same without the "
      "reserves of growing files; sqloop_paced_poll/N: the same with the loop polling 50 us "
      "before it blocks; plain_paced: the same arrivals served by plain SQLite, "
      "reads on one thread, writes group-committed on another, the reader spinning before each "
      "arrival like sqloop_paced_poll's loop; idle_paced: the same with reads "
      "that do nothing, how late the machine lets a thread run; plain_paced_sleep and "
      "idle_paced_sleep: the same with a reader that sleeps until each arrival, like "
      "sqloop_paced's loop)");
  benchmark::AddCustomContext(
      "description:sqlite_transfer",
      "one iteration = one durable transfer between two of 1,024 accounts (two UPDATEs, all or "
      "nothing) acknowledged; plain_full: BEGIN IMMEDIATE ... COMMIT, synchronous=FULL; "
      "sqloop/N: N concurrent clients, each transfer one batch request, group commit");
  benchmark::AddCustomContext("plot:sqlite_write", "commits_per_s");
  benchmark::AddCustomContext("plot:sqlite_transfer", "commits_per_s");
  benchmark::AddCustomContext("plot:sqlite_mixed", "ops_per_s");
  benchmark::AddCustomContext("sqlite_backend", sqloop::bench::ProbeBackend());
  sqloop::bench::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
