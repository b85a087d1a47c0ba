// config::validate() and raw_node::create() refuse invalid configurations.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("the default config with an id is valid", "[raft][config]") {
  config cfg;
  cfg.id = 1;
  CHECK(!cfg.validate());
  CHECK(cfg.pre_vote);
  CHECK(cfg.check_quorum);
}

TEST_CASE("config::validate rejects each invalid field with errc::invalid_config",
          "[raft][config]") {
  const auto broken = [](auto mutate) {
    config cfg;
    cfg.id = 1;
    mutate(cfg);
    return cfg.validate();
  };
  const auto invalid = make_error_code(raftsync::errc::invalid_config);
  CHECK(broken([](config& c) { c.id = no_node; }) == invalid);
  CHECK(broken([](config& c) { c.heartbeat_ticks = 0; }) == invalid);
  CHECK(broken([](config& c) { c.election_ticks = c.heartbeat_ticks; }) == invalid);
  CHECK(broken([](config& c) { c.election_ticks = 0; }) == invalid);
  CHECK(broken([](config& c) { c.inflight_msgs_max = 0; }) == invalid);
  CHECK(broken([](config& c) { c.inflight_bytes_max = 0; }) == invalid);
  CHECK(broken([](config& c) { c.msg_bytes_max = 0; }) == invalid);
  CHECK(broken([](config& c) { c.committed_bytes_max_per_ready = 0; }) == invalid);
  CHECK(broken([](config& c) { c.election_ticks = 0xffffffffu; }) == invalid);
}

TEST_CASE("raw_node::create refuses an invalid config", "[raft][config]") {
  memory_storage s;
  s.bootstrap({{1}, {}});
  config cfg;
  auto n = raw_node::create(cfg, s);
  REQUIRE_FALSE(n);
  CHECK(n.error() == raftsync::errc::invalid_config);
}

TEST_CASE("raw_node::create refuses an applied index beyond the commit index", "[raft][config]") {
  memory_storage s;
  s.bootstrap({{1}, {}});
  config cfg = test_config(1);
  cfg.applied = 5;
  auto n = raw_node::create(cfg, s);
  REQUIRE_FALSE(n);
  CHECK(n.error() == raftsync::errc::invalid_config);
}

TEST_CASE("raw_node::create reports storage whose commit index is beyond its log",
          "[raft][config]") {
  memory_storage s;
  s.bootstrap({{1}, {}});
  s.set_hard_state({1, 1, 7});
  auto n = raw_node::create(test_config(1), s);
  REQUIRE_FALSE(n);
  CHECK(n.error() == raftsync::errc::corrupt);
}

TEST_CASE("step rejects local message types from the network", "[raft][config]") {
  memory_storage s;
  s.bootstrap({{1, 2}, {}});
  auto n = raw_node::create(test_config(1), s);
  REQUIRE(n);
  for (auto t : {message_type::hup, message_type::beat, message_type::snapshot_status,
                 message_type::unreachable}) {
    CHECK(n->step(make_message(t, 2, 1, 0)) == raftsync::errc::malformed);
  }
  CHECK(n->status().soft.role == role::follower);
  CHECK(n->status().hard.term == 0);
}
