# The SQL-over-HTTP host: a library with the server and its pieces, and the program.
# http_parser (libhttp-parser-dev) ships no CMake or pkg-config file: find it by header and name.
find_package(simdjson REQUIRED)
# libcrypto (libssl-dev) for the bearer tokens: HMAC-SHA256 and a constant-time compare.
find_package(OpenSSL REQUIRED)
find_path(SQLOOP_HTTP_PARSER_INCLUDE_DIR http_parser.h REQUIRED)
find_library(SQLOOP_HTTP_PARSER_LIBRARY http_parser REQUIRED)

add_library(sqloop_example_http STATIC
  ${CMAKE_CURRENT_LIST_DIR}/auth.cc
  ${CMAKE_CURRENT_LIST_DIR}/executor.cc
  ${CMAKE_CURRENT_LIST_DIR}/handler.cc
  ${CMAKE_CURRENT_LIST_DIR}/json_writer.cc
  ${CMAKE_CURRENT_LIST_DIR}/registry_executor.cc
  ${CMAKE_CURRENT_LIST_DIR}/request_parser.cc
  ${CMAKE_CURRENT_LIST_DIR}/server.cc
  ${CMAKE_CURRENT_LIST_DIR}/server_answers.cc
  ${CMAKE_CURRENT_LIST_DIR}/shutdown_signal.cc)
target_include_directories(sqloop_example_http SYSTEM PUBLIC ${SQLOOP_HTTP_PARSER_INCLUDE_DIR})
target_link_libraries(sqloop_example_http
  PUBLIC sqloop::loop sqloop::db simdjson::simdjson ${SQLOOP_HTTP_PARSER_LIBRARY} SQLite::SQLite3
         OpenSSL::Crypto absl::flat_hash_map absl::status absl::statusor absl::strings absl::time
  PRIVATE sqloop_warnings)

add_executable(sqloop_http ${CMAKE_CURRENT_LIST_DIR}/sqloop_http.cc)
target_link_libraries(sqloop_http PRIVATE sqloop_example_http absl::flags absl::flags_parse
                      sqloop_warnings)

# Starting sqloop_http and its clients as child processes: for the end-to-end tests and the load
# benchmark, not for the server.
add_library(sqloop_example_http_process STATIC ${CMAKE_CURRENT_LIST_DIR}/child_process.cc)
target_link_libraries(sqloop_example_http_process PUBLIC absl::strings absl::function_ref
                      PRIVATE sqloop_warnings)
target_include_directories(sqloop_example_http_process PUBLIC ${PROJECT_SOURCE_DIR})
