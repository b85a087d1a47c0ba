// A storage read failure (not compacted/unavailable) halts the node instead of aborting.
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

namespace {
// Delegates to a memory_storage and fails every read of the log once `broken` is set.
class failing_storage final : public storage {
 public:
  memory_storage inner;
  bool broken = false;

  raftsync::result<initial_state> load_initial_state() const override {
    return inner.load_initial_state();
  }
  raftsync::result<std::vector<entry>> entries(std::uint64_t low, std::uint64_t high,
                                               std::uint64_t max_bytes) const override {
    if (broken) return std::make_error_code(std::errc::io_error);
    return inner.entries(low, high, max_bytes);
  }
  raftsync::result<std::uint64_t> term(std::uint64_t index) const override {
    if (broken) return std::make_error_code(std::errc::io_error);
    return inner.term(index);
  }
  std::uint64_t first_index() const override { return inner.first_index(); }
  std::uint64_t last_index() const override { return inner.last_index(); }
  snapshot_metadata snapshot() const override { return inner.snapshot(); }
};
}  // namespace

TEST_CASE("a storage read error halts the node and status reports it", "[raft][halt]") {
  failing_storage s;
  s.inner.bootstrap({{1, 2}, {}});
  REQUIRE(!s.inner.append(
      {entry{1, 1, entry_type::normal, "a"}, entry{1, 2, entry_type::normal, "b"}}));
  s.inner.set_hard_state({1, 0, 0});
  auto n = raw_node::create(test_config(2), s);
  REQUIRE(n);
  CHECK(!n->status().halted);
  s.broken = true;
  auto app = make_message(message_type::append, 1, 2, 1);
  app.index = 1;  // checking entry 1 reads the stable log
  app.log_term = 1;
  CHECK(n->step(app) == std::errc::io_error);
  CHECK(n->status().halted == std::errc::io_error);
  // Halted: further input is refused and time does not move it.
  CHECK(n->step(make_message(message_type::heartbeat, 1, 2, 1)) == raftsync::errc::storage_halted);
  for (int i = 0; i < 100; ++i)
    n->tick();
  CHECK(n->status().soft.role == role::follower);
  CHECK(n->status().hard.term == 1);
  CHECK(n->propose("x") == raftsync::errc::storage_halted);
}
