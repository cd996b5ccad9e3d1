// tests/http_test_util.h
// -----------------------------------------------------------------------------
//
// Helpers shared by the HTTP host's end-to-end tests: reading a JSON body, and writing the
// admin token file the host reads.
//
// Example:
//
//   EXPECT_EQ(JsonAt(R"({"results":[{"rows":[[42]]}]})", "/results/0/rows"), "[[42]]");
#ifndef SQLOOP_TESTS_HTTP_TEST_UTIL_H_
#define SQLOOP_TESTS_HTTP_TEST_UTIL_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "simdjson.h"

namespace sqloop::testing {

// Parses a JSON body and returns the element at `pointer` (RFC 6901) as raw JSON text, or a
// bracketed note saying why there is none.
inline std::string JsonAt(const std::string& body, const std::string& pointer) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element root;
  if (parser.parse(padded).get(root) != simdjson::SUCCESS) return "<invalid JSON: " + body + ">";
  simdjson::dom::element found;
  if (root.at_pointer(pointer).get(found) != simdjson::SUCCESS) return "<missing " + pointer + ">";
  return simdjson::minify(found);
}

// A token file as an operator makes it (`openssl rand -hex 32 > file; chmod 600 file`), in
// `dir`, with `mode` (the host refuses a file others can read).
inline std::string WriteTokenFile(const std::string& dir, const std::string& token,
                                  mode_t mode = 0600) {
  const std::string path = dir + "/admin_token";
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  const std::string content = token + "\n";
  EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  close(fd);
  EXPECT_EQ(chmod(path.c_str(), mode), 0);
  return path;
}

}  // namespace sqloop::testing

#endif  // SQLOOP_TESTS_HTTP_TEST_UTIL_H_
