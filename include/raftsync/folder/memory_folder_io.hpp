// raftsync::folder — memory_folder_io: a deterministic in-memory tree behind the folder_io seam,
// for tests and the whole-cluster simulation. Same error behaviour as real_folder_io for the
// cases the folder module relies on. The clock is a counter: every mutation that sets an mtime
// implicitly uses now_ns(), which then advances by tick_ns; inode numbers count up from 1.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "raftsync/folder/folder_io.hpp"

namespace raftsync::folder {

class memory_folder_io final : public folder_io {
 public:
  explicit memory_folder_io(std::int64_t start_ns = 1'700'000'000'000'000'000,
                            std::int64_t tick_ns = 1'000'000);

  result<file_stat> lstat(std::string_view path) override;
  std::error_code read(std::string_view path, std::uint64_t offset, std::size_t max_bytes,
                       std::string& out) override;
  std::error_code write_file_atomic_if(std::string_view path, std::string_view content,
                                       std::uint32_t mode, std::int64_t mtime_ns,
                                       bool sync_directory, const file_stat& expected) override;
  std::error_code write_file_atomic(std::string_view path, std::string_view content,
                                    std::uint32_t mode, std::int64_t mtime_ns,
                                    bool sync_directory = true) override;
  result<std::string> create_temp_file(std::string_view dir, std::string_view content,
                                       std::uint32_t mode, std::int64_t mtime_ns) override;
  std::error_code write_at(std::string_view path, std::uint64_t offset,
                           std::string_view data) override;
  std::error_code truncate(std::string_view path, std::uint64_t size_bytes) override;
  std::error_code sync_file(std::string_view path) override;
  std::error_code sync_dir(std::string_view path) override;
  std::error_code mkdir(std::string_view path, std::uint32_t mode) override;
  std::error_code rmdir(std::string_view path) override;
  std::error_code unlink(std::string_view path) override;
  std::error_code rename(std::string_view from, std::string_view to) override;
  std::error_code chmod(std::string_view path, std::uint32_t mode) override;
  std::error_code set_mtime(std::string_view path, std::int64_t mtime_ns) override;
  std::error_code symlink(std::string_view target, std::string_view path) override;
  result<std::string> readlink(std::string_view path) override;
  result<std::vector<dir_entry>> list(std::string_view path) override;

  // --- test helpers (a "user" editing the folder) ---
  // Writes in place (same inode when the file exists), mtime = now; creates parents.
  void user_write(std::string_view path, std::string_view content, std::uint32_t mode = 0644);
  std::string content(std::string_view path) const;  // "" when missing
  bool exists(std::string_view path) const;
  std::int64_t now_ns() const noexcept { return now_ns_; }
  void advance_clock(std::int64_t ns) noexcept { now_ns_ += ns; }
  // Every mutating call fails with `error` once `countdown` more mutations succeeded
  // (countdown 0 = the next one). Default-constructed error clears the injection.
  void fail_mutations_after(std::uint64_t countdown, std::error_code error);
  // Canonical dump of the tree (kind, mode, mtime of files, content hash, link targets), for
  // comparing replicas; internal paths (.raftsync*, temporaries) excluded.
  std::string dump() const;
  std::uint64_t mutation_count() const noexcept { return mutations_; }
  std::uint64_t dir_sync_count() const noexcept { return dir_syncs_; }
  // Test hook: runs inside write_file_atomic_if after the temporary is written and before the
  // target is examined and replaced (a user writing the file at that moment).
  std::function<void(std::string_view path)> before_replace;

 private:
  struct node {
    file_kind kind = file_kind::regular;
    std::string content;  // regular: bytes; symlink: target
    std::uint32_t mode = 0644;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    std::uint64_t inode = 0;
  };
  std::error_code check_parent(std::string_view path) const;
  bool has_children(std::string_view path) const;
  std::error_code mutation();
  std::int64_t tick();

  std::map<std::string, node, std::less<>> nodes_;  // root "" is implicit
  std::int64_t now_ns_;
  std::int64_t tick_ns_;
  std::uint64_t next_inode_ = 2;
  std::uint64_t temp_counter_ = 0;
  std::uint64_t mutations_ = 0;
  std::uint64_t dir_syncs_ = 0;
  std::uint64_t fail_countdown_ = 0;
  std::error_code fail_error_;
};

}  // namespace raftsync::folder
