// raftsync — the shared tree scanner (private to the watch module and its tests).
//
// Used by the polling backend (every interval), by the libuv backend (safety rescans), by inotify
// and libuv when a directory appears (watch it, then list it, so files created before the watch
// existed are still reported) and by every backend after an overflow.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <system_error>
#include <vector>

#include "raftsync/watch/fs_event.hpp"
#include "raftsync/watch/ignore_rules.hpp"

namespace raftsync::watch::detail {

// What the scanner remembers about one entry; enough to tell "changed" from "unchanged".
struct entry_info {
  fs_kind kind = fs_kind::unknown;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;  // status-change time; 0 where the platform has none (Windows)
  std::uint64_t file_id = 0;  // inode number; 0 where not available (Windows)
  std::uint32_t mode = 0;     // permission bits

  friend bool operator==(const entry_info&, const entry_info&) = default;
};

// Relative path (element-wise ordered, so a subtree is one contiguous range) → entry.
using snapshot = std::map<std::filesystem::path, entry_info>;

// True if `path` is `prefix` or lies under it (element-wise). An empty prefix covers everything.
bool is_under(const std::filesystem::path& path, const std::filesystem::path& prefix);

// The entry at root/relative without following a final symlink; nullopt if it does not exist
// (or cannot be examined).
std::optional<entry_info> stat_entry(const std::filesystem::path& root,
                                     const std::filesystem::path& relative);

// Called before a directory's entries are read, with the directory's relative path (empty for
// the root). Backends add their watch here, so every entry created afterwards is an event.
using directory_visitor = std::function<void(const std::filesystem::path& relative_dir)>;

// Adds root/relative_dir (itself, unless it is the root) and everything under it to `out`,
// skipping ignored paths, not following symlinks. Entries that vanish while being scanned are
// skipped. Returns an error only if root/relative_dir itself cannot be opened as a directory.
std::error_code scan_tree(const std::filesystem::path& root,
                          const std::filesystem::path& relative_dir, const ignore_rules& ignore,
                          snapshot& out, const directory_visitor& visit = {});

// Removes `relative` and everything under it from `tree`.
void erase_subtree(snapshot& tree, const std::filesystem::path& relative);

// Appends to `out` the events that turn `before` into `after`: create, remove, modify (size,
// mtime or file id changed; a kind change is a remove then a create) and attributes (mode or
// ctime only). Directory size and mtime are not compared: the entries inside report themselves.
void diff_snapshots(const snapshot& before, const snapshot& after, std::vector<fs_event>& out);

}  // namespace raftsync::watch::detail
