#include "bench/sqlite/plain_conn.h"

#include "bench/sqlite/env.h"

namespace sqloop::bench {
namespace {

// As in pool.cc: a wait for the write lock far above any wait seen here, so a SQLITE_BUSY
// means starvation, and a bounded number of retries before the operation counts as failed.
constexpr int kBusyTimeoutMs = 10'000;
constexpr int kBusyRetriesMax = 10;

}  // namespace

PlainConnection::~PlainConnection() {
  sqlite3_finalize(select_);
  sqlite3_finalize(insert_);
  sqlite3_close_v2(db_);
}

bool PlainConnection::Open(const std::string& path, bool reads, int64_t writer) {
  db_ = OpenPlain(path, nullptr, /*no_mutex=*/false);
  // The busy timeout first: opening the WAL index and reading the schema can meet another
  // thread's lock too.
  const bool ok = db_ != nullptr && sqlite3_busy_timeout(db_, kBusyTimeoutMs) == SQLITE_OK &&
                  Exec(db_, "PRAGMA synchronous=FULL;") &&
                  (!reads || sqlite3_prepare_v3(db_, kPointSelect, -1, SQLITE_PREPARE_PERSISTENT,
                                                &select_, nullptr) == SQLITE_OK) &&
                  sqlite3_prepare_v3(db_, kInsert, -1, SQLITE_PREPARE_PERSISTENT, &insert_,
                                     nullptr) == SQLITE_OK;
  if (!ok) return false;
  sqlite3_bind_int64(insert_, 1, writer);
  sqlite3_bind_text(insert_, 3, kPayload.data(), static_cast<int>(kPayload.size()), SQLITE_STATIC);
  return true;
}

bool PlainConnection::Read(int64_t id) { return select_ != nullptr && StepPointRead(select_, id); }

bool PlainConnection::Insert(int64_t seq) {
  sqlite3_bind_int64(insert_, 2, seq);
  for (int attempt = 0;; ++attempt) {
    const int rc = sqlite3_step(insert_);
    sqlite3_reset(insert_);
    if ((rc & 0xff) != SQLITE_BUSY || attempt == kBusyRetriesMax) return rc == SQLITE_DONE;
    ++busy_;
  }
}

const char* PlainConnection::errmsg() const {
  return db_ == nullptr ? "not open" : sqlite3_errmsg(db_);
}

}  // namespace sqloop::bench
