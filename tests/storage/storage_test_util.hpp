// Shared helpers of the storage tests: seeds, a storage-state snapshot for comparisons, and a
// seeded workload that drives a durable_storage and a raft::memory_storage model side by side.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/storage/durable_storage.hpp"
#include "raftsync/storage/faulty_file_io.hpp"

namespace raftsync::storage::test {

// Seed from RAFTSYNC_STORAGE_SEED if set (replay), else `fallback`. Printed by the callers.
inline std::uint64_t seed_or(std::uint64_t fallback) {
  if (const char* s = std::getenv("RAFTSYNC_STORAGE_SEED")) return std::strtoull(s, nullptr, 10);
  return fallback;
}

// Everything a restarted core can observe through raft::storage.
struct observed {
  raft::hard_state hard;
  raft::conf_state conf;
  raft::snapshot_metadata snapshot;
  std::uint64_t first = 0, last = 0, boundary_term = 0;
  std::vector<raft::entry> entries;
  friend bool operator==(const observed&, const observed&) = default;
};

inline std::string describe(const observed& o) {
  std::string s =
      "hard{term=" + std::to_string(o.hard.term) + " vote=" + std::to_string(o.hard.vote) +
      " commit=" + std::to_string(o.hard.commit) +
      "} snapshot=" + std::to_string(o.snapshot.index) + "/" + std::to_string(o.snapshot.term) +
      " first=" + std::to_string(o.first) + " last=" + std::to_string(o.last) +
      " voters=" + std::to_string(o.conf.voters.size()) + " terms:";
  for (const auto& e : o.entries)
    s += " " + std::to_string(e.term);
  return s;
}

inline result<observed> observe(const raft::storage& s) {
  observed o;
  auto init = s.load_initial_state();
  if (!init) return init.error();
  o.hard = init->hard;
  o.conf = init->conf;
  o.snapshot = s.snapshot();
  o.first = s.first_index();
  o.last = s.last_index();
  auto t = s.term(o.first - 1);
  if (!t) return t.error();
  o.boundary_term = *t;
  if (o.last >= o.first) {
    auto ents = s.entries(o.first, o.last + 1, raft::no_limit);
    if (!ents) return ents.error();
    o.entries = std::move(*ents);
  }
  return o;
}

inline raft::entry make_entry(std::mt19937_64& rng, std::uint64_t index, std::uint64_t term,
                              std::size_t max_size) {
  raft::entry e;
  e.index = index;
  e.term = term;
  e.type = (rng() % 7 == 0) ? raft::entry_type::conf_change : raft::entry_type::normal;
  const std::size_t size = (rng() % 10 == 0) ? max_size : rng() % (max_size / 4 + 1);
  e.data.resize(size);
  for (auto& c : e.data)
    c = static_cast<char>(rng());
  return e;
}

// A seeded Raft-like sequence of storage writes. Each step() picks the next operation from the
// current model state, applies it to the model (a memory_storage) and to the durable storage
// under test, and reports whether the durable write succeeded.
class workload {
 public:
  explicit workload(std::uint64_t seed, std::size_t entry_bytes_max = 600)
      : rng_(seed), entry_bytes_max_(entry_bytes_max) {}

  enum class op_kind { bootstrap, hard, append, save, snapshot_compact, apply_snapshot };

  struct op {
    op_kind kind = op_kind::append;
    raft::hard_state hard;
    std::vector<raft::entry> entries;
    std::uint64_t index = 0, compact_to = 0;
    raft::conf_state conf;
    raft::snapshot_metadata meta;
  };

  // The next operation, valid for the model's current state.
  op next(const raft::memory_storage& m, std::size_t step) {
    op o;
    if (step == 0) {
      o.kind = op_kind::bootstrap;
      o.conf = raft::conf_state{{1, 2, 3}, {}};
      return o;
    }
    const raft::hard_state hs = m.stored_hard_state();
    const std::uint64_t last = m.last_index();
    const std::uint64_t first = m.first_index();
    const unsigned r = static_cast<unsigned>(rng_() % 100);
    if (r < 10) {
      o.kind = op_kind::hard;
      o.hard = hs;
      if (rng_() % 2) {
        ++o.hard.term;
        o.hard.vote = 1 + rng_() % 3;
      } else {
        o.hard.commit = std::min(last, hs.commit + rng_() % 4);
      }
      if (o.hard == hs) o.hard.term++;
      term_ = std::max(term_, o.hard.term);
      return o;
    }
    if (r < 82) {
      // Append or save: a batch at last+1, or (a new leader) replacing an uncommitted suffix.
      o.kind = (r < 45) ? op_kind::append : op_kind::save;
      std::uint64_t from = last + 1;
      if (rng_() % 5 == 0 && last > std::max(hs.commit, first - 1)) {
        const std::uint64_t low = std::max(hs.commit + 1, first);
        from = low + rng_() % (last + 1 - low + 1);
        ++term_;
      }
      if (term_ == 0) term_ = 1;
      const std::size_t n = 1 + rng_() % ((rng_() % 4 == 0) ? 20 : 4);
      for (std::size_t i = 0; i < n; ++i) {
        o.entries.push_back(make_entry(rng_, from + i, term_, entry_bytes_max_));
      }
      o.hard = hs;
      if (o.hard.term < term_) o.hard.term = term_;
      if (o.kind == op_kind::save) {
        o.hard.commit = std::min<std::uint64_t>(from - 1, hs.commit + rng_() % 6);
        o.hard.commit = std::max(o.hard.commit, hs.commit);
      }
      return o;
    }
    if (r < 95 && hs.commit > m.snapshot().index && hs.commit >= first) {
      o.kind = op_kind::snapshot_compact;
      o.index = m.snapshot().index + 1 + rng_() % (hs.commit - m.snapshot().index);
      o.conf = raft::conf_state{
          {1, 2, 3}, (rng_() % 2) ? std::vector<raft::node_id>{4} : std::vector<raft::node_id>{}};
      const std::uint64_t low = first;  // compact_to in [first, index]
      o.compact_to = (o.index >= low) ? low + rng_() % (o.index - low + 1) : 0;
      return o;
    }
    // A snapshot from a leader, ahead of our log or inside it.
    o.kind = op_kind::apply_snapshot;
    o.meta.index = std::max(m.snapshot().index, last) + 1 + rng_() % 5;
    term_ = std::max(term_, hs.term) + 1;
    o.meta.term = term_;
    o.meta.conf = raft::conf_state{{1, 2, 3}, {}};
    return o;
  }

  static std::error_code apply_model(raft::memory_storage& m, const op& o) {
    switch (o.kind) {
      case op_kind::bootstrap:
        m.bootstrap(o.conf);
        return {};
      case op_kind::hard:
        m.set_hard_state(o.hard);
        return {};
      case op_kind::append:
        return m.append(o.entries);
      case op_kind::save:
        m.set_hard_state(o.hard);
        return m.append(o.entries);
      case op_kind::snapshot_compact:
        if (auto ec = m.create_snapshot(o.index, o.conf)) return ec;
        if (o.compact_to != 0) return m.compact(o.compact_to);
        return {};
      case op_kind::apply_snapshot:
        return m.apply_snapshot(o.meta);
    }
    return {};
  }

  // Applies `o` to the durable storage; the first error is returned.
  static std::error_code apply_durable(durable_storage& s, const op& o) {
    switch (o.kind) {
      case op_kind::bootstrap:
        return s.bootstrap(o.conf);
      case op_kind::hard:
        return s.set_hard_state(o.hard);
      case op_kind::append:
        return s.append(o.entries);
      case op_kind::save:
        return s.save(o.hard, raft::snapshot_metadata{}, o.entries);
      case op_kind::snapshot_compact: {
        if (s.snapshot().index < o.index) {
          if (auto ec = s.create_snapshot(o.index, o.conf)) return ec;
        }
        if (o.compact_to != 0 && s.first_index() <= o.compact_to) return s.compact(o.compact_to);
        return {};
      }
      case op_kind::apply_snapshot:
        return s.apply_snapshot(o.meta);
    }
    return {};
  }

 private:
  std::mt19937_64 rng_;
  std::size_t entry_bytes_max_;
  std::uint64_t term_ = 0;
};

inline durable_storage_options small_segments(std::uint64_t segment_bytes = 4096,
                                              std::uint64_t cache_bytes = 2048) {
  durable_storage_options o;
  o.log.segment_size_bytes = segment_bytes;
  o.log.cache_bytes_max = cache_bytes;
  return o;
}

}  // namespace raftsync::storage::test
