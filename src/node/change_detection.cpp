// raftsync — replicated_folder::impl: local changes — watcher events, the backlog and its pump,
// reads, proposals and large-file uploads (see replicated_folder_impl.hpp).
#include "replicated_folder_impl.hpp"

namespace raftsync {

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
