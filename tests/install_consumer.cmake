# Run by ctest (tests/install.cmake): installs the already built tree into a scratch prefix, then
# builds and runs a consumer program (tests/consumer/) against that prefix alone, once through
# find_package(sqloop) + sqloop::sqloop and once through pkg-config. The program runs SQL, so a
# package that leaves a layer (or a dependency) off the link line fails to link here.
# Variables: BINARY_DIR, SOURCE_DIR, WORK_DIR, CXX_FLAGS, GENERATOR, VERSION.
file(REMOVE_RECURSE ${WORK_DIR})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${prefix})

# What the prefix must and must not hold.
foreach(file include/sqloop/loop/loop.h include/sqloop/db/database.h include/sqloop/version.h
             share/doc/sqloop/LICENSE)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "the install lacks ${file}")
  endif()
endforeach()
file(GLOB_RECURSE internal_headers RELATIVE ${prefix}/include ${prefix}/include/*)
list(FILTER internal_headers INCLUDE REGEX "(^|/)internal/")
if(internal_headers)
  message(FATAL_ERROR "internal headers are installed: ${internal_headers}")
endif()
# The installed CMake files must name only the prefix and system paths: a path into the source
# or build tree would work here and nowhere else.
file(GLOB_RECURSE config_files ${prefix}/*.cmake)
foreach(file ${config_files})
  file(READ ${file} text)
  foreach(tree ${SOURCE_DIR} ${BINARY_DIR})
    string(FIND "${text}" "${tree}/" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${file} refers to ${tree}")
    endif()
  endforeach()
endforeach()

# The consumer is copied out of the source tree so that nothing can resolve an include next to
# it: every sqloop header it sees comes from the prefix.
file(COPY ${SOURCE_DIR}/tests/consumer/ DESTINATION ${WORK_DIR}/src)
# README.md's program, exactly as written there (its first ```cpp block), built beside it.
file(READ ${SOURCE_DIR}/README.md readme)
string(FIND "${readme}" "```cpp\n" block_start)
if(block_start EQUAL -1)
  message(FATAL_ERROR "README.md has no ```cpp block")
endif()
math(EXPR block_start "${block_start} + 7")
string(SUBSTRING "${readme}" ${block_start} -1 readme)
string(FIND "${readme}" "```" block_end)
string(SUBSTRING "${readme}" 0 ${block_end} readme_program)
file(WRITE ${WORK_DIR}/src/readme.cc "${readme_program}")
file(MAKE_DIRECTORY ${WORK_DIR}/data_cmake ${WORK_DIR}/data_pc)

run(${CMAKE_COMMAND} -S ${WORK_DIR}/src -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
    -DSQLOOP_EXPECTED_VERSION=${VERSION})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer ${WORK_DIR}/data_cmake)
# The README's program, in a scratch directory: it prints the two rows it wrote.
execute_process(COMMAND ${WORK_DIR}/build/readme WORKING_DIRECTORY ${WORK_DIR}/data_cmake
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out STREQUAL "1 hello\n2 world\n")
  message(FATAL_ERROR "README.md's program failed (${rc}): '${out}'\n${err}")
endif()
message(STATUS "README.md's program printed: ${out}")

# pkg-config: the same program compiled from the command line, the libraries after the source
# (they are static archives).
set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig:${prefix}/lib/x86_64-linux-gnu/pkgconfig)
execute_process(COMMAND pkg-config --cflags --libs sqloop OUTPUT_VARIABLE flags
                RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config does not know sqloop")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
separate_arguments(extra UNIX_COMMAND "${CXX_FLAGS}")
run(c++ ${extra} -I${WORK_DIR}/src/host "-DSQLOOP_EXPECTED_VERSION_STRING=\"${VERSION}\""
    ${WORK_DIR}/src/main.cc -o ${WORK_DIR}/consumer_pc ${flags})
run(${WORK_DIR}/consumer_pc ${WORK_DIR}/data_pc)
