# The dispatch workload's exact I/O call counts and echoes, for every variant. The workload
# library is defined by bench/dispatch/workload.cmake (guarded, so the bench directory may or
# may not have defined it already).
include(${PROJECT_SOURCE_DIR}/bench/dispatch/workload.cmake)

sqloop_test(dispatch_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/dispatch_test.cc
  LIBS sqloop_dispatch_workload sqloop::heap_counter)
