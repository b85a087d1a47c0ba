// raftsync::folder — validation of the relative paths that travel in commands, snapshots and
// the state file. Every path from the log or the network goes through validate_path() before
// any file is touched; a failure is errc::invalid_path with a human-readable reason.
//
// The canonical form of a replicated path: UTF-8 (bytes are not otherwise interpreted), components
// separated by '/', relative to the folder root, no leading or trailing '/', no empty, "." or ".."
// components, no NUL and no backslash, no drive prefix ("C:"). The empty string names the root
// itself and is never a valid command path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace raftsync::folder {

// Name of the state directory inside the root (never replicated) and the prefix of every
// temporary or staging entry raftsync creates in the tree (never replicated either).
inline constexpr std::string_view state_dir_name = ".raftsync";
inline constexpr std::string_view temp_name_prefix = ".raftsync-tmp-";

struct path_rules {
  std::size_t path_bytes_max = 4096;      // whole relative path (Linux PATH_MAX)
  std::size_t component_bytes_max = 255;  // one name (NAME_MAX on ext4, APFS, NTFS)
  std::size_t depth_max = 256;            // components
  // Also refuse names Windows cannot hold: reserved device names (CON, PRN, AUX, NUL, COM1-9,
  // LPT1-9, with or without extension), the characters <>:"|?* and control characters 1-31, and
  // names ending in '.' or ' '. Turn on when any node of the cluster runs Windows.
  bool windows_names = false;
};

// errc::invalid_path (with *reason set, when given) or success.
std::error_code validate_path(std::string_view path, const path_rules& rules = {},
                              std::string* reason = nullptr);

// True when `path` is the state directory, lies inside it, or any component is a raftsync
// temporary name (".raftsync-tmp-*"). The scanner and the watcher filter skip these; commands
// naming them are refused by validate_path().
bool is_internal_path(std::string_view path) noexcept;

// The parent of a canonical path ("" for a top-level name) and its last component.
std::string_view parent_path(std::string_view path) noexcept;
std::string_view file_name(std::string_view path) noexcept;
// a + "/" + b, or b when a is empty.
std::string join_path(std::string_view a, std::string_view b);
// True when `path` equals `ancestor` or lies below it ("" is the ancestor of everything).
bool is_same_or_below(std::string_view path, std::string_view ancestor) noexcept;

// The name of a conflict copy of `path`: "<stem>.conflict-<node>-<utc>[-<n>]<ext>" in the same
// directory, where <ext> is the last extension of the file name (".txt" of "a.b.txt"; none for
// ".bashrc"), <utc> is `utc_ns` formatted as YYYYMMDDTHHMMSSZ and "-<n>" is added for n > 0 to make
// the name unique. Pure: the same inputs give the same name on every node.
std::string conflict_copy_name(std::string_view path, std::uint64_t node, std::int64_t utc_ns,
                               unsigned n = 0);
// "YYYYMMDDTHHMMSSZ" for nanoseconds since the Unix epoch (proleptic Gregorian, UTC).
std::string format_utc(std::int64_t utc_ns);

}  // namespace raftsync::folder
