#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "raftsync/storage/file_io.hpp"

namespace raftsync::storage {
namespace {

std::error_code last_error() noexcept {
  return {errno, std::system_category()};
}

class posix_file final : public file {
 public:
  explicit posix_file(int fd) noexcept : fd_(fd) {}
  ~posix_file() override { ::close(fd_); }
  posix_file(const posix_file&) = delete;
  posix_file& operator=(const posix_file&) = delete;

  std::error_code pwrite(std::uint64_t offset, const void* data, std::size_t size) override {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return last_error();
      }
      p += n;
      offset += static_cast<std::uint64_t>(n);
      size -= static_cast<std::size_t>(n);
    }
    return {};
  }

  result<std::size_t> pread(std::uint64_t offset, void* data, std::size_t size) override {
    auto* p = static_cast<char*>(data);
    std::size_t total = 0;
    while (total < size) {
      const ssize_t n = ::pread(fd_, p + total, size - total, static_cast<off_t>(offset + total));
      if (n < 0) {
        if (errno == EINTR) continue;
        return last_error();
      }
      if (n == 0) break;
      total += static_cast<std::size_t>(n);
    }
    return total;
  }

  std::error_code datasync() override {
#if defined(__APPLE__)
    if (::fcntl(fd_, F_FULLFSYNC) != 0) return last_error();
#else
    while (::fdatasync(fd_) != 0) {
      if (errno != EINTR) return last_error();
    }
#endif
    return {};
  }

  std::error_code truncate(std::uint64_t size) override {
    while (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      if (errno != EINTR) return last_error();
    }
    return {};
  }

  std::error_code allocate(std::uint64_t offset, std::uint64_t size) override {
    if (size == 0) return {};
#if defined(__linux__)
    if (::fallocate(fd_, 0, static_cast<off_t>(offset), static_cast<off_t>(size)) == 0) return {};
    if (errno != EOPNOTSUPP && errno != ENOSYS) return last_error();
#endif
    const int rc = ::posix_fallocate(fd_, static_cast<off_t>(offset), static_cast<off_t>(size));
    if (rc != 0) return {rc, std::system_category()};
    return {};
  }

  result<std::uint64_t> size() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return last_error();
    return static_cast<std::uint64_t>(st.st_size);
  }

 private:
  int fd_;
};

}  // namespace

result<std::unique_ptr<file>> real_file_io::open(const std::filesystem::path& path,
                                                 open_flags flags) {
  int oflags = O_CLOEXEC;
  oflags |= has_flag(flags, open_flags::read_write) ? O_RDWR : O_RDONLY;
  if (has_flag(flags, open_flags::create)) oflags |= O_CREAT;
  if (has_flag(flags, open_flags::exclusive)) oflags |= O_EXCL;
  if (has_flag(flags, open_flags::truncate)) oflags |= O_TRUNC;
  int fd;
  do {
    fd = ::open(path.c_str(), oflags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return last_error();
  return std::unique_ptr<file>(new posix_file(fd));
}

std::error_code real_file_io::rename(const std::filesystem::path& from,
                                     const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return last_error();
  return {};
}

std::error_code real_file_io::unlink(const std::filesystem::path& path) {
  if (::unlink(path.c_str()) != 0) return last_error();
  return {};
}

std::error_code real_file_io::sync_dir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return last_error();
  std::error_code ec;
  while (::fsync(fd) != 0) {
    if (errno != EINTR) {
      ec = last_error();
      break;
    }
  }
  ::close(fd);
  return ec;
}

std::error_code real_file_io::create_dir(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno == EEXIST) {
      struct stat st {};
      if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return {};
      return {EEXIST, std::system_category()};
    }
    return last_error();
  }
  return {};
}

result<std::vector<std::string>> real_file_io::list_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return ec;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return ec;
    std::error_code type_ec;
    if (it->is_regular_file(type_ec)) names.push_back(it->path().filename().string());
  }
  if (ec) return ec;
  std::sort(names.begin(), names.end());
  return names;
}

result<std::uint64_t> real_file_io::file_size(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return last_error();
  return static_cast<std::uint64_t>(st.st_size);
}

std::error_code read_exact(file& f, std::uint64_t offset, void* data, std::size_t size) {
  auto n = f.pread(offset, data, size);
  if (!n) return n.error();
  if (*n != size) return make_error_code(errc::unavailable);
  return {};
}

}  // namespace raftsync::storage
