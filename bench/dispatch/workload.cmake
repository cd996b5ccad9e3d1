# The dispatch workload library, shared by the benchmark (bench/dispatch.cmake) and its test
# (tests/dispatch.cmake). Both include this file; the guard defines the target once, whichever
# comes first, so the test builds even in presets where the bench directory is not added
# (the sanitizer preset sets SQLOOP_BUILD_BENCH=OFF). Coroutines live here, under bench/.
if(NOT TARGET sqloop_dispatch_workload)
  set(_dispatch_dir ${PROJECT_SOURCE_DIR}/bench/dispatch)
  add_library(sqloop_dispatch_workload STATIC
    ${_dispatch_dir}/coro_runtime.cc
    ${_dispatch_dir}/coro_server.cc
    ${_dispatch_dir}/fake_io.cc
    ${_dispatch_dir}/floor.cc
    ${_dispatch_dir}/manual_server.cc
    ${_dispatch_dir}/workload.cc)
  target_include_directories(sqloop_dispatch_workload PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(sqloop_dispatch_workload PUBLIC sqloop::alloc PRIVATE sqloop_warnings)
  unset(_dispatch_dir)
endif()
