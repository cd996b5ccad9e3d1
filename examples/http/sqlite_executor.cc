#include "examples/http/sqlite_executor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "alloc/check.h"
#include "db/request.h"

namespace sqloop::examples::http {
namespace {

// The progress handler runs every this many VM instructions: often enough that the budget is
// enforced within a millisecond or so, rarely enough that the callback costs nothing measurable.
constexpr int kProgressSteps = 1000;

// PRAGMAs user SQL may run: they read the schema, check the file, or (user_version) keep the
// application's own schema version. Everything else (journal_mode, synchronous, writable_schema...)
// could weaken durability or corrupt the database, so the host keeps those to itself.
constexpr const char* kPragmasAllowed[] = {
    "table_info",       "table_xinfo",     "index_list",  "index_info",   "index_xinfo",
    "foreign_key_list", "integrity_check", "quick_check", "user_version",
};

// One place that turns a SQLite result code into a status a client can act on.
absl::Status StatusFromSqlite(int rc, absl::string_view message, absl::string_view where) {
  std::string text = where.empty() ? std::string(message) : absl::StrCat(where, ": ", message);
  switch (rc & 0xff) {
    case SQLITE_ERROR:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return absl::InvalidArgumentError(text);
    case SQLITE_AUTH:
      return absl::InvalidArgumentError(
          absl::StrCat(text,
                       " (ATTACH, VACUUM, transaction control and PRAGMAs that change settings are "
                       "reserved to the host; each request already runs as one transaction)"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(text);
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(text);
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(
          absl::StrCat(text, " (the outcome of this request is unknown; the tenant was closed)"));
    default:
      return absl::InternalError(text);
  }
}

absl::Status ErrnoStatus(int error, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(error)));
}

struct Finalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, Finalizer>;

// Whether `tail` (what prepare left over) holds another statement, not just space or comments.
bool HasAnotherStatement(sqlite3* db, const char* tail, const char* end) {
  sqlite3_stmt* next = nullptr;
  const int rc = sqlite3_prepare_v2(db, tail, static_cast<int>(end - tail), &next, nullptr);
  sqlite3_finalize(next);
  return rc != SQLITE_OK || next != nullptr;
}

int Bind(sqlite3_stmt* stmt, int index, const Value& value) {
  switch (value.type()) {
    case Value::Type::kNull:
      return sqlite3_bind_null(stmt, index);
    case Value::Type::kInteger:
      return sqlite3_bind_int64(stmt, index, value.integer());
    case Value::Type::kReal:
      return sqlite3_bind_double(stmt, index, value.real());
    case Value::Type::kText:
      return sqlite3_bind_text64(stmt, index, value.bytes().data(), value.bytes().size(),
                                 SQLITE_STATIC, SQLITE_UTF8);
    case Value::Type::kBlob:
      return sqlite3_bind_blob64(stmt, index, value.bytes().data(), value.bytes().size(),
                                 SQLITE_STATIC);
  }
  return SQLITE_MISUSE;
}

Value ColumnValue(sqlite3_stmt* stmt, int column) {
  switch (sqlite3_column_type(stmt, column)) {
    case SQLITE_INTEGER:
      return Value::Integer(sqlite3_column_int64(stmt, column));
    case SQLITE_FLOAT:
      return Value::Real(sqlite3_column_double(stmt, column));
    case SQLITE_TEXT: {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, column));
      return Value::Text(
          std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, column))));
    }
    case SQLITE_BLOB: {
      const auto* blob = static_cast<const char*>(sqlite3_column_blob(stmt, column));
      const auto size = static_cast<size_t>(sqlite3_column_bytes(stmt, column));
      return Value::Blob(size == 0 ? std::string() : std::string(blob, size));
    }
    default:
      return Value::Null();
  }
}

// What a value costs the result budget: its bytes, or 8 for a number or NULL.
uint64_t CostOf(const Value& value) {
  const bool has_bytes = value.type() == Value::Type::kText || value.type() == Value::Type::kBlob;
  return has_bytes ? value.bytes().size() : 8;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteExecutor>> SqliteExecutor::Create(
    loop::Loop& loop, SqliteExecutorOptions options) {
  const int dir_fd = open(options.data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data directory \"", options.data_dir, "\": ", std::strerror(errno), "; create it first"));
  }
  if (faccessat(dir_fd, ".", W_OK, AT_EACCESS) != 0) {
    close(dir_fd);
    return absl::InvalidArgumentError(
        absl::StrCat("data directory \"", options.data_dir, "\" is not writable"));
  }
  return std::unique_ptr<SqliteExecutor>(new SqliteExecutor(loop, std::move(options), dir_fd));
}

SqliteExecutor::SqliteExecutor(loop::Loop& loop, SqliteExecutorOptions options, int dir_fd)
    : loop_(loop), options_(std::move(options)), dir_fd_(dir_fd) {
  SQLOOP_CHECK(options_.tenants_open_max > 0, "SqliteExecutor: tenants_open_max must be > 0");
  run_.callback = &SqliteExecutor::OnRun;
  run_.user_data = this;
  run_.name = "sqlite executor";
}

SqliteExecutor::~SqliteExecutor() {
  SQLOOP_CHECK(queued_ == 0 && !run_armed_,
               "SqliteExecutor: destroyed with requests in flight; run the loop until they finish");
  CloseTenants();
  close(dir_fd_);
}

void SqliteExecutor::Submit(ExecutorRequest& request) {
  SQLOOP_CHECK(request.on_done != nullptr, "SqliteExecutor::Submit: on_done is not set");
  SQLOOP_CHECK(request.next == nullptr && &request != tail_,
               "SqliteExecutor::Submit: the request is already in flight");
  // The queue is bounded by the caller: the server has at most one request per connection.
  if (tail_ == nullptr) {
    head_ = &request;
  } else {
    tail_->next = &request;
  }
  tail_ = &request;
  queued_++;
  if (!run_armed_) {
    // A zero timer, not Post(): no eventfd write, and it fires on the next tick, after the
    // caller's callback has returned.
    run_armed_ = true;
    loop_.Timer(run_, absl::ZeroDuration());
  }
}

loop::Action SqliteExecutor::OnRun(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& self = *static_cast<SqliteExecutor*>(c.user_data);
  self.run_armed_ = false;
  // Take the queue as it is now: requests submitted by the on_done callbacks below (a
  // pipelined next request) wait for the next tick, so one callback's work stays bounded.
  ExecutorRequest* request = self.head_;
  self.head_ = self.tail_ = nullptr;
  while (request != nullptr) {
    ExecutorRequest* next = request->next;
    request->next = nullptr;
    self.queued_--;
    self.Run(*request);
    request->on_done(*request);  // May Submit again, or reuse the request.
    request = next;
  }
  return loop::Action::kDisarm;
}

void SqliteExecutor::Run(ExecutorRequest& request) {
  counters_.requests++;
  request.results.clear();
  request.status = ValidateTenantName(request.tenant);
  if (request.status.ok()) {
    switch (request.kind) {
      case ExecutorRequest::Kind::kQuery:
        request.status = Query(request);
        break;
      case ExecutorRequest::Kind::kCreateTenant:
        request.status = CreateTenant(request.tenant);
        break;
      case ExecutorRequest::Kind::kDeleteTenant:
        request.status = DeleteTenant(request.tenant);
        break;
    }
  }
  if (!request.status.ok()) {
    counters_.errors++;
    request.results.clear();
  }
}

std::string SqliteExecutor::PathOf(const std::string& tenant) const {
  return absl::StrCat(options_.data_dir, "/", tenant, ".db");
}

absl::Status SqliteExecutor::Exec(sqlite3* db, const char* sql) {
  trusted_sql_ = true;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  trusted_sql_ = false;
  if (rc == SQLITE_OK) return absl::OkStatus();
  return StatusFromSqlite(rc, sqlite3_errmsg(db), sql);
}

absl::Status SqliteExecutor::Query(ExecutorRequest& request) {
  absl::StatusOr<sqlite3*> db = OpenTenant(request.tenant, /*create=*/false);
  if (!db.ok()) return db.status();
  vm_steps_ = 0;
  Budget budget;
  if (absl::Status begin = Exec(*db, "BEGIN"); !begin.ok()) return begin;
  request.results.resize(request.statements.size());
  absl::Status status;
  for (size_t i = 0; i < request.statements.size() && status.ok(); i++) {
    status = RunStatement(*db, request.statements[i], i, budget, request.results[i]);
  }
  if (status.ok()) status = Exec(*db, "COMMIT");
  if (sqlite3_get_autocommit(*db) == 0) (void)Exec(*db, "ROLLBACK");
  if (status.code() == absl::StatusCode::kDataLoss) {
    // An I/O error (a failed fsync above all) leaves the handle's view of the file in doubt:
    // close it, so the next use reopens and lets WAL recovery decide what survived.
    CloseTenant(request.tenant);
  }
  return status;
}

absl::Status SqliteExecutor::RunStatement(sqlite3* db, const Statement& statement, size_t index,
                                          Budget& budget, StatementResult& result) {
  const std::string where = absl::StrCat("statements[", index, "]");
  counters_.statements++;
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  const char* end = statement.sql.data() + statement.sql.size();
  const int rc = sqlite3_prepare_v2(db, statement.sql.data(),
                                    static_cast<int>(statement.sql.size()), &raw, &tail);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) return StatusFromSqlite(rc, sqlite3_errmsg(db), where);
  if (stmt == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the SQL holds no statement"));
  }
  if (tail != nullptr && HasAnotherStatement(db, tail, end)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": the SQL holds more than one statement; give each its own entry in statements"));
  }
  const int parameters = sqlite3_bind_parameter_count(stmt.get());
  if (static_cast<size_t>(parameters) != statement.args.size()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the SQL has ", parameters,
                                                   " parameters but ", statement.args.size(),
                                                   " args were given"));
  }
  for (int i = 0; i < parameters; i++) {
    const int bind_rc = Bind(stmt.get(), i + 1, statement.args[static_cast<size_t>(i)]);
    if (bind_rc != SQLITE_OK) return StatusFromSqlite(bind_rc, sqlite3_errmsg(db), where);
  }
  const int columns = sqlite3_column_count(stmt.get());
  result.columns.clear();
  result.rows.clear();
  for (int i = 0; i < columns; i++) {
    const char* name = sqlite3_column_name(stmt.get(), i);
    result.columns.emplace_back(name != nullptr ? name : "");
    budget.bytes += result.columns.back().size();
  }
  return Step(db, stmt.get(), index, budget, result);
}

absl::Status SqliteExecutor::Step(sqlite3* db, sqlite3_stmt* stmt, size_t index, Budget& budget,
                                  StatementResult& result) {
  const std::string where = absl::StrCat("statements[", index, "]");
  const int columns = sqlite3_column_count(stmt);
  const int64_t changes_before = sqlite3_total_changes64(db);
  for (;;) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc == SQLITE_INTERRUPT) {
      // The same status the Database gives a statement over its budget, so the server maps
      // both to one answer (422 budget_exceeded: retrying would fail again).
      absl::Status over = absl::ResourceExhaustedError(absl::StrCat(
          where, ": interrupted after ", options_.vm_steps_max,
          " SQLite VM steps, the limit per request; narrow the query or split the work"));
      over.SetPayload(db::kBudgetExceededPayload, absl::Cord());
      return over;
    }
    if (rc != SQLITE_ROW) return StatusFromSqlite(rc, sqlite3_errmsg(db), where);
    if (++budget.rows > options_.rows_max) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": more than ", options_.rows_max,
                                                     " rows in one request; page with LIMIT"));
    }
    std::vector<Value>& row = result.rows.emplace_back();
    row.reserve(static_cast<size_t>(columns));
    for (int i = 0; i < columns; i++) {
      budget.bytes += CostOf(row.emplace_back(ColumnValue(stmt, i)));
    }
    if (budget.bytes > options_.result_bytes_max) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": the result exceeds ", options_.result_bytes_max, " bytes; page with LIMIT"));
    }
  }
  counters_.rows_returned += result.rows.size();
  // The difference of total changes counts what this statement (and its triggers) changed,
  // and 0 for DDL and reads, where sqlite3_changes() would repeat the previous statement's.
  result.rows_changed = sqlite3_total_changes64(db) - changes_before;
  result.last_insert_id = sqlite3_last_insert_rowid(db);
  return absl::OkStatus();
}

absl::StatusOr<sqlite3*> SqliteExecutor::OpenTenant(const std::string& tenant, bool create) {
  if (auto it = open_.find(tenant); it != open_.end()) {
    if (create) {
      return absl::AlreadyExistsError(absl::StrCat("tenant \"", tenant, "\" already exists"));
    }
    it->second.last_used = ++use_clock_;
    return it->second.db;
  }
  struct stat info;
  const std::string path = PathOf(tenant);
  const bool exists = stat(path.c_str(), &info) == 0;
  if (!exists && !create) {
    return absl::NotFoundError(
        absl::StrCat("tenant \"", tenant, "\" does not exist; create it with PUT /v1/db/", tenant));
  }
  if (exists && create) {
    return absl::AlreadyExistsError(absl::StrCat("tenant \"", tenant, "\" already exists"));
  }
  if (open_.size() >= options_.tenants_open_max) EvictOne();
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE |
                    (create ? SQLITE_OPEN_CREATE : 0);
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  absl::Status status =
      rc == SQLITE_OK ? Configure(db) : StatusFromSqlite(rc, sqlite3_errstr(rc), path);
  if (!status.ok()) {
    sqlite3_close_v2(db);
    return status;
  }
  open_[tenant] = Tenant{db, ++use_clock_};
  counters_.tenant_opens++;
  return db;
}

absl::Status SqliteExecutor::Configure(sqlite3* db) {
  // Invariant 2: user SQL stays inside this file and cannot weaken durability.
  sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);  // Also refuses VACUUM, which attaches.
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  sqlite3_set_authorizer(db, &SqliteExecutor::Authorize, this);
  // Invariant 3: a bounded amount of work per request.
  sqlite3_progress_handler(db, kProgressSteps, &SqliteExecutor::OnProgress, this);
  // WAL: readers do not block the writer and a commit is one append plus one fsync.
  // synchronous=FULL: that fsync happens before COMMIT returns, so an answer means durable.
  if (absl::Status wal = Exec(db, "PRAGMA journal_mode=WAL"); !wal.ok()) return wal;
  return Exec(db, "PRAGMA synchronous=FULL");
}

int SqliteExecutor::Authorize(void* self, int action, const char* arg1, const char* arg2,
                              const char* /*database*/, const char* /*trigger_or_view*/) {
  if (static_cast<SqliteExecutor*>(self)->trusted_sql_) return SQLITE_OK;
  switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      return SQLITE_DENY;
    case SQLITE_PRAGMA:
      // arg2 is the pragma's argument: a table name for table_info, a value for user_version.
      // Every allowed pragma is harmless with any argument.
      (void)arg2;
      for (const char* allowed : kPragmasAllowed) {
        if (arg1 != nullptr && sqlite3_stricmp(arg1, allowed) == 0) return SQLITE_OK;
      }
      return SQLITE_DENY;
    default:
      return SQLITE_OK;
  }
}

int SqliteExecutor::OnProgress(void* self) {
  auto& executor = *static_cast<SqliteExecutor*>(self);
  executor.vm_steps_ += kProgressSteps;
  return executor.vm_steps_ > executor.options_.vm_steps_max ? 1 : 0;
}

absl::Status SqliteExecutor::CreateTenant(const std::string& tenant) {
  absl::StatusOr<sqlite3*> db = OpenTenant(tenant, /*create=*/true);
  if (!db.ok()) return db.status();
  // Configure() switched the new file to WAL, which wrote its header: it is a database now.
  // Make the new directory entry durable, so an acknowledged creation survives a crash.
  counters_.tenants_created++;
  return SyncDirectory();
}

absl::Status SqliteExecutor::DeleteTenant(const std::string& tenant) {
  CloseTenant(tenant);
  const std::string path = PathOf(tenant);
  if (unlink(path.c_str()) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("tenant \"", tenant, "\" does not exist"));
    }
    return ErrnoStatus(errno, absl::StrCat("deleting ", path));
  }
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const std::string extra = absl::StrCat(path, suffix);
    if (unlink(extra.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("deleting ", extra));
    }
  }
  counters_.tenants_deleted++;
  return SyncDirectory();
}

absl::Status SqliteExecutor::SyncDirectory() const {
  if (fsync(dir_fd_) == 0) return absl::OkStatus();
  return ErrnoStatus(errno, absl::StrCat("fsync of the data directory ", options_.data_dir));
}

void SqliteExecutor::CloseTenant(const std::string& tenant) {
  auto it = open_.find(tenant);
  if (it == open_.end()) return;
  // _v2: a statement left unfinalized by a bug would otherwise make close fail and leak.
  sqlite3_close_v2(it->second.db);
  open_.erase(it);
}

void SqliteExecutor::EvictOne() {
  // O(open tenants), paid only when a tenant must be opened while the budget is full.
  auto victim = open_.begin();
  for (auto it = open_.begin(); it != open_.end(); ++it) {
    if (it->second.last_used < victim->second.last_used) victim = it;
  }
  if (victim == open_.end()) return;
  counters_.tenant_evictions++;
  sqlite3_close_v2(victim->second.db);
  open_.erase(victim);
}

void SqliteExecutor::CloseTenants() {
  for (auto& [name, tenant] : open_) sqlite3_close_v2(tenant.db);
  open_.clear();
}

std::vector<ExecutorStat> SqliteExecutor::Stats() const {
  return {
      {"requests", counters_.requests},
      {"errors", counters_.errors},
      {"statements", counters_.statements},
      {"rows_returned", counters_.rows_returned},
      {"tenants_open", open_.size()},
      {"tenants_open_max", options_.tenants_open_max},
      {"tenants_created", counters_.tenants_created},
      {"tenants_deleted", counters_.tenants_deleted},
      {"tenant_opens", counters_.tenant_opens},
      {"tenant_evictions", counters_.tenant_evictions},
      {"in_flight", queued_},
  };
}

}  // namespace sqloop::examples::http
