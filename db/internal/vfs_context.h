// db/internal/vfs_context.h
// -----------------------------------------------------------------------------
//
// `VfsContext` is what every database's files share with the Vfs that owns them: the loop, the
// options, the counters, and the taint table (the paths and directories this process refuses
// to open again). The files units reference it; it references none of them, so dependencies
// point one way:
//
// clang-format off
//   Vfs (db/vfs.h) --owns--> VfsCore --owns--> DatabaseFiles --owns--> FileTable  (descriptors)
//                               |                   |          +-----> EpochQueue (durability)
//                               |                   |          +-----> LockTable  (locks, shm)
//                               +--owns--> VfsContext <-- DatabaseFiles, EpochQueue
// clang-format on
//
// Two things only the owner of every database's files can do are asked of it through the hooks
// the Vfs installs (function pointers, so no unit below the Vfs includes it): destroy one
// database's files once nothing uses them, and poison the other databases of a directory whose
// fsync failed.
//
// Internal: the VFS and its files are the only users (and tests, which poke at the taint table).
//
// Example (an epoch queue whose barrier failed):
//
//   context.stats().poisonings++;
//   context.Taint(main_path, dir_path, poison.message(), /*directory=*/dir_fsync_failed);
//   ... drop the queue, tell the Database ...
//   context.ReleaseIfUnused(main_path);
#ifndef SQLOOP_DB_INTERNAL_VFS_CONTEXT_H_
#define SQLOOP_DB_INTERNAL_VFS_CONTEXT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/db/internal/fetched_pages.h"
#include "sqloop/db/internal/shm_region_pool.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::internal {

// What the OS says about a database file when it is closed: any write by anyone changes the
// size, the modification or the change time (and a replaced file the device or inode). On the
// simulator (no real descriptors, one process) only the sizes are known.
struct FileFingerprint {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t main_bytes = 0;
  int64_t modified_ns = 0;
  int64_t changed_ns = 0;
  uint64_t wal_bytes = 0;
  friend bool operator==(const FileFingerprint&, const FileFingerprint&) = default;
};

// Fills `print`'s device, inode and times from fstat(fd), and `bytes` (if not null) with the
// file's size; false (nothing filled) if fstat fails.
[[nodiscard]] bool ReadFileIdentity(int fd, FileFingerprint& print, uint64_t* bytes = nullptr);

class VfsContext {
 public:
  // What the files ask of the Vfs that owns them. Both run synchronously, inside the call that
  // asks, so the order of events is the same as if the files called the owner directly.
  struct Hooks {
    void* owner = nullptr;
    // The files of `main_path` may have become unused: the owner destroys them if nothing keeps
    // them alive any more (after this returns, the caller must not touch them).
    void (*release_if_unused)(void* owner, const std::string& main_path) = nullptr;
    // A directory was newly tainted: the owner poisons every database in `dir_path` other than
    // `main_path`, with `why` in the message.
    void (*poison_directory)(void* owner, const std::string& main_path, const std::string& dir_path,
                             const std::string& why) = nullptr;
  };

  VfsContext(loop::Loop& loop, VfsOptions options) : loop_(loop), options_(options) {}
  VfsContext(const VfsContext&) = delete;
  VfsContext& operator=(const VfsContext&) = delete;

  [[nodiscard]] loop::Loop& loop() { return loop_; }
  [[nodiscard]] const VfsOptions& options() const { return options_; }
  [[nodiscard]] const VfsStats& stats() const { return stats_; }
  [[nodiscard]] VfsStats& stats() { return stats_; }
  // Set once, by the Vfs, before any file is opened.
  void set_hooks(Hooks hooks) { hooks_ = hooks; }

  // See Hooks::release_if_unused.
  void ReleaseIfUnused(const std::string& main_path) const;

  // After a failed fsync or write-behind write, what the files hold in this process (the
  // kernel's page cache) may differ from what is on disk, and a later fsync cannot tell: Linux
  // marks the failed pages clean. Reopening such a database in this process would read bytes
  // that may not exist on disk and acknowledge new writes on top of them, which a crash then
  // takes back. So the files' path is tainted for the Vfs's lifetime and opening it again is
  // refused; a new process (a new Vfs) recovers from what is durable. A failed fsync of a
  // directory (`directory`) taints the directory: every database in it is poisoned (through
  // Hooks::poison_directory) and refused, because their file creations and unlinks there may
  // be lost too.
  void Taint(const std::string& main_path, const std::string& dir_path, absl::string_view why,
             bool directory);
  // Why `main_path` may not be opened (OK if it may).
  [[nodiscard]] absl::Status CheckNotTainted(const std::string& main_path) const;

  // Whether a database may open or close now (VfsOptions::open_tick_budget_ns): yes for the
  // first of a tick, then while the tick is younger than the budget. A "no" counts in
  // VfsStats::opens_deferred; the caller tries again on the next tick.
  [[nodiscard]] bool MayOpenOrCloseNow();

  // A database passed its integrity check (or was unchanged since one) and was closed cleanly
  // with this fingerprint. A later open of the same path that finds the same fingerprint may
  // skip the check: nobody changed a byte since the check, SQLite's own writes aside.
  void RememberChecked(const std::string& main_path, const FileFingerprint& fingerprint);
  // Whether `main_path` was closed with exactly this fingerprint since its last check. Forgets
  // the entry either way: the check holds for one reopen, which records it again at close.
  [[nodiscard]] bool TakeUnchangedSinceChecked(const std::string& main_path,
                                               const FileFingerprint& fingerprint);

  // Devices (st_dev) whose files were found on tmpfs or ramfs (Backend::InMemoryFile): a file
  // opened later on one of them is marked so before its first read (FilePreopen).
  [[nodiscard]] bool InMemoryDevice(uint64_t device) const {
    return memory_devices_.contains(device);
  }
  void RememberInMemoryDevice(uint64_t device) { memory_devices_.insert(device); }

  // Bytes of the fetch sink.
  static constexpr uint32_t kFetchSinkBytes = 1 << 20;
  // Where reads that only bring file pages into memory put their bytes (a Database fetching
  // what a reader missed, an open reading a file ahead): one buffer for every database of the Vfs,
  // written by any number of fetches at once and never read. Allocated at the first use, kept until
  // the Vfs goes.
  [[nodiscard]] char* fetch_sink();

  // The memory of the WAL indexes of the Vfs's databases.
  [[nodiscard]] ShmRegionPool& shm_pool() { return shm_pool_; }
  // Pages fetches read in, kept for the reads that run again after them.
  [[nodiscard]] FetchedPages& fetched_pages() { return fetched_pages_; }

 private:
  loop::Loop& loop_;
  const VfsOptions options_;
  VfsStats stats_;
  Hooks hooks_;
  absl::flat_hash_map<std::string, std::string> tainted_paths_;  // main path -> why.
  absl::flat_hash_map<std::string, std::string> tainted_dirs_;   // directory -> why.
  absl::flat_hash_map<std::string, FileFingerprint> checked_;    // main path -> at close.
  absl::flat_hash_set<uint64_t> memory_devices_;
  std::unique_ptr<char[]> fetch_sink_;
  ShmRegionPool shm_pool_;
  FetchedPages fetched_pages_;
  uint64_t open_tick_ = UINT64_MAX;  // The loop tick of the last open or close.
};

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_VFS_CONTEXT_H_
