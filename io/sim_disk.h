// io/sim_disk.h
// -----------------------------------------------------------------------------
//
// The simulated disk: an in-memory file system that separates what was written from what is
// durable, and a crash that decides, from the seed, what of the non-durable part survives.
//
// The disk is a file system, not a process: it names files by absolute path and hands out node
// ids (inode numbers). File descriptors, and everything else a crash wipes, belong to the
// process, which is `SimBackend`. A node id is never reused during the disk's lifetime.
//
// The crash model (docs/testing.md has the long form):
//
//   * A file has durable bytes plus an ordered list of pending operations (writes and
//     truncates) since its last successful sync. Reads see durable bytes with every pending
//     operation applied, in order ("visible" bytes).
//   * Sync(file) makes every pending operation of the file durable. Sync(directory) makes the
//     pending creations and removals of names in that directory durable. A file that was
//     created, written and synced but whose directory was never synced may vanish in a crash.
//   * FailSync(file) is a failed fsync as Linux implements it: the pending operations are
//     dropped from the list (the page cache marks them clean) while staying visible, so they
//     can only ever become durable if written again. Retrying the fsync does not save them.
//   * Crash(prng): every pending operation, in order, is independently kept, dropped, or (writes
//     only) torn: each 512-byte sector it touches gets the new bytes, keeps the old ones, or
//     receives garbage. Pending name changes are each kept or dropped. Nodes no name reaches
//     are gone; unlinked-but-open files are gone.
//
// The page cache: the kernel keeps file pages in memory once they were read or written, and a
// read of a page that is not there waits for the device. The disk models that per 4 KiB page
// (kSimPageBytes): Read and Write bring pages in, DropCaches() and Crash() (a new boot) empty
// it, and ReadCached answers only from pages that are in, as preadv2(RWF_NOWAIT) does. The
// simulator's kRead latency is the device's; ReadCached costs no virtual time.
//
// Invariants (AssertInvariants() checks them; it runs after every crash and in the tests, not
// after every write, because replaying a file's pending list is O(file size)):
//   1. visible == durable with every pending operation applied in order (files), except for a
//      file whose sync failed: its lost writes stay visible but are in neither, so it is
//      marked `diverged` until the next crash makes visible == durable again.
//   2. A directory has no data and no pending data operations; a file has no pending name
//      changes.
//   3. Every visible name's parent is a visible directory; "/" is always visible and durable.
//      (Durable names can be orphaned by a pending rmdir; a crash prunes orphans.)
//   4. `used_bytes` is the sum of visible sizes. (Growth beyond the capacity fails with
//      -ENOSPC; a crash may leave more, e.g. when it drops a shrinking truncate.)
//
// Pending-operation lifecycle of a file (SQLite-style):
//
//        Write / Truncate                     Sync
//   [durable] ---------------> [pending] ---------------> [durable]
//                                 |  \--- FailSync ---> [visible only] (never durable)
//                                 \------ Crash ------> kept | dropped | torn
//
//   transition             function        afterwards
//   durable -> pending     Write/Truncate  op appended to `pending`, visible updated
//   pending -> durable     Sync            `pending` applied to `durable` and cleared
//   pending -> lost        FailSync        `pending` cleared, visible unchanged
//   pending -> fate        Crash           visible = durable = crash image, `pending` cleared
//
// `options.broken_fsync` makes Sync a successful no-op. It exists for one purpose: the negative
// control in tests/sim_workload_test.cc, which proves the crash checker catches lost
// acknowledged data. Never turn it on anywhere else.
//
// Example:
//
//   sqloop::io::SimDisk disk;
//   int64_t node = disk.Open("/log", O_CREAT | O_RDWR, 0644);
//   disk.Write(node, "abc", 3, 0);
//   disk.Sync(node);                       // "abc" is durable, but the name "/log" is not yet.
//   disk.Sync(*disk.Lookup("/"));          // now it is.
//   sqloop::io::Prng prng(7);
//   disk.Crash(prng);                      // "/log" holds "abc" whatever the seed.
#ifndef SQLOOP_IO_SIM_DISK_H_
#define SQLOOP_IO_SIM_DISK_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "sqloop/io/prng.h"

namespace sqloop::io {

// Torn writes are decided per 512-byte sector: the atomic write unit of the disks SQLite
// assumes by default (SQLITE_DEFAULT_SECTOR_SIZE) and the logical sector of most devices.
inline constexpr uint64_t kSimSectorBytes = 512;
// The page cache's unit: the page size of the machines sqloop runs on.
inline constexpr uint64_t kSimPageBytes = 4096;

struct SimDiskOptions {
  // Crash fate of each pending write or truncate: kept with `crash_keep_probability`, else
  // torn with `crash_tear_probability` (writes only; a truncate is then dropped), else dropped.
  // The defaults give every fate a fair share of seeds.
  double crash_keep_probability = 0.4;
  double crash_tear_probability = 0.2;
  // Fate of each pending name creation or removal in a crash.
  double crash_keep_name_probability = 0.5;
  // Total visible bytes. 256 MiB is far beyond any simulated workload yet small enough that a
  // runaway writer (or a wild offset) fails with -ENOSPC instead of exhausting the host.
  uint64_t capacity_bytes = uint64_t{256} << 20;
  // NEGATIVE CONTROL ONLY: Sync succeeds and does nothing (see the file comment).
  bool broken_fsync = false;
};

struct SimDiskStats {
  uint64_t syncs = 0;         // Successful Sync() calls (files and directories).
  uint64_t failed_syncs = 0;  // FailSync() calls.
  uint64_t crashes = 0;
  uint64_t crash_kept = 0;      // Pending operations (data and names) kept by crashes.
  uint64_t crash_dropped = 0;   // ... dropped.
  uint64_t crash_torn = 0;      // ... torn writes.
  uint64_t crash_vanished = 0;  // Nodes that no name reached after a crash.
};

class SimDisk {
 public:
  explicit SimDisk(SimDiskOptions options = {});

  SimDisk(const SimDisk&) = delete;
  SimDisk& operator=(const SimDisk&) = delete;

  // ---- Names --------------------------------------------------------------------------------

  // Opens (or with O_CREAT creates) the file or directory at absolute `path` and takes a
  // reference on it. Honoured flags: O_ACCMODE (checked by the caller, which owns descriptors),
  // O_CREAT, O_EXCL, O_TRUNC (recorded as a pending truncate), O_DIRECTORY. `mode` is ignored:
  // the simulated process may do anything. Returns the node id or -errno (-ENOENT, -EEXIST,
  // -ENOTDIR, -EISDIR, -EINVAL for "..", relative paths, or O_CREAT with O_DIRECTORY).
  [[nodiscard]] int64_t Open(absl::string_view path, int flags, uint32_t mode);
  // Drops a reference taken by Open. A node that no name (visible, durable or pending) reaches
  // goes away with its last reference.
  void Release(uint64_t node);
  // Removes the name `path` (a directory only with `remove_directory`, and only if empty).
  // The removal is pending until the parent directory is synced. 0 or -errno.
  [[nodiscard]] int Unlink(absl::string_view path, bool remove_directory);
  // Setup helper: creates a directory that is durable at once, as if made by an earlier run.
  // Parents must exist. 0 or -errno.
  [[nodiscard]] int MakeDirectory(absl::string_view path);
  // The node a visible name refers to, without taking a reference.
  [[nodiscard]] std::optional<uint64_t> Lookup(absl::string_view path) const;
  [[nodiscard]] bool IsDirectory(uint64_t node) const;
  // The path a directory node was opened with (for openat relative to it); "" for files.
  [[nodiscard]] std::string DirectoryPath(uint64_t node) const;

  // ---- Data ---------------------------------------------------------------------------------
  // Every call returns -EBADF for a node that no longer exists and -EISDIR for data calls on
  // a directory.

  // Copies up to `length` visible bytes at `offset`; fewer only at end of file.
  [[nodiscard]] int64_t Read(uint64_t node, void* buffer, uint32_t length, uint64_t offset);
  // Records a pending write (extending the file with zeros up to `offset` if needed).
  // Returns `length`, or -ENOSPC if the visible size would exceed the capacity.
  [[nodiscard]] int64_t Write(uint64_t node, const void* buffer, uint32_t length, uint64_t offset);
  // Records a pending truncate (or extension with zeros) to `size_bytes`. The Op table has no
  // truncate kind yet; this exists so the SQLite VFS (xTruncate) has one crash model. 0/-errno.
  [[nodiscard]] int Truncate(uint64_t node, uint64_t size_bytes);
  // Makes a file's pending operations, or a directory's pending name changes, durable.
  // Datasync and full sync are the same here: every pending operation is data. 0 or -errno.
  [[nodiscard]] int Sync(uint64_t node);
  // A failed fsync (see the file comment): pending operations will never become durable.
  void FailSync(uint64_t node);
  [[nodiscard]] uint64_t SizeBytes(uint64_t node) const;

  // ---- Page cache ---------------------------------------------------------------------------

  // Copies visible bytes at `offset` from the pages in the cache only: up to `length`, fewer
  // where the next page is not in the cache or at end of file (0 at or past the end). -EAGAIN
  // if the page holding `offset` is not in the cache; -EBADF/-EISDIR as Read.
  [[nodiscard]] int64_t ReadCached(uint64_t node, void* buffer, uint32_t length,
                                   uint64_t offset) const;
  // Empties the page cache (echo 1 > /proc/sys/vm/drop_caches, or memory pressure).
  void DropCaches();

  // ---- Crash --------------------------------------------------------------------------------

  // Power loss: references are gone, and each pending operation gets its fate from `prng`.
  // Afterwards visible == durable everywhere and nothing is pending.
  void Crash(Prng& prng);

  // Bit rot: XORs `mask` into the byte at `offset` of the file at `path`, in its durable bytes
  // and its visible ones alike, as a medium that decays under data already synced. Only for a
  // file with nothing pending (after a crash, before the next process writes), so invariant 1
  // holds. Returns false, changing nothing, if there is no such file, it has pending
  // operations, or `offset` is past its durable end.
  [[nodiscard]] bool CorruptDurable(absl::string_view path, uint64_t offset, uint8_t mask);

  // ---- Inspection (tests and crash oracles) ---------------------------------------------------

  // The visible bytes of the file at `path`, or nullopt if no such visible file.
  [[nodiscard]] std::optional<std::string> VisibleContent(absl::string_view path) const;
  // What a crash that dropped every pending operation would leave at `path`: nullopt if the
  // name is not durable or not a file, else the durable bytes.
  [[nodiscard]] std::optional<std::string> DurableContent(absl::string_view path) const;
  // Pending data operations of the file at `path` plus pending name changes of its directory.
  [[nodiscard]] uint32_t PendingOperations(absl::string_view path) const;
  [[nodiscard]] uint64_t used_bytes() const { return used_bytes_; }
  [[nodiscard]] const SimDiskStats& stats() const { return stats_; }
  [[nodiscard]] const SimDiskOptions& options() const { return options_; }
  // Changes crash probabilities (swarm mode draws them per seed). Not the broken mode.
  void SetCrashProbabilities(double keep, double tear, double keep_name);

  // Checks invariants 1-4 (aborts on violation). O(total bytes).
  void AssertInvariants() const;

 private:
  struct PendingOp {
    bool truncate = false;
    uint64_t offset = 0;  // Write offset, or the new size for a truncate.
    std::string data;     // Write bytes.
  };
  struct NameOp {
    bool create = false;  // Else a removal.
    std::string path;
    uint64_t node = 0;
  };
  struct Node {
    bool directory = false;
    std::string path;     // Where it was created; nodes are never renamed (no rename op).
    uint64_t parent = 0;  // The directory `path` is in (the root is its own parent).
    std::string visible;
    std::string durable;
    std::vector<PendingOp> pending;  // Files only.
    std::vector<NameOp> name_ops;    // Directories only, in the order they happened.
    uint32_t references = 0;
    bool diverged = false;     // FailSync lost writes that are still visible (invariant 1).
    std::vector<bool> cached;  // Per kSimPageBytes page: in the page cache.
  };

  [[nodiscard]] Node* Find(uint64_t node);
  [[nodiscard]] const Node* Find(uint64_t node) const;
  [[nodiscard]] int64_t Create(const std::string& path, uint64_t parent, bool directory);
  [[nodiscard]] int ResizeVisible(Node& node, uint64_t size_bytes);
  static void Cache(Node& node, uint64_t offset, uint64_t length);
  void RecordName(uint64_t parent, bool create, const std::string& path, uint64_t node);
  // Whether a name (visible, durable, or a pending change a crash might keep) reaches `id`.
  [[nodiscard]] bool Reachable(uint64_t id, const Node& node) const;
  // Erases `id` if it has no references and no name reaches it.
  void MaybeErase(uint64_t id);
  static void TearWrite(std::string& image, const PendingOp& op, Prng& prng);
  void CrashFile(Node& node, Prng& prng);
  void CrashNames(Prng& prng);

  SimDiskOptions options_;
  std::map<uint64_t, Node> nodes_;  // Ordered by id, so crashes visit nodes deterministically.
  std::map<std::string, uint64_t> names_;          // Visible namespace.
  std::map<std::string, uint64_t> durable_names_;  // What survives a crash for sure.
  uint64_t next_node_ = 0;
  uint64_t used_bytes_ = 0;
  SimDiskStats stats_;
};

// Splits an absolute path into its normalised form and its parent ("/a//b/" -> "/a/b", "/a").
// Returns false for relative paths and paths with "..", which the simulator does not model.
[[nodiscard]] bool NormalizeSimPath(absl::string_view path, std::string& normal,
                                    std::string& parent);

}  // namespace sqloop::io

#endif  // SQLOOP_IO_SIM_DISK_H_
