// db/internal/integrity_check.h
// -----------------------------------------------------------------------------
//
// `IntegrityCheck` runs the `PRAGMA quick_check` of a Database's open (kOpenChecking in
// db/database.h) and reports its verdict from a loop callback, so the check of a large file
// never stops the loop.
//
// Why a thread: quick_check reads every page of the file, and its walk of the b-trees is one
// step of SQLite's virtual machine, which calls no progress handler: it cannot be cut into
// slices stepped one per tick as a long read is, and interrupting it ends it with no way to
// resume. Run on the loop, a large tenant's first open stopped every other tenant for as long
// as reading the whole file took. So a large file is checked on a thread of its own,
// through a read-only connection of its own, and the loop learns of the end through an eventfd
// it polls like any other operation (counted as pending, so a loop run until done waits for it).
//
//   1. The thread's connection uses SQLite's own unix VFS with `immutable=1`: it takes no lock
//      (the Database holds the file's OS lock) and reads the main file alone, never the WAL. So
//      the Database empties the WAL into the main file first and starts the check only once
//      everything its open wrote is durable; it writes nothing until the verdict (no request is
//      admitted before kReady), so the thread reads a file that does not change.
//   2. The thread charges what SQLite allocates to the database's tenant, as the loop does.
//   3. The verdict (status()) is written by the thread before it signals, and read only after
//      the loop has joined it.
//   4. At most half the machine's cores' worth of checks read at once, in the whole process;
//      the threads of the others wait, idle, for one of them to end.
//   5. Small files, and every file on the simulator (its files are not in the file system, and a
//      thread would break the replay), are not checked here: DoOpen runs QuickCheck on the
//      loop. RunOnLoop is the way back when no thread or eventfd can be had: the same check
//      through the database's own connection, at once, reported on the next tick.
//
// clang-format off
//   kIdle --RunOnLoop-------> kReporting --OnReport---------------> kIdle
//   kIdle --StartOnThread---> kRunning ----OnReport: thread joined--> kIdle
//
//   transition            function        invariant in the new state
//   kIdle -> kReporting   RunOnLoop       status() final; the report is queued for the next tick
//   kIdle -> kRunning     StartOnThread   the thread owns status(); the eventfd's poll in flight
//   kReporting -> kIdle   OnReport        done(arg) runs; status() final
//   kRunning -> kIdle     OnReport        the thread joined, its eventfd closed; done(arg) runs
// clang-format on
//
// Internal: Database (db/database_open.cc) is the only user. A Database cannot be destroyed in
// kOpenChecking, so neither is a check in flight.
#ifndef SQLOOP_DB_INTERNAL_INTEGRITY_CHECK_H_
#define SQLOOP_DB_INTERNAL_INTEGRITY_CHECK_H_

#include <sqlite3.h>

#include <cstdint>
#include <latch>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

// Runs quick_check through `db` now and turns its answer into a status: OK, DataLoss for a
// corrupt file, ResourceExhausted when the tenant's memory ran out, Unavailable for an I/O
// error. `file_name` names the file in the message.
[[nodiscard]] absl::Status QuickCheck(sqlite3* db, absl::string_view file_name);

class IntegrityCheck {
 public:
  enum class State : uint8_t { kIdle, kReporting, kRunning };
  using Callback = void (*)(void* arg);

  IntegrityCheck() = default;
  // Checks that no check is in flight.
  ~IntegrityCheck();
  IntegrityCheck(const IntegrityCheck&) = delete;
  IntegrityCheck& operator=(const IntegrityCheck&) = delete;

  // Checks through `db` (the database's writer) at once; `done(arg)` runs on the next tick.
  void RunOnLoop(loop::Loop& loop, sqlite3* db, absl::string_view file_name, Callback done,
                 void* arg);
  // Checks the main file at `path` on a thread (invariants 1, 2 and 4); `done(arg)` runs from a
  // loop callback once it is over. `gate` (tests only, may be null): the thread waits for it
  // before it opens the file. Returns false, having started nothing, if the thread or its
  // eventfd cannot be had (out of descriptors or threads): the caller checks on the loop.
  [[nodiscard]] bool StartOnThread(loop::Loop& loop, std::string path, std::string file_name,
                                   alloc::TenantId tenant, std::latch* gate, Callback done,
                                   void* arg);

  [[nodiscard]] State state() const { return state_; }
  // The verdict; read it in done(arg) or later.
  [[nodiscard]] const absl::Status& status() const { return status_; }

 private:
  static loop::Action OnReport(loop::Loop& loop, loop::Completion& c);
  void RunThread();

  State state_ = State::kIdle;
  Callback done_ = nullptr;
  void* arg_ = nullptr;
  loop::Completion report_;  // kReporting: the next-tick report; kRunning: the eventfd's poll.
  int event_fd_ = -1;
  std::thread thread_;
  // The thread's inputs, set before it starts.
  std::string path_;
  std::string file_name_;
  alloc::TenantId tenant_ = alloc::kSharedTenant;
  std::latch* gate_ = nullptr;
  absl::Status status_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_INTEGRITY_CHECK_H_
