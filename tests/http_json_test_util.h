// tests/http_json_test_util.h
// -----------------------------------------------------------------------------
//
// JSON helpers shared by the HTTP host's end-to-end tests.
//
// Example:
//
//   EXPECT_EQ(JsonAt(R"({"results":[{"rows":[[42]]}]})", "/results/0/rows"), "[[42]]");
#ifndef SQLOOP_TESTS_HTTP_JSON_TEST_UTIL_H_
#define SQLOOP_TESTS_HTTP_JSON_TEST_UTIL_H_

#include <string>

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

}  // namespace sqloop::testing

#endif  // SQLOOP_TESTS_HTTP_JSON_TEST_UTIL_H_
