# The benchmark report script (bench/report.py): compare mode on two fixture runs, the log-scale
# choice, no host name or absolute path in the report or raw.json, and --quick writing under
# the build directory only. Plain Python (unittest); matplotlib is used if installed.
find_package(Python3 COMPONENTS Interpreter REQUIRED)
add_test(NAME BenchReport.ScriptTests
         COMMAND Python3::Interpreter ${CMAKE_CURRENT_LIST_DIR}/bench_report_test.py)
# docs/overhead.md quotes no measured figure of its own (they live in docs/benchmarks.md, the
# generated run of record), except in blocks marked as outside figures.
add_test(NAME BenchReport.OverheadDocQuotesNoFiguresOfItsOwn
         COMMAND Python3::Interpreter ${CMAKE_CURRENT_LIST_DIR}/doc_numbers_test.py)
