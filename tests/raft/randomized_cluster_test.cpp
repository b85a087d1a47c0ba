// Randomized runs of the small test cluster: faults (drop, reorder, duplicate, isolation,
// crash-restart), proposals, membership changes, transfers, compaction and reads, with election
// safety checked after every step and state machine safety after every delivery burst.
// Liveness is checked once the faults heal. (The full-scale simulation with its own checkers
// is tests/sim/.) RAFTSYNC_RAFT_SEEDS=N runs N seeds (default 300); RAFTSYNC_RAFT_SEED=S
// replays one seed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "raftsync/raft/random.hpp"
#include "test_cluster.hpp"

using namespace raftsync::raft;
using namespace raftsync::raft::testing;

namespace {

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

void run_seed(std::uint64_t seed) {
  random_generator rng(seed);
  const std::size_t size = rng.uniform(2) == 0 ? 3 : 5;
  std::vector<node_id> voters;
  for (node_id id = 1; id <= size; ++id)
    voters.push_back(id);
  const bool pre_vote = rng.uniform(4) != 0;
  const bool check_quorum = rng.uniform(4) != 0;
  const std::uint64_t msg_bytes = 64 + rng.uniform(512);
  const auto inflight = static_cast<std::uint32_t>(1 + rng.uniform(8));
  cluster c(voters, {}, [&](config& cfg) {
    cfg.random_seed = seed * 1000 + cfg.id;
    cfg.pre_vote = pre_vote;
    cfg.check_quorum = check_quorum;
    cfg.msg_bytes_max = msg_bytes;
    cfg.inflight_msgs_max = inflight;
  });
  const std::uint64_t drop_pct = rng.uniform(15);
  c.pick = [&](std::size_t n) { return rng.uniform(3) == 0 ? rng.uniform(n) : 0; };
  c.drop = [&](const message&) { return rng.uniform(100) < drop_pct; };
  c.duplicate = [&](const message&) { return rng.uniform(100) < 2; };
  std::map<std::uint64_t, node_id> leaders;  // election safety: one leader per term
  c.after_step = [&] {
    for (node_id id : c.ids()) {
      if (c.app(id).down) continue;
      const auto st = c.node(id).status();
      if (st.soft.role != role::leader) continue;
      auto [it, inserted] = leaders.emplace(st.hard.term, id);
      INFO("term " << st.hard.term);
      REQUIRE(it->second == id);
    }
  };

  node_id crashed = no_node;
  node_id next_id = static_cast<node_id>(size + 1);
  int proposal = 0;
  for (int step = 0; step < 400; ++step) {
    const std::vector<node_id> ids = c.ids();
    const node_id some = ids[rng.uniform(ids.size())];
    const node_id leader = c.leader();
    const std::uint64_t action = rng.uniform(100);
    if (action < 45) {
      c.tick(some);
    } else if (action < 65) {
      if (!c.app(some).down)
        (void)c.node(some).propose("s" + std::to_string(seed) + "-" + std::to_string(proposal++));
    } else if (action < 68) {
      c.isolate(some);
    } else if (action < 72) {
      c.heal();
    } else if (action < 74) {
      if (crashed == no_node) {
        crashed = some;
        c.crash(some);
      }
    } else if (action < 77) {
      if (crashed != no_node) {
        c.restart(crashed);
        crashed = no_node;
      }
    } else if (action < 79) {
      if (leader != no_node) (void)c.node(leader).transfer_leadership(some);
    } else if (action < 81) {
      app_node& a = c.app(some);
      const std::uint64_t applied = a.applied.size();
      if (!a.down && applied > a.storage.snapshot().index + 2) c.compact(some, applied - 1);
    } else if (action < 83) {
      if (leader != no_node && next_id < 9) {
        c.add_empty_node(next_id);
        const auto type =
            rng.uniform(2) == 0 ? conf_change_type::add_node : conf_change_type::add_learner_node;
        (void)c.node(leader).propose_conf_change({type, next_id, {}});
        ++next_id;
      }
    } else if (action < 84) {
      if (leader != no_node) {
        const auto conf = c.node(leader).status().conf;
        if (conf.voters.size() > 3) {
          const node_id victim = conf.voters[rng.uniform(conf.voters.size())];
          (void)c.node(leader).propose_conf_change({conf_change_type::remove_node, victim, {}});
        } else if (!conf.learners.empty()) {
          (void)c.node(leader).propose_conf_change(
              {conf_change_type::add_node, conf.learners.front(), {}});
        }
      }
    } else if (action < 88) {
      if (!c.app(some).down) c.node(some).read_index("r" + std::to_string(step));
    } else {
      const std::uint64_t burst = rng.uniform(12);
      for (std::uint64_t i = 0; i < burst && c.deliver_one(); ++i) {
      }
      c.check_state_machine_safety();
    }
  }

  // Heal everything: a leader must emerge and every member must converge.
  c.heal();
  c.drop = nullptr;
  c.pick = nullptr;
  c.duplicate = nullptr;
  if (crashed != no_node) c.restart(crashed);
  c.stabilize();
  // Liveness: within a bounded number of ticks there is a leader, a fresh proposal commits,
  // and every member has applied the same sequence.
  node_id leader = no_node;
  bool converged = false;
  int attempt = 0;
  for (int round = 0; round < 400 && !converged; ++round) {
    c.tick_all();
    leader = c.leader();
    if (leader == no_node) continue;
    const auto data = c.app(leader).applied_data();
    const bool has_final = std::any_of(data.begin(), data.end(),
                                       [](const bytes& d) { return d.rfind("final", 0) == 0; });
    if (!has_final) {
      if (round % 20 == 0) (void)c.node(leader).propose("final" + std::to_string(attempt++));
      continue;
    }
    const auto conf = c.node(leader).status().conf;
    converged = true;
    for (node_id id : conf.voters)
      converged = converged && c.app(id).applied_data() == data;
    for (node_id id : conf.learners)
      converged = converged && c.app(id).applied_data() == data;
  }
  if (!converged && leader != no_node) {
    const auto conf = c.node(leader).status().conf;
    const auto expected = c.app(leader).applied_data();
    for (node_id id : c.ids()) {
      const auto st = c.node(id).status();
      std::fprintf(stderr,
                   "node %llu: term %llu role %d lead %llu commit %llu applied %llu last %llu "
                   "first %llu down %d\n",
                   static_cast<unsigned long long>(id),
                   static_cast<unsigned long long>(st.hard.term), static_cast<int>(st.soft.role),
                   static_cast<unsigned long long>(st.soft.leader),
                   static_cast<unsigned long long>(st.committed),
                   static_cast<unsigned long long>(st.applied),
                   static_cast<unsigned long long>(st.last_index),
                   static_cast<unsigned long long>(st.first_index), c.app(id).down ? 1 : 0);
    }
    for (const auto& p : c.node(leader).status().progress)
      std::fprintf(
          stderr, "  leader %llu: progress %llu match %llu next %llu state %d inflight %u\n",
          static_cast<unsigned long long>(leader), static_cast<unsigned long long>(p.id),
          static_cast<unsigned long long>(p.match), static_cast<unsigned long long>(p.next),
          static_cast<int>(p.state), p.inflight_msgs);
  }
  REQUIRE(leader != no_node);
  CHECK(converged);
  c.check_state_machine_safety();
}

}  // namespace

TEST_CASE("randomized clusters stay safe under faults and converge once healed", "[raft][random]") {
  const std::uint64_t only = env_u64("RAFTSYNC_RAFT_SEED", 0);
  const std::uint64_t seeds = env_u64("RAFTSYNC_RAFT_SEEDS", 300);
  for (std::uint64_t seed = only ? only : 1; seed <= (only ? only : seeds); ++seed) {
    INFO("seed " << seed << " (replay with RAFTSYNC_RAFT_SEED=" << seed << ")");
    run_seed(seed);
  }
}
