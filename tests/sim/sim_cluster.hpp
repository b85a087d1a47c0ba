// raftsync — a deterministic whole-cluster Raft simulation harness (tests only).
//
// A `cluster` runs N raw_nodes on one in_memory_network in one thread, from one seed. It plays the
// application for every node — the tick → ready → persist → sync → send → apply → advance loop —
// and checks Raft's safety properties after every step:
//   - election safety: at most one leader per term (Raft §5.2);
//   - log matching: two logs holding an entry with the same index and term hold the same entry and
//     agree on the term of the previous one, hence (by induction) on every earlier entry (§5.3);
//   - leader completeness: a newly elected leader holds every entry committed so far (§5.4.1);
//   - state machine safety: no two nodes apply different entries at one index (§5.4.3), checked
//     through a running hash of everything applied, which also covers snapshot installs;
//   - applied <= commit <= last_index on every node, committed entries applied in order;
//   - ReadIndex: a read_state's index covers every entry committed before the read was issued.
// converge() then checks liveness once faults are healed: a leader within a bound, and a fresh
// proposal committed and applied by every live member, with identical applied state everywhere.
//
// Persistence is a per-node policy (class `persistence`), so the same simulation runs on
// memory_storage with a model of fsync (memory_persistence, the default: writes handed over by a
// ready are lost by a crash until sync()) or on the durable storage module over fault-injecting
// I/O. The harness follows the ready ordering: a ready's messages leave only after its writes are
// synced, so a crash that loses unsynced writes never loses state a peer was promised.
//
// The application state of every node is a running hash of the entries it applied (app_state); a
// snapshot's data is that state, streamed to followers "out of band" as an app_message (with the
// network's faults) before the snapshot message is stepped into the follower's core.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "raftsync/raft/conf_change.hpp"
#include "raftsync/raft/config.hpp"
#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/raw_node.hpp"
#include "raftsync/raft/ready.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/transport/in_memory_network.hpp"

namespace raftsync::sim {

using raft::bytes;
using raft::node_id;

// ================================================================================================
// Persistence policy: how one node's Raft state reaches "disk", and what a crash loses.
// ================================================================================================
//
// Call order used by the harness for each ready (nothing else touches the policy):
//   write_ready(rd, data)   snapshot (+ its application data), entries, hard state — not yet
//   durable sync()                  only if rd.must_sync; after it returns success, rd.messages are
//   sent
// save_snapshot() is called when the application snapshots its state; sync() follows at once.
// crash_and_recover() simulates power loss + restart: every write not covered by a successful
// sync() may be lost; afterwards storage() reflects exactly the recovered durable state.
// Any error returned by write_ready / sync / save_snapshot is handled like a crash at that point:
// the node stops (sends nothing) and is later restarted through crash_and_recover(). An error from
// crash_and_recover() is reported as a violation (durable state must always reopen).
class persistence {
 public:
  virtual ~persistence() = default;

  // What the node's raw_node reads. Reflects every write, synced or not (like a page cache).
  // The reference must stay valid until the next crash_and_recover().
  virtual const raft::storage& storage() const = 0;

  // An initial member of a new cluster: membership at index 0. Durable on success.
  virtual std::error_code bootstrap(const raft::conf_state& initial) = 0;

  // Writes the persistent parts of `rd` in this order: rd.snapshot (non-empty: together with
  // `snapshot_data`, the application state at rd.snapshot.index), rd.entries, rd.hard.
  virtual std::error_code write_ready(const raft::ready& rd, const bytes& snapshot_data) = 0;

  // Makes every earlier write durable (the simulated fsync).
  virtual std::error_code sync() = 0;

  // The application saved its state `data` as of `meta.index` (an index it has applied, with
  // meta.term its term and meta.conf the membership then): record the snapshot, then drop log
  // entries <= compact_index (compact_index <= meta.index; 0 = keep the log).
  virtual std::error_code save_snapshot(const raft::snapshot_metadata& meta, const bytes& data,
                                        std::uint64_t compact_index) = 0;

  // Application data of storage().snapshot() ("" if there is no snapshot).
  virtual bytes snapshot_data() const = 0;

  // Power loss and restart (see above).
  virtual std::error_code crash_and_recover() = 0;
};

// Builds the persistence of node `id`; `seed` is for policies that inject faults.
using persistence_factory =
    std::function<std::unique_ptr<persistence>(node_id id, std::uint64_t seed)>;

// The default policy: raft::memory_storage plus a model of fsync. Each write is applied at once to
// the `live` storage the node reads and queued; sync() replays the queue onto the `durable`
// storage; a crash replaces `live` with a copy of `durable` (everything unsynced is lost).
class memory_persistence final : public persistence {
 public:
  memory_persistence() : live_(std::make_unique<raft::memory_storage>()) {}

  const raft::storage& storage() const override { return *live_; }

  std::error_code bootstrap(const raft::conf_state& initial) override {
    live_->bootstrap(initial);
    durable_.bootstrap(initial);
    return {};
  }

  std::error_code write_ready(const raft::ready& rd, const bytes& snapshot_data) override {
    if (!rd.snapshot.empty()) {
      if (auto ec = queue(operation{operation::install_snapshot, rd.snapshot, snapshot_data}))
        return ec;
    }
    if (!rd.entries.empty()) {
      operation op{operation::append};
      op.entries = rd.entries;
      if (auto ec = queue(std::move(op))) return ec;
    }
    if (rd.hard) {
      operation op{operation::set_hard_state};
      op.hard = *rd.hard;
      if (auto ec = queue(std::move(op))) return ec;
    }
    return {};
  }

  std::error_code sync() override {
    for (const operation& op : unsynced_) {
      if (auto ec = apply(op, durable_, durable_snapshot_data_)) return ec;
    }
    unsynced_.clear();
    return {};
  }

  std::error_code save_snapshot(const raft::snapshot_metadata& meta, const bytes& data,
                                std::uint64_t compact_index) override {
    operation op{operation::save_snapshot, meta, data};
    op.compact_index = compact_index;
    return queue(std::move(op));
  }

  bytes snapshot_data() const override { return live_snapshot_data_; }

  std::error_code crash_and_recover() override {
    unsynced_.clear();
    live_ = std::make_unique<raft::memory_storage>(durable_);
    live_snapshot_data_ = durable_snapshot_data_;
    return {};
  }

  std::size_t unsynced_operations() const noexcept { return unsynced_.size(); }

 private:
  struct operation {
    enum kind_type { install_snapshot, save_snapshot, append, set_hard_state } kind;
    raft::snapshot_metadata meta{};
    bytes data{};
    std::uint64_t compact_index = 0;
    std::vector<raft::entry> entries{};
    raft::hard_state hard{};
  };

  static std::error_code apply(const operation& op, raft::memory_storage& s, bytes& data) {
    switch (op.kind) {
      case operation::install_snapshot:
        if (auto ec = s.apply_snapshot(op.meta)) return ec;
        data = op.data;
        return {};
      case operation::save_snapshot:
        if (auto ec = s.create_snapshot(op.meta.index, op.meta.conf)) return ec;
        data = op.data;
        if (op.compact_index > s.first_index() - 1) return s.compact(op.compact_index);
        return {};
      case operation::append:
        return s.append(op.entries);
      case operation::set_hard_state:
        s.set_hard_state(op.hard);
        return {};
    }
    return {};
  }

  std::error_code queue(operation op) {
    if (auto ec = apply(op, *live_, live_snapshot_data_)) return ec;
    unsynced_.push_back(std::move(op));
    return {};
  }

  std::unique_ptr<raft::memory_storage> live_;
  bytes live_snapshot_data_;
  raft::memory_storage durable_;
  bytes durable_snapshot_data_;
  std::vector<operation> unsynced_;
};

inline persistence_factory memory_persistence_factory() {
  return [](node_id, std::uint64_t) { return std::make_unique<memory_persistence>(); };
}

// ================================================================================================
// The application state machine of the simulation.
// ================================================================================================

inline std::uint64_t fnv1a(std::string_view data, std::uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

inline std::uint64_t mix64(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Identity of an entry: index, term, type and data.
inline std::uint64_t entry_hash(const raft::entry& e) {
  return mix64(mix64(mix64(fnv1a(e.data), e.index), e.term), static_cast<std::uint64_t>(e.type));
}

// Everything one node applied, as a running hash ("chain") plus the membership it implies.
struct app_state {
  std::uint64_t applied = 0;  // last applied index
  std::uint64_t term = 0;     // term of that entry
  std::uint64_t chain = 0;    // hash of every entry applied, in order
  raft::conf_state conf;      // membership after applying everything up to `applied`

  void apply(const raft::entry& e) {
    chain = mix64(chain, entry_hash(e));
    applied = e.index;
    term = e.term;
  }

  bytes encode() const {
    bytes out;
    auto put = [&](std::uint64_t v) {
      for (int i = 0; i < 8; ++i)
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    };
    put(applied);
    put(term);
    put(chain);
    put(conf.voters.size());
    for (node_id v : conf.voters)
      put(v);
    put(conf.learners.size());
    for (node_id l : conf.learners)
      put(l);
    return out;
  }

  static std::optional<app_state> decode(std::string_view in) {
    std::size_t pos = 0;
    auto get = [&](std::uint64_t& v) {
      if (in.size() - pos < 8) return false;
      v = 0;
      for (int i = 0; i < 8; ++i)
        v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[pos + i])) << (8 * i);
      pos += 8;
      return true;
    };
    app_state s;
    std::uint64_t n = 0;
    if (!get(s.applied) || !get(s.term) || !get(s.chain) || !get(n) || n > 1024) return {};
    s.conf.voters.resize(n);
    for (auto& v : s.conf.voters)
      if (!get(v)) return {};
    if (!get(n) || n > 1024) return {};
    s.conf.learners.resize(n);
    for (auto& l : s.conf.learners)
      if (!get(l)) return {};
    if (pos != in.size()) return {};
    return s;
  }
};

// A proposal's payload: "p" + 8-byte id + filler; anything else is not a proposal.
inline bytes make_proposal(std::uint64_t id, std::size_t size_bytes) {
  bytes out = "p";
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((id >> (8 * i)) & 0xff));
  while (out.size() < size_bytes)
    out.push_back(static_cast<char>('a' + (out.size() + id) % 26));
  return out;
}
inline std::optional<std::uint64_t> proposal_id(std::string_view data) {
  if (data.size() < 9 || data[0] != 'p') return {};
  std::uint64_t id = 0;
  for (int i = 0; i < 8; ++i)
    id |= static_cast<std::uint64_t>(static_cast<unsigned char>(data[1 + i])) << (8 * i);
  return id;
}

// ================================================================================================
// The cluster.
// ================================================================================================

struct cluster_options {
  std::uint64_t seed = 1;
  std::size_t nodes = 3;         // initial voters, ids 1..nodes
  raft::config node_config;      // id, applied and random_seed are set per node
  std::uint64_t tick_us = 1000;  // virtual time per tick (network delays are in the same unit)
  persistence_factory make_persistence = memory_persistence_factory();
  // Per ready with something to persist: chance of a power loss after write_ready, before sync().
  double crash_before_sync_probability = 0.0;
  // Leader side: report_snapshot(to, false) if the follower has not acknowledged the streamed
  // snapshot data within this many ticks.
  std::uint64_t snapshot_ack_timeout_ticks = 20;
  bool log_events = false;    // print what happens (stdout), for replaying one seed
  bool log_messages = false;  // also print every message delivered (with log_events)
};

// Counts of what happened, to show a run exercised what it claims to.
struct cluster_stats {
  std::uint64_t ticks = 0;
  std::uint64_t readies = 0;
  std::uint64_t leaders_elected = 0;
  std::uint64_t proposals = 0;
  std::uint64_t proposals_acknowledged = 0;  // applied somewhere for the first time
  std::uint64_t entries_applied = 0;
  std::uint64_t conf_changes_applied = 0;
  std::uint64_t crashes = 0;
  std::uint64_t crashes_losing_unsynced = 0;  // a crash with at least one unsynced write
  std::uint64_t restarts = 0;
  std::uint64_t snapshots_taken = 0;
  std::uint64_t snapshots_sent = 0;
  std::uint64_t snapshots_installed = 0;
  std::uint64_t transfers = 0;
  std::uint64_t reads_completed = 0;
  std::uint64_t partitions = 0;

  cluster_stats& operator+=(const cluster_stats& o) {
    ticks += o.ticks;
    readies += o.readies;
    leaders_elected += o.leaders_elected;
    proposals += o.proposals;
    proposals_acknowledged += o.proposals_acknowledged;
    entries_applied += o.entries_applied;
    conf_changes_applied += o.conf_changes_applied;
    crashes += o.crashes;
    crashes_losing_unsynced += o.crashes_losing_unsynced;
    restarts += o.restarts;
    snapshots_taken += o.snapshots_taken;
    snapshots_sent += o.snapshots_sent;
    snapshots_installed += o.snapshots_installed;
    transfers += o.transfers;
    reads_completed += o.reads_completed;
    partitions += o.partitions;
    return *this;
  }
};

class cluster {
 public:
  // Application channels on the network (transport::app_message::channel).
  static constexpr std::uint32_t snapshot_data_channel = 1;
  static constexpr std::uint32_t snapshot_ack_channel = 2;

  explicit cluster(cluster_options options)
      : options_(std::move(options)),
        random_(mix64(options_.seed, 0x5157)),
        network_(mix64(options_.seed, 0x4e45)) {
    raft::conf_state initial;
    for (node_id id = 1; id <= options_.nodes; ++id)
      initial.voters.push_back(id);
    for (node_id id = 1; id <= options_.nodes; ++id) {
      add_node_object(id);
      sim_node& n = *nodes_[id];
      if (auto ec = n.store->bootstrap(initial)) {
        violation("bootstrap of node " + std::to_string(id) + " failed: " + ec.message());
        return;
      }
      start(n);
    }
    next_id_ = options_.nodes + 1;
  }

  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  // --- Observation -----------------------------------------------------------------------------
  bool ok() const noexcept { return violation_.empty(); }
  // The first safety/liveness violation ("" if none).
  const std::string& violation_message() const noexcept { return violation_; }
  const cluster_stats& stats() const noexcept { return stats_; }
  std::uint64_t now_ticks() const noexcept { return ticks_; }
  transport::in_memory_network& network() noexcept { return network_; }
  transport::deterministic_random& random() noexcept { return random_; }
  const cluster_options& options() const noexcept { return options_; }

  std::vector<node_id> node_ids() const {
    std::vector<node_id> ids;
    for (const auto& [id, n] : nodes_)
      ids.push_back(id);
    return ids;
  }
  bool exists(node_id id) const { return nodes_.contains(id); }
  bool is_up(node_id id) const {
    auto it = nodes_.find(id);
    return it != nodes_.end() && it->second->raft.has_value();
  }
  bool is_removed(node_id id) const {
    auto it = nodes_.find(id);
    return it != nodes_.end() && it->second->removed;
  }
  std::vector<node_id> up_nodes() const {
    std::vector<node_id> ids;
    for (const auto& [id, n] : nodes_)
      if (n->raft) ids.push_back(id);
    return ids;
  }
  raft::status status(node_id id) const { return node(id).raft->status(); }
  const app_state& app(node_id id) const { return node(id).app; }
  const raft::storage& storage(node_id id) const { return node(id).store->storage(); }
  raft::raw_node& raw(node_id id) { return *node(id).raft; }

  // The up node that believes it leads in the highest term (no_node if none).
  node_id leader() const {
    node_id best = raft::no_node;
    std::uint64_t best_term = 0;
    for (const auto& [id, n] : nodes_) {
      if (!n->raft) continue;
      const raft::status st = n->raft->status();
      if (st.soft.role == raft::role::leader && st.hard.term >= best_term) {
        best = id;
        best_term = st.hard.term;
      }
    }
    return best;
  }

  // Highest index known committed (applied by some node) and its term.
  std::pair<std::uint64_t, std::uint64_t> highest_committed() const {
    if (committed_.empty()) return {0, 0};
    const auto& [index, rec] = *committed_.rbegin();
    return {index, rec.term};
  }

  std::uint64_t highest_committed_chain() const {
    return committed_.empty() ? 0 : committed_.rbegin()->second.chain;
  }

  // --- Network faults (counted in stats) --------------------------------------------------------
  void partition(const std::vector<std::vector<node_id>>& groups) {
    network_.partition(groups);
    ++stats_.partitions;
    log("partition");
  }
  void isolate(node_id id) {
    network_.isolate(id);
    ++stats_.partitions;
    log("node ", id, " isolated");
  }
  void heal() {
    network_.heal();
    log("network healed");
  }

  // --- Driving ---------------------------------------------------------------------------------
  // One tick: restart nodes whose downtime is over, tick every up node (then handle its ready),
  // then deliver every message due before the next tick.
  void tick() {
    ++ticks_;
    ++stats_.ticks;
    for (auto& [id, n] : nodes_) {
      if (!n->raft && !n->removed && n->restart_at_tick != 0 && n->restart_at_tick <= ticks_)
        restart(id);
    }
    for (auto& [id, n] : nodes_) {
      if (!n->raft) continue;
      n->raft->tick();
      for (auto it = n->snapshots_out.begin(); it != n->snapshots_out.end();) {
        if (it->second.deadline_tick <= ticks_) {
          log("node ", id, " snapshot to ", it->first, " timed out");
          n->raft->report_snapshot(it->first, false);
          it = n->snapshots_out.erase(it);
        } else {
          ++it;
        }
      }
      handle_ready(*n);
    }
    finish_step();
    network_.deliver_until(ticks_ * options_.tick_us);
  }
  void run_ticks(std::uint64_t count) {
    for (std::uint64_t i = 0; i < count && ok(); ++i)
      tick();
  }
  // Ticks until `done()` or `max_ticks`; returns whether done() held.
  template <typename Predicate>
  bool run_until(Predicate done, std::uint64_t max_ticks) {
    for (std::uint64_t i = 0; i < max_ticks && ok(); ++i) {
      if (done()) return true;
      tick();
    }
    return ok() && done();
  }

  // Proposes at `at` (a follower forwards to its leader). Returns the core's answer.
  std::error_code propose(node_id at, std::size_t size_bytes = 32) {
    sim_node& n = node(at);
    if (!n.raft) return errc::stopped;
    const std::uint64_t id = ++proposal_counter_;
    ++stats_.proposals;
    auto ec = n.raft->propose(make_proposal(id, std::max<std::size_t>(size_bytes, 9)));
    handle_ready(n);
    finish_step();
    return ec;
  }
  // Proposes `data` as is (must not look like make_proposal's output to be tracked).
  std::error_code propose_data(node_id at, bytes data) {
    sim_node& n = node(at);
    if (!n.raft) return errc::stopped;
    auto ec = n.raft->propose(std::move(data));
    handle_ready(n);
    finish_step();
    return ec;
  }

  // Membership: creates node `new_id` (empty storage, no bootstrap) and proposes it as learner.
  std::error_code add_learner(node_id leader_id, node_id new_id) {
    if (!exists(new_id)) {
      add_node_object(new_id);
      start(*nodes_[new_id]);
      next_id_ = std::max(next_id_, new_id + 1);
    }
    return propose_conf_change(leader_id, {raft::conf_change_type::add_learner_node, new_id, {}});
  }
  std::error_code propose_conf_change(node_id at, const raft::conf_change& cc) {
    sim_node& n = node(at);
    if (!n.raft) return errc::stopped;
    auto ec = n.raft->propose_conf_change(cc);
    log("node ", at, " proposes conf change ", cc.type, " of node ", cc.node, ": ",
        ec ? ec.message() : "ok");
    handle_ready(n);
    finish_step();
    return ec;
  }
  node_id next_new_node_id() const noexcept { return next_id_; }

  std::error_code transfer_leadership(node_id at, node_id to) {
    sim_node& n = node(at);
    if (!n.raft) return errc::stopped;
    auto ec = n.raft->transfer_leadership(to);
    if (!ec) ++stats_.transfers;
    log("node ", at, " transfers leadership to ", to, ": ", ec ? ec.message() : "ok");
    handle_ready(n);
    finish_step();
    return ec;
  }

  void campaign(node_id at) {
    sim_node& n = node(at);
    if (!n.raft) return;
    n.raft->campaign();
    handle_ready(n);
    finish_step();
  }

  // Issues a ReadIndex request at `at`; the read_state must cover what is committed now.
  void read_index(node_id at) {
    sim_node& n = node(at);
    if (!n.raft) return;
    const std::uint64_t id = ++read_counter_;
    bytes context = "r" + std::to_string(id);
    reads_[context] = highest_committed().first;
    n.raft->read_index(std::move(context));
    handle_ready(n);
    finish_step();
  }

  // The application at `at` snapshots its state at its applied index and compacts the log,
  // keeping `keep_entries` entries below the snapshot.
  std::error_code take_snapshot(node_id at, std::uint64_t keep_entries) {
    sim_node& n = node(at);
    if (!n.raft) return errc::stopped;
    const std::uint64_t index = n.app.applied;
    const raft::snapshot_metadata current = n.store->storage().snapshot();
    if (index == 0 || index <= current.index) return errc::snapshot_out_of_date;
    raft::snapshot_metadata meta{index, n.app.term, n.app.conf};
    const std::uint64_t compact_index = index > keep_entries ? index - keep_entries : 0;
    if (auto ec = n.store->save_snapshot(meta, n.app.encode(),
                                         compact_index > current.index ? compact_index : 0)) {
      crash(n.id, 1 + random_.uniform(0, 20), "save_snapshot failed: " + ec.message());
      return ec;
    }
    if (auto ec = n.store->sync()) {
      crash(n.id, 1 + random_.uniform(0, 20), "sync failed: " + ec.message());
      return ec;
    }
    ++stats_.snapshots_taken;
    log("node ", at, " snapshot at ", index, ", compacted to ", compact_index);
    return {};
  }

  // Power loss at `id`: the core and the network endpoint go away; restart after
  // `down_ticks` ticks (0 = until restart()).
  void crash(node_id id, std::uint64_t down_ticks, const std::string& why = "crash") {
    sim_node& n = node(id);
    if (!n.raft) return;
    log("node ", id, " down (", why, ")");
    n.raft.reset();
    n.snapshots_out.clear();
    n.received_snapshots.clear();
    network_.set_node_down(id, true);
    n.restart_at_tick = down_ticks == 0 ? 0 : ticks_ + down_ticks;
    ++stats_.crashes;
  }

  // Restarts a crashed node from what its persistence recovered.
  void restart(node_id id) {
    sim_node& n = node(id);
    if (n.raft || n.removed) return;
    if (auto ec = n.store->crash_and_recover()) {
      violation("node " + std::to_string(id) + " cannot recover its storage: " + ec.message());
      return;
    }
    check_recovered(n);
    if (!ok()) return;
    ++stats_.restarts;
    start(n);
  }

  // Stops a node for good (it was removed from the cluster).
  void stop(node_id id) {
    sim_node& n = node(id);
    if (n.removed) return;
    log("node ", id, " stopped (removed)");
    n.removed = true;
    n.raft.reset();
    network_.set_node_down(id, true);
  }

  // --- Liveness --------------------------------------------------------------------------------
  // Heals every fault (partitions, link faults, down nodes) and checks that within
  // `leader_ticks` a leader exists and within `commit_ticks` more a fresh proposal is committed
  // and every member of the final configuration has applied it, with identical state.
  bool converge(std::uint64_t leader_ticks, std::uint64_t commit_ticks) {
    if (!ok()) return false;
    network_.heal();
    network_.clear_link_settings();
    network_.set_default_link({});
    options_.crash_before_sync_probability = 0;
    for (auto& [id, n] : nodes_)
      if (!n->raft && !n->removed) restart(id);
    if (!ok()) return false;
    const std::uint64_t start_tick = ticks_;
    if (!run_until([&] { return leader() != raft::no_node; }, leader_ticks)) {
      if (ok()) {
        std::string nodes;
        for (auto& [id, n] : nodes_) {
          if (!n->raft) continue;
          const auto st = n->raft->status();
          nodes += " node " + std::to_string(id) + ": " + to_string(st.soft.role) + " term " +
                   std::to_string(st.hard.term) + " last " + std::to_string(st.last_index) +
                   " voters " + std::to_string(st.conf.voters.size()) + ";";
        }
        violation("liveness: no leader within " + std::to_string(leader_ticks) +
                  " ticks after faults healed;" + nodes);
      }
      return false;
    }
    // A marker proposed at the leader; proposed again (as a new marker) while it is dropped or
    // not committed within a few election timeouts (the "leader" may be a stale one that has
    // not yet heard of its successor).
    const std::uint64_t retry_ticks = 3 * std::uint64_t{options_.node_config.election_ticks};
    std::set<std::uint64_t> markers;
    bool proposed = false;
    std::uint64_t proposed_at = 0;
    std::uint64_t marker_index = 0;
    auto done = [&] {
      node_id l = leader();
      if (l == raft::no_node) return false;
      std::optional<std::uint64_t> committed_marker;
      for (std::uint64_t marker : markers) {
        if (auto it = acknowledged_.find(marker); it != acknowledged_.end()) {
          committed_marker = it->second;
          break;
        }
      }
      if (!committed_marker) {
        if (!proposed || ticks_ >= proposed_at + retry_ticks) {
          const std::uint64_t marker = ++proposal_counter_;
          sim_node& ln = node(l);
          if (!ln.raft->propose(make_proposal(marker, 16))) {
            proposed = true;
            proposed_at = ticks_;
            markers.insert(marker);
          }
          handle_ready(ln);
          finish_step();
        }
        return false;
      }
      marker_index = *committed_marker;
      const sim_node& ln = node(l);
      if (ln.app.applied < marker_index) return false;
      for (node_id m : members(ln.app.conf)) {
        if (!is_up(m) || node(m).app.applied < ln.app.applied) return false;
      }
      return true;
    };
    if (!run_until(done, commit_ticks)) {
      if (ok()) {
        std::string detail;
        node_id l = leader();
        if (l != raft::no_node) {
          const raft::status ls = node(l).raft->status();
          for (node_id m : members(node(l).app.conf)) {
            detail += " node " + std::to_string(m) + (is_up(m) ? "" : " (down)") + " applied " +
                      std::to_string(node(m).app.applied);
            if (is_up(m)) {
              const raft::status ms = node(m).raft->status();
              detail += " term " + std::to_string(ms.hard.term) + " commit " +
                        std::to_string(ms.committed) + " last " + std::to_string(ms.last_index);
            }
            for (const raft::progress_status& p : ls.progress) {
              if (p.id != m) continue;
              detail += " progress match " + std::to_string(p.match) + " next " +
                        std::to_string(p.next) + " state " +
                        std::to_string(static_cast<int>(p.state)) + " inflight " +
                        std::to_string(p.inflight_msgs);
            }
            detail += ";";
          }
        }
        violation("liveness: a proposal made after faults healed (tick " +
                  std::to_string(start_tick) + ") was not applied by every member within " +
                  std::to_string(commit_ticks) + " ticks (proposed: " + (proposed ? "yes" : "no") +
                  ", leader " + std::to_string(l) + ";" + detail + ")");
      }
      return false;
    }
    // Identical applied state on every member (the chain covers every acknowledged proposal).
    const sim_node& ln = node(leader());
    for (node_id m : members(ln.app.conf)) {
      const sim_node& mn = node(m);
      if (mn.app.applied == ln.app.applied && mn.app.chain != ln.app.chain) {
        violation("state machine safety: after convergence node " + std::to_string(m) +
                  " differs from leader " + std::to_string(ln.id) + " at index " +
                  std::to_string(ln.app.applied));
        return false;
      }
    }
    for (const auto& [pid, index] : acknowledged_) {
      if (index > ln.app.applied) {
        violation("liveness: acknowledged proposal " + std::to_string(pid) + " at index " +
                  std::to_string(index) + " is beyond the converged applied index");
        return false;
      }
    }
    return true;
  }

  static bool contains(const std::vector<node_id>& ids, node_id id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  }
  static std::vector<node_id> members(const raft::conf_state& conf) {
    std::vector<node_id> out = conf.voters;
    out.insert(out.end(), conf.learners.begin(), conf.learners.end());
    return out;
  }

 private:
  struct outgoing_snapshot {
    std::uint64_t token = 0;
    std::uint64_t deadline_tick = 0;
  };
  struct sim_node {
    node_id id = raft::no_node;
    std::unique_ptr<persistence> store;
    std::optional<raft::raw_node> raft;  // empty while down
    app_state app;
    bool removed = false;
    std::uint64_t restart_at_tick = 0;
    std::uint64_t incarnation = 0;
    raft::hard_state last_hard;  // the hard state last handed over (to check must_sync)
    // What this node promised peers, which must survive any crash: the highest term it sent a
    // message in (pre-vote traffic excepted: it carries a term not yet adopted) and the vote it
    // granted in each term.
    std::uint64_t max_term_sent = 0;
    std::map<std::uint64_t, node_id> votes_granted;
    std::map<std::uint64_t, bytes> received_snapshots;   // snapshot index → streamed data
    std::map<node_id, outgoing_snapshot> snapshots_out;  // leader: streams awaiting an ack
  };
  struct snapshot_transfer {
    raft::message message;
    bytes data;
  };
  struct committed_record {
    std::uint64_t term = 0;
    std::uint64_t chain = 0;
    node_id first_node = raft::no_node;
  };
  struct log_record {
    std::uint64_t entry_hash = 0;
    std::uint64_t previous_term = 0;
    node_id first_node = raft::no_node;
  };

  // Event log for replaying one seed: log("node ", id, " is leader in term ", term).
  template <typename... Parts>
  void log(const Parts&... parts) const {
    if (!options_.log_events) return;
    std::string line =
        "[seed " + std::to_string(options_.seed) + " tick " + std::to_string(ticks_) + "] ";
    (append_part(line, parts), ...);
    std::puts(line.c_str());
  }
  static void append_part(std::string& line, std::string_view part) { line += part; }
  template <typename T>
  requires std::is_integral_v<T> || std::is_enum_v<T>
  static void append_part(std::string& line, T value) {
    if constexpr (std::is_enum_v<T>) {
      line += std::to_string(static_cast<long long>(value));
    } else {
      line += std::to_string(value);
    }
  }

  sim_node& node(node_id id) {
    auto it = nodes_.find(id);
    RAFTSYNC_ASSERT(it != nodes_.end(), "unknown node id in the simulation");
    return *it->second;
  }
  const sim_node& node(node_id id) const {
    auto it = nodes_.find(id);
    RAFTSYNC_ASSERT(it != nodes_.end(), "unknown node id in the simulation");
    return *it->second;
  }

  void violation(std::string what) {
    if (!violation_.empty()) return;
    violation_ = "tick " + std::to_string(ticks_) + ": " + std::move(what);
    log("VIOLATION ", violation_);
  }

  void add_node_object(node_id id) {
    auto n = std::make_unique<sim_node>();
    n->id = id;
    n->store = options_.make_persistence(id, mix64(options_.seed, id));
    nodes_[id] = std::move(n);
    network_.endpoint(id).set_receive_handler(
        [this, id](transport::envelope e) { on_receive(id, std::move(e)); });
  }

  // Builds the node's core from its persistence; the application state restarts from the
  // snapshot data (entries after it are applied again as the core hands them out).
  void start(sim_node& n) {
    const raft::storage& s = n.store->storage();
    app_state app;
    const bytes data = n.store->snapshot_data();
    const raft::snapshot_metadata snap = s.snapshot();
    if (!snap.empty()) {
      auto decoded = app_state::decode(data);
      if (!decoded || decoded->applied != snap.index || decoded->term != snap.term) {
        violation("node " + std::to_string(n.id) + " recovered snapshot data that does not " +
                  "match its snapshot metadata at index " + std::to_string(snap.index));
        return;
      }
      app = *decoded;
    }
    auto init = s.load_initial_state();
    if (!init) {
      violation("node " + std::to_string(n.id) +
                " cannot load its initial state: " + init.error().message());
      return;
    }
    if (snap.empty()) app.conf = init->conf;
    n.last_hard = init->hard;
    raft::config cfg = options_.node_config;
    cfg.id = n.id;
    cfg.applied = app.applied;
    cfg.random_seed = mix64(mix64(options_.seed, n.id), ++n.incarnation);
    auto created = raft::raw_node::create(cfg, s);
    if (!created) {
      violation("node " + std::to_string(n.id) +
                " cannot be created: " + created.error().message());
      return;
    }
    n.app = std::move(app);
    n.raft.emplace(std::move(created).value());
    n.restart_at_tick = 0;
    network_.set_node_down(n.id, false);
    log("node ", n.id, " up (incarnation ", n.incarnation, ", applied ", n.app.applied, ")");
  }

  void on_receive(node_id to, transport::envelope e) {
    sim_node& n = node(to);
    if (!n.raft) return;
    if (auto* m = std::get_if<raft::message>(&e.body)) {
      if (options_.log_messages) {
        log("deliver ", m->from, "->", m->to, " type ", m->type, " term ", m->term, " log_term ",
            m->log_term, " index ", m->index, " entries ", m->entries.size(), " commit ", m->commit,
            " reject ", m->reject, " hint ", m->reject_hint, " snapshot ", m->snapshot.index);
      }
      (void)n.raft->step(std::move(*m));  // errors (a stale or foreign message): the core's call
    } else {
      const auto& am = std::get<transport::app_message>(e.body);
      const std::uint64_t token = std::strtoull(am.payload.c_str(), nullptr, 10);
      if (am.channel == snapshot_data_channel) {
        auto it = transfers_.find(token);
        if (it != transfers_.end()) {
          // The data is complete: keep it for the install, then step the snapshot message.
          n.received_snapshots[it->second.message.snapshot.index] = it->second.data;
          (void)n.raft->step(it->second.message);
          network_.endpoint(to).send(transport::envelope{
              to, e.from, transport::app_message{snapshot_ack_channel, am.payload}});
        }
      } else if (am.channel == snapshot_ack_channel) {
        auto it = n.snapshots_out.find(e.from);
        if (it != n.snapshots_out.end() && it->second.token == token) {
          n.raft->report_snapshot(e.from, true);
          n.snapshots_out.erase(it);
        }
      }
    }
    handle_ready(n);
    finish_step();
  }

  // The application loop for one node: persist → sync → send → apply → advance, repeated while
  // the core has work. Checks run on every ready.
  void handle_ready(sim_node& n) {
    for (int round = 0; n.raft && n.raft->has_ready() && ok(); ++round) {
      if (round == 1000) {
        violation("node " + std::to_string(n.id) + ": ready keeps coming (1000 rounds)");
        return;
      }
      raft::ready rd = n.raft->ready();
      ++stats_.readies;

      // 1. Persist: snapshot (with its data), entries, hard state.
      bytes snapshot_data;
      if (!rd.snapshot.empty()) {
        auto it = n.received_snapshots.find(rd.snapshot.index);
        if (it == n.received_snapshots.end()) {
          violation("node " + std::to_string(n.id) + ": ready.snapshot at index " +
                    std::to_string(rd.snapshot.index) + " was never received");
          return;
        }
        snapshot_data = it->second;
      }
      const bool has_writes = !rd.snapshot.empty() || !rd.entries.empty() || rd.hard;
      const bool needs_sync =
          !rd.snapshot.empty() || !rd.entries.empty() ||
          (rd.hard && (rd.hard->term != n.last_hard.term || rd.hard->vote != n.last_hard.vote));
      if (needs_sync && !rd.must_sync) {
        violation("node " + std::to_string(n.id) +
                  ": ready has entries, a snapshot or a new term/vote but must_sync is false");
        return;
      }
      if (rd.hard) n.last_hard = *rd.hard;
      if (has_writes) {
        if (auto ec = n.store->write_ready(rd, snapshot_data)) {
          crash(n.id, 1 + random_.uniform(0, 20), "write failed: " + ec.message());
          return;
        }
      }
      // A power loss between the write and the fsync: the ready's messages never leave.
      if (has_writes && random_.chance(options_.crash_before_sync_probability)) {
        ++stats_.crashes_losing_unsynced;
        crash(n.id, 1 + random_.uniform(0, 30), "power loss before sync");
        return;
      }
      if (rd.must_sync || !rd.snapshot.empty()) {
        if (auto ec = n.store->sync()) {
          crash(n.id, 1 + random_.uniform(0, 20), "sync failed: " + ec.message());
          return;
        }
      }
      check_appended(n, rd.entries);

      // 2. Install a received snapshot into the application.
      if (!rd.snapshot.empty()) {
        auto decoded = app_state::decode(snapshot_data);
        if (!decoded || decoded->applied != rd.snapshot.index) {
          violation("node " + std::to_string(n.id) + ": snapshot data does not match index " +
                    std::to_string(rd.snapshot.index));
          return;
        }
        if (decoded->applied < n.app.applied) {
          violation("node " + std::to_string(n.id) + " installs snapshot at " +
                    std::to_string(decoded->applied) + " below its applied index " +
                    std::to_string(n.app.applied));
          return;
        }
        n.app = *decoded;
        ++stats_.snapshots_installed;
        record_applied(n);
        n.received_snapshots.erase(n.received_snapshots.begin(),
                                   n.received_snapshots.upper_bound(rd.snapshot.index));
        log("node ", n.id, " installed snapshot at ", rd.snapshot.index);
      }

      // 3. Send (only now: everything the messages depend on is durable).
      for (raft::message& m : rd.messages) {
        send(n, std::move(m));
        if (!n.raft) return;  // a snapshot taken for a send failed and crashed the node
      }

      // 4. Apply committed entries in order.
      for (const raft::entry& e : rd.committed_entries) {
        if (!apply(n, e)) return;
      }

      // 5. ReadIndex results.
      for (const raft::read_state& rs : rd.read_states) {
        auto it = reads_.find(rs.context);
        if (it == reads_.end()) continue;  // duplicated or from a previous incarnation
        if (rs.index < it->second) {
          violation("ReadIndex: node " + std::to_string(n.id) + " got read index " +
                    std::to_string(rs.index) + " but " + std::to_string(it->second) +
                    " was committed before the read was issued");
          return;
        }
        ++stats_.reads_completed;
        reads_.erase(it);
      }

      n.raft->advance(rd);
      check_node(n);
    }
  }

  void send(sim_node& from, raft::message m) {
    if (m.type == raft::message_type::snapshot) {
      // The snapshot may predate the target's membership (a learner added after it was
      // taken). Half the time the application streams a fresh snapshot of its applied state
      // instead, as etcd's server does (createMergedSnapshotMessage); otherwise the core must
      // cope with the old one.
      if (!contains(members(m.snapshot.conf), m.to) && contains(members(from.app.conf), m.to) &&
          from.app.applied > m.snapshot.index && random_.chance(0.5)) {
        (void)take_snapshot(from.id, from.app.applied);
        if (!from.raft) return;  // the snapshot's write failed: the node crashed
        m.snapshot = from.store->storage().snapshot();
      }
      // Stream the data out of band first; the follower steps the message once it has it all.
      const bytes data = from.store->snapshot_data();
      const auto decoded = app_state::decode(data);
      if (!decoded || decoded->applied != m.snapshot.index) {
        violation("node " + std::to_string(from.id) + " sends snapshot " +
                  std::to_string(m.snapshot.index) + " but its snapshot data is for another index");
        return;
      }
      const std::uint64_t token = ++transfer_counter_;
      const node_id to = m.to;
      transfers_[token] = snapshot_transfer{std::move(m), data};
      from.snapshots_out[to] =
          outgoing_snapshot{token, ticks_ + options_.snapshot_ack_timeout_ticks};
      ++stats_.snapshots_sent;
      network_.endpoint(from.id).send(transport::envelope{
          from.id, to, transport::app_message{snapshot_data_channel, std::to_string(token)}});
      return;
    }
    if (m.type != raft::message_type::pre_vote && m.type != raft::message_type::pre_vote_response)
      from.max_term_sent = std::max(from.max_term_sent, m.term);
    if (m.type == raft::message_type::vote_response && !m.reject) {
      auto [it, inserted] = from.votes_granted.try_emplace(m.term, m.to);
      if (!inserted && it->second != m.to) {
        violation("election safety: node " + std::to_string(from.id) + " granted votes to " +
                  std::to_string(it->second) + " and " + std::to_string(m.to) + " in term " +
                  std::to_string(m.term));
        return;
      }
    }
    const node_id to = m.to;
    network_.endpoint(from.id).send(transport::envelope{from.id, to, std::move(m)});
  }

  // What the node promised before the crash must have survived it (the persistence policy
  // really synced, and the harness sent nothing before syncing).
  void check_recovered(const sim_node& n) {
    auto init = n.store->storage().load_initial_state();
    if (!init) return;  // reported by start()
    const raft::hard_state& hs = init->hard;
    if (hs.term < n.max_term_sent) {
      violation("durability: node " + std::to_string(n.id) + " recovered term " +
                std::to_string(hs.term) + " but had sent messages in term " +
                std::to_string(n.max_term_sent));
      return;
    }
    auto it = n.votes_granted.find(hs.term);
    if (it != n.votes_granted.end() && hs.vote != it->second) {
      violation("durability: node " + std::to_string(n.id) + " recovered vote " +
                std::to_string(hs.vote) + " in term " + std::to_string(hs.term) +
                " but had granted its vote to " + std::to_string(it->second));
    }
  }

  bool apply(sim_node& n, const raft::entry& e) {
    if (e.index != n.app.applied + 1) {
      violation("node " + std::to_string(n.id) + " applies index " + std::to_string(e.index) +
                " after " + std::to_string(n.app.applied) + " (committed entries out of order)");
      return false;
    }
    if (e.type == raft::entry_type::conf_change) {
      auto cc = raft::decode_conf_change(e.data);
      if (!cc) {
        violation("node " + std::to_string(n.id) + " cannot decode conf change at " +
                  std::to_string(e.index));
        return false;
      }
      n.app.conf = n.raft->apply_conf_change(*cc);
      ++stats_.conf_changes_applied;
      if (cc->type == raft::conf_change_type::remove_node) to_stop_.insert(cc->node);
    }
    n.app.apply(e);
    ++stats_.entries_applied;
    if (e.type == raft::entry_type::normal) {
      if (auto pid = proposal_id(e.data)) {
        if (acknowledged_.emplace(*pid, e.index).second) ++stats_.proposals_acknowledged;
      }
    }
    return record_applied(n);
  }

  // State machine safety: the chain at an index is the same on every node.
  bool record_applied(const sim_node& n) {
    auto [it, inserted] =
        committed_.try_emplace(n.app.applied, committed_record{n.app.term, n.app.chain, n.id});
    if (!inserted && (it->second.chain != n.app.chain || it->second.term != n.app.term)) {
      violation("state machine safety: node " + std::to_string(n.id) + " applied index " +
                std::to_string(n.app.applied) + " (term " + std::to_string(n.app.term) +
                ") differently from node " + std::to_string(it->second.first_node) + " (term " +
                std::to_string(it->second.term) + ")");
      return false;
    }
    return true;
  }

  // Log matching, checked on every entry a node persists.
  void check_appended(const sim_node& n, const std::vector<raft::entry>& entries) {
    const raft::storage& s = n.store->storage();
    for (const raft::entry& e : entries) {
      auto previous = s.term(e.index - 1);
      if (!previous) continue;  // below the snapshot: covered by it
      auto actual = s.term(e.index);
      if (!actual || *actual != e.term) continue;  // entries below the compaction point
      const log_record rec{entry_hash(e), *previous, n.id};
      auto [it, inserted] = log_records_.try_emplace({e.index, e.term}, rec);
      if (!inserted && (it->second.entry_hash != rec.entry_hash ||
                        it->second.previous_term != rec.previous_term)) {
        violation("log matching: node " + std::to_string(n.id) + " holds entry " +
                  std::to_string(e.index) + " of term " + std::to_string(e.term) +
                  " different from node " + std::to_string(it->second.first_node) +
                  (it->second.entry_hash != rec.entry_hash ? " (data)" : " (previous term)"));
        return;
      }
    }
  }

  // Per-node invariants and election safety / leader completeness, after each advance().
  void check_node(sim_node& n) {
#if !defined(RAFTSYNC_TEST_ONLY_BREAK_VOTE_RULE)
    // The core's own invariants (RAFTSYNC_ASSERT). Not in the test-only build whose core grants
    // any vote: that breaks the core's vote invariants too, and the point of that build is to
    // show that the simulation's checkers report it.
    n.raft->check_invariants();
#endif
    const raft::status st = n.raft->status();
    if (n.app.applied > st.committed || st.applied > st.committed) {
      violation("node " + std::to_string(n.id) + " applied " + std::to_string(n.app.applied) +
                " (core: " + std::to_string(st.applied) + ") beyond its commit index " +
                std::to_string(st.committed));
      return;
    }
    if (st.committed > st.last_index) {
      violation("node " + std::to_string(n.id) + " commit index " + std::to_string(st.committed) +
                " beyond its last index " + std::to_string(st.last_index));
      return;
    }
    if (st.soft.role != raft::role::leader) return;
    auto [it, inserted] = leader_of_term_.try_emplace(st.hard.term, n.id);
    if (!inserted) {
      if (it->second != n.id)
        violation("election safety: nodes " + std::to_string(it->second) + " and " +
                  std::to_string(n.id) + " are both leader in term " +
                  std::to_string(st.hard.term));
      return;
    }
    ++stats_.leaders_elected;
    log("node ", n.id, " is leader in term ", st.hard.term);
    if (st.hard.term < highest_leader_term_) return;  // a stale leader: completeness not owed
    highest_leader_term_ = st.hard.term;
    // Leader completeness: by log matching it suffices that the leader holds the highest
    // committed entry.
    const auto [index, term] = highest_committed();
    if (index == 0) return;
    const raft::storage& s = n.store->storage();
    if (index < s.first_index() - 1) return;  // inside the leader's snapshot
    auto t = s.term(index);
    if (!t || *t != term) {
      violation("leader completeness: node " + std::to_string(n.id) + " became leader of term " +
                std::to_string(st.hard.term) + " without committed entry " + std::to_string(index) +
                " of term " + std::to_string(term));
    }
  }

  // Stops nodes whose removal was applied (deferred: they may be inside their own ready).
  void finish_step() {
    while (!to_stop_.empty()) {
      const node_id id = *to_stop_.begin();
      to_stop_.erase(to_stop_.begin());
      if (exists(id)) stop(id);
    }
  }

  cluster_options options_;
  transport::deterministic_random random_;
  transport::in_memory_network network_;
  std::map<node_id, std::unique_ptr<sim_node>> nodes_;
  node_id next_id_ = 1;
  std::uint64_t ticks_ = 0;
  std::string violation_;
  cluster_stats stats_;

  std::map<std::uint64_t, committed_record> committed_;  // index → chain at that index
  std::map<std::pair<std::uint64_t, std::uint64_t>, log_record> log_records_;  // (index, term)
  std::map<std::uint64_t, node_id> leader_of_term_;
  std::uint64_t highest_leader_term_ = 0;
  std::map<std::uint64_t, std::uint64_t> acknowledged_;  // proposal id → index applied at
  std::map<bytes, std::uint64_t> reads_;  // ReadIndex context → committed index when issued
  std::map<std::uint64_t, snapshot_transfer> transfers_;
  std::set<node_id> to_stop_;
  std::uint64_t proposal_counter_ = 0;
  std::uint64_t read_counter_ = 0;
  std::uint64_t transfer_counter_ = 0;
};

// ================================================================================================
// A random scenario: faults and operations drawn from one seed, then healing and liveness.
// ================================================================================================

struct scenario_options {
  std::uint64_t seed = 1;
  std::size_t nodes = 0;          // 0: 3 or 5, drawn from the seed
  std::uint64_t chaos_ticks = 0;  // 0: 150..350, drawn from the seed
  persistence_factory make_persistence = memory_persistence_factory();
  bool log_events = false;
  bool log_messages = false;
  // Liveness bounds after healing, in multiples of election_ticks.
  std::uint64_t leader_timeouts = 20;
  std::uint64_t commit_timeouts = 40;
};

struct scenario_result {
  bool ok = true;
  std::string violation;    // the first violation ("" if ok)
  std::string description;  // the scenario's parameters
  cluster_stats stats;
  std::uint64_t final_chain = 0;  // running hash at the highest committed index (replay check)
};

inline scenario_result run_random_scenario(const scenario_options& o) {
  transport::deterministic_random r(mix64(o.seed, 0x5ce7a210));
  cluster_options c;
  c.seed = o.seed;
  c.nodes = o.nodes != 0 ? o.nodes : (r.chance(0.5) ? 3 : 5);
  c.node_config.pre_vote = r.chance(0.8);
  c.node_config.check_quorum = r.chance(0.8);
  c.node_config.msg_bytes_max = r.chance(0.3) ? 300 : (1u << 20);
  c.node_config.inflight_msgs_max = r.chance(0.3) ? 2 : 256;
  c.crash_before_sync_probability = r.chance(0.5) ? 0.004 : 0.0;
  c.make_persistence = o.make_persistence;
  c.log_events = o.log_events;
  c.log_messages = o.log_messages;
  const std::uint64_t chaos_ticks = o.chaos_ticks != 0 ? o.chaos_ticks : r.uniform(150, 350);

  transport::link_settings link;
  link.drop_probability = r.chance(0.3) ? 0.0 : static_cast<double>(r.uniform(0, 15)) / 100.0;
  link.delay_min_us = 0;
  link.delay_max_us = r.uniform(0, 3) * c.tick_us;
  link.reorder = r.chance(0.7);
  link.duplicate_probability = r.chance(0.5) ? static_cast<double>(r.uniform(0, 10)) / 100.0 : 0.0;
  const double p_propose = 0.2 + r.unit() * 0.5;
  const double p_crash = r.chance(0.7) ? 0.006 : 0.0;
  const double p_partition = r.chance(0.7) ? 0.01 : 0.0;
  const double p_conf = r.chance(0.6) ? 0.02 : 0.0;
  const double p_snapshot = r.chance(0.6) ? 0.04 : 0.0;
  const double p_transfer = r.chance(0.5) ? 0.01 : 0.0;

  scenario_result result;
  result.description = "nodes=" + std::to_string(c.nodes) +
                       " ticks=" + std::to_string(chaos_ticks) +
                       " pre_vote=" + std::to_string(c.node_config.pre_vote) +
                       " check_quorum=" + std::to_string(c.node_config.check_quorum) +
                       " msg_bytes_max=" + std::to_string(c.node_config.msg_bytes_max) +
                       " inflight_msgs_max=" + std::to_string(c.node_config.inflight_msgs_max) +
                       " drop=" + std::to_string(link.drop_probability) +
                       " delay_max_us=" + std::to_string(link.delay_max_us) +
                       " reorder=" + std::to_string(link.reorder) +
                       " duplicate=" + std::to_string(link.duplicate_probability) +
                       " crash_before_sync=" + std::to_string(c.crash_before_sync_probability);

  cluster cl(c);
  cl.network().set_default_link(link);
  bool partitioned = false;

  auto pick = [&](const std::vector<node_id>& ids) {
    return ids.empty() ? raft::no_node : ids[r.uniform(0, ids.size() - 1)];
  };
  auto live_ids = [&] {
    std::vector<node_id> ids;
    for (node_id id : cl.node_ids())
      if (!cl.is_removed(id)) ids.push_back(id);
    return ids;
  };

  for (std::uint64_t t = 0; t < chaos_ticks && cl.ok(); ++t) {
    const std::vector<node_id> up = cl.up_nodes();
    const node_id leader = cl.leader();
    if (r.chance(p_propose)) {
      const std::uint64_t count = r.uniform(1, 3);
      for (std::uint64_t i = 0; i < count; ++i) {
        const double size_roll = r.unit();
        const std::size_t size = size_roll < 0.8    ? r.uniform(9, 200)
                                 : size_roll < 0.95 ? r.uniform(200, 2000)
                                                    : r.uniform(4096, 8192);
        if (node_id at = pick(up)) (void)cl.propose(at, size);
      }
    }
    if (r.chance(0.03)) {
      if (node_id at = pick(up)) cl.read_index(at);
    }
    if (r.chance(p_partition) && !partitioned) {
      std::vector<node_id> ids = live_ids();
      for (std::size_t i = ids.size(); i > 1; --i)
        std::swap(ids[i - 1], ids[r.uniform(0, i - 1)]);
      const std::size_t cut = r.uniform(1, ids.size() - 1);
      cl.partition({std::vector<node_id>(ids.begin(), ids.begin() + cut),
                    std::vector<node_id>(ids.begin() + cut, ids.end())});
      partitioned = true;
    } else if (r.chance(p_partition / 2) && !partitioned && leader != raft::no_node) {
      cl.network().isolate(leader);
      partitioned = true;
    } else if (partitioned && r.chance(0.05)) {
      cl.heal();
      partitioned = false;
    }
    if (r.chance(p_crash)) {
      if (node_id at = pick(up)) cl.crash(at, r.uniform(5, 60));
    }
    if (r.chance(p_snapshot)) {
      if (node_id at = pick(up)) (void)cl.take_snapshot(at, r.uniform(0, 10));
    }
    if (r.chance(0.01)) {
      const std::vector<node_id> ids = live_ids();
      const node_id a = pick(ids), b = pick(ids);
      if (a != b) {
        transport::link_settings l = link;
        l.drop_probability = r.chance(0.5) ? 1.0 : static_cast<double>(r.uniform(0, 50)) / 100.0;
        l.delay_max_us = r.uniform(0, 8) * c.tick_us;
        cl.network().set_link(a, b, l);
      }
    }
    if (r.chance(0.002)) {
      if (node_id at = pick(up)) cl.campaign(at);
    }
    if (leader != raft::no_node && cl.is_up(leader)) {
      const raft::status st = cl.status(leader);
      if (r.chance(p_transfer)) {
        std::vector<node_id> others;
        for (node_id v : st.conf.voters)
          if (v != leader) others.push_back(v);
        if (node_id to = pick(others)) (void)cl.transfer_leadership(leader, to);
      } else if (r.chance(p_conf)) {
        const double roll = r.unit();
        if (roll < 0.35 && live_ids().size() < 7) {
          (void)cl.add_learner(leader, cl.next_new_node_id());
        } else if (roll < 0.6 && !st.conf.learners.empty()) {
          (void)cl.propose_conf_change(
              leader, {raft::conf_change_type::add_node, pick(st.conf.learners), {}});
        } else if (roll < 0.75 && !st.conf.learners.empty()) {
          (void)cl.propose_conf_change(
              leader, {raft::conf_change_type::remove_node, pick(st.conf.learners), {}});
        } else if (st.conf.voters.size() >= 4) {
          std::vector<node_id> others;
          for (node_id v : st.conf.voters)
            if (v != leader) others.push_back(v);
          (void)cl.propose_conf_change(leader,
                                       {raft::conf_change_type::remove_node, pick(others), {}});
        }
      }
    }
    if (!cl.ok()) break;
    cl.tick();
  }
  if (cl.ok()) {
    const std::uint64_t election = c.node_config.election_ticks;
    cl.converge(o.leader_timeouts * election, o.commit_timeouts * election);
  }
  result.ok = cl.ok();
  result.violation = cl.violation_message();
  result.stats = cl.stats();
  result.final_chain = cl.highest_committed_chain();
  return result;
}

// ================================================================================================
// Raft Figure 8, scripted: a leader must not commit an entry of an earlier term by counting
// replicas (§5.4.2). With the rule intact the run is safe; with it broken, the entry that the
// leader committed and applied is overwritten by a later leader and the checkers report it.
// ================================================================================================
inline scenario_result run_figure8_scenario(std::uint64_t seed, bool log_events = false) {
  cluster_options c;
  c.seed = seed;
  c.nodes = 5;
  c.node_config.election_ticks = 1000;  // no spontaneous elections: the script decides
  c.node_config.pre_vote = false;
  c.node_config.check_quorum = false;
  c.node_config.msg_bytes_max = 1;  // one entry per append, so replication is step by step
  c.log_events = log_events;
  cluster cl(c);
  auto& net = cl.network();
  auto campaign_until_leader = [&](node_id id, int attempts) {
    for (int a = 0; a < attempts && cl.ok(); ++a) {
      cl.campaign(id);
      if (cl.run_until([&] { return cl.leader() == id; }, 5)) return true;
    }
    return false;
  };
  scenario_result result;
  result.description = "figure 8 (5 nodes)";
  auto finish = [&] {
    result.ok = cl.ok();
    result.violation = cl.violation_message();
    result.stats = cl.stats();
    result.final_chain = cl.highest_committed_chain();
    return result;
  };

  // (a) Node 1 leads; an entry X of its term reaches node 2 only.
  if (!campaign_until_leader(1, 3)) return finish();
  cl.run_ticks(5);
  const std::uint64_t x_index = cl.app(1).applied + 1;
  cl.partition({{1, 2}, {3, 4, 5}});
  (void)cl.propose(1, 16);
  cl.run_ticks(3);
  // (b) Node 1 crashes; node 5 is elected by 3 and 4, appends its no-op at X's index, and
  // crashes before the no-op leaves (its links are slow).
  cl.crash(1, 0);
  cl.partition({{2}, {3, 4, 5}});
  transport::link_settings slow;
  slow.delay_min_us = slow.delay_max_us = 3 * c.tick_us;
  net.set_link(5, 3, slow);
  net.set_link(5, 4, slow);
  cl.campaign(5);
  if (!cl.run_until([&] { return cl.leader() == 5; }, 10)) return finish();
  cl.crash(5, 0);
  net.clear_link_settings();
  // (c) Node 1 restarts and is elected by 2 and 3; it replicates X to node 3 (node 3 first
  // needs X, which travels alone). X is now on a majority but its term is old: a correct leader
  // waits for its own no-op to reach the majority. A leader that commits X by counting applies
  // it at once; it crashes before its no-op reaches node 3.
  cl.restart(1);
  cl.partition({{1, 2, 3}, {4}, {5}});
  transport::link_settings one_tick;
  one_tick.delay_min_us = one_tick.delay_max_us = c.tick_us;
  net.set_link(1, 3, one_tick);
  if (!campaign_until_leader(1, 4)) return finish();
  for (int t = 0; t < 10 && cl.ok() && cl.app(1).applied < x_index; ++t)
    cl.tick();
  cl.crash(1, 0);
  net.clear_link_settings();
  // (d) Node 5 restarts and campaigns: with X committed only by counting, 3 and 4 still vote
  // for it (its last term is newer than X's) and it overwrites X.
  cl.restart(5);
  cl.partition({{2, 3, 4, 5}, {1}});
  (void)campaign_until_leader(5, 4);
  cl.run_ticks(10);
  // Everyone back; the cluster must converge (by itself: within two long election timeouts).
  if (cl.ok()) cl.converge(2 * 2 * c.node_config.election_ticks, 4 * c.node_config.election_ticks);
  return finish();
}

}  // namespace raftsync::sim
