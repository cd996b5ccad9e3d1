// bench/sqlite/benchmarks.h
// -----------------------------------------------------------------------------
//
// The benchmark functions of sqloop_bench_sqlite, registered in sqlite_bench.cc. What each
// measures is described above its definition and in docs/overhead.md, section 3.
#ifndef SQLOOP_BENCH_SQLITE_BENCHMARKS_H_
#define SQLOOP_BENCH_SQLITE_BENCHMARKS_H_

#include <cstdint>

#include "bench/sqlite/env.h"
#include "benchmark/benchmark.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {

// sqlite_read: one point SELECT by rowid per iteration (point_read.cc).
// kInTxn: kDefault's statement stepped inside one long read transaction (SQLite's floor).
enum class PlainReadConfig { kDefault, kBest, kInTxn };
void PlainRead(benchmark::State& state, PlainReadConfig config);
void SqloopRead(benchmark::State& state);
void SqloopCoroRead(benchmark::State& state);

// sqlite_request: one prepared SELECT ?1 per iteration, which touches no table (point_read.cc):
// what a request costs beyond SQLite's own work.
void PlainRequest(benchmark::State& state);
void SqloopRequest(benchmark::State& state);

// sqlite_read_cold: one point SELECT of a random row per iteration, SQLite's and the OS's page
// caches dropped every few hundred reads (cold_read.cc). SqloopColdRead's argument is the
// number of reads in flight.
void PlainColdRead(benchmark::State& state);
void SqloopColdRead(benchmark::State& state);
// sqlite_write_cold: the same with a durable UPDATE of the row (cold_read.cc).
void PlainColdWrite(benchmark::State& state);
void SqloopColdWrite(benchmark::State& state);

// sqlite_write: one durable single-row INSERT per iteration (durable_write.cc). SqloopWrite's
// argument is the number of concurrent writers.
// Which VFS a plain baseline runs on: the counting wrapper (counting_vfs.h) or SQLite's own
// default VFS.
enum class PlainVfs { kCounting, kDefault };
void PlainFullWrite(benchmark::State& state, PlainVfs vfs);
void SqloopWrite(benchmark::State& state);
// The durable-commit counters of sqlite_write and sqlite_transfer: allocs_per_op (since
// `before`), commits_per_s, the latency percentiles (and the report's CDF file), and
// fsyncs_per_commit unless `fsyncs` is negative (nothing counted them).
void SetWriteCounters(benchmark::State& state, alloc::HeapCounts before, uint64_t commits,
                      int64_t elapsed_ns, Latencies& latencies, int64_t fsyncs);

// sqlite_mixed: one operation (90% point read, 10% durable insert) per iteration (mixed.cc).
// SqloopMixed's argument is the number of concurrent clients.
void PlainFullMixed(benchmark::State& state, PlainVfs vfs);
void SqloopMixed(benchmark::State& state, bool paced, db::VfsOptions vfs_options = {},
                 loop::LoopOptions loop_options = {});
// sqloop_paced_poll: the loop polls this long before it blocks (LoopOptions::poll_before_wait).
// Operations arrive every 20 us on average, so the loop seldom sleeps and, like plain_paced's
// spinning reader, seldom pays a wake-up; it pays in CPU instead.
inline constexpr absl::Duration kPacedPoll = absl::Microseconds(50);
// The paced variants' minimum time per round, in seconds (sqlite_bench.cc says why).
inline constexpr double kPacedMinTimeS = 3.0;
// sqlite_mixed/plain_paced: sqloop_paced's arrivals served by plain SQLite, reads on the
// benchmark's thread and writes on a second thread (mixed.cc). idle_paced: the same with reads
// that do nothing, so their latency is only how late the machine lets the thread run.
enum class PacedReads { kPoint, kNone };
// How plain_paced's reader waits for an arrival: sleeping until shortly before it and spinning
// for the rest (it pays no wake-up, as sqloop_paced_poll's polling loop seldom does), or
// sleeping until it (it pays a wake-up per arrival, as sqloop_paced's blocking loop does).
enum class PacedWait { kSpin, kSleep };
void PlainPacedMixed(benchmark::State& state, PacedReads reads, PacedWait wait);

// sqlite_write/pool/T and sqlite_mixed/pool/T: plain SQLite behind a pool of T threads, one
// connection each (pool.cc). The argument is T.
void PlainPoolWrite(benchmark::State& state);
void PlainPoolMixed(benchmark::State& state);

// sqlite_mixed/futures/T: plain SQLite behind an executor of T threads returning a std::future
// per operation, 64 operations in flight (futures.cc). The argument is T.
void FuturesMixed(benchmark::State& state);

// transfer.cc: a durable two-statement transaction (debit and credit) per iteration.
void PlainFullTransfer(benchmark::State& state);
void SqloopTransfer(benchmark::State& state);

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_BENCHMARKS_H_
