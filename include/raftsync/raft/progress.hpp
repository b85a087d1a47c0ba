// raftsync — the leader's view of each follower: replication progress and flow control.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "raftsync/assert.hpp"

namespace raftsync::raft {

// How the leader replicates to one follower (as in etcd-io/raft's tracker):
//   probe     — one append in flight at a time, until the follower's match is found;
//   replicate — optimistic pipelining: next advances as messages are sent, bounded by inflights;
//   snapshot  — a snapshot is being streamed; nothing else is sent until report_snapshot().
enum class progress_state : std::uint8_t { probe, replicate, snapshot };

// A ring of unacknowledged append messages (last index and entry bytes of each), capped by
// count and by bytes. The leader stops sending to a follower when it is full.
class inflights {
 public:
  inflights(std::uint32_t max_count, std::uint64_t max_bytes) noexcept
      : max_count_(max_count), max_bytes_(max_bytes) {}

  // Records a sent append whose last entry is `index` (indices increase).
  void add(std::uint64_t index, std::uint64_t size_bytes) {
    RAFTSYNC_ASSERT(!full_by_count(), "inflights::add on a full window");
    if (buffer_.empty()) buffer_.resize(max_count_);
    std::size_t slot = start_ + count_;
    if (slot >= buffer_.size()) slot -= buffer_.size();
    RAFTSYNC_ASSERT(count_ == 0 || buffer_[last_slot()].index < index,
                    "inflight indices must increase");
    buffer_[slot] = item{index, size_bytes};
    ++count_;
    bytes_ += size_bytes;
  }

  // Frees every message whose last index is <= `to` (it has been acknowledged).
  void free_le(std::uint64_t to) noexcept {
    while (count_ > 0 && buffer_[start_].index <= to) {
      bytes_ -= buffer_[start_].bytes;
      ++start_;
      if (start_ == buffer_.size()) start_ = 0;
      --count_;
    }
    if (count_ == 0) start_ = 0;
  }

  // Frees the oldest message (used when a heartbeat shows the follower is alive but the window
  // is still full: its appends were probably lost, and one more append will reveal the gap).
  void free_first_one() noexcept {
    if (count_ > 0) free_le(buffer_[start_].index);
  }

  bool full() const noexcept { return full_by_count() || bytes_ >= max_bytes_; }
  std::uint32_t count() const noexcept { return count_; }
  std::uint64_t size_bytes() const noexcept { return bytes_; }
  void reset() noexcept {
    start_ = 0;
    count_ = 0;
    bytes_ = 0;
  }

  // Invariant: count <= max_count; bytes is the sum of the items' bytes.
  void check_invariants() const {
    RAFTSYNC_ASSERT(count_ <= max_count_);
    std::uint64_t sum = 0;
    for (std::uint32_t i = 0; i < count_; ++i)
      sum += buffer_[(start_ + i) % buffer_.size()].bytes;
    RAFTSYNC_ASSERT(sum == bytes_, "inflight byte count drifted");
  }

 private:
  struct item {
    std::uint64_t index = 0;
    std::uint64_t bytes = 0;
  };
  bool full_by_count() const noexcept { return count_ >= max_count_; }
  std::size_t last_slot() const noexcept { return (start_ + count_ - 1) % buffer_.size(); }

  std::uint32_t max_count_;
  std::uint64_t max_bytes_;
  std::vector<item> buffer_;  // allocated on first use: max_count_ slots
  std::size_t start_ = 0;
  std::uint32_t count_ = 0;
  std::uint64_t bytes_ = 0;
};

// The leader's replication state for one peer (Raft §5.3 nextIndex/matchIndex plus flow control).
struct progress {
  progress(std::uint32_t inflight_msgs_max, std::uint64_t inflight_bytes_max)
      : in_flight(inflight_msgs_max, inflight_bytes_max) {}

  // Invariant: match < next; in snapshot state pending_snapshot > 0.
  std::uint64_t match = 0;  // highest index known replicated on the peer
  std::uint64_t next = 1;   // next index to send
  progress_state state = progress_state::probe;
  std::uint64_t pending_snapshot = 0;  // snapshot state: index of the snapshot being sent
  bool recent_active = false;          // heard from since the last check-quorum round
  bool probe_sent = false;             // probe state: an append is outstanding; pause until reply
  bool learner = false;                // non-voting member
  std::uint64_t read_ack_seq = 0;      // highest ReadIndex heartbeat round the peer acknowledged
  inflights in_flight;

  void reset_state(progress_state s) {
    probe_sent = false;
    pending_snapshot = 0;
    state = s;
    in_flight.reset();
  }
  void become_probe() {
    // After a snapshot, resume probing after it (the follower most likely installed it).
    if (state == progress_state::snapshot) {
      const std::uint64_t pending = pending_snapshot;
      reset_state(progress_state::probe);
      next = std::max(match + 1, pending + 1);
    } else {
      reset_state(progress_state::probe);
      next = match + 1;
    }
  }
  void become_replicate() {
    reset_state(progress_state::replicate);
    next = match + 1;
  }
  void become_snapshot(std::uint64_t snapshot_index) {
    reset_state(progress_state::snapshot);
    pending_snapshot = snapshot_index;
    next = snapshot_index + 1;
  }

  // The peer acknowledged everything up to n. Returns false if that is old news.
  bool maybe_update(std::uint64_t n) {
    bool updated = false;
    if (match < n) {
      match = n;
      updated = true;
      probe_sent = false;
    }
    next = std::max(next, n + 1);
    return updated;
  }

  // The peer rejected an append at `rejected`; `match_hint` is the highest index that may match
  // (fast backtracking, as etcd's findConflictByTerm). Returns false for a stale rejection.
  bool maybe_decrease_to(std::uint64_t rejected, std::uint64_t match_hint) {
    if (rejected >= match && match_hint < match) {
      // The follower rejects an append at or above its match and says its log ends before it:
      // it lost entries it had acknowledged (its disk was replaced or wiped). A reordered stale
      // rejection looks the same; either way probing again from the hint is safe (a follower that
      // does have the entries just answers with its real last index).
      reset_state(progress_state::probe);
      match = match_hint;
      next = match_hint + 1;
      return true;
    }
    if (state == progress_state::replicate) {
      if (rejected <= match) return false;
      next = match + 1;
      return true;
    }
    if (next == 0 || next - 1 != rejected) return false;
    next = std::max(std::min(rejected, match_hint + 1), match + 1);
    probe_sent = false;
    return true;
  }

  // An append carrying `count` entries (`size_bytes` in total) was sent.
  void sent_entries(std::uint64_t count, std::uint64_t size_bytes) {
    if (count == 0) return;
    if (state == progress_state::replicate) {
      next += count;
      in_flight.add(next - 1, size_bytes);
    } else if (state == progress_state::probe) {
      probe_sent = true;
    }
  }

  // Whether the leader must hold back appends to this peer.
  bool is_paused() const noexcept {
    switch (state) {
      case progress_state::probe:
        return probe_sent;
      case progress_state::replicate:
        return in_flight.full();
      case progress_state::snapshot:
        return true;
    }
    return true;
  }

  void check_invariants() const {
    RAFTSYNC_ASSERT(match < next, "progress: match < next");
    RAFTSYNC_ASSERT(state != progress_state::snapshot || pending_snapshot > 0);
    RAFTSYNC_ASSERT(state == progress_state::replicate || in_flight.count() == 0,
                    "only replicate state has messages in flight");
    in_flight.check_invariants();
  }
};

}  // namespace raftsync::raft
