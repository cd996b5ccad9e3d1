#include "sqloop/db/internal/integrity_check.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <semaphore>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"

namespace sqloop::db::internal {
namespace {

// Invariant 4: the checks that read at once, process-wide. Each reads a whole file, and a
// restart that opens many large tenants together would otherwise set as many threads reading
// the disk and competing for the cores the loops run on.
std::counting_semaphore<>& ReadingSlots() {
  static std::counting_semaphore<> slots(std::max<std::ptrdiff_t>(
      1, static_cast<std::ptrdiff_t>(std::thread::hardware_concurrency() / 2)));
  return slots;
}

}  // namespace

absl::Status QuickCheck(sqlite3* db, absl::string_view file_name) {
  sqlite3_stmt* check = nullptr;
  int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &check, nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(check);
  const std::string result = rc == SQLITE_ROW
                                 ? reinterpret_cast<const char*>(sqlite3_column_text(check, 0))
                                 : sqlite3_errmsg(db);
  sqlite3_finalize(check);
  const int primary = rc & 0xff;
  if (rc == SQLITE_ROW && result == "ok") return absl::OkStatus();
  if (rc == SQLITE_ROW || primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
    return absl::DataLossError(absl::StrCat("'", file_name, "' is corrupt (quick_check: ", result,
                                            "); restore it from a backup"));
  }
  if (primary == SQLITE_NOMEM) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the integrity check of '", file_name, "' ran out of memory (", result,
                     "); raise the tenant's memory limit, or open it with check_at_open off"));
  }
  return absl::UnavailableError(absl::StrCat("the integrity check of '", file_name,
                                             "' could not read it (", result, "); retry the open"));
}

IntegrityCheck::~IntegrityCheck() {
  SQLOOP_CHECK(state_ == State::kIdle, "IntegrityCheck destroyed with a check in flight");
}

void IntegrityCheck::RunOnLoop(loop::Loop& loop, sqlite3* db, absl::string_view file_name,
                               Callback done, void* arg) {
  SQLOOP_CHECK(state_ == State::kIdle, "IntegrityCheck::RunOnLoop: a check is in flight");
  done_ = done;
  arg_ = arg;
  status_ = QuickCheck(db, file_name);
  state_ = State::kReporting;
  report_.callback = &IntegrityCheck::OnReport;
  report_.user_data = this;
  loop.NextTick(report_);
}

bool IntegrityCheck::StartOnThread(loop::Loop& loop, std::string path, std::string file_name,
                                   alloc::TenantId tenant, std::latch* gate, Callback done,
                                   void* arg) {
  SQLOOP_CHECK(state_ == State::kIdle, "IntegrityCheck::StartOnThread: a check is in flight");
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) return false;
  path_ = std::move(path);
  file_name_ = std::move(file_name);
  tenant_ = tenant;
  gate_ = gate;
  try {
    thread_ = std::thread(&IntegrityCheck::RunThread, this);
  } catch (const std::system_error&) {
    close(event_fd_);
    event_fd_ = -1;
    return false;
  }
  done_ = done;
  arg_ = arg;
  state_ = State::kRunning;
  report_.op = {.kind = io::OpKind::kPoll, .fd = event_fd_, .flags = POLLIN};
  report_.callback = &IntegrityCheck::OnReport;
  report_.user_data = this;
  report_.name = "integrity check";
  loop.Submit(report_);
  return true;
}

// On the thread: nothing here touches the loop or the Database (invariants 1 to 4).
void IntegrityCheck::RunThread() {
  if (gate_ != nullptr) gate_->wait();
  ReadingSlots().acquire();
  {
    alloc::ScopedTenant scope(tenant_);
    // A URI, for immutable=1: every byte outside the unreserved set is percent-encoded.
    std::string uri = "file:";
    for (const char ch : path_) {
      if (absl::ascii_isalnum(ch) || ch == '/' || ch == '-' || ch == '.' || ch == '_' ||
          ch == '~') {
        uri.push_back(ch);
      } else {
        absl::StrAppendFormat(&uri, "%%%02X", static_cast<unsigned char>(ch));
      }
    }
    uri += "?immutable=1";
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(
        uri.c_str(), &db,
        SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
        "unix");
    if (rc == SQLITE_OK) {
      sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
      sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
      status_ = QuickCheck(db, file_name_);
    } else {
      status_ = absl::UnavailableError(
          absl::StrCat("the integrity check could not open '", file_name_,
                       "': ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    }
    sqlite3_close_v2(db);
  }
  ReadingSlots().release();
  const uint64_t one = 1;
  // An eventfd write of 8 bytes cannot fail short of a bad descriptor, which this one is not.
  [[maybe_unused]] const ssize_t written = write(event_fd_, &one, sizeof one);
}

loop::Action IntegrityCheck::OnReport(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& self = *static_cast<IntegrityCheck*>(c.user_data);
  if (self.state_ == State::kRunning) {
    // The thread has written its verdict and signalled: joining waits at most for its last
    // instructions. (A poll of an eventfd we own does not fail; if one did, this join would
    // wait for the check, which still ends.)
    self.thread_.join();
    close(self.event_fd_);
    self.event_fd_ = -1;
  }
  self.state_ = State::kIdle;
  self.done_(self.arg_);
  return loop::Action::kDisarm;
}

}  // namespace sqloop::db::internal
