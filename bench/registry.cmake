# Tenant registry benchmarks: creation bursts, reopening a scaled-to-zero tenant, memory per
# tenant, requests over 10,000 tenants with a Zipf distribution, and what a memory budget costs.
add_executable(sqloop_bench_registry ${CMAKE_CURRENT_LIST_DIR}/registry_bench.cc)
target_link_libraries(sqloop_bench_registry PRIVATE sqloop::db sqloop::heap_counter
                      benchmark::benchmark sqloop_warnings)
