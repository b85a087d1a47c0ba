// raftsync — configuration of one Raft node (the core's only tunables).
#pragma once

#include <cstdint>
#include <system_error>

#include "raftsync/error.hpp"
#include "raftsync/raft/types.hpp"

namespace raftsync::raft {

// Every bound the core enforces lives here, units last. An invalid config never builds a node:
// raw_node::create() calls validate() first.
struct config {
  node_id id = no_node;  // this node; must not be no_node
  std::uint32_t election_ticks =
      10;  // election timeout randomized in [election_ticks, 2*election_ticks)
  std::uint32_t heartbeat_ticks = 1;  // must be < election_ticks
  std::uint64_t applied = 0;          // last index the application applied (on restart)
  std::uint64_t msg_bytes_max =
      1 << 20;  // max bytes of entries in one append message (>=1 entry always)
  std::uint32_t inflight_msgs_max = 256;  // max unacknowledged append messages per follower
  std::uint64_t inflight_bytes_max = 32ull << 20;  // max unacknowledged entry bytes per follower
  std::uint64_t uncommitted_bytes_max = 0;  // 0 = unlimited; leader refuses proposals beyond it
  std::uint64_t committed_bytes_max_per_ready = 64ull
                                                << 20;  // bounds committed_entries of one ready
  bool pre_vote = true;  // thesis §9.6: a partitioned node cannot disrupt the cluster on rejoin
  bool check_quorum = true;  // leader steps down without a quorum; followers honour a leader lease
  std::uint64_t random_seed = 0;  // seeds the node's own deterministic PRNG (no global RNG)

  // errc::invalid_config for bad values; success otherwise.
  std::error_code validate() const {
    if (id == no_node) return errc::invalid_config;                       // id must be set
    if (heartbeat_ticks == 0) return errc::invalid_config;                // heartbeat_ticks >= 1
    if (election_ticks <= heartbeat_ticks) return errc::invalid_config;   // heartbeat < election
    if (election_ticks > (1u << 30)) return errc::invalid_config;         // 2*election must fit
    if (inflight_msgs_max == 0) return errc::invalid_config;              // >= 1 message in flight
    if (inflight_bytes_max == 0) return errc::invalid_config;             // >= 1 byte in flight
    if (msg_bytes_max == 0) return errc::invalid_config;                  // >= 1 byte per message
    if (committed_bytes_max_per_ready == 0) return errc::invalid_config;  // progress guaranteed
    return {};
  }
};

}  // namespace raftsync::raft
