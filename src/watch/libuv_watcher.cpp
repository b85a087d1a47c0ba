// The libuv backend (uv_fs_event), the portable one.
//
// What libuv does not give, and what this backend does about it:
// - UV_FS_EVENT_RECURSIVE is silently ignored on Linux: one uv_fs_event_t per directory, added
//   when a directory appears (watched first, listed second, like inotify).
// - A rename is two unrelated UV_RENAME events: each is resolved by lstat (gone → remove,
//   present → create), so renames are reported as remove + create, never as rename.
// - UV_CHANGE does not distinguish content from metadata: both are reported as modify.
// - libuv drops inotify's IN_Q_OVERFLOW silently. To bound how long a lost event stays
//   unreported, a SAFETY RESCAN runs every safety_rescan_interval: the tree is scanned, compared
//   with the state the events left behind, and every difference is reported (create / remove /
//   modify / attributes), and directories without a handle get one.
#include <uv.h>

#include <map>
#include <mutex>
#include <thread>

#include "backends.hpp"
#include "raftsync/assert.hpp"
#include "scanner.hpp"

namespace raftsync::watch::detail {
namespace {

namespace fs = std::filesystem;

std::error_code uv_error(int status) {
  // libuv errors are negated errno values on Unix.
  return {-status, std::generic_category()};
}

class libuv_watcher final : public watcher {
 public:
  explicit libuv_watcher(watch_options options) : options_(std::move(options)) {}
  ~libuv_watcher() override { stop(); }

  std::error_code start(const fs::path& root, event_sink sink) override {
    if (started_) return make_error_code(errc::already_exists);
    if (std::error_code error = options_.validate()) return error;
    if (std::error_code error = resolve_root(root, root_)) return error;
    RAFTSYNC_ASSERT(sink, "a watcher needs a sink");
    if (int status = uv_loop_init(&loop_); status < 0) return uv_error(status);
    loop_initialized_ = true;
    uv_async_init(&loop_, &stop_async_,
                  [](uv_async_t* async) { static_cast<libuv_watcher*>(async->data)->close_all(); });
    stop_async_.data = this;
    uv_check_init(&loop_, &flush_check_);
    flush_check_.data = this;
    uv_check_start(&flush_check_,
                   [](uv_check_t* check) { static_cast<libuv_watcher*>(check->data)->flush(); });
    uv_timer_init(&loop_, &rescan_timer_);
    rescan_timer_.data = this;
    const auto interval = static_cast<std::uint64_t>(options_.safety_rescan_interval.count());
    uv_timer_start(
        &rescan_timer_,
        [](uv_timer_t* timer) { static_cast<libuv_watcher*>(timer->data)->safety_rescan(); },
        interval, interval);

    std::error_code error = scan_tree(root_, {}, options_.ignore, baseline_,
                                      [this](const fs::path& dir) { add_handle(dir); });
    if (!error) error = handle_error_;
    started_ = true;
    if (error) {
      // Unwind on this thread: run the loop until every handle is closed.
      close_all();
      uv_run(&loop_, UV_RUN_DEFAULT);
      uv_loop_close(&loop_);
      loop_initialized_ = false;
      stopped_ = true;
      return error;
    }
    sink_ = std::move(sink);
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
    return {};
  }

  void stop() override {
    {
      std::lock_guard lock(stop_mutex_);
      if (stopped_) return;
      stopped_ = true;
    }
    if (thread_.joinable()) {
      RAFTSYNC_ASSERT(thread_.get_id() != std::this_thread::get_id(),
                      "stop() called from inside the sink");
      uv_async_send(&stop_async_);  // the one libuv call that is safe from another thread
      thread_.join();
    }
    if (loop_initialized_) {
      uv_loop_close(&loop_);
      loop_initialized_ = false;
    }
  }

  std::string_view backend_name() const override { return "libuv"; }

 private:
  struct dir_handle {
    uv_fs_event_t handle;
    libuv_watcher* owner;
    fs::path relative;
  };

  void add_handle(const fs::path& relative) {
    if (handles_.count(relative) != 0) return;
    auto* entry = new dir_handle{};
    entry->owner = this;
    entry->relative = relative;
    entry->handle.data = entry;
    uv_fs_event_init(&loop_, &entry->handle);
    const fs::path absolute = relative.empty() ? root_ : root_ / relative;
    const int status = uv_fs_event_start(
        &entry->handle,
        [](uv_fs_event_t* handle, const char* filename, int events, int status) {
          auto* self = static_cast<dir_handle*>(handle->data);
          self->owner->on_event(*self, filename, events, status);
        },
        absolute.c_str(), 0);
    if (status < 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&entry->handle),
               [](uv_handle_t* handle) { delete static_cast<dir_handle*>(handle->data); });
      if (status != UV_ENOENT && status != UV_ENOTDIR && !handle_error_) {
        handle_error_ = uv_error(status);
      }
      return;
    }
    handles_.emplace(relative, entry);
  }

  void close_handle(dir_handle* entry) {
    uv_fs_event_stop(&entry->handle);
    uv_close(reinterpret_cast<uv_handle_t*>(&entry->handle),
             [](uv_handle_t* handle) { delete static_cast<dir_handle*>(handle->data); });
  }

  void remove_handles(const fs::path& relative) {
    auto it = handles_.lower_bound(relative);
    while (it != handles_.end() && is_under(it->first, relative)) {
      close_handle(it->second);
      it = handles_.erase(it);
    }
  }

  void close_all() {
    for (auto& [path, entry] : handles_)
      close_handle(entry);
    handles_.clear();
    auto close = [](auto* handle) {
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(handle))) {
        uv_close(reinterpret_cast<uv_handle_t*>(handle), nullptr);
      }
    };
    close(&rescan_timer_);
    close(&flush_check_);
    close(&stop_async_);
    pending_.clear();
    closing_ = true;
  }

  void on_event(dir_handle& dir, const char* filename, int events, int status) {
    if (closing_ || root_lost_) return;
    if (status < 0) {
      pending_.push_back(fs_event::rescan(rescan_scope::subtree, dir.relative,
                                          "uv_fs_event error: " + uv_error(status).message()));
      return;
    }
    if (dir.relative.empty() && !stat_entry(root_, {})) {
      root_lost_ = true;
      pending_.push_back(fs_event::failure(make_error_code(errc::not_found), true,
                                           "the watched root was deleted or moved"));
      return;
    }
    if (filename == nullptr) {
      pending_.push_back(
          fs_event::rescan(rescan_scope::subtree, dir.relative, "uv_fs_event without a file name"));
      return;
    }
    const fs::path path = dir.relative / filename;
    if (options_.ignore.ignored(path)) return;
    const std::optional<entry_info> info = stat_entry(root_, path);
    if (!info) {
      if ((events & UV_RENAME) == 0) return;  // the removal reports itself as UV_RENAME
      auto known = baseline_.find(path);
      const fs_kind kind = known != baseline_.end() ? known->second.kind : fs_kind::unknown;
      if (known == baseline_.end() && handles_.count(path) == 0) {
        // Never seen: a self event of a watched directory (libuv names it by its basename) or
        // a file that came and went; nothing the consumer knows about changed.
        return;
      }
      remove_handles(path);
      erase_subtree(baseline_, path);
      pending_.push_back(fs_event::change(fs_effect::remove, kind, path));
      return;
    }
    if (info->kind == fs_kind::directory && handles_.count(path) == 0) {
      // Appeared (created or moved in): watch, list, report everything in it.
      snapshot found;
      if (!scan_tree(root_, path, options_.ignore, found,
                     [this](const fs::path& sub) { add_handle(sub); })) {
        for (auto& [found_path, found_info] : found) {
          pending_.push_back(fs_event::change(fs_effect::create, found_info.kind, found_path));
          baseline_[found_path] = found_info;
        }
      }
      report_handle_error();
      return;
    }
    auto known = baseline_.find(path);
    if (known == baseline_.end() || known->second.kind != info->kind ||
        known->second.file_id != info->file_id) {
      pending_.push_back(fs_event::change(fs_effect::create, info->kind, path));
    } else if (info->kind != fs_kind::directory || known->second.mode != info->mode) {
      pending_.push_back(fs_event::change(fs_effect::modify, info->kind, path));
    }
    baseline_[path] = *info;
  }

  void report_handle_error() {
    if (!handle_error_ || handle_error_reported_) return;
    handle_error_reported_ = true;
    pending_.push_back(fs_event::failure(handle_error_, true,
                                         "uv_fs_event_start failed; new directories are not "
                                         "watched"));
  }

  // Compares the disk with what the events left in baseline_ and reports every difference.
  void safety_rescan() {
    if (closing_ || root_lost_) return;
    snapshot current;
    if (std::error_code error = scan_tree(root_, {}, options_.ignore, current,
                                          [this](const fs::path& dir) { add_handle(dir); })) {
      root_lost_ = true;
      pending_.push_back(fs_event::failure(error, true, "the watched root cannot be listed"));
      return;
    }
    for (auto it = handles_.begin(); it != handles_.end();) {
      auto found = current.find(it->first);
      if (!it->first.empty() &&
          (found == current.end() || found->second.kind != fs_kind::directory)) {
        close_handle(it->second);
        it = handles_.erase(it);
      } else {
        ++it;
      }
    }
    diff_snapshots(baseline_, current, pending_);
    baseline_ = std::move(current);
    report_handle_error();
  }

  void flush() {
    if (pending_.empty()) return;
    std::vector<fs_event> events = std::move(pending_);
    pending_.clear();
    deliver(sink_, std::move(events), options_.batch_events_max);
  }

  watch_options options_;
  fs::path root_;
  event_sink sink_;
  uv_loop_t loop_{};
  uv_async_t stop_async_{};
  uv_check_t flush_check_{};
  uv_timer_t rescan_timer_{};
  bool loop_initialized_ = false;
  // Owned by the loop thread once started.
  std::map<fs::path, dir_handle*> handles_;
  snapshot baseline_;  // the state the consumer was told about (events applied, last rescan)
  std::vector<fs_event> pending_;  // flushed to the sink once per loop iteration
  std::error_code handle_error_;
  bool handle_error_reported_ = false;
  bool root_lost_ = false;
  bool closing_ = false;
  std::thread thread_;
  std::mutex stop_mutex_;
  bool stopped_ = false;  // guarded by stop_mutex_
  bool started_ = false;
};

}  // namespace

std::unique_ptr<watcher> make_libuv_watcher(const watch_options& options) {
  return std::make_unique<libuv_watcher>(options);
}

}  // namespace raftsync::watch::detail
