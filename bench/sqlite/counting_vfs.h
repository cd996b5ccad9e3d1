// bench/sqlite/counting_vfs.h
// -----------------------------------------------------------------------------
//
// A sqlite3_vfs that delegates every call to SQLite's default VFS ("unix" on Linux) and counts
// the file-level calls that cost a system call a benchmark wants to report: xSync (on Linux the
// unix VFS makes one fdatasync(2) per xSync, plus one fsync(2) of the directory the first time
// a newly created file is synced) and xRead/xWrite. It is how the plain-SQLite baselines report
// "fsyncs per commit" next to sqloop's own VfsStats.
//
// The wrapper adds one indirect call per file operation (nanoseconds), so it is only used where
// the operation itself costs far more (durable commits); the point-read baselines run on the
// default VFS itself.
//
// Example:
//
//   sqloop::bench::CountingVfs& vfs = sqloop::bench::CountingVfs::Get();
//   sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs.name());
//   const uint64_t syncs_before = vfs.syncs();
#ifndef SQLOOP_BENCH_SQLITE_COUNTING_VFS_H_
#define SQLOOP_BENCH_SQLITE_COUNTING_VFS_H_

#include <sqlite3.h>

#include <cstdint>

namespace sqloop::bench {

class CountingVfs {
 public:
  // The process-wide instance, registered (not as the default) on first use.
  static CountingVfs& Get();

  [[nodiscard]] const char* name() const { return vfs_.zName; }
  [[nodiscard]] uint64_t syncs() const { return syncs_; }
  [[nodiscard]] uint64_t reads() const { return reads_; }
  [[nodiscard]] uint64_t writes() const { return writes_; }

  // For the glue in counting_vfs.cc.
  [[nodiscard]] sqlite3_vfs* inner() const { return inner_; }
  void CountSync() { ++syncs_; }
  void CountRead() { ++reads_; }
  void CountWrite() { ++writes_; }

 private:
  CountingVfs();

  sqlite3_vfs* inner_;
  sqlite3_vfs vfs_{};
  // Benchmarks are single-threaded: plain counters.
  uint64_t syncs_ = 0;
  uint64_t reads_ = 0;
  uint64_t writes_ = 0;
};

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_COUNTING_VFS_H_
