#include "sqloop/db/internal/file_sleep.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"

namespace sqloop::db::internal {

bool FileSleep::Print(int fd, int64_t bytes, FileFingerprint& print) const {
  print = {.main_bytes = static_cast<uint64_t>(bytes)};
  if (!real_descriptors_) return bytes >= 0;
  return ReadFileIdentity(fd, print, &print.main_bytes);
}

absl::Status FileSleep::Sleep(loop::Loop& loop, FileTable& table) {
  SQLOOP_CHECK(state_ == State::kAwake, "FileSleep::Sleep: not awake");
  loop_ = &loop;
  table_ = &table;
  // The simulator's descriptors are not the OS's: only the sizes can be compared there.
  real_descriptors_ = loop.backend().name() != "simulator";
  // Invariant 4: nothing changed since the last wake found the files as recorded.
  const bool unchanged = verified_ && table.changes() == verified_changes_;
  for (size_t i = 0; i < kRoles.size(); ++i) {
    SharedFile& f = table.file(kRoles[i]);
    if (f.deferred) continue;  // Invariant 5: untouched since it slept so, as recorded then.
    had_[i] = f.fd >= 0;
    const bool reserved = f.allocated_bytes > f.size_bytes;
    if (!had_[i] || (unchanged && !reserved)) continue;
    if (reserved) {  // A truncate is a metadata operation: no device wait.
      io::Op cut{.kind = io::OpKind::kFtruncate, .fd = f.fd, .offset = f.size_bytes};
      if (RunNow(loop, cut) < 0) {
        return absl::UnavailableError(absl::StrCat("Database::Sleep: the reserve of '", f.path,
                                                   "' could not be cut; try again later"));
      }
      f.allocated_bytes = f.size_bytes;
    }
    // The size on disk, which may differ from SQLite's view (a reserve's zeros, a write that
    // failed part way): fstat gives it on real descriptors (Print), the simulator at once.
    io::Op size{.kind = io::OpKind::kFileSize, .fd = f.fd};
    if (!Print(f.fd, real_descriptors_ ? 0 : RunNow(loop, size), slept_[i])) {
      return absl::UnavailableError(absl::StrCat("Database::Sleep: the size of '", f.path,
                                                 "' could not be read; try again later"));
    }
  }
  // The rare ones close here: a journal (only a new database's first transaction has one) and
  // the directory (opened by the first barrier after an open that had names to sync, so at
  // most one sleep per open closes it). The two every database has close through the loop.
  SharedFile& journal = table.file(FileRole::kJournal);
  if (journal.fd >= 0) table.CloseDescriptor(journal.fd);
  table.CloseDirectory();
  state_ = State::kClosing;
  for (size_t i = 0; i < kRoles.size(); ++i) {
    SharedFile& f = table.file(kRoles[i]);
    if (f.fd < 0) continue;
    if (kRoles[i] == FileRole::kMain) table.UnlockMain(f.fd);  // Invariant 1.
    Submit(i, {.kind = io::OpKind::kClose, .fd = f.fd});
    f.fd = -1;
  }
  if (in_flight_ == 0) {  // No descriptor to close: closed(arg) still runs from the loop.
    io_[0].callback = &FileSleep::OnIo;
    io_[0].user_data = this;
    ++in_flight_;
    loop.NextTick(io_[0]);
  }
  table.set_asleep(true);
  return absl::OkStatus();
}

bool FileSleep::SleptFingerprint(FileFingerprint& print) const {
  if (state_ != State::kAsleep || !status_.ok() || !had_[0]) return false;
  print = slept_[0];
  print.wal_bytes = had_[1] ? slept_[1].main_bytes : 0;
  return true;
}

void FileSleep::Submit(size_t i, io::Op op) {
  io_[i].callback = &FileSleep::OnIo;
  io_[i].user_data = this;
  io_[i].op = op;
  ++in_flight_;
  loop_->Submit(io_[i]);
}

void FileSleep::Wake(FileTable& table, Callback done, void* arg, bool write_waiting) {
  SQLOOP_CHECK((state_ == State::kAsleep || state_ == State::kClosing) && done_ == nullptr &&
                   &table == table_,
               "FileSleep::Wake: not asleep, or a wake is under way");
  done_ = done;
  arg_ = arg;
  write_waiting_ = write_waiting;
  status_ = absl::OkStatus();
  if (state_ == State::kAsleep) StartOpens();  // Else the last close starts them.
}

void FileSleep::OpenWal(Callback done, void* arg) {
  SQLOOP_CHECK(state_ == State::kAwake && done_ == nullptr && table_ != nullptr &&
                   table_->file(FileRole::kWal).deferred,
               "FileSleep::OpenWal: asleep, under way already, or no WAL deferred");
  done_ = done;
  arg_ = arg;
  wal_only_ = true;
  status_ = absl::OkStatus();
  StartOpens();
}

void FileSleep::StartOpens() {
  state_ = State::kOpening;
  // Invariant 5: a WAL that slept empty waits for a write.
  const bool wal_waits = had_[1] && slept_[1].main_bytes == 0 && !write_waiting_;
  opening_ = {!wal_only_, wal_only_ || !wal_waits};
  for (size_t i = 0; i < kRoles.size(); ++i) {
    if (!opening_[i]) continue;
    // Never O_CREAT: a file that is gone is a change (invariant 3).
    Submit(i, {.kind = io::OpKind::kOpenAt,
               .fd = AT_FDCWD,
               .flags = static_cast<uint32_t>(O_RDWR | O_CLOEXEC),
               .path = table_->file(kRoles[i]).path.c_str()});
  }
}

// A failed close released its descriptor all the same (close(2)), so its result says nothing
// the sleep needs.
loop::Action FileSleep::OnIo(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<FileSleep*>(c.user_data);
  if (--self.in_flight_ > 0) return loop::Action::kDisarm;
  if (self.state_ == State::kClosing) {
    self.state_ = State::kAsleep;
    if (self.done_ != nullptr) self.StartOpens();
    self.closed_(self.closed_arg_);
    return loop::Action::kDisarm;
  }
  absl::Status status = self.state_ == State::kOpening ? self.TakeOpens() : self.TakeSizes();
  if (!status.ok()) {
    self.Finish(std::move(status));
  } else if (self.state_ == State::kOpening) {
    self.Advance();
  } else {
    self.Finish(absl::OkStatus());
  }
  return loop::Action::kDisarm;
}

absl::Status FileSleep::TakeOpens() {
  absl::Status status;
  for (size_t i = 0; i < kRoles.size(); ++i) {
    if (!opening_[i]) continue;
    const int64_t result = io_[i].result();
    if (result >= 0) fds_[i] = static_cast<int>(result);
    if (!status.ok()) continue;
    if ((result >= 0 && !had_[i]) || (result == -ENOENT && had_[i])) {
      status = absl::FailedPreconditionError(
          absl::StrCat("the ", RoleName(kRoles[i]), " of '", FileNameOf(table_->main_path()), "' ",
                       result >= 0 ? "appeared" : "disappeared",
                       " while the database slept; close the database and open it again"));
    } else if (result < 0 && result != -ENOENT) {
      status = absl::UnavailableError(
          absl::StrCat(FileTable::OpenErrorMessage(table_->file(kRoles[i]).path, result),
                       " (waking the database from its sleep; a later request tries again)"));
    }
  }
  if (status.ok() && fds_[0] >= 0) {
    if (const int64_t locked = table_->LockMain(fds_[0]); locked < 0) {
      fds_[0] = -1;  // LockMain closed it.
      status = absl::UnavailableError(FileTable::OpenErrorMessage(table_->main_path(), locked));
    }
  }
  return status;
}

void FileSleep::Advance() {
  state_ = State::kSizing;
  if (real_descriptors_) {  // Print reads the size with the rest (fstat): no op to wait for.
    Finish(TakeSizes());
    return;
  }
  for (size_t i = 0; i < kRoles.size(); ++i) {
    if (fds_[i] >= 0) Submit(i, {.kind = io::OpKind::kFileSize, .fd = fds_[i]});
  }
  if (in_flight_ == 0) Finish(absl::OkStatus());
}

absl::Status FileSleep::TakeSizes() {
  for (size_t i = 0; i < kRoles.size(); ++i) {
    if (fds_[i] < 0) continue;
    FileFingerprint now;
    if (!Print(fds_[i], real_descriptors_ ? 0 : io_[i].result(), now)) {
      return absl::UnavailableError(
          absl::StrCat("the size of '", table_->file(kRoles[i]).path,
                       "' could not be read to wake the database; a later request tries again"));
    }
    if (!(now == slept_[i])) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the ", RoleName(kRoles[i]), " of '", FileNameOf(table_->main_path()),
          "' changed while the database slept (something else wrote to it): close the database "
          "and open it again"));
    }
  }
  return absl::OkStatus();
}

void FileSleep::Finish(absl::Status status) {
  for (size_t i = 0; i < kRoles.size(); ++i) {
    if (fds_[i] < 0) continue;
    SharedFile& f = table_->file(kRoles[i]);
    // Another Database that opened these files meanwhile may have opened the WAL already.
    if (status.ok() && f.fd < 0) {
      f.fd = fds_[i];
    } else {
      table_->CloseDescriptor(fds_[i]);
    }
    fds_[i] = -1;
  }
  SharedFile& wal = table_->file(FileRole::kWal);
  if (wal_only_) {  // Invariant 5: awake all along; the WAL stays deferred if it failed.
    wal_only_ = false;
    state_ = State::kAwake;
    if (status.ok()) wal.deferred = false;
  } else {
    state_ = status.ok() ? State::kAwake : State::kAsleep;
    verified_ = status.ok();
    verified_changes_ = table_->changes();
    table_->set_asleep(!status.ok());
    if (status.ok()) wal.deferred = had_[1] && !opening_[1];
  }
  status_ = std::move(status);
  const Callback done = done_;
  done_ = nullptr;
  done(arg_);
}

}  // namespace sqloop::db::internal
