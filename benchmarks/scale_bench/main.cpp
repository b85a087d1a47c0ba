// scale_bench — raftsync under bulk change, the way users load it: three `raftsync` node processes
// on loopback, each with its own folder and state directory, fed a large tree and bulk edits.
//
//   scale_bench [--files N] [--seed S] [--burst N] [--rm N] [--rename N] [--timeout-s S]
//               [--idle-s S] [--skip PHASES] [--raftsync PATH] [--work DIR] [--keep]
//               [--stop-on-timeout] [--node-arg ARG]... [--json FILE]
//
// Phases (--skip takes their numbers or names, comma-separated):
//   1 generate     a tree of --files regular files (default 100,000): most 0.5–16 KiB, some
//                  16 KiB–1 MiB, a few 1–8 MiB; directories of ~20–200 entries up to 5 levels;
//                  ~1 % relative symlinks. Not timed as part of the product; always runs.
//   2 baseline     `cp -a` of the tree twice, then `sync`: what the two other replicas must write.
//   3 initial      the tree in node 1's folder, nodes 2 and 3 empty, fresh state; from starting
//                  the three nodes until all three trees are identical (type, mode, size, symlink
//                  target, content hash; never mtime; see converge_rule in cluster.hpp for the
//                  instant taken).
//   4 preseeded    fresh state, all three folders already hold the tree (`cp -a`): until every
//                  status shows the expected entry count and `raftsync flush` returns on all.
//   5 burst        --burst files (default 25,000) written git-clone-like into new nested
//                  directories on a follower, a few of 1–4 MiB: the writer's own loop, and until
//                  the three trees are identical. Then, outside the product's time, the burst's
//                  baseline: its directory copied twice with `cp -a` + `sync`.
//   6 rm           `rm -rf` of directories holding ~--rm files (default 20,000; from the burst's
//                  directory when it exists) on a follower; until identical.
//   7 rename       rename(2) of the directory holding the number of files closest to --rename
//                  (default 20,000) on a follower; until identical.
//   8 restart      SIGTERM node 3, start it again: until its status shows a known leader and
//                  `raftsync flush` returns on it.
//   9 idle         CPU % of a core per node over --idle-s seconds (default 10) without changes.
//  10 state        disk usage of each node's state directory.
// Each phase also reports every node's peak RSS (VmHWM, reset at the phase's start, and VmRSS
// sampled every 100 ms) and the leader changes seen (status `leader_changes` when the nodes
// report it, and the terms with a leader in their logs and status).
//
// Every wait polls with a deadline (--timeout-s, default 900 per phase): a phase that does not
// converge is reported as "timed out" and the run goes on (--stop-on-timeout: skips the rest).
// The nodes are stopped by pid (SIGTERM, SIGKILL after 30 s) on every path, Ctrl-C included.
//
// The long run is `--files 1000000` (≈ 25 GB of files): it needs about 4× that free on the work
// directory's filesystem (the tree and three replicas, plus the nodes' state; 7× with --keep,
// which keeps phase 3's replicas too) and an inotify watch limit above 3× the number of
// directories (fs.inotify.max_user_watches).
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "process.hpp"
#include "report.hpp"
#include "tree.hpp"

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace scale_bench {
namespace {

struct options {
  std::uint64_t files = 100000;
  std::uint64_t seed = 1;
  std::uint64_t burst = 25000;
  std::uint64_t rm = 20000;
  std::uint64_t rename = 20000;
  double timeout_s = 900;
  double idle_s = 10;
  std::set<int> skip;
  fs::path raftsync;
  fs::path work;
  bool keep = false;
  bool stop_on_timeout = false;
  std::vector<std::string> node_args;
  std::string json_path;
};

constexpr const char* usage =
    "usage: scale_bench [--files N] [--seed S] [--burst N] [--rm N] [--rename N] [--timeout-s S]\n"
    "                   [--idle-s S] [--skip PHASES] [--raftsync PATH] [--work DIR] [--keep]\n"
    "                   [--stop-on-timeout] [--node-arg ARG]... [--json FILE]\n"
    "phases: 1 generate, 2 baseline, 3 initial, 4 preseeded, 5 burst, 6 rm, 7 rename,\n"
    "        8 restart, 9 idle, 10 state (--skip 2,4 or --skip baseline,preseeded)\n"
    "long run: --files 1000000 (needs ~4x the printed tree size free on the work dir)\n";

bool parse_number(const std::string& text, double* value) {
  char* end = nullptr;
  *value = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size() && *value >= 0;
}

std::optional<options> parse_options(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (flag == "--keep") {
      opts.keep = true;
      continue;
    }
    if (flag == "--stop-on-timeout") {
      opts.stop_on_timeout = true;
      continue;
    }
    if (i + 1 >= argc) {
      fmt::print(stderr, "scale_bench: {} needs a value\n{}", flag, usage);
      return std::nullopt;
    }
    const std::string value = argv[++i];
    double number = 0;
    const bool numeric = parse_number(value, &number);
    auto whole = [&](std::uint64_t* out) {
      if (!numeric || number != static_cast<double>(static_cast<std::uint64_t>(number))) {
        return false;
      }
      *out = static_cast<std::uint64_t>(number);
      return true;
    };
    bool ok = true;
    if (flag == "--files") {
      ok = whole(&opts.files);
    } else if (flag == "--seed") {
      ok = whole(&opts.seed);
    } else if (flag == "--burst") {
      ok = whole(&opts.burst);
    } else if (flag == "--rm") {
      ok = whole(&opts.rm);
    } else if (flag == "--rename") {
      ok = whole(&opts.rename);
    } else if (flag == "--timeout-s") {
      ok = numeric && number > 0;
      opts.timeout_s = number;
    } else if (flag == "--idle-s") {
      ok = numeric && number > 0;
      opts.idle_s = number;
    } else if (flag == "--raftsync") {
      opts.raftsync = value;
    } else if (flag == "--work") {
      opts.work = value;
    } else if (flag == "--node-arg") {
      opts.node_args.push_back(value);
    } else if (flag == "--json") {
      opts.json_path = value;
    } else if (flag == "--skip") {
      std::size_t at = 0;
      while (at <= value.size()) {
        auto comma = value.find(',', at);
        std::string item =
            value.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
        at = comma == std::string::npos ? value.size() + 1 : comma + 1;
        if (item.empty()) continue;
        int phase = phase_number(item);
        if (phase == 0) {
          fmt::print(stderr, "scale_bench: unknown phase '{}' in --skip\n{}", item, usage);
          return std::nullopt;
        }
        opts.skip.insert(phase);
      }
    } else {
      fmt::print(stderr, "scale_bench: unknown option '{}'\n{}", flag, usage);
      return std::nullopt;
    }
    if (!ok) {
      fmt::print(stderr, "scale_bench: bad value '{}' for {}\n", value, flag);
      return std::nullopt;
    }
  }
  if (opts.files == 0) {
    fmt::print(stderr, "scale_bench: --files must be positive\n");
    return std::nullopt;
  }
  return opts;
}

// The node program: --raftsync, else the one built beside this benchmark.
std::optional<fs::path> locate_raftsync(const options& opts) {
  std::vector<fs::path> candidates;
  if (!opts.raftsync.empty()) {
    candidates.push_back(opts.raftsync);
  } else {
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      const fs::path build = self.parent_path() / ".." / "..";
      candidates.push_back(build / "tools" / "raftsync" / "raftsync");
      candidates.push_back(build / "tools" / "raftsync");  // the target's current output path
    }
#ifdef RAFTSYNC_SCALE_BENCH_NODE_PROGRAM
    candidates.push_back(RAFTSYNC_SCALE_BENCH_NODE_PROGRAM);
#endif
  }
  for (const fs::path& candidate : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && access(candidate.c_str(), X_OK) == 0) {
      return fs::weakly_canonical(candidate, ec);
    }
  }
  std::string tried;
  for (const fs::path& candidate : candidates)
    tried += "\n  " + candidate.string();
  fmt::print(stderr,
             "scale_bench: cannot find the raftsync node program (build the raftsync_program "
             "target, or pass --raftsync PATH); tried:{}\n",
             tried);
  return std::nullopt;
}

std::string base64(const unsigned char* data, std::size_t size) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < size; i += 3) {
    std::uint32_t chunk = data[i] << 16;
    if (i + 1 < size) chunk |= data[i + 1] << 8;
    if (i + 2 < size) chunk |= data[i + 2];
    out += alphabet[(chunk >> 18) & 63];
    out += alphabet[(chunk >> 12) & 63];
    out += i + 1 < size ? alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < size ? alphabet[chunk & 63] : '=';
  }
  return out;
}

void write_secret(const fs::path& file) {
  unsigned char bytes[32];
  std::ifstream random("/dev/urandom", std::ios::binary);
  if (!random.read(reinterpret_cast<char*>(bytes), sizeof bytes)) {
    throw std::runtime_error("cannot read /dev/urandom");
  }
  std::ofstream out(file);
  out << base64(bytes, sizeof bytes) << "\n";
  if (!out) throw std::runtime_error("cannot write " + file.string());
  fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
}

double since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Runs a shell-free command that must succeed (cp, rm, sync); throws with its stderr otherwise.
command_result must_run(const std::vector<std::string>& argv, double timeout_s) {
  command_result r =
      run_command(argv, std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000)));
  if (r.exit_code != 0) {
    std::string command;
    for (const std::string& arg : argv)
      command += (command.empty() ? "" : " ") + arg;
    throw std::runtime_error(
        fmt::format("`{}` {}: {}", command, r.timed_out ? "timed out" : "failed", r.err));
  }
  return r;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::string text;
  std::getline(in, text);
  return text;
}

// Everything one run shares between its phases.
struct run_context {
  options opts;
  fs::path raftsync;
  fs::path work;
  fs::path secret_file;
  fs::path tree_root;  // the generated tree, the source of every copy
  tree_map expected;   // what every replica should hold, kept up to date by the phases
  report out;
  std::unique_ptr<cluster> live;  // the cluster phases 5–10 run on
  bool stopped_on_timeout = false;
  int current_phase = 0;  // the phase running, for the report when the run stops early

  bool wanted(int phase) const { return opts.skip.count(phase) == 0 && !stopped_on_timeout; }
  clock_type::time_point deadline(clock_type::time_point start) const {
    return start + std::chrono::milliseconds(static_cast<std::int64_t>(opts.timeout_s * 1000));
  }
  void note_outcome(phase_result& phase, const convergence& c) {
    if (c.converged) {
      phase.outcome = "ok";
      phase.seconds = c.seconds;
    } else {
      phase.outcome = c.timed_out ? "timed out" : "failed";
      phase.notes.push_back(c.failure);
      if (c.timed_out && opts.stop_on_timeout) stopped_on_timeout = true;
    }
    if (c.converged && !c.verified && !c.verify_note.empty()) {
      phase.notes.push_back("trees differ after convergence: " + c.verify_note);
    }
  }
};

std::unique_ptr<cluster> make_cluster(run_context& ctx, const std::string& name) {
  return std::make_unique<cluster>(ctx.raftsync, ctx.work / name, ctx.secret_file,
                                   ctx.opts.node_args);
}

// Removes a stopped cluster's folders and state (the logs stay for the report): the next
// phase needs the space. --keep keeps them.
void remove_cluster_data(cluster& c) {
  for (int node = 1; node <= node_count; ++node) {
    std::error_code ec;
    fs::remove_all(c.folder(node), ec);
    fs::remove_all(c.state_dir(node), ec);
  }
}

void sync_disks(const run_context& ctx) {
  must_run({"sync"}, ctx.opts.timeout_s);
}

void phase_generate(run_context& ctx) {
  ctx.current_phase = 1;
  phase_result& phase = ctx.out.phase(1);
  tree_plan plan = plan_tree(ctx.opts.files, ctx.opts.seed);
  tree_summary s = summarize(plan.entries);
  ctx.out.tree = s;
  fmt::print("tree: {} files, {} directories, {} symlinks, {} bytes ({:.2f} GiB), seed {}\n",
             s.files, s.directories, s.symlinks, s.total_bytes, s.total_bytes / 1073741824.0,
             ctx.opts.seed);
  struct statvfs fs_stats {};
  if (statvfs(ctx.work.c_str(), &fs_stats) == 0) {
    const double free_bytes = static_cast<double>(fs_stats.f_bavail) * fs_stats.f_frsize;
    const double needed = 4.0 * s.total_bytes + (1 << 30);
    if (free_bytes < needed) {
      throw std::runtime_error(fmt::format(
          "{} has {:.1f} GiB free; this tree needs about {:.1f} GiB (the tree and three "
          "replicas)",
          ctx.work.string(), free_bytes / 1073741824.0, needed / 1073741824.0));
    }
  }
  const std::string watches = read_text("/proc/sys/fs/inotify/max_user_watches");
  if (!watches.empty() && 3 * (s.directories + 1) > std::strtoull(watches.c_str(), nullptr, 10)) {
    fmt::print("warning: 3 nodes × {} directories exceed fs.inotify.max_user_watches = {}\n",
               s.directories + 1, watches);
  }
  const auto start = clock_type::now();
  write_tree(ctx.tree_root, plan);
  ctx.expected = std::move(plan.entries);
  sync_disks(ctx);
  phase.seconds = since(start);
  phase.outcome = "ok";
  fmt::print("generated in {:.1f} s (with sync; not part of the product's figures)\n",
             phase.seconds);
}

void phase_baseline(run_context& ctx) {
  phase_result& phase = ctx.out.phase(2);
  const fs::path copies[2] = {ctx.work / "baseline1", ctx.work / "baseline2"};
  const auto start = clock_type::now();
  for (const fs::path& copy : copies)
    must_run({"cp", "-a", ctx.tree_root.string(), copy.string()}, ctx.opts.timeout_s);
  sync_disks(ctx);
  phase.seconds = since(start);
  phase.outcome = "ok";
  ctx.out.baseline_s = phase.seconds;
  for (const fs::path& copy : copies)
    fs::remove_all(copy);
  sync_disks(ctx);
  fmt::print("baseline: cp -a twice + sync: {:.2f} s\n", phase.seconds);
}

// Phases 3 and 4: a fresh cluster on the tree; seeded = every folder starts with a copy.
void phase_initial(run_context& ctx, int number, bool seeded) {
  phase_result& phase = ctx.out.phase(number);
  std::unique_ptr<cluster> c = make_cluster(ctx, seeded ? "preseeded" : "initial");
  for (int node = 1; node <= node_count; ++node) {
    if (node == 1 || seeded) {
      must_run({"cp", "-a", ctx.tree_root.string(), c->folder(node).string()}, ctx.opts.timeout_s);
    } else {
      fs::create_directories(c->folder(node));
    }
  }
  sync_disks(ctx);
  c->begin_phase();
  const auto start = clock_type::now();
  c->start_all();
  convergence result = wait_converged(
      *c, ctx.expected, seeded ? converge_rule::status_and_flush : converge_rule::identical_trees,
      start, ctx.deadline(start));
  ctx.note_outcome(phase, result);
  phase.costs = c->end_phase();
  phase.has_costs = true;
  phase.notes.push_back("at the end: " + c->describe_roles());
  fmt::print("{}: {} {:.2f} s\n", phase_name(number), phase.outcome,
             result.converged ? result.seconds : since(start));
  // Phases 5–10 run on the last cluster started here, unless it failed.
  const bool keep_running = result.converged && (seeded || !ctx.wanted(4));
  if (keep_running) {
    ctx.live = std::move(c);
  } else {
    c->stop_all();
    if (!ctx.opts.keep) remove_cluster_data(*c);
  }
}

// Without phases 3 and 4: a cluster of three empty folders.
void ensure_live_cluster(run_context& ctx) {
  if (ctx.live) return;
  ctx.expected.clear();
  ctx.live = make_cluster(ctx, "empty");
  for (int node = 1; node <= node_count; ++node)
    fs::create_directories(ctx.live->folder(node));
  ctx.live->begin_phase();
  const auto start = clock_type::now();
  ctx.live->start_all();
  convergence c = wait_restarted(*ctx.live, 1, start, ctx.deadline(start));
  ctx.live->end_phase();
  if (!c.converged) {
    throw std::runtime_error("the cluster of empty folders did not come up: " + c.failure);
  }
}

// A follower that knows its leader (the writer of phases 5–7); 0 when none answers in time.
int find_follower(run_context& ctx) {
  const auto deadline = ctx.deadline(clock_type::now());
  while (clock_type::now() < deadline) {
    throw_if_interrupted();
    for (int node = 1; node <= node_count; ++node) {
      node_status s = ctx.live->status(node, 5s);
      if (s.ok && s.role == "follower" && s.leader != 0) return node;
    }
    std::this_thread::sleep_for(100ms);
  }
  return 0;
}

void phase_burst(run_context& ctx) {
  phase_result& phase = ctx.out.phase(5);
  const int writer = find_follower(ctx);
  if (writer == 0) throw std::runtime_error("no follower with a known leader");
  const std::string prefix = fmt::format("burst-{}", ctx.opts.seed);
  ctx.live->begin_phase();
  const auto start = clock_type::now();
  burst_summary burst = write_burst(ctx.live->folder(writer), prefix, ctx.opts.burst,
                                    ctx.opts.seed + 1, &ctx.expected);
  ctx.out.burst = burst;
  ctx.out.burst_writer = writer;
  convergence result = wait_converged(*ctx.live, ctx.expected, converge_rule::identical_trees,
                                      start, ctx.deadline(start));
  ctx.note_outcome(phase, result);
  phase.costs = ctx.live->end_phase();
  phase.has_costs = true;
  fmt::print("burst: {} files ({} bytes) on node {}: writer {:.2f} s, {} {:.2f} s\n", burst.files,
             burst.total_bytes, writer, burst.writer_s, phase.outcome,
             result.converged ? result.seconds : since(start));
  // The burst's own baseline, outside the product's time.
  const fs::path copies[2] = {ctx.work / "burst-baseline1", ctx.work / "burst-baseline2"};
  sync_disks(ctx);
  const auto baseline_start = clock_type::now();
  for (const fs::path& copy : copies)
    must_run({"cp", "-a", (ctx.live->folder(writer) / prefix).string(), copy.string()},
             ctx.opts.timeout_s);
  sync_disks(ctx);
  ctx.out.burst_baseline_s = since(baseline_start);
  for (const fs::path& copy : copies)
    fs::remove_all(copy);
}

void phase_rm(run_context& ctx) {
  phase_result& phase = ctx.out.phase(6);
  const int writer = find_follower(ctx);
  if (writer == 0) throw std::runtime_error("no follower with a known leader");
  const std::string prefix = fmt::format("burst-{}", ctx.opts.seed);
  std::vector<std::string> dirs =
      pick_subtrees(ctx.expected, ctx.expected.count(prefix) ? prefix : "", ctx.opts.rm);
  std::vector<std::string> argv = {"rm", "-rf", "--"};
  std::uint64_t files = 0;
  for (const std::string& dir : dirs) {
    files += files_below(ctx.expected, dir);
    argv.push_back((ctx.live->folder(writer) / dir).string());
  }
  ctx.out.rm_files = files;
  if (dirs.empty()) {
    phase.outcome = "nothing to remove";
    return;
  }
  ctx.live->begin_phase();
  const auto start = clock_type::now();
  command_result rm = must_run(argv, ctx.opts.timeout_s);
  ctx.out.rm_command_s = rm.seconds;
  for (const std::string& dir : dirs)
    erase_subtree(&ctx.expected, dir);
  convergence result = wait_converged(*ctx.live, ctx.expected, converge_rule::identical_trees,
                                      start, ctx.deadline(start));
  ctx.note_outcome(phase, result);
  phase.costs = ctx.live->end_phase();
  phase.has_costs = true;
  fmt::print("rm -rf of {} files in {} directories on node {}: rm {:.2f} s, {} {:.2f} s\n", files,
             dirs.size(), writer, rm.seconds, phase.outcome,
             result.converged ? result.seconds : since(start));
}

void phase_rename(run_context& ctx) {
  phase_result& phase = ctx.out.phase(7);
  const int writer = find_follower(ctx);
  if (writer == 0) throw std::runtime_error("no follower with a known leader");
  const std::string from = closest_directory(ctx.expected, ctx.opts.rename);
  if (from.empty()) {
    phase.outcome = "no directory";
    return;
  }
  const std::string to = from + "-renamed";
  ctx.out.rename_files = files_below(ctx.expected, from);
  ctx.live->begin_phase();
  const auto start = clock_type::now();
  fs::rename(ctx.live->folder(writer) / from, ctx.live->folder(writer) / to);
  rename_subtree(&ctx.expected, from, to);
  convergence result = wait_converged(*ctx.live, ctx.expected, converge_rule::identical_trees,
                                      start, ctx.deadline(start));
  ctx.note_outcome(phase, result);
  phase.costs = ctx.live->end_phase();
  phase.has_costs = true;
  fmt::print("rename of {} ({} files) on node {}: {} {:.2f} s\n", from, ctx.out.rename_files,
             writer, phase.outcome, result.converged ? result.seconds : since(start));
}

void phase_restart(run_context& ctx) {
  phase_result& phase = ctx.out.phase(8);
  node_status before = ctx.live->status(3, 5s);
  ctx.out.restart_stopped_leader = before.ok && before.role == "leader";
  ctx.live->begin_phase();
  bool killed = false;
  ctx.out.restart_stop_s = ctx.live->stop(3, &killed);
  if (killed) phase.notes.push_back("node 3 ignored SIGTERM for 30 s and was killed");
  const auto start = clock_type::now();
  ctx.live->start(3);
  convergence result = wait_restarted(*ctx.live, 3, start, ctx.deadline(start));
  ctx.note_outcome(phase, result);
  phase.costs = ctx.live->end_phase();
  phase.has_costs = true;
  phase.notes.push_back(fmt::format("node 3 was {} before the stop; stop took {:.2f} s",
                                    before.ok ? before.role : before.error,
                                    ctx.out.restart_stop_s));
  fmt::print("restart of node 3: {} {:.2f} s (stop {:.2f} s)\n", phase.outcome,
             result.converged ? result.seconds : since(start), ctx.out.restart_stop_s);
  if (result.converged) {
    // Not timed: the trees should still be identical (metadata only: cheap).
    std::string diff = compare_replicas(*ctx.live, ctx.expected, false);
    if (!diff.empty()) phase.notes.push_back("trees differ after the restart: " + diff);
  }
}

void phase_idle(run_context& ctx) {
  phase_result& phase = ctx.out.phase(9);
  ctx.live->begin_phase();
  std::array<std::uint64_t, node_count> before{};
  for (int node = 1; node <= node_count; ++node)
    read_cpu_ticks(ctx.live->pid(node), &before[node - 1]);
  const auto start = clock_type::now();
  // The measurement window itself (CPU time over wall time), not a wait for the product.
  while (since(start) < ctx.opts.idle_s) {
    throw_if_interrupted();
    std::this_thread::sleep_for(50ms);
  }
  const double elapsed = since(start);
  const double ticks_per_s = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (int node = 1; node <= node_count; ++node) {
    std::uint64_t after = 0;
    if (read_cpu_ticks(ctx.live->pid(node), &after)) {
      ctx.out.idle_cpu_percent[node - 1] =
          100.0 * static_cast<double>(after - before[node - 1]) / ticks_per_s / elapsed;
    }
  }
  phase.seconds = elapsed;
  phase.outcome = "ok";
  phase.costs = ctx.live->end_phase();
  phase.has_costs = true;
}

void phase_state(run_context& ctx) {
  phase_result& phase = ctx.out.phase(10);
  for (int node = 1; node <= node_count; ++node) {
    disk_usage usage = measure_disk_usage(ctx.live->state_dir(node));
    ctx.out.state_bytes[node - 1] = usage.allocated_bytes;
  }
  phase.outcome = "ok";
}

void run_phases(run_context& ctx) {
  phase_generate(ctx);
  if (ctx.wanted(2)) {
    ctx.current_phase = 2;
    phase_baseline(ctx);
  }
  for (int number : {3, 4}) {
    if (!ctx.wanted(number)) continue;
    ctx.current_phase = number;
    phase_initial(ctx, number, number == 4);
  }
  bool needs_cluster = false;
  for (int phase = 5; phase <= 10; ++phase)
    needs_cluster = needs_cluster || ctx.wanted(phase);
  if (!needs_cluster) return;
  if (!ctx.live) {
    // Phases 3 and 4 were skipped, or did not converge: the bulk edits still get measured, on
    // a cluster of empty folders.
    for (int phase : {3, 4}) {
      const std::string& outcome = ctx.out.phase(phase).outcome;
      if (!outcome.empty() && outcome != "ok") {
        ctx.out.phase(5).notes.push_back(fmt::format(
            "phases 5-10 ran on a cluster started with empty folders: phase {} did not converge",
            phase));
        break;
      }
    }
    ctx.current_phase = 5;
    ensure_live_cluster(ctx);
  }
  using phase_function = void (*)(run_context&);
  const std::pair<int, phase_function> later[] = {{5, phase_burst},  {6, phase_rm},
                                                  {7, phase_rename}, {8, phase_restart},
                                                  {9, phase_idle},   {10, phase_state}};
  for (auto [number, function] : later) {
    if (!ctx.wanted(number)) continue;
    if (std::string dead = ctx.live->check_alive(); !dead.empty()) {
      ctx.out.phase(number).outcome = "not run";
      ctx.out.phase(number).notes.push_back(dead);
      continue;
    }
    ctx.current_phase = number;
    function(ctx);
  }
}

fs::path make_work_dir(const options& opts) {
  if (!opts.work.empty()) {
    std::error_code ec;
    if (fs::exists(opts.work) && !fs::is_empty(opts.work, ec)) {
      throw std::runtime_error("--work " + opts.work.string() + " exists and is not empty");
    }
    fs::create_directories(opts.work);
    return fs::canonical(opts.work);
  }
  std::string pattern = (fs::temp_directory_path() / "raftsync-scale-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

}  // namespace
}  // namespace scale_bench

int main(int argc, char** argv) {
  using namespace scale_bench;
  install_interrupt_handlers();
  umask(022);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines show under tee and nohup too
  std::optional<options> opts = parse_options(argc, argv);
  if (!opts) return 2;
  std::optional<fs::path> raftsync = locate_raftsync(*opts);
  if (!raftsync) return 2;
  run_context ctx;
  ctx.opts = *opts;
  ctx.raftsync = *raftsync;
  int exit_code = 0;
  try {
    ctx.work = make_work_dir(ctx.opts);
  } catch (const std::exception& e) {
    fmt::print(stderr, "scale_bench: {}\n", e.what());
    return 2;
  }
  ctx.secret_file = ctx.work / "secret";
  ctx.tree_root = ctx.work / "tree";
  ctx.out.describe_run(ctx.opts.files, ctx.opts.seed, ctx.raftsync.string(), ctx.work.string());
  try {
    write_secret(ctx.secret_file);
    run_phases(ctx);
  } catch (const interrupted_error&) {
    fmt::print(stderr, "scale_bench: interrupted; stopping the nodes\n");
    ctx.out.aborted = "interrupted";
    exit_code = 130;
  } catch (const std::exception& e) {
    fmt::print(stderr, "scale_bench: {}\n", e.what());
    ctx.out.aborted = e.what();
    exit_code = 1;
  }
  if (!ctx.out.aborted.empty() && ctx.current_phase > 0) {
    phase_result& phase = ctx.out.phase(ctx.current_phase);
    if (phase.outcome.empty()) phase.outcome = exit_code == 130 ? "interrupted" : "failed";
  }
  ctx.live.reset();  // stops the nodes
  ctx.out.print();
  if (!ctx.opts.json_path.empty() && !ctx.out.write_json(ctx.opts.json_path)) {
    fmt::print(stderr, "scale_bench: cannot write {}\n", ctx.opts.json_path);
    exit_code = exit_code == 0 ? 1 : exit_code;
  }
  if (ctx.opts.keep) {
    fmt::print("work directory kept: {}\n", ctx.work.string());
  } else {
    std::error_code ec;
    fs::remove_all(ctx.work, ec);
  }
  return exit_code;
}
