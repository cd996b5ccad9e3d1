// Database: what an idle database gives back: its cached pages (ReleaseMemory), its writer
// connection (CloseWriterIfIdle) and its descriptors (Sleep, the "Sleep" section of
// db/database.h).
#include <sqlite3.h>

#include <memory>
#include <utility>

#include "sqloop/db/database.h"
#include "sqloop/db/internal/connection.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_sleep.h"
#include "sqloop/db/internal/vfs_core.h"

namespace sqloop::db {

void Database::ReleaseMemory() {
  if (state_ != State::kReady && state_ != State::kPoisoned) return;
  alloc::ScopedTenant tenant(options_.tenant);
  if (writer_open()) sqlite3_db_release_memory(writer_->db());
  if (in_callback_) {
    // The database's own work may be walking its readers: they close when it returns.
    readers_to_close_ = true;
    ArmPump();
  } else {
    CloseIdleReaders();
  }
  for (auto& reader : readers_) sqlite3_db_release_memory(reader->db());
}

// Readers beyond the first are closed (their schema and page cache go with them) and reopened
// when reads find every open reader busy again. Their close never checkpoints (the first
// reader stays, so none is the last connection): said to SQLite, so that on a sleeping
// database, whose files have no descriptor, the close touches no file at all.
void Database::CloseIdleReaders() {
  readers_to_close_ = false;
  alloc::ScopedTenant tenant(options_.tenant);
  while (readers_.size() > 1 && readers_.back()->current() == nullptr) {
    Unpin(*readers_.back());
    sqlite3_db_config(readers_.back()->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    readers_.pop_back();
  }
}

// No reader may be busy: a reader classifies kAuto requests while the writer is closed
// (KindOf), so every reader must see the writer's last commit (RefreshSnapshots pins the idle
// ones at it; the last group is durable in kIdle). Asleep, nothing may touch the files: the
// readers must show that commit already (a pin reads the WAL index), and the writer's close
// must not try SQLite's checkpoint (it is not the last connection, so it would find the lock
// taken, but it need not look).
bool Database::CloseWriterIfIdle() {
  if (in_callback_ || state_ != State::kReady || !writer_open() ||
      writer_state_ != WriterState::kIdle || !writes_.empty() || group_resume_ != nullptr ||
      group_fetching_ || writer_->current() != nullptr ||
      sqlite3_get_autocommit(writer_->db()) == 0 || AnyReaderBusy()) {
    return false;
  }
  alloc::ScopedTenant tenant(options_.tenant);
  if (asleep()) {
    for (const auto& reader : readers_) {
      if (!reader->pinned || reader->snapshot != group_epoch_) return false;
    }
    sqlite3_db_config(writer_->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  } else {
    RefreshSnapshots();
  }
  writer_->Close();
  writer_closed_idle_ = true;
  ++stats_.writers_closed_idle;
  return true;
}

// Invariant 1 of db/internal/file_sleep.h: nothing queued, running or in flight, on the
// Database or on its files, and every epoch durable.
bool Database::Quiet() const {
  const internal::EpochQueue& queue = files_->queue();
  return state_ == State::kReady && writes_.empty() && reads_.empty() && held_.empty() &&
         awaiting_.empty() && writer_state_ == WriterState::kIdle && group_resume_ == nullptr &&
         !group_fetching_ && !pin_fetching_ && fetch_windows_.empty() && !AnyReaderBusy() &&
         (sleep_ == nullptr || !sleep_->waking()) && queue.idle() &&
         queue.durable_epoch() == queue.epoch() && !queue.poisoned() &&
         (!writer_open() || sqlite3_get_autocommit(writer_->db()) != 0);
}

absl::Status Database::Sleep(Callback closed, void* arg) {
  if (state_ != State::kReady) {
    return absl::FailedPreconditionError("Database::Sleep: the database is not open");
  }
  if (asleep()) return absl::OkStatus();
  if (in_callback_) {
    return absl::FailedPreconditionError(
        "Database::Sleep: called from a request's callback, inside the database's own work; "
        "call it from outside (a timer, another completion)");
  }
  if (files_->table().pins() != 1) {
    return absl::FailedPreconditionError(
        "Database::Sleep: another Database of this process has the same file open; its "
        "descriptors are shared, so they stay open");
  }
  if (!Quiet()) {
    return absl::FailedPreconditionError(
        "Database::Sleep: requests are queued, running or awaiting durability, or the files "
        "are busy; try again once idle");
  }
  if (sleep_ == nullptr) {
    sleep_ = std::make_unique<internal::FileSleep>(&Database::OnSleepClosed, this);
  }
  if (absl::Status slept = sleep_->Sleep(loop_, files_->table()); !slept.ok()) return slept;
  sleep_closed_ = closed;
  sleep_closed_arg_ = arg;
  ++stats_.sleeps;
  return absl::OkStatus();
}

// The sleep's closes are done: a wake asked for meanwhile is under way (FileSleep started it);
// a close waiting for them goes on.
void Database::OnSleepClosed(void* arg) {
  auto& self = *static_cast<Database*>(arg);
  self.ArmPump();
  const Callback closed = std::exchange(self.sleep_closed_, nullptr);
  if (closed != nullptr) closed(self.sleep_closed_arg_, absl::OkStatus());
}

bool Database::asleep() const { return sleep_ != nullptr && sleep_->asleep(); }

// A request came to a sleeping database: its files open again, through the loop. Until the
// wake is done the requests wait in their queues; nothing runs SQLite.
void Database::Wake() {
  // A wake under way: OnWoken re-arms (one asked for while the sleep's closes are in flight
  // starts after them).
  if (sleep_->waking()) return;
  if (writes_.empty() && reads_.empty() && held_.empty()) return;
  sleep_->Wake(files_->table(), &Database::OnWoken, this, /*write_waiting=*/!writes_.empty());
  // The opens take a tick at least. Meanwhile what the first read touches first comes into the
  // cache, instead of one miss after another once the wake is done: among many sleepers, little
  // of a sleeper's memory is in any cache.
  for (const auto& reader : readers_) reader->Prefetch();
}

// The WAL a wake left closed because it slept empty (invariant 5 of db/internal/file_sleep.h):
// nothing may write it until it is open again (WriterReady opens it).
bool Database::wal_deferred() const {
  return files_ != nullptr && files_->table().file(internal::FileRole::kWal).deferred;
}

// Whether the WAL may be written; if not, its open is under way.
bool Database::WalWritable() {
  if (!wal_deferred()) return true;
  // Only the Database whose wake left it closed sees it so: another one's open opens it.
  SQLOOP_CHECK(sleep_ != nullptr, "Database: a WAL deferred by another Database's wake");
  if (!sleep_->waking()) sleep_->OpenWal(&Database::OnWalOpened, this);
  return false;
}

// The WAL opened for the writes waiting, or could not: they fail with why (a WAL changed while
// the database slept fails them every time, as a wake would); the reads go on.
void Database::OnWalOpened(void* arg) {
  auto& self = *static_cast<Database*>(arg);
  if (self.sleep_->status().ok()) {
    ++self.stats_.wal_opened_late;
  } else {
    ++self.stats_.wal_late_opens_failed;
    self.in_callback_ = true;  // The writes' callbacks run inside the database's work.
    const absl::Status why = self.sleep_->status();
    self.FailQueue(self.writes_, why);
    self.in_callback_ = false;
  }
  self.ArmPump();
}

void Database::OnWoken(void* arg) {
  auto& self = *static_cast<Database*>(arg);
  if (self.sleep_->status().ok()) {
    ++self.stats_.wakes;
    if (self.wal_deferred()) ++self.stats_.wal_opens_deferred;
  } else {
    // The files are not what the connections saw: nothing may run on them. The requests fail
    // with why; the database stays asleep, and Close closes it without touching the files.
    ++self.stats_.wakes_failed;
    Taken taken;  // What waited for this wake; what their callbacks submit waits for the next.
    self.TakeQueued(taken);
    self.in_callback_ = true;  // The requests' callbacks run inside the database's work.
    const absl::Status why = self.sleep_->status();
    self.FailTaken(taken, why);
    self.in_callback_ = false;
  }
  self.ArmPump();
}

// kClosing while asleep: the connections close without SQLite's checkpoint (the WAL keeps its
// frames, every one durable, and the next open recovers them), so the close touches no file,
// since the files may have changed under the connections. Returns false while the sleep's
// closes (OnSleepClosed re-arms) or a wake (OnWoken re-arms) are in flight; a wake that
// succeeded leaves the database awake, closed as usual.
bool Database::CloseAsleep() {
  if (sleep_->state() != internal::FileSleep::State::kAsleep) return false;
  alloc::ScopedTenant tenant(options_.tenant);
  for (auto& reader : readers_) {
    sqlite3_db_config(reader->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  }
  if (writer_open()) {
    sqlite3_db_config(writer_->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  }
  writer_closed_idle_ = false;
  files_->table().set_asleep(false);
  // The files are as the sleep left them, or the next open's fingerprint differs: so a check
  // this database passed still covers them, as at a close of an awake one (FinishClose).
  internal::FileFingerprint slept;
  if (checked_ && sleep_->SleptFingerprint(slept)) {
    internal::VfsCore::Of(vfs_).context().RememberChecked(files_->main_path(), slept);
  }
  checked_ = false;  // FinishClose has no descriptor to fingerprint the files with.
  CloseConnections();
  sleep_.reset();
  return true;
}

}  // namespace sqloop::db
