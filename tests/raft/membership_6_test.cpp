// Raft §6 / thesis §4 — single-server membership changes and learners.
#include <catch2/catch.hpp>

#include <algorithm>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

namespace {
bool has(const std::vector<node_id>& v, node_id id) {
  return std::find(v.begin(), v.end(), id) != v.end();
}
}  // namespace

TEST_CASE("a node added with add_node catches up from the log and becomes a voter", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  c.stabilize();
  c.add_empty_node(4);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 4, "addr4"}));
  c.stabilize();
  c.tick_all(2);
  for (node_id id : c.ids())
    CHECK(has(c.node(id).status().conf.voters, 4));
  // The joiner learned the bootstrap membership from the log, not just itself.
  CHECK(c.node(4).status().conf.voters.size() == 4);
  CHECK(c.app(4).applied_data() == c.app(1).applied_data());
  // Now a quorum is 3 of 4: with two nodes down nothing commits.
  c.crash(3);
  c.crash(4);
  const std::uint64_t committed = c.node(1).status().committed;
  REQUIRE(!c.node(1).propose("needs-3"));
  c.stabilize();
  CHECK(c.node(1).status().committed == committed);
}

TEST_CASE("only one membership change may be pending at a time", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.add_empty_node(4);
  c.add_empty_node(5);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 4, {}}));
  CHECK(c.node(1).propose_conf_change({conf_change_type::add_node, 5, {}}) ==
        raftsync::errc::proposal_dropped);
  c.stabilize();
  // Once applied, the next change is accepted.
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 5, {}}));
  c.stabilize();
  CHECK(c.node(1).status().conf.voters.size() == 5);
}

TEST_CASE("a learner receives the log but does not count towards commitment", "[raft][6]") {
  cluster c({1, 2, 3}, {4});
  c.elect(1);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  CHECK(c.app(4).applied_data() == std::vector<bytes>{"x"});
  // Two voters down: the learner's acknowledgement does not make a majority.
  c.crash(2);
  c.crash(3);
  const std::uint64_t committed = c.node(1).status().committed;
  REQUIRE(!c.node(1).propose("y"));
  c.stabilize();
  CHECK(c.node(1).status().committed == committed);
  CHECK(c.node(4).status().last_index == c.node(1).status().last_index);
}

TEST_CASE("a learner is added with add_learner_node and promoted with add_node", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.add_empty_node(4);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_learner_node, 4, {}}));
  c.stabilize();
  c.tick_all(2);
  CHECK(has(c.node(1).status().conf.learners, 4));
  CHECK_FALSE(has(c.node(1).status().conf.voters, 4));
  auto progress = c.node(1).status().progress;
  auto it = std::find_if(progress.begin(), progress.end(), [](auto& p) { return p.id == 4; });
  REQUIRE(it != progress.end());
  CHECK(it->learner);
  CHECK(it->match == c.node(1).status().last_index);
  // A learner cannot campaign...
  c.node(4).campaign();
  CHECK(c.node(4).status().soft.role == role::follower);
  // ...until it is promoted.
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 4, {}}));
  c.stabilize();
  c.tick_all(2);
  CHECK(has(c.node(4).status().conf.voters, 4));
  CHECK(c.node(4).status().conf.learners.empty());
}

TEST_CASE("a voter cannot be demoted by add_learner_node", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  CHECK(c.node(1).propose_conf_change({conf_change_type::add_learner_node, 2, {}}) ==
        raftsync::errc::proposal_dropped);
}

TEST_CASE("a removed follower stops receiving the log and the quorum shrinks", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::remove_node, 3, {}}));
  c.stabilize();
  c.tick_all(2);
  CHECK(c.node(1).status().conf.voters == std::vector<node_id>{1, 2});
  // {1,2}: quorum 2. Node 3 is gone; 1 and 2 still commit.
  c.crash(3);
  REQUIRE(!c.node(1).propose("after-removal"));
  c.stabilize();
  CHECK(c.app(2).applied_data().back() == "after-removal");
}

TEST_CASE("a leader that removes itself steps down once the change is committed", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::remove_node, 1, {}}));
  c.stabilize();
  CHECK(c.node(1).status().soft.role == role::follower);
  CHECK(c.node(2).status().conf.voters == std::vector<node_id>{2, 3});
  // The remaining two elect a leader among themselves; node 1 never campaigns again.
  for (int i = 0; i < 100 && (c.leader() == no_node || c.leader() == 1); ++i)
    c.tick_all();
  const node_id leader = c.leader();
  CHECK((leader == 2 || leader == 3));
  c.node(1).campaign();
  CHECK(c.node(1).status().soft.role == role::follower);
}

TEST_CASE("the last voter cannot be removed", "[raft][6]") {
  cluster c({1});
  c.elect(1);
  CHECK(c.node(1).propose_conf_change({conf_change_type::remove_node, 1, {}}) ==
        raftsync::errc::proposal_dropped);
}

TEST_CASE("a node does not campaign while a committed membership change is unapplied",
          "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.add_empty_node(4);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 4, {}}));
  // Deliver the append and its commit to node 2 but do not let node 2's application apply it.
  c.stabilize();
  // Node 2 applied it already through the helper; rebuild it with applied behind commit.
  app_node& a = c.app(2);
  config cfg = a.cfg;
  cfg.applied = 0;
  auto restarted = raw_node::create(cfg, a.storage);
  REQUIRE(restarted);
  restarted->campaign();
  CHECK(restarted->status().soft.role == role::follower);
}

TEST_CASE("a restarted node replays applied membership changes from its log", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.add_empty_node(4);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 4, {}}));
  c.stabilize();
  // A restart that tells the core everything was applied (config::applied) must come up with
  // the membership as of that index, although storage only holds the bootstrap membership.
  app_node& a = c.app(2);
  CHECK(a.storage.load_initial_state()->conf.voters.size() == 3);
  config cfg = a.cfg;
  cfg.applied = a.applied.size();
  auto restarted = raw_node::create(cfg, a.storage);
  REQUIRE(restarted);
  restarted->check_invariants();
  CHECK(has(restarted->status().conf.voters, 4));
}

TEST_CASE("conf_change entries are applied in log order on every node", "[raft][6]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.add_empty_node(4);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_learner_node, 4, {}}));
  c.stabilize();
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::remove_node, 4, {}}));
  c.stabilize();
  for (node_id id : {1, 2, 3}) {
    CHECK(c.node(id).status().conf.learners.empty());
    CHECK(c.node(id).status().conf.voters.size() == 3);
  }
}
