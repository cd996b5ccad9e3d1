// bench/sqlite/plain_conn.h
// -----------------------------------------------------------------------------
//
// One plain SQLite connection as the thread-based baselines use it (the futures executor and
// the open-loop drivers of sqloop_bench_load): SQLite's default VFS and threading mode, WAL,
// synchronous=FULL, a busy timeout, and the point SELECT and the INSERT of the suite prepared
// once. A connection belongs to one thread at a time.
//
// Example:
//
//   PlainConnection conn;
//   if (!conn.Open(path, /*reads=*/true, /*writer=*/0)) ...;
//   bool ok = conn.Read(42) && conn.Insert(/*seq=*/1);
#ifndef SQLOOP_BENCH_SQLITE_PLAIN_CONN_H_
#define SQLOOP_BENCH_SQLITE_PLAIN_CONN_H_

#include <sqlite3.h>

#include <cstdint>
#include <string>

namespace sqloop::bench {

class PlainConnection {
 public:
  PlainConnection() = default;
  ~PlainConnection();
  PlainConnection(const PlainConnection&) = delete;
  PlainConnection& operator=(const PlainConnection&) = delete;

  // Opens `path` (which must already be in WAL mode with the write table) and prepares the
  // INSERT, and the point SELECT if `reads` (only the mixed databases hold the read table).
  // Rows it inserts carry `writer` in their writer column. False on any error.
  [[nodiscard]] bool Open(const std::string& path, bool reads, int64_t writer);
  // The point read of row `id`, checked against the values the row was built with.
  [[nodiscard]] bool Read(int64_t id);
  // One durable INSERT with `seq`, retrying SQLITE_BUSY up to kBusyRetriesMax times.
  [[nodiscard]] bool Insert(int64_t seq);

  // SQLITE_BUSY results seen (each after the busy timeout ran out) and retried.
  [[nodiscard]] uint64_t busy() const { return busy_; }
  [[nodiscard]] const char* errmsg() const;

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* select_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  uint64_t busy_ = 0;
};

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_PLAIN_CONN_H_
