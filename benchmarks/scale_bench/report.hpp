// The figures of one scale_bench run: the table printed at the end (with the in-run baselines,
// the ratios and the goals) and the --json file.
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "tree.hpp"

namespace scale_bench {

inline constexpr int phase_count = 10;
// "generate", "baseline", "initial", "preseeded", "burst", "rm", "rename", "restart", "idle",
// "state" for 1..10.
const char* phase_name(int number);
// 1..10 for a number or a name, 0 for anything else.
int phase_number(const std::string& text);

struct phase_result {
  std::string outcome;  // "" not run, "ok", "timed out", "failed", or why it did nothing
  double seconds = -1;  // the phase's figure (see the header of main.cpp); < 0 when none
  phase_costs costs;
  bool has_costs = false;
  std::vector<std::string> notes;
};

// Goals from the issue.
inline constexpr double goal_initial_vs_baseline = 2.0;
inline constexpr double goal_burst_vs_writer_plus_baseline = 2.0;
inline constexpr double goal_peak_rss_mib = 256;
inline constexpr double goal_restart_s = 3.0;
inline constexpr double goal_idle_cpu_percent = 0.5;

struct report {
  // Context printed in the header.
  void describe_run(std::uint64_t files, std::uint64_t seed, std::string raftsync,
                    std::string work);
  phase_result& phase(int number) { return phases[number - 1]; }
  const phase_result& phase(int number) const { return phases[number - 1]; }

  void print() const;
  bool write_json(const std::string& path) const;

  std::array<phase_result, phase_count> phases;
  std::uint64_t files_requested = 0;
  std::uint64_t seed = 0;
  std::string raftsync;
  std::string work;
  std::string load_at_start;
  tree_summary tree;
  double baseline_s = -1;
  burst_summary burst;
  int burst_writer = 0;
  double burst_baseline_s = -1;
  std::uint64_t rm_files = 0;
  double rm_command_s = -1;
  std::uint64_t rename_files = 0;
  double restart_stop_s = -1;
  bool restart_stopped_leader = false;  // then the restart's election is forced, not counted
  std::array<double, node_count> idle_cpu_percent{-1, -1, -1};
  std::array<std::uint64_t, node_count> state_bytes{};
  std::string aborted;  // why the run stopped early, "" when it did not
};

}  // namespace scale_bench
