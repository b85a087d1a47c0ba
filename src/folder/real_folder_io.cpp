#include "raftsync/folder/real_folder_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

#include "raftsync/folder/path_rules.hpp"

namespace raftsync::folder {
namespace {

std::error_code last_error() {
  return {errno, std::system_category()};
}

class fd_guard {
 public:
  fd_guard() = default;
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(fd_guard&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  fd_guard& operator=(fd_guard&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const noexcept { return fd_; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

file_kind kind_of(mode_t mode) {
  if (S_ISREG(mode)) return file_kind::regular;
  if (S_ISDIR(mode)) return file_kind::directory;
  if (S_ISLNK(mode)) return file_kind::symlink;
  return file_kind::other;
}

file_stat to_stat(const struct stat& st) {
  file_stat out;
  out.kind = kind_of(st.st_mode);
  out.size_bytes = out.kind == file_kind::directory ? 0 : static_cast<std::uint64_t>(st.st_size);
  out.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  out.mode = st.st_mode & 07777;
  out.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
  out.inode = st.st_ino;
  return out;
}

// Structural check: relative, no empty, "." or ".." components, no NUL.
bool well_formed(std::string_view path) {
  if (path.empty()) return true;
  if (path.find('\0') != std::string_view::npos || path.front() == '/') return false;
  std::size_t start = 0;
  while (true) {
    std::size_t end = path.find('/', start);
    std::string_view name =
        path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (name.empty() || name == "." || name == "..") return false;
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

// A descriptor of the directory holding `path`'s leaf, reached without following any symlink.
struct parent_handle {
  fd_guard owned;    // set when the parent is not the root
  int fd = -1;       // the parent directory
  std::string leaf;  // last component ("" when path is the root)
};

result<parent_handle> open_parent(int root_fd, std::string_view path) {
  if (!well_formed(path)) return make_error_code(errc::invalid_path);
  parent_handle h;
  h.fd = root_fd;
  std::size_t start = 0;
  while (true) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) {
      h.leaf.assign(path.substr(start));
      return h;
    }
    std::string name(path.substr(start, end - start));
    int fd = ::openat(h.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      int saved = errno;
      struct stat st {};
      if (::fstatat(h.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        return make_error_code(errc::invalid_path);  // a symlinked parent: never followed
      return std::error_code(saved, std::system_category());
    }
    h.owned = fd_guard(fd);
    h.fd = fd;
    start = end + 1;
  }
}

// A descriptor of directory `path` itself (root for "").
result<fd_guard> open_dir(int root_fd, std::string_view path) {
  if (path.empty()) {
    // A new open file description (not dup(): a dup shares the directory read position).
    int fd = ::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return last_error();
    return fd_guard(fd);
  }
  auto parent = open_parent(root_fd, path);
  if (!parent) return parent.error();
  int fd =
      ::openat(parent->fd, parent->leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int saved = errno;
    struct stat st {};
    if (::fstatat(parent->fd, parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode))
      return make_error_code(errc::invalid_path);
    return std::error_code(saved, std::system_category());
  }
  return fd_guard(fd);
}

std::error_code write_all(int fd, std::string_view data, std::uint64_t offset) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

timespec to_timespec(std::int64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    --ts.tv_sec;
  }
  return ts;
}

// Creates `name` in `dir_fd` (it must not exist), writes `content`, sets mode and mtime and, when
// `sync`, fsyncs it. On failure the file is removed.
std::error_code write_new_file(int dir_fd, const std::string& name, std::string_view content,
                               std::uint32_t mode, std::int64_t mtime_ns, bool sync) {
  fd_guard fd(
      ::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0) return last_error();
  auto fail = [&](std::error_code ec) {
    ::unlinkat(dir_fd, name.c_str(), 0);
    return ec;
  };
  if (auto ec = write_all(fd.get(), content, 0)) return fail(ec);
  if (::fchmod(fd.get(), mode & 07777) != 0) return fail(last_error());
  timespec times[2] = {{0, UTIME_OMIT}, to_timespec(mtime_ns)};
  if (::futimens(fd.get(), times) != 0) return fail(last_error());
  if (sync && ::fsync(fd.get()) != 0) return fail(last_error());
  if (::close(fd.release()) != 0) return fail(last_error());
  return {};
}

}  // namespace

result<std::unique_ptr<real_folder_io>> real_folder_io::open(const std::filesystem::path& root) {
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return last_error();
  return std::unique_ptr<real_folder_io>(new real_folder_io(root, fd));
}

real_folder_io::~real_folder_io() {
  ::close(root_fd_);
}

result<file_stat> real_folder_io::lstat(std::string_view path) {
  struct stat st {};
  if (path.empty()) {
    if (::fstat(root_fd_, &st) != 0) return last_error();
    return to_stat(st);
  }
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  if (::fstatat(parent->fd, parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return last_error();
  return to_stat(st);
}

std::error_code real_folder_io::read(std::string_view path, std::uint64_t offset,
                                     std::size_t max_bytes, std::string& out) {
  out.clear();
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  fd_guard fd(::openat(parent->fd, parent->leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return errno == ELOOP ? make_error_code(errc::invalid_path) : last_error();
  out.resize(max_bytes);
  std::size_t got = 0;
  while (got < max_bytes) {
    ssize_t n =
        ::pread(fd.get(), out.data() + got, max_bytes - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      auto ec = last_error();
      out.clear();
      return ec;
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  return {};
}

std::error_code real_folder_io::write_file_atomic(std::string_view path, std::string_view content,
                                                  std::uint32_t mode, std::int64_t mtime_ns,
                                                  bool sync_directory) {
  return replace_file(path, content, mode, mtime_ns, sync_directory, nullptr);
}

std::error_code real_folder_io::write_file_atomic_if(std::string_view path,
                                                     std::string_view content, std::uint32_t mode,
                                                     std::int64_t mtime_ns, bool sync_directory,
                                                     const file_stat& expected) {
  return replace_file(path, content, mode, mtime_ns, sync_directory, &expected);
}

std::error_code real_folder_io::replace_file(std::string_view path, std::string_view content,
                                             std::uint32_t mode, std::int64_t mtime_ns,
                                             bool sync_directory, const file_stat* expected) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  if (parent->leaf.empty()) return std::make_error_code(std::errc::is_a_directory);
  std::string temp = next_temp_name();
  if (auto ec = write_new_file(parent->fd, temp, content, mode, mtime_ns, true)) return ec;
  auto fail = [&](std::error_code ec) {
    ::unlinkat(parent->fd, temp.c_str(), 0);
    return ec;
  };
  if (expected != nullptr) {
    // The temporary is durable; is the target still what the caller examined?
    struct stat st {};
    file_stat now;
    if (::fstatat(parent->fd, parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      now = to_stat(st);
    } else if (errno != ENOENT) {
      return fail(last_error());
    }
    if (!same_working_identity(now, *expected)) return fail(make_error_code(errc::conflict));
  }
  if (::renameat(parent->fd, temp.c_str(), parent->fd, parent->leaf.c_str()) != 0)
    return fail(last_error());
  if (sync_directory && ::fsync(parent->fd) != 0) return last_error();
  return {};
}

result<std::string> real_folder_io::create_temp_file(std::string_view dir, std::string_view content,
                                                     std::uint32_t mode, std::int64_t mtime_ns) {
  auto dir_fd = open_dir(root_fd_, dir);
  if (!dir_fd) return dir_fd.error();
  std::string temp = next_temp_name();
  if (auto ec = write_new_file(dir_fd->get(), temp, content, mode, mtime_ns, false)) return ec;
  return dir.empty() ? temp : std::string(dir) + "/" + temp;
}

std::string real_folder_io::next_temp_name() {
  return std::string(temp_name_prefix) + std::to_string(::getpid()) + "-" +
         std::to_string(++temp_counter_);
}

std::error_code real_folder_io::write_at(std::string_view path, std::uint64_t offset,
                                         std::string_view data) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  fd_guard fd(::openat(parent->fd, parent->leaf.c_str(),
                       O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0) return errno == ELOOP ? make_error_code(errc::invalid_path) : last_error();
  return write_all(fd.get(), data, offset);
}

std::error_code real_folder_io::truncate(std::string_view path, std::uint64_t size_bytes) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  fd_guard fd(::openat(parent->fd, parent->leaf.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return errno == ELOOP ? make_error_code(errc::invalid_path) : last_error();
  if (::ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::sync_file(std::string_view path) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  fd_guard fd(::openat(parent->fd, parent->leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return errno == ELOOP ? make_error_code(errc::invalid_path) : last_error();
  if (::fsync(fd.get()) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::sync_files(const std::vector<std::string>& paths) {
  if (paths.size() < 2) return folder_io::sync_files(paths);
  // Each worker opens its own descriptor (open_parent only reads root_fd_), so at most one file
  // per thread is open whatever the batch size. The calling thread works too; if no thread can be
  // started it does all the work alone.
  std::atomic<std::size_t> next{0};
  std::mutex error_mutex;
  std::error_code first_error;
  auto work = [&] {
    for (std::size_t i = next.fetch_add(1); i < paths.size(); i = next.fetch_add(1)) {
      if (auto ec = sync_file(paths[i])) {
        std::lock_guard lock(error_mutex);
        if (!first_error) first_error = ec;
      }
    }
  };
  std::vector<std::thread> workers;
  const std::size_t wanted = std::min(paths.size(), sync_threads_max) - 1;
  workers.reserve(wanted);
  for (std::size_t i = 0; i < wanted; ++i) {
    try {
      workers.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // out of threads: fewer workers
    }
  }
  work();
  for (auto& worker : workers)
    worker.join();
  return first_error;
}

std::error_code real_folder_io::sync_dir(std::string_view path) {
  auto dir = open_dir(root_fd_, path);
  if (!dir) return dir.error();
  if (::fsync(dir->get()) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::mkdir(std::string_view path, std::uint32_t mode) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  if (parent->leaf.empty()) return std::make_error_code(std::errc::file_exists);
  if (::mkdirat(parent->fd, parent->leaf.c_str(), 0700) != 0) return last_error();
  // mkdir's mode is filtered by the umask: set the exact bits explicitly.
  if (::fchmodat(parent->fd, parent->leaf.c_str(), mode & 07777, 0) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::rmdir(std::string_view path) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  if (::unlinkat(parent->fd, parent->leaf.c_str(), AT_REMOVEDIR) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::unlink(std::string_view path) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  if (::unlinkat(parent->fd, parent->leaf.c_str(), 0) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::rename(std::string_view from, std::string_view to) {
  auto a = open_parent(root_fd_, from);
  if (!a) return a.error();
  auto b = open_parent(root_fd_, to);
  if (!b) return b.error();
  if (::renameat(a->fd, a->leaf.c_str(), b->fd, b->leaf.c_str()) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::chmod(std::string_view path, std::uint32_t mode) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  struct stat st {};
  if (::fstatat(parent->fd, parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return last_error();
  // fchmodat cannot refuse to follow a leaf symlink on Linux: check the kind first (the parent is
  // pinned by its descriptor, so only the leaf could be swapped, and a swapped leaf inside the
  // root can only point where a user of this folder already could write).
  if (S_ISLNK(st.st_mode)) return make_error_code(errc::invalid_path);
  if (::fchmodat(parent->fd, parent->leaf.c_str(), mode & 07777, 0) != 0) return last_error();
  return {};
}

std::error_code real_folder_io::set_mtime(std::string_view path, std::int64_t mtime_ns) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  timespec times[2] = {{0, UTIME_OMIT}, to_timespec(mtime_ns)};
  if (::utimensat(parent->fd, parent->leaf.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    return last_error();
  return {};
}

std::error_code real_folder_io::symlink(std::string_view target, std::string_view path) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  std::string t(target);
  if (::symlinkat(t.c_str(), parent->fd, parent->leaf.c_str()) != 0) return last_error();
  return {};
}

result<std::string> real_folder_io::readlink(std::string_view path) {
  auto parent = open_parent(root_fd_, path);
  if (!parent) return parent.error();
  std::string out(4096, '\0');
  ssize_t n = ::readlinkat(parent->fd, parent->leaf.c_str(), out.data(), out.size());
  if (n < 0) return last_error();
  out.resize(static_cast<std::size_t>(n));
  return out;
}

result<std::vector<dir_entry>> real_folder_io::list(std::string_view path) {
  auto dir = open_dir(root_fd_, path);
  if (!dir) return dir.error();
  int fd = dir->get();
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) return last_error();
  dir->release();  // owned by d now
  std::vector<dir_entry> out;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    file_kind kind = file_kind::other;
    switch (e->d_type) {
      case DT_REG:
        kind = file_kind::regular;
        break;
      case DT_DIR:
        kind = file_kind::directory;
        break;
      case DT_LNK:
        kind = file_kind::symlink;
        break;
      case DT_UNKNOWN: {
        struct stat st {};
        if (::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) kind = kind_of(st.st_mode);
        break;
      }
      default:
        break;
    }
    out.push_back({std::string(name), kind});
  }
  auto ec = errno != 0 ? last_error() : std::error_code{};
  ::closedir(d);
  if (ec) return ec;
  std::sort(out.begin(), out.end(),
            [](const dir_entry& a, const dir_entry& b) { return a.name < b.name; });
  return out;
}

}  // namespace raftsync::folder
