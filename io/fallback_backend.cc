// The synchronous fallback backend: plain pread/pwrite/fdatasync for files, non-blocking
// socket calls with epoll for the network. Used where io_uring is disabled (containers,
// kernel.io_uring_disabled) and to hold the loop to the same behaviour on two backends.
//
// Design invariants:
//   1. Submit() only queues; ops run in the next Tick() (contract item 2), in submission order,
//      at most `batch_max_` of them per Tick (contract item 8); a Tick that leaves some queued
//      does not block.
//   2. A file op runs to completion inside Tick(): it may block the thread for the duration
//      of the syscall, which is the honest cost of not having io_uring. A socket op never
//      blocks: recv/send use MSG_DONTWAIT, accept and connect wait for epoll readiness first.
//   3. An op that would block is parked in `waiters_[fd]`; the fd's epoll interest is always
//      the union of its parked ops' interests, and the fd is registered iff it has waiters.
//   4. Sockets stay in the mode the caller created them in (io_uring wants blocking sockets,
//      see docs/architecture.md); connect() flips O_NONBLOCK only for the call itself.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/errno_status.h"
#include "sqloop/io/internal/backends.h"

namespace sqloop::io::internal {
namespace {

// Events per epoll_wait. Readiness beyond it is picked up on the next Tick (level-triggered).
constexpr int kEpollEventsMax = 128;

int64_t MonotonicNowNs() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

int64_t ResultOf(int64_t rc) { return rc < 0 ? -errno : rc; }

uint32_t InterestOf(const Op& op) {
  switch (op.kind) {
    case OpKind::kAccept:
    case OpKind::kRecv:
      return EPOLLIN;
    case OpKind::kSend:
    case OpKind::kConnect:
      return EPOLLOUT;
    case OpKind::kPoll:
      return op.flags;
    default:
      return 0;
  }
}

class FallbackBackend final : public Backend {
 public:
  explicit FallbackBackend(uint32_t batch_max) : batch_max_(batch_max) {}
  ~FallbackBackend() override;
  absl::Status Init();

  absl::string_view name() const override { return "fallback"; }
  void Submit(Op* op) override;
  void Cancel(Op* op) override;
  absl::Status Tick(bool wait, int64_t deadline_ns, OpList& completed) override;
  int64_t NowNs() override { return MonotonicNowNs(); }
  void Wake() override;
  int64_t ReadIfCached(int fd, void* buffer, uint32_t length, uint64_t offset) override {
    return cached_reads_.Read(fd, buffer, length, offset);
  }
  bool InMemoryFile(int fd) const override { return cached_reads_.InMemory(fd); }
  void MarkInMemoryFile(int fd) override { cached_reads_.MarkInMemory(fd); }
  int PollableFd() override { return epoll_fd_; }
  uint32_t in_flight() const override { return in_flight_; }
  bool HasReadyWork() const override { return !queued_.empty() || !finished_.empty(); }
  BackendStats stats() const override { return stats_; }

 private:
  struct Waiters {
    OpList ops;
    uint32_t events = 0;  // What the fd is registered for; 0: not registered.
  };

  void Start(Op* op);
  static int64_t RunFileOp(Op& op);
  // Tries a socket op without blocking. Returns false if it would block.
  bool TrySocketOp(Op& op, uint32_t ready_events);
  void Park(Op* op);
  void UpdateInterest(int fd, Waiters& waiters);
  void RetryWaiters(int fd, uint32_t ready_events);
  void Finish(Op* op);
  absl::Status Wait(bool wait, int64_t deadline_ns);

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  uint32_t in_flight_ = 0;
  uint32_t parked_ = 0;
  const uint32_t batch_max_;  // BackendOptions::submit_batch_max (invariant 1).
  OpList queued_;
  OpList finished_;
  absl::flat_hash_map<int, Waiters> waiters_;
  BackendStats stats_;
  internal::PosixCachedReads cached_reads_;
};

FallbackBackend::~FallbackBackend() {
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

absl::Status FallbackBackend::Init() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return ErrnoStatus(errno, "fallback backend: epoll_create1");
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return ErrnoStatus(errno, "fallback backend: eventfd");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event) != 0) {
    return ErrnoStatus(errno, "fallback backend: registering the wake eventfd");
  }
  return absl::OkStatus();
}

void FallbackBackend::Submit(Op* op) {
  ResetForSubmit(*op);
  in_flight_++;
  stats_.submitted++;
  queued_.PushBack(op);
}

void FallbackBackend::Cancel(Op* op) {
  // Cancelled already, or done and waiting to be handed back: it comes back as it is.
  if (op->cancel_requested || op->finished) return;
  SQLOOP_CHECK(in_flight_ > 0, "Backend::Cancel: no operation is in flight");
  op->cancel_requested = true;
  bool removed = queued_.Remove(op);
  if (!removed) {
    auto it = waiters_.find(op->fd);
    if (it != waiters_.end() && it->second.ops.Remove(op)) {
      removed = true;
      parked_--;
      UpdateInterest(op->fd, it->second);
    }
  }
  if (!removed) return;  // Already finished; it comes back with its real result.
  op->result = -ECANCELED;
  Finish(op);
}

void FallbackBackend::Finish(Op* op) {
  cached_reads_.Observe(*op);
  in_flight_--;
  stats_.completed++;
  op->finished = true;
  finished_.PushBack(op);
}

int64_t FallbackBackend::RunFileOp(Op& op) {
  switch (op.kind) {
    case OpKind::kNop:
      return 0;
    case OpKind::kRead:
    case OpKind::kWrite:
      return TransferFileOp(op);
    case OpKind::kFsync:
      return ResultOf((op.flags & kFsyncDatasync) != 0 ? fdatasync(op.fd) : fsync(op.fd));
    case OpKind::kOpenAt:
      return ResultOf(openat(op.fd, op.path, static_cast<int>(op.flags), op.mode));
    case OpKind::kClose:
      return ResultOf(close(op.fd));
    case OpKind::kUnlink:
      return ResultOf(unlinkat(op.fd, op.path, static_cast<int>(op.flags)));
    case OpKind::kFtruncate:
    case OpKind::kFileSize:
      return RunMetadataOp(op);
    default:
      SQLOOP_CHECK(false, "fallback: RunFileOp given a socket op");
  }
  return -EINVAL;
}

void FallbackBackend::Start(Op* op) {
  if (InterestOf(*op) != 0) {
    // accept and connect wait for readiness first (invariant 2); recv/send/poll try at once.
    const bool try_now = op->kind == OpKind::kRecv || op->kind == OpKind::kSend ||
                         op->kind == OpKind::kConnect || op->kind == OpKind::kPoll;
    if (!(try_now && TrySocketOp(*op, 0))) Park(op);
    return;
  }
  int64_t rc = 0;
  do {
    stats_.enter_calls++;
    rc = RunFileOp(*op);
  } while (!FinishTransfer(*op, rc, stats_.resubmitted));
  Finish(op);
}

bool FallbackBackend::TrySocketOp(Op& op, uint32_t ready_events) {
  for (;;) {
    int64_t rc = 0;
    stats_.enter_calls++;
    switch (op.kind) {
      case OpKind::kRecv:
        rc = ResultOf(recv(op.fd, op.buffer, op.length, static_cast<int>(op.flags) | MSG_DONTWAIT));
        break;
      case OpKind::kSend:
        rc = ResultOf(send(op.fd, static_cast<char*>(op.buffer) + op.transferred,
                           op.length - op.transferred,
                           static_cast<int>(op.flags) | MSG_DONTWAIT | MSG_NOSIGNAL));
        break;
      case OpKind::kAccept:
        if (ready_events == 0) return false;
        rc = ResultOf(accept4(op.fd, static_cast<sockaddr*>(op.buffer),
                              op.buffer != nullptr ? &op.address_length : nullptr,
                              static_cast<int>(op.flags)));
        break;
      case OpKind::kConnect: {
        if (ready_events != 0) {
          int error = 0;
          socklen_t size = sizeof(error);
          rc = getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &error, &size) < 0 ? -errno : -error;
          break;
        }
        const int flags = fcntl(op.fd, F_GETFL);
        if ((flags & O_NONBLOCK) == 0) fcntl(op.fd, F_SETFL, flags | O_NONBLOCK);
        rc = ResultOf(connect(op.fd, static_cast<const sockaddr*>(op.buffer), op.length));
        if ((flags & O_NONBLOCK) == 0) fcntl(op.fd, F_SETFL, flags);
        if (rc == -EINPROGRESS) return false;
        break;
      }
      case OpKind::kPoll: {
        pollfd probe{op.fd, static_cast<int16_t>(op.flags), 0};
        rc = ResultOf(poll(&probe, 1, 0));
        if (rc == 0) return false;
        if (rc > 0) rc = probe.revents;
        break;
      }
      default:
        SQLOOP_CHECK(false, "fallback: TrySocketOp given a file op");
    }
    if (rc == -EAGAIN || rc == -EWOULDBLOCK) return false;
    if (FinishTransfer(op, rc, stats_.resubmitted)) {
      Finish(&op);
      return true;
    }
  }
}

void FallbackBackend::Park(Op* op) {
  Waiters& waiters = waiters_[op->fd];
  waiters.ops.PushBack(op);
  parked_++;
  UpdateInterest(op->fd, waiters);
}

void FallbackBackend::UpdateInterest(int fd, Waiters& waiters) {
  uint32_t wanted = 0;
  for (Op* op = waiters.ops.front(); op != nullptr; op = op->next) wanted |= InterestOf(*op);
  if (wanted == waiters.events) return;
  epoll_event event{};
  event.events = wanted;
  event.data.fd = fd;
  const int action =
      wanted == 0 ? EPOLL_CTL_DEL : (waiters.events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD);
  stats_.enter_calls++;
  if (epoll_ctl(epoll_fd_, action, fd, &event) != 0 && wanted != 0) {
    // The fd cannot be watched (EBADF: closed; EPERM: a regular file, always ready). Answer
    // every parked op now rather than letting it wait forever.
    const int error = errno;
    while (Op* op = waiters.ops.PopFront()) {
      parked_--;
      op->result = error == EPERM && op->kind == OpKind::kPoll
                       ? static_cast<int64_t>(op->flags & (POLLIN | POLLOUT))
                       : -error;
      Finish(op);
    }
    wanted = 0;
  }
  waiters.events = wanted;
}

void FallbackBackend::RetryWaiters(int fd, uint32_t ready_events) {
  auto it = waiters_.find(fd);
  if (it == waiters_.end()) return;
  Waiters& waiters = it->second;
  OpList still_waiting;
  while (Op* op = waiters.ops.PopFront()) {
    const bool relevant = ((InterestOf(*op) | EPOLLERR | EPOLLHUP) & ready_events) != 0;
    if (relevant && TrySocketOp(*op, ready_events)) {
      parked_--;
    } else {
      still_waiting.PushBack(op);
    }
  }
  waiters.ops.Splice(still_waiting);
  UpdateInterest(fd, waiters);
}

absl::Status FallbackBackend::Wait(bool wait, int64_t deadline_ns) {
  int timeout_ms = 0;
  if (wait) {
    timeout_ms = -1;
    if (deadline_ns != kNoDeadline) {
      // Round up so a wait never ends just before its deadline and spins.
      timeout_ms = TimeoutMsFor(deadline_ns - NowNs());
    }
  }
  epoll_event events[kEpollEventsMax];
  stats_.enter_calls++;
  const int count = epoll_wait(epoll_fd_, events, kEpollEventsMax, timeout_ms);
  if (count < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return ErrnoStatus(errno, "fallback backend: epoll_wait");
  }
  for (int i = 0; i < count; i++) {
    if (events[i].data.fd == wake_fd_) {
      uint64_t ignored = 0;
      [[maybe_unused]] const ssize_t rc = read(wake_fd_, &ignored, sizeof(ignored));
      continue;
    }
    RetryWaiters(events[i].data.fd, events[i].events);
  }
  return absl::OkStatus();
}

absl::Status FallbackBackend::Tick(bool wait, int64_t deadline_ns, OpList& completed) {
  for (uint32_t started = 0; started < batch_max_ && !queued_.empty(); ++started) {
    Start(queued_.PopFront());
  }
  if (!queued_.empty()) stats_.batch_deferrals++;
  // Only touch epoll when something can come from it: parked ops, or a wait (for Wake()).
  const bool may_wait = wait && finished_.empty() && queued_.empty();
  if (may_wait || parked_ > 0) {
    absl::Status status = Wait(may_wait, deadline_ns);
    if (!status.ok()) return status;
  }
  completed.Splice(finished_);
  return absl::OkStatus();
}

void FallbackBackend::Wake() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t rc = write(wake_fd_, &one, sizeof(one));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateFallbackBackend(const BackendOptions& options) {
  SQLOOP_CHECK(options.submit_batch_max > 0, "BackendOptions: submit_batch_max must be > 0");
  auto backend = std::make_unique<FallbackBackend>(options.submit_batch_max);
  absl::Status status = backend->Init();
  if (!status.ok()) return status;
  return backend;
}

}  // namespace sqloop::io::internal
