// sqlite_mixed: 90% point reads / 10% durable single-row INSERTs. One iteration = one
// completed operation. The database is a fresh copy of the 100,000-row read table (page cache
// warm: the copy was just written) plus the write table `w`; reads hit `t`, writes append to
// `w`. The operation kind and key come from a seeded generator per client.
//
//   plain_full   plain SQLite doing the same operations one after another: one connection on
//                the counting wrapper of the default unix VFS, WAL, synchronous=FULL, default
//                cache, each INSERT its own transaction. The baseline.
//   plain_full_default_vfs  the same on SQLite's own default VFS: what the wrapper costs.
//   sqloop/N     N concurrent clients (closed loop: each has one operation in flight and starts
//                its next one from the completion of the previous). Writes are group-committed;
//                reads run on the newest durable snapshot and never wait for an fsync. sqloop/1
//                is like plain_full, one operation at a time, so its latencies compare with the
//                baseline's like for like; with N clients an operation's latency also holds the
//                time it waits behind the other N - 1 on the one loop (Little's law: latency is
//                about N times the time per operation), which no single-client run pays.
//   sqloop_paced/N  N clients whose operations arrive at an offered rate (kPacedOpsPerSecond
//                in all, exponential gaps, seeded) instead of back to back: the latency of a
//                loop that is busy but not saturated. A client's reads and writes are two
//                lanes, each its own Poisson stream, as in plain_paced no read waits behind a
//                write. An operation that arrives while its lane's previous one is still in
//                flight starts when that one ends, and its latency counts from its arrival (no
//                coordinated omission).
//   sqloop_paced_no_reserve/N  the same without the reserves (VfsOptions::wal_reserve_bytes
//                0): the writes that grow the WAL or the main file run at once, with the loop
//                waiting for each.
//   sqloop_paced_poll/N  the same with the loop polling for kPacedPoll before it blocks
//                (LoopOptions::poll_before_wait), so an arrival's timer costs no wake-up.
//   plain_paced  sqloop_paced's arrivals served by plain SQLite on two threads: reads on the
//                benchmark's thread, writes group-committed on a second one (see below). The
//                reader spins for the last moments before each arrival, so it pays no wake-up:
//                the pair of sqloop_paced_poll.
//   idle_paced   the same with reads that do nothing: the machine's own lateness.
//   plain_paced_sleep, idle_paced_sleep  the same with a reader that sleeps until each
//                arrival and pays the kernel's wake-up, as sqloop_paced's blocking loop does:
//                the pair of sqloop_paced.
//
//   pool/T       plain SQLite behind a pool of T threads, reads in parallel (bench/sqlite/pool.cc).
//   futures/T    plain SQLite behind an executor of T threads returning a std::future per
//                operation, 64 in flight from one caller (bench/sqlite/futures.cc).
//
// Counters: allocs_per_op, ops_per_s, read_ and write_ p50_us, p90_us, p99_us, p99_9_us and
// max_us (submit to acknowledgement; also written for the report's CDF), fsyncs_per_write;
// sqloop: waited_ops_per_op (operations the loop stopped for, Loop::WaitForOp). Checks: every
// read returned its row's values, every operation was acknowledged exactly once, and the file
// holds exactly the acknowledged writes.
#include <sqlite3.h>
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/counting_vfs.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

constexpr size_t kLatencySlack = 1024;
// sqloop_paced: the offered load, all clients together: about a quarter of what sqloop/64
// sustains back to back on the machine of the run of record, so the loop is busy but has room
// (at twice this rate it fell behind, with the fsyncs' kernel work on the same two cores).
constexpr int64_t kPacedOpsPerSecond = 50'000;
constexpr uint64_t kArrivalSeedOffset = 1'000'000;
struct MixedStats {
  Latencies reads;
  Latencies writes;
  uint64_t ops = 0;
  uint64_t writes_acked = 0;
  int64_t seq_sum = 0;
  uint64_t failures = 0;
  absl::Status first_failure;

  void Reserve(size_t n) {
    reads.Reserve(n);
    writes.Reserve(n / kWriteOneIn + kLatencySlack);
  }
  void Fail(absl::Status status) {
    if (failures++ == 0) first_failure = std::move(status);
  }
};

void SetMixedCounters(benchmark::State& state, alloc::HeapCounts before, MixedStats& stats,
                      uint64_t ops, int64_t elapsed_ns, int64_t fsyncs) {
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["allocs_per_op"] =
      static_cast<double>(alloc::CurrentHeapCounts().allocations - before.allocations) / iterations;
  state.counters["ops_per_s"] = static_cast<double>(ops) / (static_cast<double>(elapsed_ns) / 1e9);
  SetLatencyCounters(state, "read_", stats.reads);
  SetLatencyCounters(state, "write_", stats.writes);
  WriteLatencyFile({{"read", &stats.reads}, {"write", &stats.writes}});
  const uint64_t writes = stats.writes_acked == 0 ? 1 : stats.writes_acked;
  if (fsyncs >= 0) {  // -1: nothing counted them (SQLite's own VFS).
    state.counters["fsyncs_per_write"] = static_cast<double>(fsyncs) / static_cast<double>(writes);
  }
}

// ---- sqloop clients ---------------------------------------------------------------------------

struct MixedRun;

// What a client runs: the mix (closed-loop runs), or only reads or only writes (a paced run's
// lanes: a read never waits behind a write of the same client, as no read of plain_paced does).
enum class Lane : uint8_t { kMixed, kReads, kWrites };

struct MixedClient {
  db::Request read;
  db::Request write;
  MixedRun* run = nullptr;
  Lane lane = Lane::kMixed;
  int64_t mean_gap_ns = 0;  // Paced runs: between this client's arrivals; 0: closed loop.
  Prng ops{0};
  Prng arrivals{0};              // Paced runs: the gaps between this client's arrivals.
  loop::Completion arrival;      // Paced runs: fires when the next operation arrives.
  bool arrival_pending = false;  // ... and is armed.
  int64_t arrives_ns = 0;        // ... and when the operation it starts arrives.
  int64_t submitted_ns = 0;      // When the operation in flight arrived.
  int rows = 0;
  bool values_ok = false;
  bool in_flight = false;
};

struct MixedRun {
  db::Database* db = nullptr;
  loop::Loop* loop = nullptr;
  MixedStats stats;
  bool stop = false;
  uint64_t in_flight = 0;
};

// Starts the client's next operation, which arrived at `arrived_ns`.
void StartNext(MixedClient& c, int64_t arrived_ns) {
  const bool write = c.lane == Lane::kMixed ? IsWrite(c.ops) : c.lane == Lane::kWrites;
  db::Request& request = write ? c.write : c.read;
  if (&request == &c.write) {
    ++c.write.params[1].int_value;
  } else {
    c.read.params[0].int_value = c.ops.NextRowId();
    c.rows = 0;
    c.values_ok = false;
  }
  c.submitted_ns = arrived_ns;
  c.in_flight = true;
  ++c.run->in_flight;
  if (absl::Status admitted = c.run->db->Submit(request); !admitted.ok()) {
    c.in_flight = false;
    --c.run->in_flight;
    c.run->stats.Fail(std::move(admitted));
  }
}

loop::Action OnArrival(loop::Loop& /*unused*/, loop::Completion& completion) {
  auto& c = *static_cast<MixedClient*>(completion.user_data);
  c.arrival_pending = false;
  // Latency counts from the arrival, not from when the loop got round to the timer.
  if (completion.result() == 0 && !c.run->stop) StartNext(c, c.arrives_ns);
  return loop::Action::kDisarm;
}

// Paced runs: the client's next operation arrives an exponential gap after `previous_ns`; it
// starts then, or at once if that time has passed (its latency still counts from then).
void ScheduleNext(MixedClient& c, int64_t previous_ns) {
  const int64_t arrives_ns = previous_ns + c.arrivals.NextGapNs(static_cast<double>(c.mean_gap_ns));
  const int64_t now_ns = MonotonicNs();
  if (arrives_ns <= now_ns) return StartNext(c, arrives_ns);
  c.arrival_pending = true;
  c.arrives_ns = arrives_ns;
  // A timer armed in a callback counts from the tick's start (Loop::now_ns, the same clock), not
  // from now: counted from now, it would fire early by however long the tick has run, and the
  // operation would start before it arrived.
  const int64_t from_ns = c.run->loop->in_callback() ? c.run->loop->now_ns() : now_ns;
  c.run->loop->Timer(c.arrival, absl::Nanoseconds(arrives_ns - from_ns));
}

// Both requests of a client end here; `r` says which one it was.
void OnMixedDone(db::Request& r, absl::Status status) {
  auto& c = *static_cast<MixedClient*>(r.user_data);
  MixedRun& run = *c.run;
  if (!c.in_flight) return run.stats.Fail(absl::InternalError("acknowledged twice"));
  c.in_flight = false;
  --run.in_flight;
  const bool write = &r == &c.write;
  if (!status.ok()) return run.stats.Fail(std::move(status));
  if (write ? r.changes != 1 : (c.rows != 1 || !c.values_ok)) {
    return run.stats.Fail(
        absl::InternalError(write ? "an INSERT changed != 1 row" : "a read returned a wrong row"));
  }
  ++run.stats.ops;
  if (write) {
    ++run.stats.writes_acked;
    run.stats.seq_sum += r.params[1].int_value;
  }
  if (run.stop) return;
  (write ? run.stats.writes : run.stats.reads).Add(MonotonicNs() - c.submitted_ns);
  if (c.mean_gap_ns == 0) return StartNext(c, MonotonicNs());
  ScheduleNext(c, c.submitted_ns);
}

void OnMixedRow(db::Request& r, const db::Row& row) {
  auto& c = *static_cast<MixedClient*>(r.user_data);
  const int64_t id = r.params[0].int_value;
  ++c.rows;
  c.values_ok = row.Int(0) == ExpectedValue(id) && TextMatches(id, row.Text(1));
}

std::unique_ptr<MixedClient[]> MakeClients(MixedRun& run, size_t count) {
  auto clients = std::make_unique<MixedClient[]>(count);
  for (size_t i = 0; i < count; ++i) {
    MixedClient& c = clients[i];
    c.run = &run;
    c.ops = Prng{kMixedSeedBase + i};
    c.arrivals = Prng{kMixedSeedBase + kArrivalSeedOffset + i};
    c.arrival.callback = &OnArrival;
    c.arrival.user_data = &c;
    c.arrival.name = "arrival";
    c.read.kind = db::Request::Kind::kRead;
    c.read.sql = kPointSelect;
    c.read.params.push_back(db::Value::Int(0));
    c.write.kind = db::Request::Kind::kWrite;
    c.write.sql = kInsert;
    c.write.params = {db::Value::Int(static_cast<int64_t>(i)), db::Value::Int(0),
                      db::Value::Text(kPayload)};
    for (db::Request* r : {&c.read, &c.write}) {
      r->user_data = &c;
      r->on_done = &OnMixedDone;
    }
    c.read.on_row = &OnMixedRow;
  }
  return clients;
}

}  // namespace

void PlainFullMixed(benchmark::State& state, PlainVfs plain_vfs) {
  const std::string path = FreshDbPath("mixed-plain");
  CountingVfs& vfs = CountingVfs::Get();
  const bool counting = plain_vfs == PlainVfs::kCounting;
  sqlite3* db = CopyDb(ReadDbPath(), path)
                    ? OpenPlain(path, counting ? vfs.name() : nullptr, /*no_mutex=*/false)
                    : nullptr;
  sqlite3_stmt* select = nullptr;
  sqlite3_stmt* insert = nullptr;
  if (db == nullptr || !Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") ||
      !Exec(db, kCreateWriteTable) ||
      sqlite3_prepare_v3(db, kPointSelect, -1, SQLITE_PREPARE_PERSISTENT, &select, nullptr) !=
          SQLITE_OK ||
      sqlite3_prepare_v3(db, kInsert, -1, SQLITE_PREPARE_PERSISTENT, &insert, nullptr) !=
          SQLITE_OK) {
    state.SkipWithError("plain SQLite setup failed");
    sqlite3_close_v2(db);
    return;
  }
  sqlite3_bind_int64(insert, 1, 0);
  sqlite3_bind_text(insert, 3, kPayload.data(), static_cast<int>(kPayload.size()), SQLITE_STATIC);
  MixedStats stats;
  stats.Reserve(static_cast<size_t>(state.max_iterations));
  Prng ops{kMixedSeedBase};
  int64_t seq = 0;
  const uint64_t syncs_before = vfs.syncs();
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (auto _ : state) {
    const int64_t submitted_ns = MonotonicNs();
    if (IsWrite(ops)) {
      sqlite3_bind_int64(insert, 2, ++seq);
      const int rc = sqlite3_step(insert);
      sqlite3_reset(insert);
      stats.writes.Add(MonotonicNs() - submitted_ns);
      if (rc != SQLITE_DONE) stats.Fail(absl::InternalError(sqlite3_errstr(rc)));
      ++stats.writes_acked;
      stats.seq_sum += seq;
      continue;
    }
    const bool ok = StepPointRead(select, ops.NextRowId());
    stats.reads.Add(MonotonicNs() - submitted_ns);
    if (!ok) stats.Fail(absl::InternalError("a read returned a wrong row"));
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  SetMixedCounters(state, before, stats, static_cast<uint64_t>(state.iterations()), elapsed_ns,
                   counting ? static_cast<int64_t>(vfs.syncs() - syncs_before) : -1);
  sqlite3_finalize(select);
  sqlite3_finalize(insert);
  sqlite3_close_v2(db);
  if (stats.failures == 0) {
    if (absl::Status s = VerifyWrites(path, stats.writes_acked, stats.seq_sum); !s.ok()) {
      stats.Fail(s);
    }
  }
  RemoveDb(path);
  if (stats.failures != 0) state.SkipWithError(stats.first_failure.ToString().c_str());
}

// plain_paced: the arrivals of sqloop_paced/64 (the same offered rate, all clients' streams
// merged into one), served by plain SQLite on two threads, each with its own connection on the
// counting VFS (WAL, synchronous=FULL). The benchmark's thread is the dispatcher and the reader:
// it waits for each operation's arrival, runs a read itself and hands a write to the writer
// thread. The writer commits what has arrived as one transaction (BEGIN IMMEDIATE, the INSERTs,
// COMMIT), so it group-commits as sqloop does and keeps up with the offered writes; a write is
// acknowledged when its transaction's COMMIT returned. Latency counts from the arrival.
// idle_paced: the same, but a read does nothing: its latency is how late the machine let the
// thread run while the writer's fsyncs were in flight, the floor under any read on one thread.
namespace {
struct PlainPacedWriter {
  // `published` counts the writes handed over; kDone is set once no more will come.
  static constexpr size_t kDone = size_t{1} << 63;
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* insert = nullptr;
  sqlite3_stmt* commit = nullptr;
  std::vector<int64_t> arrivals_ns;  // One slot per write, written before `published` counts it.
  std::atomic<size_t> published{0};
  MixedStats stats;
  int64_t seq = 0;

  static bool Step(sqlite3_stmt* statement) {
    const int rc = sqlite3_step(statement);
    sqlite3_reset(statement);
    return rc == SQLITE_DONE;
  }

  // Commits writes [from, to) as one transaction.
  void Commit(size_t from, size_t to) {
    const int64_t first_seq = seq + 1;
    bool ok = Step(begin);
    for (size_t i = from; ok && i < to; ++i) {
      sqlite3_bind_int64(insert, 2, ++seq);
      ok = Step(insert);
    }
    ok = ok && Step(commit);
    if (!ok) {
      sqlite3* db = sqlite3_db_handle(insert);
      return stats.Fail(absl::InternalError(absl::StrCat(
          "a group of INSERTs failed: ", sqlite3_errstr(sqlite3_extended_errcode(db)))));
    }
    const int64_t done_ns = MonotonicNs();
    for (size_t i = from; i < to; ++i) stats.writes.Add(done_ns - arrivals_ns[i]);
    stats.writes_acked += to - from;
    stats.seq_sum += (first_seq + seq) * (seq - first_seq + 1) / 2;
  }

  void Run() {
    const BaselineScope scope(alloc::kSharedTenant);
    size_t next = 0;
    while (true) {
      const size_t seen = published.load(std::memory_order_acquire);
      if (next < (seen & ~kDone)) {
        Commit(next, seen & ~kDone);
        next = seen & ~kDone;
        continue;
      }
      if ((seen & kDone) != 0) return;
      published.wait(seen, std::memory_order_acquire);
    }
  }
};

// Waits until CLOCK_MONOTONIC reaches `ns`. kSpin: sleeps while the wait is long enough to be
// worth a wake-up, and spins for the rest, so the reader is never late and leaves its core when
// idle. kSleep: sleeps until `ns`, and runs as late as the kernel wakes it.
void WaitUntil(int64_t ns, PacedWait wait) {
  const int64_t spin_ns = wait == PacedWait::kSpin ? 20'000 : 0;
  if (ns - MonotonicNs() > 2 * spin_ns) {
    const int64_t wake_ns = ns - spin_ns;
    const timespec until{.tv_sec = wake_ns / 1'000'000'000, .tv_nsec = wake_ns % 1'000'000'000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) == EINTR) {
    }
  }
  while (MonotonicNs() < ns) {
  }
}

// plain_paced's connections: a reader and a writer on the counting VFS, their statements
// prepared. Closes them and removes the files when it goes.
struct PlainPacedDb {
  static constexpr int kBusyTimeoutMs = 5000;
  std::string path = FreshDbPath("mixed-plain-paced");
  sqlite3* reader = nullptr;
  sqlite3* writer = nullptr;
  sqlite3_stmt* select = nullptr;

  bool Open(PlainPacedWriter& w) {
    const char* vfs = CountingVfs::Get().name();
    if (!CopyDb(ReadDbPath(), path)) return false;
    reader = OpenPlain(path, vfs, /*no_mutex=*/false);
    writer = OpenPlain(path, vfs, /*no_mutex=*/false);
    auto prepare = [](sqlite3* db, const char* sql, sqlite3_stmt** statement) {
      return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, statement, nullptr) ==
             SQLITE_OK;
    };
    if (reader == nullptr || writer == nullptr) return false;
    // Two connections on one file: a lock the other holds for a moment (a checkpoint, the WAL
    // restarting) is waited for, as any plain SQLite user with two connections sets it up.
    for (sqlite3* db : {reader, writer}) sqlite3_busy_timeout(db, kBusyTimeoutMs);
    if (!Exec(writer, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") ||
        !Exec(writer, kCreateWriteTable) || !prepare(reader, kPointSelect, &select) ||
        !prepare(writer, kInsert, &w.insert) || !prepare(writer, "BEGIN IMMEDIATE", &w.begin) ||
        !prepare(writer, "COMMIT", &w.commit)) {
      return false;
    }
    sqlite3_bind_int64(w.insert, 1, 0);
    sqlite3_bind_text(w.insert, 3, kPayload.data(), static_cast<int>(kPayload.size()),
                      SQLITE_STATIC);
    return true;
  }
  void Close(PlainPacedWriter& w) {
    for (sqlite3_stmt* statement : {select, w.insert, w.begin, w.commit}) {
      sqlite3_finalize(statement);
    }
    sqlite3_close_v2(reader);
    sqlite3_close_v2(writer);
    RemoveDb(path);
  }
};

}  // namespace

void PlainPacedMixed(benchmark::State& state, PacedReads reads, PacedWait wait) {
  PlainPacedWriter w;
  PlainPacedDb db;
  const bool ready = db.Open(w);
  absl::Cleanup close = [&] { db.Close(w); };
  if (!ready) return state.SkipWithError("plain SQLite setup failed");
  MixedStats stats;
  stats.Reserve(static_cast<size_t>(state.max_iterations));
  w.stats.Reserve(static_cast<size_t>(state.max_iterations));
  w.arrivals_ns.resize(static_cast<size_t>(state.max_iterations));
  Prng ops{kMixedSeedBase};
  Prng arrivals{kMixedSeedBase + kArrivalSeedOffset};
  const double mean_gap_ns = 1e9 / static_cast<double>(kPacedOpsPerSecond);
  state.counters["offered_ops_per_s"] = static_cast<double>(kPacedOpsPerSecond);
  std::thread writer_thread([&w] { w.Run(); });
  // The loop's timers are hrtimers without slack; the reader's sleeps get none either.
  const int slack_before = prctl(PR_GET_TIMERSLACK);
  prctl(PR_SET_TIMERSLACK, 1);
  const uint64_t syncs_before = CountingVfs::Get().syncs();
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  int64_t arrives_ns = start_ns;
  size_t writes = 0;
  for (auto _ : state) {
    arrives_ns += arrivals.NextGapNs(mean_gap_ns);
    WaitUntil(arrives_ns, wait);
    if (IsWrite(ops)) {
      w.arrivals_ns[writes++] = arrives_ns;
      w.published.store(writes, std::memory_order_release);
      w.published.notify_one();
      continue;
    }
    const int64_t id = ops.NextRowId();
    const bool ok = reads == PacedReads::kNone || StepPointRead(db.select, id);
    stats.reads.Add(MonotonicNs() - arrives_ns);
    if (!ok) stats.Fail(absl::InternalError("a read returned a wrong row"));
  }
  prctl(PR_SET_TIMERSLACK, slack_before);
  w.published.store(writes | PlainPacedWriter::kDone, std::memory_order_release);
  w.published.notify_one();
  writer_thread.join();
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  stats.writes = std::move(w.stats.writes);
  stats.writes_acked = w.stats.writes_acked;
  stats.seq_sum = w.stats.seq_sum;
  if (w.stats.failures != 0) stats.Fail(w.stats.first_failure);
  SetMixedCounters(state, before, stats, static_cast<uint64_t>(state.iterations()), elapsed_ns,
                   static_cast<int64_t>(CountingVfs::Get().syncs() - syncs_before));
  if (stats.failures == 0) {
    if (absl::Status s = VerifyWrites(db.path, stats.writes_acked, stats.seq_sum); !s.ok()) {
      stats.Fail(s);
    }
  }
  if (stats.failures != 0) state.SkipWithError(stats.first_failure.ToString().c_str());
}

void SqloopMixed(benchmark::State& state, bool paced, db::VfsOptions vfs_options,
                 loop::LoopOptions loop_options) {
  const auto client_count = static_cast<size_t>(state.range(0));
  const std::string path = FreshDbPath("mixed-sqloop");
  SqloopEnv env;
  absl::Status status =
      CopyDb(ReadDbPath(), path)
          ? env.Open(path, db::DatabaseOptions{}, vfs_options, std::move(loop_options))
          : absl::InternalError("copying the read database failed");
  if (status.ok()) status = env.Execute(kCreateWriteTable);
  if (!status.ok()) {
    state.SkipWithError(absl::StrCat("sqloop setup failed: ", status.ToString()).c_str());
    return;
  }
  LabelBackend(state, env.backend_name());
  MixedRun run;
  run.db = &env.db();
  run.loop = &env.loop();
  run.stats.Reserve(static_cast<size_t>(state.max_iterations) + kLatencySlack);
  // A paced client is two lanes, its reads and its writes, each a Poisson stream (the split of
  // the client's stream by kind), so together they offer kPacedOpsPerSecond.
  const size_t lanes = paced ? 2 * client_count : client_count;
  std::unique_ptr<MixedClient[]> clients = MakeClients(run, lanes);
  if (paced) {
    const double client_gap_ns =
        1e9 * static_cast<double>(client_count) / static_cast<double>(kPacedOpsPerSecond);
    const double write_share = 1.0 / static_cast<double>(kWriteOneIn);
    for (size_t i = 0; i < lanes; ++i) {
      const bool writes = i >= client_count;
      clients[i].lane = writes ? Lane::kWrites : Lane::kReads;
      clients[i].mean_gap_ns =
          static_cast<int64_t>(client_gap_ns / (writes ? write_share : 1.0 - write_share));
    }
    state.counters["offered_ops_per_s"] = static_cast<double>(kPacedOpsPerSecond);
  }
  const uint64_t fsyncs_before = env.vfs().stats().fsyncs;
  const uint64_t waited_before = env.loop().stats().waited_ops;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (size_t i = 0; i < lanes; ++i) {
    if (paced) {
      ScheduleNext(clients[i], start_ns);
    } else {
      StartNext(clients[i], MonotonicNs());
    }
  }
  uint64_t target = 0;
  for (auto _ : state) {
    ++target;
    while (run.stats.ops < target && run.stats.failures == 0) {
      if (absl::Status s = env.RunOnce(); !s.ok()) run.stats.Fail(s);
    }
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  SetMixedCounters(state, before, run.stats, run.stats.ops, elapsed_ns,
                   static_cast<int64_t>(env.vfs().stats().fsyncs - fsyncs_before));
  // The loop stopped for the disk: the writes that grow the WAL run at once (EpochQueue
  // invariant 2); nothing else should.
  state.counters["waited_ops_per_op"] =
      static_cast<double>(env.loop().stats().waited_ops - waited_before) /
      static_cast<double>(std::max<uint64_t>(run.stats.ops, 1));
  run.stop = true;
  for (size_t i = 0; i < lanes; ++i) {
    if (clients[i].arrival_pending) env.loop().Cancel(clients[i].arrival);
  }
  auto arrivals_pending = [&] {
    for (size_t i = 0; i < lanes; ++i) {
      if (clients[i].arrival_pending) return true;
    }
    return false;
  };
  while ((run.in_flight > 0 || arrivals_pending()) && run.stats.failures == 0) {
    if (absl::Status s = env.RunOnce(); !s.ok()) run.stats.Fail(s);
  }
  if (absl::Status closed = env.Close(); !closed.ok()) run.stats.Fail(closed);
  if (run.stats.failures == 0) {
    if (absl::Status s = VerifyWrites(path, run.stats.writes_acked, run.stats.seq_sum); !s.ok()) {
      run.stats.Fail(s);
    }
  }
  RemoveDb(path);
  if (run.stats.failures != 0) {
    state.SkipWithError(
        absl::StrCat(run.stats.failures, " failure(s), first: ", run.stats.first_failure.ToString())
            .c_str());
  }
}

}  // namespace sqloop::bench
