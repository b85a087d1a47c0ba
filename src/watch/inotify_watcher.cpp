// The inotify backend (Linux).
//
// - Recursive by one watch per directory: a new directory is watched FIRST and listed second
//   (scan_tree's visitor), so a file created in it before its watch existed is found by the
//   listing and one created after is an event; both are reported as create.
// - Finished writes are reported at IN_CLOSE_WRITE. A write that is never closed (truncate(2) by
//   path, a log kept open, mmap) is reported unclosed_write_delay after its first IN_MODIFY.
// - IN_MOVED_FROM waits up to rename_pair_wait for the IN_MOVED_TO with the same cookie: a pair
//   is a rename, a lone FROM a remove (moved out of the root), a lone TO a create (moved in).
// - IN_Q_OVERFLOW: every directory is re-watched (watches for directories created during the
//   overflow are added, stale ones dropped), then rescan_required(everything) is reported.
// - Running out of watches (ENOSPC from inotify_add_watch, fs.inotify.max_user_watches) fails
//   start(), or later is a fatal error event (the factory then falls back to polling).
// - The root deleted, moved or unmounted is a fatal error event; nothing follows it.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "backends.hpp"
#include "raftsync/assert.hpp"
#include "scanner.hpp"

namespace raftsync::watch::detail {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

constexpr std::uint32_t watch_mask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE |
                                     IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                                     IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK;

fs_kind kind_of(const fs::path& root, const fs::path& relative, std::uint32_t mask) {
  if (mask & IN_ISDIR) return fs_kind::directory;
  if (std::optional<entry_info> info = stat_entry(root, relative)) return info->kind;
  return fs_kind::unknown;
}

// Within one batch, a modify or attributes event is redundant after a create or modify of the
// same path (the consumer re-reads everything about the path once).
void coalesce(std::vector<fs_event>& events) {
  std::unordered_map<std::string, fs_effect> last;
  std::vector<fs_event> kept;
  kept.reserve(events.size());
  for (fs_event& event : events) {
    if (event.effect == fs_effect::rescan_required || event.effect == fs_effect::error) {
      if (event.effect == fs_effect::rescan_required) last.clear();
      kept.push_back(std::move(event));
      continue;
    }
    std::string key = event.path.native();
    if (event.effect == fs_effect::modify || event.effect == fs_effect::attributes) {
      auto it = last.find(key);
      if (it != last.end() &&
          (it->second == fs_effect::create || it->second == fs_effect::modify)) {
        continue;
      }
    }
    if (event.effect == fs_effect::rename) last.erase(event.old_path.native());
    last[std::move(key)] = event.effect;
    kept.push_back(std::move(event));
  }
  events = std::move(kept);
}

class inotify_watcher final : public watcher {
 public:
  explicit inotify_watcher(watch_options options) : options_(std::move(options)) {}
  ~inotify_watcher() override {
    stop();
    if (inotify_fd_ >= 0) ::close(inotify_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  std::error_code start(const fs::path& root, event_sink sink) override {
    if (started_) return make_error_code(errc::already_exists);
    if (std::error_code error = options_.validate()) return error;
    if (std::error_code error = resolve_root(root, root_)) return error;
    RAFTSYNC_ASSERT(sink, "a watcher needs a sink");
    inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0) return {errno, std::system_category()};
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) return {errno, std::system_category()};
    snapshot ignored_listing;
    std::error_code error = scan_tree(root_, {}, options_.ignore, ignored_listing,
                                      [this](const fs::path& dir) { add_watch(dir); });
    if (!error) error = watch_error_;
    if (error) return error;
    started_ = true;
    sink_ = std::move(sink);
    thread_ = std::thread([this] { run(); });
    return {};
  }

  void stop() override {
    {
      std::lock_guard lock(stop_mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    if (thread_.joinable()) {
      RAFTSYNC_ASSERT(thread_.get_id() != std::this_thread::get_id(),
                      "stop() called from inside the sink");
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t written = ::write(wake_fd_, &one, sizeof one);
      thread_.join();
    }
  }

  std::string_view backend_name() const override { return "inotify"; }

 private:
  struct pending_move {
    std::uint32_t cookie;
    fs::path path;
    fs_kind kind;
    clock_type::time_point deadline;
  };

  // Adds (or refreshes) the watch of directory `relative`. A directory that vanished meanwhile
  // is skipped (its removal is an event of its parent); any other failure is remembered in
  // watch_error_ (ENOSPC: fs.inotify.max_user_watches reached).
  void add_watch(const fs::path& relative) {
    const fs::path absolute = relative.empty() ? root_ : root_ / relative;
    const std::uint32_t mask = watch_mask | (relative.empty() ? 0 : IN_DONT_FOLLOW);
    const int wd = ::inotify_add_watch(inotify_fd_, absolute.c_str(), mask);
    if (wd < 0) {
      const int code = errno;
      if (code == ENOENT || code == ENOTDIR || code == ELOOP) return;
      if (!watch_error_) watch_error_ = {code, std::system_category()};
      return;
    }
    if (relative.empty()) root_wd_ = wd;
    auto existing = wd_to_path_.find(wd);
    if (existing != wd_to_path_.end()) {
      auto by_path = path_to_wd_.find(existing->second);
      if (by_path != path_to_wd_.end() && by_path->second == wd) path_to_wd_.erase(by_path);
      existing->second = relative;
    } else {
      wd_to_path_.emplace(wd, relative);
    }
    path_to_wd_[relative] = wd;
  }

  // Stops watching `relative` and everything under it (moved out of the root or into an
  // ignored name).
  void remove_watches(const fs::path& relative) {
    auto it = path_to_wd_.lower_bound(relative);
    while (it != path_to_wd_.end() && is_under(it->first, relative)) {
      ::inotify_rm_watch(inotify_fd_, it->second);
      wd_to_path_.erase(it->second);
      it = path_to_wd_.erase(it);
    }
  }

  // The directory `from` was renamed to `to` inside the root: its watches moved with it.
  void rename_watches(const fs::path& from, const fs::path& to) {
    std::vector<std::pair<fs::path, int>> moved;
    auto it = path_to_wd_.lower_bound(from);
    while (it != path_to_wd_.end() && is_under(it->first, from)) {
      fs::path suffix = it->first.lexically_relative(from);
      fs::path target = suffix == "." ? to : to / suffix;
      moved.emplace_back(std::move(target), it->second);
      it = path_to_wd_.erase(it);
    }
    for (auto& [path, wd] : moved) {
      wd_to_path_[wd] = path;
      path_to_wd_[std::move(path)] = wd;
    }
  }

  // A directory appeared at `relative` (created or moved in): watch and list it, reporting
  // it and everything found in it.
  void adopt_directory(const fs::path& relative, std::vector<fs_event>& out) {
    snapshot found;
    const std::error_code error = scan_tree(root_, relative, options_.ignore, found,
                                            [this](const fs::path& dir) { add_watch(dir); });
    if (error) {
      // Gone again already; its removal follows as an event.
      out.push_back(fs_event::change(fs_effect::create, fs_kind::directory, relative));
      return;
    }
    if (found.find(relative) == found.end()) {
      out.push_back(fs_event::change(fs_effect::create, fs_kind::directory, relative));
    }
    for (auto& [path, info] : found) {
      out.push_back(fs_event::change(fs_effect::create, info.kind, path));
    }
    report_watch_error(out);
  }

  void report_watch_error(std::vector<fs_event>& out) {
    if (!watch_error_ || watch_error_reported_) return;
    watch_error_reported_ = true;
    out.push_back(fs_event::failure(
        watch_error_, true,
        watch_error_.value() == ENOSPC
            ? "inotify watch limit reached (fs.inotify.max_user_watches); new directories are "
              "not watched"
            : "inotify_add_watch failed; new directories are not watched"));
  }

  // After IN_Q_OVERFLOW: re-watch every directory (adds the ones created during the overflow,
  // refreshes paths of renamed ones), drop watches of directories no longer in the tree.
  void resync_watches() {
    std::set<int> before;
    for (const auto& [wd, path] : wd_to_path_)
      before.insert(wd);
    wd_to_path_.clear();
    path_to_wd_.clear();
    snapshot listing;
    (void)scan_tree(root_, {}, options_.ignore, listing,
                    [this](const fs::path& dir) { add_watch(dir); });
    for (int wd : before) {
      if (wd_to_path_.find(wd) == wd_to_path_.end()) ::inotify_rm_watch(inotify_fd_, wd);
    }
    moves_.clear();
    unclosed_writes_.clear();
  }

  void handle(const struct inotify_event& event, clock_type::time_point now,
              std::vector<fs_event>& out) {
    const std::uint32_t mask = event.mask;
    if (mask & IN_Q_OVERFLOW) {
      resync_watches();
      out.push_back(fs_event::rescan(rescan_scope::everything, {},
                                     "inotify queue overflow (fs.inotify.max_queued_events)"));
      report_watch_error(out);
      return;
    }
    auto dir_it = wd_to_path_.find(event.wd);
    if (dir_it == wd_to_path_.end()) return;  // a watch removed meanwhile
    if (mask & IN_IGNORED) {
      auto by_path = path_to_wd_.find(dir_it->second);
      if (by_path != path_to_wd_.end() && by_path->second == event.wd) path_to_wd_.erase(by_path);
      wd_to_path_.erase(dir_it);
      if (event.wd == root_wd_ && !root_lost_) lose_root("the watched root was removed", out);
      return;
    }
    if (event.len == 0) {
      // An event about a watched directory itself. Its parent reports everything except the
      // root's own fate.
      if (event.wd == root_wd_ && (mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT))) {
        lose_root(mask & IN_MOVE_SELF ? "the watched root was moved"
                                      : "the watched root was deleted or unmounted",
                  out);
      }
      return;
    }
    const fs::path path = dir_it->second / event.name;
    if (mask & IN_MOVED_FROM) {
      moves_.push_back({event.cookie, path,
                        (mask & IN_ISDIR) ? fs_kind::directory : fs_kind::unknown,
                        now + options_.rename_pair_wait});
      return;
    }
    if (mask & IN_MOVED_TO) {
      auto from = std::find_if(moves_.begin(), moves_.end(),
                               [&](const pending_move& m) { return m.cookie == event.cookie; });
      if (from == moves_.end()) {
        arrived(path, mask, out);
        return;
      }
      pending_move move = std::move(*from);
      moves_.erase(from);
      const bool old_ignored = options_.ignore.ignored(move.path);
      const bool new_ignored = options_.ignore.ignored(path);
      if (old_ignored && new_ignored) return;
      if (old_ignored) {
        arrived(path, mask, out);  // not watched under its ignored name: adopt it
        return;
      }
      if (new_ignored) {
        departed(move.path, move.kind, out);
        return;
      }
      const fs_kind kind = kind_of(root_, path, mask);
      if (mask & IN_ISDIR) rename_watches(move.path, path);
      unclosed_writes_.erase(move.path);
      out.push_back(fs_event::renamed(kind, move.path, path));
      if ((mask & IN_ISDIR) && path_to_wd_.find(path) == path_to_wd_.end()) {
        // Renamed before its IN_CREATE was handled (the listing under the old name failed):
        // it was never watched. Watch and list it now.
        adopt_directory(path, out);
      }
      return;
    }
    if (options_.ignore.ignored(path)) return;
    if (mask & IN_CREATE) {
      arrived(path, mask, out);
    } else if (mask & IN_DELETE) {
      unclosed_writes_.erase(path);
      out.push_back(fs_event::change(
          fs_effect::remove, (mask & IN_ISDIR) ? fs_kind::directory : fs_kind::unknown, path));
    } else if (mask & IN_CLOSE_WRITE) {
      unclosed_writes_.erase(path);
      out.push_back(fs_event::change(fs_effect::modify, fs_kind::file, path));
    } else if (mask & IN_MODIFY) {
      if (options_.unclosed_write_delay.count() == 0) {
        out.push_back(fs_event::change(fs_effect::modify, fs_kind::file, path));
      } else {
        unclosed_writes_.emplace(path, now + options_.unclosed_write_delay);
      }
    } else if (mask & IN_ATTRIB) {
      out.push_back(fs_event::change(fs_effect::attributes, kind_of(root_, path, mask), path));
    }
  }

  // `path` appeared (IN_CREATE or moved in from outside / from an ignored name).
  void arrived(const fs::path& path, std::uint32_t mask, std::vector<fs_event>& out) {
    if (options_.ignore.ignored(path)) return;
    if (mask & IN_ISDIR) {
      adopt_directory(path, out);
    } else {
      out.push_back(fs_event::change(fs_effect::create, kind_of(root_, path, mask), path));
    }
  }

  // `path` left the watched tree (moved out of the root, or to an ignored name).
  void departed(const fs::path& path, fs_kind kind, std::vector<fs_event>& out) {
    if (kind == fs_kind::directory) remove_watches(path);
    unclosed_writes_.erase(path);
    if (!options_.ignore.ignored(path)) {
      out.push_back(fs_event::change(fs_effect::remove, kind, path));
    }
  }

  void lose_root(const char* why, std::vector<fs_event>& out) {
    root_lost_ = true;
    out.push_back(fs_event::failure(make_error_code(errc::not_found), true, why));
  }

  // Reports the rename halves and unclosed writes whose wait is over.
  void expire(clock_type::time_point now, std::vector<fs_event>& out) {
    while (!moves_.empty() && moves_.front().deadline <= now) {
      pending_move move = std::move(moves_.front());
      moves_.pop_front();
      departed(move.path, move.kind, out);
    }
    for (auto it = unclosed_writes_.begin(); it != unclosed_writes_.end();) {
      if (it->second <= now) {
        out.push_back(fs_event::change(fs_effect::modify, fs_kind::file, it->first));
        it = unclosed_writes_.erase(it);
      } else {
        ++it;
      }
    }
  }

  int poll_timeout_ms(clock_type::time_point now) const {
    std::optional<clock_type::time_point> next;
    if (!moves_.empty()) next = moves_.front().deadline;
    for (const auto& [path, deadline] : unclosed_writes_) {
      if (!next || deadline < *next) next = deadline;
    }
    if (!next) return -1;
    if (*next <= now) return 0;
    // Round up so the wake-up is never before the deadline.
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(*next - now);
    return static_cast<int>(std::min<std::int64_t>(wait.count(), 60000));
  }

  void run() {
    // Aligned for struct inotify_event; 64 KiB holds ≥ 4096 events without names.
    alignas(struct inotify_event) static thread_local char buffer[64 * 1024];
    for (;;) {
      struct pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
      const nfds_t count = root_lost_ ? 1 : 2;
      const int ready = ::poll(fds, count, root_lost_ ? -1 : poll_timeout_ms(clock_type::now()));
      if (ready < 0 && errno != EINTR) {
        std::vector<fs_event> events;
        events.push_back(fs_event::failure({errno, std::system_category()}, true, "poll failed"));
        deliver(sink_, std::move(events), options_.batch_events_max);
        root_lost_ = true;
        continue;
      }
      if (fds[0].revents & POLLIN) return;
      std::vector<fs_event> events;
      if (!root_lost_ && (fds[1].revents & POLLIN)) {
        // Drain what is queued, bounded so a storm still yields batches regularly.
        for (int reads = 0; reads < 16; ++reads) {
          const ssize_t length = ::read(inotify_fd_, buffer, sizeof buffer);
          if (length <= 0) break;
          const auto now = clock_type::now();
          for (ssize_t offset = 0; offset < length;) {
            const auto* event = reinterpret_cast<const struct inotify_event*>(buffer + offset);
            handle(*event, now, events);
            offset += static_cast<ssize_t>(sizeof(struct inotify_event) + event->len);
          }
          if (events.size() >= options_.batch_events_max) break;
        }
      }
      expire(clock_type::now(), events);
      coalesce(events);
      deliver(sink_, std::move(events), options_.batch_events_max);
    }
  }

  watch_options options_;
  fs::path root_;
  event_sink sink_;
  int inotify_fd_ = -1;
  int wake_fd_ = -1;
  int root_wd_ = -1;
  // Owned by the watcher thread once started (by start() before).
  std::unordered_map<int, fs::path> wd_to_path_;
  std::map<fs::path, int> path_to_wd_;  // Invariant: the inverse of wd_to_path_
  std::deque<pending_move> moves_;      // deadlines ascending (all use the same wait)
  std::map<fs::path, clock_type::time_point> unclosed_writes_;
  std::error_code watch_error_;
  bool watch_error_reported_ = false;
  bool root_lost_ = false;
  std::thread thread_;
  std::mutex stop_mutex_;
  bool stopping_ = false;  // guarded by stop_mutex_
  bool started_ = false;
};

}  // namespace

std::unique_ptr<watcher> make_inotify_watcher(const watch_options& options) {
  return std::make_unique<inotify_watcher>(options);
}

}  // namespace raftsync::watch::detail
