# Allocation benchmarks: arena against malloc and std::pmr::monotonic_buffer_resource.
add_executable(sqloop_bench_alloc ${CMAKE_CURRENT_SOURCE_DIR}/alloc_bench.cc)
target_link_libraries(sqloop_bench_alloc PRIVATE sqloop::alloc sqloop::heap_counter
                      benchmark::benchmark sqloop_warnings)
