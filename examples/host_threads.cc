// examples/host_threads.cc: SQL from plain host threads through Shards (docs/embedding.md,
// "From host threads"). Four threads insert rows with ShardCall (submit, then Wait), a
// fifth thread runs its own Loop and gets its answers through on_done on that loop. A full
// queue (ResourceExhausted from Start) is an error the caller sees at once, never a block.
//
//   host_threads [directory]      (default: a fresh directory under $TMPDIR or /tmp)
//
// Prints one line per tenant with its row count and exits 0; tests/shard_call.cmake runs it.
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/shard_call.h"
#include "sqloop/db/shards.h"
#include "sqloop/loop/loop.h"

namespace {

using sqloop::db::Request;
using sqloop::db::ShardCall;
using sqloop::db::ShardRequest;
using sqloop::db::Value;

constexpr int kThreads = 4;
constexpr int kRowsPerThread = 50;
const char* const kTenants[] = {"acme", "globex"};

// Runs one statement from this thread and waits for its answer. Start's refusal (a bad
// tenant name, or ResourceExhausted: in_flight_max requests in flight) comes back at once.
absl::Status Exec(sqloop::db::Shards& shards, ShardCall& call) {
  if (absl::Status admitted = call.Start(shards); !admitted.ok()) return admitted;
  return call.Wait();
}

// A host thread: inserts kRowsPerThread rows, alternating tenants, one call at a time.
void Writer(sqloop::db::Shards& shards, int thread, absl::Status& result) {
  ShardCall call;
  for (int i = 0; i < kRowsPerThread && result.ok(); ++i) {
    call.request().tenant = kTenants[i % 2];
    call.request().kind = Request::Kind::kWrite;
    call.request().sql = "INSERT INTO events(thread, n) VALUES (?, ?)";
    call.request().params = {Value::Int(thread), Value::Int(i)};
    result = Exec(shards, call);
  }
}

// A host thread with its own event loop: asks every tenant for its count, and the answers
// come back through on_done, run by this thread's loop.
absl::Status Reader(sqloop::db::Shards& shards, std::unique_ptr<sqloop::loop::Loop>& loop) {
  struct Count : ShardRequest {
    int64_t rows = -1;
    bool replied = false;
    absl::Status status;
  };
  Count counts[2];
  for (int t = 0; t < 2; ++t) {
    counts[t].tenant = kTenants[t];
    counts[t].sql = "SELECT count(*) FROM events";
    counts[t].reply_loop = loop.get();
    counts[t].on_row = [](Request& r, const sqloop::db::Row& row) {  // A shard thread.
      static_cast<Count&>(ShardRequest::Of(r)).rows = row.Int(0);
    };
    counts[t].on_done = [](ShardRequest& r, absl::Status status) {  // This thread, in Run().
      auto& count = static_cast<Count&>(r);
      count.replied = true;
      count.status = std::move(status);
    };
    if (absl::Status s = shards.Submit(counts[t]); !s.ok()) return s;
  }
  while (!counts[0].replied || !counts[1].replied) {
    if (absl::Status s = loop->Run(sqloop::loop::RunMode::kOnce); !s.ok()) return s;
  }
  for (const Count& count : counts) {
    if (!count.status.ok()) return count.status;
    std::printf("%s: %lld rows\n", count.tenant.data(), static_cast<long long>(count.rows));
  }
  return absl::OkStatus();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "host_threads: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string directory;
  if (argc > 1) {
    directory = argv[1];
  } else {
    const char* tmp = getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sqloop-host-threads-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) return Fail(absl::InternalError("mkdtemp failed"));
    directory = pattern;
  }
  if (absl::Status s = sqloop::alloc::InstallSqliteMemory(); !s.ok()) return Fail(s);
  sqloop::db::ShardsOptions options;
  options.shards = 2;
  // Four writers with one call each never fill it; a host with more would see Start refuse.
  options.in_flight_max = 64;
  options.registry.directory = directory;
  auto shards = sqloop::db::Shards::Start(options);
  if (!shards.ok()) return Fail(shards.status());

  for (const char* tenant : kTenants) {
    ShardCall create;
    create.request().tenant = tenant;
    create.request().create_if_missing = true;
    create.request().kind = Request::Kind::kWrite;
    create.request().sql = "CREATE TABLE IF NOT EXISTS events(thread INTEGER, n INTEGER)";
    if (absl::Status s = Exec(**shards, create); !s.ok()) return Fail(s);
  }
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> writers;
  writers.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back(Writer, std::ref(**shards), t, std::ref(results[t]));
  }
  for (std::thread& writer : writers) writer.join();
  for (const absl::Status& result : results) {
    if (!result.ok()) return Fail(result);
  }

  auto loop = sqloop::loop::Loop::Create({});
  if (!loop.ok()) return Fail(loop.status());
  absl::Status read = absl::OkStatus();
  std::thread reader([&] { read = Reader(**shards, *loop); });
  reader.join();
  // Shutdown order: every host thread is done with its requests, then Stop() closes the
  // tenants and joins the shard threads, and only then the reply loop goes.
  (*shards)->Stop();
  loop->reset();
  if (argc <= 1) std::filesystem::remove_all(directory);
  if (!read.ok()) return Fail(read);
  std::printf("host_threads: ok\n");
  return 0;
}
