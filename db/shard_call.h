// db/shard_call.h
// -----------------------------------------------------------------------------
//
// `ShardCall` is a future-like handle for a host thread that wants to run one request through
// `Shards` (db/shards.h) and get the answer: it submits the request, collects the rows into
// memory it owns (on_row runs on the shard's thread, where SQLite's row is valid), and lets the
// thread block in Wait() until the status arrives. Nothing spins: the waiter sleeps on a
// condition variable that the shard thread signals once, with the reply.
//
// When to use it: a host thread that is not an event loop (a request handler of a threaded
// server, a batch job, a test). A host thread that runs its own sqloop Loop uses the callback
// path instead: a `ShardRequest` with `reply_loop` set to its loop, whose on_done then runs
// on that thread without blocking anyone (docs/embedding.md, "From host threads").
//
// Threads: Start, Wait, WaitWithTimeout, Ready and the accessors are called from the host
// thread that owns the call (never from a shard thread: Wait would wait for itself). The
// handle's own callbacks run on the shard thread.
//
// States (every transition is made by SetState, which checks the state it leaves):
//
// clang-format off
//   kIdle --Start, admitted--> kInFlight --OnReply--> kDone --Start--> kInFlight (reuse)
//   kIdle --Start, refused---> kDone (status: Submit's refusal)
//
//   transition          function   invariant in the new state
//   kIdle -> kInFlight  Start      the shard owns request(); rows() is empty
//   kIdle -> kDone      Start      nothing was posted; status() is Submit's error
//   kInFlight -> kDone  OnReply    the shard is done with request(); status() and rows() final
//   kDone -> kInFlight  Start      as kIdle -> kInFlight; the previous result is gone
//   kDone -> kDone      Start      as kIdle -> kDone
// clang-format on
//
// Example:
//
//   sqloop::db::ShardCall call;
//   call.request().tenant = "acme";                     // must outlive the call, as sql does
//   call.request().kind = sqloop::db::Request::Kind::kRead;
//   call.request().sql = "SELECT id, name FROM users";
//   if (absl::Status admitted = call.Start(*shards); !admitted.ok()) {
//     return admitted;                                  // e.g. ResourceExhausted: back off
//   }
//   absl::Status status = call.Wait();
//   for (const sqloop::db::OwnedRow& row : call.rows()) { ... row[0].int_value ... }
#ifndef SQLOOP_DB_SHARD_CALL_H_
#define SQLOOP_DB_SHARD_CALL_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "sqloop/db/request.h"
#include "sqloop/db/shards.h"

namespace sqloop::db {

// A column value copied out of SQLite, so it outlives the row callback and the request.
struct OwnedValue {
  Value::Type type = Value::Type::kNull;
  int64_t int_value = 0;
  double double_value = 0;
  std::string bytes;  // Text or blob.

  // A view of this value (text and blob point into `bytes`).
  [[nodiscard]] Value view() const { return Value::Make(type, int_value, double_value, bytes); }
};
using OwnedRow = std::vector<OwnedValue>;

// Rows a ShardCall keeps by default. The rows live on the host's heap, so a runaway SELECT
// must not pin unbounded memory there: 65536 rows of a few columns are a few MiB, more than a
// host thread that wants "the answer" should pull in one call (page with LIMIT beyond that).
inline constexpr size_t kShardCallRowsMaxDefault = 65536;

class ShardCall {
 public:
  enum class State : uint8_t { kIdle, kInFlight, kDone };

  ShardCall();
  // Waits for the reply if the call is in flight: the shard would otherwise write into freed
  // memory. (std::future from std::async blocks the same way.)
  ~ShardCall();
  ShardCall(const ShardCall&) = delete;
  ShardCall& operator=(const ShardCall&) = delete;

  // What to run: fill it as a ShardRequest before Start and leave it alone until the call is
  // done; read its results (changes, last_insert_rowid, batch statements) after. Its callbacks
  // (on_row, on_rows_discarded, on_done) and reply_loop belong to the call: Start checks that
  // they are unset (or still the call's own, from an earlier use).
  [[nodiscard]] ShardRequest& request() { return request_; }
  [[nodiscard]] const ShardRequest& request() const { return request_; }

  // The most rows kept. A request that returns more is cancelled (a write that already
  // committed completes, its extra rows dropped) and the call fails with ResourceExhausted.
  void set_rows_max(size_t rows_max) { rows_max_ = rows_max; }

  // Submits request() through `shards` from this (non-shard) thread; never blocks. Returns
  // Submit's refusal at once (InvalidArgument for a bad tenant name, ResourceExhausted when
  // ShardsOptions::in_flight_max requests are in flight), which Wait() then also returns. On a
  // shard's thread (a ShardRequest's on_done without reply_loop) it is refused with
  // FailedPrecondition, since waiting there would wait for itself. Checks that the call is not
  // in flight.
  absl::Status Start(Shards& shards);

  // Blocks until the reply arrived and returns the request's status. Checks that Start ran.
  [[nodiscard]] absl::Status Wait();
  // Blocks at most `timeout`; true if the reply arrived (then status() and rows() are final).
  // The wait reads the host thread's steady clock; the loops never see it.
  [[nodiscard]] bool WaitWithTimeout(absl::Duration timeout);
  // Whether the reply arrived; never blocks.
  [[nodiscard]] bool Ready() const;

  // Valid once Ready(): the request's status, and its rows in the order SQLite produced them.
  [[nodiscard]] const absl::Status& status() const;
  [[nodiscard]] const std::vector<OwnedRow>& rows() const;
  [[nodiscard]] State state() const;

 private:
  // The request with a way back to its call: on_row and on_done receive the request only.
  struct Hop : ShardRequest {
    ShardCall* call = nullptr;
  };

  static void OnRow(Request& request, const Row& row);
  static void OnRowsDiscarded(Request& request);
  static void OnReply(ShardRequest& request, absl::Status status);
  void SetState(State state);  // Holds mu_.
  void CheckDone() const;
  void CheckMayWait() const;

  Hop request_;
  size_t rows_max_ = kShardCallRowsMaxDefault;

  // Written on the shard thread while kInFlight, read by the owner once kDone: the mutex that
  // publishes the kDone state orders these writes before the reads.
  std::vector<OwnedRow> rows_;
  bool rows_overflowed_ = false;
  absl::Status status_;  // The request's outcome (or Submit's refusal).

  mutable std::mutex mu_;
  std::condition_variable done_;
  State state_ = State::kIdle;  // Guarded by mu_.
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_SHARD_CALL_H_
