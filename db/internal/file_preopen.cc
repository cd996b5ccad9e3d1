#include "sqloop/db/internal/file_preopen.h"

#include <fcntl.h>

#include <cerrno>
#include <utility>

#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_table.h"

namespace sqloop::db::internal {

void FilePreopen::Start(loop::Loop& loop, DatabaseFiles& files, Callback done, void* arg) {
  SQLOOP_CHECK(state_ == State::kIdle, "FilePreopen::Start: already running");
  loop_ = &loop;
  files_ = &files;
  done_ = done;
  arg_ = arg;
  status_ = absl::OkStatus();
  io_.callback = &FilePreopen::OnIo;
  io_.user_data = this;
  io_.name = "preopen";
  // Invariant 3: files still open from an earlier Database need nothing.
  Advance(files.table().file(FileRole::kMain).fd >= 0 ? State::kIdle : State::kOpenMain);
}

void FilePreopen::Submit(io::Op op) {
  io_.op = op;
  loop_->Submit(io_);
}

void FilePreopen::Advance(State next) {
  FileTable& table = files_->table();
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
    case State::kSizeWal:
      Submit({.kind = io::OpKind::kFileSize, .fd = fd_});
      return;
    case State::kProbeJournal:
      Submit({.kind = io::OpKind::kOpenAt,
              .fd = AT_FDCWD,
              .flags = O_RDONLY | O_CLOEXEC,
              .path = table.file(FileRole::kJournal).path.c_str()});
      return;
    case State::kOpenWal:
      if (table.file(FileRole::kWal).fd >= 0) {
        Advance(State::kIdle);
        return;
      }
      create_ = false;
      SubmitOpen(FileRole::kWal);
      return;
  }
}

// Invariant 4: the first open of a role asks without O_CREAT, and only an ENOENT retries with
// it. io_uring runs an open that may create a file on a kernel worker thread, never inline, and
// a reopen finds both files there.
void FilePreopen::SubmitOpen(FileRole role) {
  Submit({.kind = io::OpKind::kOpenAt,
          .fd = AT_FDCWD,
          .flags = static_cast<uint32_t>(O_RDWR | O_CLOEXEC | (create_ ? O_CREAT : 0)),
          .path = files_->table().file(role).path.c_str(),
          .mode = 0644});
}

// An ENOENT from the open without O_CREAT: asks again, creating the file. Returns true if it did.
bool FilePreopen::RetryCreating(int64_t result, FileRole role) {
  if (result != -ENOENT || create_) return false;
  create_ = true;
  SubmitOpen(role);
  return true;
}

loop::Action FilePreopen::OnIo(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<FilePreopen*>(c.user_data);
  const int64_t failed = self.Take(c.result());
  if (failed < 0) {
    const std::string& path = self.files_->table().file(FileRole::kMain).path;
    self.Finish(absl::UnavailableError(FileTable::OpenErrorMessage(path, failed)));
  }
  return loop::Action::kDisarm;
}

// Takes the result of the operation in flight and moves on. Returns 0, or -errno if the
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
      main_bytes_ = result;
      Advance(State::kProbeJournal);
      return 0;
    case State::kProbeJournal: {
      if (result >= 0) {
        // A journal is there: SQLite's own recovery (and Adopt's check) read it the usual way.
        int journal_fd = static_cast<int>(result);
        table.CloseDescriptor(journal_fd);
      } else if (result == -ENOENT) {
        table.MarkAbsent(FileRole::kJournal);
      } else {
        break;
      }
      return AdoptAndAdvance(FileRole::kMain, main_bytes_, State::kOpenWal);
    }
    case State::kOpenWal:
      if (RetryCreating(result, FileRole::kWal)) return 0;
      if (result < 0) return result;
      fd_ = static_cast<int>(result);
      Advance(State::kSizeWal);
      return 0;
    case State::kSizeWal:
      if (result < 0) break;
      return AdoptAndAdvance(FileRole::kWal, result, State::kIdle);
    case State::kIdle:
      SQLOOP_CHECK(false, "FilePreopen: a completion with nothing in flight");
  }
  // A failure with a descriptor of ours still open.
  table.CloseDescriptor(fd_);
  return result;
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

void FilePreopen::Finish(absl::Status status) {
  state_ = State::kIdle;
  status_ = std::move(status);
  Callback done = done_;
  done_ = nullptr;
  if (done != nullptr) done(arg_);
}

}  // namespace sqloop::db::internal
