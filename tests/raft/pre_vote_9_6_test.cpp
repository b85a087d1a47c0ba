// Thesis §9.6 — pre-vote: a node that cannot win does not disrupt the cluster.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("a partitioned node does not increase its term while pre-voting", "[raft][9.6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const std::uint64_t term = c.node(3).status().hard.term;
  c.isolate(3);
  for (int i = 0; i < 100; ++i)
    c.tick(3);
  CHECK(c.node(3).status().hard.term == term);
  CHECK(c.node(3).status().soft.role == role::pre_candidate);
}

TEST_CASE("a rejoining partitioned node does not depose a healthy leader", "[raft][9.6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const std::uint64_t term = c.node(1).status().hard.term;
  c.isolate(3);
  for (int i = 0; i < 100; ++i)
    c.tick(3);
  c.heal();
  c.tick_all(5);
  CHECK(c.leader() == 1);
  CHECK(c.node(1).status().hard.term == term);
  CHECK(c.node(3).status().soft.leader == 1);
}

TEST_CASE("without pre-vote a rejoining partitioned node forces a new term", "[raft][9.6]") {
  cluster c({1, 2, 3}, {}, [](config& cfg) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
  });
  c.elect(1);
  const std::uint64_t term = c.node(1).status().hard.term;
  c.isolate(3);
  for (int i = 0; i < 100; ++i)
    c.tick(3);
  CHECK(c.node(3).status().hard.term > term + 2);
  c.heal();
  c.tick_all(5);
  CHECK(c.node(1).status().hard.term > term);  // the disruption pre-vote prevents
}

TEST_CASE("a pre-vote is granted without changing the voter's term or vote", "[raft][9.6]") {
  memory_storage s;
  s.bootstrap({{1, 2, 3}, {}});
  auto n = raw_node::create(test_config(1), s);
  REQUIRE(n);
  auto pv = make_message(message_type::pre_vote, 2, 1, 1);
  REQUIRE(!n->step(pv));
  n->check_invariants();
  auto rd = n->ready();
  CHECK_FALSE(rd.hard);
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].type == message_type::pre_vote_response);
  CHECK_FALSE(rd.messages[0].reject);
  CHECK(rd.messages[0].term == 1);
  CHECK(n->status().hard.term == 0);
  CHECK(n->status().hard.vote == no_node);
}

TEST_CASE("a successful pre-vote is followed by a real election in the next term", "[raft][9.6]") {
  cluster c({1, 2, 3});
  c.node(2).campaign();
  CHECK(c.node(2).status().soft.role == role::pre_candidate);
  CHECK(c.node(2).status().hard.term == 0);
  c.stabilize();
  CHECK(c.node(2).status().soft.role == role::leader);
  CHECK(c.node(2).status().hard.term == 1);
}

TEST_CASE("a node with a stale log cannot win a pre-vote", "[raft][9.6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(3);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  c.heal();
  c.crash(1);
  // Node 2 has the committed entry; node 3 does not and is refused whenever it asks first.
  for (int i = 0; i < 100 && c.leader() == no_node; ++i)
    c.tick_all();
  CHECK(c.leader() == 2);
  CHECK(c.node(3).status().hard.term == c.node(2).status().hard.term);
}
