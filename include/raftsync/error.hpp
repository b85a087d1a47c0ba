// raftsync — operating errors.
//
// Two channels, never mixed: conditions a user, a peer or the disk can cause are reported as
// std::error_code values of the raftsync category (or the system category for OS errors);
// broken invariants are RAFTSYNC_ASSERT failures (see assert.hpp).
#pragma once

#include <string>
#include <system_error>

namespace raftsync {

// Values are stable: they appear in logs and on the wire (never reorder, only append).
enum class errc : int {
  ok = 0,
  invalid_config = 1,        // a config failed validate(); the message names the field
  not_leader = 2,            // the operation needs the leader; status() names the current one
  proposal_dropped = 3,      // no leader known, or a leadership transfer is in progress
  too_large = 4,             // a proposal or frame exceeds its configured maximum size
  compacted = 5,             // the requested log index was compacted into a snapshot
  unavailable = 6,           // the requested log index is not (yet) available
  snapshot_out_of_date = 7,  // a snapshot older than the current one was offered
  corrupt = 8,               // a checksum or format check failed on data we wrote earlier
  malformed = 9,             // a peer or the log handed us bytes that do not decode
  unsupported_version = 10,  // a frame or file written by an incompatible version
  storage_halted = 11,       // storage failed (for example disk full); the node is halted
  auth_failed = 12,          // a peer failed the cluster-secret handshake
  invalid_path = 13,         // a path is absolute, contains "..", NUL, or escapes the root
  conflict = 14,             // a change was based on a version that is no longer current
  stopped = 15,              // the component was stopped before the operation completed
  timed_out = 16,            // a deadline passed before the condition held
  busy = 17,                 // a bounded queue was full; the caller may retry later
  not_found = 18,            // the named object does not exist
  already_exists = 19,       // the named object exists and the operation would replace it
};

namespace detail {
class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "raftsync"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::ok: return "success";
      case errc::invalid_config: return "invalid configuration";
      case errc::not_leader: return "not the leader";
      case errc::proposal_dropped: return "proposal dropped (no leader or transfer in progress)";
      case errc::too_large: return "exceeds the configured maximum size";
      case errc::compacted: return "log index compacted";
      case errc::unavailable: return "log index unavailable";
      case errc::snapshot_out_of_date: return "snapshot out of date";
      case errc::corrupt: return "data corrupt (checksum or format mismatch)";
      case errc::malformed: return "malformed input";
      case errc::unsupported_version: return "unsupported format version";
      case errc::storage_halted: return "storage halted";
      case errc::auth_failed: return "authentication failed";
      case errc::invalid_path: return "invalid path";
      case errc::conflict: return "conflicting concurrent change";
      case errc::stopped: return "stopped";
      case errc::timed_out: return "timed out";
      case errc::busy: return "queue full";
      case errc::not_found: return "not found";
      case errc::already_exists: return "already exists";
    }
    return "unknown raftsync error";
  }
};
}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::error_category_impl category;
  return category;
}

inline std::error_code make_error_code(errc value) noexcept {
  return {static_cast<int>(value), error_category()};
}

}  // namespace raftsync

template <>
struct std::is_error_code_enum<raftsync::errc> : std::true_type {};
