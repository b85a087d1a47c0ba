// Proof that the simulation's checkers catch a broken core, end to end.
//
// This file is only built by tests/sim/CMakeLists.txt as test-only executables, each compiled with
// one RAFTSYNC_TEST_ONLY_BREAK_* definition; the core header (include/raftsync/raft/raft.hpp)
// then breaks one safety rule:
//   RAFTSYNC_TEST_ONLY_BREAK_COMMIT_RULE  the leader commits an entry of an earlier term by
//                                         counting replicas (violates Raft §5.4.2, Figure 8)
//   RAFTSYNC_TEST_ONLY_BREAK_VOTE_RULE    a follower grants a second vote in one term (§5.2)
// The test passes iff the simulation reports a violation with its seed (ctest also matches the
// report with PASS_REGULAR_EXPRESSION). These definitions are never set on targets users build.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "sim_cluster.hpp"

#if !defined(RAFTSYNC_TEST_ONLY_BREAK_COMMIT_RULE) && !defined(RAFTSYNC_TEST_ONLY_BREAK_VOTE_RULE)
#error "build this file only with one RAFTSYNC_TEST_ONLY_BREAK_* definition"
#endif

namespace {

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' ? fallback : std::strtoull(v, nullptr, 10);
}

}  // namespace

TEST_CASE("the simulation reports a deliberately broken safety rule with its seed", "[sim]") {
#if defined(RAFTSYNC_TEST_ONLY_BREAK_COMMIT_RULE)
  const char* rule = "commit rule (Raft 5.4.2)";
  auto run = [](std::uint64_t seed) { return raftsync::sim::run_figure8_scenario(seed); };
  const std::uint64_t max_seeds = 20;
#else
  const char* rule = "vote rule (Raft 5.2)";
  auto run = [](std::uint64_t seed) {
    raftsync::sim::scenario_options o;
    o.seed = seed;
    return raftsync::sim::run_random_scenario(o);
  };
  const std::uint64_t max_seeds = 500;
#endif
  const std::uint64_t only = env_u64("RAFTSYNC_SIM_SEED", 0);
  bool found = false;
  for (std::uint64_t seed = only != 0 ? only : 1; seed <= (only != 0 ? only : max_seeds); ++seed) {
    const raftsync::sim::scenario_result r = run(seed);
    if (!r.ok) {
      std::printf(
          "broken %s: SIM VIOLATION at seed %llu: %s\n  scenario: %s\n  replay: "
          "RAFTSYNC_SIM_SEED=%llu with this executable\n",
          rule, static_cast<unsigned long long>(seed), r.violation.c_str(), r.description.c_str(),
          static_cast<unsigned long long>(seed));
      found = true;
      break;
    }
  }
  INFO("the simulation did not detect the broken " << rule
                                                   << ": is the RAFTSYNC_TEST_ONLY_BREAK_* hook "
                                                      "present in include/raftsync/raft/raft.hpp?");
  CHECK(found);
}
