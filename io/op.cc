#include "sqloop/io/op.h"

#include "sqloop/alloc/check.h"

namespace sqloop::io {

absl::string_view OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kNop:
      return "nop";
    case OpKind::kRead:
      return "read";
    case OpKind::kWrite:
      return "write";
    case OpKind::kFsync:
      return "fsync";
    case OpKind::kOpenAt:
      return "openat";
    case OpKind::kClose:
      return "close";
    case OpKind::kUnlink:
      return "unlink";
    case OpKind::kAccept:
      return "accept";
    case OpKind::kConnect:
      return "connect";
    case OpKind::kRecv:
      return "recv";
    case OpKind::kSend:
      return "send";
    case OpKind::kPoll:
      return "poll";
    case OpKind::kFtruncate:
      return "ftruncate";
    case OpKind::kFileSize:
      return "file_size";
  }
  return "unknown";
}

void OpList::Splice(OpList& other) {
  if (other.head_ == nullptr) return;
  if (tail_ == nullptr) {
    head_ = other.head_;
  } else {
    tail_->next = other.head_;
  }
  tail_ = other.tail_;
  other.head_ = other.tail_ = nullptr;
}

bool OpList::Remove(Op* op) {
  Op* previous = nullptr;
  for (Op* it = head_; it != nullptr; previous = it, it = it->next) {
    if (it != op) continue;
    if (previous == nullptr) {
      head_ = it->next;
    } else {
      previous->next = it->next;
    }
    if (tail_ == it) tail_ = previous;
    it->next = nullptr;
    return true;
  }
  return false;
}

}  // namespace sqloop::io
