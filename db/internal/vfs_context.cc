#include "sqloop/db/internal/vfs_context.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"

namespace sqloop::db::internal {

bool ReadFileIdentity(int fd, FileFingerprint& print, uint64_t* bytes) {
  struct stat status {};
  if (fstat(fd, &status) != 0) return false;
  if (bytes != nullptr) *bytes = static_cast<uint64_t>(status.st_size);
  print.device = status.st_dev;
  print.inode = status.st_ino;
  print.modified_ns = status.st_mtim.tv_sec * 1'000'000'000 + status.st_mtim.tv_nsec;
  print.changed_ns = status.st_ctim.tv_sec * 1'000'000'000 + status.st_ctim.tv_nsec;
  return true;
}

void VfsContext::ReleaseIfUnused(const std::string& main_path) const {
  SQLOOP_CHECK(hooks_.release_if_unused != nullptr, "VfsContext used before the Vfs set its hooks");
  hooks_.release_if_unused(hooks_.owner, main_path);
}

void VfsContext::Taint(const std::string& main_path, const std::string& dir_path,
                       absl::string_view why, bool directory) {
  tainted_paths_.try_emplace(main_path, why);
  checked_.erase(main_path);
  if (!directory || !tainted_dirs_.try_emplace(dir_path, why).second) return;
  SQLOOP_CHECK(hooks_.poison_directory != nullptr, "VfsContext used before the Vfs set its hooks");
  hooks_.poison_directory(hooks_.owner, main_path, dir_path, std::string(why));
}

absl::Status VfsContext::CheckNotTainted(const std::string& main_path) const {
  auto path = tainted_paths_.find(main_path);
  auto directory = tainted_dirs_.find(DirectoryOf(main_path));
  if (path == tainted_paths_.end() && directory == tainted_dirs_.end()) return absl::OkStatus();
  const std::string& why = path != tainted_paths_.end() ? path->second : directory->second;
  return absl::FailedPreconditionError(absl::StrCat(
      "'", FileNameOf(main_path),
      "' is not opened again in this process: an fsync or write of its files failed "
      "earlier (",
      why,
      "), so what this process would read may not be on disk, and writes acknowledged on top "
      "of it could be lost. Restart the process: it recovers from what is durable"));
}

bool VfsContext::MayOpenOrCloseNow() {
  const uint64_t tick = loop_.stats().ticks;
  if (tick != open_tick_) {
    open_tick_ = tick;
    return true;
  }
  if (loop_.TickElapsedNs() < options_.open_tick_budget_ns) return true;
  ++stats_.opens_deferred;
  return false;
}

void VfsContext::RememberChecked(const std::string& main_path, const FileFingerprint& fingerprint) {
  checked_.insert_or_assign(main_path, fingerprint);
}

bool VfsContext::TakeUnchangedSinceChecked(const std::string& main_path,
                                           const FileFingerprint& fingerprint) {
  auto it = checked_.find(main_path);
  if (it == checked_.end()) return false;
  const bool unchanged = it->second == fingerprint;
  checked_.erase(it);
  return unchanged;
}

char* VfsContext::fetch_sink() {
  if (fetch_sink_ == nullptr) fetch_sink_ = std::make_unique_for_overwrite<char[]>(kFetchSinkBytes);
  return fetch_sink_.get();
}

}  // namespace sqloop::db::internal
