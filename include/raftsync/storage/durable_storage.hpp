// raftsync — durable_storage: the Raft storage a node runs on.
//
// Implements raft::storage (the read side the core uses) and the same writes as
// raft::memory_storage, with the same meaning and error codes: bootstrap, set_hard_state, append
// (truncating a conflicting suffix), apply_snapshot, create_snapshot, compact — plus save(ready),
// which persists one ready's snapshot metadata, hard state and entries with exactly one fdatasync
// for the log batch. Every write returns only once it is durable.
//
// Directory layout under `dir`:
//   state                the state file (hard_state_file.hpp): snapshot metadata, membership,
//                        compaction point, hard state as of its writing; replaced atomically
//   log/seg-*.log        the segmented log (segmented_log.hpp); every record carries the hard state
//   snap/snap-*.snap     the application's snapshot data files (snapshot_file.hpp)
// On open the hard state is the one with the highest sequence number among the state file and
// the last log record.
//
// ---- Halted storage: the contract for the node driver --------------------------------------
// When a write fails (ENOSPC, EIO, ...), the failing call returns that error and the storage
// enters the halted state: status() == storage_status::halted, halted_error() holds the error.
// Nothing of the failed write is visible (reads return the state before it), and nothing of it
// will be taken for data after a restart: a half-written record is zeroed (try_resume) or cut off
// as a torn tail (open).
// While halted, every write first calls try_resume(); if that fails it returns the error and
// changes nothing. try_resume() removes the debris of the failed write, writes and fdatasyncs a
// probe record (so it succeeds only if the disk accepts writes again) and clears the halt.
// Reads keep working while halted (they only touch data made durable before the failure).
// The driver (replicated_folder's loop) must therefore:
//   1. on a failed save(rd): NOT send rd.messages, NOT apply, NOT call raw_node::advance(rd);
//      keep rd. Report status() == halted to the user/metrics.
//   2. keep ticking and stepping the raw_node, but take no new ready and send nothing. A leader
//      that cannot persist cannot send heartbeats or acknowledge anything, so its followers elect
//      another leader (check-quorum makes it step down once it hears the higher term); it must
//      not hold a leadership it cannot back with its disk. Optionally call
//      raw_node::transfer_leadership to a healthy peer first for a faster hand-over.
//   3. periodically (e.g. every election timeout) call save(rd) again with the SAME ready: it
//      resumes first, then persists rd. On success send rd.messages, apply, advance(rd) and carry
//      on. The log has no hole because nothing after the failed ready was ever written.
// ----------------------------------------------------------------------------------------------
//
// Not thread-safe: one thread (the driver's) at a time. The file_io outlives the storage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "raftsync/raft/ready.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/storage/file_io.hpp"
#include "raftsync/storage/hard_state_file.hpp"
#include "raftsync/storage/segmented_log.hpp"
#include "raftsync/storage/snapshot_file.hpp"

namespace raftsync::storage {

struct durable_storage_options {
  segmented_log_options log;
};

enum class storage_status : std::uint8_t {
  closed,  // open() has not succeeded
  ok,
  halted,  // a write failed; see halted_error() and try_resume()
};

struct recovery_report {
  bool created = false;  // the directory held no storage: a fresh one was created
  log_recovery_info log;
  std::uint64_t state_seq = 0;  // sequence number of the state file (0: none)
};

class durable_storage final : public raft::storage {
 public:
  durable_storage(file_io& io, std::filesystem::path dir, durable_storage_options options = {});
  ~durable_storage() override;
  durable_storage(const durable_storage&) = delete;
  durable_storage& operator=(const durable_storage&) = delete;

  // Opens (creating if needed) the storage in `dir` and recovers it. errc::corrupt or
  // errc::unsupported_version with error_message() naming the file and offset: the node must not
  // start on it. Other codes are I/O errors.
  std::error_code open();
  // Human-readable detail of the last open() failure or corruption found by a read.
  const std::string& error_message() const noexcept;
  const recovery_report& recovery() const noexcept { return recovery_; }

  // ---- writes (durable on success; see memory_storage for the meaning of each) ----
  // Brand-new cluster member: membership at index 0. errc::already_exists if the storage is
  // not empty.
  std::error_code bootstrap(const raft::conf_state& initial);
  std::error_code set_hard_state(const raft::hard_state& hs);
  std::error_code append(const std::vector<raft::entry>& entries);
  std::error_code apply_snapshot(const raft::snapshot_metadata& meta);
  std::error_code create_snapshot(std::uint64_t index, const raft::conf_state& conf);
  std::error_code compact(std::uint64_t index);
  // Persists rd.snapshot (apply_snapshot), then rd.hard and rd.entries as one log record with one
  // fdatasync. Does nothing if there is nothing to persist.
  std::error_code save(const raft::ready& rd);
  std::error_code save(const std::optional<raft::hard_state>& hard,
                       const raft::snapshot_metadata& snapshot,
                       const std::vector<raft::entry>& entries);

  // ---- halted state ----
  storage_status status() const noexcept { return status_; }
  bool halted() const noexcept { return status_ == storage_status::halted; }
  std::error_code halted_error() const noexcept { return halted_error_; }
  // Clears the halt if the disk accepts writes again (see the contract above). Success if not
  // halted.
  std::error_code try_resume();

  // ---- raft::storage ----
  result<raft::initial_state> load_initial_state() const override;
  result<std::vector<raft::entry>> entries(std::uint64_t low, std::uint64_t high,
                                           std::uint64_t max_bytes) const override;
  result<std::uint64_t> term(std::uint64_t index) const override;
  std::uint64_t first_index() const override;
  std::uint64_t last_index() const override;
  raft::snapshot_metadata snapshot() const override;

  const raft::hard_state& hard_state() const noexcept { return hard_; }

  // ---- the application's snapshot data files (in dir/snap) ----
  const std::filesystem::path& snapshot_dir() const noexcept { return snap_dir_; }
  result<snapshot_writer> begin_snapshot(const raft::snapshot_metadata& meta);
  result<snapshot_reader> open_snapshot(const raft::snapshot_metadata& meta);
  // Deletes snapshot files older than `index` (and abandoned temp files: do not call while a
  // snapshot_writer is open).
  std::error_code remove_snapshots_before(std::uint64_t index);

  // Error of the last best-effort cleanup (segment deletion after compact/apply_snapshot).
  std::error_code cleanup_error() const noexcept { return cleanup_error_; }
  const segmented_log& log() const noexcept { return log_; }

 private:
  std::error_code check_writable();
  std::error_code halt(std::error_code ec);
  std::error_code write_state(stored_state next);
  std::error_code write_record(const raft::hard_state& hs, const std::vector<raft::entry>& entries);
  std::error_code apply_snapshot_with(const raft::snapshot_metadata& meta, raft::hard_state hs);

  file_io& io_;
  std::filesystem::path dir_, log_dir_, snap_dir_;
  segmented_log log_;
  stored_state state_;
  raft::hard_state hard_;
  std::uint64_t next_seq_ = 1;
  storage_status status_ = storage_status::closed;
  std::error_code halted_error_;
  bool state_dirty_ = false;  // a state file write failed: rewrite the current state on resume
  std::error_code cleanup_error_;
  std::string error_message_;
  recovery_report recovery_;
};

}  // namespace raftsync::storage
