add_library(sqloop_example_echo STATIC ${CMAKE_CURRENT_LIST_DIR}/echo.cc)
target_link_libraries(sqloop_example_echo PUBLIC sqloop::loop PRIVATE sqloop_warnings)
add_executable(echo_server ${CMAKE_CURRENT_LIST_DIR}/echo_main.cc)
target_link_libraries(echo_server PRIVATE sqloop_example_echo sqloop_warnings)
