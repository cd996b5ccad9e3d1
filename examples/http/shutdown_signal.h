// examples/http/shutdown_signal.h
// -----------------------------------------------------------------------------
//
// SIGINT/SIGTERM delivered as a loop callback, through a signalfd watched with the loop's poll
// operation. No code runs in a signal handler (there is none): the signals are blocked, the
// kernel queues them on the signalfd, and the loop wakes up to read it like any descriptor.
//
// Block() must run before any other thread starts (threads inherit the mask; a thread that
// does not block the signals would take the default action and kill the process). The watch
// fires once: after the first signal it is done, so a loop running kUntilDone can finish.
//
// Example:
//
//   absl::StatusOr<int> fd = ShutdownSignal::Block();  // first thing in main()
//   ShutdownSignal signal(*loop, *fd, [](void* server, int) {
//     static_cast<HttpServer*>(server)->Stop();
//   }, &server);
//   signal.Start();
//   absl::Status status = loop->Run(sqloop::loop::RunMode::kUntilDone);
#ifndef SQLOOP_EXAMPLES_HTTP_SHUTDOWN_SIGNAL_H_
#define SQLOOP_EXAMPLES_HTTP_SHUTDOWN_SIGNAL_H_

#include "absl/status/statusor.h"
#include "sqloop/loop/loop.h"

namespace sqloop::examples::http {

class ShutdownSignal {
 public:
  using Handler = void (*)(void* user_data, int signal_number);

  // Blocks SIGINT and SIGTERM for the calling thread and returns a close-on-exec, non-blocking
  // signalfd for them. Call before starting threads.
  [[nodiscard]] static absl::StatusOr<int> Block();

  // Takes ownership of `signal_fd`. `handler` runs on the loop's thread.
  ShutdownSignal(loop::Loop& loop, int signal_fd, Handler handler, void* user_data);
  // Checks the watch is not pending (it fired, or Cancel() ran and the loop reaped it).
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Starts watching. Call once.
  void Start();
  // Stops watching without a signal (for a server that stops on its own).
  void Cancel();
  [[nodiscard]] int received() const { return received_; }

 private:
  static loop::Action OnReadable(loop::Loop& loop, loop::Completion& c);

  loop::Loop& loop_;
  int fd_;
  Handler handler_;
  void* user_data_;
  loop::Completion watch_;
  bool watching_ = false;
  int received_ = 0;  // The signal number that arrived, 0 before.
};

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_SHUTDOWN_SIGNAL_H_
