// Reads of data that is not in memory (db/database.h, "Reads never wait for the disk"): they
// stop, fetch what they missed asynchronously and run again, so the loop never waits for the
// disk on a read; each one is checked against the rows it must return, on every backend.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "sqloop/db/database.h"
#include "sqloop/io/sim_backend.h"
#include "tests/db_database_fixture.h"
#include "tests/db_test_support.h"

namespace sqloop::db::testing {
namespace {

using sqloop::testing::BackendParamName;
using sqloop::testing::DbTestBackends;

// 3,000 rows of ~120 bytes: about 90 pages, so a scan crosses many pages and a point read
// walks a B-tree of two levels.
constexpr int kRows = 3000;
constexpr const char* kFill =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
    "INSERT INTO t SELECT i, printf('%0120d', i) FROM n";
constexpr const char* kScan = "SELECT count(*), sum(length(s)), sum(id) FROM t";
const std::string kScanRows =
    absl::StrCat(kRows, "|", kRows * 120, "|", kRows*(kRows + 1) / 2, "|\n");

// Tries at making a database cold before a test forces a miss: POSIX_FADV_DONTNEED is advice,
// and the kernel sometimes keeps (or reads ahead) every page a test needs cold. The last try
// also tells the first probe to miss (RecordingBackend::MissProbes), so the path under test
// runs for sure; the simulator's page cache needs no help.
constexpr int kColdAttempts = 5;

class ColdReadTest : public DatabaseTest {
 protected:
  bool simulated() const { return GetParam().name == "simulator"; }

  // The table, written and checkpointed into the main file by a close, then opened again.
  void CreateTable(DatabaseOptions options = {}) {
    ASSERT_TRUE(OpenDb(options).ok());
    ASSERT_TRUE(Write("CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)").ok());
    ASSERT_TRUE(Write(kFill).ok());
    ASSERT_TRUE(CloseDb().ok());
    ASSERT_TRUE(OpenDb(options).ok());
  }

  // Evicts the database's files from the page cache (the simulator's model, or the kernel's:
  // POSIX_FADV_DONTNEED drops clean pages) and SQLite's caches of them.
  void MakeCold() {
    EvictFiles();
    db_->ReleaseMemory();
  }

  // Real files from byte `from` on only: what is before it stays in the page cache.
  // `page1`: until the main file's first page is out (the test needs that one cold).
  void EvictFiles(off_t from = 0, bool page1 = false) {
    if (simulated()) {
      static_cast<io::SimBackend&>(trace_->inner()).disk().DropCaches();
    } else {
      // DONTNEED is advice: a page another CPU holds in its batch of recently used pages stays,
      // and so does a dirty one (a checkpoint's write not yet written back), so the files are
      // synced first. Ask until a page of the main file is out (the test needs one), a few
      // times at most.
      const uint64_t out_of = page1 ? 4096 : DatabaseBytes();
      for (int attempt = 0; attempt < 8 && !OnTmpfs() && !MainFileHasAPageOut(out_of); ++attempt) {
        for (const std::string& file : {path_, path_ + "-wal"}) {
          const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
          if (fd < 0) continue;
          ASSERT_EQ(fdatasync(fd), 0);
          ASSERT_EQ(posix_fadvise(fd, from, 0, POSIX_FADV_DONTNEED), 0);
          close(fd);
        }
      }
      if (!OnTmpfs()) {
        ASSERT_TRUE(MainFileHasAPageOut(out_of)) << "the kernel kept every page in memory";
      }
    }
  }

  // The bytes of the database's pages: its header's page count times its page size. The file
  // may be longer: a reserve (EpochQueue invariant 10) leaves zeros past them that no read needs.
  uint64_t DatabaseBytes() const {
    unsigned char header[100] = {};
    const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    const ssize_t got = pread(fd, header, sizeof header, 0);
    close(fd);
    if (got != sizeof header) return 0;
    const uint32_t page_bytes = header[16] << 8 | header[17];
    const uint32_t pages = uint32_t{header[28]} << 24 | uint32_t{header[29]} << 16 |
                           uint32_t{header[30]} << 8 | header[31];
    return uint64_t{pages} * (page_bytes == 1 ? 65536 : page_bytes);
  }

  // mincore, not a read: a read that misses (even RWF_NOWAIT) starts readahead, which would
  // bring the page back. Looks at the first `db_bytes` of the file.
  bool MainFileHasAPageOut(uint64_t db_bytes) const {
    const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st {};
    bool out = false;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      const auto bytes = static_cast<size_t>(std::min<uint64_t>(st.st_size, db_bytes));
      void* map = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
      if (map != MAP_FAILED) {
        std::vector<unsigned char> resident((bytes + 4095) / 4096);
        if (mincore(map, bytes, resident.data()) == 0) {
          out = std::any_of(resident.begin(), resident.end(),
                            [](unsigned char r) { return (r & 1) == 0; });
        }
        munmap(map, bytes);
      }
    }
    close(fd);
    return out;
  }

  // 40 tables, about 9 KiB of CREATE statements: three pages of schema. The last holds a row.
  void CreateLongSchema() {
    ASSERT_TRUE(OpenDb().ok());
    for (int i = 0; i < 40; ++i) {
      ASSERT_TRUE(Write(absl::StrFormat("CREATE TABLE table_with_a_long_name_%02d(id INTEGER "
                                        "PRIMARY KEY, first_column TEXT, second_column TEXT, "
                                        "third_column BLOB, fourth_column REAL)",
                                        i))
                      .ok());
    }
    ASSERT_TRUE(
        Write("INSERT INTO table_with_a_long_name_39(id, first_column) VALUES (7, 'x')").ok());
  }

  // Submits the write `p` and runs the loop until its group committed (its fsync may still be
  // in flight).
  void SubmitUntilCommitted(Probe& p) {
    const uint64_t groups = db_->stats().groups;
    ASSERT_TRUE(db_->Submit(p.request).ok());
    while (db_->stats().groups == groups) {
      ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    }
  }

  // Submits `p` and runs the loop until it waits for a fetch (or, if it never missed, is done).
  void SubmitUntilFetching(Probe& p) {
    ASSERT_TRUE(db_->Submit(p.request).ok());
    while (p.request.state() != Request::State::kFetching && !p.done) {
      ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    }
  }

  // A file system that cannot say what is in memory (tmpfs answers preadv2(RWF_NOWAIT) with
  // EOPNOTSUPP) is read the old way, waiting; these tests are about the others.
  bool OnTmpfs() const {
    struct statfs fs {};
    return !simulated() && statfs(dir_->Path("").c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
  }
};

TEST_P(ColdReadTest, ReadsOfDataNotInMemoryNeverMakeTheLoopWait) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  // DONTNEED is advice, and the kernel's readahead for the connection's first (waiting) read
  // may bring back what the test needs cold: make it cold again until a read found it so.
  uint64_t waited = 0;
  for (int attempt = 0; attempt < kColdAttempts && db_->stats().read_restarts == 0; ++attempt) {
    MakeCold();
    if (attempt == kColdAttempts - 1) trace_->MissProbes(1);  // The kernel kept it all.
    const uint64_t before = loop_->stats().waited_ops;
    EXPECT_EQ(Read(kScan), kScanRows);
    for (int id : {1, 777, 1500, 2999}) {
      EXPECT_EQ(Read("SELECT length(s), substr(s, 117) FROM t WHERE id = ?", {Value::Int(id)}),
                absl::StrCat("120|'", absl::StrFormat("%04d", id), "'|\n"));
    }
    waited += loop_->stats().waited_ops - before;
  }
  EXPECT_EQ(waited, 0U) << "a read waited for the disk on the loop";
  EXPECT_GE(db_->stats().read_restarts, 1U) << "no read stopped: it proves nothing";
  EXPECT_GT(db_->stats().fetched_bytes, 0U);
}

// A reopen of a database none of whose pages are in memory: FilePreopen reads page 1 (the
// header and, for a small schema, all of it) through the loop, the reader's pin and the
// schema come from it, and the read's own pages are fetched by restarts. Nothing waits.
TEST_P(ColdReadTest, AReopenOfAColdDatabaseMakesTheLoopWaitForNothing) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  bool page1_was_out = false;
  uint64_t waited = 0;
  for (int attempt = 0; attempt < 5 && !page1_was_out; ++attempt) {
    ASSERT_TRUE(CloseDb().ok());
    EvictFiles(/*from=*/0, /*page1=*/true);
    page1_was_out = simulated() || MainFileHasAPageOut(4096);
    const uint64_t before = loop_->stats().waited_ops;
    const uint64_t from_head = vfs_->stats().reads_from_head;
    ASSERT_TRUE(OpenDb().ok());
    EXPECT_EQ(Read("SELECT length(s) FROM t WHERE id = ?", {Value::Int(1500)}), "120|\n");
    EXPECT_GT(vfs_->stats().reads_from_head, from_head) << "the reopen read no head";
    waited += loop_->stats().waited_ops - before;
  }
  EXPECT_TRUE(page1_was_out) << "page 1 stayed in memory in 5 tries: it proves nothing";
  EXPECT_EQ(waited, 0U) << "a reopen waited for the disk on the loop";
}

// A reopen of a database whose schema is larger than page 1 (the head), with the pages past
// page 1 out of memory: the first read's prepare stops on the schema's pages and restarts as a
// statement does. Nothing waits. On a real file system the kernel's readahead may bring a small
// schema back before the read (the head's read can start it), so the first probe after the
// open is also told to miss: it is the prepare's, which parses the schema before the statement
// reads anything.
TEST_P(ColdReadTest, AReopenOfADatabaseWithItsSchemaOutOfMemoryMakesTheLoopWaitForNothing) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateLongSchema();
  ASSERT_TRUE(CloseDb().ok());
  EvictFiles(/*from=*/4096);
  const uint64_t before = loop_->stats().waited_ops;
  ASSERT_TRUE(OpenDb().ok());
  trace_->MissProbes(1);
  EXPECT_EQ(Read("SELECT first_column FROM table_with_a_long_name_39 WHERE id = 7"), "'x'|\n");
  EXPECT_GE(db_->stats().read_restarts, 1U) << "the read never stopped";
  EXPECT_EQ(loop_->stats().waited_ops - before, 0U)
      << "a reopen waited for the disk on the loop to read the schema";
}

// A kAuto request's kind comes from a prepare at Submit, which cannot stop and run again: the
// first one after a reopen parses the schema. With the schema's pages out of memory the request
// runs as a write (correct for any statement) instead of making the loop wait, and still
// answers; with the schema in memory the next one is a read again.
TEST_P(ColdReadTest, AnAutoRequestWhoseKindWouldWaitForTheSchemaRunsAsAWrite) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateLongSchema();
  ASSERT_TRUE(CloseDb().ok());
  EvictFiles(/*from=*/4096);
  ASSERT_TRUE(OpenDb().ok());
  constexpr const char* kSelect = "SELECT first_column FROM table_with_a_long_name_39 WHERE id = 7";
  const uint64_t waited = vfs_->stats().reads_waited;
  trace_->MissProbes(1);
  Probe cold;
  Prime(cold, Request::Kind::kAuto, kSelect);
  ASSERT_TRUE(db_->Submit(cold.request).ok());
  EXPECT_EQ(cold.request.kind, Request::Kind::kWrite);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(cold.done);
  EXPECT_TRUE(cold.status.ok()) << cold.status;
  EXPECT_EQ(cold.rows, "'x'|\n");
  EXPECT_EQ(db_->stats().kinds_unknown, 1U) << "the kind never needed the schema's pages";
  EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U)
      << "a kAuto request's kind waited for the disk on the loop";

  Probe warm;
  Prime(warm, Request::Kind::kAuto, kSelect);
  ASSERT_TRUE(db_->Submit(warm.request).ok());
  EXPECT_EQ(warm.request.kind, Request::Kind::kRead);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(warm.rows, "'x'|\n");
  EXPECT_EQ(db_->stats().kinds_unknown, 1U);
}

// The writer opens at the first write after a reopen, and again after a trim closed it; its
// setup parses the schema. With the schema's pages out of memory the open stops on the miss,
// closes, fetches and opens again, as BEGIN does: no read waits on the loop (the write may still
// wait to grow the WAL past its reserve, db/database.h). The first probe
// is told to miss, for the kernel may have kept (or read ahead) what the test evicted.
TEST_P(ColdReadTest, AWriterOpeningWithItsSchemaOutOfMemoryMakesTheLoopWaitForNothing) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateLongSchema();
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb().ok());
  ASSERT_EQ(db_->stats().writer_opens_deferred, 1U) << "the writer opened with the database";
  for (const bool trimmed : {false, true}) {
    SCOPED_TRACE(trimmed ? "after a trim" : "after a reopen");
    if (trimmed) {
      ASSERT_TRUE(db_->CloseWriterIfIdle());
    }
    EvictFiles(/*from=*/4096);
    const uint64_t waited = vfs_->stats().reads_waited;
    const uint64_t restarts = db_->stats().group_restarts;
    const uint64_t opened = db_->stats().writers_opened_late;
    trace_->MissProbes(1);
    const int id = trimmed ? 9 : 8;
    ASSERT_TRUE(Write("INSERT INTO table_with_a_long_name_39(id, first_column) VALUES (?, 'y')",
                      {Value::Int(id)})
                    .ok());
    EXPECT_EQ(db_->stats().writers_opened_late, opened + 1) << "the write found the writer open";
    EXPECT_GE(db_->stats().group_restarts, restarts + 1) << "the writer's open never stopped";
    EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U)
        << "the writer's open waited for the disk on the loop to read the schema";
  }
  EXPECT_EQ(Read("SELECT group_concat(id || first_column, '') FROM table_with_a_long_name_39"),
            "'7x8y9y'|\n");
}

// Writes whose pages are not in memory: the write that missed is undone to its savepoint, the
// group waits with its transaction open while the page is read in, and goes on, its writes in
// their order, so no read of a write waits for the disk on the loop. (A write may still wait
// for other things: the directory's descriptor at the first barrier, a WAL growing past its
// reserve.) Every write is checked, and so is the order they completed in.
TEST_P(ColdReadTest, WritesToDataNotInMemoryNeverMakeTheLoopWait) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  // The writer opens (after a reopen it waits for the first write) and the WAL has its reserve:
  // what is left to wait for is what the writes read.
  ASSERT_TRUE(Write("UPDATE t SET s = s WHERE id = 2").ok());
  constexpr int kIds[] = {1, 777, 1500, 2999};
  uint64_t waited = 0;
  for (int attempt = 0; attempt < kColdAttempts && db_->stats().group_restarts == 0; ++attempt) {
    MakeCold();
    if (attempt == kColdAttempts - 1) trace_->MissProbes(1);  // The kernel kept it all.
    const uint64_t before = vfs_->stats().reads_waited;
    std::vector<std::string> order;
    const std::string prefix = absl::StrFormat("try%05d", attempt);  // Outlives the writes.
    Probe writes[std::size(kIds)];
    for (size_t i = 0; i < std::size(kIds); ++i) {
      Prime(writes[i], Request::Kind::kWrite,
            "UPDATE t SET s = ? || substr(s, 9) WHERE id = ? RETURNING id",
            {Value::Text(prefix), Value::Int(kIds[i])});
      writes[i].order = &order;
      writes[i].name = absl::StrCat(kIds[i]);
      ASSERT_TRUE(db_->Submit(writes[i].request).ok());
    }
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    waited += vfs_->stats().reads_waited - before;
    for (size_t i = 0; i < std::size(kIds); ++i) {
      const Probe& w = writes[i];
      ASSERT_TRUE(w.done);
      EXPECT_TRUE(w.status.ok()) << w.status;
      EXPECT_EQ(w.request.changes, 1);
      EXPECT_EQ(w.rows, absl::StrCat(kIds[i], "|\n"));
      // A miss undoes only the write that missed: none that ran before it runs again (its
      // RETURNING row would be voided first).
      EXPECT_EQ(w.discards, 0) << "write " << kIds[i] << " ran again after another's miss";
    }
    EXPECT_EQ(order, (std::vector<std::string>{"1", "777", "1500", "2999"}));
    for (int id : kIds) {
      EXPECT_EQ(Read("SELECT substr(s, 1, 8), length(s) FROM t WHERE id = ?", {Value::Int(id)}),
                absl::StrFormat("'try%05d'|120|\n", attempt));
    }
  }
  EXPECT_GE(db_->stats().group_restarts, 1U) << "no group stopped: it proves nothing";
  EXPECT_EQ(waited, 0U) << "a write's read waited for the disk on the loop";
  EXPECT_EQ(Read(kScan), kScanRows);
}

// A write whose pages the cache never keeps fails with Unavailable after a bounded number of
// restarts, nothing of it written; a write whose fetch fails fails with the I/O error. The
// database stays usable after both. The first write reads the whole table: a fetch of one page
// leaves that page to the statement that runs again (FetchedPages) even when the page cache
// drops it, so only a statement that needs more pages than it may restart keeps missing.
TEST_P(ColdReadTest, AWriteThatKeepsMissingOrWhoseFetchFailsFailsAloneAndNothingIsWritten) {
  CreateTable();
  MakeCold();
  trace_->MissProbes(1'000'000);
  const absl::Status kept_missing =
      Write("UPDATE t SET s = 'lost' WHERE id = 1500 AND (SELECT count(*) FROM t) > 0");
  EXPECT_EQ(kept_missing.code(), absl::StatusCode::kUnavailable) << kept_missing;
  EXPECT_NE(kept_missing.message().find("not in memory"), std::string::npos) << kept_missing;
  EXPECT_GE(db_->stats().group_restarts, kRestartsMax);  // And BEGIN's, of the writer's open.
  trace_->MissProbes(0);

  MakeCold();
  // Page 1 back in the writer's cache, so that it is the statement's fetch that fails.
  ASSERT_TRUE(Write("UPDATE t SET s = s WHERE id = 2").ok());
  const uint64_t restarts = db_->stats().group_restarts;
  trace_->MissProbes(1'000'000);
  trace_->FailNth(io::OpKind::kRead, 1, EIO, /*persistent=*/true);
  const absl::Status fetch_failed = Write("UPDATE t SET s = 'lost' WHERE id = 1500");
  EXPECT_EQ(fetch_failed.code(), absl::StatusCode::kUnavailable) << fetch_failed;
  EXPECT_NE(fetch_failed.message().find("Input/output error"), std::string::npos) << fetch_failed;
  EXPECT_EQ(db_->stats().group_restarts, restarts + 1) << "the failed fetch was retried";
  trace_->ClearFaults();
  trace_->MissProbes(0);

  EXPECT_EQ(Read("SELECT count(*) FROM t WHERE s = 'lost'"), "0|\n");
  ASSERT_TRUE(Write("UPDATE t SET s = 'kept' WHERE id = 1500").ok());
  EXPECT_EQ(Read("SELECT s FROM t WHERE id = 1500"), "'kept'|\n");
}

// A point read that stops on a page not in memory fetches exactly that page, and when it runs
// again it copies the page from its fetch instead of asking the page cache a second time
// (FetchedPages): one restart, one page from the fetch, the right row.
TEST_P(ColdReadTest, AReadThatRunsAgainTakesItsPageFromItsFetch) {
  CreateTable();
  db_->ReleaseMemory();  // The reader's cache: its next read asks the VFS for every page.
  trace_->MissProbes(1);
  const uint64_t restarts = db_->stats().read_restarts;
  const uint64_t from_fetch = vfs_->stats().reads_from_fetch;
  EXPECT_EQ(Read("SELECT length(s), substr(s, 117) FROM t WHERE id = ?", {Value::Int(1500)}),
            "120|'1500'|\n");
  EXPECT_EQ(db_->stats().read_restarts, restarts + 1) << "the read did not stop once";
  EXPECT_EQ(vfs_->stats().reads_from_fetch, from_fetch + 1)
      << "the read that ran again asked the page cache for the page its fetch had read";
}

// A scan that delivered rows and then stops on a page not in memory: its rows are voided
// (on_rows_discarded) and delivered again, once each, in the run that completes.
TEST_P(ColdReadTest, AReadThatStopsOnAMissVoidsItsRowsAndRunsAgain) {
  DatabaseOptions options;
  options.rows_per_tick = 7;  // The scan yields, so a miss can come after delivered rows.
  CreateTable(options);
  Probe p;
  Prime(p, Request::Kind::kRead, "SELECT id FROM t");
  ASSERT_TRUE(db_->Submit(p.request).ok());
  while (p.rows.empty() && !p.done) ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  ASSERT_FALSE(p.done);
  // The pages after the scan's current one leave SQLite's cache, and the next read of one
  // finds it gone from the page cache too (kernel readahead would bring a real file's back).
  db_->ReleaseMemory();
  trace_->MissProbes(1);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(p.done);
  ASSERT_TRUE(p.status.ok()) << p.status;
  std::string expected;
  for (int id = 1; id <= kRows; ++id) absl::StrAppend(&expected, id, "|\n");
  EXPECT_EQ(p.rows, expected);
  EXPECT_EQ(p.discards, 1) << "no miss came after a delivered row";
  EXPECT_EQ(db_->stats().read_restarts, 1U);
}

// The page cache never keeps what the read needs: it fails with Unavailable after a bounded
// number of restarts instead of looping, and the database stays usable.
TEST_P(ColdReadTest, AReadThatKeepsMissingFailsAfterBoundedRestarts) {
  CreateTable();
  MakeCold();
  trace_->MissProbes(1'000'000);
  std::string rows;
  const absl::Status failed = Run(Request::Kind::kRead, kScan, {}, &rows);
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_NE(failed.message().find("not in memory"), std::string::npos) << failed;
  EXPECT_EQ(db_->stats().read_restarts, kRestartsMax);
  trace_->MissProbes(0);
  EXPECT_EQ(Read(kScan), kScanRows);
}

// Reads that start together on a cold database all miss the same page first (the root of the
// table's B-tree): the first read's fetch brings it in for all of them, and the others wait for
// that fetch instead of each reading the same page (Database::JoinFetch). They know it before
// asking the page cache: a miss inside a window being fetched costs no probe.
TEST_P(ColdReadTest, ReadsThatMissTheSamePageShareOneFetch) {
  CreateTable();
  constexpr int kReads = 4;
  trace_->MissProbes(1);  // The first read's; the simulator's page cache misses anyway.
  db_->ReleaseMemory();
  const uint64_t fetches = db_->stats().fetches;
  const uint64_t asked = trace_->probes();
  const uint64_t in_flight = vfs_->stats().misses_in_flight;
  Probe probes[kReads];
  for (Probe& p : probes) {
    Prime(p, Request::Kind::kRead, "SELECT substr(s, 117) FROM t WHERE id = ?", {Value::Int(777)});
    ASSERT_TRUE(db_->Submit(p.request).ok());
  }
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  for (Probe& p : probes) {
    EXPECT_TRUE(p.status.ok()) << p.status;
    EXPECT_EQ(p.rows, "'0777'|\n");
  }
  EXPECT_EQ(db_->stats().read_restarts, uint64_t{kReads}) << "not every read missed";
  EXPECT_EQ(db_->stats().fetches - fetches, 1U) << "the reads fetched the same page each";
  EXPECT_EQ(db_->stats().fetches_joined, uint64_t{kReads - 1});
  EXPECT_EQ(vfs_->stats().misses_in_flight - in_flight, uint64_t{kReads - 1})
      << "a read that joined the fetch asked the page cache first";
  // The first read's miss, and the page under it when it runs again: the joined reads' runs
  // found what they needed in memory, and their misses asked nothing.
  EXPECT_EQ(trace_->probes() - asked, 2U) << "a read that joined the fetch asked the page cache";
}

// Cancel and Close reach a read while its fetch is in flight.
TEST_P(ColdReadTest, CancelAndCloseStopAReadWhoseFetchIsInFlight) {
  CreateTable();
  trace_->MissProbes(1);
  db_->ReleaseMemory();
  Probe cancelled;
  Prime(cancelled, Request::Kind::kRead, kScan);
  SubmitUntilFetching(cancelled);
  ASSERT_EQ(cancelled.request.state(), Request::State::kFetching);
  EXPECT_TRUE(db_->Cancel(cancelled.request));
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled) << cancelled.status;

  trace_->MissProbes(1);
  db_->ReleaseMemory();
  Probe closed;
  Prime(closed, Request::Kind::kRead, kScan);
  SubmitUntilFetching(closed);
  ASSERT_EQ(closed.request.state(), Request::State::kFetching);
  EXPECT_TRUE(CloseDb().ok());
  EXPECT_TRUE(closed.done);
  EXPECT_EQ(closed.status.code(), absl::StatusCode::kCancelled) << closed.status;
}

// Two databases on one loop: while the cold one's read waits for its fetch, the hot one's
// reads are answered. Before reads could stop on a miss, the cold read held the loop inside
// SQLite until its data came in, so no hot read could finish first.
TEST_P(ColdReadTest, TheLoopServesAHotDatabaseWhileAColdOneFetches) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  std::unique_ptr<Database> opened = OpenOther(dir_->Path("hot.sqlite"));
  ASSERT_NE(opened, nullptr);
  Database& hot = *opened;
  auto run_on_hot = [&](Request::Kind kind, const char* sql) {
    Probe p;
    Prime(p, kind, sql);
    EXPECT_TRUE(hot.Submit(p.request).ok());
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_TRUE(p.status.ok()) << p.status;
  };
  run_on_hot(Request::Kind::kWrite, "CREATE TABLE h(x)");
  run_on_hot(Request::Kind::kWrite, "INSERT INTO h VALUES (42)");
  MakeCold();  // Both databases' files leave the page cache...
  run_on_hot(Request::Kind::kRead, "SELECT x FROM h");  // ... and the hot one reads its back.
  const uint64_t waited = loop_->stats().waited_ops;

  // DONTNEED is advice and readahead may bring pages back: the cold read's first probes are
  // also told to miss, so it fetches (at least three times, so over several ticks) for sure.
  trace_->MissProbes(3);
  Probe cold;
  Prime(cold, Request::Kind::kRead, kScan);
  SubmitUntilFetching(cold);
  ASSERT_EQ(cold.request.state(), Request::State::kFetching) << "the cold read did not miss";
  int hot_reads = 0;
  while (!cold.done && hot_reads < 1000) {
    Probe p;
    Prime(p, Request::Kind::kRead, "SELECT x FROM h");
    ASSERT_TRUE(hot.Submit(p.request).ok());
    while (!p.done) ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    EXPECT_EQ(p.rows, "42|\n");
    if (!cold.done) ++hot_reads;
  }
  EXPECT_GE(hot_reads, 1) << "no hot read finished while the cold read fetched";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(cold.status.ok()) << cold.status;
  EXPECT_EQ(cold.rows, kScanRows);
  EXPECT_EQ(loop_->stats().waited_ops, waited) << "a read waited for the disk on the loop";
  EXPECT_TRUE(CloseAndRun(hot).ok());
}

// A close while a group waits for its fetch lets the group finish: its writes were admitted,
// so they commit and are acknowledged before the close reports. And a write whose conflict
// clause is ROLLBACK, which SQLite answers by rolling the whole transaction back, still runs
// again after its fetch, its group with it, and commits once.
TEST_P(ColdReadTest, AGroupWaitingForItsFetchFinishesAtCloseAndARolledBackOneRunsAfresh) {
  CreateTable();
  ASSERT_TRUE(Write("UPDATE t SET s = s WHERE id = 2").ok());  // BEGIN's page 1 stays warm.
  for (const char* sql : {"UPDATE OR ROLLBACK t SET s = 'rolled' WHERE id = 1500",
                          "UPDATE t SET s = 'closed' WHERE id = 2999"}) {
    const bool closing = std::string_view(sql).find("closed") != std::string_view::npos;
    Probe first;
    Probe second;
    Prime(first, Request::Kind::kWrite, "UPDATE t SET s = 'first' WHERE id = 3");
    Prime(second, Request::Kind::kWrite, sql);
    trace_->MissProbes(1);  // The second write's first page read misses, for sure.
    const uint64_t restarts = db_->stats().group_restarts;
    ASSERT_TRUE(db_->Submit(first.request).ok());
    ASSERT_TRUE(db_->Submit(second.request).ok());
    while (db_->stats().group_restarts == restarts && !second.done) {
      ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    }
    ASSERT_FALSE(second.done) << sql << ": it did not miss";
    if (closing) {
      ASSERT_TRUE(CloseDb().ok());
    } else {
      ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    }
    ASSERT_TRUE(first.done && second.done);
    EXPECT_TRUE(first.status.ok()) << first.status;
    EXPECT_TRUE(second.status.ok()) << sql << ": " << second.status;
    EXPECT_EQ(second.request.changes, 1);
  }
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT id, s FROM t WHERE id IN (3, 1500, 2999) ORDER BY id"),
            "3|'first'|\n1500|'rolled'|\n2999|'closed'|\n");
}

// A read that misses inside the window a write's group is fetching waits for that fetch
// (JoinFetch), and runs again when it ends, like a read that joined another read's fetch. On
// the simulator, whose device takes its latency, so the read starts while the fetch is in
// flight. Found by the simulator (db_reads seed 2997): the read stayed in kFetching for ever.
TEST_P(ColdReadTest, AReadThatJoinsAGroupsFetchRunsWhenItEnds) {
  if (!simulated()) GTEST_SKIP() << "needs the simulator's device latency";
  CreateTable();
  ASSERT_TRUE(Write("UPDATE t SET s = s WHERE id = 2").ok());  // The writer is open.
  MakeCold();
  Probe write;
  Prime(write, Request::Kind::kWrite, "UPDATE t SET s = 'joined' WHERE id = 1500");
  const uint64_t restarts = db_->stats().group_restarts;
  ASSERT_TRUE(db_->Submit(write.request).ok());
  // Its BEGIN misses page 1, then its statement the table's root page, which the read needs
  // first: the read starts while the group fetches that page.
  while (db_->stats().group_restarts < restarts + 2 && !write.done) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  ASSERT_FALSE(write.done) << "the write did not miss";
  const uint64_t joined = db_->stats().fetches_joined;
  Probe read;
  Prime(read, Request::Kind::kRead, "SELECT length(s) FROM t WHERE id = 1500");
  SubmitUntilFetching(read);
  ASSERT_EQ(db_->stats().fetches_joined, joined + 1) << "the read did not join the group's fetch";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(read.done) << "the read was left waiting for a fetch that ended";
  EXPECT_TRUE(read.status.ok()) << read.status;
  EXPECT_EQ(read.rows, "120|\n");
  ASSERT_TRUE(write.done);
  EXPECT_TRUE(write.status.ok()) << write.status;
  EXPECT_EQ(Read("SELECT s FROM t WHERE id = 1500"), "'joined'|\n");
}

// A checkpoint reads the WAL's frames from memory only: one that misses stops, the writer
// waits for the missed window, and the checkpoint runs again; no read waits on the loop. The
// probes after the group's commit are the re-pin of the reader that served while the group
// synced (page 1) and then the checkpoint's: the second is told to miss (the kernel keeps
// frames just written).
TEST_P(ColdReadTest, ACheckpointThatMissesAFrameFetchesItAndRunsAgain) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  DatabaseOptions options;
  options.checkpoint_frames = 32;
  CreateTable(options);
  Probe write;
  Prime(write, Request::Kind::kWrite, "UPDATE t SET s = printf('%0120d', id + 1)");
  const uint64_t checkpoints = db_->stats().checkpoints;
  ASSERT_NO_FATAL_FAILURE(SubmitUntilCommitted(write));
  ASSERT_EQ(db_->stats().checkpoints, checkpoints) << "checkpointed with the group";
  const uint64_t waited = vfs_->stats().reads_waited;
  trace_->MissProbes(1, /*skip=*/1);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(write.done);
  EXPECT_TRUE(write.status.ok()) << write.status;
  EXPECT_EQ(db_->stats().checkpoint_restarts, 1U) << "the checkpoint never stopped";
  EXPECT_GE(db_->stats().checkpoints, checkpoints + 2) << "it did not run again";
  EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U) << "the checkpoint waited for the disk";
  EXPECT_EQ(Read("SELECT count(*) FROM t WHERE CAST(s AS INTEGER) = id + 1"), "3000|\n");
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(OpenDb(options).ok());
  EXPECT_EQ(Read(kScan),
            absl::StrCat(kRows, "|", kRows * 120, "|", kRows * (kRows + 1) / 2, "|\n"));
}

// A reader's pin reads page 1 (the schema cookie) from memory only: after a group's fsync the
// reader that served meanwhile is pinned at the group, and when page 1 is not in memory the pin
// stops, fetches it and pins again; the write is acknowledged once the reader shows it, and no
// read waits on the loop. The first probe after the commit is that pin's, told to miss (the
// kernel keeps what was just written).
TEST_P(ColdReadTest, APinThatMissesPageOneFetchesItAndPinsAgain) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  ASSERT_EQ(db_->readers_open(), 1U);
  Probe write;
  Prime(write, Request::Kind::kWrite, "UPDATE t SET s = 'pinned' WHERE id = 7");
  const uint64_t pins = db_->stats().snapshot_pins;
  ASSERT_NO_FATAL_FAILURE(SubmitUntilCommitted(write));
  ASSERT_EQ(db_->stats().snapshot_pins, pins) << "the reader was pinned with the group";
  EvictFiles();
  const uint64_t waited = vfs_->stats().reads_waited;
  trace_->MissProbes(1);
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(write.done);
  EXPECT_TRUE(write.status.ok()) << write.status;
  EXPECT_GE(db_->stats().pin_restarts, 1U) << "the pin never stopped";
  EXPECT_GT(db_->stats().snapshot_pins, pins) << "the reader was not pinned again";
  EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U) << "the pin waited for the disk";
  EXPECT_EQ(Read("SELECT s FROM t WHERE id = 7"), "'pinned'|\n");
}

// A reader opened because every open one is busy reads the file's header from memory only:
// a miss leaves it unopened and fetches the header, and the next pump opens it; the read that
// needed it runs on it, and no read waits on the loop. The scan, one row a tick, keeps the
// first reader busy from its cached pages; the next probe is the new reader's open, told to
// miss. (On the simulator the fetch completes in virtual time, which moves only once the loop
// has nothing to run: the scan ends first and the point read takes its reader.)
TEST_P(ColdReadTest, AReaderOpenedForABusyMomentThatMissesFetchesAndOpens) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  DatabaseOptions options;
  options.rows_per_tick = 1;
  options.readers = 2;
  CreateTable(options);
  EXPECT_EQ(Read(kScan), kScanRows);  // The first reader's cache holds every page.
  ASSERT_EQ(db_->readers_open(), 1U);
  Probe scan;
  Prime(scan, Request::Kind::kRead, "SELECT id FROM t WHERE id <= 300");
  ASSERT_TRUE(db_->Submit(scan.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  ASSERT_FALSE(scan.done) << "the scan did not stay on its reader";
  const uint64_t waited = vfs_->stats().reads_waited;
  const uint64_t pin_restarts = db_->stats().pin_restarts;
  trace_->MissProbes(1);
  Probe point;
  Prime(point, Request::Kind::kRead, "SELECT s FROM t WHERE id = 42");
  ASSERT_TRUE(db_->Submit(point.request).ok());
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  ASSERT_TRUE(point.done && scan.done);
  EXPECT_TRUE(point.status.ok()) << point.status;
  EXPECT_EQ(point.rows, absl::StrFormat("'%0120d'|\n", 42));
  EXPECT_EQ(std::count(scan.rows.begin(), scan.rows.end(), '\n'), 300);
  if (!simulated()) {
    EXPECT_EQ(db_->readers_open(), 2U) << "no second reader opened";
  }
  EXPECT_GE(db_->stats().pin_restarts, pin_restarts + 1) << "the reader's open never stopped";
  EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U) << "the reader's open waited for the disk";
}

// A close copies what is left of the WAL into the main file (SQLite's checkpoint, inside the
// writer's close, reads it by waiting). With the WAL out of memory the close checkpoints first,
// from memory only, fetching what it missed, as every checkpoint does; a writer that was closed
// idle opens again to close last, its setup reading from memory only too. No read waits on the
// loop, and every write is there after the close.
TEST_P(ColdReadTest, ACloseWithTheWalOutOfMemoryMakesTheLoopWaitForNothing) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  for (const bool trimmed : {false, true}) {
    SCOPED_TRACE(trimmed ? "the writer closed idle" : "the writer open");
    ASSERT_TRUE(
        Write(absl::StrFormat("UPDATE t SET s = printf('%%0120d', id + %d)", trimmed ? 2 : 1))
            .ok());
    if (trimmed) {
      ASSERT_TRUE(db_->CloseWriterIfIdle());
    }
    EvictFiles();
    const uint64_t waited = vfs_->stats().reads_waited;
    const uint64_t checkpoints = db_->stats().checkpoints;
    trace_->MissProbes(1);
    ASSERT_TRUE(CloseDb().ok());
    EXPECT_GT(db_->stats().checkpoints, checkpoints) << "the close did not checkpoint first";
    EXPECT_GE(db_->stats().checkpoint_restarts + db_->stats().group_restarts, 1U)
        << "the close never stopped on a miss";
    EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U) << "the close waited for the disk";
    ASSERT_TRUE(OpenDb().ok());
    EXPECT_EQ(Read(absl::StrFormat("SELECT count(*) FROM t WHERE CAST(s AS INTEGER) = id + %d",
                                   trimmed ? 2 : 1)),
              "3000|\n");
  }
}

// A close that comes while the last group's fsync is in flight waits for it, then checkpoints
// from memory only like every close: SQLite's checkpoint inside the writer's close reads nothing.
// (The close used to skip its own checkpoint unless the writer was idle already.)
TEST_P(ColdReadTest, ACloseDuringAGroupsFsyncCheckpointsFromMemoryFirst) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  CreateTable();
  Probe write;
  Prime(write, Request::Kind::kWrite, "UPDATE t SET s = printf('%0120d', id + 1)");
  ASSERT_NO_FATAL_FAILURE(SubmitUntilCommitted(write));
  ASSERT_FALSE(write.done) << "acknowledged before its fsync completed";
  const uint64_t closes_unsettled = db_->stats().closes_writer_unsettled;
  const uint64_t waited = vfs_->stats().reads_waited;
  const uint64_t checkpoints = db_->stats().checkpoints;
  trace_->MissProbes(1);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_TRUE(write.done);
  EXPECT_TRUE(write.status.ok()) << write.status;
  EXPECT_GT(db_->stats().checkpoints, checkpoints) << "the close did not checkpoint first";
  EXPECT_EQ(db_->stats().closes_writer_unsettled, closes_unsettled + 1)
      << "the close did not wait for the group's fsync";
  EXPECT_GE(db_->stats().checkpoint_restarts, 1U) << "the close's checkpoint never missed";
  EXPECT_EQ(vfs_->stats().reads_waited - waited, 0U) << "the close waited for the disk";
  ASSERT_TRUE(OpenDb().ok());
  EXPECT_EQ(Read("SELECT count(*) FROM t WHERE CAST(s AS INTEGER) = id + 1"), "3000|\n");
}

// A WAL left with frames in it (here by a close whose checkpoint failed on a write error; a
// crash leaves one the same way) is read whole by SQLite's recovery at the next open: by the
// open's own statements when the writer opens with the database (to checkpoint it ahead of the
// integrity check), else by the first reader's pin. The open reads it into memory through the
// loop first (FilePreopen), so the recovery neither waits (it did, twice here, in the first
// case) nor stops on a miss (the pin restarted 2-10 times in the second), and every row is
// there. On the simulator every integrity check runs on the loop, reading the file by waiting,
// so only the second case runs there.
TEST_P(ColdReadTest, AnOpenThatRecoversAColdWalMakesTheLoopWaitForNothing) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  VfsOptions vfs_options;
  vfs_options.wal_reserve_bytes = 0;
  ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));
  CreateTable();
  const std::vector<bool> checks =
      simulated() ? std::vector<bool>{false} : std::vector<bool>{false, true};
  for (const bool check : checks) {
    SCOPED_TRACE(check ? "checked at open" : "not checked at open");
    const int round = check ? 2 : 1;
    ASSERT_TRUE(Write(absl::StrFormat("UPDATE t SET s = printf('%%0120d', id + %d)", round)).ok());
    trace_->FailNth(io::OpKind::kWrite, 1, EIO);
    (void)CloseDb();  // The failed write may poison the database: the WAL stays either way.
    trace_->ClearFaults();
    ASSERT_GT(WalBytes(), 100'000) << "the close emptied the WAL";
    ASSERT_NO_FATAL_FAILURE(MakeVfs(vfs_options));  // A new process.
    EvictFiles();
    DatabaseOptions options;
    options.check_at_open = check;
    ASSERT_TRUE(OpenDb(options).ok());
    EXPECT_GT(vfs_->stats().wal_bytes_warmed, 100'000U) << "the open did not read the WAL ahead";
    EXPECT_EQ(vfs_->stats().reads_waited, 0U) << "the open waited for the disk";
    EXPECT_EQ(db_->stats().pin_restarts + db_->stats().group_restarts, 0U)
        << "the recovery stopped on a miss";
    EXPECT_EQ(
        Read(absl::StrFormat("SELECT count(*) FROM t WHERE CAST(s AS INTEGER) = id + %d", round)),
        "3000|\n");
  }
}

// The integrity check of a small file runs on the loop at the file's first open in a process
// and reads the whole file: the open reads it into memory through the loop first, so with the
// file out of memory the check waits for nothing (it waited without that).
TEST_P(ColdReadTest, AnOpenThatChecksAColdSmallFileMakesTheLoopWaitForNothing) {
  if (OnTmpfs()) GTEST_SKIP() << "the scratch directory is on tmpfs";
  DatabaseOptions options;
  options.check_on_loop_bytes_max = 4 << 20;  // The table's ~400 KB file is small here.
  CreateTable(options);
  ASSERT_TRUE(CloseDb().ok());
  ASSERT_NO_FATAL_FAILURE(MakeVfs());  // A new process: the file is new to its Vfs.
  EvictFiles();
  ASSERT_TRUE(OpenDb(options).ok());
  EXPECT_EQ(db_->stats().integrity_checks, 1U);
  EXPECT_EQ(db_->stats().integrity_checks_off_loop, 0U) << "not the check this test is about";
  EXPECT_GT(vfs_->stats().main_bytes_warmed, 100'000U) << "the open did not read the file ahead";
  EXPECT_EQ(vfs_->stats().reads_waited, 0U) << "the check waited for the disk";
  EXPECT_EQ(Read(kScan), kScanRows);
}

// The same for a write: while the cold database's group waits for its fetch (the writer in
// kFetching, its transaction open), the hot database's reads and writes keep completing, in
// virtual time on the simulator, whose device takes its latency for the fetch (a real device
// may answer within the tick, which would prove nothing).
TEST_P(ColdReadTest, TheLoopServesAHotDatabaseWhileAColdOnesWriteFetches) {
  if (!simulated()) GTEST_SKIP() << "needs the simulator's device latency";
  CreateTable();
  ASSERT_TRUE(Write("UPDATE t SET s = s WHERE id = 2").ok());  // The writer is open.
  std::unique_ptr<Database> opened = OpenOther(dir_->Path("hot.sqlite"));
  ASSERT_NE(opened, nullptr);
  Database& hot = *opened;
  auto run_on_hot = [&](Request::Kind kind, const char* sql, const char* rows) {
    Probe p;
    Prime(p, kind, sql);
    ASSERT_TRUE(hot.Submit(p.request).ok());
    while (!p.done) ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
    EXPECT_TRUE(p.status.ok()) << p.status;
    EXPECT_EQ(p.rows, rows);
  };
  run_on_hot(Request::Kind::kWrite, "CREATE TABLE h(x)", "");
  MakeCold();  // The cold database's files leave the page cache, the hot one's too...
  run_on_hot(Request::Kind::kWrite, "INSERT INTO h VALUES (42)", "");  // ... and come back.
  const uint64_t reads_waited = vfs_->stats().reads_waited;
  const int64_t started_ns = loop_->now_ns();

  Probe cold;
  Prime(cold, Request::Kind::kWrite, "UPDATE t SET s = 'warm' WHERE id = 1500");
  ASSERT_TRUE(db_->Submit(cold.request).ok());
  while (db_->stats().group_restarts == 0 && !cold.done) {
    ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
  }
  ASSERT_FALSE(cold.done) << "the cold write did not miss";
  int hot_requests = 0;
  while (!cold.done && hot_requests < 1000) {
    run_on_hot(Request::Kind::kRead, "SELECT x FROM h LIMIT 1", "42|\n");
    run_on_hot(Request::Kind::kWrite, "UPDATE h SET x = 42", "");
    if (!cold.done) hot_requests += 2;
  }
  EXPECT_GE(hot_requests, 2) << "nothing of the hot database finished while the cold write fetched";
  ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  EXPECT_TRUE(cold.status.ok()) << cold.status;
  EXPECT_EQ(Read("SELECT s FROM t WHERE id = 1500"), "'warm'|\n");
  EXPECT_GT(loop_->now_ns(), started_ns);
  EXPECT_EQ(vfs_->stats().reads_waited, reads_waited) << "a write's read waited on the loop";
  EXPECT_TRUE(CloseAndRun(hot).ok());
}

// Reads stop starting once the tick has used its budget, and the rest start on the next
// ticks: with a budget of zero, every eighth start yields. Each read still gets its row.
TEST_P(ColdReadTest, ABurstOfReadsIsSpreadOverTicksOnceTheBudgetIsUsed) {
  for (const int64_t budget : {kReadsTickBudgetNs, int64_t{0}}) {
    DatabaseOptions options;
    options.read_tick_budget_ns = budget;
    path_ = dir_->Path(absl::StrCat("budget-", budget, ".sqlite"));
    CreateTable(options);
    constexpr int kReads = 40;
    std::vector<Probe> reads(kReads);
    std::vector<uint64_t> ticks;
    for (int i = 0; i < kReads; ++i) {
      Prime(reads[i], Request::Kind::kRead, "SELECT id FROM t WHERE id = ?", {Value::Int(i + 1)});
      ASSERT_TRUE(db_->Submit(reads[i].request).ok());
    }
    while (std::any_of(reads.begin(), reads.end(), [](const Probe& p) { return !p.done; })) {
      ASSERT_TRUE(loop_->Run(loop::RunMode::kOnce).ok());
      ticks.push_back(loop_->stats().ticks);
    }
    for (int i = 0; i < kReads; ++i) EXPECT_EQ(reads[i].rows, absl::StrCat(i + 1, "|\n"));
    if (budget == 0) {
      EXPECT_GE(db_->stats().read_ticks_cut_short, uint64_t{kReads / 8});
      EXPECT_GE(ticks.size(), size_t{kReads / 8}) << "the reads did not wait for later ticks";
    } else if (simulated()) {
      EXPECT_EQ(db_->stats().read_ticks_cut_short, 0U) << "virtual time stands still in a tick";
    }
    ASSERT_TRUE(CloseDb().ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ColdReadTest, ::testing::ValuesIn(DbTestBackends()),
                         BackendParamName);

}  // namespace
}  // namespace sqloop::db::testing
