// db/internal/file_table.h
// -----------------------------------------------------------------------------
//
// `FileTable` holds the descriptors of one database: the main file, its rollback journal and
// its WAL, one descriptor each, shared by every connection of the process, plus the directory's
// (opened for the first barrier that syncs it). It opens them (with an exclusive flock on the
// main file: one process per database), knows SQLite's view of each file (exists, size, written
// since the last barrier), and closes them. What is queued on them is the epoch queue's business
// (db/internal/epoch_queue.h), which decides when a descriptor may be closed (its invariant 6).
//
// Design invariants:
//   1. One descriptor per file per process, opened once, however many connections open it.
//   2. The main file stays open while the table is pinned (a Database exists), so the process
//      keeps its flock for as long as the Database does; except while the Database sleeps
//      (db/internal/file_sleep.h), when no descriptor is open and nothing touches the files.
//   3. A file opened (or created) here is marked `needs_dir_sync` until a barrier syncs the
//      directory: its name is durable only then.
//   4. The head (the main file's first bytes, read ahead of an open) is kept only while it
//      equals the file: any write or truncate of the main file drops it first.
//
// Internal: DatabaseFiles owns one; the epoch queue and the VFS glue use it.
//
// Example:
//
//   FileTable table(loop, "/data/t.db", /*os_lock=*/true);
//   if (int64_t rc = table.Open(FileRole::kMain, O_RDWR | O_CREAT); rc < 0) return rc;
//   ++table.file(FileRole::kMain).opens;  // A connection's handle.
#ifndef SQLOOP_DB_INTERNAL_FILE_TABLE_H_
#define SQLOOP_DB_INTERNAL_FILE_TABLE_H_

#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>

#include "sqloop/io/op.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

// The files of one database. kCount is the number of roles.
enum class FileRole : uint8_t { kMain = 0, kJournal = 1, kWal = 2, kCount = 3 };
inline constexpr int kFileRoles = static_cast<int>(FileRole::kCount);

// "database file", "rollback journal" or "WAL": how messages name a role.
[[nodiscard]] const char* RoleName(FileRole role);

// Runs `op` to completion with Loop::WaitForOp (other completions are queued for the loop, no
// callback runs). Returns its result: >= 0, or -errno.
[[nodiscard]] int64_t RunNow(loop::Loop& loop, io::Op& op);

// One file (main, journal or WAL) as SQLite sees it: the epoch queue's effects included.
struct SharedFile {
  std::string path;
  int fd = -1;
  uint32_t opens = 0;           // sqlite3_file handles open on it.
  bool known = false;           // `exists` is authoritative (opened or unlinked by us).
  bool exists = false;          // SQLite's view: false once an unlink is queued.
  bool dirty = false;           // Written since the last barrier that synced it.
  bool needs_dir_sync = false;  // Opened, created or unlinked since the directory was synced.
  uint64_t size_bytes = 0;      // SQLite's view of the size.
  // Bytes the disk holds for the file for certain: its size when opened, raised by each write
  // that ran at once, lowered by truncates. Overwriting them allocates nothing, so such a write
  // may run behind (EpochQueue invariant 2).
  uint64_t allocated_bytes = 0;
  // The WAL, empty, open in SQLite's handles without a descriptor: a wake left it closed
  // (FileSleep invariant 5). Nothing writes it until FileSleep::OpenWal opens it; Open opens
  // nothing meanwhile. Cleared by that open, by an Adopt, and when its last handle closes.
  bool deferred = false;
};

class FileTable {
 public:
  // `os_lock`: take an exclusive flock on the main file (VfsOptions::os_lock).
  FileTable(loop::Loop& loop, std::string main_path, bool os_lock);
  // Closes every descriptor still open.
  ~FileTable();
  FileTable(const FileTable&) = delete;
  FileTable& operator=(const FileTable&) = delete;

  [[nodiscard]] const std::string& main_path() const { return main_path_; }
  [[nodiscard]] const std::string& dir_path() const { return dir_path_; }
  [[nodiscard]] SharedFile& file(FileRole role) { return files_[static_cast<int>(role)]; }
  [[nodiscard]] const SharedFile& file(FileRole role) const {
    return files_[static_cast<int>(role)];
  }
  // Whether no sqlite3_file handle has any of the files open.
  [[nodiscard]] bool unused() const;
  // What a barrier would have to make durable. kWrites: a file written since the last barrier
  // synced it (`dirty`). kWritesAndNames: that, or a name made or removed since the directory
  // was synced (`needs_dir_sync`).
  enum class Unsynced : uint8_t { kWrites, kWritesAndNames };
  [[nodiscard]] bool unsynced(Unsynced what) const;

  // The error of an open refused because this process holds the main file's flock already,
  // through another descriptor: another Vfs, or another path to the file (a symbolic link,
  // "..": the key of a database's files is its path, file_names.h).
  static constexpr int64_t kLockedInThisProcess = -EALREADY;

  // What a failed open of `path` (-errno or kLockedInThisProcess, as Open returns) means, in
  // words for a user.
  [[nodiscard]] static std::string OpenErrorMessage(const std::string& path, int64_t error);
  // Opens the role's descriptor if it is not open or deferred (flags as open(2)). Returns 0 or
  // -errno (-EWOULDBLOCK: another process holds the main file's flock; kLockedInThisProcess:
  // this one does).
  [[nodiscard]] int64_t Open(FileRole role, int flags);
  // For a caller that opened the file itself, through the loop (FilePreopen): LockMain takes
  // the main file's flock (0, or an error as Open's, the descriptor closed); Adopt takes `fd`,
  // opened for `role` (the main file locked), whose size (or -errno) is `size`, as Open would
  // have: 0, or -errno with the descriptor closed.
  [[nodiscard]] int64_t LockMain(int fd);
  // Releases the main file's flock held by `fd` now, before a close that may free the file
  // later than it completes (FileSleep invariant 1).
  void UnlockMain(int fd) const;
  [[nodiscard]] int64_t Adopt(FileRole role, int fd, int64_t size);
  // Records that `role` does not exist (found absent by the caller; only this process creates
  // a database's files).
  void MarkAbsent(FileRole role) {
    SharedFile& f = file(role);
    f.known = true;
    f.exists = false;
    f.size_bytes = 0;
    f.allocated_bytes = 0;
  }
  // A handle on `role` was closed. The descriptor stays open: see CloseIdle.
  void CloseHandle(FileRole role);
  // Closes the role's descriptor if no handle has it open (before the file is unlinked).
  void CloseIfUnused(FileRole role);
  // Closes every descriptor no handle has open, except the main file's while pinned and those
  // of files written since the last barrier (`dirty`: the barrier syncs through them). Only when
  // nothing is queued on them (the epoch queue's invariant 6 is the caller's to keep).
  void CloseIdle();
  // The directory's descriptor, or -1: the first barrier that syncs the directory opens it
  // through the loop (EpochQueue) and hands it over with AdoptDirectory.
  [[nodiscard]] int directory_fd() const { return dir_fd_; }
  // Takes `fd`, the directory opened through the loop by the one barrier in flight, which opens
  // it only while the table has none.
  void AdoptDirectory(int fd);
  // Closes the directory's descriptor, if open (a sleeping database holds none: FileSleep).
  void CloseDirectory() {
    if (dir_fd_ >= 0) CloseDescriptor(dir_fd_);
  }

  // Keeps the main file (and so the flock) open while no SQLite connection has it open.
  void Pin() { ++pins_; }
  void Unpin();
  [[nodiscard]] bool pinned() const { return pins_ != 0; }
  [[nodiscard]] uint32_t pins() const { return pins_; }
  // A Database that holds these files sleeps (db/internal/file_sleep.h): no descriptor is open,
  // and no other Database may open the files meanwhile.
  [[nodiscard]] bool asleep() const { return asleep_; }
  void set_asleep(bool asleep) { asleep_ = asleep; }
  // Counts what this process did to the files since the table was made: each write, truncate,
  // reserve and unlink (EpochQueue notes them) and each descriptor adopted. While it stays the
  // same, what the OS says about the files (FileFingerprint) stays the same too, unless another
  // process changed them: FileSleep reads the fingerprints again only after a change.
  [[nodiscard]] uint64_t changes() const { return changes_; }
  void NoteChange() { ++changes_; }

  // SQLITE_FCNTL_PERSIST_WAL: whether SQLite keeps the WAL at close (truncated to 0 bytes when
  // journal_size_limit is set) instead of deleting it. Off, as in SQLite's own VFS, until a
  // connection turns it on (the Database's do, with a journal_size_limit).
  [[nodiscard]] bool& persist_wal() { return persist_wal_; }
  // Closes `fd` (through the loop) and sets it to -1.
  void CloseDescriptor(int& fd);

  // The main file's first bytes, read through the loop before SQLite opens it (FilePreopen),
  // so the reads of an open (the header, page 1 twice, the writer's check) cost no system
  // call and never wait. Invariant 4: while kept, they are the file's bytes, since nothing has
  // been written to or truncated from the main file since they were read (EpochQueue drops
  // them first); the Database drops them once it is open.
  [[nodiscard]] char* PrepareHead(uint32_t bytes);  // A buffer for the read, not kept yet.
  void KeepHead(uint32_t bytes) { head_bytes_ = bytes; }
  void DropHead();
  // Copies [start, start + length) of the main file from the head, if the head holds it all.
  [[nodiscard]] bool ReadHead(char* out, uint64_t length, uint64_t start) const;

 private:
  // Rolls back a hot journal left by a database's first transaction (see the definition).
  [[nodiscard]] int64_t RollBackFirstTransaction(int main_fd, int64_t& size_bytes);

  loop::Loop& loop_;
  const std::string main_path_;
  const std::string dir_path_;
  const bool os_lock_;
  std::array<SharedFile, kFileRoles> files_;
  int dir_fd_ = -1;
  std::unique_ptr<char[]> head_;
  uint32_t head_bytes_ = 0;  // Of head_, kept (invariant 4); 0: none.
  uint32_t pins_ = 0;
  uint64_t changes_ = 0;
  bool asleep_ = false;
  bool persist_wal_ = false;
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_FILE_TABLE_H_
