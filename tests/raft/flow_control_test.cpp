// Flow control: in-flight caps by count and bytes, per-message byte cap, proposal budget.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

namespace {
std::size_t appends_to(const std::vector<message>& msgs, node_id to) {
  std::size_t n = 0;
  for (const auto& m : msgs)
    if (m.type == message_type::append && m.to == to) ++n;
  return n;
}
progress_status progress_of(raw_node& n, node_id id) {
  for (const auto& p : n.status().progress)
    if (p.id == id) return p;
  FAIL("no progress for node");
  return {};
}
}  // namespace

TEST_CASE("the leader pipelines at most inflight_msgs_max unacknowledged appends",
          "[raft][flow_control]") {
  cluster c({1, 2}, {}, [](config& cfg) { cfg.inflight_msgs_max = 3; });
  c.elect(1);
  REQUIRE(progress_of(c.node(1), 2).state == progress_state::replicate);
  for (int i = 0; i < 10; ++i)
    REQUIRE(!c.node(1).propose("p" + std::to_string(i)));
  auto msgs = c.take_messages();
  CHECK(appends_to(msgs, 2) == 3);
  CHECK(progress_of(c.node(1), 2).inflight_msgs == 3);
  // Acknowledgements free the window in order and the rest follows.
  for (auto& m : msgs)
    c.deliver(m);
  c.stabilize();
  CHECK(c.app(2).storage.last_index() == c.node(1).status().last_index);
  CHECK(progress_of(c.node(1), 2).inflight_msgs == 0);
}

TEST_CASE("the leader stops sending once inflight_bytes_max bytes are unacknowledged",
          "[raft][flow_control]") {
  cluster c({1, 2}, {}, [](config& cfg) { cfg.inflight_bytes_max = 1000; });
  c.elect(1);
  const bytes payload(400, 'x');  // 424 bytes per entry with overhead
  for (int i = 0; i < 10; ++i)
    REQUIRE(!c.node(1).propose(payload));
  auto msgs = c.take_messages();
  // 424, 848 < 1000, 1272 >= 1000: the third message fills the window.
  CHECK(appends_to(msgs, 2) == 3);
  for (auto& m : msgs)
    c.deliver(m);
  c.stabilize();
  CHECK(c.app(2).applied_data().size() == 10);
}

TEST_CASE("an append carries at most msg_bytes_max bytes but always at least one entry",
          "[raft][flow_control]") {
  cluster c({1, 2}, {}, [](config& cfg) { cfg.msg_bytes_max = 200; });
  c.elect(1);
  c.isolate(2);
  for (int i = 0; i < 6; ++i)
    REQUIRE(!c.node(1).propose(bytes(50, 'a')));  // 74 bytes each
  REQUIRE(!c.node(1).propose(bytes(1000, 'b')));  // alone too big
  c.stabilize();
  c.heal();
  // Node 2 must be probed and then caught up in capped messages.
  std::vector<std::size_t> sizes;
  c.drop = [&](const message& m) {
    if (m.type == message_type::append && m.to == 2 && !m.entries.empty()) {
      std::uint64_t bytes_total = 0;
      for (const auto& e : m.entries)
        bytes_total += entry_size_bytes(e);
      if (m.entries.size() > 1) CHECK(bytes_total <= 200);
      sizes.push_back(m.entries.size());
    }
    return false;
  };
  c.tick_all(3);
  CHECK(c.app(2).applied_data().size() == 7);
  REQUIRE(!sizes.empty());
  CHECK(std::find(sizes.begin(), sizes.end(), 1u) != sizes.end());
}

TEST_CASE("uncommitted_bytes_max refuses proposals beyond the uncommitted budget",
          "[raft][flow_control]") {
  cluster c({1, 2, 3}, {}, [](config& cfg) { cfg.uncommitted_bytes_max = 100; });
  c.elect(1);
  c.crash(2);
  c.crash(3);
  REQUIRE(!c.node(1).propose(bytes(60, 'a')));
  CHECK(c.node(1).propose(bytes(60, 'b')) == raftsync::errc::proposal_dropped);
  CHECK(c.node(1).propose(bytes(101, 'c')) == raftsync::errc::too_large);
  // Once entries commit and apply, the budget frees up.
  c.restart(2);
  c.tick_all(3);
  CHECK(!c.node(1).propose(bytes(60, 'd')));
}

TEST_CASE("committed_bytes_max_per_ready bounds the committed entries of one ready",
          "[raft][flow_control]") {
  cluster c({1}, {}, [](config& cfg) { cfg.committed_bytes_max_per_ready = 300; });
  c.elect(1);
  for (int i = 0; i < 10; ++i)
    REQUIRE(!c.node(1).propose(bytes(100, 'z')));
  std::size_t readies = 0;
  while (c.node(1).has_ready()) {
    auto rd = c.node(1).ready();
    std::uint64_t total = 0;
    for (const auto& e : rd.committed_entries)
      total += entry_size_bytes(e);
    if (rd.committed_entries.size() > 1) CHECK(total <= 300);
    REQUIRE(!c.app(1).storage.append(rd.entries));
    if (rd.hard) c.app(1).storage.set_hard_state(*rd.hard);
    c.node(1).advance(rd);
    c.node(1).check_invariants();
    ++readies;
  }
  CHECK(readies >= 4);
  CHECK(c.node(1).status().applied == c.node(1).status().last_index);
}

TEST_CASE("an unreachable follower drops back to probing", "[raft][flow_control]") {
  cluster c({1, 2, 3});
  c.elect(1);
  REQUIRE(progress_of(c.node(1), 2).state == progress_state::replicate);
  c.node(1).report_unreachable(2);
  c.node(1).check_invariants();
  CHECK(progress_of(c.node(1), 2).state == progress_state::probe);
  c.tick_all(2);
  CHECK(progress_of(c.node(1), 2).state == progress_state::replicate);
}

TEST_CASE("a probing follower gets one append at a time", "[raft][flow_control]") {
  cluster c({1, 2, 3});
  c.elect(1);
  c.node(1).report_unreachable(2);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("p"));
  auto msgs = c.take_messages();
  CHECK(appends_to(msgs, 2) == 1);
  CHECK(appends_to(msgs, 3) == 5);
  for (auto& m : msgs)
    c.deliver(m);
  c.stabilize();
  CHECK(c.app(2).applied_data().size() == 5);
}

TEST_CASE("the inflights ring frees acknowledged messages and caps by count and bytes",
          "[raft][flow_control]") {
  inflights in(3, 100);
  in.add(1, 10);
  in.add(2, 10);
  CHECK_FALSE(in.full());
  in.add(5, 10);
  CHECK(in.full());
  in.free_le(2);
  CHECK(in.count() == 1);
  CHECK(in.size_bytes() == 10);
  CHECK_FALSE(in.full());
  in.add(6, 90);
  CHECK(in.full());  // by bytes
  in.free_le(6);
  CHECK(in.count() == 0);
  for (std::uint64_t i = 10; i < 100; ++i) {  // wrap around many times
    in.add(i, 1);
    in.free_le(i);
    in.check_invariants();
  }
}
