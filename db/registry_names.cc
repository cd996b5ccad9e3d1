// Tenant names and state names (declared in db/registry.h): pure functions, apart from the
// lifecycle so that they can be read, and called from any thread, on their own.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/db/registry.h"

namespace sqloop::db {
namespace {

bool IsLowerOrDigit(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// A byte as a reader can see it in an error message: 'a', or \x0a for a control byte.
std::string Printable(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return absl::StrCat("'", std::string(1, c), "'");
  return absl::StrFormat("\\x%02x", byte);
}

}  // namespace

absl::Status ValidateTenantName(absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "tenant name is empty; use 1 to 64 characters of [a-z0-9_-], starting with a letter or "
        "digit");
  }
  if (name.size() > kTenantNameBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tenant name is %d bytes long; the limit is %d (characters [a-z0-9_-])",
                        name.size(), kTenantNameBytesMax));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (IsLowerOrDigit(c)) continue;
    if (i > 0 && (c == '_' || c == '-')) continue;
    const char* why = "";
    if (c == '/' || c == '\\') {
      why = " (a path separator: tenant names are file names, not paths)";
    } else if (c == '.') {
      why = " ('.' is refused so that no name can be '..' or a hidden file)";
    } else if (c >= 'A' && c <= 'Z') {
      why = " (uppercase is refused so names cannot alias on case-insensitive file systems)";
    } else if (c == '_' || c == '-') {
      why = " (a name must start with a lowercase letter or a digit)";
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "tenant name has an invalid byte %s at position %d%s; allowed: [a-z0-9] first, then "
        "[a-z0-9_-], at most %d bytes",
        Printable(c), i, why, kTenantNameBytesMax));
  }
  return absl::OkStatus();
}

absl::string_view TenantStateName(TenantState state) {
  switch (state) {
    case TenantState::kClosed:
      return "closed";
    case TenantState::kWaitingSlot:
      return "waiting_slot";
    case TenantState::kOpening:
      return "opening";
    case TenantState::kActive:
      return "active";
    case TenantState::kIdle:
      return "idle";
    case TenantState::kAsleep:
      return "asleep";
    case TenantState::kClosing:
      return "closing";
    case TenantState::kDeleting:
      return "deleting";
  }
  return "unknown";
}

}  // namespace sqloop::db
