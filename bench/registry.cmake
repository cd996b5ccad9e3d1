# Tenant registry benchmarks: creation bursts (and the longest tick of a 5,000-tenant one),
# reopening a scaled-to-zero tenant, memory per tenant, requests over 10,000 and 100,000
# tenants with a Zipf distribution, and what a memory budget costs.
add_executable(sqloop_bench_registry ${CMAKE_CURRENT_LIST_DIR}/registry_bench.cc
  ${CMAKE_CURRENT_LIST_DIR}/sqlite/env.cc)
target_include_directories(sqloop_bench_registry PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(sqloop_bench_registry PRIVATE sqloop::db sqloop::heap_counter
                      SQLite::SQLite3 benchmark::benchmark sqloop_warnings)
