#include "sqloop/db/internal/sql_policy.h"

#include <sqlite3.h>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sqloop::db::internal {
namespace {

// How a request may use an allowed pragma.
enum class Use : uint8_t {
  kRead,      // Its value may be read; setting it is refused.
  kArgument,  // Its argument says what to inspect or do (a table, a limit): always allowed.
  kSet,       // Its value may be read and set: it lives in the file, for the application.
};

struct Allowed {
  const char* name;
  Use use;
};

// clang-format off
constexpr Allowed kAllowedPragmas[] = {
    // This database's schema and integrity, inspected.
    {"table_info", Use::kArgument},      {"table_xinfo", Use::kArgument},
    {"table_list", Use::kArgument},      {"index_list", Use::kArgument},
    {"index_info", Use::kArgument},      {"index_xinfo", Use::kArgument},
    {"foreign_key_list", Use::kArgument}, {"foreign_key_check", Use::kArgument},
    {"integrity_check", Use::kArgument}, {"quick_check", Use::kArgument},
    {"collation_list", Use::kRead},      {"function_list", Use::kRead},
    {"module_list", Use::kRead},         {"pragma_list", Use::kRead},
    {"compile_options", Use::kRead},
    // This database's figures and settings, read only.
    {"page_count", Use::kRead},          {"page_size", Use::kRead},
    {"freelist_count", Use::kRead},      {"max_page_count", Use::kRead},
    {"schema_version", Use::kRead},      {"data_version", Use::kRead},
    {"encoding", Use::kRead},            {"auto_vacuum", Use::kRead},
    {"cache_size", Use::kRead},          {"journal_mode", Use::kRead},
    {"synchronous", Use::kRead},         {"locking_mode", Use::kRead},
    {"foreign_keys", Use::kRead},        {"recursive_triggers", Use::kRead},
    {"secure_delete", Use::kRead},       {"wal_autocheckpoint", Use::kRead},
    {"query_only", Use::kRead},          {"trusted_schema", Use::kRead},
    // Stored in the file for the application; SQLite gives them no meaning.
    {"user_version", Use::kSet},         {"application_id", Use::kSet},
    // Maintenance of this database's own content (a write: run it as a write request).
    {"optimize", Use::kArgument},        {"incremental_vacuum", Use::kArgument},
};
// clang-format on

const Allowed* FindAllowed(const char* name) {
  for (const Allowed& allowed : kAllowedPragmas) {
    if (absl::EqualsIgnoreCase(name, allowed.name)) return &allowed;
  }
  return nullptr;
}

bool IsOneOf(const char* name, std::initializer_list<const char*> names) {
  return absl::c_any_of(
      names, [name](const char* candidate) { return absl::EqualsIgnoreCase(name, candidate); });
}

// Why a pragma is refused: the well-known ones get their own reason, the rest the rule.
std::string PragmaRefusal(const char* name, bool setting) {
  if (setting && IsOneOf(name, {"foreign_keys", "case_sensitive_like", "recursive_triggers"})) {
    return absl::StrCat("PRAGMA ", name,
                        " would change one connection of the database's several; it is a "
                        "database option (DatabaseOptions::",
                        name, ") that holds on every connection. Set it there");
  }
  if (IsOneOf(name, {"wal_checkpoint"})) {
    return "PRAGMA wal_checkpoint is refused: sqloop checkpoints the WAL itself between group "
           "commits (DatabaseOptions::checkpoint_frames); a request cannot run one";
  }
  if (setting && IsOneOf(name, {"journal_mode", "synchronous", "locking_mode", "secure_delete",
                                "wal_autocheckpoint"})) {
    return absl::StrCat("PRAGMA ", name,
                        " changes durability or locking, which sqloop manages (WAL, "
                        "synchronous=FULL, epoch barriers); a request may read it but not set "
                        "it");
  }
  if (FindAllowed(name) != nullptr) {
    return absl::StrCat("PRAGMA ", name,
                        " may be read but not set by a request: setting it would change the "
                        "database's integrity, its size limits or one connection only");
  }
  return absl::StrCat("PRAGMA ", name,
                      " is not on the list of pragmas a request may use (docs/db.md): pragmas "
                      "that act on the whole process, weaken durability or integrity, change "
                      "one connection only, or reveal the host's files are refused");
}

bool AllowPragma(const char* name, const char* argument, std::string& why) {
  if (name == nullptr) return true;
  const Allowed* allowed = FindAllowed(name);
  const bool setting = argument != nullptr;
  if (allowed != nullptr && (!setting || allowed->use != Use::kRead)) return true;
  why = PragmaRefusal(name, setting);
  return false;
}

bool AllowFunction(const char* name, std::string& why) {
  if (name == nullptr) return true;
  if (absl::EqualsIgnoreCase(name, "load_extension")) {
    why = "extension loading is disabled in sqloop";
    return false;
  }
  if (IsOneOf(name, {"last_insert_rowid", "changes", "total_changes"})) {
    why = absl::StrCat(
        name,
        "() reports on the connection, which other requests share; use RETURNING, or the "
        "request's own results (Request::changes, Request::last_insert_rowid)");
    return false;
  }
  if (absl::EqualsIgnoreCase(name, "fts3_tokenizer")) {
    why = "fts3_tokenizer() hands out process pointers and is disabled";
    return false;
  }
  return true;
}

}  // namespace

bool AllowedForRequest(int action, const char* arg1, const char* arg2, const char* schema,
                       std::string& why) {
  const bool in_temp = schema != nullptr && absl::EqualsIgnoreCase(schema, "temp");
  switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      why = "ATTACH and DETACH are disabled: a request may only use its own database";
      return false;
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      why =
          "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) is managed by sqloop: each "
          "write request runs in its own savepoint inside a group commit";
      return false;
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:  // CREATE VIRTUAL TABLE temp.x: SQLite asks no other action.
      if (!in_temp) return true;
      [[fallthrough]];
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
      why =
          "TEMP tables, virtual tables, views, triggers and indexes belong to one connection: "
          "later requests run on others and would not see them, or would find another "
          "request's (one named like a table hides it). Use a regular table, or a CTE "
          "(WITH ...) inside the statement";
      return false;
    case SQLITE_PRAGMA:
      return AllowPragma(arg1, arg2, why);
    case SQLITE_FUNCTION:
      return AllowFunction(arg2, why);
    default:
      return true;
  }
}

}  // namespace sqloop::db::internal
