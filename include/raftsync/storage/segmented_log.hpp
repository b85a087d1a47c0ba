// raftsync — segmented_log: the durable Raft log as a journal of checksummed records in
// preallocated segment files.
//
// Each append is one record (header + entries), written with one pwrite and made durable with
// exactly one fdatasync. A record whose first index is <= last_index() replaces the suffix from
// there (Raft §5.3): nothing already acknowledged is overwritten in place — the journal is replayed
// in write order on open, and a later record supersedes the entries of earlier ones from its first
// index on. So a crash in the middle of a truncation can never lose the entries (or the hard state)
// that came before it. Every record also carries the hard state as of that record, so a vote
// becomes durable with the same single fdatasync as the entries.
//
// Files (in the log directory): seg-<seq as 16 hex digits>.log, seq = 1, 2, ... consecutive.
// Segment layout (little-endian):
//   segment header, 40 bytes: "RSYNCLOG" | version u32 (1) | header size u32 (40) | seq u64 |
//                             capacity u64 (the preallocated file size) | reserved u32 (0) |
//                             CRC32C of bytes [0, 36) u32
//   records, each starting at a multiple of 8:
//     0  magic u32 0x44435352 ("RSCD")
//     4  CRC32C u32 of bytes [8, 56 + 24 * entry_count) (the header after this field and every
//        entry header; each entry header holds the CRC32C of its data, so the record CRC covers
//        header and payload)
//     8  payload bytes u32 (entry headers + data, without padding)
//     12 entry count u32
//     16 seq u64 (strictly increasing over the whole storage; shared with the state file)
//     24 first index u64 (0 when the record has no entries: a hard-state-only record)
//     32 hard state: term u64, vote u64, commit u64
//     56 entry headers, 24 bytes each: term u64 | data length u32 | data CRC32C u32 |
//        type u8 | 7 reserved zero bytes
//        then the entries' data back to back, then zero padding to a multiple of 8
//   the rest of the preallocated segment is zero. A segment file never changes size after its
//   creation (fallocate to `capacity`), so a file of another size is corrupt.
//
// Recovery (open): every record of every segment is checked (header CRC and each entry's data
// CRC). In the last segment the first bad record is a torn tail — an append that never
// completed, so never acknowledged — provided no valid record follows it: it is zeroed. A bad
// record anywhere else, or one followed by a valid record, is corruption: open fails
// with errc::corrupt and error_message() names the file and offset.
//
// Not thread-safe: one thread (the node driver's) at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"
#include "raftsync/storage/file_io.hpp"

namespace raftsync::storage {

inline constexpr std::uint32_t segment_format_version = 1;
inline constexpr std::uint64_t segment_header_bytes = 40;
inline constexpr std::uint64_t record_header_bytes = 56;
inline constexpr std::uint64_t entry_header_bytes = 24;

struct segmented_log_options {
  // Size each segment is preallocated to. A record larger than this gets a segment of its own.
  std::uint64_t segment_size_bytes = 64ull << 20;
  // Recent entries kept in memory (by entry_size_bytes) so the leader's reads skip the disk.
  std::uint64_t cache_bytes_max = 16ull << 20;
};

// Where the log starts, from the state file (hard_state_file.hpp).
struct log_start {
  std::uint64_t index = 0;      // entries <= index are compacted away
  std::uint64_t term = 0;       // term of entry `index`
  std::uint64_t reset_seq = 0;  // records with seq < reset_seq are ignored
};

struct log_recovery_info {
  std::uint64_t last_seq = 0;            // seq of the last valid record (0: none)
  std::optional<raft::hard_state> hard;  // hard state of the last valid record
  std::size_t segments = 0;              // segment files in use after recovery
  std::uint64_t records = 0;             // valid records read
  bool torn_tail = false;                // a torn tail was cut off
  std::string torn_tail_file;            // where
  std::uint64_t torn_tail_offset = 0;
  bool removed_empty_segment = false;  // a segment whose creation never completed was removed
};

class segmented_log {
 public:
  segmented_log(file_io& io, std::filesystem::path dir, segmented_log_options options = {});
  ~segmented_log();
  segmented_log(const segmented_log&) = delete;
  segmented_log& operator=(const segmented_log&) = delete;

  // Recovers the log from the segment files (the directory must exist). On errc::corrupt or
  // errc::unsupported_version, error_message() names the file and offset.
  std::error_code open(const log_start& start);
  const std::string& error_message() const noexcept { return error_message_; }
  const log_recovery_info& recovery() const noexcept { return recovery_; }

  // Appends one record holding `hard` and `entries` (consecutive indices; empty for a
  // hard-state-only record). entries.front().index must be in [first_index(), last_index() + 1];
  // a lower one than last_index() + 1 replaces the suffix from there. One pwrite and exactly one
  // fdatasync (a segment roll adds the new file's creation and one directory fsync). On failure
  // nothing changes in memory and tail_dirty() is set: repair_tail() must succeed before the next
  // append (append calls it itself).
  std::error_code append(std::uint64_t seq, const raft::hard_state& hard,
                         const std::vector<raft::entry>& entries);

  // After a failed append: overwrites the possibly half-written bytes after the last durable
  // record with zeros and fdatasyncs, so no half-written record can later be taken for data.
  std::error_code repair_tail();
  bool tail_dirty() const noexcept { return tail_dirty_; }

  // Forgets entries <= index (index <= last_index()) and deletes the segment files that hold no
  // entry > index and no record newer than the ones kept. The caller first makes the new start
  // durable (state file). Deleting is best effort: an error is returned, the view stays correct.
  std::error_code compact(std::uint64_t index, std::uint64_t term);
  // Forgets every entry (apply_snapshot): the log continues after `index`.
  std::error_code reset(std::uint64_t index, std::uint64_t term);

  // Reads (same contracts as raft::log_reader).
  result<std::vector<raft::entry>> entries(std::uint64_t low, std::uint64_t high,
                                           std::uint64_t max_bytes) const;
  result<std::uint64_t> term(std::uint64_t index) const;
  std::uint64_t first_index() const noexcept { return start_index_ + 1; }
  std::uint64_t last_index() const noexcept { return start_index_ + locations_.size(); }
  std::uint64_t last_seq() const noexcept { return last_seq_; }

  std::size_t segment_count() const noexcept { return segments_.size(); }
  std::vector<std::filesystem::path> segment_paths() const;
  const std::filesystem::path& dir() const noexcept { return dir_; }

  static std::string segment_name(std::uint64_t seq);

 private:
  struct segment {
    std::uint64_t seq = 0;
    std::filesystem::path path;
    std::unique_ptr<file> handle;
    std::uint64_t capacity = 0;  // preallocated size
    std::uint64_t records = 0;   // valid records (any seq)
  };
  struct location {
    std::uint64_t term = 0;
    std::uint64_t segment_seq = 0;
    std::uint64_t offset = 0;  // of the entry's data
    std::uint32_t size = 0;
    std::uint32_t crc = 0;
    raft::entry_type type = raft::entry_type::normal;
  };

  std::error_code fail(errc code, const std::filesystem::path& file, std::uint64_t offset,
                       const std::string& what);
  std::error_code recover_segment(segment& seg, bool last, const log_start& start,
                                  std::uint64_t& end_offset, bool& removed);
  std::error_code roll(std::uint64_t record_bytes, const std::string& record);
  std::error_code delete_unneeded_segments();
  void cache_append(const std::vector<raft::entry>& entries);

  file_io& io_;
  std::filesystem::path dir_;
  segmented_log_options options_;
  mutable std::string error_message_;
  log_recovery_info recovery_;

  std::map<std::uint64_t, segment> segments_;  // by seq
  std::uint64_t write_offset_ = 0;             // in the last segment: end of the last record
  std::uint64_t dirty_end_ = 0;                // with tail_dirty_: end of possibly written bytes
  bool tail_dirty_ = false;
  std::filesystem::path orphan_;        // a segment whose creation failed; removed by repair_tail
  std::uint64_t seg_end_ = 0;           // recovery scratch: end of the last scanned segment
  std::uint64_t next_segment_seq_ = 1;  // seq of the next segment when none is left
  std::uint64_t last_seq_ = 0;
  std::uint64_t last_record_segment_ = 0;  // segment holding the newest record (0: none)

  std::uint64_t start_index_ = 0;
  std::uint64_t start_term_ = 0;
  std::deque<location> locations_;  // entry start_index_ + 1 + i

  // Invariant: cache_ holds entries [cache_first_, last_index()] or is empty.
  std::deque<raft::entry> cache_;
  std::uint64_t cache_first_ = 0;
  std::uint64_t cache_bytes_ = 0;
};

}  // namespace raftsync::storage
