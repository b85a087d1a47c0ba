// Raft §5.2 — leader election.
#include <catch2/catch.hpp>

#include <set>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

namespace {
config no_pre_vote(config& c) {
  c.pre_vote = false;
  return c;
}
}  // namespace

TEST_CASE("a single voter elects itself leader when it campaigns", "[raft][5.2]") {
  cluster c({1});
  c.elect(1);
  const auto st = c.node(1).status();
  CHECK(st.hard.term == 1);
  CHECK(st.hard.vote == 1);
  CHECK(st.soft.leader == 1);
}

TEST_CASE("followers elect a leader by themselves after an election timeout", "[raft][5.2]") {
  cluster c({1, 2, 3});
  for (int i = 0; i < 40 && c.leader() == no_node; ++i)
    c.tick_all();
  const node_id leader = c.leader();
  REQUIRE(leader != no_node);
  for (node_id id : c.ids()) {
    CHECK(c.node(id).status().soft.leader == leader);
    CHECK(c.node(id).status().hard.term == c.node(leader).status().hard.term);
  }
}

TEST_CASE("a newly elected leader appends a no-op entry of its term and commits it",
          "[raft][5.2]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const auto st = c.node(1).status();
  auto& applied = c.app(1).applied;
  REQUIRE(!applied.empty());
  CHECK(applied.back().type == entry_type::normal);
  CHECK(applied.back().data.empty());
  CHECK(applied.back().term == st.hard.term);
  CHECK(st.committed == st.last_index);
}

TEST_CASE("a node grants at most one vote per term", "[raft][5.2]") {
  memory_storage s;
  s.bootstrap({{1, 2, 3}, {}});
  config cfg = test_config(1);
  cfg.pre_vote = false;
  auto n = raw_node::create(cfg, s);
  REQUIRE(n);
  auto vote = make_message(message_type::vote, 2, 1, 5);
  REQUIRE(!n->step(vote));
  n->check_invariants();
  auto rd = n->ready();
  REQUIRE(rd.hard);
  CHECK(rd.hard->vote == 2);
  CHECK(rd.must_sync);
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].type == message_type::vote_response);
  CHECK_FALSE(rd.messages[0].reject);
  n->advance(rd);

  auto other = make_message(message_type::vote, 3, 1, 5);
  REQUIRE(!n->step(other));
  n->check_invariants();
  rd = n->ready();
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].reject);
  CHECK(n->status().hard.vote == 2);

  // Asking again (a duplicated request) from the node it voted for is granted again.
  REQUIRE(!n->step(vote));
  rd = n->ready();
  REQUIRE(rd.messages.size() == 1);
  CHECK_FALSE(rd.messages[0].reject);
}

TEST_CASE("a node that sees a higher term becomes a follower in that term", "[raft][5.2]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const std::uint64_t term = c.node(1).status().hard.term;
  auto hb = make_message(message_type::append_response, 2, 1, term + 3);
  REQUIRE(!c.node(1).step(hb));
  c.node(1).check_invariants();
  const auto st = c.node(1).status();
  CHECK(st.soft.role == role::follower);
  CHECK(st.hard.term == term + 3);
  CHECK(st.hard.vote == no_node);
}

TEST_CASE("messages from an older term are ignored", "[raft][5.2]") {
  cluster c({1, 2, 3});
  c.elect(1);
  const auto before = c.node(2).status();
  auto stale = make_message(message_type::vote, 3, 2, before.hard.term - 1);
  stale.index = 100;
  stale.log_term = 100;
  REQUIRE(!c.node(2).step(stale));
  const auto after = c.node(2).status();
  CHECK(after.hard == before.hard);
  CHECK(after.soft == before.soft);
}

TEST_CASE("messages of an older term are counted, so a replaying peer is visible", "[raft][5.2]") {
  cluster c({1, 2, 3}, {}, [](config& cfg) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
  });
  c.elect(1);
  c.elect(2);
  const auto before = c.node(3).status();
  REQUIRE(before.hard.term >= 2);
  REQUIRE(!c.node(3).step(make_message(message_type::append, 1, 3, before.hard.term - 1)));
  REQUIRE(!c.node(3).step(make_message(message_type::vote, 1, 3, before.hard.term - 1)));
  CHECK(c.node(3).status().stale_messages == before.stale_messages + 2);
  // A message of the current term is not stale.
  REQUIRE(!c.node(3).step(make_message(message_type::heartbeat, 2, 3, before.hard.term)));
  CHECK(c.node(3).status().stale_messages == before.stale_messages + 2);
  CHECK(c.node(3).status().hard.term == before.hard.term);
}

TEST_CASE("a candidate that collects a majority of votes becomes leader", "[raft][5.2]") {
  cluster c({1, 2, 3, 4, 5}, {}, [](config& cfg) { no_pre_vote(cfg); });
  // Two nodes are down: three of five votes still elect.
  c.crash(4);
  c.crash(5);
  c.elect(3);
  CHECK(c.node(1).status().soft.leader == 3);
}

TEST_CASE("a candidate without a majority does not become leader and retries with a new term",
          "[raft][5.2]") {
  cluster c({1, 2, 3, 4, 5}, {}, [](config& cfg) { no_pre_vote(cfg); });
  c.crash(3);
  c.crash(4);
  c.crash(5);
  c.node(1).campaign();
  c.stabilize();
  auto st = c.node(1).status();
  CHECK(st.soft.role == role::candidate);
  CHECK(st.hard.term == 1);
  // Still no majority: after another election timeout it campaigns again, in a later term.
  for (int i = 0; i < 30 && c.node(1).status().hard.term == 1; ++i)
    c.tick(1);
  c.stabilize();
  CHECK(c.node(1).status().hard.term >= 2);
  CHECK(c.node(1).status().soft.role == role::candidate);
}

TEST_CASE("a candidate that receives a majority of rejections returns to follower", "[raft][5.2]") {
  memory_storage s;
  s.bootstrap({{1, 2, 3}, {}});
  config cfg = test_config(1);
  cfg.pre_vote = false;
  auto n = raw_node::create(cfg, s);
  REQUIRE(n);
  n->campaign();
  REQUIRE(n->status().soft.role == role::candidate);
  auto rej = make_message(message_type::vote_response, 2, 1, 1);
  rej.reject = true;
  REQUIRE(!n->step(rej));
  n->check_invariants();
  CHECK(n->status().soft.role == role::candidate);  // 1 yes, 1 no, 1 unknown
  rej.from = 3;
  REQUIRE(!n->step(rej));
  n->check_invariants();
  CHECK(n->status().soft.role == role::follower);
  CHECK(n->status().hard.term == 1);
}

TEST_CASE("a candidate steps down when it hears from a leader of its term", "[raft][5.2]") {
  memory_storage s;
  s.bootstrap({{1, 2, 3}, {}});
  config cfg = test_config(1);
  cfg.pre_vote = false;
  auto n = raw_node::create(cfg, s);
  REQUIRE(n);
  n->campaign();
  auto hb = make_message(message_type::heartbeat, 2, 1, 1);
  REQUIRE(!n->step(hb));
  n->check_invariants();
  CHECK(n->status().soft.role == role::follower);
  CHECK(n->status().soft.leader == 2);
}

TEST_CASE("election timeouts are randomized in [election_ticks, 2*election_ticks) per seed",
          "[raft][5.2]") {
  std::set<std::uint32_t> seen;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    memory_storage s;
    s.bootstrap({{1, 2, 3}, {}});
    config cfg = test_config(1);
    cfg.random_seed = seed;
    auto n = raw_node::create(cfg, s);
    REQUIRE(n);
    const std::uint32_t timeout = n->core().randomized_election_timeout();
    CHECK(timeout >= cfg.election_ticks);
    CHECK(timeout < 2 * cfg.election_ticks);
    seen.insert(timeout);
    // Same seed, same timeout: runs replay exactly.
    memory_storage s2;
    s2.bootstrap({{1, 2, 3}, {}});
    auto again = raw_node::create(cfg, s2);
    REQUIRE(again);
    CHECK(again->core().randomized_election_timeout() == timeout);
  }
  CHECK(seen.size() > 5);
}

TEST_CASE("a follower campaigns only after its randomized timeout elapses", "[raft][5.2]") {
  cluster c({1, 2, 3});
  const std::uint32_t timeout = c.node(1).core().randomized_election_timeout();
  c.isolate(2);
  c.isolate(3);
  for (std::uint32_t i = 0; i + 1 < timeout; ++i)
    c.tick(1);
  CHECK(c.node(1).status().soft.role == role::follower);
  c.tick(1);
  CHECK(c.node(1).status().soft.role == role::pre_candidate);
}

TEST_CASE("a learner never campaigns", "[raft][5.2]") {
  cluster c({1, 2}, {3});
  c.crash(1);
  c.crash(2);
  c.tick(3, 100);
  CHECK(c.node(3).status().soft.role == role::follower);
  c.node(3).campaign();
  CHECK(c.node(3).status().soft.role == role::follower);
}

TEST_CASE("a deterministic cluster run replays identically from the same seeds", "[raft][5.2]") {
  auto run = [] {
    cluster c({1, 2, 3, 4, 5});
    for (int i = 0; i < 60; ++i)
      c.tick_all();
    std::vector<std::uint64_t> out;
    for (node_id id : c.ids()) {
      const auto st = c.node(id).status();
      out.push_back(st.hard.term);
      out.push_back(st.soft.leader);
      out.push_back(st.last_index);
    }
    out.push_back(c.delivered);
    return out;
  };
  CHECK(run() == run());
}
