// raft_cluster_example: three Raft nodes in one process, on the seeded in-memory network.
//
// They elect a leader, commit entries, lose the leader, elect a new one, commit more, and the old
// leader comes back and catches up. Every step is printed.
//
// This file is the reference statement of how an application drives the Raft core. For each node:
//
//   tick()  ─┐   inputs: the clock (tick), messages from peers (step), the application's own
//   step(m) ─┼─► requests (propose, propose_conf_change, transfer_leadership, read_index)
//   propose ─┘
//               then, while has_ready():
//   rd = ready()
//     1. persist    rd.snapshot (with the app's snapshot data), rd.entries, rd.hard — and fsync
//                   when rd.must_sync — BEFORE anything is sent: a vote or an append
//                   acknowledgement is a promise that this state survives a crash (Raft §5.2/§5.3)
//     2. send       rd.messages
//     3. apply      rd.committed_entries, in order (conf changes through apply_conf_change)
//     4. advance(rd)
//
// Here "stable storage" is raft::memory_storage, so "persist" is a function call; a real node
// writes through the durable storage module and fsyncs at step 1.
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "raftsync/raft/config.hpp"
#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/raw_node.hpp"
#include "raftsync/transport/in_memory_network.hpp"

using namespace raftsync;
using raft::node_id;

namespace {

// One member of the cluster: its core, its stable storage, its state machine, its transport.
struct node {
  node_id id = raft::no_node;
  raft::memory_storage storage;            // "disk": survives a crash of the process
  std::optional<raft::raw_node> raft;      // the core; empty while the node is down
  transport::transport* net = nullptr;     // this node's endpoint on the network
  std::vector<std::string> state_machine;  // the application state: the commands applied, in order
  std::uint64_t applied_index = 0;
};

class cluster {
 public:
  explicit cluster(std::uint64_t seed) : network_(seed) {
    // A little realism: 0–2 ms of delay per message, reordering allowed.
    network_.set_default_link({.delay_min_us = 0, .delay_max_us = 2000, .reorder = true});
    const raft::conf_state initial{{1, 2, 3}, {}};
    for (node_id id = 1; id <= 3; ++id) {
      auto n = std::make_unique<node>();
      n->id = id;
      // A brand-new cluster: every initial member starts with the same membership at index 0.
      n->storage.bootstrap(initial);
      n->net = &network_.endpoint(id);
      // Messages arrive on the driver thread, inside network_.deliver_until(): step them in.
      n->net->set_receive_handler([this, id](transport::envelope e) {
        node& target = *nodes_.at(id);
        if (!target.raft) return;
        if (auto* m = std::get_if<raft::message>(&e.body)) (void)target.raft->step(std::move(*m));
        handle_ready(target);
      });
      nodes_[id] = std::move(n);
      start(id);
    }
  }

  // (Re)builds a node's core from what its storage holds, as a process does on startup.
  void start(node_id id) {
    node& n = *nodes_.at(id);
    raft::config cfg;
    cfg.id = id;
    cfg.election_ticks = 10;  // election timeout: 10–19 ticks
    cfg.heartbeat_ticks = 1;
    cfg.applied = 0;  // this state machine is in memory: it restarts empty and replays
    cfg.random_seed = 1000 + id + 17 * restarts_++;
    auto created = raft::raw_node::create(cfg, n.storage);
    if (!created) {
      std::printf("node %llu: cannot start: %s\n", ull(id), created.error().message().c_str());
      return;
    }
    n.raft.emplace(std::move(created).value());
    n.state_machine.clear();
    n.applied_index = 0;
    network_.set_node_down(id, false);
  }

  // The process of node `id` dies: the core and everything in memory are gone, the storage stays.
  void crash(node_id id) {
    nodes_.at(id)->raft.reset();
    network_.set_node_down(id, true);
    std::printf("[t=%3llu] node %llu crashes\n", ull(now_), ull(id));
  }

  // One tick of the clock (here 10 ms of virtual time): every live node ticks, then the network
  // delivers whatever is due before the next tick.
  void tick() {
    ++now_;
    for (auto& [id, n] : nodes_) {
      if (!n->raft) continue;
      n->raft->tick();
      handle_ready(*n);
    }
    network_.deliver_until(now_ * tick_us);
  }

  // The driver loop body for one node: ready → persist → send → apply → advance.
  void handle_ready(node& n) {
    while (n.raft && n.raft->has_ready()) {
      raft::ready rd = n.raft->ready();

      if (rd.soft) {  // informational: who leads, which role this node has now
        std::printf("[t=%3llu] node %llu is %s (term %llu, leader %llu)\n", ull(now_), ull(n.id),
                    raft::to_string(rd.soft->role), ull(n.raft->status().hard.term),
                    ull(rd.soft->leader));
      }

      // 1. Persist. Order: snapshot, entries, hard state; then fsync if rd.must_sync. Nothing
      //    may be sent before this: a vote sent before the vote is durable could let this node,
      //    after a crash, vote twice in one term.
      if (!rd.snapshot.empty()) {
        // (A real application installs the snapshot data it received out of band first.)
        (void)n.storage.apply_snapshot(rd.snapshot);
      }
      if (auto ec = n.storage.append(rd.entries)) {
        std::printf("node %llu: append failed: %s\n", ull(n.id), ec.message().c_str());
        return;
      }
      if (rd.hard) n.storage.set_hard_state(*rd.hard);
      // if (rd.must_sync) fsync();   ← here, with durable storage

      // 2. Send. The network may drop, delay, duplicate or reorder: Raft retransmits.
      for (raft::message& m : rd.messages) {
        const node_id to = m.to;
        n.net->send(transport::envelope{n.id, to, std::move(m)});
      }

      // 3. Apply committed entries in log order.
      for (const raft::entry& e : rd.committed_entries) {
        n.applied_index = e.index;
        if (e.type == raft::entry_type::conf_change) {
          if (auto cc = raft::decode_conf_change(e.data)) (void)n.raft->apply_conf_change(*cc);
          continue;
        }
        if (e.data.empty()) continue;  // a new leader's no-op entry
        n.state_machine.push_back(e.data);
        std::printf("[t=%3llu] node %llu applies #%llu (term %llu): %s\n", ull(now_), ull(n.id),
                    ull(e.index), ull(e.term), e.data.c_str());
      }

      // 4. Tell the core all of the above is done.
      n.raft->advance(rd);
    }
  }

  node_id leader() const {
    for (const auto& [id, n] : nodes_)
      if (n->raft && n->raft->status().soft.role == raft::role::leader) return id;
    return raft::no_node;
  }

  // Runs until `done()` holds or `max_ticks` pass.
  template <typename Predicate>
  bool run_until(Predicate done, int max_ticks) {
    for (int i = 0; i < max_ticks; ++i) {
      if (done()) return true;
      tick();
    }
    return done();
  }

  bool propose(const std::string& command) {
    const node_id l = leader();
    if (l == raft::no_node) return false;
    node& n = *nodes_.at(l);
    std::printf("[t=%3llu] client proposes \"%s\" at node %llu\n", ull(now_), command.c_str(),
                ull(l));
    if (auto ec = n.raft->propose(command)) {
      std::printf("          rejected: %s\n", ec.message().c_str());
      return false;
    }
    handle_ready(n);
    return true;
  }

  const node& at(node_id id) const { return *nodes_.at(id); }
  std::uint64_t now() const { return now_; }

  static unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

 private:
  static constexpr std::uint64_t tick_us = 10'000;
  transport::in_memory_network network_;
  std::map<node_id, std::unique_ptr<node>> nodes_;
  std::uint64_t now_ = 0;
  std::uint64_t restarts_ = 0;
};

bool all_applied(const cluster& c, std::initializer_list<node_id> ids, std::size_t count) {
  for (node_id id : ids)
    if (!c.at(id).raft || c.at(id).state_machine.size() < count) return false;
  return true;
}

}  // namespace

int main() {
  cluster c(/*seed=*/42);
  std::printf("== three nodes start; no leader yet\n");
  if (!c.run_until([&] { return c.leader() != raft::no_node; }, 100)) {
    std::printf("no leader elected\n");
    return 1;
  }
  const node_id first_leader = c.leader();

  std::printf("== the leader commits three entries\n");
  for (const char* cmd : {"set x = 1", "set y = 2", "set x = 3"})
    c.propose(cmd);
  if (!c.run_until([&] { return all_applied(c, {1, 2, 3}, 3); }, 50)) {
    std::printf("entries were not applied everywhere\n");
    return 1;
  }

  std::printf("== the leader (node %llu) is lost\n", cluster::ull(first_leader));
  c.crash(first_leader);
  if (!c.run_until([&] { return c.leader() != raft::no_node && c.leader() != first_leader; },
                   200)) {
    std::printf("no new leader elected\n");
    return 1;
  }
  std::vector<node_id> survivors;
  for (node_id id = 1; id <= 3; ++id)
    if (id != first_leader) survivors.push_back(id);

  std::printf("== the new leader (node %llu) commits with two of three nodes\n",
              cluster::ull(c.leader()));
  for (const char* cmd : {"set z = 4", "delete y"})
    c.propose(cmd);
  if (!c.run_until(
          [&] {
            return c.at(survivors[0]).state_machine.size() >= 5 &&
                   c.at(survivors[1]).state_machine.size() >= 5;
          },
          100)) {
    std::printf("the survivors did not apply the new entries\n");
    return 1;
  }

  std::printf("== node %llu restarts from its storage and catches up\n",
              cluster::ull(first_leader));
  c.start(first_leader);
  if (!c.run_until([&] { return all_applied(c, {1, 2, 3}, 5); }, 200)) {
    std::printf("node %llu did not catch up\n", cluster::ull(first_leader));
    return 1;
  }

  // Every node applied the same commands in the same order.
  for (node_id id = 2; id <= 3; ++id) {
    if (c.at(id).state_machine != c.at(1).state_machine) {
      std::printf("state machines differ!\n");
      return 1;
    }
  }
  std::printf("== done at t=%llu: every node applied the same %zu commands:", cluster::ull(c.now()),
              c.at(1).state_machine.size());
  for (const auto& cmd : c.at(1).state_machine)
    std::printf(" [%s]", cmd.c_str());
  std::printf("\n");
  return 0;
}
