#include "raftsync/storage/segmented_log.hpp"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>

#include "encoding.hpp"
#include "raftsync/assert.hpp"
#include "raftsync/storage/crc32c.hpp"

namespace raftsync::storage {
namespace {

constexpr char segment_magic[8] = {'R', 'S', 'Y', 'N', 'C', 'L', 'O', 'G'};
constexpr std::uint32_t record_magic = 0x44435352u;  // "RSCD" little-endian
constexpr std::uint64_t max_record_bytes = 1ull << 32;

std::uint64_t round_up8(std::uint64_t n) {
  return (n + 7) & ~std::uint64_t{7};
}

bool all_zero(const char* p, std::size_t n) {
  static const char zeros[4096] = {};
  while (n > 0) {
    const std::size_t k = std::min<std::size_t>(n, sizeof zeros);
    if (std::memcmp(p, zeros, k) != 0) return false;
    p += k;
    n -= k;
  }
  return true;
}

std::string encode_segment_header(std::uint64_t seq, std::uint64_t capacity) {
  std::string h(segment_magic, 8);
  detail::put_u32(h, segment_format_version);
  detail::put_u32(h, static_cast<std::uint32_t>(segment_header_bytes));
  detail::put_u64(h, seq);
  detail::put_u64(h, capacity);
  detail::put_u32(h, 0);
  detail::put_u32(h, crc32c(h));
  return h;
}

struct parsed_entry {
  std::uint64_t term;
  std::uint64_t data_offset;  // in the file
  std::uint32_t size;
  std::uint32_t crc;
  raft::entry_type type;
};

struct parsed_record {
  std::uint64_t seq = 0;
  std::uint64_t first_index = 0;
  raft::hard_state hard;
  std::vector<parsed_entry> entries;
  std::uint64_t total_bytes = 0;  // padded
};

// Validates the record at `pos` of `buf` (the whole file from offset 0). On failure returns false
// and sets *why.
bool parse_record(const std::string& buf, std::uint64_t pos, parsed_record& rec, const char** why) {
  const std::uint64_t size = buf.size();
  if (pos + record_header_bytes > size) {
    *why = "record header cut short";
    return false;
  }
  const char* h = buf.data() + pos;
  if (detail::load_u32(h) != record_magic) {
    *why = "bad record magic";
    return false;
  }
  const std::uint32_t stored_crc = detail::load_u32(h + 4);
  const std::uint64_t payload = detail::load_u32(h + 8);
  const std::uint64_t count = detail::load_u32(h + 12);
  if (count * entry_header_bytes > payload || pos + record_header_bytes + payload > size) {
    *why = "record length out of range";
    return false;
  }
  const std::uint64_t headers_end = pos + record_header_bytes + count * entry_header_bytes;
  if (crc32c(buf.data() + pos + 8, headers_end - pos - 8) != stored_crc) {
    *why = "record checksum mismatch";
    return false;
  }
  rec.seq = detail::load_u64(h + 16);
  rec.first_index = detail::load_u64(h + 24);
  rec.hard.term = detail::load_u64(h + 32);
  rec.hard.vote = detail::load_u64(h + 40);
  rec.hard.commit = detail::load_u64(h + 48);
  if ((count == 0) != (rec.first_index == 0)) {
    *why = "record first index inconsistent with its entry count";
    return false;
  }
  rec.entries.clear();
  rec.entries.reserve(count);
  std::uint64_t data = headers_end;
  const std::uint64_t end = pos + record_header_bytes + payload;
  for (std::uint64_t i = 0; i < count; ++i) {
    const char* e = buf.data() + pos + record_header_bytes + i * entry_header_bytes;
    parsed_entry pe{};
    pe.term = detail::load_u64(e);
    pe.size = detail::load_u32(e + 8);
    pe.crc = detail::load_u32(e + 12);
    const auto type = static_cast<std::uint8_t>(e[16]);
    if (type > 1) {
      *why = "bad entry type";
      return false;
    }
    pe.type = static_cast<raft::entry_type>(type);
    if (data + pe.size > end) {
      *why = "entry data out of range";
      return false;
    }
    if (crc32c(buf.data() + data, pe.size) != pe.crc) {
      *why = "entry data checksum mismatch";
      return false;
    }
    pe.data_offset = data;
    data += pe.size;
    rec.entries.push_back(pe);
  }
  if (data != end) {
    *why = "record payload length mismatch";
    return false;
  }
  rec.total_bytes = round_up8(record_header_bytes + payload);
  if (pos + rec.total_bytes > size || !all_zero(buf.data() + end, pos + rec.total_bytes - end)) {
    *why = "record padding damaged";
    return false;
  }
  return true;
}

bool parse_segment_name(const std::string& name, std::uint64_t& seq) {
  if (name.size() != 24 || name.compare(0, 4, "seg-") != 0 || name.compare(20, 4, ".log") != 0) {
    return false;
  }
  seq = 0;
  for (std::size_t i = 4; i < 20; ++i) {
    const char c = name[i];
    std::uint64_t d;
    if (c >= '0' && c <= '9') {
      d = static_cast<std::uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<std::uint64_t>(c - 'a' + 10);
    } else {
      return false;
    }
    seq = seq << 4 | d;
  }
  return seq != 0;
}

}  // namespace

segmented_log::segmented_log(file_io& io, std::filesystem::path dir, segmented_log_options options)
    : io_(io), dir_(std::move(dir)), options_(options) {}

segmented_log::~segmented_log() = default;

std::string segmented_log::segment_name(std::uint64_t seq) {
  char name[32];
  std::snprintf(name, sizeof name, "seg-%016" PRIx64 ".log", seq);
  return name;
}

std::vector<std::filesystem::path> segmented_log::segment_paths() const {
  std::vector<std::filesystem::path> out;
  for (const auto& [seq, seg] : segments_)
    out.push_back(seg.path);
  return out;
}

std::error_code segmented_log::fail(errc code, const std::filesystem::path& file,
                                    std::uint64_t offset, const std::string& what) {
  error_message_ = file.string() + " at offset " + std::to_string(offset) + ": " + what;
  return make_error_code(code);
}

std::error_code segmented_log::open(const log_start& start) {
  error_message_.clear();
  recovery_ = {};
  segments_.clear();
  locations_.clear();
  cache_.clear();
  cache_bytes_ = 0;
  cache_first_ = 0;
  tail_dirty_ = false;
  orphan_.clear();
  last_seq_ = 0;
  last_record_segment_ = 0;
  write_offset_ = 0;
  start_index_ = start.index;
  start_term_ = start.term;

  auto names = io_.list_dir(dir_);
  if (!names) return names.error();
  std::vector<std::uint64_t> seqs;
  for (const auto& name : *names) {
    std::uint64_t seq;
    if (parse_segment_name(name, seq)) seqs.push_back(seq);
  }
  std::sort(seqs.begin(), seqs.end());
  // Used only if no segment survives recovery (an unfinished first segment removed): reuse its seq.
  next_segment_seq_ = seqs.empty() ? 1 : seqs.back();
  for (std::size_t i = 1; i < seqs.size(); ++i) {
    if (seqs[i] != seqs[i - 1] + 1) {
      return fail(errc::corrupt, dir_ / segment_name(seqs[i - 1] + 1), 0,
                  "segment file missing between " + segment_name(seqs[i - 1]) + " and " +
                      segment_name(seqs[i]));
    }
  }
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const bool last = i + 1 == seqs.size();
    segment seg;
    seg.seq = seqs[i];
    seg.path = dir_ / segment_name(seqs[i]);
    auto handle = io_.open(seg.path, last ? open_flags::read_write : open_flags::read_only);
    if (!handle) return handle.error();
    seg.handle = std::move(*handle);
    std::uint64_t end = 0;
    bool removed = false;
    if (auto ec = recover_segment(seg, last, start, end, removed)) return ec;
    if (removed) break;  // an unfinished last segment was deleted
    if (last) write_offset_ = end;
    segments_.emplace(seg.seq, std::move(seg));
  }
  if (recovery_.removed_empty_segment && !segments_.empty()) {
    // The previous segment becomes the open one: reopen it for writing, continue after its end.
    auto& seg = segments_.rbegin()->second;
    auto handle = io_.open(seg.path, open_flags::read_write);
    if (!handle) return handle.error();
    seg.handle = std::move(*handle);
    write_offset_ = seg_end_;
  }
  for (std::size_t i = 0; i < locations_.size(); ++i) {
    if (locations_[i].segment_seq == 0) {
      return fail(errc::corrupt, dir_, 0,
                  "log entry " + std::to_string(start_index_ + 1 + i) +
                      " is missing (a segment holding it is gone)");
    }
  }
  recovery_.segments = segments_.size();
  recovery_.last_seq = last_seq_;
  return {};
}

std::error_code segmented_log::recover_segment(segment& seg, bool last, const log_start& start,
                                               std::uint64_t& end_offset, bool& removed) {
  removed = false;
  auto size = seg.handle->size();
  if (!size) return size.error();
  std::string buf(*size, '\0');
  if (auto ec = read_exact(*seg.handle, 0, buf.data(), buf.size())) return ec;

  // Is there any valid record at an 8-aligned offset >= from (with a seq above last_seq_)?
  auto valid_record_after = [&](std::uint64_t from, std::uint64_t& found) {
    parsed_record probe;
    const char* why = nullptr;
    for (std::uint64_t q = round_up8(from); q + record_header_bytes <= buf.size(); q += 8) {
      if (detail::load_u32(buf.data() + q) != record_magic) continue;
      if (parse_record(buf, q, probe, &why) && probe.seq > last_seq_) {
        found = q;
        return true;
      }
    }
    return false;
  };

  // Segment header.
  const bool header_intact = buf.size() >= segment_header_bytes &&
                             std::memcmp(buf.data(), segment_magic, 8) == 0 &&
                             detail::load_u32(buf.data() + 36) == crc32c(buf.data(), 36);
  if (!header_intact) {
    // A creation that never completed leaves an empty file (crash before fallocate) or a
    // preallocated one with a partial header; a size in between means a truncated file.
    std::uint64_t found = 0;
    if (last && (buf.empty() || buf.size() >= segment_header_bytes) &&
        !valid_record_after(segment_header_bytes, found)) {
      // The creation of this segment never completed (its header and first record are synced
      // together, and nothing valid is in it): no acknowledged record can be in it. Remove it.
      seg.handle.reset();
      if (auto ec = io_.unlink(seg.path)) return ec;
      if (auto ec = io_.sync_dir(dir_)) return ec;
      recovery_.removed_empty_segment = true;
      removed = true;
      return {};
    }
    return fail(errc::corrupt, seg.path, 0, "segment header damaged");
  }
  if (detail::load_u32(buf.data() + 8) != segment_format_version) {
    return fail(
        errc::unsupported_version, seg.path, 8,
        "unsupported segment format version " + std::to_string(detail::load_u32(buf.data() + 8)));
  }
  if (detail::load_u32(buf.data() + 12) != segment_header_bytes ||
      detail::load_u64(buf.data() + 16) != seg.seq) {
    return fail(errc::corrupt, seg.path, 12, "segment header does not match its file name");
  }
  // Segment files keep their preallocated size for life (a torn tail is zeroed, never cut), so a
  // different size means the file was truncated or extended behind our back.
  seg.capacity = detail::load_u64(buf.data() + 24);
  if (seg.capacity != buf.size()) {
    return fail(errc::corrupt, seg.path, buf.size(),
                "file size " + std::to_string(buf.size()) + " differs from the preallocated size " +
                    std::to_string(seg.capacity) + " (truncated?)");
  }

  std::uint64_t pos = segment_header_bytes;
  parsed_record rec;
  while (pos < buf.size()) {
    const std::uint64_t rest = buf.size() - pos;
    if (all_zero(buf.data() + pos, std::min<std::uint64_t>(rest, record_header_bytes)) &&
        all_zero(buf.data() + pos, rest)) {
      break;  // the zero tail of the preallocated segment
    }
    const char* why = nullptr;
    const bool ok = parse_record(buf, pos, rec, &why) && rec.seq > last_seq_;
    if (!ok) {
      if (why == nullptr) why = "record sequence number not increasing";
      std::uint64_t found = 0;
      if (!last) {
        return fail(errc::corrupt, seg.path, pos, why);
      }
      if (valid_record_after(pos + 8, found)) {
        return fail(errc::corrupt, seg.path, pos,
                    std::string(why) + " (followed by a valid record at offset " +
                        std::to_string(found) + ")");
      }
      // Torn tail: the last append never completed, so it was never acknowledged. Zero it (the
      // file keeps its size), so nothing of it can be read as data later.
      std::uint64_t garbage_end = buf.size();
      while (garbage_end > pos && buf[garbage_end - 1] == '\0')
        --garbage_end;
      const std::string zeros(garbage_end - pos, '\0');
      if (auto ec = seg.handle->pwrite(pos, zeros.data(), zeros.size())) return ec;
      if (auto ec = seg.handle->datasync()) return ec;
      recovery_.torn_tail = true;
      recovery_.torn_tail_file = seg.path.string();
      recovery_.torn_tail_offset = pos;
      break;
    }
    // Replay: the record supersedes every entry from its first index on.
    if (rec.seq >= start.reset_seq && !rec.entries.empty()) {
      for (std::size_t i = 0; i < rec.entries.size(); ++i) {
        const std::uint64_t index = rec.first_index + i;
        if (index <= start_index_) continue;
        const std::uint64_t slot = index - start_index_ - 1;
        if (slot < locations_.size()) locations_.resize(slot);
        while (locations_.size() < slot)
          locations_.push_back(location{});  // hole (seq 0)
        const auto& pe = rec.entries[i];
        locations_.push_back(location{pe.term, seg.seq, pe.data_offset, pe.size, pe.crc, pe.type});
      }
    }
    last_seq_ = rec.seq;
    last_record_segment_ = seg.seq;
    recovery_.hard = rec.hard;
    ++recovery_.records;
    ++seg.records;
    pos += rec.total_bytes;
  }
  end_offset = pos;
  seg_end_ = pos;
  return {};
}

std::error_code segmented_log::repair_tail() {
  if (!tail_dirty_) return {};
  if (!orphan_.empty()) {
    // A segment roll failed: its file must be gone (durably) before records go elsewhere, or a
    // later recovery would find an unacknowledged record after the newer ones.
    auto ec = io_.unlink(orphan_);
    if (ec && ec != std::errc::no_such_file_or_directory) return ec;
    if (auto sync_ec = io_.sync_dir(dir_)) return sync_ec;
    orphan_.clear();
  }
  if (!segments_.empty() && dirty_end_ > write_offset_) {
    auto& seg = segments_.rbegin()->second;
    const std::string zeros(dirty_end_ - write_offset_, '\0');
    if (auto ec = seg.handle->pwrite(write_offset_, zeros.data(), zeros.size())) return ec;
    if (auto ec = seg.handle->datasync()) return ec;
  }
  dirty_end_ = 0;
  tail_dirty_ = false;
  return {};
}

std::error_code segmented_log::append(std::uint64_t seq, const raft::hard_state& hard,
                                      const std::vector<raft::entry>& entries) {
  RAFTSYNC_ASSERT(seq > last_seq_, "record sequence numbers must increase");
  if (tail_dirty_) {
    if (auto ec = repair_tail()) return ec;
  }
  std::uint64_t first = 0;
  if (!entries.empty()) {
    first = entries.front().index;
    if (first < first_index()) return make_error_code(errc::compacted);
    if (first > last_index() + 1) return make_error_code(errc::unavailable);
    for (std::size_t i = 1; i < entries.size(); ++i) {
      RAFTSYNC_ASSERT(entries[i].index == first + i, "appended entries must be consecutive");
    }
  }
  // Build the record.
  std::uint64_t data_bytes = 0;
  for (const auto& e : entries)
    data_bytes += e.data.size();
  const std::uint64_t payload = entries.size() * entry_header_bytes + data_bytes;
  RAFTSYNC_ASSERT(record_header_bytes + payload < max_record_bytes, "record too large");
  const std::uint64_t total = round_up8(record_header_bytes + payload);
  std::string rec(total, '\0');
  char* h = rec.data();
  detail::store_u32(h, record_magic);
  detail::store_u32(h + 8, static_cast<std::uint32_t>(payload));
  detail::store_u32(h + 12, static_cast<std::uint32_t>(entries.size()));
  detail::store_u64(h + 16, seq);
  detail::store_u64(h + 24, first);
  detail::store_u64(h + 32, hard.term);
  detail::store_u64(h + 40, hard.vote);
  detail::store_u64(h + 48, hard.commit);
  std::vector<std::uint32_t> crcs(entries.size());
  std::uint64_t data_pos = record_header_bytes + entries.size() * entry_header_bytes;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    char* eh = h + record_header_bytes + i * entry_header_bytes;
    crcs[i] = crc32c(e.data);
    detail::store_u64(eh, e.term);
    detail::store_u32(eh + 8, static_cast<std::uint32_t>(e.data.size()));
    detail::store_u32(eh + 12, crcs[i]);
    eh[16] = static_cast<char>(e.type);
    if (!e.data.empty()) std::memcpy(h + data_pos, e.data.data(), e.data.size());
    data_pos += e.data.size();
  }
  detail::store_u32(h + 4,
                    crc32c(h + 8, record_header_bytes - 8 + entries.size() * entry_header_bytes));

  // Write it: into the open segment if it fits, else into a new one.
  std::uint64_t record_offset;
  if (segments_.empty() || write_offset_ + total > segments_.rbegin()->second.capacity) {
    if (auto ec = roll(total, rec)) return ec;
    record_offset = segment_header_bytes;
  } else {
    auto& seg = segments_.rbegin()->second;
    std::error_code ec = seg.handle->pwrite(write_offset_, rec.data(), rec.size());
    if (!ec) ec = seg.handle->datasync();
    if (ec) {
      tail_dirty_ = true;
      dirty_end_ = std::max(dirty_end_, write_offset_ + total);
      return ec;
    }
    record_offset = write_offset_;
    write_offset_ += total;
    ++seg.records;
  }

  // Durable: update the in-memory view.
  auto& seg = segments_.rbegin()->second;
  last_seq_ = seq;
  last_record_segment_ = seg.seq;
  if (!entries.empty()) {
    locations_.resize(first - start_index_ - 1);
    std::uint64_t offset =
        record_offset + record_header_bytes + entries.size() * entry_header_bytes;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const auto& e = entries[i];
      locations_.push_back(location{e.term, seg.seq, offset,
                                    static_cast<std::uint32_t>(e.data.size()), crcs[i], e.type});
      offset += e.data.size();
    }
    cache_append(entries);
  }
  return {};
}

std::error_code segmented_log::roll(std::uint64_t record_bytes, const std::string& record) {
  const std::uint64_t seq = segments_.empty() ? next_segment_seq_ : segments_.rbegin()->first + 1;
  segment seg;
  seg.seq = seq;
  seg.path = dir_ / segment_name(seq);
  seg.capacity = std::max(options_.segment_size_bytes, segment_header_bytes + record_bytes);
  const std::string bytes = encode_segment_header(seq, seg.capacity) + record;
  auto failed = [&](std::error_code ec) {
    orphan_ = seg.path;
    tail_dirty_ = true;
    return ec;
  };
  auto handle =
      io_.open(seg.path, open_flags::read_write | open_flags::create | open_flags::truncate);
  if (!handle) return failed(handle.error());
  seg.handle = std::move(*handle);
  // Header and first record are synced together; the directory fsync then makes the name durable.
  if (auto ec = seg.handle->allocate(0, seg.capacity)) return failed(ec);
  if (auto ec = seg.handle->pwrite(0, bytes.data(), bytes.size())) return failed(ec);
  if (auto ec = seg.handle->datasync()) return failed(ec);
  if (auto ec = io_.sync_dir(dir_)) return failed(ec);
  seg.records = 1;
  write_offset_ = bytes.size();
  dirty_end_ = 0;
  segments_.emplace(seq, std::move(seg));
  return {};
}

std::error_code segmented_log::compact(std::uint64_t index, std::uint64_t term) {
  if (index <= start_index_) return {};
  const std::uint64_t drop = std::min<std::uint64_t>(index - start_index_, locations_.size());
  locations_.erase(locations_.begin(), locations_.begin() + static_cast<std::ptrdiff_t>(drop));
  if (index > start_index_ + drop) locations_.clear();
  start_index_ = index;
  start_term_ = term;
  while (!cache_.empty() && cache_first_ <= index) {
    cache_bytes_ -= raft::entry_size_bytes(cache_.front());
    cache_.pop_front();
    ++cache_first_;
  }
  if (cache_.empty()) cache_first_ = 0;
  return delete_unneeded_segments();
}

std::error_code segmented_log::reset(std::uint64_t index, std::uint64_t term) {
  locations_.clear();
  cache_.clear();
  cache_bytes_ = 0;
  cache_first_ = 0;
  start_index_ = index;
  start_term_ = term;
  return delete_unneeded_segments();
}

std::error_code segmented_log::delete_unneeded_segments() {
  // Live entries' segments never decrease with the index (a later record supersedes everything
  // after its first index), so the first live entry's segment bounds the deletable prefix. The
  // segment holding the newest record stays: it carries the current hard state.
  std::uint64_t limit = last_record_segment_;
  if (!locations_.empty()) limit = std::min(limit, locations_.front().segment_seq);
  while (segments_.size() > 1 && segments_.begin()->first < limit) {
    auto it = segments_.begin();
    // One directory fsync per file keeps the deletions in order: a crash can never leave a gap
    // in the segment sequence.
    if (auto ec = io_.unlink(it->second.path)) return ec;
    next_segment_seq_ = std::max(next_segment_seq_, it->first + 1);
    segments_.erase(it);
    if (auto ec = io_.sync_dir(dir_)) return ec;
  }
  return {};
}

void segmented_log::cache_append(const std::vector<raft::entry>& entries) {
  if (options_.cache_bytes_max == 0) return;
  const std::uint64_t first = entries.front().index;
  if (!cache_.empty()) {
    if (first <= cache_first_) {
      cache_.clear();
      cache_bytes_ = 0;
    } else {
      while (cache_first_ + cache_.size() > first) {
        cache_bytes_ -= raft::entry_size_bytes(cache_.back());
        cache_.pop_back();
      }
    }
  }
  if (cache_.empty()) cache_first_ = first;
  RAFTSYNC_ASSERT(cache_first_ + cache_.size() == first, "cache must stay contiguous");
  for (const auto& e : entries) {
    cache_.push_back(e);
    cache_bytes_ += raft::entry_size_bytes(e);
  }
  while (!cache_.empty() && cache_bytes_ > options_.cache_bytes_max) {
    cache_bytes_ -= raft::entry_size_bytes(cache_.front());
    cache_.pop_front();
    ++cache_first_;
  }
  if (cache_.empty()) cache_first_ = 0;
}

result<std::uint64_t> segmented_log::term(std::uint64_t index) const {
  if (index < start_index_) return errc::compacted;
  if (index > last_index()) return errc::unavailable;
  if (index == start_index_) return start_term_;
  return locations_[index - start_index_ - 1].term;
}

result<std::vector<raft::entry>> segmented_log::entries(std::uint64_t low, std::uint64_t high,
                                                        std::uint64_t max_bytes) const {
  if (low < first_index()) return errc::compacted;
  if (high > last_index() + 1) return errc::unavailable;
  std::vector<raft::entry> out;
  std::uint64_t total = 0;
  std::uint64_t i = low;
  while (i < high) {
    if (!cache_.empty() && i >= cache_first_) {
      const auto& e = cache_[i - cache_first_];
      const std::uint64_t size = raft::entry_size_bytes(e);
      if (!out.empty() && total + size > max_bytes) break;
      out.push_back(e);
      total += size;
      ++i;
      continue;
    }
    // A run of entries stored back to back in one segment: one pread.
    const std::uint64_t run_end_limit =
        cache_.empty() ? high : std::min<std::uint64_t>(high, cache_first_);
    const location& first_loc = locations_[i - start_index_ - 1];
    std::uint64_t j = i;
    std::uint64_t run_bytes = 0;
    bool limit_hit = false;
    while (j < run_end_limit) {
      const location& loc = locations_[j - start_index_ - 1];
      if (j > i && (loc.segment_seq != first_loc.segment_seq ||
                    loc.offset != first_loc.offset + run_bytes)) {
        break;
      }
      const std::uint64_t size = loc.size + 24;
      if ((!out.empty() || j > i) && total + size > max_bytes) {
        limit_hit = true;
        break;
      }
      total += size;
      run_bytes += loc.size;
      ++j;
    }
    auto seg = segments_.find(first_loc.segment_seq);
    RAFTSYNC_ASSERT(seg != segments_.end(), "a live entry's segment must exist");
    std::string buf(run_bytes, '\0');
    if (run_bytes > 0) {
      if (auto ec = read_exact(*seg->second.handle, first_loc.offset, buf.data(), buf.size())) {
        return ec;
      }
    }
    std::uint64_t off = 0;
    for (std::uint64_t k = i; k < j; ++k) {
      const location& loc = locations_[k - start_index_ - 1];
      if (crc32c(buf.data() + off, loc.size) != loc.crc) {
        error_message_ = seg->second.path.string() + " at offset " + std::to_string(loc.offset) +
                         ": entry " + std::to_string(k) + " data checksum mismatch";
        return errc::corrupt;
      }
      out.push_back(raft::entry{loc.term, k, loc.type, buf.substr(off, loc.size)});
      off += loc.size;
    }
    i = j;
    if (limit_hit) break;
  }
  return out;
}

}  // namespace raftsync::storage
