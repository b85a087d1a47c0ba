// raftsync — a seeded, deterministic in-memory network for tests, examples, the simulation and the
// core benchmark.
//
// One in_memory_network owns a virtual clock (microseconds of virtual time, advanced only by the
// driver: no threads, no wall clock), one endpoint per node (a transport&), per-link fault settings
// (drop probability, delay range, reordering, duplication, queue bound) and partitions. Everything
// random comes from one generator seeded at construction, so the same seed and the same sequence
// of calls give the same deliveries, in the same order, at the same virtual times.
//
// Threading: single-threaded. send(), deliver_until() and step() must be called from one thread;
// receive handlers run on that thread, inside deliver_until() / step(), and may call send()
// (a message sent with zero delay during delivery is delivered by the same deliver_until()).
//
// Fault model, per directional link (from → to):
// - a message is dropped with drop_probability, or when the link is cut by a partition or a node is
//   down (checked when it is sent AND when it is due, so a partition also loses what is in flight);
// - otherwise it is delivered after a delay drawn uniformly from [delay_min_us, delay_max_us];
// - with reorder == false deliveries on the link keep send order (a message is never delivered
//   before one sent earlier on the same link); with reorder == true independent delays may reorder;
// - with duplicate_probability a second copy is scheduled with its own delay;
// - at most queue_limit messages are in flight on the link (0 = unbounded); beyond it send() drops
//   (transport.hpp: "if the peer's queue is full the message is dropped (and counted)").
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "raftsync/assert.hpp"
#include "raftsync/transport/transport.hpp"

namespace raftsync::transport {

// Fault settings of one directional link. Defaults: a perfect link (no loss, no delay, FIFO).
struct link_settings {
  double drop_probability = 0.0;       // in [0, 1]
  std::uint64_t delay_min_us = 0;      // virtual microseconds
  std::uint64_t delay_max_us = 0;      // >= delay_min_us
  bool reorder = false;                // allow later messages to overtake earlier ones
  double duplicate_probability = 0.0;  // in [0, 1]: chance that a second copy is delivered
  std::size_t queue_limit = 0;         // max messages in flight on the link; 0 = unbounded

  friend bool operator==(const link_settings&, const link_settings&) = default;
};

// What happened to the messages handed to the network (monotonic since construction or
// reset_counters()).
struct network_counters {
  std::uint64_t sent = 0;                // send() calls
  std::uint64_t delivered = 0;           // handler invocations
  std::uint64_t dropped_random = 0;      // lost by drop_probability
  std::uint64_t dropped_partition = 0;   // cut by a partition (at send or while in flight)
  std::uint64_t dropped_node_down = 0;   // sender or receiver down (at send or while in flight)
  std::uint64_t dropped_queue_full = 0;  // link queue_limit reached
  std::uint64_t dropped_no_handler = 0;  // receiver has no endpoint or no receive handler
  std::uint64_t duplicated = 0;          // extra copies scheduled
  std::uint64_t reordered = 0;           // deliveries that overtook an earlier message on the link

  friend bool operator==(const network_counters&, const network_counters&) = default;
};

// A small, fast, portable PRNG (splitmix64). std:: distributions are implementation-defined, so
// the network draws its own numbers to stay identical across standard libraries.
class deterministic_random {
 public:
  explicit deterministic_random(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [low, high] (inclusive); low <= high.
  std::uint64_t uniform(std::uint64_t low, std::uint64_t high) noexcept {
    if (low >= high) return low;
    const std::uint64_t span = high - low;
    if (span == ~0ull) return next();
    // Rejection sampling keeps the distribution exact.
    const std::uint64_t range = span + 1;
    const std::uint64_t limit = ~0ull - (~0ull % range) - 1;
    std::uint64_t x = next();
    while (x > limit)
      x = next();
    return low + x % range;
  }
  // Uniform in [0, 1).
  double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // True with probability p (p <= 0: never, p >= 1: always).
  bool chance(double p) noexcept {
    if (p <= 0.0) return false;
    if (p >= 1.0) return true;
    return unit() < p;
  }

 private:
  std::uint64_t state_;
};

class in_memory_network {
 public:
  explicit in_memory_network(std::uint64_t seed, link_settings default_link = {})
      : random_(seed), default_link_(default_link) {}

  in_memory_network(const in_memory_network&) = delete;
  in_memory_network& operator=(const in_memory_network&) = delete;

  // The transport of node `id`, created on first use. The reference stays valid for the
  // network's lifetime. send() on it delivers as `id` (the envelope's `from` is set to `id`).
  transport& endpoint(node_id id) {
    RAFTSYNC_ASSERT(id != raft::no_node, "node id 0 is not a node");
    auto& slot = endpoints_[id];
    if (!slot) slot = std::make_unique<endpoint_impl>(*this, id);
    return *slot;
  }

  // --- Link settings --------------------------------------------------------------------------
  // The settings of every link that has no explicit setting.
  void set_default_link(const link_settings& s) { default_link_ = s; }
  const link_settings& default_link() const noexcept { return default_link_; }
  // One direction (from → to).
  void set_link(node_id from, node_id to, const link_settings& s) { links_[{from, to}] = s; }
  // Both directions between a and b.
  void set_link_both(node_id a, node_id b, const link_settings& s) {
    set_link(a, b, s);
    set_link(b, a, s);
  }
  // Forgets every explicit link setting (all links use the default again).
  void clear_link_settings() { links_.clear(); }
  const link_settings& link(node_id from, node_id to) const {
    auto it = links_.find({from, to});
    return it == links_.end() ? default_link_ : it->second;
  }

  // --- Partitions and node liveness ------------------------------------------------------------
  // Splits the nodes into groups: two nodes can talk iff they are in the same group. A node not
  // listed in any group is alone (cut from everyone). Replaces any earlier partition.
  void partition(const std::vector<std::vector<node_id>>& groups) {
    group_of_.clear();
    std::uint64_t g = 0;
    for (const auto& group : groups) {
      ++g;
      for (node_id id : group)
        group_of_[id] = g;
    }
    partitioned_ = true;
  }
  // Cuts `id` from every other node (keeps other partitions in force).
  void isolate(node_id id) { isolated_.insert(id); }
  // Removes every partition and isolation. Messages already dropped stay dropped.
  void heal() {
    partitioned_ = false;
    group_of_.clear();
    isolated_.clear();
  }
  // True if a message from `from` to `to` would currently pass the partition and liveness checks.
  bool connected(node_id from, node_id to) const {
    if (from == to) return !down_.contains(from);
    if (isolated_.contains(from) || isolated_.contains(to)) return false;
    if (partitioned_) {
      auto a = group_of_.find(from), b = group_of_.find(to);
      if (a == group_of_.end() || b == group_of_.end() || a->second != b->second) return false;
    }
    return !down_.contains(from) && !down_.contains(to);
  }
  // A down node neither sends nor receives; messages in flight to or from it are dropped when due
  // (a crashed process loses its socket buffers).
  void set_node_down(node_id id, bool down) {
    if (down) {
      down_.insert(id);
    } else {
      down_.erase(id);
    }
  }
  bool node_down(node_id id) const { return down_.contains(id); }

  // --- Virtual time and delivery ----------------------------------------------------------------
  std::uint64_t now_us() const noexcept { return now_us_; }

  // Delivers, in order of due time (ties in send order), every message due at or before `time_us`,
  // including ones sent by handlers during this call, then sets the clock to `time_us` (never
  // backwards). Returns the number of handler invocations.
  std::size_t deliver_until(std::uint64_t time_us) {
    std::size_t count = 0;
    while (!queue_.empty() && queue_.front().due_us <= time_us) {
      if (deliver_front()) ++count;
    }
    now_us_ = std::max(now_us_, time_us);
    return count;
  }

  // Advances the clock to the next due message and delivers it (one handler call at most; a
  // message dropped when due counts as a step). Returns false if nothing is in flight.
  bool step() {
    if (queue_.empty()) return false;
    deliver_front();
    return true;
  }

  // Delivers until nothing is in flight or `max_deliveries` handler calls were made (handlers may
  // keep sending forever). Returns the number of handler calls.
  std::size_t deliver_all(std::size_t max_deliveries = static_cast<std::size_t>(-1)) {
    std::size_t count = 0;
    while (!queue_.empty() && count < max_deliveries) {
      if (deliver_front()) ++count;
    }
    return count;
  }

  // Due time of the next message in flight, if any.
  std::optional<std::uint64_t> next_due_us() const {
    if (queue_.empty()) return std::nullopt;
    return queue_.front().due_us;
  }
  std::size_t in_flight() const noexcept { return queue_.size(); }

  // Drops every message in flight (counted as dropped_node_down if an end is down, else
  // dropped_partition).
  void drop_in_flight() {
    for (auto& m : queue_) {
      count_drop(m.env.from, m.env.to);
      --link_state_[{m.env.from, m.env.to}].in_flight;
    }
    queue_.clear();
  }

  const network_counters& counters() const noexcept { return counters_; }
  void reset_counters() noexcept { counters_ = {}; }

 private:
  class endpoint_impl final : public transport {
   public:
    endpoint_impl(in_memory_network& net, node_id id) : net_(net), id_(id) {}
    void send(envelope e) override {
      e.from = id_;
      net_.send_from(std::move(e));
    }
    void set_receive_handler(receive_handler handler) override { handler_ = std::move(handler); }
    const receive_handler& handler() const noexcept { return handler_; }

   private:
    in_memory_network& net_;
    node_id id_;
    receive_handler handler_;
  };

  struct scheduled {
    std::uint64_t due_us;
    std::uint64_t sequence;       // global send order: tie-breaker, keeps the order total
    std::uint64_t link_sequence;  // order within the link, to count reorderings
    envelope env;
  };
  struct later {  // heap order: earliest due first, then earliest sent
    bool operator()(const scheduled& a, const scheduled& b) const noexcept {
      return a.due_us != b.due_us ? a.due_us > b.due_us : a.sequence > b.sequence;
    }
  };
  struct link_runtime {
    std::uint64_t last_due_us = 0;         // latest due time scheduled (FIFO links)
    std::uint64_t next_link_sequence = 0;  // next sequence number on the link
    std::uint64_t delivered_sequence = 0;  // highest link sequence delivered + 1
    std::size_t in_flight = 0;
  };

  void count_drop(node_id from, node_id to) {
    if (down_.contains(from) || down_.contains(to)) {
      ++counters_.dropped_node_down;
    } else {
      ++counters_.dropped_partition;
    }
  }

  void send_from(envelope e) {
    ++counters_.sent;
    const node_id from = e.from, to = e.to;
    if (!connected(from, to)) {
      count_drop(from, to);
      return;
    }
    const link_settings& s = link(from, to);
    link_runtime& rt = link_state_[{from, to}];
    if (random_.chance(s.drop_probability)) {
      ++counters_.dropped_random;
      return;
    }
    const bool duplicate = random_.chance(s.duplicate_probability);
    const int copies = duplicate ? 2 : 1;
    for (int copy = 0; copy < copies; ++copy) {
      if (s.queue_limit != 0 && rt.in_flight >= s.queue_limit) {
        ++counters_.dropped_queue_full;
        return;
      }
      std::uint64_t due =
          now_us_ + random_.uniform(s.delay_min_us, std::max(s.delay_min_us, s.delay_max_us));
      if (!s.reorder) due = std::max(due, rt.last_due_us);
      rt.last_due_us = std::max(rt.last_due_us, due);
      if (copy == 1) ++counters_.duplicated;
      ++rt.in_flight;
      queue_.push_back(scheduled{due, next_sequence_++, rt.next_link_sequence++,
                                 copy + 1 < copies ? e : std::move(e)});
      std::push_heap(queue_.begin(), queue_.end(), later{});
    }
  }

  // Pops the earliest message and hands it to its receiver. Returns true if a handler ran.
  bool deliver_front() {
    std::pop_heap(queue_.begin(), queue_.end(), later{});
    scheduled m = std::move(queue_.back());
    queue_.pop_back();
    now_us_ = std::max(now_us_, m.due_us);
    const node_id from = m.env.from, to = m.env.to;
    link_runtime& rt = link_state_[{from, to}];
    --rt.in_flight;
    if (m.link_sequence + 1 < rt.delivered_sequence) {
      ++counters_.reordered;
    } else {
      rt.delivered_sequence = m.link_sequence + 1;
    }
    if (!connected(from, to)) {
      count_drop(from, to);
      return false;
    }
    auto it = endpoints_.find(to);
    if (it == endpoints_.end() || !it->second->handler()) {
      ++counters_.dropped_no_handler;
      return false;
    }
    ++counters_.delivered;
    // A copy, so that a handler may replace itself (set_receive_handler) while it runs.
    const transport::receive_handler handler = it->second->handler();
    handler(std::move(m.env));
    return true;
  }

  deterministic_random random_;
  link_settings default_link_;
  std::map<std::pair<node_id, node_id>, link_settings> links_;
  std::map<std::pair<node_id, node_id>, link_runtime> link_state_;
  std::map<node_id, std::unique_ptr<endpoint_impl>> endpoints_;
  std::map<node_id, std::uint64_t> group_of_;
  bool partitioned_ = false;
  std::set<node_id> isolated_;
  std::set<node_id> down_;
  std::vector<scheduled> queue_;  // binary heap ordered by `later`
  std::uint64_t next_sequence_ = 0;
  std::uint64_t now_us_ = 0;
  network_counters counters_;
};

}  // namespace raftsync::transport
