# Tests of the SQLite layer (db/): the VFS, the Database, and the durability contract. Included
# by tests/CMakeLists.txt. Paths are relative to this file so it can be included from anywhere.
set(_db_tests ${CMAKE_CURRENT_LIST_DIR})
add_library(sqloop_db_test_support STATIC ${_db_tests}/db_test_support.cc)
target_link_libraries(sqloop_db_test_support
  PUBLIC sqloop::db sqloop::loop sqloop_test_backends GTest::gtest
  PRIVATE sqloop_warnings)

sqloop_test(db_vfs_test SOURCES ${_db_tests}/db_vfs_test.cc
            LIBS sqloop_db_test_support absl::cleanup)
sqloop_test(db_vfs_hostile_test SOURCES ${_db_tests}/db_vfs_hostile_test.cc
            LIBS sqloop_db_test_support)
# A host's own connection learns when its commits are durable (Vfs::WhenDurable); counts heap
# allocations, so it links the counter.
sqloop_test(db_vfs_durable_wait_test SOURCES ${_db_tests}/db_vfs_durable_wait_test.cc
            LIBS sqloop_db_test_support sqloop::heap_counter)
# Adversarial cases of Vfs::WhenDurable: closes, bad connections, re-arming, limits, poison.
sqloop_test(db_vfs_durable_wait_adversarial_test
            SOURCES ${_db_tests}/db_vfs_durable_wait_adversarial_test.cc
            LIBS sqloop_db_test_support)
sqloop_test(db_database_test SOURCES ${_db_tests}/db_database_test.cc LIBS sqloop_db_test_support)
sqloop_test(db_lock_table_test SOURCES ${_db_tests}/db_lock_table_test.cc
            LIBS sqloop_db_test_support)
sqloop_test(db_fetched_pages_test SOURCES ${_db_tests}/db_fetched_pages_test.cc
            LIBS sqloop_db_test_support)

# The SQLite crash workload joins the simulator's workloads (sqloop_sim --workload=db_crash).
target_sources(sqloop_sim_workloads PRIVATE ${_db_tests}/workloads/db_crash.cc
               ${_db_tests}/workloads/db_crash_recovery.cc
               ${_db_tests}/workloads/db_crash_support.cc)
target_link_libraries(sqloop_sim_workloads PUBLIC sqloop::db)
sqloop_test(db_crash_test SWEEP SOURCES ${_db_tests}/db_crash_test.cc LIBS sqloop_sim_workloads)
target_compile_definitions(db_crash_test PRIVATE SQLOOP_SIM_BINARY="$<TARGET_FILE:sqloop_sim>")
add_dependencies(db_crash_test sqloop_sim)
sqloop_test(db_memory_test SOURCES ${_db_tests}/db_memory_test.cc
            LIBS sqloop_db_test_support sqloop::heap_counter)
sqloop_test(db_isolation_test SOURCES ${_db_tests}/db_isolation_test.cc
            LIBS sqloop_db_test_support)
sqloop_test(db_cold_read_test SOURCES ${_db_tests}/db_cold_read_test.cc
            LIBS sqloop_db_test_support)
sqloop_test(db_open_check_test SOURCES ${_db_tests}/db_open_check_test.cc
            LIBS sqloop_db_test_support)
sqloop_test(db_sleep_test SOURCES ${_db_tests}/db_sleep_test.cc LIBS sqloop_db_test_support)
sqloop_test(db_reentry_test SOURCES ${_db_tests}/db_reentry_test.cc LIBS sqloop_db_test_support)

# Snapshot reads: every read checked against durability and acknowledgements (sqloop_sim
# --workload=db_reads).
target_sources(sqloop_sim_workloads PRIVATE ${_db_tests}/workloads/db_reads.cc)
sqloop_test(db_reads_sim_test SWEEP SOURCES ${_db_tests}/db_reads_sim_test.cc LIBS sqloop_sim_workloads)
target_compile_definitions(db_reads_sim_test PRIVATE SQLOOP_SIM_BINARY="$<TARGET_FILE:sqloop_sim>")
add_dependencies(db_reads_sim_test sqloop_sim)
# The front door (db/runtime.h) and atomic batches.
sqloop_test(db_runtime_test SOURCES ${_db_tests}/db_runtime_test.cc LIBS sqloop_db_test_support)
