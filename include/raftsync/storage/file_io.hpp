// raftsync — the file I/O seam of the storage module.
//
// Every byte the storage module reads or writes goes through `file_io`, so tests can swap the real
// POSIX implementation for `faulty_file_io` (faulty_file_io.hpp), an in-memory filesystem that
// crashes at a chosen operation, loses what was not synced, and returns ENOSPC or EIO on demand.
//
// Durability model (the one POSIX promises and the one faulty_file_io enforces):
//   - bytes written with file::pwrite survive a crash only after file::datasync() returned success;
//   - a new name (open with create), a rename and an unlink survive a crash only after
//     file_io::sync_dir() of the directory holding the name returned success;
//   - after a failed datasync nothing is known about the unsynced bytes (Linux may have dropped
//     them and cleared the error): the caller must rewrite them before trusting a later sync.
// Errors are std::error_code values of the system category (errno values), e.g. ENOSPC, EIO.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "raftsync/result.hpp"

namespace raftsync::storage {

enum class open_flags : unsigned {
  read_only = 0,
  read_write = 1u << 0,
  create = 1u << 1,     // create the file if it does not exist (needs read_write)
  exclusive = 1u << 2,  // with create: fail with EEXIST if it exists
  truncate = 1u << 3,   // truncate to zero length on open (needs read_write)
};
constexpr open_flags operator|(open_flags a, open_flags b) noexcept {
  return static_cast<open_flags>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}
constexpr bool has_flag(open_flags set, open_flags flag) noexcept {
  return (static_cast<unsigned>(set) & static_cast<unsigned>(flag)) != 0;
}

// An open file. Not thread-safe; owned by one component at a time. Closing is the destructor.
class file {
 public:
  virtual ~file() = default;
  // Writes all `size` bytes at `offset` (extending the file if needed) or returns an error; after
  // an error any part of the range may or may not have been written.
  virtual std::error_code pwrite(std::uint64_t offset, const void* data, std::size_t size) = 0;
  // Reads up to `size` bytes at `offset`; fewer only at end of file. Returns the count read.
  virtual result<std::size_t> pread(std::uint64_t offset, void* data, std::size_t size) = 0;
  // fdatasync(2): makes the written bytes and the file size durable.
  virtual std::error_code datasync() = 0;
  // Sets the size (shrinking drops bytes; growing adds zero bytes).
  virtual std::error_code truncate(std::uint64_t size) = 0;
  // Reserves disk blocks for [offset, offset + size) and extends the size to cover it; the new
  // bytes read as zero. Returns ENOSPC when the disk is full.
  virtual std::error_code allocate(std::uint64_t offset, std::uint64_t size) = 0;
  virtual result<std::uint64_t> size() = 0;
};

class file_io {
 public:
  virtual ~file_io() = default;
  virtual result<std::unique_ptr<file>> open(const std::filesystem::path& path,
                                             open_flags flags) = 0;
  // rename(2): atomically replaces `to` if it exists. Both in the same directory for atomicity.
  virtual std::error_code rename(const std::filesystem::path& from,
                                 const std::filesystem::path& to) = 0;
  virtual std::error_code unlink(const std::filesystem::path& path) = 0;
  // fsync(2) of a directory: makes the creates, renames and unlinks of names in it durable.
  virtual std::error_code sync_dir(const std::filesystem::path& dir) = 0;
  // mkdir(2); success if the directory already exists. Durable after sync_dir(parent).
  virtual std::error_code create_dir(const std::filesystem::path& dir) = 0;
  // Names (not paths) of the regular files in `dir`, sorted.
  virtual result<std::vector<std::string>> list_dir(const std::filesystem::path& dir) = 0;
  // Size of the file at `path`; ENOENT if there is none.
  virtual result<std::uint64_t> file_size(const std::filesystem::path& path) = 0;
};

// The POSIX implementation (open/pwrite/pread/fdatasync/ftruncate/fallocate/rename/unlink/fsync).
class real_file_io final : public file_io {
 public:
  result<std::unique_ptr<file>> open(const std::filesystem::path& path, open_flags flags) override;
  std::error_code rename(const std::filesystem::path& from,
                         const std::filesystem::path& to) override;
  std::error_code unlink(const std::filesystem::path& path) override;
  std::error_code sync_dir(const std::filesystem::path& dir) override;
  std::error_code create_dir(const std::filesystem::path& dir) override;
  result<std::vector<std::string>> list_dir(const std::filesystem::path& dir) override;
  result<std::uint64_t> file_size(const std::filesystem::path& path) override;
};

// Reads exactly `size` bytes at `offset`; errc::unavailable if the file ends first.
std::error_code read_exact(file& f, std::uint64_t offset, void* data, std::size_t size);

}  // namespace raftsync::storage
