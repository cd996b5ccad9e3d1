// Database: opening (kOpening and kOpenChecking in db/database.h): the files through the loop,
// then the connections, the options they need and the integrity check.
#include <sqlite3.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/database.h"
#include "sqloop/db/internal/connection.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/db/internal/file_preopen.h"
#include "sqloop/db/internal/integrity_check.h"
#include "sqloop/db/internal/vfs_core.h"

namespace sqloop::db {

// kOpening, first step: the files are opened through the loop (file_preopen.h).
void Database::StartPreopen() {
  if (preopen_ != nullptr && preopen_->state() != internal::FilePreopen::State::kIdle) return;
  if (absl::Status s = CheckOptions(); !s.ok()) {
    FailOpen(std::move(s));
    return;
  }
  internal::VfsCore& core = internal::VfsCore::Of(vfs_);
  const std::string full = internal::FullPathOf(path_);
  absl::Status usable = full.empty()
                            ? absl::UnavailableError("the working directory cannot be read")
                            : absl::OkStatus();
  const internal::DatabaseFiles* existing = usable.ok() ? core.Find(full) : nullptr;
  // Checked also while the files are still in the VFS (a poisoned Database closed, its last
  // operations not yet drained): they would only answer with their I/O error.
  absl::Status tainted = usable.ok() ? core.context().CheckNotTainted(full) : absl::OkStatus();
  if (existing != nullptr && existing->table().asleep()) {
    usable = absl::UnavailableError(
        "another Database of this process holds it asleep (Database::Sleep); send that one a "
        "request or close it first");
  }
  // FailedPrecondition: only a restart helps. Without create_if_missing, a database that does
  // not exist is still NotFound: the preopen only looks (IfMissing::kProbeOnly), and
  // OnPreopened refuses one that does.
  const bool look_first = usable.ok() && !tainted.ok() && !options_.create_if_missing;
  if (!tainted.ok()) usable = std::move(tainted);
  if (!usable.ok()) {
    usable = absl::Status(usable.code(),
                          absl::StrCat("cannot open database '", internal::FileNameOf(path_),
                                       "': ", usable.message()));
    if (!look_first) {
      FailOpen(std::move(usable));
      return;
    }
    refused_ = std::move(usable);
  }
  preopened_ = &core.Acquire(full);
  preopened_->Pin();
  if (preopen_ == nullptr) preopen_ = std::make_unique<internal::FilePreopen>();
  using IfMissing = internal::FilePreopen::IfMissing;
  const IfMissing if_missing = look_first                   ? IfMissing::kProbeOnly
                               : options_.create_if_missing ? IfMissing::kCreate
                                                            : IfMissing::kNotFound;
  preopen_->Start(loop_, *preopened_, if_missing, &Database::OnPreopened, this);
}

void Database::OnPreopened(void* arg) {
  auto& self = *static_cast<Database*>(arg);
  if (const absl::Status& s = self.preopen_->status(); !s.ok()) {  // Unavailable or NotFound.
    self.refused_ = absl::OkStatus();
    self.FailOpen(
        absl::Status(s.code(), absl::StrCat("cannot open database '",
                                            internal::FileNameOf(self.path_), "': ", s.message())));
    return;
  }
  if (!self.refused_.ok()) {  // It exists, and the path is tainted (StartPreopen).
    self.FailOpen(std::exchange(self.refused_, absl::OkStatus()));
    return;
  }
  self.files_ready_ = true;
  self.ArmPump();
}

// Decides whether the open checks the file (NeedsCheck). quick_check on the loop (a small file,
// DoOpen) reads the whole main file by waiting, so that file is read into memory through the
// loop first (FilePreopen::Warm). Returns true if it is being read.
bool Database::WarmForCheck() {
  needs_check_ = NeedsCheck(*preopened_);
  const uint64_t bytes = preopened_->table().file(internal::FileRole::kMain).size_bytes;
  if (!*needs_check_ || bytes <= internal::FilePreopen::kHeadBytesMax ||
      bytes > options_.check_on_loop_bytes_max) {
    return false;
  }
  // Not ready while the read is in flight, as during the preopen; Warm may end at once, and
  // OnPreopened then makes the files ready again.
  files_ready_ = false;
  preopen_->Warm(loop_, *preopened_, internal::FileRole::kMain, static_cast<int64_t>(bytes),
                 &Database::OnPreopened, this);
  return !files_ready_;
}

// kOpening, kOpenChecking -> kFailed: nothing of the open stays (connections, pinned files).
void Database::FailOpen(absl::Status status) {
  CloseConnections();
  if (files_ != nullptr) files_->queue().RemoveListener(&Database::OnFilesChanged, this);
  if (internal::DatabaseFiles* files = preopened_ != nullptr ? preopened_ : files_;
      files != nullptr) {
    preopened_ = files_ = nullptr;
    files->table().DropHead();
    files->Unpin();  // May destroy them.
  }
  SetState(State::kFailed);
  FinishOpen(std::move(status));
}

void Database::FinishOpen(absl::Status status) {
  AssertInvariants();
  if (open_done_ != nullptr) open_done_(open_arg_, std::move(status));
}

absl::Status Database::OpenConnection(Connection& c) {
  internal::VfsCore::Of(vfs_).set_last_open_error("");
  if (c.Open(path_.c_str(), vfs_.name()) != SQLITE_OK) {
    std::string why =
        vfs_.last_open_error().empty() ? sqlite3_errmsg(c.db()) : vfs_.last_open_error();
    return absl::UnavailableError(
        absl::StrCat("cannot open database '", internal::FileNameOf(path_), "': ", why));
  }
  return c.Configure();
}

absl::Status Database::ConfigureWriter() {
  // WAL and full durability are what the epoch barriers assume; secure_delete off because
  // Debian's SQLite turns it on, which doubles the writes of every delete. The VFS keeps the
  // WAL across close (SQLITE_FCNTL_PERSIST_WAL); a journal_size_limit is what makes SQLite
  // truncate it to 0 bytes at close, and the limit (64 MiB, far above what the checkpoints
  // let the WAL grow to) also takes back the space after an unusually large transaction.
  const char* kSetup =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=OFF; "
      "PRAGMA journal_size_limit=67108864;";
  if (absl::Status s = writer_->RunInternal(kSetup); !s.ok()) return s;
  sqlite3_stmt* mode = nullptr;
  sqlite3_prepare_v2(writer_->db(), "PRAGMA journal_mode", -1, &mode, nullptr);
  const bool wal =
      sqlite3_step(mode) == SQLITE_ROW &&
      absl::EqualsIgnoreCase(reinterpret_cast<const char*>(sqlite3_column_text(mode, 0)), "wal");
  sqlite3_finalize(mode);
  if (!wal)
    return absl::InternalError(
        absl::StrCat("'", internal::FileNameOf(path_), "' could not be put in WAL mode"));
  // sqloop checkpoints itself, between groups (Checkpoint()); the hook replaces autocheckpoint.
  sqlite3_wal_hook(writer_->db(), &Database::OnWalCommit, this);
  return absl::OkStatus();
}

// The main file's identity and last change as the OS reports them, and both files' sizes on
// disk (VfsContext::RememberChecked): a reserve (EpochQueue invariants 9 and 10) may have left
// zeros past the size SQLite sees, which the next open finds in the file's size.
// The main file's identity is the preopen's while nothing changed the files since (FilePreopen
// invariant 10: FileTable::changes counts every write when it is submitted), so an open's check
// and the close of a session that wrote nothing make no fstat.
internal::FileFingerprint Database::Fingerprint(internal::DatabaseFiles& files) {
  const internal::SharedFile& main = files.table().file(internal::FileRole::kMain);
  const internal::SharedFile& wal = files.table().file(internal::FileRole::kWal);
  const internal::FileFingerprint* identity =
      preopen_ != nullptr ? preopen_->MainIdentity() : nullptr;
  internal::FileFingerprint fingerprint =
      identity != nullptr ? *identity : internal::FileFingerprint{};
  if (identity != nullptr) {
    ++stats_.identities_reused;
  } else if (loop_.backend().name() != "simulator") {
    (void)internal::ReadFileIdentity(main.fd, fingerprint);
  }
  fingerprint.main_bytes = std::max(main.size_bytes, main.allocated_bytes);
  fingerprint.wal_bytes = std::max(wal.size_bytes, wal.allocated_bytes);
  return fingerprint;
}

// quick_check reads the whole file, so it runs at a database's first open in this Vfs and
// again only if the files changed since this Vfs closed them after a check: a reopen of a
// scaled-to-zero tenant costs the same whatever its size. Returns whether it must run.
bool Database::NeedsCheck(internal::DatabaseFiles& files) {
  if (!options_.check_at_open) return false;
  internal::VfsContext& context = internal::VfsCore::Of(vfs_).context();
  if (context.TakeUnchangedSinceChecked(files.main_path(), Fingerprint(files))) {
    ++stats_.integrity_checks_skipped;
    checked_ = true;
    return false;
  }
  return true;
}

// A large file is checked on a thread (db/internal/integrity_check.h), which reads the main
// file alone: so the WAL is emptied into it first. On the simulator, for a small file, or if
// the WAL cannot be emptied now, DoOpen checks on the loop.
bool Database::MayCheckOffLoop(internal::DatabaseFiles& files) {
  const internal::SharedFile& main = files.table().file(internal::FileRole::kMain);
  if (loop_.backend().name() == "simulator" ||
      static_cast<uint64_t>(main.size_bytes) <= options_.check_on_loop_bytes_max) {
    return false;
  }
  int log_frames = 0;
  int checkpointed = 0;
  return writer_->Checkpoint(&log_frames, &checkpointed) == SQLITE_OK && log_frames == checkpointed;
}

// kOpenSyncing -> kOpenChecking: everything the open wrote is durable (invariant 1 of
// integrity_check.h), and nothing is written until the verdict. If no thread can be had, the
// check runs on the loop after all.
void Database::StartCheck() {
  if (check_ == nullptr) check_ = std::make_unique<internal::IntegrityCheck>();
  ++stats_.integrity_checks;
  const std::string file_name(internal::FileNameOf(path_));
  if (check_off_loop_ && !options_.check_thread_fails_for_testing &&
      check_->StartOnThread(loop_, files_->main_path(), file_name, options_.tenant,
                            options_.check_gate_for_testing, &Database::OnChecked, this)) {
    ++stats_.integrity_checks_off_loop;
  } else {
    check_->RunOnLoop(loop_, writer_->db(), file_name, &Database::OnChecked, this);
  }
  SetState(State::kOpenChecking);
}

void Database::OnChecked(void* arg) { static_cast<Database*>(arg)->ArmPump(); }

// The writer may wait for the first write when opening it would change nothing on disk: the
// main file is in WAL mode already (header bytes 18 and 19 are 2) and no rollback journal is
// there for SQLite to roll back. The header comes from the head FilePreopen read, or else from
// the page cache only: a miss, like any doubt, opens the writer now.
bool Database::MayDeferWriter(internal::DatabaseFiles& files) const {
  const internal::SharedFile& journal = files.table().file(internal::FileRole::kJournal);
  const internal::SharedFile& main = files.table().file(internal::FileRole::kMain);
  if (!journal.known || journal.exists || main.fd < 0 || main.size_bytes < 100) return false;
  unsigned char header[20];
  if (!files.table().ReadHead(reinterpret_cast<char*>(header), sizeof header, 0) &&
      loop_.backend().ReadIfCached(main.fd, header, sizeof header, 0) != sizeof header) {
    return false;
  }
  return header[18] == 2 && header[19] == 2;
}

absl::Status Database::OpenWriter() {
  if (absl::Status s = OpenConnection(*writer_); !s.ok()) return s;
  if (absl::Status s = ConfigureWriter(); !s.ok()) return s;
  writer_->RestrictToRequests();
  return absl::OkStatus();
}

// The writer opens on demand (MayDeferWriter) when writes wait for it, within the tick's open
// budget. Its setup's pragmas parse the schema, which reads from memory only, as BEGIN does: a
// miss closes the writer again and it waits in kFetching for the missed window, and the next
// pump opens it anew (its misses count in begin_restarts_, so past kRestartsMax in a row, or
// after a failed fetch, it reads by waiting). If it cannot open, the writes waiting fail with
// why; reads go on.
bool Database::WriterReady() {
  if (!WalWritable()) return false;  // OnWalOpened re-arms.
  if (writer_open()) return true;
  if (!internal::VfsCore::Of(vfs_).context().MayOpenOrCloseNow()) {
    ArmPump();  // This tick has opened enough.
    return false;
  }
  absl::Status opened = OpenWriterFromMemory();
  if (!opened.ok()) FailQueue(writes_, opened);
  return writer_open();
}

// Opens the writer with its setup reading from memory only. A miss leaves it closed, waiting
// in kFetching (OK, not open); the open's own error is returned, the writer closed.
absl::Status Database::OpenWriterFromMemory() {
  files_->queue().set_reads_nowait(MayStop(begin_restarts_, group_fetch_error_));
  absl::Status opened = OpenWriter();
  files_->queue().set_reads_nowait(false);
  if (!opened.ok()) writer_->Close();
  if (FetchMiss(FetchFor::kWriter, !opened.ok(), begin_restarts_, stats_.group_restarts)) {
    return absl::OkStatus();
  }
  if (!opened.ok()) {
    group_fetch_error_ = absl::OkStatus();  // The open's own error says it.
    return opened;
  }
  ++stats_.writers_opened_late;
  return absl::OkStatus();
}

// Options that would make the database unusable are refused at open, with the one to fix.
absl::Status Database::CheckOptions() const {
  if (options_.readers == 0) {
    return absl::InvalidArgumentError(
        "DatabaseOptions::readers is 0: reads would wait for ever; use at least 1");
  }
  if (options_.slice_vm_steps_max == 0 || options_.request_vm_steps_max == 0 ||
      options_.rows_per_tick == 0) {
    return absl::InvalidArgumentError(
        "DatabaseOptions::slice_vm_steps_max, request_vm_steps_max and rows_per_tick must be "
        "above 0: no statement could make progress");
  }
  return absl::OkStatus();
}

absl::Status Database::DoOpen() {
  internal::DatabaseFiles& files = *preopened_;
  const bool check = *needs_check_;
  if (!check && MayDeferWriter(files)) {
    ++stats_.writer_opens_deferred;
  } else {
    if (absl::Status s = OpenWriter(); !s.ok()) return s;
    check_off_loop_ = check && MayCheckOffLoop(files);
    if (check && !check_off_loop_) {  // A small file: checked now, within the open's budget.
      ++stats_.integrity_checks;
      if (absl::Status s = internal::QuickCheck(writer_->db(), internal::FileNameOf(path_));
          !s.ok()) {
        return s;
      }
      checked_ = true;
    }
  }
  if (absl::Status s = OpenReader(); !s.ok()) return s;  // The others open on demand.
  SQLOOP_CHECK(internal::VfsCore::Of(vfs_).Find(
                   sqlite3_db_filename(readers_.front()->db(), "main")) == preopened_,
               "the VFS has other files for a database than those opened for it");
  files_ = preopened_;  // Takes over preopened_'s pin.
  preopened_ = nullptr;
  files_->queue().AddListener(&Database::OnFilesChanged, this);
  group_epoch_ = files_->queue().epoch();
  return absl::OkStatus();
}

absl::Status Database::OpenReader() {
  auto reader = std::make_unique<Connection>(loop_, options_, /*writer=*/false,
                                             std::string(internal::FileNameOf(path_)));
  if (absl::Status s = OpenConnection(*reader); !s.ok()) return s;
  reader->RestrictToRequests();
  readers_.push_back(std::move(reader));
  return absl::OkStatus();
}

}  // namespace sqloop::db
