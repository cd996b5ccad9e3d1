// db/shard_call.cc: the future-like handle over Shards (db/shard_call.h has the state diagram).
//
// Design invariants:
//   1. state_ changes only in SetState, under mu_, and kDone is signalled under mu_: the owner
//      may free the call as soon as it sees kDone, so the shard thread touches nothing of the
//      call after it released mu_ in OnReply.
//   2. rows_, rows_overflowed_ and status_ are written only on the shard thread while
//      kInFlight (status_ also by Start, before anything is posted), and read only by the owner
//      once kDone (the mutex orders the two).
//   3. At most rows_max_ rows are kept; one more cancels the request (Request::Cancel).
#include "sqloop/db/shard_call.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"

namespace sqloop::db {

ShardCall::ShardCall() { request_.call = this; }

namespace {

constexpr const char* kOnShardThread =
    "ShardCall: called on a shard's thread, which would wait for the thread that must answer; "
    "from a shard's callbacks, submit a ShardRequest (its on_done, or reply_loop) instead";

}  // namespace

ShardCall::~ShardCall() {
  std::unique_lock<std::mutex> lock(mu_);
  CheckMayWait();
  done_.wait(lock, [this] { return state_ != State::kInFlight; });
}

absl::Status ShardCall::Start(Shards& shards) {
  SQLOOP_CHECK(state() != State::kInFlight, "ShardCall::Start: the call is still in flight");
  SQLOOP_CHECK(request_.on_row == nullptr || request_.on_row == &ShardCall::OnRow,
               "ShardCall::Start: request().on_row is set; the call collects the rows itself "
               "(read them from rows()), or use a ShardRequest for your own callbacks");
  SQLOOP_CHECK(request_.on_done == nullptr || request_.on_done == &ShardCall::OnReply,
               "ShardCall::Start: request().on_done is set; use Wait(), or a ShardRequest");
  SQLOOP_CHECK(request_.on_rows_discarded == nullptr ||
                   request_.on_rows_discarded == &ShardCall::OnRowsDiscarded,
               "ShardCall::Start: request().on_rows_discarded is set; the call handles it");
  SQLOOP_CHECK(request_.reply_loop == nullptr,
               "ShardCall::Start: request().reply_loop is set; a ShardCall is answered on the "
               "shard thread and waited for with Wait()");
  request_.on_row = &ShardCall::OnRow;
  request_.on_rows_discarded = &ShardCall::OnRowsDiscarded;
  request_.on_done = &ShardCall::OnReply;
  rows_.clear();
  rows_overflowed_ = false;
  if (Shards::OnShardThread()) {  // Refused, as Submit's refusals are: Wait() returns it.
    std::lock_guard<std::mutex> lock(mu_);
    status_ = absl::FailedPreconditionError(kOnShardThread);
    SetState(State::kDone);
    return status_;
  }
  {
    // In flight before Submit: the reply may arrive before Submit returns.
    std::lock_guard<std::mutex> lock(mu_);
    SetState(State::kInFlight);
  }
  absl::Status admitted = shards.Submit(request_);
  if (!admitted.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = admitted;
    SetState(State::kDone);
  }
  return admitted;
}

absl::Status ShardCall::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  SQLOOP_CHECK(state_ != State::kIdle, "ShardCall::Wait before Start: nothing to wait for");
  CheckMayWait();
  done_.wait(lock, [this] { return state_ == State::kDone; });
  return status_;
}

bool ShardCall::WaitWithTimeout(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  SQLOOP_CHECK(state_ != State::kIdle, "ShardCall::WaitWithTimeout before Start");
  CheckMayWait();
  // now + chrono's largest duration overflows inside wait_for and would return at once.
  if (timeout == absl::InfiniteDuration()) {
    done_.wait(lock, [this] { return state_ == State::kDone; });
    return true;
  }
  return done_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [this] { return state_ == State::kDone; });
}

// Called with mu_ held. Waiting for a call in flight on a shard's thread would wait for the thread
// that must answer it.
void ShardCall::CheckMayWait() const {
  SQLOOP_CHECK(state_ != State::kInFlight || !Shards::OnShardThread(), kOnShardThread);
}

bool ShardCall::Ready() const { return state() == State::kDone; }

ShardCall::State ShardCall::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

const absl::Status& ShardCall::status() const {
  CheckDone();
  return status_;
}

const std::vector<OwnedRow>& ShardCall::rows() const {
  CheckDone();
  return rows_;
}

void ShardCall::CheckDone() const {
  SQLOOP_CHECK(Ready(), "ShardCall: status() and rows() are valid only once the call is done");
}

void ShardCall::SetState(State state) {
  const bool allowed = state == State::kInFlight ? state_ != State::kInFlight
                                                 : state == State::kDone && state_ != State::kDone;
  SQLOOP_CHECK(allowed, "ShardCall: a state transition the diagram does not have");
  state_ = state;
}

// ---- On the shard thread ----------------------------------------------------------------------

void ShardCall::OnRow(Request& request, const Row& row) {
  ShardCall& call = *static_cast<Hop&>(ShardRequest::Of(request)).call;
  if (call.rows_.size() >= call.rows_max_) {
    call.rows_overflowed_ = true;
    request.Cancel();
    return;
  }
  OwnedRow& owned = call.rows_.emplace_back(static_cast<size_t>(row.size()));
  for (int column = 0; column < row.size(); ++column) {
    const Value value = row.Get(column);
    OwnedValue& cell = owned[static_cast<size_t>(column)];
    cell.type = value.type;
    cell.int_value = value.int_value;
    cell.double_value = value.double_value;
    cell.bytes.assign(value.bytes.data(), value.bytes.size());
  }
}

// The request runs again (a retried group commit, SQLITE_BUSY) and delivers its rows anew.
void ShardCall::OnRowsDiscarded(Request& request) {
  ShardCall& call = *static_cast<Hop&>(ShardRequest::Of(request)).call;
  call.rows_.clear();
  call.rows_overflowed_ = false;
}

void ShardCall::OnReply(ShardRequest& request, absl::Status status) {
  ShardCall& call = *static_cast<Hop&>(request).call;
  call.status_ = std::move(status);
  if (call.rows_overflowed_) {
    const bool committed = call.status_.ok();
    call.status_ = absl::ResourceExhaustedError(absl::StrCat(
        "ShardCall: the request returned more than rows_max (", call.rows_max_, ") rows; ",
        committed ? "the write committed, but the rows beyond the limit were dropped"
                  : "it was cancelled",
        ". Page with LIMIT, or raise set_rows_max()"));
  }
  // Notified under the lock (invariant 1): the owner frees the call once it can take mu_.
  std::lock_guard<std::mutex> lock(call.mu_);
  call.SetState(State::kDone);
  call.done_.notify_all();
}

}  // namespace sqloop::db
