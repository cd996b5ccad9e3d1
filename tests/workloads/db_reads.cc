// The "db_reads" workload: reads against concurrent group commits on the simulator, every read
// result checked against durability and acknowledgements at the moment it is delivered.
//
// One process opens /data/reads.db with options drawn from the seed (readers, rows per tick,
// checkpoint frequency, group size), creates t(id INTEGER PRIMARY KEY), and runs:
//   * writers: closed loops, each inserting the next id (ids are handed out in submission
//     order, one write at a time per writer), until kWrites have been submitted;
//   * readers: closed loops of `SELECT max(id) FROM t` and, now and then, a scan of every id
//     that runs over several ticks when rows_per_tick is small;
//   * a session: a Client that submits a write and, without waiting, a read of that id;
//   * in a quarter of the seeds, a close at a random moment, whatever is in flight (the
//     requests queued fail as closing, the rest finish first);
//   * in a third of the seeds, a prelude: another Database creates the table, inserts a few
//     ids and closes, which empties the WAL, and the run's database opens the file again. When
//     the seed also sleeps, the traffic starts paused, so the first sleep finds the WAL empty,
//     and the writes wait a while after the pause: the wake, for reads only, leaves the WAL
//     closed, and the first write opens it (DatabaseStats::wal_opens_deferred, wal_opened_late),
//     with faults and sleeps around it; an early close comes just before or just after that
//     write. In half of those seeds the process runs out of descriptors as the writes are
//     released (SimBackend::SetDescriptorLimit, lifted a while later), so the WAL's late open
//     fails with EMFILE for as long as that lasts. The prelude's acknowledged ids count as
//     acknowledged before every read.
// Faults are the seed's swarm mix (I/O errors, latencies); a failed request is fine, a wrong
// answer is not. At each successful read the checker requires, with m the newest id it saw:
//   1. never newer than durable: the write that inserted m has a durable epoch now;
//   2. never older than acknowledged: m >= every id acknowledged before the read was submitted;
//   3. read-your-writes: a session read sees its session's write.
// And at the end of a run in which no fetch (DatabaseStats::fetches_failed) and no write failed:
//   4. no read after the open made the loop wait for the disk (VfsStats::reads_waited): every
//      one that missed the page cache stopped and was fetched. (A failed fetch makes the next
//      attempt read by waiting, by design, and a failed write's rollback re-reads the pages
//      SQLite holds, which it cannot stop to fetch.)
// Property 4 covers the close: its checkpoint, too, must not wait (a close used to, when it
// came during a group's fsync). And at the end of every run, the database closed, every file
// it opened closed again (SimBackend::open_files), and
//   5. no write waited through a failed open of its WAL: each late open that failed
//      (DatabaseStats::wal_late_opens_failed) failed the writes waiting for it, so there are
//      at least as many failed writes. (A write that kept waiting would start the open again
//      at every turn of the loop, for as long as the failure lasts.)
// A watchdog in virtual time ends a run that stops making progress, naming what was pending.
//
// The negative control (WorkloadOptions::ack_before_fsync, here "answer before the covering
// fsync") sets DatabaseOptions::read_undurable_for_testing: reads then run on the newest
// snapshot, durable or not, and property 1 must catch it.
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "sqloop/db/database.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/sim_backend.h"
#include "sqloop/io/sim_trace.h"
#include "sqloop/loop/loop.h"
#include "tests/sim_workload.h"

namespace sqloop::testing {
namespace {

using loop::Action;
using loop::Completion;
using loop::Loop;

constexpr char kDirectory[] = "/data";
constexpr char kDatabasePath[] = "/data/reads.db";
constexpr uint32_t kWrites = 160;
constexpr uint32_t kWritersMax = 6;
constexpr uint32_t kReadersMax = 8;
constexpr uint32_t kSessionRounds = 12;
// One read in this many is a full scan (several ticks when rows_per_tick is small).
constexpr uint32_t kScanOneIn = 6;
// A reader pauses up to this long (simulated) between reads, so reads spread over the run
// rather than spin: about one fsync's latency.
constexpr int64_t kThinkNsMax = 400'000;
// The early close comes within this much simulated time of the traffic's start (a run takes
// tens of milliseconds), so some come with requests in flight and some after the last.
constexpr int64_t kCloseEarlyNsMax = 40'000'000;
// In the seeds that sleep, the traffic pauses every so often (up to this much simulated time
// apart): no client submits anything new, and the database is asked to sleep
// (Database::Sleep) every kSleepTryNs until it does, at most kSleepTriesMax times; then it
// stays asleep up to kAsleepNsMax, and every client that waited submits at once, so the wake
// finds reads and writes queued.
constexpr int64_t kSleepEveryNsMax = 2'000'000;
constexpr int64_t kSleepTryNs = 50'000;
constexpr uint32_t kSleepTriesMax = 40;
constexpr int64_t kAsleepNsMax = 500'000;
// A few of the simulator's openat latencies (SimBackendOptions::other_latency).
constexpr int64_t kCloseNearOpenNsMax = 40'000;
// Far beyond what a run takes (tens of milliseconds of simulated time with the default
// latencies): firing means no progress.
constexpr int64_t kWatchdogNs = 120'000'000'000;
constexpr uint64_t kTraceRead = 0x4eadu;

struct Write {
  class Run* run = nullptr;
  int64_t id = 0;
  db::Request request;
  bool acked = false;
  bool session = false;  // Written by the session (a Client), not by a writer loop.
  bool prelude = false;  // Written by the prelude's Database, closed before the run's opened.
};

struct Reader {
  class Run* run = nullptr;
  db::Request request;
  int64_t newest = 0;         // The newest id the current read saw.
  int64_t acked_before = 0;   // The newest id acknowledged when it was submitted.
  int64_t session_write = 0;  // For the session's read: the id it must see.
  bool scan = false;
  Completion think;  // The pause before its next read.
};

class Run {
 public:
  // `close_at_ns`: when the early close comes after the traffic starts (0: none). `sleeper`:
  // draws the times between asks to sleep (null: none). `prelude`: whether another Database
  // creates the file first.
  Run(io::SimBackend& sim, Loop& loop, db::Vfs& vfs, const db::DatabaseOptions& options,
      int64_t close_at_ns, io::Prng* sleeper, bool prelude, bool descriptors_run_out)
      : sim_(sim),
        loop_(loop),
        vfs_(vfs),
        options_(options),
        database_(loop, vfs, kDatabasePath, options),
        close_at_ns_(close_at_ns),
        sleeper_(sleeper),
        prelude_wanted_(prelude),
        descriptors_run_out_(descriptors_run_out) {
    sleep_.user_data = this;
    sleep_.callback = [](Loop& /*loop*/, Completion& c) {
      auto* run = static_cast<Run*>(c.user_data);
      if (c.result() == -ECANCELED || run->closed_) return Action::kDisarm;
      run->StepPause();
      return Action::kDisarm;
    };
    watchdog_.user_data = this;
    watchdog_.callback = &Run::OnWatchdog;
    close_early_.user_data = this;
    close_early_.callback = [](Loop& /*loop*/, Completion& c) {
      auto* run = static_cast<Run*>(c.user_data);
      if (c.result() == -ECANCELED) return Action::kDisarm;
      run->closed_early_ = run->pending_ > 0;
      const db::DatabaseStats& s = run->database_.stats();
      run->close_wal_deferred_ = s.wal_opens_deferred > s.wal_opened_late + s.wal_late_opens_failed;
      run->closing_ = true;
      run->finished_ = true;
      run->Close();
      return Action::kDisarm;
    };
    release_writes_.user_data = this;
    release_writes_.callback = [](Loop& /*loop*/, Completion& c) {
      auto* run = static_cast<Run*>(c.user_data);
      if (c.result() == -ECANCELED) return Action::kDisarm;
      run->hold_writes_ = false;
      if (run->descriptors_run_out_) {
        // Every descriptor the process may have is taken: the WAL's late open fails.
        run->sim_.SetDescriptorLimit(run->sim_.open_descriptors());
        run->loop_.Timer(run->lift_limit_,
                         absl::Nanoseconds(run->sleeper_->Range(1, kAsleepNsMax)));
      }
      if (!run->paused_) run->ReleaseWrites();
      return Action::kDisarm;
    };
    lift_limit_.user_data = this;
    lift_limit_.callback = [](Loop& /*loop*/, Completion& c) {
      if (c.result() != -ECANCELED) static_cast<Run*>(c.user_data)->sim_.SetDescriptorLimit(0);
      return Action::kDisarm;
    };
  }

  void Start() {
    files_at_start_ = sim_.open_files();
    loop_.Timer(watchdog_, absl::Nanoseconds(kWatchdogNs));
    if (!prelude_wanted_) return database_.Open(&Run::OnOpened, this);
    prelude_ = std::make_unique<db::Database>(loop_, vfs_, kDatabasePath, options_);
    prelude_->Open(&Run::OnPreludeOpened, this);
  }

  [[nodiscard]] const std::string& violation() const { return violation_; }
  // Once the run is over: the database closed (a close that stopped with nothing left to wake
  // it would end the loop all the same).
  void CheckClosed() {
    const db::Database::State state = database_.state();
    if (violation_.empty() && state != db::Database::State::kClosed &&
        state != db::Database::State::kNew) {
      violation_ = absl::StrCat("the run ended with the database in state ",
                                static_cast<int>(state), ", not closed; ", Summary());
    }
  }
  // Whether its databases may be destroyed (~Database checks it).
  [[nodiscard]] bool Settled() const {
    for (const db::Database* database :
         std::initializer_list<const db::Database*>{&database_, prelude_.get()}) {
      if (database == nullptr) continue;
      const db::Database::State state = database->state();
      if (state != db::Database::State::kNew && state != db::Database::State::kClosed &&
          state != db::Database::State::kFailed) {
        return false;
      }
    }
    return true;
  }
  // And every file it opened closed again (a close that went on while an open was in flight
  // would leave that open's descriptor behind).
  void CheckNoFileLeft() {
    const uint32_t open = sim_.open_files();
    if (violation_.empty() && open != files_at_start_) {
      violation_ = absl::StrCat("the run ended with ", open, " files open, ", files_at_start_,
                                " at its start");
    }
  }
  // Property 5, once the run is over.
  void CheckFailedOpensFailedWrites() {
    const uint64_t failed_opens = database_.stats().wal_late_opens_failed;
    if (violation_.empty() && failed_opens > writes_failed_) {
      violation_ =
          absl::StrCat(failed_opens, " late opens of the WAL failed but only ", writes_failed_,
                       " writes did: a write kept waiting through a failed open");
    }
  }
  // Property 4, once the run is over.
  void CheckNoReadWaited() {
    const uint64_t waited = vfs_.stats().reads_waited - waited_at_open_;
    if (violation_.empty() && database_.stats().fetches_failed == 0 && !write_failed_ &&
        waited > 0) {
      violation_ = absl::StrCat(waited,
                                " reads after the open made the loop wait for the disk "
                                "(VfsStats::reads_waited), with no fetch and no write failed");
    }
  }
  [[nodiscard]] std::string Summary() const {
    const db::DatabaseStats& s = database_.stats();
    return absl::StrCat(writes_.size(), " writes (", acked_, " acked), ", reads_ok_,
                        " reads checked (", scans_ok_, " scans, ", session_reads_ok_, " session), ",
                        reads_failed_, " reads failed; groups ", s.groups, ", checkpoints ",
                        s.checkpoints, ", pins ", s.snapshot_pins, ", reads while a group synced ",
                        s.reads_on_syncing, ", held ", s.reads_held, ", restarts ", s.read_restarts,
                        ", reads waited ", vfs_.stats().reads_waited - waited_at_open_);
  }
  // The rare paths the run took, from the database's own counters.
  [[nodiscard]] std::map<std::string, uint64_t> Paths() const {
    const db::DatabaseStats& s = database_.stats();
    return {{"read_restart", s.read_restarts},
            {"group_restart", s.group_restarts},
            {"checkpoint_restart", s.checkpoint_restarts},
            {"pin_restart", s.pin_restarts},
            // A read missed inside a window being fetched (a read's or a group's): it waited.
            {"fetch_joined", s.fetches_joined},
            // A read that ran again took its page from the fetch (FetchedPages), which every
            // read here is then checked against.
            {"read_from_fetch", vfs_.stats().reads_from_fetch},
            {"read_held", s.reads_held},
            // The early close came with requests in flight; the close's checkpoint found the
            // writer still in kSyncing or kBlocked.
            {"close_early", closed_early_ ? 1 : 0},
            {"close_writer_unsettled", s.closes_writer_unsettled},
            // The database slept and a request woke it (its files opened again).
            {"slept", s.wakes},
            {"wake_failed", s.wakes_failed},  // A fault failed one of the wake's operations.
            // A trim closed the sleeping database's writer; the next write opened it again.
            {"asleep_writer_closed", asleep_writer_closes_},
            // Reads after the open that made the loop wait (the open's own may).
            {"read_waited", vfs_.stats().reads_waited - waited_at_open_},
            // The prelude made the table, and the run's database opened the file again.
            {"reopened", reopened_ ? 1 : 0},
            // A wake for reads left the empty WAL closed; the first write opened it.
            {"wal_deferred", s.wal_opens_deferred},
            {"wal_opened_late", s.wal_opened_late},
            {"wal_late_open_failed", s.wal_late_opens_failed},
            // The close came while the WAL a wake left closed was still closed.
            {"close_wal_deferred", close_wal_deferred_ ? 1 : 0},
            // Opens refused for want of a descriptor (SimBackend::SetDescriptorLimit).
            {"descriptors_out", sim_.sim_stats().opens_refused}};
  }

 private:
  // The prelude: its own Database opens the file, creates the table, inserts a few ids and
  // closes, and then the run's database opens. A failure anywhere skips to that open, which
  // creates the table itself unless the prelude's creation was acknowledged.
  static void OnPreludeOpened(void* arg, absl::Status status) {
    auto* run = static_cast<Run*>(arg);
    if (!status.ok() && run->prelude_->state() == db::Database::State::kFailed) {
      run->prelude_.reset();  // Allowed in the callback of an Open that failed.
      return run->OpenAfterPrelude();
    }
    if (!status.ok()) return run->ClosePrelude();  // Poisoned at the open: it holds its files.

    run->create_.kind = db::Request::Kind::kWrite;
    run->create_.sql = "CREATE TABLE t(id INTEGER PRIMARY KEY)";
    run->create_.user_data = run;
    run->create_.on_done = [](db::Request& r, absl::Status s) {
      auto* self = static_cast<Run*>(r.user_data);
      self->reopened_ = s.ok();
      if (!s.ok()) return self->ClosePrelude();
      const auto count = static_cast<uint32_t>(self->sim_.prng().Range(1, 8));
      for (uint32_t i = 0; i < count; ++i) {
        Write& write = self->NewWrite();
        write.prelude = true;
        if (!self->prelude_->Submit(write.request).ok()) {
          self->writes_.pop_back();
          break;
        }
        ++self->pending_;
      }
      if (self->pending_ == 0) self->ClosePrelude();
    };
    if (!run->prelude_->Submit(run->create_).ok()) run->ClosePrelude();
  }

  void ClosePrelude() {
    if (closed_) return;  // The watchdog fired and closes it itself.
    prelude_->Close(
        [](void* arg, absl::Status /*status*/) {
          auto* run = static_cast<Run*>(arg);
          run->prelude_.reset();  // Allowed in the callback of Close.
          run->OpenAfterPrelude();
        },
        this);
  }

  void OpenAfterPrelude() {
    if (closed_) return;  // The watchdog fired during the prelude: the run is over.
    database_.Open(&Run::OnOpened, this);
  }

  static void OnOpened(void* arg, absl::Status status) {
    auto* run = static_cast<Run*>(arg);
    run->waited_at_open_ = run->vfs_.stats().reads_waited;
    if (!status.ok()) return run->Finish();
    if (run->reopened_) return run->StartTraffic();
    run->create_.kind = db::Request::Kind::kWrite;
    // A prelude that failed may have made the table all the same.
    run->create_.sql = run->prelude_wanted_ ? "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY)"
                                            : "CREATE TABLE t(id INTEGER PRIMARY KEY)";
    run->create_.user_data = run;
    run->create_.on_done = [](db::Request& r, absl::Status s) {
      auto* self = static_cast<Run*>(r.user_data);
      self->write_failed_ = !s.ok();
      if (!s.ok()) return self->Finish();
      self->StartTraffic();
    };
    if (!run->database_.Submit(run->create_).ok()) run->Finish();
  }

  void StartTraffic() {
    // After a prelude, a seed that sleeps starts paused: the first sleep finds the WAL the
    // prelude's close emptied, and the writes wait past the wake (release_writes_).
    if (reopened_ && sleeper_ != nullptr) {
      paused_ = true;
      hold_writes_ = true;
    }
    const auto writers = static_cast<uint32_t>(sim_.prng().Range(1, kWritersMax));
    const auto readers = static_cast<uint32_t>(sim_.prng().Range(1, kReadersMax));
    readers_.resize(readers);
    for (uint32_t i = 0; i < writers; ++i) NextWrite();
    for (Reader& reader : readers_) {
      reader.run = this;
      reader.think.user_data = &reader;
      reader.think.callback = [](Loop& /*loop*/, Completion& c) {
        auto& self = *static_cast<Reader*>(c.user_data);
        self.run->NextRead(self);
        return Action::kDisarm;
      };
      NextRead(reader);
    }
    session_read_.run = this;
    NextSession();
    if (close_at_ns_ > 0 && !hold_writes_) {
      loop_.Timer(close_early_, absl::Nanoseconds(close_at_ns_));
    }
    if (paused_) {
      loop_.Timer(sleep_, absl::Nanoseconds(kSleepTryNs));
    } else {
      ArmSleep();
    }
  }

  void ArmSleep() {
    if (sleeper_ == nullptr) return;
    loop_.Timer(sleep_, absl::Nanoseconds(sleeper_->Range(1, kSleepEveryNsMax)));
  }

  // The pause's steps (kSleepEveryNsMax): begin it, try to sleep, end it.
  void StepPause() {
    if (!paused_) {
      paused_ = true;
      sleep_tries_ = 0;
      loop_.Timer(sleep_, absl::Nanoseconds(kSleepTryNs));
      return;
    }
    const bool ready = database_.state() == db::Database::State::kReady;
    if (ready && !database_.asleep() && sleep_tries_ < kSleepTriesMax) {
      ++sleep_tries_;
      const bool slept = database_.Sleep().ok();
      // Half the sleeps are trimmed as the registry trims a sleeper: the writer closes (its
      // close touches no file) and opens again at the next write, after the wake.
      if (slept && sleeper_->Range(0, 1) == 1) {
        if (database_.CloseWriterIfIdle()) ++asleep_writer_closes_;
        database_.ReleaseMemory();
      }
      loop_.Timer(sleep_,
                  absl::Nanoseconds(slept ? sleeper_->Range(1, kAsleepNsMax) : kSleepTryNs));
      return;
    }
    paused_ = false;
    if (hold_writes_ && release_writes_.state() != Completion::State::kTimer) {
      const int64_t release_ns = sleeper_->Range(0, kAsleepNsMax);
      loop_.Timer(release_writes_, absl::Nanoseconds(release_ns));
      // An early close comes from here: half before the writes (it finds the WAL closed), half
      // just after them, around the WAL's open (kCloseNearOpenNsMax).
      if (close_at_ns_ > 0) {
        loop_.Timer(close_early_,
                    absl::Nanoseconds(sleeper_->Chance(0.5)
                                          ? sleeper_->Range(0, release_ns)
                                          : release_ns + sleeper_->Range(0, kCloseNearOpenNsMax)));
      }
    }
    if (!hold_writes_) ReleaseWrites();
    std::vector<Reader*> reads;
    reads.swap(parked_reads_);
    for (Reader* reader : reads) NextRead(*reader);
    ArmSleep();
  }

  // The writes and the session's round that waited for the pause's end or for release_writes_.
  void ReleaseWrites() {
    for (; parked_writes_ > 0; --parked_writes_) NextWrite();
    if (parked_session_) {
      parked_session_ = false;
      NextSession();
    }
  }

  // The next id's INSERT (ids follow submission order).
  Write& NewWrite() {
    Write& write = writes_.emplace_back();
    write.run = this;
    write.id = static_cast<int64_t>(writes_.size());
    write.request.kind = db::Request::Kind::kWrite;
    write.request.sql = "INSERT INTO t(id) VALUES (?)";
    write.request.params = {db::Value::Int(write.id)};
    write.request.user_data = &write;
    write.request.on_done = &Run::OnWritten;
    return write;
  }

  void NextWrite() {
    if (writes_.size() >= kWrites || finished_) return;
    if (paused_ || hold_writes_) {
      ++parked_writes_;
      return;
    }
    Write& write = NewWrite();
    if (database_.Submit(write.request).ok()) {
      ++pending_;
    } else {
      writes_.pop_back();
      Finish();
    }
  }

  static void OnWritten(db::Request& request, absl::Status status) {
    auto& write = *static_cast<Write*>(request.user_data);
    Run& run = *write.run;
    --run.pending_;
    if (status.ok()) {
      write.acked = true;
      ++run.acked_;
      run.acked_newest_ = std::max(run.acked_newest_, write.id);
    }
    if (write.prelude) {  // Its database closes once the last one is done.
      if (run.pending_ == 0) run.ClosePrelude();
      return;
    }
    run.writes_failed_ += status.ok() ? 0 : 1;
    // A write the early close cancelled never ran.
    run.write_failed_ =
        run.write_failed_ || (!status.ok() && !(run.closing_ && absl::IsCancelled(status)));
    if (write.session) return run.NextSessionIfDone();
    run.NextWrite();
    run.MaybeFinish();
  }

  void NextRead(Reader& reader) {
    if (finished_ || writes_.size() >= kWrites) return MaybeFinish();
    if (paused_) {
      parked_reads_.push_back(&reader);
      return;
    }
    reader.scan = sim_.prng().Below(kScanOneIn) == 0;
    reader.newest = 0;
    reader.acked_before = acked_newest_;
    reader.session_write = 0;
    Prime(reader, reader.scan ? "SELECT id FROM t" : "SELECT max(id) FROM t");
    if (database_.Submit(reader.request).ok()) {
      ++pending_;
    } else {
      Finish();
    }
  }

  void Prime(Reader& reader, absl::string_view sql) {
    reader.request.kind = db::Request::Kind::kRead;
    reader.request.sql = sql;
    reader.request.user_data = &reader;
    reader.request.on_row = [](db::Request& r, const db::Row& row) {
      auto& self = *static_cast<Reader*>(r.user_data);
      if (row.type(0) == db::Value::Type::kInt) self.newest = std::max(self.newest, row.Int(0));
    };
    reader.request.on_rows_discarded = [](db::Request& r) {
      static_cast<Reader*>(r.user_data)->newest = 0;
    };
    reader.request.on_done = &Run::OnRead;
  }

  static void OnRead(db::Request& request, absl::Status status) {
    auto& reader = *static_cast<Reader*>(request.user_data);
    Run& run = *reader.run;
    --run.pending_;
    if (status.ok()) {
      run.Check(reader);
      if (!run.violation_.empty()) run.finished_ = true;  // The verdict is in: wind down.
    } else {
      ++run.reads_failed_;
    }
    run.sim_.Trace(kTraceRead);
    run.sim_.Trace(static_cast<uint64_t>(reader.newest));
    if (&reader == &run.session_read_) return run.NextSessionIfDone();
    if (run.finished_ || run.writes_.size() >= kWrites) return run.MaybeFinish();
    run.loop_.Timer(reader.think,
                    absl::Nanoseconds(static_cast<int64_t>(run.sim_.prng().Below(kThinkNsMax))));
  }

  // The three properties of the file comment, at the moment of delivery.
  void Check(const Reader& reader) {
    ++reads_ok_;
    scans_ok_ += reader.scan ? 1 : 0;
    const uint64_t durable = database_.durable_epoch();  // 0 if it holds no files.
    if (reader.newest > 0) {
      // A prelude's write is of another Database's epochs, closed before this one opened.
      const Write& seen = writes_[static_cast<size_t>(reader.newest - 1)];
      if (!seen.prelude && seen.request.epoch > durable && violation_.empty()) {
        violation_ =
            absl::StrCat("a read saw id ", reader.newest, " of epoch ", seen.request.epoch,
                         ", but the durable epoch was ", durable, " when the read was answered");
      }
    }
    if (reader.newest < reader.acked_before && violation_.empty()) {
      violation_ = absl::StrCat("a read saw ids up to ", reader.newest, ", but id ",
                                reader.acked_before, " was acknowledged before it was submitted");
    }
    if (reader.session_write != 0) {
      ++session_reads_ok_;
      // Delivered after its client's write, so that write's outcome is known; a failed one
      // wrote nothing to see.
      const bool acked = writes_[static_cast<size_t>(reader.session_write - 1)].acked;
      if (acked && reader.newest < reader.session_write && violation_.empty()) {
        violation_ = absl::StrCat("a session read saw ids up to ", reader.newest,
                                  ", not its own earlier write ", reader.session_write);
      }
    }
    if (reader.request.epoch > durable && violation_.empty()) {
      violation_ = absl::StrCat("a read was answered from epoch ", reader.request.epoch,
                                " before it was durable (", durable, ")");
    }
  }

  // The session: a write and, without waiting for it, a read through the same Client.
  void NextSession() {
    if (finished_ || session_rounds_ == kSessionRounds || writes_.size() >= kWrites) {
      return MaybeFinish();
    }
    if (paused_ || hold_writes_) {
      parked_session_ = true;
      return;
    }
    ++session_rounds_;
    Write& write = NewWrite();
    write.session = true;
    write.request.client = &session_;
    if (!database_.Submit(write.request).ok()) return Finish();
    ++pending_;
    session_outstanding_ = 1;
    session_read_.acked_before = acked_newest_;
    session_read_.newest = 0;
    session_read_.scan = false;
    session_read_.session_write = write.id;
    Prime(session_read_, "SELECT max(id) FROM t");
    session_read_.request.client = &session_;
    if (database_.Submit(session_read_.request).ok()) {
      ++pending_;
      ++session_outstanding_;
    }
  }

  void NextSessionIfDone() {
    if (--session_outstanding_ == 0) NextSession();
    MaybeFinish();
  }

  // The run ends when every write was submitted (or the database refused one) and nothing is
  // pending; a think timer that fires later finds it over.
  void MaybeFinish() {
    if (pending_ == 0 && (finished_ || writes_.size() >= kWrites)) Close();
  }

  void Finish() {
    finished_ = true;
    MaybeFinish();
  }

  // The watchdog stays armed until the close is done: a close must end too.
  void Close() {
    if (closed_) return;
    closed_ = true;
    if (close_early_.state() == Completion::State::kTimer) loop_.Cancel(close_early_);
    if (sleep_.state() == Completion::State::kTimer) loop_.Cancel(sleep_);
    if (release_writes_.state() == Completion::State::kTimer) loop_.Cancel(release_writes_);
    if (lift_limit_.state() == Completion::State::kTimer) loop_.Cancel(lift_limit_);
    sim_.SetDescriptorLimit(0);
    const db::Database::State state = database_.state();
    if (state == db::Database::State::kReady || state == db::Database::State::kPoisoned ||
        state == db::Database::State::kFailed) {
      database_.Close(
          [](void* arg, absl::Status /*status*/) {
            auto* run = static_cast<Run*>(arg);
            if (run->watchdog_.state() == Completion::State::kTimer)
              run->loop_.Cancel(run->watchdog_);
          },
          this);
    } else {
      loop_.Cancel(watchdog_);
    }
  }

  // For the watchdog's verdict: the requests not done, with their states (db::Request::State
  // numbers: 1 queued, 2 running, 3 awaiting durability).
  std::string StuckStates() const {
    std::string text;
    const auto add = [&text](const char* what, const db::Request& request) {
      const db::Request::State state = request.state();
      if (state == db::Request::State::kIdle || state == db::Request::State::kDone) return;
      absl::StrAppend(&text, text.empty() ? "" : ", ", what, " ", static_cast<int>(state));
    };
    for (const Write& write : writes_) add("write", write.request);
    for (const Reader& reader : readers_) add("read", reader.request);
    add("session read", session_read_.request);
    add("create", create_);
    return text;
  }

  static Action OnWatchdog(Loop& /*loop*/, Completion& c) {
    auto* run = static_cast<Run*>(c.user_data);
    if (c.result() == -ECANCELED) return Action::kDisarm;
    if (run->violation_.empty()) {
      run->violation_ = absl::StrCat(
          "watchdog: no progress after ", kWatchdogNs / 1'000'000'000, " s of simulated time; ",
          run->pending_, " requests pending (", run->StuckStates(), "); database state ",
          static_cast<int>(run->database_.state()),
          run->prelude_ != nullptr
              ? absl::StrCat(", the prelude's ", static_cast<int>(run->prelude_->state()))
              : "",
          "; ", run->Summary());
    }
    run->finished_ = true;
    run->sim_.SetDescriptorLimit(0);
    run->sim_.Crash();  // Every pending operation fails, so the requests complete and it ends.
    run->closed_ = true;
    for (db::Database* database : {&run->database_, run->prelude_.get()}) {
      if (database == nullptr) continue;
      const db::Database::State state = database->state();
      if (state == db::Database::State::kReady || state == db::Database::State::kPoisoned) {
        database->Close([](void*, absl::Status) {}, nullptr);
      }
    }
    return Action::kDisarm;
  }

  io::SimBackend& sim_;
  Loop& loop_;
  db::Vfs& vfs_;
  const db::DatabaseOptions options_;
  db::Database database_;
  Completion watchdog_;
  Completion close_early_;
  const int64_t close_at_ns_;
  io::Prng* const sleeper_;
  const bool prelude_wanted_;
  std::unique_ptr<db::Database> prelude_;  // Only while the prelude runs.
  bool reopened_ = false;     // The prelude created the table; the run's database reopened it.
  bool hold_writes_ = false;  // After a prelude's pause, writes wait for release_writes_.
  bool close_wal_deferred_ = false;  // The early close came while the wake's WAL was closed.
  Completion release_writes_;
  const bool descriptors_run_out_;  // At release_writes_, until lift_limit_.
  Completion lift_limit_;
  uint64_t asleep_writer_closes_ = 0;  // CloseWriterIfIdle closed the writer while asleep.
  Completion sleep_;
  bool paused_ = false;  // The traffic pauses (StepPause): new requests wait here.
  uint32_t sleep_tries_ = 0;
  uint32_t parked_writes_ = 0;
  std::vector<Reader*> parked_reads_;
  bool parked_session_ = false;
  db::Request create_;
  std::deque<Write> writes_;  // A deque: requests never move once submitted.
  std::vector<Reader> readers_;
  db::Client session_;
  Reader session_read_;
  uint32_t session_rounds_ = 0;
  uint32_t session_outstanding_ = 0;
  int64_t acked_newest_ = 0;
  uint32_t pending_ = 0;
  uint32_t acked_ = 0;
  uint32_t reads_ok_ = 0;
  uint32_t scans_ok_ = 0;
  uint32_t session_reads_ok_ = 0;
  uint32_t reads_failed_ = 0;
  uint64_t waited_at_open_ = 0;
  uint32_t files_at_start_ = 0;
  bool write_failed_ = false;   // A write failed: its rollback may have read by waiting.
  uint64_t writes_failed_ = 0;  // The run's writes that failed, whatever the status.
  bool finished_ = false;
  bool closed_ = false;
  bool closing_ = false;       // The early close came.
  bool closed_early_ = false;  // ... with requests in flight.
  std::string violation_;
};

// Swarm over configuration: each seed draws the options that decide which paths run.
db::DatabaseOptions DrawOptions(io::Prng& prng, const WorkloadOptions& options) {
  db::DatabaseOptions drawn;
  // The negative control needs a second reader to hold the undurable snapshot it must catch.
  drawn.readers = static_cast<uint32_t>(prng.Range(options.ack_before_fsync ? 2 : 1, 3));
  constexpr uint32_t kRowsPerTick[] = {1, 4, 64};
  drawn.rows_per_tick = kRowsPerTick[prng.Below(3)];
  constexpr uint32_t kCheckpointFrames[] = {4, 32, db::kCheckpointFramesDefault};
  drawn.checkpoint_frames = kCheckpointFrames[prng.Below(3)];
  drawn.group_requests_max = prng.Chance(0.5) ? 4 : db::kGroupRequestsMaxDefault;
  drawn.read_undurable_for_testing = options.ack_before_fsync;
  return drawn;
}

WorkloadResult RunDbReads(uint64_t seed, const WorkloadOptions& options) {
  sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, static_cast<int>(seed), nullptr);
  std::unique_ptr<io::SimBackend> backend = FirstSimulator(seed, options, kDirectory);
  io::SimBackend& sim = *backend;
  const std::string faults = sim.DescribeFaults();
  const db::DatabaseOptions drawn = DrawOptions(sim.prng(), options);
  // From a generator of its own, so the simulator's stream is the same either way: half the
  // seeds grow the WAL without a reserve (its writes run at once, a failed one fails a group),
  // half with one (they run behind, a failed one poisons).
  db::VfsOptions vfs_options;
  if (options.wal_reserve_bytes >= 0) {
    vfs_options.wal_reserve_bytes = static_cast<uint32_t>(options.wal_reserve_bytes);
  } else if (io::Prng(seed ^ 0x7e5e'47e5'e47e'5e47ULL).Chance(0.5)) {
    vfs_options.wal_reserve_bytes = 0;
  }
  // From a generator of its own too: a quarter of the seeds close early. (Its salt leaves
  // DbReadsTest's regression seed, 53410, without an early close, so that it runs as it did.)
  io::Prng close_prng(seed ^ 0xc105'e000'0000'0001ULL);
  const int64_t close_at_ns =
      close_prng.Chance(0.25) ? static_cast<int64_t>(close_prng.Range(1, kCloseEarlyNsMax)) : 0;
  // And half the seeds ask the database to sleep now and then (the salt leaves seed 53410
  // without).
  io::Prng sleep_prng(seed ^ 0x51ee'9000'0000'000dULL);
  const bool sleeps = sleep_prng.Chance(0.5);
  // A third of the seeds run the prelude (the salt leaves seed 53410 without).
  const bool prelude = io::Prng(seed ^ 0x9e10'de00'0000'0003ULL).Chance(1.0 / 3);
  // Half of the seeds that hold their writes after a prelude run out of descriptors then.
  const bool descriptors_run_out =
      prelude && sleeps && io::Prng(seed ^ 0xfd00'0000'0000'0005ULL).Chance(0.5);
  auto loop = std::make_unique<Loop>(std::move(backend), loop::LoopOptions{});
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(*loop, vfs_options);
  SQLOOP_CHECK(vfs.ok(), "db_reads: the VFS could not be registered");
  WorkloadResult result;
  auto run = std::make_unique<Run>(sim, *loop, **vfs, drawn, close_at_ns,
                                   sleeps ? &sleep_prng : nullptr, prelude, descriptors_run_out);
  run->Start();
  const absl::Status status = loop->Run(loop::RunMode::kUntilDone);
  run->CheckClosed();
  run->CheckNoFileLeft();
  run->CheckNoReadWaited();
  run->CheckFailedOpensFailedWrites();
  result.failure = !status.ok() ? absl::StrCat("run: ", status.message()) : run->violation();
  const std::string summary = run->Summary();
  result.paths = run->Paths();
  result.trace_hash = sim.trace_hash();
  // A run that could not close (the device's fsyncs hang: the watchdog's close waits for them
  // too) has operations pending that point into its objects: they are abandoned, not destroyed.
  if (!run->Settled()) {
    if (result.failure.empty()) result.failure = "the run ended with a database not closed";
    Abandon(std::move(run));
    Abandon(std::move(*vfs));
    Abandon(std::move(loop));
  }
  result.ok = result.failure.empty();
  result.summary =
      absl::StrCat(summary, "; readers ", drawn.readers, ", rows/tick ", drawn.rows_per_tick,
                   ", checkpoint frames ", drawn.checkpoint_frames, ", group max ",
                   drawn.group_requests_max, ", WAL reserve ", vfs_options.wal_reserve_bytes,
                   close_at_ns > 0 ? absl::StrCat(", close at +", close_at_ns / 1000, " us") : "",
                   sleeps ? ", sleeps" : "", prelude ? ", prelude" : "",
                   descriptors_run_out ? ", out of descriptors" : "", "; faults: ", faults);
  return result;
}

}  // namespace

SQLOOP_REGISTER_WORKLOAD(db_reads,
                         "reads beside group commits: never newer than durable, never older than "
                         "acknowledged, a client reads its own writes",
                         RunDbReads);

}  // namespace sqloop::testing
