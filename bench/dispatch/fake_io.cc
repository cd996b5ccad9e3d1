// The out-of-line part of the fake I/O: the empty pipe of the `+syscalls` variants.
#include "bench/dispatch/fake_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace sqloop::bench::dispatch {

std::string ToString(const CallCounts& counts) {
  return "register=" + std::to_string(counts.registers) +
         " unregister=" + std::to_string(counts.unregisters) +
         " poll=" + std::to_string(counts.polls) + " accept=" + std::to_string(counts.accepts) +
         " read=" + std::to_string(counts.reads) + " write=" + std::to_string(counts.writes);
}

IoStats::IoStats(bool syscalls) {
  if (!syscalls) return;
  int fds[2];
  SQLOOP_CHECK(pipe(fds) == 0, "IoStats: pipe() failed (out of file descriptors?)");
  pipe_read_fd_ = fds[0];
  pipe_write_fd_ = fds[1];
  // Non-blocking, so that reading the never-written pipe returns EAGAIN instead of hanging.
  SQLOOP_CHECK(fcntl(pipe_read_fd_, F_SETFL, O_NONBLOCK) == 0, "IoStats: fcntl(O_NONBLOCK)");
}

IoStats::~IoStats() {
  if (pipe_read_fd_ < 0) return;
  SQLOOP_CHECK(close(pipe_read_fd_) == 0, "IoStats: close(pipe read end)");
  SQLOOP_CHECK(close(pipe_write_fd_) == 0, "IoStats: close(pipe write end)");
}

void IoStats::ReadEmptyPipe() const {
  char byte;
  const ssize_t result = read(pipe_read_fd_, &byte, 1);
  SQLOOP_CHECK(result == -1 && errno == EAGAIN,
               "IoStats::ReadEmptyPipe: the pipe must be empty and non-blocking");
}

}  // namespace sqloop::bench::dispatch
