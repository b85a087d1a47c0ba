// A minimal Raft driver over the TCP transport, shared by the transport's Raft test and
// benchmarks/raft_tcp_bench: one raw_node + memory_storage + tcp_transport per node, all on one
// single-threaded io_context per node (so the receive handler, the tick timer and the ready loop
// never run concurrently and need no locks).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/raw_node.hpp"
#include "raftsync/transport/tcp_transport.hpp"

namespace raftsync::transport::test {

// What the driver needs from a node's storage: the read side for the core, a bootstrap for a new
// member, and persisting one ready (hard state, entries, snapshot) before its messages are sent.
class node_storage {
 public:
  virtual ~node_storage() = default;
  virtual const raft::storage& reader() const = 0;
  virtual std::error_code bootstrap(const raft::conf_state& conf) = 0;
  virtual std::error_code save(const raft::ready& rd) = 0;
};

class memory_node_storage final : public node_storage {
 public:
  const raft::storage& reader() const override { return storage_; }
  std::error_code bootstrap(const raft::conf_state& conf) override {
    storage_.bootstrap(conf);
    return {};
  }
  std::error_code save(const raft::ready& rd) override {
    if (!rd.snapshot.empty())
      if (auto ec = storage_.apply_snapshot(rd.snapshot)) return ec;
    if (auto ec = storage_.append(rd.entries)) return ec;
    if (rd.hard) storage_.set_hard_state(*rd.hard);
    return {};
  }

 private:
  raft::memory_storage storage_;
};

struct raft_tcp_options {
  std::chrono::milliseconds tick{10};
  std::uint32_t election_ticks = 10;
  std::uint32_t heartbeat_ticks = 1;
  std::uint64_t random_seed = 1;
};

class raft_tcp_node {
 public:
  // Called on the node's thread for every committed entry, in log order.
  using apply_function = std::function<void(const raft::entry&)>;

  // `storage` defaults to a memory_node_storage.
  raft_tcp_node(node_id id, std::vector<node_id> voters, tcp_transport_config transport_config,
                raft_tcp_options options, std::unique_ptr<node_storage> storage = nullptr)
      : id_(id),
        options_(options),
        tick_timer_(context_),
        storage_(storage ? std::move(storage) : std::make_unique<memory_node_storage>()) {
    if (auto ec = storage_->bootstrap(raft::conf_state{std::move(voters), {}})) {
      create_error_ = ec;
      return;
    }
    raft::config cfg;
    cfg.id = id;
    cfg.election_ticks = options.election_ticks;
    cfg.heartbeat_ticks = options.heartbeat_ticks;
    cfg.random_seed = options.random_seed * 1000 + id;
    auto node = raft::raw_node::create(cfg, storage_->reader());
    if (!node) {
      create_error_ = node.error();
      return;
    }
    node_.emplace(std::move(*node));
    transport_config.id = id;
    auto transport = tcp_transport::create(context_.get_executor(), std::move(transport_config));
    if (!transport) {
      create_error_ = transport.error();
      return;
    }
    transport_ = std::move(*transport);
    transport_->set_receive_handler([this](envelope e) {
      if (auto* m = std::get_if<raft::message>(&e.body)) {
        (void)node_->step(*m);
        schedule_ready();
      }
    });
  }

  ~raft_tcp_node() { stop(); }

  std::error_code create_error() const { return create_error_; }
  // Node-thread only (or after stop()): the error that stopped the node, if any.
  std::error_code save_error() const { return save_error_; }

  // Binds the listener (port readable with port() afterwards); the node does not run yet.
  std::error_code listen() { return transport_->start(); }
  std::uint16_t port() const { return transport_->listen_port(); }
  void add_peer(node_id id, peer_address address) { transport_->add_peer(id, std::move(address)); }
  tcp_transport& transport() { return *transport_; }

  // Before run().
  void set_apply(apply_function f) { apply_ = std::move(f); }

  void run() {
    work_.emplace(context_.get_executor());
    thread_ = std::thread([this] { context_.run(); });
    boost::asio::post(context_, [this] { arm_tick(); });
  }

  void stop() {
    if (!thread_.joinable()) return;
    if (transport_) transport_->stop();
    boost::asio::post(context_, [this] {
      stopped_ = true;
      tick_timer_.cancel();
    });
    work_.reset();
    thread_.join();
  }

  // Runs `f` on the node's thread (where raw_node may be touched).
  template <typename F>
  void post(F f) {
    boost::asio::post(context_, std::move(f));
  }

  // The node's io_context (for timers of code that runs on the node's thread).
  boost::asio::io_context& context() { return context_; }

  // Node-thread only.
  raft::raw_node& raw() { return *node_; }
  void schedule_ready() {
    if (ready_scheduled_) return;
    ready_scheduled_ = true;
    boost::asio::post(context_, [this] {
      ready_scheduled_ = false;
      process_ready();
    });
  }

  // Any thread.
  node_id leader() const { return leader_.load(); }
  bool is_leader() const { return leader_.load() == id_ && role_leader_.load(); }
  std::uint64_t applied() const { return applied_.load(); }
  node_id id() const { return id_; }

 private:
  void arm_tick() {
    if (stopped_) return;
    tick_timer_.expires_after(options_.tick);
    tick_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec || stopped_) return;
      node_->tick();
      process_ready();
      arm_tick();
    });
  }

  void process_ready() {
    while (!stopped_ && node_->has_ready()) {
      raft::ready rd = node_->ready();
      if (rd.soft) {
        leader_.store(rd.soft->leader);
        role_leader_.store(rd.soft->role == raft::role::leader);
      }
      if (auto ec = storage_->save(rd)) {
        // A storage that cannot persist must not send or apply (see durable_storage.hpp); this
        // test driver simply stops the node's progress.
        save_error_ = ec;
        stopped_ = true;
        return;
      }
      for (auto& m : rd.messages)
        transport_->send(envelope{id_, m.to, std::move(m)});
      for (const auto& e : rd.committed_entries) {
        if (e.type == raft::entry_type::conf_change) {
          if (auto cc = raft::decode_conf_change(e.data)) node_->apply_conf_change(*cc);
        }
        applied_.store(e.index);
        if (apply_) apply_(e);
      }
      node_->advance(rd);
    }
  }

  node_id id_;
  raft_tcp_options options_;
  boost::asio::io_context context_{1};
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  boost::asio::steady_timer tick_timer_;
  std::unique_ptr<node_storage> storage_;
  std::optional<raft::raw_node> node_;
  std::unique_ptr<tcp_transport> transport_;
  std::error_code create_error_;
  std::error_code save_error_;
  apply_function apply_;
  bool ready_scheduled_ = false;
  bool stopped_ = false;
  std::atomic<node_id> leader_{raft::no_node};
  std::atomic<bool> role_leader_{false};
  std::atomic<std::uint64_t> applied_{0};
};

// Builds n nodes (ids 1..n) on loopback ephemeral ports and tells each the others' addresses.
inline std::vector<std::unique_ptr<raft_tcp_node>> make_raft_tcp_cluster(
    std::size_t n, const std::function<tcp_transport_config(node_id)>& transport_config,
    raft_tcp_options options,
    const std::function<raft_tcp_node::apply_function(node_id)>& apply = {},
    const std::function<std::unique_ptr<node_storage>(node_id)>& storage = {}) {
  std::vector<node_id> voters;
  for (std::size_t i = 1; i <= n; ++i)
    voters.push_back(i);
  std::vector<std::unique_ptr<raft_tcp_node>> nodes;
  for (node_id id : voters) {
    nodes.push_back(std::make_unique<raft_tcp_node>(id, voters, transport_config(id), options,
                                                    storage ? storage(id) : nullptr));
    if (nodes.back()->create_error() || nodes.back()->listen()) return {};
    if (apply) nodes.back()->set_apply(apply(id));
  }
  for (auto& a : nodes)
    for (auto& b : nodes)
      if (a != b) a->add_peer(b->id(), {"127.0.0.1", b->port()});
  for (auto& node : nodes)
    node->run();
  return nodes;
}

}  // namespace raftsync::transport::test
