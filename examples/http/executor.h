// examples/http/executor.h
// -----------------------------------------------------------------------------
//
// The interface the HTTP host (examples/http/server.h) uses to reach tenant databases: run a
// tenant's statements, create a tenant, delete one, and report figures for /v1/stats.
//
// The server never touches SQLite itself. It fills a caller-owned `ExecutorRequest`, hands it to
// `QueryExecutor::Submit()` from one of its loop callbacks, and carries on; the executor answers
// later, on the loop's thread, by calling `request.on_done(request, status)`. Two rules make
// that safe on a single-threaded loop:
//
//   1. Submit() never calls on_done from inside itself: the answer always arrives from a later
//      loop callback, so the server's state machine is never re-entered mid-transition.
//   2. The request (and everything it points to) is owned by the caller and must stay alive and
//      untouched from Submit() until on_done has run. The executor never copies or frees it.
//
// Results come back in the request: per statement its column names, rows of SQLite values (the
// five storage classes), rows changed and last insert id; or on_done's status is not OK, and
// its code the server maps to HTTP (see `ErrorFromStatus()` in examples/http/handler.h):
//
//   InvalidArgument (bad SQL, wrong argument count, ...)      400
//   NotFound (no such tenant)                                  404
//   AlreadyExists, FailedPrecondition                          409
//   ResourceExhausted with db::IsBudgetExceeded (a statement   422 budget_exceeded, no retry
//     ran out of its budget of SQLite work: it would again)
//   ResourceExhausted, Unavailable (short of jobs, busy)       503, with Retry-After
//   DataLoss (fsync failed: the outcome is unknown), others    500, with the message
//
// The implementation is `RegistryExecutor` (examples/http/registry_executor.h), over the tenant
// registry (db/registry.h): one registry request per query (several statements go as one batch,
// one transaction), on_done from the registry's completion (see its header); tests implement
// the interface with executors that hold requests.
//
// Example:
//
//   struct Pending { bool done = false; };
//   ExecutorRequest request;
//   request.kind = ExecutorRequest::Kind::kQuery;
//   request.tenant = "acme";
//   request.statements.push_back({.sql = "SELECT ?1 + 1", .args = {Value::Integer(41)}});
//   Pending pending;
//   request.user_data = &pending;
//   request.on_done = [](ExecutorRequest& r, absl::Status status) {
//     static_cast<Pending*>(r.user_data)->done = true;  // status.ok(): r.results is filled
//   };
//   executor.Submit(request);
//   // ... the loop runs; on_done sees an OK status and r.results[0].rows[0][0].integer() == 42.
#ifndef SQLOOP_EXAMPLES_HTTP_EXECUTOR_H_
#define SQLOOP_EXAMPLES_HTTP_EXECUTOR_H_

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/alloc/intrusive_list.h"

namespace sqloop::examples::http {

// One SQLite value: NULL, INTEGER, REAL, TEXT or BLOB (SQLite's five storage classes).
class Value {
 public:
  enum class Type : uint8_t { kNull, kInteger, kReal, kText, kBlob };

  Value() = default;
  [[nodiscard]] static Value Null() { return Value(); }
  [[nodiscard]] static Value Integer(int64_t v) { return Value(Type::kInteger, v); }
  [[nodiscard]] static Value Real(double v) { return Value(Type::kReal, v); }
  [[nodiscard]] static Value Text(std::string v) { return Value(Type::kText, std::move(v)); }
  [[nodiscard]] static Value Blob(std::string v) { return Value(Type::kBlob, std::move(v)); }

  [[nodiscard]] Type type() const { return type_; }
  // Each accessor checks the type: reading the wrong one is a programmer error.
  [[nodiscard]] int64_t integer() const;
  [[nodiscard]] double real() const;
  // The bytes of a TEXT (UTF-8 as SQLite stored it) or a BLOB.
  [[nodiscard]] const std::string& bytes() const;

  friend bool operator==(const Value& a, const Value& b) {
    return a.type_ == b.type_ && a.data_ == b.data_;
  }

 private:
  template <typename T>
  Value(Type type, T data) : type_(type), data_(std::move(data)) {}

  Type type_ = Type::kNull;
  std::variant<std::monostate, int64_t, double, std::string> data_;
};

// One statement of a query request: SQL text with `?`/`?N` parameters, bound in order.
struct Statement {
  std::string sql;
  std::vector<Value> args;
};

// What one statement produced.
struct StatementResult {
  std::vector<std::string> columns;
  std::vector<std::vector<Value>> rows;
  // Rows the statement inserted, changed or deleted; 0 after one that changed none (a read,
  // DDL, an UPDATE that matched nothing).
  int64_t rows_changed = 0;
  // The rowid of the last row the statement inserted; 0 if it inserted none. Per statement,
  // never the connection's, which other clients' writes share.
  int64_t last_insert_id = 0;
};

// A caller-owned request: fill the inputs, Submit(), read the outputs in on_done. Reusable:
// Reset() clears it for the next request and keeps the vectors' capacity, so a keep-alive
// connection that sends similar requests stops allocating for them.
struct ExecutorRequest {
  enum class Kind : uint8_t { kQuery, kCreateTenant, kDeleteTenant };
  using DoneCallback = void (*)(ExecutorRequest& request, absl::Status status);

  // Inputs.
  Kind kind = Kind::kQuery;
  std::string tenant;  // Checked with ValidateTenantName() by the executor.
  // kQuery only. One transaction: all of them commit, or none does.
  std::vector<Statement> statements;
  // Required: the request is done with this status (the file comment maps its codes). Set only
  // by the caller; the executor calls it exactly once per Submit.
  DoneCallback on_done = nullptr;
  void* user_data = nullptr;

  // Outputs, valid in on_done. On error `results` is empty, nothing of the request was
  // committed, and the status's message names the statement that failed (statements[i]).
  std::vector<StatementResult> results;

  void Reset();

 private:
  friend class RegistryExecutor;

  // ---- RegistryExecutor's bookkeeping ---------------------------------------------------------
  bool busy_ = false;               // Submitted, on_done not run yet: Reset and Submit check it.
  ListLink<ExecutorRequest> link_;  // In the deferred list, while its answer waits for a tick.
  absl::Status status_;             // That answer.
};

// A figure an executor reports on /v1/stats, e.g. {"tenants_open", 3}.
struct ExecutorStat {
  const char* name;  // A static string: stats are cheap to take.
  uint64_t value;
};

class QueryExecutor {
 public:
  virtual ~QueryExecutor() = default;

  // Starts `request` (see the file comment for the two rules). Never blocks on the network and
  // never calls on_done before it returns. Checks that on_done is set and the request is idle.
  virtual void Submit(ExecutorRequest& request) = 0;

  // A short name for /v1/stats, e.g. "registry".
  [[nodiscard]] virtual absl::string_view name() const = 0;
  // Counters for /v1/stats.
  [[nodiscard]] virtual std::vector<ExecutorStat> Stats() const = 0;
  // Requests submitted whose on_done has not run yet. Shutdown waits for this to reach 0.
  [[nodiscard]] virtual uint64_t in_flight() const = 0;
  // Asks every request in flight to stop soon: each still completes (on_done runs), with
  // Cancelled unless it had already committed. The server calls it when it stops, so a stop
  // does not wait for long statements. An executor whose statements are short may ignore it.
  virtual void CancelRunning() {}
};

// The longest tenant name: 64 characters keeps a file name (plus "-wal") well under NAME_MAX
// (255) and a URL short, and is more than any tenant id we have seen needs.
inline constexpr size_t kTenantNameBytesMax = 64;

// Accepts 1..kTenantNameBytesMax characters from [a-z0-9_-]. Anything else ('..', '/', upper
// case, control characters, the empty name) is InvalidArgument with a message saying which rule
// was broken. Such a name is safe to use as a file name inside a data directory.
[[nodiscard]] absl::Status ValidateTenantName(absl::string_view name);

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_EXECUTOR_H_
