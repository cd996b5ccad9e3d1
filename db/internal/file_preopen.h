// db/internal/file_preopen.h
// -----------------------------------------------------------------------------
//
// `FilePreopen` opens a database's files through the loop before SQLite asks for them: the
// sub-machine a Database runs at the start of `kOpening`. SQLite's xOpen must return with a
// descriptor, so without it every open (and the checks for a hot journal) waited for the
// device inside the loop; with it they are ordinary loop operations, and xOpen then finds the
// descriptors in the FileTable.
//
//   1. The main file is opened (created if missing) and locked before anything else is
//      looked at, as FileTable::Open does: another process's database is never touched.
//   2. Then three operations run at once (kOpenRest): the journal's probe (its creation for an
//      empty main file, invariant 6), the WAL's open and the read of the main file's first page
//      (its head: what SQLite reads at open, kept in the FileTable until the Database is open,
//      so a cold reopen does not wait and a warm one makes no system call for it). The main file
//      is adopted only once the journal is known, so FileTable::Adopt's check for a first
//      transaction's journal needs no system call when there is none (the usual case), and the
//      head is kept only if the file still has it then.
//   3. A role that already has a descriptor (the files are still open from an earlier
//      Database on the same path) is skipped; so is the whole preopen if the main file is open,
//      except for a WAL that the other Database's wake left closed (FileSleep invariant 5):
//      this one may write it, so it opens it (kOpenWal) and adopts it.
//   4. A file is opened without O_CREAT first and created only if that says ENOENT: io_uring
//      never runs an open that may create inline (it hands it to a kernel worker thread), and
//      at a reopen both files exist. kOpenMain retries in place; the WAL goes to kCreateWal.
//      Started without create_if_missing, the main file is never created: its ENOENT, or a main
//      file with no byte (what a creation that failed inside SQLite's open, or a crash during
//      one, leaves before the first transaction writes page 1), ends the preopen with NotFound
//      and nothing created. So the caller's check that a database exists costs no operation of
//      its own. Files already open in this process (invariant 3) are another Database's, and
//      are taken as there. IfMissing::kProbeOnly stops once it knows: a main file with bytes
//      is closed again, not adopted (an open that must be refused if the database exists).
//   5. Each state's operations all complete before the next state (or the end): a failure
//      waits for the operations still in flight, then closes every descriptor not adopted.
//   6. An empty main file (a new database) is about to run its first transaction, the switch to
//      WAL, with a rollback journal: kOpenRest creates the journal (O_EXCL: one already there
//      is only probed, as at any other open) and hands its descriptor to the FileTable (the
//      first barrier opens the directory through the loop, EpochQueue, to make the new names
//      durable). So a creation never waits for an open on the loop; without this, SQLite's open
//      of the journal waited for io_uring's kernel worker (the first of a process took 14 ms).
//
//   7. What memory can answer at once is not sent through the loop: the head is read with
//      Backend::ReadIfCached first (a warm file: no operation; a cold one: the kRead), and on
//      tmpfs or ramfs (Backend::InMemoryFile, known from that read) the journal's probe is a
//      plain faccessat. io_uring hands both to a kernel worker on tmpfs (it cannot read tmpfs
//      without blocking, and tmpfs keeps no record of a missing name to answer the probe
//      from), and a reopen would wait for that worker's wake-up.
//   8. A WAL opened here with frames in it (a crash, or a close whose checkpoint failed, left
//      it) is read whole by SQLite's recovery at its first statement, by waiting. kWarm reads
//      it through the loop first, one kWarmChunkBytes chunk after another into the fetches' sink
//      (VfsContext::fetch_sink: bytes thrown away), so that recovery finds it in memory: up to
//      kWarmWalBytesMax, and not on a memory file system. A failed read ends the warming, not
//      the open (SQLite reads it then).
//   9. Warm reads a file of the preopened database the same way, on its own: the Database reads
//      a small main file ahead of the integrity check it runs on the loop (quick_check reads it
//      whole, by waiting).
//  10. On real descriptors kSizeMain reads the main file's size and identity with one fstat,
//      at once (the simulator's files take a kFileSize operation): the identity says which
//      device the file is on, so a file on a device the Vfs found in memory before is marked so
//      (Backend::MarkInMemoryFile) before its head is read, and the Database's check of whether
//      the file changed since it was last checked (MainIdentity) needs no fstat of its own; nor
//      does its close, if nothing changed the files since (a session that only read).
//      Nothing the preopen does changes the main file, except Adopt's rollback of a first
//      transaction when a journal is there: then the identity is not kept.
//
// clang-format off
//   kIdle --Start--> kOpenMain --> kSizeMain --> kOpenRest ----------------> kSizeWal --> kIdle
//                        |             |            |   \--> kCreateWal --/     |  \       ^
//                        |             |            |            |              |    kWarm
//                        +-------------+------------+------------+--------------+--------+
//                                     an operation failed: the error, every descriptor closed
//   kIdle --Start--> kOpenWal --> kSizeWal (or, ENOENT, kCreateWal): the main file open already
//
//   transition                  function               invariant in the new state
//   kIdle -> kOpenMain          Start                  the main file's open is in flight
//   kIdle -> kOpenWal           Start                  the main file open, its WAL deferred: its
//                                                      open is in flight (invariant 3)
//   kOpenWal -> kSizeWal        OnIo->Take             the WAL is open
//   kOpenWal -> kCreateWal      OnIo->Take             ENOENT: its create is in flight
//   kOpenMain -> kOpenMain      OnIo->RetryCreating    ENOENT: the open with O_CREAT is in flight
//   kOpenMain -> kSizeMain      OnIo->Advance          the main file is open and locked
//   kSizeMain -> kOpenRest      OnIo->Advance          invariant 2's operations are in flight
//                               (Advance->Take at once on real descriptors, invariant 10)
//   kSizeMain -> kIdle          OnIo->Take->Finish     (kProbeOnly) status() OK: the file has
//                                                      bytes, and is closed again (invariant 4)
//   kOpenRest -> kSizeWal       OnIo->TakeRest         all done; main adopted, head kept
//   kOpenRest -> kCreateWal     OnIo->TakeRest         the same; no WAL: its create is in flight
//   kCreateWal -> kSizeWal      OnIo->Advance          the WAL is open
//   kOpenRest -> kIdle          OnIo->TakeRest         the WAL had a descriptor; status() OK
//   kSizeWal -> kIdle           OnIo->AdoptAndAdvance  every file adopted; status() OK
//   kSizeWal -> kWarm           OnIo->AdoptAndAdvance  the same, and the WAL has frames: its
//                                                      first chunk is being read (invariant 8)
//   kIdle -> kWarm              Warm                   the file's first chunk is being read (9)
//   kWarm -> kWarm              OnIo->WarmNext         the file's next chunk is being read
//   kWarm -> kIdle              OnIo->WarmNext         read whole, or a read failed; status() OK
//   kWarm -> kIdle              Advance                nothing to read (empty, or in memory)
//   any -> kIdle                OnIo->Finish           status() says why; what was adopted stays
// clang-format on
//
// Internal: Database (db/database.cc) is the only user. The DatabaseFiles must stay pinned from
// Start until the callback.
#ifndef SQLOOP_DB_INTERNAL_FILE_PREOPEN_H_
#define SQLOOP_DB_INTERNAL_FILE_PREOPEN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

class FilePreopen {
 public:
  enum class State : uint8_t {
    kIdle,
    kOpenMain,
    kSizeMain,
    kOpenRest,
    kCreateWal,
    kOpenWal,
    kSizeWal,
    kWarm
  };
  // The most of the main file read ahead: the first page of a database with the default page
  // size (a larger page is read by SQLite as usual).
  static constexpr uint32_t kHeadBytesMax = 4096;
  // Invariants 8 and 9: a file is read ahead in chunks of this size; a WAL up to this size.
  static constexpr uint32_t kWarmChunkBytes = 128 * 1024;
  static constexpr int64_t kWarmWalBytesMax = int64_t{64} << 20;
  using Callback = void (*)(void* arg);

  FilePreopen() = default;
  FilePreopen(const FilePreopen&) = delete;
  FilePreopen& operator=(const FilePreopen&) = delete;

  // What Start does about a main file that is missing or empty (invariant 4).
  enum class IfMissing : uint8_t {
    kCreate,     // Creates it.
    kNotFound,   // NotFound; one with bytes is opened as usual.
    kProbeOnly,  // NotFound; one with bytes is closed again at once, and status() is OK.
  };

  // Starts opening `files`' descriptors; `done(arg)` runs from a loop callback once it is over
  // (status() then says how it went), or before Start returns if there is nothing to open.
  // Only in kIdle.
  void Start(loop::Loop& loop, DatabaseFiles& files, IfMissing if_missing, Callback done,
             void* arg);
  // Invariant 9: reads the first `bytes` of `role`'s file (open) into memory, then `done(arg)`
  // as Start's. Only in kIdle.
  void Warm(loop::Loop& loop, DatabaseFiles& files, FileRole role, int64_t bytes, Callback done,
            void* arg);

  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] const absl::Status& status() const { return status_; }
  // Invariant 10: the main file's device, inode and times as the last Start found them, while
  // nothing changed the files since it finished (FileTable::changes); null otherwise, or on the
  // simulator.
  [[nodiscard]] const FileFingerprint* MainIdentity() const;

 private:
  static loop::Action OnIo(loop::Loop& loop, loop::Completion& c);
  void Prepare(loop::Loop& loop, DatabaseFiles& files, Callback done, void* arg);
  // Moves to the next state that has work, submitting its operations, or finishes.
  void Advance(State next);
  void StartRest();
  void StartHead();
  void StartJournal();
  void Finish(absl::Status status);
  void Submit(loop::Completion& c, io::Op op);
  void SubmitOpen(FileRole role);
  [[nodiscard]] bool RetryCreating(int64_t result, FileRole role);
  [[nodiscard]] int64_t Take(int64_t result);
  [[nodiscard]] int64_t TakeRest();
  [[nodiscard]] absl::Status FailureOf(int64_t error) const;
  [[nodiscard]] int64_t AdoptAndAdvance(FileRole role, int64_t size_bytes, State next);
  void WarmNext(int64_t result);
  void SubmitWarmRead();

  loop::Loop* loop_ = nullptr;
  DatabaseFiles* files_ = nullptr;
  Callback done_ = nullptr;
  void* arg_ = nullptr;
  loop::Completion io_;       // The main file's and the WAL's operations.
  loop::Completion journal_;  // kOpenRest: the journal's probe (or creation, invariant 6).
  loop::Completion head_;     // kOpenRest: the head's read.
  int in_flight_ = 0;         // Operations of this state not completed yet (invariant 5).
  State state_ = State::kIdle;
  int fd_ = -1;          // Opened by kOpenMain, kOpenRest or kCreateWal, not yet adopted.
  bool create_ = false;  // The open in flight has O_CREAT (invariant 4).
  IfMissing if_missing_ = IfMissing::kCreate;  // Start's.
  bool open_wal_ = false;                      // kOpenRest opens the WAL (it has no descriptor).
  bool create_journal_ = false;          // kOpenRest creates the journal instead of probing for it.
  uint32_t head_bytes_ = 0;              // kOpenRest reads this much of the main file (0: none).
  int64_t head_read_ = 0;                // What the head's read returned (invariant 7).
  bool probed_journal_ = false;          // kOpenRest probed the journal at once (invariant 7),
  int64_t journal_probe_ = 0;            // finding it (0) or not (-errno).
  int64_t main_bytes_ = 0;               // The main file's size, from kSizeMain.
  FileFingerprint identity_;             // Invariant 10: the main file's, from kSizeMain,
  bool identity_read_ = false;           // if it was read,
  uint64_t identity_changes_ = 0;        // and FileTable::changes() when the preopen ended.
  FileRole warm_role_ = FileRole::kWal;  // kWarm: the file read ahead,
  int64_t warm_bytes_ = 0;               // this much of it,
  int64_t warmed_bytes_ = 0;             // of which this much is read.
  absl::Status status_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_FILE_PREOPEN_H_
