// The polling backend: a full scan every poll_interval, diffed against the previous one over
// (kind, size, mtime, ctime, inode, mode). The fallback for network filesystems and for a native
// backend that failed, and the reference the contract tests hold the others to.
//
// Guarantees: every difference between two consecutive scans is reported; a change undone
// within one interval is not (the disk is back in the state the consumer already knows), and a
// content change that keeps size and mtime and ctime and inode identical (a filesystem with
// coarse timestamps rewriting within one tick) is invisible to polling by construction.
#include <condition_variable>
#include <mutex>
#include <thread>

#include "backends.hpp"
#include "raftsync/assert.hpp"
#include "scanner.hpp"

namespace raftsync::watch::detail {
namespace {

class poll_watcher final : public watcher {
 public:
  explicit poll_watcher(watch_options options) : options_(std::move(options)) {}
  ~poll_watcher() override { stop(); }

  std::error_code start(const std::filesystem::path& root, event_sink sink) override {
    if (started_) return make_error_code(errc::already_exists);
    if (std::error_code error = options_.validate()) return error;
    if (std::error_code error = resolve_root(root, root_)) return error;
    RAFTSYNC_ASSERT(sink, "a watcher needs a sink");
    if (std::error_code error = scan_tree(root_, {}, options_.ignore, previous_)) return error;
    started_ = true;
    sink_ = std::move(sink);
    thread_ = std::thread([this] { run(); });
    return {};
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) {
      RAFTSYNC_ASSERT(thread_.get_id() != std::this_thread::get_id(),
                      "stop() called from inside the sink");
      thread_.join();
    }
  }

  std::string_view backend_name() const override { return "polling"; }

 private:
  void run() {
    bool root_lost = false;
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, options_.poll_interval, [this] { return stopping_; });
      if (stopping_) break;
      lock.unlock();
      std::vector<fs_event> events;
      snapshot current;
      if (std::error_code error = scan_tree(root_, {}, options_.ignore, current)) {
        if (!root_lost) {
          root_lost = true;
          events.push_back(fs_event::failure(error, true, "the watched root cannot be listed"));
        }
      } else {
        if (root_lost) {
          root_lost = false;
          events.push_back(fs_event::rescan(rescan_scope::everything, {}, "root is back"));
        }
        diff_snapshots(previous_, current, events);
        previous_ = std::move(current);
      }
      deliver(sink_, std::move(events), options_.batch_events_max);
      lock.lock();
    }
  }

  watch_options options_;
  std::filesystem::path root_;
  event_sink sink_;
  snapshot previous_;  // owned by the polling thread once started
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  bool started_ = false;
};

}  // namespace

std::unique_ptr<watcher> make_polling_watcher(const watch_options& options) {
  return std::make_unique<poll_watcher>(options);
}

void deliver(const event_sink& sink, std::vector<fs_event>&& events, std::size_t batch_max) {
  if (events.empty()) return;
  if (events.size() <= batch_max) {
    sink(std::move(events));
    return;
  }
  for (std::size_t begin = 0; begin < events.size(); begin += batch_max) {
    const std::size_t end = std::min(events.size(), begin + batch_max);
    std::vector<fs_event> batch(std::make_move_iterator(events.begin() + begin),
                                std::make_move_iterator(events.begin() + end));
    sink(std::move(batch));
  }
}

std::error_code resolve_root(const std::filesystem::path& root, std::filesystem::path& absolute) {
  std::error_code error;
  absolute = std::filesystem::absolute(root, error);
  if (error) return error;
  const std::filesystem::file_status status = std::filesystem::status(absolute, error);
  if (error || !std::filesystem::exists(status)) return make_error_code(errc::not_found);
  if (!std::filesystem::is_directory(status)) {
    return std::make_error_code(std::errc::not_a_directory);
  }
  return {};
}

}  // namespace raftsync::watch::detail
