// watch_latency — how fast each watcher backend reports a finished write, and how many files per
// second it keeps up with in a burst; a raw inotify reader in the same run is the baseline.
//
//   watch_latency [--events N] [--burst N] [--poll-ms N] [--dir DIR] [--json FILE]
//
// Latency: one existing small file at a time is rewritten (open with O_TRUNC, write 16 bytes,
// close); the clock starts just before close() and stops when the sink receives the first event
// naming that file after open(); the next file is written only after that. An event that
// arrived before close() (libuv reports the write itself, not the close) counts as 0 µs and is
// counted as "early". Burst: N files written as fast as possible into one
// directory; the clock stops when every file was named by an event or a rescan_required covers
// them (the rescan's arrival time then counts, and the rescan is counted).
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "raftsync/watch/factory.hpp"

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace watch = raftsync::watch;

struct figures {
  std::string name;
  double p50_us = 0, p99_us = 0, max_us = 0;
  int events = 0, early = 0, missed = 0;
  double burst_seconds = 0, burst_files_per_s = 0;
  double burst_lag_ms = 0;  // from the last close() to the last file reported
  std::size_t burst_events = 0;
  int burst_rescans = 0;
  bool burst_complete = false;
};

// Receipt times of events, by file name (the benchmark uses one flat directory).
class recorder {
 public:
  void record(const std::string& name, clock_type::time_point when) {
    std::lock_guard lock(mutex_);
    latest_[name] = when;
    ++events_;
    changed_.notify_all();
  }
  void record_rescan(clock_type::time_point when) {
    std::lock_guard lock(mutex_);
    rescan_ = when;
    ++rescans_;
    ++events_;
    changed_.notify_all();
  }
  // The first receipt at or after `since` for `name` (or of a rescan); nullopt on timeout.
  std::optional<clock_type::time_point> wait_for(const std::string& name,
                                                 clock_type::time_point since,
                                                 std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    std::optional<clock_type::time_point> found;
    changed_.wait_for(lock, timeout, [&] {
      auto it = latest_.find(name);
      if (it != latest_.end() && it->second >= since) found = it->second;
      if (rescan_ && *rescan_ >= since) found = *rescan_;
      return found.has_value();
    });
    return found;
  }
  // Waits until every name in `names` has a receipt at or after `since` (or a rescan came);
  // returns the time the condition first held.
  std::optional<clock_type::time_point> wait_all(const std::vector<std::string>& names,
                                                 clock_type::time_point since,
                                                 std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    std::size_t next = 0;
    clock_type::time_point last = since;
    const bool done = changed_.wait_for(lock, timeout, [&] {
      if (rescan_ && *rescan_ >= since) {
        last = std::max(last, *rescan_);
        return true;
      }
      for (; next < names.size(); ++next) {
        auto it = latest_.find(names[next]);
        if (it == latest_.end() || it->second < since) return false;
        last = std::max(last, it->second);
      }
      return true;
    });
    if (!done) return std::nullopt;
    return last;
  }
  std::size_t events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  int rescans() {
    std::lock_guard lock(mutex_);
    return rescans_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::unordered_map<std::string, clock_type::time_point> latest_;
  std::optional<clock_type::time_point> rescan_;
  std::size_t events_ = 0;
  int rescans_ = 0;
};

// A raw inotify reader on one directory: the floor any backend is measured against.
class raw_inotify {
 public:
  raw_inotify(const fs::path& dir, recorder& sink) : sink_(sink) {
    fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    ::inotify_add_watch(fd_, dir.c_str(), IN_CLOSE_WRITE | IN_CREATE | IN_MODIFY);
    if (fd_ < 0 || ::pipe(stop_pipe_) != 0) {
      std::perror("raw inotify");
      std::exit(1);
    }
    thread_ = std::thread([this] { run(); });
  }
  ~raw_inotify() {
    if (::write(stop_pipe_[1], "x", 1) != 1) std::perror("write");
    thread_.join();
    ::close(fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
  }

 private:
  void run() {
    alignas(struct inotify_event) char buffer[64 * 1024];
    for (;;) {
      struct pollfd fds[2] = {{stop_pipe_[0], POLLIN, 0}, {fd_, POLLIN, 0}};
      ::poll(fds, 2, -1);
      if (fds[0].revents & POLLIN) return;
      for (;;) {
        const ssize_t length = ::read(fd_, buffer, sizeof buffer);
        if (length <= 0) break;
        const auto now = clock_type::now();
        for (ssize_t offset = 0; offset < length;) {
          const auto* event = reinterpret_cast<const struct inotify_event*>(buffer + offset);
          if (event->mask & IN_Q_OVERFLOW) {
            sink_.record_rescan(now);
          } else if ((event->mask & IN_CLOSE_WRITE) && event->len > 0) {
            sink_.record(event->name, now);
          }
          offset += static_cast<ssize_t>(sizeof(struct inotify_event) + event->len);
        }
      }
    }
  }

  recorder& sink_;
  int fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t index =
      std::min(values.size() - 1, static_cast<std::size_t>(p * static_cast<double>(values.size())));
  return values[index];
}

// Opens (creating or truncating), writes 16 bytes, closes. `opened` is taken before open(),
// `before_close` just before close().
void write_small(const fs::path& path, clock_type::time_point& opened,
                 clock_type::time_point& before_close) {
  opened = clock_type::now();
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror("open");
    std::exit(1);
  }
  const char bytes[16] = "raftsync-bench.";
  if (::write(fd, bytes, sizeof bytes) != static_cast<ssize_t>(sizeof bytes)) std::exit(1);
  before_close = clock_type::now();
  ::close(fd);
}

// Runs the latency and burst measurements with `start` hooking a recorder to the directory.
template <typename Start>
figures measure(const std::string& name, const fs::path& base, int events, int burst,
                std::chrono::milliseconds event_timeout, Start start) {
  figures result;
  result.name = name;
  const fs::path dir = base / name;
  fs::remove_all(dir);
  fs::create_directories(dir / "burst");
  // The latency files exist before the watcher starts: each measured write rewrites one, so
  // no backend reports a create at open() (which would precede close()).
  for (int i = 0; i < events; ++i) {
    clock_type::time_point ignored_open, ignored_close;
    write_small(dir / ("f" + std::to_string(i)), ignored_open, ignored_close);
  }
  recorder sink;
  auto stopper = start(dir, sink);

  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(events));
  for (int i = 0; i < events; ++i) {
    const std::string file = "f" + std::to_string(i);
    clock_type::time_point opened, before_close;
    write_small(dir / file, opened, before_close);
    const auto arrived = sink.wait_for(file, opened, event_timeout);
    if (!arrived) {
      ++result.missed;
    } else if (*arrived < before_close) {
      latencies.push_back(0);  // reported from the write itself (libuv), before close()
      ++result.early;
    } else {
      latencies.push_back(
          std::chrono::duration<double, std::micro>(*arrived - before_close).count());
    }
  }
  result.events = static_cast<int>(latencies.size());
  result.p50_us = percentile(latencies, 0.50);
  result.p99_us = percentile(latencies, 0.99);
  result.max_us = latencies.empty() ? 0 : *std::max_element(latencies.begin(), latencies.end());

  // The burst: names are "burst/bN" for backends, "bN" for the raw reader (flat directory).
  std::vector<std::string> names;
  const bool raw = name == "raw-inotify";
  for (int i = 0; i < burst; ++i)
    names.push_back((raw ? "" : "burst/") + ("b" + std::to_string(i)));
  const std::size_t events_before = sink.events();
  const int rescans_before = sink.rescans();
  const auto burst_start = clock_type::now();
  fs::path burst_dir = raw ? dir : dir / "burst";
  for (int i = 0; i < burst; ++i) {
    clock_type::time_point ignored_open, ignored_close;
    write_small(burst_dir / ("b" + std::to_string(i)), ignored_open, ignored_close);
  }
  const auto written = clock_type::now();
  const auto finished = sink.wait_all(names, burst_start, 120s);
  result.burst_complete = finished.has_value();
  if (finished) {
    result.burst_seconds = std::chrono::duration<double>(*finished - burst_start).count();
    result.burst_files_per_s = burst / result.burst_seconds;
    result.burst_lag_ms =
        std::max(0.0, std::chrono::duration<double, std::milli>(*finished - written).count());
  }
  result.burst_events = sink.events() - events_before;
  result.burst_rescans = sink.rescans() - rescans_before;
  stopper();
  fs::remove_all(dir);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  int events = 1000;
  int burst = 10000;
  int poll_ms = 10;
  std::string json_path;
  fs::path base =
      fs::temp_directory_path() / ("raftsync-watch-latency-" + std::to_string(::getpid()));
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--events") {
      events = std::stoi(value());
    } else if (arg == "--burst") {
      burst = std::stoi(value());
    } else if (arg == "--poll-ms") {
      poll_ms = std::stoi(value());
    } else if (arg == "--dir") {
      base = value();
    } else if (arg == "--json") {
      json_path = value();
    } else {
      std::fprintf(stderr,
                   "usage: watch_latency [--events N] [--burst N] [--poll-ms N] [--dir DIR] "
                   "[--json FILE]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  fs::create_directories(base);

  std::vector<figures> results;
  results.push_back(
      measure("raw-inotify", base, events, burst, 2s, [](const fs::path& dir, recorder& sink) {
        auto reader = std::make_shared<raw_inotify>(dir, sink);
        return [reader]() mutable { reader.reset(); };
      }));
  for (watch::backend which : watch::available_backends()) {
    watch::watch_options options;
    options.poll_interval = std::chrono::milliseconds(poll_ms);
    const std::string name(watch::to_string(which));
    results.push_back(measure(name, base, events, burst, which == watch::backend::polling ? 5s : 2s,
                              [&](const fs::path& dir, recorder& sink) {
                                auto made = watch::make_watcher(which, options);
                                std::shared_ptr<watch::watcher> active = std::move(made.value());
                                const std::error_code error =
                                    active->start(dir, [&sink](std::vector<watch::fs_event> batch) {
                                      const auto now = clock_type::now();
                                      for (const watch::fs_event& event : batch) {
                                        if (event.effect == watch::fs_effect::rescan_required) {
                                          sink.record_rescan(now);
                                        } else {
                                          sink.record(event.path.generic_string(), now);
                                        }
                                      }
                                    });
                                if (error) {
                                  std::fprintf(stderr, "%s: start failed: %s\n", name.c_str(),
                                               error.message().c_str());
                                  std::exit(1);
                                }
                                return [active]() { active->stop(); };
                              }));
  }
  fs::remove_all(base);

  std::printf(
      "watch_latency: close() -> event at the sink over %d files; burst of %d files "
      "(polling every %d ms)\n\n",
      events, burst, poll_ms);
  std::printf("%-12s %10s %10s %10s %7s %7s | %9s %12s %9s %10s %8s\n", "backend", "p50 us",
              "p99 us", "max us", "early", "missed", "burst s", "files/s", "lag ms", "events",
              "rescans");
  for (const figures& f : results) {
    std::printf("%-12s %10.1f %10.1f %10.1f %7d %7d | %9.3f %12.0f %9.1f %10zu %8d%s\n",
                f.name.c_str(), f.p50_us, f.p99_us, f.max_us, f.early, f.missed, f.burst_seconds,
                f.burst_files_per_s, f.burst_lag_ms, f.burst_events, f.burst_rescans,
                f.burst_complete ? "" : "  (incomplete)");
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\n  \"benchmark\": \"watch_latency\",\n  \"events\": " << events
        << ",\n  \"burst_files\": " << burst << ",\n  \"poll_interval_ms\": " << poll_ms
        << ",\n  \"backends\": {\n";
    for (std::size_t i = 0; i < results.size(); ++i) {
      const figures& f = results[i];
      out << "    \"" << f.name << "\": {\"close_to_event_us_p50\": " << f.p50_us
          << ", \"close_to_event_us_p99\": " << f.p99_us
          << ", \"close_to_event_us_max\": " << f.max_us << ", \"early_events\": " << f.early
          << ", \"missed_events\": " << f.missed << ", \"burst_seconds\": " << f.burst_seconds
          << ", \"burst_files_per_s\": " << f.burst_files_per_s
          << ", \"burst_lag_ms\": " << f.burst_lag_ms << ", \"burst_events\": " << f.burst_events
          << ", \"burst_rescans\": " << f.burst_rescans
          << ", \"burst_complete\": " << (f.burst_complete ? "true" : "false") << "}"
          << (i + 1 < results.size() ? "," : "") << "\n";
    }
    out << "  }\n}\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  bool ok = true;
  for (const figures& f : results)
    ok = ok && f.burst_complete && f.missed == 0;
  return ok ? 0 : 1;
}
