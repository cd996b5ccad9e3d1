// sqlite_transfer: a durable two-statement transaction, the transfer between two accounts that
// needs all or nothing. One iteration = one transfer acknowledged durable.
//
//   plain_full   plain SQLite, WAL, synchronous=FULL: BEGIN IMMEDIATE; UPDATE (debit);
//                UPDATE (credit); COMMIT, each a cached prepared statement. The baseline.
//   sqloop/N     N concurrent clients (closed loop), each transfer one db::Request whose
//                `batch` holds the two UPDATEs: the Database runs them under a savepoint of
//                their own inside a group commit, so a transfer is all or nothing and many
//                share one fsync. Latency = from Submit to the durable acknowledgement.
//
// Counters as sqlite_write's: allocs_per_op, commits_per_s, the latency percentiles,
// fsyncs_per_commit. Checks: every transfer acknowledged OK with one row changed by each
// statement; afterwards, read back with plain SQLite, the balances still sum to what they
// started at and every account's `moves` column counts exactly the transfers that touched it.
#include <sqlite3.h>

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/sqlite/benchmarks.h"
#include "bench/sqlite/counting_vfs.h"
#include "bench/sqlite/env.h"
#include "sqloop/alloc/heap_counter.h"

namespace sqloop::bench {
namespace {

constexpr int64_t kAccounts = 1024;
constexpr int64_t kOpeningBalance = 1'000'000;
constexpr char kCreateAccounts[] =
    "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, "
    "moves INTEGER NOT NULL DEFAULT 0)";
constexpr char kDebit[] =
    "UPDATE accounts SET balance = balance - ?1, moves = moves + 1 WHERE id = ?2";
constexpr char kCredit[] =
    "UPDATE accounts SET balance = balance + ?1, moves = moves + 1 WHERE id = ?2";
constexpr size_t kLatencySlack = 1024;

constexpr int64_t kAmount = 3;  // Moved by every transfer.

std::string OpenAccountsSql() {
  return absl::StrCat(
      "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ", kAccounts,
      ") INSERT INTO accounts(id, balance) SELECT i, ", kOpeningBalance, " FROM n");
}

// The accounts of transfer number `seq`: never the same account twice.
int64_t FromAccount(int64_t seq) { return seq % kAccounts; }
int64_t ToAccount(int64_t seq) {
  return (FromAccount(seq) + 1 + (seq * 7) % (kAccounts - 1)) % kAccounts;
}

// What the accounts must hold after the acknowledged transfers: moves per account.
struct Expected {
  std::vector<int64_t> moves = std::vector<int64_t>(kAccounts, 0);
  void Add(int64_t seq) {
    ++moves[static_cast<size_t>(FromAccount(seq))];
    ++moves[static_cast<size_t>(ToAccount(seq))];
  }
};

// Reads the accounts back with plain SQLite and compares them with `expected`.
absl::Status VerifyAccounts(const std::string& path, const Expected& expected) {
  sqlite3* db = OpenPlain(path, nullptr, /*no_mutex=*/false);
  if (db == nullptr) return absl::InternalError("verify: cannot open the database");
  const int64_t total = QueryInt(db, "SELECT sum(balance) FROM accounts");
  sqlite3_stmt* stmt = nullptr;
  absl::Status status;
  if (total != kAccounts * kOpeningBalance) {
    status = absl::DataLossError(
        absl::StrCat("balances sum to ", total, ", not ", kAccounts * kOpeningBalance));
  } else if (sqlite3_prepare_v2(db, "SELECT id, moves FROM accounts ORDER BY id", -1, &stmt,
                                nullptr) != SQLITE_OK) {
    status = absl::InternalError("verify: prepare failed");
  } else {
    int64_t rows = 0;
    while (status.ok() && sqlite3_step(stmt) == SQLITE_ROW) {
      const int64_t id = sqlite3_column_int64(stmt, 0);
      const int64_t moves = sqlite3_column_int64(stmt, 1);
      if (id != rows || moves != expected.moves[static_cast<size_t>(id)]) {
        status = absl::DataLossError(absl::StrCat("account ", id, " moved ", moves, " times, not ",
                                                  expected.moves[static_cast<size_t>(rows)]));
      }
      ++rows;
    }
    if (status.ok() && rows != kAccounts) status = absl::DataLossError("accounts are missing");
  }
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
  return status;
}

// ---- sqloop clients ---------------------------------------------------------------------------

struct TransferRun;

struct Client {
  std::array<db::Statement, 2> batch{
      db::Statement(kDebit, {db::Value::Int(kAmount), db::Value::Int(0)}),
      db::Statement(kCredit, {db::Value::Int(kAmount), db::Value::Int(0)})};
  db::Request request;
  TransferRun* run = nullptr;
  int64_t seq = 0;
  int64_t submitted_ns = 0;
  bool in_flight = false;
};

struct TransferRun {
  db::Database* db = nullptr;
  Latencies latencies;
  Expected expected;
  int64_t next_seq = 0;
  uint64_t acked = 0;
  uint64_t in_flight = 0;
  uint64_t failures = 0;
  absl::Status first_failure;
  bool stop = false;
};

void Fail(TransferRun& run, absl::Status status) {
  if (run.failures++ == 0) run.first_failure = std::move(status);
}

void SubmitNext(Client& c) {
  TransferRun& run = *c.run;
  c.seq = run.next_seq++;
  c.batch[0].params[1].int_value = FromAccount(c.seq);
  c.batch[1].params[1].int_value = ToAccount(c.seq);
  c.submitted_ns = MonotonicNs();
  c.in_flight = true;
  ++run.in_flight;
  if (absl::Status admitted = run.db->Submit(c.request); !admitted.ok()) {
    c.in_flight = false;
    --run.in_flight;
    Fail(run, std::move(admitted));
  }
}

void OnTransferDone(db::Request& r, absl::Status status) {
  auto& c = *static_cast<Client*>(r.user_data);
  TransferRun& run = *c.run;
  c.in_flight = false;
  --run.in_flight;
  if (!status.ok() || c.batch[0].changes != 1 || c.batch[1].changes != 1) {
    Fail(run, status.ok() ? absl::InternalError("a transfer changed != 1 row per statement")
                          : std::move(status));
    return;
  }
  ++run.acked;
  run.expected.Add(c.seq);
  if (run.stop) return;
  run.latencies.Add(MonotonicNs() - c.submitted_ns);
  SubmitNext(c);
}

// Plain SQLite's transfer statements, prepared once.
struct PlainTransfer {
  std::array<sqlite3_stmt*, 4> stmts{};  // BEGIN IMMEDIATE, debit, credit, COMMIT.
  PlainTransfer() = default;
  PlainTransfer(const PlainTransfer&) = delete;
  PlainTransfer& operator=(const PlainTransfer&) = delete;
  ~PlainTransfer() { Finalize(); }
  void Finalize() {
    for (sqlite3_stmt*& s : stmts) {
      sqlite3_finalize(s);
      s = nullptr;
    }
  }
  bool Prepare(sqlite3* db) {
    const std::array<const char*, 4> sql{"BEGIN IMMEDIATE", kDebit, kCredit, "COMMIT"};
    for (size_t i = 0; i < sql.size(); ++i) {
      if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts[i], nullptr) !=
          SQLITE_OK) {
        return false;
      }
    }
    for (size_t i = 1; i <= 2; ++i) sqlite3_bind_int64(stmts[i], 1, kAmount);
    return true;
  }
  // One transfer; false (rolled back) if any step failed.
  bool Run(sqlite3* db, int64_t seq) {
    sqlite3_bind_int64(stmts[1], 2, FromAccount(seq));
    sqlite3_bind_int64(stmts[2], 2, ToAccount(seq));
    for (sqlite3_stmt* s : stmts) {
      const int rc = sqlite3_step(s);
      sqlite3_reset(s);
      if (rc != SQLITE_DONE || (s != stmts[0] && s != stmts[3] && sqlite3_changes(db) != 1)) {
        (void)Exec(db, "ROLLBACK");
        return false;
      }
    }
    return true;
  }
};

}  // namespace

void PlainFullTransfer(benchmark::State& state) {
  const std::string path = FreshDbPath("plain-transfer");
  CountingVfs& vfs = CountingVfs::Get();
  sqlite3* db = OpenPlain(path, vfs.name(), /*no_mutex=*/false);
  PlainTransfer transfer;
  if (db == nullptr || !Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") ||
      !Exec(db, kCreateAccounts) || !Exec(db, OpenAccountsSql().c_str()) || !transfer.Prepare(db)) {
    state.SkipWithError("plain SQLite setup failed");
    sqlite3_close_v2(db);
    return;
  }
  Latencies latencies;
  latencies.Reserve(static_cast<size_t>(state.max_iterations));
  Expected expected;
  int64_t seq = 0;
  uint64_t failures = 0;
  const uint64_t syncs_before = vfs.syncs();
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (auto _ : state) {
    const int64_t submitted_ns = MonotonicNs();
    if (transfer.Run(db, seq)) {
      expected.Add(seq);
    } else {
      ++failures;
    }
    latencies.Add(MonotonicNs() - submitted_ns);
    ++seq;
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  const auto commits = static_cast<uint64_t>(state.iterations()) - failures;
  SetWriteCounters(state, before, commits, elapsed_ns, latencies,
                   static_cast<int64_t>(vfs.syncs() - syncs_before));
  transfer.Finalize();
  sqlite3_close_v2(db);
  absl::Status verified = failures == 0 ? VerifyAccounts(path, expected)
                                        : absl::InternalError(absl::StrCat(failures, " failed"));
  RemoveDb(path);
  if (!verified.ok()) state.SkipWithError(verified.ToString().c_str());
}

void SqloopTransfer(benchmark::State& state) {
  const auto client_count = static_cast<size_t>(state.range(0));
  const std::string path = FreshDbPath("sqloop-transfer");
  SqloopEnv env;
  absl::Status status = env.Open(path, db::DatabaseOptions{});
  if (status.ok()) status = env.Execute(kCreateAccounts);
  const std::string open_accounts = OpenAccountsSql();
  if (status.ok()) status = env.Execute(open_accounts);
  if (!status.ok()) {
    state.SkipWithError(absl::StrCat("sqloop setup failed: ", status.ToString()).c_str());
    return;
  }
  LabelBackend(state, env.backend_name());
  TransferRun run;
  run.db = &env.db();
  run.latencies.Reserve(static_cast<size_t>(state.max_iterations) + kLatencySlack);
  auto clients = std::make_unique<Client[]>(client_count);
  for (size_t i = 0; i < client_count; ++i) {
    Client& c = clients[i];
    c.run = &run;
    c.request.kind = db::Request::Kind::kWrite;
    c.request.batch = absl::MakeSpan(c.batch);
    c.request.user_data = &c;
    c.request.on_done = &OnTransferDone;
  }
  const uint64_t fsyncs_before = env.vfs().stats().fsyncs;
  const alloc::HeapCounts before = alloc::CurrentHeapCounts();
  const int64_t start_ns = MonotonicNs();
  for (size_t i = 0; i < client_count; ++i) SubmitNext(clients[i]);
  uint64_t target = 0;
  for (auto _ : state) {
    ++target;
    while (run.acked < target && run.failures == 0) {
      if (absl::Status s = env.RunOnce(); !s.ok()) Fail(run, s);
    }
  }
  const int64_t elapsed_ns = MonotonicNs() - start_ns;
  SetWriteCounters(state, before, run.acked, elapsed_ns, run.latencies,
                   static_cast<int64_t>(env.vfs().stats().fsyncs - fsyncs_before));
  run.stop = true;  // Drain: the transfers in flight are acknowledged, none resubmits.
  while (run.in_flight > 0 && run.failures == 0) {
    if (absl::Status s = env.RunOnce(); !s.ok()) Fail(run, s);
  }
  if (absl::Status closed = env.Close(); !closed.ok()) Fail(run, closed);
  if (run.failures == 0) {
    if (absl::Status verified = VerifyAccounts(path, run.expected); !verified.ok()) {
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
