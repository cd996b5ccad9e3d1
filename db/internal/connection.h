// db/internal/connection.h
// -----------------------------------------------------------------------------
//
// `Connection` is one SQLite connection of a Database and everything that is about a statement
// rather than about the database: opening and configuring the connection (limits, defensive
// settings, the shared DatabaseOptions settings), the authorizer that keeps requests inside
// sql_policy, the progress handler that enforces deadlines, cancellation and the budgets of
// SQLite work, the statement cache, preparing and binding a request's SQL, sqloop's own
// statements (BEGIN, SAVEPOINT, COMMIT ...), and turning SQLite's result codes into a Status that
// says what happened and what to do.
//
// What it does not know: queues, group commits, epochs, snapshots and acknowledgements. Those are
// the Database's (db/database.h); a Connection only runs what it is told, one request at a time.
//
// Budgets are counted in progress-handler calls (kProgressOpsDefault steps each):
//   since the last row     bounded by the slice budget: one step that long stops the statement;
//   in this slice          when it reaches the slice budget, a read yields after its next row
//                          and a group commits what it has (SliceUsed);
//   in the whole request   bounded by the request's budget.
//
// Example (the Database's read path):
//
//   absl::StatusOr<sqlite3_stmt*> stmt = reader.Prepare(request.sql);
//   if (stmt.ok()) status = reader.Bind(*stmt, request.params);
//   reader.BeginRequest(request);
//   reader.BeginSlice();
//   ... sqlite3_step(*stmt) until a row budget or SliceUsed() ...
//   if (rc != SQLITE_DONE) status = reader.Error(rc);
//   reader.EndRequest();
#ifndef SQLOOP_DB_INTERNAL_CONNECTION_H_
#define SQLOOP_DB_INTERNAL_CONNECTION_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "sqloop/db/database.h"
#include "sqloop/db/request.h"
#include "sqloop/loop/loop.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sqloop::db::internal {

// Budgets are counted in progress-handler calls: steps rounded up to whole calls.
constexpr uint64_t CallsFor(uint64_t vm_steps) {
  // Rounded up without adding first: a budget near UINT64_MAX (no budget, in effect) would wrap
  // to none, and a read whose slice is used before it starts ends with no rows.
  return vm_steps / kProgressOpsDefault + (vm_steps % kProgressOpsDefault != 0 ? 1 : 0);
}
static_assert(CallsFor(UINT64_MAX) > 0 && CallsFor(1) == 1);

class Connection {
 public:
  // `options` belongs to the Database and outlives the connection; `file_name` names the
  // database in errors.
  Connection(loop::Loop& loop, const DatabaseOptions& options, bool writer, std::string file_name);
  // Closes it if still open.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Opens `path` on `vfs_name` (read-write and creating for the writer, read-only for a reader)
  // and configures it. The caller words an open failure: the VFS may know why better than SQLite.
  [[nodiscard]] int Open(const char* path, const char* vfs_name);
  [[nodiscard]] absl::Status Configure();
  // From now on a statement that is not sqloop's own (RunInternal) passes the authorizer
  // (db/internal/sql_policy.h). The writer's setup runs before this.
  void RestrictToRequests();
  // Finalizes every cached statement and closes the connection.
  void Close();

  [[nodiscard]] sqlite3* db() const { return db_; }
  [[nodiscard]] bool open() const { return db_ != nullptr; }
  [[nodiscard]] bool writer() const { return writer_; }

  // The request's SQL prepared (from the cache when it was prepared before): exactly one
  // statement, within sql_bytes_max, with no NUL.
  absl::StatusOr<sqlite3_stmt*> Prepare(absl::string_view sql);
  // Binds every parameter, refusing a wrong count, an oversized value or text that is not UTF-8.
  [[nodiscard]] absl::Status Bind(sqlite3_stmt* stmt, absl::Span<const Value> params) const;
  // Resets `stmt` once the request that bound `params` is done with it. Text and blobs are
  // bound in place (SQLITE_STATIC), so then the bindings are cleared too: the statement keeps
  // no pointer into the request's memory.
  static void Reset(sqlite3_stmt* stmt, absl::Span<const Value> params);
  // Runs sqloop's own statement (or several, separated by ';'): the authorizer allows it.
  absl::Status RunInternal(const char* sql);
  // A passive checkpoint of the WAL, as sqloop's own work. Returns SQLite's result code.
  int Checkpoint(int* log_frames, int* checkpointed);
  // SQLite's result `rc` (from this connection) as a Status that says what to do.
  [[nodiscard]] absl::Status Error(int rc) const;
  // Forgets why the authorizer refused the last statement: the next Error is about `rc` alone.
  void ClearDenied() { denied_.clear(); }

  // The request whose statement runs here, its budgets counted from zero.
  void BeginRequest(Request& request);
  void EndRequest() { current_ = nullptr; }
  [[nodiscard]] Request* current() const { return current_; }
  // A slice (one run of the writer's group, one stint of a read) and a row start now.
  void BeginSlice() { calls_this_slice_ = 0; }
  void BeginRow() { calls_since_row_ = 0; }
  [[nodiscard]] bool SliceUsed() const { return calls_this_slice_ >= slice_calls_max_; }
  // EpochQueue's read charge while this connection's request steps (set_reads_nowait): one page
  // SQLite read, worth kPageReadVmSteps steps. Every kProgressOpsDefault / kPageReadVmSteps of
  // them count as a progress-handler call, and one over a budget stops the statement with
  // sqlite3_interrupt, which SQLite's long single steps (OP_Count, OP_IntegrityCk) check between
  // pages, as they never call the handler.
  static void ChargePageRead(void* arg);
  // Asks the CPU for this object and the start of its SQLite connection and last statement,
  // ahead of a read (a wake's: the loop goes on meanwhile), without waiting for them.
  void Prefetch() const;

  // ---- The Database's state of a reader (the snapshot machine in db/database.h) -------------
  sqlite3_stmt* read_stmt = nullptr;  // The running read's statement.
  bool pinned = false;                // An open read transaction ...
  uint64_t snapshot = 0;              // ... showing the database as of this group epoch.

 private:
  // Why the progress handler stopped a statement: Error words SQLITE_INTERRUPT by it.
  enum class Interrupt : uint8_t { kNone, kCancel, kDeadline, kSliceBudget, kRequestBudget };

  static int Authorize(void* arg, int action, const char* a, const char* b, const char* schema,
                       const char* /*unused*/);
  static int Progress(void* arg);
  [[nodiscard]] absl::Status BudgetExceeded() const;
  [[nodiscard]] absl::Status InterruptError() const;
  [[nodiscard]] absl::Status ApplySettings();

  loop::Loop& loop_;
  const DatabaseOptions& options_;
  const bool writer_;
  const std::string file_name_;
  const uint64_t slice_calls_max_;
  sqlite3* db_ = nullptr;
  absl::flat_hash_map<std::string, sqlite3_stmt*> cache_;
  // The entry Prepare returned last, so a client that repeats its statement skips the hash: a
  // key inside cache_ (valid until cache_ changes, which clears it) and its statement.
  const std::string* last_sql_ = nullptr;
  sqlite3_stmt* last_stmt_ = nullptr;
  // sqloop's own single statements, prepared once: re-parsing them per request was most of a
  // group commit's CPU and allocations.
  absl::flat_hash_map<std::string, sqlite3_stmt*> internal_cache_;
  Request* current_ = nullptr;
  bool internal_ = false;    // Running sqloop's own statements: the authorizer allows.
  std::string denied_;       // Why the authorizer refused the current request's SQL.
  uint32_t page_reads_ = 0;  // Page reads not yet counted as a progress call.
  uint64_t calls_since_row_ = 0;
  uint64_t calls_this_slice_ = 0;
  uint64_t calls_this_request_ = 0;
  uint64_t request_calls_max_ = 0;
  Interrupt interrupted_ = Interrupt::kNone;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_CONNECTION_H_
