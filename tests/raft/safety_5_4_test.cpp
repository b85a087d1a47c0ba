// Raft §5.4 — safety: election restriction and the commit rule for earlier terms.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

namespace {
// A node whose storage holds `terms[i]` at index i+1, with hard state term `term`.
raftsync::result<raw_node> node_with_log(memory_storage& s, node_id id, std::vector<node_id> voters,
                                         const std::vector<std::uint64_t>& terms,
                                         std::uint64_t term, std::uint64_t commit,
                                         bool pre_vote = false) {
  s.bootstrap({voters, {}});
  std::vector<entry> ents;
  for (std::size_t i = 0; i < terms.size(); ++i)
    ents.push_back(entry{terms[i], i + 1, entry_type::normal, "e" + std::to_string(i + 1)});
  REQUIRE(!s.append(ents));
  s.set_hard_state({term, no_node, commit});
  config cfg = test_config(id);
  cfg.pre_vote = pre_vote;
  return raw_node::create(cfg, s);
}
}  // namespace

TEST_CASE("a voter refuses a candidate whose log is less up to date", "[raft][5.4]") {
  memory_storage s;
  auto n = node_with_log(s, 1, {1, 2, 3}, {1, 1, 2}, 2, 1);
  REQUIRE(n);
  struct probe {
    std::uint64_t last_index, last_term;
    bool granted;
  };
  const probe cases[] = {
      {3, 1, false},  // older last term
      {2, 2, false},  // same last term, shorter log
      {3, 2, true},   // identical
      {4, 2, true},   // same term, longer
      {1, 3, true},   // newer last term wins regardless of length
  };
  std::uint64_t term = 3;
  for (const auto& p : cases) {
    auto vote = make_message(message_type::vote, 2, 1, term++);
    vote.index = p.last_index;
    vote.log_term = p.last_term;
    REQUIRE(!n->step(vote));
    n->check_invariants();
    auto rd = n->ready();
    REQUIRE(rd.messages.size() == 1);
    CHECK(rd.messages[0].reject == !p.granted);
    if (rd.hard) s.set_hard_state(*rd.hard);
    n->advance(rd);
  }
}

TEST_CASE("a leader does not commit an entry of an earlier term by counting replicas",
          "[raft][5.4]") {
  // Raft Figure 8: entry 2 (term 1) is on a majority, but it may still be overwritten by a
  // leader that does not have it, so the new leader of term 3 must not commit it by counting.
  memory_storage s;
  auto n = node_with_log(s, 1, {1, 2, 3}, {1, 1}, 2, 1);
  REQUIRE(n);
  n->campaign();
  REQUIRE(n->status().soft.role == role::candidate);
  auto grant = make_message(message_type::vote_response, 2, 1, 3);
  REQUIRE(!n->step(grant));
  n->check_invariants();
  REQUIRE(n->status().soft.role == role::leader);
  auto rd = n->ready();
  REQUIRE(!s.append(rd.entries));
  n->advance(rd);
  const std::uint64_t noop = n->status().last_index;
  REQUIRE(noop == 3);

  // Node 2 acknowledges entry 2 (term 1) only: a majority has it, yet it stays uncommitted.
  auto ack = make_message(message_type::append_response, 2, 1, 3);
  ack.index = 2;
  REQUIRE(!n->step(ack));
  n->check_invariants();
  CHECK(n->status().committed == 1);

  // Once the no-op of term 3 is on a majority, it and everything before it commit (§5.4.2).
  ack.index = 3;
  REQUIRE(!n->step(ack));
  n->check_invariants();
  CHECK(n->status().committed == 3);
}

TEST_CASE("leader completeness: the elected leader holds every committed entry", "[raft][5.4]") {
  cluster c({1, 2, 3, 4, 5});
  c.elect(1);
  c.crash(4);
  c.crash(5);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("c" + std::to_string(i)));
  c.stabilize();
  const std::uint64_t committed = c.node(1).status().committed;
  c.crash(1);
  c.restart(4);
  c.restart(5);
  // Whoever wins among 2..5 must have the committed entries: 4 and 5 lack them and cannot win.
  for (int i = 0; i < 100 && (c.leader() == no_node || c.leader() == 1); ++i)
    c.tick_all();
  const node_id leader = c.leader();
  REQUIRE(leader != no_node);
  CHECK((leader == 2 || leader == 3));
  CHECK(c.node(leader).status().last_index >= committed);
  c.tick_all(3);
  for (node_id id : {2, 3, 4, 5})
    CHECK(c.app(id).applied_data().size() == 5);
}

TEST_CASE("committed entries are never lost across leader changes", "[raft][5.4]") {
  cluster c({1, 2, 3});
  std::vector<bytes> acknowledged;
  node_id leader = 1;
  c.elect(leader);
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 3; ++i) {
      const bytes data = "r" + std::to_string(round) + "-" + std::to_string(i);
      REQUIRE(!c.node(leader).propose(data));
      acknowledged.push_back(data);
    }
    c.stabilize();
    // Depose the leader: isolate it until another node wins.
    c.isolate(leader);
    const node_id old = leader;
    for (int i = 0; i < 100 && (c.leader() == no_node || c.leader() == old); ++i) {
      for (node_id id : c.ids())
        if (id != old) c.tick(id);
      c.stabilize();
    }
    c.heal();
    c.tick_all(3);
    leader = c.leader();
    REQUIRE(leader != no_node);
  }
  c.tick_all(3);
  for (node_id id : c.ids())
    CHECK(c.app(id).applied_data() == acknowledged);
}
