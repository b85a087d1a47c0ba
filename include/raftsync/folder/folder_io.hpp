// raftsync::folder — folder_io: the one seam for every file access of the apply path, the
// scanner and folder snapshots. Paths are canonical relative paths (path_rules.hpp) below the
// root the implementation was opened on; "" names the root itself. Implementations never follow
// a symlink in any component: a symlinked parent directory is an error (errc::invalid_path),
// and the leaf is never followed either (lstat semantics, O_NOFOLLOW).
//
// Errors: OS-level failures are std::error_code values comparable with std::errc
// (std::errc::no_such_file_or_directory, ::file_exists, ::directory_not_empty,
// ::not_a_directory, ::is_a_directory, ::no_space_on_device, ...); escaping the root is
// errc::invalid_path. Implementations are not thread-safe; one owner at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "raftsync/folder/manifest.hpp"
#include "raftsync/result.hpp"

namespace raftsync::folder {

struct file_stat {
  file_kind kind = file_kind::none;
  std::uint64_t size_bytes = 0;  // regular: content size; symlink: length of the target
  std::int64_t mtime_ns = 0;     // nanoseconds since the Unix epoch
  std::uint32_t mode = 0;        // permission bits (& 07777)
  std::uint64_t inode = 0;
  // Status change time: set by the filesystem on every write, chmod, utimens or rename and never
  // settable by a program, so (inode, ctime) identifies "untouched since" even when a same-size
  // edit lands on the same mtime (clock skew, coarse timestamps, tools that restore mtimes).
  std::int64_t ctime_ns = 0;

  friend bool operator==(const file_stat&, const file_stat&) = default;
};

struct dir_entry {
  std::string name;
  file_kind kind = file_kind::none;
};

class folder_io {
 public:
  virtual ~folder_io() = default;

  // lstat: std::errc::no_such_file_or_directory when the path does not exist.
  virtual result<file_stat> lstat(std::string_view path) = 0;
  // Reads up to max_bytes at offset into `out` (replacing its contents); short only at EOF.
  virtual std::error_code read(std::string_view path, std::uint64_t offset, std::size_t max_bytes,
                               std::string& out) = 0;
  // The atomic replace of contract point 4: write `content` to a temporary file in the same
  // directory (".raftsync-tmp-*"), set mode and mtime, fsync it, rename it over `path`, fsync the
  // directory (unless !sync_directory: the caller then fsyncs it later, before anything that
  // depends on the rename being durable). A reader sees the old or the new bytes, never a mix.
  virtual std::error_code write_file_atomic(std::string_view path, std::string_view content,
                                            std::uint32_t mode, std::int64_t mtime_ns,
                                            bool sync_directory = true) = 0;
  // write_file_atomic that replaces `path` only if, right before the rename (after the temporary
  // was written and synced, the slow part), `path` still is what `expected` describes (same kind,
  // inode, size, mtime and ctime; kind none: absent). Otherwise nothing changes and the result is
  // errc::conflict: a local write landed meanwhile and must not be sent to an unlinked inode.
  // Default: the check, then write_file_atomic (a wider window); the real and in-memory
  // implementations check between the sync and the rename.
  virtual std::error_code write_file_atomic_if(std::string_view path, std::string_view content,
                                               std::uint32_t mode, std::int64_t mtime_ns,
                                               bool sync_directory, const file_stat& expected);
  // Phase one of a batched atomic replace (state_machine::apply_batch): creates a new file with a
  // unique temporary name ".raftsync-tmp-*" in directory `dir` ("" = the root), writes `content`,
  // sets mode and mtime, and returns its path. Nothing is synced: the caller makes it durable
  // with sync_files() BEFORE renaming it over its final name (a rename that reaches the disk
  // before the content could leave an empty or partial file after a crash), then fsyncs the
  // directories of the renames. Default: std::errc::operation_not_supported (apply_batch then
  // writes every file with write_file_atomic).
  virtual result<std::string> create_temp_file(std::string_view dir, std::string_view content,
                                               std::uint32_t mode, std::int64_t mtime_ns);
  // Makes the content and metadata of every file in `paths` durable, as sync_file() of each
  // would; returns the first error. Implementations may overlap the flushes (real_folder_io runs
  // them on several threads, so a journaling filesystem commits them together). Default: one
  // sync_file() after the other.
  virtual std::error_code sync_files(const std::vector<std::string>& paths);
  // Writes `data` at `offset` into `path`, creating it (mode 0600) if missing, never truncating.
  // For staging objects; not atomic.
  virtual std::error_code write_at(std::string_view path, std::uint64_t offset,
                                   std::string_view data) = 0;
  virtual std::error_code truncate(std::string_view path, std::uint64_t size_bytes) = 0;
  virtual std::error_code sync_file(std::string_view path) = 0;
  virtual std::error_code sync_dir(std::string_view path) = 0;
  virtual std::error_code mkdir(std::string_view path, std::uint32_t mode) = 0;
  virtual std::error_code rmdir(std::string_view path) = 0;
  virtual std::error_code unlink(std::string_view path) = 0;  // files and symlinks
  // POSIX rename: replaces `to` when it is a file or an empty directory.
  virtual std::error_code rename(std::string_view from, std::string_view to) = 0;
  virtual std::error_code chmod(std::string_view path, std::uint32_t mode) = 0;
  virtual std::error_code set_mtime(std::string_view path, std::int64_t mtime_ns) = 0;
  virtual std::error_code symlink(std::string_view target, std::string_view path) = 0;
  virtual result<std::string> readlink(std::string_view path) = 0;
  // Entries of a directory ("" = root), sorted by name, without "." and "..".
  virtual result<std::vector<dir_entry>> list(std::string_view path) = 0;
};

// The cheap "untouched since this node last wrote or verified it" test: same size, inode, mtime and
// ctime as recorded in the entry's local fields. Only an exact match counts; anything else needs a
// hash comparison.
inline bool same_local_identity(const manifest_entry& e, const file_stat& st) noexcept {
  return st.kind == e.kind && st.size_bytes == e.size_bytes && st.inode == e.local_inode &&
         st.mtime_ns == e.local_mtime_ns && st.ctime_ns == e.local_ctime_ns && e.local_inode != 0;
}
// What write_file_atomic_if compares: kind, inode, size, mtime, ctime (kind none: absent).
inline bool same_working_identity(const file_stat& a, const file_stat& b) noexcept {
  if (a.kind == file_kind::none || b.kind == file_kind::none) return a.kind == b.kind;
  return a.kind == b.kind && a.inode == b.inode && a.size_bytes == b.size_bytes &&
         a.mtime_ns == b.mtime_ns && a.ctime_ns == b.ctime_ns;
}
// lstat, with absence as kind none.
result<file_stat> stat_or_absent(folder_io& io, std::string_view path);
inline void remember_local_identity(manifest_entry& e, const file_stat& st) noexcept {
  e.local_inode = st.inode;
  e.local_mtime_ns = st.mtime_ns;
  e.local_ctime_ns = st.ctime_ns;
}

// Helpers built on the interface.
// Hashes the whole regular file (reading chunk_bytes at a time) and its chunks.
struct file_hashes {
  digest sha256{};
  std::vector<digest> chunk_hashes;
  std::uint64_t size_bytes = 0;
};
// `unchanged`, when given, is asked every hash_check_interval chunks whether the file is still
// the one being read; when it says no, hashing stops with errc::busy (a file still being written
// is not read to its end only to be read again).
constexpr std::uint64_t hash_check_interval = 16;
result<file_hashes> hash_file(folder_io& io, std::string_view path, std::uint64_t chunk_bytes,
                              const std::function<bool()>& unchanged = {});
// Reads a whole file (for files known to be small: state file, small contents).
result<std::string> read_whole(folder_io& io, std::string_view path,
                               std::uint64_t max_bytes = std::uint64_t{1} << 31);
// Removes `path` and everything below it (does not follow symlinks). Missing is success.
std::error_code remove_all(folder_io& io, std::string_view path);
// mkdir for every missing ancestor of `path` and `path` itself (mode 0755 for ancestors).
std::error_code make_dirs(folder_io& io, std::string_view path, std::uint32_t mode);

}  // namespace raftsync::folder
