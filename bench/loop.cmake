add_executable(sqloop_bench_loop ${CMAKE_CURRENT_LIST_DIR}/loop/loop_bench.cc)
target_link_libraries(sqloop_bench_loop PRIVATE sqloop::loop sqloop::heap_counter
                      benchmark::benchmark PkgConfig::URING sqloop_warnings)
