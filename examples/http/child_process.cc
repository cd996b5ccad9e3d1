#include "examples/http/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace sqloop::examples::http {
namespace {

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

}  // namespace

std::vector<std::string> ChildEnvironment(const std::string& backend) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; e++) {
    const std::string entry = *e;
    const std::string name = absl::AsciiStrToLower(entry.substr(0, entry.find('=')));
    if (absl::StrContains(name, "proxy") || name == "sqloop_backend") continue;
    env.push_back(entry);
  }
  if (!backend.empty()) env.push_back("SQLOOP_BACKEND=" + backend);
  return env;
}

pid_t SpawnWithStdoutPipe(std::vector<std::string> argv, std::vector<std::string> env,
                          int& stdout_fd) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  std::vector<char*> args = Pointers(argv);
  std::vector<char*> envp = Pointers(env);
  pid_t pid = -1;
  if (posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  stdout_fd = pipe_fds[0];
  return pid;
}

bool ReadUntil(int fd, std::string& text, absl::FunctionRef<bool(const std::string&)> done,
               int timeout_seconds) {
  char chunk[4096];
  while (!done(text)) {
    pollfd ready{fd, POLLIN, 0};
    if (poll(&ready, 1, timeout_seconds * 1000) <= 0) return false;
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) return true;  // EOF.
    text.append(chunk, static_cast<size_t>(n));
  }
  return true;
}

}  // namespace sqloop::examples::http
