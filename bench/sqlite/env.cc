#include "bench/sqlite/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sqloop::bench {
namespace {

// Removes the scratch directory at exit (benchmarks leave their files there).
class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sqloop_bench_sqlite_XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) {
      std::perror("sqloop_bench_sqlite: mkdtemp");
      std::abort();
    }
    path_ = templ;
  }
  ~ScratchDir() {
    if (DIR* d = opendir(path_.c_str()); d != nullptr) {
      while (dirent* entry = readdir(d)) {
        if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) {
          continue;
        }
        (void)unlink((path_ + "/" + entry->d_name).c_str());
      }
      closedir(d);
    }
    (void)rmdir(path_.c_str());
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

uint64_t Mix(uint64_t x) { return Prng{x}.Next(); }

// The row's text: Mix(id) and Mix(~id) as 32 lower-case hex digits. Hand-formatted because
// the readers check every row they read, and snprintf would cost more than the read itself.
void FormatText(int64_t id, char (&out)[kTextBytes]) {
  constexpr char kDigits[] = "0123456789abcdef";
  const uint64_t halves[2] = {Mix(static_cast<uint64_t>(id)), Mix(~static_cast<uint64_t>(id))};
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 16; ++i) out[h * 16 + i] = kDigits[(halves[h] >> (60 - 4 * i)) & 0xf];
  }
}

// Reads the whole file once so the first measured reads do not pay for the disk.
void WarmPageCache(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::vector<char> chunk(1 << 20);
  while (read(fd, chunk.data(), chunk.size()) > 0) {
  }
  close(fd);
}

std::string BuildReadDb() {
  std::string path = BenchDir() + "/read.db";
  BuildReadTable(path, kReadRows);
  WarmPageCache(path);
  return path;
}

}  // namespace

int64_t ExpectedValue(int64_t id) {
  return static_cast<int64_t>(Mix(static_cast<uint64_t>(id)) >> 2);
}

bool TextMatches(int64_t id, absl::string_view text) {
  char expected[kTextBytes];
  FormatText(id, expected);
  return text == absl::string_view(expected, kTextBytes);
}

const std::string& BenchDir() {
  static const ScratchDir dir;
  return dir.path();
}

const std::string& ReadDbPath() {
  static const std::string path = BuildReadDb();
  return path;
}

void BuildReadTable(const std::string& path, int64_t rows) {
  sqlite3* db = OpenPlain(path, nullptr, /*no_mutex=*/true);
  bool ok =
      db != nullptr && Exec(db, "PRAGMA journal_mode=WAL") &&
      Exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, s TEXT NOT NULL)") &&
      Exec(db, "BEGIN");
  sqlite3_stmt* insert = nullptr;
  ok = ok && sqlite3_prepare_v2(db, "INSERT INTO t(id, v, s) VALUES (?, ?, ?)", -1, &insert,
                                nullptr) == SQLITE_OK;
  char text[kTextBytes];
  for (int64_t id = 1; ok && id <= rows; ++id) {
    FormatText(id, text);
    sqlite3_bind_int64(insert, 1, id);
    sqlite3_bind_int64(insert, 2, ExpectedValue(id));
    sqlite3_bind_text(insert, 3, text, static_cast<int>(kTextBytes), SQLITE_TRANSIENT);
    ok = sqlite3_step(insert) == SQLITE_DONE && sqlite3_reset(insert) == SQLITE_OK;
  }
  sqlite3_finalize(insert);
  ok = ok && Exec(db, "COMMIT") && Exec(db, "PRAGMA wal_checkpoint(TRUNCATE)") &&
       QueryInt(db, "SELECT count(*) FROM t") == rows;
  sqlite3_close_v2(db);
  if (!ok) {
    std::fprintf(stderr, "sqloop_bench_sqlite: building %s failed\n", path.c_str());
    std::abort();
  }
}

std::string FreshDbPath(absl::string_view stem) {
  static std::atomic<uint64_t> next{0};
  return absl::StrCat(BenchDir(), "/", stem, "-", next++, ".db");
}

bool CopyDb(const std::string& from, const std::string& to) {
  const int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  const int out = open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = in >= 0 && out >= 0;
  // On the stack: the Zipf benchmarks copy a small file 100,000 times, and a zero-filled MiB
  // per copy was most of that.
  char chunk[64 << 10];
  for (ssize_t n = 0; ok && (n = read(in, chunk, sizeof chunk)) != 0;) {
    ok = n > 0 && write(out, chunk, static_cast<size_t>(n)) == n;
  }
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  return ok;
}

void RemoveDb(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    (void)unlink((path + suffix).c_str());
  }
}

sqlite3* OpenPlain(const std::string& path, const char* vfs, bool no_mutex) {
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                    (no_mutex ? SQLITE_OPEN_NOMUTEX : SQLITE_OPEN_FULLMUTEX);
  if (sqlite3_open_v2(path.c_str(), &db, flags, vfs) != SQLITE_OK) {
    sqlite3_close_v2(db);
    return nullptr;
  }
  return db;
}

bool Exec(sqlite3* db, const char* sql) {
  return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
}

bool StepPointRead(sqlite3_stmt* select, int64_t id) {
  sqlite3_bind_int64(select, 1, id);
  bool ok = sqlite3_step(select) == SQLITE_ROW &&
            sqlite3_column_int64(select, 0) == ExpectedValue(id) &&
            TextMatches(
                id, absl::string_view(reinterpret_cast<const char*>(sqlite3_column_text(select, 1)),
                                      static_cast<size_t>(sqlite3_column_bytes(select, 1))));
  ok = sqlite3_step(select) == SQLITE_DONE && ok;
  sqlite3_reset(select);
  return ok;
}

int64_t QueryInt(sqlite3* db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  int64_t value = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    value = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  return value;
}

absl::Status VerifyWrites(const std::string& path, uint64_t rows, int64_t seq_sum) {
  sqlite3* db = OpenPlain(path, nullptr, /*no_mutex=*/true);
  if (db == nullptr) return absl::InternalError("cannot reopen the database to verify it");
  const int64_t count = QueryInt(db, "SELECT count(*) FROM w");
  const int64_t sum = QueryInt(db, "SELECT coalesce(sum(seq), 0) FROM w");
  sqlite3_close_v2(db);
  if (count != static_cast<int64_t>(rows) || sum != seq_sum) {
    return absl::InternalError(absl::StrCat("the file holds ", count, " rows (seq sum ", sum,
                                            "); acknowledged: ", rows, " (seq sum ", seq_sum, ")"));
  }
  return absl::OkStatus();
}

int64_t CacheMisses(sqlite3* db) {
  int current = 0;
  int highwater = 0;
  sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_MISS, &current, &highwater, /*resetFlg=*/0);
  return current;
}

bool QuickMode() {
  const char* quick = std::getenv("SQLOOP_BENCH_QUICK");
  return quick != nullptr && *quick != '\0' && *quick != '0';
}

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ThreadCpuNs() {
  timespec t{};
  SQLOOP_CHECK(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0, "bench: thread CPU clock");
  return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

double Latencies::QuantileUs(double q) {
  if (samples_ns_.empty()) return 0;
  if (!sorted_) {
    std::sort(samples_ns_.begin(), samples_ns_.end());
    sorted_ = true;
  }
  const auto index = static_cast<size_t>(q * static_cast<double>(samples_ns_.size() - 1));
  return static_cast<double>(samples_ns_[index]) / 1e3;
}

void SetLatencyCounters(benchmark::State& state, absl::string_view prefix, Latencies& latencies) {
  struct Stat {
    const char* name;
    double quantile;
  };
  static constexpr Stat kStats[] = {
      {"p50_us", 0.50}, {"p90_us", 0.90}, {"p99_us", 0.99}, {"p99_9_us", 0.999}, {"max_us", 1.0}};
  for (const Stat& stat : kStats) {
    state.counters[absl::StrCat(prefix, stat.name)] = latencies.QuantileUs(stat.quantile);
  }
}

void WriteLatencyFile(std::initializer_list<LatencySeries> series) {
  const char* path = std::getenv("SQLOOP_BENCH_LATENCY_FILE");
  if (path == nullptr || *path == '\0') return;
  std::FILE* file = std::fopen(path, "w");
  if (file == nullptr) return;  // The plot is optional; the counters carry the percentiles.
  // The body in steps of 5 %, then the tail at 1 - 10^-(1.25, 1.5, ..., 4): p99.99 is as far
  // from p99.9 on the report's logit axis as p90 is from p50's neighbourhood.
  std::vector<double> quantiles;
  for (int i = 1; i <= 18; ++i) quantiles.push_back(0.05 * i);
  for (int i = 5; i <= 16; ++i) quantiles.push_back(1.0 - std::pow(10.0, -0.25 * i));
  quantiles.push_back(1.0);
  for (const LatencySeries& s : series) {
    if (s.latencies->size() == 0) continue;
    for (double q : quantiles)
      std::fprintf(file, "%s %.6f %.3f\n", s.name, q, s.latencies->QuantileUs(q));
  }
  std::fclose(file);
}

// ---- SqloopEnv --------------------------------------------------------------------------------

SqloopEnv::SqloopEnv() = default;

SqloopEnv::~SqloopEnv() {
  if (db_ != nullptr && (db_->state() == db::Database::State::kReady ||
                         db_->state() == db::Database::State::kPoisoned)) {
    (void)Close();
  }
}

absl::Status SqloopEnv::Open(const std::string& path, db::DatabaseOptions options,
                             db::VfsOptions vfs_options, loop::LoopOptions loop_options) {
  absl::StatusOr<std::unique_ptr<loop::Loop>> created = loop::Loop::Create(std::move(loop_options));
  if (!created.ok()) return created.status();
  loop_ = *std::move(created);
  absl::StatusOr<std::unique_ptr<db::Vfs>> vfs = db::Vfs::Create(*loop_, vfs_options);
  if (!vfs.ok()) return vfs.status();
  vfs_ = *std::move(vfs);
  db_ = std::make_unique<db::Database>(*loop_, *vfs_, path, options);
  struct Result {
    bool done = false;
    absl::Status status;
  } result;
  db_->Open(
      [](void* arg, absl::Status status) {
        auto* r = static_cast<Result*>(arg);
        r->status = std::move(status);
        r->done = true;
      },
      &result);
  if (absl::Status run = RunUntil(result.done); !run.ok()) return run;
  return result.status;
}

absl::Status SqloopEnv::Close() {
  struct Result {
    bool done = false;
    absl::Status status;
  } result;
  db_->Close(
      [](void* arg, absl::Status status) {
        auto* r = static_cast<Result*>(arg);
        r->status = std::move(status);
        r->done = true;
      },
      &result);
  if (absl::Status run = RunUntil(result.done); !run.ok()) return run;
  // Whatever the close left (the WAL's unlink behind its barrier) must finish before the Vfs
  // and the loop go away.
  if (absl::Status run = loop_->Run(loop::RunMode::kUntilDone); !run.ok()) return run;
  return result.status;
}

absl::Status SqloopEnv::Execute(absl::string_view sql) {
  struct Result {
    bool done = false;
    absl::Status status;
  } result;
  db::Request request;
  request.kind = db::Request::Kind::kWrite;
  request.sql = sql;
  request.user_data = &result;
  request.on_done = [](db::Request& r, absl::Status status) {
    auto* out = static_cast<Result*>(r.user_data);
    out->status = std::move(status);
    out->done = true;
  };
  if (absl::Status s = db_->Submit(request); !s.ok()) return s;
  if (absl::Status s = RunUntil(result.done); !s.ok()) return s;
  return result.status;
}

absl::Status SqloopEnv::RunOnce() {
  if (loop_->pending() == 0) {
    return absl::InternalError(absl::StrCat(
        "stuck: the loop has nothing pending but requests are still waiting (database: ",
        db_->stats().groups, " groups, ", db_->stats().reads, " reads, ", db_->stats().acks_waited,
        " acks waited; files epoch ", db_->epoch(), ", durable ", db_->durable_epoch(), ")"));
  }
  return loop_->Run(loop::RunMode::kOnce);
}

absl::Status SqloopEnv::RunUntil(const bool& flag) {
  while (!flag) {
    if (absl::Status status = RunOnce(); !status.ok()) return status;
  }
  return absl::OkStatus();
}

std::string SqloopEnv::backend_name() const {
  return loop_ == nullptr ? "none" : std::string(loop_->backend().name());
}

void LabelBackend(benchmark::State& state, const std::string& backend) {
  state.SetLabel(absl::StrCat("backend=", backend));
}

}  // namespace sqloop::bench
