#include "bench/dispatch/workload.h"

#include "bench/dispatch/coro_server.h"
#include "bench/dispatch/floor.h"
#include "bench/dispatch/manual_server.h"

namespace sqloop::bench::dispatch {

const char* VariantName(Variant variant) {
  switch (variant) {
    case Variant::kManual:
      return "manual";
    case Variant::kCoro:
      return "coro";
    case Variant::kCoroPool:
      return "coro_pool";
    case Variant::kCoroLarge:
      return "coro_large";
    case Variant::kFloor:
      return "floor";
  }
  return "unknown";
}

Workload::Workload(WorkloadOptions options)
    : stats_(options.syscalls), poller_(&stats_, /*capacity=*/kConnections + 1) {
  switch (options.variant) {
    case Variant::kManual:
      manual_ = std::make_unique<ManualServer>(&stats_, &poller_);
      break;
    case Variant::kCoro:
      coro_ = std::make_unique<CoroServer>(&stats_, &poller_, CoroServer::Kind::kDefaultFrames);
      break;
    case Variant::kCoroPool:
      coro_ = std::make_unique<CoroServer>(&stats_, &poller_, CoroServer::Kind::kPooledFrames);
      break;
    case Variant::kCoroLarge:
      coro_ = std::make_unique<CoroServer>(&stats_, &poller_, CoroServer::Kind::kLargeFrames);
      break;
    case Variant::kFloor:
      break;  // RunFloor needs no server.
  }
}

Workload::~Workload() = default;

CallCounts Workload::RunOnce() {
  stats_.ResetCounts();
  poller_.Reset();  // Same registration keys in every iteration.
  if (manual_ != nullptr) {
    manual_->Run();
  } else if (coro_ != nullptr) {
    coro_->Run();
  } else {
    RunFloor(&stats_, &poller_);
  }
  SQLOOP_CHECK(poller_.registered() == 0, "Workload: a handle was left registered");
  return stats_.counts();
}

size_t Workload::frame_bytes_max() const { return coro_ != nullptr ? coro_->frame_bytes_max() : 0; }

}  // namespace sqloop::bench::dispatch
