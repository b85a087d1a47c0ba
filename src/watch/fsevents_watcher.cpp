// The FSEvents backend (macOS): only the CoreServices calls live here; every decision about
// what a flag combination means is in fsevents_translate.cpp, which Linux tests cover.
//
// NOT COMPILED IN THIS REPOSITORY'S CI (there is no macOS machine): see docs/watchers.md.
//
// - kFSEventStreamCreateFlagFileEvents: one event per file, not per directory.
// - kFSEventStreamCreateFlagNoDefer: the first event after a quiet period is delivered at once;
//   watch_options::fsevents_latency bounds the coalescing afterwards.
// - kFSEventStreamCreateFlagWatchRoot: the root moved or deleted → kFSEventStreamEventFlag-
//   RootChanged → fatal error event.
// - Recursion is native. MustScanSubDirs and the dropped-event flags become rescan_required.
// - Callbacks run on a private serial dispatch queue; stop() stops and invalidates the stream,
//   then drains the queue, so no callback runs after it returns.
#include <CoreServices/CoreServices.h>
#include <limits.h>
#include <stdlib.h>

#include <mutex>

#include "backends.hpp"
#include "fsevents_translate.hpp"
#include "raftsync/assert.hpp"
#include "scanner.hpp"

namespace raftsync::watch::detail {
namespace {

namespace fs = std::filesystem;

static_assert(fsevents::must_scan_sub_dirs == kFSEventStreamEventFlagMustScanSubDirs);
static_assert(fsevents::user_dropped == kFSEventStreamEventFlagUserDropped);
static_assert(fsevents::kernel_dropped == kFSEventStreamEventFlagKernelDropped);
static_assert(fsevents::root_changed == kFSEventStreamEventFlagRootChanged);
static_assert(fsevents::item_created == kFSEventStreamEventFlagItemCreated);
static_assert(fsevents::item_removed == kFSEventStreamEventFlagItemRemoved);
static_assert(fsevents::item_renamed == kFSEventStreamEventFlagItemRenamed);
static_assert(fsevents::item_modified == kFSEventStreamEventFlagItemModified);
static_assert(fsevents::item_inode_meta_mod == kFSEventStreamEventFlagItemInodeMetaMod);
static_assert(fsevents::item_is_file == kFSEventStreamEventFlagItemIsFile);
static_assert(fsevents::item_is_dir == kFSEventStreamEventFlagItemIsDir);
static_assert(fsevents::item_is_symlink == kFSEventStreamEventFlagItemIsSymlink);
static_assert(fsevents::item_cloned == kFSEventStreamEventFlagItemCloned);

void drain(void*) {}

class fsevents_watcher final : public watcher {
 public:
  explicit fsevents_watcher(watch_options options) : options_(std::move(options)) {}
  ~fsevents_watcher() override { stop(); }

  std::error_code start(const fs::path& root, event_sink sink) override {
    if (started_) return make_error_code(errc::already_exists);
    if (std::error_code error = options_.validate()) return error;
    if (std::error_code error = resolve_root(root, root_)) return error;
    RAFTSYNC_ASSERT(sink, "a watcher needs a sink");
    // FSEvents reports resolved paths (/private/var/..., not /var/...).
    char resolved[PATH_MAX];
    if (::realpath(root_.c_str(), resolved) == nullptr) return {errno, std::system_category()};
    real_root_ = resolved;
    sink_ = std::move(sink);

    CFStringRef path =
        CFStringCreateWithCString(nullptr, real_root_.c_str(), kCFStringEncodingUTF8);
    CFArrayRef paths =
        CFArrayCreate(nullptr, reinterpret_cast<const void**>(&path), 1, &kCFTypeArrayCallBacks);
    FSEventStreamContext context{};
    context.info = this;
    stream_ = FSEventStreamCreate(
        nullptr, &fsevents_watcher::callback, &context, paths, kFSEventStreamEventIdSinceNow,
        static_cast<CFTimeInterval>(options_.fsevents_latency.count()) / 1000.0,
        kFSEventStreamCreateFlagFileEvents | kFSEventStreamCreateFlagNoDefer |
            kFSEventStreamCreateFlagWatchRoot);
    CFRelease(paths);
    CFRelease(path);
    if (stream_ == nullptr) return make_error_code(errc::unavailable);
    queue_ = dispatch_queue_create("raftsync.watch.fsevents", DISPATCH_QUEUE_SERIAL);
    FSEventStreamSetDispatchQueue(stream_, queue_);
    if (!FSEventStreamStart(stream_)) {
      FSEventStreamInvalidate(stream_);
      FSEventStreamRelease(stream_);
      stream_ = nullptr;
      dispatch_release(queue_);
      queue_ = nullptr;
      return make_error_code(errc::unavailable);
    }
    started_ = true;
    return {};
  }

  void stop() override {
    {
      std::lock_guard lock(stop_mutex_);
      if (stopped_) return;
      stopped_ = true;
    }
    if (stream_ == nullptr) return;
    FSEventStreamStop(stream_);
    FSEventStreamInvalidate(stream_);
    // A callback already queued finishes before this returns (serial queue).
    dispatch_sync_f(queue_, nullptr, &drain);
    FSEventStreamRelease(stream_);
    stream_ = nullptr;
    dispatch_release(queue_);
    queue_ = nullptr;
  }

  std::string_view backend_name() const override { return "fsevents"; }

 private:
  static void callback(ConstFSEventStreamRef, void* info, size_t count, void* event_paths,
                       const FSEventStreamEventFlags flags[], const FSEventStreamEventId ids[]) {
    auto* self = static_cast<fsevents_watcher*>(info);
    auto** paths = static_cast<char**>(event_paths);
    std::vector<fsevents::record> records;
    records.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      records.push_back({paths[i], static_cast<std::uint32_t>(flags[i]), ids[i]});
    }
    const fs::path& root = self->root_;
    std::vector<fs_event> events =
        fsevents::translate(self->real_root_, records, self->options_.ignore,
                            [&root](const fs::path& relative) -> std::optional<fs_kind> {
                              std::optional<entry_info> entry = stat_entry(root, relative);
                              if (!entry) return std::nullopt;
                              return entry->kind;
                            });
    deliver(self->sink_, std::move(events), self->options_.batch_events_max);
  }

  watch_options options_;
  fs::path root_;
  std::string real_root_;
  event_sink sink_;
  FSEventStreamRef stream_ = nullptr;
  dispatch_queue_t queue_ = nullptr;
  std::mutex stop_mutex_;
  bool stopped_ = false;
  bool started_ = false;
};

}  // namespace

std::unique_ptr<watcher> make_fsevents_watcher(const watch_options& options) {
  return std::make_unique<fsevents_watcher>(options);
}

}  // namespace raftsync::watch::detail
