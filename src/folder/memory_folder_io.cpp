#include "raftsync/folder/memory_folder_io.hpp"

#include "raftsync/folder/path_rules.hpp"

namespace raftsync::folder {
namespace {
std::error_code sys(std::errc e) {
  return std::make_error_code(e);
}
}  // namespace

memory_folder_io::memory_folder_io(std::int64_t start_ns, std::int64_t tick_ns)
    : now_ns_(start_ns), tick_ns_(tick_ns) {}

std::int64_t memory_folder_io::tick() {
  std::int64_t t = now_ns_;
  now_ns_ += tick_ns_;
  return t;
}

std::error_code memory_folder_io::mutation() {
  if (fail_error_) {
    if (fail_countdown_ == 0) return fail_error_;
    --fail_countdown_;
  }
  ++mutations_;
  return {};
}

void memory_folder_io::fail_mutations_after(std::uint64_t countdown, std::error_code error) {
  fail_countdown_ = countdown;
  fail_error_ = error;
}

// Every ancestor must exist and be a real directory (a symlink ancestor would be followed by a
// real filesystem: refused like real_folder_io does).
std::error_code memory_folder_io::check_parent(std::string_view path) const {
  std::string_view parent = parent_path(path);
  while (!parent.empty()) {
    auto it = nodes_.find(parent);
    if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
    if (it->second.kind == file_kind::symlink) return make_error_code(errc::invalid_path);
    if (it->second.kind != file_kind::directory) return sys(std::errc::not_a_directory);
    parent = parent_path(parent);
  }
  return {};
}

result<file_stat> memory_folder_io::lstat(std::string_view path) {
  if (path.empty()) return file_stat{file_kind::directory, 0, 0, 0755, 1};
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  const node& n = it->second;
  return file_stat{n.kind,     n.kind == file_kind::directory ? 0 : n.content.size(),
                   n.mtime_ns, n.mode,
                   n.inode,    n.ctime_ns};
}

std::error_code memory_folder_io::read(std::string_view path, std::uint64_t offset,
                                       std::size_t max_bytes, std::string& out) {
  out.clear();
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (it->second.kind == file_kind::directory) return sys(std::errc::is_a_directory);
  if (it->second.kind == file_kind::symlink) return make_error_code(errc::invalid_path);
  const std::string& c = it->second.content;
  if (offset < c.size()) out.assign(c, offset, max_bytes);
  return {};
}

std::error_code memory_folder_io::write_file_atomic_if(std::string_view path,
                                                       std::string_view content, std::uint32_t mode,
                                                       std::int64_t mtime_ns, bool sync_directory,
                                                       const file_stat& expected) {
  if (before_replace) before_replace(path);
  // In memory nothing happens between the check and the replace: the generic one is exact.
  return folder_io::write_file_atomic_if(path, content, mode, mtime_ns, sync_directory, expected);
}

std::error_code memory_folder_io::write_file_atomic(std::string_view path, std::string_view content,
                                                    std::uint32_t mode, std::int64_t mtime_ns,
                                                    bool /*sync_directory*/) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it != nodes_.end() && it->second.kind == file_kind::directory)
    return sys(std::errc::is_a_directory);
  if (auto ec = mutation()) return ec;
  ++temp_counter_;
  node n;
  n.kind = file_kind::regular;
  n.content.assign(content);
  n.mode = mode & 07777;
  n.mtime_ns = mtime_ns;
  n.inode = next_inode_++;  // a rename over gives the path a new inode, as on disk
  n.ctime_ns = tick();
  nodes_[std::string(path)] = std::move(n);
  return {};
}

result<std::string> memory_folder_io::create_temp_file(std::string_view dir,
                                                       std::string_view content, std::uint32_t mode,
                                                       std::int64_t mtime_ns) {
  if (!dir.empty()) {
    auto st = lstat(dir);
    if (!st) return st.error();
    if (st->kind != file_kind::directory) return sys(std::errc::not_a_directory);
  }
  if (auto ec = mutation()) return ec;
  std::string path =
      join_path(dir, std::string(temp_name_prefix) + "mem-" + std::to_string(++temp_counter_));
  node n;
  n.kind = file_kind::regular;
  n.content.assign(content);
  n.mode = mode & 07777;
  n.mtime_ns = mtime_ns;
  n.inode = next_inode_++;
  n.ctime_ns = tick();
  nodes_[path] = std::move(n);
  return path;
}

std::error_code memory_folder_io::write_at(std::string_view path, std::uint64_t offset,
                                           std::string_view data) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it != nodes_.end() && it->second.kind != file_kind::regular)
    return sys(std::errc::is_a_directory);
  if (auto ec = mutation()) return ec;
  if (it == nodes_.end()) {
    node n;
    n.mode = 0600;
    n.inode = next_inode_++;
    it = nodes_.emplace(std::string(path), std::move(n)).first;
  }
  std::string& c = it->second.content;
  if (c.size() < offset + data.size()) c.resize(offset + data.size(), '\0');
  c.replace(offset, data.size(), data);
  it->second.mtime_ns = tick();
  it->second.ctime_ns = it->second.mtime_ns;
  return {};
}

std::error_code memory_folder_io::truncate(std::string_view path, std::uint64_t size_bytes) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (it->second.kind != file_kind::regular) return sys(std::errc::is_a_directory);
  if (auto ec = mutation()) return ec;
  it->second.content.resize(size_bytes, '\0');
  it->second.mtime_ns = tick();
  it->second.ctime_ns = it->second.mtime_ns;
  return {};
}

std::error_code memory_folder_io::sync_file(std::string_view path) {
  if (auto ec = check_parent(path)) return ec;
  return nodes_.count(path) != 0 ? std::error_code{} : sys(std::errc::no_such_file_or_directory);
}

std::error_code memory_folder_io::sync_dir(std::string_view path) {
  ++dir_syncs_;
  if (path.empty()) return {};
  auto st = lstat(path);
  if (!st) return st.error();
  return st->kind == file_kind::directory ? std::error_code{} : sys(std::errc::not_a_directory);
}

std::error_code memory_folder_io::mkdir(std::string_view path, std::uint32_t mode) {
  if (path.empty()) return sys(std::errc::file_exists);
  if (auto ec = check_parent(path)) return ec;
  if (nodes_.count(path) != 0) return sys(std::errc::file_exists);
  if (auto ec = mutation()) return ec;
  node n;
  n.kind = file_kind::directory;
  n.mode = mode & 07777;
  n.mtime_ns = tick();
  n.ctime_ns = n.mtime_ns;
  n.inode = next_inode_++;
  nodes_.emplace(std::string(path), std::move(n));
  return {};
}

bool memory_folder_io::has_children(std::string_view path) const {
  std::string prefix = std::string(path) + "/";
  auto it = nodes_.lower_bound(prefix);
  return it != nodes_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

std::error_code memory_folder_io::rmdir(std::string_view path) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (it->second.kind != file_kind::directory) return sys(std::errc::not_a_directory);
  if (has_children(path)) return sys(std::errc::directory_not_empty);
  if (auto ec = mutation()) return ec;
  nodes_.erase(it);
  return {};
}

std::error_code memory_folder_io::unlink(std::string_view path) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (it->second.kind == file_kind::directory) return sys(std::errc::is_a_directory);
  if (auto ec = mutation()) return ec;
  nodes_.erase(it);
  return {};
}

std::error_code memory_folder_io::rename(std::string_view from, std::string_view to) {
  if (auto ec = check_parent(from)) return ec;
  if (auto ec = check_parent(to)) return ec;
  auto src = nodes_.find(from);
  if (src == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (from == to) return {};
  if (is_same_or_below(to, from)) return sys(std::errc::invalid_argument);
  auto dst = nodes_.find(to);
  bool src_dir = src->second.kind == file_kind::directory;
  if (dst != nodes_.end()) {
    bool dst_dir = dst->second.kind == file_kind::directory;
    if (src_dir && !dst_dir) return sys(std::errc::not_a_directory);
    if (!src_dir && dst_dir) return sys(std::errc::is_a_directory);
    if (dst_dir && has_children(to)) return sys(std::errc::directory_not_empty);
  }
  if (auto ec = mutation()) return ec;
  if (dst != nodes_.end()) nodes_.erase(dst);
  std::vector<std::pair<std::string, node>> moved;
  moved.emplace_back(std::string(to), std::move(src->second));
  nodes_.erase(src);
  std::string prefix = std::string(from) + "/";
  for (auto it = nodes_.lower_bound(prefix);
       it != nodes_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    moved.emplace_back(std::string(to) + it->first.substr(from.size()), std::move(it->second));
    it = nodes_.erase(it);
  }
  for (auto& [path, n] : moved)
    nodes_[path] = std::move(n);
  return {};
}

std::error_code memory_folder_io::chmod(std::string_view path, std::uint32_t mode) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (it->second.kind == file_kind::symlink) return make_error_code(errc::invalid_path);
  if (auto ec = mutation()) return ec;
  it->second.mode = mode & 07777;
  it->second.ctime_ns = tick();
  return {};
}

std::error_code memory_folder_io::set_mtime(std::string_view path, std::int64_t mtime_ns) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (auto ec = mutation()) return ec;
  it->second.mtime_ns = mtime_ns;
  it->second.ctime_ns = tick();
  return {};
}

std::error_code memory_folder_io::symlink(std::string_view target, std::string_view path) {
  if (auto ec = check_parent(path)) return ec;
  if (nodes_.count(path) != 0) return sys(std::errc::file_exists);
  if (auto ec = mutation()) return ec;
  node n;
  n.kind = file_kind::symlink;
  n.content.assign(target);
  n.mode = 0777;
  n.mtime_ns = tick();
  n.ctime_ns = n.mtime_ns;
  n.inode = next_inode_++;
  nodes_.emplace(std::string(path), std::move(n));
  return {};
}

result<std::string> memory_folder_io::readlink(std::string_view path) {
  if (auto ec = check_parent(path)) return ec;
  auto it = nodes_.find(path);
  if (it == nodes_.end()) return sys(std::errc::no_such_file_or_directory);
  if (it->second.kind != file_kind::symlink) return sys(std::errc::invalid_argument);
  return it->second.content;
}

result<std::vector<dir_entry>> memory_folder_io::list(std::string_view path) {
  if (!path.empty()) {
    auto st = lstat(path);
    if (!st) return st.error();
    if (st->kind == file_kind::symlink) return make_error_code(errc::invalid_path);
    if (st->kind != file_kind::directory) return sys(std::errc::not_a_directory);
  }
  std::vector<dir_entry> out;
  std::string prefix = path.empty() ? std::string() : std::string(path) + "/";
  for (auto it = nodes_.lower_bound(prefix);
       it != nodes_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    std::string_view rest = std::string_view(it->first).substr(prefix.size());
    if (rest.empty() || rest.find('/') != std::string_view::npos) continue;
    out.push_back({std::string(rest), it->second.kind});
  }
  return out;
}

void memory_folder_io::user_write(std::string_view path, std::string_view content,
                                  std::uint32_t mode) {
  std::string_view parent = parent_path(path);
  if (!parent.empty() && nodes_.count(parent) == 0) {
    // Create the missing ancestors, outermost first.
    std::vector<std::string_view> missing;
    for (auto p = parent; !p.empty() && nodes_.count(p) == 0; p = parent_path(p))
      missing.push_back(p);
    for (auto i = missing.rbegin(); i != missing.rend(); ++i)
      (void)mkdir(*i, 0755);
  }
  auto it = nodes_.find(path);
  if (it == nodes_.end()) {
    node n;
    n.mode = mode;
    n.inode = next_inode_++;
    it = nodes_.emplace(std::string(path), std::move(n)).first;
  }
  it->second.kind = file_kind::regular;
  it->second.content.assign(content);
  it->second.mtime_ns = tick();
  it->second.ctime_ns = it->second.mtime_ns;
  ++mutations_;
}

std::string memory_folder_io::content(std::string_view path) const {
  auto it = nodes_.find(path);
  return it == nodes_.end() ? std::string() : it->second.content;
}

bool memory_folder_io::exists(std::string_view path) const {
  return nodes_.count(path) != 0;
}

std::string memory_folder_io::dump() const {
  std::string out;
  for (const auto& [path, n] : nodes_) {
    if (is_internal_path(path)) continue;
    out += path;
    out += ' ';
    out += to_string(n.kind);
    if (n.kind == file_kind::regular) {
      out += " mode=" + std::to_string(n.mode) + " mtime=" + std::to_string(n.mtime_ns) +
             " sha256=" + to_hex(sha256(n.content));
    } else if (n.kind == file_kind::directory) {
      out += " mode=" + std::to_string(n.mode);
    } else {
      out += " -> " + n.content;
    }
    out += '\n';
  }
  return out;
}

}  // namespace raftsync::folder
