// tests/test_backends.h
// -----------------------------------------------------------------------------
//
// The backends every loop-level test runs on, so io_uring, the fallback and the simulator are
// held to the same behaviour. Tests are parameterised over AllTestBackends().
#ifndef SQLOOP_TESTS_TEST_BACKENDS_H_
#define SQLOOP_TESTS_TEST_BACKENDS_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "sqloop/io/backend.h"

namespace sqloop::testing {

struct TestBackend {
  std::string name;  // A gtest-safe parameter name: "io_uring", "fallback", "simulator".
  // Whether operations on real descriptors (pipes, socketpairs, files on disk) work on it.
  bool real_descriptors = true;
  std::function<std::unique_ptr<io::Backend>()> make;
};

std::vector<TestBackend> AllTestBackends();
// The ones whose operations work on real descriptors (sockets, files on disk): io_uring and
// the fallback, for tests of what the simulator does not model.
std::vector<TestBackend> RealDescriptorBackends();

// Lets GoogleTest (and ctest's test names) show a backend parameter by its name, not its bytes.
inline void PrintTo(const TestBackend& backend, std::ostream* out) { *out << backend.name; }

}  // namespace sqloop::testing

#endif  // SQLOOP_TESTS_TEST_BACKENDS_H_
