#include "sqloop/db/internal/file_names.h"

#include <unistd.h>

#include <climits>

#include "absl/strings/str_cat.h"

namespace sqloop::db::internal {

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The files of a database, its locks and its taint are keyed by this path, so "d//t.db" and
// "d/./t.db" must not name a second database: empty and "." components go. ".." stays: with a
// symbolic link before it, the file it names is not the one its lexical reduction names, and
// a second key for one file (which its lock then refuses) is safe where one key for two files
// is not.
std::string FullPathOf(const std::string& path) {
  std::string absolute;
  if (path.empty() || path[0] != '/') {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) return "";
    absolute = absl::StrCat(cwd, "/", path);
  } else {
    absolute = path;
  }
  std::string full;
  full.reserve(absolute.size());
  for (size_t begin = 0; begin < absolute.size();) {
    size_t end = absolute.find('/', begin);
    if (end == std::string::npos) end = absolute.size();
    const absl::string_view part(absolute.data() + begin, end - begin);
    if (!part.empty() && part != ".") absl::StrAppend(&full, "/", part);
    begin = end + 1;
  }
  return full.empty() ? "/" : full;
}

absl::string_view FileNameOf(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace sqloop::db::internal
