# Host threads and Shards: the bounded in-flight queue and the ShardCall handle
# (db/shard_call.h). tests/run also builds and runs this one binary under ThreadSanitizer.
sqloop_test(shard_call_test SOURCES shard_call_test.cc
            LIBS sqloop::db sqloop::io Threads::Threads)
# The example of docs/embedding.md, "From host threads", run as written: four writer threads
# and a reader thread with its own loop; each tenant must hold exactly the 100 rows written.
if(TARGET host_threads)
  add_test(NAME Examples.HostThreadsRunsAndCountsEveryRow COMMAND host_threads)
  set_tests_properties(Examples.HostThreadsRunsAndCountsEveryRow PROPERTIES TIMEOUT 120
    PASS_REGULAR_EXPRESSION "acme: 100 rows\nglobex: 100 rows\nhost_threads: ok")
endif()
