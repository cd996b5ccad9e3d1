# Tests of the SQL-over-HTTP host (examples/http/, issue 8).
if(TARGET sqloop_example_http)
  sqloop_test(http_json_writer_test SOURCES http_json_writer_test.cc LIBS sqloop_example_http)
  sqloop_test(http_handler_test SOURCES http_handler_test.cc LIBS sqloop_example_http)
  sqloop_test(http_executor_test SOURCES http_executor_test.cc
              LIBS sqloop_example_http sqloop_test_backends)
  sqloop_test(http_registry_executor_test SOURCES http_registry_executor_test.cc
              LIBS sqloop_example_http sqloop_test_backends)
  # End to end: the real program, driven by curl (Debian) and raw sockets over loopback.
  sqloop_test(http_e2e_test SOURCES http_e2e_test.cc LIBS sqloop_example_http sqloop_example_http_process Threads::Threads)
  target_compile_definitions(http_e2e_test PRIVATE
                             SQLOOP_HTTP_BINARY="$<TARGET_FILE:sqloop_http>")
  add_dependencies(http_e2e_test sqloop_http)
endif()
