// Thesis §6.4 — linearizable reads with ReadIndex.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("the leader answers ReadIndex with its commit index after a heartbeat quorum",
          "[raft][6.4]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  c.node(1).read_index("ctx-1");
  // Not answered before a quorum confirms leadership.
  c.process(1);
  CHECK(c.app(1).reads.empty());
  c.stabilize();
  REQUIRE(c.app(1).reads.size() == 1);
  CHECK(c.app(1).reads[0].context == "ctx-1");
  CHECK(c.app(1).reads[0].index == c.node(1).status().committed);
}

TEST_CASE("a leader without a quorum never answers a ReadIndex", "[raft][6.4]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.isolate(1);
  c.node(1).read_index("stale?");
  c.stabilize();
  c.tick_all(5);
  CHECK(c.app(1).reads.empty());
}

TEST_CASE("a follower's ReadIndex is forwarded to the leader and answered", "[raft][6.4]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  c.node(3).read_index("f");
  c.stabilize();
  REQUIRE(c.app(3).reads.size() == 1);
  CHECK(c.app(3).reads[0].context == "f");
  CHECK(c.app(3).reads[0].index == c.node(1).status().committed);
  CHECK(c.app(1).reads.empty());
}

TEST_CASE("ReadIndex waits until the leader has committed an entry of its term", "[raft][6.4]") {
  memory_storage s;
  s.bootstrap({{1, 2, 3}, {}});
  config cfg = test_config(1);
  cfg.pre_vote = false;
  auto n = raw_node::create(cfg, s);
  REQUIRE(n);
  n->campaign();
  REQUIRE(!n->step(make_message(message_type::vote_response, 2, 1, 1)));
  REQUIRE(n->status().soft.role == role::leader);
  auto rd = n->ready();
  REQUIRE(!s.append(rd.entries));
  n->advance(rd);
  n->check_invariants();
  const std::uint64_t last = n->status().last_index;

  n->read_index("early");
  rd = n->ready();
  // No heartbeat round is started: the leader does not yet know the cluster's commit index.
  for (const auto& m : rd.messages)
    CHECK(m.type != message_type::heartbeat);
  CHECK(rd.read_states.empty());
  n->advance(rd);

  // Node 2 acknowledges the leader's entries: they commit, and the read starts its round.
  auto ack = make_message(message_type::append_response, 2, 1, 1);
  ack.index = last;
  REQUIRE(!n->step(ack));
  n->check_invariants();
  CHECK(n->status().committed == last);
  rd = n->ready();
  bytes context;
  for (const auto& m : rd.messages)
    if (m.type == message_type::heartbeat && m.to == 2) context = m.context;
  REQUIRE(!context.empty());
  REQUIRE(!s.append(rd.entries));
  n->advance(rd);
  auto hb = make_message(message_type::heartbeat_response, 2, 1, 1);
  hb.context = context;
  REQUIRE(!n->step(hb));
  n->check_invariants();
  rd = n->ready();
  REQUIRE(rd.read_states.size() == 1);
  CHECK(rd.read_states[0].context == "early");
  CHECK(rd.read_states[0].index == last);
}

TEST_CASE("a heartbeat response to an older round does not confirm a newer read", "[raft][6.4]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.node(1).read_index("r1");
  auto first = c.take_messages();  // round 1 heartbeats, held back
  c.node(1).read_index("r2");
  auto second = c.take_messages();
  // Answer round 1 only: r1 is confirmed, r2 is not.
  c.drop = [](const message& m) {
    return m.type == message_type::heartbeat && m.context.size() == 8 && m.context[0] == 2;
  };
  for (auto& m : first)
    c.deliver(m);
  c.stabilize();
  REQUIRE(c.app(1).reads.size() == 1);
  CHECK(c.app(1).reads[0].context == "r1");
  c.drop = nullptr;
  for (auto& m : second)
    c.deliver(m);
  c.stabilize();
  REQUIRE(c.app(1).reads.size() == 2);
  CHECK(c.app(1).reads[1].context == "r2");
}

TEST_CASE("a single-voter leader answers ReadIndex at once", "[raft][6.4]") {
  cluster c({1});
  c.elect(1);
  c.node(1).read_index("solo");
  c.process(1);
  REQUIRE(c.app(1).reads.size() == 1);
  CHECK(c.app(1).reads[0].index == c.node(1).status().committed);
}

TEST_CASE("several reads are confirmed by one heartbeat round, in order", "[raft][6.4]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.node(1).read_index("a");
  c.node(1).read_index("b");
  c.node(2).read_index("c");
  c.stabilize();
  REQUIRE(c.app(1).reads.size() == 2);
  CHECK(c.app(1).reads[0].context == "a");
  CHECK(c.app(1).reads[1].context == "b");
  REQUIRE(c.app(2).reads.size() == 1);
}
