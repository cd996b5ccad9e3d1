// sqlite_read: one point SELECT by rowid (a prepared statement, one row of ~50 bytes) per
// iteration, on the 100,000-row table of ReadDbPath(), keys from the same seeded sequence in
// every variant. Each read is checked against the value the row was built with.
//
//   plain_default  plain SQLite, default unix VFS, serialized threading mode (Debian's
//                  default), WAL, autocommit, default cache (2 MB); the baseline
//   plain_in_txn   plain_default's statement stepped inside one long read transaction (BEGIN
//                  before the timed region, COMMIT after): no lock taken or released per read,
//                  SQLite's floor for a warm point read
//   plain_best     plain SQLite tuned for this: WAL, synchronous=NORMAL, 256 MiB mmap, a
//                  256 MiB cache, locking_mode=EXCLUSIVE (sqloop's VFS owns its file too), no
//                  mutexes (SQLITE_OPEN_NOMUTEX: one thread), the statement reused
//   sqloop         a caller-owned db::Request submitted to db::Database, completion by
//                  callback (the state machine); the loop is run until on_done ran
//   sqloop_coro    the same through a coroutine: co_await Query(...) (bench/sqlite/coro.h)
//
// Before the timed region every variant scans the table once (so the caches are as warm as
// each configuration allows). Counters: allocs_per_op (every malloc and operator new of the
// process, SQLite's included), file_reads_per_op (pages SQLite read from the file: cache
// misses for plain SQLite, VfsStats::reads for sqloop), enters_per_op (io_uring_enter calls).
#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/coro.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

constexpr uint64_t kKeySeed = 42;
constexpr const char* kScan = "SELECT count(s) FROM t";

// What a read saw; filled by the row callback, `check` (CheckRow unless set).
struct ReadResult {
  int64_t id = 0;
  int rows = 0;
  bool values_ok = false;
  bool done = false;
  absl::Status status;
  void (*check)(void* ctx, const db::Row& row) = nullptr;
};

void CheckRow(void* ctx, const db::Row& row) {
  auto* result = static_cast<ReadResult*>(ctx);
  ++result->rows;
  result->values_ok =
      row.Int(0) == ExpectedValue(result->id) && TextMatches(result->id, row.Text(1));
}

bool ReadOk(const ReadResult& r) { return r.status.ok() && r.rows == 1 && r.values_ok; }

void SetCounters(benchmark::State& state, alloc::HeapCounts before, uint64_t file_reads,
                 uint64_t enters) {
  const auto ops = static_cast<double>(state.iterations());
  state.counters["allocs_per_op"] =
      static_cast<double>(alloc::CurrentHeapCounts().allocations - before.allocations) / ops;
  state.counters["file_reads_per_op"] = static_cast<double>(file_reads) / ops;
  state.counters["enters_per_op"] = static_cast<double>(enters) / ops;
}

// ---- sqloop: scanning through a request (warm-up) ---------------------------------------------

struct ScanResult {
  int64_t count = -1;
  bool done = false;
  absl::Status status;
};

absl::Status ScanThroughSqloop(SqloopEnv& env) {
  ScanResult result;
  db::Request scan;
  scan.kind = db::Request::Kind::kRead;
  scan.sql = kScan;
  scan.user_data = &result;
  scan.on_row = [](db::Request& r, const db::Row& row) {
    static_cast<ScanResult*>(r.user_data)->count = row.Int(0);
  };
  scan.on_done = [](db::Request& r, absl::Status status) {
    auto* out = static_cast<ScanResult*>(r.user_data);
    out->status = std::move(status);
    out->done = true;
  };
  if (absl::Status s = env.db().Submit(scan); !s.ok()) return s;
  if (absl::Status s = env.RunUntil(result.done); !s.ok()) return s;
  if (!result.status.ok()) return result.status;
  if (result.count != kReadRows) return absl::InternalError("the warm-up scan counted wrong");
  return absl::OkStatus();
}

absl::Status PointReadThroughSqloop(SqloopEnv& env) {
  ReadResult result;
  result.id = 1;
  db::Request read;
  read.kind = db::Request::Kind::kRead;
  read.sql = kPointSelect;
  read.params.push_back(db::Value::Int(result.id));
  read.user_data = &result;
  read.on_row = [](db::Request& r, const db::Row& row) { CheckRow(r.user_data, row); };
  read.on_done = [](db::Request& r, absl::Status status) {
    auto* out = static_cast<ReadResult*>(r.user_data);
    out->status = std::move(status);
    out->done = true;
  };
  if (absl::Status s = env.db().Submit(read); !s.ok()) return s;
  if (absl::Status s = env.RunUntil(result.done); !s.ok()) return s;
  return ReadOk(result) ? absl::OkStatus() : absl::InternalError("the warm-up read was wrong");
}

bool OpenSqloop(benchmark::State& state, SqloopEnv& env) {
  absl::Status status = env.Open(ReadDbPath(), db::DatabaseOptions{});
  if (status.ok()) status = ScanThroughSqloop(env);
  // One point read, so the reader has prepared (and cached) the statement before the timing.
  if (status.ok()) status = PointReadThroughSqloop(env);
  if (!status.ok()) {
    state.SkipWithError(absl::StrCat("sqloop open/warm-up failed: ", status.ToString()).c_str());
    return false;
  }
  LabelBackend(state, env.backend_name());
  return true;
}

// ---- the coroutine client ---------------------------------------------------------------------

Task CoroReader(db::Database& db, Prng& keys, ReadResult& result) {
  for (;;) {
    result.id = keys.NextRowId();
    result.rows = 0;
    result.values_ok = false;
    result.status = co_await Query(db, db::Request::Kind::kRead, kPointSelect,
                                   db::Value::Int(result.id), &CheckRow, &result);
    result.done = true;
    co_await Parked{};  // Until the benchmark's next iteration resumes us.
  }
}

}  // namespace

void PlainRead(benchmark::State& state, PlainReadConfig config) {
  const bool best = config == PlainReadConfig::kBest;
  const bool in_txn = config == PlainReadConfig::kInTxn;
  sqlite3* db = OpenPlain(ReadDbPath(), nullptr, /*no_mutex=*/best);
  const char* setup = best ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                             "PRAGMA mmap_size=268435456; PRAGMA cache_size=-262144; "
                             "PRAGMA locking_mode=EXCLUSIVE;"
                           : "PRAGMA journal_mode=WAL;";
  sqlite3_stmt* stmt = nullptr;
  if (db == nullptr || !Exec(db, setup) || QueryInt(db, kScan) != kReadRows ||
      sqlite3_prepare_v3(db, kPointSelect, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
          SQLITE_OK) {
    state.SkipWithError("plain SQLite setup failed");
    sqlite3_close_v2(db);
    return;
  }
  if (in_txn && !Exec(db, "BEGIN")) {
    state.SkipWithError("plain SQLite: BEGIN failed");
    sqlite3_finalize(stmt);
    sqlite3_close_v2(db);
    return;
  }
  Prng keys{kKeySeed};
  uint64_t bad = 0;
  const int64_t misses_before = CacheMisses(db);
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  for (auto _ : state) {
    const int64_t id = keys.NextRowId();
    sqlite3_bind_int64(stmt, 1, id);
    int rows = 0;
    bool values_ok = false;
    int rc = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      ++rows;
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1));
      values_ok = sqlite3_column_int64(stmt, 0) == ExpectedValue(id) &&
                  TextMatches(id, absl::string_view(text, sqlite3_column_bytes(stmt, 1)));
    }
    sqlite3_reset(stmt);
    bad += (rc != SQLITE_DONE || rows != 1 || !values_ok) ? 1 : 0;
  }
  SetCounters(state, before, static_cast<uint64_t>(CacheMisses(db) - misses_before), 0);
  if (in_txn && !Exec(db, "COMMIT")) ++bad;
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
  if (bad != 0) state.SkipWithError(absl::StrCat(bad, " reads returned wrong rows").c_str());
}

namespace {

// One request per iteration through `env`'s Database: `sql` with the iteration's key as its one
// parameter, each row checked by `check`; `what` names the requests in the error. Shared by
// sqlite_read/sqloop and sqlite_request/sqloop.
void TimeSqloopRequests(benchmark::State& state, SqloopEnv& env, const char* sql,
                        void (*check)(void* ctx, const db::Row& row), const char* what) {
  ReadResult result;
  result.check = check;
  db::Request read;
  read.kind = db::Request::Kind::kRead;
  read.sql = sql;
  read.params.push_back(db::Value::Int(0));
  read.user_data = &result;
  read.on_row = [](db::Request& r, const db::Row& row) {
    static_cast<ReadResult*>(r.user_data)->check(r.user_data, row);
  };
  read.on_done = [](db::Request& r, absl::Status status) {
    auto* out = static_cast<ReadResult*>(r.user_data);
    out->status = std::move(status);
    out->done = true;
  };
  Prng keys{kKeySeed};
  uint64_t bad = 0;
  const uint64_t reads_before = env.vfs().stats().reads;
  const uint64_t enters_before = env.loop().backend().stats().enter_calls;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  for (auto _ : state) {
    result.id = keys.NextRowId();
    result.rows = 0;
    result.done = false;
    read.params[0].int_value = result.id;
    absl::Status admitted = env.db().Submit(read);
    if (admitted.ok()) admitted = env.RunUntil(result.done);
    if (!admitted.ok()) result.status = admitted;
    bad += ReadOk(result) ? 0 : 1;
  }
  SetCounters(state, before, env.vfs().stats().reads - reads_before,
              env.loop().backend().stats().enter_calls - enters_before);
  if (absl::Status closed = env.Close(); !closed.ok()) {
    state.SkipWithError(absl::StrCat("close: ", closed.ToString()).c_str());
  }
  if (bad != 0) state.SkipWithError(absl::StrCat(bad, " ", what, " failed or were wrong").c_str());
}

}  // namespace

void SqloopRead(benchmark::State& state) {
  SqloopEnv env;
  if (!OpenSqloop(state, env)) return;
  TimeSqloopRequests(state, env, kPointSelect, &CheckRow, "reads");
}

void SqloopCoroRead(benchmark::State& state) {
  SqloopEnv env;
  if (!OpenSqloop(state, env)) return;
  Prng keys{kKeySeed};
  ReadResult result;
  uint64_t bad = 0;
  {
    Task reader = CoroReader(env.db(), keys, result);  // Frame made here, outside the timing.
    const uint64_t reads_before = env.vfs().stats().reads;
    const uint64_t enters_before = env.loop().backend().stats().enter_calls;
    const alloc::HeapCounts before = alloc::CurrentHeapCounts();
    for (auto _ : state) {
      result.done = false;
      reader.handle.resume();  // Submits one read and suspends until on_done resumes it.
      if (absl::Status run = env.RunUntil(result.done); !run.ok()) result.status = run;
      bad += ReadOk(result) ? 0 : 1;
    }
    SetCounters(state, before, env.vfs().stats().reads - reads_before,
                env.loop().backend().stats().enter_calls - enters_before);
  }  // The reader is parked (no request in flight), so destroying it is safe.
  if (absl::Status closed = env.Close(); !closed.ok()) {
    state.SkipWithError(absl::StrCat("close: ", closed.ToString()).c_str());
  }
  if (bad != 0) state.SkipWithError(absl::StrCat(bad, " reads failed or were wrong").c_str());
}

}  // namespace sqloop::bench

// ---- sqlite_request: what a request costs beyond SQLite's own work --------------------------

namespace sqloop::bench {
namespace {

// Touches no table, so what SQLite does per iteration is bind, one step and reset.
constexpr const char* kTrivialSelect = "SELECT ?1";

void CheckEcho(void* ctx, const db::Row& row) {
  auto* result = static_cast<ReadResult*>(ctx);
  ++result->rows;
  result->values_ok = row.Int(0) == result->id;
}

}  // namespace

void PlainRequest(benchmark::State& state) {
  // No mutex: sqloop's connections have none either (a connection stays on its loop's thread).
  sqlite3* db = OpenPlain(ReadDbPath(), nullptr, /*no_mutex=*/true);
  sqlite3_stmt* stmt = nullptr;
  if (db == nullptr || sqlite3_prepare_v3(db, kTrivialSelect, -1, SQLITE_PREPARE_PERSISTENT, &stmt,
                                          nullptr) != SQLITE_OK) {
    state.SkipWithError("plain SQLite setup failed");
    sqlite3_close_v2(db);
    return;
  }
  Prng keys{kKeySeed};
  uint64_t bad = 0;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  for (auto _ : state) {
    const int64_t id = keys.NextRowId();
    sqlite3_bind_int64(stmt, 1, id);
    const bool ok = sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int64(stmt, 0) == id &&
                    sqlite3_step(stmt) == SQLITE_DONE;
    sqlite3_reset(stmt);
    bad += ok ? 0 : 1;
  }
  SetCounters(state, before, 0, 0);
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
  if (bad != 0) state.SkipWithError(absl::StrCat(bad, " requests were answered wrong").c_str());
}

void SqloopRequest(benchmark::State& state) {
  SqloopEnv env;
  if (!OpenSqloop(state, env)) return;
  TimeSqloopRequests(state, env, kTrivialSelect, &CheckEcho, "requests");
}

}  // namespace sqloop::bench
