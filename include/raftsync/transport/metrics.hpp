// raftsync — transport counters (a snapshot; reading them never blocks the I/O path for long).
#pragma once

#include <cstdint>
#include <map>

#include "raftsync/raft/types.hpp"

namespace raftsync::transport {

struct peer_metrics {
  std::uint64_t bytes_sent = 0;          // frame bytes written to the socket (envelopes only)
  std::uint64_t messages_sent = 0;       // envelopes written to the socket
  std::uint64_t bytes_received = 0;      // frame bytes of envelopes accepted from this peer
  std::uint64_t messages_received = 0;   // envelopes delivered to the receive handler
  std::uint64_t messages_dropped = 0;    // send queue full, too large, lost in a failed write,
                                         // or received with a forged from/to
  std::uint64_t reconnects = 0;          // authenticated connections after the first
  std::uint64_t handshake_failures = 0;  // handshakes with this (claimed) peer that failed
  std::uint64_t queued_messages = 0;     // currently waiting in the send queue
  bool connected = false;                // an authenticated connection is open now

  friend bool operator==(const peer_metrics&, const peer_metrics&) = default;
};

struct transport_metrics {
  std::map<raft::node_id, peer_metrics> peers;
  std::uint64_t connections_accepted = 0;  // inbound TCP connections (before authentication)
  std::uint64_t handshake_failures = 0;    // all failed handshakes, including unidentified peers
  std::uint64_t frames_rejected = 0;       // malformed / oversized / wrong-version frames
};

}  // namespace raftsync::transport
