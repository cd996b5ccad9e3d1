// examples/http/child_process.h
// -----------------------------------------------------------------------------
//
// Starting sqloop_http (and clients such as curl or wrk) as child processes, for the example's
// end-to-end tests and its load benchmark. Not part of the server: the server never spawns.
//
// Example:
//
//   int out = -1;
//   const pid_t pid = SpawnWithStdoutPipe({"wrk", "-d1s", url}, ChildEnvironment(""), out);
//   std::string output;
//   ReadUntil(out, output, [](const std::string&) { return false; }, /*timeout_seconds=*/30);
#ifndef SQLOOP_EXAMPLES_HTTP_CHILD_PROCESS_H_
#define SQLOOP_EXAMPLES_HTTP_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"

namespace sqloop::examples::http {

// This process's environment without proxy settings (traffic stays on loopback) and with
// SQLOOP_BACKEND set to `backend` when it is not empty.
[[nodiscard]] std::vector<std::string> ChildEnvironment(const std::string& backend);

// Starts `argv` (searched on PATH) with its stdout on a pipe. Returns the pid, or -1 if it could
// not be started; `stdout_fd` receives the pipe's read end.
[[nodiscard]] pid_t SpawnWithStdoutPipe(std::vector<std::string> argv, std::vector<std::string> env,
                                        int& stdout_fd);

// Appends what `fd` delivers to `text` until `done(text)` or EOF. Each wait is bounded by
// `timeout_seconds`; returns false if one ran out.
bool ReadUntil(int fd, std::string& text, absl::FunctionRef<bool(const std::string&)> done,
               int timeout_seconds);

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_CHILD_PROCESS_H_
