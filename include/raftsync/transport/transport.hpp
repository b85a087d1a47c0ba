// raftsync — the transport interface: moves messages between nodes and nothing else.
//
// Implementations: in_memory_network (seeded faults, for tests and examples) and tcp_transport
// (Boost.Asio, authenticated). A transport is unreliable by contract: messages may be dropped,
// delayed, duplicated or reordered; Raft and the folder layer retransmit. send() never blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <variant>

#include "raftsync/raft/types.hpp"

namespace raftsync::transport {

using raft::node_id;

// An application message that rides on the same links as Raft messages: the folder layer uses it
// for snapshot data chunks and their acknowledgements. `channel` names the protocol (registered
// by the application); `payload` is opaque bytes.
struct app_message {
  std::uint32_t channel = 0;
  std::string payload;

  friend bool operator==(const app_message&, const app_message&) = default;
};

// What travels between two nodes.
struct envelope {
  node_id from = raft::no_node;
  node_id to = raft::no_node;
  std::variant<raft::message, app_message> body;

  friend bool operator==(const envelope&, const envelope&) = default;
};

class transport {
 public:
  using receive_handler = std::function<void(envelope)>;

  virtual ~transport() = default;

  // Queues `e` for delivery to e.to. Never blocks; if the peer's queue is full the message is
  // dropped (and counted). Callable from the driver thread.
  virtual void send(envelope e) = 0;

  // Sets the function called for every message that arrives for this node. Must be set before
  // messages can arrive. Which thread calls it is the implementation's contract (documented there).
  virtual void set_receive_handler(receive_handler handler) = 0;
};

}  // namespace raftsync::transport
