#include <catch2/catch.hpp>

#include <unistd.h>

#include <random>

#include "storage_test_util.hpp"

using namespace raftsync;
using namespace raftsync::storage;
using namespace raftsync::storage::test;

namespace {

std::vector<raft::entry> batch(std::uint64_t from, std::size_t n, std::uint64_t term,
                               std::size_t size = 100) {
  std::vector<raft::entry> out;
  for (std::size_t i = 0; i < n; ++i) {
    raft::entry e{term, from + i, raft::entry_type::normal,
                  std::string(size, static_cast<char>('a' + (from + i) % 26))};
    out.push_back(std::move(e));
  }
  return out;
}

observed reopen_and_observe(faulty_file_io& io, const durable_storage_options& opt) {
  durable_storage s(io, "/db", opt);
  const auto ec = s.open();
  INFO(ec.message() << " " << s.error_message());
  REQUIRE_FALSE(ec);
  auto o = observe(s);
  REQUIRE(o);
  return *o;
}

}  // namespace

TEST_CASE("durable storage round-trips hard state, entries, snapshot and membership", "[storage]") {
  faulty_file_io io;
  const auto opt = small_segments();
  raft::memory_storage model;
  {
    durable_storage s(io, "/db", opt);
    REQUIRE_FALSE(s.open());
    CHECK(s.recovery().created);
    CHECK(s.status() == storage_status::ok);
    REQUIRE_FALSE(s.bootstrap(raft::conf_state{{1, 2, 3}, {}}));
    model.bootstrap(raft::conf_state{{1, 2, 3}, {}});
    CHECK(s.bootstrap(raft::conf_state{{1}, {}}) == errc::already_exists);
    REQUIRE_FALSE(s.set_hard_state({1, 2, 0}));
    model.set_hard_state({1, 2, 0});
    REQUIRE_FALSE(s.append(batch(1, 10, 1)));
    REQUIRE_FALSE(model.append(batch(1, 10, 1)));
    REQUIRE_FALSE(s.save(raft::hard_state{2, 3, 5}, {}, batch(8, 5, 2, 3000)));  // truncates 8..10
    model.set_hard_state({2, 3, 5});
    REQUIRE_FALSE(model.append(batch(8, 5, 2, 3000)));
    CHECK(observe(s).value() == observe(model).value());
  }
  CHECK(reopen_and_observe(io, opt) == observe(model).value());

  {
    durable_storage s(io, "/db", opt);
    REQUIRE_FALSE(s.open());
    REQUIRE_FALSE(s.create_snapshot(5, raft::conf_state{{1, 2, 3}, {4}}));
    REQUIRE_FALSE(model.create_snapshot(5, raft::conf_state{{1, 2, 3}, {4}}));
    CHECK(s.create_snapshot(5, {}) == errc::snapshot_out_of_date);
    CHECK(s.compact(6) == errc::unavailable);
    REQUIRE_FALSE(s.compact(4));
    REQUIRE_FALSE(model.compact(4));
    CHECK(s.compact(4) == errc::compacted);
    CHECK(s.entries(4, 6, raft::no_limit).error() == errc::compacted);
    CHECK(s.entries(5, 14, raft::no_limit).error() == errc::unavailable);
    CHECK(s.term(3).error() == errc::compacted);
    CHECK(s.term(13).error() == errc::unavailable);
    CHECK(observe(s).value() == observe(model).value());
  }
  CHECK(reopen_and_observe(io, opt) == observe(model).value());

  {
    durable_storage s(io, "/db", opt);
    REQUIRE_FALSE(s.open());
    const raft::snapshot_metadata meta{40, 3, raft::conf_state{{1, 2}, {}}};
    REQUIRE_FALSE(s.apply_snapshot(meta));
    REQUIRE_FALSE(model.apply_snapshot(meta));
    CHECK(s.apply_snapshot(meta) == errc::snapshot_out_of_date);
    REQUIRE_FALSE(s.append(batch(41, 3, 3)));
    REQUIRE_FALSE(model.append(batch(41, 3, 3)));
    CHECK(observe(s).value() == observe(model).value());
    CHECK(s.hard_state().commit == 40);
  }
  CHECK(reopen_and_observe(io, opt) == observe(model).value());
}

TEST_CASE("durable storage behaves like memory_storage over random workloads, across restarts",
          "[storage]") {
  const std::uint64_t seed = seed_or(20261126);
  INFO("seed " << seed << " (replay: RAFTSYNC_STORAGE_SEED=" << seed << ")");
  for (std::uint64_t round = 0; round < 20; ++round) {
    faulty_file_io io(seed + round);
    const auto opt = small_segments(2048 + 1024 * (round % 4), round % 3 == 0 ? 0 : 4096);
    workload w(seed + round);
    raft::memory_storage model;
    auto s = std::make_unique<durable_storage>(io, "/db", opt);
    REQUIRE_FALSE(s->open());
    std::mt19937_64 rng(seed + round);
    for (std::size_t step = 0; step < 150; ++step) {
      const auto o = w.next(model, step);
      REQUIRE_FALSE(workload::apply_model(model, o));
      REQUIRE_FALSE(workload::apply_durable(*s, o));
      if (rng() % 10 == 0) {  // restart (clean) now and then
        s = std::make_unique<durable_storage>(io, "/db", opt);
        REQUIRE_FALSE(s->open());
      }
      const auto got = observe(*s).value();
      const auto want = observe(model).value();
      INFO("round " << round << " step " << step << "\n got " << describe(got) << "\nwant "
                    << describe(want));
      REQUIRE(got == want);
    }
    // Segments below the compaction point were deleted, not kept forever.
    CHECK(s->log().segment_count() <= 1 + (s->last_index() - s->first_index() + 1));
  }
}

TEST_CASE("restart after every combination of append, truncate and compact", "[storage]") {
  const auto opt = small_segments(1024, 512);
  enum class step { append, truncate, compact };
  const std::vector<step> all = {step::append, step::truncate, step::compact};
  int combos = 0;
  for (auto a : all) {
    for (auto b : all) {
      for (auto c : all) {
        faulty_file_io io;
        raft::memory_storage model;
        std::uint64_t term = 1;
        auto run = [&](durable_storage& s, step st) {
          if (st == step::append || s.last_index() < 3) {
            auto b = batch(s.last_index() + 1, 4, term, 150);
            REQUIRE_FALSE(s.append(b));
            REQUIRE_FALSE(model.append(b));
          } else if (st == step::truncate) {
            ++term;
            auto b = batch(s.last_index() - 1, 2, term, 90);
            REQUIRE_FALSE(s.save(raft::hard_state{term, 1, 0}, {}, b));
            model.set_hard_state({term, 1, 0});
            REQUIRE_FALSE(model.append(b));
          } else {
            if (s.snapshot().index + 1 >= s.last_index()) {
              auto b = batch(s.last_index() + 1, 3, term, 150);
              REQUIRE_FALSE(s.append(b));
              REQUIRE_FALSE(model.append(b));
            }
            const std::uint64_t at = s.last_index() - 1;
            raft::hard_state hs = s.hard_state();
            hs.commit = std::max(hs.commit, at);
            REQUIRE_FALSE(s.set_hard_state(hs));
            model.set_hard_state(hs);
            REQUIRE_FALSE(s.create_snapshot(at, raft::conf_state{{1}, {}}));
            REQUIRE_FALSE(model.create_snapshot(at, raft::conf_state{{1}, {}}));
            REQUIRE_FALSE(s.compact(at));
            REQUIRE_FALSE(model.compact(at));
          }
        };
        for (auto st : {a, b, c}) {
          durable_storage s(io, "/db", opt);
          REQUIRE_FALSE(s.open());
          run(s, st);
          CHECK(observe(s).value() == observe(model).value());
          // Clean restart and a crash restart both see the same state.
          CHECK(reopen_and_observe(io, opt) == observe(model).value());
          io.restart();
          CHECK(reopen_and_observe(io, opt) == observe(model).value());
        }
        ++combos;
      }
    }
  }
  CHECK(combos == 27);
}

TEST_CASE("each append batch costs exactly one fdatasync", "[storage]") {
  faulty_file_io io;
  durable_storage_options opt;
  opt.log.segment_size_bytes = 1 << 20;
  durable_storage s(io, "/db", opt);
  REQUIRE_FALSE(s.open());
  REQUIRE_FALSE(s.append(batch(1, 1, 1)));  // creates the first segment
  for (std::uint64_t i = 0; i < 50; ++i) {
    const auto before = io.datasync_count();
    raft::ready rd;
    rd.hard = raft::hard_state{1 + i / 10, 1, s.last_index()};
    rd.entries = batch(s.last_index() + 1, 1 + i % 64, rd.hard->term, 256);
    REQUIRE_FALSE(s.save(rd));
    CHECK(io.datasync_count() - before == 1);
  }
  // A segment roll is still one fdatasync (plus one directory fsync).
  durable_storage_options tiny;
  tiny.log.segment_size_bytes = 512;
  faulty_file_io io2;
  durable_storage s2(io2, "/db", tiny);
  REQUIRE_FALSE(s2.open());
  for (std::uint64_t i = 1; i <= 20; ++i) {
    const auto before = io2.datasync_count();
    REQUIRE_FALSE(s2.append(batch(i, 1, 1, 300)));
    CHECK(io2.datasync_count() - before == 1);
  }
  CHECK(s2.log().segment_count() == 20);
}

TEST_CASE("entries are read by index range with a byte limit, from cache or disk", "[storage]") {
  for (std::uint64_t cache : {std::uint64_t{0}, std::uint64_t{1000}, std::uint64_t{1} << 20}) {
    faulty_file_io io;
    const auto opt = small_segments(4096, cache);
    durable_storage s(io, "/db", opt);
    REQUIRE_FALSE(s.open());
    for (std::uint64_t i = 1; i <= 100; i += 5)
      REQUIRE_FALSE(s.append(batch(i, 5, 1, 76)));
    // Each entry counts 76 + 24 = 100 bytes.
    auto r = s.entries(10, 60, 350);
    REQUIRE(r);
    REQUIRE(r->size() == 3);
    CHECK(r->front().index == 10);
    CHECK(s.entries(10, 60, 0).value().size() == 1);  // always at least one
    CHECK(s.entries(10, 60, raft::no_limit).value().size() == 50);
    CHECK(s.entries(10, 10, raft::no_limit).value().empty());
    auto all = s.entries(1, 101, raft::no_limit).value();
    REQUIRE(all.size() == 100);
    for (std::uint64_t i = 0; i < 100; ++i) {
      CHECK(all[i] == batch(i + 1, 1, 1, 76)[0]);
    }
  }
}

TEST_CASE("snapshot files round-trip in chunks and a half-written one is never taken",
          "[storage]") {
  faulty_file_io io;
  durable_storage s(io, "/db", {});
  REQUIRE_FALSE(s.open());
  const raft::snapshot_metadata meta{12, 3, raft::conf_state{{1, 2, 3}, {7}}};
  std::string expected;
  {
    auto w = s.begin_snapshot(meta);
    REQUIRE(w);
    for (int i = 0; i < 20; ++i) {
      const std::string chunk(1000 + i, static_cast<char>('A' + i));
      expected += chunk;
      REQUIRE_FALSE(w->write(chunk));
    }
    // Not committed yet: no snapshot file under the final name.
    CHECK(s.open_snapshot(meta).error() == std::errc::no_such_file_or_directory);
    REQUIRE_FALSE(w->commit());
  }
  auto r = s.open_snapshot(meta);
  REQUIRE(r);
  CHECK(r->metadata() == meta);
  std::string got, chunk;
  while (r->next(chunk).value())
    got += chunk;
  CHECK(got == expected);

  // A crash before commit leaves only a temp file, removed on the next open.
  const raft::snapshot_metadata meta2{20, 3, {}};
  {
    auto w = s.begin_snapshot(meta2);
    REQUIRE(w);
    REQUIRE_FALSE(w->write("partial"));
    io.restart();
  }
  durable_storage s2(io, "/db", {});
  REQUIRE_FALSE(s2.open());
  CHECK(s2.open_snapshot(meta2).error() == std::errc::no_such_file_or_directory);
  auto list = list_snapshots(io, s2.snapshot_dir());
  REQUIRE(list);
  REQUIRE(list->size() == 1);
  CHECK(list->front().meta.index == 12);

  // A damaged or truncated snapshot is refused.
  const auto path = s2.snapshot_dir() / snapshot_file_name(meta);
  const std::string good = io.read_durable(path).value();
  std::mt19937_64 rng(seed_or(99));
  for (int i = 0; i < 200; ++i) {
    std::string bad = good;
    if (i % 2 == 0) {
      bad[rng() % bad.size()] ^= static_cast<char>(1u << (rng() % 8));
    } else {
      bad.resize(rng() % bad.size());
    }
    REQUIRE_FALSE(io.overwrite_durable(path, bad));
    auto rr = snapshot_reader::open(io, path);
    bool detected = !rr;
    if (rr) {
      std::string c;
      for (;;) {
        auto more = rr->next(c);
        if (!more) {
          detected = true;
          break;
        }
        if (!*more) break;
      }
    }
    CHECK(detected);
  }
  REQUIRE_FALSE(io.overwrite_durable(path, good));
  REQUIRE_FALSE(s2.remove_snapshots_before(13));
  CHECK(list_snapshots(io, s2.snapshot_dir()).value().empty());
}

TEST_CASE("durable storage works on the real filesystem", "[storage]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("raftsync-storage-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  real_file_io io;
  raft::memory_storage model;
  {
    durable_storage s(io, dir, small_segments(8192, 1024));
    REQUIRE_FALSE(s.open());
    REQUIRE_FALSE(s.bootstrap(raft::conf_state{{1}, {}}));
    model.bootstrap(raft::conf_state{{1}, {}});
    for (std::uint64_t i = 1; i <= 200; i += 4) {
      auto b = batch(i, 4, 1 + i / 50, 300);
      REQUIRE_FALSE(s.save(raft::hard_state{1 + i / 50, 1, i - 1}, {}, b));
      model.set_hard_state({1 + i / 50, 1, i - 1});
      REQUIRE_FALSE(model.append(b));
    }
    REQUIRE_FALSE(s.create_snapshot(150, raft::conf_state{{1}, {}}));
    REQUIRE_FALSE(model.create_snapshot(150, raft::conf_state{{1}, {}}));
    REQUIRE_FALSE(s.compact(150));
    REQUIRE_FALSE(model.compact(150));
    CHECK(s.log().segment_count() < 15);
  }
  durable_storage s(io, dir, small_segments(8192, 1024));
  REQUIRE_FALSE(s.open());
  CHECK(observe(s).value() == observe(model).value());
  std::filesystem::remove_all(dir);
}
