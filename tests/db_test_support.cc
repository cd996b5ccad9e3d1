#include "tests/db_test_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/epoch_queue.h"
#include "sqloop/io/op.h"

namespace sqloop::testing {
namespace {
bool IsReserve(const io::Op& op) {
  return op.kind == io::OpKind::kWrite && op.buffer == db::internal::kReserveZeros;
}
}  // namespace

// Every backend, the simulator included: the db layer is held to the same results on all of
// them (the simulator implements every op the VFS uses).
std::vector<TestBackend> DbTestBackends() { return AllTestBackends(); }

std::string BackendParamName(const ::testing::TestParamInfo<TestBackend>& info) {
  return info.param.name;
}

void RecordingBackend::FailNth(io::OpKind kind, uint32_t nth, int error, bool persistent,
                               uint32_t length, int fd) {
  SQLOOP_CHECK(nth >= 1, "FailNth counts from 1");
  rules_.push_back(Rule{kind, nth, error, persistent, length, fd});
}

void RecordingBackend::Submit(io::Op* op) {
  const bool waited = loop_ != nullptr && loop_->stats().waited_ops != waits_seen_;
  if (waited) waits_seen_ = loop_->stats().waited_ops;
  events_.push_back(TraceEvent{TraceEvent::Type::kSubmit, op->kind, op->fd, op->offset, op->length,
                               0, op->flags, op, IsReserve(*op),
                               op->path != nullptr ? op->path : "", waited});
  for (Rule& rule : rules_) {
    if (rule.kind != op->kind || rule.countdown == 0) continue;
    if (rule.length != 0 && rule.length != op->length) continue;
    if (rule.fd != -1 && rule.fd != op->fd) continue;
    if (--rule.countdown != 0) continue;
    if (rule.persistent) rule.countdown = 1;
    faked_[op] = Faked{op->kind, rule.error};
    op->kind = io::OpKind::kNop;  // The operation does not happen.
    break;
  }
  if (hold_ == op->kind) {
    held_ops_.push_back(op);
    return;
  }
  inner_->Submit(op);
}

void RecordingBackend::ReleaseHeld() {
  hold_.reset();
  std::vector<io::Op*> held;
  held.swap(held_ops_);
  for (io::Op* op : held) inner_->Submit(op);
}

absl::Status RecordingBackend::Tick(bool wait, int64_t deadline_ns, io::OpList& completed) {
  io::OpList reaped;
  absl::Status status = inner_->Tick(wait, deadline_ns, reaped);
  while (io::Op* op = reaped.PopFront()) {
    if (auto it = faked_.find(op); it != faked_.end()) {
      op->kind = it->second.kind;
      op->result = -it->second.error;
      faked_.erase(it);
    }
    events_.push_back(TraceEvent{TraceEvent::Type::kComplete, op->kind, op->fd, op->offset,
                                 op->length, op->result, op->flags, op, IsReserve(*op), "", false});
    completed.PushBack(op);
  }
  return status;
}

uint64_t RecordingBackend::completed_of(io::OpKind kind) const {
  uint64_t n = 0;
  for (const TraceEvent& e : events_) n += e.type == TraceEvent::Type::kComplete && e.kind == kind;
  return n;
}

uint64_t RecordingBackend::submitted_of(io::OpKind kind) const {
  uint64_t n = 0;
  for (const TraceEvent& e : events_) n += e.type == TraceEvent::Type::kSubmit && e.kind == kind;
  return n;
}

ScratchDir::ScratchDir(bool real, const char* parent) : real_(real) {
  if (!real_) {
    dir_ = "";  // The simulator's root: paths are "/name".
    return;
  }
  const char* tmp = parent != nullptr ? parent : std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sqloop-db-test-XXXXXX";
  SQLOOP_CHECK(mkdtemp(templ.data()) != nullptr, "mkdtemp failed");
  dir_ = templ;
}

ScratchDir::~ScratchDir() {
  if (!real_) return;
  if (DIR* d = opendir(dir_.c_str()); d != nullptr) {
    while (dirent* entry = readdir(d)) {
      if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
      (void)unlink((dir_ + "/" + entry->d_name).c_str());
    }
    closedir(d);
  }
  (void)rmdir(dir_.c_str());
}

bool RealFileExists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

}  // namespace sqloop::testing
