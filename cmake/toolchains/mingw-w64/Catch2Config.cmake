# Catch2 v2 (header-only) for the mingw-w64 cross build: the Debian package's header, exposed
# through a folder of symlinks that contains nothing but catch2/ (and boost/, for modules that
# may want header-only Boost), so /usr/include's Linux headers never reach the cross compiler.
set(_raftsync_shim_include ${CMAKE_BINARY_DIR}/mingw-w64-include)
file(MAKE_DIRECTORY ${_raftsync_shim_include})
foreach(_raftsync_dir catch2 boost)
  if(EXISTS /usr/include/${_raftsync_dir} AND NOT EXISTS ${_raftsync_shim_include}/${_raftsync_dir})
    file(CREATE_LINK /usr/include/${_raftsync_dir} ${_raftsync_shim_include}/${_raftsync_dir} SYMBOLIC)
  endif()
endforeach()
if(NOT EXISTS ${_raftsync_shim_include}/catch2/catch.hpp)
  set(Catch2_FOUND FALSE)
  set(Catch2_NOT_FOUND_MESSAGE "/usr/include/catch2/catch.hpp not found (apt-get install catch2)")
  return()
endif()
if(NOT TARGET Catch2::Catch2)
  add_library(Catch2::Catch2 INTERFACE IMPORTED)
  set_target_properties(Catch2::Catch2 PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${_raftsync_shim_include})
endif()
