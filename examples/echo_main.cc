// echo_server: the echo example as a program. Usage: echo_server [port] (default 7777).
// Listens on 127.0.0.1; stop it with Ctrl-C.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "examples/echo.h"

int main(int argc, char** argv) {
  const int port = argc > 1 ? std::atoi(argv[1]) : 7777;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, SOMAXCONN) != 0) {
    std::perror("echo_server: bind/listen");
    return 1;
  }
  sqloop::loop::LoopOptions options;
  options.log = [](sqloop::io::LogLevel level, absl::string_view message) {
    std::fprintf(stderr, "[%s] %.*s\n", sqloop::io::LogLevelName(level),
                 static_cast<int>(message.size()), message.data());
  };
  auto loop = sqloop::loop::Loop::Create(std::move(options));
  if (!loop.ok()) {
    std::fprintf(stderr, "echo_server: %s\n", loop.status().ToString().c_str());
    return 1;
  }
  sqloop::examples::EchoServer server(**loop, fd, /*connections_max=*/256);
  server.Start();
  std::fprintf(stderr, "echo_server: listening on 127.0.0.1:%d\n", port);
  const absl::Status status = (*loop)->Run(sqloop::loop::RunMode::kUntilDone);
  std::fprintf(stderr, "echo_server: %s\n", status.ToString().c_str());
  return status.ok() ? 0 : 1;
}
