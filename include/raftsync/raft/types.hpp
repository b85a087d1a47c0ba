// raftsync — the Raft core's data types: log entries, persistent state, configuration
// (membership), snapshot metadata and messages.
//
// These types are shared by the core (raft/), the durable storage (storage/) and the wire codec
// (transport/). They are plain values: no behaviour beyond small helpers, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace raftsync::raft {

// Identifies a node of the cluster. 0 is never a valid node id ("none").
using node_id = std::uint64_t;
inline constexpr node_id no_node = 0;

// Byte payloads (entry data, snapshot context, ReadIndex context) are held in std::string, used as
// an owning byte buffer: contents are arbitrary bytes, not text.
using bytes = std::string;

enum class entry_type : std::uint8_t {
  normal = 0,       // application data (an empty normal entry is the leader's no-op of its term)
  conf_change = 1,  // data is an encoded conf_change (see encode_conf_change in raft/conf_change.hpp)
};

struct entry {
  std::uint64_t term = 0;
  std::uint64_t index = 0;
  entry_type type = entry_type::normal;
  bytes data;

  friend bool operator==(const entry&, const entry&) = default;
};

// Approximate size of an entry for byte-based limits (payload plus fixed overhead).
inline std::uint64_t entry_size_bytes(const entry& e) noexcept { return e.data.size() + 24; }

// The state a node must persist before it answers any message that depends on it (Raft §5.1,
// Figure 2: currentTerm, votedFor; commit is persisted so a restart does not re-wait for it).
struct hard_state {
  std::uint64_t term = 0;
  node_id vote = no_node;
  std::uint64_t commit = 0;

  friend bool operator==(const hard_state&, const hard_state&) = default;
  bool empty() const noexcept { return term == 0 && vote == no_node && commit == 0; }
};

// Cluster membership. A node id appears in at most one of the two lists.
struct conf_state {
  std::vector<node_id> voters;    // count towards elections and commitment
  std::vector<node_id> learners;  // receive the log, never vote and never count

  friend bool operator==(const conf_state&, const conf_state&) = default;
};

// Single-server membership change (thesis §4.1). One change at a time: the leader refuses a new
// one while an earlier one is not yet applied.
enum class conf_change_type : std::uint8_t {
  add_node = 0,          // add as voter, or promote a learner to voter
  remove_node = 1,       // remove a voter or a learner
  add_learner_node = 2,  // add as non-voting learner (a voter cannot be demoted this way)
};

struct conf_change {
  conf_change_type type = conf_change_type::add_node;
  node_id node = no_node;
  bytes context;  // opaque to the core (the application may put an address here)

  friend bool operator==(const conf_change&, const conf_change&) = default;
};

// What identifies a snapshot. The snapshot's data (the application state at `index`) never
// travels inside a Raft message: the application streams it out of band in chunks and only then
// steps the snapshot message into the receiving core (see raft/raw_node.hpp).
struct snapshot_metadata {
  std::uint64_t index = 0;  // last log index the snapshot covers
  std::uint64_t term = 0;   // term of that entry
  conf_state conf;          // membership as of `index`

  friend bool operator==(const snapshot_metadata&, const snapshot_metadata&) = default;
  bool empty() const noexcept { return index == 0; }
};

enum class message_type : std::uint8_t {
  // Local messages (never sent on the wire): inputs the node gives itself.
  hup = 0,   // start an election (sent by tick on election timeout)
  beat = 1,  // leader: send heartbeats now
  // Wire messages.
  propose = 2,                 // follower → leader: forwarded proposal entries
  append = 3,                  // leader → follower: AppendEntries (Raft §5.3)
  append_response = 4,         // follower → leader
  vote = 5,                    // candidate → all: RequestVote (Raft §5.2)
  vote_response = 6,           //
  pre_vote = 7,                // pre-candidate → all (thesis §9.6)
  pre_vote_response = 8,       //
  snapshot = 9,                // leader → follower: install snapshot (metadata only)
  heartbeat = 10,              // leader → follower
  heartbeat_response = 11,     //
  transfer_leader = 12,        // any → leader: please transfer leadership to `from`/hinted node
  timeout_now = 13,            // leader → transferee: campaign now, skipping pre-vote (thesis §3.10)
  read_index = 14,             // follower → leader: ReadIndex request (thesis §6.4)
  read_index_response = 15,    //
  snapshot_status = 16,        // local: application reports the outcome of a snapshot send
  unreachable = 17,            // local: application reports a peer as unreachable
};

inline constexpr bool is_local_message(message_type t) noexcept {
  return t == message_type::hup || t == message_type::beat ||
         t == message_type::snapshot_status || t == message_type::unreachable;
}

inline constexpr bool is_response_message(message_type t) noexcept {
  return t == message_type::append_response || t == message_type::vote_response ||
         t == message_type::pre_vote_response || t == message_type::heartbeat_response ||
         t == message_type::read_index_response;
}

// One Raft message. Which fields are meaningful depends on `type` (as in etcd-io/raft's
// raftpb.Message); unused fields are zero/empty and the wire codec encodes them all.
struct message {
  message_type type = message_type::hup;
  node_id to = no_node;
  node_id from = no_node;
  std::uint64_t term = 0;      // sender's term (0 for local messages and forwarded proposals)
  std::uint64_t log_term = 0;  // append: term of entry `index`; vote: term of last entry
  std::uint64_t index = 0;     // append: index preceding `entries`; vote: last index;
                               // responses: last matching index (or rejected index)
  std::vector<entry> entries;  // append / propose: entries to append
  std::uint64_t commit = 0;    // leader's commit index (append, heartbeat)
  bool reject = false;         // response: the request was refused
  std::uint64_t reject_hint = 0;  // append_response: follower's hint for fast backtracking
  std::uint64_t hint_term = 0;    // append_response: term of entry at reject_hint
  snapshot_metadata snapshot;     // snapshot message: what is being installed
  bytes context;                  // heartbeat / read_index: ReadIndex request context

  friend bool operator==(const message&, const message&) = default;
};

}  // namespace raftsync::raft
