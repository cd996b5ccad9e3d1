// A Database's SQLite connection: configuration, the authorizer and progress handler, the
// statement cache, preparing and binding, and error mapping. See connection.h.
#include "sqloop/db/internal/connection.h"

#include <sqlite3.h>

#include <cstring>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sqloop/db/internal/sql_policy.h"
#include "sqloop/db/utf8.h"

namespace sqloop::db::internal {
namespace {

// sqlite3_limit values for request connections. Each is far above what a reasonable statement
// needs and far below what lets one request exhaust a shared host.
constexpr int kLimitColumns = 2000;         // SQLite's default; wide tables are a schema smell.
constexpr int kLimitExprDepth = 1000;       // SQLite's default; bounds parser recursion.
constexpr int kLimitCompoundSelect = 100;   // Hundreds of UNIONs are a generated-SQL bug.
constexpr int kLimitVdbeOps = 250'000'000;  // Interpreted program size bound.
constexpr int kLimitFunctionArgs = 100;
constexpr int kLimitLikePatternBytes = 50'000;
constexpr int kLimitVariableNumber = 999;  // The classic SQLite bound for ?NNN.
constexpr int kLimitTriggerDepth = 100;
constexpr int kLimitAttached = 0;  // ATTACH is disabled anyway.
// Room beside a value of value_bytes_max in one row: the record header (a varint per column)
// and a few small columns.
constexpr int kRecordOverheadBytes = 512;

}  // namespace

Connection::Connection(loop::Loop& loop, const DatabaseOptions& options, bool writer,
                       std::string file_name)
    : loop_(loop),
      options_(options),
      writer_(writer),
      file_name_(std::move(file_name)),
      slice_calls_max_(CallsFor(options.slice_vm_steps_max)) {}

Connection::~Connection() { Close(); }

// ---- Opening and closing ----------------------------------------------------------------------

int Connection::Open(const char* path, const char* vfs_name) {
  const int flags = writer_ ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
  // A connection lives on its loop's thread and is never touched from another, so it needs no
  // mutex of its own: SQLite's serialized mode would lock and unlock one around every call.
  return sqlite3_open_v2(path, &db_, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, vfs_name);
}

absl::Status Connection::Configure() {
  sqlite3_extended_result_codes(db_, 1);
  // Defensive: no writable_schema tricks, no direct shadow-table writes; no extensions.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  // Keep the WAL across close (the writer's journal_size_limit empties it): no inode per open.
  int persist_wal = 1;
  (void)sqlite3_file_control(db_, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
  // SQLite applies this limit to whole rows too, and a row holding one value of exactly
  // value_bytes_max bytes is a few bytes longer: give the record its header, so the largest
  // value a parameter may have also fits in a row (Bind refuses larger ones by name).
  sqlite3_limit(db_, SQLITE_LIMIT_LENGTH, options_.value_bytes_max + kRecordOverheadBytes);
  sqlite3_limit(db_, SQLITE_LIMIT_SQL_LENGTH, options_.sql_bytes_max);
  sqlite3_limit(db_, SQLITE_LIMIT_COLUMN, kLimitColumns);
  sqlite3_limit(db_, SQLITE_LIMIT_EXPR_DEPTH, kLimitExprDepth);
  sqlite3_limit(db_, SQLITE_LIMIT_COMPOUND_SELECT, kLimitCompoundSelect);
  sqlite3_limit(db_, SQLITE_LIMIT_VDBE_OP, kLimitVdbeOps);
  sqlite3_limit(db_, SQLITE_LIMIT_FUNCTION_ARG, kLimitFunctionArgs);
  sqlite3_limit(db_, SQLITE_LIMIT_ATTACHED, kLimitAttached);
  sqlite3_limit(db_, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, kLimitLikePatternBytes);
  sqlite3_limit(db_, SQLITE_LIMIT_VARIABLE_NUMBER, kLimitVariableNumber);
  sqlite3_limit(db_, SQLITE_LIMIT_TRIGGER_DEPTH, kLimitTriggerDepth);
  sqlite3_progress_handler(db_, kProgressOpsDefault, &Connection::Progress, this);
  return ApplySettings();
}

void Connection::RestrictToRequests() { sqlite3_set_authorizer(db_, &Connection::Authorize, this); }

// The settings every connection of the database shares (DatabaseOptions): a request cannot
// change them (db/internal/sql_policy.h), so they hold on whichever connection runs it.
absl::Status Connection::ApplySettings() {
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_FKEY, options_.foreign_keys ? 1 : 0, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, nullptr);
  if (options_.case_sensitive_like) {
    if (absl::Status s = RunInternal("PRAGMA case_sensitive_like=1"); !s.ok()) return s;
  }
  if (options_.recursive_triggers) {
    if (absl::Status s = RunInternal("PRAGMA recursive_triggers=1"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void Connection::Close() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  cache_.clear();
  last_sql_ = nullptr;
  for (auto& [sql, stmt] : internal_cache_) sqlite3_finalize(stmt);
  internal_cache_.clear();
  if (db_ != nullptr) sqlite3_close_v2(db_);
  db_ = nullptr;
}

// ---- Authorizer, progress handler and budgets ------------------------------------------------

int Connection::Authorize(void* arg, int action, const char* a, const char* b, const char* schema,
                          const char* /*unused*/) {
  auto* c = static_cast<Connection*>(arg);
  if (c->internal_) return SQLITE_OK;
  return AllowedForRequest(action, a, b, schema, c->denied_) ? SQLITE_OK : SQLITE_DENY;
}

// Counts the running request's work against its budgets, and stops it when a budget is spent,
// its deadline passed or it was cancelled. Reads the backend clock (not the per-tick cache) so
// a long statement sees time pass.
int Connection::Progress(void* arg) {
  auto* c = static_cast<Connection*>(arg);
  const Request* r = c->current_;
  if (r == nullptr) return 0;
  ++c->calls_since_row_;
  ++c->calls_this_slice_;
  ++c->calls_this_request_;
  if (r->cancel_requested()) {
    c->interrupted_ = Interrupt::kCancel;
  } else if (c->calls_since_row_ > c->slice_calls_max_) {
    c->interrupted_ = Interrupt::kSliceBudget;
  } else if (c->calls_this_request_ > c->request_calls_max_) {
    c->interrupted_ = Interrupt::kRequestBudget;
  } else if (r->deadline_ns != 0 && c->loop_.backend().NowNs() >= r->deadline_ns) {
    c->interrupted_ = Interrupt::kDeadline;
  } else {
    return 0;
  }
  return 1;
}

void Connection::ChargePageRead(void* arg) {
  constexpr uint64_t kPageReadsPerProgressCall = kProgressOpsDefault / kPageReadVmSteps;
  auto* c = static_cast<Connection*>(arg);
  if (++c->page_reads_ < kPageReadsPerProgressCall) return;
  c->page_reads_ = 0;
  if (Progress(c) != 0) sqlite3_interrupt(c->db_);
}

void Connection::BeginRequest(Request& request) {
  current_ = &request;
  denied_.clear();
  interrupted_ = Interrupt::kNone;
  page_reads_ = 0;
  calls_since_row_ = 0;
  calls_this_request_ = 0;
  request_calls_max_ =
      CallsFor(request.vm_steps_max != 0 ? request.vm_steps_max : options_.request_vm_steps_max);
}

absl::Status Connection::BudgetExceeded() const {
  absl::Status status;
  if (interrupted_ == Interrupt::kSliceBudget) {
    status = absl::ResourceExhaustedError(absl::StrCat(
        "budget exceeded: the statement ran more than ", options_.slice_vm_steps_max,
        " SQLite steps in one slice (each page it read counting as ", kPageReadVmSteps,
        "; a read between two rows, a write from start to end; "
        "DatabaseOptions::slice_vm_steps_max), and the loop serves every other request only "
        "between slices, so it was stopped. Nothing it wrote was kept. Make it cheaper (an "
        "index, a LIMIT, smaller batches) or raise the budget"));
  } else {
    const Request& r = *current_;
    status = absl::ResourceExhaustedError(absl::StrCat(
        "budget exceeded: the request ran more than ",
        r.vm_steps_max != 0 ? r.vm_steps_max : options_.request_vm_steps_max,
        " SQLite steps in all (each page it read counting as ", kPageReadVmSteps,
        "; Request::vm_steps_max, or DatabaseOptions::request_vm_steps_max), "
        "so it was stopped. Nothing it wrote was kept. Make it cheaper (an index, a LIMIT, "
        "pages of rows) or raise the budget"));
  }
  status.SetPayload(kBudgetExceededPayload, absl::Cord("vm_steps"));
  return status;
}

// ---- Error mapping ----------------------------------------------------------------------------

// SQLITE_INTERRUPT, worded by why the progress handler stopped the statement.
absl::Status Connection::InterruptError() const {
  switch (interrupted_) {
    case Interrupt::kCancel:
      return absl::CancelledError("request cancelled while its statement ran");
    case Interrupt::kSliceBudget:
    case Interrupt::kRequestBudget:
      return BudgetExceeded();
    case Interrupt::kDeadline:
    case Interrupt::kNone:
      break;
  }
  return absl::DeadlineExceededError(
      "request deadline passed while its statement ran; it was rolled back");
}

absl::Status Connection::Error(int rc) const {
  const std::string message = absl::StrCat("SQLite: ", sqlite3_errmsg(db_));
  if (!denied_.empty()) {
    // The authorizer refused part of the statement (SQLite reports some refusals, such as a
    // function, as a plain SQLITE_ERROR).
    return absl::PermissionDeniedError(absl::StrCat(denied_, " (", message, ")"));
  }
  switch (rc & 0xff) {
    case SQLITE_INTERRUPT:
      return InterruptError();
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(message);
    case SQLITE_CONSTRAINT:
      return absl::FailedPreconditionError(message);
    case SQLITE_READONLY:
      if (!writer_) {
        // Readers are opened read-only, so SQLite itself refuses any write a read request
        // attempts (sqlite3_stmt_readonly would also refuse harmless reads such as
        // PRAGMA journal_mode).
        return absl::InvalidArgumentError(absl::StrCat(
            "a read request must not write (this statement does); submit it as a write (", message,
            ")"));
      }
      return absl::InvalidArgumentError(message);
    case SQLITE_ERROR:
      if (absl::StartsWith(sqlite3_errmsg(db_), "cannot VACUUM")) {
        return absl::PermissionDeniedError(absl::StrCat(
            "VACUUM is not available to requests: it rewrites the whole file outside any "
            "transaction, and sqloop runs every write inside a group commit (",
            message, ")"));
      }
      [[fallthrough]];
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
      return absl::InvalidArgumentError(message);
    case SQLITE_FULL:
      // A reader writes only temporary files; the writer may also have found the disk full.
      return absl::ResourceExhaustedError(absl::StrCat(
          message, writer_ ? " (the disk, or a temporary file: " : " (a temporary file: ",
          "a sort, a temporary index or a statement's journal would pass "
          "VfsOptions::temp_file_bytes_max; make the statement need less, e.g. an index for "
          "its ORDER BY, or raise the limit)"));
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(absl::StrCat(
          message,
          " (the database's memory limit, DatabaseOptions::tenant, or the process ran "
          "out; the request changed nothing: raise the limit or retry when load drops)"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    case SQLITE_IOERR:
      return absl::UnavailableError(absl::StrCat("I/O error: ", message));
    default:
      return absl::InternalError(message);
  }
}

// ---- Statements -------------------------------------------------------------------------------

absl::StatusOr<sqlite3_stmt*> Connection::Prepare(absl::string_view sql) {
  if (last_sql_ != nullptr && *last_sql_ == sql) return last_stmt_;
  if (auto it = cache_.find(sql); it != cache_.end()) {
    last_sql_ = &it->first;
    last_stmt_ = it->second;
    return it->second;
  }
  if (sql.size() > static_cast<size_t>(options_.sql_bytes_max)) {
    return absl::InvalidArgumentError(absl::StrCat("request SQL is ", sql.size(),
                                                   " bytes, over the limit of ",
                                                   options_.sql_bytes_max, " (sql_bytes_max)"));
  }
  denied_.clear();
  if (const size_t nul = sql.find('\0'); nul != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("request SQL holds a NUL character at byte ", nul,
                     "; SQLite would ignore everything after it. Remove it (text values belong in "
                     "parameters)"));
  }
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
  if (rc != SQLITE_OK) return Error(rc);
  if (stmt == nullptr) return absl::InvalidArgumentError("request SQL is empty (or only comments)");
  const int rest = static_cast<int>(sql.data() + sql.size() - tail);
  if (rest > 0) {
    sqlite3_stmt* extra = nullptr;
    const int extra_rc = sqlite3_prepare_v2(db_, tail, rest, &extra, nullptr);
    sqlite3_finalize(extra);
    if (extra_rc != SQLITE_OK || extra != nullptr) {
      sqlite3_finalize(stmt);
      return absl::InvalidArgumentError(absl::StrCat(
          "request SQL holds more than one statement (the second starts at byte ",
          sql.size() - static_cast<size_t>(rest), "); submit one statement per request"));
    }
  }
  if (cache_.size() >= options_.statement_cache_max) {
    // Drop an arbitrary entry: O(1), and a hot statement is simply prepared again. Never the
    // one running (a kAuto Submit from inside a row callback prepares on the writer while it
    // steps): finalizing it would pull the statement out from under sqlite3_step.
    auto victim = cache_.begin();
    if (sqlite3_stmt_busy(victim->second) != 0) ++victim;
    if (victim != cache_.end()) {
      sqlite3_finalize(victim->second);
      cache_.erase(victim);
    }
  }
  const auto added = cache_.emplace(std::string(sql), stmt).first;
  last_sql_ = &added->first;
  last_stmt_ = stmt;
  return stmt;
}

void Connection::Reset(sqlite3_stmt* stmt, absl::Span<const Value> params) {
  sqlite3_reset(stmt);
  for (const Value& v : params) {
    if (v.type == Value::Type::kText || v.type == Value::Type::kBlob) {
      sqlite3_clear_bindings(stmt);
      return;
    }
  }
}

absl::Status Connection::Bind(sqlite3_stmt* stmt, absl::Span<const Value> params) const {
  const int expected = sqlite3_bind_parameter_count(stmt);
  if (static_cast<size_t>(expected) != params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the statement has ", expected, " parameters but the request gives ", params.size()));
  }
  for (int i = 0; i < expected; ++i) {
    const Value& v = params[static_cast<size_t>(i)];
    const int index = i + 1;
    const char* bytes = v.bytes.data() != nullptr ? v.bytes.data() : "";
    if ((v.type == Value::Type::kText || v.type == Value::Type::kBlob) &&
        v.bytes.size() > static_cast<size_t>(options_.value_bytes_max)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", index, " is ", v.bytes.size(), " bytes, over the limit of ",
                       options_.value_bytes_max, " (value_bytes_max)"));
    }
    int rc = SQLITE_OK;
    switch (v.type) {
      case Value::Type::kNull:
        rc = sqlite3_bind_null(stmt, index);
        break;
      case Value::Type::kInt:
        rc = sqlite3_bind_int64(stmt, index, v.int_value);
        break;
      case Value::Type::kDouble:
        rc = sqlite3_bind_double(stmt, index, v.double_value);
        break;
      case Value::Type::kText:
        if (!IsValidUtf8(v.bytes)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "text parameter ", index, " is not valid UTF-8; pass binary data as a blob"));
        }
        rc = sqlite3_bind_text64(stmt, index, bytes, v.bytes.size(), SQLITE_STATIC, SQLITE_UTF8);
        break;
      case Value::Type::kBlob:
        rc = sqlite3_bind_blob64(stmt, index, bytes, v.bytes.size(), SQLITE_STATIC);
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("parameter ", index, " has an unknown value type"));
    }
    if (rc != SQLITE_OK) return absl::InvalidArgumentError(sqlite3_errstr(rc));
  }
  return absl::OkStatus();
}

absl::Status Connection::RunInternal(const char* sql) {
  // One statement: step a cached prepared copy (no parse, no allocation after the first run).
  // Several (setup, rollback-and-release): sqlite3_exec, which only runs off the hot path.
  const bool single = std::strchr(sql, ';') == nullptr;
  internal_ = true;  // Also while stepping: a schema change re-prepares through the authorizer.
  int rc = SQLITE_OK;
  std::string message;
  if (single) {
    sqlite3_stmt*& stmt = internal_cache_[absl::string_view(sql)];
    if (stmt == nullptr) {
      rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    }
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
      if (rc != SQLITE_OK) message = sqlite3_errmsg(db_);
      sqlite3_reset(stmt);
    } else {
      message = sqlite3_errmsg(db_);
      internal_cache_.erase(absl::string_view(sql));
    }
  } else {
    char* error = nullptr;
    rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
    if (rc != SQLITE_OK) message = error != nullptr ? error : sqlite3_errstr(rc);
    sqlite3_free(error);
  }
  internal_ = false;
  if (rc == SQLITE_OK) return absl::OkStatus();
  const int primary = rc & 0xff;
  if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) {
    return absl::DataLossError(absl::StrCat("'", file_name_,
                                            "' is not a SQLite database or is "
                                            "corrupt (",
                                            message, "); restore it from a backup"));
  }
  return absl::InternalError(absl::StrCat(sql, ": ", message));
}

int Connection::Checkpoint(int* log_frames, int* checkpointed) {
  internal_ = true;
  const int rc =
      sqlite3_wal_checkpoint_v2(db_, "main", SQLITE_CHECKPOINT_PASSIVE, log_frames, checkpointed);
  internal_ = false;
  return rc;
}

namespace {

// The start of SQLite's connection and statement objects that a read touches first; their
// layout is SQLite's, so this is a guess measured to pay (docs/multitenancy.md), not a bound.
constexpr size_t kPrefetchConnectionBytes = 1024;
constexpr size_t kPrefetchStatementBytes = 512;
constexpr size_t kCacheLineBytes = 64;

void PrefetchBytes(const void* begin, size_t bytes) {
  const auto* at = static_cast<const char*>(begin);
  if (at == nullptr) return;
  for (size_t offset = 0; offset < bytes; offset += kCacheLineBytes) {
    __builtin_prefetch(at + offset);
  }
}

}  // namespace

void Connection::Prefetch() const {
  PrefetchBytes(this, sizeof(*this));
  PrefetchBytes(db_, kPrefetchConnectionBytes);
  PrefetchBytes(last_stmt_, kPrefetchStatementBytes);
}

}  // namespace sqloop::db::internal
