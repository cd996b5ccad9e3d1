# Tests of the tenant registry and the shards (db/registry.h, db/shards.h). Included
# by tests/CMakeLists.txt. Each binary is its own process, so the burst test's RLIMIT_NOFILE
# of 1024 touches nothing else.
if(TARGET sqloop_db)
  set(_registry_tests ${CMAKE_CURRENT_LIST_DIR})
  sqloop_test(registry_test SOURCES ${_registry_tests}/registry_test.cc
              LIBS sqloop::db sqloop::io)
  sqloop_test(registry_burst_test SOURCES ${_registry_tests}/registry_burst_test.cc
              LIBS sqloop::db sqloop::io)
  sqloop_test(registry_shards_test SOURCES ${_registry_tests}/registry_shards_test.cc
              LIBS sqloop::db sqloop::io Threads::Threads)
  # Scale to zero under the simulator's virtual clock, once the simulator exists.
  if(EXISTS ${_registry_tests}/sim_test_backend.h)
    sqloop_test(registry_sim_test SOURCES ${_registry_tests}/registry_sim_test.cc
                LIBS sqloop::db sqloop::io)
  endif()
endif()
