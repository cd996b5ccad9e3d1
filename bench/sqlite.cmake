# sqloop_bench_sqlite: point reads and durable commits through sqloop
# against plain synchronous SQLite on its default VFS. See bench/sqlite/sqlite_bench.cc.
add_executable(sqloop_bench_sqlite
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/sqlite_bench.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/point_read.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/cold_read.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/durable_write.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/mixed.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/transfer.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/pool.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/futures.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/executor.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/plain_conn.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/env.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/counting_vfs.cc)
target_include_directories(sqloop_bench_sqlite PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(sqloop_bench_sqlite PRIVATE sqloop::db sqloop::loop sqloop::heap_counter
                      SQLite::SQLite3 benchmark::benchmark Threads::Threads sqloop_warnings)
