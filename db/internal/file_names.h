// db/internal/file_names.h
// -----------------------------------------------------------------------------
//
// The path functions the VFS and the Database share: a database's full path (the key of its
// files), the directory it lives in (whose fsync makes its files' names durable), and the name
// a message may show.
//
// Internal: the VFS, the Database and the registry are the only users.
//
// Example:
//
//   DirectoryOf("/data/t.db")  // "/data"
//   FileNameOf("/data/t.db")   // "t.db": what an error a tenant may see names
#ifndef SQLOOP_DB_INTERNAL_FILE_NAMES_H_
#define SQLOOP_DB_INTERNAL_FILE_NAMES_H_

#include <string>

#include "absl/strings/string_view.h"

namespace sqloop::db::internal {

// The directory a database file at `path` lives in ("." for a bare name, "/" for a file in the
// root).
[[nodiscard]] std::string DirectoryOf(const std::string& path);

// `path` made absolute against the working directory, with no empty or "." component, as the
// VFS's xFullPathname names a database (the key of its files); empty if the working directory
// cannot be read. ".." is kept (file_names.cc says why).
[[nodiscard]] std::string FullPathOf(const std::string& path);

// The last component of `path`. Messages a request's caller may see name files by it, so no
// error tells a tenant where the host keeps its files.
[[nodiscard]] absl::string_view FileNameOf(absl::string_view path);

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_FILE_NAMES_H_
