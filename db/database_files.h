// db/database_files.h
// -----------------------------------------------------------------------------
//
// `DatabaseFiles` is the VFS's state for one database: the main file, its rollback journal and
// its WAL (one descriptor each, shared by every connection of the process), the in-process
// locks and WAL index, and the ordered queue that implements epoch barriers. The Database layer
// reads the epoch numbers from it and is told when an epoch becomes durable.
//
// Epoch barriers (docs/db.md, docs/architecture.md):
//
//   SQLite writes   w1 w2 | xSync | w3 w4 | xSync | w5
//   epoch           --1-- | bar 1 | --2-- | bar 2 | -3-
//
// Every xSync closes the current epoch with a barrier: an fsync of each file written since the
// previous barrier. The fsync is submitted with loop::Loop::Submit and xSync returns at once.
// Writes, truncates and unlinks that SQLite issues while a barrier is queued or in flight are
// held in the write-behind queue and submitted only after the barrier completed; reads and the
// file size see them. So every ordering SQLite builds out of xSync (WAL frames durable before
// the checkpoint writes the database file; the database file durable before the WAL restarts)
// holds on disk, without the loop ever waiting for an fsync.
//
// Design invariants:
//   1. The queue is ordered. A barrier, truncate or unlink starts only when everything before it
//      completed, and nothing after it starts before it completed. Writes between two such
//      points run concurrently unless they overlap an earlier queued write (then they wait).
//   2. When the queue is empty a write, truncate or unlink runs at once through
//      Loop::WaitForOp, so SQLite sees its error (ENOSPC becomes SQLITE_FULL) and the
//      database stays usable.
//   3. Barriers complete in order, so `durable_epoch()` only grows and every epoch up to it
//      is on disk.
//   4. A failure of anything submitted asynchronously (a held write, a barrier's fsync) is
//      never retried: the files are poisoned, queued operations are dropped, and every later
//      call fails, and the Vfs refuses to open the files again in this process (Vfs::Taint):
//      only a new process, reading what the disk really has, recovers.
//   5. Held bytes never exceed the configured maximum: a write that does not fit is refused
//      with SQLITE_FULL and counted as backpressure; the Database layer waits for the queue
//      to drain and runs the refused requests again.
//   6. A descriptor is closed only when no operation on it is queued or in flight, so the
//      kernel (or the simulator) never sees a stale or reused descriptor.
//
// Queue states of an operation (`PendingOp`):
//
//   Push --> kQueued --Advance--> kInFlight --OnOpDone--> (freed)
//               |                                 \--error--> Poison (queue dropped)
//               +--Poison--> (freed)
//
//   transition              function     when
//   -> kQueued              Push         SQLite issued it while the queue was not empty
//   kQueued -> kInFlight    Advance      rule 1 allows it
//   kInFlight -> freed      OnOpDone     the backend handed it back (a barrier: all its fsyncs)
//   kQueued -> freed        Poison       an earlier asynchronous operation failed
//
// DatabaseFiles are created and owned by `Vfs`; a Database holds a pin on its own.
//
// Example (the Database layer):
//
//   DatabaseFiles* files = vfs.Find(path);
//   files->Pin();
//   files->SetListener(&OnFilesChanged, this);
//   ... run a transaction; its COMMIT closed epoch files->epoch() ...
//   if (files->durable_epoch() >= commit_epoch) Acknowledge();
#ifndef SQLOOP_DB_DATABASE_FILES_H_
#define SQLOOP_DB_DATABASE_FILES_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db {

class Vfs;

// The files of one database. kCount is the number of roles.
enum class FileRole : uint8_t { kMain = 0, kJournal = 1, kWal = 2, kCount = 3 };
inline constexpr int kFileRoles = static_cast<int>(FileRole::kCount);

// SQLite's shared-memory lock slots (SQLITE_SHM_NLOCK).
inline constexpr int kShmLocks = 8;

class DatabaseFiles {
 public:
  // Called on the loop thread when `durable_epoch()` advanced, the files were poisoned, or the
  // write-behind queue drained. Must not call into SQLite (it may run inside a VFS call).
  using Listener = void (*)(void* arg);

  // One file (main, journal or WAL) as SQLite sees it: the queue's effects included.
  struct SharedFile {
    std::string path;
    int fd = -1;
    uint32_t opens = 0;           // sqlite3_file handles open on it.
    bool known = false;           // `exists` is authoritative (opened or unlinked by us).
    bool exists = false;          // SQLite's view: false once an unlink is queued.
    bool dirty = false;           // Written since the last barrier that synced it.
    bool needs_dir_sync = false;  // Opened (or created) since the directory was last synced.
    uint64_t size_bytes = 0;      // SQLite's view of the size.
  };

  DatabaseFiles(Vfs& vfs, loop::Loop& loop, std::string main_path);
  ~DatabaseFiles();
  DatabaseFiles(const DatabaseFiles&) = delete;
  DatabaseFiles& operator=(const DatabaseFiles&) = delete;

  // ---- For the Database layer ---------------------------------------------------------------
  // Barriers issued so far: the number of the last closed epoch.
  [[nodiscard]] uint64_t epoch() const { return epoch_; }
  // Every epoch up to this one is on disk.
  [[nodiscard]] uint64_t durable_epoch() const { return durable_epoch_; }
  [[nodiscard]] bool poisoned() const { return !poison_.ok(); }
  // Why the files were poisoned (OK if they are not).
  [[nodiscard]] const absl::Status& poison_status() const { return poison_; }
  // Bytes of writes queued or in flight (the write-behind buffer).
  [[nodiscard]] uint64_t held_bytes() const { return held_bytes_; }
  [[nodiscard]] bool idle() const { return head_ == nullptr; }
  // Writes refused because the buffer was full, since the last ClearBackpressure().
  [[nodiscard]] uint64_t backpressure() const { return backpressure_; }
  void ClearBackpressure() { backpressure_ = 0; }
  void SetListener(Listener listener, void* arg);
  // Keeps the files (and descriptors) alive while no SQLite connection has them open.
  void Pin() { ++pins_; }
  void Unpin();
  [[nodiscard]] const std::string& main_path() const { return main_path_; }
  [[nodiscard]] const std::string& dir_path() const { return dir_path_; }
  // The directory a database file at `path` lives in ("." for a bare name).
  [[nodiscard]] static std::string DirectoryOf(const std::string& path);
  // The last component of `path`. Messages a request's caller may see name files by it, so no
  // error tells a tenant where the host keeps its files.
  [[nodiscard]] static absl::string_view FileNameOf(absl::string_view path);
  // Fails every later call and drops what is queued (invariant 4); the Vfs also calls it for
  // the other databases of a directory whose fsync failed.
  void Poison(absl::Status status);

  // ---- For the VFS ---------------------------------------------------------------------------
  [[nodiscard]] SharedFile& file(FileRole role) { return files_[static_cast<int>(role)]; }
  // Opens the role's descriptor if it is not open (flags as open(2)). Returns 0 or -errno.
  [[nodiscard]] int64_t OpenFile(FileRole role, int flags);
  void CloseHandle(FileRole role);
  // SQLite's data calls. Return an SQLite result code.
  [[nodiscard]] int Read(FileRole role, void* buffer, int amount, int64_t offset);
  [[nodiscard]] int Write(FileRole role, const void* buffer, int amount, int64_t offset);
  [[nodiscard]] int Truncate(FileRole role, int64_t size_bytes);
  [[nodiscard]] int Sync();
  [[nodiscard]] int Unlink(FileRole role);
  // SQLite opens a file whose unlink is still queued (close, then reopen at once): the unlink
  // becomes a truncate to zero, which is the same empty file from SQLite's point of view.
  // False if the unlink already started (the caller reports SQLITE_BUSY).
  [[nodiscard]] bool ReviveUnlinked(FileRole role);
  // Whether nothing keeps this object alive any more (the Vfs then destroys it).
  [[nodiscard]] bool Releasable() const;

  // In-process locks of the main file (SQLITE_LOCK_*), per sqlite3_file `owner`.
  [[nodiscard]] int Lock(const void* owner, int& level, int wanted);
  void Unlock(const void* owner, int& level, int wanted);
  [[nodiscard]] bool ReservedHeld() const { return reserved_ != nullptr; }

  // The WAL index, in process memory.
  [[nodiscard]] int ShmMap(int region, int region_bytes, bool extend, void** out);
  [[nodiscard]] int ShmLock(uint8_t& shared_mask, uint8_t& exclusive_mask, int offset, int n,
                            int flags);
  void ShmAttach() { ++shm_users_; }
  void ShmDetach();

 private:
  struct PendingOp;
  enum class OpState : uint8_t { kFree, kQueued, kInFlight };
  enum class OpKind : uint8_t { kWrite, kTruncate, kUnlink, kBarrier };

  [[nodiscard]] PendingOp* TakeOp();
  void Push(PendingOp* op);
  void Remove(PendingOp* op);
  void Release(PendingOp* op);
  void Advance();
  void Start(PendingOp* op);
  void StartBarrier(PendingOp* op);
  void FinishBarrier(PendingOp* op);
  [[nodiscard]] bool Overlaps(FileRole role, uint64_t offset, uint64_t length) const;
  [[nodiscard]] bool CoveredByPending(FileRole role, char* out, uint64_t offset,
                                      uint64_t length) const;
  void Overlay(FileRole role, char* out, uint64_t offset, uint64_t length) const;
  void Notify();
  void CloseIdleDescriptors();
  // Rolls back a hot journal left by a database's first transaction (see the definition).
  [[nodiscard]] int64_t RollBackFirstTransaction(int main_fd, int64_t& size_bytes);
  [[nodiscard]] int64_t RunNow(io::Op& op);
  void AssertInvariants() const;
  static loop::Action OnOpDone(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnFsyncDone(loop::Loop& loop, loop::Completion& c);

  Vfs& vfs_;
  loop::Loop& loop_;
  std::string main_path_;
  std::string dir_path_;
  std::array<SharedFile, kFileRoles> files_;
  int dir_fd_ = -1;

  // The queue (intrusive, doubly linked) and the free list of reusable operations.
  PendingOp* head_ = nullptr;
  PendingOp* tail_ = nullptr;
  PendingOp* free_ = nullptr;
  std::vector<std::unique_ptr<PendingOp>> ops_;  // Every PendingOp ever made; reused.
  uint32_t queued_ops_ = 0;
  uint64_t held_bytes_ = 0;
  uint64_t backpressure_ = 0;

  // The barrier in flight: one fsync completion per file and one for the directory.
  std::array<loop::Completion, kFileRoles + 1> fsyncs_{};
  PendingOp* barrier_ = nullptr;
  uint32_t fsyncs_outstanding_ = 0;
  int fsync_error_ = 0;

  uint64_t epoch_ = 0;
  uint64_t durable_epoch_ = 0;
  absl::Status poison_;
  bool dir_fsync_failed_ = false;  // The directory's fsync was among those that failed.
  Listener listener_ = nullptr;
  void* listener_arg_ = nullptr;
  uint32_t pins_ = 0;
  bool notifying_ = false;

  // Locks (SQLITE_LOCK_*): holders by owner; SHARED is a count.
  uint32_t shared_ = 0;
  const void* reserved_ = nullptr;
  const void* pending_ = nullptr;
  const void* exclusive_ = nullptr;

  // The WAL index: regions of SQLite's chosen size, zero-filled on creation.
  std::vector<std::unique_ptr<char[]>> shm_regions_;
  int shm_region_bytes_ = 0;
  uint32_t shm_users_ = 0;
  std::array<uint16_t, kShmLocks> shm_shared_{};
  std::array<bool, kShmLocks> shm_exclusive_{};
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_DATABASE_FILES_H_
