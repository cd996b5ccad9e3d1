#include "examples/http/request_parser.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"

namespace sqloop::examples::http {
namespace {

RequestParser* Self(http_parser* parser) { return static_cast<RequestParser*>(parser->data); }

// http_parser stores "no Content-Length" as ULLONG_MAX.
constexpr uint64_t kNoContentLength = ~uint64_t{0};

// 16 bytes hold "expect", "authorization" and "100-continue"; longer names and values are not
// the ones we look for, so they are only counted, never stored.
constexpr size_t kHeaderScratchBytes = 16;

// Appends to a header scratch string; once it would grow past `bytes_max` it is replaced by a
// marker that no name, value or token we look for can equal, and stays that way.
void AppendBounded(std::string& scratch, const char* at, size_t length,
                   size_t bytes_max = kHeaderScratchBytes) {
  if (scratch.size() + length <= bytes_max) {
    scratch.append(at, length);
  } else {
    scratch.assign(bytes_max + 1, '-');
  }
}

}  // namespace

RequestParser::RequestParser(Limits limits) : limits_(limits) {
  http_parser_settings_init(&settings_);
  settings_.on_message_begin = &RequestParser::OnMessageBegin;
  settings_.on_url = &RequestParser::OnUrl;
  settings_.on_header_field = &RequestParser::OnHeaderField;
  settings_.on_header_value = &RequestParser::OnHeaderValue;
  settings_.on_headers_complete = &RequestParser::OnHeadersComplete;
  settings_.on_body = &RequestParser::OnBody;
  settings_.on_message_complete = &RequestParser::OnMessageComplete;
  Reset();
}

void RequestParser::Reset() {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  in_request_ = headers_done_ = complete_ = false;
  header_bytes_ = 0;
  error_status_ = 0;
  error_message_.clear();
}

RequestParser::Result RequestParser::Feed(const char* data, size_t size, size_t& consumed) {
  SQLOOP_CHECK(error_status_ == 0, "RequestParser::Feed: the parser failed; close the connection");
  if (complete_) {
    // The previous request was handed out; resume for the next one.
    complete_ = false;
    in_request_ = headers_done_ = false;
    header_bytes_ = 0;
    http_parser_pause(&parser_, 0);
  }
  if (!Execute(data, size, consumed)) return Result::kError;
  const http_errno error = HTTP_PARSER_ERRNO(&parser_);
  if (complete_) return Result::kComplete;  // Paused in OnMessageComplete.
  if (error == HPE_OK && !parser_.upgrade) {
    SQLOOP_CHECK(consumed == size, "RequestParser: http_parser stopped without a reason");
    return Result::kNeedMore;
  }
  if (error == HPE_OK) {
    // http_parser stopped at an Upgrade it could not finish as a plain request.
    Fail(400, "protocol upgrades are not supported");
  } else if (error_status_ == 0) {
    // http_parser's own verdict: malformed request line, bad header syntax, bad chunk size...
    const int status = error == HPE_HEADER_OVERFLOW ? 431 : 400;
    // http_parser reports a chunk size past 64 bits as a bad Content-Length.
    if (error == HPE_INVALID_CONTENT_LENGTH && headers_done_ && (parser_.flags & F_CHUNKED) != 0) {
      Fail(status, "malformed HTTP request: a chunk size does not fit in 64 bits");
    } else {
      Fail(status, absl::StrCat("malformed HTTP request: ", http_errno_description(error)));
    }
  }
  return Result::kError;
}

bool RequestParser::Execute(const char* data, size_t size, size_t& consumed) {
  consumed = 0;
  do {
    size_t offer = size - consumed;
    if (!headers_done_) {
      const size_t left = limits_.header_bytes_max - header_bytes_;
      if (left == 0 && offer > 0) {
        FailHeadersTooLarge();
        return false;
      }
      offer = std::min(offer, left);
    }
    const size_t parsed = http_parser_execute(&parser_, &settings_, data + consumed, offer);
    consumed += parsed;
    if (!headers_done_) header_bytes_ += static_cast<uint32_t>(parsed);
    if (parsed < offer) break;  // Paused after a request, failed, or stopped at an upgrade.
  } while (consumed < size && HTTP_PARSER_ERRNO(&parser_) == HPE_OK && !parser_.upgrade);
  return true;
}

void RequestParser::Fail(int status, std::string message) {
  if (error_status_ != 0) return;  // Keep the first reason.
  error_status_ = status;
  error_message_ = std::move(message);
}

void RequestParser::FailHeadersTooLarge() {
  Fail(431, absl::StrCat("request line and headers exceed ", limits_.header_bytes_max, " bytes"));
}

bool RequestParser::CountTrailerBytes(size_t length) {
  if (!headers_done_) return true;  // Bytes of the head: Execute() counts them as they arrive.
  header_bytes_ += static_cast<uint32_t>(length);
  if (header_bytes_ <= limits_.header_bytes_max) return true;
  FailHeadersTooLarge();
  return false;
}

int RequestParser::OnMessageBegin(http_parser* parser) {
  RequestParser& self = *Self(parser);
  self.in_request_ = true;
  self.field_is_expect_ = self.field_is_authorization_ = self.in_value_ = false;
  self.field_.clear();
  self.request_.url.clear();
  self.request_.body.clear();
  self.request_.authorization.clear();
  self.request_.keep_alive = self.request_.expect_continue = self.request_.upgrade = false;
  return 0;
}

int RequestParser::OnUrl(http_parser* parser, const char* at, size_t length) {
  RequestParser& self = *Self(parser);
  self.request_.url.append(at, length);
  return 0;
}

int RequestParser::OnHeaderField(http_parser* parser, const char* at, size_t length) {
  RequestParser& self = *Self(parser);
  if (!self.CountTrailerBytes(length)) return -1;
  if (self.in_value_) {
    // A new header begins: the callbacks for one name may come in pieces.
    self.in_value_ = false;
    self.field_.clear();
  }
  AppendBounded(self.field_, at, length);
  return 0;
}

int RequestParser::OnHeaderValue(http_parser* parser, const char* at, size_t length) {
  RequestParser& self = *Self(parser);
  if (!self.CountTrailerBytes(length)) return -1;
  if (!self.in_value_) {
    self.in_value_ = true;
    self.field_is_expect_ = absl::EqualsIgnoreCase(self.field_, "expect");
    self.field_is_authorization_ = absl::EqualsIgnoreCase(self.field_, "authorization");
    self.value_.clear();
    if (self.field_is_authorization_ && !self.request_.authorization.empty()) {
      // Sent twice: which one counts would be a guess, so neither does (a marker no token
      // equals, which the appends below keep).
      self.request_.authorization.assign(kAuthorizationBytesMax + 1, '-');
    }
  }
  if (self.field_is_authorization_) {
    AppendBounded(self.request_.authorization, at, length, kAuthorizationBytesMax);
  }
  if (self.field_is_expect_) {
    AppendBounded(self.value_, at, length);
    self.request_.expect_continue =
        absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(self.value_), "100-continue");
  }
  return 0;
}

int RequestParser::OnHeadersComplete(http_parser* parser) {
  RequestParser& self = *Self(parser);
  self.headers_done_ = true;
  self.header_bytes_ = 0;  // Trailers after a chunked body start a count of their own.
  self.request_.method = static_cast<http_method>(parser->method);
  self.request_.keep_alive = http_should_keep_alive(parser) != 0;
  self.request_.upgrade = parser->upgrade != 0;
  // Refuse a declared oversized body before reading any of it (chunked bodies are checked as
  // they arrive, in OnBody).
  if (parser->content_length != kNoContentLength &&
      parser->content_length > self.limits_.body_bytes_max) {
    self.Fail(413, absl::StrCat("request body of ", parser->content_length,
                                " bytes exceeds the limit of ", self.limits_.body_bytes_max));
    return -1;
  }
  return 0;
}

int RequestParser::OnBody(http_parser* parser, const char* at, size_t length) {
  RequestParser& self = *Self(parser);
  if (self.request_.body.size() + length > self.limits_.body_bytes_max) {
    self.Fail(413, absl::StrCat("request body exceeds the limit of ", self.limits_.body_bytes_max,
                                " bytes"));
    return -1;
  }
  self.request_.body.append(at, length);
  return 0;
}

int RequestParser::OnMessageComplete(http_parser* parser) {
  RequestParser& self = *Self(parser);
  self.complete_ = true;
  // Stop here: bytes after this request belong to the next one, parsed after we answer.
  http_parser_pause(parser, 1);
  return 0;
}

}  // namespace sqloop::examples::http
