# sqloop_bench_load: latency against offered load (open loop) for sqloop and the plain-SQLite
# baselines. See bench/sqlite/load.h.
add_executable(sqloop_bench_load
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/load_bench.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/load.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/load_sqloop.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/load_threads.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/executor.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/plain_conn.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/sqlite/env.cc)
target_include_directories(sqloop_bench_load PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(sqloop_bench_load PRIVATE sqloop::db sqloop::loop
                      SQLite::SQLite3 benchmark::benchmark Threads::Threads sqloop_warnings)
