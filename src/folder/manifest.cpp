#include "raftsync/folder/manifest.hpp"

#include "byte_codec.hpp"
#include "raftsync/folder/path_rules.hpp"

namespace raftsync::folder {

const char* to_string(file_kind kind) noexcept {
  switch (kind) {
    case file_kind::none:
      return "none";
    case file_kind::regular:
      return "file";
    case file_kind::directory:
      return "directory";
    case file_kind::symlink:
      return "symlink";
    case file_kind::other:
      return "other";
  }
  return "unknown";
}

bool manifest_entry::same_replicated(const manifest_entry& o) const noexcept {
  return kind == o.kind && version == o.version && origin == o.origin && sequence == o.sequence &&
         size_bytes == o.size_bytes && mode == o.mode && mtime_ns == o.mtime_ns &&
         sha256 == o.sha256 && chunk_hashes == o.chunk_hashes && symlink_target == o.symlink_target;
}

const manifest_entry* manifest::find(std::string_view path) const {
  auto it = entries_.find(path);
  return it == entries_.end() ? nullptr : &it->second;
}

manifest_entry* manifest::find(std::string_view path) {
  auto it = entries_.find(path);
  return it == entries_.end() ? nullptr : &it->second;
}

bool manifest::erase(std::string_view path) {
  auto it = entries_.find(path);
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

std::vector<std::string> manifest::paths_below(std::string_view dir) const {
  std::vector<std::string> out;
  if (dir.empty()) {
    for (const auto& [path, entry] : entries_)
      out.push_back(path);
    return out;
  }
  std::string prefix(dir);
  prefix.push_back('/');
  for (auto it = entries_.lower_bound(prefix);
       it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    out.push_back(it->first);
  return out;
}

bool manifest::has_children(std::string_view dir) const {
  if (dir.empty()) return !entries_.empty();
  std::string prefix(dir);
  prefix.push_back('/');
  auto it = entries_.lower_bound(prefix);
  return it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

bool manifest::same_replicated(const manifest& other) const {
  if (entries_.size() != other.entries_.size()) return false;
  auto a = entries_.begin();
  auto b = other.entries_.begin();
  for (; a != entries_.end(); ++a, ++b)
    if (a->first != b->first || !a->second.same_replicated(b->second)) return false;
  return true;
}

namespace {
constexpr std::uint32_t manifest_magic = 0x4d465352;  // "RSFM"
constexpr std::uint8_t manifest_format_version = 1;
}  // namespace

void manifest::encode(std::string& out, bool with_local) const {
  detail::byte_writer w(out);
  w.u32(manifest_magic);
  w.u8(manifest_format_version);
  w.u8(with_local ? 1 : 0);
  w.u64(entries_.size());
  for (const auto& [path, e] : entries_) {
    w.str(path);
    w.u8(static_cast<std::uint8_t>(e.kind));
    w.u64(e.version);
    w.u64(e.origin);
    w.u64(e.sequence);
    w.u64(e.size_bytes);
    w.u32(e.mode);
    w.i64(e.mtime_ns);
    w.raw(e.sha256.data(), e.sha256.size());
    w.u64(e.chunk_hashes.size());
    for (const auto& h : e.chunk_hashes)
      w.raw(h.data(), h.size());
    w.str(e.symlink_target);
    if (with_local) {
      w.u64(e.local_inode);
      w.i64(e.local_mtime_ns);
      w.i64(e.local_ctime_ns);
    }
  }
}

result<manifest> manifest::decode(std::string_view bytes, bool with_local) {
  detail::byte_reader r(bytes);
  if (r.u32() != manifest_magic) return errc::malformed;
  std::uint8_t version = r.u8();
  if (!r.ok()) return errc::malformed;
  if (version != manifest_format_version) return errc::unsupported_version;
  if (r.u8() != (with_local ? 1 : 0)) return errc::malformed;
  std::uint64_t count = r.u64();
  // Every entry takes at least 90 bytes: refuse counts the input cannot hold.
  if (!r.ok() || count > r.remaining() / 90) return errc::malformed;
  manifest m;
  const std::string* previous = nullptr;
  for (std::uint64_t i = 0; i < count; ++i) {
    std::string path = r.str(4096);
    manifest_entry e;
    std::uint8_t kind = r.u8();
    if (kind < 1 || kind > 3) return errc::malformed;
    e.kind = static_cast<file_kind>(kind);
    e.version = r.u64();
    e.origin = r.u64();
    e.sequence = r.u64();
    e.size_bytes = r.u64();
    e.mode = r.u32();
    e.mtime_ns = r.i64();
    r.raw(e.sha256);
    std::uint64_t chunks = r.u64();
    if (!r.ok() || chunks > r.remaining() / 32) return errc::malformed;
    e.chunk_hashes.resize(chunks);
    for (auto& h : e.chunk_hashes)
      r.raw(h);
    e.symlink_target = r.str(4096);
    if (with_local) {
      e.local_inode = r.u64();
      e.local_mtime_ns = r.i64();
      e.local_ctime_ns = r.i64();
    }
    if (!r.ok()) return errc::malformed;
    if (validate_path(path)) return errc::malformed;
    // Strictly increasing order: no duplicates, canonical bytes.
    if (previous != nullptr && !(*previous < path)) return errc::malformed;
    auto [it, inserted] = m.entries_.emplace(std::move(path), std::move(e));
    previous = &it->first;
  }
  if (!r.done()) return errc::malformed;
  return m;
}

std::vector<digest> chunk_hashes_of(std::string_view content, std::uint64_t chunk_bytes) {
  std::vector<digest> out;
  for (std::uint64_t offset = 0; offset < content.size(); offset += chunk_bytes)
    out.push_back(sha256(content.substr(offset, chunk_bytes)));
  return out;
}

}  // namespace raftsync::folder
