#include "examples/http/executor.h"

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"

namespace sqloop::examples::http {

int64_t Value::integer() const {
  SQLOOP_CHECK(type_ == Type::kInteger, "Value::integer: the value is not an INTEGER");
  return std::get<int64_t>(data_);
}

double Value::real() const {
  SQLOOP_CHECK(type_ == Type::kReal, "Value::real: the value is not a REAL");
  return std::get<double>(data_);
}

const std::string& Value::bytes() const {
  SQLOOP_CHECK(type_ == Type::kText || type_ == Type::kBlob,
               "Value::bytes: the value is neither TEXT nor BLOB");
  return std::get<std::string>(data_);
}

void ExecutorRequest::Reset() {
  SQLOOP_CHECK(!busy_, "ExecutorRequest::Reset: the request is still in an executor");
  kind = Kind::kQuery;
  tenant.clear();
  statements.clear();
  results.clear();
}

absl::Status ValidateTenantName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("tenant name is empty");
  if (name.size() > kTenantNameBytesMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tenant name is ", name.size(), " characters long; the limit is ", kTenantNameBytesMax));
  }
  for (size_t i = 0; i < name.size(); i++) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!allowed) {
      // Say which character, but print control and non-ASCII bytes as hex: the message is
      // echoed back to the client and must stay readable (and valid in a log line).
      const std::string shown = c >= 0x20 && c < 0x7f
                                    ? absl::StrCat("'", std::string(1, name[i]), "'")
                                    : absl::StrCat("byte 0x", absl::Hex(c));
      return absl::InvalidArgumentError(
          absl::StrCat("tenant name has ", shown, " at position ", i,
                       "; only lower-case letters, digits, '_' and '-' are allowed"));
    }
  }
  return absl::OkStatus();
}

}  // namespace sqloop::examples::http
