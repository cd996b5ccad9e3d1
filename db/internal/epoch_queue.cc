#include "sqloop/db/internal/epoch_queue.h"

#include <fcntl.h>
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"

namespace sqloop::db::internal {

// An operation SQLite issued while the queue was not empty (or a barrier). Reused through the
// free list, and its `data` keeps its capacity, so a warmed-up database does not allocate.
namespace {

constexpr int kDirIndex = kFileRoles;  // fsyncs_ slot of the directory.
// A held write's buffer is never smaller than SQLite's default page, the size of most writes.
constexpr uint64_t kHeldBufferMinBytes = 4096;

}  // namespace

alignas(4096) const char kReserveZeros[kWalReserveBytesDefault] = {};

EpochQueue::EpochQueue(VfsContext& context, FileTable& files)
    : context_(context), loop_(context.loop()), files_(files) {
  for (loop::Completion& c : fsyncs_) {
    c.callback = &EpochQueue::OnFsyncDone;
    c.user_data = this;
    c.name = "sqloop-db-fsync";
  }
}

EpochQueue::~EpochQueue() {
  context_.fetched_pages().Forget(this);
  SQLOOP_CHECK(queue_.empty() && fsyncs_outstanding_ == 0,
               "DatabaseFiles destroyed with operations in flight; run the loop until the "
               "database is closed");
}

void EpochQueue::AddListener(Listener listener, void* arg) {
  listeners_.push_back({listener, arg});
}

void EpochQueue::RemoveListener(Listener listener, void* arg) {
  auto* it = std::find_if(listeners_.begin(), listeners_.end(), [&](const Listening& l) {
    return l.listener == listener && l.arg == arg;
  });
  if (it != listeners_.end()) listeners_.erase(it);
}

void EpochQueue::CloseIdleDescriptors() {
  if (!queue_.empty() || fsyncs_outstanding_ != 0) return;
  ++unnoted_changes_;  // A descriptor's number may name another file next.
  files_.CloseIdle();
}

// ---- The queue --------------------------------------------------------------------------------

EpochQueue::PendingOp* EpochQueue::TakeOp() {
  PendingOp* op = free_.PopFront();
  if (op == nullptr) {
    ops_.push_back(std::make_unique<PendingOp>());
    op = ops_.back().get();
    op->owner = this;
    op->c.callback = &EpochQueue::OnOpDone;
    op->c.user_data = op;
    op->c.name = "sqloop-db-write-behind";
  }
  op->fence = op->dir_sync = false;
  op->sync_mask = 0;
  op->offset = op->length = op->epoch = 0;
  op->state = OpState::kQueued;
  return op;
}

void EpochQueue::Push(PendingOp* op) {
  queue_.PushBack(*op);
  ++queued_ops_;
  if (op->kind == OpKind::kWrite) held_bytes_ += op->length;
}

void EpochQueue::Remove(PendingOp* op) {
  queue_.Remove(*op);
  --queued_ops_;
  if (op->kind == OpKind::kWrite) held_bytes_ -= op->length;
}

void EpochQueue::Release(PendingOp* op) {
  op->state = OpState::kFree;
  free_.PushFront(*op);  // A stack: the op used last, whose buffer fits, is reused first.
}

// Whether the queued write `op` touches bytes [offset, offset + length) of `role`.
bool EpochQueue::WriteOverlaps(const PendingOp& op, FileRole role, uint64_t offset,
                               uint64_t length) {
  return op.role == role && op.offset < offset + length && offset < op.offset + op.length;
}

bool EpochQueue::Overlaps(FileRole role, uint64_t offset, uint64_t length) const {
  for (const PendingOp* op = queue_.back(); op != nullptr; op = OpList::Prev(*op)) {
    if (Ordering(op->kind)) return false;  // Everything before it finishes first.
    if (WriteOverlaps(*op, role, offset, length)) return true;
  }
  return false;
}

// Invariant 2: a write may run at once beside what is queued when nothing queued orders it
// (only writes are queued) and none of them overlaps it.
bool EpochQueue::MayWriteNow(FileRole role, uint64_t offset, uint64_t length) const {
  for (const PendingOp* op = queue_.front(); op != nullptr; op = OpList::Next(*op)) {
    if (Ordering(op->kind) || WriteOverlaps(*op, role, offset, length)) return false;
  }
  return true;
}

// Invariant 1, applied from the head: start what may start, stop at the first op that must
// wait. A barrier with nothing to sync finishes inline, so the scan restarts after it.
void EpochQueue::Advance() {
  for (bool restart = true; restart && poison_.ok();) {
    restart = false;
    for (PendingOp* op = queue_.front(); op != nullptr; op = OpList::Next(*op)) {
      const bool ordering = Ordering(op->kind);
      if (op->state == OpState::kInFlight) {
        if (ordering) return;
        continue;
      }
      if ((ordering || op->fence) && op != queue_.front()) return;
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

void EpochQueue::Start(PendingOp* op) {
  SharedFile& f = files_.file(op->role);
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
    case OpKind::kReserve:
      io_op.kind = io::OpKind::kWrite;
      io_op.buffer = const_cast<char*>(kReserveZeros);
      io_op.length = static_cast<uint32_t>(op->length);
      io_op.offset = op->offset;
      break;
    case OpKind::kTruncate:
      io_op.kind = io::OpKind::kFtruncate;
      io_op.offset = op->offset;
      break;
    case OpKind::kUnlink:
      files_.CloseIfUnused(op->role);
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

void EpochQueue::StartBarrier(PendingOp* op) {
  SQLOOP_CHECK(barrier_ == nullptr, "two barriers in flight");
  barrier_ = op;
  op->state = OpState::kInFlight;
  fsync_error_ = 0;
  context_.stats().barriers++;
  for (int i = 0; i < kFileRoles; ++i) {
    const int fd = files_.file(static_cast<FileRole>(i)).fd;
    if ((op->sync_mask & (1u << i)) != 0 && fd >= 0) SubmitFsync(fsyncs_[i], fd);
  }
  if (op->dir_sync) SyncDirectory();
  if (fsyncs_outstanding_ == 0) FinishBarrier(op);
}

void EpochQueue::SubmitFsync(loop::Completion& c, int fd) {
  const bool directory = &c == &fsyncs_[kDirIndex];
  c.op = io::Op{.kind = io::OpKind::kFsync, .fd = fd, .flags = directory ? 0u : io::kFsyncDatasync};
  ++fsyncs_outstanding_;
  context_.stats().fsyncs++;
  loop_.Submit(c);
}

// A table with no directory descriptor yet (the first barrier after an open) has the directory
// opened through the loop, and OnFsyncDone then syncs it: the loop does not wait for the open,
// and the files' fsyncs do not wait for the directory's.
void EpochQueue::SyncDirectory() {
  loop::Completion& c = fsyncs_[kDirIndex];
  if (files_.directory_fd() >= 0) {
    SubmitFsync(c, files_.directory_fd());
    return;
  }
  c.op = io::OpenDirectoryOp(files_.dir_path().c_str());
  ++fsyncs_outstanding_;
  loop_.Submit(c);
}

void EpochQueue::FinishBarrier(PendingOp* op) {
  SQLOOP_CHECK(op == barrier_ && fsyncs_outstanding_ == 0, "FinishBarrier out of order");
  barrier_ = nullptr;
  Remove(op);
  Release(op);
  if (fsync_error_ != 0) {
    Poison(FsyncFailed(op->epoch));
    return;
  }
  if (!poison_.ok()) return;
  durable_epoch_ = std::max(durable_epoch_, op->epoch);
  waits_.Settle(durable_epoch_, poison_);  // Hands them to the loop: no host code runs here.
}

absl::Status EpochQueue::FsyncFailed(uint64_t epoch) const {
  return absl::DataLossError(absl::StrCat(
      "fsync of '", FileNameOf(files_.main_path()), "' (epoch ", epoch,
      ") failed: ", std::strerror(fsync_error_),
      ". It is never retried (the kernel may have dropped the unsynced pages); the outcome of "
      "every write since the last durable epoch is unknown. Restart the process to recover."));
}

loop::Action EpochQueue::OnFsyncDone(loop::Loop& /*unused*/, loop::Completion& c) {
  auto* self = static_cast<EpochQueue*>(c.user_data);
  SQLOOP_CHECK(self->fsyncs_outstanding_ > 0, "an fsync completed that was not outstanding");
  const bool opened_directory = c.op.kind == io::OpKind::kOpenAt;
  if (opened_directory && c.result() >= 0) {
    self->files_.AdoptDirectory(static_cast<int>(c.result()));
    --self->fsyncs_outstanding_;  // The open's count passes to the fsync that follows it.
    self->SubmitFsync(c, self->files_.directory_fd());
    return loop::Action::kDisarm;
  }
  if (c.result() < 0 && self->fsync_error_ == 0) self->fsync_error_ = static_cast<int>(-c.result());
  if (c.result() < 0 && !opened_directory && &c == &self->fsyncs_[kDirIndex]) {
    self->dir_fsync_failed_ = true;
    self->Poison(self->FsyncFailed(self->barrier_->epoch));  // Invariant 8: now, not when done.
  }
  if (--self->fsyncs_outstanding_ != 0) return loop::Action::kDisarm;
  if (self->barrier_ != nullptr) self->FinishBarrier(self->barrier_);
  self->Advance();
  if (self->queue_.empty()) self->CloseIdleDescriptors();
  self->Notify();
  // May destroy this queue (with its database's files): nothing touches it afterwards.
  self->context_.ReleaseIfUnused(self->files_.main_path());
  return loop::Action::kDisarm;
}

loop::Action EpochQueue::OnOpDone(loop::Loop& /*unused*/, loop::Completion& c) {
  auto* op = static_cast<PendingOp*>(c.user_data);
  EpochQueue* self = op->owner;
  const int64_t result = c.result();
  const OpKind kind = op->kind;
  const FileRole role = op->role;
  ++self->unnoted_changes_;  // Its bytes reached the file (or its size changed) just now.
  if (kind == OpKind::kReserve) self->FinishReserve(*op, result);
  self->Remove(op);
  self->Release(op);
  if (result < 0 && kind != OpKind::kReserve && self->poison_.ok()) {
    const char* what = kind == OpKind::kWrite      ? "write-behind write"
                       : kind == OpKind::kTruncate ? "truncate"
                                                   : "unlink";
    self->Poison(absl::DataLossError(absl::StrCat(
        "the ", what, " of the ", RoleName(role), " of '", FileNameOf(self->files_.main_path()),
        "' failed after SQLite had moved on: ", std::strerror(static_cast<int>(-result)),
        ". The outcome of every write since the last durable epoch is unknown. Restart the "
        "process to recover.")));
  }
  self->Advance();
  if (self->queue_.empty()) {
    self->CloseIdleDescriptors();
    self->Notify();
  }
  // May destroy this queue (with its database's files): nothing touches it afterwards.
  self->context_.ReleaseIfUnused(self->files_.main_path());
  return loop::Action::kDisarm;
}

// Invariant 4: drop everything queued; what is in flight comes back and is released.
void EpochQueue::Poison(absl::Status status) {
  if (!poison_.ok()) {
    // Poisoned already (a write-behind write failed, say): a directory fsync failing after that
    // still taints the directory (invariant 8).
    if (dir_fsync_failed_) {
      context_.Taint(files_.main_path(), files_.dir_path(), poison_.message(), true);
    }
    return;
  }
  poison_ = std::move(status);
  context_.stats().poisonings++;
  context_.Taint(files_.main_path(), files_.dir_path(), poison_.message(), dir_fsync_failed_);
  waits_.Settle(durable_epoch_, poison_);
  for (PendingOp* op = queue_.front(); op != nullptr;) {
    PendingOp* next = OpList::Next(*op);
    if (op->state == OpState::kQueued) {
      Remove(op);
      Release(op);
    }
    op = next;
  }
  Notify();
}

void EpochQueue::Notify() {
  if (notifying_) return;
  notifying_ = true;
  // By index: a listener may remove itself (or another) while being told.
  for (size_t i = 0; i < listeners_.size(); ++i) listeners_[i].listener(listeners_[i].arg);
  notifying_ = false;
}

void EpochQueue::AssertInvariants() const {
  uint64_t bytes = 0;
  uint32_t count = 0;
  bool behind_ordering_point = false;
  for (const PendingOp* op = queue_.front(); op != nullptr; op = OpList::Next(*op)) {
    SQLOOP_CHECK(op->state != OpState::kFree, "a free operation is in the queue");
    // Invariant 1: nothing runs behind an ordering point that has not completed.
    SQLOOP_CHECK(!(behind_ordering_point && op->state == OpState::kInFlight),
                 "an operation started behind an unfinished barrier, truncate or unlink");
    if (Ordering(op->kind)) behind_ordering_point = true;
    if (op->kind == OpKind::kWrite) bytes += op->length;
    ++count;
  }
  SQLOOP_CHECK(bytes == held_bytes_ && count == queued_ops_, "queue accounting is off");
  SQLOOP_CHECK(held_bytes_ <= context_.options().held_bytes_max, "held bytes above the limit");
  SQLOOP_CHECK(durable_epoch_ <= epoch_, "durable epoch ahead of the issued epochs");
  // DurableWaits invariant 3: a waiting wait's barrier is still here, so the queue is not quiet.
  SQLOOP_CHECK(waits_.empty() || (poison_.ok() && waits_.first_epoch() > durable_epoch_ &&
                                  waits_.first_epoch() <= epoch_ && !queue_.empty()),
               "a DurableWait waits for an epoch that is durable, poisoned or not queued");
}

// ---- SQLite's data calls ----------------------------------------------------------------------

int EpochQueue::RefuseForBackpressure() {
  ++backpressure_;
  write_behind_paused_ = true;
  context_.stats().backpressure++;
  return SQLITE_FULL;
}

int EpochQueue::Write(FileRole role, const void* buffer, int amount, int64_t offset) {
  if (!poison_.ok()) return SQLITE_IOERR_WRITE;
  files_.NoteChange();
  SharedFile& f = files_.file(role);
  SQLOOP_CHECK(!f.deferred, "EpochQueue: a write to the WAL a wake left closed (FileSleep 5)");
  const auto start = static_cast<uint64_t>(offset);
  if (role == FileRole::kWal) NoteWalWrite(buffer, amount, start);
  if (role == FileRole::kMain) files_.DropHead();  // FileTable invariant 4.
  const auto length = static_cast<uint64_t>(amount);
  const VfsOptions& options = context_.options();
  const bool fits =
      held_bytes_ + length <= options.held_bytes_max && queued_ops_ < options.held_ops_max;
  const bool behind = fits && !write_behind_paused_ && start + length <= f.allocated_bytes;
  if (!behind && MayWriteNow(role, start, length)) {
    // Invariant 2: a write that allocates runs at once, so SQLite gets its outcome (ENOSPC);
    // so does one the write-behind buffer has no room for, when nothing orders it.
    io::Op op{.kind = io::OpKind::kWrite,
              .fd = f.fd,
              .buffer = const_cast<void*>(buffer),
              .length = static_cast<uint32_t>(amount),
              .offset = start};
    const int64_t result = RunNow(loop_, op);
    context_.stats().direct_writes++;
    if (result == -ENOSPC || result == -EDQUOT) return SQLITE_FULL;
    if (result < 0) return SQLITE_IOERR_WRITE;
    f.allocated_bytes = std::max(f.allocated_bytes, start + length);
    reserve_failed_ = false;  // Invariant 9: the disk had room again.
  } else {
    if (!fits) {
      // Invariant 5: refuse rather than grow; the Database layer turns this into backpressure.
      return RefuseForBackpressure();
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
    context_.stats().held_writes++;
    Advance();
  }
  f.dirty = true;
  f.size_bytes = std::max(f.size_bytes, start + length);
  return SQLITE_OK;
}

int EpochQueue::Truncate(FileRole role, int64_t size_bytes) {
  if (!poison_.ok()) return SQLITE_IOERR_TRUNCATE;
  SharedFile& f = files_.file(role);
  SQLOOP_CHECK(!f.deferred, "EpochQueue: a truncate of the WAL a wake left closed (FileSleep 5)");
  const auto size = static_cast<uint64_t>(size_bytes);
  // Invariant 10: SQLite truncates the main file to its pages after every full checkpoint;
  // when that is the size it already sees, the truncate would only cut the reserve.
  if (role == FileRole::kMain && size == f.size_bytes && f.allocated_bytes > size) {
    return SQLITE_OK;
  }
  if (role == FileRole::kMain) files_.DropHead();  // FileTable invariant 4.
  ++shape_changes_;
  files_.NoteChange();
  if (queue_.empty()) {
    io::Op op{.kind = io::OpKind::kFtruncate, .fd = f.fd, .offset = size};
    if (RunNow(loop_, op) < 0) return SQLITE_IOERR_TRUNCATE;
  } else {
    if (queued_ops_ >= context_.options().held_ops_max) {
      return RefuseForBackpressure();
    }
    PendingOp* op = TakeOp();
    op->kind = OpKind::kTruncate;
    op->role = role;
    op->offset = size;
    Push(op);
    Advance();
  }
  if (role != FileRole::kWal) f.dirty = true;  // Invariant 11: a WAL's cut needs no fsync.
  f.size_bytes = size;
  f.allocated_bytes = std::min(f.allocated_bytes, size);
  return SQLITE_OK;
}

// Queues a reserve of `length` zeros at `offset` of `role`'s file if a barrier still fits after.
bool EpochQueue::QueueReserve(FileRole role, uint64_t offset, uint64_t length) {
  if (queued_ops_ + 2 > context_.options().held_ops_max) return false;
  files_.NoteChange();
  PendingOp* op = TakeOp();
  op->kind = OpKind::kReserve;
  op->role = role;
  op->offset = offset;
  op->length = length;
  op->epoch = shape_changes_;
  Push(op);
  return true;
}

void EpochQueue::ReserveWal() {
  const uint64_t reserve = context_.options().wal_reserve_bytes;
  SharedFile& f = files_.file(FileRole::kWal);
  if (reserve == 0 || reserve_failed_ || !f.dirty || f.fd < 0 ||
      f.size_bytes + reserve / 2 <= f.allocated_bytes) {
    return;
  }
  if (QueueReserve(FileRole::kWal, std::max(f.size_bytes, f.allocated_bytes), reserve)) {
    context_.stats().wal_reserves++;
  }
}

// SQLite's WAL format (wal.c): each frame is a 24-byte header, written by itself, then the page;
// bytes 4-7 (big-endian) of a commit frame's header are the database's size in pages after the
// commit. So when the commit frame's page is written, its length times that count is the size
// the main file will have once a checkpoint copied the WAL back.
void EpochQueue::NoteWalWrite(const void* buffer, int amount, uint64_t offset) {
  constexpr uint64_t kWalHeaderBytes = 32;
  constexpr int kFrameHeaderBytes = 24;
  if (amount == kFrameHeaderBytes && offset >= kWalHeaderBytes) {
    const auto* pages = static_cast<const unsigned char*>(buffer) + 4;
    commit_pages_ = uint32_t{pages[0]} << 24 | uint32_t{pages[1]} << 16 | uint32_t{pages[2]} << 8 |
                    uint32_t{pages[3]};
    commit_page_offset_ = offset + kFrameHeaderBytes;
  } else if (commit_pages_ != 0 && offset == commit_page_offset_) {
    main_bytes_after_checkpoint_ = uint64_t{commit_pages_} * static_cast<uint64_t>(amount);
    commit_pages_ = 0;
  }
}

void EpochQueue::ReserveMain() {
  const uint64_t reserve = context_.options().wal_reserve_bytes;
  SharedFile& f = files_.file(FileRole::kMain);
  // SQLite's own bound on what a checkpoint may grow the file to (walCheckpoint calls more
  // corrupt): the file, plus the WAL, plus the pending-byte page. A misread frame costs nothing.
  constexpr uint64_t kPendingBytePageMax = 65536;
  const SharedFile& wal = files_.file(FileRole::kWal);
  const uint64_t target =
      std::min(main_bytes_after_checkpoint_, f.size_bytes + wal.size_bytes + kPendingBytePageMax);
  const uint64_t from = std::max(f.size_bytes, f.allocated_bytes);
  // Only at a commit's barrier (the WAL is dirty), well before the checkpoint: at the
  // checkpoint's own first barrier it would come too late, and queue the checkpoint's writes
  // behind a barrier that syncs the main file.
  if (reserve == 0 || reserve_failed_ || f.fd < 0 || target <= from || !wal.dirty) {
    return;
  }
  // A little past the target, so a database that keeps growing is not reserved at every
  // group: an eighth of the file (a small tenant's file stays small), at most the reserve.
  const uint64_t slack = std::min<uint64_t>(reserve, target / 8);
  if (QueueReserve(FileRole::kMain, from, std::min<uint64_t>(target + slack - from, reserve))) {
    context_.stats().main_reserves++;
  }
}

void EpochQueue::FinishReserve(const PendingOp& op, int64_t result) {
  if (result < 0) {
    reserve_failed_ = true;
    context_.stats().reserve_failures++;
    return;
  }
  if (op.epoch != shape_changes_) return;
  SharedFile& f = files_.file(op.role);
  f.allocated_bytes = std::max(f.allocated_bytes, op.offset + static_cast<uint64_t>(result));
}

int EpochQueue::Sync() {
  if (!poison_.ok()) return SQLITE_IOERR_FSYNC;
  // Invariant 5: never refused, even with the queue at held_ops_max. At a COMMIT's xSync the
  // commit frame is written already; refused, SQLite would roll the transaction back while a
  // crash could still find that frame on disk and replay it.
  ReserveWal();
  ReserveMain();
  PendingOp* op = TakeOp();
  op->kind = OpKind::kBarrier;
  op->epoch = ++epoch_;
  write_behind_paused_ = false;  // The transaction the refusal rolled back committed again.
  for (int i = 0; i < kFileRoles; ++i) {
    SharedFile& f = files_.file(static_cast<FileRole>(i));
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

absl::Status EpochQueue::WhenDurable(DurableWait& wait) {
  const bool unsynced = files_.unsynced(FileTable::Unsynced::kWritesAndNames);
  if (unsynced && poison_.ok()) {
    // The host's own barrier, unlike SQLite's (invariant 5), waits for room: the host can run
    // the loop and try again, and the queue stays within held_ops_max plus SQLite's one.
    if (queued_ops_ >= context_.options().held_ops_max) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "Vfs::WhenDurable: the write-behind queue of '", FileNameOf(files_.main_path()),
          "' is full (held_ops_max); run the loop until its writes drain, then try again"));
    }
    SQLOOP_CHECK(Sync() == SQLITE_OK, "EpochQueue::WhenDurable: a barrier refused");
  }
  // Poisoned with something written since the last barrier (a write-behind write that failed
  // after its COMMIT returned, say): no barrier will ever cover it, so the wait needs an epoch
  // that is never durable, and gets the poison rather than the OK of an older epoch.
  const uint64_t epoch = unsynced && !poison_.ok() ? epoch_ + 1 : epoch_;
  waits_.Arm(wait, epoch, durable_epoch_, poison_);
  return absl::OkStatus();
}

bool EpochQueue::SyncBeforeRelease() {
  if (!poison_.ok()) return false;
  // Written only: a name made or removed needs no barrier here, since every open of the files
  // marks the directory for the next one (SharedFile::needs_dir_sync), whose fsync covers it.
  if (!files_.unsynced(FileTable::Unsynced::kWrites)) return false;
  if (Sync() != SQLITE_OK) return false;  // Sync refuses only when poisoned.
  // A barrier with nothing to fsync finished inline.
  return !quiet();
}

int EpochQueue::Unlink(FileRole role) {
  SharedFile& f = files_.file(role);
  if (!poison_.ok()) return SQLITE_IOERR_DELETE;
  ++shape_changes_;
  files_.NoteChange();
  if (!f.exists && f.fd < 0 && queue_.empty()) {
    io::Op op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = f.path.c_str()};
    const int64_t result = RunNow(loop_, op);
    if (result == -ENOENT) return SQLITE_IOERR_DELETE_NOENT;
    return result < 0 ? SQLITE_IOERR_DELETE : SQLITE_OK;
  }
  if (queue_.empty()) {
    files_.CloseIfUnused(role);
    io::Op op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = f.path.c_str()};
    const int64_t result = RunNow(loop_, op);
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
  f.allocated_bytes = 0;
  // Invariant 7: the removal is durable only once the directory is synced. SQLite deletes a
  // rollback journal to commit (a new database's first transaction, the switch to WAL): if a
  // crash undid that unlink, the journal would roll the commit back (the main file truncated to
  // 0 pages) and SQLite would then discard the WAL, with every acknowledged write in it.
  f.needs_dir_sync = true;
  return SQLITE_OK;
}

bool EpochQueue::ReviveUnlinked(FileRole role) {
  for (PendingOp* op = queue_.back(); op != nullptr; op = OpList::Prev(*op)) {
    if (op->role != role || op->kind != OpKind::kUnlink) continue;
    if (op->state != OpState::kQueued) return false;
    op->kind = OpKind::kTruncate;
    op->offset = 0;
    ++shape_changes_;
    files_.NoteChange();
    SharedFile& f = files_.file(role);
    f.exists = true;
    f.size_bytes = 0;
    f.allocated_bytes = 0;
    return true;
  }
  return true;
}

// The newest queued write that covers the whole range answers the read without the disk, as
// long as nothing newer touches the range.
bool EpochQueue::CoveredByPending(FileRole role, char* out, uint64_t offset,
                                  uint64_t length) const {
  const uint64_t end = offset + length;
  for (const PendingOp* op = queue_.back(); op != nullptr; op = OpList::Prev(*op)) {
    if (op->role != role || op->kind == OpKind::kBarrier || op->kind == OpKind::kReserve) continue;
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
void EpochQueue::Overlay(FileRole role, char* out, uint64_t offset, uint64_t length) const {
  const uint64_t end = offset + length;
  for (const PendingOp* op = queue_.front(); op != nullptr; op = OpList::Next(*op)) {
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

int64_t EpochQueue::ReadFile(const SharedFile& f, char* out, uint64_t length, uint64_t start) {
  if (in_flight_ != nullptr && in_flight_->covers(in_flight_->owner, f.fd, start, length)) {
    context_.stats().misses_in_flight++;  // No probe: a fetch is reading these bytes.
    return Miss(f, start, length);
  }
  // Memory first, whoever reads: a hit costs one system call, not a trip through the loop.
  uint64_t done = 0;
  while (done < length) {
    const int64_t got = loop_.backend().ReadIfCached(
        f.fd, out + done, static_cast<uint32_t>(length - done), start + done);
    if (got == 0) return static_cast<int64_t>(done);  // End of what the disk has.
    if (got == -EOPNOTSUPP) break;  // The file system cannot tell: read the rest, waiting.
    if (got == -EAGAIN) {
      context_.stats().cache_misses++;
      if (!reads_nowait_) break;
      return Miss(f, start + done, length - done);
    }
    if (got < 0) return got;
    done += static_cast<uint64_t>(got);
  }
  if (done == length) return static_cast<int64_t>(done);
  // A writer's or an open's read, which cannot restart, or a file system that cannot tell.
  context_.stats().reads_waited++;
  io::Op op{.kind = io::OpKind::kRead,
            .fd = f.fd,
            .buffer = out + done,
            .length = static_cast<uint32_t>(length - done),
            .offset = start + done};
  const int64_t got = RunNow(loop_, op);
  return got < 0 ? got : static_cast<int64_t>(done) + got;
}

int64_t EpochQueue::Miss(const SharedFile& f, uint64_t offset, uint64_t length) {
  missed_ = true;
  miss_ = ReadMiss{.fd = f.fd, .offset = offset, .length = length, .file_bytes = f.size_bytes};
  return -EAGAIN;
}

char* EpochQueue::FetchBuffer(int fd, uint64_t offset, uint64_t length) {
  if (length != FetchedPages::kPageBytes) return nullptr;
  return context_.fetched_pages().Take(this, fd, offset, FilesVersion());
}

bool EpochQueue::TakeMiss(ReadMiss& miss) {
  if (!missed_) return false;
  missed_ = false;
  miss = miss_;
  return true;
}

int EpochQueue::Read(FileRole role, void* buffer, int amount, int64_t offset) {
  const int rc = ReadBytes(role, buffer, amount, offset);
  if ((rc == SQLITE_OK || rc == SQLITE_IOERR_SHORT_READ) && charge_.charge != nullptr) {
    charge_.charge(charge_.arg);
  }
  return rc;
}

int EpochQueue::ReadBytes(FileRole role, void* buffer, int amount, int64_t offset) {
  if (!poison_.ok()) return SQLITE_IOERR_READ;
  SharedFile& f = files_.file(role);
  char* out = static_cast<char*>(buffer);
  const auto start = static_cast<uint64_t>(offset);
  const auto wanted = static_cast<uint64_t>(amount);
  const uint64_t available = f.size_bytes > start ? std::min(wanted, f.size_bytes - start) : 0;
  context_.stats().reads++;
  if (available > 0 && CoveredByPending(role, out, start, available)) {
    context_.stats().reads_from_held++;
  } else if (available > 0 && role == FileRole::kMain && files_.ReadHead(out, available, start)) {
    context_.stats().reads_from_head++;
  } else if (available > 0 && context_.fetched_pages().ready() > 0 &&
             context_.fetched_pages().TakeCopy(this, f.fd, start, available, FilesVersion(), out)) {
    context_.stats().reads_from_fetch++;
    Overlay(role, out, start, available);  // Writes queued since the fetch started.
  } else if (available > 0) {
    const int64_t got = ReadFile(f, out, available, start);
    if (got == -EAGAIN && reads_nowait_ && missed_) {
      return miss_rc_;  // Stops the statement, not the loop.
    }
    if (got < 0) return SQLITE_IOERR_READ;
    // Bytes the disk does not have yet are zeros unless a queued write supplies them.
    if (static_cast<uint64_t>(got) < available) {
      std::memset(out + got, 0, available - static_cast<uint64_t>(got));
    }
    Overlay(role, out, start, available);
  }
  if (available < wanted) {
    // SQLite's contract: zero-fill what is past the end and say the read was short.
    std::memset(out + available, 0, wanted - available);
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

}  // namespace sqloop::db::internal
