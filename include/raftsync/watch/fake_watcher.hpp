// raftsync — a manually driven watcher for deterministic tests of the folder engine.
//
// Header-only. Nothing watches the disk: the test decides which events exist and when they are
// delivered. emit() calls the sink synchronously ON THE CALLING THREAD (the one exception to the
// watcher threading contract), so a single-threaded simulation stays deterministic.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "raftsync/assert.hpp"
#include "raftsync/error.hpp"
#include "raftsync/watch/watcher.hpp"

namespace raftsync::watch {

class fake_watcher final : public watcher {
 public:
  fake_watcher() = default;
  explicit fake_watcher(watch_options options) : options_(std::move(options)) {}
  ~fake_watcher() override { stop(); }

  // The error the next start() returns (to test a consumer's handling of a failed start).
  void fail_next_start(std::error_code error) { next_start_error_ = error; }

  std::error_code start(const std::filesystem::path& root, event_sink sink) override {
    if (started_once_) return make_error_code(errc::already_exists);
    if (next_start_error_) return std::exchange(next_start_error_, std::error_code{});
    RAFTSYNC_ASSERT(sink, "fake_watcher::start needs a sink");
    started_once_ = true;
    running_ = true;
    root_ = root;
    sink_ = std::move(sink);
    return {};
  }

  void stop() override {
    running_ = false;
    sink_ = nullptr;
  }

  std::string_view backend_name() const override { return "fake"; }

  bool running() const noexcept { return running_; }
  const std::filesystem::path& root() const noexcept { return root_; }
  const watch_options& options() const noexcept { return options_; }

  // Delivers `batch` to the sink now, after dropping events on ignored paths the way real
  // backends do (a rename between an ignored and a reported path becomes a create or a remove).
  // Returns false (and delivers nothing) when not running or when every event was ignored.
  bool emit(std::vector<fs_event> batch) {
    if (!running_) return false;
    std::vector<fs_event> kept;
    kept.reserve(batch.size());
    for (fs_event& event : batch)
      append_unless_ignored(options_.ignore, std::move(event), kept);
    if (kept.empty()) return false;
    sink_(std::move(kept));
    return true;
  }
  bool emit(fs_event event) {
    std::vector<fs_event> batch;
    batch.push_back(std::move(event));
    return emit(std::move(batch));
  }

  bool emit_create(std::filesystem::path path, fs_kind kind = fs_kind::file) {
    return emit(fs_event::change(fs_effect::create, kind, std::move(path)));
  }
  bool emit_modify(std::filesystem::path path, fs_kind kind = fs_kind::file) {
    return emit(fs_event::change(fs_effect::modify, kind, std::move(path)));
  }
  bool emit_remove(std::filesystem::path path, fs_kind kind = fs_kind::file) {
    return emit(fs_event::change(fs_effect::remove, kind, std::move(path)));
  }
  bool emit_attributes(std::filesystem::path path, fs_kind kind = fs_kind::file) {
    return emit(fs_event::change(fs_effect::attributes, kind, std::move(path)));
  }
  bool emit_rename(std::filesystem::path old_path, std::filesystem::path new_path,
                   fs_kind kind = fs_kind::file) {
    return emit(fs_event::renamed(kind, std::move(old_path), std::move(new_path)));
  }
  bool emit_rescan(std::filesystem::path subtree = {}) {
    return emit(subtree.empty()
                    ? fs_event::rescan(rescan_scope::everything, {}, "fake overflow")
                    : fs_event::rescan(rescan_scope::subtree, std::move(subtree), "fake overflow"));
  }
  bool emit_error(std::error_code error, bool fatal, std::string detail = {}) {
    return emit(fs_event::failure(error, fatal, std::move(detail)));
  }

 private:
  watch_options options_;
  std::filesystem::path root_;
  event_sink sink_;
  std::error_code next_start_error_;
  bool started_once_ = false;
  bool running_ = false;
};

}  // namespace raftsync::watch
