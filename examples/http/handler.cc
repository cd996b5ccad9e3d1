#include "examples/http/handler.h"

#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sqloop/db/request.h"

namespace sqloop::examples::http {
namespace {

// simdjson speaks std::string_view; abseil 20220623 has its own absl::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

HttpError Error(int status, const char* code, std::string message, const char* headers = "") {
  return HttpError{status, code, std::move(message), headers};
}

HttpError InvalidRequest(absl::string_view where, absl::string_view what) {
  return Error(400, "invalid_request", absl::StrCat(where, ": ", what));
}

HttpError MethodNotAllowed(http_method method, const char* allow_header, const char* allowed) {
  return Error(405, "method_not_allowed",
               absl::StrCat(http_method_str(method), " is not allowed here; use ", allowed),
               allow_header);
}

// Converts one JSON argument into a SQLite value.
// The name {"real":...} gives an infinite REAL, which JSON numbers cannot say.
std::optional<double> InfinityNamed(absl::string_view name) {
  if (name == "Infinity") return std::numeric_limits<double>::infinity();
  if (name == "-Infinity") return -std::numeric_limits<double>::infinity();
  return std::nullopt;
}

HttpError ParseArg(simdjson::dom::element arg, const std::string& where, Value& value) {
  switch (arg.type()) {
    case simdjson::dom::element_type::NULL_VALUE:
      value = Value::Null();
      return {};
    case simdjson::dom::element_type::BOOL:
      value = Value::Integer(arg.get_bool().value_unsafe() ? 1 : 0);
      return {};
    case simdjson::dom::element_type::INT64:
      value = Value::Integer(arg.get_int64().value_unsafe());
      return {};
    case simdjson::dom::element_type::UINT64:
      return InvalidRequest(where, "integer does not fit SQLite's signed 64-bit INTEGER");
    case simdjson::dom::element_type::DOUBLE:
      value = Value::Real(arg.get_double().value_unsafe());
      return {};
    case simdjson::dom::element_type::STRING:
      value = Value::Text(std::string(Sv(arg.get_string().value_unsafe())));
      return {};
    case simdjson::dom::element_type::ARRAY:
      break;
    case simdjson::dom::element_type::OBJECT: {
      simdjson::dom::object object = arg.get_object().value_unsafe();
      std::string_view encoded;
      std::string decoded;
      if (object.size() == 1 && object["base64"].get_string().get(encoded) == simdjson::SUCCESS &&
          absl::Base64Unescape(Sv(encoded), &decoded)) {
        value = Value::Blob(std::move(decoded));
        return {};
      }
      if (object.size() == 1 && object["real"].get_string().get(encoded) == simdjson::SUCCESS) {
        if (std::optional<double> infinite = InfinityNamed(Sv(encoded))) {
          value = Value::Real(*infinite);
          return {};
        }
        return InvalidRequest(where,
                              "{\"real\":...} is \"Infinity\" or \"-Infinity\"; a finite "
                              "REAL is a plain JSON number");
      }
      break;
    }
  }
  return InvalidRequest(where,
                        "an argument is null, a number, a string, a boolean, "
                        "{\"base64\":\"...\"} for a BLOB, or {\"real\":\"Infinity\"} (or "
                        "\"-Infinity\") for an infinite REAL");
}

HttpError ParseStatement(simdjson::dom::element element, size_t index, const QueryLimits& limits,
                         Statement& statement) {
  const std::string where = absl::StrCat("statements[", index, "]");
  simdjson::dom::object object;
  if (element.get_object().get(object) != simdjson::SUCCESS)
    return InvalidRequest(where, "must be an object");
  bool has_sql = false;
  bool has_args = false;
  for (simdjson::dom::key_value_pair field : object) {
    if (field.key == "sql") {
      // JSON allows a repeated key and parsers disagree on which one wins: refuse it, so what
      // runs is never a matter of which copy a proxy or a log looked at.
      if (has_sql) return InvalidRequest(where, "\"sql\" is given twice");
      has_sql = true;
      std::string_view sql;
      if (field.value.get_string().get(sql) != simdjson::SUCCESS)
        return InvalidRequest(where, "\"sql\" must be a string");
      // SQLite reads SQL up to its first NUL: the rest would be dropped without a word.
      if (absl::StrContains(Sv(sql), '\0')) {
        return InvalidRequest(where, "the SQL contains a NUL character (\\u0000)");
      }
      if (absl::StripAsciiWhitespace(Sv(sql)).empty()) {
        return InvalidRequest(where, "\"sql\" is empty");
      }
      statement.sql.assign(sql.data(), sql.size());
    } else if (field.key == "args") {
      if (has_args) return InvalidRequest(where, "\"args\" is given twice");
      has_args = true;
      simdjson::dom::array args;
      if (field.value.get_array().get(args) != simdjson::SUCCESS)
        return InvalidRequest(where, "\"args\" must be an array");
      if (args.size() > limits.args_max) {
        return InvalidRequest(where, absl::StrCat("more than ", limits.args_max, " args"));
      }
      statement.args.resize(args.size());
      size_t i = 0;
      for (simdjson::dom::element arg : args) {
        HttpError error = ParseArg(arg, absl::StrCat(where, ".args[", i, "]"), statement.args[i]);
        if (!error.ok()) return error;
        i++;
      }
    } else {
      return InvalidRequest(where, absl::StrCat("unknown field \"", Sv(field.key),
                                                "\"; a statement has \"sql\" and \"args\""));
    }
  }
  if (!has_sql) return InvalidRequest(where, "\"sql\" is missing");
  return {};
}

}  // namespace

Route MatchRoute(http_method method, absl::string_view url) {
  Route route;
  http_parser_url parsed;
  http_parser_url_init(&parsed);
  if (http_parser_parse_url(url.data(), url.size(), 0, &parsed) != 0 ||
      (parsed.field_set & (1 << UF_PATH)) == 0) {
    route.error = Error(400, "malformed_http", "the request target is not a valid path");
    return route;
  }
  const absl::string_view path =
      url.substr(parsed.field_data[UF_PATH].off, parsed.field_data[UF_PATH].len);
  const std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  // parts[0] is the empty string before the leading '/'.
  if (parts.size() == 3 && parts[0].empty() && parts[1] == "v1" && parts[2] == "stats") {
    if (method != HTTP_GET) route.error = MethodNotAllowed(method, "Allow: GET\r\n", "GET");
    route.kind = route.error.ok() ? RouteKind::kStats : RouteKind::kError;
    return route;
  }
  const bool tenant_path =
      parts[0].empty() && parts.size() >= 4 && parts[1] == "v1" && parts[2] == "db";
  if (tenant_path && parts.size() == 4) {
    if (method == HTTP_PUT) route.kind = RouteKind::kCreateTenant;
    if (method == HTTP_DELETE) route.kind = RouteKind::kDeleteTenant;
    if (route.kind == RouteKind::kError) {
      route.error = MethodNotAllowed(method, "Allow: PUT, DELETE\r\n", "PUT or DELETE");
    }
  } else if (tenant_path && parts.size() == 5 && (parts[4] == "query" || parts[4] == "token")) {
    if (method == HTTP_POST)
      route.kind = parts[4] == "query" ? RouteKind::kQuery : RouteKind::kToken;
    if (route.kind == RouteKind::kError) {
      route.error = MethodNotAllowed(method, "Allow: POST\r\n", "POST");
    }
  } else {
    route.error = Error(404, "no_route",
                        absl::StrCat("no route for ", path,
                                     "; try /v1/db/{tenant}/query, /v1/db/{tenant}, "
                                     "/v1/db/{tenant}/token or /v1/stats"));
    return route;
  }
  if (route.kind == RouteKind::kError) return route;
  route.tenant = parts[3];
  if (absl::Status valid = ValidateTenantName(route.tenant); !valid.ok()) {
    route.kind = RouteKind::kError;
    route.error = Error(400, "invalid_tenant", std::string(valid.message()));
  }
  return route;
}

HttpError ParseQueryBody(simdjson::dom::parser& parser, std::string& body,
                         const QueryLimits& limits, std::vector<Statement>& statements) {
  statements.clear();
  // simdjson may read up to SIMDJSON_PADDING bytes past the end: make them ours.
  body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
  simdjson::dom::element root;
  if (const simdjson::error_code error = parser.parse(body.data(), body.size(), false).get(root);
      error != simdjson::SUCCESS) {
    // simdjson's NUMBER_ERROR also stands for valid JSON it cannot represent: say which.
    return Error(400, "malformed_json",
                 error == simdjson::NUMBER_ERROR
                     ? "malformed JSON: a number is malformed or out of range (an integer must "
                       "fit in 64 bits, a real number in a double; send an infinite REAL as "
                       "{\"real\":\"Infinity\"} or {\"real\":\"-Infinity\"})"
                     : absl::StrCat("malformed JSON: ", simdjson::error_message(error)));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS)
    return InvalidRequest("body", "must be a JSON object");
  simdjson::dom::array list;
  bool has_statements = false;
  for (simdjson::dom::key_value_pair field : object) {
    if (field.key != "statements" || has_statements) {
      return InvalidRequest("body", absl::StrCat("unexpected field \"", Sv(field.key),
                                                 "\"; the body is {\"statements\":[...]}"));
    }
    if (field.value.get_array().get(list) != simdjson::SUCCESS)
      return InvalidRequest("statements", "must be an array");
    has_statements = true;
  }
  if (!has_statements) return InvalidRequest("body", "\"statements\" is missing");
  if (list.size() == 0) return InvalidRequest("statements", "is empty");
  if (list.size() > limits.statements_max) {
    return InvalidRequest("statements", absl::StrCat("more than ", limits.statements_max,
                                                     " statements in one request"));
  }
  statements.resize(list.size());
  size_t i = 0;
  for (simdjson::dom::element element : list) {
    HttpError error = ParseStatement(element, i, limits, statements[i]);
    if (!error.ok()) return error;
    i++;
  }
  return {};
}

HttpError ErrorFromStatus(const absl::Status& status) {
  std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return {};
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return Error(400, "invalid_argument", std::move(message));
    case absl::StatusCode::kNotFound:
      return Error(404, "not_found", std::move(message));
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
      return Error(409, "conflict", std::move(message));
    case absl::StatusCode::kResourceExhausted:
      // A statement over its budget of SQLite work fails the same way every time: retrying
      // cannot help, so it is the client's to change (422), not the host's shortage (503).
      if (db::IsBudgetExceeded(status)) return Error(422, "budget_exceeded", std::move(message));
      [[fallthrough]];
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:  // Stopped because the server is stopping.
      // The host is short of something (open files, memory, time) or stopping: the client may
      // retry, here or on another instance.
      return Error(503, "unavailable", std::move(message), "Retry-After: 1\r\n");
    case absl::StatusCode::kDataLoss:
      return Error(500, "outcome_unknown", std::move(message));
    default:
      return Error(500, "internal", std::move(message));
  }
}

void WriteErrorBody(const HttpError& error, std::string& body) {
  body.clear();
  JsonWriter json(body);
  json.BeginObject();
  json.Key("error");
  json.BeginObject();
  json.Key("code");
  json.String(error.code);
  json.Key("message");
  json.String(error.message);
  json.EndObject();
  json.EndObject();
}

void WriteValue(const Value& value, JsonWriter& json) {
  switch (value.type()) {
    case Value::Type::kNull:
      json.Null();
      return;
    case Value::Type::kInteger:
      json.Int(value.integer());
      return;
    case Value::Type::kReal:
      // JSON has no infinity: {"real":"Infinity"}, as arguments take it. (SQLite stores no
      // NaN: it makes one NULL.)
      if (std::isinf(value.real())) {
        json.BeginObject();
        json.Key("real");
        json.String(value.real() > 0 ? "Infinity" : "-Infinity");
        json.EndObject();
        return;
      }
      json.Double(value.real());
      return;
    case Value::Type::kText:
      json.String(value.bytes());
      return;
    case Value::Type::kBlob:
      json.BeginObject();
      json.Key("base64");
      json.String(absl::Base64Escape(value.bytes()));
      json.EndObject();
      return;
  }
}

void WriteResultsBody(const std::vector<StatementResult>& results, std::string& body) {
  body.clear();
  JsonWriter json(body);
  json.BeginObject();
  json.Key("results");
  json.BeginArray();
  for (const StatementResult& result : results) {
    json.BeginObject();
    json.Key("columns");
    json.BeginArray();
    for (const std::string& column : result.columns) json.String(column);
    json.EndArray();
    json.Key("rows");
    json.BeginArray();
    for (const std::vector<Value>& row : result.rows) {
      json.BeginArray();
      for (const Value& value : row) WriteValue(value, json);
      json.EndArray();
    }
    json.EndArray();
    json.Key("rows_changed");
    json.Int(result.rows_changed);
    json.Key("last_insert_id");
    json.Int(result.last_insert_id);
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();
}

void FormatResponse(int status, absl::string_view body, bool keep_alive,
                    absl::string_view extra_headers, std::string& out) {
  out.clear();
  absl::StrAppend(&out, "HTTP/1.1 ", status, " ", http_status_str(static_cast<http_status>(status)),
                  "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                  "\r\nConnection: ", keep_alive ? "keep-alive" : "close", "\r\n", extra_headers,
                  "\r\n", body);
}

}  // namespace sqloop::examples::http
