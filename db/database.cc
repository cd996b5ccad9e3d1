#include "sqloop/db/database.h"

#include <sqlite3.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/connection.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/db/internal/file_preopen.h"     // Complete for preopen_'s destructor.
#include "sqloop/db/internal/file_sleep.h"       // And sleep_'s.
#include "sqloop/db/internal/integrity_check.h"  // And check_'s.
#include "sqloop/db/internal/vfs_core.h"

namespace sqloop::db {
namespace {

absl::Status OutcomeUnknown(const absl::Status& poison) {
  return absl::UnknownError(absl::StrCat(
      "outcome unknown: the fsync covering this request failed, so it may or may not be on "
      "disk (WAL recovery decides when a new process opens it). Restart the process, open the "
      "database and read back to find out; acknowledged requests are safe. Cause: ",
      poison.message()));
}

// Moves every element of `from` to the back of `to`, in order.
template <typename List>
void MoveAll(List& from, List& to) {
  while (auto* element = from.PopFront()) to.PushBack(*element);
}

}  // namespace

absl::Status Database::Poisoned(const absl::Status& poison) {
  return absl::FailedPreconditionError(absl::StrCat(
      "database is poisoned after a failed fsync and accepts no requests; restart the process to "
      "recover from what is durable (this process will not open it again). Cause: ",
      poison.message()));
}

// ---- Row --------------------------------------------------------------------------------------

int Row::size() const { return sqlite3_column_count(stmt_); }
Value::Type Row::type(int column) const {
  switch (sqlite3_column_type(stmt_, column)) {
    case SQLITE_INTEGER:
      return Value::Type::kInt;
    case SQLITE_FLOAT:
      return Value::Type::kDouble;
    case SQLITE_TEXT:
      return Value::Type::kText;
    case SQLITE_BLOB:
      return Value::Type::kBlob;
    default:
      return Value::Type::kNull;
  }
}
int64_t Row::Int(int column) const { return sqlite3_column_int64(stmt_, column); }
absl::string_view Row::ColumnName(int column) const {
  const char* name = sqlite3_column_name(stmt_, column);
  return name != nullptr ? absl::string_view(name) : absl::string_view();
}
double Row::Double(int column) const { return sqlite3_column_double(stmt_, column); }
absl::string_view Row::Text(int column) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  return absl::string_view(text == nullptr ? "" : text,
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}
absl::string_view Row::Blob(int column) const {
  const auto* blob = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
  return absl::string_view(blob == nullptr ? "" : blob,
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}
Value Row::Get(int column) const {
  switch (type(column)) {
    case Value::Type::kInt:
      return Value::Int(Int(column));
    case Value::Type::kDouble:
      return Value::Double(Double(column));
    case Value::Type::kText:
      return Value::Text(Text(column));
    case Value::Type::kBlob:
      return Value::Blob(Blob(column));
    case Value::Type::kNull:
      break;
  }
  return Value::Null();
}

// ---- Lifecycle --------------------------------------------------------------------------------

Database::Database(loop::Loop& loop, Vfs& vfs, std::string path, DatabaseOptions options)
    : loop_(loop),
      vfs_(vfs),
      path_(std::move(path)),
      options_(options),
      writer_(std::make_unique<Connection>(loop, options_, /*writer=*/true,
                                           std::string(internal::FileNameOf(path_)))) {
  pump_.callback = &Database::OnPump;
  pump_.user_data = this;
  // All of the database's SQLite work runs in its pump, so a stall report names the database.
  pump_.name = path_.c_str();
}

Database::~Database() {
  SQLOOP_CHECK(state_ == State::kNew || state_ == State::kClosed || state_ == State::kFailed,
               "Database destroyed while open; Close() it and run the loop until it called back");
  SQLOOP_CHECK(pump_.state() == loop::Completion::State::kIdle,
               "Database destroyed with its pump armed");
  if (destroyed_ != nullptr) *destroyed_ = true;
}

void Database::Open(Callback done, void* arg) {
  SQLOOP_CHECK(state_ == State::kNew, "Database::Open called twice");
  open_done_ = done;
  open_arg_ = arg;
  SetState(State::kOpening);
  ArmPump();
}

// The pump runs in the next drain; asking again before it ran changes nothing. While it runs
// its completion is idle again, so a pump that asks re-arms for the next tick.
void Database::ArmPump() {
  if (pump_.state() != loop::Completion::State::kIdle) return;
  loop_.NextTick(pump_);
}

loop::Action Database::OnPump(loop::Loop& /*unused*/, loop::Completion& c) {
  auto* self = static_cast<Database*>(c.user_data);
  // All of a database's SQLite work runs from its pump, so one mark here charges every byte
  // SQLite allocates for it (the VFS's calls included) to its tenant.
  alloc::ScopedTenant tenant(self->options_.tenant);
  self->in_callback_ = true;  // Sleep() refuses to run under a request's callback.
  if (self->readers_to_close_ &&
      (self->state_ == State::kReady || self->state_ == State::kPoisoned)) {
    self->CloseIdleReaders();
  }
  bool destroyed = false;
  self->destroyed_ = &destroyed;
  self->Pump();
  if (destroyed) return loop::Action::kDisarm;  // By its open or close callback.
  self->destroyed_ = nullptr;
  self->in_callback_ = false;
  return loop::Action::kDisarm;
}

void Database::OnFilesChanged(void* arg) { static_cast<Database*>(arg)->ArmPump(); }

void Database::Pump() {
  switch (state_) {
    case State::kOpening: {
      if (!files_ready_) {
        StartPreopen();  // OnPreopened re-arms.
        return;
      }
      if (!needs_check_.has_value() && WarmForCheck()) return;  // OnPreopened re-arms.
      if (!internal::VfsCore::Of(vfs_).context().MayOpenOrCloseNow()) {
        ArmPump();  // This tick has opened enough.
        return;
      }
      absl::Status status = DoOpen();
      if (!status.ok()) {
        FailOpen(std::move(status));
        return;
      }
      open_epoch_ = files_->queue().epoch();
      SetState(State::kOpenSyncing);
      [[fallthrough]];
    }
    case State::kOpenSyncing:
      if (files_->queue().poisoned()) {
        SetState(State::kPoisoned);
        FinishOpen(files_->queue().poison_status());
        return;
      }
      if (files_->queue().durable_epoch() < open_epoch_) return;  // OnFilesChanged re-arms.
      if (check_off_loop_) {
        StartCheck();  // OnChecked re-arms.
        return;
      }
      BecomeReady();
      return;
    case State::kOpenChecking:
      if (check_->state() != internal::IntegrityCheck::State::kIdle) return;
      if (!check_->status().ok()) {
        FailOpen(check_->status());
        return;
      }
      checked_ = true;
      BecomeReady();
      return;
    case State::kReady:
    case State::kPoisoned:
      if (asleep()) {
        Wake();  // OnWoken re-arms.
        return;
      }
      Serve();
      return;
    case State::kClosing:
      if (asleep() && !CloseAsleep()) return;  // OnWoken re-arms.
      FinishClose();
      return;
    case State::kNew:
    case State::kClosed:
    case State::kFailed:
      return;
  }
}

void Database::BecomeReady() {
  RefreshSnapshots();          // The readers serve from the first tick.
  files_->table().DropHead();  // SQLite has read what it reads at open.
  SetState(State::kReady);
  FinishOpen(absl::OkStatus());
  Serve();
}

bool Database::writer_open() const { return writer_->db() != nullptr; }

uint64_t Database::epoch() const { return files_ != nullptr ? files_->queue().epoch() : 0; }

uint64_t Database::durable_epoch() const {
  return files_ != nullptr ? files_->queue().durable_epoch() : 0;
}

void Database::CloseConnections() {
  readers_.clear();
  writer_->Close();
}

void Database::Close(Callback done, void* arg) {
  SQLOOP_CHECK(state_ == State::kReady || state_ == State::kPoisoned || state_ == State::kFailed,
               "Database::Close on a database that is not open");
  close_done_ = done;
  close_arg_ = arg;
  if (state_ == State::kFailed) {
    SetState(State::kClosed);
    if (done != nullptr) done(arg, absl::OkStatus());
    return;
  }
  // The queued requests fail once kClosing is entered, so that a request submitted from
  // their callbacks is refused rather than queued and cancelled in turn.
  Taken taken;
  TakeQueued(taken);
  SetState(State::kClosing);
  FailTaken(taken, absl::CancelledError("database is closing"));
  ArmPump();
}

// kClosing: wait for running reads and unacknowledged requests, checkpoint from memory only,
// close the connections (the writer's close, last, finds the WAL copied and queues its
// truncation behind barriers), then wait for the files to be durable and idle before reporting.
void Database::FinishClose() {
  if (sleep_ != nullptr && sleep_->waking()) return;  // The WAL's open: OnWalOpened re-arms.
  AckDurable();
  if (files_->queue().poisoned()) BecomePoisoned();
  for (auto& reader : readers_) {
    if (reader->current() != nullptr) {
      StepRead(*reader);
      ArmPump();
      return;
    }
  }
  if (!fetch_windows_.empty()) return;  // FetchDone re-arms.
  if (group_resume_ != nullptr) {
    ResumeGroup();  // Its requests were admitted: they run and commit before the close.
    ArmPump();
    return;
  }
  if (!awaiting_.empty()) return;  // OnFilesChanged re-arms.
  if (writer_open() || !readers_.empty()) {
    if (!internal::VfsCore::Of(vfs_).context().MayOpenOrCloseNow()) {
      ArmPump();  // This tick has closed enough.
      return;
    }
    // A writer closed while idle left the WAL to the readers, which cannot checkpoint it (they
    // are read-only): it opens again to close last, so its close checkpoints and truncates the
    // WAL, reserve included, as every close does. Its open reads from memory only; if it cannot
    // open, the next open of the database recovers the WAL instead. A WAL a wake left closed
    // is empty: nothing to copy, so the writer stays shut. A miss: FetchDone re-arms.
    if (writer_closed_idle_ && !writer_open() && state_ == State::kClosing) {
      if (!wal_deferred() && OpenWriterFromMemory().ok() && !writer_open()) return;
      writer_closed_idle_ = false;
    }
    // SQLite's own checkpoint, in the writer's close, reads the WAL by waiting: what is left of
    // it is copied first, from memory only, so that one finds nothing to copy, once the writer
    // settled (a checkpoint runs between groups: after the last group's fsync, or the drain of
    // a full write-behind buffer). If this one fails (a write error), SQLite's is skipped: the
    // WAL stays, every frame of it durable, and the next open recovers it, as after a crash; so
    // for a poisoned database, which writes nothing more.
    if (writer_open() && !close_checkpointed_) {
      if (writer_state_ != WriterState::kIdle && !close_writer_unsettled_) {
        close_writer_unsettled_ = true;
        stats_.closes_writer_unsettled++;
      }
      SettleWriter();
      const bool poisoned = files_->queue().poisoned();
      if (!poisoned && writer_state_ != WriterState::kIdle) return;  // OnFilesChanged re-arms.
      const bool copied = !poisoned && Checkpoint();
      if (writer_state_ == WriterState::kFetching) return;  // FetchDone re-arms.
      close_checkpointed_ = true;
      if (!copied) sqlite3_db_config(writer_->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    }
    CloseConnections();
  }
  if (!files_->queue().idle() && !files_->queue().poisoned()) return;
  const absl::Status result = files_->queue().poison_status();
  if (checked_ && result.ok()) {
    internal::VfsCore::Of(vfs_).context().RememberChecked(files_->main_path(),
                                                          Fingerprint(*files_));
  }
  files_->queue().RemoveListener(&Database::OnFilesChanged, this);
  internal::DatabaseFiles* files = files_;
  files_ = nullptr;
  files->Unpin();
  SetState(State::kClosed);
  if (close_done_ != nullptr) close_done_(close_arg_, result);
}

// ---- Submission -------------------------------------------------------------------------------

absl::Status Database::Submit(Request& request) {
  // A request done but still waiting behind its client's earlier ones is still linked there.
  SQLOOP_CHECK(
      (request.state_ == Request::State::kIdle || request.state_ == Request::State::kDone) &&
          !request.client_link_.linked(),
      "Database::Submit: the request is already submitted; wait for on_done");
  SQLOOP_CHECK(request.on_done != nullptr || request.layer_done_ != nullptr,
               "Database::Submit: the request has no on_done");
  if (state_ == State::kPoisoned) return Poisoned(files_->queue().poison_status());
  if (state_ != State::kReady) {
    return absl::FailedPreconditionError(
        "database is not open (Open() has not called back "
        "with OK, or Close() was called)");
  }
  if (writes_.size() + reads_.size() >= options_.queued_requests_max) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "database has ", options_.queued_requests_max,
        " requests waiting; retry after some complete (raise queued_requests_max if this is "
        "expected)"));
  }
  if (request.kind == Request::Kind::kAuto) {
    absl::StatusOr<Request::Kind> kind = KindOf(request);
    if (!kind.ok()) return kind.status();
    request.kind = *kind;
  }
  if (!request.batch.empty()) {
    if (request.kind != Request::Kind::kWrite || !request.sql.empty() || !request.params.empty()) {
      return absl::InvalidArgumentError(
          "a batch is a write and carries its statements in `batch` alone: set kind = kWrite and "
          "leave `sql` and `params` empty");
    }
    if (request.batch.size() > options_.batch_statements_max) {
      return absl::InvalidArgumentError(
          absl::StrCat("the batch has ", request.batch.size(), " statements, over the limit of ",
                       options_.batch_statements_max, " (batch_statements_max); split it"));
    }
  }
  if (const Client* client = request.client;
      client != nullptr && !client->requests_.empty() && client->database_ != this) {
    return absl::FailedPreconditionError(
        "the request's client has requests in flight on another database; a Client orders the "
        "requests of one database (one tenant): use one Client per database");
  }
  request.status_ = absl::OkStatus();
  request.batch_index_ = 0;
  request.changes = request.last_insert_rowid = 0;
  request.epoch = 0;
  request.busy_retries_ = 0;
  request.restarts_ = 0;
  request.rows_delivered_ = false;
  // Invariant 1: the read must see every write acknowledged so far.
  request.snapshot_min_ = acked_epoch_;
  SetRequestState(request, Request::State::kQueued);
  Queue* queue = request.kind == Request::Kind::kWrite ? &writes_ : &reads_;
  if (Client* client = request.client; client != nullptr) {
    if (request.kind == Request::Kind::kWrite) {
      ++client->writes_pending_;
    } else if (client->writes_pending_ > 0) {
      queue = &held_;  // Invariant 4: it starts once its client's earlier writes are acknowledged.
      ++stats_.reads_held;
    }
    client->requests_.PushBack(request);
    client->database_ = this;
  }
  queue->PushBack(request);
  ArmPump();
  return absl::OkStatus();
}

// What SQLite says the statement does, from the writer's cached prepare (a statement it will
// run later is then prepared already; a read is prepared again on its reader). A batch is a
// write whatever its statements do: it is one transaction on the writer. The prepare reads
// from memory only: one that would wait for the schema's pages (the first request after a cold
// reopen, say) runs as a write instead, whose prepare in its group stops on the miss and
// fetches it; any statement is correct there, and it completes once its group is durable.
absl::StatusOr<Request::Kind> Database::KindOf(const Request& request) {
  if (!request.batch.empty()) return Request::Kind::kWrite;
  if (asleep()) {
    ++stats_.kinds_unknown;  // No statement runs until the files are open again.
    return Request::Kind::kWrite;
  }
  // Before the writer opens (MayDeferWriter) nothing was written, so the first reader knows the
  // same schema.
  Connection& c = writer_open() ? *writer_ : *readers_.front();
  internal::EpochQueue& queue = files_->queue();
  queue.set_reads_nowait(true);
  absl::StatusOr<sqlite3_stmt*> stmt = c.Prepare(request.sql);
  queue.set_reads_nowait(false);
  if (internal::ReadMiss miss; queue.TakeMiss(miss) && !stmt.ok()) {
    // SQLITE_INTERRUPT ends the parse and leaves a transaction open; should SQLite have ended
    // a reader's anyway, the next pump pins it afresh.
    if (&c != writer_.get() && c.current() == nullptr && sqlite3_get_autocommit(c.db()) != 0) {
      Unpin(c);
    }
    ++stats_.kinds_unknown;
    return Request::Kind::kWrite;
  }
  if (!stmt.ok()) return stmt.status();
  return sqlite3_stmt_readonly(*stmt) != 0 ? Request::Kind::kRead : Request::Kind::kWrite;
}

bool Database::Cancel(Request& request) {
  if (request.state_ == Request::State::kQueued) {
    Queue* queue = writes_.Contains(request)  ? &writes_
                   : held_.Contains(request)  ? &held_
                   : reads_.Contains(request) ? &reads_
                                              : nullptr;
    // In none: a failure took it out of its queue and is delivering it (FailQueue); its
    // outcome is that failure.
    if (queue == nullptr) return false;
    queue->Remove(request);
    Finish(request, absl::CancelledError("request cancelled before it ran"));
    return true;
  }
  if ((request.state_ == Request::State::kRunning || request.state_ == Request::State::kFetching) &&
      request.kind == Request::Kind::kRead) {
    request.SetCancelRequested(true);  // The next StepRead, or its fetch's end, stops it.
    ArmPump();
    return true;
  }
  return false;
}

// ---- Completion -------------------------------------------------------------------------------

// A request's outcome is known. Failures need no fsync (nothing of theirs was committed), and
// neither does a read (its snapshot is durable); a write's success waits for its epoch to be
// durable and visible (invariant 3), which AckDurable checks.
void Database::Finish(Request& request, absl::Status status) {
  if (IsBudgetExceeded(status)) ++stats_.budget_exceeded;
  request.status_ = std::move(status);
  if (request.kind == Request::Kind::kWrite && request.status_.ok()) {
    if (!options_.ack_before_fsync_for_testing) {
      AwaitDurable(request);
      return;
    }
    acked_epoch_ = std::max(acked_epoch_, request.epoch);
  }
  SQLOOP_DCHECK(request.kind == Request::Kind::kWrite || !request.status_.ok() ||
                    request.epoch <= files_->queue().durable_epoch() ||
                    options_.read_undurable_for_testing,
                "a read answered from a snapshot that is not durable");
  SetRequestState(request, Request::State::kDone);
  Deliver(request);
}

void Database::AwaitDurable(Request& request) {
  SetRequestState(request, Request::State::kAwaitingDurable);
  awaiting_.PushBack(request);
  ++stats_.acks_waited;
}

// Runs on_done (or the layer's hook, Request::CallDone) now, or, for a client, for every
// finished request at the head of its FIFO.
void Database::Deliver(Request& request) {
  Client* client = request.client;
  if (client == nullptr) {
    request.CallDone(request.status_);
    return;
  }
  while (Request* head = client->requests_.front()) {
    if (head->state_ != Request::State::kDone) break;
    client->requests_.PopFront();
    if (head->kind == Request::Kind::kWrite) {
      --client->writes_pending_;
      ReleaseHeld(*client);
    }
    head->CallDone(head->status_);
  }
}

// The client's held reads that no longer have a write of the client before them start now, on
// a snapshot that holds the writes just acknowledged.
void Database::ReleaseHeld(Client& client) {
  using ClientQueue = decltype(client.requests_);
  for (Request* r = client.requests_.front(); r != nullptr; r = ClientQueue::Next(*r)) {
    if (r->kind == Request::Kind::kWrite && r->state_ != Request::State::kDone) break;
    if (!held_.Contains(*r)) continue;
    held_.Remove(*r);
    r->snapshot_min_ = acked_epoch_;
    reads_.PushBack(*r);
    ArmPump();
  }
}

// Acknowledges the writes whose epoch is durable and shown by a reader (invariant 3). They
// wait in commit order, so the acknowledged ones are a prefix.
void Database::AckDurable() {
  if (files_ == nullptr || awaiting_.empty()) return;
  const uint64_t durable = files_->queue().durable_epoch();
  const bool no_reads_to_serve =
      state_ != State::kReady || files_->queue().poisoned() || !pin_error_.ok();
  const uint64_t horizon = no_reads_to_serve ? durable : std::min(durable, visible_epoch_);
  Queue acknowledged;
  while (Request* r = awaiting_.front()) {
    if (r->epoch > horizon) break;
    awaiting_.PopFront();
    acked_epoch_ = std::max(acked_epoch_, r->epoch);
    acknowledged.PushBack(*r);
  }
  while (Request* r = acknowledged.PopFront()) {
    SetRequestState(*r, Request::State::kDone);
    Deliver(*r);
  }
}

void Database::FailQueue(Queue& queue, const absl::Status& status) {
  // Only what is queued now: a request submitted from one of these callbacks was not there
  // when `status` happened, and waits for its own turn (a client that resubmits each failed
  // request at once would otherwise keep this loop going for ever).
  Taken taken;
  MoveAll(queue, taken.writes);
  FailTaken(taken, status);
}

void Database::TakeQueued(Taken& taken) {
  MoveAll(writes_, taken.writes);
  MoveAll(held_, taken.held);
  MoveAll(reads_, taken.reads);
}

// `taken` is the caller's own, so nothing a callback submits joins it.
void Database::FailTaken(Taken& taken, const absl::Status& status) {
  for (Queue* queue : {&taken.writes, &taken.held, &taken.reads}) {
    while (Request* r = queue->PopFront()) {
      r->status_ = status;
      SetRequestState(*r, Request::State::kDone);
      Deliver(*r);
    }
  }
}

void Database::BecomePoisoned() {
  const absl::Status& poison = files_->queue().poison_status();
  // Take the unacknowledged requests out first, so kPoisoned's invariant holds when it is
  // entered, and a request submitted from one of their callbacks is already refused.
  Queue unknown;
  while (Request* r = awaiting_.PopFront()) unknown.PushBack(*r);
  if (state_ == State::kReady) SetState(State::kPoisoned);
  while (Request* r = unknown.PopFront()) {
    r->status_ = OutcomeUnknown(poison);
    SetRequestState(*r, Request::State::kDone);
    Deliver(*r);
  }
  Taken taken;
  TakeQueued(taken);
  FailTaken(taken, Poisoned(poison));
}

// ---- Serving ----------------------------------------------------------------------------------

void Database::Serve() {
  AckDurable();
  // The group that waited for its fetch goes on, poisoned or not (a poisoned commit fails it).
  if (writer_state_ == WriterState::kFetching && !group_fetching_ && group_resume_ != nullptr) {
    ResumeGroup();
  }
  if (files_->queue().poisoned()) {
    BecomePoisoned();
    // Reads already running are on durable snapshots: they finish.
    if (ServeReads() || AnyReaderBusy()) ArmPump();
    AssertInvariants();
    return;
  }
  // The last group's fsync may just have completed: readers show it, then its writes are
  // acknowledged.
  RefreshSnapshots();
  AckDurable();
  SettleWriter();
  // While a pin's fetch is in flight the writer neither checkpoints (which unpins the readers)
  // nor starts a group, so the pin lands on a durable snapshot (invariant 2).
  if (writer_state_ == WriterState::kIdle && !pin_fetching_) {
    if (writer_open() && wal_frames_ >= options_.checkpoint_frames) Checkpoint();
    if (writer_state_ == WriterState::kIdle && !writes_.empty() && WriterReady()) {
      RunGroup();
      RefreshSnapshots();  // Pins idle readers at the new group, to serve once it is durable.
      AckDurable();        // A group that wrote nothing needs no fsync.
    }
  }
  const bool more_reads = ServeReads();
  // A read that finished freed its reader, which may now show writes waiting for a reader.
  RefreshSnapshots();
  AckDurable();
  // Come back while a read is running or more could start now: nothing else (no completion,
  // no fsync) may be coming to wake the database up. Reads that wait for a pending snapshot
  // are woken by its fsync (OnFilesChanged).
  if (more_reads || AnyReaderBusy()) ArmPump();
  AssertInvariants();
}

// The writer's waits end: its group's epoch is durable (kSyncing), or the write-behind buffer
// drained (kBlocked).
void Database::SettleWriter() {
  if (writer_state_ == WriterState::kSyncing && group_epoch_ <= files_->queue().durable_epoch()) {
    SetWriterState(WriterState::kIdle);
  }
  if (writer_state_ == WriterState::kBlocked && files_->queue().idle()) {
    SetWriterState(WriterState::kIdle);
  }
}

void Database::SetState(State next) {
  bool allowed = false;
  switch (next) {
    case State::kOpening:
      allowed = state_ == State::kNew;
      break;
    case State::kOpenSyncing:
      allowed = state_ == State::kOpening;
      break;
    case State::kOpenChecking:
      allowed = state_ == State::kOpenSyncing;
      break;
    case State::kFailed:
      allowed = state_ == State::kOpening || state_ == State::kOpenChecking;
      break;
    case State::kReady:
      allowed = state_ == State::kOpenSyncing || state_ == State::kOpenChecking;
      break;
    case State::kPoisoned:
      allowed = state_ == State::kOpenSyncing || state_ == State::kReady;
      break;
    case State::kClosing:
      allowed = state_ == State::kReady || state_ == State::kPoisoned;
      break;
    case State::kClosed:
      allowed = state_ == State::kClosing || state_ == State::kFailed;
      break;
    case State::kNew:
      break;
  }
  SQLOOP_CHECK(allowed, "Database: a state transition its table does not list");
  state_ = next;
  AssertInvariants();
}

void Database::SetWriterState(WriterState next) {
  using W = WriterState;
  const W from = writer_state_;
  const bool allowed = next == W::kIdle       ? from != W::kIdle
                       : next == W::kGrouping ? from == W::kIdle || from == W::kFetching
                       : next == W::kFetching ? from == W::kGrouping || from == W::kIdle
                                              : from == W::kGrouping;
  SQLOOP_CHECK(allowed, "Database: a group commit transition its table does not list");
  writer_state_ = next;
  switch (next) {
    case W::kGrouping:
      SQLOOP_CHECK(sqlite3_get_autocommit(writer_->db()) == 0 && group_resume_ == nullptr &&
                       (group_.empty() || from == W::kFetching),
                   "a group started without its transaction, or with requests of another");
      break;
    case W::kSyncing:
      SQLOOP_CHECK(group_.empty() && group_epoch_ > files_->queue().durable_epoch(),
                   "a group syncs whose epoch is already durable, or it kept its requests");
      break;
    case W::kBlocked:
      SQLOOP_CHECK(group_.empty() && files_->queue().backpressure() > 0,
                   "the writer blocked without a refused write, or kept its requests");
      break;
    case W::kFetching:
      // Waiting with the transaction open (group_resume_ runs first when it resumes), or
      // with none and the group's requests queued again.
      SQLOOP_CHECK(group_fetching_ &&
                       (group_resume_ != nullptr) ==
                           (writer_open() && sqlite3_get_autocommit(writer_->db()) == 0) &&
                       (group_resume_ != nullptr || group_.empty()),
                   "the writer waits for a fetch without one in flight, or with a transaction "
                   "and no request to resume (or the other way round)");
      break;
    case W::kIdle:
      SQLOOP_CHECK(group_.empty() && group_resume_ == nullptr,
                   "the writer went idle with requests in its group");
      break;
  }
}

void Database::SetRequestState(Request& request, Request::State next) {
  using S = Request::State;
  const S from = request.state_;
  bool allowed = false;
  switch (next) {
    case S::kQueued:
      allowed = from == S::kIdle || from == S::kDone || from == S::kRunning || from == S::kFetching;
      break;
    case S::kRunning:
      allowed = from == S::kQueued;
      break;
    case S::kFetching:
      allowed = (from == S::kRunning || from == S::kQueued) && request.kind == Request::Kind::kRead;
      break;
    case S::kAwaitingDurable:
      allowed = from == S::kRunning;
      break;
    case S::kDone:
      allowed = from == S::kQueued || from == S::kRunning || from == S::kFetching ||
                from == S::kAwaitingDurable;
      break;
    case S::kIdle:
      break;
  }
  SQLOOP_CHECK(allowed, "Request: a state transition its table (db/database.h) does not list");
  request.state_ = next;
  // A cancel asked for before Submit (while a registry opened the tenant, say) holds for the
  // run; once done, the request starts its next run uncancelled.
  if (next == S::kDone) request.SetCancelRequested(false);
}

void Database::AssertInvariants() const {
  switch (state_) {
    case State::kNew:
    case State::kOpening:
      SQLOOP_CHECK(files_ == nullptr, "files taken over before the open finished");
      break;
    case State::kOpenChecking:
      SQLOOP_CHECK(files_ != nullptr && !readers_.empty() && writer_open() &&
                       files_->queue().durable_epoch() >= open_epoch_ && writes_.empty() &&
                       reads_.empty() && check_ != nullptr &&
                       check_->state() != internal::IntegrityCheck::State::kIdle,
                   "checking with something written since the open, a request admitted, or no "
                   "check in flight");
      break;
    case State::kReady:
    case State::kOpenSyncing: {
      SQLOOP_CHECK(files_ != nullptr && !readers_.empty(), "open without a reader or files");
      SQLOOP_CHECK(files_->queue().durable_epoch() <= files_->queue().epoch(),
                   "durable epoch ahead");
      SQLOOP_CHECK(
          acked_epoch_ <= files_->queue().durable_epoch() || options_.ack_before_fsync_for_testing,
          "a write was acknowledged before it was durable");
#if SQLOOP_DCHECK_IS_ON
      // Reader invariants 1 and 2: running reads are on durable snapshots, and one stays
      // pinned while a group syncs (unless no reader can be pinned at all).
      bool serving = false;
      for (const auto& reader : readers_) {
        serving =
            serving || (reader->pinned && reader->snapshot <= files_->queue().durable_epoch());
        SQLOOP_DCHECK(reader->current() == nullptr || options_.read_undurable_for_testing ||
                          (reader->pinned && reader->current()->epoch == reader->snapshot &&
                           reader->snapshot <= files_->queue().durable_epoch()),
                      "a read runs on a snapshot that is not durable");
      }
      SQLOOP_DCHECK(state_ != State::kReady || serving || !pin_error_.ok() || pin_fetching_ ||
                        options_.read_undurable_for_testing,
                    "no reader serves a durable snapshot");
      // AckDurable takes a prefix: writes wait in commit order.
      for (const Request* r = awaiting_.front(); r != nullptr; r = Queue::Next(*r)) {
        const Request* next = Queue::Next(*r);
        SQLOOP_DCHECK(next == nullptr || r->epoch <= next->epoch,
                      "writes wait for durability out of commit order");
      }
#endif
      break;
    }
    case State::kPoisoned:
      SQLOOP_CHECK(awaiting_.empty(), "poisoned with requests still awaiting an fsync");
      break;
    case State::kClosing:
      SQLOOP_CHECK(writes_.empty(), "closing with queued writes");
      break;
    case State::kClosed:
    case State::kFailed:
      SQLOOP_CHECK(files_ == nullptr && preopened_ == nullptr && writer_->db() == nullptr &&
                       readers_.empty() && fetch_windows_.empty(),
                   "closed with connections, files or fetches left");
      break;
  }
}

}  // namespace sqloop::db
