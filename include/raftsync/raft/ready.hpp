// raftsync — what the core hands the application after each batch of inputs.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "raftsync/raft/types.hpp"

namespace raftsync::raft {

enum class role : std::uint8_t { follower, pre_candidate, candidate, leader };

// "follower", "pre-candidate", "candidate", "leader" (logs, status output).
inline const char* to_string(role value) noexcept {
  switch (value) {
    case role::follower:
      return "follower";
    case role::pre_candidate:
      return "pre-candidate";
    case role::candidate:
      return "candidate";
    case role::leader:
      return "leader";
  }
  return "unknown";
}

// Volatile state; changes are reported for information (logging, routing proposals).
struct soft_state {
  node_id leader = no_node;
  raft::role role = raft::role::follower;

  friend bool operator==(const soft_state&, const soft_state&) = default;
};

// ReadIndex result (thesis §6.4): a linearizable read issued with `context` may be served from
// the local state machine once the application has applied up to `index`.
struct read_state {
  std::uint64_t index = 0;
  bytes context;

  friend bool operator==(const read_state&, const read_state&) = default;
};

// One batch of work. The driver loop is: tick()/step()/propose()... → if has_ready(): rd = ready();
// persist (snapshot, entries, hard) → send messages → apply committed_entries → advance(rd).
// Take at most one ready at a time: call advance(rd) before the next ready().
struct ready {
  // Changed leader/role since the previous ready; informational, nothing to persist.
  std::optional<soft_state> soft;

  // Changed term/vote/commit. Persist BEFORE sending `messages`: a vote or an acknowledgement
  // sent before its term/vote is durable could let a restarted node vote twice in one term
  // (Raft §5.2 election safety).
  std::optional<hard_state> hard;

  // A snapshot received from the leader (non-empty when index > 0). Install the application's
  // snapshot data for it and call storage.apply_snapshot(snapshot) BEFORE persisting `entries`
  // and BEFORE applying `committed_entries` (they build on the snapshot's state).
  snapshot_metadata snapshot;

  // New log entries. Append to stable storage (storage.append truncates a conflicting suffix)
  // BEFORE sending `messages`: an append acknowledgement promises these entries are durable.
  std::vector<entry> entries;

  // Committed entries to apply to the state machine, in order, after the above are persisted.
  // For entry_type::conf_change entries, call raw_node::apply_conf_change(decoded) when applying.
  // They may include entries from this ready's `entries` (persisted first, so that is safe).
  std::vector<entry> committed_entries;

  // Messages to send to peers, AFTER hard/entries/snapshot above are durable. Messages of type
  // `snapshot` ask the application to stream its snapshot data for message.snapshot.index to
  // message.to out of band and then report_snapshot(to, ok).
  std::vector<message> messages;

  // Completed ReadIndex requests of this node (see read_state).
  std::vector<read_state> read_states;

  // True if hard.term/vote changed or there are entries or a snapshot: an fsync is needed
  // before the messages go out. (A commit-only change may be written without fsync.)
  bool must_sync = false;
};

}  // namespace raftsync::raft
