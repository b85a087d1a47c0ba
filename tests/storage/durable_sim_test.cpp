// The whole-cluster simulation (tests/sim/sim_cluster.hpp) with every node on durable_storage
// over faulty_file_io: crashes injected at random file operations (torn writes: a random prefix of
// the unsynced bytes survives) and the harness's own power losses. The sim's checkers (election
// safety, log matching, leader completeness, state machine safety, convergence) must hold.
//
//   RAFTSYNC_STORAGE_SIM_SEEDS=N   run seeds 1..N (default 200)
//   RAFTSYNC_SIM_SEED=S            replay seed S alone, printing every event
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>

#include "raftsync/storage/durable_storage.hpp"
#include "raftsync/storage/faulty_file_io.hpp"
#include "sim_cluster.hpp"

using namespace raftsync;
using namespace raftsync::storage;

namespace {

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// sim::persistence on durable_storage: every write is durable when it returns (the storage
// fdatasyncs), so sync() has nothing left to do; a crash is faulty_file_io dying at a random
// counted file operation, or the harness's power loss, followed by restart() and a fresh open().
class durable_persistence final : public sim::persistence {
 public:
  explicit durable_persistence(std::uint64_t seed) : io_(seed), rng_(seed) {
    io_.set_torn_writes(true);
    durable_storage_options opt;
    opt.log.segment_size_bytes = 16 << 10;
    opt.log.cache_bytes_max = (rng_() % 2) ? 0 : 8 << 10;
    options_ = opt;
    reopen_or_die();
  }

  const raft::storage& storage() const override { return *s_; }

  std::error_code bootstrap(const raft::conf_state& initial) override {
    return s_->bootstrap(initial);
  }

  std::error_code write_ready(const raft::ready& rd, const raft::bytes& snapshot_data) override {
    arm();
    if (!rd.snapshot.empty()) {
      if (auto ec = write_snapshot_file(rd.snapshot, snapshot_data)) return ec;
    }
    if (auto ec = s_->save(rd)) return ec;
    if (!rd.snapshot.empty()) (void)s_->remove_snapshots_before(rd.snapshot.index);
    return died();
  }

  std::error_code sync() override { return {}; }

  std::error_code save_snapshot(const raft::snapshot_metadata& meta, const raft::bytes& data,
                                std::uint64_t compact_index) override {
    arm();
    if (auto ec = write_snapshot_file(meta, data)) return ec;
    if (auto ec = s_->create_snapshot(meta.index, meta.conf)) return ec;
    if (compact_index > s_->first_index() - 1) {
      if (auto ec = s_->compact(compact_index)) return ec;
    }
    (void)s_->remove_snapshots_before(meta.index);
    return died();
  }

  raft::bytes snapshot_data() const override {
    const auto meta = s_->snapshot();
    if (meta.empty()) return {};
    auto r = s_->open_snapshot(meta);
    if (!r) return "<snapshot file unreadable: " + r.error().message() + ">";
    raft::bytes out, chunk;
    for (;;) {
      auto more = r->next(chunk);
      if (!more) return "<snapshot file corrupt>";
      if (!*more) break;
      out += chunk;
    }
    return out;
  }

  std::error_code crash_and_recover() override {
    ++crashes_;
    s_.reset();
    io_.restart();
    auto s = std::make_unique<durable_storage>(io_, "/db", options_);
    if (auto ec = s->open()) {
      std::fprintf(stderr, "durable_persistence: reopen failed: %s (%s)\n", ec.message().c_str(),
                   s->error_message().c_str());
      return ec;
    }
    s_ = std::move(s);
    schedule_crash();
    return {};
  }

  static inline std::uint64_t io_crashes = 0;

 private:
  std::error_code write_snapshot_file(const raft::snapshot_metadata& meta,
                                      const raft::bytes& data) {
    auto w = s_->begin_snapshot(meta);
    if (!w) return w.error();
    // In chunks, as a large snapshot would be written.
    for (std::size_t off = 0; off < data.size(); off += 64) {
      if (auto ec = w->write(std::string_view(data).substr(off, 64))) return ec;
    }
    return w->commit();
  }

  // The disk may have died in a best-effort step whose error the storage keeps to itself (segment
  // or snapshot cleanup): the process is dead all the same.
  std::error_code died() const {
    return io_.crashed() ? std::error_code(EIO, std::system_category()) : std::error_code{};
  }

  void reopen_or_die() {
    s_ = std::make_unique<durable_storage>(io_, "/db", options_);
    const auto ec = s_->open();
    REQUIRE_FALSE(ec);
  }

  // Disk deaths start with the node's first write after bootstrap (the harness treats a failed
  // bootstrap as a broken test setup, not as a crash).
  void arm() {
    if (armed_) return;
    armed_ = true;
    schedule_crash();
  }

  // The file system dies at a random counted operation some way ahead (about every 400).
  void schedule_crash() {
    if (rng_() % 3 == 0) {
      io_.crash_at(0);
      return;
    }
    io_.crash_at(io_.operation_count() + 1 + rng_() % 800);
    ++io_crashes;
  }

  faulty_file_io io_;
  std::mt19937_64 rng_;
  durable_storage_options options_;
  std::unique_ptr<durable_storage> s_;
  std::uint64_t crashes_ = 0;
  bool armed_ = false;
};

}  // namespace

TEST_CASE("the cluster simulation keeps Raft's safety on durable storage with crashing disks",
          "[storage][sim]") {
  const std::uint64_t one = env_u64("RAFTSYNC_SIM_SEED", 0);
  const std::uint64_t count = env_u64("RAFTSYNC_STORAGE_SIM_SEEDS", 200);
  sim::cluster_stats total;
  std::uint64_t seeds = 0;
  for (std::uint64_t seed = one != 0 ? one : 1; seed <= (one != 0 ? one : count); ++seed) {
    sim::scenario_options o;
    o.seed = seed;
    o.log_events = one != 0;
    o.log_messages = std::getenv("RAFTSYNC_SIM_MESSAGES") != nullptr;
    o.make_persistence = [](raft::node_id, std::uint64_t node_seed) {
      return std::make_unique<durable_persistence>(node_seed);
    };
    const sim::scenario_result r = sim::run_random_scenario(o);
    total += r.stats;
    ++seeds;
    if (!r.ok) {
      const std::string report = "SIM VIOLATION (durable storage) at seed " + std::to_string(seed) +
                                 ": " + r.violation + "\n  scenario: " + r.description +
                                 "\n  replay: RAFTSYNC_SIM_SEED=" + std::to_string(seed) +
                                 " storage_durable_sim_test";
      std::fprintf(stderr, "%s\n", report.c_str());
      FAIL(report);
    }
  }
  std::printf(
      "durable sim: %llu seeds, %llu ticks, %llu/%llu proposals acknowledged, %llu crashes "
      "(%llu disk deaths scheduled), snapshots %llu taken/%llu installed\n",
      static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(total.ticks),
      static_cast<unsigned long long>(total.proposals_acknowledged),
      static_cast<unsigned long long>(total.proposals),
      static_cast<unsigned long long>(total.crashes),
      static_cast<unsigned long long>(durable_persistence::io_crashes),
      static_cast<unsigned long long>(total.snapshots_taken),
      static_cast<unsigned long long>(total.snapshots_installed));
  if (seeds >= 100) {
    CHECK(total.crashes > 0);
    CHECK(total.proposals_acknowledged > 0);
    CHECK(total.snapshots_installed > 0);
  }
}
