#include "raftsync/storage/faulty_file_io.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

namespace raftsync::storage {

namespace {
std::error_code sys(int e) noexcept {
  return {e, std::system_category()};
}

std::string key_of(const std::filesystem::path& path) {
  std::string s = path.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/')
    s.pop_back();
  return s;
}
std::string parent_of(const std::string& key) {
  return key_of(std::filesystem::path(key).parent_path());
}
bool is_root(const std::string& key) {
  return key.empty() || key == "/" || key == ".";
}

struct pending_op {
  bool is_write = true;  // write of `bytes` at `offset`, or a resize to `offset`
  std::uint64_t offset = 0;
  std::string bytes;
};
}  // namespace

struct faulty_file_io::inode {
  bool is_dir = false;
  std::string data;                 // current contents
  std::string durable;              // contents as of the last successful datasync
  std::vector<pending_op> pending;  // operations since the last datasync, in order
};

struct faulty_file_io::state {
  std::map<std::string, std::shared_ptr<inode>> names;          // current directory entries
  std::map<std::string, std::shared_ptr<inode>> durable_names;  // as of the last sync_dir
  std::uint64_t generation = 0;                                 // bumped by every restart

  bool dir_exists(const std::string& key) const {
    if (is_root(key)) return true;
    auto it = names.find(key);
    return it != names.end() && it->second->is_dir;
  }
};

class faulty_file final : public file {
 public:
  faulty_file(faulty_file_io& io, std::shared_ptr<faulty_file_io::inode> node, bool writable)
      : io_(io), node_(std::move(node)), writable_(writable), generation_(io.state_->generation) {}

  std::error_code pwrite(std::uint64_t offset, const void* data, std::size_t size) override {
    if (auto ec = check(true)) return ec;
    if (auto ec = io_.before_operation()) return ec;
    if (auto ec = check_space(offset + size)) return ec;
    auto& d = node_->data;
    if (d.size() < offset + size) d.resize(offset + size, '\0');
    std::memcpy(d.data() + offset, data, size);
    node_->pending.push_back({true, offset, std::string(static_cast<const char*>(data), size)});
    return {};
  }

  result<std::size_t> pread(std::uint64_t offset, void* data, std::size_t size) override {
    if (auto ec = check(false)) return ec;
    if (io_.crashed_) return sys(EIO);
    const auto& d = node_->data;
    if (offset >= d.size()) return std::size_t{0};
    const std::size_t n = std::min<std::uint64_t>(size, d.size() - offset);
    std::memcpy(data, d.data() + offset, n);
    return n;
  }

  std::error_code datasync() override {
    if (auto ec = check(false)) return ec;
    if (auto ec = io_.before_operation()) return ec;
    ++io_.datasyncs_;
    node_->durable = node_->data;
    node_->pending.clear();
    return {};
  }

  std::error_code truncate(std::uint64_t size) override {
    if (auto ec = check(true)) return ec;
    if (auto ec = io_.before_operation()) return ec;
    if (auto ec = check_space(size)) return ec;
    node_->data.resize(size, '\0');
    node_->pending.push_back({false, size, {}});
    return {};
  }

  std::error_code allocate(std::uint64_t offset, std::uint64_t size) override {
    if (auto ec = check(true)) return ec;
    if (auto ec = io_.before_operation()) return ec;
    if (auto ec = check_space(offset + size)) return ec;
    if (node_->data.size() < offset + size) {
      node_->data.resize(offset + size, '\0');
      node_->pending.push_back({false, offset + size, {}});
    }
    return {};
  }

  result<std::uint64_t> size() override {
    if (auto ec = check(false)) return ec;
    if (io_.crashed_) return sys(EIO);
    return static_cast<std::uint64_t>(node_->data.size());
  }

 private:
  std::error_code check(bool write) const {
    if (generation_ != io_.state_->generation) return sys(EBADF);  // opened before a restart
    if (write && !writable_) return sys(EBADF);
    return {};
  }
  std::error_code check_space(std::uint64_t new_size) const {
    if (!io_.capacity_ || new_size <= node_->data.size()) return {};
    if (io_.used_bytes() + (new_size - node_->data.size()) > *io_.capacity_) return sys(ENOSPC);
    return {};
  }

  faulty_file_io& io_;
  std::shared_ptr<faulty_file_io::inode> node_;
  bool writable_;
  std::uint64_t generation_;
};

faulty_file_io::faulty_file_io(std::uint64_t seed)
    : state_(std::make_shared<state>()),
      fail_rng_(seed),
      crash_rng_(seed ^ 0x9E3779B97F4A7C15ull) {}

faulty_file_io::~faulty_file_io() = default;

std::error_code faulty_file_io::before_operation(bool counted) {
  if (crashed_) return sys(EIO);
  if (!counted) return {};
  ++operations_;
  if (crash_at_ != 0 && operations_ == crash_at_) {
    crashed_ = true;
    return sys(EIO);
  }
  if (auto it = fail_at_.find(operations_); it != fail_at_.end()) {
    const auto ec = it->second;
    fail_at_.erase(it);
    return ec;
  }
  if (fail_probability_ > 0 &&
      std::uniform_real_distribution<double>(0.0, 1.0)(fail_rng_) < fail_probability_) {
    return fail_error_;
  }
  return {};
}

void faulty_file_io::fail_randomly(double probability, std::error_code ec, std::uint64_t seed) {
  fail_probability_ = probability;
  fail_error_ = ec;
  fail_rng_.seed(seed);
}

std::uint64_t faulty_file_io::used_bytes() const {
  std::set<const inode*> seen;
  std::uint64_t total = 0;
  for (const auto& [name, node] : state_->names) {
    if (seen.insert(node.get()).second) total += node->data.size();
  }
  return total;
}

void faulty_file_io::restart() {
  crashed_ = false;
  crash_at_ = 0;
  auto& s = *state_;
  std::set<inode*> seen;
  for (auto& [name, node] : s.durable_names) {
    if (!seen.insert(node.get()).second) continue;
    std::string content = node->durable;
    if (torn_writes_ && !node->pending.empty()) {
      // An in-order prefix of the unsynced operations reached the disk, the next one partially.
      const std::size_t whole =
          std::uniform_int_distribution<std::size_t>(0, node->pending.size())(crash_rng_);
      for (std::size_t i = 0; i < whole; ++i) {
        const auto& op = node->pending[i];
        if (op.is_write) {
          if (content.size() < op.offset + op.bytes.size()) {
            content.resize(op.offset + op.bytes.size(), '\0');
          }
          std::memcpy(content.data() + op.offset, op.bytes.data(), op.bytes.size());
        } else {
          content.resize(op.offset, '\0');
        }
      }
      if (whole < node->pending.size() && node->pending[whole].is_write) {
        const auto& op = node->pending[whole];
        const std::size_t part =
            std::uniform_int_distribution<std::size_t>(0, op.bytes.size())(crash_rng_);
        if (content.size() < op.offset + part) content.resize(op.offset + part, '\0');
        std::memcpy(content.data() + op.offset, op.bytes.data(), part);
      }
    }
    node->data = content;
    node->durable = std::move(content);
    node->pending.clear();
  }
  s.names = s.durable_names;
  ++s.generation;
}

result<std::unique_ptr<file>> faulty_file_io::open(const std::filesystem::path& path,
                                                   open_flags flags) {
  // Opening changes nothing unless it may create or truncate: only then is it counted.
  const bool changes = has_flag(flags, open_flags::create) || has_flag(flags, open_flags::truncate);
  if (auto ec = before_operation(changes)) return ec;
  const std::string key = key_of(path);
  auto& s = *state_;
  const bool writable = has_flag(flags, open_flags::read_write);
  auto it = s.names.find(key);
  if (it == s.names.end()) {
    if (!has_flag(flags, open_flags::create)) return sys(ENOENT);
    if (!s.dir_exists(parent_of(key))) return sys(ENOENT);
    it = s.names.emplace(key, std::make_shared<inode>()).first;
  } else {
    if (it->second->is_dir) return sys(EISDIR);
    if (has_flag(flags, open_flags::create) && has_flag(flags, open_flags::exclusive)) {
      return sys(EEXIST);
    }
  }
  if (has_flag(flags, open_flags::truncate) && writable && !it->second->data.empty()) {
    it->second->data.clear();
    it->second->pending.push_back({false, 0, {}});
  }
  return std::unique_ptr<file>(new faulty_file(*this, it->second, writable));
}

std::error_code faulty_file_io::rename(const std::filesystem::path& from,
                                       const std::filesystem::path& to) {
  if (auto ec = before_operation()) return ec;
  auto& s = *state_;
  const std::string from_key = key_of(from), to_key = key_of(to);
  auto it = s.names.find(from_key);
  if (it == s.names.end()) return sys(ENOENT);
  if (it->second->is_dir) return sys(EISDIR);
  if (!s.dir_exists(parent_of(to_key))) return sys(ENOENT);
  if (from_key == to_key) return {};
  auto node = it->second;
  s.names.erase(it);
  s.names[to_key] = std::move(node);
  return {};
}

std::error_code faulty_file_io::unlink(const std::filesystem::path& path) {
  if (auto ec = before_operation()) return ec;
  auto& s = *state_;
  auto it = s.names.find(key_of(path));
  if (it == s.names.end()) return sys(ENOENT);
  if (it->second->is_dir) return sys(EISDIR);
  s.names.erase(it);
  return {};
}

std::error_code faulty_file_io::sync_dir(const std::filesystem::path& dir) {
  if (auto ec = before_operation()) return ec;
  auto& s = *state_;
  const std::string key = key_of(dir);
  if (!s.dir_exists(key)) return sys(ENOENT);
  for (auto it = s.durable_names.begin(); it != s.durable_names.end();) {
    if (parent_of(it->first) == key && s.names.find(it->first) == s.names.end()) {
      it = s.durable_names.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, node] : s.names) {
    if (parent_of(name) == key) s.durable_names[name] = node;
  }
  return {};
}

std::error_code faulty_file_io::create_dir(const std::filesystem::path& dir) {
  if (auto ec = before_operation()) return ec;
  auto& s = *state_;
  const std::string key = key_of(dir);
  if (is_root(key)) return {};
  if (auto it = s.names.find(key); it != s.names.end()) {
    return it->second->is_dir ? std::error_code{} : sys(EEXIST);
  }
  if (!s.dir_exists(parent_of(key))) return sys(ENOENT);
  auto node = std::make_shared<inode>();
  node->is_dir = true;
  s.names.emplace(key, std::move(node));
  return {};
}

result<std::vector<std::string>> faulty_file_io::list_dir(const std::filesystem::path& dir) {
  if (auto ec = before_operation(false)) return ec;
  const std::string key = key_of(dir);
  if (!state_->dir_exists(key)) return sys(ENOENT);
  std::vector<std::string> out;
  for (const auto& [name, node] : state_->names) {
    if (!node->is_dir && parent_of(name) == key) {
      out.push_back(std::filesystem::path(name).filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

result<std::uint64_t> faulty_file_io::file_size(const std::filesystem::path& path) {
  if (auto ec = before_operation(false)) return ec;
  auto it = state_->names.find(key_of(path));
  if (it == state_->names.end()) return sys(ENOENT);
  return static_cast<std::uint64_t>(it->second->data.size());
}

result<std::string> faulty_file_io::read_durable(const std::filesystem::path& path) const {
  auto it = state_->durable_names.find(key_of(path));
  if (it == state_->durable_names.end() || it->second->is_dir) return sys(ENOENT);
  return it->second->durable;
}

std::error_code faulty_file_io::overwrite_durable(const std::filesystem::path& path,
                                                  std::string data) {
  auto it = state_->durable_names.find(key_of(path));
  if (it == state_->durable_names.end() || it->second->is_dir) return sys(ENOENT);
  it->second->durable = data;
  it->second->data = std::move(data);
  it->second->pending.clear();
  return {};
}

bool faulty_file_io::exists(const std::filesystem::path& path) const {
  return state_->names.count(key_of(path)) != 0;
}

}  // namespace raftsync::storage
