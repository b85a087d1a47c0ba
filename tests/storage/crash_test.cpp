// Crash injection at every file operation of a scripted workload: for N = 1, 2, ... the
// in-memory filesystem dies at the N-th operation (losing everything not synced; with torn writes,
// keeping a random prefix of it), the storage is reopened and must show exactly the state after
// the last acknowledged write or — for the write in flight — the state after it; then it must take
// further appends.
//   RAFTSYNC_STORAGE_SEED=S          replay with seed S
//   RAFTSYNC_STORAGE_CRASH_SEEDS=N   torn-write crash loops over N seeds (default 3)
#include <catch2/catch.hpp>

#include <cstdlib>

#include "storage_test_util.hpp"

using namespace raftsync;
using namespace raftsync::storage;
using namespace raftsync::storage::test;

namespace {

struct crash_stats {
  std::uint64_t crashes = 0;
  std::uint64_t torn_tails = 0;
  std::uint64_t in_flight_survived = 0;
};

// Runs the workload with a crash at operation `crash_at`; returns false if the workload
// completed before reaching it.
bool run_once(std::uint64_t seed, bool torn, std::size_t steps, const durable_storage_options& opt,
              std::uint64_t crash_at, crash_stats& stats) {
  faulty_file_io io(seed * 1000003 + crash_at);
  io.set_torn_writes(torn);
  io.crash_at(crash_at);
  workload w(seed);
  raft::memory_storage before;
  std::vector<raft::memory_storage> candidates;  // acceptable states after the crash
  bool crashed = false;
  {
    durable_storage s(io, "/db", opt);
    if (s.open()) {
      REQUIRE(io.crashed());
      crashed = true;
      candidates.push_back(before);
    }
    for (std::size_t step = 0; !crashed && step < steps; ++step) {
      const auto o = w.next(before, step);
      raft::memory_storage after = before;
      std::vector<raft::memory_storage> states{before};
      if (o.kind == workload::op_kind::snapshot_compact) {
        raft::memory_storage mid = before;
        REQUIRE_FALSE(mid.create_snapshot(o.index, o.conf));
        states.push_back(mid);
      }
      REQUIRE_FALSE(workload::apply_model(after, o));
      states.push_back(after);
      if (auto ec = workload::apply_durable(s, o)) {
        INFO("step " << step << ": " << ec.message());
        REQUIRE(io.crashed());
        crashed = true;
        candidates = std::move(states);
        break;
      }
      before = std::move(after);
    }
  }
  if (!crashed) return false;
  ++stats.crashes;

  io.restart();
  durable_storage r(io, "/db", opt);
  const auto ec = r.open();
  INFO("seed " << seed << " torn " << torn << " crash at operation " << crash_at << ": "
               << ec.message() << " " << r.error_message());
  REQUIRE_FALSE(ec);
  if (r.recovery().log.torn_tail) ++stats.torn_tails;
  const auto got = observe(r).value();
  bool matched = false;
  for (std::size_t i = 0; i < candidates.size() && !matched; ++i) {
    if (got == observe(candidates[i]).value()) {
      matched = true;
      if (i > 0) ++stats.in_flight_survived;
    }
  }
  if (!matched) {
    for (const auto& c : candidates)
      INFO("candidate " << describe(observe(c).value()));
    INFO("recovered " << describe(got));
    REQUIRE(matched);
  }

  // The log is usable: append after the recovered end, restart, and find it there.
  raft::memory_storage model;
  for (const auto& c : candidates) {
    if (got == observe(c).value()) {
      model = c;
      break;
    }
  }
  std::mt19937_64 rng(seed);
  const std::uint64_t term = std::max<std::uint64_t>(got.hard.term, got.boundary_term) + 1;
  std::vector<raft::entry> more{make_entry(rng, got.last + 1, term, 300),
                                make_entry(rng, got.last + 2, term, 300)};
  raft::hard_state hs = got.hard;
  hs.term = term;
  REQUIRE_FALSE(r.save(hs, {}, more));
  model.set_hard_state(hs);
  REQUIRE_FALSE(model.append(more));
  io.restart();  // a crash right after the acknowledged append
  durable_storage again(io, "/db", opt);
  REQUIRE_FALSE(again.open());
  CHECK(observe(again).value() == observe(model).value());
  return true;
}

void crash_loop(std::uint64_t seed, bool torn, std::size_t steps,
                const durable_storage_options& opt) {
  INFO("seed " << seed << " (replay: RAFTSYNC_STORAGE_SEED=" << seed << ")");
  crash_stats stats;
  std::uint64_t n = 1;
  while (run_once(seed, torn, steps, opt, n, stats))
    ++n;
  WARN("crash loop seed " << seed << (torn ? " (torn writes)" : "") << ": " << stats.crashes
                          << " crash points, " << stats.torn_tails << " torn tails cut, "
                          << stats.in_flight_survived << " in-flight writes survived");
  CHECK(stats.crashes == n - 1);
  CHECK(n > 100);  // the workload really has that many file operations
}

}  // namespace

TEST_CASE("a crash at any file operation loses nothing acknowledged and invents nothing",
          "[storage][crash]") {
  const std::uint64_t seed = seed_or(11);
  crash_loop(seed, false, 80, small_segments(2048, 1024));
  crash_loop(seed + 1, false, 80, small_segments(8192, 0));
}

TEST_CASE("a crash with torn writes at any file operation is recovered as a torn tail",
          "[storage][crash]") {
  // RAFTSYNC_STORAGE_CRASH_SEEDS=N runs N seeds (a soak; default 3).
  const std::uint64_t seed = seed_or(21);
  const char* env = std::getenv("RAFTSYNC_STORAGE_CRASH_SEEDS");
  const std::uint64_t seeds = env != nullptr ? std::strtoull(env, nullptr, 10) : 3;
  for (std::uint64_t k = 0; k < seeds; ++k) {
    crash_loop(seed + k, true, 80, small_segments(1024 + 1024 * (k % 4), 1024 * (k % 2)));
  }
}
