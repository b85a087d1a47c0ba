// raftsync — replicated_folder::impl: the content service, chunk bytes of large files beside
// the log (see replicated_folder_impl.hpp).
#include "replicated_folder_impl.hpp"

namespace raftsync {

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

}  // namespace raftsync
