// sqlite_read_cold: one point SELECT by rowid (prepared, one row of ~50 bytes) of a random row
// per iteration, with cold caches. The table has the shape of the sqlite_read table but its own
// file, ColdDbPath(): about 64 MiB (kColdRows; 8 MiB under SQLOOP_BENCH_QUICK), built once per
// process and checkpointed into the main file, so uniformly random reads mostly miss. Every
// kReadsPerDrop iterations, with the timing paused, both caches are dropped: the OS page cache of
// the database file and its -wal (posix_fadvise DONTNEED through descriptors of our own; the
// pages are clean, so no root is needed) and SQLite's own page cache (sqlite3_db_release_memory;
// for sqloop Database::ReleaseMemory, every connection). So each batch starts from the disk and
// warms only the pages it touches itself: the upper levels of the b-tree, not the leaves. Keys
// come from one seeded sequence in submission order, and each read is checked against the values
// the row was built with.
//
//   plain      plain SQLite, default unix VFS, WAL, autocommit, default cache (2 MB), one
//              connection, one blocking read at a time. The baseline.
//   sqloop/N   a db::Database (kColdReaders readers) on SqloopEnv with N reads in flight (closed
//              loop: N caller-owned requests, each resubmitted with the next key from its
//              on_done). Latency = Submit to on_done, so at N = 64 it also holds the wait behind
//              the other reads (Little's law), as in sqlite_mixed.
//
// The benchmark drives sqloop's loop as a host embedding it does: Run(kNoWait) ticks, each
// timed, and after a tick that found nothing ready a poll() on the loop's descriptor until
// something is (the wait is not work, so it is not timed; a backend without a descriptor gets
// an untimed Run(kOnce) instead). So every tick that runs callbacks is timed, and tick_max_us is
// the longest of them: the longest the loop's thread was busy and deaf to everything else, a
// timer or another tenant's request. A read whose pages are not in memory stops, fetches them
// asynchronously and runs again (db/database.h); were it to wait for the disk inside the tick
// instead (Loop::WaitForOp, counted by waited_ops_per_op), the tick would hold every disk read
// of the reads it started. For plain, tick_max_us is the longest read: its thread is blocked
// throughout, and a loop embedding plain SQLite would be too.
//
// The timed region starts exactly one read per iteration, so every variant counts as many reads
// as iterations. Counters, per read: allocs_per_op (process-wide: the heap counter is linked for
// every variant alike, as in sqlite_read), reads_per_s (reads / wall time of the timed region,
// the drops excluded), p50_us ... max_us (also written for the report's CDF), tick_max_us,
// ticks_over_1ms (how many timed ticks broke the 1 ms bound, a count over the run; of those,
// ticks_over_1ms_cpu kept the thread's CPU busy for over 1 ms: the others were the machine's
// time, the thread preempted or its virtual CPU stopped; both variants read the thread's CPU
// clock at every tick's start, and at its end only past the bound) with
// ticks_per_op (timed ticks per read, so that count has its denominator), file_reads_per_op (plain:
// SQLite's cache misses; sqloop: VfsStats::reads) and, for sqloop, waited_ops_per_op
// (LoopStats::waited_ops: I/O run through WaitForOp, blocking the loop), from_fetch_per_op
// (VfsStats::reads_from_fetch: pages a read that ran again copied from its fetch instead of asking
// the page cache again) and fetches_per_op (DatabaseStats::fetches: the reads of missed pages the
// loop started; reads that missed the same page at once share one).
//
// sqlite_write_cold: the same with a durable UPDATE of the random row instead of the SELECT
// (kColdUpdate: it writes the row's own values back, so the table stays what the reads check;
// one iteration = one write acknowledged; writes_per_s for reads_per_s, the latency series
// "write"). plain: autocommit, WAL, synchronous=FULL, one write at a time (each its own fsync).
// sqloop/64: 64 writes in flight, group-committed; a write whose statement reads a page not in
// memory is undone and runs again after a fetch, its group waiting meanwhile, so the writes'
// reads never wait on the loop: reads_waited_per_op (VfsStats::reads_waited) counts those that
// did. The other waits of a write (a WAL growing past its reserve, ...) are in
// waited_ops_per_op.
#include <fcntl.h>
#include <poll.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

constexpr uint64_t kKeySeed = 42;
// The warm-up's keys (preparing the statement on the reader), apart from the measured ones.
constexpr uint64_t kWarmUpSeed = 43;
// Rows at ~50 bytes each: about 64 MiB, 32 times SQLite's default cache, so after a drop the
// b-tree's 16,000 leaves stay almost all cold for a whole batch.
constexpr int64_t kColdRows = 1'300'000;
// Under SQLOOP_BENCH_QUICK (CI): about 8 MiB, still 4 times the default cache, built in a
// fraction of a second.
constexpr int64_t kColdRowsQuick = 160'000;
// Reads between two drops: a batch reads about 1.6 % of the leaves (few hits between its reads)
// and is long enough that pausing the timing (two clock reads and the drop) is small beside it.
constexpr uint64_t kReadsPerDrop = 256;
// Readers of the sqloop Database: the default. A read that misses gives its reader back while
// its fetch is in flight, so two readers keep 64 reads' fetches going.
constexpr uint32_t kColdReaders = db::kReadersDefault;
// sqlite_write_cold's statement: rewrites the row with its own values.
constexpr const char* kColdUpdate = "UPDATE t SET v = v, s = s WHERE id = ?";

int64_t ColdRows() {
  static const int64_t rows = QuickMode() ? kColdRowsQuick : kColdRows;
  return rows;
}

const std::string& ColdDbPath() {
  static const std::string path = [] {
    std::string p = BenchDir() + "/cold.db";
    BuildReadTable(p, ColdRows());
    return p;
  }();
  return path;
}

int64_t NextColdRowId(Prng& keys) {
  return 1 + static_cast<int64_t>(keys.Next() % static_cast<uint64_t>(ColdRows()));
}

// Descriptors of the database file and its -wal (when it exists), opened only to tell the
// kernel to drop their pages, so the drop works whatever VFS reads the files.
class OsCacheDropper {
 public:
  explicit OsCacheDropper(const std::string& path)
      : db_fd_(open(path.c_str(), O_RDONLY | O_CLOEXEC)),
        wal_fd_(open((path + "-wal").c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~OsCacheDropper() {
    if (db_fd_ >= 0) close(db_fd_);
    if (wal_fd_ >= 0) close(wal_fd_);
  }
  OsCacheDropper(const OsCacheDropper&) = delete;
  OsCacheDropper& operator=(const OsCacheDropper&) = delete;

  // Drops the files' clean pages from the OS page cache.
  [[nodiscard]] absl::Status Drop() const {
    if (db_fd_ < 0) return absl::InternalError("cannot open the database file to drop its pages");
    for (int fd : {db_fd_, wal_fd_}) {
      if (fd < 0) continue;
      if (int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); rc != 0) {
        return absl::InternalError(absl::StrCat("posix_fadvise(DONTNEED): ", std::strerror(rc)));
      }
    }
    return absl::OkStatus();
  }

 private:
  int db_fd_;
  int wal_fd_;
};

// The longest a tick should keep the loop busy.
constexpr int64_t kTickBoundNs = 1'000'000;

struct ColdStats {
  Latencies latencies;
  int64_t tick_max_ns = 0;
  uint64_t ticks = 0;           // Timed: the loop's turns (sqloop), the reads (plain).
  uint64_t ticks_over_1ms = 0;  // Of those, the ones longer than kTickBoundNs.
  // Of those, the ones whose thread ran for more than kTickBoundNs of CPU time in them.
  uint64_t ticks_over_1ms_cpu = 0;

  // `cpu_start_ns`: ThreadCpuNs() at the tick's start; the end is read only for a long tick.
  void AddTick(int64_t ns, int64_t cpu_start_ns) {
    tick_max_ns = std::max(tick_max_ns, ns);
    ++ticks;
    if (ns > kTickBoundNs) {
      ++ticks_over_1ms;
      if (ThreadCpuNs() - cpu_start_ns > kTickBoundNs) ++ticks_over_1ms_cpu;
    }
  }
  void ResetTicks() {
    tick_max_ns = 0;
    ticks = 0;
    ticks_over_1ms = 0;
    ticks_over_1ms_cpu = 0;
  }
  int64_t paused_ns = 0;  // Spent dropping caches, kept out of reads_per_s.
  uint64_t reads = 0;     // Completed and checked.
  uint64_t failures = 0;
  absl::Status first_failure;

  void Fail(absl::Status status) {
    if (failures++ == 0) first_failure = std::move(status);
  }
};

// Makes the coming reads cold with the timing paused: SQLite's pages through `release`, then
// the OS's. Returns how long it took (also added to stats.paused_ns).
template <typename Release>
int64_t DropCaches(benchmark::State& state, const OsCacheDropper& files, ColdStats& stats,
                   Release release) {
  state.PauseTiming();
  const int64_t start_ns = MonotonicNs();
  release();
  if (absl::Status dropped = files.Drop(); !dropped.ok()) stats.Fail(std::move(dropped));
  const int64_t took_ns = MonotonicNs() - start_ns;
  stats.paused_ns += took_ns;
  state.ResumeTiming();
  return took_ns;
}

// `writes`: the ops were sqlite_write_cold's; the throughput is writes_per_s and the latency
// series "write".
void SetColdCounters(benchmark::State& state, alloc::HeapCounts before, ColdStats& stats,
                     int64_t elapsed_ns, uint64_t file_reads, bool writes) {
  const auto reads = static_cast<double>(std::max<uint64_t>(stats.reads, 1));
  const auto active_s = static_cast<double>(elapsed_ns - stats.paused_ns) / 1e9;
  state.counters["allocs_per_op"] =
      static_cast<double>(alloc::CurrentHeapCounts().allocations - before.allocations) / reads;
  state.counters[writes ? "writes_per_s" : "reads_per_s"] =
      static_cast<double>(stats.reads) / active_s;
  state.counters["tick_max_us"] = static_cast<double>(stats.tick_max_ns) / 1e3;
  state.counters["ticks_over_1ms"] = static_cast<double>(stats.ticks_over_1ms);
  state.counters["ticks_over_1ms_cpu"] = static_cast<double>(stats.ticks_over_1ms_cpu);
  state.counters["ticks_per_op"] = static_cast<double>(stats.ticks) / reads;
  state.counters["file_reads_per_op"] = static_cast<double>(file_reads) / reads;
  SetLatencyCounters(state, "", stats.latencies);
  WriteLatencyFile({{writes ? "write" : "read", &stats.latencies}});
}

void ReportFailures(benchmark::State& state, const ColdStats& stats) {
  if (stats.failures == 0) return;
  state.SkipWithError(
      absl::StrCat(stats.failures, " failure(s), first: ", stats.first_failure.ToString()).c_str());
}

// ---- sqloop readers ---------------------------------------------------------------------------

struct ColdRun;

// One of the N requests in flight: a read, or in sqlite_write_cold a write.
struct ColdReader {
  db::Request read;
  ColdRun* run = nullptr;
  int64_t submitted_ns = 0;
  int rows = 0;
  bool values_ok = false;
  bool in_flight = false;
};

struct ColdRun {
  db::Database* db = nullptr;
  Prng keys{kKeySeed};
  ColdStats stats;
  bool record = false;  // Latencies are recorded in the timed region only.
  // Reads started, and how many may be: the timed region starts exactly one per iteration, so
  // its time per iteration is its time per read even though a tick completes many reads.
  uint64_t started = 0;
  uint64_t limit = 0;
  uint64_t in_flight = 0;
};

void StartColdRead(ColdReader& c) {
  ++c.run->started;
  c.read.params[0].int_value = NextColdRowId(c.run->keys);
  c.rows = 0;
  c.values_ok = false;
  c.submitted_ns = MonotonicNs();
  c.in_flight = true;
  ++c.run->in_flight;
  if (absl::Status admitted = c.run->db->Submit(c.read); !admitted.ok()) {
    c.in_flight = false;
    --c.run->in_flight;
    c.run->stats.Fail(std::move(admitted));
  }
}

void OnColdRow(db::Request& r, const db::Row& row) {
  auto& c = *static_cast<ColdReader*>(r.user_data);
  const int64_t id = r.params[0].int_value;
  ++c.rows;
  c.values_ok = row.Int(0) == ExpectedValue(id) && TextMatches(id, row.Text(1));
}

void OnColdDone(db::Request& r, absl::Status status) {
  auto& c = *static_cast<ColdReader*>(r.user_data);
  ColdRun& run = *c.run;
  if (!c.in_flight) return run.stats.Fail(absl::InternalError("acknowledged twice"));
  c.in_flight = false;
  --run.in_flight;
  if (!status.ok()) return run.stats.Fail(std::move(status));
  const bool write = r.kind == db::Request::Kind::kWrite;
  if (write ? r.changes != 1 : c.rows != 1 || !c.values_ok) {
    return run.stats.Fail(absl::InternalError(write ? "a write changed no row or several"
                                                    : "a read returned a wrong row"));
  }
  ++run.stats.reads;
  if (run.record) run.stats.latencies.Add(MonotonicNs() - c.submitted_ns);
  if (run.started < run.limit) StartColdRead(c);
}

std::unique_ptr<ColdReader[]> MakeReaders(ColdRun& run, size_t count, bool writes) {
  auto readers = std::make_unique<ColdReader[]>(count);
  for (size_t i = 0; i < count; ++i) {
    ColdReader& c = readers[i];
    c.run = &run;
    c.read.kind = writes ? db::Request::Kind::kWrite : db::Request::Kind::kRead;
    c.read.sql = writes ? kColdUpdate : kPointSelect;
    c.read.params.push_back(db::Value::Int(0));
    c.read.user_data = &c;
    c.read.on_row = &OnColdRow;
    c.read.on_done = &OnColdDone;
  }
  return readers;
}

// One turn of the loop: a tick that never sleeps, timed; after one that found nothing ready, a
// wait outside the loop until something is (untimed: see the file comment).
void Turn(SqloopEnv& env, ColdStats& stats) {
  loop::Loop& loop = env.loop();
  const uint64_t callbacks_before = loop.stats().callbacks;
  const int64_t cpu_start_ns = ThreadCpuNs();
  const int64_t start_ns = MonotonicNs();
  absl::Status status = loop.Run(loop::RunMode::kNoWait);
  stats.AddTick(MonotonicNs() - start_ns, cpu_start_ns);
  if (status.ok() && loop.stats().callbacks == callbacks_before) {
    if (const int fd = loop.fd(); fd >= 0) {
      pollfd ready{.fd = fd, .events = POLLIN, .revents = 0};
      (void)poll(&ready, 1, loop.NextTimeoutMs());
    } else {
      status = env.RunOnce();
    }
  }
  if (!status.ok()) stats.Fail(std::move(status));
}

// Starts `limit` reads in all, at most `count` at a time (one per reader).
void Begin(ColdRun& run, ColdReader* readers, size_t count, uint64_t limit) {
  run.started = 0;
  run.limit = limit;
  for (size_t i = 0; i < count && run.started < run.limit; ++i) StartColdRead(readers[i]);
}

// Runs the loop until no read is in flight; with `stop`, starting no new one.
void RunToEnd(SqloopEnv& env, ColdRun& run, bool stop) {
  if (stop) run.limit = run.started;
  while (run.in_flight > 0 && run.stats.failures == 0) Turn(env, run.stats);
}

// Untimed: kReadsPerDrop reads with keys of their own, so each reader that serves reads has
// prepared the statement; then what the warm-up counted is reset.
void WarmUp(SqloopEnv& env, ColdRun& run, ColdReader* readers, size_t count) {
  run.keys = Prng{kWarmUpSeed};
  Begin(run, readers, count, kReadsPerDrop);
  RunToEnd(env, run, /*stop=*/false);
  run.keys = Prng{kKeySeed};
  run.stats.reads = 0;
  run.stats.ResetTicks();
}

}  // namespace

namespace {

// Steps the prepared kColdUpdate for row `id` (autocommit: one durable transaction) and resets
// it: true if it changed exactly that row.
bool StepColdUpdate(sqlite3_stmt* update, int64_t id) {
  sqlite3_bind_int64(update, 1, id);
  const bool ok =
      sqlite3_step(update) == SQLITE_DONE && sqlite3_changes(sqlite3_db_handle(update)) == 1;
  sqlite3_reset(update);
  return ok;
}

void PlainCold(benchmark::State& state, bool writes) {
  sqlite3* db = OpenPlain(ColdDbPath(), nullptr, /*no_mutex=*/false);
  sqlite3_stmt* stmt = nullptr;
  const char* setup =
      writes ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" : "PRAGMA journal_mode=WAL;";
  if (db == nullptr || !Exec(db, setup) ||
      sqlite3_prepare_v3(db, writes ? kColdUpdate : kPointSelect, -1, SQLITE_PREPARE_PERSISTENT,
                         &stmt, nullptr) != SQLITE_OK) {
    state.SkipWithError("plain SQLite setup failed");
    sqlite3_close_v2(db);
    return;
  }
  auto step = [stmt, writes](int64_t id) {
    return writes ? StepColdUpdate(stmt, id) : StepPointRead(stmt, id);
  };
  ColdStats stats;
  Prng warm_up{kWarmUpSeed};
  for (uint64_t i = 0; i < kReadsPerDrop && stats.failures == 0; ++i) {
    if (!step(NextColdRowId(warm_up))) stats.Fail(absl::InternalError("a warm-up op failed"));
  }
  const OsCacheDropper files(ColdDbPath());  // After the open: the -wal exists now.
  stats.latencies.Reserve(static_cast<size_t>(state.max_iterations));
  Prng keys{kKeySeed};
  const int64_t misses_before = CacheMisses(db);
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (auto _ : state) {
    if (stats.reads % kReadsPerDrop == 0) {
      DropCaches(state, files, stats, [db] { sqlite3_db_release_memory(db); });
    }
    const int64_t id = NextColdRowId(keys);
    const int64_t cpu_start_ns = ThreadCpuNs();
    const int64_t submitted_ns = MonotonicNs();
    const bool ok = step(id);
    const int64_t took_ns = MonotonicNs() - submitted_ns;
    stats.latencies.Add(took_ns);
    stats.AddTick(took_ns, cpu_start_ns);
    ++stats.reads;
    if (!ok) stats.Fail(absl::InternalError(absl::StrCat("the op on row ", id, " failed")));
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  SetColdCounters(state, before, stats, elapsed_ns,
                  static_cast<uint64_t>(CacheMisses(db) - misses_before), writes);
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
  ReportFailures(state, stats);
}

}  // namespace

void PlainColdRead(benchmark::State& state) { PlainCold(state, /*writes=*/false); }
void PlainColdWrite(benchmark::State& state) { PlainCold(state, /*writes=*/true); }

namespace {

void SqloopCold(benchmark::State& state, bool writes) {
  const auto count = static_cast<size_t>(state.range(0));
  SqloopEnv env;
  db::DatabaseOptions options;
  options.readers = kColdReaders;
  // The check reads the whole file, page by page through WaitForOp, cold after the previous
  // run's drops: seconds per call of this function, for a file this process has just built.
  options.check_at_open = false;
  if (absl::Status opened = env.Open(ColdDbPath(), options); !opened.ok()) {
    state.SkipWithError(absl::StrCat("sqloop open failed: ", opened.ToString()).c_str());
    return;
  }
  LabelBackend(state, env.backend_name());
  ColdRun run;
  run.db = &env.db();
  run.stats.latencies.Reserve(static_cast<size_t>(state.max_iterations));
  std::unique_ptr<ColdReader[]> readers = MakeReaders(run, count, writes);
  WarmUp(env, run, readers.get(), count);
  const OsCacheDropper files(ColdDbPath());
  run.record = true;
  const uint64_t file_reads_before = env.vfs().stats().reads;
  const uint64_t waited_before = env.loop().stats().waited_ops;
  const uint64_t reads_waited_before = env.vfs().stats().reads_waited;
  const uint64_t fetches_before = env.db().stats().fetches;
  const uint64_t from_fetch_before = env.vfs().stats().reads_from_fetch;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  Begin(run, readers.get(), count, static_cast<uint64_t>(state.max_iterations));
  uint64_t target = 0;
  for (auto _ : state) {
    if (target++ % kReadsPerDrop == 0) {
      const int64_t paused_ns =
          DropCaches(state, files, run.stats, [&env] { env.db().ReleaseMemory(); });
      // The reads in flight did not wait for the drop: keep it out of their latency.
      for (size_t i = 0; i < count; ++i) readers[i].submitted_ns += paused_ns;
    }
    while (run.stats.reads < target && run.stats.failures == 0) Turn(env, run.stats);
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  SetColdCounters(state, before, run.stats, elapsed_ns, env.vfs().stats().reads - file_reads_before,
                  writes);
  const auto ops = static_cast<double>(std::max<uint64_t>(run.stats.reads, 1));
  state.counters["waited_ops_per_op"] =
      static_cast<double>(env.loop().stats().waited_ops - waited_before) / ops;
  state.counters["fetches_per_op"] =
      static_cast<double>(env.db().stats().fetches - fetches_before) / ops;
  state.counters["from_fetch_per_op"] =
      static_cast<double>(env.vfs().stats().reads_from_fetch - from_fetch_before) / ops;
  if (writes) {
    state.counters["reads_waited_per_op"] =
        static_cast<double>(env.vfs().stats().reads_waited - reads_waited_before) / ops;
  }
  RunToEnd(env, run, /*stop=*/true);  // Ops are left in flight only after a failure.
  if (absl::Status closed = env.Close(); !closed.ok()) run.stats.Fail(std::move(closed));
  ReportFailures(state, run.stats);
}

}  // namespace

void SqloopColdRead(benchmark::State& state) { SqloopCold(state, /*writes=*/false); }
void SqloopColdWrite(benchmark::State& state) { SqloopCold(state, /*writes=*/true); }

}  // namespace sqloop::bench
