// bench/sqlite/env.h
// -----------------------------------------------------------------------------
//
// What every benchmark of sqloop_bench_sqlite shares:
//   * the scratch directory on disk (under $TMPDIR or /tmp, removed at exit) and the databases
//     in it: the 100,000-row table the point reads hit, created once per process
//     (BuildReadTable makes tables of its shape and other sizes);
//   * a fixed, seeded generator (splitmix64) for keys and the read/write mix, so every variant
//     runs the same sequence of operations;
//   * `SqloopEnv`: a loop on io_uring (or the fallback, which it says), a Vfs and an open
//     Database, opened and closed by running the loop;
//   * plain-SQLite helpers and latency percentiles.
//
// Example:
//
//   SqloopEnv env;
//   if (absl::Status s = env.Open(ReadDbPath(), {}); !s.ok()) state.SkipWithError(...);
//   ... env.db().Submit(request); env.RunUntil(done); ...
//   absl::Status closed = env.Close();
#ifndef SQLOOP_BENCH_SQLITE_ENV_H_
#define SQLOOP_BENCH_SQLITE_ENV_H_

#include <sqlite3.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "benchmark/benchmark.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/database.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::bench {

// Every thread that runs a baseline's SQLite holds one for its whole life, as sqloop's own
// SQLite work runs inside its databases' pumps' scopes: the process installs sqloop's SQLite
// allocator for every variant, and a scope defers its statistics (alloc/sqlite_memory.h,
// invariant 6), so without one a baseline would pay more for the same accounting than sqloop.
using BaselineScope = alloc::ScopedTenant;

// Rows in the point-read table: at about 50 bytes a row the table is ~5 MB, larger than
// SQLite's default page cache (2 MB), so the default configuration really reads pages from the
// file (the OS page cache) while plain_best's large cache and mmap do not.
inline constexpr int64_t kReadRows = 100'000;
// Text column of each row: 32 hex characters derived from the row id.
inline constexpr size_t kTextBytes = 32;

inline constexpr const char* kPointSelect = "SELECT v, s FROM t WHERE id = ?";
inline constexpr const char* kInsert = "INSERT INTO w(writer, seq, payload) VALUES (?, ?, ?)";
inline constexpr const char* kCreateWriteTable =
    "CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, payload TEXT NOT NULL)";
// 64 bytes: a small row, as in a key-value or event-log workload.
inline constexpr absl::string_view kPayload =
    "sqloop-bench-payload-0123456789abcdef0123456789abcdef0123456789ab";

// The mixed workload (sqlite_mixed): one write in kWriteOneIn operations, and client i draws
// its operations from Prng{kMixedSeedBase + i}, in sqloop and in every plain baseline alike.
inline constexpr uint64_t kWriteOneIn = 10;
inline constexpr uint64_t kMixedSeedBase = 1000;

// splitmix64: a fixed, versioned generator, so every variant sees the same keys.
struct Prng {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // A row id of the read table, uniform in [1, kReadRows].
  int64_t NextRowId() { return 1 + static_cast<int64_t>(Next() % kReadRows); }
  // A gap between arrivals of a Poisson process whose mean gap is `mean_ns`: exponential.
  int64_t NextGapNs(double mean_ns) {
    const double uniform = static_cast<double>(Next() >> 11) * 0x1.0p-53;
    return static_cast<int64_t>(-mean_ns * std::log1p(-uniform));
  }
};

// The mixed workload's draw: true for a write (one in kWriteOneIn).
[[nodiscard]] inline bool IsWrite(Prng& ops) { return ops.Next() % kWriteOneIn == 0; }

// The values stored in row `id` of the read table; readers check what they got against them.
[[nodiscard]] int64_t ExpectedValue(int64_t id);
[[nodiscard]] bool TextMatches(int64_t id, absl::string_view text);

// The scratch directory (created on first use, removed with its files at exit).
[[nodiscard]] const std::string& BenchDir();
// The read table's database (WAL mode, checkpointed, page cache warmed); built once.
[[nodiscard]] const std::string& ReadDbPath();
// Creates `path` holding the read table's shape with rows 1..`rows` (the values
// ExpectedValue and TextMatches check), in WAL mode and checkpointed into the main file, so no
// -wal is left; aborts on error. ReadDbPath's table is one of kReadRows rows.
void BuildReadTable(const std::string& path, int64_t rows);
// A fresh path in BenchDir() (no file yet): "<dir>/<stem>-<n>.db".
[[nodiscard]] std::string FreshDbPath(absl::string_view stem);
// Copies a checkpointed database file (no -wal) to `to`; false on error.
[[nodiscard]] bool CopyDb(const std::string& from, const std::string& to);
// Removes a database and its -wal, -shm and -journal files.
void RemoveDb(const std::string& path);

// Plain SQLite.
[[nodiscard]] sqlite3* OpenPlain(const std::string& path, const char* vfs, bool no_mutex);
[[nodiscard]] bool Exec(sqlite3* db, const char* sql);
// Steps the prepared kPointSelect for row `id` and resets it: true if it returned exactly that
// row with the values it was built with.
[[nodiscard]] bool StepPointRead(sqlite3_stmt* select, int64_t id);
// `SELECT <one integer>`, or -1 on error.
[[nodiscard]] int64_t QueryInt(sqlite3* db, const char* sql);

// Reads the write table `w` back with plain SQLite: exactly `rows` rows whose seq values sum
// to `seq_sum` (what the benchmark saw acknowledged).
[[nodiscard]] absl::Status VerifyWrites(const std::string& path, uint64_t rows, int64_t seq_sum);

[[nodiscard]] int64_t MonotonicNs();
// The CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID: a system call, unlike
// MonotonicNs), to tell a long tick's own work from time the machine took.
[[nodiscard]] int64_t ThreadCpuNs();
// Pages the connection's cache missed so far (SQLITE_DBSTATUS_CACHE_MISS).
[[nodiscard]] int64_t CacheMisses(sqlite3* db);
// Whether SQLOOP_BENCH_QUICK asks for a short run (CI): set, and neither empty nor "0".
[[nodiscard]] bool QuickMode();

// Latencies in nanoseconds; reserve before the timed region so recording never allocates
// (Add drops samples beyond the reserved capacity rather than grow).
class Latencies {
 public:
  void Reserve(size_t n) { samples_ns_.reserve(n); }
  void Add(int64_t ns) {
    if (samples_ns_.size() < samples_ns_.capacity()) samples_ns_.push_back(ns);
  }
  [[nodiscard]] size_t size() const { return samples_ns_.size(); }
  // The q-quantile (0 <= q <= 1; 1 is the maximum) in microseconds. Sorts on first use after
  // an Add, so call it after the timed region. 0 without samples.
  [[nodiscard]] double QuantileUs(double q);

 private:
  std::vector<int64_t> samples_ns_;
  bool sorted_ = false;
};

// Sets the latency counters bench/report.py puts in its latency table: "<prefix>p50_us",
// p90_us, p99_us, p99_9_us and max_us (prefix "" or e.g. "read_").
void SetLatencyCounters(benchmark::State& state, absl::string_view prefix, Latencies& latencies);

// One named latency distribution, for WriteLatencyFile.
struct LatencySeries {
  const char* name;  // "write", "read": one word.
  Latencies* latencies;
};

// If the environment variable SQLOOP_BENCH_LATENCY_FILE names a file (bench/report.py sets
// it), overwrites it with the distributions for the report's CDF plot: one line
// "<series> <quantile> <microseconds>" per point, about 40 points per series, denser in the
// tail. Call after the timed region; each call of the benchmark function overwrites the file,
// so the measured (last) call's distribution remains.
void WriteLatencyFile(std::initializer_list<LatencySeries> series);

// A loop, a Vfs and one Database on them.
class SqloopEnv {
 public:
  SqloopEnv();
  ~SqloopEnv();
  SqloopEnv(const SqloopEnv&) = delete;
  SqloopEnv& operator=(const SqloopEnv&) = delete;

  // Creates the loop (io_uring, or the fallback if the ring cannot be set up) and the Vfs, and
  // opens the database, running the loop until Open called back.
  [[nodiscard]] absl::Status Open(const std::string& path, db::DatabaseOptions options,
                                  db::VfsOptions vfs_options = {},
                                  loop::LoopOptions loop_options = {});
  // Closes the database (running the loop until Close called back).
  [[nodiscard]] absl::Status Close();
  // Runs one write request (e.g. CREATE TABLE) to its acknowledgement.
  [[nodiscard]] absl::Status Execute(absl::string_view sql);
  // Runs the loop once (kOnce); an error if nothing is pending, which would sleep forever.
  [[nodiscard]] absl::Status RunOnce();
  // Runs the loop one tick at a time until `flag` is true or the loop failed.
  [[nodiscard]] absl::Status RunUntil(const bool& flag);

  [[nodiscard]] loop::Loop& loop() { return *loop_; }
  [[nodiscard]] db::Vfs& vfs() { return *vfs_; }
  [[nodiscard]] db::Database& db() { return *db_; }
  // "io_uring" or "fallback".
  [[nodiscard]] std::string backend_name() const;

 private:
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<db::Vfs> vfs_;
  std::unique_ptr<db::Database> db_;
};

// Labels the run with the backend ("backend=io_uring") and records it in the context once.
void LabelBackend(benchmark::State& state, const std::string& backend);

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_ENV_H_
