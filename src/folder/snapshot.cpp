#include "raftsync/folder/snapshot.hpp"

#include <algorithm>
#include <set>

#include "byte_codec.hpp"
#include "raftsync/folder/path_rules.hpp"

namespace raftsync::folder {
namespace {

constexpr std::uint32_t snapshot_magic = 0x4e535352;  // "RSSN"
constexpr std::uint8_t snapshot_format_version = 1;
const std::string staging_root = ".raftsync-tmp-snapshot";
const std::string staging_tree = staging_root + "/tree";
const std::string staging_uploads = staging_root + "/uploads";
const std::string staging_old = staging_root + "/old";
const std::string ready_marker = staging_root + "/READY";
const std::string old_moved_marker = staging_root + "/OLD_MOVED";
const std::string rescued_marker = staging_root + "/RESCUED";

bool is_missing(const std::error_code& ec) {
  return ec == std::errc::no_such_file_or_directory;
}

using path_set = std::set<std::string, std::less<>>;

// The state section of the stream: blob(replicated state) | u64 n | n × str(missing path).
// Missing paths are committed files whose content the sender does not have either (see
// state_machine::missing_paths()); they travel as names, without bytes.
std::string encode_section(std::string_view replicated, const path_set& missing) {
  std::string out;
  detail::byte_writer w(out);
  w.blob(replicated);
  w.u64(missing.size());
  for (const auto& p : missing)
    w.str(p);
  return out;
}

struct section {
  std::string_view replicated;
  path_set missing;
};

result<section> decode_section(std::string_view bytes) {
  detail::byte_reader r(bytes);
  std::uint64_t length = r.u64();
  if (!r.ok() || length > r.remaining()) return errc::malformed;
  section out;
  out.replicated = bytes.substr(8, length);
  detail::byte_reader rest(bytes.substr(8 + length));
  std::uint64_t n = rest.u64();
  if (!rest.ok() || n > rest.remaining() / 4) return errc::malformed;
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string p = rest.str(4096);
    if (!rest.ok() || validate_path(p)) return errc::malformed;
    out.missing.insert(std::move(p));
  }
  if (!rest.done()) return errc::malformed;
  return out;
}

// Spans of the content part of the stream, in stream order (empty and missing files have none).
std::vector<detail::snapshot_span> build_spans(const replicated_state& state,
                                               std::uint64_t chunk_bytes, std::uint64_t start,
                                               const std::string& file_prefix,
                                               const std::string& upload_prefix,
                                               const path_set& missing, std::uint64_t* end) {
  std::vector<detail::snapshot_span> spans;
  std::uint64_t offset = start;
  for (const auto& [path, e] : state.files.entries()) {
    if (e.kind != file_kind::regular || e.size_bytes == 0) continue;
    if (missing.count(path) != 0) continue;
    detail::snapshot_span s;
    s.start = offset;
    s.size_bytes = e.size_bytes;
    s.path = file_prefix.empty() ? path : join_path(file_prefix, path);
    s.chunk_hashes = &e.chunk_hashes;
    s.mode = e.mode;
    s.mtime_ns = e.mtime_ns;
    offset += e.size_bytes;
    spans.push_back(std::move(s));
  }
  for (const auto& [origin, up] : state.uploads) {
    for (const auto& [index, chunk] : up.chunks) {
      detail::snapshot_span s;
      s.start = offset;
      s.size_bytes = chunk.size_bytes;
      std::string name = upload_staging_path(origin, up.upload_id);
      s.path = upload_prefix.empty() ? name : join_path(upload_prefix, name);
      s.file_offset = index * chunk_bytes;
      s.single = chunk.sha256;
      s.upload = true;
      offset += chunk.size_bytes;
      spans.push_back(std::move(s));
    }
  }
  *end = offset;
  return spans;
}

const digest& expected_hash(const detail::snapshot_span& span, std::uint64_t chunk, bool* valid) {
  static const digest none{};
  if (span.upload) {
    *valid = chunk == 0;
    return span.single;
  }
  *valid = span.chunk_hashes != nullptr && chunk < span.chunk_hashes->size();
  return *valid ? (*span.chunk_hashes)[chunk] : none;
}

std::size_t find_span(const std::vector<detail::snapshot_span>& spans, std::uint64_t offset) {
  auto it =
      std::upper_bound(spans.begin(), spans.end(), offset,
                       [](std::uint64_t o, const detail::snapshot_span& s) { return o < s.start; });
  return static_cast<std::size_t>(it - spans.begin()) - 1;
}

}  // namespace

// ------------------------------------------------------------------------------ snapshot_writer

snapshot_writer::snapshot_writer(state_machine& sm)
    : sm_(sm), index_(sm.applied_index()), chunk_bytes_(sm.config().chunk_bytes) {
  std::string replicated = sm.encode_replicated_state();
  auto decoded = decode_replicated_state(replicated, chunk_bytes_, false);
  RAFTSYNC_ASSERT(decoded.has_value(), "the state machine's own state must decode");
  state_ = std::move(*decoded);
  path_set missing(sm.missing_paths().begin(), sm.missing_paths().end());
  std::string state = encode_section(replicated, missing);
  std::uint64_t content_start = snapshot_header_bytes + state.size();
  spans_ = build_spans(state_, chunk_bytes_, content_start, "", "", missing, &total_bytes_);
  detail::byte_writer w(prefix_);
  w.u32(snapshot_magic);
  w.u8(snapshot_format_version);
  w.u64(chunk_bytes_);
  w.u64(index_);
  w.u64(state.size());
  digest h = sha256(state);
  w.raw(h.data(), h.size());
  w.u64(total_bytes_);
  RAFTSYNC_ASSERT(prefix_.size() == snapshot_header_bytes);
  prefix_ += state;
}

result<std::string> snapshot_writer::read(std::uint64_t offset, std::size_t max_bytes) {
  if (offset >= total_bytes_ || max_bytes == 0) return errc::malformed;
  if (offset < prefix_.size())
    return prefix_.substr(offset, std::min<std::uint64_t>(max_bytes, prefix_.size() - offset));
  const auto& span = spans_[find_span(spans_, offset)];
  std::uint64_t rel = offset - span.start;
  std::uint64_t chunk = span.upload ? 0 : rel / chunk_bytes_;
  std::uint64_t chunk_start = chunk * chunk_bytes_;
  std::uint64_t length = std::min(chunk_bytes_, span.size_bytes - chunk_start);
  std::string buffer;
  if (auto ec = sm_.tree().read(span.path, span.file_offset + chunk_start, length, buffer)) {
    if (is_missing(ec)) return errc::conflict;
    return ec;
  }
  bool valid = false;
  const digest& expected = expected_hash(span, chunk, &valid);
  if (!valid || buffer.size() != length || sha256(buffer) != expected) return errc::conflict;
  std::uint64_t skip = rel - chunk_start;
  return buffer.substr(skip, std::min<std::uint64_t>(max_bytes, length - skip));
}

std::uint64_t snapshot_writer::span_end(std::uint64_t offset) const {
  if (offset < prefix_.size() || offset >= total_bytes_) return 0;
  const auto& span = spans_[find_span(spans_, offset)];
  return span.start + span.size_bytes;
}

// ------------------------------------------------------------------------------ snapshot_reader

snapshot_reader::snapshot_reader(state_machine& sm) : sm_(sm) {}

std::error_code snapshot_reader::abort() {
  prefix_.clear();
  spans_.clear();
  span_ = 0;
  received_ = 0;
  total_bytes_ = 0;
  contents_started_ = false;
  chunk_hasher_.reset();
  return remove_all(sm_.tree(), staging_root);
}

std::error_code snapshot_reader::start_contents() {
  folder_io& io = sm_.tree();
  if (auto ec = remove_all(io, staging_root)) return ec;
  if (auto ec = io.mkdir(staging_root, 0700)) return ec;
  if (auto ec = io.mkdir(staging_tree, 0700)) return ec;
  if (auto ec = io.mkdir(staging_uploads, 0700)) return ec;
  for (const auto& [path, e] : state_.files.entries()) {
    std::string p = join_path(staging_tree, path);
    if (auto ec = make_dirs(io, parent_path(p), 0700)) return make_error_code(errc::malformed);
    switch (e.kind) {
      case file_kind::directory:
        if (auto ec = io.mkdir(p, 0700))
          return ec == std::errc::file_exists ? std::error_code{} : ec;
        break;
      case file_kind::symlink:
        if (auto ec = io.symlink(e.symlink_target, p)) return ec;
        break;
      case file_kind::regular:
        if (e.size_bytes == 0 && missing_.count(path) == 0) {
          if (auto ec = io.write_at(p, 0, {})) return ec;
          if (auto ec = io.chmod(p, e.mode)) return ec;
          if (auto ec = io.set_mtime(p, e.mtime_ns)) return ec;
        }
        break;
      default:
        return make_error_code(errc::malformed);
    }
  }
  contents_started_ = true;
  return {};
}

std::error_code snapshot_reader::finish_span(const detail::snapshot_span& span) {
  folder_io& io = sm_.tree();
  if (span.upload) return io.sync_file(span.path);
  if (auto ec = io.chmod(span.path, span.mode)) return ec;
  if (auto ec = io.set_mtime(span.path, span.mtime_ns)) return ec;
  return io.sync_file(span.path);
}

std::error_code snapshot_reader::write(std::uint64_t offset, std::string_view data) {
  if (offset > received_) return make_error_code(errc::malformed);
  std::uint64_t skip = received_ - offset;
  if (skip >= data.size()) return {};
  data.remove_prefix(skip);
  folder_io& io = sm_.tree();
  while (!data.empty()) {
    if (!contents_started_) {
      std::uint64_t want =
          total_bytes_ == 0 ? snapshot_header_bytes : snapshot_header_bytes + state_bytes_;
      std::uint64_t n = std::min<std::uint64_t>(data.size(), want - prefix_.size());
      prefix_.append(data.substr(0, n));
      data.remove_prefix(n);
      received_ += n;
      if (prefix_.size() < want) continue;
      if (total_bytes_ == 0) {
        detail::byte_reader r(prefix_);
        std::uint32_t magic = r.u32();
        std::uint8_t version = r.u8();
        chunk_bytes_ = r.u64();
        index_ = r.u64();
        state_bytes_ = r.u64();
        r.raw(state_sha256_);
        std::uint64_t total = r.u64();
        if (!r.done() || magic != snapshot_magic) return make_error_code(errc::malformed);
        if (version != snapshot_format_version) return make_error_code(errc::unsupported_version);
        if (chunk_bytes_ != sm_.config().chunk_bytes) return make_error_code(errc::invalid_config);
        if (state_bytes_ > (std::uint64_t{1} << 34) || total < snapshot_header_bytes + state_bytes_)
          return make_error_code(errc::malformed);
        total_bytes_ = total;
        continue;
      }
      std::string_view state = std::string_view(prefix_).substr(snapshot_header_bytes);
      if (sha256(state) != state_sha256_) return make_error_code(errc::corrupt);
      auto parts = decode_section(state);
      if (!parts) return parts.error();
      auto decoded = decode_replicated_state(parts->replicated, chunk_bytes_, false);
      if (!decoded) return decoded.error();
      state_ = std::move(*decoded);
      missing_ = std::move(parts->missing);
      std::uint64_t end = 0;
      spans_ = build_spans(state_, chunk_bytes_, received_, staging_tree, staging_uploads, missing_,
                           &end);
      if (end != total_bytes_) return make_error_code(errc::malformed);
      if (auto ec = start_contents()) return ec;
      span_ = 0;
      chunk_hasher_.reset();
      continue;
    }
    if (received_ >= total_bytes_) return make_error_code(errc::malformed);
    while (span_ < spans_.size() && spans_[span_].start + spans_[span_].size_bytes <= received_)
      ++span_;
    const auto& span = spans_[span_];
    std::uint64_t rel = received_ - span.start;
    std::uint64_t chunk = span.upload ? 0 : rel / chunk_bytes_;
    std::uint64_t chunk_start = chunk * chunk_bytes_;
    std::uint64_t chunk_end = std::min(chunk_start + chunk_bytes_, span.size_bytes);
    std::uint64_t n = std::min<std::uint64_t>(data.size(), chunk_end - rel);
    std::string_view piece = data.substr(0, n);
    if (auto ec = io.write_at(span.path, span.file_offset + rel, piece)) return ec;
    chunk_hasher_.update(piece);
    data.remove_prefix(n);
    received_ += n;
    if (rel + n == chunk_end) {
      bool valid = false;
      const digest& expected = expected_hash(span, chunk, &valid);
      if (!valid || chunk_hasher_.finish() != expected) return make_error_code(errc::corrupt);
      if (chunk_end == span.size_bytes)
        if (auto ec = finish_span(span)) return ec;
    }
  }
  return {};
}

std::error_code snapshot_reader::skip(std::uint64_t offset, std::uint64_t end) {
  if (!contents_started_ || offset != received_ || received_ >= total_bytes_)
    return make_error_code(errc::malformed);
  while (span_ < spans_.size() && spans_[span_].start + spans_[span_].size_bytes <= received_)
    ++span_;
  if (span_ >= spans_.size()) return make_error_code(errc::malformed);
  const auto& span = spans_[span_];
  if (end != span.start + span.size_bytes) return make_error_code(errc::malformed);
  if (!span.upload) {
    auto ec = sm_.tree().unlink(span.path);  // whatever part of it arrived
    if (ec && !is_missing(ec)) return ec;
    missing_.insert(span.path.substr(staging_tree.size() + 1));
  }
  chunk_hasher_.reset();
  received_ = end;
  return {};
}

std::error_code snapshot_reader::install() {
  if (!complete()) return make_error_code(errc::unavailable);
  if (!contents_started_) return make_error_code(errc::malformed);
  // The state section as installed: with the paths skipped during the transfer as missing.
  {
    auto parts = decode_section(std::string_view(prefix_).substr(snapshot_header_bytes));
    if (!parts) return parts.error();
    std::string section = encode_section(parts->replicated, missing_);
    prefix_.resize(snapshot_header_bytes);
    prefix_ += section;
  }
  folder_io& io = sm_.tree();
  // Directory modes last, deepest first (a read-only directory must not block its own filling).
  const auto& entries = state_.files.entries();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->second.kind != file_kind::directory) continue;
    std::string p = join_path(staging_tree, it->first);
    if (auto ec = io.sync_dir(p)) return ec;
    if (auto ec = io.chmod(p, it->second.mode)) return ec;
  }
  if (auto ec = io.sync_dir(staging_tree)) return ec;
  if (auto ec = io.sync_dir(staging_uploads)) return ec;
  std::string marker;
  detail::byte_writer w(marker);
  w.u64(index_);
  w.blob(std::string_view(prefix_).substr(snapshot_header_bytes));
  if (auto ec = io.write_file_atomic(ready_marker, marker, 0600, 0)) return ec;
  rescued_.clear();
  auto ec = finish_interrupted_install(sm_, &rescued_);
  prefix_.clear();
  spans_.clear();
  contents_started_ = false;
  return ec;
}

// ----------------------------------------------------------------------- install roll-forward

namespace {

// Whether the entries at `a` and `b` hold the same thing (kind, then link target or content).
result<bool> same_entry(folder_io& io, std::string_view a, std::string_view b,
                        std::uint64_t chunk_bytes) {
  auto sa = io.lstat(a);
  if (!sa) return sa.error();
  auto sb = io.lstat(b);
  if (!sb) {
    // Nothing at `b`: missing, or a parent of it is a file or a symlink in this tree.
    const std::error_code ec = sb.error();
    if (is_missing(ec) || ec == std::errc::not_a_directory ||
        ec == make_error_code(errc::invalid_path))
      return false;
    return ec;
  }
  if (sa->kind != sb->kind) return false;
  if (sa->kind == file_kind::symlink) {
    auto ta = io.readlink(a);
    if (!ta) return ta.error();
    auto tb = io.readlink(b);
    if (!tb) return tb.error();
    return *ta == *tb;
  }
  if (sa->kind != file_kind::regular || sa->size_bytes != sb->size_bytes) return false;
  auto ha = hash_file(io, a, chunk_bytes);
  if (!ha) return ha.error();
  auto hb = hash_file(io, b, chunk_bytes);
  if (!hb) return hb.error();
  return ha->sha256 == hb->sha256;
}

// Local edits in the old tree (moved aside by the install, the new tree already in place, the
// state machine still at its pre-install state) go back into the tree instead of being thrown
// away with it: a file written while the snapshot was on its way must not be lost. For each
// regular file and symlink below `old_root`/`rel`:
//  * this node's committed version of its path: dropped (the snapshot supersedes it);
//  * the new tree holds the same thing at the path: dropped (nothing to keep);
//  * the new tree has nothing there, or still this node's committed version (the cluster did not
//    change the path since): moved back to its path — the scan proposes it;
//  * otherwise (changed here and in the cluster): moved to a local conflict copy beside it.
// A local directory the new tree lacks is created again (it may be an unproposed mkdir). Other
// kinds (FIFOs, sockets, devices) are not replicated and are dropped. Idempotent: a crash midway
// is finished by the next open() with the same decisions.
std::error_code rescue_local_edits(state_machine& sm, const std::string& old_root,
                                   const std::string& rel, std::vector<preserved_edit>* rescued) {
  folder_io& io = sm.tree();
  auto entries = io.list(rel.empty() ? old_root : join_path(old_root, rel));
  if (!entries) return entries.error();
  const std::uint64_t chunk_bytes = sm.config().chunk_bytes;
  for (const auto& e : *entries) {
    const std::string path = rel.empty() ? e.name : join_path(rel, e.name);
    const std::string where = join_path(old_root, path);
    if (is_internal_path(path)) continue;
    if (e.kind == file_kind::directory) {
      if (auto ec = rescue_local_edits(sm, old_root, path, rescued)) return ec;
      const manifest_entry* known = sm.committed().find(path);
      if (known == nullptr || known->kind != file_kind::directory) {
        auto now = io.lstat(path);
        if (!now && is_missing(now.error())) {
          if (auto ec = make_dirs(io, path, 0755)) return ec;
          if (rescued != nullptr) rescued->push_back({path, path});
        }
      }
      continue;
    }
    if (e.kind != file_kind::regular && e.kind != file_kind::symlink) continue;
    auto committed = sm.holds_committed(where, path);
    if (!committed) return committed.error();
    if (*committed) continue;
    auto same = same_entry(io, where, path, chunk_bytes);
    if (!same) return same.error();
    if (*same) continue;
    auto st = io.lstat(where);
    if (!st) return st.error();
    std::string dest = path;
    auto there = io.lstat(path);
    if (there) {
      auto unchanged = sm.holds_committed(path, path);
      if (!unchanged) return unchanged.error();
      if (!*unchanged || there->kind == file_kind::directory) {
        auto name = sm.free_copy_name(path, st->mtime_ns);
        if (!name) return name.error();
        dest = std::move(*name);
      }
    } else if (!is_missing(there.error()) && there.error() != std::errc::not_a_directory &&
               there.error() != make_error_code(errc::invalid_path)) {
      return there.error();
    }
    std::error_code moved = make_dirs(io, parent_path(dest), 0755);
    if (!moved) moved = io.rename(where, dest);
    if (moved) {
      // The new tree has a file or a symlink where a parent directory of the edit was: keep the
      // edit at the top of the folder instead.
      auto name = sm.free_copy_name(e.name, st->mtime_ns);
      if (!name) return name.error();
      dest = std::move(*name);
      if (auto ec = io.rename(where, dest)) return ec;
    }
    if (auto ec = io.sync_dir(parent_path(dest))) return ec;  // durable before RESCUED is
    if (rescued != nullptr) rescued->push_back({path, dest});
  }
  return {};
}

}  // namespace

std::error_code finish_interrupted_install(state_machine& sm,
                                           std::vector<preserved_edit>* rescued) {
  folder_io& io = sm.tree();
  auto st = io.lstat(staging_root);
  if (!st) return is_missing(st.error()) ? std::error_code{} : st.error();
  auto marker = read_whole(io, ready_marker);
  if (!marker) {
    if (!is_missing(marker.error())) return marker.error();
    return remove_all(io, staging_root);  // an unfinished download: start over
  }
  detail::byte_reader r(*marker);
  std::uint64_t index = r.u64();
  std::string state = r.blob(marker->size());
  if (!r.done()) return make_error_code(errc::corrupt);

  auto old_moved = io.lstat(old_moved_marker);
  if (!old_moved) {
    if (!is_missing(old_moved.error())) return old_moved.error();
    if (auto ec = io.mkdir(staging_old, 0700); ec && ec != std::errc::file_exists) return ec;
    auto root = io.list("");
    if (!root) return root.error();
    for (const auto& e : *root) {
      if (is_internal_path(e.name)) continue;
      if (auto ec = io.rename(e.name, join_path(staging_old, e.name))) return ec;
    }
    if (auto ec = io.sync_dir("")) return ec;
    if (auto ec = io.write_file_atomic(old_moved_marker, {}, 0600, 0)) return ec;
  }
  auto fresh = io.list(staging_tree);
  if (!fresh) return fresh.error();
  for (const auto& e : *fresh)
    if (auto ec = io.rename(join_path(staging_tree, e.name), e.name)) return ec;
  // The rescue decides against the pre-install state: once the new state is installed it must
  // not run again (a committed file of the old tree would look like a local edit).
  auto done = io.lstat(rescued_marker);
  if (!done) {
    if (!is_missing(done.error())) return done.error();
    if (auto ec = rescue_local_edits(sm, staging_old, "", rescued)) return ec;
    if (auto ec = io.sync_dir("")) return ec;
    if (auto ec = io.write_file_atomic(rescued_marker, {}, 0600, 0)) return ec;
  }
  // Staging files of uploads the snapshot does not have are stale; the snapshot's own (possibly
  // moved in already by an earlier attempt) stay.
  auto parts = decode_section(state);
  if (!parts) return make_error_code(errc::corrupt);
  auto decoded = decode_replicated_state(parts->replicated, sm.config().chunk_bytes, false);
  if (!decoded) return make_error_code(errc::corrupt);
  std::set<std::string> live;
  for (const auto& [origin, up] : decoded->uploads)
    live.insert(upload_staging_path(origin, up.upload_id));
  auto root = io.list("");
  if (!root) return root.error();
  for (const auto& e : *root) {
    if (e.kind == file_kind::regular && e.name.rfind(".raftsync-tmp-upload-", 0) == 0 &&
        live.count(e.name) == 0)
      if (auto ec = io.unlink(e.name)) return ec;
  }
  auto uploads = io.list(staging_uploads);
  if (!uploads) return uploads.error();
  for (const auto& e : *uploads)
    if (auto ec = io.rename(join_path(staging_uploads, e.name), e.name)) return ec;
  if (auto ec = io.sync_dir("")) return ec;
  if (auto ec = sm.install_replicated_state(index, parts->replicated, parts->missing)) return ec;
  // Removing READY first is the end of the install: a crash after it only leaves garbage that
  // the next open() removes (no READY: an unfinished download).
  if (auto ec = io.unlink(ready_marker)) return ec;
  if (auto ec = io.sync_dir(staging_root)) return ec;
  return remove_all(io, staging_root);
}

}  // namespace raftsync::folder
