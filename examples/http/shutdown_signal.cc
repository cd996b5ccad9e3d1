#include "examples/http/shutdown_signal.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::examples::http {

absl::StatusOr<int> ShutdownSignal::Block() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (const int error = pthread_sigmask(SIG_BLOCK, &signals, nullptr); error != 0) {
    return sqloop::io::ErrnoStatus(absl::StatusCode::kInternal, error, "pthread_sigmask");
  }
  // Non-blocking: the fd is read only after poll said it is readable, and a read that finds
  // nothing must not stop the loop.
  const int fd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return sqloop::io::ErrnoStatus(absl::StatusCode::kInternal, errno, "signalfd");
  return fd;
}

ShutdownSignal::ShutdownSignal(loop::Loop& loop, int signal_fd, Handler handler, void* user_data)
    : loop_(loop), fd_(signal_fd), handler_(handler), user_data_(user_data) {
  SQLOOP_CHECK(signal_fd >= 0 && handler != nullptr, "ShutdownSignal: needs a fd and a handler");
  watch_.user_data = this;
  watch_.callback = &ShutdownSignal::OnReadable;
  watch_.name = "shutdown signal";
}

ShutdownSignal::~ShutdownSignal() {
  SQLOOP_CHECK(!watching_, "ShutdownSignal: destroyed while watching; Cancel() and run the loop");
  close(fd_);
}

void ShutdownSignal::Start() {
  SQLOOP_CHECK(!watching_ && received_ == 0, "ShutdownSignal::Start: already started");
  watch_.op = io::Op{.kind = io::OpKind::kPoll, .fd = fd_, .flags = POLLIN};
  watching_ = true;
  loop_.Submit(watch_);
}

void ShutdownSignal::Cancel() {
  if (watching_) loop_.Cancel(watch_);
}

loop::Action ShutdownSignal::OnReadable(loop::Loop& /*loop*/, loop::Completion& c) {
  auto& self = *static_cast<ShutdownSignal*>(c.user_data);
  self.watching_ = false;
  if (c.result() < 0) return loop::Action::kDisarm;  // -ECANCELED after Cancel().
  signalfd_siginfo info{};
  const ssize_t n = read(self.fd_, &info, sizeof(info));
  if (n != static_cast<ssize_t>(sizeof(info))) {
    // Readable but nothing to read (another reader took it): keep watching.
    self.watching_ = true;
    return loop::Action::kRearm;
  }
  self.received_ = static_cast<int>(info.ssi_signo);
  self.handler_(self.user_data_, self.received_);
  return loop::Action::kDisarm;
}

}  // namespace sqloop::examples::http
