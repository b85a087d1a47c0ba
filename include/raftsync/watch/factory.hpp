// raftsync — choosing a watcher backend.
//
// make_watcher(backend::automatic, ...) is what nodes use: the best native backend of the
// platform (inotify on Linux, ReadDirectoryChangesW on Windows, FSEvents on macOS, libuv
// elsewhere), wrapped so that it falls back to polling when the native backend cannot start or
// fails while running (for example inotify watches exhausted). A fallback is announced in the
// batch as a non-fatal error event (the native error, detail "fell back to polling: ...")
// followed by rescan_required(everything), because changes may have been missed during the switch.
// A fatal error while the root no longer exists is passed through (polling could not help).
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "raftsync/result.hpp"
#include "raftsync/watch/watcher.hpp"

namespace raftsync::watch {

enum class backend {
  automatic,  // best native backend, falling back to polling
  inotify,    // Linux
  libuv,      // uv_fs_event (Linux and macOS builds; not in the Windows leg)
  rdcw,       // ReadDirectoryChangesW (Windows)
  fsevents,   // macOS
  polling,    // everywhere
};

std::string_view to_string(backend value) noexcept;

// The concrete backends compiled into this build, best first (never includes automatic).
std::vector<backend> available_backends();

// A watcher for `which`. errc::unavailable if that backend is not compiled into this build,
// errc::invalid_config if `options` does not validate. Nothing is started.
result<std::unique_ptr<watcher>> make_watcher(backend which, const watch_options& options = {});

}  // namespace raftsync::watch
