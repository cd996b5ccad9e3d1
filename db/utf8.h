// db/utf8.h
// -----------------------------------------------------------------------------
//
// The one UTF-8 rule of sqloop (RFC 3629, section 4): what the Database accepts as TEXT and
// what the HTTP host passes through its JSON unchanged. Valid means: no stray continuation
// byte, no overlong form, no UTF-16 surrogate (U+D800..U+DFFF), nothing above U+10FFFF, no
// truncated sequence. SQLite stores text as given, so a byte sequence this refuses would break
// every client that later decodes it.
//
// Example:
//
//   sqloop::db::IsValidUtf8("caf\xC3\xA9");  // true
//   sqloop::db::IsValidUtf8("\xC0\xAF");      // false: an overlong '/'
#ifndef SQLOOP_DB_UTF8_H_
#define SQLOOP_DB_UTF8_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace sqloop::db {

// The length (1..4) of the valid UTF-8 sequence that starts at `text[i]` (i < text.size()),
// or 0 if none does.
[[nodiscard]] size_t Utf8SequenceLength(absl::string_view text, size_t i);

// Whether all of `text` is valid UTF-8.
[[nodiscard]] bool IsValidUtf8(absl::string_view text);

}  // namespace sqloop::db

#endif  // SQLOOP_DB_UTF8_H_
