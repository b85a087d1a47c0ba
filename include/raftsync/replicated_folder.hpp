// raftsync — replicated_folder: the facade applications instantiate.
//
// One replicated_folder is one node of a cluster replicating one folder. It owns the Raft core,
// the durable log (state directory), the watcher of the folder, the TCP transport to its peers and
// the folder state machine, and drives them from one Asio strand:
//
//   watcher events ──► read + hash + compare with manifest ──► propose (forwarded if follower)
//   transport ──► raft step ──► ready: persist (one fdatasync) → send → apply to the folder →
//   advance
//
// Threading: every public member function may be called from any thread. Callbacks run on the
// node's strand; they must not block and must not call stop() (post it elsewhere instead).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"

namespace raftsync {

struct peer_address {
  raft::node_id id = raft::no_node;
  std::string host;  // IP address or host name
  std::uint16_t port = 0;
};

enum class watcher_backend : std::uint8_t { native, inotify, libuv, polling };

struct replicated_folder_config {
  raft::node_id id = raft::no_node;       // this node; non-zero, unique in the cluster
  std::filesystem::path root;             // the replicated folder (must exist)
  std::filesystem::path state_dir;        // default: <root>/.raftsync (never replicated)
  std::string listen_host = "127.0.0.1";  // address the transport listens on
  std::uint16_t listen_port = 0;          // 0: pick a free port (see listen_port())
  std::vector<peer_address> peers;        // every other member (initial voters with this node)
  std::string cluster_id = "raftsync";    // bound into the authentication handshake
  std::string secret;                     // cluster secret shared by all nodes (required)
  bool join_existing = false;             // true: start empty and wait to be added (no bootstrap)
  watcher_backend watcher = watcher_backend::native;
  std::vector<std::string> ignore;  // extra ignore patterns (glob on relative paths)
  // Raft timing. The election timeout is randomized in [election_ticks, 2 * election_ticks)
  // ticks: 1–2 s by default, etcd's choice. A node's strand can be busy for a few hundred
  // milliseconds on a loaded 2-core machine (a log fsync behind a burst of writes, a scan of a
  // large folder); with the former 100–200 ms a busy node was taken for a dead one and elections
  // followed each other during bulk changes (issue 13). Latency does not depend on it: a commit is
  // sent to the followers at once, not with the next heartbeat.
  std::chrono::milliseconds tick_interval{10};
  std::uint32_t election_ticks = 100;
  std::uint32_t heartbeat_ticks = 10;
  // Re-propose a change not applied by then; later retries back off, doubling up to 30 s.
  std::chrono::milliseconds proposal_retry{1000};
  std::uint64_t chunk_bytes = 1 << 20;     // large files travel in chunks of this size
  std::uint64_t snapshot_entries = 10000;  // take a folder snapshot after this many applies
  // Log sink: level 0 error, 1 warning, 2 info, 3 debug; called on the node's strand, must not
  // block. Empty: errors and warnings go to stderr.
  std::function<void(int level, std::string_view message)> log;

  // Checks every field; errc::invalid_config with a reason in `why` on failure.
  std::error_code validate(std::string* why = nullptr) const;
};

// One change as applied to this node's copy of the folder (committed cluster-wide).
struct applied_change {
  std::uint64_t index = 0;     // Raft log index of the command
  raft::node_id origin = 0;    // the node where the change was made
  std::string kind;            // "write", "remove", "rename", "mkdir", "rmdir", "chmod", ...
  std::string path;            // relative path (new path for renames)
  std::string from_path;       // renames: the old path
  bool conflict_copy = false;  // the change created a conflict copy
};

struct peer_progress {
  raft::node_id id = 0;
  std::uint64_t match_index = 0;
  std::uint64_t next_index = 0;
  std::string state;  // "probe", "replicate", "snapshot"
  bool learner = false;
  bool connected = false;
};

struct folder_status {
  raft::node_id id = 0;
  std::string role;  // "follower", "pre-candidate", "candidate", "leader"
  std::uint64_t term = 0;
  raft::node_id leader = 0;
  std::uint64_t commit_index = 0;
  std::uint64_t applied_index = 0;
  std::uint64_t last_index = 0;
  std::uint64_t pending_proposals = 0;  // own commands proposed, not yet applied (bounded)
  std::uint64_t unread_changes = 0;     // paths known changed, waiting to be read and proposed
  // Times this node learned of a leader other than the one it knew last (the first leader after
  // start counts): a bulk change without faults must not raise it.
  std::uint64_t leader_changes = 0;
  std::vector<peer_progress> peers;  // leader only
  std::vector<std::string>
      halted_reasons;       // non-empty: the node cannot make progress (disk full, …)
  std::uint64_t files = 0;  // entries in the manifest
  // Raft messages of an older term dropped since start: a peer that lagged behind an election,
  // or one replaying old traffic (a steady rise without elections is worth a look).
  std::uint64_t stale_messages = 0;
};

class replicated_folder {
 public:
  // Runs on its own thread.
  explicit replicated_folder(replicated_folder_config config);
  // Runs on the caller's executor (an io_context the application runs).
  replicated_folder(replicated_folder_config config, boost::asio::any_io_executor executor);
  ~replicated_folder();  // stop()s

  replicated_folder(const replicated_folder&) = delete;
  replicated_folder& operator=(const replicated_folder&) = delete;

  // Opens the state directory, recovers, starts the transport and the watcher, scans the folder for
  // changes made while the node was down. Errors: invalid config, missing folder, corrupt state.
  std::error_code start();
  // Idempotent. After it returns no callback runs and no file is written.
  void stop();

  folder_status status() const;
  std::uint16_t listen_port() const;  // the bound port (useful with listen_port = 0)

  // Returns once every change made in the folder before the call is committed (all_applied:
  // and applied on every live member — exact when called on the leader, which hears every
  // member's applied index; on a follower it covers this node's own apply), or errc::timed_out.
  std::error_code flush(std::chrono::milliseconds timeout, bool all_applied = false);

  // Programmatic changes: the same path as watched changes (written to disk, then proposed).
  std::error_code write_file(const std::string& path, std::string_view contents);
  std::error_code remove(const std::string& path);
  std::error_code rename(const std::string& from, const std::string& to);

  // Membership (leader forwards not supported: call on the leader; errc::not_leader otherwise).
  std::error_code add_node(const peer_address& peer, bool as_learner = false);
  std::error_code remove_node(raft::node_id id);
  std::error_code transfer_leadership(raft::node_id to);

  void on_applied(std::function<void(const applied_change&)> callback);
  void on_leader_change(std::function<void(raft::node_id leader, std::uint64_t term)> callback);

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace raftsync
