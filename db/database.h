// db/database.h
// -----------------------------------------------------------------------------
//
// `Database` serves one SQLite database file from the loop: a writer connection that runs write
// requests as group commits, a few reader connections that run reads against consistent
// snapshots, and durable acknowledgements (docs/db.md has the contract).
//
// Write path (group commit; docs/architecture.md lists the invariants):
//   requests queue while the previous group's fsync is in flight; when it completed, the queue
//   runs as ONE transaction, each request inside its own SAVEPOINT (a failing request is rolled
//   back alone), and the COMMIT's barrier covers them all with one fsync. So the batch size
//   adapts to fsync latency by itself.
// Durable acknowledgement: a write's success is delivered only once its covering epoch is
//   durable (durable_epoch()) and a reader shows it (below).
// Reads run on pinned snapshots (below): a read never waits for an fsync and never sees data
//   that is not durable.
// fsync failure: the database is poisoned. Requests whose epoch was not durable fail with an
//   "outcome unknown" error, later ones with FailedPrecondition. The Vfs then refuses to open
//   the file again in this process (the path is tainted): restarting the process is the way
//   back.
//
// States. Every change goes through SetState(), which refuses a transition this table does not
// list and then checks the new state's invariants (AssertInvariants()).
//
// clang-format off
//
//   kNew --Open--> kOpening --Pump: opened--> kOpenSyncing --Pump: durable-----------> kReady --Close--> kClosing
//                     |                          |       |                              ^   |                |
//                     | Pump: error              |       | Pump: durable,               |   | BecomePoisoned | FinishClose
//                     v                          |       v a large file to check        |   v                v
//                  kFailed <--Pump: failed-------|--- kOpenChecking --Pump: sound-------+  kPoisoned        kClosed
//                     |                          |                                          ^  |
//                     +--Close--> kClosed        +--Pump: poisoned--------------------------+  +--Close--> kClosing
//
//   transition                    function        invariant in the new state
//   kNew -> kOpening              Open            no connection, no files; the pump is armed
//   kOpening -> kOpenSyncing      Pump            a reader open, the file in WAL mode; files pinned
//   kOpening -> kFailed           Pump, OnPreopened  no connection, no files; Open's callback got why
//   kOpenSyncing -> kOpenChecking Pump (StartCheck)  the open's epoch is durable, the WAL empty; the
//                                                 check of the main file runs on a thread
//   kOpenSyncing -> kReady        Pump            the open's epoch is durable; Open's callback got OK
//   kOpenSyncing -> kPoisoned     Pump            files poisoned; Open's callback got the poison
//   kOpenChecking -> kReady       Pump            the check passed; as kOpenSyncing -> kReady
//   kOpenChecking -> kFailed      Pump (FailOpen) as kOpening -> kFailed; why: corrupt, out of memory...
//   kReady -> kPoisoned           BecomePoisoned  files poisoned; no request awaits durability
//   kReady -> kClosing            Close           no write is queued
//   kPoisoned -> kClosing         Close           no write is queued
//   kFailed -> kClosed            Close           no connection, no files
//   kClosing -> kClosed           FinishClose     no connection, no files, nothing queued or awaited
//
// clang-format on
//
// kOpening has three steps. First the files' descriptors are opened and the main file's head
// (and a WAL with frames) read through the loop (internal::FilePreopen, StartPreopen; the files
// are pinned meanwhile in preopened_), so SQLite's xOpen finds them and its first reads wait
// for nothing (the head is dropped on reaching kReady); then WarmForCheck decides whether the
// open checks the file and reads a small one ahead of its check; then, once the tick's open
// budget allows (VfsOptions::open_tick_budget_ns), DoOpen opens the connections.
//
// The integrity check (check_at_open, when NeedsCheck says the file is new to this Vfs or
// changed since it was checked) reads the whole file, and SQLite's quick_check cannot be cut
// into slices (db/internal/integrity_check.h says why). So DoOpen checks a small file
// (check_on_loop_bytes_max) at once, on the loop, as part of the open, once WarmForCheck read
// it into memory through the loop (FilePreopen::Warm) so that the check waits for nothing;
// and a large one in
// kOpenChecking: DoOpen empties the WAL into the main file (a checkpoint), and once the open's
// epoch is durable a thread checks the main file with a connection of its own while the loop
// serves everything else. Nothing is admitted before kReady, so the file does not change under
// the thread. On the simulator every file is checked on the loop.
//
// The writer opens on demand. When opening it would change nothing on disk (the integrity check
// is skipped, the main file is in WAL mode already and no rollback journal is there:
// MayDeferWriter), DoOpen opens only the first reader, and the writer opens when a write is
// about to run (WriterReady, under the same open budget; if it cannot open, the writes waiting
// fail with why and reads go on). A tenant reopened to be read pays one connection and one parse
// of the schema instead of two. Until the writer opens, nothing is written, so the first reader
// classifies kAuto requests (KindOf) against the same schema the writer would see.
//
// A request's lifecycle (Request::State). The Database owns a request from Submit until
// on_done, and every change goes through SetRequestState, which checks it against this table.
//
// clang-format off
//
//   kIdle/kDone --Submit--> kQueued --RunInGroup/StartRead-----> kRunning --AwaitDurable--> kAwaitingDurable
//                           ^ ^  |                                  |  |                            |
//                           | |  +------- Finish, FailQueue ------+ |  +-- Finish --+               | AckDurable,
//                           | |    (cancelled, deadline, closing,  | |   (failed,   |               | BecomePoisoned
//                           | |     poisoned: it never ran)        v v    durable)  v               v
//                           | +-- Requeue, RunInGroup, StepRead    kDone <-----------+---------------+
//                           |     (group retried, SQLITE_BUSY)       ^
//                           |                                        | FetchDone (failed, cancelled,
//                           +-- FetchDone (in memory) -- kFetching --+  closing, poisoned)
//                                                           ^
//                         StepRead, StartRead (a miss) -----+  (from kRunning, its rows voided; or
//                                                               from kQueued, in the schema's parse)
//
//   transition                      function                        invariant in the new state
//   kIdle, kDone -> kQueued         Submit                          in its kind's queue (or held_); on_done set
//   kQueued -> kRunning             RunInGroup, StartRead           out of every queue; its statement steps
//   kRunning -> kQueued             Requeue, RunInGroup, StepRead   at its queue's front; its rows voided
//   kRunning -> kFetching           StepRead via RestartRead        a read on no reader; its rows voided; in
//   kQueued -> kFetching            StartRead via RestartRead       the reads of the one fetch in flight that
//                                                                   reads what it missed (its own, or one it
//                                                                   joined: JoinFetch)
//   kFetching -> kQueued            FetchDone via ResumeFetched     at the read queue's front
//   kRunning -> kAwaitingDurable    AwaitDurable                    a write that succeeded; waits in awaiting_ for
//                                                                   its epoch to be durable and visible
//   kQueued, kRunning, kFetching    Finish, FailQueue, FetchDone    its status is final; on_done ran, or waits
//     -> kDone                                                      for its client's earlier requests
//   kAwaitingDurable -> kDone       AckDurable, BecomePoisoned      as above
//
// clang-format on
//
// The group commit (WriterState): where the writer is between groups. A group runs inside one
// pump, from BEGIN to COMMIT, so kGrouping never outlives the call that entered it; the states
// that wait are kSyncing (for the group's fsync) and kBlocked (for the write-behind buffer).
// Every change goes through SetWriterState, which checks it against this table and then the
// new state's invariants.
//
// clang-format off
//
//   kIdle --RunGroupOnce: BEGIN--> kGrouping --Commit: an epoch to sync--> kSyncing --SettleWriter: durable--> kIdle
//     |                            ^  |   |   |
//     |                            |  |   |   +--OnOverflow: buffer full, rolled back--> kBlocked --SettleWriter: drained--> kIdle
//     |                 ResumeGroup|  |   +--RestartGroup: a miss--+
//     +--RunGroupOnce: BEGIN missed|--|----------------------------+--> kFetching --FetchDone (nothing to resume)--> kIdle
//     +--OpenWriterFromMemory: the open missed, Checkpoint missed-------^
//                                  +--|----------------------------------- kFetching (a group to resume, fetch done)
//                                     +--Commit (nothing to sync, failed), RunInGroup, ContinueGroup (lost)--> kIdle
//
//   transition              function                          invariant in the new state
//   kIdle -> kGrouping      RunGroupOnce                      a write transaction is open; the group is empty
//   kGrouping -> kSyncing   Commit                            committed; the group's epoch is not durable yet
//   kGrouping -> kBlocked   OnOverflow                        rolled back; the write-behind buffer refused a write
//   kGrouping -> kFetching  RunInGroup via RestartGroup       one fetch of what was missed in flight; the group
//   kIdle -> kFetching      RunGroupOnce, Checkpoint,         waits with its transaction open and group_resume_
//                           OpenWriterFromMemory via          set, or with none (its begin, the writer's open or
//                           FetchMiss                         a checkpoint missed, or the group was rolled back),
//                                                             its requests queued again in order
//   kFetching -> kGrouping  ResumeGroup (Serve, FinishClose)  the fetch completed; group_resume_ runs first
//   kGrouping -> kIdle      Commit, RunInGroup, ContinueGroup no transaction of ours is open; the group is empty
//   kSyncing -> kIdle       SettleWriter (Serve, FinishClose) the group's epoch is durable
//   kBlocked -> kIdle       SettleWriter (Serve, FinishClose) the write-behind queue drained
//   kFetching -> kIdle      FetchDone                         no group waits; what was missed is in memory, or the
//                                                             fetch failed (group_fetch_error_)
//
// clang-format on
//
// Outside kGrouping and kFetching the group (group_) is empty. Only kIdle starts a group, so
// groups commit one after another and the next starts once the previous one's fsync completed.
// The writer reads from memory only, as a reader does (below): BEGIN's read of page 1, and each
// statement's prepare and steps. A miss stops the statement with SQLITE_LOCKED, which SQLite
// treats as the statement's error alone: RestartGroup undoes the request to its savepoint and
// the group waits in kFetching, its transaction and its earlier writes kept, for one fetch of
// the missed window; then ResumeGroup runs the request again and the group goes on, so a group
// with m cold pages makes m fetches and runs no write twice but the ones that missed. Where
// SQLite rolled the transaction back anyway (a statement whose conflict clause is ROLLBACK does
// on any error) the group's requests are queued again in their order and run afresh after the
// fetch. The request that missed counts the restart: at kRestartsMax, or when it misses again
// after the writer's last fetch failed, it fails alone with Unavailable (nothing of it
// written) and the group goes on. BEGIN misses with SQLITE_INTERRUPT (nothing to keep); its
// misses count in begin_restarts_, and past kRestartsMax in a row, or after a failed fetch,
// BEGIN reads by waiting. The writer's open (WriterReady) reads the same way: its setup
// parses the schema from memory only, and a miss closes it again to wait in kFetching, counted
// with BEGIN's. A close resumes a waiting group (its requests were admitted) and waits for its
// commit; then it opens a writer closed idle the same way (OpenWriterFromMemory), waits for the
// writer to be kIdle (the last group's fsync, a full buffer's drain) and checkpoints
// (Checkpoint, from memory only), so that SQLite's checkpoint inside the writer's close, which
// reads by waiting, finds nothing left to copy. Its data: group_epoch_ (the last
// group's commit epoch), group_limit_ (requests per group after an overflow of the group's own
// making, 0 otherwise), begin_failures_ (ticks in a row BEGIN failed on).
//
// Reader snapshots. A reader connection holds an open read transaction (a "pin"): in WAL mode
// it sees the database as of the moment that transaction began, whatever commits later. Pin()
// begins one right after a group's COMMIT (or when no group is in flight), so a reader's
// `snapshot` is the epoch of the group it shows, and it is durable once that epoch is. Reads go
// only to durable snapshots; a group's fsync never holds one up.
//
// clang-format off
//
//   kUnpinned --Pin, no group in flight--------------------------------> kServing
//   kUnpinned --Pin, a group in flight---------------------------------> kPending
//   kServing  --Pin, a newer group (another reader keeps serving)------> kPending
//   kPending  --the fsync of its group completes (nothing runs)--------> kServing
//   kServing  --StartRead--> kReading --StepRead: the read is done-----> kServing
//   kServing, kPending --Unpin (Checkpoint, a failed read, a trim), Pin fails or misses--> kUnpinned
//
//   transition              function                      invariant in the new state
//   kUnpinned -> pinned     RefreshSnapshots via Pin       read transaction open; snapshot = group_epoch_
//   kServing -> kPending    RefreshSnapshots via Pin       another reader still serves the newest durable
//                                                          snapshot (the one a syncing group must not take)
//   kServing -> kReading    StartRead                      snapshot <= durable epoch, >= the read's need
//   kReading -> kServing    StepRead                       the read is done; the snapshot is unchanged
//   pinned -> kUnpinned     Unpin (Checkpoint, StepRead,       no read transaction (ReleaseMemory then
//                           ReleaseMemory)                 closes the connection)
//
// clang-format on
//
// Invariants (AssertInvariants and Finish check 1 and 2):
//   1. A read runs only on a snapshot that is durable, and at least as new as every write
//      acknowledged before it was submitted (Request::snapshot_min_ = acked_epoch_ then).
//   2. While a group's fsync is in flight, the newest durable snapshot stays pinned, so reads
//      keep being answered. (While a pin's fetch is in flight no reader may serve, but no
//      group starts either: the pin lands on the durable state.)
//   3. A write is acknowledged only once its epoch is durable and some reader shows it
//      (visible_epoch_), so a read submitted after the acknowledgement finds a snapshot that
//      holds the write without waiting. Two exceptions, where no new read is waiting to be
//      served: a closing or poisoned database, and a reader that cannot be pinned (an I/O
//      error, pin_error_), when reads fail with that error rather than run on an older snapshot.
//   4. A read of a Client waits (in held_) while an earlier write of the same client is not
//      delivered, so a client reads its own writes.
// Readers open on demand: the first at open, another (AddReaderIfAllBusy, up to
// DatabaseOptions::readers) when a read finds every open reader running a read; it starts
// kUnpinned and RefreshSnapshots pins it. ReleaseMemory closes the idle readers beyond the
// first, so an idle database keeps two connections. The first reader is never closed while the
// database is open: invariant 3 needs a reader to show each acknowledged write.
//
// Reads never wait for the disk. While a reader steps a statement, the VFS answers its reads
// only from memory (queued writes, the page cache: EpochQueue::set_reads_nowait). Bytes that
// are not there stop the statement (SQLite sees SQLITE_INTERRUPT, which ends a read-only
// statement without ending its read transaction, so the reader stays pinned), and RestartRead
// voids the rows it delivered, frees the reader for other reads, and fetches a window around
// the miss with an ordinary asynchronous read (kFetchWindowBytes, doubling after a few
// restarts of the same read, so a cold scan needs few; a window of one page is read into a page
// of the Vfs's FetchedPages, from which the read that runs again copies it instead of asking the
// page cache a second time: internal/fetched_pages.h), or waits for a fetch in flight whose
// window holds the miss (JoinFetch: reads that start together on a cold database miss the
// same upper B-tree pages). Such a miss is known before the OS is asked: while a request's read
// steps, the VFS first asks the fetch windows in flight (InFetchWindow), so a read joining
// a fetch costs no system call. Once the window is in the page cache
// (FetchDone) the read runs again from the start, on whichever reader serves a snapshot it may
// see (invariant 1): a statement touching k cold regions restarts at most k times, and one
// that restarts kRestartsMax times fails with Unavailable rather than loop. A failed fetch
// fails the read alone with Unavailable; the database stays usable. A read's prepare runs the
// same way: when it parses the schema (the first read after an open, or after a schema change)
// the schema's pages are read from memory only, and a miss restarts the read before it ran
// (kQueued -> kFetching). The writer's groups restart the same way (above). A kAuto request's
// classification (KindOf, in Submit, which cannot restart) prepares from memory only, and one
// that would wait for the schema runs as a write, which restarts. Pin's read of page 1 and the
// open of a reader added later (AddReaderIfAllBusy) read from memory only too: a miss leaves
// the reader unpinned or unopened and starts one fetch (pin_fetching_, counted in
// pin_restarts_), during which no group and no checkpoint starts (Serve), so the pin then lands
// on a durable snapshot. What still waits: the statements a connection runs when the database
// opens (a writer opened later, for a write or a close, reads from memory only), and any read
// above past kRestartsMax misses in a row or after its fetch failed.
//
// Checkpoints: a pinned snapshot keeps SQLite from copying WAL frames it may read and from
// restarting the WAL, so Checkpoint() unpins the idle readers, checkpoints, and pins them again
// at the same (durable) state; only a read that is running keeps its snapshot meanwhile.
//
// Sleep (db/database_idle.cc): a quiet kReady database (Quiet(): nothing queued, running or in
// flight anywhere, every epoch durable) may give its descriptors back and keep its connections,
// through internal::FileSleep, whose header has the sub-machine and its invariants. It stays
// kReady; while asleep (asleep()) the pump runs no SQLite: it starts the wake when a request is
// queued (Wake), and OnWoken either lets the pump serve or fails the queued requests with why
// (the files changed, or could not be opened again). The descriptors' closes go through the
// loop; OnSleepClosed runs when they are done and re-arms the pump, which waits for them before
// a wake or a close starts. kClosing while asleep closes the connections without SQLite's
// checkpoint and touches no file (CloseAsleep).
//
// Example:
//
//   sqloop::db::Database db(*loop, *vfs, "/data/tenant-42.db", {});
//   db.Open([](void*, absl::Status s) { ... }, nullptr);
//   ... loop->Run(...) ...
//   absl::Status admitted = db.Submit(request);   // on_done runs later, on the loop
//   db.Close([](void*, absl::Status s) { ... }, nullptr);
#ifndef SQLOOP_DB_DATABASE_H_
#define SQLOOP_DB_DATABASE_H_

#include <cstdint>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/request.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sqloop::db {
namespace internal {
class Connection;
class DatabaseFiles;     // db/internal/database_files.h: not part of the API.
class FilePreopen;       // db/internal/file_preopen.h.
class FileSleep;         // db/internal/file_sleep.h.
class IntegrityCheck;    // db/internal/integrity_check.h.
struct FileFingerprint;  // db/internal/vfs_context.h.
struct FetchesInFlight;  // db/internal/epoch_queue.h.
struct ReadMiss;         // db/internal/epoch_queue.h.
}  // namespace internal

// Reader connections at most: two lets a long scan and point reads proceed together; each costs
// a page cache and a copy of the schema. The first opens with the database, the others when a
// read finds every open reader busy, and ReleaseMemory closes those again.
inline constexpr uint32_t kReadersDefault = 2;
// Rows a read steps per tick before yielding, so one big query cannot starve the loop. 64 rows
// of a typical table is a few microseconds.
inline constexpr uint32_t kRowsPerTickDefault = 64;
// Reads a database starts in one tick; each runs its first slice at once, so a point read is
// answered in the tick it starts. 256 point reads are a few hundred microseconds.
inline constexpr uint32_t kReadsStartedPerTickMax = 256;
// ... and no more once the tick has run this long (the loop's clock, read every
// kReadsPerClockRead starts): a burst of reads that all missed the page cache and run again
// together cannot hold the loop for milliseconds. 250 us is a few dozen point reads.
inline constexpr int64_t kReadsTickBudgetNs = 250'000;
inline constexpr uint32_t kReadsPerClockRead = 8;
// Requests in one group commit: bounds the time one transaction holds the writer and the work
// redone if the group must be retried.
inline constexpr uint32_t kGroupRequestsMaxDefault = 256;
// Prepared statements cached per connection; the least useful are dropped beyond this.
inline constexpr uint32_t kStatementCacheMaxDefault = 64;
// Statements in one batch (Request::batch). A batch runs in one slice of the writer with the
// budgets of one request, so its length is bounded like a group's.
inline constexpr uint32_t kBatchStatementsMaxDefault = 256;
// Largest text or blob (parameter, or value SQLite builds): 1 MiB keeps one tenant's request
// from pinning a large share of memory; also set as SQLITE_LIMIT_LENGTH.
inline constexpr int kValueBytesMaxDefault = 1 << 20;
// Longest SQL text (SQLITE_LIMIT_SQL_LENGTH): 64 KiB is far above hand-written statements.
inline constexpr int kSqlBytesMaxDefault = 64 * 1024;
// Requests waiting (queued, not yet running) per database before Submit refuses more.
inline constexpr uint32_t kQueuedRequestsMaxDefault = 65536;
// Checkpoint after this many WAL frames: SQLite's own default (wal_autocheckpoint = 1000).
inline constexpr uint32_t kCheckpointFramesDefault = 1000;
// Virtual machine instructions between progress-handler checks (deadline, cancellation,
// budgets): tens of microseconds of work, so a deadline or budget is noticed promptly at
// negligible cost. Budgets are counted in these units.
inline constexpr int kProgressOpsDefault = 1000;
// Restarts of one request (a read, or the write whose statement stopped its group) after it
// stopped on bytes that were not in memory, before it fails with Unavailable. A point read or
// write stops at most once per level of its B-tree that is cold (3 or 4 on a large table); a
// cold scan once per fetch window, and windows grow to kFetchWindowBytesMax, so 32 restarts
// read in about 290 MiB. Reaching it means the page cache does not keep what the request needs
// (the machine is short of memory).
inline constexpr uint8_t kRestartsMax = 32;
// The first window fetched around a miss: one page of 4 KiB, the missed page alone. In
// sqlite_read_cold a 32 KiB window made cold point reads at one in flight clearly slower than
// plain SQLite's and the page alone kept up with it: random point reads gain nothing from a
// page's neighbours. The window doubles from a read's fifth restart on (a scan), up to
// kFetchWindowBytesMax.
inline constexpr uint64_t kFetchWindowBytes = uint64_t{4} * 1024;
inline constexpr uint64_t kFetchWindowBytesMax = uint64_t{16} << 20;
// SQLITE_BUSY retries of one request before it fails with Unavailable.
inline constexpr uint8_t kBusyRetriesMax = 100;
// Consecutive ticks on which the writer could not begin a transaction (out of memory, an I/O
// error) before the queued writes fail with the cause instead of being retried for ever.
inline constexpr uint8_t kBeginAttemptsMax = 3;
// SQLite work (virtual machine steps) one request may do in one slice: one run of a write
// statement, or a read's stepping between two yields to the loop. The loop runs nothing else
// meanwhile, so this is the longest one statement can delay every other tenant. Scans, index
// builds and recursive queries run at 40-100 ns per step on a current x86 core, so 1,000,000
// steps is a few tens of milliseconds: far above any point query or small write, and it stops
// a runaway statement (a recursive CTE without end, a full scan inside one aggregate) promptly.
inline constexpr uint64_t kSliceVmStepsMaxDefault = 1'000'000;
// What a page SQLite reads from the VFS (a page not in its cache) counts as, in steps, against
// both budgets: one step of SQLite's may read the whole file (count(*), integrity_check), and a
// page read costs about what a hundred steps do.
inline constexpr uint64_t kPageReadVmSteps = 100;
// SQLite work one request may do in all, over every slice: bounds a read that streams rows for
// ever (each slice yields, so it would not stall the loop, but it would hold a reader).
inline constexpr uint64_t kRequestVmStepsMaxDefault = 100'000'000;

// The largest main file the integrity check at open reads on the loop: quick_check reads
// every page, and 64 pages cost about what the open itself does, less than starting a thread.
inline constexpr uint64_t kCheckOnLoopBytesMaxDefault = uint64_t{256} << 10;

struct DatabaseOptions {
  // Create the database if its file does not exist. Without it, Open fails with NotFound when
  // the file is missing or empty (an empty file is what a creation that failed before its
  // first transaction leaves), and creates nothing; the check costs no operation of its own.
  bool create_if_missing = true;
  uint32_t readers = kReadersDefault;
  uint32_t rows_per_tick = kRowsPerTickDefault;
  // Reads stop starting in a tick once it has run this long (kReadsTickBudgetNs says why).
  int64_t read_tick_budget_ns = kReadsTickBudgetNs;
  uint32_t group_requests_max = kGroupRequestsMaxDefault;
  uint32_t statement_cache_max = kStatementCacheMaxDefault;
  uint32_t batch_statements_max = kBatchStatementsMaxDefault;
  int value_bytes_max = kValueBytesMaxDefault;
  int sql_bytes_max = kSqlBytesMaxDefault;
  uint32_t queued_requests_max = kQueuedRequestsMaxDefault;
  uint32_t checkpoint_frames = kCheckpointFramesDefault;
  // Budgets of SQLite work (virtual machine steps; kSliceVmStepsMaxDefault says why). A
  // statement over either fails alone with ResourceExhausted (IsBudgetExceeded(status) is true)
  // and leaves nothing behind; the rest of its group commits. Request::vm_steps_max lowers or
  // raises the total for one request; nothing raises the slice, which protects other tenants.
  uint64_t slice_vm_steps_max = kSliceVmStepsMaxDefault;
  uint64_t request_vm_steps_max = kRequestVmStepsMaxDefault;
  // Connection settings that must hold on every connection of the database (the writer and
  // every reader), so they are options rather than pragmas a request could set on one
  // connection: SQLite's foreign key enforcement, LIKE's case sensitivity for ASCII, and
  // recursive triggers. SQLite's defaults (all off).
  bool foreign_keys = false;
  bool case_sensitive_like = false;
  bool recursive_triggers = false;
  // Run PRAGMA quick_check at open, so a corrupt file is refused before anything is written to
  // it. Costs a read of the whole file, so it runs at the first open of the file in this Vfs
  // and again only if the file changed since this Vfs closed it after a check (the size, the
  // inode, the modification and change times, and an empty WAL); a host that checks elsewhere
  // may turn it off.
  bool check_at_open = true;
  // A main file larger than this is checked on a thread of its own, and the loop serves the
  // other tenants meanwhile (kOpenChecking); a smaller one (the check costs less than the
  // open) on the loop. The simulator checks every file on the loop.
  uint64_t check_on_loop_bytes_max = kCheckOnLoopBytesMaxDefault;
  // The tenant every SQLite byte of this database is charged to (alloc/sqlite_memory.h), marked
  // around all of the database's SQLite work. Its limit turns into SQLITE_NOMEM for this
  // database only: the request fails with ResourceExhausted and the database stays usable.
  alloc::TenantId tenant = alloc::kSharedTenant;
  // TEST HOOK ONLY: the writer's BEGIN fails as if SQLite were out of memory, so tests reach
  // the bounded retry of a writer that cannot begin a transaction.
  bool fail_begin_for_testing = false;
  // TEST HOOK ONLY: a check on a thread waits for this latch before it starts, so a test
  // can show the loop serving while it is in flight.
  std::latch* check_gate_for_testing = nullptr;
  // TEST HOOK ONLY: a check due on a thread cannot have one (as when the process is out of
  // threads or descriptors), so tests reach the check on the loop that replaces it.
  bool check_thread_fails_for_testing = false;
  // NEGATIVE CONTROL ONLY: acknowledge before the covering fsync. Tests prove they catch it.
  bool ack_before_fsync_for_testing = false;
  // NEGATIVE CONTROL ONLY (liveness): no group commit starts after this many (0: no limit).
  uint32_t stop_group_commits_after_for_testing = 0;
  // NEGATIVE CONTROL ONLY: reads run on the newest snapshot, durable or not, and are answered
  // at once: they can see a group whose fsync has not completed. Tests prove they catch it.
  bool read_undurable_for_testing = false;
};

struct DatabaseStats {
  uint64_t groups = 0;              // Group commits run.
  uint64_t group_requests = 0;      // Write requests committed in them.
  uint64_t group_retries = 0;       // Groups rolled back and re-run (backpressure, interrupt).
  uint64_t reads = 0;               // Reads finished.
  uint64_t read_steps_yielded = 0;  // Times a read yielded after rows_per_tick rows.
  uint64_t acks_waited = 0;         // Acknowledgements that had to wait for an fsync.
  uint64_t checkpoints = 0;
  uint64_t checkpoints_complete = 0;  // ... that copied the whole WAL.
  uint64_t budget_exceeded = 0;       // Requests stopped by a budget of SQLite work.
  uint64_t groups_cut_short = 0;      // Groups committed early because their slice was used.
  uint64_t groups_put_off = 0;        // Groups moved to the next tick: this one ran its budget.
  uint64_t begin_failures = 0;        // Times the writer could not begin a transaction.
  uint64_t snapshot_pins = 0;         // Read transactions begun on readers (Pin).
  uint64_t reads_held = 0;            // Client reads that waited for their client's earlier writes.
  uint64_t reads_on_syncing = 0;      // Reads started while a group's fsync was in flight.
  uint64_t read_restarts = 0;         // Reads stopped on bytes not in memory, fetched, run again.
  uint64_t group_restarts = 0;        // Groups, BEGINs and late writer opens the same way.
  uint64_t checkpoint_restarts = 0;   // Checkpoints stopped on a WAL frame not in memory.
  uint64_t pin_restarts = 0;          // Pins and reader opens stopped on data not in memory (Pin).
  uint64_t fetches = 0;               // Fetches started, for reads and groups.
  uint64_t fetches_joined = 0;        // Reads that waited for a fetch in flight instead.
  uint64_t fetches_failed = 0;        // Fetches the device failed (what waited for them failed
                                      // or, at its next miss, reads by waiting).
  uint64_t fetched_bytes = 0;         // Bytes those fetches read in.
  uint64_t read_ticks_cut_short = 0;  // Ticks that left reads to the next (read_tick_budget_ns).
  uint64_t readers_opened = 0;        // Reader connections opened after the first (on demand).
  uint64_t integrity_checks = 0;      // quick_check runs at open (check_at_open).
  uint64_t integrity_checks_off_loop = 0;  // ... of them on a thread (a large file).
  // Opens that skipped it: the files were unchanged since this Vfs closed them after a check.
  uint64_t integrity_checks_skipped = 0;
  // Fingerprints of the files (at an open's check, at a close) whose main-file identity came
  // from the preopen's fstat, nothing having changed the files since: no fstat of their own.
  uint64_t identities_reused = 0;
  uint64_t writer_opens_deferred = 0;  // Opens that left the writer closed (MayDeferWriter).
  uint64_t writers_opened_late = 0;    // ... and opened it later, for a write.
  uint64_t writers_closed_idle = 0;    // Writers closed while idle (CloseWriterIfIdle).
  // Closes that found the writer in kSyncing or kBlocked when about to checkpoint: the close's
  // checkpoint waited for the group's fsync or the buffer's drain.
  uint64_t closes_writer_unsettled = 0;
  // kAuto requests run as writes: classifying them would have waited for the disk (KindOf),
  // or the database slept.
  uint64_t kinds_unknown = 0;
  uint64_t sleeps = 0;                 // Sleep() calls that closed the descriptors.
  uint64_t wakes = 0;                  // Wakes that took them again.
  uint64_t wakes_failed = 0;           // ... that failed (an open failed, or the files changed).
  uint64_t wal_opens_deferred = 0;     // Wakes that left an empty WAL closed (no write waited).
  uint64_t wal_opened_late = 0;        // ... whose WAL opened later, for a write.
  uint64_t wal_late_opens_failed = 0;  // ... or failed to (the writes waiting failed).
};

class Database {
 public:
  enum class State : uint8_t {
    kNew,
    kOpening,
    kOpenSyncing,
    kOpenChecking,
    kReady,
    kPoisoned,
    kClosing,
    kClosed,
    kFailed,
  };
  using Callback = void (*)(void* arg, absl::Status status);

  // `path` must be absolute on the simulator. Nothing happens until Open().
  Database(loop::Loop& loop, Vfs& vfs, std::string path, DatabaseOptions options = {});
  // Checks that the database is kNew, kClosed or kFailed: destroying it with requests in flight
  // would leave callers waiting forever. It may be destroyed inside the callback of an Open
  // that left it kFailed or of Close, the last it makes (an Open that failed with the database
  // poisoned left it holding its files: Close it).
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Opens on the loop; `done` runs on the loop with OK, or with an error that says what is wrong
  // (locked by another process, not a database, corrupt, missing without create_if_missing...).
  void Open(Callback done, void* arg);
  // Queues `request` (idle, with on_done set). Returns an error without queueing if the
  // database is not ready, poisoned, or has too many requests waiting; then on_done never runs.
  [[nodiscard]] absl::Status Submit(Request& request);
  // Cancels a request that has not committed: a queued one completes with Cancelled; a running
  // read stops at its next step. Returns false if it is too late (committed, done, or being
  // failed: one that a failure or Close is failing completes with that failure).
  bool Cancel(Request& request);
  // Fails queued requests with Cancelled (a request submitted from their callbacks is
  // refused: the close has begun), waits for running ones and for the files to be durable and
  // idle, closes the connections, then calls `done` (with the poison status if the database
  // was poisoned).
  void Close(Callback done, void* arg);
  // Gives back the cached pages no statement and no pinned snapshot holds, on every connection
  // (sqlite3_db_release_memory), and closes the idle readers beyond the first, charged to the
  // database's tenant. Its next reads fetch those pages again. For a host trimming a database
  // it expects to stay idle (the registry's idle_trim_after); a no-op unless the database is
  // open. What it freed shows in the tenant's accounting (alloc::GetTenantCounters). From a
  // request's callback the readers close once that work returns (the database may be serving
  // reads on them), in the same tick.
  void ReleaseMemory();
  // Closes the writer connection (its schema, statements and cache) when nothing of the
  // writer's is in flight: no write queued or running, no group waiting for a fetch, no
  // transaction open. It opens again at the next write, as after a reopen (WriterReady), which
  // parses the schema anew, and at Close, to close last: only the writer's close checkpoints
  // the WAL and truncates it. For a host trimming a database it expects to stay idle: an idle
  // open tenant, or a sleeping one, then holds one connection (asleep, the close touches no
  // file, and it is refused unless every reader shows the last commit already). Returns
  // whether it closed it: never from a request's callback, inside the database's own work.
  bool CloseWriterIfIdle();
  // Closes the database's descriptors (the flock on its file goes with them) and keeps its
  // connections, so an idle database holds no descriptor and wakes without a reopen: the next
  // request opens the files again through the loop (two opens, no parse of the schema; one if
  // the WAL slept empty and no write waits: it opens at the first write) before it runs. Only
  // when nothing is queued, running, awaiting durability or in flight on the files, and no
  // other Database of the process has the file open (FailedPrecondition otherwise; while it
  // sleeps, no other one opens it). If the files changed while it slept (another process wrote
  // to them), the wake fails the waiting requests with FailedPrecondition, nothing runs on the
  // stale view, and only Close is left to do (a change to a WAL that slept empty, and only to
  // it, is found when a write opens it, and fails the writes so). Not from
  // a request's callback (FailedPrecondition: the database is in the middle of its work). Close of
  // a sleeping database touches no file: the WAL keeps its frames, all durable, and the next
  // open recovers them. The closes go through the loop, so the descriptors are gone only once
  // it ran them: `closed(arg, OK)`, if given, runs from a loop callback then (only after an OK
  // return).
  [[nodiscard]] absl::Status Sleep(Callback closed = nullptr, void* arg = nullptr);
  // Whether the database sleeps (its files have no descriptor), or is waking.
  [[nodiscard]] bool asleep() const;
  // Reader connections open now: 1 up to DatabaseOptions::readers.
  [[nodiscard]] size_t readers_open() const { return readers_.size(); }
  // Whether the writer connection is open (it opens at the first write after a reopen).
  [[nodiscard]] bool writer_open() const;

  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] const DatabaseStats& stats() const { return stats_; }
  // The epochs of this database's files (docs/db.md, "Epoch barriers"): the last one a barrier
  // closed, and the last one on disk (every epoch up to it is durable). Both 0 while the database
  // holds no files (holds_files() is false).
  [[nodiscard]] uint64_t epoch() const;
  [[nodiscard]] uint64_t durable_epoch() const;
  // Whether the database holds its files: from the end of a successful Open() until Close()
  // (which first waits for every epoch to be durable) calls back.
  [[nodiscard]] bool holds_files() const { return files_ != nullptr; }

 private:
  using Connection = internal::Connection;
  // The group commit's states (the table above).
  enum class WriterState : uint8_t { kIdle, kGrouping, kSyncing, kBlocked, kFetching };
  // The queues of requests (waiting to run, waiting for durability): FIFOs through a
  // request's queue link.
  using Queue = IntrusiveList<Request, &Request::queue_link_>;

  static loop::Action OnPump(loop::Loop& loop, loop::Completion& c);
  static void OnFilesChanged(void* arg);
  static int OnWalCommit(void* arg, sqlite3* db, const char* name, int frames);

  void ArmPump();
  void Pump();
  [[nodiscard]] absl::Status CheckOptions() const;
  absl::Status DoOpen();
  absl::Status OpenConnection(Connection& c);
  absl::Status ConfigureWriter();
  void FailBegin(int rc);
  void FinishOpen(absl::Status status);
  void Serve();
  void SettleWriter();
  void AckDurable();
  void BecomePoisoned();
  void RunGroup();
  bool RunGroupOnce(std::vector<Request*>& group);
  // What a group does after one of its requests ran (RunInGroup): run the next request, commit
  // what it has, or stop: kHandled (RunGroupOnce returns true) or kLost (returns false).
  // kSuspended: the group waits, its transaction open, for a fetch (group_resume_).
  enum class GroupStep : uint8_t { kNext, kCommitNow, kHandled, kLost, kSuspended };
  GroupStep RunInGroup(std::vector<Request*>& group, Request& r, bool started_idle);
  bool ContinueGroup(std::vector<Request*>& group, Request* resumed);
  void ResumeGroup();
  bool Commit(std::vector<Request*>& group, bool started_idle);
  void OnOverflow(std::vector<Request*>& group, Request* current, bool started_idle);
  absl::Status ExecuteWrite(Request& request);
  void Requeue(std::vector<Request*>& group, Request* current);
  // Hands a row to on_row and remembers that it did; DiscardRows tells the caller they are
  // void before the request runs again (Request::on_rows_discarded).
  static void DeliverRow(Request& r, sqlite3_stmt* stmt);
  static void DiscardRows(Request& r);
  bool Checkpoint();
  // Reader snapshots (the state machine above).
  bool Pin(Connection& reader);
  static void Unpin(Connection& reader);
  void RefreshSnapshots();
  [[nodiscard]] Connection* ReaderFor(const Request& read);
  // Opens one more reader if every open reader runs a read and the options allow another.
  void AddReaderIfAllBusy();
  [[nodiscard]] absl::Status OpenReader();
  void StartPreopen();
  [[nodiscard]] bool WarmForCheck();
  static void OnPreopened(void* arg);
  void FailOpen(absl::Status status);
  [[nodiscard]] bool NeedsCheck(internal::DatabaseFiles& files);
  [[nodiscard]] bool MayCheckOffLoop(internal::DatabaseFiles& files);
  void StartCheck();
  static void OnChecked(void* arg);
  void BecomeReady();
  [[nodiscard]] bool MayDeferWriter(internal::DatabaseFiles& files) const;
  [[nodiscard]] absl::Status OpenWriter();
  [[nodiscard]] bool WriterReady();
  [[nodiscard]] absl::Status OpenWriterFromMemory();
  [[nodiscard]] internal::FileFingerprint Fingerprint(internal::DatabaseFiles& files);
  [[nodiscard]] bool AnyReaderBusy() const;
  void ReleaseHeld(Client& client);
  // Starts and steps queued reads; returns true if more could start on the next tick.
  bool ServeReads();
  void StartRead(Connection& reader, Request& r);
  void StepRead(Connection& reader);
  void FinishClose();
  void CloseConnections();
  void CloseIdleReaders();  // ReleaseMemory's closes (db/database_idle.cc).
  // Sleep (db/database_idle.cc).
  [[nodiscard]] bool Quiet() const;
  void Wake();
  static void OnWoken(void* arg);
  [[nodiscard]] bool wal_deferred() const;
  [[nodiscard]] bool WalWritable();
  static void OnWalOpened(void* arg);
  static void OnSleepClosed(void* arg);
  [[nodiscard]] bool CloseAsleep();
  // Misses (the section above): a fetch of one window for one read, or for the writer's group
  // (`request` null), reused through a free list.
  // Who started a fetch: a read (waiting in Fetch::reads), the writer (group_fetching_), or
  // a reader's Pin (pin_fetching_). Reads that missed in its window join it, whoever started it.
  enum class FetchFor : uint8_t { kRead, kWriter, kPin };
  struct Fetch {
    loop::Completion c;
    Database* db = nullptr;
    Queue reads;  // The reads waiting for it (kFetching), out of every other queue.
    FetchFor owner = FetchFor::kRead;
    // Its window in fetch_windows_ while c.op reads the window's next part (in flight unless c
    // is idle, and then in free_fetches_).
    uint32_t slot = 0;
  };
  // What remains to read of a fetch in flight, kept apart from the Fetch so that JoinFetch's
  // scan of 64 of them reads a few cache lines instead of 64 completions.
  struct FetchWindow {
    int fd = -1;
    uint64_t begin = 0;
    uint64_t end = 0;
    Fetch* fetch = nullptr;
  };
  void RestartRead(Connection& reader, Request& r, const internal::ReadMiss& miss);
  GroupStep RestartGroup(std::vector<Request*>& group, Request& r, const internal::ReadMiss& miss);
  void StartFetch(FetchFor owner, Request* r, uint8_t restarts, const internal::ReadMiss& miss);
  [[nodiscard]] static bool MayStop(uint8_t restarts, const absl::Status& last_fetch);
  bool FetchMiss(FetchFor owner, bool failed, uint8_t& restarts, uint64_t& counted);
  [[nodiscard]] bool JoinFetch(Request& r, const internal::ReadMiss& miss);
  // The window in flight holding [offset, offset + length) of `fd`, or null.
  [[nodiscard]] const FetchWindow* WindowOf(int fd, uint64_t offset, uint64_t length) const;
  static bool InFetchWindow(const void* db, int fd, uint64_t offset, uint64_t length);
  // What a request's read hands the EpochQueue (set_reads_nowait) while it steps.
  [[nodiscard]] internal::FetchesInFlight FetchesInFlight() const;
  static loop::Action OnFetched(loop::Loop& loop, loop::Completion& c);
  loop::Action FetchDone(Fetch& fetch);
  void ResumeFetched(Request& r, absl::Status status);

  absl::StatusOr<Request::Kind> KindOf(const Request& request);
  absl::Status StepWrite(Request& r, absl::string_view sql, absl::Span<const Value> params);
  [[nodiscard]] absl::Status RefuseBeforeRunning(const Request& r) const;
  void Finish(Request& request, absl::Status status);
  void AwaitDurable(Request& request);
  void Deliver(Request& request);
  // Fails the requests queued now with `status`; one submitted from their callbacks stays.
  void FailQueue(Queue& queue, const absl::Status& status);
  // Every request queued at one moment, taken out of the queues to be failed (TakeQueued), so
  // that what their callbacks submit waits for its own turn.
  struct Taken {
    Queue writes;
    Queue held;
    Queue reads;
  };
  void TakeQueued(Taken& taken);
  // Fails them with `status`: the writes, then the held reads, then the reads.
  void FailTaken(Taken& taken, const absl::Status& status);
  // What a request refused or failed by a poisoned database is told.
  [[nodiscard]] static absl::Status Poisoned(const absl::Status& poison);
  // The only writers of state_ and Request::state_: they check the transition (the tables
  // above and in db/request.h), then the invariants.
  void SetState(State next);
  void SetWriterState(WriterState next);
  static void SetRequestState(Request& request, Request::State next);
  void AssertInvariants() const;

  loop::Loop& loop_;
  Vfs& vfs_;
  std::string path_;
  DatabaseOptions options_;
  State state_ = State::kNew;
  Callback open_done_ = nullptr;
  void* open_arg_ = nullptr;
  Callback close_done_ = nullptr;
  void* close_arg_ = nullptr;

  loop::Completion pump_;
  internal::DatabaseFiles* files_ = nullptr;  // Pinned while held (db/internal/).
  // kOpening: the files being opened through the loop, pinned until DoOpen takes them over.
  std::unique_ptr<internal::FilePreopen> preopen_;
  absl::Status refused_;  // Why an open that only looks whether the file exists then fails.
  internal::DatabaseFiles* preopened_ = nullptr;
  bool files_ready_ = false;
  std::optional<bool> needs_check_;  // WarmForCheck's answer (NeedsCheck), for DoOpen.
  uint64_t open_epoch_ = 0;
  bool checked_ = false;  // The integrity check passed at open (or held from the last close).
  bool writer_closed_idle_ = false;  // CloseWriterIfIdle closed it: FinishClose reopens it.
  bool check_off_loop_ = false;      // The check is due, on a thread (MayCheckOffLoop).
  uint64_t group_epoch_ = 0;         // The last group's commit epoch.
  // kOpenChecking: the check on a thread (made at the first one).
  std::unique_ptr<internal::IntegrityCheck> check_;
  uint32_t group_limit_ = 0;  // Requests per group after an overflow; 0: the option's max.
  uint32_t wal_frames_ = 0;   // WAL frames after the last commit (sqlite3_wal_hook).
  WriterState writer_state_ = WriterState::kIdle;
  int last_write_rc_ = 0;                // SQLite's result for the last write statement.
  uint8_t begin_failures_ = 0;           // Consecutive ticks BEGIN failed on (kBeginAttemptsMax).
  uint8_t begin_restarts_ = 0;           // Consecutive BEGINs that missed (kRestartsMax).
  uint8_t checkpoint_restarts_ = 0;      // Consecutive checkpoints that missed (kRestartsMax).
  bool close_checkpointed_ = false;      // FinishClose checkpointed: the writer's close may run.
  bool close_writer_unsettled_ = false;  // ... found the writer in kSyncing or kBlocked first.
  uint64_t visible_epoch_ = 0;      // Newest durable snapshot a reader has shown (invariant 3).
  uint64_t acked_epoch_ = 0;        // Newest epoch of an acknowledged write (invariant 1).
  absl::Status pin_error_;          // Why the last Pin failed; OK after one succeeds.
  absl::Status group_fetch_error_;  // Why the writer's last fetch failed (RestartGroup).
  bool group_fetching_ = false;     // The writer's fetch is in flight (kFetching).
  bool group_put_off_ = false;      // The next group was put off once (RunGroup).
  bool pin_fetching_ = false;       // A reader's pin or open missed; its fetch is in flight.
  uint8_t pin_restarts_ = 0;        // Consecutive pins and reader opens that missed (kRestartsMax).
  absl::Status pin_fetch_error_;    // Why the last such fetch failed.
  bool group_started_idle_ = false;  // The running group started with nothing in flight.
  // Made at the first Sleep: the descriptors closed and taken again (db/internal/file_sleep.h).
  std::unique_ptr<internal::FileSleep> sleep_;
  Callback sleep_closed_ = nullptr;  // Sleep's `closed`, until OnSleepClosed calls it.
  void* sleep_closed_arg_ = nullptr;
  // The pump or a fetch's completion is running (and may call a request's callback, which must
  // not put the database to sleep under it).
  bool in_callback_ = false;
  bool readers_to_close_ = false;  // ReleaseMemory from a callback: the pump closes them.
  // While the pump runs: set by the destructor, since the open or close callback the pump makes
  // may destroy the database, and the pump must then not touch it again.
  bool* destroyed_ = nullptr;
  // kFetching with the group's transaction open: the request whose statement missed, undone
  // to its savepoint, which runs first when the group resumes (ResumeGroup).
  Request* group_resume_ = nullptr;

  std::unique_ptr<Connection> writer_;
  std::vector<std::unique_ptr<Connection>> readers_;
  Queue writes_;
  Queue reads_;
  Queue held_;                   // Client reads behind their client's earlier writes.
  Queue awaiting_;               // Ran; waiting for their epoch to be durable.
  std::vector<Request*> group_;  // Reused: the requests of the running group.
  std::vector<std::unique_ptr<Fetch>> fetches_;  // Every Fetch made; reused.
  std::vector<Fetch*> free_fetches_;
  std::vector<FetchWindow> fetch_windows_;  // One per fetch in flight.
  DatabaseStats stats_;
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_DATABASE_H_
