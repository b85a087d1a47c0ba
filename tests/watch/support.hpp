// Helpers for the watcher contract tests: a temp folder, a disk reader, an event collector and
// the consumer model that re-reads the disk at the paths events name.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "raftsync/watch/factory.hpp"
#include "raftsync/watch/fs_event.hpp"
#include "raftsync/watch/watcher.hpp"

#if defined(_WIN32)
#include <process.h>
#define RAFTSYNC_TEST_GETPID _getpid
#else
#include <unistd.h>
#define RAFTSYNC_TEST_GETPID getpid
#endif

namespace raftsync::watch::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A fresh empty folder, removed (with everything in it) on destruction.
class temp_folder {
 public:
  temp_folder() {
    static std::atomic<int> counter{0};
    path_ =
        fs::temp_directory_path() / ("raftsync-watch-" + std::to_string(RAFTSYNC_TEST_GETPID()) +
                                     "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~temp_folder() {
    std::error_code ignored;
    // chmod tests may leave read-only entries behind.
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path_, ignored);
  }
  temp_folder(const temp_folder&) = delete;
  temp_folder& operator=(const temp_folder&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const fs::path& relative) const { return path_ / relative; }

 private:
  fs::path path_;
};

inline void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}
inline void append_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << bytes;
}
inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// What the disk holds at one path, as a consumer would record it.
struct disk_entry {
  fs_kind kind = fs_kind::unknown;
  std::string content;  // file bytes, or the symlink target
  fs::perms perms = fs::perms::none;
  friend bool operator==(const disk_entry&, const disk_entry&) = default;
};
using disk_state = std::map<std::string, disk_entry>;  // generic relative path → entry

inline std::optional<disk_entry> read_entry(const fs::path& root, const fs::path& relative) {
  std::error_code error;
  const fs::path absolute = root / relative;
  const fs::file_status status = fs::symlink_status(absolute, error);
  if (error || !fs::exists(status)) return std::nullopt;
  disk_entry entry;
  entry.perms = status.permissions();
  if (fs::is_symlink(status)) {
    entry.kind = fs_kind::symlink;
    entry.content = fs::read_symlink(absolute, error).generic_string();
    entry.perms = fs::perms::none;  // link permissions are meaningless
  } else if (fs::is_directory(status)) {
    entry.kind = fs_kind::directory;
  } else if (fs::is_regular_file(status)) {
    entry.kind = fs_kind::file;
    entry.content = read_bytes(absolute);
  } else {
    entry.kind = fs_kind::other;
  }
  return entry;
}

// Reads `relative` and everything under it into `state` (replacing what was there).
inline void read_subtree(const fs::path& root, const fs::path& relative, const ignore_rules& ignore,
                         disk_state& state) {
  const std::string key = relative.generic_string();
  // Erase the old subtree.
  if (key.empty()) {
    state.clear();
  } else {
    for (auto it = state.lower_bound(key); it != state.end();) {
      if (it->first == key || it->first.compare(0, key.size() + 1, key + "/") == 0) {
        it = state.erase(it);
      } else if (it->first.compare(0, key.size(), key) == 0) {
        ++it;  // "a-b" sorts between "a" and "a/x"
      } else {
        break;
      }
    }
  }
  if (!key.empty()) {
    if (ignore.ignored(relative)) return;
    std::optional<disk_entry> entry = read_entry(root, relative);
    if (!entry) return;
    state[key] = *entry;
    if (entry->kind != fs_kind::directory) return;
  }
  std::error_code error;
  fs::directory_iterator it(root / relative, error);
  if (error) return;
  std::vector<fs::path> children;
  for (; it != fs::directory_iterator(); it.increment(error)) {
    if (error) break;
    children.push_back(relative / it->path().filename());
  }
  for (const fs::path& child : children)
    read_subtree(root, child, ignore, state);
}

inline disk_state read_disk(const fs::path& root, const ignore_rules& ignore) {
  disk_state state;
  read_subtree(root, {}, ignore, state);
  return state;
}

// Receives batches on the watcher's thread; the test thread waits on it.
class collector {
 public:
  event_sink sink() {
    return [this](std::vector<fs_event> batch) {
      std::lock_guard lock(mutex_);
      if (closed_) ++calls_after_stop_;
      if (batch.empty()) ++empty_batches_;
      for (fs_event& event : batch)
        events_.push_back(std::move(event));
      ++batches_;
      largest_batch_ = std::max(largest_batch_, batch.size());
      changed_.notify_all();
    };
  }
  // Events not taken yet.
  std::vector<fs_event> take() {
    std::lock_guard lock(mutex_);
    std::vector<fs_event> out(events_.begin() + static_cast<std::ptrdiff_t>(taken_), events_.end());
    taken_ = events_.size();
    return out;
  }
  std::vector<fs_event> all() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  // Waits until there are untaken events or `timeout` passes.
  bool wait_for_events(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return events_.size() > taken_; });
  }
  // Waits until `predicate(all events)` holds or `timeout` passes.
  bool wait_until(const std::function<bool(const std::vector<fs_event>&)>& predicate,
                  std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return predicate(events_); });
  }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  int calls_after_stop() const {
    std::lock_guard lock(mutex_);
    return calls_after_stop_;
  }
  std::size_t largest_batch() const {
    std::lock_guard lock(mutex_);
    return largest_batch_;
  }
  int empty_batches() const {
    std::lock_guard lock(mutex_);
    return empty_batches_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<fs_event> events_;
  std::size_t taken_ = 0;
  std::size_t batches_ = 0;
  std::size_t largest_batch_ = 0;
  int calls_after_stop_ = 0;
  int empty_batches_ = 0;
  bool closed_ = false;
};

// A sink that blocks inside its first call until released, so the backend stops reading and
// the kernel's inotify queue (fs.inotify.max_queued_events, 16384 by default) overflows.
class gate {
 public:
  event_sink wrap(event_sink inner) {
    return [this, inner = std::move(inner)](std::vector<fs_event> batch) {
      {
        std::unique_lock lock(mutex_);
        entered_ = true;
        changed_.notify_all();
        changed_.wait(lock, [this] { return open_; });
      }
      inner(std::move(batch));
    };
  }
  bool wait_entered(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return entered_; });
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool entered_ = false;
  bool open_ = false;
};

// The consumer: starts from a full read of the disk and then re-reads only what events name
// (the entry itself for create/modify/remove/attributes — a new directory's contents must be
// reported by their own events —, the subtree for a rename's both paths and for a rescan).
class consumer_model {
 public:
  consumer_model(fs::path root, ignore_rules ignore)
      : root_(std::move(root)), ignore_(std::move(ignore)) {
    state_ = read_disk(root_, ignore_);
  }

  void apply(const fs_event& event) {
    ++applied_;
    static const bool trace = std::getenv("RAFTSYNC_WATCH_TRACE") != nullptr;
    if (trace) std::fprintf(stderr, "event: %s\n", describe(event).c_str());
    // Contract: paths are relative and never leave the root.
    for (const fs::path* path : {&event.path, &event.old_path}) {
      if (path->is_absolute()) violations_.push_back("absolute path: " + describe(event));
      for (const fs::path& element : *path) {
        if (element == ".." || element == ".")
          violations_.push_back("dot element: " + describe(event));
      }
    }
    switch (event.effect) {
      case fs_effect::create:
      case fs_effect::modify:
      case fs_effect::remove:
      case fs_effect::attributes:
        if (ignore_.ignored(event.path))
          violations_.push_back("ignored path reported: " + describe(event));
        reread_entry(event.path);
        break;
      case fs_effect::rename:
        if (ignore_.ignored(event.path) || ignore_.ignored(event.old_path)) {
          violations_.push_back("ignored path reported: " + describe(event));
        }
        read_subtree(root_, event.old_path, ignore_, state_);
        read_subtree(root_, event.path, ignore_, state_);
        break;
      case fs_effect::rescan_required:
        ++rescans_;
        read_subtree(root_, event.scope == rescan_scope::everything ? fs::path{} : event.path,
                     ignore_, state_);
        break;
      case fs_effect::error:
        errors_.push_back(event);
        break;
    }
  }

  // Applies new events until the model equals the disk or `timeout` passes. Re-reading the
  // whole disk is rate-limited, so a 10,000-file burst does not re-read it per batch.
  bool converge(collector& events, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto last_check = std::chrono::steady_clock::now();
    for (;;) {
      for (const fs_event& event : events.take())
        apply(event);
      // Re-read the disk when the events pause for 30 ms, or every 2 s during a long stream.
      const bool quiet = !events.wait_for_events(30ms);
      const auto now = std::chrono::steady_clock::now();
      if (quiet || now - last_check >= 2s || now >= deadline) {
        for (const fs_event& event : events.take())
          apply(event);
        last_check = now;
        if (state_ == read_disk(root_, ignore_)) return true;
        if (now >= deadline) return false;
      }
    }
  }

  // A readable difference between the model and the disk (for failure messages).
  std::string difference() const {
    const disk_state disk = read_disk(root_, ignore_);
    std::string text;
    int shown = 0;
    for (const auto& [path, entry] : disk) {
      auto it = state_.find(path);
      if (it == state_.end()) {
        text += "  unreported on disk: " + path + "\n";
      } else if (!(it->second == entry)) {
        text += "  stale in model: " + path + "\n";
      } else {
        continue;
      }
      if (++shown >= 20) return text + "  ...\n";
    }
    for (const auto& [path, entry] : state_) {
      if (disk.find(path) == disk.end()) {
        text += "  gone from disk, still in model: " + path + "\n";
        if (++shown >= 20) return text + "  ...\n";
      }
    }
    return text;
  }

  const std::vector<std::string>& violations() const { return violations_; }
  const std::vector<fs_event>& errors() const { return errors_; }
  int rescans() const { return rescans_; }
  std::size_t applied() const { return applied_; }
  const disk_state& state() const { return state_; }

 private:
  void reread_entry(const fs::path& relative) {
    const std::string key = relative.generic_string();
    std::optional<disk_entry> entry =
        ignore_.ignored(relative) || key.empty() ? std::nullopt : read_entry(root_, relative);
    if (key.empty()) return;
    if (!entry) {
      read_subtree(root_, relative, ignore_, state_);  // erases the subtree
      return;
    }
    state_[key] = *entry;
  }

  fs::path root_;
  ignore_rules ignore_;
  disk_state state_;
  std::vector<std::string> violations_;
  std::vector<fs_event> errors_;
  int rescans_ = 0;
  std::size_t applied_ = 0;
};

// The backends to run the contract against: every backend this build has, narrowed by
// RAFTSYNC_WATCH_BACKENDS="inotify,polling" if set.
inline std::vector<backend> contract_backends() {
  std::vector<backend> all = available_backends();
  const char* only = std::getenv("RAFTSYNC_WATCH_BACKENDS");
  if (only == nullptr || *only == '\0') return all;
  std::vector<backend> chosen;
  const std::string list = std::string(",") + only + ",";
  for (backend b : all) {
    if (list.find("," + std::string(to_string(b)) + ",") != std::string::npos) chosen.push_back(b);
  }
  return chosen;
}

// Options that make the contract suite fast: short poll and safety-rescan intervals.
inline watch_options contract_options() {
  watch_options options;
  options.poll_interval = 50ms;
  options.safety_rescan_interval = 500ms;
  return options;
}

}  // namespace raftsync::watch::test
