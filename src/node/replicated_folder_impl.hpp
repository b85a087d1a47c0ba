// raftsync — replicated_folder::impl, the driver behind the facade: its state and the
// declarations of its protocols. Private to src/node. Its member functions are defined by
// protocol: replicated_folder.cpp (start/stop, the ready loop, flush, status, membership and the
// public API), apply_committed.cpp (committed entries applied to the folder in batches),
// change_detection.cpp (watcher events, the backlog and its pump, reads, proposals, large-file
// uploads), snapshot_stream.cpp (folder snapshots and log compaction), content_service.cpp (the
// chunk bytes of large files beside the log).
#pragma once

#include "raftsync/replicated_folder.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "change_backlog.hpp"
#include "proposal_tracker.hpp"
#include "raftsync/folder/command.hpp"
#include "raftsync/folder/path_rules.hpp"
#include "raftsync/folder/real_folder_io.hpp"
#include "raftsync/folder/scanner.hpp"
#include "raftsync/folder/snapshot.hpp"
#include "raftsync/folder/state_machine.hpp"
#include "raftsync/raft/conf_change.hpp"
#include "raftsync/raft/raw_node.hpp"
#include "raftsync/storage/durable_storage.hpp"
#include "raftsync/storage/file_io.hpp"
#include "raftsync/transport/tcp_transport.hpp"
#include "raftsync/watch/factory.hpp"

namespace raftsync {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

// Application channels of the transport (beside Raft's messages): folder snapshot streams, chunk
// bytes of large files, applied-index reports.
namespace node_detail {
inline constexpr std::uint32_t snapshot_channel = 1;
inline constexpr std::uint32_t content_channel = 2;
inline constexpr std::uint32_t applied_channel = 3;

// The application channels' little-endian integers.
inline void append_u64(std::string& out, std::uint64_t value) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}
inline std::uint64_t load_u64(std::string_view bytes) {  // bytes.size() >= 8
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return value;
}

inline std::uint64_t cluster_id_hash(std::string_view name) {
  const folder::digest digest = folder::sha256(name);
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value = (value << 8) | digest[static_cast<std::size_t>(i)];
  return value == 0 ? 1 : value;
}

inline std::int64_t utc_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::string progress_name(raft::progress_state state) {
  switch (state) {
    case raft::progress_state::probe:
      return "probe";
    case raft::progress_state::replicate:
      return "replicate";
    case raft::progress_state::snapshot:
      return "snapshot";
  }
  return "unknown";
}

}  // namespace node_detail
}  // namespace raftsync

namespace raftsync {

using node_detail::append_u64;
using node_detail::applied_channel;
using node_detail::content_channel;
using node_detail::load_u64;
using node_detail::progress_name;
using node_detail::snapshot_channel;
using node_detail::utc_now_ns;

// ---------------------------------------------------------------------------------------------
// impl: owned state. Every member below the "strand-owned" line is touched only on strand_.
class replicated_folder::impl {
 public:
  impl(replicated_folder_config config, std::optional<asio::any_io_executor> executor)
      : config_(std::move(config)) {
    if (config_.state_dir.empty()) config_.state_dir = config_.root / ".raftsync";
    if (executor) {
      executor_ = *executor;
    } else {
      own_io_ = std::make_unique<asio::io_context>(1);
      executor_ = own_io_->get_executor();
    }
    strand_.emplace(asio::make_strand(executor_));
    tick_timer_.emplace(*strand_);
  }

  ~impl() { stop(); }

  std::error_code start();
  void stop();
  folder_status status() const;
  std::uint16_t listen_port() const { return listen_port_.load(); }
  std::error_code flush(std::chrono::milliseconds timeout, bool all_applied);
  std::error_code write_file(const std::string& path, std::string_view contents);
  std::error_code remove(const std::string& path);
  std::error_code rename(const std::string& from, const std::string& to);
  std::error_code add_node(const peer_address& peer, bool as_learner);
  std::error_code remove_node(raft::node_id id);
  std::error_code transfer_leadership(raft::node_id to);

  // Before start() nothing runs on the strand yet: set directly. After, hand over on the strand.
  void on_applied(std::function<void(const applied_change&)> callback) {
    if (!started_) {
      applied_callback_ = std::move(callback);
      return;
    }
    run_on_strand([&] { applied_callback_ = std::move(callback); });
  }
  void on_leader_change(std::function<void(raft::node_id, std::uint64_t)> callback) {
    if (!started_) {
      leader_callback_ = std::move(callback);
      return;
    }
    run_on_strand([&] { leader_callback_ = std::move(callback); });
  }

 private:
  struct flush_waiter {
    // Every path in the backlog when the flush was called must be read first (ticket, see
    // change_backlog); then every own command proposed by then must be applied.
    std::uint64_t backlog_mark = 0;
    bool backlog_read = false;
    std::uint64_t sequence_max = 0;  // every own command up to this one must be applied
    std::uint64_t index = 0;         // ... and (all_applied) every member must match this index
    bool all_applied = false;
    std::promise<std::error_code> done;
  };

  // Runs `fn` on the strand and waits for it (fn must not block). From the strand itself it runs
  // inline. Used by the public API, which may be called from any thread.
  template <typename Fn>
  auto run_on_strand(Fn&& fn) -> decltype(fn()) {
    if (strand_->running_in_this_thread()) return fn();
    std::packaged_task<decltype(fn())()> task(std::forward<Fn>(fn));
    auto future = task.get_future();
    asio::post(*strand_, [&task] { task(); });
    return future.get();
  }

  std::error_code open_state();
  void schedule_tick();
  void on_tick();
  void on_retry_timer();
  void on_envelope(transport::envelope e);
  bool forwarded_proposal_allowed(const raft::message& m);
  void on_watch_batch(std::vector<watch::fs_event> batch);
  void process_ready();
  void apply_entries(const std::vector<raft::entry>& entries);
  void apply_conf_change_entry(const raft::entry& e);
  // Returns the command's sequence (0: dropped as equal to a pending one).
  std::uint64_t propose_command(folder::command cmd);
  void send_proposal(const std::string& data);
  void pump_backlog();
  bool within_dedupe_window() const;
  void schedule_pump();
  void flush_proposal_batch();
  void detect_and_propose(const std::vector<std::string>& paths, bool recursive);
  void detect_renamed(const std::string& from, const std::string& to);
  void detect_one(const std::string& path, bool scan_new_directories = true);
  void propose_plan(folder::change_plan plan, bool scan_new_directories);
  void continue_upload();
  void abandon_upload();
  void check_upload_progress();
  clock_type::duration upload_stall_timeout() const { return 10 * config_.proposal_retry; }
  void drain_apply_queue();
  void handle_apply_result(const folder::apply_result& r);
  void schedule_detection();
  void propose_kept_edits(const std::vector<folder::preserved_edit>& edits);
  struct outgoing_snapshot {
    std::unique_ptr<folder::snapshot_writer> writer;
    raft::message message;                 // sent once the receiver has every byte
    std::uint64_t sent = 0;                // the next byte to send
    std::uint64_t acked = 0;               // every byte below was received
    std::uint64_t bytes_sent = 0;          // data bytes sent, resends included
    clock_type::time_point last_progress;  // when `acked` last moved
    // The last "resend from" honoured (by request or after a quiet spell): later requests for the
    // same offset are answers to pieces that were already in flight, not new losses.
    std::uint64_t resent_from = 0;
    clock_type::time_point resent_at{};
  };
  void resend_snapshot_from(raft::node_id to, outgoing_snapshot& out, std::uint64_t offset);
  void start_snapshot_stream(raft::message m);
  void pump_snapshot(raft::node_id to, outgoing_snapshot& out);
  void finish_snapshot(raft::node_id to, bool ok, const std::string& why);
  void send_snapshot_abort(raft::node_id to, std::uint64_t index);
  void drop_incoming_snapshot();  // aborts the transfer being received, removes its partial tree
  void check_snapshot_timeouts();
  static constexpr std::chrono::milliseconds snapshot_retry_delay{1000};
  static constexpr std::chrono::milliseconds fetch_retry{500};
  void persist_state(bool force);
  void report_catch_up();
  static constexpr std::chrono::milliseconds state_persist_interval{200};
  void on_app_message(raft::node_id from, const transport::app_message& m);
  // Content beside the log (large files): see the section "Content service" below.
  struct pushed_chunk {
    folder::command ref;  // the chunk_ref to propose once a quorum holds the bytes
    std::string bytes;    // kept for re-sends until then
    std::set<raft::node_id> acks;
    bool self_staged = false;   // this node wrote its own copy into the staging file
    bool self_durable = false;  // ... and fsynced it
    clock_type::time_point sent_at;
  };
  // A staged chunk written but not fsynced yet; acknowledged (or counted, for our own) after the
  // next sync_staged_chunks(), which covers every chunk written before it with one fdatasync
  // per staging file.
  struct unsynced_chunk {
    raft::node_id from = 0;  // who pushed it (this node: our own upload)
    std::uint64_t origin = 0, upload_id = 0, chunk_index = 0;
    folder::digest sha256{};
  };
  void schedule_staging_sync();
  void sync_staged_chunks();
  void staged_chunks_synced(
      std::vector<unsynced_chunk> chunks,
      std::map<std::pair<std::uint64_t, std::uint64_t>, std::error_code> failed);
  void maybe_reference(std::uint64_t chunk_index);
  std::error_code stage_own(pushed_chunk& p);
  struct chunk_fetch {
    folder::content_wanted want;
    std::set<raft::node_id> unavailable;  // peers that answered they do not have it
    std::size_t attempts = 0;
    bool asked = false;
    clock_type::time_point asked_at;
  };
  using chunk_key = std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>;
  void push_chunk(folder::command chunk);
  void send_push(raft::node_id to, const pushed_chunk& p);
  void resend_pushes();
  void on_content_message(raft::node_id from, const transport::app_message& m);
  void start_fetch(const std::vector<folder::content_wanted>& wanted);
  void ask_for_content();
  void fetches_done();
  void repair_missing_paths();
  void report_applied();
  std::vector<raft::node_id> member_peers() const;
  void log(int level, const std::string& text) const;
  bool wanted(std::string_view path) const;
  void check_flush_waiters();
  void report_leader_change();
  void maybe_snapshot();

  replicated_folder_config config_;
  std::unique_ptr<asio::io_context> own_io_;
  std::thread own_thread_;
  asio::any_io_executor executor_;
  std::optional<asio::strand<asio::any_io_executor>> strand_;
  std::optional<asio::steady_timer> tick_timer_;
  std::atomic<std::uint16_t> listen_port_{0};
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};

  // ---- strand-owned ----
  std::unique_ptr<storage::real_file_io> file_io_;
  std::unique_ptr<storage::durable_storage> log_;
  std::optional<raft::raw_node> node_;
  std::unique_ptr<transport::tcp_transport> transport_;
  std::unique_ptr<watch::watcher> watcher_;
  std::unique_ptr<folder::real_folder_io> tree_io_;
  std::unique_ptr<folder::real_folder_io> state_io_;
  std::unique_ptr<folder::state_machine> machine_;
  raft::conf_state conf_;
  node::proposal_tracker proposals_;  // own commands proposed, not applied yet (bounded)
  node::change_backlog backlog_;      // paths to read and propose, as the window allows
  raft::node_id last_known_leader_ = raft::no_node;
  std::uint64_t leader_changes_ = 0;  // see folder_status::leader_changes
  bool pump_scheduled_ = false;       // a pump_backlog() is posted on the strand
  bool pumping_ = false;              // pump_backlog() is running (a scan inside only enqueues)
  // One pump turn reads for at most this long, then lets ticks, messages and applies run.
  static constexpr std::chrono::milliseconds pump_slice{10};
  std::set<std::string> dirty_paths_;  // waiting for detect_and_propose
  // Paths whose change this node must still read again: an upload abandoned because the file
  // changed or was refused, a local edit an apply moved aside. A flush waits for them (they
  // were changes made before it), until read_change() settles them (anything but "busy").
  std::set<std::string, std::less<>> redetect_;
  std::deque<std::unique_ptr<flush_waiter>> flush_waiters_;
  std::uint64_t last_sequence_ = 0;
  raft::soft_state soft_;
  std::uint64_t term_ = 0;
  std::uint64_t applied_since_snapshot_ = 0;
  std::vector<std::string> halted_reasons_;
  std::function<void(const applied_change&)> applied_callback_;
  std::function<void(raft::node_id, std::uint64_t)> leader_callback_;
  std::map<raft::node_id, std::string> peer_addresses_;  // for status/logs
  bool in_ready_loop_ = false;
  clock_type::time_point last_state_persist_{};
  clock_type::duration persist_cost_{};  // how long the last state file write took
  clock_type::time_point last_progress_report_{};
  std::map<raft::node_id, outgoing_snapshot> outgoing_snapshots_;
  std::map<raft::node_id, std::unique_ptr<asio::steady_timer>> snapshot_retry_timers_;
  std::unique_ptr<folder::snapshot_reader> incoming_snapshot_;
  raft::node_id incoming_snapshot_from_ = raft::no_node;
  std::uint64_t incoming_snapshot_index_ = 0;    // the transfer's index (from its pieces)
  clock_type::time_point incoming_snapshot_at_;  // last piece accepted
  void drop_stale_incoming_snapshot();
  bool detection_scheduled_ = false;
  std::set<std::string> rescan_roots_;  // subtrees to rescan (watcher overflow)
  // The startup scan waits for the replay of the entries committed before the restart (up to
  // this index): a file applied just before a crash, after the manifest was last persisted, would
  // otherwise look like a local edit and be proposed again (bug 22). Until it ran, flushes wait
  // and scans are left to it.
  std::uint64_t startup_scan_after_ = 0;
  // A node with a fresh state (never applied anything) that follows scans its folder only once the
  // cluster's existing content has reached it: no entries left to apply and none applied for
  // fresh_scan_quiet after applying something of the current leader, or fresh_scan_wait_max after
  // start. A folder pre-seeded with a copy of the
  // tree then proposes nothing: each apply finds the file already there with the committed content
  // and adopts it (hash only, no write) — instead of every node proposing its whole tree, which
  // tripled the log of a 100,000-file pre-seeded start (issue 13). A leader scans at once.
  bool fresh_start_ = false;
  clock_type::time_point started_at_{};
  clock_type::time_point last_apply_at_{};
  clock_type::time_point leader_known_at_{};
  // Longer than a leader's own startup scan of 10^5 files takes (≈1.5 s) before it proposes.
  static constexpr std::chrono::seconds fresh_scan_quiet{3};
  static constexpr std::chrono::seconds fresh_scan_wait_max{120};
  bool fresh_scan_due() const;
  bool startup_scanned_ = false;
  void startup_scan_when_replayed();
  std::vector<std::pair<std::string, std::string>> renames_;  // watcher renames, from → to
  std::deque<raft::entry> apply_queue_;  // committed, not yet applied (apply failed: retry)
  std::string apply_error_;              // non-empty while applies fail
  std::string halted_reasons_watch_;     // a fatal watcher error
  watch::ignore_rules ignore_;
  // Large files travel as uploads: one at a time, chunks in a bounded window (continue_upload).
  std::optional<folder::chunked_upload> upload_;
  std::set<std::uint64_t> upload_in_flight_;   // own sequences of proposed, unapplied chunks
  std::set<std::uint64_t> upload_inline_;      // ... of those, chunks with their bytes inline
  bool upload_commit_next_ = false;            // every chunk proposed; the commit is next
  clock_type::time_point upload_progress_at_;  // last push, acknowledgement or own apply
  std::optional<folder::command> held_commit_;
  std::deque<folder::chunked_upload> upload_queue_;
  std::map<std::uint64_t, pushed_chunk> pushing_;  // chunk index → pushed, not yet referenced
  std::vector<unsynced_chunk> unsynced_;
  // The proposer normally keeps no copy of its own chunks (the file itself is the source; peers
  // hold the staged bytes): it stages them too, counting towards the quorum, once a push went
  // unacknowledged for proposal_retry (a peer is down) and in a cluster of one.
  bool upload_self_stage_ = false;
  bool staging_sync_scheduled_ = false;
  // One thread makes staged chunks durable, so the strand keeps receiving, verifying and writing
  // the next chunks while the disk syncs the previous ones (one sync in flight at a time).
  std::optional<asio::thread_pool> sync_thread_;
  bool staging_sync_running_ = false;
  std::map<chunk_key, chunk_fetch> fetches_;    // a commit waits for these bytes
  raft::node_id fetch_source_ = raft::no_node;  // the peer that served the last fetch
  clock_type::time_point last_repair_{};        // last look at missing paths
  // flush(all_applied): every member reports its applied index to the leader (app channel 3).
  std::map<raft::node_id, std::uint64_t> peer_applied_;
  std::uint64_t reported_applied_ = 0;
  clock_type::time_point last_applied_report_{};
  std::unique_ptr<folder::change_reader> reader_;
  std::optional<raft::ready> held_ready_;  // taken from the core, not yet persisted (halted)
  std::string why_;                        // reason of the last validation failure

  // A drain_apply_queue() is posted on the strand (apply_entries).
  bool apply_scheduled_ = false;
  // drain_apply_queue() is running: an applied-change callback that calls the API (which may
  // apply more) must not start a nested drain; the running one picks the new entries up.
  bool draining_ = false;
  static constexpr std::size_t apply_batch_entries_max = 1024;
  // 16 MiB: a batch is applied in one strand turn (contents written and fsynced together); with
  // 64 MiB a follower on a disk shared by a bulk import was silent for over a second per batch.
  static constexpr std::size_t apply_batch_bytes_max = 16u << 20;
  // Engaged while detect_and_propose runs: its proposals, stepped as one propose message.
  std::optional<std::vector<raft::entry>> proposal_batch_;
  std::size_t proposal_batch_bytes_ = 0;
};

}  // namespace raftsync
