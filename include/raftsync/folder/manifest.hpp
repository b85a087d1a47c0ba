// raftsync::folder — the manifest: the committed state of the folder, path → entry.
//
// The replicated part of every entry is identical on all nodes after applying the same log
// prefix (it is a pure function of the commands). Each entry also holds a few local fields
// (the inode and mtime observed on this node's disk after the apply) that make the "is the
// working file still the committed one?" check cheap; they are persisted in the node's state
// file but never replicated and never compared across nodes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "raftsync/folder/sha256.hpp"
#include "raftsync/result.hpp"

namespace raftsync::folder {

enum class file_kind : std::uint8_t {
  none = 0,
  regular = 1,
  directory = 2,
  symlink = 3,
  other = 4
};
const char* to_string(file_kind kind) noexcept;

struct manifest_entry {
  // --- replicated ---
  file_kind kind = file_kind::none;
  std::uint64_t version = 0;         // log index of the command that last changed this entry
  std::uint64_t origin = 0;          // that command's origin node
  std::uint64_t sequence = 0;        // and its per-origin sequence number
  std::uint64_t size_bytes = 0;      // regular: content size
  std::uint32_t mode = 0;            // regular, directory: permission bits (& 07777)
  std::int64_t mtime_ns = 0;         // regular: modification time set by the apply
  digest sha256{};                   // regular: hash of the content
  std::vector<digest> chunk_hashes;  // regular: hash of every chunk_bytes piece (none if empty)
  std::string symlink_target;        // symlink: the link text, never followed

  // --- local to this node (persisted in the state file, not replicated) ---
  std::uint64_t local_inode = 0;    // inode of the working file as last applied/observed
  std::int64_t local_mtime_ns = 0;  // its mtime as observed by lstat after the apply
  std::int64_t local_ctime_ns = 0;  // and its ctime (see file_stat::ctime_ns)

  // Equality of the replicated fields only.
  bool same_replicated(const manifest_entry& other) const noexcept;
};

class manifest {
 public:
  using map_type = std::map<std::string, manifest_entry, std::less<>>;

  const manifest_entry* find(std::string_view path) const;
  manifest_entry* find(std::string_view path);
  void put(std::string path, manifest_entry entry) { entries_[std::move(path)] = std::move(entry); }
  bool erase(std::string_view path);
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  const map_type& entries() const noexcept { return entries_; }
  void clear() { entries_.clear(); }

  // Entries strictly below directory `dir` ("" = everything), in path order.
  std::vector<std::string> paths_below(std::string_view dir) const;
  bool has_children(std::string_view dir) const;

  // Replicated equality (local fields ignored).
  bool same_replicated(const manifest& other) const;

  // Serialization: `with_local` includes the local fields (state file); without them the bytes are
  // identical on every node that applied the same prefix (snapshots, cross-node comparison).
  void encode(std::string& out, bool with_local) const;
  // errc::malformed on any inconsistency; `with_local` must match the encoder's.
  static result<manifest> decode(std::string_view bytes, bool with_local);

 private:
  map_type entries_;
};

// Splits a regular file's content into chunk hashes (chunk_bytes each, the last one shorter).
std::vector<digest> chunk_hashes_of(std::string_view content, std::uint64_t chunk_bytes);
// Number of chunks of a file of size_bytes.
inline std::uint64_t chunk_count(std::uint64_t size_bytes, std::uint64_t chunk_bytes) noexcept {
  return (size_bytes + chunk_bytes - 1) / chunk_bytes;
}

}  // namespace raftsync::folder
