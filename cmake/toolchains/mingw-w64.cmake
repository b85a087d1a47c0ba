# Cross-compiling the watch module and its tests for Windows with mingw-w64 (Debian 12:
# g++-mingw-w64-x86-64-posix), run under wine. Used by scripts/test-windows.sh:
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/mingw-w64.cmake \
#         -DRAFTSYNC_WATCH_ONLY=ON
# The posix thread model is required (std::thread, std::mutex). Executables are linked
# statically so wine needs no mingw DLLs. Only Catch2's header is exposed to the cross
# compiler, through a folder of symlinks (never /usr/include itself, whose Linux headers would
# shadow mingw's): see mingw-w64/Catch2Config.cmake.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(RAFTSYNC_MINGW_TRIPLET x86_64-w64-mingw32)

set(CMAKE_C_COMPILER ${RAFTSYNC_MINGW_TRIPLET}-gcc-posix)
set(CMAKE_CXX_COMPILER ${RAFTSYNC_MINGW_TRIPLET}-g++-posix)
set(CMAKE_RC_COMPILER ${RAFTSYNC_MINGW_TRIPLET}-windres)

set(CMAKE_FIND_ROOT_PATH /usr/${RAFTSYNC_MINGW_TRIPLET} ${CMAKE_CURRENT_LIST_DIR}/mingw-w64)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Header-only packages the Windows leg needs, as config files that point at symlink folders.
set(Catch2_DIR ${CMAKE_CURRENT_LIST_DIR}/mingw-w64 CACHE PATH "Catch2 for the mingw-w64 build")

set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
# ctest runs the test executables through wine (WINEDEBUG=-all keeps its log quiet).
if(NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(RAFTSYNC_WINE wine)
  if(RAFTSYNC_WINE)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${RAFTSYNC_WINE})
  endif()
endif()
