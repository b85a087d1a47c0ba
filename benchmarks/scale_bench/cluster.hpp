// Three `raftsync` node processes on loopback for scale_bench: starting and stopping them, their
// status, what they cost while a phase runs (peak RSS, leader changes, warnings in their logs),
// and waiting — polled, with a deadline — until their folders converge.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"
#include "tree.hpp"

namespace scale_bench {

inline constexpr int node_count = 3;

// `raftsync status` of one node, parsed. ok = false when the command failed or timed out.
struct node_status {
  bool ok = false;
  std::string error;
  std::string role;
  std::uint64_t term = 0;
  std::uint64_t leader = 0;
  std::uint64_t commit_index = 0;
  std::uint64_t applied_index = 0;
  std::uint64_t last_index = 0;
  std::uint64_t pending_proposals = 0;
  std::uint64_t files = 0;                      // manifest entries: files, directories and symlinks
  std::optional<std::uint64_t> leader_changes;  // when the node reports it
  std::optional<std::uint64_t> unread_changes;  // when the node reports it
  std::string halted_reasons;                   // empty when not halted
};

// What the nodes did during one phase (between begin_phase() and end_phase()).
struct phase_costs {
  std::array<std::uint64_t, node_count> peak_rss_kib{};
  // Leader changes after the phase's first known leader: the larger of what the nodes report
  // (status `leader_changes`, when present) and the terms with a leader seen in the nodes' logs
  // ("term N: leader is node M") and in polled status.
  std::uint64_t leader_changes = 0;
  bool leader_changes_reported = false;  // the status field was present
  std::uint64_t max_term = 0;
  std::uint64_t warning_lines = 0;            // WARN and ERROR lines in the nodes' logs
  std::vector<std::string> warning_examples;  // "node 2: <message>", first few distinct ones
};

class cluster {
 public:
  // Nodes 1..3 keep their folder in base/node<i>, their state in base/state<i> and their log in
  // base/node<i>.log. extra_args are passed to every node.
  cluster(std::filesystem::path raftsync, std::filesystem::path base,
          std::filesystem::path secret_file, std::vector<std::string> extra_args);
  ~cluster();  // stops every running node
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  std::filesystem::path folder(int node) const;
  std::filesystem::path state_dir(int node) const;
  std::filesystem::path log_file(int node) const;
  pid_t pid(int node) const;
  const std::filesystem::path& raftsync() const { return raftsync_; }

  // Throws std::runtime_error when the program cannot be started.
  void start(int node);
  void start_all();
  // SIGTERM, SIGKILL after 30 s. Seconds until it exited.
  double stop(int node, bool* killed = nullptr);
  void stop_all();
  // "" while every started node runs, else "node 2 exited (signal 6 (Aborted))".
  std::string check_alive();

  node_status status(int node, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  command_result flush(int node, std::chrono::milliseconds timeout, bool all = false);

  void begin_phase();
  phase_costs end_phase();
  // Any node's role, term and leader; "" when no status answered.
  std::string describe_roles();

 private:
  struct node_slot {
    pid_t pid = -1;
    bool running = false;
    std::string exit_description;
    std::uint64_t log_offset = 0;
    // status leader_changes accounting for the current phase
    bool has_counter_base = false;
    std::uint64_t counter_last = 0;
    std::uint64_t counter_delta = 0;
  };
  void observe(int node, const node_status& status);
  void note_leader_term(std::uint64_t term);
  void scan_logs(phase_costs* costs);
  void sample_memory();

  std::filesystem::path raftsync_;
  std::filesystem::path base_;
  std::filesystem::path secret_file_;
  std::vector<std::string> extra_args_;
  std::vector<std::uint16_t> ports_;
  std::array<node_slot, node_count> nodes_;

  // Terms in which some node knew a leader: since the cluster started, and during this phase.
  std::uint64_t leader_term_before_phase_ = 0;  // 0: none known when the phase began
  std::set<std::uint64_t> phase_leader_terms_;
  std::uint64_t phase_max_term_ = 0;

  // The memory sampler (every 100 ms) and what it shares with the main thread.
  std::mutex memory_mutex_;
  std::array<pid_t, node_count> sampled_pids_{};
  std::array<std::uint64_t, node_count> peak_rss_kib_{};
  std::array<bool, node_count> hwm_valid_{};  // VmHWM was reset for this phase and process
  bool sampler_stop_ = false;
  std::thread sampler_;
};

struct convergence {
  bool converged = false;
  bool timed_out = false;
  std::string failure;    // a node exited or halted, or the timeout: what was seen last
  double seconds = 0;     // from the phase's start to the moment the trees were found converged
  bool verified = false;  // every node's tree compared equal to the expected one, contents too
  std::string verify_note;
  int tree_checks = 0;  // digest walks run while waiting
};

enum class converge_rule {
  // Converged at the end of a metadata walk (lstat of every entry) that found all three trees
  // matching the expected one, when the contents walk right after it found them identical too:
  // each tree matched at some moment of its walk, and a converging tree stays converged, so the
  // figure is late by at most one metadata walk and one poll (200 ms). Walks run at every poll
  // while the status says done (every node's `files` == the expected count, applied == commit,
  // nothing pending), less often while it does not: a rename leaves the count unchanged and the
  // status can say done before the watcher has seen the change.
  identical_trees,
  // Converged when every node's `files` equals the expected count (applied == commit, nothing
  // pending) and `raftsync flush` returned on all three; the trees are compared afterwards,
  // outside the measured time.
  status_and_flush,
};

convergence wait_converged(cluster& nodes, const tree_map& expected, converge_rule rule,
                           std::chrono::steady_clock::time_point start,
                           std::chrono::steady_clock::time_point deadline);

// After node `node` was started at `start`: the time until its status shows a known leader and
// `raftsync flush` on it returns.
convergence wait_restarted(cluster& nodes, int node, std::chrono::steady_clock::time_point start,
                           std::chrono::steady_clock::time_point deadline);

// Compares all three trees with the expected one (metadata first, then contents). "" when all
// are identical, else a description of the first differing node. *metadata_matched (when given)
// is set to the end of a metadata pass that found all three trees matching.
std::string compare_replicas(cluster& nodes, const tree_map& expected, bool contents,
                             std::chrono::steady_clock::time_point* metadata_matched = nullptr);

}  // namespace scale_bench
