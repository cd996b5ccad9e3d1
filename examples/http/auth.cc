#include "examples/http/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "examples/http/executor.h"
#include "sqloop/alloc/check.h"

namespace sqloop::examples::http {
namespace {

// RFC 6750: the scheme to use, and (once a token was sent) that it was not a valid one.
constexpr const char* kChallenge = "WWW-Authenticate: Bearer realm=\"sqloop\"\r\n";
constexpr const char* kChallengeInvalid =
    "WWW-Authenticate: Bearer realm=\"sqloop\", error=\"invalid_token\"\r\n";
constexpr absl::string_view kTenantLabel = "tenant:";

HttpError Unauthenticated(std::string message, const char* challenge) {
  return HttpError{401, "unauthenticated", std::move(message), challenge};
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes exactly out.size() bytes of hex; false on any other length or a non-hex character.
template <size_t N>
bool DecodeHex(absl::string_view hex, std::array<unsigned char, N>& out) {
  if (hex.size() != 2 * N) return false;
  for (size_t i = 0; i < N; i++) {
    const int high = HexValue(hex[2 * i]);
    const int low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    out[i] = static_cast<unsigned char>(high << 4 | low);
  }
  return true;
}

bool IsRouteForAdmin(RouteKind route) { return route != RouteKind::kQuery; }

}  // namespace

absl::StatusOr<Authenticator> Authenticator::Create(absl::string_view admin_token) {
  if (admin_token.size() < kAdminTokenBytesMin || admin_token.size() > kAdminTokenBytesMax) {
    return absl::InvalidArgumentError(absl::StrCat("the admin token is ", admin_token.size(),
                                                   " characters long; it must be ",
                                                   kAdminTokenBytesMin, " to ", kAdminTokenBytesMax,
                                                   " (generate one with: openssl rand -hex 32)"));
  }
  for (const char c : admin_token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          "the admin token must be printable ASCII without spaces: it travels in an HTTP header");
    }
  }
  Authenticator auth;
  auth.enabled_ = true;
  auth.admin_token_ = std::string(admin_token);
  unsigned int size = 0;
  SQLOOP_CHECK(EVP_Digest(admin_token.data(), admin_token.size(), auth.admin_digest_.data(), &size,
                          EVP_sha256(), nullptr) == 1 &&
                   size == auth.admin_digest_.size(),
               "Authenticator: SHA-256 failed");
  return auth;
}

absl::StatusOr<Authenticator> Authenticator::FromOptions(const AuthOptions& options) {
  if (!options.enabled) return Authenticator();
  return Create(options.admin_token);
}

Authenticator::Digest Authenticator::Mac(absl::string_view tenant) const {
  const std::string message = absl::StrCat(kTenantLabel, tenant);
  Digest mac{};
  unsigned int size = 0;
  SQLOOP_CHECK(HMAC(EVP_sha256(), admin_token_.data(), static_cast<int>(admin_token_.size()),
                    reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                    mac.data(), &size) != nullptr &&
                   size == mac.size(),
               "Authenticator: HMAC-SHA256 failed");
  return mac;
}

std::string Authenticator::TenantToken(absl::string_view tenant) const {
  SQLOOP_CHECK(enabled_, "Authenticator::TenantToken: auth is disabled");
  const Digest mac = Mac(tenant);
  std::string token = absl::StrCat(tenant, ".");
  static constexpr char kHex[] = "0123456789abcdef";
  for (const unsigned char byte : mac) {
    token.push_back(kHex[byte >> 4]);
    token.push_back(kHex[byte & 0xf]);
  }
  return token;
}

bool Authenticator::DigestsEqual(const Digest& a, const Digest& b) {
  stats_.constant_time_compares++;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

HttpError Authenticator::Authorize(RouteKind route, absl::string_view tenant,
                                   absl::string_view authorization) {
  if (!enabled_) return {};
  const absl::string_view value = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    stats_.unauthenticated++;
    return Unauthenticated(value.empty()
                               ? "this route needs a token: send \"Authorization: Bearer <token>\""
                               : "the Authorization header is not \"Bearer <token>\"",
                           kChallenge);
  }
  const absl::string_view token = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  // The admin token: compared as SHA-256 digests, so the comparison is of fixed size whatever
  // was sent, and runs in constant time.
  Digest presented{};
  unsigned int size = 0;
  SQLOOP_CHECK(
      EVP_Digest(token.data(), token.size(), presented.data(), &size, EVP_sha256(), nullptr) == 1,
      "Authenticator: SHA-256 failed");
  if (DigestsEqual(presented, admin_digest_)) {
    stats_.admin_grants++;
    return {};
  }
  // A tenant token: "<tenant>.<64 hex digits>". Tenant names have no '.', so the last one splits.
  const size_t dot = token.rfind('.');
  Digest mac{};
  const absl::string_view owner = dot == absl::string_view::npos ? "" : token.substr(0, dot);
  if (dot == absl::string_view::npos || !ValidateTenantName(owner).ok() ||
      !DecodeHex(token.substr(dot + 1), mac) || !DigestsEqual(mac, Mac(owner))) {
    stats_.unauthenticated++;
    return Unauthenticated("the token is not valid", kChallengeInvalid);
  }
  if (!IsRouteForAdmin(route) && owner == tenant) {
    stats_.tenant_grants++;
    return {};
  }
  stats_.forbidden++;
  return HttpError{403, "forbidden",
                   IsRouteForAdmin(route)
                       ? absl::StrCat("the token of tenant \"", owner,
                                      "\" grants queries on it only; this route needs the admin "
                                      "token")
                       : absl::StrCat("the token of tenant \"", owner,
                                      "\" grants queries on it only, not on \"", tenant, "\""),
                   ""};
}

}  // namespace sqloop::examples::http
