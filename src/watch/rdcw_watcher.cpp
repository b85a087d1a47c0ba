// The ReadDirectoryChangesW backend (Windows).
//
// - One directory handle on the root, opened for overlapped I/O, watching the whole subtree
//   (bWatchSubtree = TRUE): recursion is native, so files created in a new directory are
//   reported by the system. A directory that arrives from outside the root (moved in) is
//   reported by Windows as one FILE_ACTION_ADDED: it is listed and its contents reported.
// - The next ReadDirectoryChangesW is issued before the returned buffer is parsed, so the
//   system keeps collecting while we translate.
// - Overflow: real Windows completes with 0 bytes, wine with ERROR_NOTIFY_ENUM_DIR (1022); both
//   become rescan_required(everything). The buffer size is watch_options::rdcw_buffer_bytes.
// - Renames: FILE_ACTION_RENAMED_OLD_NAME waits up to rename_pair_wait for its
//   FILE_ACTION_RENAMED_NEW_NAME (they normally share one buffer).
// - The root deleted or moved away: the handle keeps watching the moved directory, so the root
//   path is checked at every wake-up (at least once a second); gone → fatal error event.
#include <windows.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "backends.hpp"
#include "raftsync/assert.hpp"
#include "scanner.hpp"

namespace raftsync::watch::detail {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

std::error_code last_error() {
  return {static_cast<int>(::GetLastError()), std::system_category()};
}

constexpr DWORD notify_filter = FILE_NOTIFY_CHANGE_FILE_NAME | FILE_NOTIFY_CHANGE_DIR_NAME |
                                FILE_NOTIFY_CHANGE_ATTRIBUTES | FILE_NOTIFY_CHANGE_SIZE |
                                FILE_NOTIFY_CHANGE_LAST_WRITE | FILE_NOTIFY_CHANGE_CREATION |
                                FILE_NOTIFY_CHANGE_SECURITY;

class rdcw_watcher final : public watcher {
 public:
  explicit rdcw_watcher(watch_options options) : options_(std::move(options)) {}
  ~rdcw_watcher() override {
    stop();
    close_watch();
    if (stop_event_ != nullptr) ::CloseHandle(stop_event_);
  }

  std::error_code start(const fs::path& root, event_sink sink) override {
    if (started_) return make_error_code(errc::already_exists);
    if (std::error_code error = options_.validate()) return error;
    if (std::error_code error = resolve_root(root, root_)) return error;
    RAFTSYNC_ASSERT(sink, "a watcher needs a sink");
    stop_event_ = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (stop_event_ == nullptr) return last_error();
    // DWORD-aligned, as ReadDirectoryChangesW requires.
    buffer_.assign((options_.rdcw_buffer_bytes + sizeof(DWORD) - 1) / sizeof(DWORD), 0);
    if (std::error_code error = open_watch()) return error;
    if (wine_) list_directories_for_wine();
    started_ = true;
    sink_ = std::move(sink);
    thread_ = std::thread([this] { run(); });
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
      ::SetEvent(stop_event_);
      thread_.join();
    }
  }

  std::string_view backend_name() const override { return "rdcw"; }

 private:
  // Opens the root for overlapped change notification and arms the first read.
  std::error_code open_watch() {
    directory_ = ::CreateFileW(
        root_.c_str(), FILE_LIST_DIRECTORY, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
        nullptr, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED, nullptr);
    if (directory_ == INVALID_HANDLE_VALUE) return last_error();
    overlapped_ = OVERLAPPED{};
    overlapped_.hEvent = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (overlapped_.hEvent == nullptr) return last_error();
    return issue_read();
  }

  void close_watch() {
    cancel_read();
    if (directory_ != INVALID_HANDLE_VALUE) ::CloseHandle(directory_);
    if (overlapped_.hEvent != nullptr) ::CloseHandle(overlapped_.hEvent);
    directory_ = INVALID_HANDLE_VALUE;
    overlapped_.hEvent = nullptr;
  }

  // Under wine: the directories of the tree, so a REMOVED (which does not say "directory")
  // can tell whether the watch must be re-opened.
  void list_directories_for_wine() {
    wine_directories_.clear();
    snapshot listing;
    (void)scan_tree(root_, {}, options_.ignore, listing);
    for (const auto& [path, info] : listing) {
      if (info.kind == fs_kind::directory) wine_directories_.insert(path);
    }
  }

  // Wine's implementation (inotify watches inside wineserver) keeps reporting changes inside a
  // directory that was renamed, moved out or moved in under a stale name (or not at all), and
  // can miss the ADDED of a directory whose subdirectories follow at once. Under wine only
  // (real Windows needs neither): ancestors of added entries are reported too, and after a
  // directory is added, removed or renamed the handle is re-opened and rescan_required
  // (everything) reported.
  static bool running_under_wine() {
    HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
    return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
  }

  std::error_code issue_read() {
    ::ResetEvent(overlapped_.hEvent);
    const BOOL ok = ::ReadDirectoryChangesW(directory_, buffer_.data(),
                                            static_cast<DWORD>(buffer_.size() * sizeof(DWORD)),
                                            TRUE, notify_filter, nullptr, &overlapped_, nullptr);
    if (!ok) return last_error();
    read_pending_ = true;
    return {};
  }

  void cancel_read() {
    if (!read_pending_) return;
    ::CancelIoEx(directory_, &overlapped_);
    DWORD ignored = 0;
    ::GetOverlappedResult(directory_, &overlapped_, &ignored, TRUE);
    read_pending_ = false;
  }

  fs_kind kind_of(const fs::path& relative) const {
    std::optional<entry_info> info = stat_entry(root_, relative);
    return info ? info->kind : fs_kind::unknown;
  }

  void arrived(const fs::path& relative, std::vector<fs_event>& out) {
    if (wine_) {
      // Report the ancestors too (wine can drop their ADDED); once per batch each.
      for (fs::path parent = relative.parent_path(); !parent.empty();
           parent = parent.parent_path()) {
        if (!reported_parents_.insert(parent).second) break;
        append_unless_ignored(options_.ignore,
                              fs_event::change(fs_effect::create, fs_kind::directory, parent), out);
      }
    }
    if (options_.ignore.ignored(relative)) return;
    const fs_kind kind = kind_of(relative);
    out.push_back(fs_event::change(fs_effect::create, kind, relative));
    if (kind != fs_kind::directory) return;
    if (wine_) reopen_requested_ = true;
    // Moved in from outside: Windows reports only the directory. (For a directory just
    // created, the listing is usually empty or duplicates events that follow: harmless.)
    snapshot found;
    if (scan_tree(root_, relative, options_.ignore, found)) return;
    for (auto& [path, info] : found) {
      if (path != relative) out.push_back(fs_event::change(fs_effect::create, info.kind, path));
    }
  }

  void departed(const fs::path& relative, std::vector<fs_event>& out) {
    if (wine_ && wine_directories_.count(relative) != 0) reopen_requested_ = true;
    append_unless_ignored(options_.ignore,
                          fs_event::change(fs_effect::remove, fs_kind::unknown, relative), out);
  }

  void parse(const std::vector<DWORD>& data, DWORD bytes, clock_type::time_point now,
             std::vector<fs_event>& out) {
    const auto* base = reinterpret_cast<const unsigned char*>(data.data());
    DWORD offset = 0;
    for (;;) {
      if (offset + sizeof(FILE_NOTIFY_INFORMATION) > bytes) break;
      const auto* info = reinterpret_cast<const FILE_NOTIFY_INFORMATION*>(base + offset);
      const fs::path relative =
          fs::path(std::wstring(info->FileName, info->FileNameLength / sizeof(WCHAR)));
      switch (info->Action) {
        case FILE_ACTION_ADDED:
          arrived(relative, out);
          break;
        case FILE_ACTION_REMOVED:
          departed(relative, out);
          break;
        case FILE_ACTION_MODIFIED: {
          const fs_kind kind = kind_of(relative);
          // A directory's MODIFIED is its own metadata or (Windows, not wine) an entry
          // changing inside it: the entries report themselves, so only metadata matters.
          append_unless_ignored(options_.ignore,
                                fs_event::change(kind == fs_kind::directory ? fs_effect::attributes
                                                                            : fs_effect::modify,
                                                 kind, relative),
                                out);
          break;
        }
        case FILE_ACTION_RENAMED_OLD_NAME:
          if (pending_old_) departed(*pending_old_, out);
          pending_old_ = relative;
          pending_deadline_ = now + options_.rename_pair_wait;
          break;
        case FILE_ACTION_RENAMED_NEW_NAME:
          if (pending_old_ && !options_.ignore.ignored(*pending_old_)) {
            const fs_kind kind = kind_of(relative);
            append_unless_ignored(options_.ignore, fs_event::renamed(kind, *pending_old_, relative),
                                  out);
            if (wine_ && kind == fs_kind::directory) reopen_requested_ = true;
          } else {
            // Moved in from outside, or from an ignored name (the apply step's temp file):
            // a directory's contents were never reported, so list it.
            arrived(relative, out);
          }
          pending_old_.reset();
          break;
        default:
          break;
      }
      if (info->NextEntryOffset == 0) break;
      offset += info->NextEntryOffset;
    }
  }

  void run() {
    std::vector<DWORD> received;
    for (;;) {
      HANDLE handles[2] = {stop_event_, overlapped_.hEvent};
      reported_parents_.clear();
      DWORD timeout = root_lost_ ? INFINITE : 1000;
      const auto now = clock_type::now();
      if (pending_old_) {
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(pending_deadline_ - now);
        timeout = static_cast<DWORD>(std::clamp<std::int64_t>(wait.count(), 0, timeout));
      }
      const DWORD which = ::WaitForMultipleObjects(root_lost_ ? 1 : 2, handles, FALSE, timeout);
      if (which == WAIT_OBJECT_0) {
        cancel_read();
        return;
      }
      std::vector<fs_event> events;
      if (which == WAIT_OBJECT_0 + 1) {
        DWORD bytes = 0;
        const BOOL ok = ::GetOverlappedResult(directory_, &overlapped_, &bytes, FALSE);
        read_pending_ = false;
        const std::error_code read_error = ok ? std::error_code{} : last_error();
        if (ok && bytes > 0) received.assign(buffer_.begin(), buffer_.begin() + (bytes + 3) / 4);
        // Re-arm first, so the system keeps collecting while this batch is translated.
        const std::error_code rearm_error = issue_read();
        if (read_error.value() == ERROR_NOTIFY_ENUM_DIR || (ok && bytes == 0)) {
          pending_old_.reset();
          events.push_back(fs_event::rescan(rescan_scope::everything, {},
                                            ok ? "ReadDirectoryChangesW overflow (0 bytes)"
                                               : "ReadDirectoryChangesW: ERROR_NOTIFY_ENUM_DIR"));
        } else if (read_error) {
          lose_root(read_error, "ReadDirectoryChangesW failed", events);
        } else {
          parse(received, bytes, clock_type::now(), events);
        }
        if (rearm_error && !root_lost_) {
          lose_root(rearm_error, "ReadDirectoryChangesW could not be re-armed", events);
        }
      }
      if (reopen_requested_ && !root_lost_) {
        // Under wine only (see running_under_wine): a fresh handle has fresh paths. Changes
        // between closing the old handle and arming the new one are covered by the rescan,
        // which is reported after the new handle is armed.
        reopen_requested_ = false;
        close_watch();
        list_directories_for_wine();
        if (std::error_code error = open_watch()) {
          lose_root(error, "ReadDirectoryChangesW could not be re-opened", events);
        } else {
          events.push_back(fs_event::rescan(rescan_scope::everything, {},
                                            "wine: directory renamed, watch re-opened"));
        }
      }
      if (pending_old_ && clock_type::now() >= pending_deadline_) {
        departed(*pending_old_, events);
        pending_old_.reset();
      }
      if (!root_lost_) {
        std::error_code ignored;
        if (!fs::is_directory(root_, ignored)) {
          lose_root(make_error_code(errc::not_found), "the watched root was deleted or moved",
                    events);
        }
      }
      deliver(sink_, std::move(events), options_.batch_events_max);
    }
  }

  void lose_root(std::error_code error, const char* why, std::vector<fs_event>& out) {
    root_lost_ = true;
    cancel_read();
    out.push_back(fs_event::failure(error, true, why));
  }

  watch_options options_;
  fs::path root_;
  event_sink sink_;
  HANDLE directory_ = INVALID_HANDLE_VALUE;
  HANDLE stop_event_ = nullptr;
  OVERLAPPED overlapped_{};
  std::vector<DWORD> buffer_;  // written by the system while a read is pending
  bool read_pending_ = false;
  // Owned by the watcher thread once started.
  std::optional<fs::path> pending_old_;
  clock_type::time_point pending_deadline_;
  bool root_lost_ = false;
  const bool wine_ = running_under_wine();
  bool reopen_requested_ = false;
  std::set<fs::path> reported_parents_;  // ancestors already reported in this batch (wine)
  std::set<fs::path> wine_directories_;  // the tree's directories (wine)
  std::thread thread_;
  std::mutex stop_mutex_;
  bool stopped_ = false;  // guarded by stop_mutex_
  bool started_ = false;
};

}  // namespace

std::unique_ptr<watcher> make_rdcw_watcher(const watch_options& options) {
  return std::make_unique<rdcw_watcher>(options);
}

}  // namespace raftsync::watch::detail
