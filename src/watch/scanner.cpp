#include "scanner.hpp"

#include <algorithm>
#include <string>
#include <utility>

#if defined(_WIN32)
#include <windows.h>
#else
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#endif

namespace raftsync::watch::detail {

namespace fs = std::filesystem;

bool is_under(const fs::path& path, const fs::path& prefix) {
  auto p = path.begin();
  for (auto q = prefix.begin(); q != prefix.end(); ++q, ++p) {
    if (q->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *q) return false;
  }
  return true;
}

void erase_subtree(snapshot& tree, const fs::path& relative) {
  if (relative.empty()) {
    tree.clear();
    return;
  }
  auto it = tree.lower_bound(relative);
  while (it != tree.end() && is_under(it->first, relative))
    it = tree.erase(it);
}

#if defined(_WIN32)

// Windows: FindFirstFileW gives kind, attributes, size and 100 ns timestamps in one call per
// entry (std::filesystem's last_write_time goes through _wstat64 under mingw: 1 s resolution,
// too coarse to see a rewrite). There is no ctime and no cheap file id: the creation time
// stands in for the file id (a file replaced by rename is a new file with a new creation time).
namespace {
std::int64_t ticks(const FILETIME& time) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(time.dwHighDateTime) << 32) |
                                   time.dwLowDateTime) *
         100;
}

entry_info info_from(const WIN32_FIND_DATAW& data) {
  entry_info info;
  if ((data.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) &&
      (data.dwReserved0 == IO_REPARSE_TAG_SYMLINK ||
       data.dwReserved0 == IO_REPARSE_TAG_MOUNT_POINT)) {
    info.kind = fs_kind::symlink;
  } else if (data.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
    info.kind = fs_kind::directory;
  } else if (data.dwFileAttributes & FILE_ATTRIBUTE_DEVICE) {
    info.kind = fs_kind::other;
  } else {
    info.kind = fs_kind::file;
  }
  info.size = (static_cast<std::uint64_t>(data.nFileSizeHigh) << 32) | data.nFileSizeLow;
  info.mtime_ns = ticks(data.ftLastWriteTime);
  info.file_id = static_cast<std::uint64_t>(ticks(data.ftCreationTime));
  // Attribute bits that a user changes (read-only, hidden, system, archive is noise).
  info.mode = data.dwFileAttributes &
              (FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM);
  return info;
}

void scan_directory(const fs::path& root, const fs::path& relative_dir, const ignore_rules& ignore,
                    snapshot& out, const directory_visitor& visit) {
  if (visit) visit(relative_dir);
  const fs::path pattern = (relative_dir.empty() ? root : root / relative_dir) / L"*";
  WIN32_FIND_DATAW data;
  HANDLE find = ::FindFirstFileExW(pattern.c_str(), FindExInfoBasic, &data, FindExSearchNameMatch,
                                   nullptr, FIND_FIRST_EX_LARGE_FETCH);
  if (find == INVALID_HANDLE_VALUE) return;
  std::vector<fs::path> subdirectories;
  do {
    const wchar_t* name = data.cFileName;
    if (name[0] == L'.' && (name[1] == L'\0' || (name[1] == L'.' && name[2] == L'\0'))) continue;
    fs::path relative = relative_dir / name;
    if (ignore.ignored(relative)) continue;
    const entry_info info = info_from(data);
    out[relative] = info;
    if (info.kind == fs_kind::directory) subdirectories.push_back(std::move(relative));
  } while (::FindNextFileW(find, &data));
  ::FindClose(find);
  for (const fs::path& relative : subdirectories)
    scan_directory(root, relative, ignore, out, visit);
}
}  // namespace

std::optional<entry_info> stat_entry(const fs::path& root, const fs::path& relative) {
  if (relative.empty()) {
    std::error_code error;
    if (!fs::is_directory(root, error)) return std::nullopt;
    entry_info info;
    info.kind = fs_kind::directory;
    return info;
  }
  WIN32_FIND_DATAW data;
  HANDLE find = ::FindFirstFileExW((root / relative).c_str(), FindExInfoBasic, &data,
                                   FindExSearchNameMatch, nullptr, 0);
  if (find == INVALID_HANDLE_VALUE) return std::nullopt;
  ::FindClose(find);
  return info_from(data);
}

std::error_code scan_tree(const fs::path& root, const fs::path& relative_dir,
                          const ignore_rules& ignore, snapshot& out,
                          const directory_visitor& visit) {
  const fs::path top = relative_dir.empty() ? root : root / relative_dir;
  std::error_code error;
  if (!fs::is_directory(fs::symlink_status(top, error))) {
    return error ? error : std::make_error_code(std::errc::not_a_directory);
  }
  if (!relative_dir.empty()) {
    if (std::optional<entry_info> info = stat_entry(root, relative_dir)) out[relative_dir] = *info;
  }
  scan_directory(root, relative_dir, ignore, out, visit);
  return {};
}

#else  // POSIX

namespace {
entry_info info_from(const struct stat& st) {
  entry_info info;
  if (S_ISREG(st.st_mode)) {
    info.kind = fs_kind::file;
  } else if (S_ISDIR(st.st_mode)) {
    info.kind = fs_kind::directory;
  } else if (S_ISLNK(st.st_mode)) {
    info.kind = fs_kind::symlink;
  } else {
    info.kind = fs_kind::other;
  }
  info.size = static_cast<std::uint64_t>(st.st_size);
#if defined(__APPLE__)
  info.mtime_ns =
      static_cast<std::int64_t>(st.st_mtimespec.tv_sec) * 1000000000 + st.st_mtimespec.tv_nsec;
  info.ctime_ns =
      static_cast<std::int64_t>(st.st_ctimespec.tv_sec) * 1000000000 + st.st_ctimespec.tv_nsec;
#else
  info.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  info.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
#endif
  info.file_id = static_cast<std::uint64_t>(st.st_ino);
  info.mode = static_cast<std::uint32_t>(st.st_mode & 07777);
  return info;
}

// Lists the directory open as `dir_fd` (takes ownership) whose relative path is `relative_dir`.
void scan_directory(int dir_fd, const fs::path& relative_dir, const ignore_rules& ignore,
                    snapshot& out, const directory_visitor& visit) {
  DIR* dir = ::fdopendir(dir_fd);
  if (dir == nullptr) {
    ::close(dir_fd);
    return;
  }
  std::vector<std::pair<std::string, fs::path>> subdirectories;
  while (struct dirent* entry = ::readdir(dir)) {
    const char* name = entry->d_name;
    if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
    fs::path relative = relative_dir / name;
    if (ignore.ignored(relative)) continue;
    struct stat st;
    if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished
    entry_info info = info_from(st);
    out[relative] = info;
    if (info.kind == fs_kind::directory) subdirectories.emplace_back(name, std::move(relative));
  }
  // Recurse after listing, so at most one directory stream per depth level is open.
  for (auto& [name, relative] : subdirectories) {
    if (visit) visit(relative);
    const int child =
        ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child >= 0) scan_directory(child, relative, ignore, out, visit);
  }
  ::closedir(dir);
}
}  // namespace

std::optional<entry_info> stat_entry(const fs::path& root, const fs::path& relative) {
  struct stat st;
  const fs::path absolute = relative.empty() ? root : root / relative;
  if (::lstat(absolute.c_str(), &st) != 0) return std::nullopt;
  return info_from(st);
}

std::error_code scan_tree(const fs::path& root, const fs::path& relative_dir,
                          const ignore_rules& ignore, snapshot& out,
                          const directory_visitor& visit) {
  const fs::path top = relative_dir.empty() ? root : root / relative_dir;
  if (visit) visit(relative_dir);
  // O_NOFOLLOW: a subdirectory replaced by a symlink must not lead the scan out of the root (the
  // root itself may be a symlink: the user chose it).
  const int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (relative_dir.empty() ? 0 : O_NOFOLLOW);
  const int fd = ::open(top.c_str(), flags);
  if (fd < 0) return {errno, std::system_category()};
  if (!relative_dir.empty()) {
    struct stat st;
    if (::fstat(fd, &st) == 0) out[relative_dir] = info_from(st);
  }
  scan_directory(fd, relative_dir, ignore, out, visit);
  return {};
}

#endif

void diff_snapshots(const snapshot& before, const snapshot& after, std::vector<fs_event>& out) {
  auto b = before.begin();
  auto a = after.begin();
  while (b != before.end() || a != after.end()) {
    if (a == after.end() || (b != before.end() && b->first < a->first)) {
      out.push_back(fs_event::change(fs_effect::remove, b->second.kind, b->first));
      ++b;
    } else if (b == before.end() || a->first < b->first) {
      out.push_back(fs_event::change(fs_effect::create, a->second.kind, a->first));
      ++a;
    } else {
      const entry_info& old_info = b->second;
      const entry_info& new_info = a->second;
      if (old_info.kind != new_info.kind || old_info.file_id != new_info.file_id) {
        out.push_back(fs_event::change(fs_effect::remove, old_info.kind, b->first));
        out.push_back(fs_event::change(fs_effect::create, new_info.kind, a->first));
      } else if (new_info.kind == fs_kind::directory) {
        if (old_info.mode != new_info.mode) {
          out.push_back(fs_event::change(fs_effect::attributes, new_info.kind, a->first));
        }
      } else if (old_info.size != new_info.size || old_info.mtime_ns != new_info.mtime_ns) {
        out.push_back(fs_event::change(fs_effect::modify, new_info.kind, a->first));
      } else if (old_info.mode != new_info.mode || old_info.ctime_ns != new_info.ctime_ns) {
        out.push_back(fs_event::change(fs_effect::attributes, new_info.kind, a->first));
      }
      ++a;
      ++b;
    }
  }
}

}  // namespace raftsync::watch::detail
