// raftsync — the Raft state machine behind raw_node (Raft paper §5, thesis §3.10, §4, §6.4, §9.6).
//
// Pure and deterministic: inputs are tick(), step(message) and the local requests; outputs are
// collected (messages_, read_states_) and the log's unstable part, which raw_node packages into a
// ready. No threads, clocks, I/O, exceptions or global randomness. The structure follows
// etcd-io/raft: step() handles the term first, then dispatches to step_leader / step_candidate /
// step_follower; only become_* changes the role; maybe_* actions return whether they acted.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "raftsync/assert.hpp"
#include "raftsync/error.hpp"
#include "raftsync/raft/conf_change.hpp"
#include "raftsync/raft/config.hpp"
#include "raftsync/raft/progress.hpp"
#include "raftsync/raft/raft_log.hpp"
#include "raftsync/raft/random.hpp"
#include "raftsync/raft/ready.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"

namespace raftsync::raft {

// Vote requests caused by a leadership transfer carry this context: they must be granted even
// inside a leader lease (thesis §3.10), otherwise check-quorum would veto every transfer.
inline const bytes campaign_transfer_context = "raftsync:transfer";

class raft_core {
 public:
  // Builds a node from validated `cfg` and the storage's persisted state. `s` outlives the node.
  static result<raft_core> create(const config& cfg, const storage& s) {
    if (auto ec = cfg.validate()) return ec;
    auto initial = s.load_initial_state();
    if (!initial) return initial.error();
    raft_core r(cfg, s);
    const hard_state& hs = initial->hard;
    const std::uint64_t first = s.first_index();
    const std::uint64_t last = s.last_index();
    if (hs.commit > last) return errc::corrupt;  // committed entries missing from the log
    if (cfg.applied > std::max(hs.commit, first - 1)) return errc::invalid_config;
    r.log_.set_committed_on_restart(hs.commit);
    r.log_.set_applied(cfg.applied);
    r.term_ = hs.term;
    r.vote_ = hs.vote;
    r.conf_ = initial->conf;
    // The membership in storage is as of the snapshot (or bootstrap); conf changes the
    // application already applied after it are replayed so the node starts with the membership
    // as of `applied`.
    for (std::uint64_t i = first; i <= r.log_.applied(); ++i) {
      auto ents = r.log_.slice(i, r.log_.applied() + 1, 1 << 20);
      if (!ents) return ents.error();
      for (const auto& e : *ents) {
        if (e.type != entry_type::conf_change) continue;
        auto cc = decode_conf_change(e.data);
        if (!cc) return errc::corrupt;
        apply_to_conf(r.conf_, *cc);
      }
      i = ents->back().index;
    }
    r.rebuild_progress();
    r.become_follower(r.term_, no_node);
    r.prev_hard_ = r.hard();
    r.prev_soft_ = r.soft();
    if (auto ec = r.log_.storage_error()) return ec;
    return r;
  }

  // --- inputs ---------------------------------------------------------------------------------
  void tick() {
    if (halted()) return;
    if (state_ == raft::role::leader) {
      tick_heartbeat();
    } else {
      tick_election();
    }
  }

  std::error_code step(message m) {
    if (halted()) return errc::storage_halted;
    auto ec = step_inner(std::move(m));
    if (auto se = log_.storage_error()) {
      halt_error_ = se;
      return se;
    }
    return ec;
  }

  // Called when the application applies a committed conf_change entry. Returns the membership.
  conf_state apply_conf_change(const conf_change& cc) {
    apply_to_conf(conf_, cc);
    rebuild_progress();
    if (state_ == raft::role::leader) {
      if (!is_voter(id_)) {
        // Thesis §4.2.2: a leader removed from the configuration steps down once the change is
        // committed (it is applied, hence committed).
        become_follower(term_, no_node);
      } else {
        if (lead_transferee_ != no_node && prs_.find(lead_transferee_) == prs_.end())
          abort_leader_transfer();
        // The quorum changed: more may be committed now, and new peers need the log.
        if (maybe_commit()) {
          bcast_append();
        } else {
          for (auto& [id, pr] : prs_) {
            if (id != id_ && pr.match == 0 && pr.state == progress_state::probe && !pr.probe_sent)
              send_append(id);
          }
        }
      }
    }
    return conf_;
  }

  // --- state for raw_node ---------------------------------------------------------------------
  hard_state hard() const { return hard_state{term_, vote_, log_.committed()}; }
  soft_state soft() const { return soft_state{lead_, state_}; }
  raft_log& log() noexcept { return log_; }
  const raft_log& log() const noexcept { return log_; }
  std::vector<message>& messages() noexcept { return messages_; }
  std::vector<read_state>& read_states() noexcept { return read_states_; }
  const std::vector<message>& messages_view() const noexcept { return messages_; }
  const std::vector<read_state>& read_states_view() const noexcept { return read_states_; }
  const std::map<node_id, progress>& progress_map() const noexcept { return prs_; }
  const conf_state& conf() const noexcept { return conf_; }
  node_id id() const noexcept { return id_; }
  std::uint64_t term() const noexcept { return term_; }
  node_id vote() const noexcept { return vote_; }
  node_id leader() const noexcept { return lead_; }
  raft::role role() const noexcept { return state_; }
  node_id lead_transferee() const noexcept { return lead_transferee_; }
  // Messages of an older term dropped (a peer that lagged behind an election, or one replaying
  // old traffic). Local, since this object was created.
  std::uint64_t stale_messages() const noexcept { return stale_messages_; }
  std::uint64_t uncommitted_size_bytes() const noexcept { return uncommitted_size_; }
  std::uint32_t randomized_election_timeout() const noexcept { return randomized_timeout_; }
  bool halted() const noexcept { return static_cast<bool>(halt_error_); }
  std::error_code halt_error() const noexcept { return halt_error_; }
  hard_state prev_hard_;  // the hard state last handed out in a ready (raw_node's bookkeeping)
  soft_state prev_soft_;

  // The application applied committed entries up to `index` carrying `size_bytes` of payload.
  void applied_to(std::uint64_t index, std::uint64_t size_bytes) {
    log_.applied_to(index);
    reduce_uncommitted_size(size_bytes);
  }

  // Checks every invariant of this node (RAFTSYNC_ASSERT: aborts with file:line if broken).
  // Tests call it after every step.
  void check_invariants() const {
    log_.check_invariants();
    // Invariant: a leader leads itself; a candidate voted for itself in its term.
    RAFTSYNC_ASSERT(state_ != raft::role::leader || lead_ == id_, "leader's lead is itself");
    RAFTSYNC_ASSERT(state_ != raft::role::candidate || vote_ == id_, "candidate votes for itself");
    RAFTSYNC_ASSERT(state_ == raft::role::leader || lead_transferee_ == no_node,
                    "only a leader transfers leadership");
    RAFTSYNC_ASSERT(vote_ == no_node || term_ > 0, "no vote in term 0");
    // Invariant: the membership lists are disjoint and progress tracks exactly them.
    for (node_id v : conf_.voters) {
      RAFTSYNC_ASSERT(
          std::find(conf_.learners.begin(), conf_.learners.end(), v) == conf_.learners.end(),
          "a node is a voter or a learner, not both");
    }
    RAFTSYNC_ASSERT(prs_.size() == conf_.voters.size() + conf_.learners.size(),
                    "progress tracks exactly the members");
    if (state_ == raft::role::leader) {
      RAFTSYNC_ASSERT(prs_.count(id_) == 1, "a leader is a member");
      const std::uint64_t last = log_.last_index();
      for (const auto& [id, pr] : prs_) {
        pr.check_invariants();
        RAFTSYNC_ASSERT(pr.match <= last, "no peer matches beyond the leader's log");
        RAFTSYNC_ASSERT(pr.next <= last + 1, "next <= last_index + 1");
      }
      RAFTSYNC_ASSERT(prs_.at(id_).match == last, "the leader matches its own log");
    }
    // Invariant: the committed prefix never shrinks below the snapshot and commit >= hard commit
    // handed out (a node never un-commits).
    RAFTSYNC_ASSERT(log_.committed() >= prev_hard_.commit, "commit index never decreases");
    RAFTSYNC_ASSERT(term_ >= prev_hard_.term, "term never decreases");
#if !defined(RAFTSYNC_TEST_ONLY_BREAK_VOTE_RULE)
    RAFTSYNC_ASSERT(
        term_ != prev_hard_.term || prev_hard_.vote == no_node || vote_ == prev_hard_.vote,
        "at most one vote per term");
#endif
  }

 private:
  raft_core(const config& cfg, const storage& s)
      : cfg_(cfg), id_(cfg.id), log_(s), storage_(&s), rng_(cfg.random_seed) {
    rng_.reseed(cfg.random_seed ^ (cfg.id * 0x9e3779b97f4a7c15ull));
  }

  // ------------------------------------------------------------------------ membership helpers
  static void erase_id(std::vector<node_id>& v, node_id id) {
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
  }
  static bool contains(const std::vector<node_id>& v, node_id id) {
    return std::find(v.begin(), v.end(), id) != v.end();
  }
  static void apply_to_conf(conf_state& conf, const conf_change& cc) {
    switch (cc.type) {
      case conf_change_type::add_node:
        erase_id(conf.learners, cc.node);
        if (!contains(conf.voters, cc.node)) conf.voters.push_back(cc.node);
        break;
      case conf_change_type::add_learner_node:
        // A voter cannot be demoted this way (the leader refuses such proposals; a replayed one
        // is a no-op).
        if (!contains(conf.voters, cc.node) && !contains(conf.learners, cc.node))
          conf.learners.push_back(cc.node);
        break;
      case conf_change_type::remove_node:
        erase_id(conf.voters, cc.node);
        erase_id(conf.learners, cc.node);
        break;
    }
  }
  bool is_voter(node_id id) const {
    return contains(conf_.voters, id);
  }
  bool promotable() const {
    return is_voter(id_);
  }
  std::size_t quorum() const {
    return conf_.voters.size() / 2 + 1;
  }

  // Makes prs_ track exactly conf_, keeping existing progress.
  void rebuild_progress() {
    for (auto it = prs_.begin(); it != prs_.end();) {
      if (!is_voter(it->first) && !contains(conf_.learners, it->first)) {
        it = prs_.erase(it);
      } else {
        it->second.learner = !is_voter(it->first);
        ++it;
      }
    }
    const auto add = [&](node_id id, bool learner) {
      if (prs_.count(id)) return;
      progress pr(cfg_.inflight_msgs_max, cfg_.inflight_bytes_max);
      pr.next = log_.last_index() + 1;
      pr.match = (id == id_ && state_ == raft::role::leader) ? log_.last_index() : 0;
      pr.learner = learner;
      pr.recent_active = true;  // a new peer gets one election timeout to answer
      prs_.emplace(id, std::move(pr));
    };
    for (node_id v : conf_.voters)
      add(v, false);
    for (node_id l : conf_.learners)
      add(l, true);
  }

  // ------------------------------------------------------------------------ role changes
  void reset(std::uint64_t term) {
    if (term_ != term) {
      term_ = term;
      vote_ = no_node;
    }
    lead_ = no_node;
    election_elapsed_ = 0;
    heartbeat_elapsed_ = 0;
    reset_randomized_election_timeout();
    abort_leader_transfer();
    votes_.clear();
    const std::uint64_t last = log_.last_index();
    for (auto& [id, pr] : prs_) {
      const bool learner = pr.learner;
      pr = progress(cfg_.inflight_msgs_max, cfg_.inflight_bytes_max);
      pr.learner = learner;
      pr.next = last + 1;
      if (id == id_) pr.match = last;
    }
    pending_conf_index_ = 0;
    uncommitted_size_ = 0;
    pending_reads_.clear();
    reads_waiting_commit_.clear();
  }

  void become_follower(std::uint64_t term, node_id lead) {
    reset(term);
    lead_ = lead;
    state_ = raft::role::follower;
  }

  void become_pre_candidate() {
    RAFTSYNC_ASSERT(state_ != raft::role::leader, "leader -> pre-candidate is invalid");
    // Term and vote are unchanged (thesis §9.6): a pre-election disturbs no one.
    votes_.clear();
    lead_ = no_node;
    state_ = raft::role::pre_candidate;
  }

  void become_candidate() {
    RAFTSYNC_ASSERT(state_ != raft::role::leader, "leader -> candidate is invalid");
    reset(term_ + 1);
    vote_ = id_;
    state_ = raft::role::candidate;
  }

  void become_leader() {
    RAFTSYNC_ASSERT(state_ != raft::role::follower, "follower -> leader is invalid");
    reset(term_);
    lead_ = id_;
    state_ = raft::role::leader;
    auto& self = prs_.at(id_);
    self.become_replicate();
    self.recent_active = true;
    // Conf changes in the log before this point may be unapplied: refuse new ones until then.
    pending_conf_index_ = log_.last_index();
    std::vector<entry> ents;
    if (log_.last_index() == 0) {
      // First leader of a new cluster: write the bootstrap membership into the log, so nodes
      // added later (which start with empty storage) learn it by replaying the log from index 1.
      for (node_id v : conf_.voters)
        ents.push_back(entry{0, 0, entry_type::conf_change,
                             encode_conf_change({conf_change_type::add_node, v, {}})});
      for (node_id l : conf_.learners)
        ents.push_back(entry{0, 0, entry_type::conf_change,
                             encode_conf_change({conf_change_type::add_learner_node, l, {}})});
    }
    ents.push_back(entry{});  // the no-op of this term (§8: lets the leader commit)
    const bool appended = append_entries(std::move(ents), /*count_uncommitted=*/false);
    RAFTSYNC_ASSERT(appended, "the new leader's first entries are never refused");
    if (log_.last_index() > 0 && pending_conf_index_ == 0) pending_conf_index_ = log_.last_index();
  }

  // ------------------------------------------------------------------------ ticks
  void reset_randomized_election_timeout() {
    randomized_timeout_ =
        cfg_.election_ticks + static_cast<std::uint32_t>(rng_.uniform(cfg_.election_ticks));
  }

  void tick_election() {
    ++election_elapsed_;
    if (promotable() && election_elapsed_ >= randomized_timeout_) {
      election_elapsed_ = 0;
      hup(/*transfer=*/false);
    }
  }

  void tick_heartbeat() {
    ++heartbeat_elapsed_;
    ++election_elapsed_;
    if (election_elapsed_ >= cfg_.election_ticks) {
      election_elapsed_ = 0;
      if (cfg_.check_quorum) maybe_step_down_without_quorum();
      // A transfer that did not finish within an election timeout is abandoned (thesis §3.10).
      if (state_ == raft::role::leader && lead_transferee_ != no_node) abort_leader_transfer();
    }
    if (state_ != raft::role::leader) return;
    if (heartbeat_elapsed_ >= cfg_.heartbeat_ticks) {
      heartbeat_elapsed_ = 0;
      bcast_heartbeat();
    }
  }

  // Check quorum: a leader that has not heard from a quorum of voters during the last election
  // timeout steps down, so a partitioned leader stops serving reads and accepting proposals.
  void maybe_step_down_without_quorum() {
    std::size_t active = 0;
    for (auto& [id, pr] : prs_) {
      if (id == id_) pr.recent_active = true;
      if (!pr.learner && pr.recent_active) ++active;
      if (id != id_) pr.recent_active = false;
    }
    if (active < quorum()) become_follower(term_, no_node);
  }

  // ------------------------------------------------------------------------ elections (§5.2)
  bool has_unapplied_conf_change() const {
    std::uint64_t low = log_.applied() + 1;
    const std::uint64_t high = log_.committed() + 1;
    low = std::max(low, log_.first_index());
    while (low < high) {
      auto ents = log_.slice(low, high, 1 << 20);
      if (!ents || ents->empty()) return false;
      for (const auto& e : *ents)
        if (e.type == entry_type::conf_change) return true;
      low = ents->back().index + 1;
    }
    return false;
  }

  void hup(bool transfer) {
    if (state_ == raft::role::leader || !promotable()) return;
    // A node that may not know the latest membership must not start an election with the old one.
    if (has_unapplied_conf_change()) return;
    if (cfg_.pre_vote && !transfer) {
      campaign_pre();
    } else {
      campaign_real(transfer);
    }
  }

  enum class vote_result { pending, won, lost };

  vote_result poll(node_id from, bool granted) {
    votes_.emplace(from, granted);
    std::size_t yes = 0;
    std::size_t no = 0;
    for (node_id v : conf_.voters) {
      auto it = votes_.find(v);
      if (it == votes_.end()) continue;
      if (it->second) {
        ++yes;
      } else {
        ++no;
      }
    }
    if (yes >= quorum()) return vote_result::won;
    if (no > conf_.voters.size() - quorum()) return vote_result::lost;
    return vote_result::pending;
  }

  void campaign_pre() {
    become_pre_candidate();
    if (poll(id_, true) == vote_result::won) {
      campaign_real(false);
      return;
    }
    for (node_id v : conf_.voters) {
      if (v == id_) continue;
      message m;
      m.type = message_type::pre_vote;
      m.to = v;
      m.term = term_ + 1;  // the term it would campaign in; ours is unchanged
      m.index = log_.last_index();
      m.log_term = log_.last_term();
      send(std::move(m));
    }
  }

  void campaign_real(bool transfer) {
    become_candidate();
    if (poll(id_, true) == vote_result::won) {
      become_leader();
      return;
    }
    for (node_id v : conf_.voters) {
      if (v == id_) continue;
      message m;
      m.type = message_type::vote;
      m.to = v;
      m.term = term_;
      m.index = log_.last_index();
      m.log_term = log_.last_term();
      if (transfer) m.context = campaign_transfer_context;
      send(std::move(m));
    }
  }

  // ------------------------------------------------------------------------ step
  std::error_code step_inner(message m) {
    if (m.term == 0) {
      // Local message, or a forwarded proposal / read request (they carry no term).
    } else if (m.term > term_) {
      if (m.type == message_type::vote || m.type == message_type::pre_vote) {
        const bool force = m.context == campaign_transfer_context;
        const bool in_lease =
            cfg_.check_quorum && lead_ != no_node && election_elapsed_ < cfg_.election_ticks;
        // Leader lease: while we hear from a live leader, a vote request is from a node that was
        // partitioned or removed; ignoring it keeps it from deposing a healthy leader.
        if (!force && in_lease) return {};
      }
      if (m.type == message_type::pre_vote) {
        // Never change our term on a pre-vote (thesis §9.6).
      } else if (m.type == message_type::pre_vote_response && !m.reject) {
        // A granted pre-vote carries the future term; the term changes when we campaign.
      } else if (m.type == message_type::append || m.type == message_type::heartbeat ||
                 m.type == message_type::snapshot) {
        become_follower(m.term, m.from);
      } else {
        become_follower(m.term, no_node);
      }
    } else if (m.term < term_) {
      ++stale_messages_;
      if ((cfg_.check_quorum || cfg_.pre_vote) &&
          (m.type == message_type::heartbeat || m.type == message_type::append)) {
        // A stale leader (e.g. after a partition) learns our term and steps down; without this,
        // with pre-vote/check-quorum it might never hear of the newer term.
        message resp;
        resp.type = message_type::append_response;
        resp.to = m.from;
        send(std::move(resp));
      } else if (m.type == message_type::pre_vote) {
        message resp;
        resp.type = message_type::pre_vote_response;
        resp.to = m.from;
        resp.term = term_;
        resp.reject = true;
        send(std::move(resp));
      }
      return {};
    }

    switch (m.type) {
      case message_type::hup:
        hup(false);
        return {};
      case message_type::vote:
      case message_type::pre_vote:
        handle_vote_request(m);
        return {};
      default:
        break;
    }
    switch (state_) {
      case raft::role::leader:
        return step_leader(std::move(m));
      case raft::role::candidate:
      case raft::role::pre_candidate:
        return step_candidate(std::move(m));
      case raft::role::follower:
        return step_follower(std::move(m));
    }
    return {};
  }

  void handle_vote_request(const message& m) {
    const bool pre = m.type == message_type::pre_vote;
    // We can vote for m.from if we already did in this term, or have not voted and know no
    // leader, or (pre-vote) it asks about a future term.
#if defined(RAFTSYNC_TEST_ONLY_BREAK_VOTE_RULE)
    // TEST-ONLY BREAKAGE (never defined for user targets; see tests/sim/CMakeLists.txt): grant
    // any up-to-date candidate, even after voting for another in this term (violates Raft §5.2).
    const bool can_vote = true;
#else
    const bool can_vote =
        vote_ == m.from || (vote_ == no_node && lead_ == no_node) || (pre && m.term > term_);
#endif
    message resp;
    resp.type = pre ? message_type::pre_vote_response : message_type::vote_response;
    resp.to = m.from;
    if (can_vote && log_.is_up_to_date(m.index, m.log_term)) {
      // Respond with the term of the request so a pre-candidate counts it for its future term.
      resp.term = m.term;
      resp.reject = false;
      send(std::move(resp));
      if (!pre) {
        election_elapsed_ = 0;
        vote_ = m.from;
      }
    } else {
      resp.term = term_;
      resp.reject = true;
      send(std::move(resp));
    }
  }

  std::error_code step_leader(message m) {
    switch (m.type) {
      case message_type::beat:
        bcast_heartbeat();
        return {};
      case message_type::propose:
        return leader_propose(std::move(m));
      case message_type::read_index:
        leader_read_index(std::move(m));
        return {};
      case message_type::transfer_leader:
        // The transferee travels in reject_hint ("hinted node"); etcd-style senders use from.
        return leader_transfer(m.reject_hint != no_node ? m.reject_hint : m.from);
      default:
        break;
    }
    auto it = prs_.find(m.from);
    if (it == prs_.end()) return {};  // from a node that is not (or no longer) a member
    progress& pr = it->second;
    switch (m.type) {
      case message_type::append_response:
        handle_append_response(m, pr);
        break;
      case message_type::heartbeat_response:
        handle_heartbeat_response(m, pr);
        break;
      case message_type::snapshot_status:
        if (pr.state != progress_state::snapshot) break;
        if (m.reject) pr.pending_snapshot = 0;
        pr.become_probe();
        // Wait for a heartbeat response (or the next append response) before probing again.
        pr.probe_sent = true;
        break;
      case message_type::unreachable:
        // The last message may have been lost: stop optimistic pipelining until it answers.
        if (pr.state == progress_state::replicate) pr.become_probe();
        break;
      default:
        break;
    }
    return {};
  }

  std::error_code leader_propose(message m) {
    if (m.entries.empty()) return errc::proposal_dropped;
    if (prs_.find(id_) == prs_.end()) return errc::proposal_dropped;  // removed from the cluster
    if (lead_transferee_ != no_node) return errc::proposal_dropped;   // transfer in progress
    for (auto& e : m.entries) {
      if (e.type != entry_type::conf_change) continue;
      auto cc = decode_conf_change(e.data);
      if (!cc) return errc::malformed;
      // One membership change at a time (thesis §4.1): the previous one must be applied.
      if (pending_conf_index_ > log_.applied()) return errc::proposal_dropped;
      if (cc->type == conf_change_type::add_learner_node && is_voter(cc->node))
        return errc::proposal_dropped;  // demoting a voter is not a single-server change
      if (cc->type == conf_change_type::remove_node && is_voter(cc->node) &&
          conf_.voters.size() == 1)
        return errc::proposal_dropped;  // never remove the last voter
    }
    std::uint64_t last = log_.last_index();
    bool has_conf = false;
    for (auto& e : m.entries) {
      e.term = term_;
      e.index = ++last;
      if (e.type == entry_type::conf_change) {
        if (has_conf) return errc::proposal_dropped;  // one change per batch
        has_conf = true;
      }
    }
    const std::uint64_t conf_index = has_conf ? last : 0;
    if (!append_entries(std::move(m.entries), /*count_uncommitted=*/true))
      return errc::proposal_dropped;
    if (has_conf) pending_conf_index_ = conf_index;
    bcast_append();
    return {};
  }

  // Appends entries (term/index assigned by the caller or here) to the leader's log.
  bool append_entries(std::vector<entry> ents, bool count_uncommitted) {
    std::uint64_t last = log_.last_index();
    std::uint64_t payload = 0;
    for (auto& e : ents) {
      if (e.index == 0) {
        e.term = term_;
        e.index = ++last;
      } else {
        last = e.index;
      }
      payload += e.data.size();
    }
    if (count_uncommitted && cfg_.uncommitted_bytes_max > 0 && uncommitted_size_ > 0 &&
        uncommitted_size_ + payload > cfg_.uncommitted_bytes_max)
      return false;
    if (count_uncommitted) uncommitted_size_ += payload;
    const std::uint64_t new_last = log_.append(std::move(ents));
    // Synchronous storage contract: entries reach stable storage before any message that
    // depends on them is sent and before they are applied, so the leader counts itself now.
    prs_.at(id_).maybe_update(new_last);
    maybe_commit();
    return true;
  }

  void reduce_uncommitted_size(std::uint64_t size_bytes) {
    if (state_ != raft::role::leader) return;
    uncommitted_size_ = size_bytes > uncommitted_size_ ? 0 : uncommitted_size_ - size_bytes;
  }

  // Raft §5.3/§5.4.2: commit the highest index replicated on a quorum of voters, if it is of
  // the current term.
  bool maybe_commit() {
    scratch_.clear();
    for (const auto& [id, pr] : prs_)
      if (!pr.learner) scratch_.push_back(pr.match);
    if (scratch_.empty()) return false;
    const std::size_t q = quorum();
    std::nth_element(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(q - 1),
                     scratch_.end(), std::greater<>());
    const std::uint64_t index = scratch_[q - 1];
#if defined(RAFTSYNC_TEST_ONLY_BREAK_COMMIT_RULE)
    // TEST-ONLY BREAKAGE (never defined for user targets; see tests/sim/CMakeLists.txt): commit
    // by counting replicas whatever the entry's term, violating Raft §5.4.2 (Figure 8).
    if (index <= log_.committed()) return false;
    log_.commit_to(index);
#else
    if (!log_.maybe_commit(index, term_)) return false;
#endif
    if (state_ == raft::role::leader) release_reads_waiting_commit();
    return true;
  }

  bool committed_entry_in_current_term() const {
    auto t = log_.term(log_.committed());
    return t && *t == term_;
  }

  void handle_append_response(const message& m, progress& pr) {
    pr.recent_active = true;
    if (m.reject) {
      std::uint64_t next_probe = m.reject_hint;
      if (m.hint_term > 0)
        next_probe = log_.find_conflict_by_term(m.reject_hint, m.hint_term).first;
      if (pr.maybe_decrease_to(m.index, next_probe)) {
        if (pr.state == progress_state::replicate) pr.become_probe();
        send_append(m.from);
      }
      return;
    }
    const bool was_paused = pr.is_paused();
    // A probe answered at the current match (e.g. an empty append after report_unreachable)
    // also proves where the follower is: switch to replicate.
    if (!pr.maybe_update(m.index) && !(pr.match == m.index && pr.state == progress_state::probe))
      return;
    if (pr.state == progress_state::probe) {
      pr.become_replicate();
    } else if (pr.state == progress_state::snapshot && pr.match + 1 >= log_.first_index()) {
      // The follower caught up past the snapshot (or installed it): resume normal replication.
      pr.become_probe();
      pr.become_replicate();
    } else if (pr.state == progress_state::replicate) {
      pr.in_flight.free_le(m.index);
    }
    if (maybe_commit()) {
      bcast_append();
    } else if (was_paused) {
      send_append(m.from);
    }
    // Pipelining: keep sending while the window allows.
    auto it = prs_.find(m.from);
    if (it == prs_.end()) return;
    while (maybe_send_append(m.from, /*send_if_empty=*/false)) {
    }
    if (m.from == lead_transferee_ && prs_.at(m.from).match == log_.last_index())
      send_timeout_now(m.from);
  }

  void handle_heartbeat_response(const message& m, progress& pr) {
    pr.recent_active = true;
    pr.probe_sent = false;
    // Lost appends in replicate state would otherwise stall a full window forever.
    if (pr.state == progress_state::replicate && pr.in_flight.full()) pr.in_flight.free_first_one();
    if (pr.match < log_.last_index() || pr.state == progress_state::probe) send_append(m.from);
    if (m.context.size() == 8) {
      std::uint64_t seq = 0;
      for (int i = 0; i < 8; ++i)
        seq |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(m.context[i])) << (8 * i);
      auto it = prs_.find(m.from);
      if (it != prs_.end()) it->second.read_ack_seq = std::max(it->second.read_ack_seq, seq);
      advance_reads();
    }
  }

  // ------------------------------------------------------------------------ sending (§5.3)
  void send(message m) {
    m.from = id_;
    const bool explicit_term = m.type == message_type::vote || m.type == message_type::pre_vote ||
                               m.type == message_type::vote_response ||
                               m.type == message_type::pre_vote_response;
    if (!explicit_term && m.type != message_type::propose && m.type != message_type::read_index)
      m.term = term_;
    messages_.push_back(std::move(m));
  }

  void send_append(node_id to) {
    maybe_send_append(to, /*send_if_empty=*/true);
  }

  // Sends an append (or a snapshot when the entries are compacted) to `to` unless its progress
  // is paused. Returns whether a message was sent.
  bool maybe_send_append(node_id to, bool send_if_empty) {
    auto it = prs_.find(to);
    if (it == prs_.end() || to == id_) return false;
    progress& pr = it->second;
    if (pr.is_paused()) return false;
    const std::uint64_t prev_index = pr.next - 1;
    auto prev_term = log_.term(prev_index);
    result<std::vector<entry>> ents = std::vector<entry>{};
    if (prev_term) ents = log_.entries_from(pr.next, cfg_.msg_bytes_max);
    if (prev_term && ents) {
      if (ents->empty() && !send_if_empty) return false;
      std::uint64_t size = 0;
      for (const auto& e : *ents)
        size += entry_size_bytes(e);
      message m;
      m.type = message_type::append;
      m.to = to;
      m.index = prev_index;
      m.log_term = *prev_term;
      m.commit = log_.committed();
      const std::uint64_t count = ents->size();
      m.entries = std::move(*ents);
      pr.sent_entries(count, size);
      send(std::move(m));
      return true;
    }
    if (log_.storage_error()) return false;
    // The entries are compacted: the follower needs a snapshot (Raft §7).
    if (!pr.recent_active) return false;
    const snapshot_metadata snap = storage_->snapshot();
    if (snap.empty() || snap.index < pr.next - 1) return false;
    message m;
    m.type = message_type::snapshot;
    m.to = to;
    m.snapshot = snap;
    pr.become_snapshot(snap.index);
    send(std::move(m));
    return true;
  }

  void bcast_append() {
    for (auto& [id, pr] : prs_)
      if (id != id_) send_append(id);
  }

  void send_heartbeat(node_id to, const bytes& context) {
    const progress& pr = prs_.at(to);
    message m;
    m.type = message_type::heartbeat;
    m.to = to;
    // Never let a follower commit beyond what it is known to match.
    m.commit = std::min(pr.match, log_.committed());
    m.context = context;
    send(std::move(m));
  }

  void bcast_heartbeat() {
    bytes context;
    if (!pending_reads_.empty()) context = encode_seq(pending_reads_.back().seq);
    for (auto& [id, pr] : prs_)
      if (id != id_) send_heartbeat(id, context);
  }

  static bytes encode_seq(std::uint64_t seq) {
    bytes out(8, '\0');
    for (int i = 0; i < 8; ++i)
      out[static_cast<std::size_t>(i)] = static_cast<char>((seq >> (8 * i)) & 0xff);
    return out;
  }

  // ------------------------------------------------------------------------ ReadIndex (§6.4)
  void leader_read_index(message m) {
    if (conf_.voters.size() == 1 && is_voter(id_)) {
      respond_read(m.from, log_.committed(), std::move(m.context));
      return;
    }
    // A new leader does not know the commit index until it commits an entry of its term.
    if (!committed_entry_in_current_term()) {
      reads_waiting_commit_.push_back(std::move(m));
      return;
    }
    start_read(std::move(m));
  }

  void start_read(message m) {
    pending_reads_.push_back(
        pending_read{++read_seq_, log_.committed(), m.from, std::move(m.context)});
    bcast_heartbeat();
  }

  void release_reads_waiting_commit() {
    if (reads_waiting_commit_.empty() || !committed_entry_in_current_term()) return;
    auto waiting = std::move(reads_waiting_commit_);
    reads_waiting_commit_.clear();
    for (auto& m : waiting)
      start_read(std::move(m));
  }

  // A read is confirmed once a quorum of voters answered a heartbeat sent after it arrived.
  void advance_reads() {
    if (pending_reads_.empty()) return;
    scratch_.clear();
    for (const auto& [id, pr] : prs_) {
      if (pr.learner) continue;
      scratch_.push_back(id == id_ ? read_seq_ : pr.read_ack_seq);
    }
    const std::size_t q = quorum();
    if (scratch_.size() < q) return;
    std::nth_element(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(q - 1),
                     scratch_.end(), std::greater<>());
    const std::uint64_t acked = scratch_[q - 1];
    while (!pending_reads_.empty() && pending_reads_.front().seq <= acked) {
      pending_read r = std::move(pending_reads_.front());
      pending_reads_.pop_front();
      respond_read(r.from, r.index, std::move(r.context));
    }
  }

  void respond_read(node_id to, std::uint64_t index, bytes context) {
    if (to == no_node || to == id_) {
      read_states_.push_back(read_state{index, std::move(context)});
      return;
    }
    message m;
    m.type = message_type::read_index_response;
    m.to = to;
    m.index = index;
    m.context = std::move(context);
    send(std::move(m));
  }

  // ------------------------------------------------------------------------ transfer (§3.10)
  std::error_code leader_transfer(node_id transferee) {
    auto it = prs_.find(transferee);
    if (it == prs_.end() || it->second.learner) return errc::not_found;
    if (lead_transferee_ != no_node) {
      if (lead_transferee_ == transferee) return {};
      abort_leader_transfer();
    }
    if (transferee == id_) return {};
    // The transfer must finish within an election timeout, or it is abandoned (tick_heartbeat).
    election_elapsed_ = 0;
    lead_transferee_ = transferee;
    if (it->second.match == log_.last_index()) {
      send_timeout_now(transferee);
    } else {
      send_append(transferee);
    }
    return {};
  }

  void send_timeout_now(node_id to) {
    message m;
    m.type = message_type::timeout_now;
    m.to = to;
    send(std::move(m));
  }

  void abort_leader_transfer() {
    lead_transferee_ = no_node;
  }

  // ------------------------------------------------------------------------ candidate, follower
  std::error_code step_candidate(message m) {
    const message_type my_response = state_ == raft::role::pre_candidate
                                         ? message_type::pre_vote_response
                                         : message_type::vote_response;
    switch (m.type) {
      case message_type::propose:
        return errc::proposal_dropped;
      case message_type::append:
        become_follower(m.term, m.from);
        handle_append(std::move(m));
        return {};
      case message_type::heartbeat:
        become_follower(m.term, m.from);
        handle_heartbeat(m);
        return {};
      case message_type::snapshot:
        become_follower(m.term, m.from);
        handle_snapshot(m);
        return {};
      case message_type::read_index:
        return errc::proposal_dropped;
      case message_type::transfer_leader:
        return errc::not_leader;
      default:
        break;
    }
    if (m.type == my_response) {
      switch (poll(m.from, !m.reject)) {
        case vote_result::won:
          if (state_ == raft::role::pre_candidate) {
            campaign_real(false);
          } else {
            become_leader();
            bcast_append();
          }
          break;
        case vote_result::lost:
          become_follower(term_, no_node);
          break;
        case vote_result::pending:
          break;
      }
    }
    return {};
  }

  std::error_code step_follower(message m) {
    switch (m.type) {
      case message_type::propose:
        if (lead_ == no_node) return errc::proposal_dropped;
        m.to = lead_;
        m.term = 0;
        send(std::move(m));
        return {};
      case message_type::append:
        election_elapsed_ = 0;
        lead_ = m.from;
        handle_append(std::move(m));
        return {};
      case message_type::heartbeat:
        election_elapsed_ = 0;
        lead_ = m.from;
        handle_heartbeat(m);
        return {};
      case message_type::snapshot:
        election_elapsed_ = 0;
        lead_ = m.from;
        handle_snapshot(m);
        return {};
      case message_type::transfer_leader:
        if (lead_ == no_node) return errc::not_leader;
        m.to = lead_;
        if (m.reject_hint == no_node) m.reject_hint = m.from;
        send(std::move(m));
        return {};
      case message_type::timeout_now:
        // The leader chose us (thesis §3.10): campaign now, skipping pre-vote.
        if (promotable() && !has_unapplied_conf_change()) campaign_real(/*transfer=*/true);
        return {};
      case message_type::read_index:
        if (lead_ == no_node) return errc::proposal_dropped;
        m.to = lead_;
        m.term = 0;
        send(std::move(m));
        return {};
      case message_type::read_index_response:
        read_states_.push_back(read_state{m.index, std::move(m.context)});
        return {};
      default:
        return {};
    }
  }

  void handle_append(message m) {
    message resp;
    resp.type = message_type::append_response;
    resp.to = m.from;
    if (m.index < log_.committed()) {
      resp.index = log_.committed();
      send(std::move(resp));
      return;
    }
    // Defensive: entries must directly follow m.index; anything else is a malformed message.
    for (std::size_t i = 0; i < m.entries.size(); ++i) {
      if (m.entries[i].index != m.index + 1 + i) return;
    }
    if (auto last_new = log_.maybe_append(m.index, m.log_term, m.commit, std::move(m.entries))) {
      resp.index = *last_new;
      send(std::move(resp));
      return;
    }
    // Fast backtracking: tell the leader the largest index whose term is <= the term it probed,
    // so it can skip a whole term of conflicting entries per round trip.
    const std::uint64_t hint = std::min(m.index, log_.last_index());
    const auto [hint_index, hint_term] = log_.find_conflict_by_term(hint, m.log_term);
    resp.index = m.index;
    resp.reject = true;
    resp.reject_hint = hint_index;
    resp.hint_term = hint_term;
    send(std::move(resp));
  }

  void handle_heartbeat(const message& m) {
    log_.commit_to(std::min(m.commit, log_.last_index()));
    message resp;
    resp.type = message_type::heartbeat_response;
    resp.to = m.from;
    resp.context = m.context;
    send(std::move(resp));
  }

  void handle_snapshot(const message& m) {
    message resp;
    resp.type = message_type::append_response;
    resp.to = m.from;
    if (restore(m.snapshot)) {
      resp.index = log_.last_index();
    } else {
      resp.index = log_.committed();
    }
    send(std::move(resp));
  }

  // Installs a snapshot's position (its data was installed by the application before the
  // message was stepped). Returns false if it brings nothing new.
  bool restore(const snapshot_metadata& s) {
    if (s.index <= log_.committed()) return false;
    // Unlike etcd-io/raft, a snapshot whose membership does not include this node is accepted:
    // a node added after the snapshot was taken is re-added by the log entries that follow it,
    // and until then it is simply not promotable.
    if (log_.match_term(s.index, s.term)) {
      // We already have the entries: just fast-forward the commit index.
      log_.commit_to(s.index);
      return false;
    }
    log_.restore(s);
    conf_ = s.conf;
    prs_.clear();
    rebuild_progress();
    return true;
  }

  struct pending_read {
    std::uint64_t seq = 0;    // heartbeat round that confirms it
    std::uint64_t index = 0;  // commit index when the request arrived
    node_id from = no_node;   // requester (this node: a local read_state)
    bytes context;
  };

  config cfg_;
  node_id id_;
  // Persistent state (Raft Figure 2). Invariant: vote_ == no_node || term_ > 0.
  std::uint64_t term_ = 0;
  std::uint64_t stale_messages_ = 0;
  node_id vote_ = no_node;
  raft_log log_;
  const storage* storage_;
  random_generator rng_;

  raft::role state_ = raft::role::follower;
  node_id lead_ = no_node;
  conf_state conf_;                  // membership as of the last applied conf change
  std::map<node_id, progress> prs_;  // one per member (leader uses it; others keep membership)
  std::map<node_id, bool> votes_;    // votes received in the current (pre-)election

  std::uint32_t election_elapsed_ = 0;   // ticks since the last election timeout reset
  std::uint32_t heartbeat_elapsed_ = 0;  // leader: ticks since the last heartbeat
  std::uint32_t randomized_timeout_ = 0;

  node_id lead_transferee_ = no_node;     // leader: transfer in progress to this node
  std::uint64_t pending_conf_index_ = 0;  // leader: index of the latest proposed conf change
  std::uint64_t uncommitted_size_ = 0;    // leader: payload bytes appended but not yet applied

  std::deque<pending_read> pending_reads_;
  std::vector<message> reads_waiting_commit_;
  std::uint64_t read_seq_ = 0;

  std::vector<message> messages_;
  std::vector<read_state> read_states_;
  std::vector<std::uint64_t> scratch_;
  std::error_code halt_error_;
};

}  // namespace raftsync::raft
