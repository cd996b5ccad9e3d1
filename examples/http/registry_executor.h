// examples/http/registry_executor.h
// -----------------------------------------------------------------------------
//
// `RegistryExecutor` is the HTTP host's QueryExecutor over the tenant registry (db/registry.h):
// every statement runs through the loop's own VFS, with group commit and a durable
// acknowledgement, and nothing blocks the loop.
//
// How one ExecutorRequest maps onto the registry:
//   - kQuery with one statement: one registry request of kind kAuto, so the Database asks
//     SQLite (sqlite3_stmt_readonly) whether it writes: a read runs on a durable snapshot and
//     never waits for an fsync, a write is answered once durable. Nothing guesses from keywords.
//   - kQuery with several statements: one registry request carrying them as a batch
//     (db::Request::batch): one transaction on the writer, all committed or none, answered once
//     durable. Its reads see its own earlier writes. A failing statement fails the request,
//     names the statement (statements[i]) and leaves nothing written.
//   - Column names come from db::Row::ColumnName with the first row, so a statement that
//     returns no row reports no columns; a row's statement is Request::batch_index().
//   - kCreateTenant: an open-only request without create_if_missing first: OK means the tenant
//     exists (AlreadyExists); NotFound is followed by the same request with create_if_missing.
//     kDeleteTenant: a delete request (NotFound if it has no file).
//
// Rows a write returns (RETURNING) are taken back if the Database retries its group
// (Request::on_rows_discarded), so each appears once. last_insert_id is the rowid of the last
// row the statement inserted, 0 if it inserted none (Statement::last_insert_rowid: per
// statement, never another client's).
//
// Design invariants:
//   1. on_done runs exactly once per Submit, always from a later loop callback.
//   2. No allocation per request in steady state beyond the results themselves: per-request
//      state comes from a pool of `requests_in_flight_max` jobs allocated at Create.
//   3. Errors carry the codes the server maps (executor.h): InvalidArgument (bad name, SQL
//      errors, forbidden SQL), NotFound, AlreadyExists/FailedPrecondition (an existing tenant,
//      a constraint violation), ResourceExhausted/Unavailable (no job free, shutting down, and
//      a request the Database refused without running it, e.g. poisoned by a failed fsync),
//      ResourceExhausted with the db::IsBudgetExceeded payload, passed through as it is (a
//      statement over its budget of SQLite work: the server answers 422, not 503), DataLoss
//      (the Database's "outcome unknown").
//
// Example:
//
//   RegistryExecutorOptions options;
//   options.registry.directory = "/var/lib/sqloop-http";
//   auto executor = RegistryExecutor::Create(*loop, std::move(options));
//   if (!executor.ok()) return executor.status();
//   (*executor)->Submit(request);  // request.on_done runs from a later loop callback
//   ...
//   (*executor)->Shutdown([](void*, absl::Status) { /* may destroy it now */ }, nullptr);
#ifndef SQLOOP_EXAMPLES_HTTP_REGISTRY_EXECUTOR_H_
#define SQLOOP_EXAMPLES_HTTP_REGISTRY_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "examples/http/executor.h"
#include "sqloop/db/registry.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::examples::http {

// Requests executing at once. The server runs at most one request per connection, so its
// default connection limit (1024) is the natural size; each job is a few hundred bytes.
inline constexpr uint32_t kRequestsInFlightMaxDefault = 1024;

struct RegistryExecutorOptions {
  // The registry's options; `directory` must exist.
  db::RegistryOptions registry;
  // Jobs in the pool; a request beyond them is answered ResourceExhausted (503, retry).
  uint32_t requests_in_flight_max = kRequestsInFlightMaxDefault;
  // Rows per request, and bytes of values per request: a response is built in memory, so
  // both are bounded; over either, the statement is cancelled and the request fails.
  uint32_t rows_max = 10'000;
  uint64_t result_bytes_max = uint64_t{8} << 20;
};

class RegistryExecutor final : public QueryExecutor {
 public:
  using ShutdownCallback = db::Registry::Callback;

  // Creates the VFS and the registry on `loop`.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RegistryExecutor>> Create(
      loop::Loop& loop, RegistryExecutorOptions options);
  // Checks that Shutdown() completed.
  ~RegistryExecutor() override;
  RegistryExecutor(const RegistryExecutor&) = delete;
  RegistryExecutor& operator=(const RegistryExecutor&) = delete;

  void Submit(ExecutorRequest& request) override;
  [[nodiscard]] absl::string_view name() const override { return "registry"; }
  [[nodiscard]] std::vector<ExecutorStat> Stats() const override;
  [[nodiscard]] uint64_t in_flight() const override { return in_flight_; }
  // Cancels every statement of every request in flight (Request::Cancel): O(pool), once, when
  // the host stops.
  void CancelRunning() override;

  // Refuses new requests (Unavailable), closes every tenant (Registry::Shutdown), then calls
  // `done` on the loop. Call it once in_flight() is 0; destroy the executor after `done`.
  void Shutdown(ShutdownCallback done, void* arg);

  [[nodiscard]] db::Registry& registry() { return *registry_; }
  // The VFS's counters (fsyncs, writes): what tests check durability against.
  [[nodiscard]] const db::VfsStats& vfs_stats() const { return vfs_->stats(); }

 private:
  struct Job;

  RegistryExecutor(loop::Loop& loop, RegistryExecutorOptions options, std::unique_ptr<db::Vfs> vfs,
                   std::unique_ptr<db::Registry> registry);

  void StartQuery(Job& job);
  void StartTenantAction(Job& job);
  void Finish(Job& job, absl::Status status);
  void Defer(ExecutorRequest& request, absl::Status status);
  void Deliver(ExecutorRequest& request, absl::Status status);
  void Release(Job& job);
  [[nodiscard]] absl::Status AfterQuery(Job& job, absl::Status status);
  [[nodiscard]] static absl::Status AfterTenantAction(const Job& job, absl::Status status);

  static void OnRow(db::Request& request, const db::Row& row);
  static void OnRowsDiscarded(db::Request& request);
  static void OnQueryDone(db::TenantRequest& request, absl::Status status);
  static void OnTenantActionDone(db::TenantRequest& request, absl::Status status);
  static loop::Action OnDeferred(loop::Loop& loop, loop::Completion& c);

  struct Counters {
    uint64_t requests = 0;
    uint64_t errors = 0;
    uint64_t statements = 0;
    uint64_t reads = 0;
    uint64_t writes = 0;
    uint64_t rows_returned = 0;
    uint64_t pool_exhausted = 0;
  };

  loop::Loop& loop_;
  RegistryExecutorOptions options_;
  std::unique_ptr<db::Vfs> vfs_;            // Outlives the registry's databases.
  std::unique_ptr<db::Registry> registry_;  // Destroyed before vfs_.
  std::unique_ptr<Job[]> jobs_;
  Job* free_ = nullptr;
  // Answers that did not come from the registry (refusals), delivered in the loop's next tick
  // so on_done never runs inside Submit. Linked through ExecutorRequest::link_, each with its
  // answer in ExecutorRequest::status_.
  loop::Completion deferred_;
  IntrusiveList<ExecutorRequest, &ExecutorRequest::link_> deferred_list_;
  uint64_t in_flight_ = 0;
  bool in_submit_ = false;  // Finish defers: on_done must not run inside Submit.
  bool shutting_down_ = false;
  bool shut_down_ = false;
  ShutdownCallback shutdown_done_ = nullptr;
  void* shutdown_arg_ = nullptr;
  Counters counters_;
};

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_REGISTRY_EXECUTOR_H_
