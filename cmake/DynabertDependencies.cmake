# Finds dynabert's dependencies. Used by the build tree and by the installed dynabertConfig.cmake.
include(CMakeFindDependencyMacro)
find_dependency(xsimd)
find_dependency(TBB)
# utf8proc (Unicode categories, case mapping, NFD) for the WordPiece tokenizer; Debian ships a
# pkg-config file for it, not a CMake package.
find_package(PkgConfig REQUIRED)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET GLOBAL libutf8proc)
# Debian's xsimd 8.1 exports a target that links a library called "xtl" which the package does not
# ship (xtl is only needed by xtensor). Provide an empty stand-in so consumers link cleanly.
if(TARGET xsimd AND NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED)
endif()
