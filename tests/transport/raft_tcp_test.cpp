// A three-node Raft cluster (raw_node + memory_storage) over the real TCP transport on loopback:
// it elects a leader, commits, and keeps committing after the leader is stopped.
#include <catch2/catch.hpp>

#include <map>
#include <mutex>
#include <random>
#include <set>

#include "raft_tcp_driver.hpp"
#include "test_support.hpp"

using namespace raftsync;
using namespace raftsync::transport;
using namespace raftsync::transport::test;

namespace {

struct applied_log {
  std::mutex mu;
  std::map<node_id, std::vector<std::string>> data;  // non-empty normal entries, per node

  std::size_t size(node_id id) {
    std::lock_guard lock(mu);
    return data[id].size();
  }
};

node_id find_leader(const std::vector<std::unique_ptr<raft_tcp_node>>& nodes,
                    const std::set<node_id>& live) {
  node_id leader = raft::no_node;
  for (const auto& n : nodes)
    if (live.count(n->id()) && n->is_leader()) leader = n->id();
  return leader;
}

}  // namespace

TEST_CASE("a three-node raft cluster over TCP elects a leader and commits",
          "[transport][raft_tcp]") {
  raft_tcp_options options;
  options.tick = std::chrono::milliseconds(10);
  options.random_seed = test_seed();
  INFO("raft seed " << options.random_seed << " (replay: RAFTSYNC_TRANSPORT_SEED="
                    << options.random_seed << "; timing still varies)");
  applied_log log;
  auto nodes = make_raft_tcp_cluster(
      3, [](node_id id) { return base_config(id); }, options,
      [&log](node_id id) {
        return [&log, id](const raft::entry& e) {
          if (e.type != raft::entry_type::normal || e.data.empty()) return;
          std::lock_guard lock(log.mu);
          log.data[id].push_back(e.data);
        };
      });
  REQUIRE(nodes.size() == 3);
  std::set<node_id> live{1, 2, 3};
  node_id leader = raft::no_node;
  REQUIRE(wait_until([&] { return (leader = find_leader(nodes, live)) != raft::no_node; }));

  auto propose_on_leader = [&](const std::string& prefix, int count) {
    auto& node = *nodes[leader - 1];
    node.post([&node, prefix, count] {
      for (int i = 0; i < count; ++i)
        (void)node.raw().propose(prefix + std::to_string(i));
      node.schedule_ready();
    });
  };
  propose_on_leader("a", 100);
  REQUIRE(
      wait_until([&] { return log.size(1) == 100 && log.size(2) == 100 && log.size(3) == 100; }));
  {
    std::lock_guard lock(log.mu);
    REQUIRE(log.data[1] == log.data[2]);
    REQUIRE(log.data[2] == log.data[3]);
    REQUIRE(log.data[1].front() == "a0");
    REQUIRE(log.data[1].back() == "a99");
  }

  // Stop the leader: the other two elect a new one over TCP and keep committing.
  const node_id old_leader = leader;
  nodes[old_leader - 1]->stop();
  live.erase(old_leader);
  REQUIRE(wait_until(
      [&] {
        leader = find_leader(nodes, live);
        return leader != raft::no_node && leader != old_leader;
      },
      std::chrono::milliseconds(10000)));
  propose_on_leader("b", 50);
  REQUIRE(wait_until([&] {
    for (node_id id : live)
      if (log.size(id) != 150) return false;
    return true;
  }));
  std::lock_guard lock(log.mu);
  std::vector<node_id> ids(live.begin(), live.end());
  REQUIRE(log.data[ids[0]] == log.data[ids[1]]);
}
