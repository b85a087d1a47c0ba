// Helpers for the TCP transport tests: nodes that record what they receive, condition waits with
// a timeout, and a raw socket client that plays an attacker (or a hand-driven honest peer).
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "raftsync/transport/codec.hpp"
#include "raftsync/transport/handshake.hpp"
#include "raftsync/transport/tcp_transport.hpp"

namespace raftsync::transport::test {

using namespace std::chrono_literals;

inline const std::string test_secret = "correct horse battery staple 0123";
inline constexpr std::uint64_t test_cluster = 0x5eed;

// Seed for randomized tests: RAFTSYNC_TRANSPORT_SEED=N replays a printed seed.
inline std::uint64_t test_seed() {
  if (const char* env = std::getenv("RAFTSYNC_TRANSPORT_SEED"))
    return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

// Polls `condition` until it holds or `timeout` passes (never a fixed sleep as the wait itself).
inline bool wait_until(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return condition();
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Log lines are kept (and printed only when RAFTSYNC_TRANSPORT_TEST_LOG is set).
inline log_function quiet_log() {
  static const bool verbose = std::getenv("RAFTSYNC_TRANSPORT_TEST_LOG") != nullptr;
  return [](log_level level, std::string_view message) {
    if (verbose) log_to_stderr(level, message);
  };
}

inline tcp_transport_config base_config(node_id id) {
  tcp_transport_config c;
  c.id = id;
  c.cluster_id = test_cluster;
  c.secret = test_secret;
  c.listen_address = "127.0.0.1";
  c.listen_port = 0;
  c.handshake_timeout = 2000ms;
  c.keepalive_interval = 100ms;
  c.idle_timeout = 1000ms;
  c.reconnect_backoff_min = 10ms;
  c.reconnect_backoff_max = 200ms;
  c.log = quiet_log();
  c.log_level_min = log_level::debug;
  return c;
}

// A transport plus a record of what arrived.
struct test_node {
  std::unique_ptr<tcp_transport> transport;
  mutable std::mutex mu;
  std::vector<envelope> received;

  void start(tcp_transport_config config) {
    auto t = tcp_transport::create(std::move(config));
    REQUIRE(t.has_value());
    transport = std::move(*t);
    transport->set_receive_handler([this](envelope e) {
      std::lock_guard lock(mu);
      received.push_back(std::move(e));
    });
    REQUIRE_FALSE(transport->start());
  }
  std::size_t count() const {
    std::lock_guard lock(mu);
    return received.size();
  }
  std::size_t count_from(node_id from) const {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const auto& e : received)
      n += e.from == from ? 1 : 0;
    return n;
  }
  std::uint16_t port() const { return transport->listen_port(); }
  peer_metrics peer(node_id id) const {
    auto m = transport->metrics();
    auto it = m.peers.find(id);
    return it == m.peers.end() ? peer_metrics{} : it->second;
  }
};

inline envelope app(node_id from, node_id to, std::string payload, std::uint32_t channel = 1) {
  return envelope{from, to, app_message{channel, std::move(payload)}};
}

// A blocking client with timeouts, driven by hand.
class raw_client {
 public:
  bool connect(std::uint16_t port) {
    boost::system::error_code ec;
    socket_.connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
    return !ec;
  }
  bool write(std::string_view bytes) {
    boost::system::error_code ec;
    boost::asio::write(socket_, boost::asio::buffer(bytes.data(), bytes.size()), ec);
    sent_ += bytes;
    return !ec;
  }
  // Reads one whole frame, or nullopt on close / timeout / bad frame.
  std::optional<std::string> read_frame(std::chrono::milliseconds timeout = 3000ms) {
    while (true) {
      auto parsed = parse_frame(buffer_, default_max_frame_bytes);
      if (!parsed) return std::nullopt;
      if (parsed->has_value()) {
        std::string frame = buffer_.substr(0, (*parsed)->size_bytes);
        buffer_.erase(0, frame.size());
        return frame;
      }
      if (!read_more(timeout)) return std::nullopt;
    }
  }
  // True once the server closed the connection (EOF or reset) within `timeout`.
  bool closed_by_peer(std::chrono::milliseconds timeout = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!read_more(deadline - std::chrono::steady_clock::now()) && eof_) return true;
    }
    return false;
  }
  // The honest dialer's side of the handshake; returns true if the acceptor proved the secret.
  bool handshake(std::string_view secret, node_id self, node_id acceptor,
                 std::uint64_t cluster = test_cluster) {
    hello_frame h{cluster, self, acceptor, {}};
    REQUIRE_FALSE(random_nonce(h.dialer_nonce));
    std::string out;
    encode_hello(h, out);
    if (!write(out)) return false;
    auto frame = read_frame();
    if (!frame) return false;
    auto parsed = parse_frame(*frame, default_max_frame_bytes);
    auto challenge = decode_challenge(**parsed);
    if (!challenge) return false;
    auto expected = handshake_mac(secret, handshake_role::acceptor, cluster, self, acceptor,
                                  h.dialer_nonce, challenge->acceptor_nonce);
    if (!macs_equal(*expected, challenge->acceptor_mac)) return false;
    auto mine = handshake_mac(secret, handshake_role::dialer, cluster, self, acceptor,
                              h.dialer_nonce, challenge->acceptor_nonce);
    out.clear();
    encode_proof(proof_frame{*mine}, out);
    return write(out);
  }
  const std::string& sent() const { return sent_; }
  void close() {
    boost::system::error_code ec;
    socket_.close(ec);
  }

 private:
  template <typename Duration>
  bool read_more(Duration timeout) {
    if (eof_) return false;
    char chunk[4096];
    bool done = false;
    std::size_t got = 0;
    boost::system::error_code result;
    socket_.async_read_some(boost::asio::buffer(chunk),
                            [&](boost::system::error_code ec, std::size_t n) {
                              done = true;
                              got = n;
                              result = ec;
                            });
    context_.restart();
    context_.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
    if (!done) {
      boost::system::error_code ignored;
      socket_.cancel(ignored);
      context_.restart();
      context_.run();
      if (result == boost::asio::error::operation_aborted) return false;
    }
    if (result) {
      eof_ = true;
      return false;
    }
    buffer_.append(chunk, got);
    return true;
  }

  boost::asio::io_context context_;
  boost::asio::ip::tcp::socket socket_{context_};
  std::string buffer_;
  std::string sent_;
  bool eof_ = false;
};

}  // namespace raftsync::transport::test
