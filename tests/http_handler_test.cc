// Request handling without sockets: HTTP framing (http_parser under our limits), routing,
// query bodies (simdjson), status mapping and response formatting.
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "examples/http/auth.h"
#include "examples/http/handler.h"
#include "examples/http/request_parser.h"
#include "gtest/gtest.h"
#include "sqloop/db/request.h"

namespace sqloop::examples::http {
namespace {

constexpr RequestParser::Limits kLimits{.header_bytes_max = 1024, .body_bytes_max = 64};

// ---- RequestParser -----------------------------------------------------------------------------

TEST(RequestParserTest, ParsesARequestFedOneByteAtATime) {
  const std::string wire =
      "POST /v1/db/a/query?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
  RequestParser parser(kLimits);
  for (size_t i = 0; i < wire.size(); i++) {
    size_t consumed = 0;
    const RequestParser::Result result = parser.Feed(&wire[i], 1, consumed);
    ASSERT_EQ(consumed, 1u);
    ASSERT_EQ(result, i + 1 == wire.size() ? RequestParser::Result::kComplete
                                           : RequestParser::Result::kNeedMore)
        << "byte " << i;
  }
  EXPECT_EQ(parser.request().method, HTTP_POST);
  EXPECT_EQ(parser.request().url, "/v1/db/a/query?x=1");
  EXPECT_EQ(parser.request().body, "hello");
  EXPECT_TRUE(parser.request().keep_alive);
  EXPECT_FALSE(parser.request().expect_continue);
}

TEST(RequestParserTest, StopsAfterEachPipelinedRequest) {
  const std::string wire =
      "GET /v1/stats HTTP/1.1\r\n\r\n"
      "PUT /v1/db/b HTTP/1.1\r\nConnection: close\r\n\r\n";
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(wire.data(), wire.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_EQ(parser.request().url, "/v1/stats");
  EXPECT_FALSE(parser.in_request());
  const size_t first = consumed;
  ASSERT_LT(first, wire.size());
  ASSERT_EQ(parser.Feed(wire.data() + first, wire.size() - first, consumed),
            RequestParser::Result::kComplete);
  EXPECT_EQ(first + consumed, wire.size());
  EXPECT_EQ(parser.request().method, HTTP_PUT);
  EXPECT_FALSE(parser.request().keep_alive);
}

TEST(RequestParserTest, JoinsChunkedBodies) {
  const std::string wire =
      "POST /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(wire.data(), wire.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_EQ(parser.request().body, "abcde");
}

TEST(RequestParserTest, SeesExpectContinueAndWaitsForTheBody) {
  const std::string head =
      "POST /q HTTP/1.1\r\nexPECT:  100-Continue \r\nContent-Length: 2\r\n\r\n";
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(head.data(), head.size(), consumed), RequestParser::Result::kNeedMore);
  EXPECT_TRUE(parser.request().expect_continue);
  EXPECT_TRUE(parser.awaiting_body());
  ASSERT_EQ(parser.Feed("ok", 2, consumed), RequestParser::Result::kComplete);
  EXPECT_FALSE(parser.awaiting_body());
}

TEST(RequestParserTest, KeepsTheAuthorizationHeaderBounded) {
  RequestParser parser(kLimits);
  size_t consumed = 0;
  const std::string wire = "GET / HTTP/1.1\r\naUtHoRiZaTiOn: Bearer abc.def\r\n\r\n";
  ASSERT_EQ(parser.Feed(wire.data(), wire.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_EQ(parser.request().authorization, "Bearer abc.def");
  // The next request on the connection starts without it.
  const std::string next = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(parser.Feed(next.data(), next.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_EQ(parser.request().authorization, "");
  // Sent twice: neither counts (a marker no token equals).
  const std::string twice = "GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n";
  ASSERT_EQ(parser.Feed(twice.data(), twice.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_NE(parser.request().authorization, "a");
  EXPECT_NE(parser.request().authorization, "b");
  EXPECT_FALSE(parser.request().authorization.empty());
}

TEST(RequestParserTest, HttpOneZeroClosesUnlessAskedToKeepAlive) {
  RequestParser parser(kLimits);
  size_t consumed = 0;
  const std::string plain = "GET / HTTP/1.0\r\n\r\n";
  ASSERT_EQ(parser.Feed(plain.data(), plain.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_FALSE(parser.request().keep_alive);
  parser.Reset();
  const std::string kept = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  ASSERT_EQ(parser.Feed(kept.data(), kept.size(), consumed), RequestParser::Result::kComplete);
  EXPECT_TRUE(parser.request().keep_alive);
}

// A request head of exactly `bytes` bytes: `lines` (the request line and any headers), one
// padded header and the blank line.
std::string HeadOfBytes(size_t bytes, const std::string& lines = "GET / HTTP/1.1\r\n") {
  const std::string prefix = lines + "X: ";
  const std::string suffix = "\r\n\r\n";
  return prefix + std::string(bytes - prefix.size() - suffix.size(), 'v') + suffix;
}

// The header limit bounds the head as it arrives, framing included: one-letter headers whose
// names fit many times over in the limit still spend their colons and line ends.
TEST(RequestParserTest, TheHeaderLimitCountsTheFramingOfEveryLine) {
  std::string wire = "GET / HTTP/1.1\r\n";
  size_t names = 0;
  while (wire.size() < 3 * kLimits.header_bytes_max) {
    wire += "A:\r\n";
    names++;
  }
  wire += "\r\n";
  ASSERT_LT(1 + names, kLimits.header_bytes_max) << "the URL and the names must fit in the limit";
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(wire.data(), wire.size(), consumed), RequestParser::Result::kError);
  EXPECT_EQ(parser.error_status(), 431);
  EXPECT_EQ(parser.error_message(), "request line and headers exceed 1024 bytes");
}

// A head of exactly the limit is parsed, however it is split and for every request of a
// connection (after one with trailers, which count on their own too); one byte more is refused.
TEST(RequestParserTest, TheHeaderLimitIsExactForEveryRequest) {
  const std::string at_limit = HeadOfBytes(kLimits.header_bytes_max);
  const std::string trailed =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n\r\n";
  const std::string wire = trailed + at_limit + at_limit;
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(wire.data(), wire.size(), consumed), RequestParser::Result::kComplete);
  ASSERT_EQ(consumed, trailed.size());
  size_t offset = consumed;
  for (int request = 0; request < 2; request++) {
    ASSERT_EQ(parser.Feed(wire.data() + offset, wire.size() - offset, consumed),
              RequestParser::Result::kComplete)
        << request;
    ASSERT_EQ(consumed, at_limit.size());
    offset += consumed;
  }
  for (size_t i = 0; i < at_limit.size(); i++) {
    ASSERT_EQ(parser.Feed(&at_limit[i], 1, consumed), i + 1 == at_limit.size()
                                                          ? RequestParser::Result::kComplete
                                                          : RequestParser::Result::kNeedMore)
        << "byte " << i;
  }
  const std::string over = HeadOfBytes(kLimits.header_bytes_max + 1);
  RequestParser refusing(kLimits);
  ASSERT_EQ(refusing.Feed(over.data(), over.size(), consumed), RequestParser::Result::kError);
  EXPECT_EQ(refusing.error_status(), 431);
}

// A chunked body's trailers count their names and values against a limit of their own: a head at
// the limit (here fed in two parts) leaves them all of it.
TEST(RequestParserTest, TrailersCountAgainstALimitOfTheirOwn) {
  const std::string head =
      HeadOfBytes(kLimits.header_bytes_max, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n");
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(head.data(), head.size() - 1, consumed), RequestParser::Result::kNeedMore);
  const std::string body =
      "\n0\r\nT: " + std::string(kLimits.header_bytes_max - 1, 'v') + "\r\n\r\n";
  EXPECT_EQ(parser.Feed(body.data(), body.size(), consumed), RequestParser::Result::kComplete)
      << parser.error_message();
}

struct BadWire {
  const char* name;
  std::string wire;
  int status;
};

class RequestParserErrorTest : public ::testing::TestWithParam<BadWire> {};

TEST_P(RequestParserErrorTest, AnswersWithTheRightStatus) {
  RequestParser parser(kLimits);
  size_t consumed = 0;
  ASSERT_EQ(parser.Feed(GetParam().wire.data(), GetParam().wire.size(), consumed),
            RequestParser::Result::kError);
  EXPECT_EQ(parser.error_status(), GetParam().status);
  EXPECT_FALSE(parser.error_message().empty());
}

INSTANTIATE_TEST_SUITE_P(
    Wires, RequestParserErrorTest,
    ::testing::Values(
        BadWire{"Garbage", "GARBAGE\r\n\r\n", 400},
        BadWire{"BadVersion", "GET / HTTP/x.y\r\n\r\n", 400},
        BadWire{"BadHeader", "GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400},
        BadWire{"BadContentLength", "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400},
        BadWire{"DeclaredBodyTooLarge", "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 413},
        BadWire{"ChunkedBodyTooLarge",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n" +
                    std::string(65, 'x') + "\r\n",
                413},
        BadWire{"HeadersTooLarge", "GET / HTTP/1.1\r\nX: " + std::string(1100, 'v') + "\r\n\r\n",
                431},
        BadWire{"UrlTooLarge", "GET /" + std::string(1100, 'u') + " HTTP/1.1\r\n\r\n", 431},
        BadWire{"TrailersTooLarge",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " +
                    std::string(1100, 'v') + "\r\n\r\n",
                431}),
    [](const ::testing::TestParamInfo<BadWire>& param) { return std::string(param.param.name); });

// http_parser says "invalid character in content-length header" for a chunk size past 64 bits.
TEST(RequestParserTest, AChunkSizePast64BitsIsNamedAsOne) {
  RequestParser parser(kLimits);
  size_t consumed = 0;
  const std::string wire =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n";
  ASSERT_EQ(parser.Feed(wire.data(), wire.size(), consumed), RequestParser::Result::kError);
  EXPECT_EQ(parser.error_status(), 400);
  EXPECT_TRUE(absl::StrContains(parser.error_message(), "chunk size")) << parser.error_message();
  parser.Reset();
  const std::string length = "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n";
  ASSERT_EQ(parser.Feed(length.data(), length.size(), consumed), RequestParser::Result::kError);
  EXPECT_TRUE(absl::StrContains(parser.error_message(), "content-length"))
      << parser.error_message();
}

// ---- Routing -----------------------------------------------------------------------------------

TEST(MatchRouteTest, RoutesTheFourEndpoints) {
  Route route = MatchRoute(HTTP_POST, "/v1/db/acme_1-x/query?ignored=1");
  EXPECT_EQ(route.kind, RouteKind::kQuery);
  EXPECT_EQ(route.tenant, "acme_1-x");
  EXPECT_EQ(MatchRoute(HTTP_PUT, "/v1/db/acme").kind, RouteKind::kCreateTenant);
  EXPECT_EQ(MatchRoute(HTTP_DELETE, "/v1/db/acme").kind, RouteKind::kDeleteTenant);
  EXPECT_EQ(MatchRoute(HTTP_GET, "/v1/stats").kind, RouteKind::kStats);
  const Route token = MatchRoute(HTTP_POST, "/v1/db/acme/token");
  EXPECT_EQ(token.kind, RouteKind::kToken);
  EXPECT_EQ(token.tenant, "acme");
  EXPECT_EQ(MatchRoute(HTTP_GET, "/v1/db/acme/token").error.status, 405);
}

TEST(MatchRouteTest, UnknownPathsAre404) {
  for (const char* url :
       {"/", "/v1", "/v1/stats/", "/v2/stats", "/v1/db/a/query/x", "/v1/db/a/b", "//v1/stats"}) {
    const Route route = MatchRoute(HTTP_GET, url);
    EXPECT_EQ(route.kind, RouteKind::kError) << url;
    EXPECT_EQ(route.error.status, 404) << url;
    EXPECT_STREQ(route.error.code, "no_route") << url;
  }
}

TEST(MatchRouteTest, WrongMethodsAre405WithAllow) {
  const Route query = MatchRoute(HTTP_GET, "/v1/db/a/query");
  EXPECT_EQ(query.error.status, 405);
  EXPECT_STREQ(query.error.headers, "Allow: POST\r\n");
  EXPECT_EQ(MatchRoute(HTTP_POST, "/v1/db/a").error.status, 405);
  EXPECT_STREQ(MatchRoute(HTTP_POST, "/v1/db/a").error.headers, "Allow: PUT, DELETE\r\n");
  EXPECT_EQ(MatchRoute(HTTP_DELETE, "/v1/stats").error.status, 405);
}

TEST(MatchRouteTest, InvalidTenantNamesAre400) {
  const std::string long_name(kTenantNameBytesMax + 1, 'a');
  for (const std::string& tenant :
       {std::string(""), std::string(".."), std::string("."), std::string("A"), std::string("a.b"),
        std::string("%2e%2e"), std::string("a%00"), std::string("caf\xC3\xA9"), long_name}) {
    const Route route = MatchRoute(HTTP_PUT, "/v1/db/" + tenant);
    EXPECT_EQ(route.kind, RouteKind::kError) << tenant;
    EXPECT_EQ(route.error.status, 400) << tenant;
    EXPECT_STREQ(route.error.code, "invalid_tenant") << tenant;
  }
  EXPECT_EQ(MatchRoute(HTTP_PUT, "/v1/db/" + std::string(kTenantNameBytesMax, 'z')).kind,
            RouteKind::kCreateTenant);
}

TEST(ValidateTenantNameTest, SaysWhichRuleWasBroken) {
  EXPECT_TRUE(ValidateTenantName("a-b_9").ok());
  EXPECT_NE(ValidateTenantName("").message().find("empty"), absl::string_view::npos);
  EXPECT_NE(ValidateTenantName("a/b").message().find("'/' at position 1"), absl::string_view::npos);
  EXPECT_NE(ValidateTenantName("a\nb").message().find("byte 0xa"), absl::string_view::npos);
  EXPECT_NE(ValidateTenantName(std::string(65, 'a')).message().find("limit is 64"),
            absl::string_view::npos);
}

// ---- Query bodies ------------------------------------------------------------------------------

class QueryBodyTest : public ::testing::Test {
 protected:
  HttpError Parse(std::string body) {
    HttpError error = ParseQueryBody(parser_, body, limits_, statements_);
    return error;
  }
  simdjson::dom::parser parser_;
  QueryLimits limits_{.statements_max = 3, .args_max = 4};
  std::vector<Statement> statements_;
};

TEST_F(QueryBodyTest, ParsesEveryArgumentType) {
  ASSERT_TRUE(Parse(R"({"statements":[{"sql":"SELECT 1"},
      {"args":[null,-7,2.5,"t\u00e9"],"sql":"INSERT"},
      {"sql":"X","args":[true,false,{"base64":"AAH/"}]}]})")
                  .ok());
  ASSERT_EQ(statements_.size(), 3u);
  EXPECT_EQ(statements_[0].sql, "SELECT 1");
  EXPECT_TRUE(statements_[0].args.empty());
  EXPECT_EQ(statements_[1].args[0], Value::Null());
  EXPECT_EQ(statements_[1].args[1], Value::Integer(-7));
  EXPECT_EQ(statements_[1].args[2], Value::Real(2.5));
  EXPECT_EQ(statements_[1].args[3], Value::Text("t\xC3\xA9"));
  EXPECT_EQ(statements_[2].args[0], Value::Integer(1));
  EXPECT_EQ(statements_[2].args[1], Value::Integer(0));
  EXPECT_EQ(statements_[2].args[2], Value::Blob(std::string("\x00\x01\xff", 3)));
}

TEST_F(QueryBodyTest, InfiniteRealsAreNamedAndOutOfRangeNumbersSaySo) {
  ASSERT_TRUE(
      Parse(R"({"statements":[{"sql":"X","args":[{"real":"Infinity"},{"real":"-Infinity"}]}]})")
          .ok());
  EXPECT_EQ(statements_[0].args[0], Value::Real(std::numeric_limits<double>::infinity()));
  EXPECT_EQ(statements_[0].args[1], Value::Real(-std::numeric_limits<double>::infinity()));

  HttpError error = Parse(R"({"statements":[{"sql":"X","args":[{"real":"1.5"}]}]})");
  EXPECT_STREQ(error.code, "invalid_request");
  EXPECT_TRUE(absl::StrContains(error.message, "statements[0].args[0]: {\"real\":...} is"))
      << error.message;
  for (const char* number : {"1e400", "-1e400", "99999999999999999999999"}) {
    error = Parse(absl::StrCat(R"({"statements":[{"sql":"X","args":[)", number, "]}]}"));
    EXPECT_STREQ(error.code, "malformed_json") << number;
    EXPECT_TRUE(absl::StrContains(error.message, "out of range")) << error.message;
  }
}

TEST_F(QueryBodyTest, MalformedJsonIsMalformedJson) {
  for (const char* body : {"", "{", R"({"statements":[}])", "nul", R"({"a":1,})", "\xff"}) {
    const HttpError error = Parse(body);
    EXPECT_EQ(error.status, 400) << body;
    EXPECT_STREQ(error.code, "malformed_json") << body;
  }
}

TEST_F(QueryBodyTest, WrongShapesNameTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {"[]", "body: must be a JSON object"},
      {"{}", "\"statements\" is missing"},
      {R"({"statements":{}})", "statements: must be an array"},
      {R"({"statements":[]})", "statements: is empty"},
      {R"({"statements":[1,2,3,4]})", "more than 3 statements"},
      {R"({"statements":[{"sql":"a"}],"x":1})", "unexpected field \"x\""},
      {R"({"statements":[7]})", "statements[0]: must be an object"},
      {R"({"statements":[{"args":[]}]})", "statements[0]: \"sql\" is missing"},
      {R"({"statements":[{"sql":1}]})", "statements[0]: \"sql\" must be a string"},
      {R"({"statements":[{"sql":"a","args":{}}]})", "\"args\" must be an array"},
      {R"({"statements":[{"sql":"a","args":[1,2,3,4,5]}]})", "more than 4 args"},
      {R"({"statements":[{"sql":"a","sq1":""}]})", "unknown field \"sq1\""},
      {R"({"statements":[{"sql":"a"},{"sql":"b","args":[[1]]}]})", "statements[1].args[0]:"},
      {R"({"statements":[{"sql":"a","args":[{"x":1}]}]})", "statements[0].args[0]:"},
      {R"({"statements":[{"sql":"a","args":[{"base64":"!!"}]}]})", "statements[0].args[0]:"},
      {R"({"statements":[{"sql":"a","args":[18446744073709551615]}]})", "signed 64-bit"},
  };
  for (const auto& [body, message] : cases) {
    const HttpError error = Parse(body);
    EXPECT_EQ(error.status, 400) << body;
    EXPECT_STREQ(error.code, "invalid_request") << body;
    EXPECT_NE(error.message.find(message), std::string::npos) << body << " -> " << error.message;
  }
}

TEST_F(QueryBodyTest, EmptySqlNulAndRepeatedKeysAreRefused) {
  const std::pair<std::string, const char*> cases[] = {
      {R"({"statements":[{"sql":""}]})", "statements[0]: \"sql\" is empty"},
      {R"({"statements":[{"sql":" \n\t "}]})", "statements[0]: \"sql\" is empty"},
      {R"({"statements":[{"sql":"SELECT 1\u0000; DROP TABLE t"}]})", "contains a NUL character"},
      {R"({"statements":[{"sql":"\u0000"}]})", "contains a NUL character"},
      {R"({"statements":[{"sql":"SELECT 1"},{"sql":"SELECT 1","sql":"DROP TABLE t"}]})",
       "statements[1]: \"sql\" is given twice"},
      {R"({"statements":[{"sql":"SELECT ?","args":[1],"args":[2]}]})",
       "statements[0]: \"args\" is given twice"},
  };
  for (const auto& [body, message] : cases) {
    const HttpError error = Parse(body);
    EXPECT_EQ(error.status, 400) << body;
    EXPECT_STREQ(error.code, "invalid_request") << body;
    EXPECT_NE(error.message.find(message), std::string::npos) << body << " -> " << error.message;
  }
  // Negative control: the same shapes, well formed, parse (NUL-free SQL with a blank around it).
  ASSERT_TRUE(Parse(R"({"statements":[{"sql":" SELECT 1 ","args":[]}]})").ok());
  EXPECT_EQ(statements_[0].sql, " SELECT 1 ");
}

TEST_F(QueryBodyTest, NestingBeyondTheDepthLimitIsRefused) {
  std::string deep = R"({"statements":[{"sql":"a","args":[)";
  for (size_t i = 0; i < kJsonDepthMax; i++) deep += "[";
  for (size_t i = 0; i < kJsonDepthMax; i++) deep += "]";
  deep += "]}]}";
  ASSERT_EQ(parser_.allocate(4096, kJsonDepthMax), simdjson::SUCCESS);
  EXPECT_STREQ(Parse(deep).code, "malformed_json");
}

// ---- Status mapping and responses ------------------------------------------------------------

TEST(ErrorFromStatusTest, MapsEachCodeToItsHttpStatus) {
  EXPECT_TRUE(ErrorFromStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("m")).status, 400);
  EXPECT_EQ(ErrorFromStatus(absl::NotFoundError("m")).status, 404);
  EXPECT_EQ(ErrorFromStatus(absl::AlreadyExistsError("m")).status, 409);
  EXPECT_EQ(ErrorFromStatus(absl::FailedPreconditionError("m")).status, 409);
  EXPECT_EQ(ErrorFromStatus(absl::ResourceExhaustedError("m")).status, 503);
  EXPECT_STREQ(ErrorFromStatus(absl::ResourceExhaustedError("m")).headers, "Retry-After: 1\r\n");
  EXPECT_EQ(ErrorFromStatus(absl::UnavailableError("m")).status, 503);
  const HttpError data_loss = ErrorFromStatus(absl::DataLossError("fsync failed"));
  EXPECT_EQ(data_loss.status, 500);
  EXPECT_STREQ(data_loss.code, "outcome_unknown");
  EXPECT_EQ(data_loss.message, "fsync failed");
  EXPECT_EQ(ErrorFromStatus(absl::InternalError("m")).status, 500);
}

TEST(ErrorFromStatusTest, ABudgetExceededIs422WithoutRetryAfter) {
  absl::Status over = absl::ResourceExhaustedError("statement ran out of its budget");
  over.SetPayload(db::kBudgetExceededPayload, absl::Cord());
  ASSERT_TRUE(db::IsBudgetExceeded(over));
  const HttpError error = ErrorFromStatus(over);
  EXPECT_EQ(error.status, 422);
  EXPECT_STREQ(error.code, "budget_exceeded");
  EXPECT_EQ(error.message, "statement ran out of its budget");
  EXPECT_STREQ(error.headers, "") << "a retry would fail again: no Retry-After";
  // Negative control: the same code without the payload is still a shortage: 503, retry.
  EXPECT_EQ(ErrorFromStatus(absl::ResourceExhaustedError("m")).status, 503);
}

TEST(FormatResponseTest, WritesAFramedResponse) {
  std::string out;
  FormatResponse(405, "{}", /*keep_alive=*/false, "Allow: POST\r\n", out);
  EXPECT_EQ(out,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\nConnection: close\r\nAllow: POST\r\n\r\n{}");
  FormatResponse(200, "", /*keep_alive=*/true, "", out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n"
            "Connection: keep-alive\r\n\r\n");
}

TEST(WriteBodiesTest, AnInfiniteRealIsWrittenAsArgumentsTakeIt) {
  std::string body;
  StatementResult result;
  result.columns = {"a"};
  result.rows = {{Value::Real(std::numeric_limits<double>::infinity())},
                 {Value::Real(-std::numeric_limits<double>::infinity())}};
  WriteResultsBody({result}, body);
  EXPECT_TRUE(absl::StrContains(body, R"("rows":[[{"real":"Infinity"}],[{"real":"-Infinity"}]])"))
      << body;
}

TEST(WriteBodiesTest, ErrorAndResultBodies) {
  std::string body;
  WriteErrorBody(HttpError{400, "invalid_argument", "near \"x\": syntax error", ""}, body);
  EXPECT_EQ(body, R"({"error":{"code":"invalid_argument","message":"near \"x\": syntax error"}})");
  StatementResult result;
  result.columns = {"a", "b"};
  result.rows = {{Value::Integer(1), Value::Text("x")},
                 {Value::Real(0.5), Value::Blob(std::string("\0", 1))},
                 {Value::Null(), Value::Real(2)}};
  result.rows_changed = 3;
  result.last_insert_id = 9;
  WriteResultsBody({result}, body);
  EXPECT_EQ(body, R"({"results":[{"columns":["a","b"],"rows":[[1,"x"],[0.5,{"base64":"AA=="}],)"
                  R"([null,2.0]],"rows_changed":3,"last_insert_id":9}]})");
}

// ---- Auth --------------------------------------------------------------------------------------

constexpr absl::string_view kAdmin = "0123456789abcdef0123456789abcdef";  // 32: the minimum.

Authenticator MakeAuth() {
  absl::StatusOr<Authenticator> auth = Authenticator::Create(kAdmin);
  EXPECT_TRUE(auth.ok()) << auth.status();
  return auth.ok() ? *std::move(auth) : Authenticator();
}

std::string Bearer(absl::string_view token) { return absl::StrCat("Bearer ", token); }

TEST(AuthenticatorTest, RefusesAWeakOrUnsendableAdminToken) {
  EXPECT_FALSE(Authenticator::Create(kAdmin.substr(1)).ok());
  EXPECT_FALSE(Authenticator::Create(std::string(kAdminTokenBytesMax + 1, 'a')).ok());
  EXPECT_FALSE(Authenticator::Create(absl::StrCat(kAdmin, " x")).ok());
  EXPECT_FALSE(Authenticator::Create(absl::StrCat(kAdmin, "\n")).ok());
  EXPECT_TRUE(Authenticator::Create(kAdmin).ok());
  EXPECT_FALSE(Authenticator::FromOptions({.enabled = true, .admin_token = "short"}).ok());
  EXPECT_FALSE(Authenticator::FromOptions({}).value().enabled());
}

TEST(AuthenticatorTest, DisabledGrantsEverything) {
  Authenticator auth;
  EXPECT_TRUE(auth.Authorize(RouteKind::kDeleteTenant, "acme", "").ok());
  EXPECT_TRUE(auth.Authorize(RouteKind::kStats, "", "Bearer nonsense").ok());
}

TEST(AuthenticatorTest, ATenantTokenIsItsNameAndTheHmacOfIt) {
  // The known answer, from an independent implementation:
  //   echo -n "tenant:acme" | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
  EXPECT_EQ(MakeAuth().TenantToken("acme"),
            "acme.93d1dccc550fbd2bcd8f3f18e7c0f4c8702f57b4d57d9e0622e8792c9bfa6361");
  Authenticator other = Authenticator::Create(std::string(32, 'z')).value();
  EXPECT_NE(other.TenantToken("acme"), MakeAuth().TenantToken("acme"));
}

TEST(AuthenticatorTest, TheAdminTokenGrantsEveryRoute) {
  Authenticator auth = MakeAuth();
  for (const RouteKind route : {RouteKind::kQuery, RouteKind::kCreateTenant,
                                RouteKind::kDeleteTenant, RouteKind::kToken, RouteKind::kStats}) {
    EXPECT_TRUE(auth.Authorize(route, "acme", Bearer(kAdmin)).ok());
  }
  EXPECT_TRUE(auth.Authorize(RouteKind::kStats, "", absl::StrCat("bEaReR   ", kAdmin, " ")).ok());
  EXPECT_EQ(auth.stats().admin_grants, 6u);
}

TEST(AuthenticatorTest, NoTokenOrAnInvalidOneIs401WithABearerChallenge) {
  Authenticator auth = MakeAuth();
  const std::string good = auth.TenantToken("acme");
  std::string last_digit_wrong = good;
  last_digit_wrong.back() = last_digit_wrong.back() == '0' ? '1' : '0';
  std::string admin_one_off(kAdmin);
  admin_one_off[0] = 'X';
  for (const std::string& header :
       {std::string(""), std::string("Basic YWRtaW46YWRtaW4="), std::string("Bearer"),
        std::string("Bearer "), Bearer("garbage"), Bearer(good.substr(0, good.size() - 1)),
        Bearer(last_digit_wrong), Bearer(absl::StrCat("Acme", good.substr(4))),
        Bearer(absl::StrCat("other", good.substr(4))), Bearer(admin_one_off), good}) {
    const HttpError error = auth.Authorize(RouteKind::kQuery, "acme", header);
    EXPECT_EQ(error.status, 401) << header;
    EXPECT_STREQ(error.code, "unauthenticated") << header;
    EXPECT_TRUE(absl::StartsWith(error.headers, "WWW-Authenticate: Bearer realm=\"sqloop\""))
        << header;
  }
  // Negative control: the token itself passes.
  EXPECT_TRUE(auth.Authorize(RouteKind::kQuery, "acme", Bearer(good)).ok());
  EXPECT_EQ(auth.stats().unauthenticated, 11u);
}

TEST(AuthenticatorTest, ATenantTokenGrantsQueriesOnItsTenantOnly) {
  Authenticator auth = MakeAuth();
  const std::string acme = Bearer(auth.TenantToken("acme"));
  EXPECT_TRUE(auth.Authorize(RouteKind::kQuery, "acme", acme).ok());
  const HttpError other = auth.Authorize(RouteKind::kQuery, "globex", acme);
  EXPECT_EQ(other.status, 403);
  EXPECT_STREQ(other.code, "forbidden");
  EXPECT_NE(other.message.find("\"acme\""), std::string::npos) << other.message;
  for (const RouteKind admin_route :
       {RouteKind::kCreateTenant, RouteKind::kDeleteTenant, RouteKind::kToken, RouteKind::kStats}) {
    const HttpError error = auth.Authorize(admin_route, "acme", acme);
    EXPECT_EQ(error.status, 403);
    EXPECT_NE(error.message.find("admin token"), std::string::npos) << error.message;
  }
  EXPECT_EQ(auth.stats().tenant_grants, 1u);
  EXPECT_EQ(auth.stats().forbidden, 5u);
}

TEST(AuthenticatorTest, EverySecretIsComparedThroughTheConstantTimeCompare) {
  Authenticator auth = MakeAuth();
  ASSERT_EQ(auth.stats().constant_time_compares, 0u);
  // The admin token: one digest comparison.
  ASSERT_TRUE(auth.Authorize(RouteKind::kStats, "", Bearer(kAdmin)).ok());
  EXPECT_EQ(auth.stats().constant_time_compares, 1u);
  // A tenant token: the admin digest, then the tenant's MAC.
  ASSERT_TRUE(auth.Authorize(RouteKind::kQuery, "acme", Bearer(auth.TenantToken("acme"))).ok());
  EXPECT_EQ(auth.stats().constant_time_compares, 3u);
  // A wrong MAC is refused by the comparison (not by a shortcut on its shape).
  std::string wrong = auth.TenantToken("acme");
  wrong.back() = wrong.back() == 'f' ? 'e' : 'f';
  EXPECT_EQ(auth.Authorize(RouteKind::kQuery, "acme", Bearer(wrong)).status, 401);
  EXPECT_EQ(auth.stats().constant_time_compares, 5u);
}

}  // namespace
}  // namespace sqloop::examples::http
