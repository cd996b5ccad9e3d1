// db/vfs.h
// -----------------------------------------------------------------------------
//
// `Vfs` is a `sqlite3_vfs` bound to one `loop::Loop`: every byte of SQLite's file I/O goes
// through the loop's io::Backend (io_uring, the synchronous fallback, or the simulator), and
// commits never make the loop wait for an fsync.
//
// What it does, and why (docs/architecture.md, docs/db.md):
//   * A reader's xRead is answered from memory only (the queued writes, then the page cache
//     through Backend::ReadIfCached): data that is not there stops the statement with
//     SQLITE_INTERRUPT, and the Database fetches it asynchronously and runs the read again.
//   * Other calls that need data (the writer's xRead and those at open, and xWrite/xTruncate
//     when nothing is queued) run one operation with Loop::WaitForOp: other completions
//     reaped meanwhile are queued for the loop, never dispatched inside SQLite.
//   * xSync closes an epoch with a barrier whose fsync runs asynchronously; writes after it are
//     held until it completed (the queue and its invariants: db/internal/epoch_queue.h).
//   * The VFS owns its files: one descriptor per file per process, an exclusive flock on the
//     database file (a second process gets a clear error), the locks between the process's
//     connections and the WAL index in process memory (no -shm file is ever created).
//   * Every other file lives in memory, bounded (temp_file_bytes_max), in SQLite's memory: sorts,
//     statement journals, temp tables, and VACUUM's copy of the database, so a VACUUM of a
//     database larger than the bound fails with SQLITE_FULL. They count against the tenant of
//     the statement that writes them. A super-journal (one transaction writing several attached
//     databases in a rollback-journal mode) is refused, and SQLite rolls the transaction back:
//     nothing could order it before the journals that name it, which are other files' queues.
//   * A failed fsync or write-behind write is never retried: the database is poisoned, and this
//     Vfs refuses to open its path again (a failed directory fsync: every database in that
//     directory), because this process may read bytes that are not on disk; last_open_error()
//     says so. A new process recovers from what the kernel shows it, which is what is durable
//     once the kernel's cached pages of the file are gone: Linux may keep the pages whose
//     writeback failed in its page cache, marked clean, until they are evicted.
//   * A file is known by its path made absolute with its empty and "." components removed. Two
//     paths that name one file otherwise (a symbolic link, "..") are two databases to the Vfs,
//     and the second one's open is refused: its flock fails, and the error says the file is
//     open already in this process.
//
// Use one Vfs per loop; open connections on it with sqlite3_open_v2(..., vfs.name()).
// Database (db/database.h) does that for you. On a connection of your own, a COMMIT that
// returns SQLITE_OK is durable only once the loop has run its barrier's fsync; a Database
// acknowledges a write only then, and WhenDurable tells your own connection when: arm a
// DurableWait after the COMMIT returned, and its `done` runs, from a loop callback, once
// everything written to that database before the call is on disk (WhenDurable adds a barrier
// when the last commit issued none), or with the poison if that can no longer happen. While the
// loop does not run, the writes are held in memory, and once held_bytes_max or held_ops_max is
// reached a write fails with SQLITE_FULL.
//
// Example (a host that acknowledges its client only once the write is durable):
//
//   absl::StatusOr<std::unique_ptr<sqloop::db::Vfs>> vfs = sqloop::db::Vfs::Create(*loop);
//   if (!vfs.ok()) return vfs.status();
//   sqlite3* db = nullptr;
//   int rc = sqlite3_open_v2("/data/t.db", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
//                            (*vfs)->name());
//   rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", ...);
//   rc = sqlite3_exec(db, "INSERT INTO kv VALUES ('k', 'v')", ...);  // Returned; not durable.
//   session->wait.user_data = session;  // Kept alive and unmoved until `done` ran.
//   session->wait.done = [](sqloop::db::DurableWait& wait, absl::Status status) {
//     static_cast<Session*>(wait.user_data)->Reply(status);  // OK: the INSERT is on disk.
//   };
//   absl::Status armed = (*vfs)->WhenDurable(db, session->wait);  // Not OK: no `done`.
//   ... run the loop: `done` runs from one of its callbacks ...
#ifndef SQLOOP_DB_VFS_H_
#define SQLOOP_DB_VFS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/intrusive_list.h"
#include "sqloop/loop/loop.h"

struct sqlite3;
struct sqlite3_vfs;

namespace sqloop::db {

// The write-behind buffer per database: 8 MiB holds a default-sized WAL checkpoint (1000
// pages of 4 KiB) twice over, so backpressure only appears when the disk really falls behind
// (or the loop does not run: writes wait for the loop's barriers).
inline constexpr uint64_t kHeldBytesMaxDefault = uint64_t{8} << 20;
// Queued operations per database: 4096 is 16 MiB of page writes, above the byte limit, so the
// byte limit normally binds; this one bounds pathological streams of tiny writes.
inline constexpr uint32_t kHeldOpsMaxDefault = 4096;
// A temporary file (sorter, statement journal, temp table) lives in memory up to this size, in
// SQLite's memory, so it counts against its tenant's limit (DatabaseOptions::tenant) as the rest
// of SQLite's memory does; a sort larger than that fails with SQLITE_FULL instead of eating the
// host's memory. One block of SQLite's allocator holds it, so it may be at most 1 GiB.
inline constexpr uint64_t kTempFileBytesMaxDefault = uint64_t{64} << 20;
inline constexpr uint64_t kTempFileBytesMaxLimit = uint64_t{1} << 30;
// The WAL index of one database: 32 MiB indexes 16 million WAL frames, far past any WAL that
// checkpoints normally; beyond it SQLite gets SQLITE_IOERR_SHMSIZE rather than unbounded memory.
inline constexpr uint64_t kWalIndexBytesMaxDefault = uint64_t{32} << 20;
// Opening or closing a database runs SQLite synchronously (its files, the schema, the close's
// checkpoint): a few hundred microseconds each. The databases of one Vfs start no more of them
// in a tick once the tick has run this long, so a burst of hundreds of opens is spread over
// ticks instead of stopping the loop for one long tick; the first of each tick always runs.
inline constexpr int64_t kOpenTickBudgetNsDefault = 1'000'000;
// The WAL is kept allocated ahead of SQLite by this many bytes of zeros written past its end
// (EpochQueue invariant 9), so the writes of a growing WAL allocate nothing and go behind
// instead of stopping the loop: one write of 256 KiB per 32 frames or so of growth, once per
// WAL (SQLite rewrites it from its start after a checkpoint and keeps the file).
inline constexpr uint32_t kWalReserveBytesDefault = 256 * 1024;
// SQLite's sector size: 4096 is what SQLite's own unix VFS reports and the atomic unit of
// modern devices; with POWERSAFE_OVERWRITE it only affects WAL frame padding.
inline constexpr int kSectorBytes = 4096;

struct VfsOptions {
  uint64_t held_bytes_max = kHeldBytesMaxDefault;
  uint32_t held_ops_max = kHeldOpsMaxDefault;
  uint64_t temp_file_bytes_max = kTempFileBytesMaxDefault;
  uint64_t wal_index_bytes_max = kWalIndexBytesMaxDefault;
  // Take an exclusive flock on each database file. Turned off automatically on a backend
  // without real descriptors (the simulator), where there is no other process.
  bool os_lock = true;
  // See kOpenTickBudgetNsDefault. 0: one open or close per tick.
  int64_t open_tick_budget_ns = kOpenTickBudgetNsDefault;
  // See kWalReserveBytesDefault (at most that). Also bounds one reserve of the main file ahead
  // of a checkpoint that grows it (EpochQueue invariant 10). 0: no reserves; every write that
  // grows a file runs at once, so a full disk always fails the statement (SQLITE_FULL).
  uint32_t wal_reserve_bytes = kWalReserveBytesDefault;
};

// Counters since creation, for tests and benchmarks.
struct VfsStats {
  uint64_t reads = 0;
  uint64_t reads_from_held = 0;  // Answered entirely by a queued write.
  uint64_t reads_from_head = 0;  // Answered by the main file's first bytes, read ahead of an open.
  // Answered by the page a fetch read in for a read that then ran again (FetchedPages).
  uint64_t reads_from_fetch = 0;
  // Reads from the disk through Loop::WaitForOp: those of the writer and of an open that
  // missed the page cache, and any read on a file system that cannot say what is in memory.
  uint64_t reads_waited = 0;
  // Reads whose bytes were not in memory: a reader's stops its statement, the others wait.
  uint64_t cache_misses = 0;
  // Reads of a request's that stopped, without asking the OS, on bytes a fetch in flight was
  // reading (EpochQueue::set_reads_nowait); not in cache_misses.
  uint64_t misses_in_flight = 0;
  uint64_t direct_writes = 0;    // Run at once (nothing queued).
  uint64_t held_writes = 0;      // Queued behind a barrier.
  uint64_t barriers = 0;         // Barriers started (one per xSync).
  uint64_t fsyncs = 0;           // fsync operations submitted (files and directories).
  uint64_t backpressure = 0;     // Writes refused because the buffer was full.
  uint64_t temp_files_full = 0;  // Temporary-file writes refused by temp_file_bytes_max.
  uint64_t poisonings = 0;
  uint64_t wal_reserves = 0;      // Reserves of the WAL submitted (zeros past its end).
  uint64_t main_reserves = 0;     // ... of the main file, ahead of a checkpoint that grows it.
  uint64_t reserve_failures = 0;  // Reserves that failed (the disk is full): nothing poisoned.
  uint64_t opens_deferred = 0;    // Opens and closes moved to a later tick (open_tick_budget_ns).
  // Bytes of WALs found with frames at an open (left by a crash) and read into memory through
  // the loop before SQLite's recovery reads them.
  uint64_t wal_bytes_warmed = 0;
  // Bytes of small main files read into memory through the loop ahead of the integrity check
  // that an open runs on the loop.
  uint64_t main_bytes_warmed = 0;
};

namespace internal {
class VfsCore;       // db/internal/vfs_core.h: not part of the API.
class DurableWaits;  // db/internal/durable_waits.h: not part of the API.
}  // namespace internal

// A caller-owned wait for the commits of a connection of your own to be durable
// (Vfs::WhenDurable), in the style of a loop::Completion: the Vfs never allocates one and never
// copies one. Fill `done` (and `user_data`), arm it with WhenDurable, and keep it alive and
// unmoved until `done` has started: the Vfs and then the loop hold it until then. `done` runs
// once per arming, on the loop's thread, from a loop callback. The wait is idle again when
// `done` starts, so `done` may arm it again or free it.
struct DurableWait {
  // `status` is OK when every commit the wait covers is on disk. Otherwise it is the database's
  // poison (DataLoss, in the poison's own words: an fsync or a write-behind write failed): the
  // outcome of the commits since the last durable epoch is unknown until a new process opens
  // the database (docs/db.md, "Outcome unknown").
  void (*done)(DurableWait& wait, absl::Status status) = nullptr;
  void* user_data = nullptr;

  DurableWait() = default;
  // An armed wait is still the Vfs's or the loop's: destroying it stops the process.
  ~DurableWait() {
    SQLOOP_CHECK(state_ == State::kIdle,
                 "DurableWait destroyed while armed; keep it until its done has started");
  }
  DurableWait(const DurableWait&) = delete;
  DurableWait& operator=(const DurableWait&) = delete;

  // From a WhenDurable that returned OK until `done` starts.
  [[nodiscard]] bool armed() const { return state_ != State::kIdle; }

 private:
  friend class internal::DurableWaits;
  // Its states and their transitions: db/internal/durable_waits.h.
  enum class State : uint8_t { kIdle, kWaiting, kDelivering };

  // ---- The Vfs's bookkeeping --------------------------------------------------------------------
  State state_ = State::kIdle;
  uint64_t epoch_ = 0;          // The epoch it waits for: the queue's epoch() at WhenDurable.
  absl::Status status_;         // What `done` gets, once decided (kDelivering).
  loop::Completion delivery_;   // Runs `done` from the loop (Loop::NextTick).
  ListLink<DurableWait> link_;  // In its database's list of waits (kWaiting).
};

class Vfs {
 public:
  // Registers a VFS named "sqloop-<n>" (unique in the process), not as the default.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Vfs>> Create(loop::Loop& loop,
                                                                   VfsOptions options = {});
  // Unregisters. Every connection on it must be closed and the loop run until their files
  // went idle (the Database's Close does both): a database's files stay after its last
  // connection closed while a barrier is in flight, and, when it was written since the last
  // barrier (synchronous=OFF or NORMAL), until one more barrier has synced those writes.
  // Run(RunMode::kUntilDone) after the last close is enough.
  ~Vfs();
  Vfs(const Vfs&) = delete;
  Vfs& operator=(const Vfs&) = delete;

  // The name to pass to sqlite3_open_v2.
  [[nodiscard]] const char* name() const { return name_.c_str(); }
  // Why the last failed open failed, in words for a user ("... is locked by another process
  // ..."). An open that succeeds leaves it as it was: read it only after a failed open.
  [[nodiscard]] const std::string& last_open_error() const;
  [[nodiscard]] const VfsStats& stats() const;
  [[nodiscard]] const VfsOptions& options() const;
  [[nodiscard]] loop::Loop& loop();
  [[nodiscard]] bool os_lock() const { return options().os_lock; }

  // Arms `wait` to tell when the commits of `db`, a connection of your own on this Vfs, are
  // durable: the wait covers everything this process wrote to one of `db`'s databases (`database`,
  // the main one by default; below), from any connection, before this call (so call it once the
  // COMMIT returned; a commit hook runs too early). If anything was written there since the last
  // barrier, WhenDurable closes an epoch itself, as SQLite's xSync does (one fsync of each file
  // written, and of the directory if a name was made or removed). So whatever the pragmas, the
  // commits that returned are covered:
  //   * WAL mode with synchronous=FULL (a Database's choice) ends every COMMIT with an xSync,
  //     and the wait adds no barrier of its own after one.
  //   * With synchronous=NORMAL in WAL mode, or OFF, a COMMIT issues no xSync: the wait's own
  //     barrier makes those commits durable (durability on demand, the fsyncs paid only by
  //     the commits someone waits for).
  //   * In a rollback-journal mode the commit's last step may follow its last xSync (deleting
  //     the journal in DELETE mode, SQLite's default, or truncating it below synchronous=FULL):
  //     the wait's barrier syncs that step too, so a crash after OK cannot roll it back.
  // `done` runs once the database's durable epoch covers it, with OK (even on a database
  // poisoned since: those epochs are on disk); or, if the database is poisoned before that (or
  // already was), with the poison's DataLoss status, and then never with OK.
  //
  // `database` says which of the connection's databases the wait covers: "main" (the default),
  // or the schema name an ATTACH gave (ATTACH 'other.db' AS aux: "aux"), which must be on this
  // Vfs too. A wait covers one database: a transaction that wrote several needs a wait for each,
  // each with its own barrier.
  //
  // `done` always runs later, from a loop callback: never inside this call and never inside a
  // SQLite call, even when everything is durable already (it then runs at the loop's next
  // tick). So the loop must run for it to come. `db` may be closed meanwhile: the wait still
  // completes, since a database's files stay until the barriers they hold are done.
  //
  // Call it on the loop's thread, outside SQLite calls. It allocates nothing. Errors (then
  // `done` never runs and `wait` is left as it was):
  //   InvalidArgument: `db` is null; it has no database named `database`; that database is
  //     not on this Vfs (another VFS or another Vfs); it is in memory or temporary (":memory:",
  //     "", "temp"), which nothing makes durable; or `wait.done` is not set.
  //   FailedPrecondition: `wait` is armed already (its `done` has not started).
  //   ResourceExhausted: a barrier is needed and the write-behind queue is full
  //     (held_ops_max): run the loop until its writes drain, then try again.
  [[nodiscard]] absl::Status WhenDurable(sqlite3* db, DurableWait& wait,
                                         const char* database = "main");

 private:
  // The project's own code (the Database, the VFS glue, tests) reaches the files through
  // internal::VfsCore::Of(vfs).
  friend class internal::VfsCore;

  Vfs(loop::Loop& loop, VfsOptions options, std::string name);

  std::string name_;
  std::unique_ptr<sqlite3_vfs> vfs_;
  std::unique_ptr<internal::VfsCore> core_;
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_VFS_H_
