#include "cluster.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <stdexcept>

namespace scale_bench {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds_between(clock_type::time_point from, clock_type::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// The value after "key": in a flat JSON object, as a number or a string (without quotes); nullopt
// when the key is absent. Enough for `raftsync status`, whose output the benchmark knows.
std::optional<std::string> json_field(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  auto at = json.find(needle);
  if (at == std::string::npos) return std::nullopt;
  at += needle.size();
  while (at < json.size() && json[at] == ' ')
    ++at;
  if (at < json.size() && json[at] == '"') {
    auto end = json.find('"', at + 1);
    if (end == std::string::npos) return std::nullopt;
    return json.substr(at + 1, end - at - 1);
  }
  if (at < json.size() && json[at] == '[') {
    auto end = json.find(']', at);
    if (end == std::string::npos) return std::nullopt;
    return json.substr(at + 1, end - at - 1);
  }
  auto end = json.find_first_of(",}", at);
  return json.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

std::uint64_t json_number(const std::string& json, const std::string& key) {
  auto value = json_field(json, key);
  return value ? std::strtoull(value->c_str(), nullptr, 10) : 0;
}

std::string first_line(const std::string& text) {
  auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

}  // namespace

cluster::cluster(std::filesystem::path raftsync, std::filesystem::path base,
                 std::filesystem::path secret_file, std::vector<std::string> extra_args)
    : raftsync_(std::move(raftsync)),
      base_(std::move(base)),
      secret_file_(std::move(secret_file)),
      extra_args_(std::move(extra_args)),
      ports_(pick_free_ports(node_count)) {
  std::filesystem::create_directories(base_);
  sampler_ = std::thread([this] { sample_memory(); });
}

cluster::~cluster() {
  stop_all();
  {
    std::lock_guard lock(memory_mutex_);
    sampler_stop_ = true;
  }
  sampler_.join();
}

std::filesystem::path cluster::folder(int node) const {
  return base_ / fmt::format("node{}", node);
}
std::filesystem::path cluster::state_dir(int node) const {
  return base_ / fmt::format("state{}", node);
}
std::filesystem::path cluster::log_file(int node) const {
  return base_ / fmt::format("node{}.log", node);
}
pid_t cluster::pid(int node) const {
  return nodes_[node - 1].pid;
}

void cluster::start(int node) {
  node_slot& slot = nodes_[node - 1];
  if (slot.running) return;
  std::filesystem::create_directories(state_dir(node));
  std::vector<std::string> args = {raftsync_.string(),
                                   "--id",
                                   std::to_string(node),
                                   "--dir",
                                   folder(node).string(),
                                   "--state-dir",
                                   state_dir(node).string(),
                                   "--listen",
                                   fmt::format("127.0.0.1:{}", ports_[node - 1]),
                                   "--secret-file",
                                   secret_file_.string(),
                                   "--log-level",
                                   "info"};
  for (int peer = 1; peer <= node_count; ++peer) {
    if (peer == node) continue;
    args.push_back("--peer");
    args.push_back(fmt::format("{}=127.0.0.1:{}", peer, ports_[peer - 1]));
  }
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::string error;
  pid_t pid = spawn_logged(args, log_file(node).string(), &error);
  if (pid < 0) throw std::runtime_error(fmt::format("node {}: {}", node, error));
  slot.pid = pid;
  slot.running = true;
  slot.exit_description.clear();
  slot.has_counter_base = false;  // a new process counts from zero
  std::lock_guard lock(memory_mutex_);
  sampled_pids_[node - 1] = pid;
  hwm_valid_[node - 1] = true;  // a new process: VmHWM starts within this phase
}

void cluster::start_all() {
  for (int node = 1; node <= node_count; ++node)
    start(node);
}

double cluster::stop(int node, bool* killed) {
  node_slot& slot = nodes_[node - 1];
  if (!slot.running) return 0;
  {
    // Keep the last peak of the process being stopped; stop sampling it.
    std::lock_guard lock(memory_mutex_);
    memory_sample sample;
    if (hwm_valid_[node - 1] && read_memory(slot.pid, &sample)) {
      peak_rss_kib_[node - 1] = std::max(peak_rss_kib_[node - 1], sample.hwm_kib);
    }
    sampled_pids_[node - 1] = 0;
  }
  bool was_killed = false;
  int wait_status = 0;
  double seconds = stop_child(slot.pid, 30s, &was_killed, &wait_status);
  if (killed != nullptr) *killed = was_killed;
  slot.running = false;
  slot.exit_description = describe_wait_status(wait_status);
  return seconds;
}

void cluster::stop_all() {
  for (int node = 1; node <= node_count; ++node)
    stop(node);
}

std::string cluster::check_alive() {
  for (int node = 1; node <= node_count; ++node) {
    node_slot& slot = nodes_[node - 1];
    int wait_status = 0;
    if (slot.running && child_exited(slot.pid, &wait_status)) {
      slot.running = false;
      slot.exit_description = describe_wait_status(wait_status);
      std::lock_guard lock(memory_mutex_);
      sampled_pids_[node - 1] = 0;
      return fmt::format("node {} exited ({}); see {}", node, slot.exit_description,
                         log_file(node).string());
    }
  }
  return {};
}

node_status cluster::status(int node, std::chrono::milliseconds timeout) {
  node_status status;
  command_result result = run_command({raftsync_.string(), "status", "--dir", folder(node).string(),
                                       "--state-dir", state_dir(node).string()},
                                      timeout);
  if (result.exit_code != 0) {
    status.error = result.timed_out ? "status timed out"
                                    : first_line(result.err.empty() ? result.out : result.err);
    return status;
  }
  const std::string& json = result.out;
  status.ok = true;
  status.role = json_field(json, "role").value_or("");
  status.term = json_number(json, "term");
  status.leader = json_number(json, "leader");
  status.commit_index = json_number(json, "commit_index");
  status.applied_index = json_number(json, "applied_index");
  status.last_index = json_number(json, "last_index");
  status.pending_proposals = json_number(json, "pending_proposals");
  status.files = json_number(json, "files");
  if (auto changes = json_field(json, "leader_changes")) {
    status.leader_changes = std::strtoull(changes->c_str(), nullptr, 10);
  }
  if (auto unread = json_field(json, "unread_changes")) {
    status.unread_changes = std::strtoull(unread->c_str(), nullptr, 10);
  }
  status.halted_reasons = json_field(json, "halted_reasons").value_or("");
  observe(node, status);
  return status;
}

command_result cluster::flush(int node, std::chrono::milliseconds timeout, bool all) {
  std::vector<std::string> args = {raftsync_.string(),
                                   "flush",
                                   "--dir",
                                   folder(node).string(),
                                   "--state-dir",
                                   state_dir(node).string(),
                                   "--timeout-ms",
                                   std::to_string(std::max<std::int64_t>(1, timeout.count()))};
  if (all) args.push_back("--all");
  return run_command(args, timeout + 10s);
}

void cluster::observe(int node, const node_status& status) {
  if (!status.ok) return;
  phase_max_term_ = std::max(phase_max_term_, status.term);
  if (status.leader != 0) note_leader_term(status.term);
  if (status.leader_changes) {
    node_slot& slot = nodes_[node - 1];
    const std::uint64_t value = *status.leader_changes;
    if (!slot.has_counter_base) {
      // From the first answer with a leader: a fresh process's first election is no change.
      if (status.leader != 0) {
        slot.has_counter_base = true;
        slot.counter_last = value;
      }
    } else if (value >= slot.counter_last) {
      slot.counter_delta += value - slot.counter_last;
      slot.counter_last = value;
    } else {
      slot.counter_last = value;  // the process restarted under us
    }
  }
}

void cluster::note_leader_term(std::uint64_t term) {
  if (term != 0) phase_leader_terms_.insert(term);
}

void cluster::begin_phase() {
  phase_leader_terms_.clear();
  phase_max_term_ = 0;
  for (int node = 1; node <= node_count; ++node) {
    node_slot& slot = nodes_[node - 1];
    std::error_code ec;
    auto size = std::filesystem::file_size(log_file(node), ec);
    slot.log_offset = ec ? 0 : size;
    slot.counter_delta = 0;
    // Re-read the counter base at the phase's first answer: the previous phase's last answer
    // may be old.
    slot.has_counter_base = false;
  }
  std::lock_guard lock(memory_mutex_);
  for (int i = 0; i < node_count; ++i) {
    peak_rss_kib_[i] = 0;
    hwm_valid_[i] = sampled_pids_[i] > 0 && reset_peak_rss(sampled_pids_[i]);
  }
}

phase_costs cluster::end_phase() {
  phase_costs costs;
  scan_logs(&costs);
  {
    std::lock_guard lock(memory_mutex_);
    for (int i = 0; i < node_count; ++i) {
      memory_sample sample;
      if (sampled_pids_[i] > 0 && read_memory(sampled_pids_[i], &sample)) {
        peak_rss_kib_[i] = std::max(peak_rss_kib_[i], sample.rss_kib);
        if (hwm_valid_[i]) peak_rss_kib_[i] = std::max(peak_rss_kib_[i], sample.hwm_kib);
      }
      costs.peak_rss_kib[i] = peak_rss_kib_[i];
    }
  }
  // Terms with a known leader, beyond the one already known when the phase began; the first
  // leader of a freshly started cluster is no change.
  std::uint64_t changes = 0;
  for (std::uint64_t term : phase_leader_terms_)
    if (term != leader_term_before_phase_) ++changes;
  if (leader_term_before_phase_ == 0 && changes > 0) --changes;
  for (const node_slot& slot : nodes_) {
    if (slot.has_counter_base) {
      costs.leader_changes_reported = true;
      changes = std::max(changes, slot.counter_delta);
    }
  }
  costs.leader_changes = changes;
  costs.max_term = phase_max_term_;
  if (!phase_leader_terms_.empty()) {
    leader_term_before_phase_ = std::max(leader_term_before_phase_, *phase_leader_terms_.rbegin());
  }
  return costs;
}

void cluster::scan_logs(phase_costs* costs) {
  static const std::regex leader_line(R"(term (\d+): leader is node (\d+))");
  std::set<std::string> seen;
  for (int node = 1; node <= node_count; ++node) {
    std::ifstream in(log_file(node), std::ios::binary);
    if (!in) continue;
    in.seekg(static_cast<std::streamoff>(nodes_[node - 1].log_offset));
    std::string line;
    while (std::getline(in, line)) {
      std::smatch match;
      if (std::regex_search(line, match, leader_line)) {
        const std::uint64_t term = std::stoull(match[1].str());
        note_leader_term(term);
        phase_max_term_ = std::max(phase_max_term_, term);
      }
      // Lines are "HH:MM:SS.micros LEVEL text"; the program's own messages have no prefix.
      const bool warning = line.find(" WARN ") != std::string::npos ||
                           line.find(" ERROR ") != std::string::npos ||
                           line.rfind("raftsync:", 0) == 0;
      if (!warning) continue;
      ++costs->warning_lines;
      auto text_at = line.find(' ');
      std::string text = text_at == std::string::npos ? line : line.substr(text_at + 1);
      // Group messages that differ only in numbers (indices, paths with counters).
      std::string key = std::regex_replace(text, std::regex(R"(\d+)"), "N");
      if (seen.insert(key).second && costs->warning_examples.size() < 6) {
        if (text.size() > 200) text = text.substr(0, 200) + "…";
        costs->warning_examples.push_back(fmt::format("node {}: {}", node, text));
      }
    }
  }
}

std::string cluster::describe_roles() {
  std::string text;
  for (int node = 1; node <= node_count; ++node) {
    if (!nodes_[node - 1].running) {
      text += fmt::format("{}node {}: stopped", text.empty() ? "" : "; ", node);
      continue;
    }
    node_status s = status(node, 5s);
    text += fmt::format("{}node {}: ", text.empty() ? "" : "; ", node);
    text +=
        s.ok ? fmt::format("{} term {} leader {} files {} applied {}/{} pending {}", s.role, s.term,
                           s.leader, s.files, s.applied_index, s.commit_index, s.pending_proposals)
             : s.error;
  }
  return text;
}

void cluster::sample_memory() {
  while (true) {
    {
      std::lock_guard lock(memory_mutex_);
      if (sampler_stop_) return;
      for (int i = 0; i < node_count; ++i) {
        memory_sample sample;
        if (sampled_pids_[i] > 0 && read_memory(sampled_pids_[i], &sample)) {
          peak_rss_kib_[i] = std::max(peak_rss_kib_[i], sample.rss_kib);
          if (hwm_valid_[i]) peak_rss_kib_[i] = std::max(peak_rss_kib_[i], sample.hwm_kib);
        }
      }
    }
    std::this_thread::sleep_for(100ms);
  }
}

std::string compare_replicas(cluster& nodes, const tree_map& expected, bool contents,
                             clock_type::time_point* metadata_matched) {
  // Metadata of every node first (lstat only, cheap), then contents.
  for (bool hash : {false, true}) {
    if (hash) {
      if (metadata_matched != nullptr) *metadata_matched = clock_type::now();
      if (!contents) break;
    }
    for (int node = 1; node <= node_count; ++node) {
      tree_map actual;
      std::string error;
      if (!walk_tree(nodes.folder(node), hash, &actual, &error)) {
        return fmt::format("node {}: {}", node, error);
      }
      tree_diff diff = compare_trees(expected, actual, hash);
      if (!diff.same()) return fmt::format("node {}: {}", node, diff.describe());
    }
  }
  return {};
}

convergence wait_converged(cluster& nodes, const tree_map& expected, converge_rule rule,
                           clock_type::time_point start, clock_type::time_point deadline) {
  convergence result;
  const std::uint64_t expected_entries = expected.size();
  auto last_walk_end = start;
  double walk_s = 0;  // how long the last walk took
  std::array<node_status, node_count> last{};
  std::array<node_status, node_count> previous{};
  std::string last_diff;
  while (true) {
    throw_if_interrupted();
    const auto now = clock_type::now();
    if (now >= deadline) {
      result.timed_out = true;
      std::string state;
      for (int node = 1; node <= node_count; ++node) {
        const node_status& s = last[node - 1];
        state += fmt::format("\n      node {}: ", node);
        state += s.ok ? fmt::format("{} term {} files {}/{} applied {}/{} last {} pending {}",
                                    s.role, s.term, s.files, expected_entries, s.applied_index,
                                    s.commit_index, s.last_index, s.pending_proposals)
                      : s.error;
        if (s.ok && s.unread_changes) state += fmt::format(" unread {}", *s.unread_changes);
      }
      result.failure = "timed out" + state;
      if (!last_diff.empty()) result.failure += "\n    last check: " + last_diff;
      return result;
    }
    if (std::string dead = nodes.check_alive(); !dead.empty()) {
      result.failure = dead;
      return result;
    }
    previous = last;
    bool all_answered = true;
    bool all_idle = true;  // applied == commit, nothing pending
    bool counts_match = true;
    bool stable = true;
    for (int node = 1; node <= node_count; ++node) {
      node_status s = nodes.status(node);
      if (!s.halted_reasons.empty()) {
        result.failure = fmt::format("node {} halted: {}", node, s.halted_reasons);
        return result;
      }
      all_answered = all_answered && s.ok;
      all_idle = all_idle && s.ok && s.applied_index == s.commit_index && s.pending_proposals == 0;
      counts_match = counts_match && s.ok && s.files == expected_entries;
      stable = stable && s.ok && previous[node - 1].ok && s.files == previous[node - 1].files &&
               s.applied_index == previous[node - 1].applied_index && s.files == last[0].files;
      last[node - 1] = s;
    }
    const bool status_done = all_answered && all_idle && counts_match;
    if (rule == converge_rule::status_and_flush) {
      if (status_done) {
        bool flushed = true;
        for (int node = 1; node <= node_count && flushed; ++node) {
          auto left =
              std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
          command_result r =
              nodes.flush(node, std::clamp<std::chrono::milliseconds>(left, 1ms, 60s));
          flushed = r.exit_code == 0;
          if (!flushed)
            last_diff = fmt::format("flush on node {}: {}", node, first_line(r.out + r.err));
        }
        if (flushed) {
          result.converged = true;
          result.seconds = seconds_between(start, clock_type::now());
          result.verify_note = compare_replicas(nodes, expected, true);
          result.verified = result.verify_note.empty();
          return result;
        }
      }
    } else {
      // A walk at every poll while the status says done, less often while it only looks
      // settled (the counts disagree but nothing moves) and now and then regardless: the
      // definition is identical trees, whatever the status says. The rate is bounded by the
      // walks' own duration (a failing walk usually stops in the metadata pass).
      const bool settled = all_answered && all_idle && stable;
      const double interval = status_done ? 2 * walk_s
                              : settled   ? std::max(5.0, 4 * walk_s)
                                          : std::max(20.0, 8 * walk_s);
      if (seconds_between(last_walk_end, clock_type::now()) >= interval) {
        const auto walk_start = clock_type::now();
        ++result.tree_checks;
        clock_type::time_point metadata_matched{};
        std::string diff = compare_replicas(nodes, expected, true, &metadata_matched);
        last_walk_end = clock_type::now();
        walk_s = seconds_between(walk_start, last_walk_end);
        if (diff.empty()) {
          result.converged = true;
          result.verified = true;
          result.seconds = seconds_between(start, metadata_matched);
          return result;
        }
        last_diff = diff;
      }
    }
    std::this_thread::sleep_for(200ms);
  }
}

convergence wait_restarted(cluster& nodes, int node, clock_type::time_point start,
                           clock_type::time_point deadline) {
  convergence result;
  std::string last_error;
  while (true) {
    throw_if_interrupted();
    if (clock_type::now() >= deadline) {
      result.timed_out = true;
      result.failure = "timed out: " + last_error;
      return result;
    }
    if (std::string dead = nodes.check_alive(); !dead.empty()) {
      result.failure = dead;
      return result;
    }
    node_status s = nodes.status(node, 5s);
    if (!s.ok) {
      last_error = s.error;
    } else if (s.leader == 0) {
      last_error = fmt::format("no leader known (role {}, term {})", s.role, s.term);
    } else {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
      command_result r = nodes.flush(node, std::clamp<std::chrono::milliseconds>(left, 1ms, 60s));
      if (r.exit_code == 0) {
        result.converged = true;
        result.seconds = seconds_between(start, clock_type::now());
        return result;
      }
      last_error = "flush: " + first_line(r.out + r.err);
    }
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace scale_bench
