add_library(sqloop_test_backends STATIC test_backends.cc)
target_link_libraries(sqloop_test_backends PUBLIC sqloop::io PRIVATE sqloop_warnings)
target_sources(sqloop_test_backends PRIVATE sim_test_backend.cc)

sqloop_test(loop_test SOURCES loop_test.cc
            LIBS sqloop::loop sqloop_test_backends sqloop::heap_counter Threads::Threads)
sqloop_test(loop_reentry_test SOURCES loop_reentry_test.cc
            LIBS sqloop::loop sqloop_test_backends Threads::Threads)
sqloop_test(backend_test SOURCES backend_test.cc LIBS sqloop::io absl::cleanup)

sqloop_test(echo_test SOURCES echo_test.cc
            LIBS sqloop_example_echo sqloop_test_backends Threads::Threads)
