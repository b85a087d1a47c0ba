// raftsync — replicated_folder::impl: applying committed entries to the folder, in batches (see
// replicated_folder_impl.hpp).
#include "replicated_folder_impl.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

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
#if defined(__GLIBC__)
  // A bulk import passes gigabytes through short-lived buffers (command contents, the state
  // file's encoding): glibc keeps the freed pages, so RSS stayed far above the live heap. Hand
  // them back at the pace of the state file writes (its cost counts in the spacing).
  ::malloc_trim(0);
#endif
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
}  // namespace raftsync
