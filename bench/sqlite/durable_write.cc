// sqlite_write: durable single-row INSERTs (a 64-byte payload) into a fresh database file on
// the real disk under the scratch directory. One iteration = one acknowledged durable commit,
// so time/op is the inverse of the throughput and the ratio to plain_full is directly the
// throughput ratio.
//
//   plain_full     plain SQLite, WAL, synchronous=FULL, one transaction per INSERT (autocommit),
//                  on a counting wrapper of the default unix VFS (bench/sqlite/counting_vfs.h);
//                  latency = the sqlite3_step of the INSERT. The baseline.
//   plain_full_default_vfs  the same on SQLite's own default VFS, no wrapper: shows what the
//                  wrapper costs (no fsyncs_per_commit counter, nothing counts them).
//   pool/T         plain SQLite behind a pool of T threads (bench/sqlite/pool.cc).
//   sqloop/N       N concurrent writers (closed loop: each writer has exactly one INSERT in
//                  flight and submits its next one from the acknowledgement of the previous),
//                  so sqloop's group commit batches what arrives while an fsync is in flight.
//                  Latency = from Submit to the durable acknowledgement (on_done).
//   sqloop_malloc/N  sqloop/N with the SQLite allocator's block cache off, so every block
//                  SQLite allocates per request (savepoint, bit vector...) comes from malloc.
//
// Counters: allocs_per_op; commits_per_s (acknowledged commits / wall time of the timed
// region); p50_us, p90_us, p99_us, p99_9_us, max_us (latency per commit, also written for the
// report's CDF, see WriteLatencyFile); fsyncs_per_commit (plain: xSync calls, each one
// fdatasync; sqloop: VfsStats::fsyncs, fsync operations the VFS submitted, files and
// directory); commits_per_group (sqloop). Checks: every write acknowledged exactly once and OK,
// and the file read back with plain SQLite afterwards holds exactly the acknowledged rows.
#include <sqlite3.h>

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/counting_vfs.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

// Room for latencies beyond max_iterations: the writers still in flight when the timed region
// ends are acknowledged while draining (and not recorded).
constexpr size_t kLatencySlack = 1024;

// ---- sqloop writers ---------------------------------------------------------------------------

struct WriteRun;

struct Writer {
  db::Request request;
  WriteRun* run = nullptr;
  int64_t submitted_ns = 0;
  bool in_flight = false;
};

struct WriteRun {
  db::Database* db = nullptr;
  Latencies latencies;
  uint64_t acked = 0;
  int64_t seq_sum = 0;  // Of acknowledged writes.
  uint64_t failures = 0;
  absl::Status first_failure;
  bool stop = false;  // Set when the timed region ended: writers stop resubmitting.
  uint64_t in_flight = 0;
};

void Fail(WriteRun& run, absl::Status status) {
  if (run.failures++ == 0) run.first_failure = std::move(status);
}

void SubmitNext(Writer& w) {
  ++w.request.params[1].int_value;  // seq: 1, 2, 3, ... per writer.
  w.submitted_ns = MonotonicNs();
  w.in_flight = true;
  ++w.run->in_flight;
  if (absl::Status admitted = w.run->db->Submit(w.request); !admitted.ok()) {
    w.in_flight = false;
    --w.run->in_flight;
    Fail(*w.run, std::move(admitted));
  }
}

void OnWriteDone(db::Request& r, absl::Status status) {
  auto& w = *static_cast<Writer*>(r.user_data);
  WriteRun& run = *w.run;
  if (!w.in_flight) {
    Fail(run, absl::InternalError("a write was acknowledged twice"));
    return;
  }
  w.in_flight = false;
  --run.in_flight;
  if (!status.ok() || r.changes != 1) {
    Fail(run, status.ok() ? absl::InternalError("an INSERT changed != 1 row") : std::move(status));
    return;
  }
  ++run.acked;
  run.seq_sum += r.params[1].int_value;
  if (run.stop) return;
  run.latencies.Add(MonotonicNs() - w.submitted_ns);
  SubmitNext(w);
}

}  // namespace

void SetWriteCounters(benchmark::State& state, alloc::HeapCounts before, uint64_t commits,
                      int64_t elapsed_ns, Latencies& latencies, int64_t fsyncs) {
  const auto ops = static_cast<double>(state.iterations());
  state.counters["allocs_per_op"] =
      static_cast<double>(alloc::CurrentHeapCounts().allocations - before.allocations) / ops;
  state.counters["commits_per_s"] =
      static_cast<double>(commits) / (static_cast<double>(elapsed_ns) / 1e9);
  SetLatencyCounters(state, "", latencies);
  WriteLatencyFile({{"write", &latencies}});
  if (fsyncs >= 0) {
    state.counters["fsyncs_per_commit"] =
        static_cast<double>(fsyncs) / static_cast<double>(commits == 0 ? 1 : commits);
  }
}

void PlainFullWrite(benchmark::State& state, PlainVfs plain_vfs) {
  const std::string path = FreshDbPath("plain-full");
  CountingVfs& vfs = CountingVfs::Get();
  const bool counting = plain_vfs == PlainVfs::kCounting;
  sqlite3* db = OpenPlain(path, counting ? vfs.name() : nullptr, /*no_mutex=*/false);
  sqlite3_stmt* insert = nullptr;
  if (db == nullptr || !Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") ||
      !Exec(db, kCreateWriteTable) ||
      sqlite3_prepare_v3(db, kInsert, -1, SQLITE_PREPARE_PERSISTENT, &insert, nullptr) !=
          SQLITE_OK) {
    state.SkipWithError("plain SQLite setup failed");
    sqlite3_close_v2(db);
    return;
  }
  sqlite3_bind_int64(insert, 1, 0);
  sqlite3_bind_text(insert, 3, kPayload.data(), static_cast<int>(kPayload.size()), SQLITE_STATIC);
  Latencies latencies;
  latencies.Reserve(static_cast<size_t>(state.max_iterations));
  int64_t seq = 0;
  int64_t seq_sum = 0;
  uint64_t failures = 0;
  const uint64_t syncs_before = vfs.syncs();
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (auto _ : state) {
    const int64_t submitted_ns = MonotonicNs();
    sqlite3_bind_int64(insert, 2, ++seq);
    const int rc = sqlite3_step(insert);
    sqlite3_reset(insert);
    latencies.Add(MonotonicNs() - submitted_ns);
    if (rc == SQLITE_DONE) {
      seq_sum += seq;
    } else {
      ++failures;
    }
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  const auto commits = static_cast<uint64_t>(state.iterations()) - failures;
  SetWriteCounters(state, before, commits, elapsed_ns, latencies,
                   counting ? static_cast<int64_t>(vfs.syncs() - syncs_before) : -1);
  sqlite3_finalize(insert);
  sqlite3_close_v2(db);
  absl::Status verified = failures == 0 ? VerifyWrites(path, commits, seq_sum)
                                        : absl::InternalError(absl::StrCat(failures, " failed"));
  RemoveDb(path);
  if (!verified.ok()) state.SkipWithError(verified.ToString().c_str());
}

void SqloopWrite(benchmark::State& state) {
  const auto writer_count = static_cast<size_t>(state.range(0));
  const std::string path = FreshDbPath("sqloop-write");
  SqloopEnv env;
  absl::Status status = env.Open(path, db::DatabaseOptions{});
  if (status.ok()) status = env.Execute(kCreateWriteTable);
  if (!status.ok()) {
    state.SkipWithError(absl::StrCat("sqloop setup failed: ", status.ToString()).c_str());
    return;
  }
  LabelBackend(state, env.backend_name());
  WriteRun run;
  run.db = &env.db();
  run.latencies.Reserve(static_cast<size_t>(state.max_iterations) + kLatencySlack);
  auto writers = std::make_unique<Writer[]>(writer_count);
  for (size_t i = 0; i < writer_count; ++i) {
    Writer& w = writers[i];
    w.run = &run;
    w.request.kind = db::Request::Kind::kWrite;
    w.request.sql = kInsert;
    w.request.params = {db::Value::Int(static_cast<int64_t>(i)), db::Value::Int(0),
                        db::Value::Text(kPayload)};
    w.request.user_data = &w;
    w.request.on_done = &OnWriteDone;
  }
  const uint64_t fsyncs_before = env.vfs().stats().fsyncs;
  const uint64_t groups_before = env.db().stats().groups;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (size_t i = 0; i < writer_count; ++i) SubmitNext(writers[i]);
  uint64_t target = 0;
  for (auto _ : state) {
    ++target;  // One more acknowledged commit per iteration (a group acknowledges many at once).
    while (run.acked < target && run.failures == 0) {
      if (absl::Status s = env.RunOnce(); !s.ok()) Fail(run, s);
    }
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  const uint64_t commits = run.acked;
  const uint64_t fsyncs = env.vfs().stats().fsyncs - fsyncs_before;
  const uint64_t groups = env.db().stats().groups - groups_before;
  SetWriteCounters(state, before, commits, elapsed_ns, run.latencies, static_cast<int64_t>(fsyncs));
  state.counters["commits_per_group"] =
      static_cast<double>(commits) / static_cast<double>(groups == 0 ? 1 : groups);
  run.stop = true;  // Drain: the writers in flight are acknowledged, none resubmits.
  while (run.in_flight > 0 && run.failures == 0) {
    if (absl::Status s = env.RunOnce(); !s.ok()) Fail(run, s);
  }
  if (absl::Status closed = env.Close(); !closed.ok()) Fail(run, closed);
  if (run.failures == 0) {
    if (absl::Status verified = VerifyWrites(path, run.acked, run.seq_sum); !verified.ok()) {
      Fail(run, verified);
    }
  }
  RemoveDb(path);
  if (run.failures != 0) {
    state.SkipWithError(
        absl::StrCat(run.failures, " failure(s), first: ", run.first_failure.ToString()).c_str());
  }
}

}  // namespace sqloop::bench
