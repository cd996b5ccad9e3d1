#include "sqloop/db/internal/database_files.h"

#include <utility>

namespace sqloop::db::internal {

DatabaseFiles::DatabaseFiles(VfsContext& context, std::string main_path)
    : context_(context),
      table_(context.loop(), std::move(main_path), context.options().os_lock),
      queue_(context, table_),
      locks_(context.options().wal_index_bytes_max, context.shm_pool()) {}

void DatabaseFiles::Unpin() {
  table_.Unpin();
  if (!table_.pinned()) queue_.ClearListeners();
  // May destroy this object: nothing touches it afterwards.
  context_.ReleaseIfUnused(main_path());
}

void DatabaseFiles::CloseHandle(FileRole role) {
  table_.CloseHandle(role);
  queue_.CloseIdleDescriptors();
}

bool DatabaseFiles::Releasable() const {
  return !table_.pinned() && queue_.quiet() && locks_.shm_unused() && table_.unused();
}

}  // namespace sqloop::db::internal
