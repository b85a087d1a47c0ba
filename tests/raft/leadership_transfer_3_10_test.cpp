// Thesis §3.10 — leadership transfer (TimeoutNow).
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("leadership moves to an up-to-date transferee", "[raft][3.10]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const std::uint64_t term = c.node(1).status().hard.term;
  REQUIRE(!c.node(1).transfer_leadership(2));
  c.stabilize();
  CHECK(c.leader() == 2);
  CHECK(c.node(2).status().hard.term == term + 1);
  CHECK(c.node(1).status().soft.role == role::follower);
  CHECK(c.node(1).status().soft.leader == 2);
}

TEST_CASE("the leader catches a lagging transferee up before sending timeout_now", "[raft][3.10]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(3);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  c.stabilize();
  c.heal();
  bool timeout_now_before_caught_up = false;
  c.drop = [&](const message& m) {
    if (m.type == message_type::timeout_now &&
        c.node(3).status().last_index < c.node(1).status().last_index)
      timeout_now_before_caught_up = true;
    return false;
  };
  REQUIRE(!c.node(1).transfer_leadership(3));
  c.stabilize();
  CHECK_FALSE(timeout_now_before_caught_up);
  CHECK(c.leader() == 3);
  CHECK(c.app(3).applied_data().size() == 5);
}

TEST_CASE("proposals are dropped while a transfer is in progress", "[raft][3.10]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(2);
  REQUIRE(!c.node(1).transfer_leadership(2));
  CHECK(c.node(1).status().lead_transferee == 2);
  CHECK(c.node(1).propose("x") == raftsync::errc::proposal_dropped);
}

TEST_CASE("a transfer that does not finish within an election timeout is aborted", "[raft][3.10]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(2);
  REQUIRE(!c.node(1).transfer_leadership(2));
  c.stabilize();
  for (int i = 0; i < 10; ++i)
    c.tick(1);
  c.stabilize();
  CHECK(c.node(1).status().lead_transferee == no_node);
  CHECK(c.node(1).status().soft.role == role::leader);
  CHECK(!c.node(1).propose("accepted again"));
}

TEST_CASE("a transfer to a learner or a non-member is refused", "[raft][3.10]") {
  cluster c({1, 2, 3}, {4});
  c.elect(1);
  CHECK(c.node(1).transfer_leadership(4) == raftsync::errc::not_found);
  CHECK(c.node(1).transfer_leadership(9) == raftsync::errc::not_found);
  CHECK(c.node(1).status().lead_transferee == no_node);
}

TEST_CASE("a follower forwards a transfer request to the leader", "[raft][3.10]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(3).transfer_leadership(3));
  c.stabilize();
  CHECK(c.leader() == 3);
}

TEST_CASE("a transferee's vote request is granted inside the leader lease", "[raft][3.10]") {
  // Check-quorum is on: without the transfer context the other follower would ignore the vote.
  cluster c({1, 2, 3});
  c.elect(1);
  c.tick_all(2);
  REQUIRE(!c.node(1).transfer_leadership(3));
  c.isolate(1);  // only node 2 can vote for 3, and it has a live leader
  // Deliver the timeout_now (node 3 is already up to date) and nothing else from node 1.
  c.heal();
  c.stabilize();
  CHECK(c.leader() == 3);
}

TEST_CASE("transferring to the current leader is a no-op", "[raft][3.10]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(1).transfer_leadership(1));
  c.stabilize();
  CHECK(c.leader() == 1);
  CHECK(c.node(1).status().lead_transferee == no_node);
}
