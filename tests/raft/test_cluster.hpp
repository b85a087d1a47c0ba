// A tiny synchronous "network" of raw_nodes for the raft core's unit tests.
//
// Every node has a memory_storage and a toy application whose state is the list of applied
// entries. Messages go into one FIFO queue and are delivered in order; tests can drop messages
// (a filter), isolate nodes, hold messages back, crash-restart nodes and compact logs. Every
// ready/step is followed by raw_node::check_invariants(), and stabilize() checks that all
// applied sequences agree (state machine safety). The whole-cluster randomized simulation is
// tests/sim/ (helper "sim"); this is deliberately small and deterministic.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "raftsync/raft/conf_change.hpp"
#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/raw_node.hpp"

namespace raftsync::raft::testing {

inline config test_config(node_id id) {
  config cfg;
  cfg.id = id;
  cfg.election_ticks = 10;
  cfg.heartbeat_ticks = 1;
  cfg.random_seed = 42;
  return cfg;
}

struct app_node {
  config cfg;
  memory_storage storage;
  std::optional<raw_node> node;
  std::vector<entry> applied;  // the toy state machine: applied[i].index == i + 1
  std::vector<read_state> reads;
  std::vector<entry> snapshot_data;                      // state as of the last snapshot
  std::map<std::uint64_t, std::vector<entry>> incoming;  // streamed snapshot data by index
  std::vector<soft_state> soft_changes;
  bool down = false;

  std::vector<bytes> applied_data() const {
    std::vector<bytes> out;
    for (const auto& e : applied)
      if (e.type == entry_type::normal && !e.data.empty()) out.push_back(e.data);
    return out;
  }
};

class cluster {
 public:
  using tweak_fn = std::function<void(config&)>;

  explicit cluster(std::vector<node_id> voters, std::vector<node_id> learners = {},
                   tweak_fn tweak = {})
      : tweak_(std::move(tweak)) {
    for (node_id id : voters)
      add(id, conf_state{voters, learners});
    for (node_id id : learners)
      add(id, conf_state{voters, learners});
  }

  // A node that joins later: empty storage, no bootstrap.
  void add_empty_node(node_id id) { add(id, std::nullopt); }

  app_node& app(node_id id) {
    auto it = nodes_.find(id);
    REQUIRE(it != nodes_.end());
    return *it->second;
  }
  raw_node& node(node_id id) { return *app(id).node; }
  std::vector<node_id> ids() const {
    std::vector<node_id> out;
    for (const auto& [id, n] : nodes_)
      out.push_back(id);
    return out;
  }

  // Drops every message for which it returns true.
  std::function<bool(const message&)> drop;
  // Chooses which queued message to deliver next (index < size); default FIFO.
  std::function<std::size_t(std::size_t)> pick;
  // Re-queues a copy of a delivered message when it returns true (duplication).
  std::function<bool(const message&)> duplicate;
  // Called after every delivered message and every tick (e.g. global safety checks).
  std::function<void()> after_step;
  // When true, snapshot messages are kept in held_snapshots instead of being delivered.
  bool hold_snapshots = false;
  std::vector<message> held_snapshots;
  std::uint64_t delivered = 0;

  void isolate(node_id id) { isolated_.insert(id); }
  void heal() { isolated_.clear(); }

  // Processes every pending ready of `id` as a correct application would.
  void process(node_id id) {
    app_node& a = app(id);
    if (a.down) return;
    while (a.node->has_ready()) {
      ready rd = a.node->ready();
      a.node->check_invariants();
      if (rd.soft) a.soft_changes.push_back(*rd.soft);
      if (!rd.snapshot.empty()) {
        auto it = a.incoming.find(rd.snapshot.index);
        REQUIRE(it != a.incoming.end());
        a.applied = it->second;
        a.snapshot_data = it->second;
        REQUIRE(!a.storage.apply_snapshot(rd.snapshot));
      }
      REQUIRE(!a.storage.append(rd.entries));
      if (rd.hard) a.storage.set_hard_state(*rd.hard);
      for (auto& m : rd.messages) {
        REQUIRE(m.from == id);
        REQUIRE(m.to != id);
        queue_.push_back(std::move(m));
      }
      for (const auto& e : rd.committed_entries) {
        REQUIRE(e.index == a.applied.size() + 1);
        if (e.type == entry_type::conf_change) {
          auto cc = decode_conf_change(e.data);
          REQUIRE(cc);
          a.node->apply_conf_change(*cc);
          a.node->check_invariants();
        }
        a.applied.push_back(e);
      }
      for (auto& r : rd.read_states)
        a.reads.push_back(std::move(r));
      a.node->advance(rd);
      a.node->check_invariants();
    }
  }

  void process_all() {
    for (auto& [id, n] : nodes_)
      process(id);
  }

  // Delivers one queued message (after processing readies). Returns false if none is left.
  bool deliver_one() {
    process_all();
    if (queue_.empty()) return false;
    std::size_t at = pick ? pick(queue_.size()) : 0;
    if (at >= queue_.size()) at = 0;
    message m = std::move(queue_[at]);
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(at));
    if (duplicate && duplicate(m)) queue_.push_back(m);
    deliver(std::move(m));
    return true;
  }

  // Delivers messages until the network is quiet.
  void stabilize(std::size_t max_messages = 100000) {
    std::size_t count = 0;
    while (deliver_one()) {
      REQUIRE(++count < max_messages);
    }
    check_state_machine_safety();
  }

  // Takes the queued messages out of the network (the test decides what to do with them).
  std::vector<message> take_messages() {
    process_all();
    std::vector<message> out(queue_.begin(), queue_.end());
    queue_.clear();
    return out;
  }
  void deliver(message m) {
    const bool lost = (drop && drop(m)) || isolated_.count(m.from) > 0 || isolated_.count(m.to) > 0;
    if (lost) {
      // The application learns that streaming the snapshot failed and tells the core.
      if (m.type == message_type::snapshot) report_snapshot(m, false);
      return;
    }
    auto it = nodes_.find(m.to);
    if (it == nodes_.end() || it->second->down) {
      if (m.type == message_type::snapshot) report_snapshot(m, false);
      return;
    }
    if (m.type == message_type::snapshot) {
      if (hold_snapshots) {
        held_snapshots.push_back(m);
        return;
      }
      // The application streams the data out of band, then steps the message.
      // (The toy state at index i is the first i applied entries; the sender has applied at
      // least up to any snapshot it sends.)
      const auto& source = app(m.from).applied;
      REQUIRE(source.size() >= m.snapshot.index);
      it->second->incoming[m.snapshot.index].assign(
          source.begin(), source.begin() + static_cast<std::ptrdiff_t>(m.snapshot.index));
    }
    ++delivered;
    (void)it->second->node->step(m);
    it->second->node->check_invariants();
    if (after_step) after_step();
    if (m.type == message_type::snapshot) report_snapshot(m, true);
  }

  void tick(node_id id, int times = 1) {
    for (int i = 0; i < times; ++i) {
      if (app(id).down) return;
      node(id).tick();
      node(id).check_invariants();
      if (after_step) after_step();
      process(id);
    }
  }
  // Ticks every node `times` times, delivering messages after each round.
  void tick_all(int times = 1) {
    for (int i = 0; i < times; ++i) {
      for (auto& [id, n] : nodes_) {
        if (n->down) continue;
        n->node->tick();
        n->node->check_invariants();
        if (after_step) after_step();
      }
      stabilize();
    }
  }

  void elect(node_id id) {
    node(id).campaign();
    stabilize();
    REQUIRE(node(id).status().soft.role == role::leader);
  }

  // The leader with the highest term, or no_node.
  node_id leader() {
    node_id best = no_node;
    std::uint64_t best_term = 0;
    for (auto& [id, n] : nodes_) {
      if (n->down) continue;
      const auto st = n->node->status();
      if (st.soft.role == role::leader && st.hard.term >= best_term) {
        best = id;
        best_term = st.hard.term;
      }
    }
    return best;
  }

  // Crash: the node stops; un-processed messages to it are lost.
  void crash(node_id id) { app(id).down = true; }
  // Restart from persisted storage; the application state restarts from its snapshot and is
  // rebuilt by re-applying committed entries.
  void restart(node_id id) {
    app_node& a = app(id);
    a.down = false;
    a.applied = a.snapshot_data;
    a.incoming.clear();
    config cfg = a.cfg;
    cfg.applied = a.applied.size();
    auto n = raw_node::create(cfg, a.storage);
    REQUIRE(n);
    a.node.emplace(std::move(*n));
    a.node->check_invariants();
  }

  // The node's disk is replaced or wiped: it restarts under its id with empty storage,
  // bootstrapped with `initial` (what the node program does when started without --join).
  void wipe(node_id id, const conf_state& initial) {
    app_node& a = app(id);
    a.node.reset();
    a.storage = memory_storage();
    a.storage.bootstrap(initial);
    a.applied.clear();
    a.snapshot_data.clear();
    a.incoming.clear();
    a.down = false;
    config cfg = a.cfg;
    cfg.applied = 0;
    auto n = raw_node::create(cfg, a.storage);
    REQUIRE(n);
    a.node.emplace(std::move(*n));
  }

  // The application snapshots its state at `index` (<= applied) and compacts the log to it.
  void compact(node_id id, std::uint64_t index) {
    app_node& a = app(id);
    REQUIRE(index <= a.applied.size());
    a.snapshot_data.assign(a.applied.begin(),
                           a.applied.begin() + static_cast<std::ptrdiff_t>(index));
    REQUIRE(!a.storage.create_snapshot(index, a.node->status().conf));
    REQUIRE(!a.storage.compact(index));
  }

  // State machine safety: every node applied a prefix of the same sequence.
  void check_state_machine_safety() {
    const app_node* longest = nullptr;
    for (auto& [id, n] : nodes_)
      if (!longest || n->applied.size() > longest->applied.size()) longest = n.get();
    for (auto& [id, n] : nodes_) {
      for (std::size_t i = 0; i < n->applied.size(); ++i) {
        REQUIRE(n->applied[i].index == i + 1);
        REQUIRE(n->applied[i] == longest->applied[i]);
      }
    }
  }

  std::size_t queued() const { return queue_.size(); }

 private:
  void add(node_id id, std::optional<conf_state> bootstrap) {
    auto a = std::make_unique<app_node>();
    a->cfg = test_config(id);
    a->cfg.random_seed = 42 + id;
    if (tweak_) tweak_(a->cfg);
    if (bootstrap) a->storage.bootstrap(*bootstrap);
    auto n = raw_node::create(a->cfg, a->storage);
    REQUIRE(n);
    a->node.emplace(std::move(*n));
    nodes_.emplace(id, std::move(a));
  }

  void report_snapshot(const message& m, bool ok) {
    auto it = nodes_.find(m.from);
    if (it == nodes_.end() || it->second->down) return;
    it->second->node->report_snapshot(m.to, ok);
    it->second->node->check_invariants();
  }

  tweak_fn tweak_;
  std::map<node_id, std::unique_ptr<app_node>> nodes_;
  std::deque<message> queue_;
  std::set<node_id> isolated_;
};

// Builds a message (tests step hand-made messages into a single node).
inline message make_message(message_type type, node_id from, node_id to, std::uint64_t term) {
  message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

}  // namespace raftsync::raft::testing
