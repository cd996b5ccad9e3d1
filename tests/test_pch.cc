// The translation unit tests/CMakeLists.txt compiles the tests' precompiled header with. It
// holds nothing: CMake adds the header to it.
