// db/request.h
// -----------------------------------------------------------------------------
//
// `Request` is one SQL statement submitted to a `Database` (db/database.h): caller-owned, like
// a loop::Completion, so the database never allocates per request. It carries the SQL text
// (prepared once and cached per connection), its parameters, a row callback and a completion
// callback that receives an absl::Status.
//
// A read runs on a reader connection against the newest durable snapshot, so it never waits
// for an fsync and never sees data a crash could take back; a write runs on the writer inside a
// group commit, and its completion callback is the acknowledgement: success is only reported
// once what it wrote is on disk (docs/db.md).
//
// Parameters live inline (kRequestParamsInline of them without touching the heap); text and
// blob parameters point at caller memory, which must stay valid until `on_done` ran.
//
// Example:
//
//   sqloop::db::Request insert;
//   insert.kind = sqloop::db::Request::Kind::kWrite;
//   insert.sql = "INSERT INTO kv(k, v) VALUES (?, ?)";
//   insert.params = {sqloop::db::Value::Text("k1"), sqloop::db::Value::Int(42)};
//   insert.on_done = [](sqloop::db::Request& r, absl::Status status) { ... };
//   absl::Status admitted = database.Submit(insert);
#ifndef SQLOOP_DB_REQUEST_H_
#define SQLOOP_DB_REQUEST_H_

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/intrusive_list.h"

struct sqlite3_stmt;

namespace sqloop::db {

class Database;
class Client;
class Registry;

// Parameters a request carries without a heap allocation. Eight covers the statements of the
// workloads we benchmark (key-value and small-row CRUD); more spill to the heap, counted as the
// caller's allocation, not the database's.
inline constexpr size_t kRequestParamsInline = 8;

// A parameter or column value. Text and blob point at memory owned elsewhere.
struct Value {
  enum class Type : uint8_t { kNull, kInt, kDouble, kText, kBlob };

  static Value Null() { return Value{}; }
  static Value Int(int64_t v) { return Make(Type::kInt, v, 0, {}); }
  static Value Double(double v) { return Make(Type::kDouble, 0, v, {}); }
  static Value Text(absl::string_view v) { return Make(Type::kText, 0, 0, v); }
  static Value Blob(absl::string_view v) { return Make(Type::kBlob, 0, 0, v); }
  static Value Make(Type type, int64_t i, double d, absl::string_view bytes) {
    Value value;
    value.type = type;
    value.int_value = i;
    value.double_value = d;
    value.bytes = bytes;
    return value;
  }

  Type type = Type::kNull;
  int64_t int_value = 0;
  double double_value = 0;
  absl::string_view bytes;
};

// The current row of a running statement, valid only during the row callback.
class Row {
 public:
  explicit Row(sqlite3_stmt* stmt) : stmt_(stmt) {}
  [[nodiscard]] int size() const;
  [[nodiscard]] Value::Type type(int column) const;
  [[nodiscard]] int64_t Int(int column) const;
  [[nodiscard]] double Double(int column) const;
  [[nodiscard]] absl::string_view Text(int column) const;
  [[nodiscard]] absl::string_view Blob(int column) const;
  // The column's name as the statement declares it (an alias, or the expression's text).
  [[nodiscard]] absl::string_view ColumnName(int column) const;
  // The column as a Value (text and blob point into SQLite's row buffer).
  [[nodiscard]] Value Get(int column) const;

 private:
  sqlite3_stmt* stmt_;
};

// One statement of a batch (Request::batch): its SQL and parameters, filled by the caller, and
// what it did, valid in on_done once the batch succeeded.
struct Statement {
  Statement() = default;
  // NOLINTNEXTLINE(google-explicit-constructor): a batch is written as {{sql, {params}}, ...}.
  Statement(absl::string_view sql_text, std::initializer_list<Value> values = {})
      : sql(sql_text), params(values) {}

  absl::string_view sql;  // Exactly one statement; must outlive the request.
  absl::InlinedVector<Value, kRequestParamsInline> params;
  int64_t changes = 0;            // Rows this statement changed.
  int64_t last_insert_rowid = 0;  // After this statement, if it inserted.
};

// A request's lifecycle (kIdle, kQueued, kRunning, kFetching, kAwaitingDurable, kDone) belongs
// to the Database that runs it: its diagram and transition table are in db/database.h.
//
// TenantRequest (db/registry.h) builds on a Request as a private base and re-exports every
// public member except on_done (it has its own, which receives the TenantRequest): a member
// added here is re-exported there too.
struct Request {
  // kAuto: the Database asks SQLite (sqlite3_stmt_readonly) at Submit and sets `kind` to
  // kRead or kWrite, for hosts that pass SQL through without knowing what it does. When asking
  // would make the loop wait for the disk (the schema's pages are not in memory), it sets
  // kWrite, which is correct for any statement: a read then runs in a group commit and, like a
  // write's RETURNING rows, its rows count once on_done says OK (after the group is durable);
  // its errors (a syntax error among them) come through on_done, not from Submit.
  enum class Kind : uint8_t { kRead, kWrite, kAuto };
  // kFetching: a read that stopped on bytes that were not in memory, waiting for them to be
  // read in before it runs again.
  enum class State : uint8_t { kIdle, kQueued, kRunning, kFetching, kAwaitingDurable, kDone };

  using RowCallback = void (*)(Request& request, const Row& row);
  using DoneCallback = void (*)(Request& request, absl::Status status);
  using DiscardCallback = void (*)(Request& request);

  // ---- Filled by the caller -----------------------------------------------------------------
  Kind kind = Kind::kRead;
  absl::string_view sql;  // Exactly one statement; must outlive the request.
  absl::InlinedVector<Value, kRequestParamsInline> params;
  // Optional, for a write instead of `sql` and `params`: several statements that run in order
  // as one unit, all committed or none. The first that fails stops the batch, which fails with
  // its error ("statement 2 of 3: ..."; batch_index() says which) and leaves nothing written.
  // Rows of every statement go to on_row (batch_index() says whose). Caller-owned, like `sql`.
  absl::Span<Statement> batch;
  RowCallback on_row = nullptr;  // Optional.
  // Optional: the rows `on_row` delivered so far are void and will be delivered again, because
  // the request is about to run again (its group commit was rolled back and retried, it hit
  // SQLITE_BUSY, or a read stopped on data that was not in memory). A caller that collects rows, a
  // write's RETURNING rows above all, drops what it collected here; without it such a caller sees
  // those rows twice. Never called after on_done, and never for a request that has not delivered a
  // row.
  DiscardCallback on_rows_discarded = nullptr;
  // Required: the request is done, with this status; runs exactly once per admitted Submit, on
  // the loop. Set only by the caller: a layer that runs a Request for its own request type
  // (the Registry under a TenantRequest) finishes through a private hook and leaves it alone.
  DoneCallback on_done = nullptr;
  void* user_data = nullptr;
  // Absolute deadline on the loop's clock (Loop::now_ns()); 0 means none. Checked before the
  // request starts and, through SQLite's progress handler, while its statement runs.
  int64_t deadline_ns = 0;
  // SQLite work this request may do in all (virtual machine steps); 0 takes the database's
  // DatabaseOptions::request_vm_steps_max. Over it, the request fails with ResourceExhausted.
  uint64_t vm_steps_max = 0;
  // Optional: requests of one client complete in submission order.
  Client* client = nullptr;

  // ---- Results, valid in on_done ------------------------------------------------------------
  int64_t changes = 0;            // Rows changed by a write (a batch: all its statements).
  int64_t last_insert_rowid = 0;  // After a write that inserted.
  uint64_t epoch = 0;             // The epoch whose fsync covers what the request wrote or saw.

  // Where the request is in its lifecycle (db/database.h has the diagram).
  [[nodiscard]] State state() const { return state_; }
  // In on_row, the index in `batch` of the statement whose row it is; in on_done of a batch
  // that failed in a statement, that statement's index. 0 for a single statement.
  [[nodiscard]] uint32_t batch_index() const { return batch_index_; }
  // Asks the database to stop this request. A request that has not started is stopped as it
  // would start, a running one at its next row or within kProgressOpsDefault steps; it then
  // completes with Cancelled (a write is rolled back, alone). Too late once a write committed:
  // it completes normally. Callable from on_row, where the Database may not be at hand, from
  // any loop callback, and from another thread (the flag is atomic: a host thread cancels its
  // ShardRequest running on a shard); Database::Cancel also takes a queued request out at once.
  void Cancel() { SetCancelRequested(true); }
  // Whether Cancel() was asked for and the request has not completed since.
  [[nodiscard]] bool cancel_requested() const {
    // atomic_ref needs a non-const object; nothing is written through this one.
    return std::atomic_ref<bool>(const_cast<bool&>(cancel_requested_))
        .load(std::memory_order_relaxed);
  }

 private:
  friend class Database;
  friend class Client;
  friend class Registry;  // Sets layer_done_.

  using LayerDoneCallback = void (*)(Request& request, absl::Status status);

  // Called by the Database when the request is done: the layer's hook if one is set, else the
  // caller's on_done.
  void CallDone(absl::Status status) {
    if (layer_done_ != nullptr) {
      layer_done_(*this, std::move(status));
      return;
    }
    on_done(*this, std::move(status));
  }

  // ---- A layer's hook ---------------------------------------------------------------------------
  // Set by a layer that embeds this Request in its own request type (the Registry, at Submit,
  // for a TenantRequest): the Database calls it instead of on_done, and the layer then finishes
  // its own request through that request's on_done. Null for a Request submitted directly.
  LayerDoneCallback layer_done_ = nullptr;

  // Relaxed: the flag only asks for a stop, and publishes nothing else.
  void SetCancelRequested(bool requested) {
    std::atomic_ref<bool>(cancel_requested_).store(requested, std::memory_order_relaxed);
  }

  // ---- The Database's bookkeeping -------------------------------------------------------------
  State state_ = State::kIdle;
  bool cancel_requested_ = false;  // Through cancel_requested() and SetCancelRequested only.
  uint8_t busy_retries_ = 0;
  uint8_t restarts_ = 0;  // Times it stopped on bytes not in memory (kRestartsMax).
  uint32_t batch_index_ = 0;
  bool rows_delivered_ = false;  // on_row ran since the request last started.
  uint64_t snapshot_min_ = 0;    // A read's oldest allowed snapshot (db/database.h).
  absl::Status status_;
  ListLink<Request> queue_link_;   // In one of the Database's queues.
  ListLink<Request> client_link_;  // In its Client's FIFO.
};

// A request that ran out of its budget of SQLite work (DatabaseOptions::slice_vm_steps_max or
// request_vm_steps_max, Request::vm_steps_max) fails with ResourceExhausted carrying this
// payload, so a host can tell "this statement is too expensive as written" (retrying it will
// fail again) from "the host is short of something right now" (retrying later may succeed).
inline constexpr absl::string_view kBudgetExceededPayload = "type.sqloop/budget-exceeded";
[[nodiscard]] inline bool IsBudgetExceeded(const absl::Status& status) {
  return status.code() == absl::StatusCode::kResourceExhausted &&
         status.GetPayload(kBudgetExceededPayload).has_value();
}

// `status` with its message replaced, its code and payloads kept: for an error reworded with
// where it happened ("statement 2 of 3: ..."), which must stay IsBudgetExceeded if it was.
[[nodiscard]] inline absl::Status Reworded(const absl::Status& status, absl::string_view message) {
  absl::Status reworded(status.code(), message);
  status.ForEachPayload([&reworded](absl::string_view type, const absl::Cord& payload) {
    reworded.SetPayload(type, payload);
  });
  return reworded;
}

// Requests that must complete in submission order share a Client (caller-owned, e.g. one per
// network connection). An intrusive FIFO: no allocation.
// A Client's reads see its earlier writes: a read submitted behind a write of the same client
// starts once that write is acknowledged. A Client is used with one Database at a time: a
// request whose client has requests in flight on another Database is refused at Submit. Keep
// it alive until the on_done of every request submitted with it ran (the Database delivers
// them through it, and a Registry hands its queued requests to the Database later); destroying
// it sooner stops the process with a message saying so.
class Client {
 public:
  Client() = default;
  ~Client() {
    SQLOOP_CHECK(requests_.empty() && queued_ == 0,
                 "db::Client destroyed with requests in flight; keep it until the on_done of "
                 "every request submitted with it ran");
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

 private:
  friend class Database;
  friend class Registry;
  IntrusiveList<Request, &Request::client_link_> requests_;  // Submitted, not yet delivered.
  uint32_t writes_pending_ = 0;                              // Writes among them.
  const Database* database_ = nullptr;                       // Where they run, if any.
  uint32_t queued_ = 0;  // In a Registry's tenant queue, not yet submitted to a Database.
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_REQUEST_H_
