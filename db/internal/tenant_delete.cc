// The delete sub-machine of a tenant (db/internal/tenant_delete.h has the diagram and the
// transition table).
#include "sqloop/db/internal/tenant_delete.h"

#include <fcntl.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::db::internal {
namespace {

// What each unlink state appends to the tenant's path: SQLite's names for the WAL and the
// rollback journal, then the database file itself.
absl::string_view SuffixOf(TenantDelete::State state) {
  switch (state) {
    case TenantDelete::State::kUnlinkWal:
      return "-wal";
    case TenantDelete::State::kUnlinkJournal:
      return "-journal";
    default:
      return "";
  }
}

}  // namespace

void TenantDelete::Start(loop::Loop& loop, loop::Completion& io, int dir_fd, absl::string_view path,
                         absl::string_view name) {
  SQLOOP_CHECK(state_ == State::kIdle, "TenantDelete::Start: a delete is already running");
  loop_ = &loop;
  io_ = &io;
  dir_fd_ = dir_fd;
  path_ = path;
  name_ = name;
  found_ = false;
  Advance(State::kUnlinkWal);
}

void TenantDelete::Advance(State state) {
  state_ = state;
  AssertInvariants();
  if (state == State::kSyncDirectory) {
    io_->op = io::Op{.kind = io::OpKind::kFsync, .fd = dir_fd_};
  } else {
    path_in_flight_ = absl::StrCat(path_, SuffixOf(state));
    io_->op = io::Op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = path_in_flight_.c_str()};
  }
  loop_->Submit(*io_);
}

std::optional<absl::Status> TenantDelete::OnIo(int64_t result) {
  switch (state_) {
    case State::kIdle:
      break;
    case State::kUnlinkWal:
    case State::kUnlinkJournal:
    case State::kUnlinkMain:
      if (result < 0 && result != -ENOENT) {
        return Finish(absl::UnavailableError(absl::StrCat(
            "cannot delete '", FileNameOf(path_in_flight_), "': ", io::ErrnoText(result),
            "; the tenant may be partly deleted, send the delete again")));
      }
      if (state_ == State::kUnlinkWal) {
        Advance(State::kUnlinkJournal);
      } else if (state_ == State::kUnlinkJournal) {
        Advance(State::kUnlinkMain);
      } else if (result == 0) {
        found_ = true;
        Advance(State::kSyncDirectory);
      } else {
        return Finish(absl::NotFoundError(
            absl::StrCat("tenant '", name_, "' does not exist; there is nothing to delete")));
      }
      return std::nullopt;
    case State::kSyncDirectory:
      if (result < 0) {
        return Finish(absl::UnavailableError(
            absl::StrCat("tenant '", name_, "' was deleted but syncing its directory failed (",
                         io::ErrnoText(result),
                         "); after a crash it may reappear, send the delete "
                         "again")));
      }
      return Finish(absl::OkStatus());
  }
  SQLOOP_CHECK(false, "TenantDelete::OnIo: no delete operation is in flight");
  return std::nullopt;
}

absl::Status TenantDelete::Finish(absl::Status status) {
  state_ = State::kIdle;
  AssertInvariants();
  return status;
}

void TenantDelete::AssertInvariants() const {
  if (state_ == State::kIdle) return;
  SQLOOP_CHECK(loop_ != nullptr && io_ != nullptr && !path_.empty(),
               "TenantDelete: running without a loop, a completion or a path");
  SQLOOP_CHECK(state_ != State::kSyncDirectory || (found_ && dir_fd_ >= 0),
               "TenantDelete: syncing the directory of a tenant that had no file");
}

}  // namespace sqloop::db::internal
