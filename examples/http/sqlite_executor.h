// examples/http/sqlite_executor.h
// -----------------------------------------------------------------------------
//
// A STAND-IN QueryExecutor on plain SQLite, until the tenant registry (db/, issue 6) lands.
//
// One sqlite3 handle per tenant, the file `<data_dir>/<tenant>.db` on SQLite's default VFS, in
// WAL mode with `synchronous=FULL`, so a commit has reached the disk when its answer is sent.
// Statements run synchronously, inside a loop callback of the executor's own (a zero timer armed
// by Submit), and the answer is delivered from that callback: never inside the caller's stack.
//
// What makes it a stand-in, said plainly: every statement, and above all every commit's fsync,
// BLOCKS THE LOOP while it runs. All connections of the host wait for one tenant's disk flush.
// The loop's stall watch reports it (the completion is named "sqlite executor"). The registry
// replaces this with the loop's own VFS: fsyncs issued asynchronously, group commit, and a
// durable acknowledgement that does not stop the other tenants.
//
// Design invariants:
//   1. A request's statements run in one transaction: all take effect or none does.
//   2. User SQL cannot leave the tenant's file or weaken durability: ATTACH/DETACH, VACUUM,
//      transaction control (BEGIN, COMMIT, SAVEPOINT...) and PRAGMAs other than a read-only
//      allow-list are refused by an authorizer; extensions stay disabled.
//   3. Every request is bounded: rows and result bytes (so a response cannot exhaust memory)
//      and SQLite virtual-machine steps (so a runaway query cannot hold the loop forever).
//   4. At most `tenants_open_max` handles are open; the least recently used one is closed to
//      open another.
//   5. on_done runs exactly once per Submit, from the executor's callback, in submission order.
//
// Example:
//
//   SqliteExecutorOptions options;
//   options.data_dir = "/var/lib/sqloop-http";
//   absl::StatusOr<std::unique_ptr<SqliteExecutor>> executor =
//       SqliteExecutor::Create(*loop, options);
//   if (!executor.ok()) return executor.status();
//   (*executor)->Submit(request);  // request.on_done runs from a later loop callback
#ifndef SQLOOP_EXAMPLES_HTTP_SQLITE_EXECUTOR_H_
#define SQLOOP_EXAMPLES_HTTP_SQLITE_EXECUTOR_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "examples/http/executor.h"
#include "loop/loop.h"

namespace sqloop::examples::http {

struct SqliteExecutorOptions {
  // Where tenants live; must exist.
  std::string data_dir;
  // Open handles at once. 256 keeps descriptors (a handle holds the .db and the -wal file, plus
  // the -shm mapping) well under the usual 1024 soft limit next to the connections' sockets.
  uint32_t tenants_open_max = 256;
  // Rows per request. 10,000 rows answer any page a client shows; a larger read should page
  // with LIMIT/OFFSET, which keeps one response (built in memory) bounded.
  uint32_t rows_max = 10'000;
  // Bytes of values and column names per request, for the same reason: 8 MiB.
  uint64_t result_bytes_max = uint64_t{8} << 20;
  // SQLite virtual-machine instructions per request, counted every kProgressSteps. 50 million is
  // a few hundred milliseconds of work: generous for a point query or a batch of writes, and a
  // bound on how long a runaway query (an unbounded recursive CTE) can hold the loop.
  uint64_t vm_steps_max = 50'000'000;
};

class SqliteExecutor final : public QueryExecutor {
 public:
  // Checks that `options.data_dir` is a directory we can write, and opens it for directory
  // fsyncs (so creating or deleting a tenant is durable too).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SqliteExecutor>> Create(
      loop::Loop& loop, SqliteExecutorOptions options);
  // Closes every tenant. Checks that no request is in flight.
  ~SqliteExecutor() override;

  void Submit(ExecutorRequest& request) override;
  [[nodiscard]] absl::string_view name() const override { return "sqlite-standin"; }
  [[nodiscard]] std::vector<ExecutorStat> Stats() const override;
  [[nodiscard]] uint64_t in_flight() const override { return queued_; }

  // Closes every open handle (a clean shutdown checkpoints each WAL). Tenants reopen on use.
  void CloseTenants();
  [[nodiscard]] size_t tenants_open() const { return open_.size(); }

 private:
  struct Tenant {
    sqlite3* db = nullptr;
    uint64_t last_used = 0;  // A use counter, for least-recently-used eviction.
  };
  struct Counters {
    uint64_t requests = 0;
    uint64_t errors = 0;
    uint64_t statements = 0;
    uint64_t rows_returned = 0;
    uint64_t tenants_created = 0;
    uint64_t tenants_deleted = 0;
    uint64_t tenant_opens = 0;
    uint64_t tenant_evictions = 0;
  };
  // Per-request budget, reset when a query starts.
  struct Budget {
    uint64_t rows = 0;
    uint64_t bytes = 0;
  };

  SqliteExecutor(loop::Loop& loop, SqliteExecutorOptions options, int dir_fd);

  static loop::Action OnRun(loop::Loop& loop, loop::Completion& c);
  void Run(ExecutorRequest& request);
  [[nodiscard]] absl::Status Query(ExecutorRequest& request);
  [[nodiscard]] absl::Status CreateTenant(const std::string& tenant);
  [[nodiscard]] absl::Status DeleteTenant(const std::string& tenant);
  [[nodiscard]] absl::StatusOr<sqlite3*> OpenTenant(const std::string& tenant, bool create);
  [[nodiscard]] absl::Status Configure(sqlite3* db);
  void CloseTenant(const std::string& tenant);
  void EvictOne();
  [[nodiscard]] absl::Status RunStatement(sqlite3* db, const Statement& statement, size_t index,
                                          Budget& budget, StatementResult& result);
  [[nodiscard]] absl::Status Step(sqlite3* db, sqlite3_stmt* stmt, size_t index, Budget& budget,
                                  StatementResult& result);
  [[nodiscard]] absl::Status Exec(sqlite3* db, const char* sql);
  [[nodiscard]] absl::Status SyncDirectory() const;
  [[nodiscard]] std::string PathOf(const std::string& tenant) const;

  static int Authorize(void* self, int action, const char* arg1, const char* arg2,
                       const char* database, const char* trigger);
  static int OnProgress(void* self);

  loop::Loop& loop_;
  SqliteExecutorOptions options_;
  int dir_fd_;
  loop::Completion run_;  // A zero timer: runs the queued requests from a loop callback.
  bool run_armed_ = false;
  ExecutorRequest* head_ = nullptr;  // Queued requests, in submission order.
  ExecutorRequest* tail_ = nullptr;
  uint64_t queued_ = 0;
  bool trusted_sql_ = false;  // Our own BEGIN/COMMIT pass the authorizer; user SQL does not.
  uint64_t vm_steps_ = 0;     // Steps of the running request, counted by OnProgress.
  uint64_t use_clock_ = 0;
  absl::flat_hash_map<std::string, Tenant> open_;
  Counters counters_;
};

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_SQLITE_EXECUTOR_H_
