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
# Callbacks of tenant requests calling back into the registry, on every failure path and every
# backend (the recording backend of the db tests injects the failures).
sqloop_test(registry_reentry_test SOURCES registry_reentry_test.cc
            LIBS sqloop_db_test_support sqloop::db sqloop::io)
# The same through the front doors: callbacks of Runtime::Submit and of Shards calling back into
# them (resubmit at once, Exec, Query, Shutdown, Stop, Stats), a full queue, a stop in flight.
sqloop_test(runtime_reentry_test SOURCES runtime_reentry_test.cc
            LIBS sqloop::db sqloop::io Threads::Threads)
