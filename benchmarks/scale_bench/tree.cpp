#include "tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

namespace scale_bench {
namespace {

constexpr std::uint64_t prime1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t prime2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t prime3 = 0x165667B19E3779F9ull;
constexpr std::uint64_t prime4 = 0x85EBCA77C2B2AE63ull;
constexpr std::uint64_t prime5 = 0x27D4EB2F165667C5ull;

std::uint64_t rotl(std::uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

std::uint64_t read64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::uint64_t round64(std::uint64_t acc, std::uint64_t input) {
  acc += input * prime2;
  acc = rotl(acc, 31);
  return acc * prime1;
}

std::uint64_t hash_string(const std::string& text) {
  content_hasher h;
  h.update(reinterpret_cast<const unsigned char*>(text.data()), text.size());
  return h.finish();
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

bool is_below(const std::string& path, const std::string& dir) {
  return dir.empty() || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

// The first entry below dir: every path "dir/..." sorts in one run starting there ("dir-x",
// between "dir" and "dir/", does not).
tree_map::const_iterator subtree_begin(const tree_map& tree, const std::string& dir) {
  return dir.empty() ? tree.begin() : tree.lower_bound(dir + "/");
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// File sizes of one kind of tree; see plan_tree() and write_burst().
struct size_profile {
  double empty_fraction;
  double large_fraction;   // large_min..large_max
  double medium_fraction;  // 16 KiB..1 MiB
  std::uint64_t small_min;
  std::uint64_t large_min;
  std::uint64_t large_max;
  double executable_fraction;
  double symlink_fraction;  // symlinks per file
};

constexpr size_profile tree_profile{0.005, 0.002, 0.063, 512, 1 << 20, 8 << 20, 0.05, 0.01};
constexpr size_profile burst_profile{0.01, 0.0, 0.0, 100, 1 << 20, 4 << 20, 0.03, 0.0};

constexpr const char* directory_words[] = {
    "src",   "lib",      "docs",    "assets", "test",   "include",  "images",      "data",
    "build", "tools",    "scripts", "vendor", "config", "modules",  "pkg",         "res",
    "util",  "examples", "api",     "core",   "web",    "internal", "third_party", "locale"};
constexpr const char* extensions[] = {".c",    ".h",   ".cpp",  ".hpp",  ".py",  ".js",  ".ts",
                                      ".md",   ".txt", ".json", ".yaml", ".png", ".jpg", ".svg",
                                      ".html", ".css", ".go",   ".rs",   ".bin", ".dat"};

// Adds directories and files (and symlinks) below `prefix` (an existing or planned directory)
// to *tree: `files` regular files in directories of ~20–200 entries up to depth_max levels.
void plan_into(tree_map* tree, const std::string& prefix, std::uint64_t files,
               const size_profile& profile, random_source& rng, std::uint64_t* large_budget) {
  struct dir_node {
    std::string path;
    int depth;
    std::size_t parent;
    std::vector<std::string> file_names;
    std::vector<std::string> dir_names;
  };
  const int depth_max = 5;
  const std::uint64_t dir_count = std::max<std::uint64_t>(1, (files + 45) / 90);
  std::vector<dir_node> dirs;
  dirs.push_back({prefix, 0, 0, {}, {}});
  for (std::uint64_t i = 1; i < dir_count; ++i) {
    std::size_t parent = 0;
    for (int attempt = 0; attempt < 8; ++attempt) {
      std::size_t candidate = rng.uniform(0, dirs.size() - 1);
      if (dirs[candidate].depth < depth_max) {
        parent = candidate;
        break;
      }
    }
    std::string name =
        fmt::format("{}-{}", directory_words[rng.uniform(0, std::size(directory_words) - 1)], i);
    dirs[parent].dir_names.push_back(name);
    dirs.push_back({join(dirs[parent].path, name), dirs[parent].depth + 1, parent, {}, {}});
    (*tree)[dirs.back().path] = tree_entry{entry_type::directory, 0755, 0, 0, {}};
  }
  // Each directory's share of the files: weights of 20..200, scaled to the total.
  std::vector<std::uint64_t> weights(dirs.size());
  std::uint64_t weight_sum = 0;
  for (auto& w : weights) {
    w = rng.uniform(20, 200);
    weight_sum += w;
  }
  std::vector<std::uint64_t> shares(dirs.size());
  std::uint64_t assigned = 0;
  for (std::size_t i = 0; i < dirs.size(); ++i) {
    shares[i] = files * weights[i] / weight_sum;
    assigned += shares[i];
  }
  for (std::uint64_t i = 0; assigned < files; ++i, ++assigned)
    ++shares[i % dirs.size()];

  for (std::size_t d = 0; d < dirs.size(); ++d) {
    dir_node& dir = dirs[d];
    for (std::uint64_t j = 0; j < shares[d]; ++j) {
      std::string name = fmt::format("f{}-{:04x}{}", j, rng.uniform(0, 0xffff),
                                     extensions[rng.uniform(0, std::size(extensions) - 1)]);
      tree_entry entry{entry_type::file, 0644, 0, 0, {}};
      double pick = rng.unit();
      if (pick < profile.empty_fraction) {
        entry.size_bytes = 0;
      } else if (*large_budget > 0 && pick < profile.empty_fraction + profile.large_fraction) {
        entry.size_bytes = rng.log_uniform(profile.large_min, profile.large_max);
        --*large_budget;
      } else if (pick < profile.empty_fraction + profile.large_fraction + profile.medium_fraction) {
        entry.size_bytes = rng.log_uniform(16 << 10, 1 << 20);
      } else {
        entry.size_bytes = rng.log_uniform(profile.small_min, 16 << 10);
      }
      if (rng.unit() < profile.executable_fraction) entry.mode = 0755;
      (*tree)[join(dir.path, name)] = entry;
      dir.file_names.push_back(std::move(name));
    }
  }
  // Relative symlinks: to a sibling file or directory, or to a file of the parent directory.
  for (std::size_t d = 0; d < dirs.size(); ++d) {
    const dir_node& dir = dirs[d];
    if (dir.file_names.empty()) continue;
    std::uint64_t links = 0;
    for (std::size_t j = 0; j < dir.file_names.size(); ++j)
      if (rng.unit() < profile.symlink_fraction) ++links;
    const dir_node* parent = d == 0 ? nullptr : &dirs[dir.parent];
    for (std::uint64_t k = 0; k < links; ++k) {
      std::string target;
      double pick = rng.unit();
      if (pick < 0.2 && !dir.dir_names.empty()) {
        target = dir.dir_names[rng.uniform(0, dir.dir_names.size() - 1)];
      } else if (pick < 0.5 && parent != nullptr && !parent->file_names.empty()) {
        target = "../" + parent->file_names[rng.uniform(0, parent->file_names.size() - 1)];
      } else {
        target = dir.file_names[rng.uniform(0, dir.file_names.size() - 1)];
      }
      (*tree)[join(dir.path, fmt::format("link-{}", k))] =
          tree_entry{entry_type::symlink, 0, 0, 0, target};
    }
  }
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(fmt::format("{}: {}", what, std::strerror(errno)));
}

// Writes one file's content (derived from seed and path) and returns its hash.
std::uint64_t write_file(const std::filesystem::path& full, const std::string& relative,
                         const tree_entry& entry, std::uint64_t seed,
                         std::vector<unsigned char>& buffer) {
  int fd = open(full.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, entry.mode);
  check(fd >= 0, "create " + full.string());
  random_source content(seed ^ hash_string(relative));
  content_hasher hasher;
  std::uint64_t left = entry.size_bytes;
  while (left > 0) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
    content.fill(buffer.data(), n);
    hasher.update(buffer.data(), n);
    std::size_t done = 0;
    while (done < n) {
      ssize_t w = write(fd, buffer.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) close(fd);
      check(w >= 0, "write " + full.string());
      done += static_cast<std::size_t>(w);
    }
    left -= n;
  }
  if (entry.mode != 0644) fchmod(fd, entry.mode);  // past the umask
  check(close(fd) == 0, "close " + full.string());
  return hasher.finish();
}

// Creates every entry of `tree` below `prefix` ("" = all) under root, in map order (a
// directory sorts before its contents), symlinks last; fills in content hashes.
void write_entries(const std::filesystem::path& root, tree_map* tree, const std::string& prefix,
                   std::uint64_t seed) {
  std::vector<unsigned char> buffer(1 << 20);
  if (!prefix.empty()) {
    const std::filesystem::path full = root / prefix;
    check(mkdir(full.c_str(), 0755) == 0, "mkdir " + full.string());
  }
  auto begin = prefix.empty() ? tree->begin() : tree->lower_bound(prefix + "/");
  std::vector<tree_map::iterator> links;
  for (auto it = begin; it != tree->end() && is_below(it->first, prefix); ++it) {
    const std::filesystem::path full = root / it->first;
    tree_entry& entry = it->second;
    if (entry.type == entry_type::directory) {
      check(mkdir(full.c_str(), entry.mode) == 0, "mkdir " + full.string());
    } else if (entry.type == entry_type::file) {
      entry.content_hash = write_file(full, it->first, entry, seed, buffer);
    } else {
      links.push_back(it);
    }
  }
  for (auto it : links) {
    const std::filesystem::path full = root / it->first;
    check(symlink(it->second.symlink_target.c_str(), full.c_str()) == 0,
          "symlink " + full.string());
  }
}

struct walker {
  bool hash_contents;
  tree_map* out;
  std::string* error;
  std::vector<unsigned char> buffer = std::vector<unsigned char>(1 << 20);

  bool fail(const std::string& what) {
    *error = fmt::format("{}: {}", what, std::strerror(errno));
    return false;
  }

  bool hash_file(int dir_fd, const char* name, const std::string& relative, tree_entry* entry) {
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? true : fail("open " + relative);
    content_hasher hasher;
    std::uint64_t size = 0;
    while (true) {
      // Fill the buffer completely (or to EOF) so the hash sees whole stripes, the same split as
      // when the file was written.
      std::size_t filled = 0;
      while (filled < buffer.size()) {
        ssize_t n = read(fd, buffer.data() + filled, buffer.size() - filled);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          close(fd);
          return fail("read " + relative);
        }
        if (n == 0) break;
        filled += static_cast<std::size_t>(n);
      }
      hasher.update(buffer.data(), filled);
      size += filled;
      if (filled < buffer.size()) break;
    }
    close(fd);
    entry->content_hash = hasher.finish();
    entry->size_bytes = size;  // what was hashed, in case the file changed since the lstat
    return true;
  }

  bool walk(int dir_fd, const std::string& relative_dir) {
    DIR* dir = fdopendir(dir_fd);
    if (dir == nullptr) {
      close(dir_fd);
      return fail("opendir " + relative_dir);
    }
    bool ok = true;
    while (dirent* d = readdir(dir)) {
      const char* name = d->d_name;
      if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
      if (std::strncmp(name, ".raftsync-tmp-", 14) == 0) continue;
      if (relative_dir.empty() && std::strcmp(name, ".raftsync") == 0) continue;
      const std::string relative = join(relative_dir, name);
      struct stat st {};
      if (fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;
        ok = fail("lstat " + relative);
        break;
      }
      tree_entry entry;
      entry.mode = st.st_mode & 07777;
      if (S_ISDIR(st.st_mode)) {
        entry.type = entry_type::directory;
        (*out)[relative] = entry;
        int child = openat(dirfd(dir), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child < 0) {
          if (errno == ENOENT) continue;
          ok = fail("open " + relative);
          break;
        }
        if (!walk(child, relative)) {
          ok = false;
          break;
        }
      } else if (S_ISLNK(st.st_mode)) {
        entry.type = entry_type::symlink;
        entry.mode = 0;
        char target[4096];
        ssize_t n = readlinkat(dirfd(dir), name, target, sizeof target);
        if (n < 0) {
          if (errno == ENOENT) continue;
          ok = fail("readlink " + relative);
          break;
        }
        entry.symlink_target.assign(target, static_cast<std::size_t>(n));
        (*out)[relative] = entry;
      } else if (S_ISREG(st.st_mode)) {
        entry.type = entry_type::file;
        entry.size_bytes = static_cast<std::uint64_t>(st.st_size);
        if (hash_contents && !hash_file(dirfd(dir), name, relative, &entry)) {
          ok = false;
          break;
        }
        (*out)[relative] = entry;
      }
      // Other types (fifos, sockets, devices) are never generated and not compared.
    }
    closedir(dir);
    return ok;
  }
};

thread_local disk_usage* usage_accumulator = nullptr;

int add_usage(const char*, const struct stat* st, int type, struct FTW*) {
  if (type != FTW_NS) {
    usage_accumulator->allocated_bytes += static_cast<std::uint64_t>(st->st_blocks) * 512;
    usage_accumulator->apparent_bytes += static_cast<std::uint64_t>(st->st_size);
  }
  return 0;
}

}  // namespace

void content_hasher::stripe(const unsigned char* data) {
  for (int i = 0; i < 4; ++i)
    lanes_[i] = round64(lanes_[i], read64(data + 8 * i));
}

void content_hasher::update(const unsigned char* data, std::size_t size) {
  total_ += size;
  if (pending_size_ > 0) {
    std::size_t take = std::min(size, sizeof pending_ - pending_size_);
    std::memcpy(pending_ + pending_size_, data, take);
    pending_size_ += take;
    data += take;
    size -= take;
    if (pending_size_ < sizeof pending_) return;
    stripe(pending_);
    pending_size_ = 0;
  }
  while (size >= 32) {
    stripe(data);
    data += 32;
    size -= 32;
  }
  std::memcpy(pending_, data, size);
  pending_size_ = size;
}

std::uint64_t content_hasher::finish() {
  std::uint64_t h;
  if (total_ >= 32) {
    h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) + rotl(lanes_[3], 18);
    for (std::uint64_t lane : lanes_) {
      h ^= round64(0, lane);
      h = h * prime1 + prime4;
    }
  } else {
    h = prime5;
  }
  h += total_;
  const unsigned char* p = pending_;
  std::size_t left = pending_size_;
  for (; left >= 8; p += 8, left -= 8) {
    h ^= round64(0, read64(p));
    h = rotl(h, 27) * prime1 + prime4;
  }
  for (; left > 0; ++p, --left) {
    h ^= *p * prime5;
    h = rotl(h, 11) * prime1;
  }
  h ^= h >> 33;
  h *= prime2;
  h ^= h >> 29;
  h *= prime3;
  h ^= h >> 32;
  return h;
}

std::uint64_t random_source::uniform(std::uint64_t low, std::uint64_t high) {
  return low + next() % (high - low + 1);
}

double random_source::unit() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::uint64_t random_source::log_uniform(std::uint64_t low, std::uint64_t high) {
  const double value =
      std::exp(std::log(static_cast<double>(low)) +
               unit() * (std::log(static_cast<double>(high)) - std::log(static_cast<double>(low))));
  return std::clamp<std::uint64_t>(static_cast<std::uint64_t>(value), low, high);
}

void random_source::fill(unsigned char* buffer, std::size_t size) {
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t v = next();
    std::memcpy(buffer + i, &v, 8);
  }
  if (i < size) {
    std::uint64_t v = next();
    std::memcpy(buffer + i, &v, size - i);
  }
}

tree_summary summarize(const tree_map& tree) {
  tree_summary s;
  for (const auto& [path, entry] : tree) {
    if (entry.type == entry_type::file) {
      ++s.files;
      s.total_bytes += entry.size_bytes;
    } else if (entry.type == entry_type::directory) {
      ++s.directories;
    } else {
      ++s.symlinks;
    }
  }
  return s;
}

tree_plan plan_tree(std::uint64_t files, std::uint64_t seed) {
  tree_plan plan;
  plan.seed = seed;
  random_source rng(seed);
  std::uint64_t large_budget = ~0ull;
  plan_into(&plan.entries, "", files, tree_profile, rng, &large_budget);
  return plan;
}

void write_tree(const std::filesystem::path& root, tree_plan& plan) {
  check(mkdir(root.c_str(), 0755) == 0, "mkdir " + root.string());
  write_entries(root, &plan.entries, "", plan.seed);
}

burst_summary write_burst(const std::filesystem::path& root, const std::string& prefix,
                          std::uint64_t count, std::uint64_t seed, tree_map* expected) {
  tree_map planned;
  planned[prefix] = tree_entry{entry_type::directory, 0755, 0, 0, {}};
  random_source rng(seed);
  std::uint64_t large_budget = std::max<std::uint64_t>(count >= 500 ? 1 : 0, count / 5000);
  size_profile profile = burst_profile;
  profile.large_fraction = count == 0 ? 0 : 2.0 * static_cast<double>(large_budget) / count;
  plan_into(&planned, prefix, count, profile, rng, &large_budget);
  // "A few large ones" whatever the dice said.
  std::vector<tree_entry*> small_files;
  for (auto& [path, entry] : planned)
    if (entry.type == entry_type::file && entry.size_bytes < (1 << 20))
      small_files.push_back(&entry);
  for (; large_budget > 0 && !small_files.empty(); --large_budget) {
    small_files[rng.uniform(0, small_files.size() - 1)]->size_bytes =
        rng.log_uniform(profile.large_min, profile.large_max);
  }
  const auto start = std::chrono::steady_clock::now();
  write_entries(root, &planned, prefix, seed);
  burst_summary summary;
  summary.writer_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  tree_summary s = summarize(planned);
  summary.files = s.files;
  summary.directories = s.directories;
  summary.total_bytes = s.total_bytes;
  expected->merge(planned);
  return summary;
}

bool walk_tree(const std::filesystem::path& root, bool hash_contents, tree_map* out,
               std::string* error) {
  out->clear();
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *error = fmt::format("open {}: {}", root.string(), std::strerror(errno));
    return false;
  }
  walker w{hash_contents, out, error};
  return w.walk(fd, "");
}

std::string tree_diff::describe() const {
  std::string text = fmt::format("{} missing, {} extra, {} different", missing, extra, different);
  for (const std::string& example : examples)
    text += "\n      " + example;
  return text;
}

tree_diff compare_trees(const tree_map& expected, const tree_map& actual, bool compare_contents,
                        std::size_t examples_max) {
  tree_diff diff;
  auto note = [&](std::string text) {
    if (diff.examples.size() < examples_max) diff.examples.push_back(std::move(text));
  };
  auto e = expected.begin();
  auto a = actual.begin();
  while (e != expected.end() || a != actual.end()) {
    if (a == actual.end() || (e != expected.end() && e->first < a->first)) {
      ++diff.missing;
      note("missing: " + e->first);
      ++e;
    } else if (e == expected.end() || a->first < e->first) {
      ++diff.extra;
      note("extra: " + a->first);
      ++a;
    } else {
      tree_entry want = e->second;
      tree_entry got = a->second;
      if (!compare_contents) want.content_hash = got.content_hash = 0;
      if (!(want == got)) {
        ++diff.different;
        note(fmt::format("different: {} (size {} vs {}, mode {:o} vs {:o}{})", e->first,
                         want.size_bytes, got.size_bytes, want.mode, got.mode,
                         want.content_hash != got.content_hash ? ", content" : ""));
      }
      ++e;
      ++a;
    }
  }
  return diff;
}

std::uint64_t files_below(const tree_map& tree, const std::string& dir) {
  std::uint64_t count = 0;
  for (auto it = subtree_begin(tree, dir); it != tree.end() && is_below(it->first, dir); ++it)
    if (it->second.type == entry_type::file) ++count;
  return count;
}

std::vector<std::string> pick_subtrees(const tree_map& tree, const std::string& prefix,
                                       std::uint64_t target) {
  std::vector<std::string> picked;
  std::uint64_t remaining = target;
  auto take = [&](auto& self, const std::string& dir) -> void {
    std::vector<std::string> children;
    for (auto it = subtree_begin(tree, dir); it != tree.end() && is_below(it->first, dir); ++it) {
      if (it->second.type == entry_type::directory && parent_of(it->first) == dir) {
        children.push_back(it->first);
      }
    }
    for (const std::string& child : children) {
      if (remaining == 0) return;
      const std::uint64_t count = files_below(tree, child);
      if (count == 0) continue;
      if (count <= remaining) {
        picked.push_back(child);
        remaining -= count;
      } else {
        self(self, child);
      }
    }
  };
  take(take, prefix);
  return picked;
}

std::string closest_directory(const tree_map& tree, std::uint64_t target) {
  std::unordered_map<std::string, std::uint64_t> counts;
  for (const auto& [path, entry] : tree) {
    if (entry.type == entry_type::directory) counts.emplace(path, 0);
    if (entry.type != entry_type::file) continue;
    for (std::string dir = parent_of(path); !dir.empty(); dir = parent_of(dir))
      ++counts[dir];
  }
  std::string best;
  std::uint64_t best_distance = ~0ull;
  for (const auto& [dir, count] : counts) {
    const std::uint64_t distance = count > target ? count - target : target - count;
    if (distance < best_distance || (distance == best_distance && dir < best)) {
      best = dir;
      best_distance = distance;
    }
  }
  return best;
}

void erase_subtree(tree_map* tree, const std::string& dir) {
  tree->erase(dir);
  auto it = tree->lower_bound(dir + "/");
  while (it != tree->end() && is_below(it->first, dir))
    it = tree->erase(it);
}

void rename_subtree(tree_map* tree, const std::string& from, const std::string& to) {
  tree_map moved;
  auto node = tree->extract(from);
  if (!node.empty()) {
    node.key() = to;
    moved.insert(std::move(node));
  }
  auto it = tree->lower_bound(from + "/");
  while (it != tree->end() && is_below(it->first, from)) {
    auto next = std::next(it);
    auto child = tree->extract(it);
    child.key() = to + child.key().substr(from.size());
    moved.insert(std::move(child));
    it = next;
  }
  tree->merge(moved);
}

disk_usage measure_disk_usage(const std::filesystem::path& path) {
  disk_usage usage;
  usage_accumulator = &usage;
  nftw(path.c_str(), add_usage, 64, FTW_PHYS);
  usage_accumulator = nullptr;
  return usage;
}

}  // namespace scale_bench
