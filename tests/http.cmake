# Tests of the SQL-over-HTTP host (examples/http/), when the examples are built
# (SQLOOP_BUILD_EXAMPLES, on by default).
if(TARGET sqloop_example_http)
  sqloop_test(http_json_writer_test SOURCES http_json_writer_test.cc LIBS sqloop_example_http)
  sqloop_test(http_handler_test SOURCES http_handler_test.cc LIBS sqloop_example_http)
  sqloop_test(http_registry_executor_test SOURCES http_registry_executor_test.cc
              LIBS sqloop_example_http sqloop_test_backends)
  # The server in this process with an executor that holds requests (per-tenant limits, auth
  # before the executor), over loopback sockets.
  sqloop_test(http_server_test SOURCES http_server_test.cc
              LIBS sqloop_example_http sqloop_test_backends)
  # End to end: the real program, driven by curl (Debian) and raw sockets over loopback.
  sqloop_test(http_e2e_test SOURCES http_e2e_test.cc LIBS sqloop_example_http sqloop_example_http_process Threads::Threads)
  target_compile_definitions(http_e2e_test PRIVATE
                             SQLOOP_HTTP_BINARY="$<TARGET_FILE:sqloop_http>")
  add_dependencies(http_e2e_test sqloop_http)
  # Adversarial end to end: the real program attacked as a hostile tenant would (runaway
  # queries, hostile pragmas, connection state, idle sockets, other tenants' tokens), each
  # ending with SIGTERM and a clean exit within a bound.
  sqloop_test(http_adversarial_test SOURCES http_adversarial_test.cc
              LIBS sqloop_example_http sqloop_example_http_process)
  target_compile_definitions(http_adversarial_test PRIVATE
                             SQLOOP_HTTP_BINARY="$<TARGET_FILE:sqloop_http>")
  add_dependencies(http_adversarial_test sqloop_http)
  # Hostile clients against the in-process server: limits, broken framing and pipelines,
  # half-closes and resets, a flooding connection, Stop() with requests half-sent.
  sqloop_test(http_hostile_client_test SOURCES http_hostile_client_test.cc
              LIBS sqloop_example_http sqloop_test_backends)
  # The host on the simulator: simulated clients, stops and crashes, seed by seed.
  # The workload joins the simulator's (sqloop_sim --workload=http).
  target_sources(sqloop_sim_workloads PRIVATE ${CMAKE_CURRENT_LIST_DIR}/workloads/http.cc
                 ${CMAKE_CURRENT_LIST_DIR}/workloads/http_client.cc)
  target_link_libraries(sqloop_sim_workloads PUBLIC sqloop_example_http)
  sqloop_test(http_sim_test SWEEP SOURCES ${CMAKE_CURRENT_LIST_DIR}/http_sim_test.cc
              LIBS sqloop_sim_workloads)
  target_compile_definitions(http_sim_test PRIVATE SQLOOP_SIM_BINARY="$<TARGET_FILE:sqloop_sim>")
  add_dependencies(http_sim_test sqloop_sim)
endif()
