// io/op.h
// -----------------------------------------------------------------------------
//
// The operation descriptor every backend consumes and returns, and the intrusive FIFO that
// carries descriptors between a backend and the loop.
//
// An `Op` is plain data owned by the caller (in practice embedded in a `loop::Completion`).
// The backend never allocates one and never copies one: it links submitted ops through
// `Op::next` and hands the same pointers back with `result` set to a byte count / descriptor /
// event mask (`>= 0`) or to `-errno`. That is the whole contract between io/ and the layers
// above; io/ knows nothing about callbacks.
//
// Field use per kind (unused fields are ignored):
//
// clang-format off
//   kind      fd      buffer                 length        offset  flags             result
//   kNop      -       -                      -             -       -                 0
//   kRead     file    out bytes              capacity      file    -                 bytes (< length only at EOF)
//   kWrite    file    in bytes               bytes         file    -                 bytes (== length)
//   kFsync    file    -                      -             -       kFsyncDatasync?   0
//   kOpenAt   dirfd   -                      -             -       O_* flags         new fd
//   kClose    fd      -                      -             -       -                 0
//   kUnlink   dirfd   -                      -             -       AT_REMOVEDIR?     0
//   kAccept   socket  sockaddr* out or null  capacity      -       SOCK_* flags      new fd
//   kConnect  socket  const sockaddr*        address size  -       -                 0
//   kRecv     socket  out bytes              capacity      -       MSG_* flags       bytes (0 = peer closed)
//   kSend     socket  in bytes               bytes         -       MSG_* flags       bytes (== length)
//   kPoll     fd      -                      -             -       POLL* mask        revents
// clang-format on
//
// `path` (kOpenAt, kUnlink) and `mode` (kOpenAt) complete the table. Reads and writes on files
// and sends are resubmitted by the backend until the whole length moved (or EOF for a read):
// callers never see a short transfer except a read at end of file. kRecv returns whatever
// arrived, as recv(2) does. kFtruncate and kFileSize exist so the SQLite VFS can run on the
// simulator; liburing 2.3 (Debian bookworm) has no ftruncate opcode, so the real backends run
// both as plain syscalls (metadata only, no data I/O) and hand them back on the next Tick.
#ifndef SQLOOP_IO_OP_H_
#define SQLOOP_IO_OP_H_

#include <fcntl.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "sqloop/alloc/check.h"

namespace sqloop::io {

enum class OpKind : uint8_t {
  kNop,
  kRead,
  kWrite,
  kFsync,
  kOpenAt,
  kClose,
  kUnlink,
  kAccept,
  kConnect,
  kRecv,
  kSend,
  kPoll,
  kFtruncate,
  kFileSize,
};

// Returns "nop", "read", ... for logs and traces.
[[nodiscard]] absl::string_view OpKindName(OpKind kind);

// kFsync flag: flush data only (fdatasync), not metadata that is not needed to read it back.
inline constexpr uint32_t kFsyncDatasync = 1;

struct Op {
  OpKind kind = OpKind::kNop;
  int fd = -1;
  void* buffer = nullptr;
  uint32_t length = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;
  const char* path = nullptr;
  uint32_t mode = 0;
  // kAccept: in, the capacity of `buffer`; out, the peer address size.
  socklen_t address_length = 0;

  // Set by the backend when it hands the op back: >= 0 on success, -errno on failure.
  int64_t result = 0;

  // Backend bookkeeping. Zero while the op is idle; a backend resets them on Submit.
  uint32_t transferred = 0;  // Bytes moved so far by a resubmitted read/write/send.
  uint8_t retries = 0;       // -EINTR / -EAGAIN retries so far.
  bool cancel_requested = false;
  bool finished = false;  // Done, waiting to be handed back: a Cancel leaves its result.
  Op* next = nullptr;     // Intrusive link for OpList.
};

// A kOpenAt that opens the directory `path` read-only (close-on-exec): the descriptor a
// directory fsync needs. `path` must outlive the op.
[[nodiscard]] inline Op OpenDirectoryOp(const char* path) {
  return Op{.kind = OpKind::kOpenAt,
            .fd = AT_FDCWD,
            .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
            .path = path};
}

// An intrusive singly linked FIFO of ops. O(1) push, pop and splice; never allocates.
// An op is in at most one list at a time (it has one `next`).
class OpList {
 public:
  OpList() = default;
  OpList(const OpList&) = delete;
  OpList& operator=(const OpList&) = delete;
  // Moving takes the ops along (containers of lists rehash by moving).
  OpList(OpList&& other) noexcept : head_(other.head_), tail_(other.tail_) {
    other.head_ = other.tail_ = nullptr;
  }
  OpList& operator=(OpList&& other) noexcept {
    head_ = other.head_;
    tail_ = other.tail_;
    other.head_ = other.tail_ = nullptr;
    return *this;
  }

  [[nodiscard]] bool empty() const { return head_ == nullptr; }
  [[nodiscard]] Op* front() const { return head_; }

  // Inline: these run once or twice per operation on every backend's hot path.
  void PushBack(Op* op) {
    SQLOOP_CHECK(op->next == nullptr && op != tail_, "OpList::PushBack: op is already in a list");
    if (tail_ == nullptr) {
      head_ = op;
    } else {
      tail_->next = op;
    }
    tail_ = op;
  }
  [[nodiscard]] Op* PopFront() {
    Op* op = head_;
    if (op == nullptr) return nullptr;
    head_ = op->next;
    if (head_ == nullptr) tail_ = nullptr;
    op->next = nullptr;
    return op;
  }
  // Moves every op of `other` to the back of this list, in order; `other` becomes empty.
  void Splice(OpList& other);
  // Unlinks `op` if it is in this list; returns whether it was. O(n): used only by cancel.
  bool Remove(Op* op);

 private:
  Op* head_ = nullptr;
  Op* tail_ = nullptr;
};

}  // namespace sqloop::io

#endif  // SQLOOP_IO_OP_H_
