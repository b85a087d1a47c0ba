// Raft §5.3 — log replication.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("the leader replicates proposals and every node applies them in order", "[raft][5.3]") {
  cluster c({1, 2, 3});
  c.elect(1);
  for (int i = 0; i < 20; ++i)
    REQUIRE(!c.node(1).propose("cmd" + std::to_string(i)));
  c.stabilize();
  for (node_id id : c.ids()) {
    const auto data = c.app(id).applied_data();
    REQUIRE(data.size() == 20);
    for (int i = 0; i < 20; ++i)
      CHECK(data[static_cast<std::size_t>(i)] == "cmd" + std::to_string(i));
  }
}

TEST_CASE("a follower forwards a proposal to the leader", "[raft][5.3]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(3).propose("from-follower"));
  auto msgs = c.take_messages();
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].type == message_type::propose);
  CHECK(msgs[0].to == 1);
  for (auto& m : msgs)
    c.deliver(m);
  c.stabilize();
  for (node_id id : c.ids())
    CHECK(c.app(id).applied_data() == std::vector<bytes>{"from-follower"});
}

TEST_CASE("a proposal is dropped when no leader is known", "[raft][5.3]") {
  cluster c({1, 2, 3});
  CHECK(c.node(2).propose("x") == raftsync::errc::proposal_dropped);
}

TEST_CASE("a follower rejects an append whose previous entry does not match", "[raft][5.3]") {
  memory_storage s;
  s.bootstrap({{1, 2}, {}});
  auto n = raw_node::create(test_config(2), s);
  REQUIRE(n);
  auto app = make_message(message_type::append, 1, 2, 1);
  app.index = 5;  // the follower has no entry 5
  app.log_term = 1;
  app.entries.push_back(entry{1, 6, entry_type::normal, "x"});
  REQUIRE(!n->step(app));
  n->check_invariants();
  auto rd = n->ready();
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].type == message_type::append_response);
  CHECK(rd.messages[0].reject);
  CHECK(rd.messages[0].index == 5);
  CHECK(rd.messages[0].reject_hint == 0);  // its log ends at 0
  CHECK(rd.entries.empty());
}

TEST_CASE("a follower deletes a conflicting suffix and appends the leader's entries",
          "[raft][5.3]") {
  memory_storage s;
  s.bootstrap({{1, 2}, {}});
  REQUIRE(!s.append({entry{1, 1, entry_type::normal, "a"}, entry{1, 2, entry_type::normal, "b"},
                     entry{2, 3, entry_type::normal, "stale"}}));
  s.set_hard_state({2, 0, 1});
  auto n = raw_node::create(test_config(2), s);
  REQUIRE(n);
  auto app = make_message(message_type::append, 1, 2, 3);
  app.index = 2;
  app.log_term = 1;
  app.commit = 3;
  app.entries.push_back(entry{3, 3, entry_type::normal, "new"});
  app.entries.push_back(entry{3, 4, entry_type::normal, "newer"});
  REQUIRE(!n->step(app));
  n->check_invariants();
  auto rd = n->ready();
  REQUIRE(rd.entries.size() == 2);
  CHECK(rd.entries[0].data == "new");
  REQUIRE(!s.append(rd.entries));
  CHECK(s.last_index() == 4);
  CHECK(*s.term(3) == 3);
  REQUIRE(rd.messages.size() == 1);
  CHECK_FALSE(rd.messages[0].reject);
  CHECK(rd.messages[0].index == 4);
  REQUIRE(rd.hard);
  CHECK(rd.hard->commit == 3);
  n->advance(rd);
  n->check_invariants();
}

TEST_CASE("fast backtracking repairs a long divergent follower log in a few round trips",
          "[raft][5.3]") {
  // Without check-quorum the followers grant votes right away (no leader lease to wait out).
  cluster c({1, 2, 3}, {}, [](config& cfg) { cfg.check_quorum = false; });
  c.elect(1);
  // Node 3 is cut off; node 1 keeps appending entries it will never commit.
  c.isolate(2);
  c.isolate(3);
  for (int i = 0; i < 50; ++i)
    REQUIRE(!c.node(1).propose("lost" + std::to_string(i)));
  c.stabilize();
  c.heal();
  c.isolate(1);
  // Nodes 2 and 3 elect a new leader and commit many entries of a newer term.
  c.elect(2);
  for (int i = 0; i < 50; ++i)
    REQUIRE(!c.node(2).propose("kept" + std::to_string(i)));
  c.stabilize();
  c.heal();
  // Node 1 rejoins: count append rejections while the new leader repairs its log.
  std::size_t rejections = 0;
  c.drop = [&](const message& m) {
    if (m.type == message_type::append_response && m.reject) ++rejections;
    return false;
  };
  c.tick_all(3);
  c.stabilize();
  CHECK(rejections <= 3);  // one per conflicting term, not one per entry
  CHECK(c.app(1).applied_data() == c.app(2).applied_data());
  CHECK(c.app(1).applied_data().size() == 50);
  CHECK(c.app(1).applied_data().front() == "kept0");
}

TEST_CASE("a leader commits an entry once a majority stores it, and followers learn the commit",
          "[raft][5.3]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const std::uint64_t before = c.node(1).status().committed;
  c.crash(3);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  CHECK(c.node(1).status().committed == before + 1);
  c.tick_all(2);  // heartbeats carry the commit index
  CHECK(c.node(2).status().committed == before + 1);
  CHECK(c.app(2).applied_data() == std::vector<bytes>{"x"});
}

TEST_CASE("an entry is not committed without a majority", "[raft][5.3]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const std::uint64_t before = c.node(1).status().committed;
  c.crash(2);
  c.crash(3);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  CHECK(c.node(1).status().committed == before);
  CHECK(c.app(1).applied_data().empty());
}

TEST_CASE("a crashed follower restarts from storage and catches up", "[raft][5.3]") {
  cluster c({1, 2, 3});
  c.elect(1);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("a" + std::to_string(i)));
  c.stabilize();
  c.crash(3);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("b" + std::to_string(i)));
  c.stabilize();
  c.restart(3);
  CHECK(c.node(3).status().hard.term == c.node(1).status().hard.term);
  c.tick_all(3);
  CHECK(c.app(3).applied_data().size() == 10);
  CHECK(c.app(3).applied_data() == c.app(1).applied_data());
}

TEST_CASE("a restarted node re-delivers committed entries after config::applied", "[raft][5.3]") {
  cluster c({1});
  c.elect(1);
  for (int i = 0; i < 4; ++i)
    REQUIRE(!c.node(1).propose("e" + std::to_string(i)));
  c.stabilize();
  const std::uint64_t last = c.node(1).status().last_index;
  app_node& a = c.app(1);
  config cfg = a.cfg;
  cfg.applied = last - 2;
  auto n = raw_node::create(cfg, a.storage);
  REQUIRE(n);
  n->check_invariants();
  auto rd = n->ready();
  REQUIRE(rd.committed_entries.size() == 2);
  CHECK(rd.committed_entries[0].index == last - 1);
  CHECK(rd.committed_entries[1].data == "e3");
}

TEST_CASE("ready asks for persistence before sending and must_sync reflects what changed",
          "[raft][5.3]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.stabilize();
  REQUIRE(!c.node(1).propose("x"));
  auto rd = c.node(1).ready();
  CHECK(rd.entries.size() == 1);
  CHECK(rd.must_sync);
  CHECK(rd.messages.size() == 2);
  REQUIRE(!c.app(1).storage.append(rd.entries));
  c.node(1).advance(rd);
  c.node(1).check_invariants();
  CHECK_FALSE(c.node(1).has_ready());
}

TEST_CASE("leader commits preceding entries from earlier terms", "[raft][5.3]") {
  // Entries of term 1 that never committed are committed, with the new leader's no-op, once the
  // no-op is replicated on a majority (Raft §5.3/§5.4.2).
  cluster c({1, 2, 3}, {}, [](config& cfg) { cfg.check_quorum = false; });
  c.elect(1);
  const std::uint64_t committed = c.node(1).status().committed;
  c.isolate(3);
  c.drop = [](const message& m) { return m.type == message_type::append_response; };
  for (int i = 0; i < 3; ++i)
    REQUIRE(!c.node(1).propose("old" + std::to_string(i)));
  c.stabilize();
  // Node 2 stored the entries but its acknowledgements were lost: nothing new committed.
  CHECK(c.node(1).status().committed == committed);
  CHECK(c.node(2).status().last_index == committed + 3);
  c.drop = nullptr;
  c.heal();
  c.isolate(1);
  c.elect(2);
  c.heal();
  c.tick_all(3);
  for (node_id id : c.ids()) {
    CHECK(c.app(id).applied_data() == std::vector<bytes>{"old0", "old1", "old2"});
    CHECK(c.app(id).applied.back().term == c.node(2).status().hard.term);
  }
}
