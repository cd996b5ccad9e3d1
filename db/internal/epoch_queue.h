// db/internal/epoch_queue.h
// -----------------------------------------------------------------------------
//
// `EpochQueue` is the durability core of one database: the ordered write-behind queue that
// implements epoch barriers, the epoch numbers, and the poison. The Database layer reads the
// epoch numbers from it and is told (through its listener) when an epoch becomes durable; a
// host's own connection is told through a DurableWait it holds (Vfs::WhenDurable, DurableWaits).
//
// Epoch barriers (docs/db.md, docs/architecture.md):
//
// clang-format off
//   SQLite writes   w1 w2 | xSync | w3 w4 | xSync | w5
//   epoch           --1-- | bar 1 | --2-- | bar 2 | -3-
// clang-format on
//
// Every xSync closes the current epoch with a barrier: an fsync of each file written since the
// previous barrier. The fsync is submitted with loop::Loop::Submit and xSync returns at once.
// The directory's, when the table has no descriptor for it yet (the first barrier after an
// open), follows an open of the directory submitted the same way, beside the files' fsyncs.
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
//   2. A write that reaches beyond the bytes the file is known to hold on disk
//      (SharedFile::allocated_bytes) runs at once through Loop::WaitForOp when only writes are
//      queued and none overlaps it, and a truncate or unlink when nothing is queued, so SQLite
//      sees its error (ENOSPC becomes SQLITE_FULL) and the database stays usable. A write
//      inside those bytes allocates nothing and is queued (and so submitted at once,
//      asynchronously) like one behind a barrier: the loop does not wait for it, unless the
//      write-behind buffer is full (invariant 5) or refused a write since the last barrier;
//      then it runs at once if it may. A buffered write can wait for milliseconds (a page under
//      writeback, the file system's journal commit); the WAL, rewritten from its start after each
//      checkpoint and reserved ahead while it grows (invariant 9), is written this way. Its
//      failure poisons (invariant 4).
//   3. Barriers complete in order, so `durable_epoch()` only grows and every epoch up to it
//      is on disk.
//   4. A failure of anything submitted asynchronously (a held write, a barrier's fsync) is
//      never retried: the queue is poisoned, queued operations are dropped, every later call
//      fails, and the path is tainted (VfsContext::Taint), so this process refuses to open the
//      files again: only a new process, reading what the disk really has, recovers.
//   5. Held bytes never exceed the configured maximum: a write that does not fit is refused
//      with SQLITE_FULL and counted as backpressure; the Database layer waits for the queue
//      to drain and runs the refused requests again. A barrier is never refused (it holds no
//      bytes, and the queue's operations pass held_ops_max by that one at most, since writes
//      are refused from there): by a COMMIT's xSync its commit frame is written, and a refused
//      sync would have SQLite roll back a transaction that a crash could still replay.
//   6. A descriptor (FileTable) is closed only when no operation on it is queued or in flight,
//      so the kernel (or the simulator) never sees a stale or reused descriptor.
//   7. An unlink marks the directory for the next barrier's fsync (SharedFile::needs_dir_sync),
//      as an open does: no epoch that follows an unlink is durable before the unlink is.
//   8. A failed fsync of the directory poisons this queue and taints the directory the moment
//      its completion arrives, before any other completion runs. It may have dropped the
//      pending creations and unlinks of every database in the directory, and another database's
//      barrier completing next would otherwise call an epoch durable whose file name is lost.
//   9. The WAL is reserved ahead. At a barrier that syncs it, when fewer than half of
//      VfsOptions::wal_reserve_bytes remain between the end SQLite sees and allocated_bytes, a
//      reserve (a write of that many zeros from the later of the two) is queued before the
//      barrier, so it is done and covered by the fsync when the next group writes. It lies past
//      every byte SQLite wrote: reads, the size SQLite sees and the write-behind buffer ignore it.
//      Its success raises allocated_bytes unless a truncate or unlink was queued after it; its
//      failure (a full disk) poisons nothing and stops reserves until a write that grows a file
//      succeeds again. Zeros past the last frame are what SQLite's WAL recovery stops at (a frame
//      whose salt does not match the header's), so a crash at any point leaves a valid WAL.
//  10. The main file is reserved ahead of the checkpoint that grows it. SQLite writes each WAL
//      frame's 24-byte header by itself, and a commit frame's header holds the database's size
//      in pages after the commit; times the length of the page written next, that is the size
//      the main file reaches once a checkpoint copied the WAL back. At a barrier, when that size
//      is past the bytes the main file holds on disk, a reserve of zeros up to it and an eighth
//      of it further (at most wal_reserve_bytes in all) is queued before the barrier (zeros
//      carry no data: the barrier does not sync the main file for them), so the checkpoint's
//      writes there allocate nothing and go behind. The zeros lie past every page the database
//      uses: SQLite takes the database's size from its header (or the WAL), not from the file's, so
//      a file longer than its pages is valid (SQLite's own unix VFS makes one with a chunk size). A
//      truncate of the main file to the size SQLite already sees (SQLite's, after each full
//      checkpoint) is skipped while a reserve lies past it. Success and failure are as for the
//      WAL's reserve.
//  11. What was written since the last barrier (`SharedFile::dirty`) keeps its descriptor and
//      its files: FileTable::CloseIdle leaves a dirty file's descriptor open, and before the
//      files are released a barrier syncs them (SyncBeforeRelease). So a later barrier, or a
//      WhenDurable on a connection opened after the files went, still covers every write,
//      whatever synchronous= said. A name made or removed and not synced yet needs no such
//      barrier: the next open of the files marks the directory for the next barrier (invariant
//      7), whose fsync covers every earlier change to it. A truncate of the WAL leaves it clean:
//      SQLite cuts the WAL only once a checkpoint copied every frame into the main file and
//      synced it (or at synchronous=OFF, where nothing is synced), so a crash that undoes the
//      cut leaves frames the main file already holds, and the next fsync of the WAL makes the
//      cut durable anyway.
//
// Queue states of an operation (`PendingOp`):
//
// clang-format off
//   Push --> kQueued --Advance--> kInFlight --OnOpDone--> (freed)
//               |                                 \--error--> Poison (queue dropped)
//               +--Poison--> (freed)
//
//   transition              function     when
//   -> kQueued              Push         SQLite issued it while the queue was not empty
//   kQueued -> kInFlight    Advance      rule 1 allows it
//   kInFlight -> freed      OnOpDone     the backend handed it back (a barrier: all its fsyncs)
//   kQueued -> freed        Poison       an earlier asynchronous operation failed
// clang-format on
//
// Internal: DatabaseFiles owns one per database, over its FileTable.
//
// Example (the VFS glue, then the Database layer):
//
//   int rc = queue.Write(FileRole::kWal, page, page_bytes, offset);  // held if a barrier is
//   rc = queue.Sync();                                               // queued: closes an epoch
//   ... the Database's COMMIT closed epoch queue.epoch() ...
//   if (queue.durable_epoch() >= commit_epoch) Acknowledge();
#ifndef SQLOOP_DB_INTERNAL_EPOCH_QUEUE_H_
#define SQLOOP_DB_INTERNAL_EPOCH_QUEUE_H_

#include <sqlite3.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "sqloop/alloc/intrusive_list.h"
#include "sqloop/db/internal/durable_waits.h"
#include "sqloop/db/internal/file_table.h"
#include "sqloop/db/internal/vfs_context.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

// What a reserve writes (invariants 9 and 10): zeros, which carry no data, so no barrier needs
// to cover them. The backends only read it.
extern const char kReserveZeros[kWalReserveBytesDefault];

// Bytes a read in no-wait mode needed that were not in memory: [offset, offset + length) of
// the descriptor `fd`, whose file SQLite sees as `file_bytes` long (EpochQueue::TakeMiss).
struct ReadMiss {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t file_bytes = 0;
};

// Whether a fetch in flight is reading bytes [offset, offset + length) of `fd` into memory: the
// Database's answer (its fetch windows), asked before the OS is (set_reads_nowait).
struct FetchesInFlight {
  bool (*covers)(const void* owner, int fd, uint64_t offset, uint64_t length) = nullptr;
  const void* owner = nullptr;
};

// Told of each page a request's statement reads (EpochQueue::set_reads_nowait).
struct ReadCharge {
  void (*charge)(void* arg) = nullptr;
  void* arg = nullptr;
};

class EpochQueue {
 public:
  // Called on the loop thread when `durable_epoch()` advanced, the queue was poisoned, or it
  // drained. Must not call into SQLite (it may run inside a VFS call).
  using Listener = void (*)(void* arg);

  EpochQueue(VfsContext& context, FileTable& files);
  // Checks that nothing is queued or in flight.
  ~EpochQueue();
  EpochQueue(const EpochQueue&) = delete;
  EpochQueue& operator=(const EpochQueue&) = delete;

  // ---- For the Database layer ---------------------------------------------------------------
  // Barriers issued so far: the number of the last closed epoch.
  [[nodiscard]] uint64_t epoch() const { return epoch_; }
  // Every epoch up to this one is on disk.
  [[nodiscard]] uint64_t durable_epoch() const { return durable_epoch_; }
  [[nodiscard]] bool poisoned() const { return !poison_.ok(); }
  // Why the queue was poisoned (OK if it is not).
  [[nodiscard]] const absl::Status& poison_status() const { return poison_; }
  // Bytes of writes queued or in flight (the write-behind buffer).
  [[nodiscard]] uint64_t held_bytes() const { return held_bytes_; }
  [[nodiscard]] bool idle() const { return queue_.empty(); }
  // Writes refused because the buffer was full, since the last ClearBackpressure().
  [[nodiscard]] uint64_t backpressure() const { return backpressure_; }
  void ClearBackpressure() { backpressure_ = 0; }
  // Every Database open on these files listens (two Databases of a process may share them):
  // each adds itself once open and removes itself before it lets go of the files.
  void AddListener(Listener listener, void* arg);
  void RemoveListener(Listener listener, void* arg);
  void ClearListeners() { listeners_.clear(); }

  // While on, Read never waits for the disk: it answers from the queued writes and from the
  // page cache (Backend::ReadIfCached), and where bytes are in neither it remembers them
  // (TakeMiss) and fails with `miss_rc`. SQLITE_INTERRUPT stops a read-only statement without
  // ending its read transaction (a reader's); SQLite rolls a writing transaction back on it,
  // but not on SQLITE_LOCKED, which only stops the statement (the writer's, which then undoes
  // it to its savepoint). A file system that cannot tell what is in memory (tmpfs) is read as
  // before, waiting. Turning it on forgets a miss not taken (one SQLite recovered from).
  //
  // With `in_flight` (a request's read, which joins a fetch already reading what it missed), a
  // miss inside a window `in_flight` says is being fetched is answered without asking the OS:
  // the page is still on its way, and the probe would only say so, one system call later.
  //
  // With `charge` (a request's statement), `charge.charge(charge.arg)` runs after every read
  // that gave SQLite its bytes, so the request's budget of SQLite work counts the pages it reads.
  void set_reads_nowait(bool on, int miss_rc = SQLITE_INTERRUPT,
                        const FetchesInFlight* in_flight = nullptr, ReadCharge charge = {}) {
    reads_nowait_ = on;
    miss_rc_ = miss_rc;
    in_flight_ = on ? in_flight : nullptr;
    charge_ = on ? charge : ReadCharge{};
    if (on) missed_ = false;
  }
  // The miss since the last call, if any; forgotten once taken.
  [[nodiscard]] bool TakeMiss(ReadMiss& miss);
  // Whether a miss waits to be taken (TakeMiss).
  [[nodiscard]] bool has_miss() const { return missed_; }
  // Where a fetch of [offset, offset + length) of `fd` (a miss's) should read: a slot of the
  // Vfs's FetchedPages when that is one page, so that the read which runs again after the fetch
  // copies it from there (Read) instead of asking the page cache again; else null (the sink).
  // The fetch hands it back with FetchedPages::Fetched.
  [[nodiscard]] char* FetchBuffer(int fd, uint64_t offset, uint64_t length);
  // Fails every later call and drops what is queued (invariant 4); the Vfs also calls it for
  // the other databases of a directory whose fsync failed.
  void Poison(absl::Status status);

  // ---- For the Vfs (Vfs::WhenDurable) --------------------------------------------------------
  // Arms the idle `wait` for everything written to the files so far: if a file was written, or
  // a name made or removed, since the last barrier (a COMMIT that issued no xSync, or a
  // rollback journal's removal after its commit's last xSync), it first closes an epoch as
  // xSync does. Its `done` runs from the loop once durable_epoch() reaches epoch(), or with the
  // poison (db/internal/durable_waits.h). ResourceExhausted, the wait left idle, when that
  // barrier would pass held_ops_max.
  [[nodiscard]] absl::Status WhenDurable(DurableWait& wait);

  // ---- For DatabaseFiles and the VFS glue ----------------------------------------------------
  // Invariant 11, before the files go: closes an epoch for what was written since the last
  // barrier (a connection at synchronous=OFF or NORMAL that closed). True while that barrier
  // runs: its completion asks to release the files again. False if nothing needed it (or the
  // queue is poisoned, and the files are tainted).
  [[nodiscard]] bool SyncBeforeRelease();
  // Nothing queued, nothing in flight, no listener running, no DurableWait waiting: the owner
  // may be destroyed. (A waiting wait's barrier is queued, so the last follows from the first;
  // AssertInvariants checks that it does.)
  [[nodiscard]] bool quiet() const {
    return queue_.empty() && fsyncs_outstanding_ == 0 && !notifying_ && waits_.empty();
  }
  // SQLite's data calls. Return an SQLite result code.
  [[nodiscard]] int Read(FileRole role, void* buffer, int amount, int64_t offset);
  [[nodiscard]] int Write(FileRole role, const void* buffer, int amount, int64_t offset);
  [[nodiscard]] int Truncate(FileRole role, int64_t size_bytes);
  [[nodiscard]] int Sync();
  [[nodiscard]] int Unlink(FileRole role);
  // SQLite opens a file whose unlink is still queued (close, then reopen at once): the unlink
  // becomes a truncate to zero, which is the same empty file from SQLite's point of view.
  // False if the unlink already started (the caller reports SQLITE_BUSY); true also when no
  // unlink of the file is queued (it was found absent, not removed by us).
  [[nodiscard]] bool ReviveUnlinked(FileRole role);
  // Invariant 6: closes the descriptors no handle uses, if nothing is queued or in flight.
  void CloseIdleDescriptors();

 private:
  enum class OpState : uint8_t { kFree, kQueued, kInFlight };
  enum class OpKind : uint8_t { kWrite, kReserve, kTruncate, kUnlink, kBarrier };
  struct PendingOp {
    loop::Completion c;  // Writes, reserves, truncates, unlinks; barriers use fsyncs_.
    EpochQueue* owner = nullptr;
    OpState state = OpState::kFree;
    OpKind kind = OpKind::kWrite;
    FileRole role = FileRole::kMain;
    bool fence = false;        // A write overlapping an earlier queued write: waits for it.
    bool dir_sync = false;     // Barrier: also fsync the directory.
    uint8_t sync_mask = 0;     // Barrier: bit per FileRole to fsync.
    uint64_t offset = 0;       // Write, reserve: file offset. Truncate: the new size.
    uint64_t length = 0;       // Write: bytes in `data`. Reserve: zeros to write.
    uint64_t epoch = 0;        // Barrier: the epoch it closes. Reserve: shape_changes_.
    std::vector<char> data;    // Write: a copy of SQLite's buffer.
    ListLink<PendingOp> link;  // In the queue or in the free list.
  };
  using OpList = IntrusiveList<PendingOp, &PendingOp::link>;

  [[nodiscard]] PendingOp* TakeOp();
  void Push(PendingOp* op);
  void Remove(PendingOp* op);
  void Release(PendingOp* op);
  void Advance();
  void Start(PendingOp* op);
  void StartBarrier(PendingOp* op);
  void FinishBarrier(PendingOp* op);
  // The poison of a barrier whose fsync failed with fsync_error_.
  [[nodiscard]] absl::Status FsyncFailed(uint64_t epoch) const;
  // Invariant 5: counts a refused operation and returns SQLITE_FULL.
  [[nodiscard]] int RefuseForBackpressure();
  // Whether the op orders the queue (invariant 1): everything but writes and reserves.
  [[nodiscard]] static bool Ordering(OpKind kind) {
    return kind != OpKind::kWrite && kind != OpKind::kReserve;
  }
  // Invariants 9 and 10, called by Sync before it queues its barrier.
  [[nodiscard]] bool QueueReserve(FileRole role, uint64_t offset, uint64_t length);
  void ReserveWal();
  void ReserveMain();
  void NoteWalWrite(const void* buffer, int amount, uint64_t offset);
  void FinishReserve(const PendingOp& op, int64_t result);
  [[nodiscard]] static bool WriteOverlaps(const PendingOp& op, FileRole role, uint64_t offset,
                                          uint64_t length);
  [[nodiscard]] bool Overlaps(FileRole role, uint64_t offset, uint64_t length) const;
  [[nodiscard]] bool MayWriteNow(FileRole role, uint64_t offset, uint64_t length) const;
  [[nodiscard]] bool CoveredByPending(FileRole role, char* out, uint64_t offset,
                                      uint64_t length) const;
  void Overlay(FileRole role, char* out, uint64_t offset, uint64_t length) const;
  // Reads [start, start + length) of `f` from the disk: through the page cache only in no-wait
  // mode (-EAGAIN, with miss_ set, where it cannot), else with Loop::WaitForOp. Bytes read.
  [[nodiscard]] int64_t ReadFile(const SharedFile& f, char* out, uint64_t length, uint64_t start);
  // Read's work, before the charge.
  [[nodiscard]] int ReadBytes(FileRole role, void* buffer, int amount, int64_t offset);
  // Records [offset, offset + length) of `f` as the miss for TakeMiss; returns -EAGAIN.
  int64_t Miss(const SharedFile& f, uint64_t offset, uint64_t length);
  void Notify();
  void AssertInvariants() const;
  static loop::Action OnOpDone(loop::Loop& loop, loop::Completion& c);
  void SubmitFsync(loop::Completion& c, int fd);
  void SyncDirectory();
  static loop::Action OnFsyncDone(loop::Loop& loop, loop::Completion& c);

  VfsContext& context_;
  loop::Loop& loop_;
  FileTable& files_;

  // The queue, oldest first, and the free list of reusable operations.
  OpList queue_;
  OpList free_;
  std::vector<std::unique_ptr<PendingOp>> ops_;  // Every PendingOp ever made; reused.
  uint32_t queued_ops_ = 0;
  uint64_t held_bytes_ = 0;
  uint64_t backpressure_ = 0;
  // Invariant 2: after a refusal, writes run at once where they may (as they did when the
  // write-behind buffer was first filled) until the next barrier, so the transaction the
  // refusal rolled back makes progress when it runs again.
  bool write_behind_paused_ = false;
  // Invariant 9: truncates and unlinks queued so far (a reserve that completes after one no
  // longer says what the disk holds), and whether the last reserve failed.
  uint64_t shape_changes_ = 0;
  bool reserve_failed_ = false;
  // Invariant 10: the main file's size after the next checkpoint, from the newest commit frame
  // (0 until one was written), and that frame's page count while its page is still to come.
  uint64_t main_bytes_after_checkpoint_ = 0;
  uint32_t commit_pages_ = 0;
  uint64_t commit_page_offset_ = 0;

  // The barrier in flight: one fsync completion per file and one for the directory.
  std::array<loop::Completion, kFileRoles + 1> fsyncs_{};
  PendingOp* barrier_ = nullptr;
  uint32_t fsyncs_outstanding_ = 0;
  int fsync_error_ = 0;

  uint64_t epoch_ = 0;
  uint64_t durable_epoch_ = 0;
  absl::Status poison_;
  // Hosts' waits for an epoch to become durable, settled where durable_epoch_ advances
  // (FinishBarrier) and where the queue is poisoned (Poison).
  DurableWaits waits_{loop_};
  bool dir_fsync_failed_ = false;  // The directory's fsync was among those that failed.
  struct Listening {
    Listener listener;
    void* arg;
  };
  absl::InlinedVector<Listening, 1> listeners_;
  bool notifying_ = false;
  bool reads_nowait_ = false;
  int miss_rc_ = SQLITE_INTERRUPT;              // What Read returns on a miss (set_reads_nowait).
  bool missed_ = false;                         // miss_ holds a miss not taken yet.
  const FetchesInFlight* in_flight_ = nullptr;  // Asked before the OS (set_reads_nowait).
  ReadCharge charge_;                           // Told of each read (set_reads_nowait).
  // What FileTable::changes() does not count: operations completed, descriptors closed.
  uint64_t unnoted_changes_ = 0;
  // Every change to the files so far (a write, truncate or unlink issued or completed, a
  // descriptor closed): a fetched page is good while this has not moved since its fetch started.
  // Both counts only grow, so the sum moves whenever either does.
  [[nodiscard]] uint64_t FilesVersion() const { return files_.changes() + unnoted_changes_; }
  ReadMiss miss_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_EPOCH_QUEUE_H_
