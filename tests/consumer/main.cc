// A host program built from the installed package only (tests/install_consumer.cmake): it opens
// a database through the installed headers and libraries, runs real SQL on the loop, and checks
// what it reads back, and that an open without create_if_missing refuses a database that does
// not exist. It uses the db layer on purpose: a package that installs the loop but
// leaves sqloop_db off the link line must fail here, at link time.
//
// Usage: consumer <scratch directory>  (the database file is created in it)
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "sqloop/db/database.h"
#include "sqloop/db/request.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"
#include "sqloop/version.h"

namespace {

using sqloop::db::Database;
using sqloop::db::Request;
using sqloop::db::Value;

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "consumer: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

// What a request's callbacks saw. The request points at it through user_data.
struct Outcome {
  bool done = false;
  absl::Status status = absl::UnknownError("on_done never ran");
  int rows = 0;
  int64_t first_value = -1;
};

// Submits `request` and runs the loop until nothing is pending, which includes its on_done.
absl::Status RunToDone(sqloop::loop::Loop& loop, Database& db, Request& request, Outcome& outcome) {
  request.user_data = &outcome;
  request.on_row = [](Request& r, const sqloop::db::Row& row) {
    auto* out = static_cast<Outcome*>(r.user_data);
    if (out->rows++ == 0) out->first_value = row.Int(0);
  };
  request.on_rows_discarded = [](Request& r) { static_cast<Outcome*>(r.user_data)->rows = 0; };
  request.on_done = [](Request& r, absl::Status status) {
    auto* out = static_cast<Outcome*>(r.user_data);
    out->done = true;
    out->status = std::move(status);
  };
  if (absl::Status admitted = db.Submit(request); !admitted.ok()) return admitted;
  if (absl::Status run = loop.Run(sqloop::loop::RunMode::kUntilDone); !run.ok()) return run;
  if (!outcome.done) return absl::InternalError("the loop ran dry before on_done");
  return outcome.status;
}

void StoreStatus(void* arg, absl::Status status) {
  *static_cast<absl::Status*>(arg) = std::move(status);
}

// Opens `path`, creates a table, inserts a row (a durable write), reads it back, closes.
int UseDatabase(sqloop::loop::Loop& loop, sqloop::db::Vfs& vfs, const std::string& path) {
  Database db(loop, vfs, path);
  absl::Status opened = absl::UnknownError("open never called back");
  db.Open(StoreStatus, &opened);
  if (absl::Status run = loop.Run(sqloop::loop::RunMode::kUntilDone); !run.ok()) {
    return Fail("run (open)", run);
  }
  if (!opened.ok()) return Fail("open", opened);

  Request create;
  create.kind = Request::Kind::kWrite;
  create.sql = "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL)";
  Outcome created;
  if (absl::Status s = RunToDone(loop, db, create, created); !s.ok()) return Fail("create", s);

  Request insert;
  insert.kind = Request::Kind::kWrite;
  insert.sql = "INSERT INTO kv(k, v) VALUES (?, ?)";
  insert.params = {Value::Text("answer"), Value::Int(42)};
  Outcome inserted;
  if (absl::Status s = RunToDone(loop, db, insert, inserted); !s.ok()) return Fail("insert", s);
  // An acknowledged write is on disk: the fsync of the epoch covering it has completed.
  if (insert.changes != 1 || insert.epoch == 0 || !db.holds_files() ||
      db.durable_epoch() < insert.epoch) {
    std::fprintf(stderr, "consumer: insert acknowledged but not durable (changes %lld)\n",
                 static_cast<long long>(insert.changes));
    return 1;
  }

  Request select;
  select.kind = Request::Kind::kRead;
  select.sql = "SELECT v FROM kv WHERE k = ?";
  select.params = {Value::Text("answer")};
  Outcome selected;
  if (absl::Status s = RunToDone(loop, db, select, selected); !s.ok()) return Fail("select", s);
  if (selected.rows != 1 || selected.first_value != 42) {
    std::fprintf(stderr, "consumer: read back %d rows, first value %lld; want 1 row, 42\n",
                 selected.rows, static_cast<long long>(selected.first_value));
    return 1;
  }

  absl::Status closed = absl::UnknownError("close never called back");
  db.Close(StoreStatus, &closed);
  if (absl::Status run = loop.Run(sqloop::loop::RunMode::kUntilDone); !run.ok()) {
    return Fail("run (close)", run);
  }
  if (!closed.ok()) return Fail("close", closed);
  return 0;
}

// Opens `path`, which does not exist, without create_if_missing: NotFound, and no file made.
int RefuseMissing(sqloop::loop::Loop& loop, sqloop::db::Vfs& vfs, const std::string& path) {
  sqloop::db::DatabaseOptions options;
  options.create_if_missing = false;
  Database db(loop, vfs, path, options);
  absl::Status opened = absl::UnknownError("open never called back");
  db.Open(StoreStatus, &opened);
  if (absl::Status run = loop.Run(sqloop::loop::RunMode::kUntilDone); !run.ok()) {
    return Fail("run (open of a missing database)", run);
  }
  if (opened.code() != absl::StatusCode::kNotFound) {
    return Fail("open of a missing database without create_if_missing", opened);
  }
  if (access(path.c_str(), F_OK) == 0) {
    std::fprintf(stderr, "consumer: an open without create_if_missing created %s\n", path.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (std::string(SQLOOP_VERSION_STRING) != SQLOOP_EXPECTED_VERSION_STRING) {
    std::fprintf(stderr, "consumer: sqloop/version.h says %s, the package %s\n",
                 SQLOOP_VERSION_STRING, SQLOOP_EXPECTED_VERSION_STRING);
    return 1;
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer <scratch directory>\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<sqloop::loop::Loop>> loop =
      sqloop::loop::Loop::Create(sqloop::loop::LoopOptions{});
  if (!loop.ok()) return Fail("loop", loop.status());
  absl::StatusOr<std::unique_ptr<sqloop::db::Vfs>> vfs = sqloop::db::Vfs::Create(**loop);
  if (!vfs.ok()) return Fail("vfs", vfs.status());
  if (int rc = RefuseMissing(**loop, **vfs, std::string(argv[1]) + "/missing.db"); rc != 0) {
    return rc;
  }
  // The database is destroyed (closed) inside UseDatabase, before the VFS and the loop.
  if (int rc = UseDatabase(**loop, **vfs, std::string(argv[1]) + "/consumer.db"); rc != 0) {
    return rc;
  }
  const std::string backend((*loop)->backend().name());
  std::printf("consumer ok on %s: refused a missing database, wrote 42 durably and read it back\n",
              backend.c_str());
  return 0;
}
