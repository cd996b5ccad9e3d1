// examples/http/json_writer.h
// -----------------------------------------------------------------------------
//
// A small streaming JSON writer: it appends one document to a caller-owned std::string, placing
// commas and colons itself. It only writes; parsing is simdjson's job (examples/http/handler.cc).
//
// What it gets right, because a response body must always be valid JSON (RFC 8259):
//   * strings: '"' and '\' are escaped, control characters U+0000..U+001F become \b \f \n \r \t
//     or \u00XX, valid UTF-8 passes through untouched (including U+2028/U+2029 and DEL), and
//     each byte of an invalid UTF-8 sequence becomes U+FFFD, since SQLite TEXT is not checked;
//   * numbers: integers exactly; doubles in the shortest form that reads back to the same value,
//     always with a '.' or an exponent so a REAL stays a REAL; NaN and infinities (which JSON
//     cannot express) become null.
//
// Nesting is limited to kDepthMax levels; going deeper, a value without a key inside an object,
// or a key outside one is a programmer error (SQLOOP_CHECK).
//
// Example:
//
//   std::string out;
//   JsonWriter json(out);
//   json.BeginObject();
//   json.Key("error");
//   json.BeginObject();
//   json.Key("code");
//   json.String("not_found");
//   json.EndObject();
//   json.EndObject();
//   // out == R"({"error":{"code":"not_found"}})"
#ifndef SQLOOP_EXAMPLES_HTTP_JSON_WRITER_H_
#define SQLOOP_EXAMPLES_HTTP_JSON_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace sqloop::examples::http {

class JsonWriter {
 public:
  // 16 levels: our documents nest at most 5 deep (results > rows > row > blob object); the rest
  // is headroom. A fixed stack keeps the writer allocation-free apart from `out`.
  static constexpr int kDepthMax = 16;

  explicit JsonWriter(std::string& out) : out_(out) {}

  void BeginObject();
  void EndObject();
  void BeginArray();
  void EndArray();
  // Inside an object: the key for the next value.
  void Key(absl::string_view key);

  void String(absl::string_view value);
  void Int(int64_t value);
  void Uint(uint64_t value);
  void Double(double value);
  void Bool(bool value);
  void Null();

  // True once the top-level value is complete.
  [[nodiscard]] bool done() const { return depth_ == 0 && wrote_top_level_; }

  // Appends `value` as a JSON string (with the quotes) to `out`. Exposed for tests.
  static void AppendEscaped(std::string& out, absl::string_view value);

 private:
  // Writes the separator a value needs at the current position and checks it may go there.
  void BeforeValue();
  void Push(bool is_object);
  void Pop(bool is_object);

  std::string& out_;
  int depth_ = 0;
  bool wrote_top_level_ = false;
  bool is_object_[kDepthMax] = {};
  bool has_member_[kDepthMax] = {};  // The container at this depth already holds a value.
  bool key_pending_ = false;         // Key() was written; its value comes next.
};

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_JSON_WRITER_H_
