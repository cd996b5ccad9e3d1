// The worked example of docs/state-machines.md, proven on every backend with real sockets.
#include "examples/echo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_backends.h"

namespace sqloop::examples {
namespace {

using testing::TestBackend;

int ListenOnLoopback(uint16_t& port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), size) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    return -1;
  }
  port = ntohs(address.sin_port);
  return fd;
}

// A blocking client: sends `messages` messages of growing size, checks each echo.
bool RunClient(uint16_t port, int index, int messages, std::atomic<int>& first_echoes,
               int concurrency, uint64_t& bytes_sent) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return false;
  bool ok = true;
  for (int m = 0; m < messages && ok; m++) {
    const std::string message(static_cast<size_t>(1 + (index * 131 + m * 977) % 3000),
                              static_cast<char>('a' + (index + m) % 26));
    ok = send(fd, message.data(), message.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(message.size());
    std::string echoed;
    char chunk[4096];
    while (ok && echoed.size() < message.size()) {
      const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
      ok = n > 0;
      if (ok) echoed.append(chunk, static_cast<size_t>(n));
    }
    ok = ok && echoed == message;
    bytes_sent += message.size();
    if (m == 0) {
      // Hold the connection until `concurrency` clients are being served at once, so the
      // server's pool is certainly full at some point (its backpressure path runs).
      first_echoes.fetch_add(1);
      while (first_echoes.load() < concurrency) std::this_thread::yield();
    }
  }
  close(fd);
  return ok;
}

class EchoTest : public ::testing::TestWithParam<TestBackend> {};

TEST_P(EchoTest, EchoesEveryByteWithBackpressureOnAFullPool) {
  constexpr int kClients = 16;
  constexpr int kMessages = 20;
  constexpr uint32_t kPool = 4;
  uint16_t port = 0;
  const int listen_fd = ListenOnLoopback(port);
  ASSERT_GE(listen_fd, 0);
  loop::Loop loop(GetParam().make(), {});
  EchoServer server(loop, listen_fd, kPool);
  server.Start();

  std::atomic<int> first_echoes{0};
  std::atomic<int> finished{0};
  std::vector<uint64_t> bytes(kClients, 0);
  std::vector<char> ok(kClients, 0);
  // A client may close (and the server see it) before it counts itself finished; then only the
  // re-armed accept is pending and nothing would wake the loop. So each client also posts to
  // the loop once it is finished: Post() is the one call other threads may make.
  std::vector<loop::Completion> finished_posts(kClients);
  for (loop::Completion& post : finished_posts) {
    post.callback = [](loop::Loop&, loop::Completion&) { return loop::Action::kDisarm; };
  }
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; i++) {
    clients.emplace_back([&, i] {
      ok[i] = RunClient(port, i, kMessages, first_echoes, static_cast<int>(kPool), bytes[i]);
      finished.fetch_add(1);
      loop.Post(finished_posts[i]);
    });
  }
  while (finished.load() < kClients || server.open_connections() > 0) {
    ASSERT_TRUE(loop.Run(loop::RunMode::kOnce).ok());
  }
  for (std::thread& client : clients) client.join();
  server.Stop();
  ASSERT_TRUE(loop.Run(loop::RunMode::kUntilDone).ok());
  close(listen_fd);

  uint64_t total = 0;
  for (int i = 0; i < kClients; i++) {
    EXPECT_TRUE(ok[i]) << "client " << i;
    total += bytes[i];
  }
  EXPECT_EQ(server.stats().accepted, static_cast<uint64_t>(kClients));
  EXPECT_EQ(server.stats().closed, static_cast<uint64_t>(kClients));
  EXPECT_EQ(server.stats().bytes_echoed, total);
  EXPECT_GT(server.stats().accept_pauses, 0u);
  EXPECT_EQ(server.open_connections(), 0u);
}

std::string ParamName(const ::testing::TestParamInfo<TestBackend>& param) {
  return param.param.name;
}

INSTANTIATE_TEST_SUITE_P(RealBackends, EchoTest,
                         ::testing::ValuesIn(testing::RealDescriptorBackends()), ParamName);

}  // namespace
}  // namespace sqloop::examples
