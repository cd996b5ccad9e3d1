// The JSON writer: escaping exactly right (every control character, quotes, backslash, UTF-8
// passed through, invalid UTF-8 replaced) and numbers that read back as what was written.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "examples/http/json_writer.h"
#include "gtest/gtest.h"
#include "simdjson.h"

namespace sqloop::examples::http {
namespace {

std::string Escaped(absl::string_view value) {
  std::string out;
  JsonWriter::AppendEscaped(out, value);
  return out;
}

// Parses `json` (a JSON string literal) with simdjson and returns the decoded string.
std::string DecodeWithSimdjson(const std::string& json) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  std::string_view decoded;
  EXPECT_EQ(parser.parse(padded).get_string().get(decoded), simdjson::SUCCESS) << json;
  return std::string(decoded);
}

TEST(JsonWriterTest, EscapesQuoteAndBackslashOnly) {
  EXPECT_EQ(Escaped(R"(a"b\c/d)"), R"("a\"b\\c/d")");
  EXPECT_EQ(Escaped(""), R"("")");
}

TEST(JsonWriterTest, EscapesEveryControlCharacter) {
  EXPECT_EQ(Escaped("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(Escaped(std::string(1, '\0')), R"("\u0000")");
  EXPECT_EQ(Escaped("\x01\x1f"), R"("\u0001\u001f")");
  EXPECT_EQ(Escaped("\x0b"), R"("\u000b")");
  // 0x7f (DEL) and 0x20 are not control characters for JSON: they pass through.
  EXPECT_EQ(Escaped("\x7f "), "\"\x7f \"");
  for (int c = 0; c < 0x20; c++) {
    const std::string one(1, static_cast<char>(c));
    const std::string out = Escaped(one);
    for (char ch : out) {
      EXPECT_GE(static_cast<unsigned char>(ch), 0x20) << "raw control character " << c;
    }
    EXPECT_EQ(DecodeWithSimdjson(out), one) << "character " << c;
  }
}

TEST(JsonWriterTest, PassesValidUtf8Through) {
  const std::string text =
      "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80 \xE2\x80\xA8";  // é € 😀 U+2028
  EXPECT_EQ(Escaped(text), "\"" + text + "\"");
  EXPECT_EQ(DecodeWithSimdjson(Escaped(text)), text);
}

TEST(JsonWriterTest, ReplacesEachByteOfInvalidUtf8) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(Escaped("\x80"), "\"" + fffd + "\"");                        // Stray continuation.
  EXPECT_EQ(Escaped("a\xE2\x82"), "\"a" + fffd + fffd + "\"");           // Truncated.
  EXPECT_EQ(Escaped("\xC0\xAF"), "\"" + fffd + fffd + "\"");             // Overlong '/'.
  EXPECT_EQ(Escaped("\xED\xA0\x80"), "\"" + fffd + fffd + fffd + "\"");  // Surrogate.
  EXPECT_EQ(Escaped("\xF4\x90\x80\x80x"), "\"" + fffd + fffd + fffd + fffd + "x\"");  // > U+10FFFF
  EXPECT_EQ(Escaped("\xFF"), "\"" + fffd + "\"");
}

TEST(JsonWriterTest, AnyBytesBecomeValidJsonThatKeepsValidText) {
  // A fixed linear congruential generator: the same strings on every run.
  uint64_t state = 0x5eed;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<unsigned char>(state >> 56);
  };
  for (int round = 0; round < 2000; round++) {
    std::string bytes(static_cast<size_t>(next() % 24), '\0');
    for (char& c : bytes) c = static_cast<char>(next());
    const std::string out = Escaped(bytes);
    simdjson::dom::parser parser;
    simdjson::padded_string padded(out);
    std::string_view decoded;
    ASSERT_EQ(parser.parse(padded).get_string().get(decoded), simdjson::SUCCESS)
        << "invalid JSON for round " << round;
    // simdjson validates UTF-8: when the input was valid, it must come back unchanged.
    if (simdjson::validate_utf8(bytes.data(), bytes.size())) {
      EXPECT_EQ(decoded, bytes);
    }
  }
}

TEST(JsonWriterTest, PlacesCommasAndColons) {
  std::string out;
  JsonWriter json(out);
  json.BeginObject();
  json.Key("a");
  json.BeginArray();
  json.Int(1);
  json.Null();
  json.Bool(true);
  json.BeginObject();
  json.EndObject();
  json.BeginArray();
  json.EndArray();
  json.EndArray();
  json.Key("k\"ey");
  json.String("v");
  json.EndObject();
  EXPECT_EQ(out, R"({"a":[1,null,true,{},[]],"k\"ey":"v"})");
  EXPECT_TRUE(json.done());
}

TEST(JsonWriterTest, NumbersReadBackExactly) {
  std::string out;
  JsonWriter json(out);
  json.BeginArray();
  json.Int(std::numeric_limits<int64_t>::min());
  json.Int(std::numeric_limits<int64_t>::max());
  json.Uint(std::numeric_limits<uint64_t>::max());
  json.Double(3);
  json.Double(0.1);
  json.Double(-0.0);
  json.Double(1e300);
  json.Double(std::nan(""));
  json.Double(std::numeric_limits<double>::infinity());
  json.EndArray();
  EXPECT_EQ(out,
            "[-9223372036854775808,9223372036854775807,18446744073709551615,3.0,0.1,-0.0,1e+300,"
            "null,null]");
  simdjson::dom::parser parser;
  simdjson::padded_string padded(out);
  simdjson::dom::array array;
  ASSERT_EQ(parser.parse(padded).get_array().get(array), simdjson::SUCCESS);
  EXPECT_EQ(array.at(4).get_double().value(), 0.1);
  simdjson::dom::element three;
  ASSERT_EQ(array.at(3).get(three), simdjson::SUCCESS);
  EXPECT_EQ(three.type(), simdjson::dom::element_type::DOUBLE);
}

TEST(JsonWriterDeathTest, MisuseIsAProgrammerError) {
  std::string out;
  EXPECT_DEATH(
      {
        JsonWriter json(out);
        json.BeginObject();
        json.Int(1);
      },
      "needs a Key");
  EXPECT_DEATH(
      {
        JsonWriter json(out);
        json.BeginArray();
        json.EndObject();
      },
      "does not match");
  EXPECT_DEATH(
      {
        JsonWriter json(out);
        for (int i = 0; i <= JsonWriter::kDepthMax; i++) json.BeginArray();
      },
      "deeper than kDepthMax");
}

}  // namespace
}  // namespace sqloop::examples::http
