# Finds dynabert's dependencies. Used by the build tree and by the installed dynabertConfig.cmake.
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.4 NO_MODULE)
find_dependency(xsimd)
find_dependency(TBB)
find_dependency(nlohmann_json 3.10)
# Debian's xsimd 8.1 exports a target that links a library called "xtl" which the package does not
# ship (xtl is only needed by xtensor). Provide an empty stand-in so consumers link cleanly.
if(TARGET xsimd AND NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED)
endif()
