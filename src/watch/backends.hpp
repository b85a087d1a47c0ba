// raftsync — constructors of the concrete backends and helpers they share (private).
#pragma once

#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include "raftsync/watch/watcher.hpp"

namespace raftsync::watch::detail {

std::unique_ptr<watcher> make_polling_watcher(const watch_options& options);
#if defined(__linux__)
std::unique_ptr<watcher> make_inotify_watcher(const watch_options& options);
#endif
#if defined(RAFTSYNC_WATCH_HAVE_LIBUV)
std::unique_ptr<watcher> make_libuv_watcher(const watch_options& options);
#endif
#if defined(_WIN32)
std::unique_ptr<watcher> make_rdcw_watcher(const watch_options& options);
#endif
#if defined(__APPLE__)
std::unique_ptr<watcher> make_fsevents_watcher(const watch_options& options);
#endif

// Calls `sink` with `events` in batches of at most `batch_max`; no call when `events` is empty.
void deliver(const event_sink& sink, std::vector<fs_event>&& events, std::size_t batch_max);

// The absolute form of `root` after checking that it is an existing directory (following a
// symlink: the user chose the root). Errors: errc::not_found, or not_a_directory.
std::error_code resolve_root(const std::filesystem::path& root, std::filesystem::path& absolute);

}  // namespace raftsync::watch::detail
