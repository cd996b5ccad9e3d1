// db/internal/tenant_delete.h
// -----------------------------------------------------------------------------
//
// `TenantDelete` removes a closed tenant's files: the sub-machine the Registry runs while the
// tenant is `TenantState::kDeleting`. One loop operation per state, on the tenant's own
// completion, in this order:
//
//   1. The WAL and the rollback journal go before the database file, so a crash in the middle
//      leaves a main file that is still a valid database (its last close checkpointed the WAL
//      into it), never a WAL without its database that a later tenant of the same name could
//      replay.
//   2. A file that is already gone (ENOENT) is not an error; only the main file's absence makes
//      the delete NotFound, and then there is nothing to sync.
//   3. The directory fsync makes the removal durable before the delete is acknowledged.
//
// clang-format off
//   kIdle --Start--> kUnlinkWal --> kUnlinkJournal --> kUnlinkMain --> kSyncDirectory --> kIdle
//                        |                |                 |   main file absent        ^
//                        +----------------+-----------------+---------------------------+
//                              an unlink failed (not ENOENT): Unavailable
//
//   transition                       function        invariant in the new state
//   kIdle -> kUnlinkWal              Start           the unlink of <path>-wal is in flight
//   kUnlinkWal -> kUnlinkJournal     OnIo->Advance   the unlink of <path>-journal is in flight
//   kUnlinkJournal -> kUnlinkMain    OnIo->Advance   the unlink of <path> is in flight
//   kUnlinkMain -> kSyncDirectory    OnIo->Advance   the main file existed; the fsync is in flight
//   kUnlinkMain -> kIdle             OnIo->Finish    NotFound: the tenant had no file
//   kSyncDirectory -> kIdle          OnIo->Finish    OK, or Unavailable if the fsync failed
//   kUnlink* -> kIdle                OnIo->Finish    Unavailable: an unlink failed
// clang-format on
//
// Internal: the Registry (db/registry.cc) is the only user; it dispatches the tenant's
// completion here while the tenant is kDeleting and acknowledges the delete when OnIo returns
// an outcome.
#ifndef SQLOOP_DB_INTERNAL_TENANT_DELETE_H_
#define SQLOOP_DB_INTERNAL_TENANT_DELETE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

class TenantDelete {
 public:
  enum class State : uint8_t { kIdle, kUnlinkWal, kUnlinkJournal, kUnlinkMain, kSyncDirectory };

  // Starts deleting the files of tenant `name` at `path` (both must outlive the delete): submits
  // the first unlink on `io`, whose callback must hand its result to OnIo. `dir_fd` is the
  // tenants' directory, fsynced last.
  void Start(loop::Loop& loop, loop::Completion& io, int dir_fd, absl::string_view path,
             absl::string_view name);

  // Takes the result of the operation in flight. Returns nothing while the delete goes on (the
  // next operation is already submitted), or its outcome, after which the state is kIdle.
  [[nodiscard]] std::optional<absl::Status> OnIo(int64_t result);

  [[nodiscard]] State state() const { return state_; }

 private:
  // Moves to `state` and submits its operation.
  void Advance(State state);
  // Back to kIdle with the outcome.
  absl::Status Finish(absl::Status status);
  void AssertInvariants() const;

  loop::Loop* loop_ = nullptr;
  loop::Completion* io_ = nullptr;
  int dir_fd_ = -1;
  absl::string_view path_;
  absl::string_view name_;
  State state_ = State::kIdle;
  bool found_ = false;          // The main file existed (its unlink succeeded).
  std::string path_in_flight_;  // The file of the unlink in flight (the op keeps a pointer).
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_TENANT_DELETE_H_
