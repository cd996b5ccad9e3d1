# Tests of the tenant registry and the shards (db/registry.h, db/shards.h). Included
# by tests/CMakeLists.txt. Each binary is its own process, so the burst test's RLIMIT_NOFILE
# of 1024 touches nothing else.
sqloop_test(registry_test SOURCES registry_test.cc LIBS sqloop::db sqloop::io)
sqloop_test(registry_burst_test SOURCES registry_burst_test.cc LIBS sqloop::db sqloop::io)
sqloop_test(registry_shards_test SOURCES registry_shards_test.cc
            LIBS sqloop::db sqloop::io Threads::Threads)
# Scale to zero under the simulator's virtual clock.
sqloop_test(registry_sim_test SWEEP SOURCES registry_sim_test.cc LIBS sqloop::db sqloop::io)
sqloop_test(registry_sleep_test SOURCES registry_sleep_test.cc LIBS sqloop::db sqloop::io)
