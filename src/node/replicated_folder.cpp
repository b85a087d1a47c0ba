// raftsync — replicated_folder: the driver that joins watcher, folder state machine, Raft core,
// durable storage and transport. Everything stateful runs on one strand (see the header).
#include "replicated_folder_impl.hpp"


namespace raftsync {

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
  // Memory per node is bounded by these, not by the folder (issue 13: peak RSS). On a network a
  // few milliseconds deep, 8 MiB in flight per follower already fills the link; one ready's
  // committed entries are applied in batches of apply_batch_bytes_max anyway.
  raft_config.inflight_bytes_max = 8ull << 20;
  raft_config.committed_bytes_max_per_ready = 16ull << 20;
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
  node::proposal_tracker::limits proposal_limits;
  proposal_limits.retry_first = config_.proposal_retry;
  proposal_limits.retry_max =
      std::max<clock_type::duration>(config_.proposal_retry, proposal_limits.retry_max);
  proposals_ = node::proposal_tracker(proposal_limits);
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
