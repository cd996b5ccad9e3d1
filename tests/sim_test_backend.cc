#include "tests/sim_test_backend.h"

#include <memory>

#include "sqloop/io/sim_backend.h"

namespace sqloop::testing {

TestBackend SimulatorTestBackend() {
  const uint64_t seed = SeedFromEnvironment(kDefaultTestSeed);
  return TestBackend{
      .name = "simulator",
      .real_descriptors = false,
      .make =
          [seed] {
            io::SimBackendOptions options;
            options.seed = seed;
            return std::unique_ptr<io::Backend>(std::make_unique<io::SimBackend>(options));
          },
  };
}

}  // namespace sqloop::testing
