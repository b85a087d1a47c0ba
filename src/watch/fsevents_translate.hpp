// raftsync — FSEvents flag translation, in plain C++ so Linux tests cover it (private).
//
// fsevents_watcher.cpp (macOS only) turns each FSEvents callback into `record`s and calls
// translate(); everything that decides which fs_event a flag combination becomes lives here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "raftsync/watch/fs_event.hpp"
#include "raftsync/watch/ignore_rules.hpp"

namespace raftsync::watch::detail::fsevents {

// The values of CoreServices' kFSEventStreamEventFlag* constants (FSEvents.h). Mirrored so this
// file compiles without the SDK; fsevents_watcher.cpp static_asserts that they agree.
enum flag : std::uint32_t {
  must_scan_sub_dirs = 0x00000001,
  user_dropped = 0x00000002,
  kernel_dropped = 0x00000004,
  event_ids_wrapped = 0x00000008,
  history_done = 0x00000010,
  root_changed = 0x00000020,
  mount = 0x00000040,
  unmount = 0x00000080,
  item_created = 0x00000100,
  item_removed = 0x00000200,
  item_inode_meta_mod = 0x00000400,
  item_renamed = 0x00000800,
  item_modified = 0x00001000,
  item_finder_info_mod = 0x00002000,
  item_change_owner = 0x00004000,
  item_xattr_mod = 0x00008000,
  item_is_file = 0x00010000,
  item_is_dir = 0x00020000,
  item_is_symlink = 0x00040000,
  own_event = 0x00080000,
  item_is_hardlink = 0x00100000,
  item_is_last_hardlink = 0x00200000,
  item_cloned = 0x00400000,
};

// One event as FSEvents delivers it: an absolute path (directories may end in '/'), the flags,
// the event id (the two halves of a rename have consecutive ids).
struct record {
  std::string path;
  std::uint32_t flags = 0;
  std::uint64_t id = 0;
};

// What is at `relative` now (lstat, not following symlinks), or nullopt if nothing. FSEvents
// coalesces flags over the stream latency ("created|modified|removed"), so only the disk tells
// the final effect. Injected so tests decide what "the disk" holds.
using probe = std::function<std::optional<fs_kind>(const std::filesystem::path& relative)>;

// Translates one callback's records. `root` is the real path of the watched root (FSEvents
// reports resolved paths: /private/var/..., not /var/...); records outside it are dropped.
// - user_dropped / kernel_dropped → rescan_required(everything);
// - must_scan_sub_dirs → rescan_required(subtree of the record's path);
// - mount / unmount → rescan_required(subtree);
// - root_changed → fatal error (errc::not_found): the root was moved or deleted;
// - item_renamed: two consecutive ids whose first path is gone and second exists → rename;
//   otherwise present → create, gone → remove; a directory that arrives by rename also gets
//   rescan_required(its subtree) (FSEvents does not list what it contains);
// - other item flags: gone → remove; present → create if item_created or item_cloned, else
//   modify if item_modified, else attributes if a metadata flag is set;
// - a record without item flags (a directory-level event) → rescan_required(subtree);
// - history_done / event_ids_wrapped / own_event alone → nothing.
std::vector<fs_event> translate(const std::filesystem::path& root,
                                const std::vector<record>& records, const ignore_rules& ignore,
                                const probe& exists);

}  // namespace raftsync::watch::detail::fsevents
