#include "examples/http/registry_executor.h"

#include <concepts>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"

namespace sqloop::examples::http {

// Per-request state, from the pool: the registry request of the statement (or tenant action)
// running now and where the ExecutorRequest is.
struct RegistryExecutor::Job {
  db::TenantRequest tenant_request;
  RegistryExecutor* executor = nullptr;
  ExecutorRequest* request = nullptr;
  // A query of several statements runs as one batch; the vector keeps its capacity from one
  // request to the next, so a steady stream of batches stops allocating for it.
  std::vector<db::Statement> batch;
  uint64_t rows = 0;  // Budget: rows and bytes collected for the whole request.
  uint64_t bytes = 0;
  absl::Status budget_status;  // Set by OnRow once a budget is exceeded.
  bool creating = false;       // kCreateTenant: past the probe, now creating.
  Job* next_free = nullptr;
};

namespace {

// ---- Statements ----------------------------------------------------------------------------

db::Value ToDb(const Value& value) {
  switch (value.type()) {
    case Value::Type::kNull:
      return db::Value::Null();
    case Value::Type::kInteger:
      return db::Value::Int(value.integer());
    case Value::Type::kReal:
      return db::Value::Double(value.real());
    case Value::Type::kText:
      return db::Value::Text(value.bytes());
    case Value::Type::kBlob:
      return db::Value::Blob(value.bytes());
  }
  SQLOOP_CHECK(false, "RegistryExecutor: unknown value type");
  return db::Value::Null();
}

// Copies a column out of SQLite's row buffer; returns the bytes it costs against the budget.
uint64_t AppendColumn(const db::Row& row, int column, std::vector<Value>& out) {
  // A value's fixed cost: the type tag and the number.
  constexpr uint64_t kValueBytes = 8;
  switch (row.type(column)) {
    case db::Value::Type::kNull:
      out.push_back(Value::Null());
      return kValueBytes;
    case db::Value::Type::kInt:
      out.push_back(Value::Integer(row.Int(column)));
      return kValueBytes;
    case db::Value::Type::kDouble:
      out.push_back(Value::Real(row.Double(column)));
      return kValueBytes;
    case db::Value::Type::kText:
      out.push_back(Value::Text(std::string(row.Text(column))));
      return kValueBytes + out.back().bytes().size();
    case db::Value::Type::kBlob:
      out.push_back(Value::Blob(std::string(row.Blob(column))));
      return kValueBytes + out.back().bytes().size();
  }
  return kValueBytes;
}

// Whether `status` is an error SQLite reported for a statement that ran: the Database words
// every such error "SQLite: <sqlite3_errmsg>" (db/database_run.cc, Database::SqliteError).
// A batch's error carries the failed statement first ("statement 2 of 3: SQLite: ...").
bool IsSqliteError(const absl::Status& status) {
  absl::string_view message = status.message();
  if (absl::StartsWith(message, "statement ")) {
    const size_t colon = message.find(": ");
    if (colon != absl::string_view::npos) message.remove_prefix(colon + 2);
  }
  return absl::StartsWith(message, "SQLite: ");
}

// The registry's and the Database's codes, as the server's mapping (executor.h) expects them.
absl::Status MapStatus(absl::Status status, const ExecutorRequest& request) {
  const std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      if (request.kind == ExecutorRequest::Kind::kQuery) {
        return absl::NotFoundError(absl::StrCat("tenant \"", request.tenant,
                                                "\" does not exist; create it with PUT /v1/db/",
                                                request.tenant));
      }
      return absl::NotFoundError(absl::StrCat("tenant \"", request.tenant, "\" does not exist"));
    case absl::StatusCode::kPermissionDenied:  // Forbidden SQL: the client's mistake.
      return absl::InvalidArgumentError(message);
    case absl::StatusCode::kFailedPrecondition:
      // A constraint violation (SQLite's own error, see IsSqliteError) is the client's
      // conflict: 409. Any other FailedPrecondition is a refusal of a request that did not
      // run: a poisoned database (the registry reopens it), one not open, a registry shutting
      // down. They clear without the client's doing, so it should retry: 503, not 409.
      if (IsSqliteError(status)) return status;
      return absl::UnavailableError(absl::StrCat("the request did not run: ", message));
    case absl::StatusCode::kUnknown:  // The Database's "outcome unknown" (fsync failed).
      // Its message says so already; say it once.
      if (absl::StartsWith(message, "outcome unknown")) return absl::DataLossError(message);
      return absl::DataLossError(absl::StrCat("outcome unknown: ", message));
    case absl::StatusCode::kDataLoss:  // A corrupt file, found at open: not an unknown outcome.
      return absl::InternalError(message);
    default:
      return status;
  }
}

}  // namespace

// ---- Creation and shutdown ---------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RegistryExecutor>> RegistryExecutor::Create(
    loop::Loop& loop, RegistryExecutorOptions options) {
  if (options.requests_in_flight_max == 0) {
    return absl::InvalidArgumentError("RegistryExecutor: requests_in_flight_max must be > 0");
  }
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(loop);
  if (!vfs.ok()) return vfs.status();
  absl::StatusOr<std::unique_ptr<db::Registry>> registry =
      db::Registry::Create(loop, **vfs, options.registry);
  if (!registry.ok()) return registry.status();
  return std::unique_ptr<RegistryExecutor>(
      new RegistryExecutor(loop, std::move(options), *std::move(vfs), *std::move(registry)));
}

RegistryExecutor::RegistryExecutor(loop::Loop& loop, RegistryExecutorOptions options,
                                   std::unique_ptr<db::Vfs> vfs,
                                   std::unique_ptr<db::Registry> registry)
    : loop_(loop),
      options_(std::move(options)),
      vfs_(std::move(vfs)),
      registry_(std::move(registry)),
      jobs_(new Job[options_.requests_in_flight_max]) {
  for (uint32_t i = options_.requests_in_flight_max; i-- > 0;) {
    jobs_[i].executor = this;
    jobs_[i].tenant_request.user_data = &jobs_[i];
    jobs_[i].next_free = free_;
    free_ = &jobs_[i];
  }
  deferred_.callback = &RegistryExecutor::OnDeferred;
  deferred_.user_data = this;
  deferred_.name = "registry executor answers";
}

RegistryExecutor::~RegistryExecutor() {
  SQLOOP_CHECK(shut_down_, "RegistryExecutor: destroyed before Shutdown() called back");
}

void RegistryExecutor::Shutdown(ShutdownCallback done, void* arg) {
  SQLOOP_CHECK(!shutting_down_, "RegistryExecutor::Shutdown: called twice");
  shutting_down_ = true;
  shutdown_done_ = done;
  shutdown_arg_ = arg;
  registry_->Shutdown(
      [](void* self_arg, absl::Status status) {
        auto& self = *static_cast<RegistryExecutor*>(self_arg);
        self.shut_down_ = true;
        self.shutdown_done_(self.shutdown_arg_, std::move(status));
      },
      this);
}

// ---- Submitting --------------------------------------------------------------------------------

void RegistryExecutor::Submit(ExecutorRequest& request) {
  SQLOOP_CHECK(request.on_done != nullptr, "RegistryExecutor::Submit: on_done is not set");
  SQLOOP_CHECK(!request.busy_, "RegistryExecutor::Submit: the request is already in flight");
  request.busy_ = true;
  in_flight_++;
  counters_.requests++;
  request.results.clear();
  if (shutting_down_) {
    Defer(request, absl::UnavailableError("the server is shutting down"));
    return;
  }
  if (absl::Status valid = ValidateTenantName(request.tenant); !valid.ok()) {
    Defer(request, std::move(valid));
    return;
  }
  if (free_ == nullptr) {
    counters_.pool_exhausted++;
    Defer(request, absl::ResourceExhaustedError(absl::StrCat(options_.requests_in_flight_max,
                                                             " requests are executing; retry")));
    return;
  }
  if (request.kind == ExecutorRequest::Kind::kQuery && request.statements.empty()) {
    Defer(request, absl::OkStatus());
    return;
  }
  Job& job = *free_;
  free_ = job.next_free;
  job.request = &request;
  job.rows = job.bytes = 0;
  job.budget_status = absl::OkStatus();
  job.creating = false;
  in_submit_ = true;
  if (request.kind == ExecutorRequest::Kind::kQuery) {
    request.results.resize(request.statements.size());
    StartQuery(job);
  } else {
    StartTenantAction(job);
  }
  in_submit_ = false;
}

// One registry request for the whole query: a single statement as it is, its kind asked of
// SQLite (kAuto), so a read runs on a durable snapshot; several as one batch, which the
// Database runs as one transaction on the writer.
void RegistryExecutor::StartQuery(Job& job) {
  const std::vector<Statement>& statements = job.request->statements;
  db::TenantRequest& r = job.tenant_request;
  r.tenant = job.request->tenant;
  r.action = db::TenantRequest::Action::kExecute;
  r.create_if_missing = false;
  r.params.clear();
  job.batch.clear();
  if (statements.size() == 1) {
    r.kind = db::Request::Kind::kAuto;
    r.sql = statements[0].sql;
    for (const Value& arg : statements[0].args) r.params.push_back(ToDb(arg));
    r.batch = {};
  } else {
    r.kind = db::Request::Kind::kWrite;
    r.sql = {};
    for (const Statement& statement : statements) {
      db::Statement& s = job.batch.emplace_back(statement.sql);
      for (const Value& arg : statement.args) s.params.push_back(ToDb(arg));
    }
    r.batch = absl::MakeSpan(job.batch);
  }
  r.on_row = &RegistryExecutor::OnRow;
  r.on_rows_discarded = &RegistryExecutor::OnRowsDiscarded;
  r.on_done = &RegistryExecutor::OnQueryDone;
  counters_.statements += statements.size();
  if (absl::Status admitted = registry_->Submit(r); !admitted.ok()) {
    // A refusal at admission is mapped like one from the registry's callback.
    Finish(job, AfterQuery(job, std::move(admitted)));
  }
}

void RegistryExecutor::StartTenantAction(Job& job) {
  db::TenantRequest& r = job.tenant_request;
  r.tenant = job.request->tenant;
  r.kind = db::Request::Kind::kWrite;
  r.sql = {};  // kExecute with no SQL and no batch: open (and create) only.
  r.params.clear();
  r.batch = {};  // The job is reused: a previous query's batch must not run here.
  r.on_row = nullptr;
  r.on_rows_discarded = nullptr;
  r.on_done = &RegistryExecutor::OnTenantActionDone;
  const bool create = job.request->kind == ExecutorRequest::Kind::kCreateTenant;
  r.action = create ? db::TenantRequest::Action::kExecute : db::TenantRequest::Action::kDelete;
  // A create first probes (open without create): only a NotFound lets it create, so an
  // existing tenant is told apart (AlreadyExists) without touching the file system here.
  r.create_if_missing = job.creating;
  if (absl::Status admitted = registry_->Submit(r); !admitted.ok()) {
    Finish(job, AfterTenantAction(job, std::move(admitted)));
  }
}

// ---- Completions -------------------------------------------------------------------------------

// The Database runs the request again (its group was retried): what it returned so far is
// void, and it will be returned anew. A write's RETURNING rows would otherwise appear twice.
void RegistryExecutor::OnRowsDiscarded(db::Request& request) {
  Job& job = *static_cast<Job*>(request.user_data);
  for (StatementResult& result : job.request->results) {
    result.rows.clear();
    result.columns.clear();
  }
  job.rows = job.bytes = 0;
  job.budget_status = absl::OkStatus();
}

void RegistryExecutor::OnRow(db::Request& request, const db::Row& row) {
  Job& job = *static_cast<Job*>(request.user_data);
  const RegistryExecutorOptions& options = job.executor->options_;
  if (!job.budget_status.ok()) return;  // Already over: skip the rest of the rows.
  StatementResult& result = job.request->results[request.batch_index()];
  const int columns = row.size();
  if (result.columns.empty()) {
    for (int i = 0; i < columns; ++i) result.columns.emplace_back(row.ColumnName(i));
  }
  if (++job.rows > options.rows_max) {
    job.budget_status = absl::InvalidArgumentError(
        absl::StrCat("more than ", options.rows_max, " rows in one request; page with LIMIT"));
    request.Cancel();  // The rest would be thrown away: stop the statement instead.
    return;
  }
  std::vector<Value>& values = result.rows.emplace_back();
  values.reserve(static_cast<size_t>(columns));
  for (int i = 0; i < columns; ++i) job.bytes += AppendColumn(row, i, values);
  if (job.bytes > options.result_bytes_max) {
    job.budget_status = absl::InvalidArgumentError(
        absl::StrCat("the result exceeds ", options.result_bytes_max, " bytes; page with LIMIT"));
    request.Cancel();
  }
}

void RegistryExecutor::OnQueryDone(db::TenantRequest& request, absl::Status status) {
  Job& job = *static_cast<Job*>(request.user_data);
  RegistryExecutor& self = *job.executor;
  self.Finish(job, self.AfterQuery(job, std::move(status)));
}

absl::Status RegistryExecutor::AfterQuery(Job& job, absl::Status status) {
  const db::TenantRequest& r = job.tenant_request;
  // A cap of the executor's own (rows, bytes) cancelled the statement: that cap is the answer.
  if (!job.budget_status.ok()) status = job.budget_status;
  if (!status.ok()) {
    status = MapStatus(std::move(status), *job.request);
    if (job.request->statements.size() == 1) return status;
    // Reworded keeps the payloads: db::IsBudgetExceeded is one, mapped to the server's own code.
    return db::Reworded(status,
                        absl::StrCat("statements[", r.batch_index(), "]: ", status.message(),
                                     " (the request is one transaction: nothing of it "
                                     "was committed)"));
  }
  std::vector<StatementResult>& results = job.request->results;
  if (job.batch.empty()) {
    const bool write = r.kind == db::Request::Kind::kWrite;
    (write ? counters_.writes : counters_.reads)++;
    results[0].rows_changed = write ? r.changes : 0;
    results[0].last_insert_id = write ? r.last_insert_rowid : 0;
  } else {
    counters_.writes += job.batch.size();
    for (size_t i = 0; i < job.batch.size(); ++i) {
      results[i].rows_changed = job.batch[i].changes;
      results[i].last_insert_id = job.batch[i].last_insert_rowid;
    }
  }
  for (const StatementResult& result : results) counters_.rows_returned += result.rows.size();
  return absl::OkStatus();
}

void RegistryExecutor::OnTenantActionDone(db::TenantRequest& request, absl::Status status) {
  Job& job = *static_cast<Job*>(request.user_data);
  RegistryExecutor& self = *job.executor;
  if (job.request->kind == ExecutorRequest::Kind::kCreateTenant && !job.creating &&
      absl::IsNotFound(status)) {
    job.creating = true;
    self.StartTenantAction(job);
    return;
  }
  self.Finish(job, AfterTenantAction(job, std::move(status)));
}

absl::Status RegistryExecutor::AfterTenantAction(const Job& job, absl::Status status) {
  if (!status.ok()) return MapStatus(std::move(status), *job.request);
  if (job.request->kind != ExecutorRequest::Kind::kCreateTenant || job.creating) return status;
  // The probe opened it: it was there. (Two creates racing may both pass the probe's NotFound;
  // both then say created, which is what happened to the file: it exists, once.)
  return absl::AlreadyExistsError(
      absl::StrCat("tenant \"", job.request->tenant, "\" already exists"));
}

// Answers from a registry callback directly; a refusal met inside Submit goes through Defer.
void RegistryExecutor::Finish(Job& job, absl::Status status) {
  ExecutorRequest& request = *job.request;
  Release(job);
  if (in_submit_) {
    Defer(request, std::move(status));
    return;
  }
  Deliver(request, std::move(status));
}

void RegistryExecutor::CancelRunning() {
  for (uint32_t i = 0; i < options_.requests_in_flight_max; ++i) {
    if (jobs_[i].request != nullptr) jobs_[i].tenant_request.Cancel();
  }
}

void RegistryExecutor::Release(Job& job) {
  job.request = nullptr;
  job.next_free = free_;
  free_ = &job;
}

void RegistryExecutor::Deliver(ExecutorRequest& request, absl::Status status) {
  if (!status.ok()) {
    counters_.errors++;
    request.results.clear();
  }
  in_flight_--;
  request.busy_ = false;
  request.on_done(request, std::move(status));  // May Submit again, or reuse the request.
}

void RegistryExecutor::Defer(ExecutorRequest& request, absl::Status status) {
  request.status_ = std::move(status);
  deferred_list_.PushBack(request);
  // Asking again before the delivery ran changes nothing; while it runs, deferred_ is idle again.
  if (deferred_.state() == loop::Completion::State::kIdle) loop_.NextTick(deferred_);
}

loop::Action RegistryExecutor::OnDeferred(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& self = *static_cast<RegistryExecutor*>(c.user_data);
  // Only what was deferred before this tick: an answer deferred by one of these on_done calls
  // waits for the next tick, as Defer asked.
  for (size_t n = self.deferred_list_.size(); n > 0; --n) {
    ExecutorRequest& request = *self.deferred_list_.PopFront();
    self.Deliver(request, std::move(request.status_));
  }
  return loop::Action::kDisarm;
}

std::vector<ExecutorStat> RegistryExecutor::Stats() const {
  const db::RegistryStats r = registry_->stats();
  return {
      {"requests", counters_.requests},
      {"errors", counters_.errors},
      {"statements", counters_.statements},
      {"reads", counters_.reads},
      {"writes", counters_.writes},
      {"rows_returned", counters_.rows_returned},
      {"pool_exhausted", counters_.pool_exhausted},
      {"in_flight", in_flight_},
      {"tenants_known", r.tenants},
      {"tenants_open", r.open},
      {"tenants_active", r.active},
      {"tenants_idle", r.idle},
      {"tenants_waiting", r.waiting},
      {"tenants_open_max", r.open_max},
      {"tenant_opens", r.opens},
      {"tenants_created", r.creations},
      {"tenants_deleted", r.deletes},
      {"tenant_idle_closes", r.idle_closes},
      {"tenant_evictions", r.evictions},
      {"registry_requests", r.requests},
      {"registry_requests_failed", r.requests_failed},
      {"registry_rejected", r.rejected},
      {"memory_bytes", r.memory_bytes},
  };
}

}  // namespace sqloop::examples::http
