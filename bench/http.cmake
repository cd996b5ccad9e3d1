# The HTTP host under wrk. Needs the example (SQLOOP_BUILD_EXAMPLES, on by default) and wrk at
# run time.
if(TARGET sqloop_http)
  add_executable(sqloop_bench_http ${CMAKE_CURRENT_LIST_DIR}/http/http_bench.cc)
  target_link_libraries(sqloop_bench_http PRIVATE sqloop_example_http_process benchmark::benchmark
                        absl::strings sqloop_warnings)
  target_compile_definitions(sqloop_bench_http PRIVATE
                             SQLOOP_HTTP_BINARY="$<TARGET_FILE:sqloop_http>")
  add_dependencies(sqloop_bench_http sqloop_http)
endif()
