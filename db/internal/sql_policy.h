// db/internal/sql_policy.h
// -----------------------------------------------------------------------------
//
// What SQL a request may run: the rules behind the Database's SQLite authorizer. A request is
// one tenant's SQL on a host that serves many, so everything that could reach past the
// tenant's own database, or past the request, is refused before the statement runs:
//
//   1. Other files: ATTACH and DETACH, extension loading.
//   2. The transaction: BEGIN, COMMIT, ROLLBACK and SAVEPOINT belong to the group commit.
//   3. Pragmas, by an allow-list: a pragma is usable only if it is listed here, so a pragma
//      SQLite adds tomorrow is refused until someone has read what it does. Refused are those
//      that act on the whole process (hard_heap_limit, soft_heap_limit, threads), weaken
//      durability or integrity (synchronous, ignore_check_constraints, writable_schema,
//      trusted_schema, schema_version, query_only, cell_size_check), change one connection of
//      several (cache_size, foreign_keys, case_sensitive_like: the last two are database
//      options instead), or reveal the host's files (database_list).
//   4. Connection state: a request runs on whichever connection is free, next to other
//      clients' requests, so what SQLite keeps per connection is not the request's own:
//      last_insert_rowid(), changes() and total_changes() (use RETURNING, or the results in
//      Request), and TEMP tables, views, triggers and indexes (use a table or a CTE).
//   5. Functions that hand out process pointers (fts3_tokenizer).
//
// Internal: the Database is the only caller.
#ifndef SQLOOP_DB_INTERNAL_SQL_POLICY_H_
#define SQLOOP_DB_INTERNAL_SQL_POLICY_H_

#include <string>

namespace sqloop::db::internal {

// Decides one authorizer call (`action`, its two arguments and the schema it applies to, as
// sqlite3_set_authorizer passes them). Returns true to allow; false to refuse, with `why` set
// to a message that says what is refused and what to do instead.
[[nodiscard]] bool AllowedForRequest(int action, const char* arg1, const char* arg2,
                                     const char* schema, std::string& why);

}  // namespace sqloop::db::internal

#endif  // SQLOOP_DB_INTERNAL_SQL_POLICY_H_
