// Database: running requests. Preparing and validating a request, the write group commit, and
// stepping reads. The lifecycle, queues and acknowledgements are in database.cc.
#include <sqlite3.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "alloc/check.h"
#include "db/database.h"

namespace sqloop::db {
namespace {

// Structural UTF-8 check (lead byte, continuation bytes, no truncation): SQLite stores text as
// given, and invalid UTF-8 in a TEXT value breaks every client that later decodes it.
bool ValidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t length = 0;
    if (c < 0x80) {
      length = 1;
    } else if ((c >> 5) == 0x6) {
      length = 2;
    } else if ((c >> 4) == 0xe) {
      length = 3;
    } else if ((c >> 3) == 0x1e) {
      length = 4;
    }
    if (length == 0 || i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

// Setting these would change durability or locking behind sqloop's back, or block the loop
// (busy_timeout sleeps; mmap_size would bypass the VFS reads). Reading them is allowed.
constexpr const char* kManagedPragmas[] = {
    "journal_mode",         "synchronous",        "locking_mode",       "fullfsync",
    "checkpoint_fullfsync", "busy_timeout",       "mmap_size",          "temp_store_directory",
    "data_store_directory", "wal_autocheckpoint", "journal_size_limit", "secure_delete",
    "writable_schema",      "temp_store",         "cache_spill",
};

bool IsManagedPragma(const char* name) {
  for (const char* managed : kManagedPragmas) {
    if (absl::EqualsIgnoreCase(name, managed)) return true;
  }
  return false;
}

// A whole group is retried at most this often per pump (each retry drops the request that
// broke the transaction, so retries are bounded by the group size anyway).
constexpr int kGroupAttemptsMax = 8;

constexpr const char* kSavepoint = "SAVEPOINT sqloop_request";
constexpr const char* kRelease = "RELEASE sqloop_request";
constexpr const char* kRollbackToSavepoint = "ROLLBACK TO sqloop_request; RELEASE sqloop_request";

}  // namespace

// ---- Authorizer and progress handler ---------------------------------------------------------

int Database::Authorize(void* arg, int action, const char* a, const char* b, const char*,
                        const char*) {
  auto* c = static_cast<Connection*>(arg);
  if (c->internal) return SQLITE_OK;
  switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      c->denied = "ATTACH and DETACH are disabled: a request may only use its own database";
      return SQLITE_DENY;
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      c->denied =
          "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) is managed by sqloop: each "
          "write request runs in its own savepoint inside a group commit";
      return SQLITE_DENY;
    case SQLITE_PRAGMA:
      if (b != nullptr && IsManagedPragma(a)) {
        c->denied =
            "this PRAGMA changes durability or locking (journal_mode, synchronous, "
            "locking_mode, ...), which sqloop manages (WAL, synchronous=FULL, epoch "
            "barriers); requests may read it but not set it";
        return SQLITE_DENY;
      }
      return SQLITE_OK;
    case SQLITE_FUNCTION:
      if (b != nullptr && absl::EqualsIgnoreCase(b, "load_extension")) {
        c->denied = "extension loading is disabled in sqloop";
        return SQLITE_DENY;
      }
      return SQLITE_OK;
    default:
      return SQLITE_OK;
  }
}

// Reads the backend clock (not the per-tick cache) so a long statement sees time pass.
int Database::Progress(void* arg) {
  auto* c = static_cast<Connection*>(arg);
  const Request* r = c->current;
  if (r == nullptr) return 0;
  if (r->cancel_requested_) return 1;
  return r->deadline_ns != 0 && c->owner->loop_.backend().NowNs() >= r->deadline_ns ? 1 : 0;
}

// ---- Preparing and binding ------------------------------------------------------------------

absl::Status Database::SqliteError(Connection& c, int rc, const Request* request) const {
  const std::string message = absl::StrCat("SQLite: ", sqlite3_errmsg(c.db));
  if (c.denied != nullptr) {
    // The authorizer refused part of the statement (SQLite reports some refusals, such as a
    // function, as a plain SQLITE_ERROR).
    return absl::PermissionDeniedError(absl::StrCat(c.denied, " (", message, ")"));
  }
  switch (rc & 0xff) {
    case SQLITE_INTERRUPT:
      if (request != nullptr && request->cancel_requested_) {
        return absl::CancelledError("request cancelled while its statement ran");
      }
      return absl::DeadlineExceededError(
          "request deadline passed while its statement ran; it was rolled back");
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(message);
    case SQLITE_CONSTRAINT:
      return absl::FailedPreconditionError(message);
    case SQLITE_ERROR:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
    case SQLITE_READONLY:
      return absl::InvalidArgumentError(message);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(message);
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

absl::StatusOr<sqlite3_stmt*> Database::Prepare(Connection& c, const Request& request) {
  if (auto it = c.cache.find(request.sql); it != c.cache.end()) return it->second;
  if (request.sql.size() > static_cast<size_t>(options_.sql_bytes_max)) {
    return absl::InvalidArgumentError(absl::StrCat("request SQL is ", request.sql.size(),
                                                   " bytes, over the limit of ",
                                                   options_.sql_bytes_max, " (sql_bytes_max)"));
  }
  c.denied = nullptr;
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v3(c.db, request.sql.data(), static_cast<int>(request.sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
  if (rc != SQLITE_OK) return SqliteError(c, rc, &request);
  if (stmt == nullptr) return absl::InvalidArgumentError("request SQL is empty (or only comments)");
  const int rest = static_cast<int>(request.sql.data() + request.sql.size() - tail);
  if (rest > 0) {
    sqlite3_stmt* extra = nullptr;
    const int extra_rc = sqlite3_prepare_v2(c.db, tail, rest, &extra, nullptr);
    sqlite3_finalize(extra);
    if (extra_rc != SQLITE_OK || extra != nullptr) {
      sqlite3_finalize(stmt);
      return absl::InvalidArgumentError(absl::StrCat(
          "request SQL holds more than one statement (the second starts at byte ",
          request.sql.size() - static_cast<size_t>(rest), "); submit one statement per request"));
    }
  }
  if (c.cache.size() >= options_.statement_cache_max) {
    // Drop an arbitrary entry: O(1), and a hot statement is simply prepared again.
    auto victim = c.cache.begin();
    sqlite3_finalize(victim->second);
    c.cache.erase(victim);
  }
  c.cache.emplace(std::string(request.sql), stmt);
  return stmt;
}

absl::Status Database::Bind(sqlite3_stmt* stmt, const Request& request) {
  const int expected = sqlite3_bind_parameter_count(stmt);
  if (static_cast<size_t>(expected) != request.params.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the statement has ", expected,
                                                   " parameters but the request gives ",
                                                   request.params.size()));
  }
  for (int i = 0; i < expected; ++i) {
    const Value& v = request.params[static_cast<size_t>(i)];
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
        if (!ValidUtf8(v.bytes)) {
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

// ---- Writes: the group commit -----------------------------------------------------------------

absl::Status Database::ExecuteWrite(Request& r) {
  absl::StatusOr<sqlite3_stmt*> stmt = Prepare(writer_, r);
  if (!stmt.ok()) return stmt.status();
  absl::Status status = Bind(*stmt, r);
  int rc = SQLITE_DONE;
  if (status.ok()) {
    writer_.current = &r;
    while ((rc = sqlite3_step(*stmt)) == SQLITE_ROW) {
      DeliverRow(r, *stmt);
    }
    writer_.current = nullptr;
    if (rc == SQLITE_DONE) {
      r.changes = sqlite3_changes64(writer_.db);
      r.last_insert_rowid = sqlite3_last_insert_rowid(writer_.db);
    } else {
      status = SqliteError(writer_, rc, &r);
    }
  }
  sqlite3_reset(*stmt);
  sqlite3_clear_bindings(*stmt);
  last_write_rc_ = rc;
  return status;
}

void Database::Requeue(std::vector<Request*>& group, Request* current) {
  if (current != nullptr) {
    DiscardRows(*current);
    current->state_ = Request::State::kQueued;
    writes_.PushFront(current);
  }
  for (auto it = group.rbegin(); it != group.rend(); ++it) {
    DiscardRows(**it);
    (*it)->state_ = Request::State::kQueued;
    writes_.PushFront(*it);
  }
  group.clear();
}

void Database::DeliverRow(Request& r, sqlite3_stmt* stmt) {
  if (r.on_row == nullptr) return;
  r.rows_delivered_ = true;
  r.on_row(r, Row(stmt));
}

void Database::DiscardRows(Request& r) {
  if (!r.rows_delivered_) return;
  r.rows_delivered_ = false;
  if (r.on_rows_discarded != nullptr) r.on_rows_discarded(r);
}

void Database::RunGroup() {
  for (int attempt = 0; attempt < kGroupAttemptsMax && writes_.head != nullptr; ++attempt) {
    group_.clear();
    if (RunGroupOnce(group_)) return;
    ++stats_.group_retries;
  }
  if (writes_.head != nullptr) ArmPump();
}

// One transaction for the queued writes. Returns false when the transaction was lost midway
// (an interrupt or I/O error rolled it back): the requests that had succeeded are queued again
// and the caller runs a new group.
bool Database::RunGroupOnce(std::vector<Request*>& group) {
  files_->ClearBackpressure();
  // Nothing of ours in flight: an overflow of the write-behind buffer now comes from the
  // group's own syncs, so retrying the same group could only overflow again (OnOverflow).
  const bool started_idle = files_->idle();
  const uint32_t limit = group_limit_ != 0 ? group_limit_ : options_.group_requests_max;
  if (absl::Status begin = RunInternal(writer_, "BEGIN IMMEDIATE"); !begin.ok()) {
    ArmPump();  // SQLITE_BUSY or a transient error: try again on the next tick.
    return true;
  }
  while (group.size() < limit && writes_.head != nullptr) {
    Request* r = writes_.PopFront();
    if (r->deadline_ns != 0 && loop_.now_ns() >= r->deadline_ns) {
      Finish(*r, absl::DeadlineExceededError("request deadline passed before it ran"));
      continue;
    }
    r->state_ = Request::State::kRunning;
    (void)RunInternal(writer_, kSavepoint);
    absl::Status status = ExecuteWrite(*r);
    if (status.ok()) {
      (void)RunInternal(writer_, kRelease);
      group.push_back(r);
      continue;
    }
    if (files_->backpressure() > 0) {
      // The write-behind buffer is full: undo the group and wait for it to drain.
      (void)RunInternal(writer_, "ROLLBACK");
      OnOverflow(group, r, started_idle);
      ++stats_.group_retries;
      return true;
    }
    if (sqlite3_get_autocommit(writer_.db) != 0) {
      Finish(*r, std::move(status));  // It broke the transaction; it fails alone.
      Requeue(group, nullptr);
      return false;
    }
    (void)RunInternal(writer_, kRollbackToSavepoint);
    const int primary = last_write_rc_ & 0xff;
    if ((primary == SQLITE_BUSY || primary == SQLITE_LOCKED) &&
        r->busy_retries_ < kBusyRetriesMax) {
      ++r->busy_retries_;
      DiscardRows(*r);
      r->state_ = Request::State::kQueued;
      writes_.PushFront(r);  // Re-queued; the rest of the group commits now.
      ArmPump();
      break;
    }
    Finish(*r, std::move(status));
  }
  return Commit(group, started_idle);
}

// The group overflowed the write-behind buffer and was rolled back. Its requests (and
// `current`, the one running, if any) run again once the buffer has drained. If the group
// started with nothing in flight, the overflow is the group's own doing: SQLite syncs the WAL
// header when it restarts the WAL (after a complete checkpoint), so every frame of that
// transaction is held behind that sync. The same group would overflow again for ever, so the
// next attempt takes half as many requests, and a request that overflows alone fails.
void Database::OnOverflow(std::vector<Request*>& group, Request* current, bool started_idle) {
  writer_blocked_ = true;
  const size_t requests = group.size() + (current != nullptr ? 1 : 0);
  if (!started_idle || requests > 1) {
    if (started_idle) group_limit_ = static_cast<uint32_t>(requests / 2);
    Requeue(group, current);
    return;
  }
  Request* alone = current != nullptr ? current : group.front();
  group.clear();
  Finish(*alone,
         absl::ResourceExhaustedError(absl::StrCat(
             "the write needs more than the write-behind buffer holds (VfsOptions::"
             "held_bytes_max = ",
             vfs_.options().held_bytes_max,
             " bytes) in one transaction right after a checkpoint; nothing was written. Split "
             "it into smaller writes, or raise held_bytes_max")));
}

bool Database::Commit(std::vector<Request*>& group, bool started_idle) {
  if (absl::Status commit = RunInternal(writer_, "COMMIT"); !commit.ok()) {
    const int rc = sqlite3_extended_errcode(writer_.db);
    (void)RunInternal(writer_, "ROLLBACK");
    if (files_->backpressure() > 0 && !files_->poisoned()) {
      if (!group.empty()) OnOverflow(group, nullptr, started_idle);
      ++stats_.group_retries;
      return true;
    }
    if (!files_->poisoned()) {
      // SQLite saw the error from a direct write (ENOSPC, EIO) before the commit frame was
      // synced, so the group is rolled back and WAL recovery will not replay it: known failure.
      const absl::Status failed =
          (rc & 0xff) == SQLITE_FULL ? absl::ResourceExhaustedError(absl::StrCat(
                                           "disk full; nothing was committed: ", commit.message()))
                                     : absl::UnavailableError(absl::StrCat(
                                           "I/O error; nothing was committed: ", commit.message()));
      for (Request* r : group) Finish(*r, failed);
      group.clear();
      return true;
    }
    for (Request* r : group) {
      Finish(*r, absl::UnknownError(absl::StrCat(
                     "outcome unknown: COMMIT failed (", commit.message(),
                     "); the group may or may not be on disk. Restart the process, open the "
                     "database and read back to find out")));
    }
    group.clear();
    return true;
  }
  group_epoch_ = files_->epoch();
  group_limit_ = 0;
  ++stats_.groups;
  stats_.group_requests += group.size();
  for (Request* r : group) {
    r->epoch = group_epoch_;
    Finish(*r, absl::OkStatus());
  }
  group.clear();
  return true;
}

// ---- Reads ------------------------------------------------------------------------------------

void Database::StartReads() {
  for (auto& reader : readers_) {
    while (reader->current == nullptr && reads_.head != nullptr) {
      Request* r = reads_.PopFront();
      if (r->deadline_ns != 0 && loop_.now_ns() >= r->deadline_ns) {
        Finish(*r, absl::DeadlineExceededError("request deadline passed before it ran"));
        continue;
      }
      absl::StatusOr<sqlite3_stmt*> stmt = Prepare(*reader, *r);
      absl::Status status = stmt.status();
      if (status.ok() && sqlite3_stmt_readonly(*stmt) == 0) {
        status = absl::InvalidArgumentError(
            "a read request must not write (this statement does); submit it as a write");
      }
      if (status.ok()) status = Bind(*stmt, *r);
      if (!status.ok()) {
        if (stmt.ok()) sqlite3_clear_bindings(*stmt);
        Finish(*r, std::move(status));
        continue;
      }
      r->state_ = Request::State::kRunning;
      // Every commit this read can see closed its epoch before now: this epoch covers them.
      r->epoch = files_->epoch();
      reader->current = r;
      reader->stmt = *stmt;
    }
  }
}

void Database::StepReads() {
  for (auto& reader : readers_) {
    if (reader->current != nullptr) StepRead(*reader);
  }
}

void Database::StepRead(Connection& reader) {
  Request* r = reader.current;
  int rc = SQLITE_DONE;
  if (!r->cancel_requested_) {
    for (uint32_t rows = 0; rows < options_.rows_per_tick; ++rows) {
      rc = sqlite3_step(reader.stmt);
      if (rc != SQLITE_ROW) break;
      DeliverRow(*r, reader.stmt);
    }
    if (rc == SQLITE_ROW) {
      ++stats_.read_steps_yielded;  // The snapshot stays open until the next tick.
      return;
    }
  }
  absl::Status status = r->cancel_requested_
                            ? absl::CancelledError("request cancelled while it ran")
                            : (rc == SQLITE_DONE ? absl::OkStatus() : SqliteError(reader, rc, r));
  sqlite3_reset(reader.stmt);
  sqlite3_clear_bindings(reader.stmt);
  reader.current = nullptr;
  reader.stmt = nullptr;
  if ((rc & 0xff) == SQLITE_BUSY && r->busy_retries_ < kBusyRetriesMax) {
    ++r->busy_retries_;
    DiscardRows(*r);
    r->state_ = Request::State::kQueued;
    reads_.PushFront(r);
    ArmPump();
    return;
  }
  ++stats_.reads;
  Finish(*r, std::move(status));
}

}  // namespace sqloop::db
