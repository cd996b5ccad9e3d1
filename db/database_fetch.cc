// Database: reads and write groups that stop on data not in memory, fetch it, and run again
// (the "Reads never wait for the disk" section of db/database.h).
#include <sqlite3.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/db/database.h"
#include "sqloop/db/internal/connection.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/vfs_core.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::db {

// The read stopped on `miss`, in its statement's steps (kRunning) or in the parse of the schema
// its prepare needed (kQueued, off every queue): the read gives its reader back, voids its rows
// and waits, out of every queue, for one fetch. The reader keeps its snapshot for the next read.
void Database::RestartRead(Connection& reader, Request& r, const internal::ReadMiss& miss) {
  if (reader.current() == &r) {
    Connection::Reset(reader.read_stmt, r.params);
    reader.EndRequest();
    reader.read_stmt = nullptr;
  }
  // SQLITE_INTERRUPT ends a read-only statement, or the schema's parse, and leaves the read
  // transaction open; should SQLite have ended the transaction anyway, the reader is pinned
  // afresh.
  if (sqlite3_get_autocommit(reader.db()) != 0) Unpin(reader);
  DiscardRows(r);
  if (r.restarts_ >= kRestartsMax) {
    ++stats_.reads;
    Finish(r, absl::UnavailableError(absl::StrCat(
                  "the read stopped ", kRestartsMax,
                  " times on data that was not in memory, although each time it was read in: "
                  "the page cache does not keep what this read needs (is the machine short of "
                  "memory?). Retry later, or read less in one statement")));
    return;
  }
  ++r.restarts_;
  ++stats_.read_restarts;
  SetRequestState(r, Request::State::kFetching);
  StartFetch(FetchFor::kRead, &r, r.restarts_, miss);
}

// Whether a read outside a request's statement (the writer's BEGIN, its setup at open, a
// checkpoint; a reader's pin or open) may stop on a miss, with `restarts` misses of it in a
// row and `last_fetch` what its owner's last fetch gave: not past kRestartsMax, nor after that
// fetch failed. Then it reads by waiting, so it cannot miss for ever.
bool Database::MayStop(uint8_t restarts, const absl::Status& last_fetch) {
  return restarts < kRestartsMax && last_fetch.ok();
}

// Such a read just ran for `owner` (kWriter or kPin), and `failed`: if it stopped on a miss,
// one fetch of the missed window starts, the restart counted in `restarts` and `counted`. The
// writer waits for it in kFetching; a reader's pin or open is tried again at the next pump
// after it (pin_fetching_).
bool Database::FetchMiss(FetchFor owner, bool failed, uint8_t& restarts, uint64_t& counted) {
  internal::ReadMiss miss;
  if (!files_->queue().TakeMiss(miss) || !failed) return false;
  ++restarts;
  ++counted;
  StartFetch(owner, nullptr, restarts, miss);
  if (owner == FetchFor::kWriter) SetWriterState(WriterState::kFetching);
  return true;
}

// Reads a window around the miss into the Vfs's sink, which only brings it into the page cache.
// The window is kFetchWindowBytes, doubling from the read's fifth restart on (a scan), aligned to
// its size so that a scan's next miss falls in the next window; it ends at what SQLite sees of
// the file, and always holds the missed bytes. A read whose miss lies in a window in flight
// waits for that fetch instead (JoinFetch): reads that start together on a cold database all
// miss the same pages first (the root of a B-tree).
void Database::StartFetch(FetchFor owner, Request* r, uint8_t restarts,
                          const internal::ReadMiss& miss) {
  if (r != nullptr && JoinFetch(*r, miss)) return;
  if (free_fetches_.empty()) {
    auto made = std::make_unique<Fetch>();
    made->db = this;
    made->c.callback = &Database::OnFetched;
    made->c.user_data = made.get();
    free_fetches_.push_back(made.get());
    fetches_.push_back(std::move(made));
  }
  Fetch& fetch = *free_fetches_.back();
  free_fetches_.pop_back();
  const uint32_t doublings = restarts > 4 ? std::min(restarts - 4, 16) : 0;
  const uint64_t window = std::min(kFetchWindowBytes << doublings, kFetchWindowBytesMax);
  const uint64_t start = miss.offset / window * window;
  const uint64_t end =
      std::max(std::min(start + window, miss.file_bytes), miss.offset + miss.length);
  fetch.owner = owner;
  if (owner == FetchFor::kWriter) group_fetching_ = true;
  if (owner == FetchFor::kPin) pin_fetching_ = true;
  if (r != nullptr) fetch.reads.PushBack(*r);
  internal::VfsContext& context = internal::VfsCore::Of(vfs_).context();
  const auto length =
      static_cast<uint32_t>(std::min<uint64_t>(end - start, internal::VfsContext::kFetchSinkBytes));
  char* page =
      end - start == length ? files_->queue().FetchBuffer(miss.fd, start, length) : nullptr;
  fetch.c.op = io::Op{.kind = io::OpKind::kRead,
                      .fd = miss.fd,
                      .buffer = page != nullptr ? page : context.fetch_sink(),
                      .length = length,
                      .offset = start};
  fetch.slot = static_cast<uint32_t>(fetch_windows_.size());
  fetch_windows_.push_back(FetchWindow{.fd = miss.fd, .begin = start, .end = end, .fetch = &fetch});
  ++stats_.fetches;
  loop_.Submit(fetch.c);
}

// A read's miss inside a window a fetch in flight has not read past yet: the read waits for it.
bool Database::JoinFetch(Request& r, const internal::ReadMiss& miss) {
  const FetchWindow* window = WindowOf(miss.fd, miss.offset, miss.length);
  if (window == nullptr) return false;
  window->fetch->reads.PushBack(r);
  ++stats_.fetches_joined;
  return true;
}

const Database::FetchWindow* Database::WindowOf(int fd, uint64_t offset, uint64_t length) const {
  for (const FetchWindow& window : fetch_windows_) {
    if (window.fd == fd && window.begin <= offset && offset + length <= window.end) return &window;
  }
  return nullptr;
}

bool Database::InFetchWindow(const void* db, int fd, uint64_t offset, uint64_t length) {
  return static_cast<const Database*>(db)->WindowOf(fd, offset, length) != nullptr;
}

internal::FetchesInFlight Database::FetchesInFlight() const {
  return {.covers = &Database::InFetchWindow, .owner = this};
}

loop::Action Database::OnFetched(loop::Loop& /*loop*/, loop::Completion& c) {
  auto* fetch = static_cast<Fetch*>(c.user_data);
  Database& db = *fetch->db;
  db.in_callback_ = true;
  const loop::Action action = db.FetchDone(*fetch);
  db.in_callback_ = false;
  return action;
}

// One part of the window is in memory: read the next part, or requeue the reads to run again
// (the writer's group: let it run again).
loop::Action Database::FetchDone(Fetch& fetch) {
  io::Op& op = fetch.c.op;
  const int64_t result = fetch.c.result();
  if (result > 0) stats_.fetched_bytes += static_cast<uint64_t>(result);
  const uint64_t next = op.offset + static_cast<uint64_t>(std::max<int64_t>(result, 0));
  bool wanted = fetch.owner != FetchFor::kRead;
  for (Request* r = fetch.reads.front(); r != nullptr && !wanted; r = Queue::Next(*r)) {
    wanted = !r->cancel_requested();
  }
  FetchWindow& window = fetch_windows_[fetch.slot];
  if (result > 0 && next < window.end && wanted && state_ == State::kReady) {
    op.offset = next;
    op.length = static_cast<uint32_t>(
        std::min<uint64_t>(window.end - next, internal::VfsContext::kFetchSinkBytes));
    window.begin = next;
    return loop::Action::kRearm;
  }
  // Out of fetch_windows_: the last window takes its slot.
  window = fetch_windows_.back();
  window.fetch->slot = fetch.slot;
  fetch_windows_.pop_back();
  free_fetches_.push_back(&fetch);
  internal::VfsCore::Of(vfs_).context().fetched_pages().Fetched(static_cast<const char*>(op.buffer),
                                                                result);
  const bool writer = fetch.owner == FetchFor::kWriter;
  absl::Status status;
  if (result < 0) {
    ++stats_.fetches_failed;
    status = io::ErrnoStatus(
        absl::StatusCode::kUnavailable, result,
        absl::StrCat("reading '", path_, "' (or its WAL) to answer this ",
                     writer ? "write failed; nothing was written" : "read failed",
                     "; the database stays usable, retry the ", writer ? "write" : "read"));
  }
  ArmPump();
  if (fetch.owner == FetchFor::kPin) {
    pin_fetch_error_ = status;  // The next Pin reads by waiting, and fails with the cause.
    pin_fetching_ = false;
  }
  if (writer) {
    group_fetch_error_ = status;  // The write that missed fails if it misses again.
    group_fetching_ = false;
    // A group waiting with its transaction open resumes at the next pump (Serve, FinishClose);
    // one that was rolled back starts afresh.
    if (group_resume_ == nullptr) SetWriterState(WriterState::kIdle);
  }
  // The reads waiting for it, a group's fetch included (JoinFetch does not ask whose it is).
  while (Request* r = fetch.reads.back()) {
    fetch.reads.Remove(*r);
    ResumeFetched(*r, status);  // PushFront: the reads run again in the order they joined.
  }
  return loop::Action::kDisarm;
}

// A read's fetch is over: it runs again first, or fails with why.
void Database::ResumeFetched(Request& r, absl::Status status) {
  if (status.ok()) {
    if (r.cancel_requested()) {
      status = absl::CancelledError("request cancelled while it ran");
    } else if (state_ == State::kClosing) {
      status = absl::CancelledError("database is closing");
    } else if (state_ == State::kPoisoned) {
      status = Poisoned(files_->queue().poison_status());
    }
  }
  if (status.ok()) {
    SetRequestState(r, Request::State::kQueued);
    reads_.PushFront(r);
  } else {
    ++stats_.reads;
    Finish(r, std::move(status));
  }
}

}  // namespace sqloop::db
