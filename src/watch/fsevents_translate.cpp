#include "fsevents_translate.hpp"

#include "raftsync/error.hpp"
#include "raftsync/watch/watcher.hpp"

namespace raftsync::watch::detail::fsevents {
namespace {

namespace fs = std::filesystem;

constexpr std::uint32_t item_flags = item_created | item_removed | item_inode_meta_mod |
                                     item_renamed | item_modified | item_finder_info_mod |
                                     item_change_owner | item_xattr_mod | item_cloned;
constexpr std::uint32_t metadata_flags =
    item_inode_meta_mod | item_finder_info_mod | item_change_owner | item_xattr_mod;

fs_kind kind_from_flags(std::uint32_t flags) {
  if (flags & item_is_dir) return fs_kind::directory;
  if (flags & item_is_symlink) return fs_kind::symlink;
  if (flags & (item_is_file | item_is_hardlink)) return fs_kind::file;
  return fs_kind::unknown;
}

// The path relative to `root`, or nullopt if it is not under it.
std::optional<fs::path> relative_to(const std::string& root, const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/')
    trimmed.pop_back();
  if (trimmed == root) return fs::path{};
  if (trimmed.size() > root.size() && trimmed.compare(0, root.size(), root) == 0 &&
      (root.back() == '/' || trimmed[root.size()] == '/')) {
    std::size_t begin = root.size();
    while (begin < trimmed.size() && trimmed[begin] == '/')
      ++begin;
    return fs::path(trimmed.substr(begin));
  }
  return std::nullopt;
}

}  // namespace

std::vector<fs_event> translate(const fs::path& root, const std::vector<record>& records,
                                const ignore_rules& ignore, const probe& exists) {
  std::vector<fs_event> out;
  std::string root_text = root.generic_string();
  while (root_text.size() > 1 && root_text.back() == '/')
    root_text.pop_back();
  for (std::size_t i = 0; i < records.size(); ++i) {
    const record& current = records[i];
    const std::uint32_t flags = current.flags;
    if (flags & (user_dropped | kernel_dropped)) {
      out.push_back(fs_event::rescan(rescan_scope::everything, {},
                                     (flags & kernel_dropped) ? "FSEvents: kernel dropped events"
                                                              : "FSEvents: user dropped events"));
      continue;
    }
    if (flags & root_changed) {
      out.push_back(fs_event::failure(make_error_code(errc::not_found), true,
                                      "FSEvents: the watched root was moved or deleted"));
      continue;
    }
    const std::optional<fs::path> relative = relative_to(root_text, current.path);
    if (!relative) continue;
    if (flags & (must_scan_sub_dirs | mount | unmount)) {
      out.push_back(relative->empty()
                        ? fs_event::rescan(rescan_scope::everything, {}, "FSEvents: must scan")
                        : fs_event::rescan(rescan_scope::subtree, *relative,
                                           "FSEvents: must scan subdirectories"));
      continue;
    }
    if ((flags & item_flags) == 0) {
      if (flags & (history_done | event_ids_wrapped | own_event)) continue;
      out.push_back(
          relative->empty()
              ? fs_event::rescan(rescan_scope::everything, {}, "FSEvents: directory event")
              : fs_event::rescan(rescan_scope::subtree, *relative, "FSEvents: directory event"));
      continue;
    }
    if (relative->empty()) continue;  // the root's own metadata
    const std::optional<fs_kind> now = exists(*relative);
    const fs_kind kind = now ? *now : kind_from_flags(flags);
    if (flags & item_renamed) {
      if (i + 1 < records.size() && (records[i + 1].flags & item_renamed) &&
          records[i + 1].id == current.id + 1 && !now) {
        const std::optional<fs::path> target = relative_to(root_text, records[i + 1].path);
        const std::optional<fs_kind> target_now =
            target && !target->empty() ? exists(*target) : std::nullopt;
        if (target_now) {
          ++i;
          append_unless_ignored(ignore, fs_event::renamed(*target_now, *relative, *target), out);
          continue;
        }
      }
      if (!now) {
        append_unless_ignored(ignore, fs_event::change(fs_effect::remove, kind, *relative), out);
      } else {
        const std::size_t before = out.size();
        append_unless_ignored(ignore, fs_event::change(fs_effect::create, kind, *relative), out);
        if (kind == fs_kind::directory && out.size() > before) {
          out.push_back(
              fs_event::rescan(rescan_scope::subtree, *relative, "FSEvents: directory moved in"));
        }
      }
      continue;
    }
    fs_effect effect;
    if (!now) {
      effect = fs_effect::remove;
    } else if (flags & (item_created | item_cloned)) {
      effect = fs_effect::create;
    } else if (flags & item_modified) {
      effect = fs_effect::modify;
    } else if (flags & metadata_flags) {
      effect = fs_effect::attributes;
    } else {
      // item_removed alone but something is there again: it was replaced.
      effect = fs_effect::create;
    }
    append_unless_ignored(ignore, fs_event::change(effect, kind, *relative), out);
  }
  return out;
}

}  // namespace raftsync::watch::detail::fsevents
