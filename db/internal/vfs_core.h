// db/internal/vfs_core.h
// -----------------------------------------------------------------------------
//
// `VfsCore` is the state behind a public `Vfs` (db/vfs.h): the VfsContext its files share, the
// files of every database that SQLite has open (one DatabaseFiles per main path), and the words
// of the last failed open. The sqlite3_vfs glue (db/vfs.cc) works on it, and so does whatever
// inside the project needs one database's files: the Database (to pin them and read the epochs)
// and tests. `VfsCore::Of(vfs)` reaches it from a Vfs; users of the library never do.
//
// It is the top of the VFS's units and the only one that owns DatabaseFiles, so it answers the
// context's hooks: it destroys a database's files once they are releasable, and poisons the
// databases of a directory whose fsync failed.
//
// Internal: included from .cc files only (db/vfs.cc, db/database.cc, tests).
//
// Example:
//
//   internal::DatabaseFiles* files = internal::VfsCore::Of(vfs).Find(path);
//   if (files != nullptr) durable = files->queue().durable_epoch();
#ifndef SQLOOP_DB_INTERNAL_VFS_CORE_H_
#define SQLOOP_DB_INTERNAL_VFS_CORE_H_

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/vfs_context.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

class VfsCore {
 public:
  VfsCore(loop::Loop& loop, VfsOptions options);
  VfsCore(const VfsCore&) = delete;
  VfsCore& operator=(const VfsCore&) = delete;

  // The core of `vfs`.
  [[nodiscard]] static VfsCore& Of(Vfs& vfs) { return *vfs.core_; }

  [[nodiscard]] VfsContext& context() { return context_; }
  [[nodiscard]] const VfsContext& context() const { return context_; }
  // Whether some database's files are still open or in flight.
  [[nodiscard]] bool has_databases() const { return !databases_.empty(); }

  // The files of the database at `main_path` (as sqlite3_db_filename reports it), or nullptr
  // if no connection has it open.
  [[nodiscard]] DatabaseFiles* Find(absl::string_view main_path);
  // The files of `main_path`, created if there are none.
  [[nodiscard]] DatabaseFiles& Acquire(const std::string& main_path);
  // Destroys `files` if nothing keeps them alive (DatabaseFiles::Releasable).
  void ReleaseIfUnused(DatabaseFiles* files);

  // Why the last xOpen failed, in words for a user ("... is locked by another process ...").
  [[nodiscard]] const std::string& last_open_error() const { return last_open_error_; }
  void set_last_open_error(std::string error) { last_open_error_ = std::move(error); }

 private:
  // VfsContext::Hooks.
  static void ReleaseIfUnusedHook(void* core, const std::string& main_path);
  static void PoisonDirectoryHook(void* core, const std::string& main_path,
                                  const std::string& dir_path, const std::string& why);

  VfsContext context_;
  absl::flat_hash_map<std::string, std::unique_ptr<DatabaseFiles>> databases_;
  std::string last_open_error_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_VFS_CORE_H_
