// raft_core_bench: the CPU cost of the Raft core alone.
//
// A 3-node cluster (raw_node + memory_storage, no disk) on the in-memory network (no delay, no
// faults; messages are delivered as soon as the driver gets to them), all in one thread. For
// 256 B and 4 KiB payloads and 1, 8 and 32 concurrent proposers (closed loop: each proposer has
// one proposal outstanding and proposes again when it is applied on the leader), it measures
// commits per second and per-proposal latency (propose → applied on the leader, wall clock,
// p50/p99/max in µs).
//
//   raft_core_bench [--seconds S] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "raftsync/raft/config.hpp"
#include "raftsync/raft/memory_storage.hpp"
#include "raftsync/raft/raw_node.hpp"
#include "raftsync/transport/in_memory_network.hpp"

using namespace raftsync;
using raft::node_id;
using steady = std::chrono::steady_clock;

namespace {

struct node {
  node_id id = raft::no_node;
  raft::memory_storage storage;
  std::optional<raft::raw_node> raft;
  transport::transport* net = nullptr;
};

// A closed-loop workload on a fresh cluster.
class bench_cluster {
 public:
  explicit bench_cluster(std::uint64_t seed) : network_(seed) {
    const raft::conf_state initial{{1, 2, 3}, {}};
    for (node_id id = 1; id <= 3; ++id) {
      auto n = std::make_unique<node>();
      n->id = id;
      n->storage.bootstrap(initial);
      n->net = &network_.endpoint(id);
      n->net->set_receive_handler([this, id](transport::envelope e) {
        node& target = *nodes_[id - 1];
        if (auto* m = std::get_if<raft::message>(&e.body)) (void)target.raft->step(std::move(*m));
        handle_ready(target);
      });
      raft::config cfg;
      cfg.id = id;
      cfg.random_seed = seed + id;
      auto created = raft::raw_node::create(cfg, n->storage);
      if (!created) {
        std::fprintf(stderr, "cannot create node: %s\n", created.error().message().c_str());
        std::exit(1);
      }
      n->raft.emplace(std::move(created).value());
      nodes_.push_back(std::move(n));
    }
  }

  // Elects node 1 and lets the cluster settle.
  bool elect() {
    nodes_[0]->raft->campaign();
    handle_ready(*nodes_[0]);
    network_.deliver_all();
    return nodes_[0]->raft->status().soft.role == raft::role::leader;
  }

  // The loop: persist → send → apply → advance. Applying on the leader completes proposals.
  void handle_ready(node& n) {
    while (n.raft->has_ready()) {
      raft::ready rd = n.raft->ready();
      if (!rd.snapshot.empty()) (void)n.storage.apply_snapshot(rd.snapshot);
      (void)n.storage.append(rd.entries);
      if (rd.hard) n.storage.set_hard_state(*rd.hard);
      for (raft::message& m : rd.messages) {
        const node_id to = m.to;
        n.net->send(transport::envelope{n.id, to, std::move(m)});
      }
      if (n.id == 1) {
        for (const raft::entry& e : rd.committed_entries) {
          if (e.type != raft::entry_type::normal || e.data.size() < 8) continue;
          std::uint64_t tag = 0;
          std::memcpy(&tag, e.data.data(), sizeof tag);
          on_applied(tag);
        }
      }
      // Keep memory bounded: compact the log behind what everyone applied.
      n.raft->advance(rd);
      if (!rd.committed_entries.empty()) maybe_compact(n, rd.committed_entries.back().index);
    }
  }

  void maybe_compact(node& n, std::uint64_t applied) {
    if (applied < n.storage.first_index() + 20000) return;
    const std::uint64_t at = applied - 10000;
    const raft::conf_state conf = n.raft->status().conf;
    if (!n.storage.create_snapshot(at, conf)) (void)n.storage.compact(at);
  }

  // Runs `concurrency` proposers with `payload_bytes` payloads for `seconds`.
  void run(std::size_t payload_bytes, std::size_t concurrency, double seconds) {
    payload_.assign(payload_bytes, 'x');
    latencies_ns_.clear();
    outstanding_.clear();
    const auto deadline = steady::now() + std::chrono::duration<double>(seconds);
    for (std::size_t i = 0; i < concurrency; ++i)
      propose_next();
    std::uint64_t loops = 0;
    while (true) {
      flush_proposals();
      network_.deliver_all();
      // Heartbeats and elections are driven by ticks; one every 256 rounds keeps the cluster
      // healthy without measuring timer work.
      if (++loops % 256 == 0) {
        for (auto& n : nodes_) {
          n->raft->tick();
          handle_ready(*n);
        }
        if (steady::now() >= deadline) break;
      }
    }
    elapsed_s_ = seconds;
  }

  const std::vector<std::uint64_t>& latencies_ns() const { return latencies_ns_; }

 private:
  void propose_next() { to_propose_.push_back(next_tag_++); }

  void flush_proposals() {
    if (to_propose_.empty()) return;
    node& leader = *nodes_[0];
    for (std::uint64_t tag : to_propose_) {
      std::memcpy(payload_.data(), &tag, sizeof tag);
      outstanding_[tag] = steady::now();
      if (auto ec = leader.raft->propose(payload_)) {
        std::fprintf(stderr, "proposal rejected: %s\n", ec.message().c_str());
        std::exit(1);
      }
    }
    to_propose_.clear();
    handle_ready(leader);
  }

  void on_applied(std::uint64_t tag) {
    auto it = outstanding_.find(tag);
    if (it == outstanding_.end()) return;
    latencies_ns_.push_back(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - it->second).count()));
    outstanding_.erase(it);
    propose_next();
  }

  transport::in_memory_network network_;
  std::vector<std::unique_ptr<node>> nodes_;
  std::string payload_;
  std::uint64_t next_tag_ = 1;
  std::vector<std::uint64_t> to_propose_;
  std::map<std::uint64_t, steady::time_point> outstanding_;
  std::vector<std::uint64_t> latencies_ns_;
  double elapsed_s_ = 0;
};

struct row {
  std::size_t payload_bytes;
  std::size_t concurrency;
  double commits_per_s;
  double p50_us, p99_us, max_us;
};

row measure(std::size_t payload_bytes, std::size_t concurrency, double seconds) {
  bench_cluster c(payload_bytes * 100 + concurrency);
  if (!c.elect()) {
    std::fprintf(stderr, "node 1 was not elected\n");
    std::exit(1);
  }
  const auto start = steady::now();
  c.run(payload_bytes, concurrency, seconds);
  const double elapsed = std::chrono::duration<double>(steady::now() - start).count();
  std::vector<std::uint64_t> ns = c.latencies_ns();
  std::sort(ns.begin(), ns.end());
  row r{payload_bytes, concurrency, 0, 0, 0, 0};
  if (ns.empty()) return r;
  auto at = [&](double q) {
    return static_cast<double>(
               ns[static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1))]) /
           1000.0;
  };
  r.commits_per_s = static_cast<double>(ns.size()) / elapsed;
  r.p50_us = at(0.50);
  r.p99_us = at(0.99);
  r.max_us = static_cast<double>(ns.back()) / 1000.0;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0.5;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::strtod(argv[++i], nullptr);
    } else if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr, "usage: raft_core_bench [--seconds S] [--json FILE]\n");
      return 2;
    }
  }
  std::vector<row> rows;
  std::printf("raft_core_bench: 3 nodes, in-memory network, no disk, %.2f s per case\n", seconds);
  std::printf("%-8s %-11s %14s %12s %12s %12s\n", "payload", "proposers", "commits/s", "p50 us",
              "p99 us", "max us");
  for (std::size_t payload : {std::size_t{256}, std::size_t{4096}}) {
    for (std::size_t concurrency : {std::size_t{1}, std::size_t{8}, std::size_t{32}}) {
      const row r = measure(payload, concurrency, seconds);
      rows.push_back(r);
      std::printf("%-8zu %-11zu %14.0f %12.1f %12.1f %12.1f\n", r.payload_bytes, r.concurrency,
                  r.commits_per_s, r.p50_us, r.p99_us, r.max_us);
    }
  }
  if (!json.empty()) {
    std::ofstream out(json);
    out << "{";
    bool first = true;
    for (const row& r : rows) {
      const std::string key =
          "p" + std::to_string(r.payload_bytes) + "_c" + std::to_string(r.concurrency);
      auto field = [&](const std::string& name, double v) {
        char number[64];
        std::snprintf(number, sizeof number, "%.3f", v);
        out << (first ? "\n  \"" : ",\n  \"") << key << name << "\": " << number;
        first = false;
      };
      field("_commits_per_s", r.commits_per_s);
      field("_commit_us_p50", r.p50_us);
      field("_commit_us_p99", r.p99_us);
      field("_commit_us_max", r.max_us);
    }
    out << "\n}\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", json.c_str());
      return 1;
    }
  }
  return 0;
}
