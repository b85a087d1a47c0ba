// raftsync::folder — real_folder_io: folder_io on a POSIX filesystem.
//
// Every operation resolves its path from a directory descriptor of the root, one component at a
// time with openat(O_DIRECTORY | O_NOFOLLOW): a parent component that is a symlink (or anything
// but a real directory) is refused with errc::invalid_path, so no operation ever leaves the root
// through a symlink, whatever was planted in the tree. Leaves are never followed either
// (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW). Paths with "..", "." or empty components are refused.
#pragma once

#include <filesystem>
#include <memory>

#include "raftsync/folder/folder_io.hpp"

namespace raftsync::folder {

class real_folder_io final : public folder_io {
 public:
  // Opens `root` (which must be an existing directory).
  static result<std::unique_ptr<real_folder_io>> open(const std::filesystem::path& root);
  ~real_folder_io() override;
  real_folder_io(const real_folder_io&) = delete;
  real_folder_io& operator=(const real_folder_io&) = delete;

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
  // Runs the fsyncs on up to sync_threads_max threads (joined before it returns): concurrent
  // fsyncs of different files join one journal commit on ext4, XFS or btrfs, so a batch of N
  // small files costs about one commit instead of N.
  std::error_code sync_files(const std::vector<std::string>& paths) override;
  static constexpr std::size_t sync_threads_max = 16;
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

  const std::filesystem::path& root() const noexcept { return root_; }

 private:
  real_folder_io(std::filesystem::path root, int root_fd)
      : root_(std::move(root)), root_fd_(root_fd) {}
  std::string next_temp_name();
  // write_file_atomic (expected == nullptr) and write_file_atomic_if.
  std::error_code replace_file(std::string_view path, std::string_view content, std::uint32_t mode,
                               std::int64_t mtime_ns, bool sync_directory,
                               const file_stat* expected);
  std::filesystem::path root_;
  int root_fd_;
  std::uint64_t temp_counter_ = 0;
};

}  // namespace raftsync::folder
