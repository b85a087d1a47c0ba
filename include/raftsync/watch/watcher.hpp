// raftsync — the one watcher interface every backend implements.
//
// Lifecycle: construct (through make_watcher() in factory.hpp, or fake_watcher in tests), start()
// once, stop() (idempotent; the destructor calls it). A watcher is not restartable.
//
// Threading contract (every backend):
//   - The sink is called on a thread owned by the watcher, never concurrently with itself, with
//     batches of events in the order the backend produced them. Each concrete backend uses one
//     thread; the automatic backend (factory.hpp) may continue on another thread after falling
//     back to polling (calls stay serialized). fake_watcher is the exception: it calls the sink on
//     the thread that calls fake_watcher::emit(). start() never calls the sink itself.
//   - After stop() returns, the sink is never called again, and the watcher holds no reference
//     to it beyond its destruction.
//   - stop() must not be called from inside the sink (it waits for the sink's thread to finish:
//     a call from that thread is an invariant violation and aborts).
//   - A slow sink delays the backend's reading; inotify and ReadDirectoryChangesW then overflow
//     and report rescan_required, so nothing is lost, but keep the sink short (queue and return).
//
// Consumers must start the watcher BEFORE their own startup scan of the folder: a change made
// between the scan and start() would otherwise be reported by neither.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "raftsync/error.hpp"
#include "raftsync/watch/fs_event.hpp"
#include "raftsync/watch/ignore_rules.hpp"

namespace raftsync::watch {

// Receives a non-empty batch of events. See the threading contract above.
using event_sink = std::function<void(std::vector<fs_event> batch)>;

struct watch_options {
  // polling backend (and the fallback): time between two full scans. Range [1 ms, 1 h].
  std::chrono::milliseconds poll_interval{1000};
  // libuv backend: time between two safety rescans. libuv silently drops inotify's overflow
  // signal, so this bounds how long a lost event stays unreported. Range [10 ms, 1 h].
  std::chrono::milliseconds safety_rescan_interval{30000};
  // inotify and ReadDirectoryChangesW: how long the first half of a rename waits for its second
  // half before it is reported as a remove (moved out of the root). Range [0, 1 s].
  std::chrono::milliseconds rename_pair_wait{10};
  // inotify: a finished write is reported at close (IN_CLOSE_WRITE). A write that is not closed
  // (truncate(2) by path, a log kept open, mmap) is reported this long after its first
  // IN_MODIFY, so it is never left unreported. Range [0, 10 s].
  std::chrono::milliseconds unclosed_write_delay{50};
  // FSEvents stream latency (how long macOS coalesces before delivering). Range [0, 10 s].
  std::chrono::milliseconds fsevents_latency{10};
  // ReadDirectoryChangesW: size of the notification buffer. Overflowing it yields
  // rescan_required(everything). Range [64 B, 64 KiB] (64 KiB is the network-share maximum).
  std::size_t rdcw_buffer_bytes = 64 * 1024;
  // Upper bound on events per sink call (bigger batches are split). Range [1, 1'000'000].
  std::size_t batch_events_max = 4096;
  // Paths never reported (the node's own state directory, the apply step's temp files).
  ignore_rules ignore = ignore_rules::raftsync_defaults();

  // errc::invalid_config if a field is outside its range; success otherwise.
  std::error_code validate() const {
    using std::chrono::milliseconds;
    const bool ok =
        poll_interval >= milliseconds(1) && poll_interval <= milliseconds(3600000) &&
        safety_rescan_interval >= milliseconds(10) &&
        safety_rescan_interval <= milliseconds(3600000) && rename_pair_wait >= milliseconds(0) &&
        rename_pair_wait <= milliseconds(1000) && unclosed_write_delay >= milliseconds(0) &&
        unclosed_write_delay <= milliseconds(10000) && fsevents_latency >= milliseconds(0) &&
        fsevents_latency <= milliseconds(10000) && rdcw_buffer_bytes >= 64 &&
        rdcw_buffer_bytes <= 64 * 1024 && batch_events_max >= 1 && batch_events_max <= 1000000;
    return ok ? std::error_code{} : make_error_code(errc::invalid_config);
  }
};

// Appends `event` to `out` unless the ignore rules drop it. Errors and rescans always pass; a
// rename between an ignored and a reported path becomes a create (of the new path) or a remove
// (of the old path). Every backend (and fake_watcher) filters through this function.
inline void append_unless_ignored(const ignore_rules& rules, fs_event event,
                                  std::vector<fs_event>& out) {
  if (event.effect == fs_effect::error || event.effect == fs_effect::rescan_required) {
    out.push_back(std::move(event));
    return;
  }
  const bool new_ignored = rules.ignored(event.path);
  if (event.effect == fs_effect::rename) {
    const bool old_ignored = rules.ignored(event.old_path);
    if (old_ignored && new_ignored) return;
    if (old_ignored) {
      out.push_back(fs_event::change(fs_effect::create, event.kind, std::move(event.path)));
      return;
    }
    if (new_ignored) {
      out.push_back(fs_event::change(fs_effect::remove, event.kind, std::move(event.old_path)));
      return;
    }
  } else if (new_ignored) {
    return;
  }
  out.push_back(std::move(event));
}

class watcher {
 public:
  virtual ~watcher() = default;
  watcher() = default;
  watcher(const watcher&) = delete;
  watcher& operator=(const watcher&) = delete;

  // Starts watching `root` (recursively) and delivering batches to `sink`. On success the watch
  // is established when start() returns: every change made after that is reported. Errors:
  // the root is not an existing directory (errc::not_found / the OS error), the backend cannot
  // be set up (the OS error, e.g. ENOSPC when inotify watches are exhausted), start() was called
  // before (errc::already_exists), invalid options (errc::invalid_config). On error no sink
  // call ever happens and the watcher may be destroyed.
  virtual std::error_code start(const std::filesystem::path& root, event_sink sink) = 0;

  // Stops watching; idempotent; after it returns the sink is never called again.
  virtual void stop() = 0;

  // "inotify", "libuv", "rdcw", "fsevents", "polling", "fake"; a factory watcher that fell back
  // reports the backend currently delivering.
  virtual std::string_view backend_name() const = 0;
};

}  // namespace raftsync::watch
