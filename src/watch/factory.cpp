// The factory and the automatic backend (native, falling back to polling).
#include "raftsync/watch/factory.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "backends.hpp"
#include "raftsync/assert.hpp"

namespace raftsync::watch {

std::string_view to_string(backend value) noexcept {
  switch (value) {
    case backend::automatic:
      return "automatic";
    case backend::inotify:
      return "inotify";
    case backend::libuv:
      return "libuv";
    case backend::rdcw:
      return "rdcw";
    case backend::fsevents:
      return "fsevents";
    case backend::polling:
      return "polling";
  }
  return "?";
}

std::vector<backend> available_backends() {
  std::vector<backend> result;
#if defined(__linux__)
  result.push_back(backend::inotify);
#endif
#if defined(_WIN32)
  result.push_back(backend::rdcw);
#endif
#if defined(__APPLE__)
  result.push_back(backend::fsevents);
#endif
#if defined(RAFTSYNC_WATCH_HAVE_LIBUV)
  result.push_back(backend::libuv);
#endif
  result.push_back(backend::polling);
  return result;
}

namespace {

std::unique_ptr<watcher> make_concrete(backend which, const watch_options& options) {
  switch (which) {
#if defined(__linux__)
    case backend::inotify:
      return detail::make_inotify_watcher(options);
#endif
#if defined(_WIN32)
    case backend::rdcw:
      return detail::make_rdcw_watcher(options);
#endif
#if defined(__APPLE__)
    case backend::fsevents:
      return detail::make_fsevents_watcher(options);
#endif
#if defined(RAFTSYNC_WATCH_HAVE_LIBUV)
    case backend::libuv:
      return detail::make_libuv_watcher(options);
#endif
    case backend::polling:
      return detail::make_polling_watcher(options);
    default:
      return nullptr;
  }
}

// The native backend, replaced by polling when it cannot start or reports a fatal error while
// the root still exists. The replacement happens on the supervisor thread (a backend cannot be
// stopped from inside its own sink).
class fallback_watcher final : public watcher {
 public:
  fallback_watcher(backend native, watch_options options)
      : native_kind_(native), options_(std::move(options)) {}
  ~fallback_watcher() override { stop(); }

  std::error_code start(const std::filesystem::path& root, event_sink sink) override {
    std::unique_lock lock(mutex_);
    if (started_) return make_error_code(errc::already_exists);
    if (std::error_code error = options_.validate()) return error;
    if (std::error_code error = detail::resolve_root(root, root_)) return error;
    RAFTSYNC_ASSERT(sink, "a watcher needs a sink");
    started_ = true;
    sink_ = std::move(sink);
    active_ = make_concrete(native_kind_, options_);
    std::error_code native_error = active_->start(
        root_, [this](std::vector<fs_event> batch) { forward_from_native(std::move(batch)); });
    if (native_error) {
      active_.reset();
      if (std::error_code error = start_polling()) return error;
      // Delivered by the supervisor thread: the sink never runs on the caller's thread.
      pending_notice_.push_back(
          fs_event::failure(native_error, false,
                            "fell back to polling: " + std::string(to_string(native_kind_)) +
                                " could not start: " + native_error.message()));
    }
    supervisor_ = std::thread([this] { supervise(); });
    return {};
  }

  void stop() override {
    std::unique_ptr<watcher> active;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    if (supervisor_.joinable()) supervisor_.join();
    {
      std::lock_guard lock(mutex_);
      active = std::move(active_);
    }
    if (active) active->stop();
    std::lock_guard sink_lock(sink_mutex_);
    sink_ = nullptr;
  }

  std::string_view backend_name() const override {
    std::lock_guard lock(mutex_);
    return on_polling_ ? "polling" : to_string(native_kind_);
  }

 private:
  std::error_code start_polling() {
    auto polling = detail::make_polling_watcher(options_);
    std::error_code error = polling->start(
        root_, [this](std::vector<fs_event> batch) { deliver_locked(std::move(batch)); });
    if (error) return error;
    active_ = std::move(polling);
    on_polling_ = true;
    return {};
  }

  void forward_from_native(std::vector<fs_event> batch) {
    std::error_code failure;
    for (const fs_event& event : batch) {
      if (event.effect == fs_effect::error && event.fatal) failure = event.error;
    }
    if (failure) {
      std::error_code ignored;
      if (std::filesystem::is_directory(root_, ignored)) {
        // Deliver what came before the failure; the supervisor switches to polling.
        std::vector<fs_event> kept;
        for (fs_event& event : batch) {
          if (!(event.effect == fs_effect::error && event.fatal)) kept.push_back(std::move(event));
        }
        if (!kept.empty()) deliver_locked(std::move(kept));
        std::lock_guard lock(mutex_);
        if (!switch_requested_) {
          switch_requested_ = true;
          switch_reason_ = failure;
          wake_.notify_all();
        }
        return;
      }
    }
    deliver_locked(std::move(batch));
  }

  void deliver_locked(std::vector<fs_event> batch) {
    std::lock_guard lock(sink_mutex_);
    if (sink_) sink_(std::move(batch));
  }

  void supervise() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] {
        return stopping_ || !pending_notice_.empty() || (switch_requested_ && !on_polling_);
      });
      if (stopping_) return;
      if (!pending_notice_.empty()) {
        std::vector<fs_event> notice = std::move(pending_notice_);
        pending_notice_.clear();
        lock.unlock();
        deliver_locked(std::move(notice));
        lock.lock();
        continue;
      }
      std::unique_ptr<watcher> native = std::move(active_);
      lock.unlock();
      if (native) native->stop();  // no native callback after this
      native.reset();
      lock.lock();
      if (stopping_) return;
      const std::error_code error = start_polling();
      std::vector<fs_event> notice;
      if (error) {
        notice.push_back(fs_event::failure(error, true, "polling fallback could not start"));
        on_polling_ = true;  // nothing left to try
      } else {
        notice.push_back(
            fs_event::failure(switch_reason_, false,
                              "fell back to polling: " + std::string(to_string(native_kind_)) +
                                  " failed: " + switch_reason_.message()));
        notice.push_back(fs_event::rescan(rescan_scope::everything, {},
                                          "changes may have been missed while switching"));
      }
      lock.unlock();
      deliver_locked(std::move(notice));
      lock.lock();
    }
  }

  const backend native_kind_;
  const watch_options options_;
  std::filesystem::path root_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::unique_ptr<watcher> active_;  // guarded by mutex_
  bool started_ = false;
  bool stopping_ = false;
  bool on_polling_ = false;
  bool switch_requested_ = false;
  std::error_code switch_reason_;
  std::vector<fs_event> pending_notice_;
  std::thread supervisor_;
  std::mutex sink_mutex_;  // serializes sink calls from the native, polling and supervisor threads
  event_sink sink_;        // guarded by sink_mutex_
};

backend native_backend() {
#if defined(__linux__)
  return backend::inotify;
#elif defined(_WIN32)
  return backend::rdcw;
#elif defined(__APPLE__)
  return backend::fsevents;
#elif defined(RAFTSYNC_WATCH_HAVE_LIBUV)
  return backend::libuv;
#else
  return backend::polling;
#endif
}

}  // namespace

result<std::unique_ptr<watcher>> make_watcher(backend which, const watch_options& options) {
  if (std::error_code error = options.validate()) return error;
  if (which == backend::automatic) {
    const backend native = native_backend();
    if (native == backend::polling) return detail::make_polling_watcher(options);
    return std::unique_ptr<watcher>(std::make_unique<fallback_watcher>(native, options));
  }
  std::unique_ptr<watcher> made = make_concrete(which, options);
  if (!made) return make_error_code(errc::unavailable);
  return made;
}

}  // namespace raftsync::watch
