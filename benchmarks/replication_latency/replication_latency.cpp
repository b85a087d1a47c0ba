// replication_latency — how long a change made in one node's folder takes to be applied (durable,
// visible) on both other nodes of a three-node cluster. Loopback TCP, durable storage, fsync on.
//
// For each operation the clock starts right after the writer's close() (or rename()/unlink()) and
// stops when the apply callback of the second of the two other nodes has run (the apply has
// renamed and fsynced the file there). Operations run one at a time (the next starts when the
// writer's flush() says every command of the previous one is applied). In the same run a local
// baseline copies the same data on one disk (write + fsync + rename + fsync dir, what `cp` plus
// an fsync costs), so figures from this shared, noisy machine are read against a floor. For the
// large file a second floor copies it three times at once (each copy fsynced): the bytes three
// replicas on this one disk must write durably, whatever the replication does.
//
//   replication_latency [--samples N] [--no-burst] [--large-mib N] [--json FILE] [--dir DIR]
// --samples 0 --no-burst measures the large file alone. RAFTSYNC_BENCH_LOG=N prints the nodes' log
// lines up to level N (0 error .. 3 debug) with a timestamp, to see where the time goes.
// Writes FILE (figures) and FILE with .svg (latency CDF plot) when --json is given.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "raftsync/raftsync.hpp"

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct stats {
  std::vector<double> samples_us;
  double percentile(double p) const {
    if (samples_us.empty()) return 0;
    std::vector<double> sorted = samples_us;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t index =
        std::min(sorted.size() - 1,
                 static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size())));
    return sorted[index];
  }
  double max() const {
    return samples_us.empty() ? 0 : *std::max_element(samples_us.begin(), samples_us.end());
  }
};

// Records when each node applied each path (apply callbacks run on the nodes' threads).
class apply_log {
 public:
  void record(int node, const std::string& path) {
    std::lock_guard lock(mutex_);
    last_[{node, path}] = clock_type::now();
    ++count_[node];
    changed_.notify_all();
  }
  // Waits until both `nodes` applied `path` after `since`; returns the later time.
  std::optional<clock_type::time_point> wait(const std::vector<int>& nodes, const std::string& path,
                                             clock_type::time_point since,
                                             std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mutex_);
    clock_type::time_point latest{};
    const bool ok = changed_.wait_for(lock, timeout, [&] {
      latest = {};
      for (int node : nodes) {
        auto it = last_.find({node, path});
        if (it == last_.end() || it->second < since) return false;
        latest = std::max(latest, it->second);
      }
      return true;
    });
    if (!ok) return std::nullopt;
    return latest;
  }
  bool wait_count(int node, std::uint64_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return count_[node] >= count; });
  }
  std::uint64_t count(int node) {
    std::lock_guard lock(mutex_);
    return count_[node];
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::pair<int, std::string>, clock_type::time_point> last_;
  std::map<int, std::uint64_t> count_;
};

void write_and_close(const fs::path& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("open " + path.string());
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) throw std::runtime_error("write " + path.string());
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

// The local floor: what a durable local copy of `data` costs (write temp, fsync, rename, fsync
// dir).
double local_copy_us(const fs::path& dir, const std::string& data) {
  const auto start = clock_type::now();
  const fs::path temp = dir / "baseline.tmp";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  ::rename(temp.c_str(), (dir / "baseline.bin").c_str());
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  ::fsync(dfd);
  ::close(dfd);
  return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
}

std::string random_bytes(std::size_t size, std::uint64_t& state) {
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::memcpy(out.data() + i, &state, std::min<std::size_t>(8, size - i));
  }
  return out;
}

struct cluster {
  fs::path base;
  std::array<std::unique_ptr<raftsync::replicated_folder>, 3> nodes;
  apply_log applied;
  std::atomic<int> leader{0};

  fs::path folder(int id) const { return base / fmt::format("node{}", id); }

  void start(std::uint16_t base_port) {
    for (int i = 0; i < 3; ++i) {
      raftsync::replicated_folder_config config;
      config.id = static_cast<std::uint64_t>(i + 1);
      config.root = folder(i + 1);
      fs::create_directories(config.root);
      config.listen_port = static_cast<std::uint16_t>(base_port + i);
      for (int j = 0; j < 3; ++j) {
        if (j != i) {
          config.peers.push_back({static_cast<std::uint64_t>(j + 1), "127.0.0.1",
                                  static_cast<std::uint16_t>(base_port + j)});
        }
      }
      config.secret = "replication-latency-benchmark";
      const char* verbosity = std::getenv("RAFTSYNC_BENCH_LOG");
      const int level_max = verbosity != nullptr ? std::atoi(verbosity) : 0;
      config.log = [level_max, id = i + 1](int level, std::string_view message) {
        if (level > level_max) return;
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                            clock_type::now().time_since_epoch())
                            .count();
        fmt::print(stderr, "{}.{:06} node {}: {}\n", us / 1000000, us % 1000000, id, message);
      };
      nodes[i] = std::make_unique<raftsync::replicated_folder>(config);
      nodes[i]->on_applied([this, id = i + 1](const raftsync::applied_change& change) {
        applied.record(id, change.path);
      });
      nodes[i]->on_leader_change([this, id = i + 1](raftsync::raft::node_id l, std::uint64_t) {
        if (l == static_cast<std::uint64_t>(id)) leader = id;
      });
      if (auto ec = nodes[i]->start()) throw std::runtime_error("start: " + ec.message());
    }
  }
};

std::vector<int> others(int writer) {
  std::vector<int> out;
  for (int id = 1; id <= 3; ++id) {
    if (id != writer) out.push_back(id);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int samples = 200;
  int large_mib = 256;
  bool burst = true;
  std::string json_path;
  fs::path dir = fs::temp_directory_path() / fmt::format("raftsync-bench-{}", ::getpid());
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--samples" && i + 1 < argc) {
      samples = std::stoi(argv[++i]);
    } else if (arg == "--no-burst") {
      burst = false;
    } else if (arg == "--large-mib" && i + 1 < argc) {
      large_mib = std::stoi(argv[++i]);
    } else if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else {
      fmt::print(
          stderr,
          "usage: replication_latency [--samples N] [--no-burst] [--large-mib N] [--json FILE] "
          "[--dir DIR]\n");
      return 2;
    }
  }
  fs::remove_all(dir);
  fs::create_directories(dir / "baseline");
  cluster c;
  c.base = dir;
  c.start(static_cast<std::uint16_t>(20000 + ::getpid() % 20000));
  for (int i = 0; i < 1000 && c.leader == 0; ++i)
    std::this_thread::sleep_for(10ms);
  if (c.leader == 0) {
    fmt::print(stderr, "no leader elected\n");
    return 1;
  }
  const int leader = c.leader;
  const int follower = leader == 1 ? 2 : 1;
  std::uint64_t rng = 0x9E3779B97F4A7C15ull;
  std::map<std::string, stats> results;
  stats baseline_small;

  auto measure = [&](const std::string& name, int writer, auto&& action, const std::string& path) {
    const auto start = clock_type::now();
    action();
    auto done = c.applied.wait(others(writer), path, start);
    if (!done) {
      fmt::print(stderr, "{}: timed out waiting for {}\n", name, path);
      std::exit(1);
    }
    results[name].samples_us.push_back(
        std::chrono::duration<double, std::micro>(*done - start).count());
    // One operation at a time: the next starts once every command of this one is applied on the
    // writer too (flush; not part of the figure). Without it, an edit made while the writer is
    // still applying its own previous commands can be lost on this version (docs/benchmarks.md).
    if (auto ec = c.nodes[static_cast<std::size_t>(writer - 1)]->flush(30s, true)) {
      fmt::print(stderr, "{}: flush on the writer failed: {}\n", name, ec.message());
      std::exit(1);
    }
  };

  for (int writer : {leader, follower}) {
    const std::string where = writer == leader ? "leader" : "follower";
    for (int i = 0; i < samples; ++i) {
      const std::string name = fmt::format("{}-{}.bin", where, i);
      const std::string data = random_bytes(4096, rng);
      measure(
          "create_" + where, writer, [&] { write_and_close(c.folder(writer) / name, data); }, name);
      const std::string data2 = random_bytes(4096, rng);
      measure(
          "modify_" + where, writer, [&] { write_and_close(c.folder(writer) / name, data2); },
          name);
      const std::string renamed = "r-" + name;
      measure(
          "rename_" + where, writer,
          [&] { fs::rename(c.folder(writer) / name, c.folder(writer) / renamed); }, renamed);
      measure(
          "delete_" + where, writer, [&] { fs::remove(c.folder(writer) / renamed); }, renamed);
      if (writer == leader)
        baseline_small.samples_us.push_back(local_copy_us(dir / "baseline", data));
    }
  }

  // Burst: 1000 × 1 KiB written as fast as possible on the leader; until all applied everywhere.
  // Also timed: the writer's own loop (the floor: the files cannot arrive before they exist), and,
  // as the local baseline, the same 1000 files copied durably on one disk (write + fsync each,
  // then the directory).
  double burst_ms = 0;
  double burst_writer_ms = 0;
  double burst_baseline_ms = 0;
  if (burst) {
    fs::create_directories(c.folder(leader) / "burst");
    std::vector<std::uint64_t> before;
    for (int id = 1; id <= 3; ++id)
      before.push_back(c.applied.count(id));
    const auto start = clock_type::now();
    for (int i = 0; i < 1000; ++i) {
      write_and_close(c.folder(leader) / "burst" / fmt::format("f{}", i), random_bytes(1024, rng));
    }
    burst_writer_ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
    for (int id : others(leader)) {
      // +1: the burst directory's mkdir.
      if (!c.applied.wait_count(id, before[static_cast<std::size_t>(id - 1)] + 1001, 120s)) {
        fmt::print(stderr, "burst timed out on node {}\n", id);
        return 1;
      }
    }
    burst_ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();

    const fs::path local = dir / "baseline" / "burst";
    fs::create_directories(local);
    const auto base_start = clock_type::now();
    for (int i = 0; i < 1000; ++i) {
      const fs::path path = local / fmt::format("f{}", i);
      write_and_close(path, random_bytes(1024, rng));
      int fd = ::open(path.c_str(), O_RDONLY);
      ::fsync(fd);
      ::close(fd);
    }
    int dfd = ::open(local.c_str(), O_RDONLY | O_DIRECTORY);
    ::fsync(dfd);
    ::close(dfd);
    burst_baseline_ms =
        std::chrono::duration<double, std::milli>(clock_type::now() - base_start).count();
  }

  // Large file: close → applied on both others, and the local copy baseline of the same bytes.
  double large_s = 0;
  double large_baseline_s = 0;
  double large_three_copies_s = 0;
  if (large_mib > 0) {
    const fs::path source = dir / "large-source.bin";
    {
      std::ofstream out(source, std::ios::binary);
      for (int i = 0; i < large_mib; ++i)
        out << random_bytes(1 << 20, rng);
    }
    std::string path = "large.bin";
    const auto start = clock_type::now();
    fs::copy_file(source, c.folder(follower) / path);
    // The watcher may see the file while it is being copied and replicate an intermediate state
    // (that is correct: it was the folder's content then); the figure is the time until both other
    // nodes applied the complete file.
    const auto complete = [&] {
      for (int id : others(follower)) {
        std::error_code ec;
        if (fs::file_size(c.folder(id) / path, ec) != fs::file_size(source) || ec) return false;
      }
      return true;
    };
    std::optional<clock_type::time_point> done;
    for (auto since = start; !complete();) {
      done = c.applied.wait(others(follower), path, since, 600s);
      if (!done) {
        fmt::print(stderr, "large file timed out\n");
        return 1;
      }
      since = *done + std::chrono::nanoseconds(1);
    }
    if (!done) done = clock_type::now();
    large_s = std::chrono::duration<double>(*done - start).count();
    const auto base_start = clock_type::now();
    fs::copy_file(source, dir / "baseline" / "large.bin");
    int fd = ::open((dir / "baseline" / "large.bin").c_str(), O_RDONLY);
    ::fsync(fd);
    ::close(fd);
    large_baseline_s = std::chrono::duration<double>(clock_type::now() - base_start).count();
    fs::remove(dir / "baseline" / "large.bin");
    const auto floor_start = clock_type::now();
    {
      std::vector<std::thread> copies;
      for (int i = 0; i < 3; ++i) {
        copies.emplace_back([&, i] {
          const fs::path copy = dir / "baseline" / ("replica-" + std::to_string(i) + ".bin");
          fs::copy_file(source, copy);
          int copy_fd = ::open(copy.c_str(), O_RDONLY);
          ::fsync(copy_fd);
          ::close(copy_fd);
        });
      }
      for (auto& t : copies)
        t.join();
    }
    large_three_copies_s = std::chrono::duration<double>(clock_type::now() - floor_start).count();
  }

  fmt::print(
      "replication_latency: 3 nodes, loopback TCP, durable log with fsync; {} samples per row\n",
      samples);
  fmt::print("{:<20} {:>10} {:>10} {:>10}\n", "operation (4 KiB)", "p50 us", "p99 us", "max us");
  for (auto& [name, s] : results) {
    fmt::print("{:<20} {:>10.0f} {:>10.0f} {:>10.0f}\n", name, s.percentile(50), s.percentile(99),
               s.max());
  }
  fmt::print("{:<20} {:>10.0f} {:>10.0f} {:>10.0f}\n", "baseline_local_copy",
             baseline_small.percentile(50), baseline_small.percentile(99), baseline_small.max());
  fmt::print(
      "burst of 1000 x 1 KiB: {:.0f} ms (the writer's loop alone {:.0f} ms); local copy + fsync "
      "baseline {:.0f} ms\n",
      burst_ms, burst_writer_ms, burst_baseline_ms);
  if (large_mib > 0) {
    fmt::print(
        "{} MiB file: {:.2f} s ({:.1f} MB/s); local copy + fsync baseline {:.2f} s; ratio "
        "{:.2f}x\n",
        large_mib, large_s, large_mib * 1.048576 / large_s, large_baseline_s,
        large_s / large_baseline_s);
    fmt::print(
        "  three copies at once (the writes of three replicas on this one disk): {:.2f} s = "
        "{:.2f}x the baseline; replication / three copies {:.2f}x\n",
        large_three_copies_s, large_three_copies_s / large_baseline_s,
        large_s / large_three_copies_s);
  }

  if (!json_path.empty()) {
    std::ofstream json(json_path);
    json << "{\n";
    for (auto& [name, s] : results) {
      json << fmt::format(
          "  \"{0}_us_p50\": {1:.1f},\n  \"{0}_us_p99\": {2:.1f},\n  \"{0}_us_max\": {3:.1f},\n",
          name, s.percentile(50), s.percentile(99), s.max());
    }
    json << fmt::format(
        "  \"baseline_local_copy_us_p50\": {:.1f},\n  \"baseline_local_copy_us_p99\": {:.1f},\n",
        baseline_small.percentile(50), baseline_small.percentile(99));
    json << fmt::format("  \"burst_1000x1KiB_ms\": {:.1f},\n", burst_ms);
    json << fmt::format("  \"burst_writer_ms\": {:.1f},\n", burst_writer_ms);
    json << fmt::format("  \"burst_baseline_local_copy_ms\": {:.1f},\n", burst_baseline_ms);
    json << fmt::format(
        "  \"large_file_mib\": {},\n  \"large_file_s\": {:.3f},\n  \"large_file_MB_per_s\": "
        "{:.1f},\n",
        large_mib, large_s, large_s > 0 ? large_mib * 1.048576 / large_s : 0.0);
    json << fmt::format(
        "  \"large_file_baseline_s\": {:.3f},\n  \"large_file_three_copies_s\": {:.3f},\n  "
        "\"samples\": {}\n}}\n",
        large_baseline_s, large_three_copies_s, samples);
    // Latency CDF of the create/modify rows (leader and follower writers) as SVG.
    std::ofstream svg(json_path + ".svg");
    const double width = 640, height = 400, left = 60, bottom = 40;
    double max_ms = 0;
    for (auto& [name, s] : results)
      max_ms = std::max(max_ms, s.percentile(99) / 1000.0);
    max_ms = std::max(max_ms * 1.1, 1.0);
    svg << fmt::format(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' "
        "font-size='11'>\n",
        width, height);
    svg << fmt::format("<rect width='{}' height='{}' fill='white'/>\n", width, height);
    svg << fmt::format(
        "<text x='{}' y='16' text-anchor='middle'>replication latency CDF (4 KiB, 3 nodes, fsync "
        "on)</text>\n",
        width / 2);
    svg << fmt::format(
        "<line x1='{0}' y1='{1}' x2='{2}' y2='{1}' stroke='black'/><line x1='{0}' y1='{1}' "
        "x2='{0}' y2='24' stroke='black'/>\n",
        left, height - bottom, width - 10);
    for (int t = 0; t <= 4; ++t) {
      const double x = left + (width - 10 - left) * t / 4.0;
      svg << fmt::format("<text x='{:.0f}' y='{:.0f}' text-anchor='middle'>{:.1f} ms</text>\n", x,
                         height - bottom + 16, max_ms * t / 4.0);
    }
    svg << fmt::format("<text x='{}' y='{}'>100%</text><text x='{}' y='{}'>0%</text>\n", 10, 30, 20,
                       height - bottom);
    const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                            "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
    int k = 0;
    for (auto& [name, s] : results) {
      std::vector<double> sorted = s.samples_us;
      std::sort(sorted.begin(), sorted.end());
      std::string points;
      for (std::size_t i = 0; i < sorted.size(); ++i) {
        const double x = left + (width - 10 - left) * std::min(1.0, sorted[i] / 1000.0 / max_ms);
        const double y = (height - bottom) - (height - bottom - 24) * static_cast<double>(i + 1) /
                                                 static_cast<double>(sorted.size());
        points += fmt::format("{:.1f},{:.1f} ", x, y);
      }
      svg << fmt::format("<polyline fill='none' stroke='{}' stroke-width='1.5' points='{}'/>\n",
                         colors[k % 8], points);
      svg << fmt::format("<text x='{}' y='{}' fill='{}'>{}</text>\n", width - 150, 40 + 14 * k,
                         colors[k % 8], name);
      ++k;
    }
    svg << "</svg>\n";
  }
  for (auto& node : c.nodes)
    node->stop();
  fs::remove_all(dir);
  return 0;
}
