#include "bench/sqlite/executor.h"

#include <utility>

#include "bench/sqlite/env.h"
#include "bench/sqlite/plain_conn.h"

namespace sqloop::bench {

FuturesExecutor::~FuturesExecutor() { Stop(); }

bool FuturesExecutor::Start(const std::string& path, int threads, bool reads) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back(&FuturesExecutor::RunWorker, this, path, reads, i);
  }
  std::unique_lock<std::mutex> lock(mutex_);
  wake_.wait(lock, [&] { return ready_ + failed_ == threads; });
  const bool ok = failed_ == 0;
  lock.unlock();
  if (!ok) Stop();
  return ok;
}

std::future<bool> FuturesExecutor::Submit(PlainOp op) {
  std::future<bool> result;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(Task{op, std::promise<bool>()});
    result = queue_.back().done.get_future();
  }
  wake_.notify_one();
  return result;
}

void FuturesExecutor::Stop() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

void FuturesExecutor::RunWorker(const std::string& path, bool reads, int64_t index) {
  const BaselineScope scope(alloc::kSharedTenant);
  PlainConnection conn;
  const bool opened = conn.Open(path, reads, index);
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++(opened ? ready_ : failed_);
  }
  wake_.notify_all();  // Start() waits on the same condition variable as the workers.
  while (opened) {
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) break;  // Stopping, and nothing left to run.
    Task task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    task.done.set_value(task.op.write ? conn.Insert(task.op.key) : conn.Read(task.op.key));
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  busy_ += conn.busy();
}

}  // namespace sqloop::bench
