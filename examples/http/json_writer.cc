#include "examples/http/json_writer.h"

#include <charconv>
#include <cmath>
#include <system_error>

#include "sqloop/alloc/check.h"
#include "sqloop/db/utf8.h"

namespace sqloop::examples::http {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";
// U+FFFD REPLACEMENT CHARACTER in UTF-8: stands in for each byte of an invalid sequence.
constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";

void AppendControl(std::string& out, unsigned char c) {
  switch (c) {
    case '\b':
      out += "\\b";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default:
      out += "\\u00";
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xF];
  }
}

}  // namespace

void JsonWriter::AppendEscaped(std::string& out, absl::string_view value) {
  out += '"';
  size_t i = 0;
  while (i < value.size()) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x20) {
      AppendControl(out, c);
      i++;
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      i++;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      i++;
    } else if (const size_t length = db::Utf8SequenceLength(value, i); length > 0) {
      out.append(value.data() + i, length);
      i += length;
    } else {
      out.append(kReplacement.data(), kReplacement.size());
      i++;
    }
  }
  out += '"';
}

void JsonWriter::BeforeValue() {
  SQLOOP_CHECK(!(depth_ == 0 && wrote_top_level_), "JsonWriter: the document is already complete");
  if (depth_ == 0) {
    wrote_top_level_ = true;
    return;
  }
  if (is_object_[depth_ - 1]) {
    SQLOOP_CHECK(key_pending_, "JsonWriter: a value inside an object needs a Key() first");
    key_pending_ = false;
    return;
  }
  if (has_member_[depth_ - 1]) out_ += ',';
  has_member_[depth_ - 1] = true;
}

void JsonWriter::Push(bool is_object) {
  BeforeValue();
  SQLOOP_CHECK(depth_ < kDepthMax, "JsonWriter: nested deeper than kDepthMax");
  is_object_[depth_] = is_object;
  has_member_[depth_] = false;
  depth_++;
  out_ += is_object ? '{' : '[';
}

void JsonWriter::Pop(bool is_object) {
  SQLOOP_CHECK(depth_ > 0 && is_object_[depth_ - 1] == is_object,
               "JsonWriter: End*() does not match the open container");
  SQLOOP_CHECK(!key_pending_, "JsonWriter: a Key() has no value");
  depth_--;
  out_ += is_object ? '}' : ']';
}

void JsonWriter::BeginObject() { Push(/*is_object=*/true); }
void JsonWriter::EndObject() { Pop(/*is_object=*/true); }
void JsonWriter::BeginArray() { Push(/*is_object=*/false); }
void JsonWriter::EndArray() { Pop(/*is_object=*/false); }

void JsonWriter::Key(absl::string_view key) {
  SQLOOP_CHECK(depth_ > 0 && is_object_[depth_ - 1], "JsonWriter: Key() outside an object");
  SQLOOP_CHECK(!key_pending_, "JsonWriter: two keys in a row");
  if (has_member_[depth_ - 1]) out_ += ',';
  has_member_[depth_ - 1] = true;
  AppendEscaped(out_, key);
  out_ += ':';
  key_pending_ = true;
}

void JsonWriter::String(absl::string_view value) {
  BeforeValue();
  AppendEscaped(out_, value);
}

void JsonWriter::Int(int64_t value) {
  BeforeValue();
  char buffer[24];  // 20 digits and a sign.
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  SQLOOP_CHECK(error == std::errc(), "JsonWriter::Int: buffer too small");
  out_.append(buffer, end);
}

void JsonWriter::Uint(uint64_t value) {
  BeforeValue();
  char buffer[24];
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  SQLOOP_CHECK(error == std::errc(), "JsonWriter::Uint: buffer too small");
  out_.append(buffer, end);
}

void JsonWriter::Double(double value) {
  if (!std::isfinite(value)) {
    Null();
    return;
  }
  BeforeValue();
  char buffer[32];  // The shortest round-trip form of a double is at most 24 characters.
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  SQLOOP_CHECK(error == std::errc(), "JsonWriter::Double: buffer too small");
  const absl::string_view text(buffer, static_cast<size_t>(end - buffer));
  out_.append(text.data(), text.size());
  // Keep a REAL recognisable: "3" would read back as an integer.
  if (text.find_first_of(".e") == absl::string_view::npos) out_ += ".0";
}

void JsonWriter::Bool(bool value) {
  BeforeValue();
  out_ += value ? "true" : "false";
}

void JsonWriter::Null() {
  BeforeValue();
  out_ += "null";
}

}  // namespace sqloop::examples::http
