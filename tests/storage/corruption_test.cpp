// Single-bit flips and truncations at random offsets of segment and state files: every one is
// detected — as a torn tail (the last record cut off, leaving a state the storage really had) or
// as corruption (open refuses, naming the file) — and never silently accepted.
#include <catch2/catch.hpp>

#include <memory>

#include "storage_test_util.hpp"

using namespace raftsync;
using namespace raftsync::storage;
using namespace raftsync::storage::test;

namespace {

struct built {
  std::unique_ptr<faulty_file_io> io;
  std::vector<observed> history;  // state after every operation
};

built build(std::uint64_t seed, const durable_storage_options& opt) {
  built b;
  b.io = std::make_unique<faulty_file_io>(seed);
  workload w(seed, 300);
  raft::memory_storage model;
  durable_storage s(*b.io, "/db", opt);
  REQUIRE_FALSE(s.open());
  b.history.push_back(observe(model).value());
  for (std::size_t step = 0; step < 60; ++step) {
    const auto o = w.next(model, step);
    REQUIRE_FALSE(workload::apply_model(model, o));
    REQUIRE_FALSE(workload::apply_durable(s, o));
    b.history.push_back(observe(model).value());
  }
  // End with a log record, so the last write is an append.
  std::mt19937_64 rng(seed);
  std::vector<raft::entry> last{
      make_entry(rng, model.last_index() + 1,
                 std::max<std::uint64_t>(1, model.stored_hard_state().term), 300)};
  REQUIRE_FALSE(s.append(last));
  REQUIRE_FALSE(model.append(last));
  b.history.push_back(observe(model).value());
  return b;
}

}  // namespace

TEST_CASE("bit flips and truncations of segment and state files never pass silently",
          "[storage][corruption]") {
  const std::uint64_t seed = seed_or(31337);
  INFO("seed " << seed << " (replay: RAFTSYNC_STORAGE_SEED=" << seed << ")");
  const auto opt = small_segments(1024, 1024);
  std::mt19937_64 rng(seed);
  int corrupt = 0, torn = 0, flips = 0, truncations = 0;
  for (int trial = 0; trial < 300; ++trial) {
    built b = build(seed + trial % 7, opt);  // a handful of distinct histories
    auto& io = *b.io;
    std::vector<std::filesystem::path> files;
    const auto names = io.list_dir("/db/log").value();
    for (const auto& name : names)
      files.push_back("/db/log/" + name);
    const std::size_t segments = files.size();
    REQUIRE(segments >= 1);
    files.push_back("/db/state");
    REQUIRE(io.exists("/db/state"));
    // A third of the trials hit the state file, the rest a segment (the last one often).
    std::size_t pick;
    const auto r = rng() % 6;
    if (r < 2) {
      pick = segments;
    } else if (r < 4) {
      pick = segments - 1;
    } else {
      pick = rng() % segments;
    }
    const auto path = files[pick];
    std::string bytes = io.read_durable(path).value();
    REQUIRE(!bytes.empty());
    std::size_t used = bytes.size();
    while (used > 0 && bytes[used - 1] == '\0')
      --used;
    const bool flip = rng() % 3 != 0;
    std::string what;
    if (flip) {
      // Mostly inside the written bytes, sometimes in the zero tail.
      const std::size_t limit = (rng() % 8 == 0) ? bytes.size() : used;
      const std::size_t offset = rng() % limit;
      const int bit = static_cast<int>(rng() % 8);
      bytes[offset] = static_cast<char>(bytes[offset] ^ (1 << bit));
      what = "flip bit " + std::to_string(bit) + " at " + std::to_string(offset);
      ++flips;
    } else {
      const std::size_t size = 1 + rng() % (bytes.size() - 1);
      bytes.resize(size);
      what = "truncate to " + std::to_string(size);
      ++truncations;
    }
    REQUIRE_FALSE(io.overwrite_durable(path, bytes));
    durable_storage s(io, "/db", opt);
    const auto ec = s.open();
    INFO("trial " << trial << ": " << path << " " << what << " -> " << ec.message() << " "
                  << s.error_message());
    if (ec) {
      CHECK(ec == errc::corrupt);
      CHECK(s.error_message().find(path.filename().string()) != std::string::npos);
      CHECK(s.error_message().find(" at offset ") != std::string::npos);
      ++corrupt;
      continue;
    }
    // Accepted only as a torn tail of the last segment, leaving a state the storage really had.
    REQUIRE(s.recovery().log.torn_tail);
    CHECK(pick == segments - 1);
    CHECK(s.recovery().log.torn_tail_file == path.string());
    const auto got = observe(s);
    REQUIRE(got);
    bool in_history = false;
    for (const auto& h : b.history)
      in_history = in_history || h == *got;
    CHECK(in_history);
    ++torn;
  }
  WARN("corruption trials: " << flips << " flips, " << truncations << " truncations -> " << corrupt
                             << " refused as corrupt, " << torn << " cut as torn tail");
  CHECK(corrupt > 0);
  CHECK(torn > 0);
}
