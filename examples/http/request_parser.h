// examples/http/request_parser.h
// -----------------------------------------------------------------------------
//
// HTTP/1.1 request framing for one connection, on top of Node's http_parser (Debian's
// libhttp-parser-dev, 2.9.4). http_parser does the parsing (request line, headers,
// Content-Length, chunked bodies, keep-alive rules) through incremental callbacks; this class
// collects what the server needs (method, URL, body, keep-alive, `Expect: 100-continue`) and
// enforces the size limits, so a client can never make a connection hold more than
// `header_bytes_max + body_bytes_max` bytes of request.
//
// Bytes can arrive in any split: Feed() takes whatever recv() returned and reports how far it
// got. The parser stops right after a complete request (http_parser's pause), so bytes of a
// pipelined next request stay with the caller until the current response is sent.
//
// Errors carry the HTTP status to answer with: 400 (malformed HTTP), 413 (body over the limit)
// or 431 (request line and headers over the limit). After an error the parser is finished: the
// server answers and closes the connection, since it cannot know where the next request starts.
//
// Example:
//
//   RequestParser parser({.header_bytes_max = 16384, .body_bytes_max = 1 << 20});
//   size_t consumed = 0;
//   switch (parser.Feed(data, size, consumed)) {
//     case RequestParser::Result::kComplete:  // parser.request() is ready
//     case RequestParser::Result::kNeedMore:  // recv more (maybe after "100 Continue")
//     case RequestParser::Result::kError:     // answer parser.error_status(), then close
//   }
#ifndef SQLOOP_EXAMPLES_HTTP_REQUEST_PARSER_H_
#define SQLOOP_EXAMPLES_HTTP_REQUEST_PARSER_H_

#include <http_parser.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace sqloop::examples::http {

struct HttpRequest {
  http_method method = HTTP_GET;
  std::string url;               // The request target as sent, e.g. "/v1/db/acme/query?x=1".
  std::string body;              // Decoded (chunked bodies are joined).
  bool keep_alive = false;       // http_should_keep_alive(): HTTP/1.1 default or 1.0 + header.
  bool expect_continue = false;  // "Expect: 100-continue" was sent.
  bool upgrade = false;  // An Upgrade/CONNECT request: answered, then the connection closes.
  // The Authorization header's value, or empty. One longer than
  // RequestParser::kAuthorizationBytesMax, or a header sent twice, is kept as a marker no token
  // can equal.
  std::string authorization;
};

class RequestParser {
 public:
  struct Limits {
    // The request's head as received: request line, header lines and the blank line that ends
    // them, every byte (colons, spaces and line ends too), so many tiny headers cost what they
    // take on the wire. A chunked body's trailers count their names and values against it anew.
    uint32_t header_bytes_max;
    uint32_t body_bytes_max;
  };
  // The longest Authorization value stored: "Bearer " and the longest admin token
  // (kAdminTokenBytesMax in examples/http/auth.h) with room to spare.
  static constexpr size_t kAuthorizationBytesMax = 1100;

  enum class Result : uint8_t {
    kNeedMore,  // Every byte was consumed and the request is not complete yet.
    kComplete,  // A whole request is in request(); `consumed` may be less than `size`.
    kError,     // error_status() and error_message() say why.
  };

  explicit RequestParser(Limits limits);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Starts a fresh connection: forgets any request and any error.
  void Reset();
  // Parses `size` bytes; `consumed` says how many were used. After kComplete, the next call
  // starts the next request on the same connection (keep-alive).
  [[nodiscard]] Result Feed(const char* data, size_t size, size_t& consumed);

  [[nodiscard]] const HttpRequest& request() const { return request_; }
  // Mutable for the server: it pads the body for simdjson and trims buffers between requests.
  [[nodiscard]] HttpRequest& request() { return request_; }
  // True from the current request's first byte until it is complete: part of a request has
  // arrived (so a timeout deserves a 408, and Stop() lets the request finish).
  [[nodiscard]] bool in_request() const { return in_request_ && !complete_; }
  // True while the current request's headers are complete and its body is still due: the moment
  // to send "100 Continue" if the client asked for it.
  [[nodiscard]] bool awaiting_body() const { return headers_done_ && !complete_; }
  [[nodiscard]] int error_status() const { return error_status_; }
  [[nodiscard]] const std::string& error_message() const { return error_message_; }

 private:
  static int OnMessageBegin(http_parser* parser);
  static int OnUrl(http_parser* parser, const char* at, size_t length);
  static int OnHeaderField(http_parser* parser, const char* at, size_t length);
  static int OnHeaderValue(http_parser* parser, const char* at, size_t length);
  static int OnHeadersComplete(http_parser* parser);
  static int OnBody(http_parser* parser, const char* at, size_t length);
  static int OnMessageComplete(http_parser* parser);

  // Runs http_parser over the bytes. Until the head is complete, http_parser is offered only
  // what the limit leaves, so a byte past the limit before the head's end fails (false, 431).
  bool Execute(const char* data, size_t size, size_t& consumed);
  // Counts a trailer's name or value bytes (the head's are counted in Execute); returns false
  // (and records 431) past the limit.
  bool CountTrailerBytes(size_t length);
  void FailHeadersTooLarge();
  void Fail(int status, std::string message);

  Limits limits_;
  http_parser parser_;
  http_parser_settings settings_;
  HttpRequest request_;
  // Bytes of the head so far (with any stray line ends before it), or of the trailers' names and
  // values once the head is complete.
  uint32_t header_bytes_ = 0;
  bool in_request_ = false;
  bool headers_done_ = false;
  bool complete_ = false;
  bool field_is_expect_ = false;
  bool field_is_authorization_ = false;
  bool in_value_ = false;  // The last callback was a header value (a new field starts afresh).
  std::string field_;      // The current header name, bounded (AppendBounded in the .cc).
  std::string value_;      // The current Expect value, bounded the same way.
  int error_status_ = 0;
  std::string error_message_;
};

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_REQUEST_PARSER_H_
