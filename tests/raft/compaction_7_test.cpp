// Raft §7 — log compaction and snapshots (metadata in the message, data streamed by the app).
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("a follower behind the compacted log is sent a snapshot message with metadata",
          "[raft][7]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.crash(3);
  for (int i = 0; i < 10; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  c.stabilize();
  const std::uint64_t applied = c.app(1).applied.size();
  c.compact(1, applied);
  CHECK(c.node(1).status().first_index == applied + 1);
  c.restart(3);
  c.hold_snapshots = true;
  c.tick_all(3);
  REQUIRE(c.held_snapshots.size() == 1);
  const message& snap = c.held_snapshots[0];
  CHECK(snap.to == 3);
  CHECK(snap.snapshot.index == applied);
  CHECK(snap.snapshot.term == c.node(1).status().hard.term);
  CHECK(snap.snapshot.conf.voters == std::vector<node_id>{1, 2, 3});
  // While the snapshot is being streamed, the leader sends nothing else to node 3.
  auto progress = c.node(1).status().progress;
  auto it = std::find_if(progress.begin(), progress.end(), [](auto& p) { return p.id == 3; });
  REQUIRE(it != progress.end());
  CHECK(it->state == progress_state::snapshot);
  // The data arrives; the message is stepped; the leader is told it succeeded.
  c.hold_snapshots = false;
  c.deliver(snap);
  c.stabilize();
  CHECK(c.node(3).status().first_index == applied + 1);
  CHECK(c.app(3).applied_data() == c.app(1).applied_data());
  CHECK(c.app(3).storage.snapshot().index == applied);
  // Replication resumes normally after the snapshot.
  REQUIRE(!c.node(1).propose("after"));
  c.stabilize();
  CHECK(c.app(3).applied_data().back() == "after");
  progress = c.node(1).status().progress;
  it = std::find_if(progress.begin(), progress.end(), [](auto& p) { return p.id == 3; });
  CHECK(it->state == progress_state::replicate);
}

TEST_CASE("a failed snapshot send makes the leader probe the follower again", "[raft][7]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.crash(3);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  c.stabilize();
  c.compact(1, c.app(1).applied.size());
  c.restart(3);
  c.hold_snapshots = true;
  c.tick_all(3);
  REQUIRE(c.held_snapshots.size() == 1);
  c.node(1).report_snapshot(3, false);
  c.node(1).check_invariants();
  auto progress = c.node(1).status().progress;
  auto it = std::find_if(progress.begin(), progress.end(), [](auto& p) { return p.id == 3; });
  CHECK(it->state == progress_state::probe);
  // The next heartbeat response triggers a new attempt, which succeeds.
  c.held_snapshots.clear();
  c.hold_snapshots = false;
  c.tick_all(3);
  CHECK(c.app(3).applied_data() == c.app(1).applied_data());
}

TEST_CASE("a snapshot older than the follower's commit index is ignored", "[raft][7]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(!c.node(1).propose("x"));
  c.stabilize();
  const auto before = c.node(2).status();
  auto m = make_message(message_type::snapshot, 1, 2, before.hard.term);
  m.snapshot = snapshot_metadata{1, 1, {{1, 2, 3}, {}}};
  REQUIRE(!c.node(2).step(m));
  c.node(2).check_invariants();
  auto rd = c.node(2).ready();
  CHECK(rd.snapshot.empty());
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].type == message_type::append_response);
  CHECK(rd.messages[0].index == before.committed);
}

TEST_CASE("a restarted node with a compacted log resumes from its snapshot", "[raft][7]") {
  cluster c({1, 2, 3});
  c.elect(1);
  for (int i = 0; i < 6; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  c.stabilize();
  c.tick_all(2);
  c.compact(2, c.app(2).applied.size() - 2);
  c.crash(2);
  c.restart(2);
  const auto st = c.node(2).status();
  CHECK(st.first_index == c.app(2).storage.snapshot().index + 1);
  CHECK(st.applied == c.app(2).storage.snapshot().index);
  c.stabilize();  // the restart re-applies the two entries after the snapshot
  CHECK(c.app(2).applied_data() == c.app(1).applied_data());
}

TEST_CASE("a node added after compaction is brought up by a snapshot", "[raft][7]") {
  cluster c({1, 2, 3});
  c.elect(1);
  for (int i = 0; i < 4; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  c.stabilize();
  c.compact(1, c.app(1).applied.size());
  c.add_empty_node(4);
  REQUIRE(!c.node(1).propose_conf_change({conf_change_type::add_node, 4, {}}));
  c.stabilize();
  c.tick_all(3);
  CHECK(c.node(4).status().conf.voters.size() == 4);
  CHECK(c.app(4).applied_data() == c.app(1).applied_data());
}
