// bench/sqlite/coro.h
// -----------------------------------------------------------------------------
//
// A C++20 coroutine layer over sqloop's Database, the one a coroutine user would write, for the
// `sqloop_coro` benchmark variant. Coroutines live in bench/ only (docs/architecture.md).
//
//   * `Task`: a long-lived coroutine. Its frame comes from the promise's operator new, which
//     takes it from a small free list of recycled frames: created once before the timed region
//     and reused by the next benchmark run, so no frame allocation is ever measured.
//   * `Query(db, kind, sql, params, sink, ctx)`: an awaitable that OWNS the caller-owned
//     db::Request. `co_await` keeps the awaiter (and so the Request) in the coroutine frame
//     until the request's on_done resumed the coroutine: no allocation per request, exactly like
//     the state-machine variant's caller-owned struct. A request the database refuses at Submit
//     does not suspend: the coroutine continues at once with the error.
//
// Row values are handed to `sink` while the statement runs (a Row is only valid then).
//
// Example:
//
//   Task Reader(db::Database& db, ...) {
//     for (;;) {
//       absl::Status s = co_await Query(db, db::Request::Kind::kRead, kPointSelect,
//                                       db::Value::Int(id), &OnRow, &result);
//       ...
//       co_await Parked{};  // until the benchmark resumes us for the next iteration
//     }
//   }
#ifndef SQLOOP_BENCH_SQLITE_CORO_H_
#define SQLOOP_BENCH_SQLITE_CORO_H_

#include <coroutine>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sqloop/db/database.h"
#include "sqloop/db/request.h"

namespace sqloop::bench {

// Recycled coroutine frames (single-threaded, like the loop). A frame of a size seen before is
// reused; others come from ::operator new once. Frames are never returned to the heap: the
// benchmark creates a handful.
class FrameCache {
 public:
  static void* Allocate(size_t bytes) {
    Node** link = &Head();
    for (Node* node = *link; node != nullptr; link = &node->next, node = node->next) {
      if (node->bytes == bytes) {
        *link = node->next;
        return node;
      }
    }
    return ::operator new(bytes < sizeof(Node) ? sizeof(Node) : bytes);
  }
  static void Release(void* frame, size_t bytes) {
    auto* node = static_cast<Node*>(frame);
    node->bytes = bytes;
    node->next = Head();
    Head() = node;
  }

 private:
  struct Node {
    Node* next;
    size_t bytes;
  };
  static Node*& Head() {
    static Node* head = nullptr;
    return head;
  }
};

struct Task {
  struct promise_type {
    static void* operator new(size_t bytes) { return FrameCache::Allocate(bytes); }
    static void operator delete(void* frame, size_t bytes) { FrameCache::Release(frame, bytes); }
    Task get_return_object() { return Task{Handle::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::abort(); }
  };
  using Handle = std::coroutine_handle<promise_type>;

  explicit Task(Handle h) : handle(h) {}
  Task(Task&& other) noexcept : handle(std::exchange(other.handle, nullptr)) {}
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  Task& operator=(Task&&) = delete;
  ~Task() {
    if (handle) handle.destroy();
  }
  Handle handle;
};

// Suspends until someone resumes the handle (the benchmark, once per iteration).
struct Parked {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}
};

using RowSink = void (*)(void* ctx, const db::Row& row);

class QueryAwaiter {
 public:
  QueryAwaiter(db::Database& db, db::Request::Kind kind, absl::string_view sql, db::Value param,
               RowSink sink, void* ctx)
      : db_(db), sink_(sink), ctx_(ctx) {
    request_.kind = kind;
    request_.sql = sql;
    request_.params.push_back(param);
    request_.user_data = this;
    request_.on_row = &OnRow;
    request_.on_done = &OnDone;
  }
  QueryAwaiter(const QueryAwaiter&) = delete;
  QueryAwaiter& operator=(const QueryAwaiter&) = delete;

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> waiter) {
    waiter_ = waiter;
    status_ = db_.Submit(request_);
    return status_.ok();  // Refused: not queued, so resume at once with the error.
  }
  absl::Status await_resume() noexcept { return std::move(status_); }

 private:
  static void OnRow(db::Request& r, const db::Row& row) {
    auto* self = static_cast<QueryAwaiter*>(r.user_data);
    if (self->sink_ != nullptr) self->sink_(self->ctx_, row);
  }
  // The database is done with the request once on_done runs, so resuming here (which
  // destroys this awaiter and its Request when the coroutine moves on) is allowed.
  static void OnDone(db::Request& r, absl::Status status) {
    auto* self = static_cast<QueryAwaiter*>(r.user_data);
    self->status_ = std::move(status);
    self->waiter_.resume();
  }

  db::Database& db_;
  RowSink sink_;
  void* ctx_;
  db::Request request_;
  absl::Status status_;
  std::coroutine_handle<> waiter_;
};

inline QueryAwaiter Query(db::Database& db, db::Request::Kind kind, absl::string_view sql,
                          db::Value param, RowSink sink, void* ctx) {
  return QueryAwaiter(db, kind, sql, param, sink, ctx);
}

}  // namespace sqloop::bench

#endif  // SQLOOP_BENCH_SQLITE_CORO_H_
