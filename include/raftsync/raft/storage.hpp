// raftsync — the read side of Raft storage, as the core sees it.
//
// The core never writes storage. Everything it wants persisted comes out of ready() (hard state,
// entries, snapshot); the application writes it — to memory_storage in tests, to the durable
// storage/ module in production — and only then calls advance(). The core then reads back through
// these interfaces. Implementations are used from one thread at a time (the driver's).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"

namespace raftsync::raft {

inline constexpr std::uint64_t no_limit = std::numeric_limits<std::uint64_t>::max();

// What the core needs to restart: the persisted hard state and the membership in force.
struct initial_state {
  hard_state hard;
  conf_state conf;
};

// Reads the persisted hard state and membership (once, when a node is built).
class state_reader {
 public:
  virtual ~state_reader() = default;
  virtual result<initial_state> load_initial_state() const = 0;
};

// Reads the persisted (stable) log. Indices are 1-based as in the Raft paper.
//
// Invariant: snapshot().index + 1 == first_index() <= last_index() + 1.
// Entries in [first_index(), last_index()] are readable; term() additionally answers for
// first_index() - 1 (the snapshot's index), so the core can check log matching at the boundary.
class log_reader {
 public:
  virtual ~log_reader() = default;

  // Entries [low, high) in order, at most `max_bytes` in total by entry_size_bytes(), but always
  // at least one entry when low < high. errc::compacted if low < first_index(); errc::unavailable
  // if high > last_index() + 1. Other error codes (I/O) are storage failures.
  virtual result<std::vector<entry>> entries(std::uint64_t low, std::uint64_t high,
                                             std::uint64_t max_bytes) const = 0;

  // Term of entry `index`, for index in [first_index() - 1, last_index()]; errc::compacted below,
  // errc::unavailable above.
  virtual result<std::uint64_t> term(std::uint64_t index) const = 0;

  virtual std::uint64_t first_index() const = 0;
  virtual std::uint64_t last_index() const = 0;

  // Metadata of the most recent snapshot (empty() if there is none). The snapshot's data is the
  // application's business; see raw_node's snapshot hooks.
  virtual snapshot_metadata snapshot() const = 0;
};

// Both read sides, which is what a raw_node is built from.
class storage : public state_reader, public log_reader {};

}  // namespace raftsync::raft
