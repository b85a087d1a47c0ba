// raftsync — the typed filesystem event every watcher backend produces.
//
// Events are HINTS. A consumer (the folder engine) re-reads the disk at the named paths; it never
// trusts an event's effect or kind to describe the final state. Backends may coalesce, reorder and
// duplicate events, but a change on disk is never left unreported without a rescan_required event
// whose scope covers it (ARCHITECTURE.md, product contract 6).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace raftsync::watch {

// What happened at `path`. `rescan_required` and `error` are the two special events.
enum class fs_effect : std::uint8_t {
  create,           // `path` appeared (new file, new directory, moved in from outside the root)
  modify,           // `path`'s content changed (a finished write, a truncate, a write left open)
  remove,           // `path` disappeared (deleted or moved out of the root)
  rename,           // `old_path` was renamed to `path`, both inside the root
  attributes,       // mode bits, owner, timestamps or xattrs of `path` changed
  rescan_required,  // events were lost: re-read everything under `path` (see `scope`)
  error,            // the backend hit `error`; see `fatal`
};

// What `path` is, as far as the backend could tell when it produced the event.
enum class fs_kind : std::uint8_t {
  file,
  directory,
  symlink,
  other,    // fifo, socket, device
  unknown,  // the backend could not tell (the object was already gone, or the API does not say)
};

// Scope of a rescan_required event.
enum class rescan_scope : std::uint8_t {
  subtree,     // everything under `path` (`path` itself included)
  everything,  // the whole watched root; `path` is empty
};

struct fs_event {
  fs_effect effect = fs_effect::modify;
  fs_kind kind = fs_kind::unknown;
  // Relative to the watched root, never absolute, never containing "." or ".." elements. Empty
  // means the root itself. Applies to every effect except `error` (where it may name the
  // directory the error concerns, or be empty).
  std::filesystem::path path;
  // rename only: the path before the rename, relative to the root. For a directory rename every
  // path under `old_path` moved to the same place under `path`: consumers re-read the subtree.
  std::filesystem::path old_path;
  // rescan_required only.
  rescan_scope scope = rescan_scope::subtree;
  // error only: what failed. `fatal` means the backend no longer watches (the root was deleted or
  // moved, or the watch could not be kept up) and the consumer must not rely on further events;
  // a non-fatal error (for example "fell back to polling") is informational.
  std::error_code error;
  bool fatal = false;
  // Human-readable detail for logs (error and rescan events); empty otherwise.
  std::string detail;

  static fs_event change(fs_effect effect, fs_kind kind, std::filesystem::path path) {
    fs_event event;
    event.effect = effect;
    event.kind = kind;
    event.path = std::move(path);
    return event;
  }
  static fs_event renamed(fs_kind kind, std::filesystem::path old_path,
                          std::filesystem::path new_path) {
    fs_event event;
    event.effect = fs_effect::rename;
    event.kind = kind;
    event.old_path = std::move(old_path);
    event.path = std::move(new_path);
    return event;
  }
  static fs_event rescan(rescan_scope scope, std::filesystem::path path, std::string detail) {
    fs_event event;
    event.effect = fs_effect::rescan_required;
    event.scope = scope;
    event.path = scope == rescan_scope::everything ? std::filesystem::path{} : std::move(path);
    event.detail = std::move(detail);
    return event;
  }
  static fs_event failure(std::error_code error, bool fatal, std::string detail,
                          std::filesystem::path path = {}) {
    fs_event event;
    event.effect = fs_effect::error;
    event.error = error;
    event.fatal = fatal;
    event.detail = std::move(detail);
    event.path = std::move(path);
    return event;
  }

  friend bool operator==(const fs_event&, const fs_event&) = default;
};

inline std::string_view to_string(fs_effect effect) noexcept {
  switch (effect) {
    case fs_effect::create:
      return "create";
    case fs_effect::modify:
      return "modify";
    case fs_effect::remove:
      return "remove";
    case fs_effect::rename:
      return "rename";
    case fs_effect::attributes:
      return "attributes";
    case fs_effect::rescan_required:
      return "rescan_required";
    case fs_effect::error:
      return "error";
  }
  return "?";
}

inline std::string_view to_string(fs_kind kind) noexcept {
  switch (kind) {
    case fs_kind::file:
      return "file";
    case fs_kind::directory:
      return "directory";
    case fs_kind::symlink:
      return "symlink";
    case fs_kind::other:
      return "other";
    case fs_kind::unknown:
      return "unknown";
  }
  return "?";
}

// One line for logs and test failure messages.
inline std::string describe(const fs_event& event) {
  std::string text(to_string(event.effect));
  text += ' ';
  text += to_string(event.kind);
  text += ' ';
  if (event.effect == fs_effect::rename) {
    text += event.old_path.generic_string();
    text += " -> ";
  }
  if (event.effect == fs_effect::rescan_required && event.scope == rescan_scope::everything) {
    text += "<everything>";
  } else {
    text += event.path.empty() ? std::string("<root>") : event.path.generic_string();
  }
  if (event.effect == fs_effect::error) {
    text += event.fatal ? " fatal: " : " notice: ";
    text += event.error.message();
  }
  if (!event.detail.empty()) {
    text += " (";
    text += event.detail;
    text += ')';
  }
  return text;
}

}  // namespace raftsync::watch
