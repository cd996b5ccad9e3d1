// Benchmarks of the tenant registry (db/registry.h), on the loop's default backend
// and a tmpfs directory when the machine has one (/dev/shm), so they measure the registry and
// SQLite rather than the disk's fsync.
//
//   registry_create/registry   64 databases created through the registry in one burst (64
//                              creations submitted at once, open_max 32, so half the
//                              burst waits and evicts); one op = 64 creations.
//   registry_create/database   baseline: the same 64 databases created with bare Database
//                              objects (open, then close), no registry.
//   registry_burst/paced       5,000 tenants created at once with RLIMIT_NOFILE lowered to
//                              1,024 (open_max derived from it: 240), one op = the whole
//                              burst; tick_max_us is the longest a loop tick ran callbacks
//                              and ticks_over_10ms how many ran longer than 10 ms;
//                              tick_max_cpu_us and ticks_over_10ms_cpu the same in the loop
//                              thread's CPU time (a tick long by the wall and short in CPU
//                              waited for the machine, not for its own work);
//                              ticks_over_2ms_cpu counts ticks over twice the tick budget
//                              by CPU, of `ticks` in all: a maximum over thousands of ticks
//                              is one hiccup of the machine, a count shows the tail's
//                              shape. 500 in quick mode.
//   registry_burst/unpaced     baseline: the same with VfsOptions::open_tick_budget_ns
//                              unbounded and LoopOptions::tick_budget 0, so a tick runs
//                              every open it was granted and every callback that was ready.
//   registry_reopen/closed     one request to a tenant that scaled to zero: reopen + request.
//   registry_reopen/closed_1gb the same for a 1 GiB tenant (16 MiB in quick mode) under
//                              $TMPDIR, written once before the timing; first_open_ms is its
//                              first open (which runs the integrity check over the whole file,
//                              on a thread) and first_open_tick_max_ms the longest loop tick
//                              meanwhile (what the open cost every other tenant).
//   registry_reopen/closed_40kb  its like-for-like: a 40 KB tenant written the same way, in
//                              the same directory: the reopen's cost should not grow with size.
//   registry_reopen/open       baseline: the same request to the tenant while it is open.
//   registry_reopen/plain      what stock SQLite pays for the same reopen and read, with no
//                              mutex, the WAL kept and its index in memory as sqloop has them.
//   registry_reopen/database   the same reopen and read with a bare Database (no registry):
//                              closed outside the timing, opened for each request.
//   registry_reopen/asleep     the same read when the Database slept (Database::Sleep) instead
//                              of closing: the request wakes it (its files opened again, its
//                              connections kept). sleep_descriptors: descriptors held on the
//                              tenant's files while asleep; waited_ops_per_op.
//   registry_reopen/asleep_empty_wal  the same, after a reopen that emptied the WAL: the wake
//                              leaves the WAL closed (no write waits), one open instead of two.
//   registry_memory/tenants    counters only: SQLite bytes and resident bytes per idle and per
//                              active open tenant, per active tenant once trimmed
//                              (idle_trim_after), and per closed tenant (0 is the claim), and
//                              the heap bytes a closed tenant's entry in the table keeps.
//   registry_zipf/one_tenant   baseline: 256 point reads, 64 in flight, all to one tenant.
//   registry_zipf/10000        256 point reads, 64 in flight,
//                              over 10,000 tenants drawn from a Zipf(1) distribution (a fixed,
//                              seeded generator), with open_max 128: the popular tenants stay
//                              open, the tail reopens. The tenants exist before: the first
//                              created through the registry, the others copies of its files.
//                              Eviction is SIEVE, the registry's default. Quick mode runs
//                              this and the other 10000 traces over 1,000 tenants.
//   registry_zipf/100000       the same over 100,000 tenants (made once, like the 10,000;
//                              a fixed 100 batches, so the warm-up runs once per process;
//                              skipped in quick mode).
//   registry_zipf/100000_all_asleep the same with asleep_max 100,000: every tenant evicted
//                              sleeps, as in 10000_all_asleep (400 batches; skipped in quick
//                              mode).
//   registry_zipf/one_tenant+thp, registry_zipf/100000_all_asleep+thp  the same two with
//                              glibc's heap on transparent huge pages (GLIBC_TUNABLES=
//                              glibc.malloc.hugetlb=1, which bench/report.py sets for +thp
//                              variants; run by hand without it they stop with an error), in
//                              a group of their own: what a host's malloc setting saves when
//                              every request touches a cold tenant among 5 GB of sleepers
//                              (the page-table walks of 4 KiB pages). anon_huge_bytes: the
//                              process's memory on huge pages at the end (0 where the kernel's
//                              THP is off). The +thp 100,000 is skipped in quick mode.
//   registry_zipf/10000_lru    the same trace with least-recently-used eviction: what SIEVE
//                              saves in opens per request (opens_per_request) and time.
//                              Evicted tenants sleep in these (asleep_max 4,096, the default):
//                              wakes_per_request counts the requests that woke one.
//   registry_zipf/10000_all_asleep the same trace with asleep_max 10,000: every tenant evicted
//                              sleeps, so no request reopens a tenant served before; what
//                              that costs in memory is registry_open_all/asleep's census.
//   registry_zipf/10000_closing the same trace with sleeping off (asleep_max 0): every evicted
//                              tenant closes and its next request opens it again.
//   registry_open_all/tenants  one op = every tenant of the Zipf directory opened at once and
//                              kept open (a read each, 10,000 submitted at a time): as many as
//                              RLIMIT_NOFILE allows with open_max derived from it the way the
//                              registry derives it (the soft limit is raised to the hard one
//                              first; root may raise both), at most 100,000. Counters: the
//                              census of the open tenants: open_tenants,
//                              sqlite_bytes_per_open_tenant, rss_bytes_per_open_tenant (what
//                              the process's resident bytes grew by, per tenant, counted after
//                              the heap freed by creating the tenants went back to the OS),
//                              descriptors_per_open_tenant; and once every tenant was trimmed
//                              (Registry::TrimIdleTenants, what idle_trim_after does):
//                              idle_sqlite_bytes_per_open_tenant, idle_heap_bytes_per_open_tenant
//                              (glibc's bytes in use) and idle_rss_bytes_per_open_tenant (after
//                              malloc_trim). One round, outside quick mode.
//   registry_open_all/asleep   100,000 tenants kept at once on open_max 1,024: the rest asleep
//                              (asleep_max 100,000), the same census (asleep_tenants says how
//                              many sleep). One round, outside quick mode.
//   registry_budget/none       baseline: 256 point reads, 64 in flight, Zipf(1) over 200
//                              tenants that are all open (open_max 240, opened before timing),
//                              with no memory budget.
//   registry_budget/unreached  the same with a memory budget (memory_bytes_max) far above what
//                              the tenants use: what checking the budget costs a request.
//
// allocs_per_op counts heap allocations per op (sqloop::heap_counter). Opening a database
// allocates (SQLite's connections and caches): the claim is only that a request to an open
// tenant allocates nothing in the registry itself.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define SQLOOP_BENCH_HAS_CALLGRIND 1
#else
#define SQLOOP_BENCH_HAS_CALLGRIND 0
#endif

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/heap_counter.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/database.h"
#include "sqloop/db/registry.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/prng.h"
#include "sqloop/loop/loop.h"

namespace {

using sqloop::db::Registry;
using sqloop::db::RegistryOptions;
using sqloop::db::Request;
using sqloop::db::TenantRequest;

// A Database or Registry callback (Close, Sleep, Shutdown) that records that it ran.
void SetTrue(void* arg, absl::Status /*unused*/) { *static_cast<bool*>(arg) = true; }

// A burst of this many creations per op: large enough to amortise the loop's ticks, small
// enough that quick mode (--benchmark_min_time=0.01) runs a few ops.
constexpr int kBurst = 64;
constexpr int kZipfTenants = 10000;
// Quick mode's Zipf traces run over 1,000 of them: their warm-up serves every tenant three
// times, and a quick run only shows that every benchmark still runs.
int ZipfTenants() { return sqloop::bench::QuickMode() ? kZipfTenants / 10 : kZipfTenants; }
constexpr int kZipfTenantsLarge = 100000;
// Batches timed per process of the 100,000-tenant traces with every evicted tenant asleep
// (a quarter of it for the one with the default asleep_max, four to eight times slower).
constexpr int kZipfLargeBatches = 400;
constexpr int kBurstCreations = 5000;
constexpr int kBurstCreationsQuick = 500;
constexpr rlim_t kBurstDescriptors = 1024;
constexpr int kZipfBatch = 256;
constexpr int kZipfWindow = 64;
constexpr int kBudgetTenants = 200;  // All open at once (open_max 240).
constexpr int kMemoryTenants = 100;
constexpr int kMemoryRows = 200;
// The large tenant of registry_reopen/closed_1gb (16 MiB in quick mode).
constexpr int64_t kLargeTenantBytes = int64_t{1} << 30;
constexpr int64_t kSmallTenantBytes = 40000;  // Its like on the same file system.
constexpr int64_t kLargeTenantBytesQuick = int64_t{16} << 20;

const bool kInstalled = [] {
  SQLOOP_CHECK(sqloop::alloc::InstallSqliteMemory().ok(), "bench: install SQLite accounting");
  return true;
}();

// A scratch directory for one benchmark, removed with its files.
class Scratch {
 public:
  // `base`: the directory to make it in; tmpfs (/dev/shm) when the machine has one by default.
  explicit Scratch(const char* base = nullptr) {
    struct stat st {};
    if (base == nullptr) base = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    std::string pattern = absl::StrCat(base, "/sqloop-bench-registry-XXXXXX");
    SQLOOP_CHECK(mkdtemp(pattern.data()) != nullptr, "bench: mkdtemp");
    path_ = pattern;
  }
  ~Scratch() {
    const std::string command = absl::StrCat("rm -rf '", path_, "'");
    if (std::system(command.c_str()) != 0)
      std::fprintf(stderr, "cannot remove %s\n", path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Loop + Vfs + Registry.
struct Host {
  Host(const std::string& directory, uint32_t open_max, uint64_t memory_bytes_max = 0,
       sqloop::db::Eviction eviction = sqloop::db::Eviction::kSieve,
       sqloop::db::VfsOptions vfs_options = {}, uint32_t asleep_max = sqloop::db::kAsleepMaxDefault,
       absl::Duration tick_budget = sqloop::loop::kTickBudgetDefault) {
    sqloop::loop::LoopOptions loop_options;
    loop_options.tick_budget = tick_budget;
    auto created = sqloop::loop::Loop::Create(std::move(loop_options));
    SQLOOP_CHECK(created.ok(), "bench: loop");
    loop = *std::move(created);
    auto v = sqloop::db::Vfs::Create(*loop, vfs_options);
    SQLOOP_CHECK(v.ok(), "bench: vfs");
    vfs = *std::move(v);
    RegistryOptions options;
    options.directory = directory;
    options.open_max = open_max;
    options.idle_timeout = absl::Hours(1);  // Benchmarks close tenants explicitly.
    options.waiting_opens_max = 1 << 16;
    options.memory_bytes_max = memory_bytes_max;
    options.eviction = eviction;
    options.asleep_max = asleep_max;
    auto r = Registry::Create(*loop, *vfs, options);
    SQLOOP_CHECK(r.ok(), "bench: registry");
    registry = *std::move(r);
  }
  ~Host() {
    bool done = false;
    registry->Shutdown(&SetTrue, &done);
    RunUntil([&] { return done; });
    registry.reset();
    SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kUntilDone).ok(), "bench: drain");
    vfs.reset();
  }
  template <typename Done>
  void RunUntil(Done done) {
    while (!done()) {
      SQLOOP_CHECK(loop->pending() > 0, "bench: the loop went quiet with work outstanding");
      SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kOnce).ok(), "bench: loop failed");
    }
  }
  // The longest ticks of a run, by the wall clock and by the loop thread's CPU time.
  struct TickTimes {
    int64_t max_ns = 0;  // The busy part: from the clock reading after its wait to the end of
                         // its callbacks (the clock the open budget reads).
    int64_t over_10ms = 0;
    int64_t cpu_max_ns = 0;  // The thread's CPU time over the whole tick: a tick long by the
                             // wall but short in CPU was the machine running something else.
    int64_t cpu_over_10ms = 0;
    int64_t cpu_over_2ms = 0;  // Twice the loop's default tick budget: how often it overran.
    int64_t ticks = 0;
  };
  // RunUntil that also times each tick. Two clock reads and a CPU-clock system call per tick,
  // so only where the ticks are what is measured.
  template <typename Done>
  void RunUntilTimingTicks(Done done, TickTimes* times) {
    while (!done()) {
      SQLOOP_CHECK(loop->pending() > 0, "bench: the loop went quiet with work outstanding");
      const int64_t cpu_start = sqloop::bench::ThreadCpuNs();
      SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kOnce).ok(), "bench: loop failed");
      const int64_t busy = loop->backend().NowNs() - loop->now_ns();
      const int64_t cpu = sqloop::bench::ThreadCpuNs() - cpu_start;
      times->max_ns = std::max(times->max_ns, busy);
      times->over_10ms += busy > 10'000'000 ? 1 : 0;
      times->cpu_max_ns = std::max(times->cpu_max_ns, cpu);
      times->cpu_over_10ms += cpu > 10'000'000 ? 1 : 0;
      times->cpu_over_2ms += cpu > 2'000'000 ? 1 : 0;
      times->ticks++;
    }
  }
  std::unique_ptr<sqloop::loop::Loop> loop;
  std::unique_ptr<sqloop::db::Vfs> vfs;
  std::unique_ptr<Registry> registry;
};

// A request that counts its completions; any failure aborts the benchmark.
struct Counted : TenantRequest {
  int* completed = nullptr;
  bool busy = false;
  std::string name;
  void Prime(int* counter) {
    completed = counter;
    on_done = [](TenantRequest& r, absl::Status status) {
      static_cast<Counted&>(r).busy = false;
      if (!status.ok())
        std::fprintf(stderr, "%s: %s\n", std::string(r.tenant).c_str(), status.ToString().c_str());
      SQLOOP_CHECK(status.ok(), "bench: a request failed");
      ++*static_cast<Counted&>(r).completed;
    };
  }
};

void ReportAllocs(benchmark::State& state, const sqloop::alloc::HeapCounts& before, int64_t ops) {
  const sqloop::alloc::HeapCounts after = sqloop::alloc::CurrentHeapCounts();
  state.counters["allocs_per_op"] =
      benchmark::Counter(static_cast<double>(after.allocations - before.allocations) /
                         static_cast<double>(ops > 0 ? ops : 1));
}

// ---- Creation ---------------------------------------------------------------------------------

void BM_CreateRegistry(benchmark::State& state) {
  Scratch scratch;
  Host host(scratch.path(), /*open_max=*/kBurst / 2);
  std::vector<Counted> requests(kBurst);
  int serial = 0;
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  for (auto _ : state) {
    int completed = 0;
    for (Counted& r : requests) {
      r.name = absl::StrFormat("c%08d", serial++);
      r.tenant = r.name;
      r.create_if_missing = true;
      r.Prime(&completed);
      SQLOOP_CHECK(host.registry->Submit(r).ok(), "bench: submit");
    }
    host.RunUntil([&] { return completed == kBurst; });
  }
  ReportAllocs(state, before, state.iterations());
  state.SetItemsProcessed(state.iterations() * kBurst);
  state.counters["databases_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kBurst), benchmark::Counter::kIsRate);
}

void BM_CreateDatabase(benchmark::State& state) {
  Scratch scratch;
  auto loop = *sqloop::loop::Loop::Create({});
  auto vfs = *sqloop::db::Vfs::Create(*loop);
  int serial = 0;
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  for (auto _ : state) {
    std::vector<std::unique_ptr<sqloop::db::Database>> databases;
    int opened = 0;
    int closed = 0;
    for (int i = 0; i < kBurst; ++i) {
      databases.push_back(std::make_unique<sqloop::db::Database>(
          *loop, *vfs, absl::StrFormat("%s/d%08d.db", scratch.path(), serial++)));
      databases.back()->Open(
          [](void* arg, absl::Status s) {
            SQLOOP_CHECK(s.ok(), "bench: open");
            ++*static_cast<int*>(arg);
          },
          &opened);
    }
    while (opened < kBurst) SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kOnce).ok(), "run");
    for (auto& database : databases) {
      database->Close([](void* arg, absl::Status) { ++*static_cast<int*>(arg); }, &closed);
    }
    while (closed < kBurst) SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kOnce).ok(), "run");
    SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kNoWait).ok(), "run");
  }
  ReportAllocs(state, before, state.iterations());
  state.SetItemsProcessed(state.iterations() * kBurst);
  state.counters["databases_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kBurst), benchmark::Counter::kIsRate);
  SQLOOP_CHECK(loop->Run(sqloop::loop::RunMode::kUntilDone).ok(), "run");
}

// ---- The creation burst -----------------------------------------------------------------------

// Every tenant of the burst is submitted at once; the registry opens up to open_max of them
// and queues the rest; its ticks are timed (Host::RunUntilTimingTicks).
void RunBurst(benchmark::State& state, int64_t open_tick_budget_ns, absl::Duration tick_budget) {
  rlimit saved{};
  SQLOOP_CHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0, "bench: getrlimit");
  rlimit low = saved;
  low.rlim_cur = std::min(kBurstDescriptors, saved.rlim_max);
  SQLOOP_CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "bench: setrlimit");
  const int creations = sqloop::bench::QuickMode() ? kBurstCreationsQuick : kBurstCreations;
  Host::TickTimes ticks;
  uint32_t open_max = 0;
  for (auto _ : state) {
    Scratch scratch;
    Host host(scratch.path(), /*open_max=*/0, 0, sqloop::db::Eviction::kSieve,
              sqloop::db::VfsOptions{.open_tick_budget_ns = open_tick_budget_ns},
              sqloop::db::kAsleepMaxDefault, tick_budget);
    open_max = host.registry->stats().open_max;
    std::vector<Counted> requests(static_cast<size_t>(creations));
    int completed = 0;
    for (int i = 0; i < creations; ++i) {
      Counted& r = requests[static_cast<size_t>(i)];
      r.name = absl::StrFormat("b%05d", i);
      r.tenant = r.name;
      r.create_if_missing = true;
      r.sql = "CREATE TABLE t(x)";
      r.kind = Request::Kind::kWrite;
      r.Prime(&completed);
      SQLOOP_CHECK(host.registry->Submit(r).ok(), "bench: submit");
    }
    host.RunUntilTimingTicks([&] { return completed == creations; }, &ticks);
  }
  SQLOOP_CHECK(setrlimit(RLIMIT_NOFILE, &saved) == 0, "bench: restore the descriptor limit");
  state.SetItemsProcessed(state.iterations() * creations);
  state.counters["tick_max_us"] = static_cast<double>(ticks.max_ns) / 1e3;
  state.counters["ticks_over_10ms"] = static_cast<double>(ticks.over_10ms);
  state.counters["tick_max_cpu_us"] = static_cast<double>(ticks.cpu_max_ns) / 1e3;
  state.counters["ticks_over_10ms_cpu"] = static_cast<double>(ticks.cpu_over_10ms);
  state.counters["ticks_over_2ms_cpu"] = static_cast<double>(ticks.cpu_over_2ms);
  state.counters["ticks"] = static_cast<double>(ticks.ticks);
  state.counters["open_max"] = open_max;
  state.counters["creations"] = creations;
}

void BM_BurstPaced(benchmark::State& state) {
  RunBurst(state, sqloop::db::kOpenTickBudgetNsDefault, sqloop::loop::kTickBudgetDefault);
}
void BM_BurstUnpaced(benchmark::State& state) { RunBurst(state, INT64_MAX, absl::ZeroDuration()); }

// ---- Reopen -----------------------------------------------------------------------------------

// Writes `<directory>/reopen.db` with stock SQLite: table kv holding `bytes` of 4,000-byte
// blobs. Fast (no journal, no sync); the registry turns on WAL at its first open.
void FillTenant(const std::string& directory, int64_t bytes) {
  sqlite3* db = nullptr;
  SQLOOP_CHECK(sqlite3_open((directory + "/reopen.db").c_str(), &db) == SQLITE_OK, "bench: fill");
  const std::string sql = absl::StrCat(
      "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
      "CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB); "
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ",
      bytes / 4000, ") INSERT INTO kv(v) SELECT randomblob(4000) FROM c;");
  SQLOOP_CHECK(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK,
               "bench: fill the large tenant");
  sqlite3_close(db);
}

// `fill_bytes` 0: a tenant created through the registry, one empty table, on tmpfs. Otherwise
// a tenant of that size under $TMPDIR, opened once (and checked) before the timing.
void RunReopen(benchmark::State& state, bool close_between, int64_t fill_bytes = 0) {
  Scratch scratch(fill_bytes > 0 ? sqloop::bench::BenchDir().c_str() : nullptr);
  if (fill_bytes > 0) FillTenant(scratch.path(), fill_bytes);
  Host host(scratch.path(), /*open_max=*/8);
  int completed = 0;
  Counted request;
  request.name = "reopen";
  request.tenant = request.name;
  request.create_if_missing = true;
  request.kind = Request::Kind::kWrite;
  request.sql = "CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v TEXT)";
  request.Prime(&completed);
  const int64_t first_open_start = host.loop->backend().NowNs();
  SQLOOP_CHECK(host.registry->Submit(request).ok(), "bench: create");
  Host::TickTimes ticks;
  host.RunUntilTimingTicks([&] { return completed == 1; }, &ticks);
  state.counters["first_open_ms"] =
      static_cast<double>(host.loop->backend().NowNs() - first_open_start) / 1e6;
  state.counters["first_open_tick_max_ms"] = static_cast<double>(ticks.max_ns) / 1e6;
  request.kind = Request::Kind::kRead;
  request.sql = "SELECT v FROM kv WHERE k = 1";
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  for (auto _ : state) {
    if (close_between) {
      state.PauseTiming();
      host.registry->CloseIdleTenants();
      host.RunUntil([&] { return host.registry->stats().open == 0; });
      state.ResumeTiming();
    }
    const int target = completed + 1;
    SQLOOP_CHECK(host.registry->Submit(request).ok(), "bench: submit");
    host.RunUntil([&] { return completed == target; });
  }
  ReportAllocs(state, before, state.iterations());
}

void BM_ReopenClosed(benchmark::State& state) { RunReopen(state, /*close_between=*/true); }
void BM_ReopenClosedSmall(benchmark::State& state) {
  RunReopen(state, /*close_between=*/true, kSmallTenantBytes);
}
void BM_ReopenClosedLarge(benchmark::State& state) {
  RunReopen(state, /*close_between=*/true,
            sqloop::bench::QuickMode() ? kLargeTenantBytesQuick : kLargeTenantBytes);
}
void BM_ReopenOpen(benchmark::State& state) { RunReopen(state, /*close_between=*/false); }

// registry_reopen/plain: stock SQLite's reopen of the same tenant (the same table, in WAL, on
// the same tmpfs) and the same read, given what sqloop's VFS has: no mutex, the WAL kept
// across close, and its index in memory ("unix-excl", so no -shm file). Opened, queried and
// closed per iteration, the close outside the timing as in `closed`.
void BM_ReopenPlain(benchmark::State& state) {
  Scratch scratch;
  const std::string path = scratch.path() + "/plain.db";
  sqlite3* db = sqloop::bench::OpenPlain(path, nullptr, /*no_mutex=*/true);
  SQLOOP_CHECK(
      db != nullptr && sqloop::bench::Exec(db,
                                           "PRAGMA journal_mode=WAL; "
                                           "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)"),
      "bench: create the plain tenant");
  sqlite3_close(db);
  int64_t bad = 0;
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  for (auto _ : state) {
    // Not OpenPlain: its SQLITE_OPEN_CREATE opens with O_CREAT, which sqloop's reopen avoids.
    db = nullptr;
    sqlite3_stmt* stmt = nullptr;
    int keep_wal = 1;
    const bool ok =
        sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        "unix-excl") == SQLITE_OK &&
        sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &keep_wal) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = 1", -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_DONE;
    bad += ok ? 0 : 1;
    sqlite3_finalize(stmt);
    state.PauseTiming();
    sqlite3_close(db);
    state.ResumeTiming();
  }
  ReportAllocs(state, before, state.iterations());
  if (bad != 0) state.SkipWithError(absl::StrCat(bad, " plain reopens failed").c_str());
}

// registry_reopen/asleep: what the same request costs when the tenant slept instead of closing
// (Database::Sleep: no descriptor held, the connections kept). A bare Database on the same
// table, put to sleep outside the timing; each request wakes it (two opens through the loop)
// and is answered. registry_reopen/database is its like-for-like: the same Database closed
// outside the timing and opened again for each request (a reopen without the registry). With
// `empty_wal` the Database is closed and opened once first, which empties the WAL, so the wake
// leaves it closed (FileSleep invariant 5).
// Counters: waited_ops_per_op (operations the loop waited for) and sleep_descriptors, what the
// process holds on the tenant's files while it sleeps (0 is the claim).
int OpenDescriptorsOn(const std::string& prefix) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::filesystem::path target = std::filesystem::read_symlink(entry.path(), error);
    if (!error && target.string().rfind(prefix, 0) == 0) ++count;
  }
  return count;
}

void RunDatabaseReopen(benchmark::State& state, bool sleep_between, bool empty_wal = false) {
  using sqloop::db::Database;
  Scratch scratch;
  const std::string path = scratch.path() + "/reopen.db";
  Host host(scratch.path(), /*open_max=*/8);
  auto db = std::make_unique<Database>(*host.loop, *host.vfs, path);
  int completed = 0;
  struct Probe : Request {
    int* completed = nullptr;
  } request;
  request.completed = &completed;
  request.on_done = [](Request& r, absl::Status status) {
    if (!status.ok()) std::fprintf(stderr, "%s\n", status.ToString().c_str());
    SQLOOP_CHECK(status.ok(), "bench: a request to the sleeping tenant failed");
    ++*static_cast<Probe&>(r).completed;
  };
  auto open = [&] {
    bool opened = false;
    db->Open(
        [](void* arg, absl::Status s) {
          SQLOOP_CHECK(s.ok(), "bench: open");
          *static_cast<bool*>(arg) = true;
        },
        &opened);
    host.RunUntil([&] { return opened; });
  };
  auto run = [&](Request::Kind kind, const char* sql) {
    request.kind = kind;
    request.sql = sql;
    const int target = completed + 1;
    SQLOOP_CHECK(db->Submit(request).ok(), "bench: submit");
    host.RunUntil([&] { return completed == target; });
  };
  open();
  run(Request::Kind::kWrite, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)");
  if (empty_wal) {
    bool closed = false;
    db->Close(&SetTrue, &closed);
    host.RunUntil([&] { return closed; });
    db = std::make_unique<Database>(*host.loop, *host.vfs, path);
    open();
  }
  const uint64_t deferred_before = db->stats().wal_opens_deferred;
  int64_t sleep_descriptors = -1;
  const uint64_t waited_before = host.loop->stats().waited_ops;
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  for (auto _ : state) {
    state.PauseTiming();
    if (sleep_between) {
      // The descriptors' closes go through the loop: the sleep is over once they ran, and only
      // the wake and its read are timed, as a reopen times only the open and its read.
      bool slept = false;
      SQLOOP_CHECK(db->Sleep(&SetTrue, &slept).ok(), "bench: sleep");
      host.RunUntil([&] { return slept; });
      if (sleep_descriptors < 0) sleep_descriptors = OpenDescriptorsOn(path);
    } else {
      bool closed = false;
      db->Close(&SetTrue, &closed);
      host.RunUntil([&] { return closed; });
      db = std::make_unique<Database>(*host.loop, *host.vfs, path);
    }
    state.ResumeTiming();
    if (!sleep_between) open();
    run(Request::Kind::kRead, "SELECT v FROM kv WHERE k = 1");
  }
  ReportAllocs(state, before, state.iterations());
  state.counters["waited_ops_per_op"] =
      static_cast<double>(host.loop->stats().waited_ops - waited_before) /
      static_cast<double>(std::max<int64_t>(state.iterations(), 1));
  if (sleep_between) {
    state.counters["sleep_descriptors"] = static_cast<double>(sleep_descriptors);
    state.counters["wal_left_closed_per_op"] =
        static_cast<double>(db->stats().wal_opens_deferred - deferred_before) /
        static_cast<double>(std::max<int64_t>(state.iterations(), 1));
  }
  bool closed = false;
  db->Close(&SetTrue, &closed);
  host.RunUntil([&] { return closed; });
}

void BM_ReopenAsleep(benchmark::State& state) { RunDatabaseReopen(state, /*sleep_between=*/true); }
void BM_ReopenAsleepEmptyWal(benchmark::State& state) {
  RunDatabaseReopen(state, /*sleep_between=*/true, /*empty_wal=*/true);
}
void BM_ReopenDatabase(benchmark::State& state) {
  RunDatabaseReopen(state, /*sleep_between=*/false);
}

// ---- Memory -----------------------------------------------------------------------------------

int64_t ResidentBytes() {
  long pages = 0;
  long resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

// SQLite's heap in this process (the accounting allocator's count: SQLite's own is off).
int64_t LiveBytes() { return static_cast<int64_t>(sqloop::alloc::SqliteLiveBytes()); }

void BM_Memory(benchmark::State& state) {
  Scratch scratch;
  Host host(scratch.path(), /*open_max=*/kMemoryTenants + 8);
  // The heap a closed tenant leaves behind is its entry in the registry's table: live heap
  // bytes (glibc's count) before any tenant against after all are closed, with the SQLite
  // block cache emptied both times so it does not count.
  sqloop::alloc::ReleaseSqliteBlockCache();
  const size_t heap_before = mallinfo2().uordblks;
  std::vector<Counted> requests(kMemoryTenants);
  int completed = 0;
  auto run_all = [&](const char* sql, Request::Kind kind) {
    const int target = completed + kMemoryTenants;
    for (int i = 0; i < kMemoryTenants; ++i) {
      Counted& r = requests[i];
      r.name = absl::StrFormat("mem%04d", i);
      r.tenant = r.name;
      r.create_if_missing = true;
      r.kind = kind;
      r.sql = sql;
      r.Prime(&completed);
      SQLOOP_CHECK(host.registry->Submit(r).ok(), "bench: submit");
    }
    host.RunUntil([&] { return completed == target; });
  };
  // Content: kMemoryRows rows of 100 bytes each, then every tenant closed (cold).
  run_all("CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT)", Request::Kind::kWrite);
  const std::string fill =
      absl::StrCat("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ",
                   kMemoryRows, ") INSERT INTO t(v) SELECT printf('%0100d', x) FROM s");
  run_all(fill.c_str(), Request::Kind::kWrite);
  host.registry->CloseIdleTenants();
  host.RunUntil([&] { return host.registry->stats().open == 0; });
  sqloop::alloc::ReleaseSqliteBlockCache();
  const double closed_entry_heap =
      (static_cast<double>(mallinfo2().uordblks) - static_cast<double>(heap_before)) /
      kMemoryTenants;
  double idle_sqlite = 0, idle_rss = 0, active_sqlite = 0, active_rss = 0, closed_sqlite = 0;
  double trimmed_sqlite = 0;
  for (auto _ : state) {
    const int64_t sqlite_closed = LiveBytes();
    const int64_t rss_closed = ResidentBytes();
    run_all("SELECT 1", Request::Kind::kRead);  // Open, schema loaded, nothing cached.
    idle_sqlite = static_cast<double>(LiveBytes() - sqlite_closed) / kMemoryTenants;
    idle_rss = static_cast<double>(ResidentBytes() - rss_closed) / kMemoryTenants;
    run_all("SELECT sum(length(v)) FROM t", Request::Kind::kRead);  // Whole table cached.
    active_sqlite = static_cast<double>(LiveBytes() - sqlite_closed) / kMemoryTenants;
    active_rss = static_cast<double>(ResidentBytes() - rss_closed) / kMemoryTenants;
    // What idle_trim_after leaves of an active tenant once it has been idle that long.
    SQLOOP_CHECK(host.registry->TrimIdleTenants() == kMemoryTenants, "bench: trim");
    trimmed_sqlite = static_cast<double>(LiveBytes() - sqlite_closed) / kMemoryTenants;
    host.registry->CloseIdleTenants();
    host.RunUntil([&] { return host.registry->stats().open == 0; });
    closed_sqlite = static_cast<double>(LiveBytes() - sqlite_closed) / kMemoryTenants;
  }
  state.counters["idle_tenant_sqlite_bytes"] = idle_sqlite;
  state.counters["idle_tenant_rss_bytes"] = idle_rss;
  state.counters["active_tenant_sqlite_bytes"] = active_sqlite;
  state.counters["active_tenant_rss_bytes"] = active_rss;
  state.counters["closed_tenant_sqlite_bytes"] = closed_sqlite;
  state.counters["trimmed_tenant_sqlite_bytes"] = trimmed_sqlite;
  state.counters["closed_tenant_heap_bytes"] = closed_entry_heap;
}

// ---- Zipf -------------------------------------------------------------------------------------

// Ranks 0..n-1 with P(k) proportional to 1/(k+1). The CDF is built with one exact division
// and addition per rank (IEEE-754, no libm), and sampled with io::Prng (a fixed generator):
// the same seed draws the same tenants on every machine.
class Zipf {
 public:
  explicit Zipf(int n) : cdf_(static_cast<size_t>(n)) {
    double sum = 0;
    for (int k = 0; k < n; ++k) cdf_[static_cast<size_t>(k)] = sum += 1.0 / (k + 1);
    for (double& c : cdf_) c /= sum;
  }
  int Draw(sqloop::io::Prng& prng) const {
    const double u = prng.Unit();
    size_t lo = 0, hi = cdf_.size() - 1;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (cdf_[mid] < u) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return static_cast<int>(lo);
  }

 private:
  std::vector<double> cdf_;
};

std::string ZipfName(int i) { return absl::StrFormat("z%05d", i); }

// The Zipf benchmarks' tenants exist before they run (made once per process, outside the
// timing, the first `tenants` of one directory), so they measure serving, evicting and
// reopening rather than creating. The first is created through the registry and closed; the
// others are copies of the files it left, which are what its creation writes for any name (the
// files hold nothing of it). Creating 100,000 through the registry took most of a
// 100,000-tenant benchmark's process, and the time a run has for this trace is better spent on
// more processes of it (bench/report.py).
const std::string& ZipfDirectory(int tenants) {
  static Scratch scratch;  // Removed at exit.
  static int created = 0;
  if (created >= tenants) return scratch.path();
  const auto path_of = [](int i) { return absl::StrCat(scratch.path(), "/", ZipfName(i), ".db"); };
  if (created == 0) {
    Host host(scratch.path(), /*open_max=*/1);
    int completed = 0;
    Counted r;
    r.name = ZipfName(0);
    r.tenant = r.name;
    r.create_if_missing = true;
    r.Prime(&completed);
    SQLOOP_CHECK(host.registry->Submit(r).ok(), "bench: create zipf tenant");
    host.RunUntil([&] { return completed == 1; });
    created = 1;
  }  // The host's shutdown closed it.
  struct stat main_file {};
  SQLOOP_CHECK(stat(path_of(0).c_str(), &main_file) == 0 && main_file.st_size > 0,
               "bench: the first zipf tenant left no database file");
  struct stat wal {};
  const bool has_wal = stat((path_of(0) + "-wal").c_str(), &wal) == 0;
  for (; created < tenants; ++created) {
    SQLOOP_CHECK(sqloop::bench::CopyDb(path_of(0), path_of(created)), "bench: copy a zipf tenant");
    SQLOOP_CHECK(!has_wal || sqloop::bench::CopyDb(path_of(0) + "-wal", path_of(created) + "-wal"),
                 "bench: copy a zipf tenant's WAL");
  }
  return scratch.path();
}

// The descriptors this process holds.
int64_t OpenDescriptors() {
  int64_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count;
}

// Opens every tenant of `names` (a read each, `sql`, 10,000 at a time, within the registry's
// queue of waiting opens) and keeps them open. With `census`, reports what the open tenants
// hold: SQLite's bytes, the process's resident bytes and descriptors, per tenant.
void OpenAll(benchmark::State& state, Host& host, const std::vector<std::string>& names,
             bool census, const char* sql = "SELECT 1") {
  const int tenants = static_cast<int>(names.size());
  const int64_t sqlite_before = LiveBytes();
  // The heap that creating the tenants freed (the same process, ZipfDirectory) goes back to the
  // OS first: left resident, the opens would reuse it and the resident bytes would not grow.
  if (census) malloc_trim(0);
  const int64_t rss_before = ResidentBytes();
  const int64_t descriptors_before = census ? OpenDescriptors() : 0;
  sqloop::alloc::ReleaseSqliteBlockCache();
  const size_t heap_before = mallinfo2().uordblks;
  constexpr int kChunk = 10000;
  std::vector<Counted> warm(static_cast<size_t>(std::min(tenants, kChunk)));
  for (int first = 0; first < tenants; first += kChunk) {
    const int chunk = std::min(kChunk, tenants - first);
    int warmed = 0;
    for (int i = 0; i < chunk; ++i) {
      Counted& r = warm[static_cast<size_t>(i)];
      r.tenant = names[static_cast<size_t>(first + i)];
      r.kind = Request::Kind::kRead;
      r.sql = sql;
      r.Prime(&warmed);
      SQLOOP_CHECK(host.registry->Submit(r).ok(), "bench: warm up");
    }
    host.RunUntil([&] { return warmed == chunk; });
  }
  if (!census) return;
  state.PauseTiming();
  // Open or asleep: a sleeping tenant keeps its connections and schema, without descriptors.
  const sqloop::db::RegistryStats after = host.registry->stats();
  const double open = after.open + after.asleep;
  SQLOOP_CHECK(open == tenants, "bench: a tenant closed while the others opened");
  state.counters["open_tenants"] = open;
  state.counters["asleep_tenants"] = after.asleep;
  state.counters["sqlite_bytes_per_open_tenant"] =
      static_cast<double>(LiveBytes() - sqlite_before) / open;
  state.counters["rss_bytes_per_open_tenant"] =
      static_cast<double>(ResidentBytes() - rss_before) / open;
  state.counters["descriptors_per_open_tenant"] =
      static_cast<double>(OpenDescriptors() - descriptors_before) / open;
  // Once idle for idle_trim_after, a tenant keeps little more than its schema: what it holds
  // then, SQLite's bytes and the whole heap's (glibc's count of bytes in use, the SQLite
  // block cache emptied first so that it does not count).
  // Every open tenant is idle and trimmed now; so is every sleeper not trimmed yet. On a slow
  // host the idle timer may have trimmed the first tenants already, while the last ones opened.
  const uint32_t trimmed = host.registry->TrimIdleTenants();
  SQLOOP_CHECK(
      trimmed <= static_cast<uint32_t>(tenants) && host.registry->stats().trims >= after.open,
      "bench: trim");
  sqloop::alloc::ReleaseSqliteBlockCache();
  state.counters["idle_sqlite_bytes_per_open_tenant"] =
      static_cast<double>(LiveBytes() - sqlite_before) / open;
  state.counters["idle_heap_bytes_per_open_tenant"] =
      (static_cast<double>(mallinfo2().uordblks) - static_cast<double>(heap_before)) / open;
  // The process's resident bytes once glibc gave back the heap the trims freed, as a
  // long-running host's heap would be reused: the WAL indexes' pages (off the heap) included.
  malloc_trim(0);
  state.counters["idle_rss_bytes_per_open_tenant"] =
      static_cast<double>(ResidentBytes() - rss_before) / open;
  state.ResumeTiming();
}

// The timed batches of a Zipf trace, which a profiler can count alone: run under valgrind's
// callgrind with `--instr-atstart=no`, only these batches are instrumented, not the warm-up
// (docs/multitenancy.md counts a wake's cache misses so). Without valgrind's headers, or
// outside valgrind, the requests do nothing.
void ZipfTimedBatches(benchmark::State& state, absl::FunctionRef<void(int)> serve) {
#if SQLOOP_BENCH_HAS_CALLGRIND
  CALLGRIND_START_INSTRUMENTATION;
#endif
  for (auto _ : state) serve(kZipfBatch);
#if SQLOOP_BENCH_HAS_CALLGRIND
  CALLGRIND_STOP_INSTRUMENTATION;
#endif
}

void RunZipf(benchmark::State& state, int tenants, uint32_t open_max = 128,
             uint64_t memory_bytes_max = 0,
             sqloop::db::Eviction eviction = sqloop::db::Eviction::kSieve,
             uint32_t asleep_max = sqloop::db::kAsleepMaxDefault) {
  Host host(ZipfDirectory(tenants), open_max, memory_bytes_max, eviction, {}, asleep_max);
  const Zipf zipf(tenants);
  sqloop::io::Prng prng(/*seed=*/20240601);
  std::vector<std::string> names(static_cast<size_t>(tenants));
  for (int i = 0; i < tenants; ++i) names[static_cast<size_t>(i)] = ZipfName(i);
  std::vector<Counted> window(kZipfWindow);
  int completed = 0;
  int issued = 0;
  int batch_end = 0;
  constexpr const char* kTraceSql = "SELECT count(*) FROM sqlite_master";
  auto submit = [&](Counted& r) {
    r.tenant = names[static_cast<size_t>(zipf.Draw(prng))];
    r.create_if_missing = false;
    r.kind = Request::Kind::kRead;
    r.sql = kTraceSql;
    r.busy = true;
    ++issued;
    SQLOOP_CHECK(host.registry->Submit(r).ok(), "bench: submit");
  };
  // Requests are re-issued as they complete while the batch has some left.
  for (Counted& r : window) r.Prime(&completed);
  // Serves `count` more requests of the trace.
  auto serve = [&](int count) {
    batch_end += count;
    const int target = batch_end;
    for (Counted& r : window) {
      if (issued < batch_end && !r.busy) submit(r);
    }
    while (completed < target) {
      SQLOOP_CHECK(host.loop->pending() > 0, "bench: the loop went quiet with work outstanding");
      SQLOOP_CHECK(host.loop->Run(sqloop::loop::RunMode::kOnce).ok(), "bench: loop");
      for (Counted& r : window) {
        if (issued < batch_end && !r.busy) submit(r);
      }
    }
  };
  // Every tenant is used once first, untimed, with the trace's statement, and when they do not
  // all fit, the trace runs for as many requests as there are tenants: the timing sees the
  // steady state of a host that has served every tenant before (the popular ones open, the
  // evicted ones asleep or closed), not each tenant's first open, nor the first statement that
  // reads a sleeper's schema (a wake keeps the connection, its schema and its statements).
  // A first open also opens the writer, to run the integrity check, and a later one defers it;
  // those writers close when their tenant is first trimmed or closed. So every tenant is
  // trimmed, as idle_trim_after would have trimmed it on a host that has run for a while, and
  // the trace runs as long again: without that, a quarter of the connections the timing
  // closed were those writers, and opens per request had not settled yet.
  OpenAll(state, host, names, /*census=*/false, kTraceSql);
  if (static_cast<uint32_t>(tenants) > open_max) {
    serve(tenants);
    (void)host.registry->TrimIdleTenants();
    serve(tenants);
  }
  const sqloop::db::RegistryStats warm = host.registry->stats();
  const sqloop::alloc::HeapCounts before = sqloop::alloc::CurrentHeapCounts();
  ZipfTimedBatches(state, serve);
  ReportAllocs(state, before, state.iterations());
  state.SetItemsProcessed(state.iterations() * kZipfBatch);
  const sqloop::db::RegistryStats stats = host.registry->stats();
  const auto requests = static_cast<double>(stats.requests - warm.requests);
  state.counters["opens_per_request"] = static_cast<double>(stats.opens - warm.opens) / requests;
  state.counters["wakes_per_request"] = static_cast<double>(stats.wakes - warm.wakes) / requests;
}

void BM_ZipfOne(benchmark::State& state) { RunZipf(state, 1); }

// The process's anonymous memory on huge pages now (/proc/self/smaps_rollup), in bytes.
double AnonHugeBytes() {
  FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (f == nullptr) return 0;
  char line[256];
  long kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) break;
  }
  std::fclose(f);
  return static_cast<double>(kib) * 1024;
}
// A +thp variant: `Run` in a process whose glibc malloc asks for transparent huge pages, a
// setting read only at the process's start, so it must come from the environment.
template <void (*Run)(benchmark::State&)>
void OnHugePages(benchmark::State& state) {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables == nullptr || std::strstr(tunables, "glibc.malloc.hugetlb=1") == nullptr) {
    state.SkipWithError(
        "a +thp variant needs GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in its environment "
        "(bench/report.py sets it)");
    return;
  }
  Run(state);
  state.counters["anon_huge_bytes"] = AnonHugeBytes();
}
void BM_Zipf(benchmark::State& state) { RunZipf(state, ZipfTenants()); }
// Registered in main outside quick mode: creating 100,000 tenants takes most of a minute.
void BM_ZipfLarge(benchmark::State& state) { RunZipf(state, kZipfTenantsLarge); }
// Registered in main outside quick mode, as BM_ZipfLarge: creating the tenants takes a while.
// While alive, RLIMIT_NOFILE's soft limit is the descriptors `open_max` tenants need (the hard
// limit raised to it too where the process may), or as far as the hard limit allows.
class DescriptorLimitFor {
 public:
  explicit DescriptorLimitFor(uint32_t open_max) {
    SQLOOP_CHECK(getrlimit(RLIMIT_NOFILE, &saved_) == 0, "bench: getrlimit");
    const rlim_t wanted = rlim_t{open_max} * sqloop::db::kDescriptorsPerDatabase +
                          sqloop::db::kDescriptorsReservedDefault;
    raised_ = {.rlim_cur = wanted, .rlim_max = std::max(saved_.rlim_max, wanted)};
    if (setrlimit(RLIMIT_NOFILE, &raised_) != 0) {  // Not privileged: as far as the hard limit.
      raised_ = {.rlim_cur = std::min(wanted, saved_.rlim_max), .rlim_max = saved_.rlim_max};
      SQLOOP_CHECK(setrlimit(RLIMIT_NOFILE, &raised_) == 0, "bench: setrlimit");
    }
  }
  DescriptorLimitFor(const DescriptorLimitFor&) = delete;
  DescriptorLimitFor& operator=(const DescriptorLimitFor&) = delete;
  ~DescriptorLimitFor() {
    SQLOOP_CHECK(setrlimit(RLIMIT_NOFILE, &saved_) == 0, "bench: restore the descriptor limit");
  }
  // The open databases the raised limit allows, derived as the registry derives them but
  // without its kOpenMaxDerivedMax cap (db::DescriptorBoundOpenMax), which these exceed.
  [[nodiscard]] uint32_t open_max() const {
    const rlim_t reserved = sqloop::db::kDescriptorsReservedDefault;
    if (raised_.rlim_cur < reserved) return 0;
    return static_cast<uint32_t>((raised_.rlim_cur - reserved) /
                                 sqloop::db::kDescriptorsPerDatabase);
  }

 private:
  rlimit saved_{};
  rlimit raised_{};
};

void BM_OpenAll(benchmark::State& state) {
  const DescriptorLimitFor limit(kZipfTenantsLarge);
  const auto tenants = static_cast<int>(std::min<uint32_t>(limit.open_max(), kZipfTenantsLarge));
  const std::string& directory = ZipfDirectory(tenants);
  std::vector<std::string> names(static_cast<size_t>(tenants));
  for (int i = 0; i < tenants; ++i) names[static_cast<size_t>(i)] = ZipfName(i);
  std::unique_ptr<Host> host;
  for (auto _ : state) {
    host = std::make_unique<Host>(directory, static_cast<uint32_t>(tenants));
    OpenAll(state, *host, names, /*census=*/true);
  }
  host.reset();  // The shutdown that closes them is not the op.
}
void BM_ZipfLru(benchmark::State& state) {
  RunZipf(state, ZipfTenants(), 128, 0, sqloop::db::Eviction::kLru);
}
// The same trace with every evicted tenant asleep (asleep_max at least the tenants): no
// request reopens a tenant it served before.
void BM_ZipfAllAsleep(benchmark::State& state) {
  RunZipf(state, ZipfTenants(), 128, 0, sqloop::db::Eviction::kSieve, ZipfTenants());
}
// Registered in main outside quick mode, as BM_ZipfLarge.
void BM_ZipfLargeAllAsleep(benchmark::State& state) {
  RunZipf(state, kZipfTenantsLarge, 128, 0, sqloop::db::Eviction::kSieve, kZipfTenantsLarge);
}
// The same trace with sleeping off (asleep_max 0): every tenant evicted is closed, and its next
// request opens it again. What the sleepers save.
void BM_ZipfClosing(benchmark::State& state) {
  RunZipf(state, ZipfTenants(), 128, 0, sqloop::db::Eviction::kSieve, /*asleep_max=*/0);
}
// Every tenant of the Zipf directory kept at once, 100,000 of them, on open_max 1,024 (fewer if
// the hard descriptor limit is below 4,160): the rest sleep (asleep_max 100,000), holding their
// connections and no descriptor. Registered in main outside quick mode, as BM_OpenAll.
void BM_OpenAllAsleep(benchmark::State& state) {
  const std::string& directory = ZipfDirectory(kZipfTenantsLarge);
  std::vector<std::string> names(static_cast<size_t>(kZipfTenantsLarge));
  for (int i = 0; i < kZipfTenantsLarge; ++i) names[static_cast<size_t>(i)] = ZipfName(i);
  // 1,024 slots need 4,160 descriptors (a default soft limit of 1,024 allows fewer slots).
  const DescriptorLimitFor limit(1024);
  const uint32_t open_max = std::min<uint32_t>(1024, limit.open_max());
  std::unique_ptr<Host> host;
  for (auto _ : state) {
    host = std::make_unique<Host>(directory, open_max, 0, sqloop::db::Eviction::kSieve,
                                  sqloop::db::VfsOptions{}, /*asleep_max=*/kZipfTenantsLarge);
    OpenAll(state, *host, names, /*census=*/true);
  }
  host.reset();
}
void BM_BudgetNone(benchmark::State& state) { RunZipf(state, kBudgetTenants, 240); }
void BM_BudgetUnreached(benchmark::State& state) {
  RunZipf(state, kBudgetTenants, 240, /*memory_bytes_max=*/uint64_t{1} << 40);
}

BENCHMARK(BM_CreateDatabase)->Name("registry_create/database")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CreateRegistry)->Name("registry_create/registry")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BurstPaced)
    ->Name("registry_burst/paced")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BurstUnpaced)
    ->Name("registry_burst/unpaced")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReopenOpen)->Name("registry_reopen/open")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenClosed)->Name("registry_reopen/closed")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenClosedSmall)->Name("registry_reopen/closed_40kb")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenClosedLarge)->Name("registry_reopen/closed_1gb")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenPlain)->Name("registry_reopen/plain")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenDatabase)->Name("registry_reopen/database")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenAsleep)->Name("registry_reopen/asleep")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReopenAsleepEmptyWal)
    ->Name("registry_reopen/asleep_empty_wal")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Memory)->Name("registry_memory/tenants")->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ZipfOne)->Name("registry_zipf/one_tenant")->Unit(benchmark::kMillisecond);
BENCHMARK(OnHugePages<BM_ZipfOne>)
    ->Name("registry_zipf/one_tenant+thp")
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Zipf)->Name("registry_zipf/10000")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ZipfLru)->Name("registry_zipf/10000_lru")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ZipfAllAsleep)->Name("registry_zipf/10000_all_asleep")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ZipfClosing)->Name("registry_zipf/10000_closing")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BudgetNone)->Name("registry_budget/none")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BudgetUnreached)->Name("registry_budget/unreached")->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // registry_reopen/plain's SQLite runs in a scope, as the registry's does (bench/sqlite/env.h).
  const sqloop::bench::BaselineScope scope(sqloop::alloc::kSharedTenant);
  benchmark::Initialize(&argc, argv);
  if (!sqloop::bench::QuickMode()) {
    // A fixed count of batches, so that Google Benchmark's first, one-batch call (which finds
    // how many it needs) does not run the whole warm-up a second time: about as many batches
    // as half a second takes.
    benchmark::RegisterBenchmark("registry_zipf/100000", BM_ZipfLarge)
        ->Iterations(kZipfLargeBatches / 4)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("registry_zipf/100000_all_asleep", BM_ZipfLargeAllAsleep)
        ->Iterations(kZipfLargeBatches)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("registry_zipf/100000_all_asleep+thp",
                                 OnHugePages<BM_ZipfLargeAllAsleep>)
        ->Iterations(kZipfLargeBatches)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("registry_open_all/tenants", BM_OpenAll)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("registry_open_all/asleep", BM_OpenAllAsleep)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("baseline:registry_create", "database");
  benchmark::AddCustomContext("description:registry_create",
                              "one op = 64 databases created (opened, then closed or evicted)");
  benchmark::AddCustomContext("baseline:registry_burst", "unpaced");
  benchmark::AddCustomContext(
      "description:registry_burst",
      "one op = 5,000 tenants created at once at RLIMIT_NOFILE 1,024; tick_max_us is the "
      "longest tick");
  benchmark::AddCustomContext("baseline:registry_reopen", "open");
  benchmark::AddCustomContext("description:registry_reopen",
                              "one op = one point read; 'closed' reopens a scaled-to-zero tenant");
  benchmark::AddCustomContext("baseline:registry_zipf", "one_tenant");
  benchmark::AddCustomContext("baseline:registry_zipf+thp", "one_tenant+thp");
  benchmark::AddCustomContext("description:registry_zipf+thp",
                              "registry_zipf's one tenant and 100,000 sleepers with glibc's "
                              "heap on transparent huge pages (GLIBC_TUNABLES="
                              "glibc.malloc.hugetlb=1)");
  benchmark::AddCustomContext(
      "description:registry_open_all",
      "one op = every tenant opened at once and kept open: as many as RLIMIT_NOFILE allows, "
      "at most 100,000 (open_tenants says how many); 'asleep' keeps 100,000 on 1,024 slots, "
      "the rest asleep");
  benchmark::AddCustomContext("baseline:registry_budget", "none");
  benchmark::AddCustomContext("description:registry_budget",
                              "one op = 256 reads, 64 in flight, over 200 open tenants; "
                              "'unreached' has a memory budget it never reaches");
  benchmark::AddCustomContext("description:registry_zipf",
                              "one op = 256 reads, 64 in flight, over Zipf(1)-drawn tenants, "
                              "open_max 128 (SIEVE; evicted tenants sleep, up to asleep_max: "
                              "4,096 by default, every tenant in *_all_asleep, none in "
                              "*_closing)");
  // A memory benchmark: the report plots bytes per tenant, not the time the measurement took.
  benchmark::AddCustomContext("metric:registry_memory", "active_tenant_rss_bytes");
  benchmark::AddCustomContext("description:registry_memory",
                              "memory per tenant: SQLite's and the process's resident bytes for "
                              "an idle (open, schema loaded), an active (table cached) and a "
                              "closed tenant");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
