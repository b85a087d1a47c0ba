// raftsync — the core's view of the whole log: stable storage plus the unstable tail.
#pragma once

#include <algorithm>
#include <cstdint>
#include <system_error>
#include <utility>
#include <vector>

#include "raftsync/assert.hpp"
#include "raftsync/error.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/raft/unstable_log.hpp"
#include "raftsync/result.hpp"

namespace raftsync::raft {

class raft_log {
 public:
  // `s` outlives this object (it is the application's storage).
  explicit raft_log(const log_reader& s) : storage_(&s) {
    const std::uint64_t first = s.first_index();
    const std::uint64_t last = s.last_index();
    unstable_.reset_offset(last + 1);
    committed_ = first - 1;
    applying_ = first - 1;
    applied_ = first - 1;
  }

  // Invariant: applied <= applying <= committed <= last_index();  first_index() - 1 <= applied
  // (entries below first_index are in a snapshot the application has already installed).
  std::uint64_t committed() const noexcept { return committed_; }
  std::uint64_t applied() const noexcept { return applied_; }
  std::uint64_t applying() const noexcept { return applying_; }
  unstable_log& unstable() noexcept { return unstable_; }
  const unstable_log& unstable() const noexcept { return unstable_; }

  // The first unexpected storage error (not compacted/unavailable); the node halts on it.
  std::error_code storage_error() const noexcept { return storage_error_; }

  std::uint64_t first_index() const {
    if (auto i = unstable_.maybe_first_index()) return *i;
    return storage_->first_index();
  }
  std::uint64_t last_index() const {
    if (auto i = unstable_.maybe_last_index()) return *i;
    return storage_->last_index();
  }

  // Term of entry `index`: valid for [first_index() - 1, last_index()].
  result<std::uint64_t> term(std::uint64_t index) const {
    const std::uint64_t dummy = first_index() - 1;
    if (index < dummy) return errc::compacted;
    if (index > last_index()) return errc::unavailable;
    if (auto t = unstable_.maybe_term(index)) return *t;
    auto t = storage_->term(index);
    if (!t) note_storage_error(t.error());
    return t;
  }
  std::uint64_t last_term() const {
    auto t = term(last_index());
    return t ? *t : 0;
  }
  bool match_term(std::uint64_t index, std::uint64_t t) const {
    auto got = term(index);
    return got && *got == t;
  }

  // Raft §5.4.1: a candidate's log is at least as up to date as ours.
  bool is_up_to_date(std::uint64_t last, std::uint64_t t) const {
    const std::uint64_t our_term = last_term();
    return t > our_term || (t == our_term && last >= last_index());
  }

  // Entries [low, high), at most max_bytes (at least one when low < high).
  result<std::vector<entry>> slice(std::uint64_t low, std::uint64_t high,
                                   std::uint64_t max_bytes) const {
    if (low < first_index()) return errc::compacted;
    if (high > last_index() + 1) return errc::unavailable;
    std::vector<entry> out;
    if (low >= high) return out;
    const std::uint64_t unstable_offset = unstable_.offset();
    std::uint64_t budget = max_bytes;
    if (low < unstable_offset) {
      const std::uint64_t stable_high = std::min(high, unstable_offset);
      auto stored = storage_->entries(low, stable_high, max_bytes);
      if (!stored) {
        note_storage_error(stored.error());
        return stored.error();
      }
      out = std::move(*stored);
      if (out.size() < stable_high - low) return out;  // byte limit reached
      std::uint64_t used = 0;
      for (const auto& e : out)
        used += entry_size_bytes(e);
      if (used >= max_bytes) return out;
      budget = max_bytes - used;
    }
    if (high > unstable_offset) {
      unstable_.append_slice(std::max(low, unstable_offset), high, budget, out);
    }
    return out;
  }
  result<std::vector<entry>> entries_from(std::uint64_t low, std::uint64_t max_bytes) const {
    if (low > last_index()) return std::vector<entry>{};
    return slice(low, last_index() + 1, max_bytes);
  }

  // Index of the first entry of `ents` that conflicts with the log (0 if none; an index past
  // last_index() counts as the first new entry).
  std::uint64_t find_conflict(const std::vector<entry>& ents) const {
    for (const auto& e : ents) {
      if (!match_term(e.index, e.term)) return e.index;
    }
    return 0;
  }

  // Fast backtracking (as etcd's findConflictByTerm): the largest index <= `index` whose term is
  // <= `t`, with that term (0 if unknown because compacted).
  std::pair<std::uint64_t, std::uint64_t> find_conflict_by_term(std::uint64_t index,
                                                                std::uint64_t t) const {
    for (;;) {
      auto got = term(index);
      if (!got) return {index, 0};
      if (*got <= t) return {index, *got};
      if (index == 0) return {0, 0};
      --index;
    }
  }

  // Raft §5.3 AppendEntries receiver: returns the last new index, or nothing if the log does not
  // contain an entry at `index` with term `log_term`.
  std::optional<std::uint64_t> maybe_append(std::uint64_t index, std::uint64_t log_term,
                                            std::uint64_t leader_commit, std::vector<entry> ents) {
    if (!match_term(index, log_term)) return std::nullopt;
    const std::uint64_t last_new = index + ents.size();
    const std::uint64_t conflict = find_conflict(ents);
    if (conflict != 0) {
      RAFTSYNC_ASSERT(conflict > committed_, "a leader tried to overwrite a committed entry");
      const auto from = static_cast<std::ptrdiff_t>(conflict - (index + 1));
      if (from > 0) ents.erase(ents.begin(), ents.begin() + from);
      append(std::move(ents));
    }
    commit_to(std::min(leader_commit, last_new));
    return last_new;
  }

  std::uint64_t append(std::vector<entry> ents) {
    if (ents.empty()) return last_index();
    RAFTSYNC_ASSERT(ents.front().index - 1 >= committed_, "append below the commit index");
    unstable_.truncate_and_append(std::move(ents));
    return last_index();
  }

  void commit_to(std::uint64_t index) {
    if (index > committed_) {
      RAFTSYNC_ASSERT(index <= last_index(), "commit beyond the last log index");
      committed_ = index;
    }
  }

  // Raft §5.4.2: only an entry of the current term is committed by counting replicas.
  bool maybe_commit(std::uint64_t index, std::uint64_t current_term) {
    if (index > committed_ && match_term(index, current_term)) {
      commit_to(index);
      return true;
    }
    return false;
  }

  void restore(const snapshot_metadata& s) {
    committed_ = s.index;
    unstable_.restore(s);
  }

  // Committed entries not yet handed to the application. None while a received snapshot has
  // not been applied (the entries after it build on the snapshot's state).
  bool has_next_committed_entries() const {
    if (unstable_.snapshot()) return false;
    return std::max(applying_ + 1, first_index()) <= committed_;
  }
  result<std::vector<entry>> next_committed_entries(std::uint64_t max_bytes) const {
    if (!has_next_committed_entries()) return std::vector<entry>{};
    return slice(std::max(applying_ + 1, first_index()), committed_ + 1, max_bytes);
  }

  void accept_applying(std::uint64_t index) {
    RAFTSYNC_ASSERT(index <= committed_);
    applying_ = std::max(applying_, index);
  }
  void applied_to(std::uint64_t index) {
    if (index == 0 || index <= applied_) return;
    RAFTSYNC_ASSERT(index <= committed_, "applied beyond committed");
    applied_ = index;
    applying_ = std::max(applying_, index);
  }
  // On a restart: the application already applied up to `index`.
  void set_applied(std::uint64_t index) {
    applied_ = std::max(applied_, index);
    applying_ = std::max(applying_, applied_);
  }
  void set_committed_on_restart(std::uint64_t index) { committed_ = std::max(committed_, index); }

  void check_invariants() const {
    RAFTSYNC_ASSERT(applied_ <= applying_ && applying_ <= committed_,
                    "applied <= applying <= committed");
    RAFTSYNC_ASSERT(committed_ <= last_index(), "committed <= last_index");
    RAFTSYNC_ASSERT(first_index() - 1 <= committed_, "the snapshot is committed");
    unstable_.check_invariants();
  }

 private:
  void note_storage_error(std::error_code ec) const {
    if (ec == errc::compacted || ec == errc::unavailable) return;
    if (!storage_error_) storage_error_ = ec;
  }

  const log_reader* storage_;
  unstable_log unstable_;
  std::uint64_t committed_ = 0;  // highest index known committed (Raft commitIndex)
  std::uint64_t applying_ = 0;   // highest index handed to the application in a ready
  std::uint64_t applied_ = 0;    // highest index the application confirmed applied (lastApplied)
  mutable std::error_code storage_error_;
};

}  // namespace raftsync::raft
