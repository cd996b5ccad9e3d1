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

namespace {

// Appends "/part" to `full` for each component of `path` that is neither empty nor ".".
void AppendComponents(absl::string_view path, std::string& full) {
  for (size_t begin = 0; begin < path.size();) {
    size_t end = path.find('/', begin);
    if (end == absl::string_view::npos) end = path.size();
    const absl::string_view part = path.substr(begin, end - begin);
    if (!part.empty() && part != ".") absl::StrAppend(&full, "/", part);
    begin = end + 1;
  }
}

}  // namespace

// The files of a database, its locks and its taint are keyed by this path, so "d//t.db" and
// "d/./t.db" must not name a second database: empty and "." components go. ".." stays: with a
// symbolic link before it, the file it names is not the one its lexical reduction names, and
// a second key for one file (which its lock then refuses) is safe where one key for two files
// is not. One allocation, as an open makes several of these.
std::string FullPathOf(const std::string& path) {
  std::string full;
  if (path.empty() || path[0] != '/') {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) return "";
    const absl::string_view directory(cwd);
    full.reserve(directory.size() + 1 + path.size());
    AppendComponents(directory, full);
  } else {
    full.reserve(path.size());
  }
  AppendComponents(path, full);
  if (full.empty()) full.push_back('/');  // The root.
  return full;
}

absl::string_view FileNameOf(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace sqloop::db::internal
