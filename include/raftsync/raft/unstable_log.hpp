// raftsync — the tail of the log (and a received snapshot) that is not yet persisted.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "raftsync/assert.hpp"
#include "raftsync/raft/types.hpp"

namespace raftsync::raft {

// Entries and a snapshot the core has accepted but the application has not yet confirmed
// persisted (through advance()). Entries handed out in a ready are "in progress": they are not
// handed out again, and become stable when advance() confirms them.
class unstable_log {
 public:
  // Invariant: entries_[i].index == offset_ + i;
  //            offset_ <= offset_in_progress_ <= offset_ + entries_.size();
  //            snapshot_ (if any) has index == offset_ - 1.
  std::uint64_t offset() const noexcept { return offset_; }
  const std::vector<entry>& entries() const noexcept { return entries_; }
  const std::optional<snapshot_metadata>& snapshot() const noexcept { return snapshot_; }

  void reset_offset(std::uint64_t offset) noexcept {
    offset_ = offset;
    offset_in_progress_ = offset;
  }

  std::optional<std::uint64_t> maybe_first_index() const noexcept {
    if (snapshot_) return snapshot_->index + 1;
    return std::nullopt;
  }
  std::optional<std::uint64_t> maybe_last_index() const noexcept {
    if (!entries_.empty()) return offset_ + entries_.size() - 1;
    if (snapshot_) return snapshot_->index;
    return std::nullopt;
  }
  std::optional<std::uint64_t> maybe_term(std::uint64_t index) const noexcept {
    if (index < offset_) {
      if (snapshot_ && snapshot_->index == index) return snapshot_->term;
      return std::nullopt;
    }
    const auto last = maybe_last_index();
    if (!last || index > *last) return std::nullopt;
    return entries_[static_cast<std::size_t>(index - offset_)].term;
  }

  // Entries not yet handed out in a ready.
  bool has_next_entries() const noexcept { return offset_in_progress_ < offset_ + entries_.size(); }
  std::vector<entry> next_entries() const {
    const auto from = static_cast<std::ptrdiff_t>(offset_in_progress_ - offset_);
    return std::vector<entry>(entries_.begin() + from, entries_.end());
  }
  bool has_next_snapshot() const noexcept { return snapshot_ && !snapshot_in_progress_; }

  // Everything currently here has been handed out in a ready.
  void accept_in_progress() noexcept {
    offset_in_progress_ = offset_ + entries_.size();
    if (snapshot_) snapshot_in_progress_ = true;
  }

  // The application persisted entries up to (index, term). Ignored if that entry has since been
  // replaced (its term differs): the replacement will be persisted by a later ready.
  void stable_to(std::uint64_t index, std::uint64_t term) {
    const auto t = maybe_term(index);
    if (!t || *t != term || index < offset_) return;
    const auto count = static_cast<std::ptrdiff_t>(index + 1 - offset_);
    entries_.erase(entries_.begin(), entries_.begin() + count);
    offset_ = index + 1;
    offset_in_progress_ = std::max(offset_in_progress_, offset_);
  }
  void stable_snapshot_to(std::uint64_t index) noexcept {
    if (snapshot_ && snapshot_->index == index) {
      snapshot_.reset();
      snapshot_in_progress_ = false;
    }
  }

  void restore(const snapshot_metadata& s) {
    offset_ = s.index + 1;
    offset_in_progress_ = offset_;
    entries_.clear();
    snapshot_ = s;
    snapshot_in_progress_ = false;
  }

  // Appends `ents` (consecutive, non-empty), truncating any conflicting suffix first.
  void truncate_and_append(std::vector<entry> ents) {
    RAFTSYNC_ASSERT(!ents.empty());
    const std::uint64_t from = ents.front().index;
    if (from == offset_ + entries_.size()) {
      if (entries_.empty()) {
        entries_ = std::move(ents);
      } else {
        entries_.insert(entries_.end(), std::make_move_iterator(ents.begin()),
                        std::make_move_iterator(ents.end()));
      }
    } else if (from <= offset_) {
      // Replaces everything unstable: the stable log beyond `from` is truncated by storage.
      offset_ = from;
      offset_in_progress_ = offset_;
      entries_ = std::move(ents);
    } else {
      entries_.resize(static_cast<std::size_t>(from - offset_));
      entries_.insert(entries_.end(), std::make_move_iterator(ents.begin()),
                      std::make_move_iterator(ents.end()));
      offset_in_progress_ = std::min(offset_in_progress_, from);
    }
  }

  // Copies entries [low, high) with low >= offset_, at most max_bytes (at least one entry).
  void append_slice(std::uint64_t low, std::uint64_t high, std::uint64_t& budget_bytes,
                    std::vector<entry>& out) const {
    RAFTSYNC_ASSERT(low >= offset_ && high <= offset_ + entries_.size() + 0 && low <= high,
                    "unstable slice out of bounds");
    for (std::uint64_t i = low; i < high; ++i) {
      const entry& e = entries_[static_cast<std::size_t>(i - offset_)];
      const std::uint64_t size = entry_size_bytes(e);
      if (!out.empty() && size > budget_bytes) {
        budget_bytes = 0;
        return;
      }
      budget_bytes = size > budget_bytes ? 0 : budget_bytes - size;
      out.push_back(e);
      if (budget_bytes == 0) return;
    }
  }

  void check_invariants() const {
    RAFTSYNC_ASSERT(
        offset_ <= offset_in_progress_ && offset_in_progress_ <= offset_ + entries_.size(),
        "unstable: offset <= offset_in_progress <= offset + len");
    for (std::size_t i = 0; i < entries_.size(); ++i)
      RAFTSYNC_ASSERT(entries_[i].index == offset_ + i, "unstable entries are consecutive");
    RAFTSYNC_ASSERT(!snapshot_ || snapshot_->index + 1 == offset_);
  }

 private:
  std::optional<snapshot_metadata> snapshot_;
  bool snapshot_in_progress_ = false;
  std::vector<entry> entries_;
  std::uint64_t offset_ = 1;
  std::uint64_t offset_in_progress_ = 1;
};

}  // namespace raftsync::raft
