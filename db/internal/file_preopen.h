// db/internal/file_preopen.h
// -----------------------------------------------------------------------------
//
// `FilePreopen` opens a database's files through the loop before SQLite asks for them: the
// sub-machine a Database runs at the start of `kOpening`. SQLite's xOpen must return with a
// descriptor, so without it every open (and the checks for a hot journal) waited for the
// device inside the loop; with it they are ordinary loop operations, and xOpen then finds the
// descriptors in the FileTable. One operation per state, on its own completion:
//
//   1. The main file is opened (created if missing) and locked before anything else is
//      looked at, as FileTable::Open does: another process's database is never touched.
//   2. The journal is probed before the main file is adopted, so FileTable::Adopt's check for a
//      first transaction's journal needs no system call when there is none (the usual case).
//   3. A role that already has a descriptor (the files are still open from an earlier
//      Database on the same path) is skipped.
//   4. A file is opened without O_CREAT first and created only if that says ENOENT: io_uring
//      never runs an open that may create inline (it hands it to a kernel worker thread), and
//      at a reopen both files exist. A state keeps its name while it retries.
//
// clang-format off
//   kIdle --Start--> kOpenMain --> kSizeMain --> kProbeJournal --> kOpenWal --> kSizeWal --> kIdle
//                        |             |              |                |            |        ^
//                        +-------------+--------------+----------------+------------+--------+
//                                     an operation failed: the error, every descriptor closed
//
//   transition                  function               invariant in the new state
//   kIdle -> kOpenMain          Start                  the main file's open is in flight
//   kOpenMain -> kOpenMain      OnIo->RetryCreating    ENOENT: the open with O_CREAT is in flight
//   kOpenMain -> kSizeMain      OnIo->Advance          the main file is open and locked
//   kSizeMain -> kProbeJournal  OnIo->Advance          its size is known; the journal's open is in flight
//   kProbeJournal -> kOpenWal   OnIo->AdoptAndAdvance  the main file is adopted; the journal is known
//   kOpenWal -> kOpenWal        OnIo->RetryCreating    ENOENT: the open with O_CREAT is in flight
//   kOpenWal -> kSizeWal        OnIo->Advance          the WAL is open
//   kSizeWal -> kIdle           OnIo->AdoptAndAdvance  every file adopted; status() OK
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
  enum class State : uint8_t { kIdle, kOpenMain, kSizeMain, kProbeJournal, kOpenWal, kSizeWal };
  using Callback = void (*)(void* arg);

  FilePreopen() = default;
  FilePreopen(const FilePreopen&) = delete;
  FilePreopen& operator=(const FilePreopen&) = delete;

  // Starts opening `files`' descriptors; `done(arg)` runs from a loop callback once it is over
  // (status() then says how it went), or before Start returns if there is nothing to open.
  // Only in kIdle.
  void Start(loop::Loop& loop, DatabaseFiles& files, Callback done, void* arg);

  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] const absl::Status& status() const { return status_; }

 private:
  static loop::Action OnIo(loop::Loop& loop, loop::Completion& c);
  // Moves to the next state that has work, submitting its operation, or finishes.
  void Advance(State next);
  void Finish(absl::Status status);
  void Submit(io::Op op);
  void SubmitOpen(FileRole role);
  [[nodiscard]] bool RetryCreating(int64_t result, FileRole role);
  [[nodiscard]] int64_t Take(int64_t result);
  [[nodiscard]] int64_t AdoptAndAdvance(FileRole role, int64_t size_bytes, State next);

  loop::Loop* loop_ = nullptr;
  DatabaseFiles* files_ = nullptr;
  Callback done_ = nullptr;
  void* arg_ = nullptr;
  loop::Completion io_;
  State state_ = State::kIdle;
  int fd_ = -1;             // Opened by kOpenMain or kOpenWal, not yet adopted.
  bool create_ = false;     // The open in flight has O_CREAT (invariant 4).
  int64_t main_bytes_ = 0;  // The main file's size, from kSizeMain.
  absl::Status status_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_FILE_PREOPEN_H_
