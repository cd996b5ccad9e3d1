# sqloop_bench_dispatch: manual state machines against C++20 coroutines on a fake echo server
# (a port of the reference Rust study; see bench/dispatch/workload.h).
include(${CMAKE_CURRENT_LIST_DIR}/dispatch/workload.cmake)

# Timed without sqloop::heap_counter: alloc_count.cc counts allocations in an untimed pass.
add_executable(sqloop_bench_dispatch ${CMAKE_CURRENT_LIST_DIR}/dispatch/dispatch_bench.cc
                                     ${CMAKE_CURRENT_LIST_DIR}/dispatch/alloc_count.cc)
target_link_libraries(sqloop_bench_dispatch PRIVATE
  sqloop_dispatch_workload benchmark::benchmark sqloop_warnings)
