// raftsync — the state file: hard state plus the log's snapshot and compaction marks.
//
// The hard state of every-day operation travels inside the log records (segmented_log.hpp), so a
// vote or a new term costs no extra fsync. This file holds what changes rarely — the snapshot
// metadata (with the membership), the compaction point and the log reset mark — together with the
// hard state as of that moment. It is replaced atomically: write `state.tmp`, fdatasync, rename
// over `state`, fsync the directory. A reader therefore sees the old or the new file, whole; any
// checksum or format failure of `state` is corruption (errc::corrupt), never a torn write.
//
// Byte layout (little-endian):
//   0   8  magic "RSYNCSTA"
//   8   4  format version (1)
//   12  4  payload length P
//   16  P  payload: seq u64 | hard: term u64, vote u64, commit u64 |
//                   conf: voter count u32, voters u64..., learner count u32, learners u64... |
//                   snapshot: index u64, term u64, conf (as above) |
//                   compacted_index u64 | compacted_term u64 | reset_seq u64
//   16+P 4 CRC32C of bytes [0, 16+P)
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"
#include "raftsync/storage/file_io.hpp"

namespace raftsync::storage {

struct stored_state {
  // Position in the storage's single write order (shared with log records): on recovery the hard
  // state with the highest sequence number wins.
  std::uint64_t seq = 0;
  raft::hard_state hard;
  // Membership as of snapshot.index, or as given to bootstrap (what load_initial_state returns).
  raft::conf_state conf;
  // The latest snapshot (bootstrap writes one at index 0 carrying the initial membership).
  raft::snapshot_metadata snapshot;
  // Log entries <= compacted_index are gone; compacted_term is the term of that entry.
  std::uint64_t compacted_index = 0;
  std::uint64_t compacted_term = 0;
  // Log records with seq < reset_seq are ignored (apply_snapshot replaced the whole log).
  std::uint64_t reset_seq = 0;

  friend bool operator==(const stored_state&, const stored_state&) = default;
};

inline constexpr std::uint32_t state_file_version = 1;

class hard_state_file {
 public:
  // Atomically replaces `dir`/state. Returns the first failing operation's error.
  static std::error_code write(file_io& io, const std::filesystem::path& dir,
                               const stored_state& st);
  // Reads `dir`/state: nullopt if there is none. errc::corrupt / errc::unsupported_version with a
  // human-readable explanation (file and offset) in *message when given.
  static result<std::optional<stored_state>> read(file_io& io, const std::filesystem::path& dir,
                                                  std::string* message = nullptr);
  static std::string encode(const stored_state& st);
};

}  // namespace raftsync::storage
