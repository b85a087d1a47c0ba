// A voter that loses its state (a replaced or wiped disk) and restarts under its old id. Raft
// assumes durable logs and votes, so this is only safe through a membership change (remove the
// node, add it again, start it with --join: docs/user-guide.md); what the core does guarantee is
// that such a follower is not stuck (found by the chaos harness, docs/reliability.md bug 5).
#include <catch2/catch.hpp>

#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

TEST_CASE("a leader resends from the start to a follower whose log became empty",
          "[raft][5.3][lost-state]") {
  const conf_state initial{{1, 2, 3}, {}};
  cluster c({1, 2, 3});
  c.elect(1);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("a" + std::to_string(i)));
  c.stabilize();
  REQUIRE(c.node(1).status().progress.size() == 3);
  // Node 3 restarts with an empty disk while node 1 keeps leading: the leader's record of what
  // node 3 holds is now wrong, and node 3 rejects every append that builds on it.
  c.wipe(3, initial);
  for (int i = 0; i < 5; ++i)
    REQUIRE(!c.node(1).propose("b" + std::to_string(i)));
  c.stabilize();
  c.tick_all(5);
  CHECK(c.leader() == 1);
  CHECK(c.app(3).applied_data() == c.app(1).applied_data());
  CHECK(c.app(3).applied_data().size() == 10);
  CHECK(c.node(3).status().committed == c.node(1).status().committed);
}
