#include "sqloop/db/database_files.h"

#include <sqlite3.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/vfs.h"

namespace sqloop::db {

// An operation SQLite issued while the queue was not empty (or a barrier). Reused through the
// free list, and its `data` keeps its capacity, so a warmed-up database does not allocate.
struct DatabaseFiles::PendingOp {
  loop::Completion c;  // Writes, truncates and unlinks; barriers use DatabaseFiles::fsyncs_.
  DatabaseFiles* owner = nullptr;
  OpState state = OpState::kFree;
  OpKind kind = OpKind::kWrite;
  FileRole role = FileRole::kMain;
  bool fence = false;         // A write overlapping an earlier queued write: waits for it.
  bool dir_sync = false;      // Barrier: also fsync the directory.
  uint8_t sync_mask = 0;      // Barrier: bit per FileRole to fsync.
  uint64_t offset = 0;        // Write: file offset. Truncate: the new size.
  uint64_t length = 0;        // Write: bytes in `data`.
  uint64_t epoch = 0;         // Barrier: the epoch it closes.
  std::vector<char> data;     // Write: a copy of SQLite's buffer.
  PendingOp* prev = nullptr;  // Queue links (`next` also links the free list).
  PendingOp* next = nullptr;
};

namespace {

constexpr int kDirIndex = kFileRoles;  // fsyncs_ slot of the directory.
// A held write's buffer is never smaller than SQLite's default page, the size of most writes.
constexpr uint64_t kHeldBufferMinBytes = 4096;

absl::string_view RoleName(FileRole role) {
  switch (role) {
    case FileRole::kMain:
      return "database file";
    case FileRole::kJournal:
      return "rollback journal";
    case FileRole::kWal:
      return "WAL";
    case FileRole::kCount:
      break;
  }
  return "file";
}

}  // namespace

std::string DatabaseFiles::DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::string_view DatabaseFiles::FileNameOf(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

DatabaseFiles::DatabaseFiles(Vfs& vfs, loop::Loop& loop, std::string main_path)
    : vfs_(vfs), loop_(loop), main_path_(std::move(main_path)) {
  dir_path_ = DirectoryOf(main_path_);
  files_[static_cast<int>(FileRole::kMain)].path = main_path_;
  files_[static_cast<int>(FileRole::kJournal)].path = main_path_ + "-journal";
  files_[static_cast<int>(FileRole::kWal)].path = main_path_ + "-wal";
  for (loop::Completion& c : fsyncs_) {
    c.callback = &DatabaseFiles::OnFsyncDone;
    c.user_data = this;
    c.name = "sqloop-db-fsync";
  }
}

DatabaseFiles::~DatabaseFiles() {
  SQLOOP_CHECK(head_ == nullptr && fsyncs_outstanding_ == 0,
               "DatabaseFiles destroyed with operations in flight; run the loop until the "
               "database is closed");
  for (SharedFile& f : files_) {
    if (f.fd < 0) continue;
    io::Op close_op{.kind = io::OpKind::kClose, .fd = f.fd};
    (void)RunNow(close_op);
    f.fd = -1;
  }
  if (dir_fd_ >= 0) {
    io::Op close_op{.kind = io::OpKind::kClose, .fd = dir_fd_};
    (void)RunNow(close_op);
  }
}

int64_t DatabaseFiles::RunNow(io::Op& op) {
  op.next = nullptr;
  return loop_.WaitForOp(op);
}

void DatabaseFiles::SetListener(Listener listener, void* arg) {
  listener_ = listener;
  listener_arg_ = arg;
}

void DatabaseFiles::Unpin() {
  SQLOOP_CHECK(pins_ > 0, "DatabaseFiles::Unpin without a matching Pin");
  --pins_;
  if (pins_ == 0) listener_ = nullptr;
  vfs_.ReleaseIfUnused(this);
}

bool DatabaseFiles::Releasable() const {
  if (pins_ != 0 || head_ != nullptr || fsyncs_outstanding_ != 0 || shm_users_ != 0) return false;
  if (notifying_) return false;
  return std::all_of(files_.begin(), files_.end(),
                     [](const SharedFile& f) { return f.opens == 0; });
}

// ---- Opening and closing ----------------------------------------------------------------------

int64_t DatabaseFiles::OpenFile(FileRole role, int flags) {
  SharedFile& f = file(role);
  if (f.fd >= 0) {
    f.exists = true;
    return 0;
  }
  io::Op open_op{.kind = io::OpKind::kOpenAt,
                 .fd = AT_FDCWD,
                 .flags = static_cast<uint32_t>((flags & ~O_EXCL) | O_CLOEXEC),
                 .path = f.path.c_str(),
                 .mode = 0644};
  const int64_t fd = RunNow(open_op);
  if (fd < 0) return fd;
  if (role == FileRole::kMain && vfs_.os_lock()) {
    // One process per database file: an exclusive, non-blocking flock on the descriptor.
    if (flock(static_cast<int>(fd), LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      io::Op close_op{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
      (void)RunNow(close_op);
      return error == EWOULDBLOCK ? -EWOULDBLOCK : -error;
    }
  }
  io::Op size_op{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
  int64_t size = RunNow(size_op);
  if (role == FileRole::kMain && size > 0) {
    if (const int64_t rolled = RollBackFirstTransaction(static_cast<int>(fd), size); rolled < 0) {
      size = rolled;
    }
  }
  if (size < 0) {
    io::Op close_op{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
    (void)RunNow(close_op);
    return size;
  }
  f.fd = static_cast<int>(fd);
  f.size_bytes = static_cast<uint64_t>(size);
  f.exists = true;
  f.known = true;
  // The file's name is durable only once a directory fsync of ours covers it, also when the
  // file was already there: an earlier DatabaseFiles of this process (an open that failed after
  // SQLite created the WAL, a database closed before its first barrier) or a process that died
  // may have created it and never synced the directory, and nothing tells such a file from one
  // whose name is durable. Writes acknowledged in it were lost with its name in a crash (http
  // seeds 1269, 2853 and 4746). So the first barrier after an open syncs the directory too, as
  // SQLite's unix VFS does for every journal and WAL it opens with SQLITE_OPEN_CREATE.
  f.needs_dir_sync = true;
  return 0;
}

// A new database's first transaction (the switch to WAL, which writes page 1) runs with a
// rollback journal whose header says the database had 0 pages. A crash in it can leave page 1
// torn beside that journal. SQLite rolls such a journal back (truncates the file to 0 pages),
// but sqlite3BtreeOpen reads the header's vacuum flags before the rollback and writes the torn
// values into the new page 1, so quick_check fails for ever (db_crash seed 6962). Nothing in
// that file was ever committed: this does SQLite's own rollback first, before SQLite reads a
// byte: truncate to 0 and make it durable, then remove the journal and make that durable. It
// acts only where SQLite's rollback would truncate to 0: the main file not open in this process
// (so no connection of ours owns the journal; the OS lock keeps other processes out), and a
// journal that starts with a valid header naming 0 pages. Returns 0 or -errno; `size_bytes`
// becomes 0 if it rolled back.
int64_t DatabaseFiles::RollBackFirstTransaction(int main_fd, int64_t& size_bytes) {
  // SQLite's journal header (pager.c): 8 bytes of magic, the record count, the checksum seed,
  // the database's size in pages before the transaction (big-endian), sector and page sizes.
  constexpr unsigned char kMagic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
  constexpr uint32_t kHeaderBytes = 28;
  constexpr uint32_t kInitialPagesOffset = 16;
  const std::string& journal = file(FileRole::kJournal).path;
  io::Op open_op{.kind = io::OpKind::kOpenAt,
                 .fd = AT_FDCWD,
                 .flags = O_RDONLY | O_CLOEXEC,
                 .path = journal.c_str()};
  const int64_t fd = RunNow(open_op);
  if (fd < 0) return fd == -ENOENT ? 0 : fd;
  unsigned char header[kHeaderBytes] = {};
  io::Op read_op{.kind = io::OpKind::kRead,
                 .fd = static_cast<int>(fd),
                 .buffer = header,
                 .length = kHeaderBytes};
  const int64_t read = RunNow(read_op);
  io::Op close_op{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
  (void)RunNow(close_op);
  if (read < 0) return read;
  const unsigned char* pages = header + kInitialPagesOffset;
  if (read < kHeaderBytes || std::memcmp(header, kMagic, sizeof(kMagic)) != 0 ||
      (pages[0] | pages[1] | pages[2] | pages[3]) != 0) {
    return 0;  // Not a first transaction's journal: SQLite's own recovery handles it.
  }
  io::Op truncate_op{.kind = io::OpKind::kFtruncate, .fd = main_fd, .offset = 0};
  io::Op sync_op{.kind = io::OpKind::kFsync, .fd = main_fd};
  io::Op unlink_op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = journal.c_str()};
  for (io::Op* op : {&truncate_op, &sync_op, &unlink_op}) {
    if (const int64_t result = RunNow(*op); result < 0) return result;
  }
  io::Op dir_op{.kind = io::OpKind::kOpenAt,
                .fd = AT_FDCWD,
                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                .path = dir_path_.c_str()};
  const int64_t dir = RunNow(dir_op);
  if (dir < 0) return dir;
  io::Op dir_sync{.kind = io::OpKind::kFsync, .fd = static_cast<int>(dir)};
  const int64_t synced = RunNow(dir_sync);
  io::Op dir_close{.kind = io::OpKind::kClose, .fd = static_cast<int>(dir)};
  (void)RunNow(dir_close);
  if (synced < 0) return synced;
  size_bytes = 0;
  return 0;
}

void DatabaseFiles::CloseHandle(FileRole role) {
  SharedFile& f = file(role);
  SQLOOP_CHECK(f.opens > 0, "DatabaseFiles::CloseHandle on a file that is not open");
  --f.opens;
  CloseIdleDescriptors();
}

// Invariant 6: a descriptor is closed only when the queue is empty. The main file stays open
// while pinned so the process keeps its OS lock for as long as the Database exists.
void DatabaseFiles::CloseIdleDescriptors() {
  if (head_ != nullptr || fsyncs_outstanding_ != 0) return;
  for (int i = 0; i < kFileRoles; ++i) {
    SharedFile& f = files_[i];
    if (f.fd < 0 || f.opens != 0) continue;
    if (i == static_cast<int>(FileRole::kMain) && pins_ != 0) continue;
    io::Op close_op{.kind = io::OpKind::kClose, .fd = f.fd};
    (void)RunNow(close_op);
    f.fd = -1;
  }
}

// ---- The queue --------------------------------------------------------------------------------

DatabaseFiles::PendingOp* DatabaseFiles::TakeOp() {
  PendingOp* op = free_;
  if (op != nullptr) {
    free_ = op->next;
  } else {
    ops_.push_back(std::make_unique<PendingOp>());
    op = ops_.back().get();
    op->owner = this;
    op->c.callback = &DatabaseFiles::OnOpDone;
    op->c.user_data = op;
    op->c.name = "sqloop-db-write-behind";
  }
  op->next = op->prev = nullptr;
  op->fence = op->dir_sync = false;
  op->sync_mask = 0;
  op->offset = op->length = op->epoch = 0;
  op->state = OpState::kQueued;
  return op;
}

void DatabaseFiles::Push(PendingOp* op) {
  op->prev = tail_;
  op->next = nullptr;
  if (tail_ != nullptr) {
    tail_->next = op;
  } else {
    head_ = op;
  }
  tail_ = op;
  ++queued_ops_;
  if (op->kind == OpKind::kWrite) held_bytes_ += op->length;
}

void DatabaseFiles::Remove(PendingOp* op) {
  if (op->prev != nullptr) {
    op->prev->next = op->next;
  } else {
    head_ = op->next;
  }
  if (op->next != nullptr) {
    op->next->prev = op->prev;
  } else {
    tail_ = op->prev;
  }
  --queued_ops_;
  if (op->kind == OpKind::kWrite) held_bytes_ -= op->length;
}

void DatabaseFiles::Release(PendingOp* op) {
  op->state = OpState::kFree;
  op->prev = nullptr;
  op->next = free_;
  free_ = op;
}

bool DatabaseFiles::Overlaps(FileRole role, uint64_t offset, uint64_t length) const {
  for (const PendingOp* op = tail_; op != nullptr; op = op->prev) {
    if (op->kind != OpKind::kWrite) return false;  // Everything before it finishes first.
    if (op->role == role && op->offset < offset + length && offset < op->offset + op->length) {
      return true;
    }
  }
  return false;
}

// Invariant 1, applied from the head: start what may start, stop at the first op that must
// wait. A barrier with nothing to sync finishes inline, so the scan restarts after it.
void DatabaseFiles::Advance() {
  for (bool restart = true; restart && poison_.ok();) {
    restart = false;
    for (PendingOp* op = head_; op != nullptr; op = op->next) {
      const bool ordering = op->kind != OpKind::kWrite;
      if (op->state == OpState::kInFlight) {
        if (ordering) return;
        continue;
      }
      if ((ordering || op->fence) && op != head_) return;
      if (op->kind == OpKind::kBarrier) {
        StartBarrier(op);
        restart = barrier_ == nullptr;  // Finished inline.
        break;
      }
      Start(op);
      if (ordering) return;
    }
  }
  AssertInvariants();
}

void DatabaseFiles::Start(PendingOp* op) {
  SharedFile& f = file(op->role);
  io::Op& io_op = op->c.op;
  io_op = io::Op{};
  io_op.fd = f.fd;
  switch (op->kind) {
    case OpKind::kWrite:
      io_op.kind = io::OpKind::kWrite;
      io_op.buffer = op->data.data();
      io_op.length = static_cast<uint32_t>(op->length);
      io_op.offset = op->offset;
      break;
    case OpKind::kTruncate:
      io_op.kind = io::OpKind::kFtruncate;
      io_op.offset = op->offset;
      break;
    case OpKind::kUnlink:
      if (f.fd >= 0 && f.opens == 0) {
        io::Op close_op{.kind = io::OpKind::kClose, .fd = f.fd};
        (void)RunNow(close_op);
        f.fd = -1;
      }
      io_op.kind = io::OpKind::kUnlink;
      io_op.fd = AT_FDCWD;
      io_op.path = f.path.c_str();
      break;
    case OpKind::kBarrier:
      SQLOOP_CHECK(false, "barriers start through StartBarrier");
      break;
  }
  op->state = OpState::kInFlight;
  loop_.Submit(op->c);
}

void DatabaseFiles::StartBarrier(PendingOp* op) {
  SQLOOP_CHECK(barrier_ == nullptr, "two barriers in flight");
  barrier_ = op;
  op->state = OpState::kInFlight;
  fsync_error_ = 0;
  vfs_.mutable_stats().barriers++;
  if (op->dir_sync && dir_fd_ < 0) {
    io::Op open_op{.kind = io::OpKind::kOpenAt,
                   .fd = AT_FDCWD,
                   .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                   .path = dir_path_.c_str()};
    const int64_t fd = RunNow(open_op);
    if (fd < 0) fsync_error_ = static_cast<int>(-fd);
    dir_fd_ = fd < 0 ? -1 : static_cast<int>(fd);
  }
  for (int i = 0; i <= kFileRoles; ++i) {
    const bool wanted = i == kDirIndex ? op->dir_sync : (op->sync_mask & (1u << i)) != 0;
    const int fd = i == kDirIndex ? dir_fd_ : files_[i].fd;
    if (!wanted || fd < 0) continue;
    loop::Completion& c = fsyncs_[i];
    c.op = io::Op{
        .kind = io::OpKind::kFsync, .fd = fd, .flags = i == kDirIndex ? 0u : io::kFsyncDatasync};
    ++fsyncs_outstanding_;
    vfs_.mutable_stats().fsyncs++;
    loop_.Submit(c);
  }
  if (fsyncs_outstanding_ == 0) FinishBarrier(op);
}

void DatabaseFiles::FinishBarrier(PendingOp* op) {
  SQLOOP_CHECK(op == barrier_ && fsyncs_outstanding_ == 0, "FinishBarrier out of order");
  barrier_ = nullptr;
  Remove(op);
  Release(op);
  if (fsync_error_ != 0) {
    Poison(absl::DataLossError(absl::StrCat(
        "fsync of '", FileNameOf(main_path_), "' (epoch ", op->epoch,
        ") failed: ", std::strerror(fsync_error_),
        ". It is never retried (the kernel may have dropped the unsynced pages); the outcome of "
        "every write since the last durable epoch is unknown. Restart the process to recover.")));
    return;
  }
  if (poison_.ok()) durable_epoch_ = std::max(durable_epoch_, op->epoch);
}

loop::Action DatabaseFiles::OnFsyncDone(loop::Loop& /*unused*/, loop::Completion& c) {
  auto* self = static_cast<DatabaseFiles*>(c.user_data);
  SQLOOP_CHECK(self->fsyncs_outstanding_ > 0, "an fsync completed that was not outstanding");
  if (c.result() < 0 && self->fsync_error_ == 0) self->fsync_error_ = static_cast<int>(-c.result());
  if (c.result() < 0 && &c == &self->fsyncs_[kDirIndex]) self->dir_fsync_failed_ = true;
  if (--self->fsyncs_outstanding_ != 0) return loop::Action::kDisarm;
  if (self->barrier_ != nullptr) self->FinishBarrier(self->barrier_);
  self->Advance();
  if (self->head_ == nullptr) self->CloseIdleDescriptors();
  self->Notify();
  self->vfs_.ReleaseIfUnused(self);
  return loop::Action::kDisarm;
}

loop::Action DatabaseFiles::OnOpDone(loop::Loop& /*unused*/, loop::Completion& c) {
  auto* op = static_cast<PendingOp*>(c.user_data);
  DatabaseFiles* self = op->owner;
  const int64_t result = c.result();
  const OpKind kind = op->kind;
  const FileRole role = op->role;
  self->Remove(op);
  self->Release(op);
  if (result < 0 && self->poison_.ok()) {
    const char* what = kind == OpKind::kWrite      ? "write-behind write"
                       : kind == OpKind::kTruncate ? "truncate"
                                                   : "unlink";
    self->Poison(absl::DataLossError(absl::StrCat(
        "the ", what, " of the ", RoleName(role), " of '", FileNameOf(self->main_path_),
        "' failed after SQLite had moved on: ", std::strerror(static_cast<int>(-result)),
        ". The outcome of every write since the last durable epoch is unknown. Restart the "
        "process to recover.")));
  }
  self->Advance();
  if (self->head_ == nullptr) {
    self->CloseIdleDescriptors();
    self->Notify();
  }
  self->vfs_.ReleaseIfUnused(self);
  return loop::Action::kDisarm;
}

// Invariant 4: drop everything queued; what is in flight comes back and is released.
void DatabaseFiles::Poison(absl::Status status) {
  if (!poison_.ok()) return;
  poison_ = std::move(status);
  vfs_.mutable_stats().poisonings++;
  vfs_.Taint(*this, dir_fsync_failed_);
  for (PendingOp* op = head_; op != nullptr;) {
    PendingOp* next = op->next;
    if (op->state == OpState::kQueued) {
      Remove(op);
      Release(op);
    }
    op = next;
  }
  Notify();
}

void DatabaseFiles::Notify() {
  if (listener_ == nullptr || notifying_) return;
  notifying_ = true;
  listener_(listener_arg_);
  notifying_ = false;
}

void DatabaseFiles::AssertInvariants() const {
  uint64_t bytes = 0;
  uint32_t count = 0;
  bool behind_ordering_point = false;
  for (const PendingOp* op = head_; op != nullptr; op = op->next) {
    SQLOOP_CHECK(op->state != OpState::kFree, "a free operation is in the queue");
    // Invariant 1: nothing runs behind an ordering point that has not completed.
    SQLOOP_CHECK(!(behind_ordering_point && op->state == OpState::kInFlight),
                 "an operation started behind an unfinished barrier, truncate or unlink");
    if (op->kind != OpKind::kWrite) behind_ordering_point = true;
    if (op->kind == OpKind::kWrite) bytes += op->length;
    ++count;
  }
  SQLOOP_CHECK(bytes == held_bytes_ && count == queued_ops_, "queue accounting is off");
  SQLOOP_CHECK(held_bytes_ <= vfs_.options().held_bytes_max, "held bytes above the limit");
  SQLOOP_CHECK(durable_epoch_ <= epoch_, "durable epoch ahead of the issued epochs");
}

// ---- SQLite's data calls ----------------------------------------------------------------------

int DatabaseFiles::Write(FileRole role, const void* buffer, int amount, int64_t offset) {
  if (!poison_.ok()) return SQLITE_IOERR_WRITE;
  SharedFile& f = file(role);
  const auto start = static_cast<uint64_t>(offset);
  const auto length = static_cast<uint64_t>(amount);
  if (head_ == nullptr) {
    // Invariant 2: nothing to wait for, so SQLite gets the outcome of this very write.
    io::Op op{.kind = io::OpKind::kWrite,
              .fd = f.fd,
              .buffer = const_cast<void*>(buffer),
              .length = static_cast<uint32_t>(amount),
              .offset = start};
    const int64_t result = RunNow(op);
    vfs_.mutable_stats().direct_writes++;
    if (result == -ENOSPC || result == -EDQUOT) return SQLITE_FULL;
    if (result < 0) return SQLITE_IOERR_WRITE;
  } else {
    const VfsOptions& options = vfs_.options();
    if (held_bytes_ + length > options.held_bytes_max || queued_ops_ >= options.held_ops_max) {
      // Invariant 5: refuse rather than grow; the Database layer turns this into backpressure.
      ++backpressure_;
      vfs_.mutable_stats().backpressure++;
      return SQLITE_FULL;
    }
    PendingOp* op = TakeOp();
    op->kind = OpKind::kWrite;
    op->role = role;
    op->offset = start;
    op->length = length;
    const char* bytes = static_cast<const char*>(buffer);
    // Recycled ops keep their buffers. Growing one to a whole page on its first use, even for a
    // 24-byte frame header, means a warm database never grows one again: no allocation.
    if (op->data.capacity() < length) op->data.reserve(std::max(length, kHeldBufferMinBytes));
    op->data.assign(bytes, bytes + amount);
    op->fence = Overlaps(role, start, length);
    Push(op);
    vfs_.mutable_stats().held_writes++;
    Advance();
  }
  f.dirty = true;
  f.size_bytes = std::max(f.size_bytes, start + length);
  return SQLITE_OK;
}

int DatabaseFiles::Truncate(FileRole role, int64_t size_bytes) {
  if (!poison_.ok()) return SQLITE_IOERR_TRUNCATE;
  SharedFile& f = file(role);
  const auto size = static_cast<uint64_t>(size_bytes);
  if (head_ == nullptr) {
    io::Op op{.kind = io::OpKind::kFtruncate, .fd = f.fd, .offset = size};
    if (RunNow(op) < 0) return SQLITE_IOERR_TRUNCATE;
  } else {
    if (queued_ops_ >= vfs_.options().held_ops_max) {
      ++backpressure_;
      vfs_.mutable_stats().backpressure++;
      return SQLITE_FULL;
    }
    PendingOp* op = TakeOp();
    op->kind = OpKind::kTruncate;
    op->role = role;
    op->offset = size;
    Push(op);
    Advance();
  }
  f.dirty = true;
  f.size_bytes = size;
  return SQLITE_OK;
}

int DatabaseFiles::Sync() {
  if (!poison_.ok()) return SQLITE_IOERR_FSYNC;
  if (queued_ops_ >= vfs_.options().held_ops_max) {
    ++backpressure_;
    vfs_.mutable_stats().backpressure++;
    return SQLITE_FULL;
  }
  PendingOp* op = TakeOp();
  op->kind = OpKind::kBarrier;
  op->epoch = ++epoch_;
  for (int i = 0; i < kFileRoles; ++i) {
    SharedFile& f = files_[i];
    if (!f.dirty && !f.needs_dir_sync) continue;
    if (f.dirty) op->sync_mask |= static_cast<uint8_t>(1u << i);
    op->dir_sync = op->dir_sync || f.needs_dir_sync;
    f.dirty = false;
    f.needs_dir_sync = false;
  }
  Push(op);
  Advance();
  return SQLITE_OK;
}

int DatabaseFiles::Unlink(FileRole role) {
  SharedFile& f = file(role);
  if (!poison_.ok()) return SQLITE_IOERR_DELETE;
  if (!f.exists && f.fd < 0 && head_ == nullptr) {
    io::Op op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = f.path.c_str()};
    const int64_t result = RunNow(op);
    if (result == -ENOENT) return SQLITE_IOERR_DELETE_NOENT;
    return result < 0 ? SQLITE_IOERR_DELETE : SQLITE_OK;
  }
  if (head_ == nullptr) {
    if (f.fd >= 0 && f.opens == 0) {
      io::Op close_op{.kind = io::OpKind::kClose, .fd = f.fd};
      (void)RunNow(close_op);
      f.fd = -1;
    }
    io::Op op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = f.path.c_str()};
    const int64_t result = RunNow(op);
    if (result < 0 && result != -ENOENT) return SQLITE_IOERR_DELETE;
  } else {
    PendingOp* op = TakeOp();
    op->kind = OpKind::kUnlink;
    op->role = role;
    Push(op);
    Advance();
  }
  f.exists = false;
  f.known = true;
  f.dirty = false;
  f.size_bytes = 0;
  return SQLITE_OK;
}

bool DatabaseFiles::ReviveUnlinked(FileRole role) {
  for (PendingOp* op = tail_; op != nullptr; op = op->prev) {
    if (op->role != role || op->kind != OpKind::kUnlink) continue;
    if (op->state != OpState::kQueued) return false;
    op->kind = OpKind::kTruncate;
    op->offset = 0;
    SharedFile& f = file(role);
    f.exists = true;
    f.size_bytes = 0;
    return true;
  }
  return false;
}

// The newest queued write that covers the whole range answers the read without the disk, as
// long as nothing newer touches the range.
bool DatabaseFiles::CoveredByPending(FileRole role, char* out, uint64_t offset,
                                     uint64_t length) const {
  const uint64_t end = offset + length;
  for (const PendingOp* op = tail_; op != nullptr; op = op->prev) {
    if (op->role != role || op->kind == OpKind::kBarrier) continue;
    if (op->kind != OpKind::kWrite) return false;
    if (op->offset >= end || offset >= op->offset + op->length) continue;
    if (op->offset > offset || op->offset + op->length < end) return false;
    std::memcpy(out, op->data.data() + (offset - op->offset), length);
    return true;
  }
  return false;
}

// Applies every queued or in-flight write and truncate of `role`, oldest first, to bytes read
// from the disk, so a read sees exactly what SQLite wrote.
void DatabaseFiles::Overlay(FileRole role, char* out, uint64_t offset, uint64_t length) const {
  const uint64_t end = offset + length;
  for (const PendingOp* op = head_; op != nullptr; op = op->next) {
    if (op->role != role) continue;
    if (op->kind == OpKind::kWrite) {
      const uint64_t from = std::max(offset, op->offset);
      const uint64_t to = std::min(end, op->offset + op->length);
      if (from < to)
        std::memcpy(out + (from - offset), op->data.data() + (from - op->offset), to - from);
    } else if (op->kind == OpKind::kTruncate && op->offset < end) {
      const uint64_t from = std::max(offset, op->offset);
      std::memset(out + (from - offset), 0, end - from);
    }
  }
}

int DatabaseFiles::Read(FileRole role, void* buffer, int amount, int64_t offset) {
  if (!poison_.ok()) return SQLITE_IOERR_READ;
  SharedFile& f = file(role);
  char* out = static_cast<char*>(buffer);
  const auto start = static_cast<uint64_t>(offset);
  const auto wanted = static_cast<uint64_t>(amount);
  const uint64_t available = f.size_bytes > start ? std::min(wanted, f.size_bytes - start) : 0;
  vfs_.mutable_stats().reads++;
  if (available > 0 && CoveredByPending(role, out, start, available)) {
    vfs_.mutable_stats().reads_from_held++;
  } else if (available > 0) {
    io::Op op{.kind = io::OpKind::kRead,
              .fd = f.fd,
              .buffer = out,
              .length = static_cast<uint32_t>(available),
              .offset = start};
    const int64_t got = RunNow(op);
    if (got < 0) return SQLITE_IOERR_READ;
    // Bytes the disk does not have yet are zeros unless a queued write supplies them.
    std::memset(out + got, 0, available - static_cast<uint64_t>(got));
    Overlay(role, out, start, available);
  }
  if (available < wanted) {
    // SQLite's contract: zero-fill what is past the end and say the read was short.
    std::memset(out + available, 0, wanted - available);
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

// ---- Locks between this process's connections -----------------------------------------------

int DatabaseFiles::Lock(const void* owner, int& level, int wanted) {
  if (level >= wanted) return SQLITE_OK;
  if (wanted == SQLITE_LOCK_SHARED) {
    if ((pending_ != nullptr && pending_ != owner) || exclusive_ != nullptr) return SQLITE_BUSY;
    ++shared_;
    level = SQLITE_LOCK_SHARED;
    return SQLITE_OK;
  }
  SQLOOP_CHECK(level >= SQLITE_LOCK_SHARED, "xLock above SHARED without holding SHARED");
  if (reserved_ != nullptr && reserved_ != owner) return SQLITE_BUSY;
  if (wanted == SQLITE_LOCK_RESERVED) {
    reserved_ = owner;
    level = SQLITE_LOCK_RESERVED;
    return SQLITE_OK;
  }
  // EXCLUSIVE goes through PENDING: no new SHARED lock is granted while we wait for the
  // readers that hold one to leave.
  if (pending_ != nullptr && pending_ != owner) return SQLITE_BUSY;
  pending_ = owner;
  if (shared_ > 1) {
    level = SQLITE_LOCK_PENDING;
    return SQLITE_BUSY;
  }
  exclusive_ = owner;
  level = SQLITE_LOCK_EXCLUSIVE;
  return SQLITE_OK;
}

void DatabaseFiles::Unlock(const void* owner, int& level, int wanted) {
  if (level <= wanted) return;
  if (level > SQLITE_LOCK_SHARED) {
    if (reserved_ == owner) reserved_ = nullptr;
    if (pending_ == owner) pending_ = nullptr;
    if (exclusive_ == owner) exclusive_ = nullptr;
    level = SQLITE_LOCK_SHARED;
  }
  if (wanted == SQLITE_LOCK_NONE && level == SQLITE_LOCK_SHARED) {
    SQLOOP_CHECK(shared_ > 0, "SHARED lock count underflow");
    --shared_;
    level = SQLITE_LOCK_NONE;
  }
}

// ---- The WAL index ----------------------------------------------------------------------------

int DatabaseFiles::ShmMap(int region, int region_bytes, bool extend, void** out) {
  if (shm_region_bytes_ == 0) shm_region_bytes_ = region_bytes;
  SQLOOP_CHECK(region_bytes == shm_region_bytes_, "xShmMap with a different region size");
  const auto index = static_cast<size_t>(region);
  if (index >= shm_regions_.size()) {
    if (!extend) {
      *out = nullptr;
      return SQLITE_OK;
    }
    if (static_cast<uint64_t>(index + 1) * static_cast<uint64_t>(region_bytes) >
        vfs_.options().wal_index_bytes_max) {
      return SQLITE_IOERR_SHMSIZE;
    }
    while (shm_regions_.size() <= index) {
      shm_regions_.push_back(std::make_unique<char[]>(static_cast<size_t>(region_bytes)));
    }
  }
  *out = shm_regions_[index].get();
  return SQLITE_OK;
}

int DatabaseFiles::ShmLock(uint8_t& shared_mask, uint8_t& exclusive_mask, int offset, int n,
                           int flags) {
  SQLOOP_CHECK(offset >= 0 && n >= 1 && offset + n <= kShmLocks, "xShmLock range out of bounds");
  const auto bits = static_cast<uint8_t>(((1u << n) - 1) << offset);
  if ((flags & SQLITE_SHM_UNLOCK) != 0) {
    for (int i = offset; i < offset + n; ++i) {
      const auto bit = static_cast<uint8_t>(1u << i);
      if ((exclusive_mask & bit) != 0) shm_exclusive_[i] = false;
      if ((shared_mask & bit) != 0) --shm_shared_[i];
    }
    shared_mask &= static_cast<uint8_t>(~bits);
    exclusive_mask &= static_cast<uint8_t>(~bits);
    return SQLITE_OK;
  }
  if ((flags & SQLITE_SHM_SHARED) != 0) {
    if ((shared_mask & bits) != 0) return SQLITE_OK;
    if (shm_exclusive_[offset]) return SQLITE_BUSY;
    ++shm_shared_[offset];
    shared_mask |= bits;
    return SQLITE_OK;
  }
  for (int i = offset; i < offset + n; ++i) {
    const auto bit = static_cast<uint8_t>(1u << i);
    if ((exclusive_mask & bit) != 0) continue;
    const uint16_t own_shared = (shared_mask & bit) != 0 ? 1 : 0;
    if (shm_exclusive_[i] || shm_shared_[i] > own_shared) return SQLITE_BUSY;
  }
  for (int i = offset; i < offset + n; ++i) shm_exclusive_[i] = true;
  exclusive_mask |= bits;
  return SQLITE_OK;
}

// The last connection gone: forget the index. The next one rebuilds it from the WAL (SQLite's
// recovery), exactly as after a restart.
void DatabaseFiles::ShmDetach() {
  SQLOOP_CHECK(shm_users_ > 0, "xShmUnmap without xShmMap");
  if (--shm_users_ != 0) return;
  shm_regions_.clear();
  shm_region_bytes_ = 0;
  shm_shared_.fill(0);
  shm_exclusive_.fill(false);
}

}  // namespace sqloop::db
