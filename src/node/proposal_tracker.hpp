// raftsync node — proposal_tracker: this node's own folder commands from proposal to apply.
//
// Lifecycle of one proposal: add() when the command is proposed (forwarded to the leader if this
// node follows); due() hands it back for a re-proposal while it is not applied (lost with a
// leader, dropped without one); applied() or erase() ends it. Owned by the node's strand; no
// locking.
//
// Flow control: the tracker bounds what is in flight by count and by encoded bytes. has_room()
// tells the change pipeline whether it may read and propose more; what it may not propose yet
// stays a path in the backlog, so memory is bounded by these limits whatever the size of the
// folder or of the burst (issue 13: 108,000 queued proposals held 3.3 GB).
//
// Retries back off: a proposal not applied after retry_first is proposed again, then after twice
// that, and so on up to retry_max. A proposal that is merely slow (queued behind a burst at the
// leader) is otherwise appended again every interval, and with thousands pending the log grows by
// thousands of duplicate entries per second without any user change. A leader change re-proposes
// everything at once (retry_all) and restarts the backoff: proposals sent towards the old leader
// may be lost.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace raftsync::node {

struct proposal_limits {
  std::size_t count_max = 1024;         // proposals in flight
  std::uint64_t bytes_max = 16u << 20;  // encoded bytes in flight (file contents included)
  std::chrono::steady_clock::duration retry_first = std::chrono::seconds(1);
  std::chrono::steady_clock::duration retry_max = std::chrono::seconds(30);
};

class proposal_tracker {
 public:
  using clock_type = std::chrono::steady_clock;

  using limits = proposal_limits;

  struct proposal {
    std::uint64_t sequence = 0;
    std::string data;  // encoded folder::command
    std::string path;  // for dedupe, flush bookkeeping and logs
    clock_type::time_point proposed_at;
    clock_type::time_point retry_at;
    std::uint64_t attempts = 0;  // times proposed (1 after add)
  };

  explicit proposal_tracker(limits l = {}) : limits_(l) {}

  const limits& bounds() const noexcept { return limits_; }

  // An equal command for the same path is still pending: a second one would be a duplicate (one
  // change reported by several events). `fingerprint` is the command without sequence and clock.
  bool duplicate(std::string_view path, std::string_view fingerprint) const;

  // Records a proposal made at `now`. An empty fingerprint (upload pieces) is never deduplicated.
  // The caller proposes p.data.
  proposal& add(std::uint64_t sequence, std::string data, std::string path, std::string fingerprint,
                clock_type::time_point now);

  // The command of `sequence` was applied (or is abandoned): it is no longer tracked.
  void erase(std::uint64_t sequence);

  // Marks `p` as proposed again at `now` and schedules its next retry (backoff doubles, capped).
  void reproposed(proposal& p, clock_type::time_point now);

  // Proposals whose retry time has come, oldest first; the caller re-proposes each and calls
  // reproposed() on it.
  std::vector<proposal*> due(clock_type::time_point now);
  // Every proposal, oldest first, with the backoff restarted (a leader change).
  std::vector<proposal*> all();

  // Room for another proposal: fewer than count_max and bytes_max in flight. A proposal larger
  // than bytes_max alone still fits when nothing else is in flight (progress is guaranteed).
  bool has_room() const noexcept {
    return pending_.empty() || (pending_.size() < limits_.count_max && bytes_ < limits_.bytes_max);
  }

  bool empty() const noexcept { return pending_.empty(); }
  std::size_t size() const noexcept { return pending_.size(); }
  std::uint64_t bytes() const noexcept { return bytes_; }
  bool contains(std::uint64_t sequence) const { return pending_.count(sequence) != 0; }
  // Lowest pending sequence, UINT64_MAX when none.
  std::uint64_t oldest() const noexcept {
    return pending_.empty() ? UINT64_MAX : pending_.begin()->first;
  }

 private:
  clock_type::duration backoff(std::uint64_t attempts) const;

  limits limits_;
  std::map<std::uint64_t, proposal> pending_;  // sequence → proposal
  // path → (sequence, fingerprint) of its latest deduplicable pending command.
  std::map<std::string, std::pair<std::uint64_t, std::string>, std::less<>> by_path_;
  std::uint64_t bytes_ = 0;  // Invariant: the sum of pending_[*].data.size()
};

}  // namespace raftsync::node
