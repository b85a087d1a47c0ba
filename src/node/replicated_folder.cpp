// raftsync — replicated_folder: the driver that joins watcher, folder state machine, Raft core,
// durable storage and transport. Everything stateful runs on one strand (see the header).
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

std::error_code replicated_folder_config::validate(std::string* why) const {
  auto fail = [&](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return make_error_code(errc::invalid_config);
  };
  if (id == raft::no_node) return fail("id must be a positive integer");
  if (root.empty()) return fail("root (the folder to replicate) is required");
  if (secret.size() < 16) return fail("secret must be at least 16 bytes");
  if (cluster_id.empty()) return fail("cluster_id must not be empty");
  std::set<raft::node_id> ids{id};
  for (const peer_address& peer : peers) {
    if (peer.id == raft::no_node) return fail("a peer has id 0");
    if (!ids.insert(peer.id).second) {
      return fail(fmt::format("node id {} appears twice (peers and this node)", peer.id));
    }
    if (peer.host.empty() || peer.port == 0) {
      return fail(fmt::format("peer {} needs a host and a non-zero port", peer.id));
    }
  }
  if (tick_interval.count() <= 0) return fail("tick_interval must be positive");
  if (heartbeat_ticks == 0 || heartbeat_ticks >= election_ticks) {
    return fail("heartbeat_ticks must be in [1, election_ticks)");
  }
  if (proposal_retry.count() <= 0) return fail("proposal_retry must be positive");
  if (chunk_bytes < 4096 || chunk_bytes > (64u << 20)) {
    return fail("chunk_bytes must be in [4 KiB, 64 MiB]");
  }
  if (snapshot_entries < 16) return fail("snapshot_entries must be at least 16");
  return {};
}

// Application channels of the transport (beside Raft's messages): folder snapshot streams, chunk
// bytes of large files, applied-index reports.
namespace {
constexpr std::uint32_t snapshot_channel = 1;
constexpr std::uint32_t content_channel = 2;
constexpr std::uint32_t applied_channel = 3;

// The application channels' little-endian integers.
void append_u64(std::string& out, std::uint64_t value) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}
std::uint64_t load_u64(std::string_view bytes) {  // bytes.size() >= 8
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return value;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
namespace node_detail {

std::uint64_t cluster_id_hash(std::string_view name) {
  const folder::digest digest = folder::sha256(name);
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value = (value << 8) | digest[static_cast<std::size_t>(i)];
  return value == 0 ? 1 : value;
}

std::int64_t utc_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string progress_name(raft::progress_state state) {
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

using node_detail::progress_name;
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

namespace raftsync {

// ---------------------------------------------------------------------------------------------
// start / stop

std::error_code replicated_folder::impl::start() {
  std::string why;
  if (std::error_code ec = config_.validate(&why)) return ec;
  bool expected = false;
  if (!started_.compare_exchange_strong(expected, true))
    return make_error_code(errc::already_exists);
  std::error_code result;
  if (own_io_) {
    // The node's own thread runs the io_context; keep it alive until stop().
    own_thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(*own_io_);
      own_io_->run();
    });
  }
  result = run_on_strand([this] { return open_state(); });
  if (result) {
    stop();
    return result;
  }
  return {};
}

std::error_code replicated_folder::impl::open_state() {
  std::error_code ec;
  if (!std::filesystem::is_directory(config_.root, ec)) {
    return ec ? ec : std::make_error_code(std::errc::not_a_directory);
  }
  std::filesystem::create_directories(config_.state_dir, ec);
  if (ec) return ec;

  // 1. The folder state machine: manifest and applied index.
  auto tree = folder::real_folder_io::open(config_.root);
  if (!tree) return tree.error();
  tree_io_ = std::move(*tree);
  sync_thread_.emplace(1);
  auto state = folder::real_folder_io::open(config_.state_dir);
  if (!state) return state.error();
  state_io_ = std::move(*state);
  folder::state_machine_config machine_config;
  machine_config.self = config_.id;
  machine_config.chunk_bytes = config_.chunk_bytes;
  machine_config.state_file = "folder-state";
  {
    // Seconds since 2020-01-01 UTC: a wiped node's new incarnation starts above every sequence
    // number its predecessor used (see state_machine_config::boot_epoch_floor).
    constexpr std::int64_t epoch_2020_s = 1'577'836'800;
    const std::int64_t now_s = node_detail::utc_now_ns() / 1'000'000'000;
    // Clamped far below 2^31 so that no clock, however wrong, can stop the node from starting.
    machine_config.boot_epoch_floor =
        now_s > epoch_2020_s
            ? std::min<std::uint64_t>(static_cast<std::uint64_t>(now_s - epoch_2020_s), 1u << 30)
            : 0;
  }
  if (std::error_code bad = machine_config.validate(&why_)) return bad;
  machine_ = std::make_unique<folder::state_machine>(machine_config, *tree_io_, *state_io_);
  if (std::error_code open_error = machine_->open()) return open_error;
  reader_ = std::make_unique<folder::change_reader>(*machine_, utc_now_ns);

  // 2. The durable Raft log.
  file_io_ = std::make_unique<storage::real_file_io>();
  log_ = std::make_unique<storage::durable_storage>(*file_io_, config_.state_dir / "raft");
  if (std::error_code open_error = log_->open()) {
    log(0, fmt::format("cannot open the Raft log: {}", log_->error_message()));
    return open_error;
  }
  auto initial = log_->load_initial_state();
  if (!initial) return initial.error();
  const bool fresh = initial->hard.empty() && initial->conf.voters.empty() &&
                     initial->conf.learners.empty() && log_->last_index() == 0;
  if (fresh && !config_.join_existing) {
    raft::conf_state voters;
    voters.voters.push_back(config_.id);
    for (const peer_address& peer : config_.peers)
      voters.voters.push_back(peer.id);
    std::sort(voters.voters.begin(), voters.voters.end());
    if (std::error_code boot = log_->bootstrap(voters)) return boot;
    initial = log_->load_initial_state();
    if (!initial) return initial.error();
  }
  conf_ = initial->conf;

  // 3. The Raft core. Entries above the folder's persisted index are replayed by the core.
  raft::config raft_config;
  raft_config.id = config_.id;
  raft_config.election_ticks = config_.election_ticks;
  raft_config.heartbeat_ticks = config_.heartbeat_ticks;
  // The core's membership is the log snapshot's; membership changes committed after it must be
  // applied again (to the core, the transport and conf_), so the core replays every committed
  // entry above the log snapshot — the folder skips those it already reflects.
  raft_config.applied =
      std::min({log_->snapshot().index, machine_->persisted_index(), initial->hard.commit});
  raft_config.applied = std::max(raft_config.applied, log_->first_index() - 1);
  raft_config.random_seed =
      config_.id * 0x9E3779B97F4A7C15ull ^
      static_cast<std::uint64_t>(clock_type::now().time_since_epoch().count());
  raft_config.uncommitted_bytes_max = 256ull << 20;
  auto node = raft::raw_node::create(raft_config, *log_);
  if (!node) return node.error();
  node_.emplace(std::move(*node));

  // 4. The transport.
  transport::tcp_transport_config transport_config;
  transport_config.id = config_.id;
  transport_config.cluster_id = node_detail::cluster_id_hash(config_.cluster_id);
  transport_config.secret = config_.secret;
  transport_config.listen_address = config_.listen_host;
  transport_config.listen_port = config_.listen_port;
  for (const peer_address& peer : config_.peers) {
    transport_config.peers[peer.id] = transport::peer_address{peer.host, peer.port};
    peer_addresses_[peer.id] = fmt::format("{}:{}", peer.host, peer.port);
  }
  transport_config.log = [this](transport::log_level level, std::string_view message) {
    // transport levels: debug 0 … error 3; ours: error 0 … debug 3.
    log(3 - static_cast<int>(level), fmt::format("transport: {}", message));
  };
  transport_config.log_level_min = transport::log_level::info;
  auto created = transport::tcp_transport::create(executor_, transport_config);
  if (!created) return created.error();
  transport_ = std::move(*created);
  transport_->set_receive_handler([this](transport::envelope e) {
    asio::post(*strand_, [this, e = std::move(e)]() mutable { on_envelope(std::move(e)); });
  });
  if (std::error_code listen_error = transport_->start()) return listen_error;
  listen_port_ = transport_->listen_port();

  // 5. The watcher, started BEFORE the startup scan so nothing slips between the two.
  watch::watch_options watch_options;
  for (const std::string& pattern : config_.ignore)
    watch_options.ignore.add(pattern);
  ignore_ = watch_options.ignore;
  watch::backend backend = watch::backend::automatic;
  switch (config_.watcher) {
    case watcher_backend::native:
      backend = watch::backend::automatic;
      break;
    case watcher_backend::inotify:
      backend = watch::backend::inotify;
      break;
    case watcher_backend::libuv:
      backend = watch::backend::libuv;
      break;
    case watcher_backend::polling:
      backend = watch::backend::polling;
      break;
  }
  auto made = watch::make_watcher(backend, watch_options);
  if (!made) return made.error();
  watcher_ = std::move(*made);
  std::error_code watch_error =
      watcher_->start(config_.root, [this](std::vector<watch::fs_event> b) {
        asio::post(*strand_, [this, b = std::move(b)]() mutable { on_watch_batch(std::move(b)); });
      });
  if (watch_error) return watch_error;

  // 6. Startup scan: everything that changed while the node was down, once the committed entries
  // above the persisted manifest are replayed (the first ready delivers them from the local log).
  // (process_ready runs it when the replay is done.)
  startup_scan_after_ = initial->hard.commit;
  fresh_start_ = machine_->applied_index() == 0 && machine_->committed().size() == 0;
  started_at_ = last_apply_at_ = clock_type::now();
  schedule_tick();
  process_ready();
  return {};
}

void replicated_folder::impl::stop() {
  if (!started_.load() || stopped_.exchange(true)) return;
  // The watcher first: after stop() returns its sink never runs again.
  if (watcher_) watcher_->stop();
  if (transport_) transport_->stop();
  // Before the strand's last step: a finished sync's completion is then queued ahead of it and
  // sees stopped_.
  if (sync_thread_) sync_thread_->join();
  if (strand_) {
    std::promise<void> done;
    auto future = done.get_future();
    asio::post(*strand_, [this, &done] {
      tick_timer_->cancel();
      for (auto& [peer, timer] : snapshot_retry_timers_)
        timer->cancel();
      for (auto& waiter : flush_waiters_)
        waiter->done.set_value(make_error_code(errc::stopped));
      flush_waiters_.clear();
      if (machine_) persist_state(true);
      done.set_value();
    });
    // With a caller-provided executor the caller keeps it running until stop() returns.
    future.wait();
  }
  if (own_io_) {
    own_io_->stop();
    if (own_thread_.joinable()) own_thread_.join();
  }
}

// ---------------------------------------------------------------------------------------------
// The driver loop.

void replicated_folder::impl::schedule_tick() {
  tick_timer_->expires_after(config_.tick_interval);
  tick_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    on_tick();
    schedule_tick();
  });
}

void replicated_folder::impl::on_tick() {
  if (held_ready_) {
    // Storage failed earlier (disk full, EIO): the ready it could not persist is held and the
    // core is frozen — no ticks, no steps — so this node neither leads nor votes on state it
    // cannot back with its disk; the others elect a leader without it. Retry the write; on success
    // the node resumes where it stopped, without a restart and without a hole in the log.
    process_ready();
    return;
  }
  node_->tick();
  if (!outgoing_snapshots_.empty()) check_snapshot_timeouts();
  if (incoming_snapshot_) drop_stale_incoming_snapshot();
  if (!pushing_.empty()) resend_pushes();
  check_upload_progress();
  if (!fetches_.empty()) ask_for_content();  // re-asks what timed out
  report_applied();
  if (fetches_.empty() && apply_queue_.empty() && machine_->needs_snapshot() &&
      clock_type::now() - last_repair_ >= std::chrono::seconds(1)) {
    repair_missing_paths();
  }
  if (!apply_queue_.empty() && fetches_.empty()) drain_apply_queue();  // an apply failed: retry
  persist_state(false);
  report_catch_up();
  schedule_pump();  // room freed by anything but an apply (an abandoned upload) is used too
  // Re-propose what was not applied in time (lost with a leader, dropped without one), with
  // backoff (proposal_tracker).
  const auto now = clock_type::now();
  for (node::proposal_tracker::proposal* p : proposals_.due(now)) {
    log(3, fmt::format("re-proposing #{} ({}), attempt {}", p->sequence, p->path, p->attempts + 1));
    proposals_.reproposed(*p, now);
    send_proposal(p->data);
  }
  process_ready();
}

void replicated_folder::impl::on_envelope(transport::envelope e) {
  if (stopped_) return;
  if (auto* m = std::get_if<raft::message>(&e.body)) {
    if (m->type == raft::message_type::propose && !forwarded_proposal_allowed(*m)) return;
    if (!held_ready_) (void)node_->step(*m);
  } else {
    on_app_message(e.from, std::get<transport::app_message>(e.body));
  }
  process_ready();
}

// A follower forwards its own folder commands to the leader; nothing else may arrive that way. The
// transport has authenticated m.from, so a command must name it as its origin: otherwise a peer
// could forge another member's (origin, sequence) and make that member's later commands look like
// duplicates (chaos bug 4). Membership changes are made on the leader only.
bool replicated_folder::impl::forwarded_proposal_allowed(const raft::message& m) {
  const bool member =
      std::find(conf_.voters.begin(), conf_.voters.end(), m.from) != conf_.voters.end() ||
      std::find(conf_.learners.begin(), conf_.learners.end(), m.from) != conf_.learners.end();
  std::string why;
  if (!member) why = "it is not a member";
  for (const raft::entry& e : m.entries) {
    if (!why.empty()) break;
    if (e.type != raft::entry_type::normal) {
      why = "it carries a membership change";
    } else if (!e.data.empty()) {
      auto header = folder::peek_command(e.data);  // no copy of the content
      if (header && header->origin != m.from) {
        why = fmt::format("a command names node {} as its origin", header->origin);
      }
    }
  }
  if (!why.empty()) {
    log(1, fmt::format("proposal forwarded by node {} refused: {}", m.from, why));
    return false;
  }
  // Only the leader takes forwarded proposals: a follower would forward them again under its own
  // id, and the leader would then refuse them as commands in another node's name. The proposer
  // re-proposes to the leader it learns of (pending proposals are retried).
  return soft_.role == raft::role::leader;
}

void replicated_folder::impl::process_ready() {
  if (in_ready_loop_) return;  // a callback re-entered; the outer loop picks the work up
  in_ready_loop_ = true;
  while (node_ && (held_ready_ || node_->has_ready())) {
    if (!held_ready_) {
      held_ready_ = node_->ready();
      // A leader may send its appends and heartbeats before its own log write is durable (Raft
      // thesis §10.2.1): its own acknowledgement only counts once this loop has persisted the
      // batch (responses are stepped on this strand, after the save below), so the leader's and
      // the followers' fsyncs overlap instead of adding up. Everything else waits for the save.
      const raft::role role = held_ready_->soft ? held_ready_->soft->role : soft_.role;
      if (role == raft::role::leader) {
        auto& messages = held_ready_->messages;
        auto early =
            std::stable_partition(messages.begin(), messages.end(), [](const raft::message& m) {
              return m.type == raft::message_type::append ||
                     m.type == raft::message_type::heartbeat;
            });
        for (auto it = messages.begin(); it != early; ++it) {
          const raft::node_id to = it->to;
          transport_->send(transport::envelope{config_.id, to, std::move(*it)});
        }
        messages.erase(messages.begin(), early);
      }
    }
    if (std::error_code ec = log_->save(*held_ready_)) {
      if (halted_reasons_.empty()) {
        halted_reasons_.push_back(fmt::format(
            "storage: {} — not leading or voting until writes succeed again", ec.message()));
      }
      break;
    }
    halted_reasons_.clear();
    raft::ready rd = std::move(*held_ready_);
    held_ready_.reset();
    for (raft::message& m : rd.messages) {
      if (m.type == raft::message_type::snapshot) {
        start_snapshot_stream(std::move(m));
        continue;
      }
      const raft::node_id to = m.to;
      transport_->send(transport::envelope{config_.id, to, std::move(m)});
    }
    // A snapshot from the leader carries the membership as of its index: a node that joined
    // (or was far behind) learns its peers from it, not from conf-change entries (chaos bug 6:
    // without it a joined node knew no peers to fetch content from).
    if (!rd.snapshot.empty()) conf_ = rd.snapshot.conf;
    if (rd.hard) term_ = rd.hard->term;
    if (rd.soft) {
      const bool leader_changed = rd.soft->leader != soft_.leader;
      soft_ = *rd.soft;
      if (soft_.role != raft::role::leader && !outgoing_snapshots_.empty()) {
        // Only a leader streams snapshots; the new one sends its own (no retry from here).
        for (const auto& [to, out] : outgoing_snapshots_) {
          log(2, fmt::format("folder snapshot to node {} stopped: no longer the leader", to));
          send_snapshot_abort(to, out.writer->index());
        }
        outgoing_snapshots_.clear();
      }
      if (leader_changed) {
        term_ = std::max(term_, node_->status().hard.term);
        report_leader_change();
      }
    }
    apply_entries(rd.committed_entries);
    node_->advance(rd);
  }
  in_ready_loop_ = false;
  if (!startup_scanned_) startup_scan_when_replayed();
  check_flush_waiters();
}

bool replicated_folder::impl::fresh_scan_due() const {
  const auto now = clock_type::now();
  if (soft_.role == raft::role::leader || now - started_at_ >= fresh_scan_wait_max) return true;
  if (soft_.leader == raft::no_node) return false;
  // Something of this leader's term applied (its first entry at least), then quiet.
  return last_apply_at_ >= leader_known_at_ &&
         machine_->applied_index() >= node_->status().committed &&
         now - last_apply_at_ >= fresh_scan_quiet;
}

void replicated_folder::impl::startup_scan_when_replayed() {
  if (startup_scanned_ || stopped_ || machine_->applied_index() < startup_scan_after_) return;
  if (fresh_start_ && !fresh_scan_due()) return;
  startup_scanned_ = true;
  rescan_roots_.clear();  // this scan covers them
  detect_and_propose({""}, true);
  // Flushes called during the replay wait for what this scan found: it stands for their own.
  for (auto& waiter : flush_waiters_) {
    waiter->backlog_mark = backlog_.pushed();
    waiter->backlog_read = false;
    waiter->sequence_max = std::max(waiter->sequence_max, last_sequence_);
  }
  process_ready();
}

}  // namespace raftsync

namespace raftsync {

// ---------------------------------------------------------------------------------------------
// Applying committed entries.

void replicated_folder::impl::apply_entries(const std::vector<raft::entry>& entries) {
  bool membership = false;
  for (const raft::entry& e : entries) {
    apply_queue_.push_back(e);
    membership = membership || e.type == raft::entry_type::conf_change;
  }
  // A membership change is applied before advance(): the core accepts the next one as soon as
  // advance() reports this one applied, so the configuration must already be in force.
  if (membership) {
    drain_apply_queue();
    return;
  }
  // During a burst (the log holds entries beyond the commit index: more commits are coming) the
  // folder commands are applied after the handlers already queued on the strand ran: appends
  // that arrived meanwhile are stepped and persisted first, so a burst that reaches a follower as
  // many small appends is applied in a few large batches (drain_apply_queue) instead of one
  // batch of one entry per append. The core's applied index may then run ahead of the folder's;
  // the folder's own applied and persisted indexes are what snapshots and compaction use.
  // A lone change (nothing beyond the commit index) is applied at once, and the queue is bounded:
  // past one full batch of entries or bytes, apply now.
  const raft::status st = node_->status();
  std::size_t queued_bytes = 0;
  for (const raft::entry& e : apply_queue_)
    queued_bytes += e.data.size();
  if (st.last_index <= st.committed || apply_queue_.size() >= apply_batch_entries_max ||
      queued_bytes >= apply_batch_bytes_max) {
    drain_apply_queue();
    return;
  }
  if (entries.empty() || apply_scheduled_) return;
  apply_scheduled_ = true;
  asio::post(*strand_, [this] {
    apply_scheduled_ = false;
    if (stopped_) return;
    drain_apply_queue();
    check_flush_waiters();
  });
}

void replicated_folder::impl::drain_apply_queue() {
  // Folder commands are applied in runs (up to apply_batch_entries_max consecutive ones or
  // apply_batch_bytes_max, which also bounds the temporary files of a batch): the state machine
  // makes a run's file contents durable together and fsyncs each directory once, instead of two
  // fsyncs per file. A membership change or the leader's no-op ends a run.
  if (draining_) return;
  draining_ = true;
  bool applied_any = false;
  std::vector<folder::batch_entry> batch;
  while (!apply_queue_.empty()) {
    const raft::entry& e = apply_queue_.front();
    if (e.index <= machine_->applied_index()) {  // replayed after a restart: already reflected
      // ... in the folder; a membership change is state of the core and the transport, which
      // restarted from the log snapshot's membership: apply it again.
      if (e.type == raft::entry_type::conf_change) apply_conf_change_entry(e);
      apply_queue_.pop_front();
      continue;
    }
    if (e.type == raft::entry_type::conf_change || e.data.empty()) {
      if (e.type == raft::entry_type::conf_change) apply_conf_change_entry(e);
      machine_->skip(e.index);  // a membership change, or the leader's no-op of its term
      applied_any = true;
      ++applied_since_snapshot_;
      apply_queue_.pop_front();
      continue;
    }
    batch.clear();
    std::size_t batch_bytes = 0;
    for (auto it = apply_queue_.begin();
         it != apply_queue_.end() && batch.size() < apply_batch_entries_max &&
         batch_bytes < apply_batch_bytes_max && it->type != raft::entry_type::conf_change &&
         !it->data.empty();
         ++it) {
      batch.push_back(folder::batch_entry{it->index, it->data});
      batch_bytes += it->data.size();
      // A large file's commit may have to wait for its bytes (awaiting_content): it ends the
      // batch, so a wait never throws away (and re-prepares) the contents of later writes.
      auto header = folder::peek_command(it->data);
      if (header && header->kind == folder::command_kind::commit) break;
    }
    const std::vector<folder::apply_result> results = machine_->apply_batch(batch);
    bool stopped = false;
    for (const folder::apply_result& r : results) {
      if (r.status == folder::apply_status::awaiting_content && !r.wanted.empty()) {
        // A commit whose bytes never reached this node: fetch them, then apply it again.
        start_fetch(r.wanted);
        stopped = true;
        break;
      }
      if (r.status == folder::apply_status::failed) {
        // A local I/O error (for example the folder's disk is full): nothing was recorded, so the
        // same entry is retried on the next tick. Until then the node applies nothing else.
        apply_error_ = fmt::format("folder: applying #{} failed: {} ({})", r.index,
                                   r.error.message(), r.reason);
        stopped = true;
        break;
      }
      apply_error_.clear();
      handle_apply_result(r);
      if (r.kind == folder::command_kind::rename && r.changed_tree()) {
        // The source may have been deleted here before this node applied the rename (a local
        // delete the watcher reported while the manifest still had the old name, so nothing was
        // proposed): the destination is then committed but absent. Look at it again; an echo
        // proposes nothing, an absent file proposes its delete.
        dirty_paths_.insert(r.path);
        schedule_detection();
      }
      applied_any = true;
      ++applied_since_snapshot_;
      apply_queue_.pop_front();
    }
    if (stopped) break;
  }
  draining_ = false;
  if (applied_any) {
    last_apply_at_ = clock_type::now();
    maybe_snapshot();
    report_applied();
    schedule_pump();  // own commands applied: the proposal window may have room again
  }
}

// Tells the leader how far this node applied (when it advanced, and once a second), so a flush
// with all_applied on the leader knows when every member has a change on disk.
void replicated_folder::impl::report_applied() {
  if (soft_.leader == raft::no_node || soft_.leader == config_.id) return;
  const std::uint64_t applied = machine_->applied_index();
  const auto now = clock_type::now();
  if (applied == reported_applied_ && now - last_applied_report_ < std::chrono::seconds(1)) return;
  reported_applied_ = applied;
  last_applied_report_ = now;
  transport::app_message m;
  m.channel = applied_channel;
  append_u64(m.payload, applied);
  transport_->send(transport::envelope{config_.id, soft_.leader, std::move(m)});
}

// The state file (manifest + applied index) is written lazily — at most every
// state_persist_interval, before a log snapshot, and at stop — not after every apply: that would
// add two fsyncs to every change's latency. It is safe because a restart replays every entry above
// the persisted index, and the state machine recognises an entry the tree already reflects (it
// records it without applying it twice); the log is never compacted above the persisted index.
// While the node is far behind the cluster (initial sync, long downtime), report how far it got
// once a second.
void replicated_folder::impl::report_catch_up() {
  constexpr std::uint64_t far_behind_entries = 500;
  const auto now = clock_type::now();
  if (now - last_progress_report_ < std::chrono::seconds(1)) return;
  last_progress_report_ = now;
  const raft::status st = node_->status();
  const std::uint64_t applied = machine_->applied_index();
  if (st.committed < applied + far_behind_entries) return;
  log(2, fmt::format("catching up: applied #{} of #{} ({}%)", applied, st.committed,
                     st.committed == 0 ? 100 : applied * 100 / st.committed));
}

// The state file is rewritten whole, so its cost grows with the folder (tens of milliseconds for
// 10^5 files): the interval grows with it, to ten times the last write's duration, so that
// rewriting never takes more than a tenth of the strand's time during a long burst of applies.
void replicated_folder::impl::persist_state(bool force) {
  if (machine_->applied_index() == machine_->persisted_index()) return;
  const auto now = clock_type::now();
  const auto interval = std::max<clock_type::duration>(state_persist_interval, 10 * persist_cost_);
  if (!force && now - last_state_persist_ < interval) return;
  if (std::error_code ec = machine_->persist()) {
    apply_error_ = fmt::format("folder: persisting the manifest failed: {}", ec.message());
  }
  last_state_persist_ = clock_type::now();
  persist_cost_ = last_state_persist_ - now;
}

void replicated_folder::impl::handle_apply_result(const folder::apply_result& r) {
  if (r.own) {
    if (r.status == folder::apply_status::duplicate && proposals_.contains(r.sequence)) {
      // Its first application, not a retry's: the command fell out of the state machine's dedupe
      // window (more than dedupe_window newer commands of this node applied first) and had no
      // effect. The window gate in pump_backlog prevents it; should it happen anyway, the change
      // is read again rather than lost silently (issue 13: a large file's commit, held while
      // 25,000 small files were proposed, was dropped this way).
      log(1, fmt::format("#{}: own command for {} applied outside the dedupe window; reading the "
                         "path again",
                         r.index, r.path));
      dirty_paths_.insert(r.path);
      redetect_.insert(r.path);
      schedule_detection();
      if (upload_ && upload_in_flight_.count(r.sequence) != 0) {
        upload_in_flight_.erase(r.sequence);
        abandon_upload();
        continue_upload();
      }
    }
    proposals_.erase(r.sequence);
    upload_inline_.erase(r.sequence);
    if (upload_ && upload_in_flight_.erase(r.sequence) != 0) {
      const bool failed =
          r.status == folder::apply_status::rejected || r.status == folder::apply_status::ignored;
      if (failed || r.kind == folder::command_kind::commit) {
        // Done, or refused (for example a concurrent change won): look at the file afresh.
        if (failed) {
          dirty_paths_.insert(upload_->path());
          redetect_.insert(upload_->path());
        }
        log(3, fmt::format("upload {} of {} {}", upload_->upload_id(), upload_->path(),
                           failed ? "refused: " + r.reason : std::string("committed")));
        abandon_upload();
        schedule_detection();
      } else {
        upload_progress_at_ = clock_type::now();
      }
      continue_upload();
    }
  }
  if (r.kind == folder::command_kind::commit) {
    if (std::error_code ec = machine_->drop_stale_staging(r.origin, r.upload_id)) {
      log(1, fmt::format("removing stale staging files of node {}: {}", r.origin, ec.message()));
    }
  }
  // A local edit that had not been proposed yet was in the way of this apply: the state machine
  // moved it aside on this node. Propose the copy so it replicates (nothing is lost).
  propose_kept_edits(r.preserved);
  if (r.status == folder::apply_status::rejected) {
    log(1, fmt::format("rejected #{}: {}", r.index, r.reason));
  }
  if (r.needs_snapshot) {
    log(1, fmt::format("#{}: the committed content of {} cannot be rebuilt here ({}); it is "
                       "fetched from a peer that has it",
                       r.index, r.path, r.reason));
  }
  if (applied_callback_ && r.changed_tree()) {
    applied_change change;
    change.index = r.index;
    change.origin = r.origin;
    change.kind = folder::to_string(r.kind);
    change.path = r.path;
    change.from_path = r.from_path;
    change.conflict_copy = r.status == folder::apply_status::conflict;
    applied_callback_(change);
  }
}

void replicated_folder::impl::apply_conf_change_entry(const raft::entry& e) {
  auto cc = raft::decode_conf_change(e.data);
  if (!cc) {
    log(0, fmt::format("#{}: undecodable membership change ignored", e.index));
    return;
  }
  conf_ = node_->apply_conf_change(*cc);
  if (cc->node == config_.id) return;
  if (cc->type == raft::conf_change_type::remove_node) {
    transport_->remove_peer(cc->node);
    peer_addresses_.erase(cc->node);
    log(2, fmt::format("node {} removed from the cluster", cc->node));
  } else if (!cc->context.empty()) {
    std::string host;
    std::uint16_t port = 0;
    auto colon = cc->context.rfind(':');
    if (colon != std::string::npos) {
      host = cc->context.substr(0, colon);
      port = static_cast<std::uint16_t>(std::strtoul(cc->context.c_str() + colon + 1, nullptr, 10));
    }
    if (!host.empty() && port != 0) {
      transport_->add_peer(cc->node, transport::peer_address{host, port});
      peer_addresses_[cc->node] = cc->context;
    }
    log(2, fmt::format("node {} added as {}", cc->node,
                       cc->type == raft::conf_change_type::add_learner_node ? "learner" : "voter"));
  }
}

// ---------------------------------------------------------------------------------------------
// Proposing local changes.

std::uint64_t replicated_folder::impl::propose_command(folder::command cmd) {
  cmd.origin = config_.id;
  if (cmd.timestamp_ns == 0) cmd.timestamp_ns = utc_now_ns();
  // Several events for one change (create, modify, close) must not become several commands: a
  // command equal to one still pending for the same path (sequence and clock aside) is dropped.
  const bool is_upload = cmd.kind == folder::command_kind::chunk ||
                         cmd.kind == folder::command_kind::chunk_ref ||
                         cmd.kind == folder::command_kind::commit;
  std::string fingerprint;
  if (!is_upload) {
    folder::command key = cmd;
    key.sequence = 0;
    key.timestamp_ns = 0;
    fingerprint = folder::encode_command(key);
    if (proposals_.duplicate(cmd.path, fingerprint)) return 0;
  }
  if (cmd.sequence == 0) cmd.sequence = machine_->next_sequence();
  log(3, fmt::format("propose {}", folder::describe(cmd)));
  const auto& p = proposals_.add(cmd.sequence, folder::encode_command(cmd), cmd.path,
                                 std::move(fingerprint), clock_type::now());
  last_sequence_ = std::max(last_sequence_, cmd.sequence);
  send_proposal(p.data);
  return cmd.sequence;
}

void replicated_folder::impl::send_proposal(const std::string& data) {
  if (proposal_batch_) {
    // Inside detect_and_propose: one propose message (up to proposal_batch_bytes_max) for what
    // the pass finds, so the leader appends and replicates it as a few large appends rather than
    // one message per file (each of which costs a follower a log fsync and an apply).
    constexpr std::size_t proposal_batch_bytes_max = 1 << 20;
    if (proposal_batch_bytes_ + data.size() > proposal_batch_bytes_max) flush_proposal_batch();
    proposal_batch_->push_back(raft::entry{0, 0, raft::entry_type::normal, data});
    proposal_batch_bytes_ += data.size();
    return;
  }
  // Without a known leader the core drops the proposal; the retry timer proposes it again.
  (void)node_->propose(data);
}

void replicated_folder::impl::flush_proposal_batch() {
  if (!proposal_batch_ || proposal_batch_->empty()) return;
  raft::message m;
  m.type = raft::message_type::propose;
  m.from = config_.id;
  m.entries = std::move(*proposal_batch_);
  proposal_batch_->clear();
  proposal_batch_bytes_ = 0;
  // Dropped like a single proposal (no leader, transfer, budget): the retry timer re-proposes.
  (void)node_->step(std::move(m));
}

void replicated_folder::impl::on_watch_batch(std::vector<watch::fs_event> batch) {
  if (stopped_) return;
  for (watch::fs_event& event : batch) {
    log(3, fmt::format("watch: {}", watch::describe(event)));
    switch (event.effect) {
      case watch::fs_effect::error:
        log(event.fatal ? 0 : 1, fmt::format("watcher: {}", watch::describe(event)));
        if (event.fatal) halted_reasons_watch_ = watch::describe(event);
        break;
      case watch::fs_effect::rescan_required:
        rescan_roots_.insert(event.path.generic_string());
        break;
      case watch::fs_effect::rename:
        // A committed entry moved: one rename command, no content (read_rename checks it).
        renames_.emplace_back(event.old_path.generic_string(), event.path.generic_string());
        break;
      default:
        // A new directory's content is scanned by propose_plan once its mkdir is read.
        dirty_paths_.insert(event.path.generic_string());
    }
  }
  schedule_detection();
}

// Local edits an apply or a snapshot install moved aside or put back: proposed like any change,
// and a flush waits until they are read.
void replicated_folder::impl::propose_kept_edits(const std::vector<folder::preserved_edit>& edits) {
  for (const folder::preserved_edit& edit : edits) {
    dirty_paths_.insert(edit.copy_path);
    redetect_.insert(edit.copy_path);
  }
  if (!edits.empty()) schedule_detection();
}

void replicated_folder::impl::schedule_detection() {
  if (detection_scheduled_) return;
  detection_scheduled_ = true;
  // Run after the events already queued on the strand (batches arriving together coalesce).
  asio::post(*strand_, [this] {
    detection_scheduled_ = false;
    if (stopped_) return;
    std::vector<std::string> paths(dirty_paths_.begin(), dirty_paths_.end());
    std::vector<std::string> roots(rescan_roots_.begin(), rescan_roots_.end());
    auto renames = std::move(renames_);
    dirty_paths_.clear();
    rescan_roots_.clear();
    renames_.clear();
    for (auto& [from, to] : renames) {
      if (wanted(from) && wanted(to)) {
        detect_renamed(from, to);
      } else {
        paths.push_back(from);
        paths.push_back(to);
      }
    }
    if (!roots.empty() && startup_scanned_) detect_and_propose(roots, true);
    if (!paths.empty()) detect_and_propose(paths, false);
    process_ready();  // also checks flush waiters (redetect_ may be all they waited for)
  });
}

// ---------------------------------------------------------------------------------------------
// flush, status, programmatic changes, membership.

std::error_code replicated_folder::impl::flush(std::chrono::milliseconds timeout,
                                               bool all_applied) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  RAFTSYNC_ASSERT(!strand_->running_in_this_thread(), "flush() called from the node's strand");
  auto waiter = std::make_unique<flush_waiter>();
  auto future = waiter->done.get_future();
  asio::post(*strand_, [this, waiter = std::move(waiter), all_applied]() mutable {
    if (stopped_) {
      waiter->done.set_value(make_error_code(errc::stopped));
      return;
    }
    // Changes the watcher has not reported yet are found by a scan of the whole folder (stat
    // only; hashes only for what changed), so "made before the call" holds for every backend.
    // (During the replay after a restart the startup scan, still to come, does it.)
    if (startup_scanned_) detect_and_propose({""}, true);
    process_ready();
    waiter->backlog_mark = backlog_.pushed();
    waiter->sequence_max = last_sequence_;
    waiter->all_applied = all_applied;
    flush_waiters_.push_back(std::move(waiter));
    check_flush_waiters();
  });
  if (future.wait_for(timeout) != std::future_status::ready)
    return make_error_code(errc::timed_out);
  return future.get();
}

void replicated_folder::impl::check_flush_waiters() {
  if (flush_waiters_.empty()) return;
  const std::uint64_t oldest_pending = proposals_.oldest();
  const raft::status st = node_->status();
  for (auto it = flush_waiters_.begin(); it != flush_waiters_.end();) {
    flush_waiter& w = **it;
    if (!w.backlog_read && backlog_.read_through() >= w.backlog_mark) {
      // The paths waiting at the call are read; what they proposed is what the flush waits for.
      w.backlog_read = true;
      w.sequence_max = std::max(w.sequence_max, last_sequence_);
    }
    // Large files in flight are part of "every change made before the call": their chunks are
    // proposed progressively, so wait for the whole upload queue, not only pending commands.
    // An upload abandoned for a re-read leaves no upload behind for a moment: its path, to be
    // read again, is in redetect_ (chaos soak D'': a flush acknowledged a large write that was
    // never proposed).
    bool done = startup_scanned_ && w.backlog_read && oldest_pending > w.sequence_max && !upload_ &&
                upload_queue_.empty() && redetect_.empty();
    if (done && w.all_applied) {
      if (w.index == 0) w.index = machine_->applied_index();
      // Only the leader hears every member's applied index (report_applied); a follower waits
      // until it leads or the leader's commit (which it applied) covers the index — the best
      // it can observe.
      if (st.soft.role == raft::role::leader) {
        for (const raft::progress_status& p : st.progress) {
          if (p.learner || p.id == config_.id || !p.recent_active) continue;
          auto applied = peer_applied_.find(p.id);
          if (applied == peer_applied_.end() || applied->second < w.index) done = false;
        }
      }
    }
    if (done) {
      w.done.set_value(std::error_code{});
      it = flush_waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

folder_status replicated_folder::impl::status() const {
  if (!started_ || stopped_) {
    folder_status s;
    s.id = config_.id;
    s.role = "stopped";
    return s;
  }
  return const_cast<impl*>(this)->run_on_strand([this] {
    folder_status s;
    s.id = config_.id;
    const raft::status st = node_->status();
    s.role = raft::to_string(st.soft.role);
    s.term = st.hard.term;
    s.leader = st.soft.leader;
    s.commit_index = st.committed;
    s.applied_index = machine_->applied_index();
    s.last_index = st.last_index;
    s.pending_proposals = proposals_.size();
    s.unread_changes = backlog_.size();
    s.leader_changes = leader_changes_;
    s.stale_messages = st.stale_messages;
    s.files = machine_->committed().size();
    for (const raft::progress_status& p : st.progress) {
      if (p.id == config_.id) continue;
      peer_progress pp;
      pp.id = p.id;
      pp.match_index = p.match;
      pp.next_index = p.next;
      pp.state = progress_name(p.state);
      pp.learner = p.learner;
      pp.connected = p.recent_active;
      s.peers.push_back(pp);
    }
    s.halted_reasons = halted_reasons_;
    if (!apply_error_.empty()) s.halted_reasons.push_back(apply_error_);
    if (!halted_reasons_watch_.empty()) s.halted_reasons.push_back(halted_reasons_watch_);
    return s;
  });
}

std::error_code replicated_folder::impl::write_file(const std::string& path,
                                                    std::string_view contents) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  return run_on_strand([&]() -> std::error_code {
    if (std::error_code ec = folder::validate_path(path, machine_->config().rules)) return ec;
    if (std::error_code ec = folder::make_dirs(*tree_io_, folder::parent_path(path), 0755))
      return ec;
    const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    if (std::error_code ec = tree_io_->write_file_atomic(path, contents, 0644, now)) return ec;
    detect_and_propose({path}, false);
    process_ready();
    return {};
  });
}

std::error_code replicated_folder::impl::remove(const std::string& path) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  return run_on_strand([&]() -> std::error_code {
    if (std::error_code ec = folder::validate_path(path, machine_->config().rules)) return ec;
    auto st = tree_io_->lstat(path);
    if (!st) return st.error();
    std::error_code ec = st->kind == folder::file_kind::directory
                             ? folder::remove_all(*tree_io_, path)
                             : tree_io_->unlink(path);
    if (ec) return ec;
    detect_and_propose({path}, true);
    process_ready();
    return {};
  });
}

std::error_code replicated_folder::impl::rename(const std::string& from, const std::string& to) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  return run_on_strand([&]() -> std::error_code {
    if (std::error_code ec = folder::validate_path(from, machine_->config().rules)) return ec;
    if (std::error_code ec = folder::validate_path(to, machine_->config().rules)) return ec;
    if (std::error_code ec = folder::make_dirs(*tree_io_, folder::parent_path(to), 0755)) return ec;
    if (std::error_code ec = tree_io_->rename(from, to)) return ec;
    detect_renamed(from, to);
    process_ready();
    return {};
  });
}

std::error_code replicated_folder::impl::add_node(const peer_address& peer, bool as_learner) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  if (peer.id == raft::no_node || peer.host.empty() || peer.port == 0) {
    return make_error_code(errc::invalid_config);
  }
  return run_on_strand([&]() -> std::error_code {
    if (soft_.role != raft::role::leader) return make_error_code(errc::not_leader);
    transport_->add_peer(peer.id, transport::peer_address{peer.host, peer.port});
    raft::conf_change cc;
    cc.type =
        as_learner ? raft::conf_change_type::add_learner_node : raft::conf_change_type::add_node;
    cc.node = peer.id;
    cc.context = fmt::format("{}:{}", peer.host, peer.port);
    std::error_code ec = node_->propose_conf_change(cc);
    process_ready();
    return ec;
  });
}

std::error_code replicated_folder::impl::remove_node(raft::node_id id) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  return run_on_strand([&]() -> std::error_code {
    if (soft_.role != raft::role::leader) return make_error_code(errc::not_leader);
    raft::conf_change cc;
    cc.type = raft::conf_change_type::remove_node;
    cc.node = id;
    std::error_code ec = node_->propose_conf_change(cc);
    process_ready();
    return ec;
  });
}

std::error_code replicated_folder::impl::transfer_leadership(raft::node_id to) {
  if (!started_ || stopped_) return make_error_code(errc::stopped);
  return run_on_strand([&]() -> std::error_code {
    std::error_code ec = node_->transfer_leadership(to);
    process_ready();
    return ec;
  });
}

void replicated_folder::impl::report_leader_change() {
  leader_known_at_ = clock_type::now();
  if (soft_.leader != raft::no_node && soft_.leader != last_known_leader_) {
    last_known_leader_ = soft_.leader;
    ++leader_changes_;
  }
  log(2, soft_.leader == raft::no_node
             ? fmt::format("term {}: no leader", term_)
             : fmt::format("term {}: leader is node {}", term_, soft_.leader));
  if (leader_callback_) leader_callback_(soft_.leader, term_);
  // Proposals sent towards the old leader may be lost: re-propose everything pending now.
  const auto now = clock_type::now();
  for (node::proposal_tracker::proposal* p : proposals_.all()) {
    proposals_.reproposed(*p, now);
    send_proposal(p->data);
  }
}

// ---------------------------------------------------------------------------------------------
// The public class forwards to impl.

replicated_folder::replicated_folder(replicated_folder_config config)
    : impl_(std::make_unique<impl>(std::move(config), std::nullopt)) {}
replicated_folder::replicated_folder(replicated_folder_config config,
                                     boost::asio::any_io_executor executor)
    : impl_(std::make_unique<impl>(std::move(config), std::move(executor))) {}
replicated_folder::~replicated_folder() = default;
std::error_code replicated_folder::start() {
  return impl_->start();
}
void replicated_folder::stop() {
  impl_->stop();
}
folder_status replicated_folder::status() const {
  return impl_->status();
}
std::uint16_t replicated_folder::listen_port() const {
  return impl_->listen_port();
}
std::error_code replicated_folder::flush(std::chrono::milliseconds timeout, bool all_applied) {
  return impl_->flush(timeout, all_applied);
}
std::error_code replicated_folder::write_file(const std::string& path, std::string_view contents) {
  return impl_->write_file(path, contents);
}
std::error_code replicated_folder::remove(const std::string& path) {
  return impl_->remove(path);
}
std::error_code replicated_folder::rename(const std::string& from, const std::string& to) {
  return impl_->rename(from, to);
}
std::error_code replicated_folder::add_node(const peer_address& peer, bool as_learner) {
  return impl_->add_node(peer, as_learner);
}
std::error_code replicated_folder::remove_node(raft::node_id id) {
  return impl_->remove_node(id);
}
std::error_code replicated_folder::transfer_leadership(raft::node_id to) {
  return impl_->transfer_leadership(to);
}
void replicated_folder::on_applied(std::function<void(const applied_change&)> callback) {
  impl_->on_applied(std::move(callback));
}
void replicated_folder::on_leader_change(
    std::function<void(raft::node_id leader, std::uint64_t term)> callback) {
  impl_->on_leader_change(std::move(callback));
}

}  // namespace raftsync

namespace raftsync {

// ---------------------------------------------------------------------------------------------
// Local change detection: disk vs. manifest → commands. Events are hints; this re-reads the disk.

// Messages quote paths from the folder, the log and the network; a name may hold any byte but
// '/' and NUL on Linux, so control characters are escaped (\xNN): a newline in a file name must
// not start a forged line in the operator's log.
void replicated_folder::impl::log(int level, const std::string& text) const {
  const auto is_control = [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  };
  std::string escaped;
  if (std::any_of(text.begin(), text.end(), is_control)) {
    escaped.reserve(text.size() + 16);
    for (char c : text) {
      if (is_control(c)) {
        escaped += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
      } else {
        escaped.push_back(c);
      }
    }
  }
  const std::string& line = escaped.empty() ? text : escaped;
  if (config_.log) {
    config_.log(level, line);
  } else if (level <= 1) {
    fmt::print(stderr, "raftsync node {}: {}\n", config_.id, line);
  }
}

bool replicated_folder::impl::wanted(std::string_view path) const {
  if (path.empty()) return false;
  if (folder::is_internal_path(path)) return false;
  if (ignore_.ignored(std::filesystem::path(path))) return false;
  return !folder::validate_path(path, machine_->config().rules);
}

// Puts the paths (or, recursive, what a scan of each finds changed) in the backlog, then reads
// as much of the backlog as the proposal window and one slice allow (pump_backlog).
void replicated_folder::impl::detect_and_propose(const std::vector<std::string>& paths,
                                                 bool recursive) {
  for (const std::string& path : paths) {
    if (!path.empty() && !wanted(path)) continue;
    if (!recursive) {
      backlog_.push(path, true);
      continue;
    }
    auto report = folder::scan(*machine_, path);
    if (!report) {
      if (report.error() != make_error_code(errc::unavailable)) {
        log(1, fmt::format("scan of '{}' failed: {}", path, report.error().message()));
      }
      continue;
    }
    for (const std::string& refused : report->refused) {
      log(1, fmt::format("{} cannot be replicated (refused by the path rules)", refused));
    }
    for (const std::string& changed : report->changed) {
      if (wanted(changed)) backlog_.push(changed, false);
    }
  }
  pump_backlog();
}

// Reads backlog paths and proposes their changes while the proposal window has room, for at most
// pump_slice; the rest waits for the next turn (posted here) or, with the window full, for own
// commands to apply (drain_apply_queue). Proposals of one turn travel as one propose message.
// A new directory's scan inside a read only enqueues (pumping_).
void replicated_folder::impl::pump_backlog() {
  if (pumping_ || stopped_) return;
  pumping_ = true;
  proposal_batch_.emplace();
  const auto deadline = clock_type::now() + pump_slice;
  while (!backlog_.empty() && proposals_.has_room() && within_dedupe_window() &&
         clock_type::now() < deadline) {
    auto item = backlog_.pop();
    detect_one(item->path, item->scan_new_directories);
  }
  flush_proposal_batch();
  proposal_batch_.reset();
  pumping_ = false;
  if (!backlog_.empty() && proposals_.has_room()) schedule_pump();
}

// Every own command must apply while its sequence is within the state machine's dedupe window of
// the newest applied one of this node, or it is taken for a duplicate and dropped. So no new
// change is read (no sequence taken) while the oldest outstanding own command — pending, pushed
// and not yet referenced, or a held commit — is half a window behind the newest sequence: the rest
// of the window covers an upload's chunks and commit, whose sequences are taken as they go.
bool replicated_folder::impl::within_dedupe_window() const {
  std::uint64_t oldest = proposals_.oldest();
  for (const auto& [index, pushed] : pushing_)
    oldest = std::min(oldest, pushed.ref.sequence);
  if (held_commit_) oldest = std::min(oldest, held_commit_->sequence);
  if (oldest == UINT64_MAX || oldest > last_sequence_) return true;
  return last_sequence_ - oldest < machine_->config().dedupe_window / 2;
}

void replicated_folder::impl::schedule_pump() {
  if (pump_scheduled_ || backlog_.empty() || !proposals_.has_room() || !within_dedupe_window())
    return;
  pump_scheduled_ = true;
  asio::post(*strand_, [this] {
    pump_scheduled_ = false;
    if (stopped_) return;
    pump_backlog();
    process_ready();  // steps the proposals, checks flush waiters
  });
}

void replicated_folder::impl::detect_one(const std::string& path, bool scan_new_directories) {
  // A file whose upload is under way or queued, unchanged since it was read (a late event of
  // the write, a flush's scan): reading it again would hash it again on the strand — a large
  // file's acknowledgements waited a third of a second behind that.
  // (No stat at all while nothing uploads: this runs for every detected path.)
  if (upload_ || !upload_queue_.empty()) {
    auto st = tree_io_->lstat(path);
    const auto reads = [&](const folder::chunked_upload& u) {
      return st && u.path() == path && u.reads(*st);
    };
    if ((upload_ && reads(*upload_)) ||
        std::any_of(upload_queue_.begin(), upload_queue_.end(), reads)) {
      redetect_.erase(path);
      return;
    }
  }
  auto plan = reader_->read_change(path);
  if (plan || plan.error() != make_error_code(errc::busy)) redetect_.erase(path);
  if (!plan) {
    log(3, fmt::format("read {}: {}", path, plan.error().message()));
    if (plan.error() == make_error_code(errc::busy)) {
      dirty_paths_.insert(path);  // still being written: the writer's close() brings it back
    } else if (plan.error() != make_error_code(errc::invalid_path)) {
      log(1, fmt::format("cannot read {}: {}", path, plan.error().message()));
    }
    return;
  }
  propose_plan(std::move(*plan), scan_new_directories);
}

void replicated_folder::impl::propose_plan(folder::change_plan plan, bool scan_new_directories) {
  bool new_directory = false;
  std::string directory;
  for (folder::command& cmd : plan.commands) {
    if (cmd.kind == folder::command_kind::mkdir) {
      new_directory = true;
      directory = cmd.path;
    }
    propose_command(std::move(cmd));
  }
  if (plan.upload) {
    // One upload at a time; a newer upload of the same path replaces a queued one.
    const std::string path = plan.upload->path();
    // The same content already travelling (a rescan or flush re-read the file): keep that upload;
    // restarting it on every re-read would never let a large file finish under steady traffic.
    const bool same_active = upload_ && upload_->path() == path &&
                             upload_->content_sha256() == plan.upload->content_sha256();
    const bool same_queued = std::any_of(upload_queue_.begin(), upload_queue_.end(), [&](auto& u) {
      return u.path() == path && u.content_sha256() == plan.upload->content_sha256();
    });
    if (!same_active && !same_queued) {
      if (upload_ && upload_->path() == path) {
        log(3,
            fmt::format("upload {} of {} replaced by newer content", upload_->upload_id(), path));
        abandon_upload();
      }
      std::erase_if(upload_queue_,
                    [&](const folder::chunked_upload& u) { return u.path() == path; });
      upload_queue_.push_back(std::move(*plan.upload));
    }
    continue_upload();
  }
  // A new directory's content (possibly created before its watch existed) comes from a scan of
  // it; the scan covers the whole subtree, so what it finds is not scanned again.
  if (new_directory && scan_new_directories) detect_and_propose({directory}, true);
}

// Gives the active upload up: its unreferenced pushes are forgotten and its proposals no longer
// retried (one that still commits is ignored everywhere: state_machine::superseded_upload).
void replicated_folder::impl::abandon_upload() {
  for (std::uint64_t sequence : upload_in_flight_)
    proposals_.erase(sequence);
  upload_in_flight_.clear();
  upload_inline_.clear();
  upload_.reset();
  pushing_.clear();
  held_commit_.reset();
  upload_commit_next_ = false;
}

// An upload that has made no progress (no acknowledgement, no apply of its own commands) for
// upload_stall_timeout while a leader is known is read and started again: whatever it waits for
// (a push or a proposal lost with a member that was replaced meanwhile) is then sent afresh.
void replicated_folder::impl::check_upload_progress() {
  if (!upload_ || clock_type::now() - upload_progress_at_ < upload_stall_timeout()) return;
  // Without a leader nothing can progress; reading a large file again would only cost.
  if (soft_.leader == raft::no_node) return;
  const std::string path = upload_->path();
  log(1, fmt::format(
             "upload {} of {} made no progress for {} ms ({} chunk(s) pushed and not "
             "held by a quorum, {} proposed and not applied{}): starting it again",
             upload_->upload_id(), path,
             std::chrono::duration_cast<std::chrono::milliseconds>(upload_stall_timeout()).count(),
             pushing_.size(), upload_in_flight_.size(), upload_commit_next_ ? ", commit due" : ""));
  abandon_upload();
  dirty_paths_.insert(path);
  redetect_.insert(path);
  schedule_detection();
}

// Large files: one upload at a time. At most push_window chunks' bytes are held in memory (pushed
// to the peers, not yet durable on a quorum), so memory stays bounded by push_window_bytes
// whatever the file size; their references (a few dozen bytes each) may be in flight in larger
// numbers, so the log's commit latency does not throttle the transfer. The commit goes once every
// chunk applied.
void replicated_folder::impl::continue_upload() {
  // 32 MiB of pushed, unreferenced bytes: with 8 the transfer waited on the peers' staging
  // fsyncs (a 256 MiB file took 1.45 s to push on the benchmark machine, 1.1 s with 32 MiB).
  constexpr std::uint64_t push_window_bytes = 32u << 20;
  const std::size_t push_window =
      static_cast<std::size_t>(std::max<std::uint64_t>(2, push_window_bytes / config_.chunk_bytes));
  constexpr std::size_t reference_window = 256;
  while (true) {
    if (!upload_) {
      if (upload_queue_.empty()) return;
      upload_.emplace(std::move(upload_queue_.front()));
      upload_queue_.pop_front();
      upload_in_flight_.clear();
      upload_inline_.clear();
      upload_self_stage_ = false;
      upload_commit_next_ = false;
      held_commit_.reset();
      upload_progress_at_ = clock_type::now();
      log(3, fmt::format("upload {} of {}: {} bytes, {} chunk(s) to send", upload_->upload_id(),
                         upload_->path(), upload_->size_bytes(), upload_->chunks_to_send()));
    }
    while (pushing_.size() + upload_inline_.size() < push_window &&
           upload_in_flight_.size() < reference_window && !upload_commit_next_) {
      auto next = upload_->next();
      if (!next) {
        // The file changed since it was hashed: read it afresh (a new upload).
        const std::string path = upload_->path();
        log(3, fmt::format("upload {} of {}: the file changed, reading it again",
                           upload_->upload_id(), path));
        abandon_upload();
        dirty_paths_.insert(path);
        redetect_.insert(path);
        schedule_detection();
        break;
      }
      if (!*next) break;  // everything proposed
      if ((*next)->kind == folder::command_kind::chunk) {
        push_chunk(std::move(**next));
        continue;
      }
      if ((*next)->kind == folder::command_kind::commit) {
        if (!upload_in_flight_.empty() || !pushing_.empty()) {
          // Hold the commit until every chunk applied: a retried chunk must never land after it.
          held_commit_ = std::move(**next);
          upload_commit_next_ = true;
          break;
        }
      }
      const bool is_commit = (*next)->kind == folder::command_kind::commit;
      upload_in_flight_.insert(propose_command(std::move(**next)));
      if (is_commit) upload_commit_next_ = true;
    }
    if (!upload_) continue;
    if (upload_commit_next_ && held_commit_ && upload_in_flight_.empty() && pushing_.empty()) {
      // Its sequence was taken when it was read, before whatever was proposed meanwhile: track
      // that one (not the latest; chaos soak D'' stalled uploads for good that way).
      upload_in_flight_.insert(propose_command(std::move(*held_commit_)));
      held_commit_.reset();
    }
    return;
  }
}

void replicated_folder::impl::detect_renamed(const std::string& from, const std::string& to) {
  auto plan = reader_->read_rename(from, to);
  if (!plan) {
    detect_one(from);
    detect_one(to);
    return;
  }
  propose_plan(std::move(*plan), true);
}

}  // namespace raftsync

namespace raftsync {

// ---------------------------------------------------------------------------------------------
// Folder snapshots. The Raft snapshot message carries only metadata; the folder's committed state
// travels beside it on app channel `snapshot_channel`, in pieces of at most chunk_bytes with a
// window of `snapshot_window` unacknowledged pieces, so memory stays bounded by a few chunks on
// both sides whatever the folder's size. Only when the receiver acknowledged every byte does the
// leader send the Raft message; the receiver has installed the folder by then, and its core then
// adopts the snapshot's log position.
//
// Piece format (little endian): u8 kind | u64 snapshot index | u64 offset | u64 total | bytes.
//   kind 1 data (leader → follower),
//   2 ack (follower → leader: every byte below `offset` was received; an ack never moves the
//     sender back — pieces past it are simply still in flight),
//   3 abort (either way: the transfer is over; the leader retries when Raft asks again),
//   4 skip (leader → follower: the span at `offset` changed on the leader since the snapshot was
//     taken; bytes = u64 end of that span; the follower installs it as missing and repairs it
//     from a peer afterwards),
//   5 resend (follower → leader: a piece arrived past `offset`, the next byte wanted — pieces
//     were lost with a connection — or the follower starts the transfer over from 0).
// The sender also resends from the last acknowledged byte when nothing was acknowledged for
// `snapshot_resend_after` (lost pieces with nothing behind them to reveal the gap).

namespace {
constexpr std::size_t snapshot_window = 4;
constexpr auto snapshot_resend_after = std::chrono::seconds(1);
constexpr std::size_t snapshot_piece_header_bytes = 25;

std::string encode_piece(std::uint8_t kind, std::uint64_t index, std::uint64_t offset,
                         std::uint64_t total, std::string_view data = {}) {
  std::string out;
  out.reserve(snapshot_piece_header_bytes + data.size());
  out.push_back(static_cast<char>(kind));
  for (std::uint64_t value : {index, offset, total})
    append_u64(out, value);
  out.append(data);
  return out;
}

struct piece {
  std::uint8_t kind = 0;
  std::uint64_t index = 0, offset = 0, total = 0;
  std::string_view data;
};

std::optional<piece> decode_piece(std::string_view bytes) {
  if (bytes.size() < snapshot_piece_header_bytes) return std::nullopt;
  piece p;
  p.kind = static_cast<std::uint8_t>(bytes[0]);
  p.index = load_u64(bytes.substr(1));
  p.offset = load_u64(bytes.substr(9));
  p.total = load_u64(bytes.substr(17));
  if (p.kind < 1 || p.kind > 5) return std::nullopt;
  p.data = bytes.substr(snapshot_piece_header_bytes);
  return p;
}
}  // namespace

void replicated_folder::impl::start_snapshot_stream(raft::message m) {
  const raft::node_id to = m.to;
  if (outgoing_snapshots_.count(to) != 0) return;  // already streaming to that peer
  // The data is the folder's committed state at the applied index, which is usually newer than
  // the log's snapshot: record a log snapshot at that index so metadata and data agree.
  const std::uint64_t index = machine_->applied_index();
  if (log_->snapshot().index < index) {
    if (std::error_code ec = log_->create_snapshot(index, conf_)) {
      log(1, fmt::format("snapshot for node {}: {}", to, ec.message()));
      node_->report_snapshot(to, false);
      return;
    }
  }
  outgoing_snapshot out;
  out.writer = std::make_unique<folder::snapshot_writer>(*machine_);
  out.message = std::move(m);
  out.message.snapshot = log_->snapshot();
  out.last_progress = clock_type::now();
  log(2, fmt::format("sending a folder snapshot at #{} ({} bytes) to node {}", out.writer->index(),
                     out.writer->total_bytes(), to));
  auto [it, inserted] = outgoing_snapshots_.emplace(to, std::move(out));
  pump_snapshot(to, it->second);
}

void replicated_folder::impl::pump_snapshot(raft::node_id to, outgoing_snapshot& out) {
  const std::uint64_t total = out.writer->total_bytes();
  while (out.sent < total && out.sent - out.acked < snapshot_window * config_.chunk_bytes) {
    auto data = out.writer->read(out.sent, config_.chunk_bytes);
    if (!data && data.error() == make_error_code(errc::conflict)) {
      // A working file no longer holds its committed bytes (a local edit, or a newer apply):
      // skip it; the receiver fetches that file's committed content from a peer afterwards.
      const std::uint64_t end = out.writer->span_end(out.sent);
      if (end > out.sent) {
        std::string end_bytes;
        append_u64(end_bytes, end);
        transport::app_message skip_message;
        skip_message.channel = snapshot_channel;
        skip_message.payload = encode_piece(4, out.writer->index(), out.sent, total, end_bytes);
        transport_->send(transport::envelope{config_.id, to, std::move(skip_message)});
        log(3, fmt::format("snapshot for node {}: bytes {}..{} changed here, skipped", to, out.sent,
                           end));
        out.sent = end;
        continue;
      }
    }
    if (!data) {
      finish_snapshot(to, false, data.error().message());
      return;
    }
    transport::app_message piece_message;
    piece_message.channel = snapshot_channel;
    piece_message.payload = encode_piece(1, out.writer->index(), out.sent, total, *data);
    out.sent += data->size();
    out.bytes_sent += data->size();
    transport_->send(transport::envelope{config_.id, to, std::move(piece_message)});
  }
}

// A transfer whose sender went quiet (it stopped leading and its abort was lost, or it died) or
// that the log overtook (this node applied past its index meanwhile) is dropped with its partial
// tree; a sender that is still there restarts from the beginning.
void replicated_folder::impl::drop_stale_incoming_snapshot() {
  constexpr auto quiet_max = std::chrono::seconds(30);
  const bool overtaken = machine_->applied_index() >= incoming_snapshot_index_;
  if (!overtaken && clock_type::now() - incoming_snapshot_at_ < quiet_max) return;
  log(2, fmt::format("folder snapshot at #{} from node {} dropped: {}", incoming_snapshot_index_,
                     incoming_snapshot_from_,
                     overtaken ? "this node applied past it" : "no piece for 30 s"));
  drop_incoming_snapshot();
}

void replicated_folder::impl::drop_incoming_snapshot() {
  if (incoming_snapshot_) (void)incoming_snapshot_->abort();
  incoming_snapshot_.reset();
  incoming_snapshot_from_ = raft::no_node;
}

void replicated_folder::impl::send_snapshot_abort(raft::node_id to, std::uint64_t index) {
  transport::app_message abort_message;
  abort_message.channel = snapshot_channel;
  abort_message.payload = encode_piece(3, index, 0, 0);
  transport_->send(transport::envelope{config_.id, to, std::move(abort_message)});
}

void replicated_folder::impl::resend_snapshot_from(raft::node_id to, outgoing_snapshot& out,
                                                   std::uint64_t offset) {
  log(3, fmt::format("snapshot for node {}: resending from byte {} (sent up to {})", to, offset,
                     out.sent));
  out.sent = offset;
  out.acked = std::min(out.acked, offset);  // below it only when the receiver started over
  out.resent_from = offset;
  out.resent_at = clock_type::now();
  pump_snapshot(to, out);
}

void replicated_folder::impl::finish_snapshot(raft::node_id to, bool ok, const std::string& why) {
  auto it = outgoing_snapshots_.find(to);
  if (it == outgoing_snapshots_.end()) return;
  if (ok) {
    log(2, fmt::format("folder snapshot at #{} delivered to node {} ({} bytes, {} data bytes sent)",
                       it->second.writer->index(), to, it->second.writer->total_bytes(),
                       it->second.bytes_sent));
    raft::message m = std::move(it->second.message);
    transport_->send(transport::envelope{config_.id, to, std::move(m)});
  } else {
    log(1, fmt::format("folder snapshot to node {} abandoned: {}", to, why));
    send_snapshot_abort(to, it->second.writer->index());
  }
  outgoing_snapshots_.erase(it);
  if (ok) {
    node_->report_snapshot(to, true);
    return;
  }
  // A failed transfer is retried when Raft asks again; report the failure only after a pause so
  // a transfer that keeps failing (for example a working file that differs from the manifest)
  // does not spin. A conflict also triggers a rescan of the whole folder: a local difference gets
  // proposed and committed, after which the next snapshot reads clean.
  rescan_roots_.insert("");
  schedule_detection();
  // The timer belongs to this object: stop() cancels it, and a cancelled wait returns before
  // touching anything else.
  auto& timer = snapshot_retry_timers_[to];
  if (!timer) timer = std::make_unique<asio::steady_timer>(*strand_);
  timer->expires_after(snapshot_retry_delay);
  timer->async_wait([this, to](boost::system::error_code ec) {
    if (ec || stopped_) return;
    node_->report_snapshot(to, false);
    process_ready();
  });
}

void replicated_folder::impl::on_app_message(raft::node_id from, const transport::app_message& m) {
  if (m.channel == content_channel) {
    on_content_message(from, m);
    return;
  }
  if (m.channel == applied_channel) {
    if (m.payload.size() != 8) return;
    const std::uint64_t applied = load_u64(m.payload);
    auto& known = peer_applied_[from];
    known = std::max(known, applied);
    check_flush_waiters();
    return;
  }
  if (m.channel != snapshot_channel) return;
  auto p = decode_piece(m.payload);
  if (!p) {
    log(1, fmt::format("malformed snapshot piece from node {} ignored", from));
    return;
  }
  if (p->kind == 2 || p->kind == 5 ||
      (p->kind == 3 && outgoing_snapshots_.count(from) != 0 &&
       outgoing_snapshots_.at(from).writer->index() == p->index)) {
    // Leader side: an acknowledgement, a request to resend, or the receiver gave up.
    auto it = outgoing_snapshots_.find(from);
    if (it == outgoing_snapshots_.end() || it->second.writer->index() != p->index) return;
    if (p->kind == 3) {
      finish_snapshot(from, false, "the receiver aborted");
      return;
    }
    outgoing_snapshot& out = it->second;
    const std::uint64_t total = out.writer->total_bytes();
    if (p->offset > total) return;
    if (p->kind == 5) {
      // Asked again for the offset just resent: an answer to a piece that was in flight before.
      if (p->offset == out.resent_from && clock_type::now() - out.resent_at < snapshot_resend_after)
        return;
      resend_snapshot_from(from, out, p->offset);
      return;
    }
    // An acknowledgement only moves the sender forward. (Rewinding to every acknowledged offset
    // below what was sent resent the whole window for each piece — quadratic in the pieces in
    // flight, which stalled the leader's strand for seconds on a folder of small files: chaos
    // soak seed 30, bug 18.)
    if (p->offset > out.acked) {
      out.acked = p->offset;
      out.last_progress = clock_type::now();
    }
    out.sent = std::max(out.sent, out.acked);
    if (out.acked >= total) {
      finish_snapshot(from, true, {});
      return;
    }
    pump_snapshot(from, out);
    return;
  }
  // Follower side.
  if (p->kind == 3) {
    // Only its own sender can abort a transfer (a former leader's abort must not end the new
    // leader's transfer of the same index).
    if (incoming_snapshot_ && incoming_snapshot_index_ == p->index &&
        incoming_snapshot_from_ == from) {
      drop_incoming_snapshot();
    }
    return;
  }
  auto reply = [&](std::uint8_t kind, std::uint64_t offset) {
    transport::app_message ack;
    ack.channel = snapshot_channel;
    ack.payload = encode_piece(kind, p->index, offset, p->total);
    transport_->send(transport::envelope{config_.id, from, std::move(ack)});
  };
  if (p->index <= machine_->applied_index()) {
    // The folder already holds that state or a newer one (an earlier transfer installed it but its
    // Raft message was lost): acknowledge everything so the leader sends the Raft message now.
    reply(2, p->total);
    return;
  }
  if (incoming_snapshot_ && incoming_snapshot_from_ != from && from != soft_.leader) {
    // A transfer from another node is under way and this sender is not our leader (a former
    // leader still streaming): refuse it. Answering "restart from the beginning" to both made
    // two senders restart each other for minutes, each switch aborting the half-written install
    // and rescanning the folder (chaos soak G, seed 28).
    reply(3, 0);
    return;
  }
  if (!incoming_snapshot_ || incoming_snapshot_index_ != p->index ||
      incoming_snapshot_from_ != from) {
    if (p->offset != 0) {
      reply(5, 0);  // start from the beginning for us
      return;
    }
    drop_incoming_snapshot();
    incoming_snapshot_ = std::make_unique<folder::snapshot_reader>(*machine_);
    incoming_snapshot_from_ = from;
    incoming_snapshot_index_ = p->index;
    log(2, fmt::format("receiving a folder snapshot at #{} ({} bytes) from node {}", p->index,
                       p->total, from));
  }
  incoming_snapshot_at_ = clock_type::now();
  if (p->offset != incoming_snapshot_->next_offset()) {
    // Behind: a resent piece already received (acknowledge where we are). Ahead: pieces before
    // it were lost (ask for them again).
    reply(p->offset < incoming_snapshot_->next_offset() ? 2 : 5, incoming_snapshot_->next_offset());
    return;
  }
  if (p->kind == 4) {
    const std::uint64_t end = p->data.size() == 8 ? load_u64(p->data) : 0;
    if (std::error_code ec = incoming_snapshot_->skip(p->offset, end)) {
      log(1, fmt::format("folder snapshot from node {}: bad skip ({})", from, ec.message()));
      drop_incoming_snapshot();
      reply(3, 0);
      return;
    }
    if (!incoming_snapshot_->complete()) {
      reply(2, end);
      return;
    }
    p->data = {};  // the skipped span was the last: fall through to the install
  }
  // Progress of a long transfer, every tenth of it.
  if (p->total > 0) {
    const std::uint64_t before = p->offset * 10 / p->total;
    const std::uint64_t after = (p->offset + p->data.size()) * 10 / p->total;
    if (after > before && after < 10) {
      log(2, fmt::format("receiving the folder snapshot at #{}: {}% of {} MiB", p->index,
                         after * 10, p->total >> 20));
    }
  }
  if (std::error_code ec = incoming_snapshot_->write(p->offset, p->data)) {
    log(1, fmt::format("folder snapshot from node {} rejected: {}", from, ec.message()));
    drop_incoming_snapshot();
    reply(3, 0);
    return;
  }
  if (incoming_snapshot_->complete()) {
    if (std::error_code ec = incoming_snapshot_->install()) {
      log(0,
          fmt::format("installing the folder snapshot at #{} failed: {}", p->index, ec.message()));
      drop_incoming_snapshot();
      reply(3, 0);
      return;
    }
    log(2, fmt::format("folder snapshot at #{} installed", p->index));
    // Local edits the install kept (made while the transfer ran, or not proposed before it).
    for (const folder::preserved_edit& edit : incoming_snapshot_->rescued()) {
      log(2, edit.copy_path == edit.original_path
                 ? fmt::format("local edit {} kept by the snapshot install", edit.original_path)
                 : fmt::format("local edit {} kept by the snapshot install as {}",
                               edit.original_path, edit.copy_path));
    }
    propose_kept_edits(incoming_snapshot_->rescued());
    // Anything queued for apply is older than the snapshot: drop it.
    std::erase_if(apply_queue_, [&](const raft::entry& e) { return e.index <= p->index; });
    incoming_snapshot_.reset();
    reply(2, p->total);
    return;
  }
  reply(2, p->offset + p->data.size());
}

// Compaction: once enough entries were applied (and the manifest persisted), record a log
// snapshot at the persisted index and drop the log below it, keeping `retained_entries` so a
// briefly lagging follower still catches up from the log rather than by a folder snapshot. A
// leader also keeps what each active follower (heard from within an election timeout, not being
// sent a snapshot) has yet to receive, up to `follower_lag_max_entries` behind: during a bulk
// import a follower busy applying falls thousands of entries behind, and compacting past it pushed
// it into a folder snapshot that the next burst of entries outdated again (issue 13).
void replicated_folder::impl::maybe_snapshot() {
  constexpr std::uint64_t retained_entries = 1000;
  constexpr std::uint64_t follower_lag_max_entries = 250000;
  if (applied_since_snapshot_ < config_.snapshot_entries) return;
  persist_state(true);
  const std::uint64_t index = machine_->persisted_index();
  if (index <= log_->snapshot().index) return;
  applied_since_snapshot_ = 0;
  if (std::error_code ec = log_->create_snapshot(index, conf_)) {
    log(1, fmt::format("log snapshot at #{} failed: {}", index, ec.message()));
    return;
  }
  if (index > retained_entries) {
    std::uint64_t compact_to = std::min(index - retained_entries, log_->snapshot().index);
    const raft::status st = node_->status();
    if (st.soft.role == raft::role::leader) {
      const std::uint64_t floor =
          index > follower_lag_max_entries ? index - follower_lag_max_entries : 0;
      for (const raft::progress_status& p : st.progress) {
        if (p.id == config_.id || !p.recent_active || p.state == raft::progress_state::snapshot)
          continue;
        compact_to = std::min(compact_to, std::max(p.match, floor));
      }
    }
    if (compact_to >= log_->first_index()) {
      if (std::error_code ec = log_->compact(compact_to)) {
        log(1, fmt::format("log compaction to #{} failed: {}", compact_to, ec.message()));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Content service (app channel `content_channel`): the bytes of a large file's chunks travel
// beside the log, so a follower writes them once (into the upload's staging file) instead of
// twice (log + staging). The proposer stages a chunk itself, pushes it to every member and
// proposes its chunk_ref — a few dozen bytes — once a quorum of voters (itself included) holds
// the bytes durably: a committed chunk_ref therefore always has its bytes on a majority. A node
// that missed the push (down, cut off) fetches the bytes from a peer when the commit needs them.
//
// Message (little endian): u8 kind | u64 origin | u64 upload_id | u64 chunk_index | 32-byte
// SHA-256 | kind-specific rest:
//   1 push (proposer → member): the chunk's bytes
//   2 push acknowledgement (member → proposer): nothing — the bytes are durable there
//   3 fetch (member → member): u64 size | the upload's target path
//   4 fetch reply with the bytes; 5 fetch reply "not here"

namespace {
constexpr std::size_t content_header_bytes = 1 + 8 * 3 + 32;

struct content_piece {
  std::uint8_t kind = 0;
  std::uint64_t origin = 0, upload_id = 0, chunk_index = 0;
  folder::digest sha256{};
  std::string_view rest;
};

std::string encode_content(std::uint8_t kind, std::uint64_t origin, std::uint64_t upload_id,
                           std::uint64_t chunk_index, const folder::digest& sha256,
                           std::string_view rest = {}) {
  std::string out;
  out.reserve(content_header_bytes + rest.size());
  out.push_back(static_cast<char>(kind));
  for (std::uint64_t value : {origin, upload_id, chunk_index})
    append_u64(out, value);
  out.append(reinterpret_cast<const char*>(sha256.data()), sha256.size());
  out.append(rest);
  return out;
}

std::optional<content_piece> decode_content(std::string_view bytes) {
  if (bytes.size() < content_header_bytes) return std::nullopt;
  content_piece p;
  p.kind = static_cast<std::uint8_t>(bytes[0]);
  if (p.kind < 1 || p.kind > 5) return std::nullopt;
  p.origin = load_u64(bytes.substr(1));
  p.upload_id = load_u64(bytes.substr(9));
  p.chunk_index = load_u64(bytes.substr(17));
  std::memcpy(p.sha256.data(), bytes.data() + 25, p.sha256.size());
  p.rest = bytes.substr(content_header_bytes);
  return p;
}
}  // namespace

std::vector<raft::node_id> replicated_folder::impl::member_peers() const {
  std::vector<raft::node_id> out;
  for (const auto* ids : {&conf_.voters, &conf_.learners}) {
    for (raft::node_id id : *ids)
      if (id != config_.id) out.push_back(id);
  }
  return out;
}

void replicated_folder::impl::push_chunk(folder::command chunk) {
  pushed_chunk p;
  p.bytes = std::move(chunk.content);
  p.ref = chunk;
  p.ref.kind = folder::command_kind::chunk_ref;
  p.ref.size_bytes = p.bytes.size();
  p.ref.content.clear();
  p.sent_at = clock_type::now();
  const std::vector<raft::node_id> peers = member_peers();
  const auto& voters = conf_.voters;
  const bool peers_cannot_make_quorum =
      voters.size() / 2 + 1 >
      static_cast<std::size_t>(std::count_if(voters.begin(), voters.end(),
                                             [&](raft::node_id id) { return id != config_.id; }));
  if (upload_self_stage_ || peers_cannot_make_quorum) {
    if (std::error_code ec = stage_own(p)) {
      // This node cannot hold the bytes (disk full…): the chunk goes through the log instead, as
      // an ordinary chunk command; whatever happens there is reported by its apply.
      log(1, fmt::format("staging chunk {} of {} failed ({}); sending it through the log",
                         chunk.chunk_index, chunk.path, ec.message()));
      chunk.content = std::move(p.bytes);
      const std::uint64_t sequence = propose_command(std::move(chunk));
      upload_in_flight_.insert(sequence);
      upload_inline_.insert(sequence);  // holds its bytes (in the log) until applied
      return;
    }
  }
  for (raft::node_id to : peers)
    send_push(to, p);
  pushing_[p.ref.chunk_index] = std::move(p);
}

std::error_code replicated_folder::impl::stage_own(pushed_chunk& p) {
  if (p.self_staged) return {};
  if (std::error_code ec = machine_->stage_chunk(config_.id, p.ref.upload_id, p.ref.chunk_index,
                                                 p.ref.sha256, p.bytes, false)) {
    return ec;
  }
  p.self_staged = true;
  unsynced_.push_back({config_.id, config_.id, p.ref.upload_id, p.ref.chunk_index, p.ref.sha256});
  schedule_staging_sync();
  return {};
}

// Posted: runs after the messages already queued on the strand, so one fdatasync covers every
// chunk that arrived meanwhile (instead of one per chunk, which bounded a large file's speed by
// the disk's sync latency).
void replicated_folder::impl::schedule_staging_sync() {
  if (staging_sync_scheduled_) return;
  staging_sync_scheduled_ = true;
  asio::post(*strand_, [this] {
    staging_sync_scheduled_ = false;
    if (!stopped_) sync_staged_chunks();
  });
}

void replicated_folder::impl::sync_staged_chunks() {
  if (staging_sync_running_ || unsynced_.empty()) return;  // the running sync re-checks after
  std::vector<unsynced_chunk> chunks = std::move(unsynced_);
  unsynced_.clear();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> uploads;  // (origin, upload id)
  for (const unsynced_chunk& c : chunks)
    if (std::find(uploads.begin(), uploads.end(), std::pair{c.origin, c.upload_id}) ==
        uploads.end())
      uploads.emplace_back(c.origin, c.upload_id);
  staging_sync_running_ = true;
  // real_folder_io::sync_file only reads the root descriptor: safe beside the strand's writes.
  // A staging file renamed into place meanwhile (its commit applied) fails the sync: those chunks
  // are not acknowledged, which nobody needs any more.
  asio::post(*sync_thread_, [this, chunks = std::move(chunks), uploads = std::move(uploads)]() {
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::error_code> failed;
    for (const auto& [origin, upload_id] : uploads)
      if (std::error_code ec = tree_io_->sync_file(folder::upload_staging_path(origin, upload_id)))
        failed.emplace(std::pair{origin, upload_id}, ec);
    asio::post(*strand_, [this, chunks = std::move(chunks), failed = std::move(failed)]() mutable {
      staged_chunks_synced(std::move(chunks), std::move(failed));
    });
  });
}

void replicated_folder::impl::staged_chunks_synced(
    std::vector<unsynced_chunk> chunks,
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::error_code> failed) {
  staging_sync_running_ = false;
  if (stopped_) return;
  for (const auto& [key, ec] : failed) {
    // Gone: its commit applied meanwhile and renamed it into place (nobody needs the ack).
    const bool gone = ec == std::errc::no_such_file_or_directory;
    log(gone ? 3 : 1, fmt::format("syncing staged chunks of upload {} from node {} failed: {} "
                                  "(not acknowledged: the proposer re-sends, or a commit "
                                  "fetches them)",
                                  key.second, key.first, ec.message()));
  }
  bool own = false;
  for (const unsynced_chunk& c : chunks) {
    if (failed.count({c.origin, c.upload_id}) != 0) continue;
    if (c.from == config_.id) {
      auto it = pushing_.find(c.chunk_index);
      if (upload_ && upload_->upload_id() == c.upload_id && it != pushing_.end() &&
          it->second.ref.sha256 == c.sha256) {
        it->second.self_durable = true;
        upload_progress_at_ = clock_type::now();
        own = true;
      }
      continue;
    }
    transport::app_message ack;
    ack.channel = content_channel;
    ack.payload = encode_content(2, c.origin, c.upload_id, c.chunk_index, c.sha256);
    transport_->send(transport::envelope{config_.id, c.from, std::move(ack)});
  }
  if (own) {
    std::vector<std::uint64_t> indices;
    for (const auto& [index, p] : pushing_)
      indices.push_back(index);
    for (std::uint64_t index : indices)
      maybe_reference(index);
    continue_upload();
    process_ready();
  }
  sync_staged_chunks();  // what arrived while this sync ran
}

// Proposes a pushed chunk's reference once a quorum of voters holds its bytes durably.
void replicated_folder::impl::maybe_reference(std::uint64_t chunk_index) {
  auto it = pushing_.find(chunk_index);
  if (it == pushing_.end()) return;
  const auto& voters = conf_.voters;
  std::size_t holders = 0;
  if (it->second.self_durable &&
      std::find(voters.begin(), voters.end(), config_.id) != voters.end()) {
    ++holders;
  }
  for (raft::node_id id : it->second.acks)
    if (std::find(voters.begin(), voters.end(), id) != voters.end()) ++holders;
  if (holders < voters.size() / 2 + 1) return;
  folder::command ref = std::move(it->second.ref);
  pushing_.erase(it);
  // The reference carries the sequence its chunk took when read; proposals made since have
  // later ones.
  upload_in_flight_.insert(propose_command(std::move(ref)));
}

void replicated_folder::impl::send_push(raft::node_id to, const pushed_chunk& p) {
  transport::app_message message;
  message.channel = content_channel;
  message.payload =
      encode_content(1, config_.id, p.ref.upload_id, p.ref.chunk_index, p.ref.sha256, p.bytes);
  transport_->send(transport::envelope{config_.id, to, std::move(message)});
}

void replicated_folder::impl::resend_pushes() {
  const auto now = clock_type::now();
  for (auto& [index, p] : pushing_) {
    if (now - p.sent_at < config_.proposal_retry) continue;
    // A peer does not acknowledge (down, cut off, disk full): count this node's own copy from now
    // on, for this chunk and the rest of the upload.
    if (!upload_self_stage_) {
      log(2, fmt::format("a peer does not acknowledge chunks of {}; staging them here too",
                         p.ref.path));
      upload_self_stage_ = true;
    }
    if (std::error_code ec = stage_own(p)) {
      log(1, fmt::format("staging chunk {} of {} failed: {}", index, p.ref.path, ec.message()));
    }
    p.sent_at = now;
    for (raft::node_id to : member_peers())
      if (p.acks.count(to) == 0) send_push(to, p);
  }
}

void replicated_folder::impl::start_fetch(const std::vector<folder::content_wanted>& wanted) {
  std::size_t added = 0;
  for (const folder::content_wanted& want : wanted) {
    auto [it, inserted] =
        fetches_.try_emplace(chunk_key{want.origin, want.upload_id, want.chunk_index});
    if (!inserted) continue;
    it->second.want = want;
    ++added;
  }
  if (added != 0) {
    log(2, fmt::format("fetching {} chunk(s) of {} from peers (the push missed this node)", added,
                       wanted.front().path));
  }
  ask_for_content();
}

// Keeps up to fetch_window requests in flight. Each chunk is asked of the peer that served the
// last one, else its origin, else the others in turn, skipping peers that said they lack it. When
// every member answered "not here", nobody has the bytes any more (they moved past that content):
// the commit then applies without them and its path is missing on this node until it changes.
void replicated_folder::impl::ask_for_content() {
  constexpr std::size_t fetch_window = 8;
  const auto now = clock_type::now();
  std::size_t in_flight = 0;
  for (auto& [key, f] : fetches_) {
    if (f.asked && now - f.asked_at >= fetch_retry) f.asked = false;  // timed out: ask again
    if (f.asked) ++in_flight;
  }
  const std::vector<raft::node_id> members = member_peers();
  bool gave_up = false;
  for (auto it = fetches_.begin(); it != fetches_.end() && in_flight < fetch_window;) {
    chunk_fetch& f = it->second;
    if (f.asked) {
      ++it;
      continue;
    }
    std::vector<raft::node_id> peers;
    for (raft::node_id first : {fetch_source_, f.want.origin}) {
      if (std::find(members.begin(), members.end(), first) != members.end() &&
          std::find(peers.begin(), peers.end(), first) == peers.end()) {
        peers.push_back(first);
      }
    }
    for (raft::node_id id : members)
      if (std::find(peers.begin(), peers.end(), id) == peers.end()) peers.push_back(id);
    std::erase_if(peers, [&](raft::node_id id) { return f.unavailable.count(id) != 0; });
    if (members.empty()) {  // no member known yet (a snapshot or conf change will tell): wait
      ++it;
      continue;
    }
    if (peers.empty()) {
      log(1, fmt::format("chunk {} of {} is on no member any more; the path stays missing here "
                         "until it changes again",
                         f.want.chunk_index, f.want.path));
      machine_->mark_unavailable(f.want.origin, f.want.upload_id, f.want.chunk_index);
      it = fetches_.erase(it);
      gave_up = true;
      continue;
    }
    const raft::node_id to = peers[f.attempts++ % peers.size()];
    f.asked = true;
    f.asked_at = now;
    ++in_flight;
    std::string rest;
    append_u64(rest, f.want.size_bytes);
    rest += f.want.path;
    transport::app_message message;
    message.channel = content_channel;
    message.payload =
        encode_content(3, f.want.origin, f.want.upload_id, f.want.chunk_index, f.want.sha256, rest);
    transport_->send(transport::envelope{config_.id, to, std::move(message)});
    ++it;
  }
  if (gave_up && fetches_.empty()) fetches_done();
}

// Posted, not called: this runs from inside drain_apply_queue() (a fetch given up at once).
void replicated_folder::impl::fetches_done() {
  asio::post(*strand_, [this] {
    if (stopped_ || !fetches_.empty()) return;
    if (machine_->needs_snapshot()) repair_missing_paths();
    drain_apply_queue();
    process_ready();
  });
}

// A committed file whose content this node could not build (its bytes were on no member when the
// commit applied, or a folder snapshot arrived without them) is fetched from the peers that have
// it — chunk by chunk, verified against the manifest — and put into place. Once a second at most.
void replicated_folder::impl::repair_missing_paths() {
  last_repair_ = clock_type::now();
  auto written = machine_->repair_missing();
  if (!written) {
    log(1, fmt::format("repairing missing files: {}", written.error().message()));
    return;
  }
  for (const folder::written_entry& w : *written)
    log(2, fmt::format("{} repaired from a peer", w.path));
  if (!machine_->needs_snapshot()) return;
  std::vector<folder::content_wanted> wanted = machine_->wanted_for_missing(64);
  if (!wanted.empty()) start_fetch(wanted);
}

void replicated_folder::impl::on_content_message(raft::node_id from,
                                                 const transport::app_message& m) {
  auto p = decode_content(m.payload);
  if (!p) {
    log(1, fmt::format("malformed content message from node {} ignored", from));
    return;
  }
  auto reply = [&](std::uint8_t kind, std::string_view rest = {}) {
    transport::app_message out;
    out.channel = content_channel;
    out.payload = encode_content(kind, p->origin, p->upload_id, p->chunk_index, p->sha256, rest);
    transport_->send(transport::envelope{config_.id, from, std::move(out)});
  };
  switch (p->kind) {
    case 1: {  // a pushed chunk: a peer may only push its own uploads
      if (p->origin != from || folder::sha256(p->rest) != p->sha256) {
        log(1, fmt::format("content push from node {} refused: {}", from,
                           p->origin != from ? "it names another origin" : "hash mismatch"));
        return;
      }
      if (std::error_code ec = machine_->stage_chunk(p->origin, p->upload_id, p->chunk_index,
                                                     p->sha256, p->rest, false)) {
        log(1, fmt::format("staging chunk {} of upload {} from node {} failed: {}", p->chunk_index,
                           p->upload_id, from, ec.message()));
        return;
      }
      // Acknowledged once durable (batched: sync_staged_chunks).
      unsynced_.push_back({from, p->origin, p->upload_id, p->chunk_index, p->sha256});
      schedule_staging_sync();
      return;
    }
    case 2: {  // a member holds a chunk we pushed
      if (p->origin != config_.id || !upload_ || upload_->upload_id() != p->upload_id) return;
      auto it = pushing_.find(p->chunk_index);
      if (it == pushing_.end() || it->second.ref.sha256 != p->sha256) return;
      it->second.acks.insert(from);
      upload_progress_at_ = clock_type::now();
      maybe_reference(p->chunk_index);
      continue_upload();
      return;
    }
    case 3: {  // a peer missed a chunk: serve it if this node has exactly those bytes
      if (p->rest.size() < 8) return;
      const std::uint64_t size = load_u64(p->rest);
      const std::string_view path = p->rest.substr(8);
      auto bytes =
          machine_->read_chunk(p->origin, p->upload_id, p->chunk_index, size, p->sha256, path);
      if (bytes) {
        reply(4, *bytes);
      } else {
        reply(5);
      }
      return;
    }
    case 4:
    case 5: {
      auto it = fetches_.find(chunk_key{p->origin, p->upload_id, p->chunk_index});
      if (it == fetches_.end() || it->second.want.sha256 != p->sha256) return;  // not wanted now
      chunk_fetch& f = it->second;
      if (p->kind == 5 || folder::sha256(p->rest) != p->sha256) {
        f.unavailable.insert(from);
        f.asked = false;
        if (fetch_source_ == from) fetch_source_ = raft::no_node;
        ask_for_content();
        return;
      }
      if (std::error_code ec =
              machine_->stage_chunk(p->origin, p->upload_id, p->chunk_index, p->sha256, p->rest)) {
        log(1, fmt::format("staging fetched chunk {} failed: {}", p->chunk_index, ec.message()));
        return;  // asked again once the request times out
      }
      fetch_source_ = from;
      fetches_.erase(it);
      if (fetches_.empty()) {
        fetches_done();
      } else {
        ask_for_content();
      }
      return;
    }
  }
}

void replicated_folder::impl::check_snapshot_timeouts() {
  const auto now = clock_type::now();
  for (auto it = outgoing_snapshots_.begin(); it != outgoing_snapshots_.end();) {
    const raft::node_id to = it->first;
    ++it;
    outgoing_snapshot& out = outgoing_snapshots_.at(to);
    if (now - out.last_progress > std::chrono::seconds(10)) {
      finish_snapshot(to, false, "no progress for 10 s");
    } else if (out.sent > out.acked && now - out.last_progress > snapshot_resend_after &&
               now - out.resent_at > snapshot_resend_after) {
      resend_snapshot_from(to, out, out.acked);  // pieces lost with nothing behind them
    }
  }
}

}  // namespace raftsync
