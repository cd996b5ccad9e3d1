#include "sqloop/db/internal/file_preopen.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/db/internal/file_table.h"

namespace sqloop::db::internal {

void FilePreopen::Start(loop::Loop& loop, DatabaseFiles& files, IfMissing if_missing, Callback done,
                        void* arg) {
  Prepare(loop, files, done, arg);
  if_missing_ = if_missing;
  // Invariant 3: files still open from an earlier Database need nothing, but a deferred WAL.
  const FileTable& table = files.table();
  State first = State::kOpenMain;
  if (table.file(FileRole::kMain).fd >= 0) {
    first = table.file(FileRole::kWal).deferred ? State::kOpenWal : State::kIdle;
  }
  Advance(first);
}

void FilePreopen::Warm(loop::Loop& loop, DatabaseFiles& files, FileRole role, int64_t bytes,
                       Callback done, void* arg) {
  Prepare(loop, files, done, arg);
  warm_role_ = role;
  warm_bytes_ = bytes;
  Advance(State::kWarm);
}

void FilePreopen::Prepare(loop::Loop& loop, DatabaseFiles& files, Callback done, void* arg) {
  SQLOOP_CHECK(state_ == State::kIdle, "FilePreopen: already running");
  loop_ = &loop;
  files_ = &files;
  done_ = done;
  arg_ = arg;
  status_ = absl::OkStatus();
  identity_read_ = false;
  for (loop::Completion* c : {&io_, &journal_, &head_}) {
    c->callback = &FilePreopen::OnIo;
    c->user_data = this;
    c->name = "preopen";
  }
}

void FilePreopen::Submit(loop::Completion& c, io::Op op) {
  c.op = op;
  ++in_flight_;
  loop_->Submit(c);
}

void FilePreopen::Advance(State next) {
  state_ = next;
  switch (next) {
    case State::kIdle:
      Finish(absl::OkStatus());
      return;
    case State::kOpenMain:
      create_ = false;
      SubmitOpen(FileRole::kMain);
      return;
    case State::kSizeMain:
      // Invariant 10: on real descriptors one fstat gives the size and the identity, at once.
      if (loop_->backend().name() != "simulator") {
        uint64_t bytes = 0;
        identity_read_ = ReadFileIdentity(fd_, identity_, &bytes);
        const int64_t size = identity_read_ ? static_cast<int64_t>(bytes) : -(errno ? errno : EIO);
        if (const int64_t failed = Take(size); failed < 0) {
          Finish(FailureOf(failed));
        }
        return;
      }
      Submit(io_, {.kind = io::OpKind::kFileSize, .fd = fd_});
      return;
    case State::kSizeWal:
      Submit(io_, {.kind = io::OpKind::kFileSize, .fd = fd_});
      return;
    case State::kOpenRest:
      StartRest();
      return;
    case State::kCreateWal:
    case State::kOpenWal:
      create_ = next == State::kCreateWal;
      SubmitOpen(FileRole::kWal);
      return;
    case State::kWarm:
      warmed_bytes_ = 0;
      // Invariants 8 and 9: nothing to read, or a memory file system, which holds it already.
      if (warm_bytes_ <= 0 || loop_->backend().InMemoryFile(files_->table().file(warm_role_).fd)) {
        Advance(State::kIdle);
        return;
      }
      SubmitWarmRead();
      return;
  }
}

// Invariants 8 and 9: counts what a read brought in and reads the next chunk, or ends the
// warming once the file is read whole, or a read failed or found its end early.
void FilePreopen::WarmNext(int64_t result) {
  if (result > 0) {
    warmed_bytes_ += result;
    VfsStats& stats = files_->context().stats();
    (warm_role_ == FileRole::kWal ? stats.wal_bytes_warmed : stats.main_bytes_warmed) +=
        static_cast<uint64_t>(result);
  }
  if (result <= 0 || warmed_bytes_ >= warm_bytes_) {
    Advance(State::kIdle);
    return;
  }
  SubmitWarmRead();
}

void FilePreopen::SubmitWarmRead() {
  static_assert(kWarmChunkBytes <= VfsContext::kFetchSinkBytes);
  const auto length =
      static_cast<uint32_t>(std::min<int64_t>(kWarmChunkBytes, warm_bytes_ - warmed_bytes_));
  Submit(io_, {.kind = io::OpKind::kRead,
               .fd = files_->table().file(warm_role_).fd,
               .buffer = files_->context().fetch_sink(),
               .length = length,
               .offset = static_cast<uint64_t>(warmed_bytes_)});
}

// Invariant 2: the journal's probe (its creation, for an empty main file), the WAL's open and
// the head's read, all at once.
void FilePreopen::StartRest() {
  FileTable& table = files_->table();
  StartHead();
  StartJournal();
  open_wal_ = table.file(FileRole::kWal).fd < 0;
  if (open_wal_) {
    create_ = false;
    SubmitOpen(FileRole::kWal);
  }
}

// Invariant 7: from memory if it is there (no operation), else through the loop.
void FilePreopen::StartHead() {
  head_bytes_ = static_cast<uint32_t>(std::min<int64_t>(main_bytes_, kHeadBytesMax));
  head_read_ = 0;
  if (head_bytes_ == 0) return;
  char* const head = files_->table().PrepareHead(head_bytes_);
  // Invariant 10: a device found in memory before needs no refused read to say so again.
  VfsContext& context = files_->context();
  const bool known = identity_read_ && context.InMemoryDevice(identity_.device);
  if (known) loop_->backend().MarkInMemoryFile(fd_);
  head_read_ = loop_->backend().ReadIfCached(fd_, head, head_bytes_, 0);
  if (identity_read_ && !known && loop_->backend().InMemoryFile(fd_)) {
    context.RememberInMemoryDevice(identity_.device);
  }
  if (head_read_ == head_bytes_) return;
  Submit(
      head_,
      {.kind = io::OpKind::kRead, .fd = fd_, .buffer = head, .length = head_bytes_, .offset = 0});
}

// Invariant 6: an empty main file's first transaction needs a journal; O_EXCL, so a journal
// already there is left to SQLite's own checks, as at any other open. Invariant 7: on a memory
// file system (known from the head's read) the probe is answered at once.
void FilePreopen::StartJournal() {
  const std::string& path = files_->table().file(FileRole::kJournal).path;
  create_journal_ = main_bytes_ == 0;
  probed_journal_ = !create_journal_ && loop_->backend().InMemoryFile(fd_);
  if (probed_journal_) {
    journal_probe_ = faccessat(AT_FDCWD, path.c_str(), F_OK, 0) == 0 ? 0 : -errno;
    return;
  }
  Submit(journal_,
         {.kind = io::OpKind::kOpenAt,
          .fd = AT_FDCWD,
          .flags = static_cast<uint32_t>(create_journal_ ? O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC
                                                         : O_RDONLY | O_CLOEXEC),
          .path = path.c_str(),
          .mode = 0644});
}

// Invariant 4: the first open of a role asks without O_CREAT, and only an ENOENT asks again
// with it. io_uring runs an open that may create a file on a kernel worker thread, never
// inline, and a reopen finds both files there.
void FilePreopen::SubmitOpen(FileRole role) {
  Submit(io_, {.kind = io::OpKind::kOpenAt,
               .fd = AT_FDCWD,
               .flags = static_cast<uint32_t>(O_RDWR | O_CLOEXEC | (create_ ? O_CREAT : 0)),
               .path = files_->table().file(role).path.c_str(),
               .mode = 0644});
}

// An ENOENT from the open without O_CREAT: asks again, creating the file. Returns true if it did.
bool FilePreopen::RetryCreating(int64_t result, FileRole role) {
  if (result != -ENOENT || create_) return false;
  if (role == FileRole::kMain && if_missing_ != IfMissing::kCreate) return false;
  create_ = true;
  SubmitOpen(role);
  return true;
}

loop::Action FilePreopen::OnIo(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<FilePreopen*>(c.user_data);
  // Invariant 5: a state ends when its last operation completes.
  if (--self.in_flight_ > 0) return loop::Action::kDisarm;
  const int64_t failed = self.state_ == State::kOpenRest ? self.TakeRest() : self.Take(c.result());
  if (failed < 0) self.Finish(self.FailureOf(failed));
  return loop::Action::kDisarm;
}

// Invariant 4: without create_if_missing, an ENOENT ending the preopen is the main file's (the
// WAL's goes to kCreateWal, the journal's is its absence), or its emptiness.
absl::Status FilePreopen::FailureOf(int64_t error) const {
  const std::string& path = files_->table().file(FileRole::kMain).path;
  if (error == -ENOENT && if_missing_ != IfMissing::kCreate) {
    return absl::NotFoundError(
        absl::StrCat("'", FileNameOf(path),
                     "' does not exist (or is empty: its creation never finished); open it with "
                     "create_if_missing to create it"));
  }
  return absl::UnavailableError(FileTable::OpenErrorMessage(path, error));
}

// Takes the result of the one operation of the state and moves on. Returns 0, or -errno if the
// preopen failed (a descriptor not yet adopted is closed).
int64_t FilePreopen::Take(int64_t result) {
  FileTable& table = files_->table();
  switch (state_) {
    case State::kOpenMain:
      if (RetryCreating(result, FileRole::kMain)) return 0;
      if (result < 0) return result;
      fd_ = static_cast<int>(result);
      if (const int64_t locked = table.LockMain(fd_); locked < 0) {
        fd_ = -1;  // LockMain closed it.
        return locked;
      }
      Advance(State::kSizeMain);
      return 0;
    case State::kSizeMain:
      if (result < 0) break;
      if (result == 0 && if_missing_ != IfMissing::kCreate) {  // Invariant 4: none is made.
        result = -ENOENT;
        break;
      }
      if (if_missing_ == IfMissing::kProbeOnly) {  // It exists: that is all it asked.
        table.CloseDescriptor(fd_);
        Finish(absl::OkStatus());
        return 0;
      }
      main_bytes_ = result;
      Advance(State::kOpenRest);
      return 0;
    case State::kOpenWal:
      if (result == -ENOENT) {
        Advance(State::kCreateWal);
        return 0;
      }
      [[fallthrough]];
    case State::kCreateWal:
      if (result < 0) return result;
      fd_ = static_cast<int>(result);
      Advance(State::kSizeWal);
      return 0;
    case State::kSizeWal: {
      if (result < 0) break;
      warm_role_ = FileRole::kWal;
      warm_bytes_ = result;
      // Invariant 8 (kWarm ends at once for an empty WAL).
      return AdoptAndAdvance(FileRole::kWal, result,
                             result <= kWarmWalBytesMax ? State::kWarm : State::kIdle);
    }
    case State::kWarm:
      WarmNext(result);
      return 0;
    case State::kOpenRest:
    case State::kIdle:
      SQLOOP_CHECK(false, "FilePreopen: a completion with nothing in flight");
  }
  // A failure with a descriptor of ours still open.
  table.CloseDescriptor(fd_);
  return result;
}

// kOpenRest's three operations are done: the journal known, the main file adopted, the head
// kept if the file still has it, then the WAL. Returns 0, or -errno (every descriptor not
// adopted closed).
int64_t FilePreopen::TakeRest() {
  FileTable& table = files_->table();
  const int64_t journal = probed_journal_ ? journal_probe_ : journal_.result();
  const int64_t wal = open_wal_ ? io_.result() : 0;
  int wal_fd = open_wal_ && wal >= 0 ? static_cast<int>(wal) : -1;
  int journal_fd = journal >= 0 && !probed_journal_ ? static_cast<int>(journal) : -1;
  int64_t failed = 0;
  if (journal >= 0 && !create_journal_) {
    // A journal is there: SQLite's own recovery (and Adopt's check) read it the usual way.
    if (journal_fd >= 0) table.CloseDescriptor(journal_fd);
  } else if (journal == -ENOENT) {
    table.MarkAbsent(FileRole::kJournal);
  } else if (journal < 0 && !(create_journal_ && journal == -EEXIST)) {
    failed = journal;
    table.CloseDescriptor(fd_);
  }
  // Invariant 10: with a journal there, Adopt may roll a first transaction back, changing the
  // main file after its identity was read.
  if (journal != -ENOENT) identity_read_ = false;
  if (failed == 0) {
    const int main_fd = fd_;
    fd_ = -1;
    failed = table.Adopt(FileRole::kMain, main_fd, main_bytes_);  // Closes it if it fails.
  }
  if (journal_fd >= 0 && create_journal_) {
    // Created empty by us: SQLite's open of it for the first transaction finds the descriptor.
    if (failed < 0) {
      table.CloseDescriptor(journal_fd);
    } else {
      failed = table.Adopt(FileRole::kJournal, journal_fd, 0);
    }
  }
  // FileTable invariant 4: Adopt may have rolled back a first transaction (emptied the file).
  if (head_bytes_ > 0 && head_read_ != head_bytes_) head_read_ = head_.result();
  if (failed == 0 && head_bytes_ > 0 && head_read_ == head_bytes_ &&
      table.file(FileRole::kMain).size_bytes >= head_bytes_) {
    table.KeepHead(head_bytes_);
  } else {
    table.DropHead();
  }
  if (failed < 0) {
    if (wal_fd >= 0) table.CloseDescriptor(wal_fd);
    return failed;
  }
  if (!open_wal_) {
    Advance(State::kIdle);
  } else if (wal == -ENOENT) {
    Advance(State::kCreateWal);
  } else if (wal < 0) {
    return wal;
  } else {
    fd_ = wal_fd;
    Advance(State::kSizeWal);
  }
  return 0;
}

// Hands the descriptor just opened and sized to the FileTable, then moves to `next`. Returns 0,
// or Adopt's -errno (Adopt closed the descriptor).
int64_t FilePreopen::AdoptAndAdvance(FileRole role, int64_t size_bytes, State next) {
  const int fd = fd_;
  fd_ = -1;
  if (const int64_t adopted = files_->table().Adopt(role, fd, size_bytes); adopted < 0) {
    return adopted;
  }
  Advance(next);
  return 0;
}

const FileFingerprint* FilePreopen::MainIdentity() const {
  return identity_read_ && files_ != nullptr && files_->table().changes() == identity_changes_
             ? &identity_
             : nullptr;
}

void FilePreopen::Finish(absl::Status status) {
  state_ = State::kIdle;
  if (!status.ok()) files_->table().DropHead();
  identity_read_ = identity_read_ && status.ok();
  identity_changes_ = files_->table().changes();
  status_ = std::move(status);
  Callback done = done_;
  done_ = nullptr;
  if (done != nullptr) done(arg_);
}

}  // namespace sqloop::db::internal
