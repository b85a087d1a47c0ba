#include "raftsync/storage/durable_storage.hpp"

#include <algorithm>
#include <cerrno>

namespace raftsync::storage {

durable_storage::durable_storage(file_io& io, std::filesystem::path dir,
                                 durable_storage_options options)
    : io_(io),
      dir_(std::move(dir)),
      log_dir_(dir_ / "log"),
      snap_dir_(dir_ / "snap"),
      log_(io, log_dir_, options.log) {}

durable_storage::~durable_storage() = default;

const std::string& durable_storage::error_message() const noexcept {
  return error_message_.empty() ? log_.error_message() : error_message_;
}

std::error_code durable_storage::open() {
  status_ = storage_status::closed;
  error_message_.clear();
  recovery_ = {};
  halted_error_ = {};
  state_dirty_ = false;

  // The directories, made durable in their parents.
  auto names = io_.list_dir(dir_);
  if (!names) {
    if (names.error() != std::errc::no_such_file_or_directory) return names.error();
    if (auto ec = io_.create_dir(dir_)) return ec;
    if (dir_.has_parent_path()) {
      if (auto ec = io_.sync_dir(dir_.parent_path())) return ec;
    }
    recovery_.created = true;
  }
  if (auto ec = io_.create_dir(log_dir_)) return ec;
  if (auto ec = io_.create_dir(snap_dir_)) return ec;
  if (auto ec = io_.sync_dir(dir_)) return ec;

  auto st = hard_state_file::read(io_, dir_, &error_message_);
  if (!st) return st.error();
  state_ = st->value_or(stored_state{});
  recovery_.state_seq = state_.seq;

  if (auto ec =
          log_.open(log_start{state_.compacted_index, state_.compacted_term, state_.reset_seq})) {
    return ec;
  }
  recovery_.log = log_.recovery();
  hard_ = state_.hard;
  if (log_.recovery().hard && log_.last_seq() > state_.seq) hard_ = *log_.recovery().hard;
  next_seq_ = std::max(state_.seq, log_.last_seq()) + 1;
  if (hard_.commit > log_.last_index()) {
    error_message_ = (dir_ / "state").string() + ": commit index " + std::to_string(hard_.commit) +
                     " is beyond the last log index " + std::to_string(log_.last_index());
    return make_error_code(errc::corrupt);
  }
  // Abandoned snapshot temp files (a crash during snapshot_writer) are garbage.
  if (auto ec = ::raftsync::storage::remove_snapshots_before(io_, snap_dir_, 0)) return ec;
  status_ = storage_status::ok;
  return {};
}

std::error_code durable_storage::halt(std::error_code ec) {
  status_ = storage_status::halted;
  halted_error_ = ec;
  return ec;
}

std::error_code durable_storage::check_writable() {
  if (status_ == storage_status::closed) return make_error_code(errc::stopped);
  if (status_ == storage_status::halted) return try_resume();
  return {};
}

std::error_code durable_storage::try_resume() {
  if (status_ == storage_status::closed) return make_error_code(errc::stopped);
  if (status_ != storage_status::halted) return {};
  if (state_dirty_) {
    // A failed state write may or may not have replaced the state file: write the current state
    // again so the file on disk matches what we serve.
    stored_state st = state_;
    st.hard = hard_;  // it gets the newest seq, so it must carry the newest hard state
    st.seq = next_seq_++;
    if (auto ec = hard_state_file::write(io_, dir_, st)) return halt(ec);
    state_ = st;
    state_dirty_ = false;
  }
  if (auto ec = log_.repair_tail()) return halt(ec);
  // Probe: a hard-state-only record proves the disk takes writes and syncs again.
  if (auto ec = log_.append(next_seq_++, hard_, {})) return halt(ec);
  status_ = storage_status::ok;
  halted_error_ = {};
  return {};
}

std::error_code durable_storage::write_state(stored_state next) {
  next.seq = next_seq_++;
  if (auto ec = hard_state_file::write(io_, dir_, next)) {
    state_dirty_ = true;
    return halt(ec);
  }
  state_ = std::move(next);
  return {};
}

std::error_code durable_storage::write_record(const raft::hard_state& hs,
                                              const std::vector<raft::entry>& entries) {
  if (auto ec = log_.append(next_seq_++, hs, entries)) {
    if (ec == errc::compacted || ec == errc::unavailable) return ec;  // caller error, not disk
    return halt(ec);
  }
  hard_ = hs;
  return {};
}

std::error_code durable_storage::bootstrap(const raft::conf_state& initial) {
  if (auto ec = check_writable()) return ec;
  if (log_.last_index() != 0 || !state_.snapshot.empty() || !hard_.empty() ||
      !state_.conf.voters.empty() || !state_.conf.learners.empty()) {
    return make_error_code(errc::already_exists);
  }
  stored_state next = state_;
  next.hard = hard_;
  next.conf = initial;
  return write_state(std::move(next));
}

std::error_code durable_storage::set_hard_state(const raft::hard_state& hs) {
  if (auto ec = check_writable()) return ec;
  if (hs == hard_) return {};
  return write_record(hs, {});
}

std::error_code durable_storage::append(const std::vector<raft::entry>& entries) {
  return save(std::nullopt, raft::snapshot_metadata{}, entries);
}

std::error_code durable_storage::apply_snapshot_with(const raft::snapshot_metadata& meta,
                                                     raft::hard_state hs) {
  if (meta.index == 0 || (meta.index <= state_.snapshot.index && !state_.snapshot.empty())) {
    return make_error_code(errc::snapshot_out_of_date);
  }
  if (hs.commit < meta.index) hs.commit = meta.index;
  stored_state next = state_;
  next.hard = hs;
  next.snapshot = meta;
  next.conf = meta.conf;
  next.compacted_index = meta.index;
  next.compacted_term = meta.term;
  next.reset_seq = next_seq_;  // == the seq write_state gives it: older records are void
  if (auto ec = write_state(std::move(next))) return ec;
  hard_ = hs;
  cleanup_error_ = log_.reset(meta.index, meta.term);
  return {};
}

std::error_code durable_storage::apply_snapshot(const raft::snapshot_metadata& meta) {
  if (auto ec = check_writable()) return ec;
  return apply_snapshot_with(meta, hard_);
}

std::error_code durable_storage::create_snapshot(std::uint64_t index,
                                                 const raft::conf_state& conf) {
  if (auto ec = check_writable()) return ec;
  if (index <= state_.snapshot.index) return make_error_code(errc::snapshot_out_of_date);
  if (index > log_.last_index()) return make_error_code(errc::unavailable);
  auto t = log_.term(index);
  if (!t) return t.error();
  stored_state next = state_;
  next.hard = hard_;
  next.snapshot = raft::snapshot_metadata{index, *t, conf};
  next.conf = conf;
  return write_state(std::move(next));
}

std::error_code durable_storage::compact(std::uint64_t index) {
  if (auto ec = check_writable()) return ec;
  if (index <= state_.compacted_index) return make_error_code(errc::compacted);
  if (index > state_.snapshot.index || index > log_.last_index()) {
    return make_error_code(errc::unavailable);
  }
  auto t = log_.term(index);
  if (!t) return t.error();
  stored_state next = state_;
  next.hard = hard_;
  next.compacted_index = index;
  next.compacted_term = *t;
  if (auto ec = write_state(std::move(next))) return ec;
  cleanup_error_ = log_.compact(index, *t);
  return {};
}

std::error_code durable_storage::save(const raft::ready& rd) {
  return save(rd.hard, rd.snapshot, rd.entries);
}

std::error_code durable_storage::save(const std::optional<raft::hard_state>& hard,
                                      const raft::snapshot_metadata& snapshot,
                                      const std::vector<raft::entry>& entries) {
  if (auto ec = check_writable()) return ec;
  raft::hard_state hs = hard ? *hard : hard_;
  // A retried ready (after a halt) may carry a snapshot its first attempt already installed.
  const bool snapshot_done = snapshot == state_.snapshot &&
                             state_.compacted_index == snapshot.index && state_.reset_seq != 0;
  if (!snapshot.empty() && !snapshot_done) {
    if (auto ec = apply_snapshot_with(snapshot, hs)) return ec;
    hs = hard_;
  }
  // Like memory_storage::append: entries at or below the compaction point are ignored.
  const std::uint64_t first = log_.first_index();
  std::size_t skip = 0;
  while (skip < entries.size() && entries[skip].index < first)
    ++skip;
  if (skip < entries.size() && entries[skip].index > log_.last_index() + 1) {
    return make_error_code(errc::unavailable);
  }
  if (skip == entries.size()) {
    if (hs == hard_) return {};
    return write_record(hs, {});
  }
  if (skip == 0) return write_record(hs, entries);
  const std::vector<raft::entry> kept(entries.begin() + static_cast<std::ptrdiff_t>(skip),
                                      entries.end());
  return write_record(hs, kept);
}

result<raft::initial_state> durable_storage::load_initial_state() const {
  if (status_ == storage_status::closed) return errc::stopped;
  return raft::initial_state{hard_, state_.conf};
}

result<std::vector<raft::entry>> durable_storage::entries(std::uint64_t low, std::uint64_t high,
                                                          std::uint64_t max_bytes) const {
  return log_.entries(low, high, max_bytes);
}

result<std::uint64_t> durable_storage::term(std::uint64_t index) const {
  return log_.term(index);
}
std::uint64_t durable_storage::first_index() const {
  return log_.first_index();
}
std::uint64_t durable_storage::last_index() const {
  return log_.last_index();
}
raft::snapshot_metadata durable_storage::snapshot() const {
  return state_.snapshot;
}

result<snapshot_writer> durable_storage::begin_snapshot(const raft::snapshot_metadata& meta) {
  return snapshot_writer::create(io_, snap_dir_, meta);
}

result<snapshot_reader> durable_storage::open_snapshot(const raft::snapshot_metadata& meta) {
  return snapshot_reader::open(io_, snap_dir_ / snapshot_file_name(meta), &error_message_);
}

std::error_code durable_storage::remove_snapshots_before(std::uint64_t index) {
  return ::raftsync::storage::remove_snapshots_before(io_, snap_dir_, index);
}

}  // namespace raftsync::storage
