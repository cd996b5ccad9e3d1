#include "tests/test_backends.h"

#include <utility>

#include "sqloop/alloc/check.h"
#include "sqloop/io/internal/backends.h"
#include "tests/sim_test_backend.h"

namespace sqloop::testing {
namespace {

std::unique_ptr<io::Backend> MakeOrDie(absl::StatusOr<std::unique_ptr<io::Backend>> backend) {
  SQLOOP_CHECK(backend.ok(), "test backend could not be created");
  return *std::move(backend);
}

}  // namespace

std::vector<TestBackend> AllTestBackends() {
  std::vector<TestBackend> backends;
  backends.push_back(
      {"io_uring", true, [] { return MakeOrDie(io::internal::CreateUringBackend({}, 0)); }});
  backends.push_back(
      {"fallback", true, [] { return MakeOrDie(io::internal::CreateFallbackBackend({})); }});
  backends.push_back(SimulatorTestBackend());
  return backends;
}

std::vector<TestBackend> RealDescriptorBackends() {
  std::vector<TestBackend> real;
  for (TestBackend& backend : AllTestBackends()) {
    if (backend.real_descriptors) real.push_back(std::move(backend));
  }
  return real;
}

}  // namespace sqloop::testing
