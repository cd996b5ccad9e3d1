// examples/http/auth.h
// -----------------------------------------------------------------------------
//
// Who may do what on the SQL-over-HTTP host: bearer tokens, checked before anything else.
//
// Two kinds of token, both sent as `Authorization: Bearer <token>`:
//
//   - The admin token: a secret of at least kAdminTokenBytesMin characters that the operator
//     generates (e.g. `openssl rand -hex 32`) and gives to sqloop_http in a file
//     (--admin_token_file), never on the command line, where `ps` would show it. It grants
//     everything: creating and deleting tenants, minting tenant tokens, /v1/stats, and queries
//     on any tenant.
//   - A tenant token: `<tenant>.<hex(HMAC-SHA256(admin token, "tenant:" + tenant))>`. It grants
//     queries on that one tenant. It is derived, not stored: the server recomputes the HMAC to
//     check it, so there is no token table to keep, back up or lose. The tenant's name in front
//     makes the token self-describing, so a valid token used on another tenant is told apart
//     from garbage (403 versus 401), and a log line can name who called. The admin mints it
//     (PUT's answer, or POST /v1/db/{tenant}/token).
//
// What a check answers (see Authorize):
//   no Authorization header, not a Bearer token, an unknown token   401, WWW-Authenticate: Bearer
//   a valid tenant token on another tenant or on an admin route      403
// The verdict depends only on the request's route and its header, never on whether the tenant
// exists, and the server asks it before the executor: an unauthorised caller learns nothing
// about which tenants exist.
//
// Comparisons of secrets run in constant time (OpenSSL's CRYPTO_memcmp, on fixed-size digests),
// so the time a refusal takes does not tell an attacker how many leading characters it guessed.
//
// Limits, said plainly: a tenant token cannot be revoked on its own (it is valid while the
// admin token is); rotating the admin token revokes every tenant token at once, and a tenant
// deleted and created again under the same name has the same token.
//
// Example:
//
//   absl::StatusOr<Authenticator> auth = Authenticator::Create(secret_from_file);
//   std::string token = auth->TenantToken("acme");   // "acme.3f9a..."
//   HttpError error = auth->Authorize(RouteKind::kQuery, "acme", "Bearer " + token);
//   // error.ok()
#ifndef SQLOOP_EXAMPLES_HTTP_AUTH_H_
#define SQLOOP_EXAMPLES_HTTP_AUTH_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "examples/http/handler.h"

namespace sqloop::examples::http {

// 32 characters: `openssl rand -hex 16` at the least, 128 bits of entropy when random. A
// shorter secret is refused, since everything (every tenant token too) rests on it.
inline constexpr size_t kAdminTokenBytesMin = 32;
// The longest admin token accepted: 1 KiB is far more than any generator produces, and keeps an
// Authorization header within what the parser stores (RequestParser::kAuthorizationBytesMax).
inline constexpr size_t kAdminTokenBytesMax = 1024;

// What the server's auth is configured with (HttpServerOptions::auth).
struct AuthOptions {
  // Off by default so tests, the simulator and the benchmark can build an HttpServer without
  // secrets; the sqloop_http program turns it on unless --insecure_no_auth (loopback only).
  bool enabled = false;
  // The admin token (see the file comment); required when enabled.
  std::string admin_token;
};

class Authenticator {
 public:
  // What a check or a mint did, for /v1/stats and for tests.
  struct Stats {
    uint64_t admin_grants = 0;
    uint64_t tenant_grants = 0;
    uint64_t unauthenticated = 0;  // 401s.
    uint64_t forbidden = 0;        // 403s.
    // Comparisons of a presented secret with an expected one, each through CRYPTO_memcmp.
    uint64_t constant_time_compares = 0;
  };

  // A disabled authenticator: Authorize() grants everything.
  Authenticator() = default;
  // Checks the admin token's length (kAdminTokenBytesMin..kAdminTokenBytesMax) and that it is
  // printable ASCII without spaces (it travels in a header).
  [[nodiscard]] static absl::StatusOr<Authenticator> Create(absl::string_view admin_token);
  // From the server's options: disabled, or Create(options.admin_token).
  [[nodiscard]] static absl::StatusOr<Authenticator> FromOptions(const AuthOptions& options);

  [[nodiscard]] bool enabled() const { return enabled_; }

  // The token that grants queries on `tenant` (a valid name; see ValidateTenantName). Only
  // meaningful when enabled.
  [[nodiscard]] std::string TenantToken(absl::string_view tenant) const;

  // Whether the request's `Authorization` header value (empty when absent) grants `route` on
  // `tenant` (empty for /v1/stats). Returns the 401 or 403 to answer, or ok().
  [[nodiscard]] HttpError Authorize(RouteKind route, absl::string_view tenant,
                                    absl::string_view authorization);

  [[nodiscard]] const Stats& stats() const { return stats_; }

 private:
  using Digest = std::array<unsigned char, 32>;  // SHA-256.

  [[nodiscard]] Digest Mac(absl::string_view tenant) const;
  // Constant-time equality of two digests; counts itself in stats_.
  [[nodiscard]] bool DigestsEqual(const Digest& a, const Digest& b);

  bool enabled_ = false;
  std::string admin_token_;
  Digest admin_digest_{};  // SHA-256 of the admin token: compared instead of the token itself.
  Stats stats_;
};

}  // namespace sqloop::examples::http

#endif  // SQLOOP_EXAMPLES_HTTP_AUTH_H_
