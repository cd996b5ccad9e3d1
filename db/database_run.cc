// Database: running requests. Preparing and validating a request, the write group commit, and
// stepping reads. The lifecycle, queues and acknowledgements are in database.cc.
#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/database.h"
#include "sqloop/db/internal/connection.h"
#include "sqloop/db/internal/database_files.h"

namespace sqloop::db {
namespace {

// A whole group is retried at most this often per pump (each retry drops the request that
// broke the transaction, so retries are bounded by the group size anyway).
constexpr int kGroupAttemptsMax = 8;

constexpr const char* kSavepoint = "SAVEPOINT sqloop_request";
constexpr const char* kRelease = "RELEASE sqloop_request";
constexpr const char* kRollbackToSavepoint = "ROLLBACK TO sqloop_request; RELEASE sqloop_request";

}  // namespace

// A request that must not start: cancelled before it ran, or past its deadline.
absl::Status Database::RefuseBeforeRunning(const Request& r) const {
  if (r.cancel_requested()) return absl::CancelledError("request cancelled before it ran");
  if (r.deadline_ns != 0 && loop_.now_ns() >= r.deadline_ns) {
    return absl::DeadlineExceededError("request deadline passed before it ran");
  }
  return absl::OkStatus();
}

// ---- Writes: the group commit -----------------------------------------------------------------

// Runs a write: its one statement, or each statement of its batch in order, stopping at the
// first that fails (the caller rolls the request back to its savepoint, so a batch leaves all
// or nothing). The budget covers the whole request.
absl::Status Database::ExecuteWrite(Request& r) {
  writer_->BeginRequest(r);
  r.batch_index_ = 0;
  absl::Status status;
  if (r.batch.empty()) {
    status = StepWrite(r, r.sql, r.params);
  } else {
    int64_t changes = 0;
    for (Statement& statement : r.batch) {
      status = StepWrite(r, statement.sql, statement.params);
      if (!status.ok()) {
        if (!files_->queue().has_miss()) {  // A miss is no error: the group restarts.
          status = Reworded(status, absl::StrCat("statement ", r.batch_index_ + 1, " of ",
                                                 r.batch.size(), ": ", status.message()));
        }
        break;
      }
      statement.changes = r.changes;
      statement.last_insert_rowid = r.last_insert_rowid;
      changes += r.changes;
      ++r.batch_index_;
    }
    if (status.ok()) {
      r.batch_index_ = 0;
      r.changes = changes;
    }
  }
  writer_->EndRequest();
  return status;
}

// Prepares, binds and steps one statement of `r` on the writer.
absl::Status Database::StepWrite(Request& r, absl::string_view sql,
                                 absl::Span<const Value> params) {
  // Its reads come from memory only, as a read's do: a miss stops the statement with
  // SQLITE_LOCKED, which leaves the group's transaction open (RestartGroup).
  internal::EpochQueue& queue = files_->queue();
  queue.set_reads_nowait(true, SQLITE_LOCKED);
  absl::StatusOr<sqlite3_stmt*> stmt = writer_->Prepare(sql);
  queue.set_reads_nowait(false);
  if (!stmt.ok()) return stmt.status();
  absl::Status status = writer_->Bind(*stmt, params);
  int rc = SQLITE_DONE;
  if (status.ok()) {
    // The budget runs from the statement's start to its end: RETURNING rows come only after
    // the statement has done all its work, so a write cannot yield between them.
    // SQLite keeps both counts on the connection and sets them only for rows a statement
    // inserted or changed: from zero, a statement that changed none (DDL, a SELECT, an UPDATE
    // of no row) reports none, not another request's.
    sqlite3* db = writer_->db();
    sqlite3_set_last_insert_rowid(db, 0);
    const int64_t total_changes = sqlite3_total_changes64(db);
    const internal::ReadCharge charge{&Connection::ChargePageRead, writer_.get()};
    queue.set_reads_nowait(true, SQLITE_LOCKED, nullptr, charge);
    while ((rc = sqlite3_step(*stmt)) == SQLITE_ROW) {
      queue.set_reads_nowait(false);
      DeliverRow(r, *stmt);
      queue.set_reads_nowait(true, SQLITE_LOCKED, nullptr, charge);
    }
    queue.set_reads_nowait(false);
    if (rc == SQLITE_DONE) {
      r.changes = sqlite3_total_changes64(db) != total_changes ? sqlite3_changes64(db) : 0;
      r.last_insert_rowid = sqlite3_last_insert_rowid(db);
    } else if ((rc & 0xff) == SQLITE_LOCKED && queue.has_miss()) {
      // Stopped on data not in memory: RunInGroup takes the miss and restarts the group, and
      // nobody reads this status, so no message is made for it (a miss allocates nothing).
      status = absl::UnavailableError("");
    } else {
      status = writer_->Error(rc);
    }
  }
  Connection::Reset(*stmt, params);
  last_write_rc_ = rc;
  return status;
}

void Database::Requeue(std::vector<Request*>& group, Request* current) {
  if (current != nullptr) {
    DiscardRows(*current);
    SetRequestState(*current, Request::State::kQueued);
    writes_.PushFront(*current);
  }
  for (auto it = group.rbegin(); it != group.rend(); ++it) {
    DiscardRows(**it);
    SetRequestState(**it, Request::State::kQueued);
    writes_.PushFront(**it);
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
  const uint32_t stop_after = options_.stop_group_commits_after_for_testing;
  if (stop_after != 0 && stats_.groups >= stop_after) return;  // Liveness negative control.
  // A group runs SQLite for tens to hundreds of microseconds, and a burst (hundreds of new
  // tenants committing their first tables) brings hundreds of groups into one tick. Once the
  // tick has run the loop's budget a group waits for the next tick, but only once: a group
  // put off runs wherever its next turn falls, so no flood of other work can starve it.
  if (!std::exchange(group_put_off_, false) && loop_.TickBudgetSpent()) {
    group_put_off_ = true;
    ++stats_.groups_put_off;
    ArmPump();
    return;
  }
  writer_->BeginSlice();  // Retries share the slice: the tick stays bounded.
  for (int attempt = 0; attempt < kGroupAttemptsMax && !writes_.empty() && !writer_->SliceUsed();
       ++attempt) {
    group_.clear();
    if (RunGroupOnce(group_)) {
      // Writes left in the queue wait for this group's fsync (OnFilesChanged re-arms the pump)
      // or for the write-behind buffer to drain (kBlocked). A group that failed (a
      // COMMIT that hit an I/O error or a full disk, as every one does on a device that broke
      // for good) or committed without writing leaves neither in flight, and nothing else
      // would wake the database: those writes would stay queued for ever (db_reads seed 5323).
      // They run on the next tick; a group that fails fails the writes it took, so the queue
      // drains and each write completes, with the error if the device keeps failing.
      if (!writes_.empty() && writer_state_ == WriterState::kIdle) {
        ArmPump();
      }
      return;
    }
    ++stats_.group_retries;
  }
  if (!writes_.empty()) ArmPump();
}

// One transaction for the queued writes. Returns false when the transaction was lost midway
// (an interrupt or I/O error rolled it back): the requests that had succeeded are queued again
// and the caller runs a new group.
bool Database::RunGroupOnce(std::vector<Request*>& group) {
  files_->queue().ClearBackpressure();
  // Nothing of ours in flight: an overflow of the write-behind buffer now comes from the
  // group's own syncs, so retrying the same group could only overflow again (OnOverflow).
  const bool started_idle = files_->queue().idle();
  // BEGIN reads page 1 when the writer's cache lost it (ReleaseMemory): from memory only, as
  // the statements do, unless it missed kRestartsMax times in a row or the writer's last fetch
  // failed (then it waits, and a failure is BEGIN's: FailBegin).
  files_->queue().set_reads_nowait(MayStop(begin_restarts_, group_fetch_error_));
  const int begin_rc = options_.fail_begin_for_testing ? SQLITE_NOMEM
                       : writer_->RunInternal("BEGIN IMMEDIATE").ok()
                           ? SQLITE_OK
                           : sqlite3_extended_errcode(writer_->db());
  files_->queue().set_reads_nowait(false);
  if (FetchMiss(FetchFor::kWriter, begin_rc != SQLITE_OK, begin_restarts_, stats_.group_restarts)) {
    return true;
  }
  if (begin_rc != SQLITE_OK) {
    group_fetch_error_ = absl::OkStatus();  // BEGIN's own error says it.
    FailBegin(begin_rc);
    return true;
  }
  begin_failures_ = 0;
  begin_restarts_ = 0;
  SetWriterState(WriterState::kGrouping);
  group_started_idle_ = started_idle;
  return ContinueGroup(group, nullptr);
}

// Runs queued writes in the open group (`resumed` first: the request whose fetch completed)
// until it is full, its slice used or the queue empty, then commits. Returns what
// RunGroupOnce does; true also when the group waits for a fetch (kSuspended).
bool Database::ContinueGroup(std::vector<Request*>& group, Request* resumed) {
  const uint32_t limit = group_limit_ != 0 ? group_limit_ : options_.group_requests_max;
  // Requests that ended here without joining the group (refused before running, or failed)
  // count against its size too: one that did no SQLite work uses none of the slice, so a
  // client resubmitting each at once would otherwise keep this loop going for ever.
  size_t ended = 0;
  while (resumed != nullptr || (group.size() + ended < limit && !writes_.empty())) {
    if (resumed == nullptr && writer_->SliceUsed()) {
      // The group has used its slice of the loop: commit what it has, and the rest runs as
      // the next group, after this one's fsync.
      ++stats_.groups_cut_short;
      break;
    }
    if (sqlite3_get_autocommit(writer_->db()) != 0) break;  // Ended under the group: see below.
    Request* r = resumed != nullptr ? std::exchange(resumed, nullptr) : writes_.PopFront();
    const size_t joined = group.size();
    const GroupStep step = RunInGroup(group, *r, group_started_idle_);
    if (step == GroupStep::kNext) {
      ended += group.size() == joined ? 1 : 0;
      continue;
    }
    if (step == GroupStep::kCommitNow) break;
    return step == GroupStep::kHandled || step == GroupStep::kSuspended;
  }
  if (sqlite3_get_autocommit(writer_->db()) != 0) {
    // SQLite ended the transaction under the group (after out of memory or an I/O error in a
    // RELEASE), and the loop above stopped before anything ran outside it. Nothing here
    // commits, but the group's requests are failed as "outcome unknown" rather than run again:
    // an allocator that keeps failing would otherwise retry them for ever.
    for (Request* done : group) {
      Finish(*done, absl::UnknownError("the write transaction ended under this request after "
                                       "an error; it may or may not have committed"));
    }
    group.clear();
    SetWriterState(WriterState::kIdle);
    return false;
  }
  return Commit(group, group_started_idle_);
}

// The writer's fetch completed (FetchDone) while its group waited with the transaction open:
// the request that missed runs again, then the group goes on as it would have.
void Database::ResumeGroup() {
  Request* resumed = std::exchange(group_resume_, nullptr);
  SetWriterState(WriterState::kGrouping);
  writer_->BeginSlice();
  (void)ContinueGroup(group_, resumed);
  if (!writes_.empty() && writer_state_ == WriterState::kIdle) ArmPump();
}

// Runs `r` inside the group's transaction under a savepoint of its own, and says what the
// group does next: run the next request, commit now, or stop (the group was handled: retried
// later, or lost and to be run again).
Database::GroupStep Database::RunInGroup(std::vector<Request*>& group, Request& r,
                                         bool started_idle) {
  if (absl::Status refused = RefuseBeforeRunning(r); !refused.ok()) {
    Finish(r, std::move(refused));
    return GroupStep::kNext;
  }
  // A request resumed after its fetch (ResumeGroup) is running already.
  if (r.state_ != Request::State::kRunning) SetRequestState(r, Request::State::kRunning);
  // The savepoint is what makes a request all or nothing inside the group (a batch's later
  // statement failing after earlier ones wrote): a request never runs without one.
  if (absl::Status savepoint = writer_->RunInternal(kSavepoint); !savepoint.ok()) {
    Finish(r, std::move(savepoint));
    return GroupStep::kNext;
  }
  absl::Status status = ExecuteWrite(r);
  if (status.ok()) {
    (void)writer_->RunInternal(kRelease);
    group.push_back(&r);
    return GroupStep::kNext;
  }
  if (internal::ReadMiss miss; files_->queue().TakeMiss(miss)) {
    return RestartGroup(group, r, miss);
  }
  if (files_->queue().backpressure() > 0) {
    // The write-behind buffer is full: undo the group and wait for it to drain.
    (void)writer_->RunInternal("ROLLBACK");
    OnOverflow(group, &r, started_idle);
    ++stats_.group_retries;
    return GroupStep::kHandled;
  }
  if (sqlite3_get_autocommit(writer_->db()) != 0) {
    Finish(r, std::move(status));  // It broke the transaction; it fails alone.
    Requeue(group, nullptr);
    SetWriterState(WriterState::kIdle);
    return GroupStep::kLost;
  }
  if (!writer_->RunInternal(kRollbackToSavepoint).ok()) {
    // Its writes could not be undone alone (out of memory): undo the whole group, which
    // runs again without it.
    (void)writer_->RunInternal("ROLLBACK");
    Finish(r, std::move(status));
    Requeue(group, nullptr);
    SetWriterState(WriterState::kIdle);
    return GroupStep::kLost;
  }
  const int primary = last_write_rc_ & 0xff;
  if ((primary == SQLITE_BUSY || primary == SQLITE_LOCKED) && r.busy_retries_ < kBusyRetriesMax) {
    ++r.busy_retries_;
    DiscardRows(r);
    SetRequestState(r, Request::State::kQueued);
    writes_.PushFront(r);  // Re-queued; the rest of the group commits now.
    ArmPump();
    return GroupStep::kCommitNow;
  }
  Finish(r, std::move(status));
  return GroupStep::kNext;
}

// The statement of `r`, in the group, stopped on `miss` (its steps, or its prepare's parse of
// the schema). The writer waits in kFetching for one fetch of the window. Usually SQLite ended
// only the statement (SQLITE_LOCKED), so `r` alone is undone to its savepoint and the group
// waits with its transaction open: when the fetch completes, `r` runs again and the group goes
// on (ResumeGroup), its earlier writes kept. If SQLite rolled the transaction back (a statement
// whose conflict clause is ROLLBACK does on any error) or `r` cannot be undone alone, the whole
// group goes back to the queue's front in its order and runs afresh after the fetch. `r` counts
// the restarts it caused, bounded as a read's; at the bound, or when it misses again after the
// writer's last fetch failed, it fails alone (nothing of it written) and the group goes on.
Database::GroupStep Database::RestartGroup(std::vector<Request*>& group, Request& r,
                                           const internal::ReadMiss& miss) {
  const bool undone_alone =
      sqlite3_get_autocommit(writer_->db()) == 0 && writer_->RunInternal(kRollbackToSavepoint).ok();
  if (!undone_alone && sqlite3_get_autocommit(writer_->db()) == 0) {
    (void)writer_->RunInternal("ROLLBACK");
  }
  absl::Status failed;
  if (!group_fetch_error_.ok()) {
    failed = std::exchange(group_fetch_error_, absl::OkStatus());
  } else if (r.restarts_ >= kRestartsMax) {
    failed = absl::UnavailableError(absl::StrCat(
        "the write stopped ", kRestartsMax,
        " times on data that was not in memory, although each time it was read in: the page "
        "cache does not keep what this write needs (is the machine short of memory?); nothing "
        "was written. Retry later, or write less in one request"));
  }
  if (!failed.ok()) {
    Finish(r, std::move(failed));
    if (undone_alone) return GroupStep::kNext;
    Requeue(group, nullptr);
    SetWriterState(WriterState::kIdle);
    return GroupStep::kHandled;
  }
  ++r.restarts_;
  ++stats_.group_restarts;
  StartFetch(FetchFor::kWriter, nullptr, r.restarts_, miss);
  if (undone_alone) {
    DiscardRows(r);
    group_resume_ = &r;
    SetWriterState(WriterState::kFetching);
    return GroupStep::kSuspended;
  }
  Requeue(group, &r);
  SetWriterState(WriterState::kFetching);
  return GroupStep::kHandled;
}

// BEGIN failed: out of memory (the tenant's limit), an I/O error. A transient cause clears by
// the next tick; a lasting one must not have the writer retry for ever, so after
// kBeginAttemptsMax ticks in a row the writes queued now fail with the cause.
void Database::FailBegin(int rc) {
  ++stats_.begin_failures;
  if (++begin_failures_ < kBeginAttemptsMax) {
    ArmPump();
    return;
  }
  begin_failures_ = 0;
  writer_->ClearDenied();
  const absl::Status cause = writer_->Error(rc);
  FailQueue(writes_,
            absl::Status(cause.code(),
                         absl::StrCat("could not begin a write transaction on ", kBeginAttemptsMax,
                                      " ticks in a row, so the queued writes fail "
                                      "rather than wait (nothing was written): ",
                                      cause.message())));
}

// The group overflowed the write-behind buffer and was rolled back. Its requests (and
// `current`, the one running, if any) run again once the buffer has drained. If the group
// started with nothing in flight, the overflow is the group's own doing: SQLite syncs the WAL
// header when it restarts the WAL (after a complete checkpoint), so every frame of that
// transaction is held behind that sync. The same group would overflow again for ever, so the
// next attempt takes half as many requests, and a request that overflows alone fails.
void Database::OnOverflow(std::vector<Request*>& group, Request* current, bool started_idle) {
  const size_t requests = group.size() + (current != nullptr ? 1 : 0);
  if (!started_idle || requests > 1) {
    if (started_idle) group_limit_ = static_cast<uint32_t>(requests / 2);
    Requeue(group, current);
    SetWriterState(WriterState::kBlocked);
    return;
  }
  Request* alone = current != nullptr ? current : group.front();
  group.clear();
  SetWriterState(WriterState::kBlocked);
  Finish(*alone,
         absl::ResourceExhaustedError(absl::StrCat(
             "the write needs more than the write-behind buffer holds (VfsOptions::"
             "held_bytes_max = ",
             vfs_.options().held_bytes_max,
             " bytes) in one transaction right after a checkpoint; nothing was written. Split "
             "it into smaller writes, or raise held_bytes_max")));
}

bool Database::Commit(std::vector<Request*>& group, bool started_idle) {
  group_fetch_error_ = absl::OkStatus();  // The group ran without missing again.
  if (absl::Status commit = writer_->RunInternal("COMMIT"); !commit.ok()) {
    const int rc = sqlite3_extended_errcode(writer_->db());
    (void)writer_->RunInternal("ROLLBACK");
    if (files_->queue().backpressure() > 0 && !files_->queue().poisoned()) {
      if (group.empty()) {
        SetWriterState(WriterState::kIdle);
      } else {
        OnOverflow(group, nullptr, started_idle);
      }
      ++stats_.group_retries;
      return true;
    }
    if (!files_->queue().poisoned()) {
      // SQLite saw the error from a direct write (ENOSPC, EIO) before the commit frame was
      // synced, so the group is rolled back and WAL recovery will not replay it: known failure.
      const absl::Status failed =
          (rc & 0xff) == SQLITE_FULL ? absl::ResourceExhaustedError(absl::StrCat(
                                           "disk full; nothing was committed: ", commit.message()))
                                     : absl::UnavailableError(absl::StrCat(
                                           "I/O error; nothing was committed: ", commit.message()));
      for (Request* r : group) Finish(*r, failed);
      group.clear();
      SetWriterState(WriterState::kIdle);
      return true;
    }
    for (Request* r : group) {
      Finish(*r, absl::UnknownError(absl::StrCat(
                     "outcome unknown: COMMIT failed (", commit.message(),
                     "); the group may or may not be on disk. Restart the process, open the "
                     "database and read back to find out")));
    }
    group.clear();
    SetWriterState(WriterState::kIdle);
    return true;
  }
  group_epoch_ = files_->queue().epoch();
  group_limit_ = 0;
  ++stats_.groups;
  stats_.group_requests += group.size();
  for (Request* r : group) {
    r->epoch = group_epoch_;
    Finish(*r, absl::OkStatus());
  }
  group.clear();
  // A group that wrote nothing closed no epoch: it has nothing to wait for.
  SetWriterState(group_epoch_ > files_->queue().durable_epoch() ? WriterState::kSyncing
                                                                : WriterState::kIdle);
  return true;
}

// ---- Reads: pinned snapshots --------------------------------------------------------------

// Runs between groups, so every commit is durable. Idle readers let go of their snapshots
// first (a snapshot on the WAL keeps SQLite from copying the frames after it and from
// restarting the WAL) and are pinned again, at the same state, right after. The WAL's frames
// are read from memory only, as a group's pages are: a miss stops the checkpoint (SQLite
// records no progress, and what it copied is copied again) and the writer waits in kFetching
// for the missed window, then checkpoints again; past kRestartsMax misses in a row, or after a
// failed fetch, it reads by waiting. Returns whether it copied the whole WAL.
bool Database::Checkpoint() {
  if (wal_deferred()) return true;  // Empty (invariant 5 of db/internal/file_sleep.h).
  for (auto& reader : readers_) {
    if (reader->current() == nullptr) Unpin(*reader);
  }
  int log_frames = 0;
  int checkpointed = 0;
  files_->queue().set_reads_nowait(MayStop(checkpoint_restarts_, group_fetch_error_));
  const int rc = writer_->Checkpoint(&log_frames, &checkpointed);
  files_->queue().set_reads_nowait(false);
  ++stats_.checkpoints;
  const bool missed = FetchMiss(FetchFor::kWriter, rc != SQLITE_OK, checkpoint_restarts_,
                                stats_.checkpoint_restarts);
  if (!missed) {
    checkpoint_restarts_ = 0;
    // A partial checkpoint (a busy reader holds the frames after its snapshot) is tried again
    // at the next Serve. A failed one, the write-behind buffer's refusal among them, waits for
    // the next commit (OnWalCommit): tried again at every Serve, a refused checkpoint queued
    // the same pages behind the writes of the attempt before it and was refused again, at
    // every completion that woke the database, so the buffer never drained and the loop
    // never went idle (a 16 MB insert on a loaded machine never finished).
    wal_frames_ =
        rc == SQLITE_OK ? static_cast<uint32_t>(std::max(0, log_frames - checkpointed)) : 0;
  }
  if (state_ != State::kClosing) RefreshSnapshots();  // A closing database's readers close.
  const bool copied = !missed && rc == SQLITE_OK && log_frames == checkpointed;
  stats_.checkpoints_complete += copied ? 1 : 0;
  return copied;
}

int Database::OnWalCommit(void* arg, sqlite3* /*unused*/, const char* /*unused*/, int frames) {
  static_cast<Database*>(arg)->wal_frames_ = static_cast<uint32_t>(frames);
  return SQLITE_OK;
}

// Begins a read transaction on `reader` showing the writer's last commit (group_epoch_). The
// three statements are cached, so re-pinning costs no parse and no allocation. The read of
// page 1 (the schema cookie) comes from memory only, as a read's do: a miss leaves the reader
// unpinned, and one fetch of the missed window (pin_fetching_) brings it in, after which the
// next RefreshSnapshots pins it; past kRestartsMax misses in a row, or after a failed fetch,
// the pin reads by waiting. Meanwhile reads go to the other readers or wait, and no group
// starts (Serve), so the pin lands on a durable snapshot.
bool Database::Pin(Connection& reader) {
  SQLOOP_DCHECK(reader.current() == nullptr, "Pin: a read is running on the reader");
  Unpin(reader);
  internal::EpochQueue& queue = files_->queue();
  queue.set_reads_nowait(MayStop(pin_restarts_, pin_fetch_error_));
  absl::Status status = reader.RunInternal("BEGIN");
  // A deferred BEGIN takes no snapshot; the first read of the database does.
  if (status.ok()) status = reader.RunInternal("PRAGMA schema_version");
  queue.set_reads_nowait(false);
  if (!status.ok()) {
    reader.ClearDenied();
    const absl::Status error = reader.Error(sqlite3_extended_errcode(reader.db()));
    if (sqlite3_get_autocommit(reader.db()) == 0) (void)reader.RunInternal("ROLLBACK");
    if (!FetchMiss(FetchFor::kPin, true, pin_restarts_, stats_.pin_restarts)) pin_error_ = error;
    return false;
  }
  pin_restarts_ = 0;
  pin_fetch_error_ = absl::OkStatus();
  reader.pinned = true;
  reader.snapshot = group_epoch_;
  // The exception of invariants 2 and 3 ends once a reader serves a durable snapshot again.
  if (group_epoch_ <= queue.durable_epoch()) pin_error_ = absl::OkStatus();
  ++stats_.snapshot_pins;
  return true;
}

void Database::Unpin(Connection& reader) {
  if (!reader.pinned) return;
  reader.pinned = false;
  if (sqlite3_get_autocommit(reader.db()) == 0) (void)reader.RunInternal("COMMIT");
}

// Brings idle readers up to the writer's last commit. While that commit's fsync is in flight,
// the reader showing the newest durable snapshot keeps it (invariant 2): the others become
// pending and serve from the moment the fsync completes. Then records the newest durable
// snapshot a reader shows (visible_epoch_), which lets acknowledgements up to it go out.
void Database::RefreshSnapshots() {
  const uint64_t durable = files_->queue().durable_epoch();
  const Connection* keep = nullptr;  // Stays pinned while a group syncs.
  if (group_epoch_ > durable && !options_.read_undurable_for_testing) {
    for (const auto& reader : readers_) {
      if (reader->pinned && reader->snapshot <= durable &&
          (keep == nullptr || reader->snapshot > keep->snapshot)) {
        keep = reader.get();
      }
    }
  }
  // A pin changes only its own reader, so each reader's snapshot is final after its turn.
  for (auto& reader : readers_) {
    // A running read holds its snapshot until done; after a pin missed, the others would miss
    // the same page.
    if (reader->current() == nullptr && !(reader->pinned && reader->snapshot == group_epoch_) &&
        reader.get() != keep && !pin_fetching_) {
      (void)Pin(*reader);
    }
    if (reader->pinned && reader->snapshot <= durable) {
      visible_epoch_ = std::max(visible_epoch_, reader->snapshot);
    }
  }
}

// The idle reader with the newest snapshot that `read` may run on (invariant 1), or null.
Database::Connection* Database::ReaderFor(const Request& read) {
  const uint64_t durable = files_->queue().durable_epoch();
  Connection* best = nullptr;
  for (auto& reader : readers_) {
    if (reader->current() != nullptr || !reader->pinned) continue;
    if (reader->snapshot < read.snapshot_min_) continue;
    if (reader->snapshot > durable && !options_.read_undurable_for_testing) continue;
    if (best == nullptr || reader->snapshot > best->snapshot) best = reader.get();
  }
  return best;
}

void Database::AddReaderIfAllBusy() {
  if (readers_.size() >= options_.readers || pin_fetching_) return;
  for (const auto& reader : readers_) {
    if (reader->current() == nullptr) return;
  }
  // A reader that cannot be opened (memory, an I/O error) is no failure of any read: the
  // reads wait for the readers that are open. Its open reads the file's header from memory
  // only, as Pin reads page 1, and a miss fetches it (FetchMiss).
  internal::EpochQueue& queue = files_->queue();
  queue.set_reads_nowait(MayStop(pin_restarts_, pin_fetch_error_));
  const absl::Status opened = OpenReader();
  queue.set_reads_nowait(false);
  if (opened.ok()) ++stats_.readers_opened;
  (void)FetchMiss(FetchFor::kPin, !opened.ok(), pin_restarts_, stats_.pin_restarts);
}

bool Database::AnyReaderBusy() const {
  for (const auto& reader : readers_) {
    if (reader->current() != nullptr) return true;
  }
  return false;
}

// Reads that yielded take their next slice, then queued reads start in order, each on the
// newest durable snapshot that is free, and run their first slice at once: a point read is
// answered in the tick that starts it. At most kReadsStartedPerTickMax start per tick, and
// none once the tick is read_tick_budget_ns old.
bool Database::ServeReads() {
  for (auto& reader : readers_) {
    if (reader->current() != nullptr) StepRead(*reader);
  }
  for (uint32_t started = 0; started < kReadsStartedPerTickMax; ++started) {
    Request* r = reads_.front();
    if (r == nullptr) return false;
    if (started % kReadsPerClockRead == kReadsPerClockRead - 1 &&
        loop_.TickElapsedNs() >= options_.read_tick_budget_ns) {
      ++stats_.read_ticks_cut_short;
      return true;  // The rest start on the next tick.
    }
    Connection* reader = ReaderFor(*r);
    if (reader == nullptr) {
      // A reader freed since the last commit may be pinned now, or one more may be opened.
      AddReaderIfAllBusy();
      RefreshSnapshots();
      reader = ReaderFor(*r);
    }
    if (reader == nullptr) {
      // No snapshot can be pinned (an I/O error), and nothing running will change that: the
      // read fails with the cause rather than run on an older snapshot.
      if (pin_error_.ok() || AnyReaderBusy() || group_epoch_ > files_->queue().durable_epoch()) {
        return false;  // A reader frees up, or the fsync completes (OnFilesChanged).
      }
      reads_.PopFront();
      ++stats_.reads;
      Finish(*r,
             absl::Status(pin_error_.code(), absl::StrCat("could not begin a read transaction: ",
                                                          pin_error_.message())));
      continue;
    }
    reads_.PopFront();
    StartRead(*reader, *r);
    if (reader->current() != nullptr) StepRead(*reader);
  }
  return !reads_.empty();
}

void Database::StartRead(Connection& reader, Request& r) {
  if (absl::Status refused = RefuseBeforeRunning(r); !refused.ok()) {
    Finish(r, std::move(refused));
    return;
  }
  // A first parse of the schema (after an open, or a schema change) reads it as a statement
  // reads its pages: what is not in memory stops the parse, which runs again once it is.
  internal::EpochQueue& queue = files_->queue();
  const internal::FetchesInFlight in_flight = FetchesInFlight();
  queue.set_reads_nowait(true, SQLITE_INTERRUPT, &in_flight);
  absl::StatusOr<sqlite3_stmt*> stmt = reader.Prepare(r.sql);
  queue.set_reads_nowait(false);
  if (internal::ReadMiss miss; queue.TakeMiss(miss) && !stmt.ok()) {
    RestartRead(reader, r, miss);
    return;
  }
  absl::Status status = stmt.status();
  if (status.ok()) status = reader.Bind(*stmt, r.params);
  if (!status.ok()) {
    if (stmt.ok()) sqlite3_clear_bindings(*stmt);
    Finish(r, std::move(status));
    return;
  }
  SetRequestState(r, Request::State::kRunning);
  if (group_epoch_ > files_->queue().durable_epoch()) ++stats_.reads_on_syncing;
  r.epoch = reader.snapshot;  // What the read sees is covered by this (durable) epoch.
  reader.BeginRequest(r);
  reader.read_stmt = *stmt;
}

void Database::StepRead(Connection& reader) {
  Request* r = reader.current();
  int rc = SQLITE_DONE;
  if (!r->cancel_requested()) {
    // A slice ends after rows_per_tick rows, or after the first row once the slice budget is
    // used; a single step over the budget stops the read (Progress()).
    reader.BeginSlice();
    internal::EpochQueue& queue = files_->queue();
    const internal::FetchesInFlight in_flight = FetchesInFlight();
    for (uint32_t rows = 0; rows < options_.rows_per_tick && !reader.SliceUsed(); ++rows) {
      reader.BeginRow();
      // Data not in memory stops the statement (RestartRead).
      queue.set_reads_nowait(true, SQLITE_INTERRUPT, &in_flight,
                             {&Connection::ChargePageRead, &reader});
      rc = sqlite3_step(reader.read_stmt);
      queue.set_reads_nowait(false);
      if (rc != SQLITE_ROW) break;
      DeliverRow(*r, reader.read_stmt);
      if (r->cancel_requested()) break;  // Asked from on_row: stop before the next step.
    }
    if (rc == SQLITE_ROW && !r->cancel_requested()) {
      ++stats_.read_steps_yielded;  // The snapshot stays pinned until the read is done.
      return;
    }
    internal::ReadMiss miss;
    if (queue.TakeMiss(miss) && (rc & 0xff) == SQLITE_INTERRUPT && !r->cancel_requested()) {
      RestartRead(reader, *r, miss);
      return;
    }
  }
  absl::Status status = r->cancel_requested()
                            ? absl::CancelledError("request cancelled while it ran")
                            : (rc == SQLITE_DONE ? absl::OkStatus() : reader.Error(rc));
  Connection::Reset(reader.read_stmt, r->params);
  reader.EndRequest();
  reader.read_stmt = nullptr;
  const int primary = rc & 0xff;
  if (sqlite3_get_autocommit(reader.db()) != 0 || primary == SQLITE_IOERR ||
      primary == SQLITE_CORRUPT || primary == SQLITE_NOMEM) {
    // SQLite ended the read transaction (it rolls back on an I/O error, even in a read), or
    // may have left its pager in an error state: the reader is pinned afresh. Until then it
    // counts as a reader that could not be pinned (invariant 3's exception).
    Unpin(reader);
    pin_error_ = status;
  }
  if ((primary == SQLITE_BUSY || primary == SQLITE_LOCKED) && r->busy_retries_ < kBusyRetriesMax) {
    ++r->busy_retries_;
    DiscardRows(*r);
    SetRequestState(*r, Request::State::kQueued);
    reads_.PushFront(*r);
    ArmPump();
    return;
  }
  ++stats_.reads;
  Finish(*r, std::move(status));
}

}  // namespace sqloop::db
