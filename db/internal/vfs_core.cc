#include "sqloop/db/internal/vfs_core.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sqloop/db/internal/file_names.h"

namespace sqloop::db::internal {

VfsCore::VfsCore(loop::Loop& loop, VfsOptions options) : context_(loop, options) {
  context_.set_hooks({.owner = this,
                      .release_if_unused = &VfsCore::ReleaseIfUnusedHook,
                      .poison_directory = &VfsCore::PoisonDirectoryHook});
}

DatabaseFiles* VfsCore::Find(absl::string_view main_path) {
  auto it = databases_.find(main_path);
  return it == databases_.end() ? nullptr : it->second.get();
}

DatabaseFiles& VfsCore::Acquire(const std::string& main_path) {
  auto [it, inserted] = databases_.try_emplace(main_path);
  if (inserted) it->second = std::make_unique<DatabaseFiles>(context_, main_path);
  return *it->second;
}

void VfsCore::ReleaseIfUnused(DatabaseFiles* files) {
  if (!files->Releasable()) return;
  // What no barrier synced yet is synced first (EpochQueue invariant 11); the barrier's
  // completion comes back here.
  if (files->queue().SyncBeforeRelease()) return;
  // By iterator: erasing by key would read the key while destroying the object that holds it.
  auto it = databases_.find(files->main_path());
  databases_.erase(it);
}

void VfsCore::ReleaseIfUnusedHook(void* core, const std::string& main_path) {
  auto& self = *static_cast<VfsCore*>(core);
  if (DatabaseFiles* files = self.Find(main_path); files != nullptr) self.ReleaseIfUnused(files);
}

void VfsCore::PoisonDirectoryHook(void* core, const std::string& main_path,
                                  const std::string& dir_path, const std::string& why) {
  auto& self = *static_cast<VfsCore*>(core);
  // Collect first: poisoning notifies their owners, which may release files (and so change
  // databases_).
  std::vector<std::string> others;
  for (const auto& [path, other] : self.databases_) {
    if (path != main_path && other->table().dir_path() == dir_path) others.push_back(path);
  }
  // The hash map's order changes from process to process (Abseil seeds its hash), and each
  // poison wakes its database: in path order, a simulated run replays the same from its seed.
  std::sort(others.begin(), others.end());
  for (const std::string& path : others) {
    if (DatabaseFiles* other = self.Find(path); other != nullptr) {
      other->queue().Poison(absl::DataLossError(absl::StrCat(
          "an fsync of the database directory failed (", why,
          "): file creations and unlinks in it may be lost, so the outcome of every write to '",
          FileNameOf(path),
          "' since its last durable epoch is unknown. Restart the process to "
          "recover.")));
    }
  }
}

}  // namespace sqloop::db::internal
