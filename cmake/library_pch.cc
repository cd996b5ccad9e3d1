// The translation unit CMakeLists.txt compiles the library's precompiled header with. It holds
// nothing: CMake adds the header to it.
