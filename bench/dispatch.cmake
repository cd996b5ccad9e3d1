# sqloop_bench_dispatch: manual state machines against C++20 coroutines on a fake echo server
# (a port of the reference Rust study; see bench/dispatch/workload.h).
include(${CMAKE_CURRENT_LIST_DIR}/dispatch/workload.cmake)

add_executable(sqloop_bench_dispatch ${CMAKE_CURRENT_LIST_DIR}/dispatch/dispatch_bench.cc)
target_link_libraries(sqloop_bench_dispatch PRIVATE
  sqloop_dispatch_workload sqloop::heap_counter benchmark::benchmark sqloop_warnings)
