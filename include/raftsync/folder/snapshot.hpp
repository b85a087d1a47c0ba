// raftsync::folder — folder snapshots: the committed state (manifest, dedupe windows, staged
// uploads and every committed file's bytes) as one byte stream, produced in bounded pieces by the
// sender and installed atomically by the receiver.
//
// Stream (version 1): header | state section (blob(state_machine::encode_replicated_state) |
// u64 n | n × str(missing path)) | the content of every regular file in manifest path order,
// except missing ones | every staged upload chunk (origin order, chunk order). Missing paths
// (state_machine::missing_paths(): committed content the sender could not build either) travel
// as names and become missing on the receiver too. Header: u32 magic "RSSN" | u8 version | u64
// chunk_bytes | u64 index | u64 state_bytes | 32-byte SHA-256 of the state | u64 total_bytes (69
// bytes). Offsets are stable for a given snapshot, so a transfer resumes at any offset.
//
// Committed state only: a working file can differ from the manifest (a local edit not yet
// committed, or an apply that ran after the snapshot was taken). The writer verifies every chunk
// it reads against the manifest's chunk hash; on a mismatch read() fails with errc::conflict and
// the sender skips that span (span_end(); the receiver's skip()): the receiver installs the path as
// missing and fetches its committed content from a peer afterwards (state_machine::repair_missing)
// — a transfer never fails because the sender's folder is busy. Nothing uncommitted ever reaches
// a receiver.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "raftsync/folder/sha256.hpp"
#include "raftsync/folder/state_machine.hpp"
#include "raftsync/result.hpp"

namespace raftsync::folder {

namespace detail {
struct snapshot_span {
  std::uint64_t start = 0;  // stream offset of the first byte
  std::uint64_t size_bytes = 0;
  std::string path;               // tree path (files) or staging file name (uploads)
  std::uint64_t file_offset = 0;  // where the span starts inside that file
  const std::vector<digest>* chunk_hashes = nullptr;  // files: per-chunk hashes
  digest single{};                                    // uploads: the hash of the one staged chunk
  bool upload = false;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
};
}  // namespace detail

inline constexpr std::uint64_t snapshot_header_bytes = 69;

class snapshot_writer {
 public:
  // Captures sm's committed state at sm.applied_index(). `sm` (and its tree) must outlive the
  // writer. Memory: the replicated state plus one chunk per read().
  explicit snapshot_writer(state_machine& sm);

  std::uint64_t index() const noexcept { return index_; }
  std::uint64_t total_bytes() const noexcept { return total_bytes_; }
  // Up to max_bytes of the stream at `offset` (never crossing a chunk boundary of a file, so a
  // reply is at most chunk_bytes). errc::conflict when a working file no longer holds the
  // committed bytes (see the header comment); errc::malformed for offset >= total_bytes().
  result<std::string> read(std::uint64_t offset, std::size_t max_bytes);
  // The end of the content span (one file, or one staged upload chunk) holding `offset`, for
  // skipping it after read() reported errc::conflict; 0 for an offset before the content.
  std::uint64_t span_end(std::uint64_t offset) const;

 private:
  state_machine& sm_;
  std::uint64_t index_ = 0;
  std::uint64_t chunk_bytes_ = 0;
  std::string prefix_;      // header + replicated state
  replicated_state state_;  // what the spans point into
  std::vector<detail::snapshot_span> spans_;
  std::uint64_t total_bytes_ = 0;
};

// Receives a stream into "<root>/.raftsync-tmp-snapshot/" and installs it.
class snapshot_reader {
 public:
  // Installs into sm's tree and state; discards a leftover partial download.
  explicit snapshot_reader(state_machine& sm);

  // Where the sender should (re)start: the first byte not yet received.
  std::uint64_t next_offset() const noexcept { return received_; }
  // Total size once the header arrived (0 before).
  std::uint64_t total_bytes() const noexcept { return total_bytes_; }
  bool complete() const noexcept { return total_bytes_ != 0 && received_ == total_bytes_; }
  std::uint64_t index() const noexcept { return index_; }

  // Consumes `data` at `offset`. Bytes before next_offset() are ignored (a resent piece); a gap
  // (offset > next_offset()) is errc::malformed; a chunk whose hash does not match, a bad header
  // or state, or bytes beyond total_bytes is errc::corrupt / errc::malformed (abort() and
  // restart the transfer). A chunk_bytes different from this node's is errc::invalid_config.
  std::error_code write(std::uint64_t offset, std::string_view data);
  // The sender could not read the span that starts at or contains next_offset() (its working file
  // changed): `offset` must be next_offset() and `end` that span's end. A file becomes missing
  // (installed as such, repaired from a peer later); a staged upload chunk is simply absent (its
  // commit fetches it). errc::malformed for any other offset or end.
  std::error_code skip(std::uint64_t offset, std::uint64_t end);

  // Atomically replaces the working tree and the state machine's state with the snapshot:
  // the staged tree is complete and fsynced, a READY marker is written, the old top-level
  // entries are moved into the staging area, the new ones moved in, the state file persisted,
  // the staging area removed. A crash anywhere in between is finished by state_machine::open()
  // (finish_interrupted_install). Local edits are kept: a working entry that is not this
  // node's committed version goes back to its path, or beside it as a local conflict copy when
  // the cluster changed the path too (see rescued()).
  std::error_code install();
  // The local edits the last install() put back (original path → where it is now): propose them.
  const std::vector<preserved_edit>& rescued() const noexcept { return rescued_; }
  // Throws away a partial download.
  std::error_code abort();

 private:
  std::error_code start_contents();
  std::error_code finish_span(const detail::snapshot_span& span);

  state_machine& sm_;
  std::uint64_t index_ = 0;
  std::uint64_t chunk_bytes_ = 0;
  std::uint64_t state_bytes_ = 0;
  std::uint64_t total_bytes_ = 0;
  digest state_sha256_{};
  std::string prefix_;  // header + state while they arrive
  replicated_state state_;
  std::set<std::string, std::less<>> missing_;  // committed files the sender lacks too
  std::vector<detail::snapshot_span> spans_;
  std::size_t span_ = 0;        // current span
  sha256_hasher chunk_hasher_;  // running hash of the current chunk
  std::uint64_t received_ = 0;
  bool contents_started_ = false;
  std::vector<preserved_edit> rescued_;
};

// Called by state_machine::open(): completes an install interrupted after its READY marker, or
// removes a partial download; the local edits it put back are appended to `rescued`. Not for
// other callers.
std::error_code finish_interrupted_install(state_machine& sm,
                                           std::vector<preserved_edit>* rescued = nullptr);

}  // namespace raftsync::folder
