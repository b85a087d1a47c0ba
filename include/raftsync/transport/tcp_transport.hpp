// raftsync — the TCP transport: Boost.Asio, length-prefixed versioned frames (codec.hpp),
// mutual HMAC-SHA256 authentication with the cluster secret (handshake.hpp), optional TLS.
//
// Connections. One connection per peer pair: the node with the LOWER id dials, the higher one
// only accepts (a deterministic rule, so two nodes never race to build two links). The dialer
// keeps the connection up — it dials every known higher-id peer at start() and redials with
// jittered exponential backoff whenever the link drops, whether or not there is traffic.
//
// Threads. Everything runs on the executor given to create() (or on the transport's own thread
// for the overload without an executor), serialized through one internal strand:
//   - the receive handler is called on that executor, never concurrently with itself, in the
//     order frames arrived on each connection;
//   - send(), metrics(), add_peer(), remove_peer() and listen_port() may be called from any
//     thread; send() never blocks (it encodes on the caller's thread and appends to the peer's
//     bounded queue; when the queue is full the message is dropped and counted);
//   - stop() may be called from any thread except from inside the receive handler (asserted) or
//     from any other handler on a thread the executor needs (it would wait for itself); when it
//     returns no handler of this transport runs any more and none will. With a caller-provided
//     executor, the caller must keep the io_context running until stop() has returned.
//
// Failure handling. A malformed or oversized frame, a handshake failure or a handshake that does
// not finish within handshake_timeout closes that connection (logged, counted); the process and
// the other connections are unaffected. A message whose envelope or Raft `from` is not the
// authenticated peer, or whose `to` is not this node, is dropped and counted.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include <boost/asio/any_io_executor.hpp>

#include "raftsync/result.hpp"
#include "raftsync/transport/codec.hpp"
#include "raftsync/transport/metrics.hpp"
#include "raftsync/transport/transport.hpp"

namespace raftsync::transport {

enum class log_level : std::uint8_t { debug = 0, info = 1, warning = 2, error = 3 };
const char* to_string(log_level level) noexcept;

// Called from the transport's executor (and from create()/start() on the caller's thread).
using log_function = std::function<void(log_level, std::string_view message)>;

// Writes "raftsync transport [level] message" to stderr with fmt.
void log_to_stderr(log_level level, std::string_view message);

struct peer_address {
  std::string host;  // an IP address or a name the resolver knows
  std::uint16_t port = 0;

  friend bool operator==(const peer_address&, const peer_address&) = default;
};

// Optional TLS (boost::asio::ssl on OpenSSL). Both sides present a certificate and verify the
// other's against `ca_file` (mutual TLS; host names are not checked — node identity is proven by
// the cluster-secret handshake that runs inside the TLS channel).
struct tls_config {
  bool enabled = false;
  std::filesystem::path ca_file;    // PEM: the CA(s) that sign cluster members' certificates
  std::filesystem::path cert_file;  // PEM: this node's certificate chain
  std::filesystem::path key_file;   // PEM: this node's private key
};

struct tcp_transport_config {
  node_id id = raft::no_node;
  std::uint64_t cluster_id = 0;  // bound into the handshake: nodes of other clusters are refused
  std::string secret;            // the cluster secret, at least cluster_secret_bytes_min bytes

  std::string listen_address = "127.0.0.1";  // IPv4 or IPv6 literal
  std::uint16_t listen_port = 0;             // 0: the OS picks one; read it with listen_port()
  std::map<node_id, peer_address> peers;     // every other member (this node's id is ignored)

  std::uint32_t max_frame_bytes = default_max_frame_bytes;  // bigger frames close the link
  std::size_t send_queue_messages_max = 8192;               // per peer; beyond: drop and count
  std::size_t send_queue_bytes_max = 64u << 20;             // per peer; beyond: drop and count
  std::size_t write_batch_bytes_max = 1u << 20;             // one gathered write takes up to this
  std::size_t pending_handshakes_max = 64;  // unauthenticated inbound connections at once

  std::chrono::milliseconds handshake_timeout{5000};  // accept/connect → authenticated
  std::chrono::milliseconds keepalive_interval{500};  // send a keepalive after this much quiet
  std::chrono::milliseconds idle_timeout{3000};       // nothing received for this long: drop
  std::chrono::milliseconds reconnect_backoff_min{20};
  std::chrono::milliseconds reconnect_backoff_max{2000};

  tls_config tls;

  log_function log = log_to_stderr;  // empty: no logging
  log_level log_level_min = log_level::info;

  // errc::invalid_config (and a message naming the field via `why`, if given).
  std::error_code validate(std::string* why = nullptr) const;
};

class tcp_transport final : public transport {
 public:
  // Runs on `executor` (for example an io_context's executor; any number of threads may run it).
  static result<std::unique_ptr<tcp_transport>> create(boost::asio::any_io_executor executor,
                                                       tcp_transport_config config);
  // Owns an io_context and one thread that runs it (started by create, joined by stop()).
  static result<std::unique_ptr<tcp_transport>> create(tcp_transport_config config);

  tcp_transport(const tcp_transport&) = delete;
  tcp_transport& operator=(const tcp_transport&) = delete;
  ~tcp_transport() override;  // stop()

  // Binds and listens on listen_address:listen_port, then starts dialing lower-id → higher-id
  // peers. Set the receive handler before. Errors: the bind/listen error; errc::stopped after
  // stop(). Call once.
  std::error_code start();

  // Closes the listener and every connection, cancels every timer and waits until no handler of
  // this transport is running or queued. Idempotent. Queued messages are discarded.
  void stop();

  // Queues `e` for e.to (see the thread notes above). Messages to unknown peers are queued too
  // and flow once that peer connects in (it dials us if its id is lower).
  void send(envelope e) override;

  void set_receive_handler(receive_handler handler) override;

  // The bound port (useful with listen_port = 0); 0 before start().
  std::uint16_t listen_port() const;

  // Membership changes: a new peer is dialed if its id is higher than ours; a removed peer's
  // connection is closed and its queue discarded (its counters stay in metrics()).
  void add_peer(node_id id, peer_address address);
  void remove_peer(node_id id);

  transport_metrics metrics() const;

  // The executor the receive handler runs on (the internal strand's underlying executor).
  boost::asio::any_io_executor executor() const;

 private:
  class impl;
  explicit tcp_transport(std::shared_ptr<impl> impl);
  std::shared_ptr<impl> impl_;
};

}  // namespace raftsync::transport
