// The Boost.Asio TCP transport. Design notes: include/raftsync/transport/tcp_transport.hpp and
// docs/transport.md.
#include "raftsync/transport/tcp_transport.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include "raftsync/assert.hpp"
#include "raftsync/transport/handshake.hpp"

namespace raftsync::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

const char* to_string(log_level level) noexcept {
  switch (level) {
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warning:
      return "warning";
    case log_level::error:
      return "error";
  }
  return "?";
}

void log_to_stderr(log_level level, std::string_view message) {
  const std::string line = fmt::format("raftsync transport [{}] {}\n", to_string(level), message);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

std::error_code tcp_transport_config::validate(std::string* why) const {
  auto bad = [&](const char* field) {
    if (why != nullptr) *why = field;
    return make_error_code(errc::invalid_config);
  };
  if (id == raft::no_node) return bad("id must not be 0");
  if (secret.size() < cluster_secret_bytes_min) return bad("secret must be at least 16 bytes");
  if (max_frame_bytes < 4096) return bad("max_frame_bytes must be at least 4096");
  if (send_queue_messages_max == 0) return bad("send_queue_messages_max must be positive");
  if (send_queue_bytes_max == 0) return bad("send_queue_bytes_max must be positive");
  if (write_batch_bytes_max == 0) return bad("write_batch_bytes_max must be positive");
  if (pending_handshakes_max == 0) return bad("pending_handshakes_max must be positive");
  if (handshake_timeout.count() <= 0) return bad("handshake_timeout must be positive");
  if (keepalive_interval.count() <= 0) return bad("keepalive_interval must be positive");
  if (idle_timeout <= keepalive_interval) return bad("idle_timeout must exceed keepalive_interval");
  if (reconnect_backoff_min.count() <= 0) return bad("reconnect_backoff_min must be positive");
  if (reconnect_backoff_max < reconnect_backoff_min)
    return bad("reconnect_backoff_max must be >= reconnect_backoff_min");
  if (tls.enabled && (tls.ca_file.empty() || tls.cert_file.empty() || tls.key_file.empty()))
    return bad("tls needs ca_file, cert_file and key_file");
  for (const auto& [peer, address] : peers) {
    if (peer == raft::no_node) return bad("peers: node id 0");
    if (peer != id && (address.host.empty() || address.port == 0))
      return bad("peers: empty host or port 0");
  }
  return {};
}

namespace {

// Handshake frames are tiny; before authentication nothing bigger is accepted, so an
// unauthenticated peer cannot make us buffer more than this.
constexpr std::uint32_t handshake_frame_bytes_max = 128;
constexpr std::size_t read_chunk_bytes = 64 * 1024;

enum class conn_state : std::uint8_t {
  connecting,       // dialer: resolving / connecting
  tls_handshake,    // both: TLS handshake running
  await_hello,      // acceptor: waiting for the dialer's hello
  await_challenge,  // dialer: hello sent, waiting for the acceptor's challenge
  await_proof,      // acceptor: challenge sent, waiting for the dialer's proof
  open,             // authenticated both ways
  closed,
};

struct connection;

struct peer_state {
  peer_state(node_id peer_id, const asio::strand<asio::any_io_executor>& strand)
      : id(peer_id), reconnect_timer(strand) {}

  const node_id id;

  // Any thread, under queue_mu.
  std::mutex queue_mu;
  std::deque<std::string> queue;  // encoded frames waiting for the connection
  std::size_t queue_bytes = 0;
  bool flush_posted = false;

  // Any thread.
  std::atomic<std::uint64_t> bytes_sent{0}, messages_sent{0}, bytes_received{0},
      messages_received{0}, messages_dropped{0}, reconnects{0}, handshake_failures{0};
  std::atomic<bool> connected{false};

  // Strand only.
  std::optional<peer_address> address;
  bool removed = false;
  std::shared_ptr<connection> conn;     // the authenticated connection
  std::shared_ptr<connection> dialing;  // our dial in progress (not yet authenticated)
  bool ever_connected = false;
  unsigned attempts = 0;
  bool reconnect_scheduled = false;
  asio::steady_timer reconnect_timer;
};

struct connection {
  explicit connection(const asio::strand<asio::any_io_executor>& strand)
      : socket(strand), timer(strand) {}

  tcp::socket socket;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  std::unique_ptr<tcp::resolver> resolver;
  bool dialer = false;
  conn_state state = conn_state::connecting;
  bool counted_pending = false;  // acceptor: counted in pending_handshakes_
  node_id peer = raft::no_node;  // dialer: target; acceptor: claimed id once hello arrived
  std::shared_ptr<peer_state> peer_ptr;
  nonce dialer_nonce{};
  nonce acceptor_nonce{};
  std::string remote;  // "ip:port" for logs

  std::vector<char> rbuf;
  std::size_t rused = 0;

  std::vector<std::string> control;   // handshake and keepalive frames to write next
  std::vector<std::string> inflight;  // frames of the write in progress
  std::vector<asio::const_buffer> gather;
  std::string coalesced;  // TLS: the batch as one buffer (one TLS record per write)
  std::size_t inflight_messages = 0;
  std::size_t inflight_message_bytes = 0;
  bool writing = false;

  steady::time_point last_rx{};
  steady::time_point last_tx{};
  asio::steady_timer timer;  // handshake deadline, then keepalive ticks
  std::uint64_t timer_generation = 0;
};

}  // namespace

class tcp_transport::impl : public std::enable_shared_from_this<impl> {
 public:
  // A completion handler that keeps the transport alive and counts as outstanding until it has
  // run or been destroyed unrun; stop() waits for the count to reach zero.
  template <typename F>
  class tracked_handler {
   public:
    tracked_handler(std::shared_ptr<impl> self, F f) : self_(std::move(self)), f_(std::move(f)) {}
    tracked_handler(tracked_handler&& other) noexcept
        : self_(std::move(other.self_)), f_(std::move(other.f_)) {}
    tracked_handler(const tracked_handler&) = delete;
    tracked_handler& operator=(const tracked_handler&) = delete;
    tracked_handler& operator=(tracked_handler&&) = delete;
    ~tracked_handler() {
      if (self_) self_->op_done();
    }
    template <typename... Args>
    void operator()(Args&&... args) {
      auto self = std::move(self_);
      f_(std::forward<Args>(args)...);
      self->op_done();
    }

   private:
    std::shared_ptr<impl> self_;
    F f_;
  };

  impl(std::unique_ptr<asio::io_context> owned, asio::any_io_executor executor,
       tcp_transport_config config)
      : owned_context_(std::move(owned)),
        executor_(std::move(executor)),
        strand_(asio::make_strand(executor_)),
        config_(std::move(config)),
        acceptor_(strand_),
        accept_retry_timer_(strand_),
        rng_(std::random_device{}()) {}

  std::error_code init_tls() {
    if (!config_.tls.enabled) return {};
    boost::system::error_code ec;
    ssl_context_.emplace(asio::ssl::context::tls);
    auto& ctx = *ssl_context_;
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1,
                    ec);
    if (!ec)
      ctx.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
    if (!ec) ctx.load_verify_file(config_.tls.ca_file.string(), ec);
    if (!ec) ctx.use_certificate_chain_file(config_.tls.cert_file.string(), ec);
    if (!ec) ctx.use_private_key_file(config_.tls.key_file.string(), asio::ssl::context::pem, ec);
    if (ec) {
      log(log_level::error, fmt::format("TLS setup failed: {}", ec.message()));
      return ec;
    }
    return {};
  }

  void start_owned_thread() {
    work_guard_.emplace(owned_context_->get_executor());
    thread_ = std::thread([ctx = owned_context_.get()] { ctx->run(); });
  }

  // --- Public entry points (any thread) --------------------------------------------------------

  std::error_code start() {
    if (stopping_.load()) return errc::stopped;
    if (started_.exchange(true)) return errc::already_exists;
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(config_.listen_address, ec);
    if (ec) return ec;
    const tcp::endpoint endpoint(address, config_.listen_port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      log(log_level::error, fmt::format("cannot listen on {}:{}: {}", config_.listen_address,
                                        config_.listen_port, ec.message()));
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      return ec;
    }
    port_.store(acceptor_.local_endpoint(ec).port());
    log(log_level::info, fmt::format("node {} listening on {}:{}", config_.id,
                                     config_.listen_address, port_.load()));
    for (const auto& [id, address_of_peer] : config_.peers)
      if (id != config_.id) get_or_create_peer(id);
    post_tracked([this] {
      do_accept();
      for (const auto& [id, address_of_peer] : config_.peers) {
        if (id == config_.id) continue;
        auto peer = find_peer(id);
        peer->address = address_of_peer;
        dial(peer);
      }
    });
    return {};
  }

  void stop() {
    RAFTSYNC_ASSERT(!strand_.running_in_this_thread(),
                    "tcp_transport::stop() called from inside a transport handler");
    stopping_.store(true);
    if (!shutdown_posted_.exchange(true)) {
      outstanding_.fetch_add(1);
      asio::post(strand_, tracked_handler(shared_from_this(), [this] { shutdown(); }));
    }
    {
      std::unique_lock lock(stop_mu_);
      stop_cv_.wait(lock, [&] { return outstanding_.load() == 0; });
    }
    if (owned_context_ && thread_.joinable()) {
      work_guard_.reset();
      owned_context_->stop();
      thread_.join();
    }
  }

  void send(envelope e) {
    if (stopping_.load()) return;
    const node_id to = e.to;
    if (to == raft::no_node || to == config_.id) {
      log(log_level::warning, fmt::format("send to invalid node {} dropped", to));
      return;
    }
    auto peer = get_or_create_peer(to);
    std::string frame;
    encode_envelope(e, frame);
    if (frame.size() > config_.max_frame_bytes) {
      peer->messages_dropped.fetch_add(1, std::memory_order_relaxed);
      log(log_level::warning, fmt::format("message of {} bytes to node {} exceeds max_frame_bytes "
                                          "({}); dropped",
                                          frame.size(), to, config_.max_frame_bytes));
      return;
    }
    bool post_flush = false;
    {
      std::lock_guard lock(peer->queue_mu);
      if (peer->queue.size() >= config_.send_queue_messages_max ||
          peer->queue_bytes + frame.size() > config_.send_queue_bytes_max) {
        peer->messages_dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      peer->queue_bytes += frame.size();
      peer->queue.push_back(std::move(frame));
      post_flush = !peer->flush_posted;
      peer->flush_posted = true;
    }
    if (post_flush) {
      post_tracked([this, peer] {
        {
          std::lock_guard lock(peer->queue_mu);
          peer->flush_posted = false;
        }
        if (peer->conn) pump(peer->conn);
      });
    }
  }

  void set_receive_handler(receive_handler handler) {
    std::lock_guard lock(handler_mu_);
    handler_ = std::make_shared<receive_handler>(std::move(handler));
  }

  void add_peer(node_id id, peer_address address) {
    if (id == raft::no_node || id == config_.id) return;
    auto peer = get_or_create_peer(id);
    post_tracked([this, peer, address = std::move(address)] {
      peer->removed = false;
      peer->address = address;
      dial(peer);
    });
  }

  void remove_peer(node_id id) {
    auto peer = find_peer(id);
    if (!peer) return;
    post_tracked([this, peer] {
      peer->removed = true;
      peer->address.reset();
      peer->reconnect_timer.cancel();
      if (peer->conn) close(peer->conn, "peer removed");
      if (peer->dialing) close(peer->dialing, "peer removed");
      std::lock_guard lock(peer->queue_mu);
      peer->queue.clear();
      peer->queue_bytes = 0;
    });
  }

  std::uint16_t listen_port() const { return port_.load(); }

  transport_metrics metrics() const {
    transport_metrics m;
    m.connections_accepted = connections_accepted_.load();
    m.handshake_failures = handshake_failures_.load();
    m.frames_rejected = frames_rejected_.load();
    std::shared_lock lock(peers_mu_);
    for (const auto& [id, peer] : peers_) {
      peer_metrics& p = m.peers[id];
      p.bytes_sent = peer->bytes_sent.load();
      p.messages_sent = peer->messages_sent.load();
      p.bytes_received = peer->bytes_received.load();
      p.messages_received = peer->messages_received.load();
      p.messages_dropped = peer->messages_dropped.load();
      p.reconnects = peer->reconnects.load();
      p.handshake_failures = peer->handshake_failures.load();
      p.connected = peer->connected.load();
      std::lock_guard queue_lock(peer->queue_mu);
      p.queued_messages = peer->queue.size();
    }
    return m;
  }

  asio::any_io_executor executor() const { return executor_; }

 private:
  void op_done() {
    if (outstanding_.fetch_sub(1) == 1) {
      std::lock_guard lock(stop_mu_);
      stop_cv_.notify_all();
    }
  }

  // Wraps `f` as a strand-bound, tracked completion handler.
  template <typename F>
  auto track(F f) {
    outstanding_.fetch_add(1);
    return asio::bind_executor(strand_, tracked_handler<F>(shared_from_this(), std::move(f)));
  }

  // Runs `f` on the strand unless the transport is stopping. The count is taken before the
  // stopping check so stop() either sees this operation or this call sees stop().
  template <typename F>
  void post_tracked(F f) {
    outstanding_.fetch_add(1);
    tracked_handler<F> handler(shared_from_this(), std::move(f));  // owns that count
    if (stopping_.load()) return;  // the handler's destructor releases its count
    asio::post(strand_, [this, h = std::move(handler)]() mutable {
      if (!stopping_.load()) {
        h();
      }
    });
  }

  void log(log_level level, std::string message) const {
    if (!config_.log || level < config_.log_level_min) return;
    config_.log(level, fmt::format("node {}: {}", config_.id, message));
  }

  std::shared_ptr<peer_state> find_peer(node_id id) const {
    std::shared_lock lock(peers_mu_);
    auto it = peers_.find(id);
    return it == peers_.end() ? nullptr : it->second;
  }

  std::shared_ptr<peer_state> get_or_create_peer(node_id id) {
    if (auto peer = find_peer(id)) return peer;
    std::unique_lock lock(peers_mu_);
    auto& slot = peers_[id];
    if (!slot) slot = std::make_shared<peer_state>(id, strand_);
    return slot;
  }

  std::string name(const connection& c) const {
    return fmt::format("{} {} (node {})", c.dialer ? "connection to" : "connection from",
                       c.remote.empty() ? std::string("?") : c.remote, c.peer);
  }

  // --- Strand only from here on -------------------------------------------------------------

  void shutdown() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_retry_timer_.cancel();
    auto connections = connections_;
    for (const auto& c : connections)
      close(c, "transport stopped");
    std::shared_lock lock(peers_mu_);
    for (const auto& [id, peer] : peers_) {
      peer->reconnect_timer.cancel();
      std::lock_guard queue_lock(peer->queue_mu);
      peer->queue.clear();
      peer->queue_bytes = 0;
    }
    std::lock_guard handler_lock(handler_mu_);
    handler_.reset();
  }

  void do_accept() {
    if (stopping_.load() || !acceptor_.is_open()) return;
    auto c = std::make_shared<connection>(strand_);
    acceptor_.async_accept(
        c->socket, track([this, c](boost::system::error_code ec) {
          if (stopping_.load()) return;
          if (ec) {
            if (ec == asio::error::operation_aborted) return;
            log(log_level::warning, fmt::format("accept failed: {}", ec.message()));
            // Out of descriptors and similar: try again a little later instead of spinning.
            accept_retry_timer_.expires_after(std::chrono::milliseconds(100));
            accept_retry_timer_.async_wait(track([this](boost::system::error_code wait_ec) {
              if (!wait_ec) do_accept();
            }));
            return;
          }
          connections_accepted_.fetch_add(1);
          on_accepted(c);
          do_accept();
        }));
  }

  void on_accepted(const std::shared_ptr<connection>& c) {
    boost::system::error_code ec;
    const auto remote = c->socket.remote_endpoint(ec);
    if (!ec) c->remote = fmt::format("{}:{}", remote.address().to_string(), remote.port());
    c->dialer = false;
    if (pending_handshakes_ >= config_.pending_handshakes_max) {
      handshake_failures_.fetch_add(1);
      log(log_level::warning,
          fmt::format("{}: refused, {} handshakes already pending", name(*c), pending_handshakes_));
      c->socket.close(ec);
      return;
    }
    connections_.insert(c);
    c->counted_pending = true;
    ++pending_handshakes_;
    setup_socket(c);
    arm_handshake_deadline(c);
    if (ssl_context_) {
      c->state = conn_state::tls_handshake;
      c->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(c->socket, *ssl_context_);
      c->tls->async_handshake(
          asio::ssl::stream_base::server, track([this, c](boost::system::error_code hs_ec) {
            if (c->state == conn_state::closed) return;
            if (hs_ec) {
              fail(c, fmt::format("TLS handshake failed: {}", hs_ec.message()), true);
              return;
            }
            c->state = conn_state::await_hello;
            do_read(c);
          }));
    } else {
      c->state = conn_state::await_hello;
      do_read(c);
    }
  }

  void setup_socket(const std::shared_ptr<connection>& c) {
    boost::system::error_code ec;
    c->socket.set_option(tcp::no_delay(true), ec);
    c->socket.set_option(asio::socket_base::keep_alive(true), ec);
    c->last_rx = c->last_tx = steady::now();
  }

  void dial(const std::shared_ptr<peer_state>& peer) {
    if (stopping_.load() || peer->removed || !peer->address || peer->conn || peer->dialing ||
        peer->reconnect_scheduled || peer->id <= config_.id)
      return;
    auto c = std::make_shared<connection>(strand_);
    c->dialer = true;
    c->peer = peer->id;
    c->peer_ptr = peer;
    c->state = conn_state::connecting;
    c->remote = fmt::format("{}:{}", peer->address->host, peer->address->port);
    peer->dialing = c;
    connections_.insert(c);
    arm_handshake_deadline(c);
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(peer->address->host, ec);
    if (!ec) {
      c->socket.async_connect(
          tcp::endpoint(address, peer->address->port),
          track([this, c](boost::system::error_code connect_ec) { on_connected(c, connect_ec); }));
      return;
    }
    c->resolver = std::make_unique<tcp::resolver>(strand_);
    c->resolver->async_resolve(
        peer->address->host, std::to_string(peer->address->port),
        track([this, c](boost::system::error_code resolve_ec, tcp::resolver::results_type results) {
          if (c->state == conn_state::closed) return;
          if (resolve_ec) {
            fail(c, fmt::format("resolve failed: {}", resolve_ec.message()), false);
            return;
          }
          asio::async_connect(
              c->socket, results,
              track([this, c](boost::system::error_code connect_ec, const tcp::endpoint&) {
                on_connected(c, connect_ec);
              }));
        }));
  }

  void on_connected(const std::shared_ptr<connection>& c, boost::system::error_code ec) {
    if (c->state == conn_state::closed) return;
    if (ec) {
      fail(c, fmt::format("connect failed: {}", ec.message()), false, log_level::debug);
      return;
    }
    setup_socket(c);
    if (ssl_context_) {
      c->state = conn_state::tls_handshake;
      c->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(c->socket, *ssl_context_);
      c->tls->async_handshake(
          asio::ssl::stream_base::client, track([this, c](boost::system::error_code hs_ec) {
            if (c->state == conn_state::closed) return;
            if (hs_ec) {
              fail(c, fmt::format("TLS handshake failed: {}", hs_ec.message()), true);
              return;
            }
            send_hello(c);
          }));
    } else {
      send_hello(c);
    }
  }

  void send_hello(const std::shared_ptr<connection>& c) {
    if (random_nonce(c->dialer_nonce)) {
      fail(c, "no randomness for the handshake nonce", true);
      return;
    }
    hello_frame h;
    h.cluster_id = config_.cluster_id;
    h.from = config_.id;
    h.to = c->peer;
    h.dialer_nonce = c->dialer_nonce;
    std::string frame;
    encode_hello(h, frame);
    c->control.push_back(std::move(frame));
    c->state = conn_state::await_challenge;
    pump(c);
    do_read(c);
  }

  void arm_handshake_deadline(const std::shared_ptr<connection>& c) {
    const auto generation = ++c->timer_generation;
    c->timer.expires_after(config_.handshake_timeout);
    c->timer.async_wait(track([this, c, generation](boost::system::error_code ec) {
      if (ec || generation != c->timer_generation) return;
      if (c->state == conn_state::connecting)
        fail(c, "connect timed out", false);  // unreachable, not misbehaving
      else if (c->state != conn_state::open && c->state != conn_state::closed)
        fail(c, "handshake timed out", true);
    }));
  }

  void arm_keepalive(const std::shared_ptr<connection>& c) {
    const auto generation = ++c->timer_generation;
    c->timer.expires_after(config_.keepalive_interval);
    c->timer.async_wait(track([this, c, generation](boost::system::error_code ec) {
      if (ec || generation != c->timer_generation || c->state != conn_state::open) return;
      const auto now = steady::now();
      if (now - c->last_rx > config_.idle_timeout) {
        fail(c, "peer idle (dead-peer timeout)", false);
        return;
      }
      if (!c->writing && now - c->last_tx >= config_.keepalive_interval) {
        std::string frame;
        encode_keepalive(frame);
        c->control.push_back(std::move(frame));
        pump(c);
      }
      arm_keepalive(c);
    }));
  }

  // Closes `c` with a logged reason; counts a handshake failure if it was not yet authenticated
  // and `handshake_failure` says the peer (not us) is to blame.
  // `c` is taken by value: callers may pass a reference to peer->conn, which close() resets.
  void fail(std::shared_ptr<connection> c, const std::string& reason, bool handshake_failure,
            log_level level = log_level::warning) {
    if (c->state == conn_state::closed) return;
    if (handshake_failure && c->state != conn_state::open) {
      handshake_failures_.fetch_add(1);
      if (c->peer_ptr) c->peer_ptr->handshake_failures.fetch_add(1);
    }
    close(std::move(c), reason, level);
  }

  void close(std::shared_ptr<connection> c, const std::string& reason,
             log_level level = log_level::info) {
    if (c->state == conn_state::closed) return;
    const bool was_open = c->state == conn_state::open;
    c->state = conn_state::closed;
    log(level, fmt::format("{} closed: {}", name(*c), reason));
    boost::system::error_code ignored;
    c->socket.close(ignored);
    c->timer.cancel();
    ++c->timer_generation;
    if (c->resolver) c->resolver->cancel();
    if (c->counted_pending) {
      c->counted_pending = false;
      --pending_handshakes_;
    }
    connections_.erase(c);
    auto peer = c->peer_ptr;
    if (!peer) return;
    if (peer->conn == c) {
      peer->conn.reset();
      peer->connected.store(false);
    }
    if (peer->dialing == c) peer->dialing.reset();
    if (c->dialer && !stopping_.load()) {
      if (was_open) peer->attempts = 0;
      schedule_reconnect(peer);
    }
  }

  void schedule_reconnect(const std::shared_ptr<peer_state>& peer) {
    if (peer->removed || peer->reconnect_scheduled || stopping_.load()) return;
    // Jittered exponential backoff: uniform in [d/2, d] with d = min(max, min * 2^attempts).
    const auto min_ms = config_.reconnect_backoff_min.count();
    const auto max_ms = config_.reconnect_backoff_max.count();
    long long d = min_ms;
    for (unsigned i = 0; i < peer->attempts && d < max_ms; ++i)
      d *= 2;
    if (d > max_ms) d = max_ms;
    std::uniform_int_distribution<long long> jitter(d / 2, d);
    const auto delay = std::chrono::milliseconds(jitter(rng_));
    ++peer->attempts;
    peer->reconnect_scheduled = true;
    peer->reconnect_timer.expires_after(delay);
    peer->reconnect_timer.async_wait(track([this, peer](boost::system::error_code ec) {
      peer->reconnect_scheduled = false;
      if (ec || stopping_.load()) return;
      dial(peer);
    }));
  }

  void on_authenticated(const std::shared_ptr<connection>& c) {
    if (!c->peer_ptr) c->peer_ptr = get_or_create_peer(c->peer);
    auto peer = c->peer_ptr;
    if (peer->conn && peer->conn != c) {
      fail(c, "node id already has a live authenticated connection", true);
      return;
    }
    if (c->counted_pending) {
      c->counted_pending = false;
      --pending_handshakes_;
    }
    c->state = conn_state::open;
    peer->conn = c;
    if (peer->dialing == c) peer->dialing.reset();
    peer->connected.store(true);
    if (peer->ever_connected) peer->reconnects.fetch_add(1);
    peer->ever_connected = true;
    peer->attempts = 0;
    log(log_level::info, fmt::format("{} authenticated", name(*c)));
    arm_keepalive(c);
    pump(c);
  }

  // --- Reading ---------------------------------------------------------------------------------

  void do_read(const std::shared_ptr<connection>& c) {
    if (c->state == conn_state::closed) return;
    if (c->rbuf.size() - c->rused < read_chunk_bytes / 4)
      c->rbuf.resize(std::max(c->rbuf.size() * 2, c->rused + read_chunk_bytes));
    auto buffer = asio::buffer(c->rbuf.data() + c->rused, c->rbuf.size() - c->rused);
    auto handler =
        track([this, c](boost::system::error_code ec, std::size_t n) { on_read(c, ec, n); });
    if (c->tls)
      c->tls->async_read_some(buffer, std::move(handler));
    else
      c->socket.async_read_some(buffer, std::move(handler));
  }

  void on_read(const std::shared_ptr<connection>& c, boost::system::error_code ec, std::size_t n) {
    if (c->state == conn_state::closed) return;
    if (ec) {
      // A peer going away (orderly or by reset) is routine: logged at info, not as a warning.
      if (ec == asio::error::eof || ec == asio::error::connection_reset)
        fail(c, ec == asio::error::eof ? "closed by the peer" : "reset by the peer", true,
             log_level::info);
      else
        fail(c, fmt::format("read failed: {}", ec.message()), true);
      return;
    }
    c->rused += n;
    c->last_rx = steady::now();
    std::size_t pos = 0;
    while (c->state != conn_state::closed) {
      const std::uint32_t limit =
          c->state == conn_state::open ? config_.max_frame_bytes : handshake_frame_bytes_max;
      auto parsed = parse_frame(std::string_view(c->rbuf.data() + pos, c->rused - pos), limit);
      if (!parsed) {
        frames_rejected_.fetch_add(1);
        fail(c, fmt::format("bad frame: {}", parsed.error().message()), true);
        return;
      }
      if (!parsed->has_value()) break;
      const frame_view frame = **parsed;
      handle_frame(c, frame);
      pos += frame.size_bytes;
    }
    if (c->state == conn_state::closed) return;
    if (pos > 0) {
      std::memmove(c->rbuf.data(), c->rbuf.data() + pos, c->rused - pos);
      c->rused -= pos;
    }
    // Give back memory after a large frame.
    if (c->rused == 0 && c->rbuf.size() > 4 * read_chunk_bytes) {
      c->rbuf.clear();
      c->rbuf.shrink_to_fit();
    }
    do_read(c);
  }

  void handle_frame(const std::shared_ptr<connection>& c, const frame_view& frame) {
    switch (c->state) {
      case conn_state::await_hello:
        return on_hello(c, frame);
      case conn_state::await_challenge:
        return on_challenge(c, frame);
      case conn_state::await_proof:
        return on_proof(c, frame);
      case conn_state::open:
        return on_data(c, frame);
      case conn_state::connecting:
      case conn_state::tls_handshake:
      case conn_state::closed:
        return;
    }
  }

  void on_hello(const std::shared_ptr<connection>& c, const frame_view& frame) {
    auto hello = decode_hello(frame);
    if (!hello) return fail(c, "expected a hello frame", true);
    if (hello->cluster_id != config_.cluster_id)
      return fail(
          c,
          fmt::format("hello for cluster {} (ours is {})", hello->cluster_id, config_.cluster_id),
          true);
    if (hello->to != config_.id)
      return fail(c, fmt::format("hello addressed to node {}", hello->to), true);
    if (hello->from == raft::no_node || hello->from >= config_.id)
      return fail(c, fmt::format("hello from node {}: only lower ids dial us", hello->from), true);
    c->peer = hello->from;
    // An existing peer record is used for counting; a new one is only created once the peer has
    // authenticated, so unauthenticated hellos cannot grow the peer table.
    c->peer_ptr = find_peer(hello->from);
    if (c->peer_ptr && c->peer_ptr->removed) return fail(c, "hello from a removed peer", true);
    if (c->peer_ptr && c->peer_ptr->conn)
      return fail(c, "node id already has a live authenticated connection", true);
    c->dialer_nonce = hello->dialer_nonce;
    if (random_nonce(c->acceptor_nonce)) return fail(c, "no randomness for the nonce", false);
    auto mac = handshake_mac(config_.secret, handshake_role::acceptor, config_.cluster_id, c->peer,
                             config_.id, c->dialer_nonce, c->acceptor_nonce);
    if (!mac) return fail(c, "HMAC failed", false);
    challenge_frame challenge;
    challenge.cluster_id = config_.cluster_id;
    challenge.from = config_.id;
    challenge.to = c->peer;
    challenge.acceptor_nonce = c->acceptor_nonce;
    challenge.acceptor_mac = *mac;
    std::string out;
    encode_challenge(challenge, out);
    c->control.push_back(std::move(out));
    c->state = conn_state::await_proof;
    pump(c);
  }

  void on_challenge(const std::shared_ptr<connection>& c, const frame_view& frame) {
    auto challenge = decode_challenge(frame);
    if (!challenge) return fail(c, "expected a challenge frame", true);
    if (challenge->cluster_id != config_.cluster_id || challenge->from != c->peer ||
        challenge->to != config_.id)
      return fail(c, "challenge names the wrong cluster or nodes", true);
    c->acceptor_nonce = challenge->acceptor_nonce;
    auto expected = handshake_mac(config_.secret, handshake_role::acceptor, config_.cluster_id,
                                  config_.id, c->peer, c->dialer_nonce, c->acceptor_nonce);
    if (!expected || !macs_equal(*expected, challenge->acceptor_mac))
      return fail(c, "acceptor failed to prove the cluster secret", true);
    auto mine = handshake_mac(config_.secret, handshake_role::dialer, config_.cluster_id,
                              config_.id, c->peer, c->dialer_nonce, c->acceptor_nonce);
    if (!mine) return fail(c, "HMAC failed", false);
    std::string out;
    encode_proof(proof_frame{*mine}, out);
    c->control.push_back(std::move(out));
    on_authenticated(c);
  }

  void on_proof(const std::shared_ptr<connection>& c, const frame_view& frame) {
    auto proof = decode_proof(frame);
    if (!proof) return fail(c, "expected a proof frame", true);
    auto expected = handshake_mac(config_.secret, handshake_role::dialer, config_.cluster_id,
                                  c->peer, config_.id, c->dialer_nonce, c->acceptor_nonce);
    if (!expected || !macs_equal(*expected, proof->dialer_mac))
      return fail(c, "dialer failed to prove the cluster secret", true);
    on_authenticated(c);
  }

  void on_data(const std::shared_ptr<connection>& c, const frame_view& frame) {
    if (frame.kind == frame_kind::keepalive) return;
    if (frame.kind != frame_kind::raft_message && frame.kind != frame_kind::app_message) {
      frames_rejected_.fetch_add(1);
      return fail(c, "handshake frame on an open connection", false);
    }
    auto decoded = decode_envelope(frame);
    if (!decoded) {
      frames_rejected_.fetch_add(1);
      return fail(c, fmt::format("undecodable message: {}", decoded.error().message()), false);
    }
    envelope& e = *decoded;
    auto& peer = *c->peer_ptr;
    const auto* m = std::get_if<raft::message>(&e.body);
    if (e.from != c->peer || (m != nullptr && m->from != c->peer) || e.to != config_.id) {
      peer.messages_dropped.fetch_add(1);
      log(log_level::warning,
          fmt::format("{}: dropped a message claiming from={} to={} (raft from={})", name(*c),
                      e.from, e.to, m != nullptr ? m->from : 0));
      return;
    }
    peer.messages_received.fetch_add(1, std::memory_order_relaxed);
    peer.bytes_received.fetch_add(frame.size_bytes, std::memory_order_relaxed);
    std::shared_ptr<receive_handler> handler;
    {
      std::lock_guard lock(handler_mu_);
      handler = handler_;
    }
    if (handler && *handler) (*handler)(std::move(e));
  }

  // --- Writing ---------------------------------------------------------------------------------

  void pump(const std::shared_ptr<connection>& c) {
    if (c->writing || c->state == conn_state::closed) return;
    c->inflight.clear();
    c->inflight_messages = 0;
    c->inflight_message_bytes = 0;
    for (auto& frame : c->control)
      c->inflight.push_back(std::move(frame));
    c->control.clear();
    if (c->state == conn_state::open && c->peer_ptr) {
      auto& peer = *c->peer_ptr;
      std::lock_guard lock(peer.queue_mu);
      while (!peer.queue.empty() && c->inflight_message_bytes < config_.write_batch_bytes_max) {
        std::string& frame = peer.queue.front();
        peer.queue_bytes -= frame.size();
        c->inflight_message_bytes += frame.size();
        ++c->inflight_messages;
        c->inflight.push_back(std::move(frame));
        peer.queue.pop_front();
      }
    }
    if (c->inflight.empty()) return;
    c->writing = true;
    auto handler =
        track([this, c](boost::system::error_code ec, std::size_t) { on_written(c, ec); });
    if (c->tls) {
      c->coalesced.clear();
      for (const auto& frame : c->inflight)
        c->coalesced += frame;
      asio::async_write(*c->tls, asio::buffer(c->coalesced), std::move(handler));
    } else {
      c->gather.clear();
      for (const auto& frame : c->inflight)
        c->gather.emplace_back(asio::buffer(frame));
      asio::async_write(c->socket, c->gather, std::move(handler));
    }
  }

  void on_written(const std::shared_ptr<connection>& c, boost::system::error_code ec) {
    c->writing = false;
    if (c->peer_ptr) {
      if (ec) {
        c->peer_ptr->messages_dropped.fetch_add(c->inflight_messages);
      } else {
        c->peer_ptr->messages_sent.fetch_add(c->inflight_messages, std::memory_order_relaxed);
        c->peer_ptr->bytes_sent.fetch_add(c->inflight_message_bytes, std::memory_order_relaxed);
      }
    }
    c->inflight.clear();
    c->inflight_messages = 0;
    c->inflight_message_bytes = 0;
    if (c->state == conn_state::closed) return;
    if (ec) {
      fail(c, fmt::format("write failed: {}", ec.message()), false);
      return;
    }
    c->last_tx = steady::now();
    pump(c);
  }

  // Declared in this order: the io_context (if owned) outlives everything bound to it.
  std::unique_ptr<asio::io_context> owned_context_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_guard_;
  std::thread thread_;
  asio::any_io_executor executor_;
  asio::strand<asio::any_io_executor> strand_;
  tcp_transport_config config_;
  std::optional<asio::ssl::context> ssl_context_;

  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> shutdown_posted_{false};
  std::atomic<std::uint64_t> outstanding_{0};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;

  std::atomic<std::uint16_t> port_{0};
  std::atomic<std::uint64_t> connections_accepted_{0}, handshake_failures_{0}, frames_rejected_{0};

  mutable std::shared_mutex peers_mu_;
  std::map<node_id, std::shared_ptr<peer_state>> peers_;

  std::mutex handler_mu_;
  std::shared_ptr<receive_handler> handler_;

  // Strand only.
  tcp::acceptor acceptor_;
  asio::steady_timer accept_retry_timer_;
  std::set<std::shared_ptr<connection>> connections_;
  std::size_t pending_handshakes_ = 0;
  std::mt19937_64 rng_;
};

tcp_transport::tcp_transport(std::shared_ptr<impl> impl) : impl_(std::move(impl)) {}

tcp_transport::~tcp_transport() {
  stop();
}

result<std::unique_ptr<tcp_transport>> tcp_transport::create(asio::any_io_executor executor,
                                                             tcp_transport_config config) {
  std::string why;
  if (auto ec = config.validate(&why)) {
    if (config.log) config.log(log_level::error, fmt::format("invalid transport config: {}", why));
    return ec;
  }
  auto state = std::make_shared<impl>(nullptr, std::move(executor), std::move(config));
  if (auto ec = state->init_tls()) return ec;
  return std::unique_ptr<tcp_transport>(new tcp_transport(std::move(state)));
}

result<std::unique_ptr<tcp_transport>> tcp_transport::create(tcp_transport_config config) {
  std::string why;
  if (auto ec = config.validate(&why)) {
    if (config.log) config.log(log_level::error, fmt::format("invalid transport config: {}", why));
    return ec;
  }
  auto context = std::make_unique<asio::io_context>(1);
  auto executor = context->get_executor();
  auto state = std::make_shared<impl>(std::move(context), executor, std::move(config));
  if (auto ec = state->init_tls()) return ec;
  state->start_owned_thread();
  return std::unique_ptr<tcp_transport>(new tcp_transport(std::move(state)));
}

std::error_code tcp_transport::start() {
  return impl_->start();
}
void tcp_transport::stop() {
  impl_->stop();
}
void tcp_transport::send(envelope e) {
  impl_->send(std::move(e));
}
void tcp_transport::set_receive_handler(receive_handler handler) {
  impl_->set_receive_handler(std::move(handler));
}
std::uint16_t tcp_transport::listen_port() const {
  return impl_->listen_port();
}
void tcp_transport::add_peer(node_id id, peer_address address) {
  impl_->add_peer(id, std::move(address));
}
void tcp_transport::remove_peer(node_id id) {
  impl_->remove_peer(id);
}
transport_metrics tcp_transport::metrics() const {
  return impl_->metrics();
}
asio::any_io_executor tcp_transport::executor() const {
  return impl_->executor();
}

}  // namespace raftsync::transport
