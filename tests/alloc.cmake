# Tests for the alloc layer. The SQLite tests are separate binaries because
# SQLITE_CONFIG_MALLOC must be set before any other sqlite3 use in the process.
sqloop_test(alloc_arena_test SOURCES alloc_arena_test.cc
            LIBS sqloop::alloc sqloop::heap_counter GTest::gmock)
sqloop_test(alloc_pmr_test SOURCES alloc_pmr_test.cc
            LIBS sqloop::alloc sqloop::heap_counter GTest::gmock)
sqloop_test(alloc_profile_test SOURCES alloc_profile_test.cc
            LIBS sqloop::alloc sqloop::heap_counter GTest::gmock)
sqloop_test(alloc_sqlite_memory_test SOURCES alloc_sqlite_memory_test.cc
            LIBS sqloop::alloc SQLite::SQLite3 Threads::Threads GTest::gmock)
sqloop_test(alloc_sqlite_preinit_test SOURCES alloc_sqlite_preinit_test.cc
            LIBS sqloop::alloc SQLite::SQLite3 GTest::gmock)
sqloop_test(alloc_intrusive_list_test SOURCES alloc_intrusive_list_test.cc LIBS sqloop::alloc)
sqloop_test(alloc_hostile_test SOURCES alloc_hostile_test.cc
            LIBS sqloop::alloc SQLite::SQLite3 Threads::Threads GTest::gmock)
