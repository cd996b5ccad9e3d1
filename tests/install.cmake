# The install tree must stay usable by find_package(sqloop) and by pkg-config.
add_test(NAME install_consumer
         COMMAND ${CMAKE_COMMAND} -DBINARY_DIR=${PROJECT_BINARY_DIR}
                 -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_consumer
                 -DCXX_FLAGS=${CMAKE_CXX_FLAGS} -DGENERATOR=${CMAKE_GENERATOR}
                 -DVERSION=${PROJECT_VERSION}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/install_consumer.cmake)
# It builds a project of its own: started first, it runs beside the short tests (as a SWEEP
# binary's tests do, tests/CMakeLists.txt).
set_tests_properties(install_consumer PROPERTIES TIMEOUT 600 COST ${SQLOOP_LONG_TEST_COST})
