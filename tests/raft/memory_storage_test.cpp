// memory_storage: the in-memory implementation of the storage interfaces.
#include <catch2/catch.hpp>

#include "raftsync/raft/memory_storage.hpp"

using namespace raftsync::raft;

namespace {
std::vector<entry> ents(std::uint64_t first, std::uint64_t last, std::uint64_t term) {
  std::vector<entry> out;
  for (std::uint64_t i = first; i <= last; ++i)
    out.push_back(entry{term, i, entry_type::normal, "d" + std::to_string(i)});
  return out;
}
}  // namespace

TEST_CASE("an empty memory_storage has first index 1 and last index 0", "[raft][memory_storage]") {
  memory_storage s;
  CHECK(s.first_index() == 1);
  CHECK(s.last_index() == 0);
  CHECK(*s.term(0) == 0);
  CHECK(s.term(1).error() == raftsync::errc::unavailable);
  CHECK(s.snapshot().empty());
  s.bootstrap({{1, 2}, {3}});
  auto init = s.load_initial_state();
  REQUIRE(init);
  CHECK(init->conf.voters == std::vector<node_id>{1, 2});
  CHECK(init->conf.learners == std::vector<node_id>{3});
  CHECK(init->hard.empty());
}

TEST_CASE("append truncates a conflicting suffix and refuses gaps", "[raft][memory_storage]") {
  memory_storage s;
  REQUIRE(!s.append(ents(1, 5, 1)));
  REQUIRE(!s.append(ents(3, 4, 2)));
  CHECK(s.last_index() == 4);
  CHECK(*s.term(2) == 1);
  CHECK(*s.term(3) == 2);
  CHECK(s.append(ents(7, 8, 2)) == raftsync::errc::unavailable);
  CHECK(s.last_index() == 4);
  REQUIRE(!s.append(ents(5, 5, 2)));
  CHECK(s.last_index() == 5);
}

TEST_CASE("entries honours bounds and the byte limit but returns at least one entry",
          "[raft][memory_storage]") {
  memory_storage s;
  REQUIRE(!s.append(ents(1, 10, 1)));
  CHECK(s.entries(1, 11, no_limit)->size() == 10);
  CHECK(s.entries(1, 11, 0)->size() == 1);
  const std::uint64_t one = entry_size_bytes(ents(1, 1, 1)[0]);
  CHECK(s.entries(1, 11, 3 * one)->size() == 3);
  CHECK(s.entries(1, 12, no_limit).error() == raftsync::errc::unavailable);
  CHECK(s.entries(4, 4, no_limit)->empty());
}

TEST_CASE("create_snapshot then compact drops the log prefix", "[raft][memory_storage]") {
  memory_storage s;
  REQUIRE(!s.append(ents(1, 10, 3)));
  CHECK(s.compact(5) == raftsync::errc::unavailable);  // not covered by a snapshot yet
  REQUIRE(!s.create_snapshot(6, {{1, 2, 3}, {}}));
  CHECK(s.create_snapshot(6, {{1}, {}}) == raftsync::errc::snapshot_out_of_date);
  CHECK(s.create_snapshot(11, {{1}, {}}) == raftsync::errc::unavailable);
  REQUIRE(!s.compact(6));
  CHECK(s.first_index() == 7);
  CHECK(s.last_index() == 10);
  CHECK(*s.term(6) == 3);
  CHECK(s.term(5).error() == raftsync::errc::compacted);
  CHECK(s.entries(6, 8, no_limit).error() == raftsync::errc::compacted);
  CHECK(s.entries(7, 11, no_limit)->size() == 4);
  CHECK(s.compact(6) == raftsync::errc::compacted);
  CHECK(s.snapshot().index == 6);
  CHECK(s.snapshot().term == 3);
  CHECK(s.load_initial_state()->conf.voters == std::vector<node_id>{1, 2, 3});
  // Appending entries at or below the compaction point ignores them.
  REQUIRE(!s.append(ents(5, 8, 4)));
  CHECK(*s.term(7) == 4);
  CHECK(s.last_index() == 8);
}

TEST_CASE("apply_snapshot replaces the whole log and rejects older snapshots",
          "[raft][memory_storage]") {
  memory_storage s;
  REQUIRE(!s.append(ents(1, 3, 1)));
  REQUIRE(!s.apply_snapshot({20, 4, {{1, 2}, {5}}}));
  CHECK(s.first_index() == 21);
  CHECK(s.last_index() == 20);
  CHECK(*s.term(20) == 4);
  CHECK(s.load_initial_state()->conf.learners == std::vector<node_id>{5});
  CHECK(s.apply_snapshot({10, 4, {}}) == raftsync::errc::snapshot_out_of_date);
  REQUIRE(!s.append(ents(21, 22, 5)));
  CHECK(s.last_index() == 22);
}
