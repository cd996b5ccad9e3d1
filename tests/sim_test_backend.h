// tests/sim_test_backend.h
// -----------------------------------------------------------------------------
//
// The simulator as one of the backends loop-level tests are parameterised over
// (tests/test_backends.h), and the seed convention every simulation test shares.
//
// The seed is fixed so CI is reproducible; SQLOOP_SEED=<n> in the environment overrides it so
// a developer can run the whole loop suite under other seeds:
//
//   SQLOOP_SEED=77 build/debug/tests/loop_test --gtest_filter='*simulator*'
//
// Example (in AllTestBackends()):
//
//   backends.push_back(sqloop::testing::SimulatorTestBackend());
#ifndef SQLOOP_TESTS_SIM_TEST_BACKEND_H_
#define SQLOOP_TESTS_SIM_TEST_BACKEND_H_

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "sqloop/alloc/check.h"
#include "tests/test_backends.h"

namespace sqloop::testing {

// The seed loop tests run the simulator with when SQLOOP_SEED is not set.
inline constexpr uint64_t kDefaultTestSeed = 20240601;

// `fallback`, or the value of SQLOOP_SEED if it is set and a valid unsigned decimal number
// (an invalid value aborts with a message: a typo must not silently test another seed).
// Inline so simulation tests can use it without linking the loop's test backends.
[[nodiscard]] inline uint64_t SeedFromEnvironment(uint64_t fallback) {
  const char* text = std::getenv("SQLOOP_SEED");
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long seed = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || *text == '-') {
    std::fprintf(stderr, "SQLOOP_SEED=%s is not an unsigned decimal number\n", text);
    SQLOOP_CHECK(false, "SQLOOP_SEED must be an unsigned decimal number");
  }
  return seed;
}

// {.name = "simulator", .real_descriptors = false, .make = a SimBackend with the seed above}.
[[nodiscard]] TestBackend SimulatorTestBackend();

}  // namespace sqloop::testing

#endif  // SQLOOP_TESTS_SIM_TEST_BACKEND_H_
