// examples/http/handler.h
// -----------------------------------------------------------------------------
//
// Request handling for the SQL-over-HTTP host, without sockets: routing a method and URL,
// turning a JSON body into statements (simdjson), mapping executor statuses to HTTP, and
// writing JSON bodies and HTTP/1.1 responses. The server (examples/http/server.h) calls these
// from its connection state machine; tests call them directly.
//
// Routes:
//   POST   /v1/db/{tenant}/query   {"statements":[{"sql":"...","args":[...]}]}
//   PUT    /v1/db/{tenant}         create the tenant
//   DELETE /v1/db/{tenant}         delete the tenant
//   POST   /v1/db/{tenant}/token   mint the tenant's query token (admin; examples/http/auth.h)
//   GET    /v1/stats               loop, server and executor figures (admin)
// Any other path is 404; a known path with another method is 405 with an Allow header.
//
// Values in JSON: null, integers (int64), doubles, strings (TEXT), booleans (as 1 and 0, since
// SQLite has no boolean), {"base64":"..."} for a BLOB, and {"real":"Infinity"} or
// {"real":"-Infinity"} for an infinite REAL (JSON numbers have no infinity), in both directions.
//
// Every error is answered as {"error":{"code":"...","message":"..."}} with a fixed code:
//   malformed_http 400, headers_too_large 431, body_too_large 413, malformed_json 400,
//   invalid_request 400 (valid JSON of the wrong shape or types, an empty "sql", a NUL in it, a
//   key given twice), invalid_tenant 400, unauthenticated 401 (with WWW-Authenticate: Bearer),
//   forbidden 403, no_route 404, method_not_allowed 405, timeout 408, tenant_busy 503 (the
//   tenant has tenant_requests_max requests running; with Retry-After), and for executor
//   statuses invalid_argument 400 (SQL errors, with SQLite's message), not_found 404,
//   conflict 409, budget_exceeded 422 (the statement ran out of its budget of SQLite work,
//   db::IsBudgetExceeded: it would fail again, so no Retry-After), unavailable 503 (with
//   Retry-After), outcome_unknown 500 (DataLoss), internal 500.
//
// Example:
//
//   Route route = MatchRoute(HTTP_POST, "/v1/db/acme/query");
//   // route.kind == RouteKind::kQuery, route.tenant == "acme"
//   HttpError error = ParseQueryBody(json_parser, body, limits, statements);
//   std::string response;
//   FormatResponse(200, R"({"results":[]})", /*keep_alive=*/true, /*extra_headers=*/"", response);
#ifndef SQLOOP_EXAMPLES_HTTP_HANDLER_H_
#define SQLOOP_EXAMPLES_HTTP_HANDLER_H_

#include <http_parser.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "examples/http/executor.h"
#include "examples/http/json_writer.h"
#include "simdjson.h"

namespace sqloop::examples::http {

// An answer that is not a success: the HTTP status, a fixed code for programs, a message for
// people. status == 0 means "no error".
struct HttpError {
  int status = 0;
  const char* code = "";
  std::string message;
  // Extra header lines, each ending in "\r\n" (405's Allow, 503's Retry-After); static strings.
  const char* headers = "";

  [[nodiscard]] bool ok() const { return status == 0; }
};

enum class RouteKind : uint8_t { kQuery, kCreateTenant, kDeleteTenant, kToken, kStats, kError };

struct Route {
  RouteKind kind = RouteKind::kError;
  absl::string_view tenant;  // Points into the URL given to MatchRoute.
  HttpError error;           // When kind == kError.
};

// Routes a request target (path plus optional query, which is ignored). The tenant name is
// validated here, so an executor only ever sees valid names.
[[nodiscard]] Route MatchRoute(http_method method, absl::string_view url);

struct QueryLimits {
  // Statements per request. 64 covers a batch of writes a client groups into one transaction;
  // more is better done as several requests, which keeps one request's run time bounded.
  uint32_t statements_max = 64;
  // Arguments per statement. 999 is SQLite's historical SQLITE_MAX_VARIABLE_NUMBER, the
  // portable bound clients already respect.
  uint32_t args_max = 999;
};

// 8 levels: a valid body nests 5 deep (root, statements, statement, args, blob object). Deeper
// input is refused by simdjson before it costs anything.
inline constexpr size_t kJsonDepthMax = 8;

// Parses a query body into `statements` (cleared first). `body` gets SIMDJSON_PADDING bytes of
// capacity reserved (simdjson reads a little past the end) and is otherwise left as it was.
// Returns malformed_json for invalid JSON and invalid_request for valid JSON of the wrong shape,
// naming the offending field, e.g. "statements[1].args[0]: ...".
[[nodiscard]] HttpError ParseQueryBody(simdjson::dom::parser& parser, std::string& body,
                                       const QueryLimits& limits,
                                       std::vector<Statement>& statements);

// Maps an executor status to its HTTP error (see the table in executor.h).
[[nodiscard]] HttpError ErrorFromStatus(const absl::Status& status);

// {"error":{"code":...,"message":...}}
void WriteErrorBody(const HttpError& error, std::string& body);
// {"results":[{"columns":[...],"rows":[[...]],"rows_changed":N,"last_insert_id":N}, ...]}
void WriteResultsBody(const std::vector<StatementResult>& results, std::string& body);
// Writes one SQLite value as JSON (BLOBs as {"base64":...}, infinite REALs as {"real":...}).
void WriteValue(const Value& value, JsonWriter& json);

// Replaces `out` with a complete HTTP/1.1 response: status line, Content-Type (JSON),
// Content-Length, Connection (keep-alive or close), `extra_headers`, blank line, `body`.
void FormatResponse(int status, absl::string_view body, bool keep_alive,
                    absl::string_view extra_headers, std::string& out);

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_HANDLER_H_
