// raftsync::folder — the commands of the replicated folder and their binary codec.
//
// A command is what one node proposes and every node applies in log order (state_machine.hpp).
// Every command carries its origin node, a per-origin sequence number (dedupe of a proposal
// committed twice, and how a proposer recognises its own commands when they are applied), the
// path, the manifest version of that path the proposer saw (base_version, 0 = absent) and the
// proposer's UTC clock at proposal time (timestamp_ns, the only clock conflict names use, so
// every node derives the same conflict name).
//
// Wire format (version 2, little endian), see docs/folder.md for the full table:
//   u8 format_version(=1) | u8 kind | u64 origin | u64 sequence | u64 base_version |
//   i64 timestamp_ns | str path | kind-specific fields
// where str = u32 length + bytes and blob = u64 length + bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "raftsync/folder/sha256.hpp"
#include "raftsync/result.hpp"

namespace raftsync::folder {

using node_id = std::uint64_t;

// Version 2 added `seen_index` to rename; version 1 entries (in logs written before) still decode.
inline constexpr std::uint8_t command_format_version = 2;

enum class command_kind : std::uint8_t {
  write = 1,      // a regular file's whole content (size <= chunk_bytes): create or modify
  chunk = 2,      // one changed chunk of a large file, into the staging object (origin, upload_id)
  commit = 3,     // end of an upload: `path` becomes the staged chunks + unchanged base chunks
  remove = 4,     // delete a regular file or a symlink
  rename = 5,     // move `path` (file, symlink or directory with its subtree) to `target`
  mkdir = 6,      // create a directory (missing parents are created too)
  rmdir = 7,      // remove an empty directory
  set_mode = 8,   // permission bits of a file or directory
  set_mtime = 9,  // modification time of a regular file
  symlink = 10,   // create or replace a symbolic link; `target` is stored, never followed
  // One changed chunk of a large file whose bytes travelled beside the log (the content service of
  // docs/folder.md): only (upload_id, chunk_index, sha256, size_bytes) are in the log; every node
  // finds the bytes in its staging object, or fetches them from a peer before the apply.
  chunk_ref = 11,
};

const char* to_string(command_kind kind) noexcept;

struct command {
  command_kind kind = command_kind::write;
  node_id origin = 0;              // proposing node (never 0)
  std::uint64_t sequence = 0;      // per origin, strictly increasing in proposal order
  std::string path;                // canonical relative path (path_rules.hpp)
  std::uint64_t base_version = 0;  // manifest version of `path` the proposer saw; 0 = absent
  std::int64_t timestamp_ns = 0;   // proposer's UTC clock when it proposed (conflict names)

  std::uint32_t mode = 0;     // write, commit, mkdir, set_mode: permission bits (& 07777)
  std::int64_t mtime_ns = 0;  // write, commit, set_mtime: the file's modification time
  std::string content;        // write: the whole file; chunk: this chunk's bytes
  std::string target;         // rename: destination path; symlink: the link's target text
  std::uint64_t target_base_version = 0;  // rename: version of `target` the proposer saw
  // rename: the proposer's applied index when it proposed (0 = unknown, format 1): every moved
  // entry whose version is at most this was seen by the proposer (docs/folder.md).
  std::uint64_t seen_index = 0;

  std::uint64_t upload_id = 0;  // chunk, chunk_ref, commit: the proposer's upload (one per origin)
  std::uint64_t chunk_index = 0;  // chunk, chunk_ref: which chunk (offset = index * chunk_bytes)
  std::uint64_t size_bytes = 0;   // commit: total size of the content; chunk_ref: chunk size
  digest sha256{};  // chunk, chunk_ref: hash of the chunk's bytes; commit: of the whole content
  std::vector<digest> chunk_hashes;  // commit: hash of every chunk of the new content, in order

  friend bool operator==(const command&, const command&) = default;
};

// Decoding limits: anything beyond them is errc::malformed (a hostile or corrupt entry never
// makes a node allocate more than these).
struct command_limits {
  std::uint64_t content_bytes_max = 64u << 20;  // write content / chunk bytes
  std::size_t path_bytes_max = 4096;            // path and rename/symlink target
  std::uint64_t chunk_count_max = 1u << 24;     // chunk hashes of one commit (16 Ti at 1 MiB)
};

std::string encode_command(const command& value);
// errc::malformed for truncated, oversized, trailing or inconsistent bytes;
// errc::unsupported_version for a format version this build does not know. Never reads out of
// bounds.
result<command> decode_command(std::string_view bytes, const command_limits& limits = {});

// The kind and origin of an encoded command, read from its fixed header without decoding (and
// copying) the rest; errc::malformed / errc::unsupported_version as decode_command would say for
// the header. For checks on hot paths (forwarded proposals, apply batching).
struct command_header {
  command_kind kind = command_kind::write;
  node_id origin = 0;
};
result<command_header> peek_command(std::string_view bytes);

// One line for logs: "write a/b.txt origin=2 seq=7 base=12 (4096 bytes)".
std::string describe(const command& value);

}  // namespace raftsync::folder
