// Trees for scale_bench: generating a realistic one, the expected state the benchmark keeps in
// memory as it changes a folder, and a digest walk that compares a folder on disk with it.
#pragma once

#include "raftsync/raft/random.hpp"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace scale_bench {

enum class entry_type : std::uint8_t { file, directory, symlink };

// What the benchmark compares between replicas: type, permission bits, size, symlink target and
// content hash (never mtime: the product sets it on apply).
struct tree_entry {
  entry_type type = entry_type::file;
  std::uint32_t mode = 0;          // permission bits (& 07777); 0 for symlinks
  std::uint64_t size_bytes = 0;    // files only
  std::uint64_t content_hash = 0;  // files only (content_hasher); 0 when not hashed
  std::string symlink_target;      // symlinks only

  bool operator==(const tree_entry&) const = default;
};

// Relative path ("a/b/c", no leading slash) → entry; the root itself is not listed. Sorted, so
// a directory's subtree is the contiguous range after it.
using tree_map = std::map<std::string, tree_entry>;

// A 64-bit streaming hash (XXH64's structure): fast enough to compare gigabytes between runs;
// not cryptographic.
class content_hasher {
 public:
  void update(const unsigned char* data, std::size_t size);
  std::uint64_t finish();

 private:
  void stripe(const unsigned char* data);
  std::uint64_t lanes_[4] = {0x9E3779B185EBCA87ull + 0xC2B2AE3D27D4EB4Full, 0xC2B2AE3D27D4EB4Full,
                             0, 0 - 0x9E3779B185EBCA87ull};
  unsigned char pending_[32] = {};
  std::size_t pending_size_ = 0;
  std::uint64_t total_ = 0;
};

// Deterministic random numbers: the Raft core's generator (xoshiro256**), with the shapes a tree
// generator needs.
class random_source {
 public:
  explicit random_source(std::uint64_t seed) : generator_(seed) {}
  std::uint64_t next() { return generator_.next(); }
  std::uint64_t uniform(std::uint64_t low, std::uint64_t high);  // [low, high]
  double unit();                                                 // [0, 1)
  std::uint64_t log_uniform(std::uint64_t low, std::uint64_t high);
  void fill(unsigned char* buffer, std::size_t size);

 private:
  raftsync::raft::random_generator generator_;
};

struct tree_summary {
  std::uint64_t files = 0;
  std::uint64_t directories = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t total_bytes = 0;  // file contents
};
tree_summary summarize(const tree_map& tree);

// Plans a tree of `files` regular files (sizes: ~0.5 % empty, ~93 % 0.5–16 KiB, ~6.3 % 16 KiB–
// 1 MiB, ~0.2 % 1–8 MiB, log-uniform within each class; ~5 % executable), in directories of
// ~20–200 entries nested up to 5 levels, plus ~1 % relative symlinks to a sibling or to an entry
// of the parent directory. Writes nothing: content is derived from (seed, path) when written.
struct tree_plan {
  tree_map entries;  // content_hash still 0
  std::uint64_t seed = 0;
};
tree_plan plan_tree(std::uint64_t files, std::uint64_t seed);

// Creates the planned tree under root (which must not exist) and fills in every file's
// content_hash. Throws std::runtime_error on an I/O error.
void write_tree(const std::filesystem::path& root, tree_plan& plan);

// A burst the way `git clone` writes a checkout: new nested directories of small files
// (0.1–16 KiB, some executable) and a few large ones (1–4 MiB, one per ~5,000 files, at least one
// when count >= 500), under `prefix` (a new relative directory). Adds what it writes to
// *expected. Throws std::runtime_error on an I/O error.
struct burst_summary {
  std::uint64_t files = 0;
  std::uint64_t directories = 0;
  std::uint64_t total_bytes = 0;
  double writer_s = 0;  // the writing loop alone (mkdir, open, write, close), without planning
};
burst_summary write_burst(const std::filesystem::path& root, const std::string& prefix,
                          std::uint64_t count, std::uint64_t seed, tree_map* expected);

// Walks the folder (skipping raftsync's internal names: ".raftsync" and ".raftsync-tmp-*"),
// lstat()ing every entry and, when hash_contents, reading and hashing every file. False with
// *error set when the walk fails (an entry vanishing during the walk is skipped).
bool walk_tree(const std::filesystem::path& root, bool hash_contents, tree_map* out,
               std::string* error);

// How two trees differ: counts and the first few paths of each kind.
struct tree_diff {
  std::uint64_t missing = 0;    // in expected, not in actual
  std::uint64_t extra = 0;      // in actual, not in expected
  std::uint64_t different = 0;  // in both, some field differs
  std::vector<std::string> examples;
  bool same() const { return missing == 0 && extra == 0 && different == 0; }
  std::string describe() const;
};
// compare_contents = false ignores content_hash (for a metadata-only walk).
tree_diff compare_trees(const tree_map& expected, const tree_map& actual, bool compare_contents,
                        std::size_t examples_max = 5);

// Number of regular files at or below `dir` ("" = the whole tree).
std::uint64_t files_below(const tree_map& tree, const std::string& dir);
// Disjoint directories below `prefix` whose files add up to about `target` (whole subtrees taken
// greedily, larger ones split). Empty when `prefix` holds no directory.
std::vector<std::string> pick_subtrees(const tree_map& tree, const std::string& prefix,
                                       std::uint64_t target);
// The directory (not the root) whose subtree holds the number of files closest to `target`.
std::string closest_directory(const tree_map& tree, std::uint64_t target);
void erase_subtree(tree_map* tree, const std::string& dir);
void rename_subtree(tree_map* tree, const std::string& from, const std::string& to);

// Bytes allocated on disk below path (what `du` reports) and the apparent size (sum of sizes).
struct disk_usage {
  std::uint64_t allocated_bytes = 0;
  std::uint64_t apparent_bytes = 0;
};
disk_usage measure_disk_usage(const std::filesystem::path& path);

}  // namespace scale_bench
