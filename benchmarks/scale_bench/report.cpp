#include "report.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <optional>

namespace scale_bench {
namespace {

constexpr const char* names[phase_count] = {"generate", "baseline", "initial", "preseeded",
                                            "burst",    "rm",       "rename",  "restart",
                                            "idle",     "state"};
// Key prefixes in the JSON file.
constexpr const char* json_names[phase_count] = {
    "generate", "baseline_copy", "initial_sync", "preseeded_sync", "burst",
    "rm",       "rename",        "restart",      "idle",           "state_size"};
constexpr const char* titles[phase_count] = {
    "1 generate (not timed)", "2 baseline cp -a x2+sync", "3 initial sync",
    "4 pre-seeded sync",      "5 burst (git clone)",      "6 rm -rf",
    "7 rename directory",     "8 restart node 3",         "9 idle",
    "10 state size"};

double ratio(double value, double base) {
  return value >= 0 && base > 0 ? value / base : -1;
}

double mib(std::uint64_t bytes) {
  return static_cast<double>(bytes) / 1048576.0;
}

std::string read_load() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return in ? fmt::format("{} {} {}", one, five, fifteen) : "?";
}

// "met" / "NOT MET" for a figure against its goal, or the phase's outcome when it has no figure.
std::string verdict(const phase_result& phase, double value, double goal) {
  if (phase.outcome != "ok") return phase.outcome.empty() ? "" : phase.outcome;
  if (value < 0) return "";
  return value <= goal ? "met" : "NOT MET";
}

std::string seconds_text(double s) {
  return s >= 0 ? fmt::format("{:.2f}", s) : "—";
}

class json_object {
 public:
  void number(const std::string& key, double value, int decimals = 3) {
    items_.emplace_back(key, value < 0 ? "null" : fmt::format("{:.{}f}", value, decimals));
  }
  void integer(const std::string& key, std::uint64_t value) {
    items_.emplace_back(key, std::to_string(value));
  }
  void text(const std::string& key, const std::string& value) {
    std::string escaped;
    for (char c : value) {
      if (c == '"' || c == '\\') {
        escaped += '\\';
        escaped += c;
      } else if (c == '\n') {
        escaped += "\\n";
      } else if (static_cast<unsigned char>(c) >= 0x20) {
        escaped += c;
      }
    }
    items_.emplace_back(key, "\"" + escaped + "\"");
  }
  void boolean(const std::string& key, std::optional<bool> value) {
    items_.emplace_back(key, value ? (*value ? "true" : "false") : "null");
  }
  std::string str() const {
    std::string out = "{\n";
    for (std::size_t i = 0; i < items_.size(); ++i) {
      out += fmt::format("  \"{}\": {}{}\n", items_[i].first, items_[i].second,
                         i + 1 < items_.size() ? "," : "");
    }
    return out + "}\n";
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

// Goal verdicts shared by the table and the JSON: nullopt when the figure was not measured.
struct goal_checks {
  std::optional<bool> initial_sync;
  std::optional<bool> burst;
  std::optional<bool> leader_changes;
  std::optional<bool> peak_rss;
  std::optional<bool> restart;
  std::optional<bool> idle_cpu;
  std::uint64_t leader_changes_total = 0;
  std::array<std::uint64_t, node_count> peak_rss_kib{};
};

goal_checks check_goals(const report& r) {
  goal_checks g;
  const phase_result& initial = r.phase(3);
  if (initial.outcome == "ok" && r.baseline_s > 0) {
    g.initial_sync = initial.seconds <= goal_initial_vs_baseline * r.baseline_s;
  } else if (initial.outcome == "timed out" || initial.outcome == "failed") {
    g.initial_sync = false;
  }
  const phase_result& burst = r.phase(5);
  if (burst.outcome == "ok" && r.burst_baseline_s >= 0) {
    g.burst = burst.seconds <=
              goal_burst_vs_writer_plus_baseline * (r.burst.writer_s + r.burst_baseline_s);
  } else if (burst.outcome == "timed out" || burst.outcome == "failed") {
    g.burst = false;
  }
  bool any_costs = false;
  for (const phase_result& phase : r.phases) {
    if (!phase.has_costs) continue;
    any_costs = true;
    const bool forced = &phase == &r.phase(8) && r.restart_stopped_leader;
    if (!forced) g.leader_changes_total += phase.costs.leader_changes;
    for (int i = 0; i < node_count; ++i)
      g.peak_rss_kib[i] = std::max(g.peak_rss_kib[i], phase.costs.peak_rss_kib[i]);
  }
  if (any_costs) {
    g.leader_changes = g.leader_changes_total == 0;
    g.peak_rss = *std::max_element(g.peak_rss_kib.begin(), g.peak_rss_kib.end()) / 1024.0 <=
                 goal_peak_rss_mib;
  }
  const phase_result& restart = r.phase(8);
  if (restart.outcome == "ok") {
    g.restart = restart.seconds <= goal_restart_s;
  } else if (restart.outcome == "timed out" || restart.outcome == "failed") {
    g.restart = false;
  }
  if (r.phase(9).outcome == "ok") {
    g.idle_cpu = *std::max_element(r.idle_cpu_percent.begin(), r.idle_cpu_percent.end()) <=
                 goal_idle_cpu_percent;
  }
  return g;
}

std::string goal_text(std::optional<bool> met) {
  return met ? (*met ? "met" : "NOT MET") : "not measured";
}

}  // namespace

const char* phase_name(int number) {
  return number >= 1 && number <= phase_count ? names[number - 1] : "?";
}

int phase_number(const std::string& text) {
  for (int i = 0; i < phase_count; ++i) {
    if (text == names[i] || text == std::to_string(i + 1)) return i + 1;
  }
  return 0;
}

void report::describe_run(std::uint64_t files, std::uint64_t seed_value, std::string program,
                          std::string work_dir) {
  files_requested = files;
  seed = seed_value;
  raftsync = std::move(program);
  work = std::move(work_dir);
  load_at_start = read_load();
  fmt::print(
      "scale_bench: 3 raftsync node processes on 127.0.0.1, durable logs; --files {} --seed {}\n"
      "  node program {}\n  work dir {}\n  {} cores, load average {}\n",
      files, seed, raftsync, work, sysconf(_SC_NPROCESSORS_ONLN), load_at_start);
}

void report::print() const {
  fmt::print(
      "\nscale_bench: {} files, {} directories, {} symlinks, {:.1f} MiB; 3 raftsync nodes on "
      "loopback; load average {} at start, {} at the end\n",
      tree.files, tree.directories, tree.symlinks, mib(tree.total_bytes), load_at_start,
      read_load());
  fmt::print("{:<26} {:>9}  {:<50} {:<24} {:<10} {:>15} {:>7}\n", "phase", "time s", "figures",
             "goal", "verdict", "peak RSS MiB", "leader");
  fmt::print("{:<26} {:>9}  {:<50} {:<24} {:<10} {:>15} {:>7}\n", "", "", "", "", "", "n1/n2/n3",
             "changes");
  for (int number = 1; number <= phase_count; ++number) {
    const phase_result& phase = this->phase(number);
    if (phase.outcome.empty()) {
      fmt::print("{:<26} {:>9}  {}\n", titles[number - 1], "—", "skipped");
      continue;
    }
    std::string figures;
    std::string goal;
    std::string verdict_text = phase.outcome == "ok" ? "" : phase.outcome;
    double time_s = phase.seconds;
    switch (number) {
      case 1:
        figures = fmt::format("{} files, {:.1f} MiB", tree.files, mib(tree.total_bytes));
        break;
      case 2:
        if (phase.seconds > 0) {
          figures = fmt::format("{:.1f} MB/s of tree", tree.total_bytes / 1e6 / phase.seconds);
        }
        break;
      case 3:
      case 4: {
        const double r = ratio(phase.seconds, baseline_s);
        figures = phase.outcome == "ok" && r >= 0 ? fmt::format("{:.2f}x baseline", r) : "";
        goal = "<= 2x baseline";
        verdict_text = verdict(phase, r, goal_initial_vs_baseline);
        break;
      }
      case 5: {
        const double r = ratio(phase.seconds, burst.writer_s + burst_baseline_s);
        figures = fmt::format("{} files, node {}: writer {:.2f} + base {}", burst.files,
                              burst_writer, burst.writer_s, seconds_text(burst_baseline_s));
        if (phase.outcome == "ok" && r >= 0) figures += fmt::format(" -> {:.2f}x", r);
        goal = "<= 2x (writer+baseline)";
        verdict_text = verdict(phase, r, goal_burst_vs_writer_plus_baseline);
        break;
      }
      case 6:
        figures = fmt::format("{} files; rm itself {} s", rm_files, seconds_text(rm_command_s));
        break;
      case 7:
        figures = fmt::format("{} files", rename_files);
        break;
      case 8:
        figures = fmt::format("stop {} s{}", seconds_text(restart_stop_s),
                              restart_stopped_leader ? "; node 3 was the leader" : "");
        goal = "<= 3 s";
        verdict_text = verdict(phase, phase.seconds, goal_restart_s);
        break;
      case 9: {
        figures = fmt::format("CPU % of a core {:.2f}/{:.2f}/{:.2f}", idle_cpu_percent[0],
                              idle_cpu_percent[1], idle_cpu_percent[2]);
        goal = "<= 0.5 %";
        const double worst = *std::max_element(idle_cpu_percent.begin(), idle_cpu_percent.end());
        verdict_text = verdict(phase, worst, goal_idle_cpu_percent);
        break;
      }
      case 10:
        figures = fmt::format("state MiB {:.1f}/{:.1f}/{:.1f}", mib(state_bytes[0]),
                              mib(state_bytes[1]), mib(state_bytes[2]));
        time_s = -1;
        break;
    }
    std::string rss;
    std::string leaders;
    if (phase.has_costs) {
      rss = fmt::format("{:.0f}/{:.0f}/{:.0f}", phase.costs.peak_rss_kib[0] / 1024.0,
                        phase.costs.peak_rss_kib[1] / 1024.0, phase.costs.peak_rss_kib[2] / 1024.0);
      leaders = std::to_string(phase.costs.leader_changes);
    }
    fmt::print("{:<26} {:>9}  {:<50} {:<24} {:<10} {:>15} {:>7}\n", titles[number - 1],
               seconds_text(time_s), figures, goal, verdict_text, rss, leaders);
  }
  goal_checks g = check_goals(*this);
  const double worst_rss = *std::max_element(g.peak_rss_kib.begin(), g.peak_rss_kib.end()) / 1024.0;
  fmt::print(
      "goals: initial sync <= 2x baseline: {}; burst <= 2x (writer + baseline): {}; 0 leader "
      "changes: {} ({}{}); peak RSS <= 256 MiB per node: {} (max {:.0f} MiB); restart <= 3 s: {}; "
      "idle CPU <= 0.5 %: {}\n",
      goal_text(g.initial_sync), goal_text(g.burst), goal_text(g.leader_changes),
      g.leader_changes_total,
      restart_stopped_leader ? ", not counting the election forced by stopping the leader" : "",
      goal_text(g.peak_rss), worst_rss, goal_text(g.restart), goal_text(g.idle_cpu));
  fmt::print(
      "(burst baseline: the burst's directory copied twice with cp -a + sync, after it "
      "converged; peak RSS: VmHWM reset at each phase's start and VmRSS sampled every 100 ms)\n");
  for (int number = 1; number <= phase_count; ++number) {
    const phase_result& phase = this->phase(number);
    std::vector<std::string> lines = phase.notes;
    if (phase.has_costs && phase.costs.warning_lines > 0) {
      lines.push_back(
          fmt::format("{} WARN/ERROR lines in the nodes' logs, e.g.:", phase.costs.warning_lines));
      for (const std::string& example : phase.costs.warning_examples)
        lines.push_back("  " + example);
    }
    if (phase.has_costs && phase.costs.leader_changes > 0) {
      lines.push_back(fmt::format("highest term seen {}{}", phase.costs.max_term,
                                  phase.costs.leader_changes_reported
                                      ? " (leader changes as the nodes report them)"
                                      : " (leader changes from the nodes' logs and status)"));
    }
    if (lines.empty()) continue;
    fmt::print("{}:\n", titles[number - 1]);
    for (const std::string& line : lines)
      fmt::print("    {}\n", line);
  }
  if (!aborted.empty()) fmt::print("run stopped early: {}\n", aborted);
}

bool report::write_json(const std::string& path) const {
  json_object json;
  json.integer("files", tree.files);
  json.integer("directories", tree.directories);
  json.integer("symlinks", tree.symlinks);
  json.integer("tree_bytes", tree.total_bytes);
  json.integer("seed", seed);
  for (int number = 1; number <= phase_count; ++number) {
    const phase_result& phase = this->phase(number);
    const std::string prefix = json_names[number - 1];
    json.text(prefix + "_result", phase.outcome.empty() ? "skipped" : phase.outcome);
    if (phase.has_costs) {
      for (int i = 0; i < node_count; ++i) {
        json.number(fmt::format("{}_peak_rss_MiB_node{}", prefix, i + 1),
                    phase.costs.peak_rss_kib[i] / 1024.0, 1);
      }
      json.integer(prefix + "_leader_changes", phase.costs.leader_changes);
      json.integer(prefix + "_warning_lines", phase.costs.warning_lines);
    }
  }
  auto ok_seconds = [this](int number) {
    return phase(number).outcome == "ok" ? phase(number).seconds : -1.0;
  };
  json.number("generate_s", ok_seconds(1));
  json.number("baseline_copy_s", baseline_s);
  json.number("initial_sync_s", ok_seconds(3));
  json.number("initial_sync_vs_baseline", ratio(ok_seconds(3), baseline_s));
  json.number("preseeded_sync_s", ok_seconds(4));
  json.number("preseeded_sync_vs_baseline", ratio(ok_seconds(4), baseline_s));
  json.integer("burst_files", burst.files);
  json.integer("burst_bytes", burst.total_bytes);
  json.number("burst_writer_s", phase(5).outcome.empty() ? -1 : burst.writer_s);
  json.number("burst_baseline_copy_s", burst_baseline_s);
  json.number("burst_converged_s", ok_seconds(5));
  json.number("burst_vs_writer_plus_baseline",
              ratio(ok_seconds(5), burst_baseline_s < 0 ? -1 : burst.writer_s + burst_baseline_s));
  json.number("burst_files_per_s",
              ok_seconds(5) > 0 ? static_cast<double>(burst.files) / ok_seconds(5) : -1, 1);
  json.integer("rm_files", rm_files);
  json.number("rm_command_s", rm_command_s);
  json.number("rm_converged_s", ok_seconds(6));
  json.integer("rename_files", rename_files);
  json.number("rename_converged_s", ok_seconds(7));
  json.number("restart_stop_s", restart_stop_s);
  json.number("restart_s", ok_seconds(8));
  json.boolean("restart_stopped_leader", phase(8).outcome.empty()
                                             ? std::optional<bool>()
                                             : std::optional<bool>(restart_stopped_leader));
  for (int i = 0; i < node_count; ++i)
    json.number(fmt::format("idle_cpu_percent_node{}", i + 1), idle_cpu_percent[i]);
  for (int i = 0; i < node_count; ++i) {
    json.number(fmt::format("state_size_MiB_node{}", i + 1),
                phase(10).outcome == "ok" ? mib(state_bytes[i]) : -1.0, 1);
  }
  goal_checks g = check_goals(*this);
  for (int i = 0; i < node_count; ++i) {
    json.number(fmt::format("peak_rss_MiB_node{}", i + 1), g.peak_rss_kib[i] / 1024.0, 1);
  }
  json.integer("leader_changes", g.leader_changes_total);
  json.boolean("goal_initial_sync_met", g.initial_sync);
  json.boolean("goal_burst_met", g.burst);
  json.boolean("goal_leader_changes_met", g.leader_changes);
  json.boolean("goal_peak_rss_met", g.peak_rss);
  json.boolean("goal_restart_met", g.restart);
  json.boolean("goal_idle_cpu_met", g.idle_cpu);
  json.text("aborted", aborted);
  std::ofstream out(path);
  out << json.str();
  return static_cast<bool>(out);
}

}  // namespace scale_bench
