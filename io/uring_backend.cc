// The io_uring backend.
//
// Design invariants:
//   1. Every user op is in exactly one place: the SQ (prepared, not yet sent), the kernel, the
//      `waiting_` FIFO (no SQE or no CQ room), or `finished_` (done in user space, handed back
//      next Tick). `in_flight_` counts all of them.
//   2. The kernel never holds more CQE-producing requests than the CQ has entries, so the CQ
//      cannot overflow; Tick() checks the kernel's overflow counter stays 0. User ops are
//      admitted while `ops_in_kernel_ < op_limit_ = (cq_entries_ - 1) / 2`; each may add one
//      cancel request, and the wake read is one more: 2 * op_limit_ + 1 <= cq_entries_.
//   3. Submissions are sent once per Tick (one io_uring_enter that also waits), except when the
//      SQ is full, which flushes early. At most `batch_max_` user ops are prepared between two
//      sends (contract item 8); later ones wait in `waiting_`, and the Tick does not block while
//      they do, unless they wait for CQ room (invariant 2): then only a completion helps.
//   4. The low bits of a CQE's user_data tell what it is: a user op (0), the answer to a cancel
//      request (1, ignored: the target op answers for itself) or the wake read (2). Ops are at
//      least 8-byte aligned, so the bits are free.
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/errno_status.h"
#include "sqloop/io/internal/backends.h"

namespace sqloop::io::internal {
namespace {

constexpr uint64_t kTagOp = 0;
constexpr uint64_t kTagCancel = 1;
constexpr uint64_t kTagWake = 2;
constexpr uint64_t kTagMask = 7;

struct Opcode {
  int code;
  const char* name;
};
// Every opcode the Op kinds map to. Probed at start so a kernel that lacks one fails setup
// with its name instead of failing the first operation of that kind in production.
constexpr Opcode kRequiredOpcodes[] = {
    {IORING_OP_NOP, "NOP"},
    {IORING_OP_READ, "READ"},
    {IORING_OP_WRITE, "WRITE"},
    {IORING_OP_FSYNC, "FSYNC"},
    {IORING_OP_OPENAT, "OPENAT"},
    {IORING_OP_CLOSE, "CLOSE"},
    {IORING_OP_UNLINKAT, "UNLINKAT"},
    {IORING_OP_ACCEPT, "ACCEPT"},
    {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},
    {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
};

int64_t MonotonicNowNs() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

class UringBackend final : public Backend {
 public:
  UringBackend() = default;
  ~UringBackend() override;
  absl::Status Init(const BackendOptions& options, int forced_setup_errno);

  absl::string_view name() const override { return "io_uring"; }
  void Submit(Op* op) override;
  void Cancel(Op* op) override;
  absl::Status Tick(bool wait, int64_t deadline_ns, OpList& completed) override;
  int64_t NowNs() override { return MonotonicNowNs(); }
  void Wake() override;
  int64_t ReadIfCached(int fd, void* buffer, uint32_t length, uint64_t offset) override {
    return cached_reads_.Read(fd, buffer, length, offset, /*batch=*/in_flight_ > 0);
  }
  bool InMemoryFile(int fd) const override { return cached_reads_.InMemory(fd); }
  void MarkInMemoryFile(int fd) override { cached_reads_.MarkInMemory(fd); }
  // A close and the metadata calls wait for no device (the kernel keeps a closed file for any
  // request still in flight on it, as for the ring's close). Through the ring, one that the
  // loop waits for cost an io_uring_enter of its own, which also sent the tick's other
  // submissions early: 25 % of registry_zipf/10000_all_asleep, whose sleeps close three files.
  // A write the loop waits for (one that allocates, so SQLite learns of a full disk) holds the
  // loop either way, but the ring hands a buffered write that cannot finish at once to a kernel
  // worker thread, and the loop then waits for that thread to be scheduled as well: 287 us per
  // such write on average, 4.4 ms at worst, in a 5,000-database creation burst on tmpfs.
  bool RunInline(Op& op) override {
    if (op.kind == OpKind::kWrite) {
      WriteInline(op);
      return true;
    }
    if (op.kind != OpKind::kClose && !IsMetadataOp(op.kind)) return false;
    op.result = op.kind == OpKind::kClose ? (close(op.fd) == 0 ? 0 : -errno) : RunMetadataOp(op);
    cached_reads_.Observe(op);
    return true;
  }
  int PollableFd() override;
  uint32_t in_flight() const override { return in_flight_; }
  bool HasReadyWork() const override {
    return io_uring_sq_ready(&ring_) > 0 || !finished_.empty() ||
           (!waiting_.empty() && ops_in_kernel_ < op_limit_);  // Invariant 3's deferred ops.
  }
  BackendStats stats() const override { return stats_; }

 private:
  io_uring_sqe* GetSqe();
  void Enqueue(Op* op);
  static void Prepare(io_uring_sqe* sqe, Op* op);
  void ArmWakeRead();
  void MoveWaitingToSq();
  absl::Status Enter(bool wait, int64_t deadline_ns);
  void Reap(OpList& completed);
  void HandleOpCqe(Op* op, int32_t res, OpList& completed);
  // Hands `op` back on the next Tick without it ever reaching the kernel.
  void FinishInUserSpace(Op* op);
  void WarnRingFull();
  // pwrite until the whole buffer is written or it fails, as a write through the ring would be.
  static void WriteInline(Op& op);

  io_uring ring_{};
  bool ring_ready_ = false;
  uint32_t cq_entries_ = 0;
  uint32_t op_limit_ = 0;       // Invariant 2.
  uint32_t ops_in_kernel_ = 0;  // User ops in the kernel (or prepared in the SQ).
  uint32_t batch_max_ = 0;      // BackendOptions::submit_batch_max (invariant 3).
  uint32_t prepared_ = 0;       // User ops prepared in the SQ since the last send.
  uint32_t in_flight_ = 0;      // User ops submitted and not handed back (invariant 1).
  OpList waiting_;
  OpList finished_;
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
  int notify_fd_ = -1;  // Registered with the ring on first PollableFd().
  LogHook log_;
  bool warned_ring_full_ = false;
  BackendStats stats_;
  internal::PosixCachedReads cached_reads_{/*defer_misses=*/true};
};

UringBackend::~UringBackend() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (notify_fd_ >= 0) close(notify_fd_);
}

absl::Status SetupError(int error) {
  const std::string message = absl::StrCat(
      "io_uring setup failed: ", ErrnoText(error),
      error == EPERM || error == EACCES
          ? "; io_uring is disabled (sysctl kernel.io_uring_disabled, or a container's seccomp "
            "policy). Use the fallback backend (BackendKind::kFallback or SQLOOP_BACKEND=fallback)"
          : "");
  if (error == EPERM || error == EACCES) return absl::PermissionDeniedError(message);
  if (error == ENOSYS) return absl::UnimplementedError(message);
  return absl::UnavailableError(message);
}

absl::Status UringBackend::Init(const BackendOptions& options, int forced_setup_errno) {
  SQLOOP_CHECK(options.submit_batch_max > 0, "BackendOptions: submit_batch_max must be > 0");
  batch_max_ = std::min(options.submit_batch_max, options.ring_entries);
  SQLOOP_CHECK(options.ring_entries > 0 && options.in_flight_max >= options.ring_entries,
               "BackendOptions: ring_entries must be > 0 and in_flight_max >= ring_entries");
  log_ = options.log;
  if (forced_setup_errno != 0) return SetupError(forced_setup_errno);
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  // Invariant 2: room for at least one op (an in_flight_max of 1 left none, and every op
  // waited for ever), and no more than the kernel's largest CQ (64 Ki entries).
  params.cq_entries = static_cast<uint32_t>(
      std::clamp<uint64_t>(2 * uint64_t{options.in_flight_max}, 4, uint64_t{1} << 16));
  const int rc = io_uring_queue_init_params(options.ring_entries, &ring_, &params);
  if (rc < 0) return SetupError(-rc);
  ring_ready_ = true;
  cq_entries_ = params.cq_entries;
  op_limit_ = (cq_entries_ - 1) / 2;

  io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
  if (probe == nullptr) return absl::UnimplementedError("io_uring: the kernel cannot be probed");
  std::string missing;
  for (const Opcode& opcode : kRequiredOpcodes) {
    if (io_uring_opcode_supported(probe, opcode.code) == 0)
      absl::StrAppend(&missing, " ", opcode.name);
  }
  io_uring_free_probe(probe);
  if (!missing.empty()) {
    return absl::UnimplementedError(
        absl::StrCat("io_uring: this kernel lacks required opcodes:", missing,
                     "; sqloop needs Linux 5.11 or newer, or use the fallback backend"));
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return SetupError(errno);
  ArmWakeRead();
  return absl::OkStatus();
}

io_uring_sqe* UringBackend::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe != nullptr) return sqe;
  // The SQ is full: send what is there now (invariant 3's one exception) and try again.
  stats_.sq_full_flushes++;
  stats_.enter_calls++;
  io_uring_submit(&ring_);
  prepared_ = 0;
  return io_uring_get_sqe(&ring_);
}

void UringBackend::ArmWakeRead() {
  io_uring_sqe* sqe = GetSqe();
  SQLOOP_CHECK(sqe != nullptr, "io_uring: no SQE for the wake read right after a flush");
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof(wake_value_), 0);
  io_uring_sqe_set_data64(sqe, kTagWake);
}

void UringBackend::WarnRingFull() {
  stats_.ring_full_waits++;
  if (warned_ring_full_ || !log_) return;
  // Said once: an op waiting here is only delayed if the ops in the kernel finish, but if they
  // are long-lived (a receive per idle connection), it waits for ever. That must not be silent.
  warned_ring_full_ = true;
  log_(LogLevel::kWarning,
       absl::StrFormat("io_uring: %u operations are in the kernel, the most this ring admits; "
                       "new ones wait until some finish. If they are long-lived (a receive per "
                       "open connection), raise BackendOptions::in_flight_max above their count",
                       ops_in_kernel_));
}

void UringBackend::WriteInline(Op& op) {
  ResetForSubmit(op);
  uint64_t retries = 0;  // Not the backend's stats: this op never reached the ring.
  while (!FinishTransfer(op, TransferFileOp(op), retries)) {
  }
}

void UringBackend::Submit(Op* op) {
  ResetForSubmit(*op);
  in_flight_++;
  stats_.submitted++;
  if (IsMetadataOp(op->kind)) {
    // No io_uring opcode on liburing 2.3 (see io/op.h): a plain syscall, handed back on the
    // next Tick like any completion.
    op->result = RunMetadataOp(*op);
    FinishInUserSpace(op);
    return;
  }
  Enqueue(op);
}

void UringBackend::Enqueue(Op* op) {
  // Keep FIFO order: nothing overtakes ops already waiting for room.
  if (!waiting_.empty() || ops_in_kernel_ >= op_limit_ || prepared_ >= batch_max_) {
    if (ops_in_kernel_ >= op_limit_) WarnRingFull();
    waiting_.PushBack(op);
    return;
  }
  io_uring_sqe* sqe = GetSqe();
  if (sqe == nullptr) {
    waiting_.PushBack(op);
    return;
  }
  Prepare(sqe, op);
  ops_in_kernel_++;
  prepared_++;
}

void UringBackend::Prepare(io_uring_sqe* sqe, Op* op) {
  char* const data = static_cast<char*>(op->buffer) + op->transferred;
  const uint32_t remaining = op->length - op->transferred;
  const uint64_t offset = op->offset + op->transferred;
  switch (op->kind) {
    case OpKind::kNop:
      io_uring_prep_nop(sqe);
      break;
    case OpKind::kRead:
      io_uring_prep_read(sqe, op->fd, data, remaining, offset);
      break;
    case OpKind::kWrite:
      io_uring_prep_write(sqe, op->fd, data, remaining, offset);
      break;
    case OpKind::kFsync:
      io_uring_prep_fsync(sqe, op->fd,
                          (op->flags & kFsyncDatasync) != 0 ? IORING_FSYNC_DATASYNC : 0);
      break;
    case OpKind::kOpenAt:
      io_uring_prep_openat(sqe, op->fd, op->path, static_cast<int>(op->flags), op->mode);
      break;
    case OpKind::kClose:
      io_uring_prep_close(sqe, op->fd);
      break;
    case OpKind::kUnlink:
      io_uring_prep_unlinkat(sqe, op->fd, op->path, static_cast<int>(op->flags));
      break;
    case OpKind::kAccept:
      io_uring_prep_accept(sqe, op->fd, static_cast<sockaddr*>(op->buffer),
                           op->buffer != nullptr ? &op->address_length : nullptr,
                           static_cast<int>(op->flags));
      break;
    case OpKind::kConnect:
      io_uring_prep_connect(sqe, op->fd, static_cast<const sockaddr*>(op->buffer), op->length);
      break;
    case OpKind::kRecv:
      io_uring_prep_recv(sqe, op->fd, op->buffer, op->length, static_cast<int>(op->flags));
      break;
    case OpKind::kSend:
      io_uring_prep_send(sqe, op->fd, data, remaining, static_cast<int>(op->flags));
      break;
    case OpKind::kPoll:
      io_uring_prep_poll_add(sqe, op->fd, op->flags);
      break;
    case OpKind::kFtruncate:
    case OpKind::kFileSize:
      SQLOOP_CHECK(false, "io_uring: metadata ops never reach the SQ");
  }
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(op) | kTagOp);
}

void UringBackend::Cancel(Op* op) {
  // Cancelled already, or finished in user space (a metadata op, at Submit) and waiting to be
  // handed back: it comes back as it is.
  if (op->cancel_requested || op->finished) return;
  SQLOOP_CHECK(in_flight_ > 0, "Backend::Cancel: no operation is in flight");
  op->cancel_requested = true;
  if (waiting_.Remove(op)) {
    op->result = -ECANCELED;
    FinishInUserSpace(op);
    return;
  }
  io_uring_sqe* sqe = GetSqe();
  SQLOOP_CHECK(sqe != nullptr, "io_uring: no SQE for a cancel right after a flush");
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(op), 0);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(op) | kTagCancel);
}

void UringBackend::MoveWaitingToSq() {
  while (!waiting_.empty() && ops_in_kernel_ < op_limit_ && prepared_ < batch_max_) {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) return;
    Prepare(sqe, waiting_.PopFront());
    ops_in_kernel_++;
    prepared_++;
  }
}

absl::Status UringBackend::Tick(bool wait, int64_t deadline_ns, OpList& completed) {
  if (notify_fd_ >= 0) {
    // Reset the host-visible descriptor before reaping, so a CQE posted after the reap
    // signals it again (no lost wake-up).
    uint64_t ignored = 0;
    [[maybe_unused]] const ssize_t rc = read(notify_fd_, &ignored, sizeof(ignored));
  }
  MoveWaitingToSq();
  completed.Splice(finished_);
  // Invariant 3: ops left for the next Tick by the batch bound must not wait for a completion.
  const bool deferred = !waiting_.empty() && ops_in_kernel_ < op_limit_;
  if (deferred) stats_.batch_deferrals++;
  const bool may_wait = wait && !deferred && completed.empty() && io_uring_cq_ready(&ring_) == 0;
  absl::Status status = Enter(may_wait, deadline_ns);
  if (!status.ok()) return status;
  Reap(completed);
  SQLOOP_CHECK(
      *ring_.cq.koverflow == 0,
      "io_uring: the CQ overflowed although requests in the kernel are bounded by its size");
  return absl::OkStatus();
}

absl::Status UringBackend::Enter(bool wait, int64_t deadline_ns) {
  const bool has_submissions = io_uring_sq_ready(&ring_) > 0;
  if (!wait && !has_submissions) return absl::OkStatus();
  stats_.enter_calls++;
  int rc = 0;
  if (!wait) {
    rc = io_uring_submit(&ring_);
  } else {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec timeout{};
    __kernel_timespec* timeout_pointer = nullptr;
    if (deadline_ns != kNoDeadline) {
      const int64_t delay_ns = std::max<int64_t>(0, deadline_ns - NowNs());
      timeout.tv_sec = delay_ns / 1'000'000'000;
      timeout.tv_nsec = delay_ns % 1'000'000'000;
      timeout_pointer = &timeout;
    }
    rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, timeout_pointer, nullptr);
  }
  prepared_ = 0;
  // -ETIME: the deadline passed; -EINTR: a signal. Both are normal ends of a wait.
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    return absl::InternalError(
        absl::StrCat("io_uring_enter failed: ", ErrnoText(rc), "; the ring is unusable"));
  }
  return absl::OkStatus();
}

void UringBackend::Reap(OpList& completed) {
  unsigned head = 0;
  unsigned count = 0;
  io_uring_cqe* cqe = nullptr;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    count++;
    const uint64_t data = io_uring_cqe_get_data64(cqe);
    switch (data & kTagMask) {
      case kTagOp:
        // An op's tag is 0, so its user_data is the Op pointer itself: liburing's own accessor
        // gives it back as the pointer it was.
        HandleOpCqe(static_cast<Op*>(io_uring_cqe_get_data(cqe)), cqe->res, completed);
        break;
      case kTagCancel:
        break;  // The target op's own CQE reports the outcome.
      case kTagWake:
        ArmWakeRead();
        break;
      default:
        SQLOOP_CHECK(false, "io_uring: CQE with an unknown user_data tag");
    }
  }
  io_uring_cq_advance(&ring_, count);
}

void UringBackend::FinishInUserSpace(Op* op) {
  in_flight_--;
  stats_.completed++;
  op->finished = true;
  finished_.PushBack(op);
}

void UringBackend::HandleOpCqe(Op* op, int32_t res, OpList& completed) {
  ops_in_kernel_--;
  if (!FinishTransfer(*op, res, stats_.resubmitted)) {
    Enqueue(op);  // The remainder of a short transfer, or a retry after -EINTR/-EAGAIN.
    return;
  }
  cached_reads_.Observe(*op);
  in_flight_--;
  stats_.completed++;
  completed.PushBack(op);
}

void UringBackend::Wake() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t rc = write(wake_fd_, &one, sizeof(one));
}

int UringBackend::PollableFd() {
  if (notify_fd_ < 0) {
    notify_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    SQLOOP_CHECK(notify_fd_ >= 0, "io_uring: eventfd for PollableFd failed");
    const int rc = io_uring_register_eventfd(&ring_, notify_fd_);
    SQLOOP_CHECK(rc == 0, "io_uring: registering the notification eventfd failed");
    // Completions posted before the eventfd was registered never signal it: a host waiting on
    // it for them would wait for ever. Signal them now.
    if (io_uring_cq_ready(&ring_) > 0) {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t written = write(notify_fd_, &one, sizeof(one));
    }
  }
  return notify_fd_;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateUringBackend(const BackendOptions& options,
                                                            int forced_setup_errno) {
  auto backend = std::make_unique<UringBackend>();
  absl::Status status = backend->Init(options, forced_setup_errno);
  if (!status.ok()) return status;
  return backend;
}

}  // namespace sqloop::io::internal
