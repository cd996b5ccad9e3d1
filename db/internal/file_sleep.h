// db/internal/file_sleep.h
// -----------------------------------------------------------------------------
//
// `FileSleep` lets an idle database give its descriptors back and take them again: the
// sub-machine behind Database::Sleep. A sleeping database keeps its connections (their parsed
// schema, its WAL index) and holds no descriptor, so waking it costs two opens through the loop
// instead of a reopen's connection and parse of the schema.
//
//   1. Sleep only runs with nothing queued or in flight on the files and every epoch durable
//      (the caller checks): the disk holds exactly what the process last wrote. It cuts the
//      reserve (the zeros written past SQLite's end of the main file and the WAL so that a
//      write never finds the disk full, EpochQueue invariants 9 and 10), so a sleeper keeps on
//      disk only what SQLite wrote; the first barrier after the wake reserves again. It records
//      what the OS says about each file (FileFingerprint: size, and on real descriptors device,
//      inode, modification and change time), then closes every descriptor. The main file's and
//      the WAL's closes go through the loop (kClosing), so a sleep makes no system call of its
//      own for them: the table forgets the descriptors at once, and `closed(arg)` runs from a
//      loop callback once the last close is done (the registry counts the descriptors against
//      its slots until then). A wake asked for meanwhile starts only then. The flock on the main
//      file is released at once, by a call of its own (FileTable::UnlockMain), not left to the
//      close: the ring's close can complete before the kernel lets go of the file, and then a
//      wake right after it found its own old lock held (Unavailable, "locked by another
//      process": 3 of 40 benchmark processes of back-to-back sleeps and wakes, by hand).
//   2. While asleep no descriptor is open and nothing may read or write the files: the caller
//      runs no SQLite statement until the wake is done.
//   3. Wake opens the main file and the WAL (if it had one) through the loop at once, never
//      creating either (a name still waiting for the directory's fsync keeps waiting: the
//      first barrier after the wake opens the directory and syncs it, FileTable invariant 3),
//      locks the main file as FilePreopen does, and reads both sizes (with the identity, by
//      fstat, on real descriptors: a metadata call that waits for no device; through the loop on
//      the simulator). Only if every file is what Sleep recorded are the descriptors handed back
//      to the FileTable: another process (or a person) that wrote to the files meanwhile makes
//      the connections' view stale, and the wake fails with FailedPrecondition instead of
//      serving from it (so does a file gone, or a WAL that appeared).
//      A failed open or size read, or the lock held by another process, fails it with Unavailable.
//      A failed wake closes what it opened and leaves everything as asleep; it may be tried again.
//   4. A wake that succeeded found the files as the fingerprints say. If the table counted no
//      change of ours since (FileTable::changes: no write, truncate, reserve, unlink or new
//      descriptor), the next Sleep keeps those fingerprints instead of reading them again (a
//      read-only tenant that sleeps and wakes pays two fstat calls per cycle, not four), unless
//      a file holds a reserve to cut (written only after a write, so never then). A change another
//      process made while the database was awake is then found at the next wake too, where a
//      fresh read would have taken it in.
//   5. A WAL that slept empty (0 bytes on disk) stays closed at a wake with no write waiting:
//      SQLite reads a WAL only for its frames, and the WAL index the connections kept says it
//      has none, so no read needs it. Such a wake opens, locks and sizes the main file only, and
//      the next sleep closes one descriptor (among many sleepers, whose files' kernel structures
//      are cold, the WAL's open, fstat and close were a large share of a wake). The table marks the
//      WAL `deferred`: nothing may write it until OpenWal has opened it through the loop and found
//      it as the sleep recorded it (empty), which the Database does before its first group or
//      checkpoint; a new connection's open of it opens nothing meanwhile. So a change made to that
//      WAL alone while the database slept (another process's commits, not yet copied into the main
//      file) is found at that open, where it fails the writes, not at the wake: the reads in
//      between see the database as this process left it, which the wake checked (the main file). A
//      later sleep keeps the WAL's record, since nothing of this process touched the file.
//
// clang-format off
//   kAwake --Sleep--> kClosing --closes done--> kAsleep --Wake--> kOpening
//                                                 ^                  |
//                                                 |                  | both opened, main locked
//                                                 |                  v
//                                                 +----------------- kSizing --sizes ok--> kAwake
//                                         a failure or a change, in kOpening or kSizing:
//                                         every new descriptor closed
//
//   kAwake, the WAL deferred (invariant 5) --OpenWal--> kOpening, kSizing (the WAL only, the
//   database awake all along: asleep() stays false) --> kAwake, the WAL open or, after a failure
//   or a change, deferred still
//
//   transition            function          invariant in the new state
//   kAwake -> kClosing    Sleep             the table holds no descriptor; their closes in flight;
//                                           fingerprints recorded (or kept: 4); the flock released
//   kClosing -> kAsleep   OnIo              no descriptor open; closed(arg) ran
//   kClosing -> kOpening  OnIo->StartOpens  (a Wake came meanwhile) as kAsleep, then as below
//   kAsleep -> kOpening   Wake->StartOpens  the opens are in flight (the WAL's unless deferred: 5)
//   kOpening -> kSizing   OnIo->Advance     both files open (or the WAL absent as recorded, or
//                                           deferred); main locked
//   kSizing -> kAwake     OnIo->Finish      the files match the fingerprints; the table has the descriptors
//   kOpening, kSizing     OnIo->Finish      status() says why; no descriptor open
//     -> kAsleep
//   kAwake -> kOpening    OpenWal->StartOpens  (the WAL deferred: 5) the WAL's open is in flight;
//                                           asleep() stays false
//   kOpening, kSizing     OnIo->Finish      (OpenWal) the WAL matches its record and the table has
//     -> kAwake                             it; or status() says why and it stays deferred
// clang-format on
//
// Internal: Database (db/database_idle.cc) is the only user.
#ifndef SQLOOP_DB_INTERNAL_FILE_SLEEP_H_
#define SQLOOP_DB_INTERNAL_FILE_SLEEP_H_

#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "sqloop/db/internal/file_table.h"
#include "sqloop/db/internal/vfs_context.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

class FileSleep {
 public:
  enum class State : uint8_t { kAwake, kClosing, kAsleep, kOpening, kSizing };
  using Callback = void (*)(void* arg);

  // `closed(arg)` runs at the end of every kClosing (invariant 1).
  FileSleep(Callback closed, void* arg) : closed_(closed), closed_arg_(arg) {}
  FileSleep(const FileSleep&) = delete;
  FileSleep& operator=(const FileSleep&) = delete;

  // Invariant 1: records the files and starts the closes of their descriptors (kClosing). Only
  // in kAwake. Unavailable (nothing closed, still awake) if a file's size cannot be read.
  [[nodiscard]] absl::Status Sleep(loop::Loop& loop, FileTable& table);
  // Invariant 3: takes the descriptors again; `done(arg)` runs from a loop callback once it is
  // over (status() says how). In kAsleep, or in kClosing, where it starts once the closes are
  // done. `write_waiting`: a write is queued, so the WAL opens even if it slept empty
  // (invariant 5).
  void Wake(FileTable& table, Callback done, void* arg, bool write_waiting);
  // Invariant 5: opens the WAL that a wake left closed, through the loop, and checks it against
  // the sleep's record; `done(arg)` runs from a loop callback once it is over (status() says
  // how: on a failure or a change the WAL stays deferred). Awake, with the table's WAL
  // deferred and no wake or OpenWal under way.
  void OpenWal(Callback done, void* arg);

  [[nodiscard]] State state() const { return state_; }
  // An OpenWal under way leaves the database awake: its main file stays open (invariant 5).
  [[nodiscard]] bool asleep() const { return state_ != State::kAwake && !wal_only_; }
  // Wake or OpenWal was called and its `done` has not run yet.
  [[nodiscard]] bool waking() const { return done_ != nullptr; }
  // In kAsleep, what the files were when the sleep closed them, in the form VfsContext keeps
  // for a checked file (the main file's identity and size, the WAL's size): nothing of the
  // process touched them since (invariant 2). False if a wake failed since (they may have
  // changed) or the main file had no descriptor.
  [[nodiscard]] bool SleptFingerprint(FileFingerprint& print) const;
  [[nodiscard]] const absl::Status& status() const { return status_; }

 private:
  // The main file and the WAL, in that order.
  static constexpr std::array<FileRole, 2> kRoles = {FileRole::kMain, FileRole::kWal};

  static loop::Action OnIo(loop::Loop& loop, loop::Completion& c);
  void StartOpens();
  void Submit(size_t i, io::Op op);
  // What the OS says about `fd` now into `print` (`bytes`: its size, from the backend, on the
  // simulator); false if it could not be read.
  [[nodiscard]] bool Print(int fd, int64_t bytes, FileFingerprint& print) const;
  void Advance();
  void Finish(absl::Status status);
  // Why the wake failed, or OK; closes every descriptor it opened if not OK.
  [[nodiscard]] absl::Status TakeOpens();
  [[nodiscard]] absl::Status TakeSizes();

  Callback closed_;
  void* closed_arg_;
  loop::Loop* loop_ = nullptr;
  FileTable* table_ = nullptr;
  Callback done_ = nullptr;  // Null while no Wake is asked for.
  void* arg_ = nullptr;
  State state_ = State::kAwake;
  bool real_descriptors_ = true;
  bool write_waiting_ = false;  // Wake's: the WAL opens even if it slept empty (invariant 5).
  bool wal_only_ = false;       // An OpenWal is under way (invariant 5).
  // The role existed when it went to sleep (it had a descriptor, or a deferred WAL had slept
  // so before), and this fingerprint.
  std::array<bool, 2> had_ = {};
  std::array<FileFingerprint, 2> slept_ = {};
  std::array<bool, 2> opening_ = {};   // The roles the wake (or OpenWal) opens.
  std::array<int, 2> fds_ = {-1, -1};  // Opened by the wake, not handed back yet.
  // In flight: the closes in kClosing (or, with nothing to close, one next tick), the opens in
  // kOpening, the sizes in kSizing.
  std::array<loop::Completion, 2> io_;
  int in_flight_ = 0;
  // Invariant 4: the last wake succeeded, and the table's changes() then.
  bool verified_ = false;
  uint64_t verified_changes_ = 0;
  absl::Status status_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_FILE_SLEEP_H_
