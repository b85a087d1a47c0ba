// Check-quorum and the leader lease (as in etcd-io/raft; thesis §6.2 / §4.2.3).
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("a leader that cannot hear a quorum steps down after an election timeout",
          "[raft][check_quorum]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(1);
  for (int i = 0; i < 25; ++i)
    c.tick(1);
  CHECK(c.node(1).status().soft.role == role::follower);
  CHECK(c.node(1).propose("x") == raftsync::errc::proposal_dropped);
}

TEST_CASE("a leader that hears a quorum stays leader", "[raft][check_quorum]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.crash(3);
  c.tick_all(50);
  CHECK(c.leader() == 1);
}

TEST_CASE("without check_quorum an isolated leader keeps its role", "[raft][check_quorum]") {
  cluster c({1, 2, 3}, {}, [](config& cfg) { cfg.check_quorum = false; });
  c.elect(1);
  c.isolate(1);
  for (int i = 0; i < 50; ++i)
    c.tick(1);
  CHECK(c.node(1).status().soft.role == role::leader);
}

TEST_CASE("a follower with a live leader ignores vote requests (leader lease)",
          "[raft][check_quorum]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const auto before = c.node(2).status();
  auto vote = make_message(message_type::vote, 3, 2, before.hard.term + 1);
  vote.index = 1000;
  vote.log_term = before.hard.term;
  REQUIRE(!c.node(2).step(vote));
  c.node(2).check_invariants();
  const auto after = c.node(2).status();
  CHECK(after.hard == before.hard);
  CHECK(after.soft.leader == 1);
  CHECK(c.take_messages().empty());  // not even a rejection
}

TEST_CASE("a stale leader learns the newer term from a follower and steps down",
          "[raft][check_quorum]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(1);
  for (int i = 0; i < 100 && (c.leader() == no_node || c.leader() == 1); ++i) {
    c.tick(2);
    c.tick(3);
    c.stabilize();
  }
  const node_id new_leader = c.leader() == 1 ? no_node : c.leader();
  REQUIRE(new_leader != no_node);
  c.heal();
  // Node 1 still believes it leads (it has not ticked) and sends a heartbeat of its old term.
  c.node(1).tick();
  c.stabilize();
  c.tick_all(2);
  CHECK(c.node(1).status().soft.role == role::follower);
  CHECK(c.node(1).status().soft.leader == new_leader);
}
