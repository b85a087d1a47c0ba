// raftsync — the always-on invariant check.
//
// RAFTSYNC_ASSERT guards invariants of our own code, never conditions a user, a peer or the disk
// can cause (those are std::error_code values; see error.hpp). It stays on in release builds:
// continuing past a broken Raft invariant could commit or apply the wrong data, which is worse
// than stopping. On failure it prints file:line, the expression and a message, then aborts.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace raftsync::detail {
[[noreturn]] inline void assertion_failed(const char* expression, const char* file, int line,
                                          const char* message) noexcept {
  std::fprintf(stderr, "raftsync: invariant violated at %s:%d: %s%s%s\n", file, line, expression,
               message[0] != '\0' ? " — " : "", message);
  std::fflush(stderr);
  std::abort();
}
}  // namespace raftsync::detail

// RAFTSYNC_ASSERT(condition) or RAFTSYNC_ASSERT(condition, "why it must hold").
#define RAFTSYNC_ASSERT(...) RAFTSYNC_ASSERT_IMPL(__VA_ARGS__, "", "")
#define RAFTSYNC_ASSERT_IMPL(condition, message, ...)                                        \
  do {                                                                                       \
    if (!(condition)) [[unlikely]]                                                           \
      ::raftsync::detail::assertion_failed(#condition, __FILE__, __LINE__, "" message);      \
  } while (false)
