// db/runtime.h
// -----------------------------------------------------------------------------
//
// `Runtime` is the front door: one object that owns a loop, the VFS, SQLite's memory hooks and
// a tenant registry, opens databases by name in one directory, runs SQL, and shuts everything
// down in the right order with one call (or its destructor). It is for the common case, a host
// that wants durable SQLite without assembling the layers; the layers stay public for hosts
// that need control (db/database.h, db/registry.h, db/shards.h).
//
// Two ways to run SQL:
//   - Exec / Query: blocking, on the calling thread. Each submits one request and runs the
//     loop until that request is done, then returns its rows (copied, owned by the Result).
//     They allocate (the Result), and they run the loop, so they may not be called from inside
//     a loop callback: they return FailedPrecondition there, as Loop::Run does.
//   - Submit + Run: the asynchronous path, caller-owned TenantRequests exactly as for
//     Registry::Submit, with no allocation per request. Run(kOnce) in the host's own loop.
//
// Exec is a write: it runs on the database's writer inside a group commit and returns once
// what it wrote is on disk (docs/db.md), creating the database if it does not exist. Query is
// a read: it runs on a durable snapshot and never waits for an fsync; a database that does
// not exist is NotFound. Several statements that must commit together go in one Exec as a
// batch (Request::batch).
//
// The runtime belongs to one thread at a time: Exec, Query, Submit, Run and Shutdown called
// while another thread is inside one of them return FailedPrecondition (handing it to another
// thread between calls is the host's to synchronise). To serve several threads use Shards
// (db/shards.h), which runs registries on threads of their own.
//
// Example (the README's program, compiled and run by the install test):
//
//   auto runtime = sqloop::db::Runtime::Create("/tmp/app");
//   if (!runtime.ok()) return 1;
//   sqloop::db::Runtime& db = **runtime;
//   (void)db.Exec("notes", "CREATE TABLE IF NOT EXISTS note(id INTEGER PRIMARY KEY, body)");
//   (void)db.Exec("notes", "INSERT INTO note(body) VALUES (?)", {Value::Text("hello")});
//   auto rows = db.Query("notes", "SELECT id, body FROM note");
#ifndef SQLOOP_DB_RUNTIME_H_
#define SQLOOP_DB_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "sqloop/db/registry.h"
#include "sqloop/db/request.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db {

struct RuntimeOptions {
  // Where the databases live: `<directory>/<name>.db`. Created if missing (one level).
  std::string directory;
  loop::LoopOptions loop;
  VfsOptions vfs;
  // The registry's options; its `directory` is set from `directory` above.
  RegistryOptions registry;
};

// What Exec or Query returned: the rows (values copied out of SQLite, so they outlive the
// call) and, for a write, what it changed. Moving keeps every Value valid; copying is not
// allowed, since the values point into storage the Result owns.
class Result {
 public:
  Result() = default;
  Result(Result&&) = default;
  Result& operator=(Result&&) = default;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;

  std::vector<std::string> columns;  // Column names, from the first row.
  std::vector<std::vector<Value>> rows;
  int64_t changes = 0;            // Rows changed by a write.
  int64_t last_insert_rowid = 0;  // After a write that inserted.

 private:
  friend class Runtime;
  void Add(const Row& row);
  void Clear();
  // Text and blob bytes of `rows`. A deque never moves its elements as it grows, and moving
  // the deque moves its blocks, not the strings, so the Values' views stay valid.
  std::deque<std::string> bytes_;
};

class Runtime {
 public:
  // Installs SQLite's memory hooks (once per process), then creates the directory if it is
  // missing, the loop, the VFS and the registry. Errors say which step failed and why.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Runtime>> Create(RuntimeOptions options);
  // The same with every option at its default but the directory.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Runtime>> Create(std::string directory);
  // Shuts down if Shutdown() was not called (and checks that it succeeded).
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Runs one write statement on `database` (created if missing) and returns once it is
  // durable. RETURNING rows come back in the Result.
  [[nodiscard]] absl::StatusOr<Result> Exec(absl::string_view database, absl::string_view sql,
                                            std::initializer_list<Value> params = {});
  // Runs a batch: every statement commits, or none does (Request::batch has the rules).
  [[nodiscard]] absl::StatusOr<Result> Exec(absl::string_view database,
                                            absl::Span<Statement> batch);
  // Runs one read statement on `database` (NotFound if it does not exist).
  [[nodiscard]] absl::StatusOr<Result> Query(absl::string_view database, absl::string_view sql,
                                             std::initializer_list<Value> params = {});

  // The asynchronous path: Registry::Submit on the runtime's registry (db/registry.h).
  [[nodiscard]] absl::Status Submit(TenantRequest& request);
  // Runs the loop (Loop::Run).
  [[nodiscard]] absl::Status Run(loop::RunMode mode);

  // Waits for the admitted requests, closes every database, then releases the registry, the
  // VFS and the loop, in that order. Later calls return the first call's outcome; Exec, Query
  // and Submit fail with FailedPrecondition after it. From a loop callback (one it runs
  // included) it is refused with FailedPrecondition, as Exec and Query are.
  absl::Status Shutdown();

  [[nodiscard]] loop::Loop& loop() { return *loop_; }
  [[nodiscard]] Vfs& vfs() { return *vfs_; }
  [[nodiscard]] Registry& registry() { return *registry_; }

 private:
  Runtime() = default;
  class Claim;
  absl::StatusOr<Result> RunToDone(TenantRequest& request, Result& result);
  [[nodiscard]] absl::Status RefuseFromCallback(absl::string_view what) const;

  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<Vfs> vfs_;
  std::unique_ptr<Registry> registry_;
  std::string directory_;
  bool shut_down_ = false;
  absl::Status shutdown_status_;
  // The thread inside a call now (none: a default id); see Claim in runtime.cc.
  std::atomic<std::thread::id> user_{};
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_RUNTIME_H_
