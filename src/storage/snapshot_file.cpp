#include "raftsync/storage/snapshot_file.hpp"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "encoding.hpp"
#include "raftsync/storage/crc32c.hpp"

namespace raftsync::storage {
namespace {
constexpr char snapshot_magic[8] = {'R', 'S', 'Y', 'N', 'C', 'S', 'N', 'P'};
constexpr char trailer_magic[8] = {'S', 'N', 'P', 'E', 'N', 'D', '!', '!'};
constexpr std::uint64_t trailer_bytes = 32;
constexpr std::uint32_t members_max = 1u << 16;

std::string encode_header(const raft::snapshot_metadata& meta) {
  std::string m;
  detail::put_u64(m, meta.index);
  detail::put_u64(m, meta.term);
  detail::put_u32(m, static_cast<std::uint32_t>(meta.conf.voters.size()));
  for (auto id : meta.conf.voters)
    detail::put_u64(m, id);
  detail::put_u32(m, static_cast<std::uint32_t>(meta.conf.learners.size()));
  for (auto id : meta.conf.learners)
    detail::put_u64(m, id);
  std::string h(snapshot_magic, 8);
  detail::put_u32(h, snapshot_format_version);
  detail::put_u32(h, static_cast<std::uint32_t>(m.size()));
  h += m;
  detail::put_u32(h, crc32c(h));
  return h;
}

std::string encode_trailer(std::uint64_t chunks, std::uint64_t bytes, std::uint32_t header_crc) {
  std::string t;
  detail::put_u32(t, 0);
  t.append(trailer_magic, 8);
  detail::put_u64(t, chunks);
  detail::put_u64(t, bytes);
  std::uint32_t crc = crc32c(t);
  char hc[4];
  detail::store_u32(hc, header_crc);
  crc = crc32c_extend(crc, hc, 4);
  detail::put_u32(t, crc);
  return t;
}

bool parse_name(const std::string& name, raft::snapshot_metadata& meta) {
  // snap-<16 hex>-<16 hex>.snap
  if (name.size() != 43 || name.compare(0, 5, "snap-") != 0 || name[21] != '-' ||
      name.compare(38, 5, ".snap") != 0) {
    return false;
  }
  auto hex = [&](std::size_t from, std::uint64_t& v) {
    v = 0;
    for (std::size_t i = from; i < from + 16; ++i) {
      const char c = name[i];
      std::uint64_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<std::uint64_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<std::uint64_t>(c - 'a' + 10);
      } else {
        return false;
      }
      v = v << 4 | d;
    }
    return true;
  };
  return hex(5, meta.index) && hex(22, meta.term);
}
}  // namespace

std::string snapshot_file_name(const raft::snapshot_metadata& meta) {
  char name[64];
  std::snprintf(name, sizeof name, "snap-%016" PRIx64 "-%016" PRIx64 ".snap", meta.index,
                meta.term);
  return name;
}

// ---- writer ----

snapshot_writer::snapshot_writer(snapshot_writer&&) noexcept = default;
snapshot_writer& snapshot_writer::operator=(snapshot_writer&& other) noexcept {
  if (this != &other) {
    if (!done_ && file_) (void)abort();
    io_ = other.io_;
    file_ = std::move(other.file_);
    dir_ = std::move(other.dir_);
    temp_path_ = std::move(other.temp_path_);
    final_path_ = std::move(other.final_path_);
    offset_ = other.offset_;
    chunks_ = other.chunks_;
    data_bytes_ = other.data_bytes_;
    header_crc_ = other.header_crc_;
    done_ = other.done_;
    other.done_ = true;
  }
  return *this;
}
snapshot_writer::~snapshot_writer() {
  if (!done_ && file_) (void)abort();
}

result<snapshot_writer> snapshot_writer::create(file_io& io, const std::filesystem::path& dir,
                                                const raft::snapshot_metadata& meta) {
  snapshot_writer w;
  w.io_ = &io;
  w.dir_ = dir;
  w.final_path_ = dir / snapshot_file_name(meta);
  w.temp_path_ = dir / (snapshot_file_name(meta) + ".tmp");
  auto f =
      io.open(w.temp_path_, open_flags::read_write | open_flags::create | open_flags::truncate);
  if (!f) return f.error();
  w.file_ = std::move(*f);
  const std::string header = encode_header(meta);
  w.header_crc_ = detail::load_u32(header.data() + header.size() - 4);
  if (auto ec = w.file_->pwrite(0, header.data(), header.size())) {
    (void)w.abort();
    return ec;
  }
  w.offset_ = header.size();
  return w;
}

std::error_code snapshot_writer::write(std::string_view chunk) {
  if (done_ || !file_) return make_error_code(errc::stopped);
  while (!chunk.empty()) {
    const std::string_view part = chunk.substr(0, snapshot_chunk_bytes_max);
    chunk.remove_prefix(part.size());
    std::string buf;
    buf.reserve(part.size() + 8);
    detail::put_u32(buf, static_cast<std::uint32_t>(part.size()));
    detail::put_u32(buf, crc32c(part));
    buf.append(part);
    if (auto ec = file_->pwrite(offset_, buf.data(), buf.size())) return ec;
    offset_ += buf.size();
    ++chunks_;
    data_bytes_ += part.size();
  }
  return {};
}

std::error_code snapshot_writer::commit() {
  if (done_ || !file_) return make_error_code(errc::stopped);
  const std::string trailer = encode_trailer(chunks_, data_bytes_, header_crc_);
  if (auto ec = file_->pwrite(offset_, trailer.data(), trailer.size())) return ec;
  if (auto ec = file_->datasync()) return ec;
  file_.reset();
  if (auto ec = io_->rename(temp_path_, final_path_)) return ec;
  if (auto ec = io_->sync_dir(dir_)) return ec;
  done_ = true;
  return {};
}

std::error_code snapshot_writer::abort() {
  file_.reset();
  done_ = true;
  if (io_ == nullptr) return {};
  auto ec = io_->unlink(temp_path_);
  if (ec == std::errc::no_such_file_or_directory) return {};
  return ec;
}

// ---- reader ----

snapshot_reader::snapshot_reader(snapshot_reader&&) noexcept = default;
snapshot_reader& snapshot_reader::operator=(snapshot_reader&&) noexcept = default;
snapshot_reader::~snapshot_reader() = default;

result<snapshot_reader> snapshot_reader::open(file_io& io, const std::filesystem::path& path,
                                              std::string* message) {
  auto fail = [&](errc code, std::uint64_t offset, const char* what) -> result<snapshot_reader> {
    if (message) *message = path.string() + " at offset " + std::to_string(offset) + ": " + what;
    return code;
  };
  auto f = io.open(path, open_flags::read_only);
  if (!f) return f.error();
  auto size = (*f)->size();
  if (!size) return size.error();
  if (*size < 16 + 8 + 4 + trailer_bytes) return fail(errc::corrupt, 0, "file too short");
  char fixed[16];
  if (auto ec = read_exact(**f, 0, fixed, 16)) return ec;
  if (std::memcmp(fixed, snapshot_magic, 8) != 0) return fail(errc::corrupt, 0, "bad magic");
  const std::uint32_t meta_len = detail::load_u32(fixed + 12);
  if (std::uint64_t{meta_len} + 20 + trailer_bytes > *size) {
    return fail(errc::corrupt, 12, "metadata length out of range");
  }
  std::string header(16 + meta_len + 4, '\0');
  if (auto ec = read_exact(**f, 0, header.data(), header.size())) return ec;
  const std::uint32_t header_crc = detail::load_u32(header.data() + 16 + meta_len);
  if (crc32c(header.data(), 16 + meta_len) != header_crc) {
    return fail(errc::corrupt, 16 + std::uint64_t{meta_len}, "header checksum mismatch");
  }
  if (detail::load_u32(fixed + 8) != snapshot_format_version) {
    return fail(errc::unsupported_version, 8, "unsupported snapshot format version");
  }
  snapshot_reader r;
  detail::reader in(std::string_view(header).substr(16, meta_len));
  std::uint32_t n = 0;
  bool ok =
      in.get_u64(r.meta_.index) && in.get_u64(r.meta_.term) && in.get_u32(n) && n <= members_max;
  if (ok) {
    r.meta_.conf.voters.resize(n);
    for (auto& id : r.meta_.conf.voters)
      ok = ok && in.get_u64(id);
    ok = ok && in.get_u32(n) && n <= members_max;
    if (ok) {
      r.meta_.conf.learners.resize(n);
      for (auto& id : r.meta_.conf.learners)
        ok = ok && in.get_u64(id);
    }
  }
  if (!ok || in.remaining() != 0) return fail(errc::corrupt, 16, "metadata does not decode");
  char trailer[trailer_bytes];
  const std::uint64_t trailer_offset = *size - trailer_bytes;
  if (auto ec = read_exact(**f, trailer_offset, trailer, trailer_bytes)) return ec;
  const std::uint64_t chunks = detail::load_u64(trailer + 12);
  const std::uint64_t bytes = detail::load_u64(trailer + 20);
  const std::string expected = encode_trailer(chunks, bytes, header_crc);
  if (std::memcmp(trailer, expected.data(), trailer_bytes) != 0) {
    return fail(errc::corrupt, trailer_offset, "trailer missing or damaged (incomplete snapshot)");
  }
  if (header.size() + chunks * 8 + bytes + trailer_bytes != *size) {
    return fail(errc::corrupt, trailer_offset, "trailer totals do not match the file size");
  }
  r.file_ = std::move(*f);
  r.path_ = path;
  r.offset_ = header.size();
  r.trailer_offset_ = trailer_offset;
  r.chunks_total_ = chunks;
  r.data_bytes_ = bytes;
  return r;
}

result<bool> snapshot_reader::next(std::string& chunk) {
  auto fail = [&](std::uint64_t offset, const char* what) -> result<bool> {
    error_message_ = path_.string() + " at offset " + std::to_string(offset) + ": " + what;
    return errc::corrupt;
  };
  if (!file_) return errc::stopped;
  if (offset_ == trailer_offset_) {
    if (chunks_read_ != chunks_total_ || data_read_ != data_bytes_) {
      return fail(offset_, "chunk count or byte total differs from the trailer");
    }
    return false;
  }
  if (offset_ + 8 > trailer_offset_) return fail(offset_, "chunk header overlaps the trailer");
  char h[8];
  if (auto ec = read_exact(*file_, offset_, h, 8)) return ec;
  const std::uint32_t len = detail::load_u32(h);
  const std::uint32_t crc = detail::load_u32(h + 4);
  if (len == 0 || len > snapshot_chunk_bytes_max || offset_ + 8 + len > trailer_offset_) {
    return fail(offset_, "chunk length out of range");
  }
  chunk.resize(len);
  if (auto ec = read_exact(*file_, offset_ + 8, chunk.data(), len)) return ec;
  if (crc32c(chunk) != crc) return fail(offset_, "chunk checksum mismatch");
  offset_ += 8 + std::uint64_t{len};
  ++chunks_read_;
  data_read_ += len;
  return true;
}

result<std::vector<snapshot_file_info>> list_snapshots(file_io& io,
                                                       const std::filesystem::path& dir) {
  auto names = io.list_dir(dir);
  if (!names) return names.error();
  std::vector<snapshot_file_info> out;
  for (const auto& name : *names) {
    snapshot_file_info info;
    if (parse_name(name, info.meta)) {
      info.path = dir / name;
      out.push_back(std::move(info));
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.meta.index != b.meta.index ? a.meta.index < b.meta.index : a.meta.term < b.meta.term;
  });
  return out;
}

std::error_code remove_snapshots_before(file_io& io, const std::filesystem::path& dir,
                                        std::uint64_t index) {
  auto names = io.list_dir(dir);
  if (!names) return names.error();
  bool removed = false;
  for (const auto& name : *names) {
    raft::snapshot_metadata meta;
    const bool temp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0 &&
                      name.compare(0, 5, "snap-") == 0;
    if (temp || (parse_name(name, meta) && meta.index < index)) {
      if (auto ec = io.unlink(dir / name); ec && ec != std::errc::no_such_file_or_directory) {
        return ec;
      }
      removed = true;
    }
  }
  return removed ? io.sync_dir(dir) : std::error_code{};
}

}  // namespace raftsync::storage
