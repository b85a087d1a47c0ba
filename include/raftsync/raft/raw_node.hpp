// raftsync — raw_node: the application's handle on one Raft node (etcd-io/raft's RawNode).
//
// Driver loop (one thread at a time; see docs/raft.md):
//   1. inputs: tick() every tick interval; step(m) for every message from a peer; propose(),
//      propose_conf_change(), transfer_leadership(), read_index() as the application needs;
//   2. if has_ready(): rd = ready();
//   3. if rd.snapshot is non-empty: install the snapshot data, storage.apply_snapshot(rd.snapshot);
//      append rd.entries to storage, then write rd.hard (fsync if rd.must_sync);
//   4. send rd.messages;
//   5. apply rd.committed_entries in order (apply_conf_change for conf_change entries);
//      hand rd.read_states to waiting readers;
//   6. advance(rd).
// The core never throws and does no I/O; every bound comes from config.
#pragma once

#include <cstdint>
#include <system_error>
#include <utility>
#include <vector>

#include "raftsync/error.hpp"
#include "raftsync/raft/conf_change.hpp"
#include "raftsync/raft/config.hpp"
#include "raftsync/raft/progress.hpp"
#include "raftsync/raft/raft.hpp"
#include "raftsync/raft/ready.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"

namespace raftsync::raft {

struct progress_status {
  node_id id;
  std::uint64_t match, next;
  progress_state state;
  bool learner;
  bool recent_active;
  std::uint32_t inflight_msgs;
};

struct status {
  node_id id;
  hard_state hard;
  soft_state soft;
  std::uint64_t applied;
  std::uint64_t last_index;
  std::uint64_t first_index;
  conf_state conf;
  std::vector<progress_status> progress;  // leader only
  node_id lead_transferee;
  std::uint64_t committed = 0;  // current commit index (hard.commit may lag until the next ready)
  std::error_code halted;       // non-zero: storage failed; the node refuses all input
  std::uint64_t stale_messages = 0;  // messages of an older term dropped since the node started
};

class raw_node {  // movable, not copyable; one thread at a time
 public:
  // Validates cfg (errc::invalid_config) and loads the persisted state from `s`, which must
  // outlive the node. errc::corrupt if the storage is inconsistent (commit beyond its log).
  static result<raw_node> create(const config& cfg, const storage& s) {
    auto core = raft_core::create(cfg, s);
    if (!core) return core.error();
    return raw_node(std::move(*core), cfg);
  }

  raw_node(raw_node&&) noexcept = default;
  raw_node& operator=(raw_node&&) noexcept = default;
  raw_node(const raw_node&) = delete;
  raw_node& operator=(const raw_node&) = delete;

  // Advances logical time by one tick (election and heartbeat timeouts are counted in ticks).
  void tick() { core_.tick(); }

  // Starts an election now (a pre-vote round first if enabled). No effect on a leader, a learner
  // or a non-member.
  void campaign() {
    message m;
    m.type = message_type::hup;
    m.from = core_.id();
    (void)core_.step(std::move(m));
  }

  // Steps a message received from a peer. errc::malformed for local message types (they are
  // produced by the methods below, never accepted from the network); errc::storage_halted after
  // a storage failure.
  std::error_code step(const message& m) {
    if (is_local_message(m.type)) return errc::malformed;
    if (m.from == no_node) return errc::malformed;
    return core_.step(m);
  }
  // Same, taking ownership of the message (avoids copying its entries on the hot path).
  std::error_code step(message&& m) {
    if (is_local_message(m.type)) return errc::malformed;
    if (m.from == no_node) return errc::malformed;
    return core_.step(std::move(m));
  }

  // Proposes `data` for the log. A follower forwards it to the leader (success here does not
  // mean it will commit: watch committed_entries). errc::proposal_dropped if no leader is known,
  // a leadership transfer is in progress, or the uncommitted budget is exhausted;
  // errc::too_large if data alone exceeds config::uncommitted_bytes_max (when set).
  std::error_code propose(bytes data) {
    if (cfg_.uncommitted_bytes_max > 0 && data.size() > cfg_.uncommitted_bytes_max)
      return errc::too_large;
    message m;
    m.type = message_type::propose;
    m.from = core_.id();
    m.entries.push_back(entry{0, 0, entry_type::normal, std::move(data)});
    return core_.step(std::move(m));
  }

  // Proposes a single-server membership change (thesis §4.1). errc::proposal_dropped if one is
  // still pending (proposed but not applied), on the same conditions as propose(), or if it
  // would demote a voter to learner or remove the last voter; errc::malformed if cc.node is 0.
  std::error_code propose_conf_change(const conf_change& cc) {
    if (cc.node == no_node) return errc::malformed;
    message m;
    m.type = message_type::propose;
    m.from = core_.id();
    m.entries.push_back(entry{0, 0, entry_type::conf_change, encode_conf_change(cc)});
    return core_.step(std::move(m));
  }

  // Call when APPLYING a committed conf_change entry (decode it with decode_conf_change). Returns
  // the membership now in force (persist it with the applied state / next snapshot).
  conf_state apply_conf_change(const conf_change& cc) { return core_.apply_conf_change(cc); }

  // Asks the leader to hand leadership to `transferee` (thesis §3.10); a follower forwards the
  // request. errc::not_leader if no leader is known; errc::not_found if this node is the leader
  // and transferee is not a voter. The transfer aborts after an election timeout.
  std::error_code transfer_leadership(node_id transferee) {
    if (transferee == no_node) return errc::not_found;
    message m;
    m.type = message_type::transfer_leader;
    m.from = core_.id();
    m.reject_hint = transferee;
    return core_.step(std::move(m));
  }

  // Requests a linearizable read (thesis §6.4). The result arrives as a read_state with this
  // context in a later ready; if no leader is known or leadership changes, it never arrives and
  // the application retries after its own timeout.
  void read_index(bytes context) {
    message m;
    m.type = message_type::read_index;
    m.from = core_.id();
    m.context = std::move(context);
    (void)core_.step(std::move(m));
  }

  // The transport could not deliver to `id`: the leader stops pipelining to it until it answers.
  void report_unreachable(node_id id) {
    message m;
    m.type = message_type::unreachable;
    m.from = id;
    (void)core_.step(std::move(m));
  }

  // Outcome of streaming snapshot data to `id` (after a `snapshot` message in a ready).
  void report_snapshot(node_id id, bool success) {
    message m;
    m.type = message_type::snapshot_status;
    m.from = id;
    m.reject = !success;
    (void)core_.step(std::move(m));
  }

  bool has_ready() const {
    const raft_log& log = core_.log();
    if (core_.soft() != core_.prev_soft_) return true;
    if (core_.hard() != core_.prev_hard_) return true;
    if (log.unstable().has_next_snapshot() || log.unstable().has_next_entries()) return true;
    if (!core_.messages_view().empty() || !core_.read_states_view().empty()) return true;
    return log.has_next_committed_entries();
  }

  // Takes the next batch (see ready.hpp for what to do with each field and in which order).
  raft::ready ready() {
    raft::ready rd;
    raft_log& log = core_.log();
    const soft_state soft = core_.soft();
    if (soft != core_.prev_soft_) rd.soft = soft;
    const hard_state hard = core_.hard();
    if (hard != core_.prev_hard_) {
      rd.hard = hard;
      rd.must_sync = hard.term != core_.prev_hard_.term || hard.vote != core_.prev_hard_.vote;
    }
    unstable_log& unstable = log.unstable();
    if (unstable.has_next_snapshot()) rd.snapshot = *unstable.snapshot();
    if (unstable.has_next_entries()) rd.entries = unstable.next_entries();
    if (auto committed = log.next_committed_entries(cfg_.committed_bytes_max_per_ready)) {
      rd.committed_entries = std::move(*committed);
    }
    rd.messages = std::move(core_.messages());
    core_.messages().clear();
    rd.read_states = std::move(core_.read_states());
    core_.read_states().clear();
    if (!rd.entries.empty() || !rd.snapshot.empty()) rd.must_sync = true;
    // Everything above is now in the application's hands: do not hand it out again.
    core_.prev_soft_ = soft;
    core_.prev_hard_ = hard;
    unstable.accept_in_progress();
    if (!rd.committed_entries.empty()) log.accept_applying(rd.committed_entries.back().index);
    return rd;
  }

  // Everything in `rd` was persisted, sent and applied.
  void advance(const raft::ready& rd) {
    raft_log& log = core_.log();
    if (!rd.snapshot.empty()) {
      log.unstable().stable_snapshot_to(rd.snapshot.index);
      log.applied_to(rd.snapshot.index);
    }
    if (!rd.entries.empty())
      log.unstable().stable_to(rd.entries.back().index, rd.entries.back().term);
    if (!rd.committed_entries.empty()) {
      std::uint64_t size = 0;
      for (const auto& e : rd.committed_entries)
        size += e.data.size();
      core_.applied_to(rd.committed_entries.back().index, size);
    }
  }

  raft::status status() const {
    raft::status st{};
    st.id = core_.id();
    st.hard = core_.hard();
    st.soft = core_.soft();
    st.applied = core_.log().applied();
    st.last_index = core_.log().last_index();
    st.first_index = core_.log().first_index();
    st.conf = core_.conf();
    if (core_.role() == raft::role::leader) {
      for (const auto& [id, pr] : core_.progress_map()) {
        st.progress.push_back(progress_status{id, pr.match, pr.next, pr.state, pr.learner,
                                              pr.recent_active, pr.in_flight.count()});
      }
    }
    st.lead_transferee = core_.lead_transferee();
    st.committed = core_.log().committed();
    st.stale_messages = core_.stale_messages();
    st.halted = core_.halt_error();
    return st;
  }

  // --- additions beyond the contract ----------------------------------------------------------
  // Asserts every invariant of the node (RAFTSYNC_ASSERT); tests call it after every step.
  void check_invariants() const { core_.check_invariants(); }
  // Read-only access to the state machine, for tests and diagnostics.
  const raft_core& core() const noexcept { return core_; }

 private:
  raw_node(raft_core core, const config& cfg) : core_(std::move(core)), cfg_(cfg) {}

  raft_core core_;
  config cfg_;
};

}  // namespace raftsync::raft
