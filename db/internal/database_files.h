// db/internal/database_files.h
// -----------------------------------------------------------------------------
//
// `DatabaseFiles` is the VFS's state for one database, composed of three parts that know
// nothing of each other's owner:
//
//   * `table()`, a FileTable (db/internal/file_table.h): the descriptors of the main file, its
//     rollback journal and its WAL, shared by every connection of the process;
//   * `queue()`, an EpochQueue (db/internal/epoch_queue.h): the write-behind queue, epoch
//     barriers, the durable epoch and the poison: the durability core;
//   * `locks()`, a LockTable (db/internal/lock_table.h): SQLite's lock levels and the WAL index.
//
// What it adds is the lifetime: the Vfs creates one the first time SQLite opens a file of the
// database, and destroys it (VfsContext::ReleaseIfUnused) once nothing keeps it alive: no
// SQLite handle on any file, no pin, nothing queued or in flight, no WAL index user.
//
// Internal: the Vfs (db/vfs.cc) owns them; the Database holds a pin on its own.
//
// Example (the Database layer):
//
//   DatabaseFiles* files = VfsCore::Of(vfs).Find(path);
//   files->Pin();
//   files->queue().AddListener(&OnFilesChanged, this);
//   ... run a transaction; its COMMIT closed epoch files->queue().epoch() ...
//   if (files->queue().durable_epoch() >= commit_epoch) Acknowledge();
//   ...
//   files->queue().RemoveListener(&OnFilesChanged, this);
//   files->Unpin();  // May destroy the files: do not touch them afterwards.
#ifndef SQLOOP_DB_INTERNAL_DATABASE_FILES_H_
#define SQLOOP_DB_INTERNAL_DATABASE_FILES_H_

#include <string>

#include "sqloop/db/internal/epoch_queue.h"
#include "sqloop/db/internal/file_table.h"
#include "sqloop/db/internal/lock_table.h"
#include "sqloop/db/internal/vfs_context.h"

namespace sqloop::db::internal {

class DatabaseFiles {
 public:
  DatabaseFiles(VfsContext& context, std::string main_path);
  DatabaseFiles(const DatabaseFiles&) = delete;
  DatabaseFiles& operator=(const DatabaseFiles&) = delete;

  [[nodiscard]] FileTable& table() { return table_; }
  [[nodiscard]] const FileTable& table() const { return table_; }
  [[nodiscard]] EpochQueue& queue() { return queue_; }
  [[nodiscard]] const EpochQueue& queue() const { return queue_; }
  [[nodiscard]] LockTable& locks() { return locks_; }
  [[nodiscard]] VfsContext& context() { return context_; }
  [[nodiscard]] const std::string& main_path() const { return table_.main_path(); }

  // Keeps the files (and the main file's descriptor, with its flock) alive while no SQLite
  // connection has them open. The last Unpin drops the queue's listener and may destroy them.
  void Pin() { table_.Pin(); }
  void Unpin();
  // A SQLite handle on `role` was closed: closes idle descriptors if nothing is queued.
  void CloseHandle(FileRole role);
  // Whether nothing keeps this object alive any more (the Vfs then destroys it).
  [[nodiscard]] bool Releasable() const;

 private:
  VfsContext& context_;
  // Declared in dependency order: destroyed queue first (it checks that nothing is in flight),
  // then the descriptors it used.
  FileTable table_;
  EpochQueue queue_;
  LockTable locks_;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_DATABASE_FILES_H_
