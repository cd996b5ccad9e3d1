# The deterministic simulator's tests and tools (docs/testing.md). Included by
# tests/CMakeLists.txt after loop.cmake.

# Simulation workloads. An OBJECT library so that every workload's static registration
# (SQLOOP_REGISTER_WORKLOAD) is linked into each user; a layer adds its own workload with
#   target_sources(sqloop_sim_workloads PRIVATE <its workload>.cc)
add_library(sqloop_sim_workloads OBJECT sim_workload.cc workloads/file_append.cc)
target_link_libraries(sqloop_sim_workloads PUBLIC sqloop::loop sqloop::io
                      PRIVATE sqloop_warnings)
# The replay line a failed internal check prints (ReplayOnFatal) names this build's sqloop_sim.
target_compile_definitions(sqloop_sim_workloads PRIVATE
                           SQLOOP_SIM_BINARY="$<TARGET_FILE:sqloop_sim>")

# sqloop_sim --seed=N | --seeds=A-B: run and replay seeds.
add_executable(sqloop_sim sqloop_sim.cc)
target_link_libraries(sqloop_sim PRIVATE sqloop_sim_workloads sqloop_warnings)

sqloop_test(sim_prng_test SOURCES sim_prng_test.cc LIBS sqloop::io)
sqloop_test(sim_disk_test SOURCES sim_disk_test.cc LIBS sqloop::io)
sqloop_test(sim_backend_test SOURCES sim_backend_test.cc LIBS sqloop::io)
sqloop_test(sim_workload_test SWEEP SOURCES sim_workload_test.cc LIBS sqloop_sim_workloads)
# Failure messages name the replay command with the real path of sqloop_sim.
target_compile_definitions(sim_workload_test PRIVATE
                           SQLOOP_SIM_BINARY="$<TARGET_FILE:sqloop_sim>")
add_dependencies(sim_workload_test sqloop_sim)

