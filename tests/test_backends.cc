#include "tests/test_backends.h"

#include "sqloop/alloc/check.h"
#include "sqloop/io/internal/backends.h"
#ifdef SQLOOP_HAVE_SIMULATOR
#include "tests/sim_test_backend.h"
#endif

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
#ifdef SQLOOP_HAVE_SIMULATOR
  backends.push_back(SimulatorTestBackend());
#endif
  return backends;
}

}  // namespace sqloop::testing
