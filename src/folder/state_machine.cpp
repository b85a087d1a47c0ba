#include "raftsync/folder/state_machine.hpp"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <unordered_map>

#include "byte_codec.hpp"
#include "raftsync/assert.hpp"
#include "raftsync/folder/snapshot.hpp"

namespace raftsync::folder {
namespace {

constexpr std::uint32_t state_magic = 0x53465352;  // "RSFS"
// Version 2 added the first boot epoch (version 1 files still open).
constexpr std::uint8_t state_format_version = 2;
constexpr std::string_view upload_prefix = ".raftsync-tmp-upload-";
// An awaiting commit names at most this many of the chunks it lacks (the facade fetches them in
// parallel and applies again; the next attempt names the rest).
constexpr std::size_t max_wanted_chunks = 64;

// Absent from the tree: no such entry, or an ancestor is not a directory (a local kind change).
bool is_missing(const std::error_code& ec) {
  return ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory;
}

apply_result make_status(apply_result r, apply_status status, std::error_code error,
                         std::string reason) {
  r.status = status;
  r.error = error;
  r.reason = std::move(reason);
  return r;
}

apply_result rejected(apply_result r, errc code, std::string reason) {
  return make_status(std::move(r), apply_status::rejected, make_error_code(code),
                     std::move(reason));
}

apply_result ignored(apply_result r, std::string reason) {
  return make_status(std::move(r), apply_status::ignored, {}, std::move(reason));
}

apply_result failed(apply_result r, std::error_code error, std::string what) {
  return make_status(std::move(r), apply_status::failed, error, what + ": " + error.message());
}

}  // namespace

const char* to_string(apply_status status) noexcept {
  switch (status) {
    case apply_status::applied:
      return "applied";
    case apply_status::conflict:
      return "conflict";
    case apply_status::duplicate:
      return "duplicate";
    case apply_status::superseded:
      return "superseded";
    case apply_status::ignored:
      return "ignored";
    case apply_status::rejected:
      return "rejected";
    case apply_status::failed:
      return "failed";
    case apply_status::awaiting_content:
      return "awaiting_content";
  }
  return "unknown";
}

std::error_code state_machine_config::validate(std::string* reason) const {
  auto bad = [&](const char* text) {
    if (reason != nullptr) *reason = text;
    return make_error_code(errc::invalid_config);
  };
  if (self == 0) return bad("self: node id 0 is not valid");
  if (chunk_bytes < 4096 || chunk_bytes > (std::uint64_t{1} << 30))
    return bad("chunk_bytes: must be within [4 KiB, 1 GiB]");
  if (state_file.empty()) return bad("state_file: empty");
  if (dedupe_window == 0) return bad("dedupe_window: must be > 0");
  if (write_bytes_max > (std::uint64_t{1} << 30)) return bad("write_bytes_max: above 1 GiB");
  if (boot_epoch_floor >= (std::uint64_t{1} << 31) - 1)
    return bad("boot_epoch_floor: must be below 2^31 - 1");
  return {};
}

// ---------------------------------------------------------------------------------------------
// The undo log: every manifest mutation of one apply is recorded so that a `failed` apply (local
// I/O error) leaves the replicated state exactly as it was.
struct state_machine::undo_log {
  std::vector<std::pair<std::string, std::optional<manifest_entry>>> saved;
};

void state_machine::put_entry(std::string path, manifest_entry entry) {
  if (undo_ != nullptr) {
    const manifest_entry* old = manifest_.find(path);
    undo_->saved.emplace_back(path,
                              old != nullptr ? std::optional<manifest_entry>(*old) : std::nullopt);
  }
  manifest_.put(std::move(path), std::move(entry));
}

void state_machine::erase_entry(const std::string& path) {
  if (undo_ != nullptr) {
    const manifest_entry* old = manifest_.find(path);
    undo_->saved.emplace_back(path,
                              old != nullptr ? std::optional<manifest_entry>(*old) : std::nullopt);
  }
  manifest_.erase(path);
}

state_machine::state_machine(state_machine_config config, folder_io& tree, folder_io& state_io)
    : config_(std::move(config)), tree_(tree), state_io_(state_io) {
  if (config_.write_bytes_max == 0) config_.write_bytes_max = config_.chunk_bytes;
}

// --------------------------------------------------------------------------------- persistence

void state_machine::encode_state(std::string& out, bool with_local) const {
  detail::byte_writer w(out);
  w.u64(config_.chunk_bytes);
  std::string m;
  manifest_.encode(m, with_local);
  w.blob(m);
  w.u64(seen_.size());
  for (const auto& [origin, sequences] : seen_) {
    w.u64(origin);
    w.u64(sequences.size());
    for (auto s : sequences)
      w.u64(s);
  }
  w.u64(uploads_.size());
  for (const auto& [origin, up] : uploads_) {
    w.u64(origin);
    w.u64(up.upload_id);
    w.u64(up.chunks.size());
    for (const auto& [index, chunk] : up.chunks) {
      w.u64(index);
      w.raw(chunk.sha256.data(), chunk.sha256.size());
      w.u64(chunk.size_bytes);
    }
  }
  // Added after format 1 shipped: a state without this section decodes with no move records.
  w.u64(moves_.size());
  for (const auto& [from, m] : moves_) {
    w.str(from);
    w.u64(m.from_version);
    w.u64(m.from_origin);
    w.u64(m.from_sequence);
    w.str(m.to);
    w.u64(m.index);
    w.u64(m.rename_origin);
    w.u64(m.rename_sequence);
  }
}

result<replicated_state> decode_replicated_state(std::string_view bytes, std::uint64_t chunk_bytes,
                                                 bool with_local) {
  detail::byte_reader r(bytes);
  std::uint64_t encoded_chunk_bytes = r.u64();
  std::string m = r.blob(bytes.size());
  if (!r.ok()) return errc::malformed;
  if (encoded_chunk_bytes != chunk_bytes) return errc::invalid_config;
  auto decoded = manifest::decode(m, with_local);
  if (!decoded) return decoded.error();
  replicated_state out;
  out.files = std::move(*decoded);
  std::uint64_t origins = r.u64();
  if (!r.ok() || origins > r.remaining() / 16) return errc::malformed;
  for (std::uint64_t i = 0; i < origins; ++i) {
    node_id origin = r.u64();
    std::uint64_t count = r.u64();
    if (!r.ok() || count > r.remaining() / 8) return errc::malformed;
    auto& set = out.seen[origin];
    for (std::uint64_t k = 0; k < count; ++k)
      set.insert(r.u64());
  }
  std::uint64_t count = r.u64();
  if (!r.ok() || count > r.remaining() / 24) return errc::malformed;
  for (std::uint64_t i = 0; i < count; ++i) {
    node_id origin = r.u64();
    upload_state up;
    up.upload_id = r.u64();
    std::uint64_t chunks = r.u64();
    if (!r.ok() || chunks > r.remaining() / 48) return errc::malformed;
    for (std::uint64_t k = 0; k < chunks; ++k) {
      std::uint64_t index = r.u64();
      staged_chunk sc;
      r.raw(sc.sha256);
      sc.size_bytes = r.u64();
      if (sc.size_bytes == 0 || sc.size_bytes > chunk_bytes || index >= (std::uint64_t{1} << 24))
        return errc::malformed;
      up.chunks[index] = sc;
    }
    out.uploads[origin] = std::move(up);
  }
  if (!r.done()) {
    std::uint64_t moves = r.u64();
    if (!r.ok() || moves > r.remaining() / 56 || moves > move_records_max) return errc::malformed;
    for (std::uint64_t i = 0; i < moves; ++i) {
      std::string from = r.str(4096);
      move_record m;
      m.from_version = r.u64();
      m.from_origin = r.u64();
      m.from_sequence = r.u64();
      m.to = r.str(4096);
      m.index = r.u64();
      m.rename_origin = r.u64();
      m.rename_sequence = r.u64();
      if (!r.ok()) return errc::malformed;
      out.moves[std::move(from)] = std::move(m);
    }
  }
  if (!r.done()) return errc::malformed;
  return out;
}

std::error_code state_machine::decode_state(std::string_view bytes, bool with_local) {
  auto decoded = decode_replicated_state(bytes, config_.chunk_bytes, with_local);
  if (!decoded) return decoded.error();
  manifest_ = std::move(decoded->files);
  seen_ = std::move(decoded->seen);
  uploads_ = std::move(decoded->uploads);
  moves_ = std::move(decoded->moves);
  moves_by_index_.clear();
  for (const auto& [from, m] : moves_)
    moves_by_index_.emplace(m.index, from);
  return {};
}

std::string upload_staging_path(node_id origin, std::uint64_t upload_id) {
  return std::string(upload_prefix) + std::to_string(origin) + "-" + std::to_string(upload_id);
}

std::error_code state_machine::open() {
  if (auto ec = config_.validate()) return ec;
  auto bytes = read_whole(state_io_, config_.state_file);
  if (bytes) {
    std::string_view all = *bytes;
    if (all.size() < 32) return make_error_code(errc::corrupt);
    std::string_view body = all.substr(0, all.size() - 32);
    digest expected{};
    std::copy(all.end() - 32, all.end(), expected.begin());
    if (sha256(body) != expected) return make_error_code(errc::corrupt);
    detail::byte_reader r(body);
    if (r.u32() != state_magic) return make_error_code(errc::corrupt);
    std::uint8_t version = r.u8();
    if (!r.ok() || version < 1 || version > state_format_version)
      return make_error_code(errc::unsupported_version);
    applied_index_ = r.u64();
    boot_epoch_ = r.u64();
    first_epoch_ = version >= 2 ? r.u64() : 0;
    std::uint64_t missing = r.u64();
    if (!r.ok() || missing > r.remaining() / 4) return make_error_code(errc::corrupt);
    missing_.clear();
    for (std::uint64_t i = 0; i < missing; ++i)
      missing_.insert(r.str(4096));
    std::string state = r.blob(body.size());
    if (!r.done()) return make_error_code(errc::corrupt);
    if (auto ec = decode_state(state, true)) return ec;
    persisted_index_ = applied_index_;
  } else if (!is_missing(bytes.error())) {
    return bytes.error();
  }
  const bool fresh = !bytes;
  if (auto ec = finish_interrupted_install(*this)) return ec;
  // Staging files of uploads that no longer exist, and temporaries of an interrupted atomic
  // write at the root (a crash between create and rename), are garbage.
  auto root = tree_.list("");
  if (!root) return root.error();
  for (const auto& e : *root) {
    if (e.kind != file_kind::regular) continue;
    std::string_view name = e.name;
    if (name.substr(0, temp_name_prefix.size()) != temp_name_prefix) continue;
    bool live = false;
    for (const auto& [origin, up] : uploads_)
      if (name == staging_path(origin, up.upload_id)) live = true;
    if (!live) {
      if (auto ec = tree_.unlink(name); ec && !is_missing(ec)) return ec;
    }
  }
  boot_epoch_ = std::max(boot_epoch_ + 1, config_.boot_epoch_floor);
  RAFTSYNC_ASSERT(boot_epoch_ < (std::uint64_t{1} << 31), "boot epoch overflow");
  if (fresh) first_epoch_ = boot_epoch_;
  sequence_counter_ = 0;
  dirty_ = true;
  return persist();
}

std::error_code state_machine::persist() {
  if (!dirty_) return {};
  // Renames of deferred applies must be durable before a state file that says they happened.
  if (auto ec = sync_pending_directories()) return ec;
  // Staged chunks must be durable before a state file that says they were received.
  for (const auto& [origin, up] : uploads_) {
    auto ec = tree_.sync_file(staging_path(origin, up.upload_id));
    if (ec && !is_missing(ec)) return ec;
  }
  std::string body;
  detail::byte_writer w(body);
  w.u32(state_magic);
  w.u8(state_format_version);
  w.u64(applied_index_);
  w.u64(boot_epoch_);
  w.u64(first_epoch_);
  w.u64(missing_.size());
  for (const auto& p : missing_)
    w.str(p);
  std::string state;
  encode_state(state, true);
  w.blob(state);
  digest check = sha256(body);
  w.raw(check.data(), check.size());
  if (auto ec = make_dirs(state_io_, parent_path(config_.state_file), 0700)) return ec;
  if (auto ec = state_io_.write_file_atomic(config_.state_file, body, 0600, 0)) return ec;
  persisted_index_ = applied_index_;
  dirty_ = false;
  return {};
}

std::uint64_t state_machine::next_sequence() noexcept {
  ++sequence_counter_;
  RAFTSYNC_ASSERT(sequence_counter_ < (std::uint64_t{1} << 32), "sequence counter overflow");
  return (boot_epoch_ << 32) | sequence_counter_;
}

std::string state_machine::encode_replicated_state() const {
  std::string out;
  encode_state(out, false);
  return out;
}

std::error_code state_machine::install_replicated_state(
    std::uint64_t index, std::string_view bytes,
    const std::set<std::string, std::less<>>& missing) {
  manifest old_manifest = manifest_;
  auto old_seen = seen_;
  auto old_uploads = uploads_;
  auto old_moves = moves_;
  auto old_moves_by_index = moves_by_index_;
  if (auto ec = decode_state(bytes, false)) {
    manifest_ = std::move(old_manifest);
    seen_ = std::move(old_seen);
    uploads_ = std::move(old_uploads);
    moves_ = std::move(old_moves);
    moves_by_index_ = std::move(old_moves_by_index);
    return ec;
  }
  replaced_recently_.clear();
  replaced_order_.clear();
  unlinked_by_apply_.clear();
  unlinked_order_.clear();
  for (auto& [path, entry] : manifest_.entries()) {
    auto st = tree_.lstat(path);
    manifest_entry* e = manifest_.find(path);
    if (st && st->kind == entry.kind) remember_local_identity(*e, *st);
  }
  applied_index_ = index;
  missing_ = missing;
  dirty_ = true;
  return persist();
}

// ------------------------------------------------------------------------------------- echoes

bool state_machine::is_echo(std::string_view path, const file_stat& stat) const {
  if (is_internal_path(path)) return true;
  const manifest_entry* e = manifest_.find(path);
  if (stat.kind == file_kind::none) return e == nullptr;
  if (e == nullptr || e->kind != stat.kind) return false;
  switch (stat.kind) {
    case file_kind::regular:
      return same_local_identity(*e, stat) && stat.mode == e->mode;
    case file_kind::directory:
      return stat.mode == e->mode;
    case file_kind::symlink:
      return same_local_identity(*e, stat);
    default:
      return false;
  }
}

result<bool> state_machine::holds_committed(std::string_view where, std::string_view path) {
  const manifest_entry* entry = manifest_.find(path);
  if (entry == nullptr) return false;
  return working_matches(where, entry, nullptr);
}

void state_machine::note_unchanged(std::string_view path, const file_stat& stat) {
  manifest_entry* e = manifest_.find(path);
  if (e == nullptr || e->kind != stat.kind) return;
  if (same_local_identity(*e, stat)) return;
  remember_local_identity(*e, stat);
  dirty_ = true;
}

bool state_machine::take_own_read(std::string_view path, const file_stat& now,
                                  const digest& sha256) {
  auto read = own_reads_.find(path);
  if (read == own_reads_.end()) return false;
  const bool same = read->second.sha256 == sha256 && now.kind == file_kind::regular &&
                    same_working_identity(read->second.stat, now);
  own_reads_.erase(read);
  return same;
}

void state_machine::note_own_read(std::string_view path, const file_stat& stat,
                                  const digest& sha256) {
  constexpr std::size_t own_reads_max = 64;  // uploads queued at once, in practice a few
  if (own_reads_.size() >= own_reads_max) own_reads_.clear();
  own_reads_.insert_or_assign(std::string(path), own_read{stat, sha256});
}

// -------------------------------------------------------------------------------------- dedupe

bool state_machine::dedupe_seen(node_id origin, std::uint64_t sequence) const {
  auto it = seen_.find(origin);
  if (it == seen_.end() || it->second.empty()) return false;
  std::uint64_t high = *it->second.rbegin();
  if (high > config_.dedupe_window && sequence < high - config_.dedupe_window) return true;
  return it->second.count(sequence) != 0;
}

void state_machine::dedupe_add(node_id origin, std::uint64_t sequence) {
  auto& set = seen_[origin];
  set.insert(sequence);
  std::uint64_t high = *set.rbegin();
  if (high > config_.dedupe_window)
    set.erase(set.begin(), set.lower_bound(high - config_.dedupe_window));
}

// --------------------------------------------------------------------------------------- apply

void state_machine::skip(std::uint64_t index) {
  if (index > applied_index_) {
    applied_index_ = index;
    dirty_ = true;
  }
}

namespace {
result<command> decode_entry(const state_machine_config& config, std::string_view entry_data) {
  return decode_command(
      entry_data,
      command_limits{std::max<std::uint64_t>(config.chunk_bytes, config.write_bytes_max),
                     config.rules.path_bytes_max, std::uint64_t{1} << 24});
}
}  // namespace

apply_result state_machine::apply(std::uint64_t index, std::string_view entry_data) {
  auto decoded = decode_entry(config_, entry_data);
  if (!decoded) {
    apply_result r;
    r.index = index;
    if (index <= applied_index_)
      return make_status(std::move(r), apply_status::duplicate, {}, "index already applied");
    applied_index_ = index;
    dirty_ = true;
    return make_status(std::move(r), apply_status::rejected, decoded.error(),
                       "undecodable entry: " + decoded.error().message());
  }
  return apply(index, *decoded);
}

apply_result state_machine::apply(std::uint64_t index, const command& value) {
  apply_result r;
  r.index = index;
  r.kind = value.kind;
  r.origin = value.origin;
  r.sequence = value.sequence;
  r.own = is_own(value);
  r.path = value.path;
  if (index <= applied_index_)
    return make_status(std::move(r), apply_status::duplicate, {}, "index already applied");
  undo_log undo;
  undo_ = &undo;
  auto saved_uploads = uploads_;
  auto saved_missing = missing_;
  r = apply_command(index, value);
  undo_ = nullptr;
  if (r.status == apply_status::failed || r.status == apply_status::awaiting_content) {
    for (auto it = undo.saved.rbegin(); it != undo.saved.rend(); ++it) {
      if (it->second)
        manifest_.put(it->first, *it->second);
      else
        manifest_.erase(it->first);
    }
    uploads_ = std::move(saved_uploads);
    missing_ = std::move(saved_missing);
    return r;
  }
  // Content this apply materialised or removed is no longer missing on this node.
  for (const auto& w : r.written)
    if (!r.needs_snapshot || w.path != r.path) missing_.erase(w.path);
  for (const auto& p : r.removed)
    missing_.erase(p);
  // A refused command has no effect, on the dedupe window neither: a forged (origin, huge
  // sequence) with a bad path must not make that origin's real commands look like duplicates.
  if (r.status != apply_status::duplicate && r.status != apply_status::rejected)
    dedupe_add(value.origin, value.sequence);
  applied_index_ = index;
  dirty_ = true;
  return r;
}

// ------------------------------------------------------------------------------- batch apply

// Why a batch is cheaper: apply() makes each write durable on its own (fsync of the file, then of
// its directory): two journal commits per file. Here the contents of all writes are synced
// together before any rename (no file can be torn: each rename still follows the durability of
// its content), the renames follow in log order through the ordinary apply (same conflict rules,
// local-edit protection and echo records), and each changed directory is fsynced once at the end.
std::vector<apply_result> state_machine::apply_batch(const std::vector<batch_entry>& entries) {
  RAFTSYNC_ASSERT(!in_batch_, "apply_batch re-entered");
  std::vector<result<command>> commands;
  commands.reserve(entries.size());
  for (const batch_entry& e : entries)
    commands.push_back(decode_entry(config_, e.data));
  prepare_batch(entries, commands);
  in_batch_ = true;
  std::vector<apply_result> results;
  results.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    results.push_back(commands[i] ? apply(entries[i].index, *commands[i])
                                  : apply(entries[i].index, entries[i].data));
    // Nothing of a failed or awaiting entry is recorded: the batch ends there (later entries must
    // not be applied before it).
    if (results.back().status == apply_status::failed ||
        results.back().status == apply_status::awaiting_content)
      break;
  }
  in_batch_ = false;
  // Contents no apply used (already in place, a conflict rule, a failure): a crash before these
  // unlinks leaves them at the root, where open() removes stale temporaries.
  for (const auto& [index, temp] : prepared_)
    (void)tree_.unlink(temp);
  prepared_.clear();
  // A failure stays in dirs_to_sync_: persist() retries it and refuses to write the state file.
  (void)sync_pending_directories();
  return results;
}

void state_machine::prepare_batch(const std::vector<batch_entry>& entries,
                                  const std::vector<result<command>>& commands) {
  std::vector<std::size_t> writes;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (!commands[i]) continue;
    const command& c = *commands[i];
    if (c.kind != command_kind::write || entries[i].index <= applied_index_ || c.origin == 0 ||
        c.content.size() > config_.write_bytes_max || dedupe_seen(c.origin, c.sequence))
      continue;
    if (c.origin == config_.self) {
      // The proposer's own write: its working file usually holds the content already, and the
      // apply does not rewrite it.
      auto st = tree_.lstat(c.path);
      if (st && st->kind == file_kind::regular && st->size_bytes == c.content.size()) continue;
    }
    writes.push_back(i);
  }
  if (writes.size() < 2) return;  // one write: write_file_atomic costs the same
  std::vector<std::string> temps;
  std::vector<std::uint64_t> indexes;
  temps.reserve(writes.size());
  indexes.reserve(writes.size());
  for (std::size_t i : writes) {
    const command& c = *commands[i];
    // At the root, whatever directory the write goes to (it may not exist yet; the apply creates
    // it): a crash leaves stale temporaries only where open() collects them.
    auto temp = tree_.create_temp_file("", c.content, c.mode & 07777, c.mtime_ns);
    if (!temp) break;  // disk full, unsupported, ...: the remaining writes use write_file_atomic
    temps.push_back(std::move(*temp));
    indexes.push_back(entries[i].index);
  }
  if (temps.empty()) return;
  if (tree_.sync_files(temps)) {
    for (const std::string& temp : temps)
      (void)tree_.unlink(temp);
    return;  // each write retries on its own (and reports the error where it recurs)
  }
  for (std::size_t k = 0; k < temps.size(); ++k)
    prepared_.emplace(indexes[k], std::move(temps[k]));
}

std::error_code state_machine::write_content(std::uint64_t index, const std::string& target,
                                             std::string_view content, std::uint32_t mode,
                                             std::int64_t mtime_ns, const file_stat& expected) {
  const bool defer = config_.defer_directory_sync || in_batch_;
  if (auto it = prepared_.find(index); it != prepared_.end()) {
    // The content is durable already; replace only what the caller examined (a local write that
    // landed meanwhile must not go to an unlinked inode).
    auto now = stat_or_absent(tree_, target);
    if (!now) return now.error();
    if (!same_working_identity(*now, expected)) return make_error_code(errc::conflict);
    std::string temp = std::move(it->second);
    prepared_.erase(it);
    if (!tree_.rename(temp, target)) {
      dirs_to_sync_.emplace(parent_path(temp));
      dirs_to_sync_.emplace(parent_path(target));
      return {};
    }
    // For example EXDEV (the target directory is on another filesystem): write it in place.
    (void)tree_.unlink(temp);
  }
  if (auto ec = tree_.write_file_atomic_if(target, content, mode, mtime_ns, !defer, expected))
    return ec;
  if (defer) dirs_to_sync_.emplace(parent_path(target));
  return {};
}

std::error_code state_machine::sync_pending_directories() {
  std::error_code first_error;
  for (auto it = dirs_to_sync_.begin(); it != dirs_to_sync_.end();) {
    auto ec = tree_.sync_dir(*it);
    if (ec && !is_missing(ec)) {
      if (!first_error) first_error = ec;
      ++it;
    } else {
      it = dirs_to_sync_.erase(it);
    }
  }
  return first_error;
}

apply_result state_machine::apply_command(std::uint64_t index, const command& c) {
  apply_result r;
  r.index = index;
  r.kind = c.kind;
  r.origin = c.origin;
  r.sequence = c.sequence;
  r.own = is_own(c);
  r.path = c.path;
  r.upload_id = c.upload_id;
  if (c.origin == 0) return rejected(std::move(r), errc::malformed, "origin 0");
  if (dedupe_seen(c.origin, c.sequence))
    return make_status(std::move(r), apply_status::duplicate, {},
                       "sequence " + std::to_string(c.sequence) + " of node " +
                           std::to_string(c.origin) + " already applied");
  std::string why;
  if (auto ec = validate_path(c.path, config_.rules, &why))
    return rejected(std::move(r), errc::invalid_path, "path \"" + c.path + "\": " + why);
  // A command proposed against an entry that a concurrent rename (committed first) moved away
  // takes effect where the entry is now: an edit, chmod or delete follows the file it was made to
  // (docs/folder.md, "Concurrent changes"). Creations and renames do not follow.
  command followed;
  const command* cmd = &c;
  switch (c.kind) {
    case command_kind::write:
    case command_kind::commit:
    case command_kind::symlink:
    case command_kind::remove:
    case command_kind::rmdir:
    case command_kind::set_mode:
    case command_kind::set_mtime:
      if (auto to = follow_moves(c)) {
        if (to->superseded)
          return make_status(std::move(r), apply_status::superseded, {},
                             "a later command of the same origin changed the path, which moved");
        followed = c;
        followed.path = std::move(to->path);
        followed.base_version = to->base_version;
        r.path = followed.path;
        r.from_path = c.path;
        cmd = &followed;
      }
      break;
    default:
      break;
  }
  switch (cmd->kind) {
    case command_kind::write:
      return do_write(index, *cmd, std::move(r));
    case command_kind::chunk:
      return do_chunk(index, *cmd, std::move(r));
    case command_kind::chunk_ref:
      return do_chunk_ref(index, *cmd, std::move(r));
    case command_kind::commit:
      return do_commit(index, *cmd, std::move(r));
    case command_kind::remove:
      return do_remove(index, *cmd, std::move(r));
    case command_kind::rename:
      return do_rename(index, *cmd, std::move(r));
    case command_kind::mkdir:
      return do_mkdir(index, *cmd, std::move(r));
    case command_kind::rmdir:
      return do_rmdir(index, *cmd, std::move(r));
    case command_kind::set_mode:
      return do_set_mode(index, *cmd, std::move(r));
    case command_kind::set_mtime:
      return do_set_mtime(index, *cmd, std::move(r));
    case command_kind::symlink:
      return do_symlink(index, *cmd, std::move(r));
  }
  return rejected(std::move(r), errc::malformed, "unknown command kind");
}

// ------------------------------------------------------------------- replicated-state helpers

std::error_code state_machine::check_parents(std::string_view path, std::string* reason) const {
  for (auto p = parent_path(path); !p.empty(); p = parent_path(p)) {
    const manifest_entry* e = manifest_.find(p);
    if (e != nullptr && e->kind != file_kind::directory) {
      if (reason != nullptr)
        *reason = "parent \"" + std::string(p) + "\" is a " + to_string(e->kind);
      return make_error_code(errc::conflict);
    }
  }
  return {};
}

std::string state_machine::unique_conflict_name(std::string_view path, node_id node,
                                                std::int64_t utc_ns) const {
  for (unsigned n = 0;; ++n) {
    std::string name = conflict_copy_name(path, node, utc_ns, n);
    if (manifest_.find(name) == nullptr && !manifest_.has_children(name)) return name;
  }
}

// `e` was made by an earlier command of the run of its origin that proposed `c` (the same boot
// epoch): `c` was proposed knowing it, whatever base it names (the node read the path again before
// its previous command applied). Across runs that does not hold: a replaced node's successor (the
// same id, a fresh state) or a restarted node may propose before it has applied its earlier
// commands, so its base decides, as for any other origin (chaos bug 23: a replacement's stale
// remove deleted its predecessor's newer, acknowledged write).
bool state_machine::same_run(const manifest_entry& e, const command& c) {
  return e.origin == c.origin && (e.sequence >> 32) == (c.sequence >> 32);
}

bool state_machine::is_conflict(const command& c, const manifest_entry* current,
                                bool same_result) const {
  if (current == nullptr || same_result) return false;
  if (current->kind == file_kind::directory) return true;
  return c.base_version != current->version && !same_run(*current, c);
}

std::optional<state_machine::followed_path> state_machine::follow_moves(const command& c) const {
  if (c.base_version == 0) return std::nullopt;  // proposed as a creation: nothing to follow
  // The entry the command was based on (or one its origin made itself) is still at the path.
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur != nullptr && (cur->version == c.base_version || cur->origin == c.origin))
    return std::nullopt;
  // A move made by an earlier rename of the command's own origin: that node proposed the command
  // knowing the entry had left the path (its scan re-reading the old name, say), so the command
  // is about the path, not about the moved entry (the same-origin rule).
  auto renamed_by_self = [&c](const move_record& m) {
    return m.rename_origin == c.origin && m.rename_sequence < c.sequence;
  };
  auto it = moves_.find(c.path);
  if (it == moves_.end() || renamed_by_self(it->second)) return std::nullopt;
  const move_record& first = it->second;
  followed_path out;
  if (first.from_version != c.base_version) {
    if (first.from_origin != c.origin) return std::nullopt;  // moved a version it never saw
    // The moved entry was made by the command's own origin: after the command (superseded), or
    // before it (the command is based on it even if it names an older version).
    if (first.from_sequence > c.sequence) {
      out.superseded = true;
      return out;
    }
  }
  out.path = first.to;
  out.base_version = first.index;
  // Later renames of the same entry continue its history. Every hop goes forward in the log
  // (a record's index is above its from_version), so the walk ends; the bound is belt and braces.
  for (std::size_t hops = 0; hops < moves_.size(); ++hops) {
    const manifest_entry* e = manifest_.find(out.path);
    if (e != nullptr && e->version == out.base_version) break;
    auto next = moves_.find(out.path);
    if (next == moves_.end() || next->second.from_version != out.base_version ||
        renamed_by_self(next->second))
      break;
    out.path = next->second.to;
    out.base_version = next->second.index;
  }
  return out;
}

void state_machine::record_move(const std::string& from, move_record record) {
  auto it = moves_.find(from);
  if (it != moves_.end()) {
    moves_by_index_.erase({it->second.index, from});
    it->second = std::move(record);
  } else {
    it = moves_.emplace(from, std::move(record)).first;
  }
  moves_by_index_.emplace(it->second.index, from);
  // Oldest first (log index, then path): the same records are dropped on every node.
  while (moves_.size() > move_records_max) {
    auto oldest = moves_by_index_.begin();
    moves_.erase(oldest->second);
    moves_by_index_.erase(oldest);
  }
}

void state_machine::note_replaced(const std::string& path, const manifest_entry& entry,
                                  bool removed, bool removed_by_self) {
  constexpr std::size_t replaced_recently_max = 1024;
  if (entry.kind == file_kind::directory || entry.local_inode == 0) return;
  if (replaced_recently_.insert_or_assign(path, replaced_entry{entry, removed, removed_by_self})
          .second)
    replaced_order_.push_back(path);
  while (replaced_order_.size() > replaced_recently_max) {
    replaced_recently_.erase(replaced_order_.front());
    replaced_order_.pop_front();
  }
}

bool state_machine::is_replaced_version(std::string_view path, const file_stat& st) const {
  auto it = replaced_recently_.find(path);
  if (it == replaced_recently_.end()) return false;
  const manifest_entry& e = it->second.entry;
  // A rename keeps inode, size and mtime (not ctime).
  return e.kind == st.kind && st.inode == e.local_inode && st.size_bytes == e.size_bytes &&
         (st.kind == file_kind::symlink || st.mtime_ns == e.local_mtime_ns);
}

// ------------------------------------------------------------------------- local disk helpers

result<bool> state_machine::working_matches(std::string_view path, const manifest_entry* entry,
                                            file_stat* seen) {
  auto st = tree_.lstat(path);
  if (!st) {
    // invalid_path: an ancestor is a symlink on disk (a local change); the entry is not there.
    if (!is_missing(st.error()) && st.error() != make_error_code(errc::invalid_path))
      return st.error();
    if (seen != nullptr) *seen = file_stat{};
    return entry == nullptr;
  }
  if (seen != nullptr) *seen = *st;
  if (entry == nullptr || entry->kind != st->kind) return false;
  switch (st->kind) {
    case file_kind::directory:
      return true;
    case file_kind::symlink: {
      auto target = tree_.readlink(path);
      if (!target) return target.error();
      return *target == entry->symlink_target;
    }
    case file_kind::regular: {
      if (st->size_bytes != entry->size_bytes) return false;
      if (same_local_identity(*entry, *st)) return true;
      auto h = hash_file(tree_, path, config_.chunk_bytes);
      if (!h) return h.error();
      if (h->sha256 != entry->sha256) return false;
      note_unchanged(path, *st);
      return true;
    }
    default:
      return false;
  }
}

std::error_code state_machine::clear_way(std::string_view path, const digest* wanted, bool own,
                                         apply_result& r, bool* already, bool* keep_local) {
  *already = false;
  *keep_local = false;
  const manifest_entry* cur = manifest_.find(path);
  auto st = tree_.lstat(path);
  if (!st) return is_missing(st.error()) ? std::error_code{} : st.error();
  if (st->kind == file_kind::regular && wanted != nullptr) {
    bool fast = cur != nullptr && same_local_identity(*cur, *st);
    if (fast) {
      *already = cur->sha256 == *wanted;
      return {};
    }
    if (own && take_own_read(path, *st, *wanted)) {
      *already = true;  // this node's own upload of the file, unchanged since it was hashed
      return {};
    }
    auto h = hash_file(tree_, path, config_.chunk_bytes);
    if (!h) return h.error();
    if (h->sha256 == *wanted) {
      *already = true;  // a replay after a crash, or this node's own write
      return {};
    }
    // This node's own command was read from this very file, so a different content now is a
    // newer local edit — even when it happens to equal the committed content (a file truncated
    // by an editor that is rewriting it, a revert): replacing it would send the user's ongoing
    // write to an unlinked inode. Keep it; the watcher proposes it.
    if (own) {
      *keep_local = true;
      return {};
    }
    if (cur != nullptr && cur->kind == file_kind::regular && h->sha256 == cur->sha256) return {};
  } else {
    auto matches = working_matches(path, cur, nullptr);
    if (!matches) return matches.error();
    if (*matches) return {};
  }
  // A local edit (or an untracked local entry) is in the way.
  if (own) {
    // This node's own command: the working entry is an even newer local edit that the watcher
    // will propose; leave it in place.
    *keep_local = true;
    return {};
  }
  auto copy = free_copy_name(path, st->mtime_ns);
  if (!copy) return copy.error();
  if (auto ec = tree_.rename(path, *copy)) return ec;
  if (auto ec = sync_directory(parent_path(path))) return ec;
  r.preserved.push_back({std::string(path), std::move(*copy)});
  return {};
}

apply_result state_machine::record_removed_since_read(const std::string& target,
                                                      const manifest_entry* cur, manifest_entry e,
                                                      apply_result r) {
  if (cur != nullptr) note_replaced(target, *cur, false);
  put_entry(target, std::move(e));
  r.path = target;
  r.preserved.push_back({target, target});  // no local identity: read again
  return r;
}

void state_machine::note_unlinked(const std::string& path) {
  constexpr std::size_t unlinked_max = 1024;
  if (unlinked_by_apply_.insert(path).second) unlinked_order_.push_back(path);
  while (unlinked_order_.size() > unlinked_max) {
    unlinked_by_apply_.erase(unlinked_order_.front());
    unlinked_order_.pop_front();
  }
}

result<bool> state_machine::removed_since_read(std::string_view path) {
  // Removed by an apply (a delete or a rename committed before this node's own command, which
  // may have followed a move to this very path), or absent by necessity: not the user's doing.
  if (unlinked_by_apply_.count(path) != 0 || missing_.count(path) != 0) return false;
  auto st = tree_.lstat(path);
  if (st || !is_missing(st.error())) return st ? result<bool>(false) : result<bool>(st.error());
  // Its directory still there: the file alone went (a missing directory is recreated by the
  // apply, as for any other node's write).
  const std::string_view parent = parent_path(path);
  if (parent.empty()) return true;
  auto dir = tree_.lstat(parent);
  if (!dir) return is_missing(dir.error()) ? result<bool>(false) : result<bool>(dir.error());
  return dir->kind == file_kind::directory;
}

result<std::string> state_machine::free_copy_name(std::string_view path, std::int64_t mtime_ns) {
  for (unsigned n = 0;; ++n) {
    std::string copy = conflict_copy_name(path, config_.self, mtime_ns, n);
    if (manifest_.find(copy) != nullptr) continue;
    auto other = tree_.lstat(copy);
    if (!other && is_missing(other.error())) return copy;
    if (!other) return other.error();
  }
}

std::error_code state_machine::ensure_parents(std::uint64_t index, const command& c,
                                              std::string_view path, apply_result& r) {
  std::vector<std::string_view> chain;
  for (auto p = parent_path(path); !p.empty(); p = parent_path(p))
    chain.push_back(p);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    std::string dir(*it);
    const manifest_entry* e = manifest_.find(dir);
    std::uint32_t mode = e != nullptr ? e->mode : config_.implicit_dir_mode;
    auto st = tree_.lstat(dir);
    bool need_mkdir = false;
    if (!st) {
      if (!is_missing(st.error())) return st.error();
      need_mkdir = true;
    } else if (st->kind != file_kind::directory) {
      // A local non-directory where the committed tree has (or needs) a directory: keep it.
      bool already = false;
      bool keep = false;
      if (auto ec = clear_way(dir, nullptr, false, r, &already, &keep)) return ec;
      need_mkdir = true;
    }
    if (need_mkdir) {
      if (auto ec = tree_.mkdir(dir, mode); ec && ec != std::errc::file_exists) return ec;
      if (auto ec = sync_directory(parent_path(dir))) return ec;
    }
    if (e == nullptr) {
      manifest_entry d;
      d.kind = file_kind::directory;
      d.version = index;
      d.origin = c.origin;
      d.sequence = c.sequence;
      d.mode = mode;
      auto now = tree_.lstat(dir);
      if (!now) return now.error();
      d.local_inode = now->inode;
      r.written.push_back({dir, *now, {}});
      put_entry(dir, std::move(d));
    } else if (need_mkdir) {
      auto now = tree_.lstat(dir);
      if (!now) return now.error();
      manifest_entry copy = *e;
      copy.local_inode = now->inode;
      put_entry(dir, std::move(copy));
      r.written.push_back({dir, *now, {}});
    }
  }
  return {};
}

std::error_code state_machine::sync_directory(std::string_view dir) {
  if (!config_.defer_directory_sync && !in_batch_) return tree_.sync_dir(dir);
  dirs_to_sync_.emplace(dir);
  return {};
}

std::error_code state_machine::record_written(std::string_view path, manifest_entry& entry,
                                              apply_result& r) {
  auto st = tree_.lstat(path);
  if (!st) return st.error();
  remember_local_identity(entry, *st);
  r.written.push_back({std::string(path), *st, entry.sha256});
  return {};
}

// ------------------------------------------------------------------------------- the commands

apply_result state_machine::do_write(std::uint64_t index, const command& c, apply_result r) {
  if (c.content.size() > config_.write_bytes_max)
    return rejected(std::move(r), errc::too_large, "write content larger than write_bytes_max");
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur != nullptr && cur->origin == c.origin && cur->sequence > c.sequence)
    return make_status(std::move(r), apply_status::superseded, {},
                       "a later command of the same origin changed the path");
  digest h = sha256(c.content);
  bool same = cur != nullptr && cur->kind == file_kind::regular && cur->sha256 == h;
  bool conflict = is_conflict(c, cur, same);
  std::string target = conflict ? unique_conflict_name(c.path, c.origin, c.timestamp_ns) : c.path;
  std::string why;
  if (check_parents(target, &why))
    return rejected(std::move(r), errc::conflict, "cannot create \"" + target + "\": " + why);
  if (auto ec = ensure_parents(index, c, target, r))
    return failed(std::move(r), ec, "mkdir parents");
  manifest_entry e;
  e.kind = file_kind::regular;
  e.version = index;
  e.origin = c.origin;
  e.sequence = c.sequence;
  e.size_bytes = c.content.size();
  e.mode = c.mode & 07777;
  e.mtime_ns = c.mtime_ns;
  e.sha256 = h;
  e.chunk_hashes = chunk_hashes_of(c.content, config_.chunk_bytes);
  bool already = false;
  bool keep_local = false;
  // This node's own write of a file its user deleted or renamed since the node read it (an
  // editor's temporary file renamed over the document): writing it would bring the file back on
  // every node (bug 21). The entry is committed here as everywhere, the disk is left alone, and
  // the path is read again, which proposes the removal.
  auto gone = r.own && !conflict ? removed_since_read(target) : result<bool>(false);
  if (!gone) return failed(std::move(r), gone.error(), "lstat");
  for (int attempt = 0; !*gone; ++attempt) {
    if (auto ec = clear_way(target, &h, r.own, r, &already, &keep_local))
      return failed(std::move(r), ec, "checking the working file");
    if (keep_local || already) break;
    auto seen = stat_or_absent(tree_, target);
    if (!seen) return failed(std::move(r), seen.error(), "lstat");
    auto ec = write_content(index, target, c.content, e.mode, e.mtime_ns, *seen);
    if (!ec) break;
    // A local write landed between the examination and the replace (chaos bug 7): examine the
    // working file again — it is now a local edit, kept as a conflict copy (or, for this node's
    // own command, left in place) — then write.
    if (ec != make_error_code(errc::conflict) || attempt == 3)
      return failed(std::move(r), ec, "writing \"" + target + "\"");
  }
  if (*gone) {
    r.preserved.push_back({target, target});  // no local identity: read again
  } else if (keep_local) {
    e.local_inode = 0;  // the working file is a newer local edit: never matches cheaply
  } else {
    if (already) {
      auto st = tree_.lstat(target);
      if (!st) return failed(std::move(r), st.error(), "lstat");
      if (st->mode != e.mode)
        if (auto ec = tree_.chmod(target, e.mode)) return failed(std::move(r), ec, "chmod");
      if (st->mtime_ns != e.mtime_ns)
        if (auto ec = tree_.set_mtime(target, e.mtime_ns))
          return failed(std::move(r), ec, "utimens");
    }
    if (auto ec = record_written(target, e, r)) return failed(std::move(r), ec, "lstat");
  }
  if (cur != nullptr && !conflict) note_replaced(target, *cur, false);
  put_entry(target, std::move(e));
  r.path = target;
  if (conflict)
    return make_status(std::move(r), apply_status::conflict, make_error_code(errc::conflict),
                       "\"" + c.path + "\" changed since version " +
                           std::to_string(c.base_version) + "; kept as \"" + target + "\"");
  return r;
}

apply_result state_machine::do_chunk(std::uint64_t, const command& c, apply_result r) {
  if (c.content.empty() || c.content.size() > config_.chunk_bytes)
    return rejected(std::move(r), errc::malformed, "chunk size outside (0, chunk_bytes]");
  if (c.chunk_index >= (std::uint64_t{1} << 24))
    return rejected(std::move(r), errc::malformed, "chunk index too large");
  if (sha256(c.content) != c.sha256)
    return rejected(std::move(r), errc::corrupt, "chunk bytes do not match their hash");
  if (superseded_upload(c.origin, c.upload_id))
    return ignored(std::move(r), "a chunk of an upload its proposer abandoned for a newer one");
  if (auto ec = switch_upload(c.origin, c.upload_id))
    return failed(std::move(r), ec, "dropping an abandoned upload");
  std::string staging = staging_path(c.origin, c.upload_id);
  if (auto ec = tree_.write_at(staging, c.chunk_index * config_.chunk_bytes, c.content))
    return failed(std::move(r), ec, "writing a staged chunk");
  verified_staged_.erase({c.origin, c.upload_id, c.chunk_index});
  auto& up = uploads_[c.origin];
  up.upload_id = c.upload_id;
  up.chunks[c.chunk_index] = staged_chunk{c.sha256, c.content.size()};
  return r;
}

// Upload ids of an origin only grow (they are sequence numbers). A chunk of an older upload than
// the open one is a late retry of an upload its proposer abandoned (the file changed): it must
// not abandon the newer upload in turn (it would delete the newer upload's staged bytes).
bool state_machine::superseded_upload(node_id origin, std::uint64_t upload_id) const {
  auto it = uploads_.find(origin);
  return it != uploads_.end() && it->second.upload_id > upload_id;
}

std::error_code state_machine::switch_upload(node_id origin, std::uint64_t upload_id) {
  auto it = uploads_.find(origin);
  if (it == uploads_.end() || it->second.upload_id == upload_id) return {};
  // One open upload per origin: a new one abandons the previous (its proposer gave up on it).
  auto ec = tree_.unlink(staging_path(origin, it->second.upload_id));
  if (ec && !is_missing(ec)) return ec;
  uploads_.erase(it);
  return {};
}

bool state_machine::verified(node_id origin, std::uint64_t upload_id, std::uint64_t chunk_index,
                             const digest& sha256) const {
  auto it = verified_staged_.find({origin, upload_id, chunk_index});
  return it != verified_staged_.end() && it->second == sha256;
}

// The bytes travelled beside the log (stage_chunk() on this node, pushed by the proposer): the
// chunk is recorded as staged whether or not they arrived here — the replicated state must be the
// same on every node, and a chunk of an upload that is later abandoned is never needed. The
// commit is where the bytes are required (do_commit fetches what is still absent then).
apply_result state_machine::do_chunk_ref(std::uint64_t, const command& c, apply_result r) {
  if (c.size_bytes == 0 || c.size_bytes > config_.chunk_bytes)
    return rejected(std::move(r), errc::malformed, "chunk size outside (0, chunk_bytes]");
  if (c.chunk_index >= (std::uint64_t{1} << 24))
    return rejected(std::move(r), errc::malformed, "chunk index too large");
  if (superseded_upload(c.origin, c.upload_id))
    return ignored(std::move(r), "a chunk of an upload its proposer abandoned for a newer one");
  if (auto ec = switch_upload(c.origin, c.upload_id))
    return failed(std::move(r), ec, "dropping an abandoned upload");
  auto& up = uploads_[c.origin];
  up.upload_id = c.upload_id;
  up.chunks[c.chunk_index] = staged_chunk{c.sha256, c.size_bytes};
  return r;
}

std::error_code state_machine::sync_staging(node_id origin, std::uint64_t upload_id) {
  return tree_.sync_file(staging_path(origin, upload_id));
}

std::error_code state_machine::stage_chunk(node_id origin, std::uint64_t upload_id,
                                           std::uint64_t chunk_index, const digest& sha256,
                                           std::string_view bytes, bool sync) {
  if (bytes.empty() || bytes.size() > config_.chunk_bytes ||
      chunk_index >= (std::uint64_t{1} << 24))
    return make_error_code(errc::malformed);
  // A chunk of an upload this node already recorded differently is never overwritten.
  auto it = uploads_.find(origin);
  if (it != uploads_.end() && it->second.upload_id == upload_id) {
    auto chunk = it->second.chunks.find(chunk_index);
    if (chunk != it->second.chunks.end() && chunk->second.sha256 != sha256)
      return make_error_code(errc::conflict);
  }
  const std::string staging = staging_path(origin, upload_id);
  if (auto ec = tree_.write_at(staging, chunk_index * config_.chunk_bytes, bytes)) return ec;
  if (sync)
    if (auto ec = tree_.sync_file(staging)) return ec;
  verified_staged_[{origin, upload_id, chunk_index}] = sha256;
  return {};
}

result<std::string> state_machine::read_chunk(node_id origin, std::uint64_t upload_id,
                                              std::uint64_t chunk_index, std::uint64_t size_bytes,
                                              const digest& sha256, std::string_view path) {
  if (size_bytes == 0 || size_bytes > config_.chunk_bytes ||
      chunk_index >= (std::uint64_t{1} << 24))
    return errc::malformed;
  std::string buffer;
  const std::uint64_t offset = chunk_index * config_.chunk_bytes;
  std::string staging = staging_path(origin, upload_id);
  for (std::string_view file : {std::string_view(staging), path}) {
    if (file.empty() || (file == path && validate_path(path, config_.rules))) continue;
    if (auto ec = tree_.read(file, offset, size_bytes, buffer)) {
      if (is_missing(ec) || ec == std::errc::is_a_directory || ec == std::errc::not_a_directory ||
          ec == make_error_code(errc::invalid_path))
        continue;
      return ec;
    }
    if (buffer.size() == size_bytes && folder::sha256(buffer) == sha256) return buffer;
  }
  return errc::not_found;
}

std::vector<content_wanted> state_machine::wanted_for_missing(std::size_t max) {
  std::vector<content_wanted> out;
  for (const std::string& path : missing_) {
    const manifest_entry* e = manifest_.find(path);
    if (e == nullptr || e->kind != file_kind::regular) continue;
    for (std::uint64_t i = 0; i < e->chunk_hashes.size() && out.size() < max; ++i) {
      const std::uint64_t size =
          std::min<std::uint64_t>(config_.chunk_bytes, e->size_bytes - i * config_.chunk_bytes);
      if (verified(0, e->version, i, e->chunk_hashes[i])) continue;
      if (unavailable_.count({0, e->version, i}) != 0) continue;
      if (read_chunk(0, e->version, i, size, e->chunk_hashes[i], {})) {  // staged before
        verified_staged_[{0, e->version, i}] = e->chunk_hashes[i];
        continue;
      }
      out.push_back({0, e->version, i, size, e->chunk_hashes[i], path});
    }
    if (out.size() >= max) break;
  }
  return out;
}

result<std::vector<written_entry>> state_machine::repair_missing() {
  std::vector<written_entry> out;
  std::vector<std::string> repaired;
  for (const std::string& path : missing_) {
    const manifest_entry* found = manifest_.find(path);
    if (found == nullptr || found->kind != file_kind::regular) continue;
    manifest_entry e = *found;
    bool complete = true;
    for (std::uint64_t i = 0; i < e.chunk_hashes.size() && complete; ++i)
      complete = verified(0, e.version, i, e.chunk_hashes[i]);
    if (!complete) continue;
    auto occupied = tree_.lstat(path);
    if (occupied) continue;  // a local file took the path meanwhile: the scanner's business
    if (!is_missing(occupied.error())) return occupied.error();
    if (auto ec = make_dirs(tree_, parent_path(path), 0755)) return ec;
    if (e.size_bytes == 0) {
      if (auto ec = tree_.write_file_atomic(path, {}, e.mode, e.mtime_ns)) return ec;
    } else {
      const std::string staging = staging_path(0, e.version);
      if (auto ec = tree_.truncate(staging, e.size_bytes)) return ec;
      if (auto ec = tree_.chmod(staging, e.mode)) return ec;
      if (auto ec = tree_.set_mtime(staging, e.mtime_ns)) return ec;
      if (auto ec = tree_.sync_file(staging)) return ec;
      if (auto ec = tree_.rename(staging, path)) return ec;
      if (auto ec = tree_.sync_dir(parent_path(path))) return ec;
    }
    auto st = tree_.lstat(path);
    if (!st) return st.error();
    remember_local_identity(e, *st);
    out.push_back({path, *st, e.sha256});
    manifest_.put(path, e);
    repaired.push_back(path);
    std::erase_if(verified_staged_, [&](const auto& item) {
      return std::get<0>(item.first) == 0 && std::get<1>(item.first) == e.version;
    });
  }
  for (const auto& path : repaired)
    missing_.erase(path);
  if (!repaired.empty()) dirty_ = true;
  return out;
}

void state_machine::mark_unavailable(node_id origin, std::uint64_t upload_id,
                                     std::uint64_t chunk_index) {
  unavailable_.insert({origin, upload_id, chunk_index});
}

std::error_code state_machine::drop_stale_staging(node_id origin, std::uint64_t below) {
  const std::string prefix = std::string(upload_prefix) + std::to_string(origin) + "-";
  auto root = tree_.list("");
  if (!root) return root.error();
  auto live = uploads_.find(origin);
  auto stale = [&](std::uint64_t upload_id) {
    return upload_id < below && (live == uploads_.end() || live->second.upload_id != upload_id);
  };
  for (const auto& e : *root) {
    if (e.kind != file_kind::regular || e.name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = e.name.substr(prefix.size());
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    if (!stale(std::strtoull(digits.c_str(), nullptr, 10))) continue;
    if (auto ec = tree_.unlink(e.name); ec && !is_missing(ec)) return ec;
  }
  std::erase_if(unavailable_, [&](const auto& key) {
    return std::get<0>(key) == origin && stale(std::get<1>(key));
  });
  std::erase_if(verified_staged_, [&](const auto& item) {
    return std::get<0>(item.first) == origin && stale(std::get<1>(item.first));
  });
  return {};
}

apply_result state_machine::do_commit(std::uint64_t index, const command& c, apply_result r) {
  auto it = uploads_.find(c.origin);
  if (it == uploads_.end() || it->second.upload_id != c.upload_id)
    return rejected(std::move(r), errc::not_found, "commit of an unknown upload");
  upload_state up = it->second;
  std::string staging = staging_path(c.origin, c.upload_id);
  auto drop_upload = [&]() -> std::error_code {
    uploads_.erase(c.origin);
    auto ec = tree_.unlink(staging);
    return ec && !is_missing(ec) ? ec : std::error_code{};
  };
  auto reject_and_drop = [&](errc code, std::string reason) {
    if (auto ec = drop_upload()) return failed(std::move(r), ec, "dropping a rejected upload");
    return rejected(std::move(r), code, std::move(reason));
  };
  const std::uint64_t chunk_bytes = config_.chunk_bytes;
  const std::uint64_t n = chunk_count(c.size_bytes, chunk_bytes);
  if (c.chunk_hashes.size() != n)
    return reject_and_drop(errc::malformed, "commit: chunk hash count does not match the size");
  for (const auto& [i, staged] : up.chunks)
    if (i >= n || c.chunk_hashes[i] != staged.sha256)
      return reject_and_drop(errc::corrupt, "commit: a staged chunk does not match the manifest");
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur != nullptr && cur->origin == c.origin && cur->sequence > c.sequence) {
    if (auto ec = drop_upload()) return failed(std::move(r), ec, "dropping a superseded upload");
    return make_status(std::move(r), apply_status::superseded, {},
                       "a later command of the same origin changed the path");
  }
  // Chunks not staged come from the current committed content (any position with that hash).
  std::unordered_map<std::string, std::uint64_t> base_index;
  if (cur != nullptr && cur->kind == file_kind::regular)
    for (std::uint64_t i = 0; i < cur->chunk_hashes.size(); ++i)
      base_index.emplace(std::string(cur->chunk_hashes[i].begin(), cur->chunk_hashes[i].end()), i);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> from_base;  // (new index, base index)
  for (std::uint64_t i = 0; i < n; ++i) {
    if (up.chunks.count(i) != 0) continue;
    auto b = base_index.find(std::string(c.chunk_hashes[i].begin(), c.chunk_hashes[i].end()));
    if (b == base_index.end())
      return reject_and_drop(errc::conflict,
                             "commit: chunk " + std::to_string(i) +
                                 " was not sent and the current content does not have it");
    from_base.emplace_back(i, b->second);
  }
  bool same = cur != nullptr && cur->kind == file_kind::regular && cur->sha256 == c.sha256;
  bool conflict = is_conflict(c, cur, same);
  std::string target = conflict ? unique_conflict_name(c.path, c.origin, c.timestamp_ns) : c.path;
  std::string why;
  if (check_parents(target, &why))
    return reject_and_drop(errc::conflict, "cannot create \"" + target + "\": " + why);
  if (auto ec = ensure_parents(index, c, target, r))
    return failed(std::move(r), ec, "mkdir parents");

  manifest_entry e;
  e.kind = file_kind::regular;
  e.version = index;
  e.origin = c.origin;
  e.sequence = c.sequence;
  e.size_bytes = c.size_bytes;
  e.mode = c.mode & 07777;
  e.mtime_ns = c.mtime_ns;
  e.sha256 = c.sha256;
  e.chunk_hashes = c.chunk_hashes;

  // This node's own upload of a file its user deleted or renamed since it was read: as for a
  // write, not recreated (bug 21).
  auto gone = r.own && !conflict ? removed_since_read(target) : result<bool>(false);
  if (!gone) return failed(std::move(r), gone.error(), "lstat");
  if (*gone) {
    if (auto ec = drop_upload()) return failed(std::move(r), ec, "dropping the staging file");
    return record_removed_since_read(target, cur, std::move(e), std::move(r));
  }

  auto staged = tree_.lstat(staging);
  if (!staged && !is_missing(staged.error())) return failed(std::move(r), staged.error(), "lstat");
  if (!staged) {
    // Replay: the staging file was renamed into place before a crash, or lost. The target must
    // then hold exactly the committed content. (On the proposer, which stages nothing while its
    // peers acknowledge: its own file, unchanged since the upload hashed it, needs no new pass.)
    result<file_hashes> h = errc::not_found;
    if (r.own && target == c.path) {
      auto st = tree_.lstat(target);
      if (st && take_own_read(target, *st, c.sha256)) {
        file_hashes known;
        known.sha256 = c.sha256;
        known.size_bytes = c.size_bytes;
        h = std::move(known);
      }
    }
    if (!h) h = hash_file(tree_, target, chunk_bytes);
    if (!h && !is_missing(h.error())) return failed(std::move(r), h.error(), "hashing");
    if (h && h->sha256 == c.sha256) {
      if (auto ec = record_written(target, e, r)) return failed(std::move(r), ec, "lstat");
    } else {
      // Not a replay: chunk_ref bytes that never reached this node. Fetch them first (the
      // staging file appears with the first one), unless no peer has them any more.
      for (const auto& [i, info] : up.chunks) {
        if (unavailable_.count({c.origin, c.upload_id, i}) != 0) continue;
        if (r.wanted.size() == max_wanted_chunks) break;
        // Named by where the committed content lands: a peer that applied the commit already
        // serves it from that file (a conflict copy's name when the commit is a conflict).
        r.wanted.push_back({c.origin, c.upload_id, i, info.size_bytes, info.sha256, target});
      }
      if (!r.wanted.empty())
        return make_status(std::move(r), apply_status::awaiting_content,
                           make_error_code(errc::not_found),
                           std::to_string(r.wanted.size()) + " chunk(s) of upload " +
                               std::to_string(c.upload_id) + " are not on this node yet");
      // No member has the bytes: the path becomes missing here. What is at the target is not
      // the committed content: a local edit is moved aside (this node's own: left for the
      // watcher); the superseded committed version is removed — left in place it would look
      // like a new local file and be proposed back over the newer version (chaos soak D'').
      bool already = false;
      bool keep_local = false;
      if (auto ec = clear_way(target, &c.sha256, r.own, r, &already, &keep_local))
        return failed(std::move(r), ec, "checking the working file");
      if (!keep_local && !already) {
        auto ec = tree_.unlink(target);
        if (ec && !is_missing(ec)) return failed(std::move(r), ec, "removing the superseded file");
        if (!ec)
          if (auto e2 = sync_directory(parent_path(target)))
            return failed(std::move(r), e2, "fsync dir");
      }
      missing_.insert(target);
      r.needs_snapshot = true;
      e.local_inode = 0;
    }
    uploads_.erase(c.origin);
    put_entry(target, std::move(e));
    r.path = target;
    if (conflict)
      return make_status(std::move(r), apply_status::conflict, make_error_code(errc::conflict),
                         "kept as conflict copy");
    return r;
  }

  // Where the base content lives right now: the working file, unless clear_way moves a local
  // edit of `target` aside (then the base chunks, if still intact, are in the moved copy).
  std::string source = c.path;
  bool already = false;
  bool keep_local = false;
  std::size_t preserved_before = r.preserved.size();
  if (auto ec = clear_way(target, &c.sha256, r.own, r, &already, &keep_local))
    return failed(std::move(r), ec, "checking the working file");
  if (r.preserved.size() > preserved_before && target == c.path)
    source = r.preserved.back().copy_path;

  if (keep_local || already) {
    if (auto ec = drop_upload()) return failed(std::move(r), ec, "dropping the staging file");
    if (keep_local) {
      e.local_inode = 0;
    } else {
      auto st = tree_.lstat(target);
      if (!st) return failed(std::move(r), st.error(), "lstat");
      if (st->mode != e.mode)
        if (auto ec = tree_.chmod(target, e.mode)) return failed(std::move(r), ec, "chmod");
      if (st->mtime_ns != e.mtime_ns)
        if (auto ec = tree_.set_mtime(target, e.mtime_ns))
          return failed(std::move(r), ec, "utimens");
      if (auto ec = record_written(target, e, r)) return failed(std::move(r), ec, "lstat");
    }
  } else {
    // The unsent chunks are wanted by hash. Where they may be on this node: the file holding
    // the committed content (at the base position), and — when a local version was in the way or
    // this node proposed the content itself — the working or preserved file at the new position.
    // Every candidate is verified against the chunk hash before use.
    std::vector<std::string> files{source};
    if (source != c.path) files.push_back(c.path);
    for (std::size_t k = preserved_before; k < r.preserved.size(); ++k)
      if (std::find(files.begin(), files.end(), r.preserved[k].copy_path) == files.end())
        files.push_back(r.preserved[k].copy_path);
    std::string buffer;
    bool intact = true;
    // The staged chunks must still be in the staging file: after a crash before persist(), a
    // replay recreates the staging file from the chunk commands after the persisted index only.
    // (One chunk in memory at a time.)
    for (const auto& [i, staged_chunk_info] : up.chunks) {
      // Written and hash-checked by this very process (stage_chunk): no need to read it back.
      if (verified(c.origin, c.upload_id, i, staged_chunk_info.sha256)) continue;
      if (auto ec = tree_.read(staging, i * chunk_bytes, staged_chunk_info.size_bytes, buffer))
        return failed(std::move(r), ec, "reading staged chunks");
      if (buffer.size() == staged_chunk_info.size_bytes &&
          sha256(buffer) == staged_chunk_info.sha256)
        continue;
      if (unavailable_.count({c.origin, c.upload_id, i}) != 0) {
        intact = false;  // no peer had it either: the path becomes missing here
        break;
      }
      // A chunk_ref whose bytes never reached this node (it was down or cut off during the
      // push): nothing is recorded; the facade fetches them from a peer and applies again.
      if (r.wanted.size() < max_wanted_chunks)
        r.wanted.push_back({c.origin, c.upload_id, i, staged_chunk_info.size_bytes,
                            staged_chunk_info.sha256, target});
    }
    if (intact && !r.wanted.empty())
      return make_status(std::move(r), apply_status::awaiting_content,
                         make_error_code(errc::not_found),
                         std::to_string(r.wanted.size()) + " chunk(s) of upload " +
                             std::to_string(c.upload_id) + " are not on this node yet");
    r.wanted.clear();
    for (const auto& [i, b] : from_base) {
      if (!intact) break;
      std::uint64_t length = std::min<std::uint64_t>(chunk_bytes, c.size_bytes - i * chunk_bytes);
      bool found = false;
      for (const auto& file : files) {
        for (std::uint64_t position : {b, i}) {
          if (auto ec = tree_.read(file, position * chunk_bytes, length, buffer)) {
            if (!is_missing(ec) && ec != std::errc::is_a_directory &&
                ec != make_error_code(errc::invalid_path))
              return failed(std::move(r), ec, "reading base chunks");
            break;
          }
          if (buffer.size() == length && sha256(buffer) == c.chunk_hashes[i]) {
            found = true;
            break;
          }
          if (position == i) break;
        }
        if (found) break;
      }
      if (!found) {
        intact = false;
        break;
      }
      if (auto ec = tree_.write_at(staging, i * chunk_bytes, buffer))
        return failed(std::move(r), ec, "writing base chunks");
    }
    if (!intact) {
      // The committed bytes are not all on this node (a local edit overwrote unchanged chunks,
      // or a replay lost staged ones): the manifest is still updated (it is replicated state);
      // the path becomes missing here. Whatever is still at the target is the superseded
      // committed version (a local edit was moved aside above): remove it, so that it is never
      // mistaken for a new local file and proposed back over the newer version.
      if (auto ec = drop_upload()) return failed(std::move(r), ec, "dropping the staging file");
      auto ec = tree_.unlink(target);
      if (ec && !is_missing(ec)) return failed(std::move(r), ec, "removing the superseded file");
      if (!ec)
        if (auto e2 = sync_directory(parent_path(target)))
          return failed(std::move(r), e2, "fsync dir");
      missing_.insert(target);
      r.needs_snapshot = true;
      e.local_inode = 0;
    } else {
      if (auto ec = tree_.truncate(staging, c.size_bytes))
        return failed(std::move(r), ec, "truncate");
      if (auto ec = tree_.chmod(staging, e.mode)) return failed(std::move(r), ec, "chmod");
      if (auto ec = tree_.set_mtime(staging, e.mtime_ns))
        return failed(std::move(r), ec, "utimens");
      if (auto ec = tree_.sync_file(staging)) return failed(std::move(r), ec, "fsync");
      if (auto ec = tree_.rename(staging, target)) return failed(std::move(r), ec, "rename");
      if (auto ec = sync_directory(parent_path(target)))
        return failed(std::move(r), ec, "fsync dir");
      if (auto ec = sync_directory("")) return failed(std::move(r), ec, "fsync root");
      uploads_.erase(c.origin);
      if (auto ec = record_written(target, e, r)) return failed(std::move(r), ec, "lstat");
    }
  }
  if (cur != nullptr && !conflict) note_replaced(target, *cur, false);
  put_entry(target, std::move(e));
  r.path = target;
  if (conflict)
    return make_status(std::move(r), apply_status::conflict, make_error_code(errc::conflict),
                       "\"" + c.path + "\" changed since version " +
                           std::to_string(c.base_version) + "; kept as \"" + target + "\"");
  return r;
}

apply_result state_machine::do_remove(std::uint64_t, const command& c, apply_result r) {
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur == nullptr) return ignored(std::move(r), "not in the manifest");
  if (cur->kind == file_kind::directory)
    return rejected(std::move(r), errc::conflict, "remove of a directory (use rmdir)");
  if (cur->origin == c.origin && cur->sequence > c.sequence)
    return make_status(std::move(r), apply_status::superseded, {},
                       "a later command of the same origin changed the path");
  if (c.base_version != cur->version && !same_run(*cur, c))
    return ignored(
        std::move(r),
        "changed since version " + std::to_string(c.base_version) +
            " by a change its proposer had not seen; the newer content wins over the delete");
  file_stat seen;
  auto matches = working_matches(c.path, cur, &seen);
  if (!matches) return failed(std::move(r), matches.error(), "checking the working file");
  if (seen.kind != file_kind::none) {
    if (*matches) {
      if (auto ec = tree_.unlink(c.path); ec && !is_missing(ec))
        return failed(std::move(r), ec, "unlink");
      note_unlinked(c.path);
      if (auto ec = sync_directory(parent_path(c.path)))
        return failed(std::move(r), ec, "fsync dir");
    } else if (!r.own) {
      // A local edit not proposed yet (or in flight): a delete needs no room, so it stays where
      // it is, as a new uncommitted file — the edit wins over the delete, as it does when it
      // commits first. Reported so that the facade proposes it.
      r.preserved.push_back({c.path, c.path});
    }
  }
  note_replaced(c.path, *cur, true, r.own);
  erase_entry(c.path);
  r.removed.push_back(c.path);
  return r;
}

apply_result state_machine::do_rename(std::uint64_t index, const command& c, apply_result r) {
  std::string why;
  if (auto ec = validate_path(c.target, config_.rules, &why))
    return rejected(std::move(r), errc::invalid_path, "rename target \"" + c.target + "\": " + why);
  if (c.target == c.path) return ignored(std::move(r), "rename onto itself");
  if (is_same_or_below(c.target, c.path))
    return rejected(std::move(r), errc::invalid_path, "rename into its own subtree");
  const manifest_entry* src = manifest_.find(c.path);
  if (src == nullptr) {
    // A concurrent delete or rename of the source committed first (renames do not follow each
    // other: the first committed one wins). On the renaming node the renamed entry is on disk.
    if (r.own)
      if (auto ec = settle_orphaned_rename(c, r))
        return failed(std::move(r), ec, "settling the renamed entry");
    return ignored(std::move(r), "source not in the manifest");
  }
  if (src->origin == c.origin && src->sequence > c.sequence)
    return make_status(std::move(r), apply_status::superseded, {},
                       "a later command of the same origin changed the source");
  const manifest_entry* dst = manifest_.find(c.target);
  std::string to = c.target;
  bool conflict = false;
  if (dst != nullptr) {
    bool same = dst->kind == src->kind &&
                ((src->kind == file_kind::regular && dst->sha256 == src->sha256) ||
                 (src->kind == file_kind::symlink && dst->symlink_target == src->symlink_target));
    bool allowed = dst->kind != file_kind::directory &&
                   (c.target_base_version == dst->version || same_run(*dst, c) || same);
    if (!allowed) {
      conflict = true;
      to = unique_conflict_name(c.target, c.origin, c.timestamp_ns);
    }
  }
  if (check_parents(to, &why))
    return rejected(std::move(r), errc::conflict, "cannot create \"" + to + "\": " + why);
  if (auto ec = ensure_parents(index, c, to, r)) return failed(std::move(r), ec, "mkdir parents");

  std::vector<std::string> moved = manifest_.paths_below(c.path);
  moved.insert(moved.begin(), c.path);
  if (r.own && dst == nullptr) {
    auto st_src = tree_.lstat(c.path);
    auto st_dst = tree_.lstat(to);
    if (st_src && st_dst && st_src->kind == src->kind && st_dst->kind == src->kind)
      if (auto ec = merge_own_rename(c, moved, r))
        return failed(std::move(r), ec, "merging the renamed entry");
  }
  // Which moved entries are untouched on disk (their local identity may follow them); a moved
  // local edit keeps no identity, so the next check hashes it and proposes it.
  std::set<std::string> untouched;
  for (const auto& from : moved) {
    const manifest_entry* e = manifest_.find(from);
    auto st = tree_.lstat(from);
    if (st) {
      if (e->kind == file_kind::directory || same_local_identity(*e, *st)) untouched.insert(from);
      continue;
    }
    // Already moved on disk (this node's own rename, or a replay): the rename changed the ctime,
    // so inode, size and mtime identify the untouched entry.
    auto moved_st = tree_.lstat(to + from.substr(c.path.size()));
    if (moved_st && moved_st->kind == e->kind &&
        (e->kind == file_kind::directory ||
         (moved_st->inode == e->local_inode && e->local_inode != 0 &&
          moved_st->size_bytes == e->size_bytes && moved_st->mtime_ns == e->local_mtime_ns)))
      untouched.insert(from);
  }
  auto st_from = tree_.lstat(c.path);
  if (!st_from && !is_missing(st_from.error()))
    return failed(std::move(r), st_from.error(), "lstat");
  const bool moved_on_disk = st_from.has_value();
  if (st_from) {
    // Anything at the destination that is not the committed destination entry is a local edit.
    const digest* wanted = src->kind == file_kind::regular ? &src->sha256 : nullptr;
    bool already = false;
    bool keep = false;
    if (auto ec = clear_way(to, wanted, false, r, &already, &keep))
      return failed(std::move(r), ec, "checking the destination");
    auto st_to = tree_.lstat(to);
    if (st_to && st_to->kind == file_kind::directory) {
      auto ec = tree_.rmdir(to);  // an empty committed directory is replaced
      if (ec) return failed(std::move(r), ec, "rmdir destination");
    }
    if (auto ec = tree_.rename(c.path, to)) return failed(std::move(r), ec, "rename");
    note_unlinked(c.path);
    if (auto ec = sync_directory(parent_path(c.path))) return failed(std::move(r), ec, "fsync dir");
    if (parent_path(to) != parent_path(c.path))
      if (auto ec = sync_directory(parent_path(to))) return failed(std::move(r), ec, "fsync dir");
  }
  // (A missing source is either a replay of this rename or a local delete that the scanner
  // will propose as a delete of the destination.)

  // Move the entry and its subtree in the manifest; every moved entry changed at this index.
  if (dst != nullptr && !conflict) {
    for (const auto& p : manifest_.paths_below(c.target))
      erase_entry(p);
    erase_entry(c.target);
  }
  std::vector<std::pair<std::string, move_record>> records;
  records.reserve(moved.size());
  for (const auto& from : moved) {
    manifest_entry e = *manifest_.find(from);
    std::string dest = to + from.substr(c.path.size());
    if (missing_.erase(from) != 0) missing_.insert(dest);
    records.emplace_back(
        from, move_record{e.version, e.origin, e.sequence, dest, index, c.origin, c.sequence});
    const bool seen = e.version <= std::max(c.base_version, c.seen_index) ||
                      (e.origin == c.origin && e.sequence < c.sequence);
    e.version = index;
    // The rename's origin takes over only entries its proposer had seen: any version up to the
    // index it had applied (seen_index; for a format-1 command only what base_version proves) or
    // its own earlier change. An entry changed
    // concurrently by another node keeps its author, so that a later command of the renaming
    // origin proposed before it saw that change (an edit of the new name, say) is a conflict
    // with it, not a silent overwrite — the same-origin rule below must not let it win.
    if (seen) {
      e.origin = c.origin;
      e.sequence = c.sequence;
    }
    erase_entry(from);
    auto st = tree_.lstat(dest);
    if (st && untouched.count(from) != 0) {
      remember_local_identity(e, *st);
      r.written.push_back({dest, *st, e.sha256});
    } else {
      remember_local_identity(e, file_stat{});
      // A local edit of the source (not proposed yet, or in flight) moved along with it: it must be
      // proposed at its new path (its in-flight proposal, if any, follows the move as well).
      if (st && moved_on_disk && !r.own && e.kind != file_kind::directory)
        r.preserved.push_back({from, dest});
    }
    put_entry(dest, std::move(e));
  }
  // Forwarding addresses for commands proposed against the old paths (no I/O can fail below).
  for (auto& [from, record] : records)
    record_move(from, std::move(record));
  r.from_path = c.path;
  r.path = to;
  r.removed.push_back(c.path);
  if (conflict)
    return make_status(std::move(r), apply_status::conflict, make_error_code(errc::conflict),
                       "\"" + c.target + "\" changed since version " +
                           std::to_string(c.target_base_version) + "; renamed to \"" + to + "\"");
  return r;
}

std::error_code state_machine::merge_own_rename(const command& c,
                                                const std::vector<std::string>& moved,
                                                apply_result& r) {
  for (const auto& from : moved) {
    const manifest_entry* e = manifest_.find(from);
    std::string dest = c.target + from.substr(c.path.size());
    auto st_src = tree_.lstat(from);
    if (!st_src) {
      if (is_missing(st_src.error()) || st_src.error() == make_error_code(errc::invalid_path))
        continue;  // the user's renamed copy at `dest` is the one
      return st_src.error();
    }
    if (e->kind == file_kind::directory) {
      if (st_src->kind != file_kind::directory) continue;
      auto st_dest = tree_.lstat(dest);
      if (!st_dest) {
        if (!is_missing(st_dest.error())) return st_dest.error();
        if (auto ec = tree_.mkdir(dest, e->mode)) return ec;
        if (auto ec = sync_directory(parent_path(dest))) return ec;
      }
      continue;
    }
    // Only what an apply wrote moves; anything else at the source is a local entry for the scanner.
    if (!same_local_identity(*e, *st_src)) continue;
    auto st_dest = tree_.lstat(dest);
    if (!st_dest && !is_missing(st_dest.error())) return st_dest.error();
    // A directory (or anything under a non-directory) where the user's tree has the entry: leave
    // both; the rename below and the scanner sort them out without losing either.
    if (st_dest && st_dest->kind == file_kind::directory) continue;
    if (!parent_path(dest).empty()) {
      auto parent = tree_.lstat(parent_path(dest));
      if (!parent || parent->kind != file_kind::directory) continue;
    }
    if (st_dest && !is_replaced_version(from, *st_dest)) {
      // Edited after the rename: a local edit, preserved before the applied version replaces it.
      bool already = false;
      bool keep = false;
      if (auto ec = clear_way(dest, nullptr, false, r, &already, &keep)) return ec;
    }
    if (auto ec = tree_.rename(from, dest)) return ec;
    if (auto ec = sync_directory(parent_path(from))) return ec;
    if (auto ec = sync_directory(parent_path(dest))) return ec;
  }
  // The source directories the applies recreated, deepest first, when empty (untracked local
  // entries keep theirs; the scanner proposes them).
  for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
    if (manifest_.find(*it)->kind != file_kind::directory) continue;
    auto ec = tree_.rmdir(*it);
    if (!ec) {
      if (auto e2 = sync_directory(parent_path(*it))) return e2;
    } else if (!is_missing(ec) && ec != std::errc::directory_not_empty &&
               ec != std::errc::not_a_directory && ec != std::errc::file_exists) {
      return ec;
    }
  }
  return {};
}

std::error_code state_machine::settle_orphaned_rename(const command& c, apply_result& r) {
  // This node's user already renamed `path` to `target` on disk. A committed destination is read
  // as a local change of it, like any edit; an empty one needs nothing.
  if (manifest_.find(c.target) != nullptr) return {};
  auto st = tree_.lstat(c.target);
  if (!st) {
    if (is_missing(st.error()) || st.error() == make_error_code(errc::invalid_path)) return {};
    return st.error();
  }
  // Another node's delete of the version this node renamed wins. This node's own remove does not:
  // it is how its scanner read the rename in progress (the old name gone, the rename event not
  // handled yet), so the renamed file is kept (chaos bug 20).
  auto gone = replaced_recently_.find(c.path);
  if (gone != replaced_recently_.end() && gone->second.removed && !gone->second.removed_by_self &&
      is_replaced_version(c.path, *st)) {
    const manifest_entry& e = gone->second.entry;
    bool same = e.version == c.base_version || (e.origin == c.origin && e.sequence < c.sequence);
    if (same && st->kind == file_kind::regular) {
      auto h = hash_file(tree_, c.target, config_.chunk_bytes);
      if (!h) return is_missing(h.error()) ? std::error_code{} : h.error();
      same = h->sha256 == e.sha256;
    } else if (same && st->kind == file_kind::symlink) {
      auto link = tree_.readlink(c.target);
      if (!link) return is_missing(link.error()) ? std::error_code{} : link.error();
      same = *link == e.symlink_target;
    }
    if (same) {
      // Another node deleted exactly what this node renamed: the delete wins, as it does when
      // the rename commits first (the delete follows the move).
      if (auto ec = tree_.unlink(c.target); ec && !is_missing(ec)) return ec;
      note_unlinked(c.target);
      if (auto ec = sync_directory(parent_path(c.target))) return ec;
      r.removed.push_back(c.target);
      return {};
    }
  }
  // Changed since the rename, a directory, a source another rename moved first, or not
  // recognisable: the renamed entry may hold what nobody else has. It is proposed as a new entry.
  r.preserved.push_back({c.path, c.target});
  return {};
}

apply_result state_machine::do_mkdir(std::uint64_t index, const command& c, apply_result r) {
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur != nullptr && cur->kind != file_kind::directory)
    return rejected(std::move(r), errc::conflict,
                    std::string("mkdir where the committed tree has a ") + to_string(cur->kind));
  std::string why;
  if (check_parents(c.path, &why))
    return rejected(std::move(r), errc::conflict, "cannot create \"" + c.path + "\": " + why);
  if (auto ec = ensure_parents(index, c, c.path, r))
    return failed(std::move(r), ec, "mkdir parents");
  std::uint32_t mode = c.mode & 07777;
  auto st = tree_.lstat(c.path);
  if (!st && !is_missing(st.error())) return failed(std::move(r), st.error(), "lstat");
  if (st && st->kind != file_kind::directory) {
    bool already = false;
    bool keep = false;
    if (auto ec = clear_way(c.path, nullptr, false, r, &already, &keep))
      return failed(std::move(r), ec, "preserving a local entry");
    st = tree_.lstat(c.path);
  }
  if (!st) {
    if (auto ec = tree_.mkdir(c.path, mode)) return failed(std::move(r), ec, "mkdir");
    if (auto ec = sync_directory(parent_path(c.path))) return failed(std::move(r), ec, "fsync dir");
  } else if (st->mode != mode) {
    if (auto ec = tree_.chmod(c.path, mode)) return failed(std::move(r), ec, "chmod");
  }
  manifest_entry e;
  if (cur != nullptr)
    e = *cur;  // an existing directory keeps its version: only the mode changes
  else {
    e.kind = file_kind::directory;
    e.version = index;
    e.origin = c.origin;
    e.sequence = c.sequence;
  }
  e.mode = mode;
  if (auto ec = record_written(c.path, e, r)) return failed(std::move(r), ec, "lstat");
  put_entry(c.path, std::move(e));
  return r;
}

apply_result state_machine::do_rmdir(std::uint64_t, const command& c, apply_result r) {
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur == nullptr) return ignored(std::move(r), "not in the manifest");
  if (cur->kind != file_kind::directory)
    return rejected(std::move(r), errc::conflict, "rmdir of a non-directory");
  if (manifest_.has_children(c.path))
    return ignored(std::move(r), "directory still has committed entries");
  auto ec = tree_.rmdir(c.path);
  // Not empty on disk: untracked local entries inside, which the watcher will propose (and which
  // will bring the directory back); not a directory: a local replacement. Both stay.
  if (ec && !is_missing(ec) && ec != std::errc::directory_not_empty &&
      ec != std::errc::not_a_directory && ec != std::errc::file_exists)
    return failed(std::move(r), ec, "rmdir");
  if (!ec)
    if (auto e2 = sync_directory(parent_path(c.path))) return failed(std::move(r), e2, "fsync dir");
  erase_entry(c.path);
  r.removed.push_back(c.path);
  return r;
}

// Metadata changes (mode, mtime) are last-writer-wins in log order and do not change an entry's
// version: a concurrent content change based on the same version is not a conflict with them.
apply_result state_machine::do_set_mode(std::uint64_t, const command& c, apply_result r) {
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur == nullptr) return ignored(std::move(r), "not in the manifest");
  if (cur->kind == file_kind::symlink) return ignored(std::move(r), "symlinks have no mode");
  manifest_entry e = *cur;
  e.mode = c.mode & 07777;
  auto matches = working_matches(c.path, cur, nullptr);
  if (!matches) return failed(std::move(r), matches.error(), "checking the working file");
  if (*matches) {
    if (auto ec = tree_.chmod(c.path, e.mode)) return failed(std::move(r), ec, "chmod");
    if (auto ec = record_written(c.path, e, r)) return failed(std::move(r), ec, "lstat");
  }
  put_entry(c.path, std::move(e));
  return r;
}

apply_result state_machine::do_set_mtime(std::uint64_t, const command& c, apply_result r) {
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur == nullptr) return ignored(std::move(r), "not in the manifest");
  if (cur->kind != file_kind::regular) return ignored(std::move(r), "mtime is kept for files only");
  manifest_entry e = *cur;
  e.mtime_ns = c.mtime_ns;
  auto matches = working_matches(c.path, cur, nullptr);
  if (!matches) return failed(std::move(r), matches.error(), "checking the working file");
  if (*matches) {
    if (auto ec = tree_.set_mtime(c.path, e.mtime_ns)) return failed(std::move(r), ec, "utimens");
    if (auto ec = record_written(c.path, e, r)) return failed(std::move(r), ec, "lstat");
  }
  put_entry(c.path, std::move(e));
  return r;
}

apply_result state_machine::do_symlink(std::uint64_t index, const command& c, apply_result r) {
  if (c.target.empty() || c.target.find('\0') != std::string::npos ||
      c.target.size() > config_.rules.path_bytes_max)
    return rejected(std::move(r), errc::invalid_path, "symlink target empty, too long or with NUL");
  const manifest_entry* cur = manifest_.find(c.path);
  if (cur != nullptr && cur->origin == c.origin && cur->sequence > c.sequence)
    return make_status(std::move(r), apply_status::superseded, {},
                       "a later command of the same origin changed the path");
  bool same = cur != nullptr && cur->kind == file_kind::symlink && cur->symlink_target == c.target;
  bool conflict = is_conflict(c, cur, same);
  std::string target = conflict ? unique_conflict_name(c.path, c.origin, c.timestamp_ns) : c.path;
  std::string why;
  if (check_parents(target, &why))
    return rejected(std::move(r), errc::conflict, "cannot create \"" + target + "\": " + why);
  if (auto ec = ensure_parents(index, c, target, r))
    return failed(std::move(r), ec, "mkdir parents");
  manifest_entry e;
  e.kind = file_kind::symlink;
  e.version = index;
  e.origin = c.origin;
  e.sequence = c.sequence;
  e.size_bytes = c.target.size();
  e.symlink_target = c.target;
  // This node's own link, deleted or renamed by its user since it was read (`ln -s` to a
  // temporary name, then `mv -T` over the link): as for a write, not recreated (bug 21).
  auto gone = r.own && !conflict ? removed_since_read(target) : result<bool>(false);
  if (!gone) return failed(std::move(r), gone.error(), "lstat");
  if (*gone) return record_removed_since_read(target, cur, std::move(e), std::move(r));
  auto st = tree_.lstat(target);
  if (!st && !is_missing(st.error())) return failed(std::move(r), st.error(), "lstat");
  bool in_place = false;
  if (st && st->kind == file_kind::symlink) {
    auto existing = tree_.readlink(target);
    if (!existing) return failed(std::move(r), existing.error(), "readlink");
    in_place = *existing == c.target;
  }
  bool keep_local = false;
  if (st && !in_place) {
    bool already = false;
    if (auto ec = clear_way(target, nullptr, r.own, r, &already, &keep_local))
      return failed(std::move(r), ec, "checking the working entry");
    if (!keep_local) {
      auto again = tree_.lstat(target);
      if (again) {
        if (again->kind == file_kind::directory) {
          if (auto ec = tree_.rmdir(target)) return failed(std::move(r), ec, "rmdir");
        } else if (auto ec = tree_.unlink(target)) {
          return failed(std::move(r), ec, "unlink");
        }
      }
    }
  }
  if (keep_local) {
    e.local_inode = 0;
  } else {
    if (!in_place) {
      if (auto ec = tree_.symlink(c.target, target)) return failed(std::move(r), ec, "symlink");
      if (auto ec = sync_directory(parent_path(target)))
        return failed(std::move(r), ec, "fsync dir");
    }
    if (auto ec = record_written(target, e, r)) return failed(std::move(r), ec, "lstat");
  }
  if (cur != nullptr && !conflict) note_replaced(target, *cur, false);
  put_entry(target, std::move(e));
  r.path = target;
  if (conflict)
    return make_status(std::move(r), apply_status::conflict, make_error_code(errc::conflict),
                       "\"" + c.path + "\" changed since version " +
                           std::to_string(c.base_version) + "; kept as \"" + target + "\"");
  return r;
}

}  // namespace raftsync::folder
