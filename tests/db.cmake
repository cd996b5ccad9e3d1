# Tests of the SQLite layer (db/): the VFS, the Database, and the durability contract. Included
# by tests/CMakeLists.txt. Paths are relative to this file so it can be included from anywhere.
set(_db_tests ${CMAKE_CURRENT_LIST_DIR})
add_library(sqloop_db_test_support STATIC ${_db_tests}/db_test_support.cc)
target_link_libraries(sqloop_db_test_support
  PUBLIC sqloop::db sqloop::loop sqloop_test_backends GTest::gtest
  PRIVATE sqloop_warnings)

sqloop_test(db_vfs_test SOURCES ${_db_tests}/db_vfs_test.cc LIBS sqloop_db_test_support)
sqloop_test(db_database_test SOURCES ${_db_tests}/db_database_test.cc LIBS sqloop_db_test_support)
