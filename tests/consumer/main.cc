// Uses the installed headers and libraries the way a host application would.
#include <cstdio>

#include "sqloop/loop/loop.h"

int main() {
  absl::StatusOr<std::unique_ptr<sqloop::loop::Loop>> loop =
      sqloop::loop::Loop::Create(sqloop::loop::LoopOptions{});
  if (!loop.ok()) {
    std::fprintf(stderr, "consumer: %s\n", loop.status().ToString().c_str());
    return 1;
  }
  int fired = 0;
  sqloop::loop::Completion timer;
  timer.user_data = &fired;
  timer.callback = [](sqloop::loop::Loop&, sqloop::loop::Completion& c) {
    ++*static_cast<int*>(c.user_data);
    return sqloop::loop::Action::kDisarm;
  };
  (*loop)->Timer(timer, absl::Milliseconds(1));
  if (!(*loop)->Run(sqloop::loop::RunMode::kUntilDone).ok() || fired != 1) return 1;
  std::printf("consumer ok on %s\n", std::string((*loop)->backend().name()).c_str());
  return 0;
}
