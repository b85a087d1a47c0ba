// raftsync — replicated_folder::impl: folder snapshots streamed beside the Raft snapshot message,
// and log compaction (see replicated_folder_impl.hpp).
#include "replicated_folder_impl.hpp"

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
