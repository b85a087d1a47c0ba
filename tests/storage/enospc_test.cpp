// Disk full and I/O errors: every failing write returns the error, the storage reports the halted
// state, refuses writes until it can resume, and resumes by itself — with no hole in the log and
// with the same state after a restart or a crash.
#include <catch2/catch.hpp>

#include <cerrno>

#include "storage_test_util.hpp"

using namespace raftsync;
using namespace raftsync::storage;
using namespace raftsync::storage::test;

namespace {
const std::error_code enospc(ENOSPC, std::system_category());
const std::error_code eio(EIO, std::system_category());
}  // namespace

TEST_CASE("a failed write halts the storage until a resume succeeds", "[storage][enospc]") {
  faulty_file_io io;
  durable_storage s(io, "/db", small_segments(4096, 1024));
  REQUIRE_FALSE(s.open());
  std::mt19937_64 rng(1);
  REQUIRE_FALSE(s.append({make_entry(rng, 1, 1, 100)}));
  const auto before = observe(s).value();

  io.fail_at(io.operation_count() + 1, enospc);  // the pwrite of the next batch
  CHECK(s.append({make_entry(rng, 2, 1, 100)}) == std::errc::no_space_on_device);
  CHECK(s.status() == storage_status::halted);
  CHECK(s.halted_error() == std::errc::no_space_on_device);
  CHECK(observe(s).value() == before);  // nothing of the failed write is visible

  io.fail_at(io.operation_count() + 1, eio);  // the resume fails too
  CHECK(s.try_resume() == std::errc::io_error);
  CHECK(s.halted());
  io.fail_at(io.operation_count() + 1, enospc);  // a write while halted resumes first: fails
  CHECK(s.set_hard_state({5, 1, 1}) == std::errc::no_space_on_device);
  CHECK(s.halted());
  CHECK(s.hard_state() == before.hard);

  REQUIRE_FALSE(s.try_resume());
  CHECK(s.status() == storage_status::ok);
  auto e2 = make_entry(rng, 2, 1, 100);
  REQUIRE_FALSE(s.append({e2}));
  CHECK(s.last_index() == 2);

  // A failed fdatasync is not trusted either: the batch is rewritten after the resume.
  io.fail_at(io.operation_count() + 2, eio);  // pwrite succeeds, datasync fails
  auto e3 = make_entry(rng, 3, 1, 100);
  CHECK(s.append({e3}) == std::errc::io_error);
  CHECK(s.last_index() == 2);
  REQUIRE_FALSE(s.append({e3}));  // resumes by itself, then appends
  CHECK(s.last_index() == 3);
  io.restart();
  durable_storage r(io, "/db", small_segments(4096, 1024));
  REQUIRE_FALSE(r.open());
  CHECK(r.entries(1, 4, raft::no_limit).value().back() == e3);
}

TEST_CASE("ENOSPC and EIO at random points: halt, resume, no holes, same state after restart",
          "[storage][enospc]") {
  const std::uint64_t seed = seed_or(4242);
  INFO("seed " << seed << " (replay: RAFTSYNC_STORAGE_SEED=" << seed << ")");
  int halts = 0, capacity_halts = 0, crashes_while_halted = 0;
  for (std::uint64_t round = 0; round < 12; ++round) {
    faulty_file_io io(seed + round);
    const auto opt = small_segments(2048 + 2048 * (round % 3), 1024);
    workload w(seed + round);
    raft::memory_storage model;
    std::mt19937_64 rng(seed + round);
    auto s = std::make_unique<durable_storage>(io, "/db", opt);
    REQUIRE_FALSE(s->open());
    io.fail_randomly(0.04, round % 2 ? eio : enospc, seed + round);
    for (std::size_t step = 0; step < 150; ++step) {
      INFO("round " << round << " step " << step);
      if (rng() % 25 == 0) io.set_capacity_bytes(io.used_bytes() + rng() % 6000);  // disk fills
      const auto o = w.next(model, step);
      raft::memory_storage after = model;
      REQUIRE_FALSE(workload::apply_model(after, o));
      raft::memory_storage mid = model;
      if (o.kind == workload::op_kind::snapshot_compact) {
        REQUIRE_FALSE(mid.create_snapshot(o.index, o.conf));
      }
      int attempts = 0;
      for (;;) {
        const auto ec = workload::apply_durable(*s, o);
        if (!ec) break;
        ++halts;
        REQUIRE(s->halted());
        REQUIRE(s->halted_error() == ec);
        const auto now = observe(*s).value();
        REQUIRE((now == observe(model).value() || now == observe(mid).value()));
        if (ec == std::errc::no_space_on_device && rng() % 2 == 0) {
          io.set_capacity_bytes(std::nullopt);  // the operator frees space
          ++capacity_halts;
        }
        REQUIRE(++attempts < 500);
        if (rng() % 8 == 0) {
          // A crash while halted: the restarted storage shows the state before the failed
          // write, or (if enough of it reached the disk) after it — never anything else.
          ++crashes_while_halted;
          s.reset();
          io.restart();
          for (int tries = 0;; ++tries) {
            REQUIRE(tries < 500);
            s = std::make_unique<durable_storage>(io, "/db", opt);
            const auto open_ec = s->open();
            if (!open_ec) break;
            INFO(open_ec.message() << " " << s->error_message());
            REQUIRE((open_ec == std::errc::no_space_on_device || open_ec == std::errc::io_error));
            io.set_capacity_bytes(std::nullopt);
          }
          const auto now = observe(*s).value();
          const bool done = now == observe(after).value();
          INFO("op " << static_cast<int>(o.kind) << " error " << ec.message() << "\n now "
                     << describe(now) << "\nbefore " << describe(observe(model).value())
                     << "\n after " << describe(observe(after).value()));
          REQUIRE((done || now == observe(model).value() || now == observe(mid).value()));
          if (done) break;
        }
      }
      model = std::move(after);
      REQUIRE(s->status() == storage_status::ok);
      REQUIRE(observe(*s).value() == observe(model).value());
    }
    io.fail_randomly(0, {}, 0);
    io.set_capacity_bytes(std::nullopt);
    const auto want = observe(model).value();
    s = std::make_unique<durable_storage>(io, "/db", opt);
    REQUIRE_FALSE(s->open());
    CHECK(observe(*s).value() == want);
    s.reset();
    io.restart();
    durable_storage r(io, "/db", opt);
    REQUIRE_FALSE(r.open());
    CHECK(observe(r).value() == want);
  }
  WARN("ENOSPC/EIO rounds: " << halts << " failed writes (" << capacity_halts << " on a full disk, "
                             << crashes_while_halted
                             << " crashes while halted), all resumed without holes");
  CHECK(halts > 50);
}

TEST_CASE("a ready retried after a failure at any of its file operations is persisted once",
          "[storage][enospc]") {
  // One ready with a received snapshot, entries after it and a new hard state; the failure hits
  // its k-th file operation; the driver retries the same ready until it succeeds.
  std::mt19937_64 rng(seed_or(77));
  int failed_saves = 0;
  for (std::uint64_t k = 1; k <= 40; ++k) {
    INFO("failure at operation " << k << " of the ready");
    faulty_file_io io;
    const auto opt = small_segments(1024, 512);
    durable_storage s(io, "/db", opt);
    raft::memory_storage model;
    REQUIRE_FALSE(s.open());
    REQUIRE_FALSE(s.bootstrap(raft::conf_state{{1, 2, 3}, {}}));
    model.bootstrap(raft::conf_state{{1, 2, 3}, {}});
    for (std::uint64_t i = 1; i <= 12; ++i) {
      std::vector<raft::entry> e{make_entry(rng, i, 1, 200)};
      REQUIRE_FALSE(s.append(e));
      REQUIRE_FALSE(model.append(e));
    }
    raft::ready rd;
    rd.snapshot = raft::snapshot_metadata{20, 2, raft::conf_state{{1, 2, 3}, {}}};
    rd.entries = {make_entry(rng, 21, 2, 300), make_entry(rng, 22, 2, 300)};
    rd.hard = raft::hard_state{2, 3, 21};
    io.fail_at(io.operation_count() + k, k % 2 ? eio : enospc);
    int attempts = 0;
    while (s.save(rd)) {
      CHECK(s.halted());
      REQUIRE(++attempts < 5);
    }
    failed_saves += attempts;
    io.clear_faults();  // if the ready had fewer than k operations, the failure never fired
    REQUIRE_FALSE(model.apply_snapshot(rd.snapshot));
    REQUIRE_FALSE(model.append(rd.entries));
    model.set_hard_state(*rd.hard);
    CHECK(observe(s).value() == observe(model).value());
    io.restart();
    durable_storage r(io, "/db", opt);
    REQUIRE_FALSE(r.open());
    CHECK(observe(r).value() == observe(model).value());
  }
  CHECK(failed_saves >= 8);
}
