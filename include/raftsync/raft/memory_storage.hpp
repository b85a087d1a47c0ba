// raftsync — in-memory Raft storage for tests, simulations and examples.
//
// Implements the read interfaces the core uses (raft::storage) plus the writes the application
// performs from each ready (set_hard_state, append, apply_snapshot) and the compaction hooks
// (create_snapshot, compact). Not thread-safe: one driver thread at a time, like the core.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "raftsync/error.hpp"
#include "raftsync/raft/storage.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"

namespace raftsync::raft {

class memory_storage final : public storage {
 public:
  memory_storage() { entries_.push_back(entry{}); }

  // Brand-new cluster member: membership at index 0 (before any entry). Call once, on an empty
  // storage, on every initial member. Nodes added later start without bootstrap.
  void bootstrap(const conf_state& initial) { conf_ = initial; }

  void set_hard_state(const hard_state& hs) { hard_ = hs; }

  // Appends `entries` (consecutive indices). Entries at or below the compaction point are
  // ignored; a conflicting suffix of the stored log is truncated first. errc::unavailable if the
  // entries would leave a gap after last_index().
  std::error_code append(const std::vector<entry>& entries) {
    if (entries.empty()) return {};
    const std::uint64_t first = first_index();
    const std::uint64_t last = entries.back().index;
    if (last < first) return {};
    std::size_t skip = 0;
    if (entries.front().index < first)
      skip = static_cast<std::size_t>(first - entries.front().index);
    const std::uint64_t start_index = entries[skip].index;
    const std::uint64_t offset = start_index - entries_.front().index;
    if (offset > entries_.size()) return errc::unavailable;
    entries_.resize(static_cast<std::size_t>(offset));
    entries_.insert(entries_.end(), entries.begin() + static_cast<std::ptrdiff_t>(skip),
                    entries.end());
    return {};
  }

  // Replaces the whole log with a received snapshot's position (the application has installed
  // the snapshot data first). errc::snapshot_out_of_date if not newer than the current one.
  std::error_code apply_snapshot(const snapshot_metadata& meta) {
    if (meta.index <= snapshot_.index && !snapshot_.empty()) return errc::snapshot_out_of_date;
    if (meta.index == 0) return errc::snapshot_out_of_date;
    snapshot_ = meta;
    conf_ = meta.conf;
    entries_.clear();
    entries_.push_back(entry{meta.term, meta.index, entry_type::normal, {}});
    if (hard_.commit < meta.index) hard_.commit = meta.index;
    return {};
  }

  // Records a local snapshot at `index` (the application has saved its state as of `index`,
  // which it has applied) with the membership `conf` in force at `index`. The log is kept;
  // compact() drops it. errc::snapshot_out_of_date if not newer, errc::unavailable if beyond
  // last_index(), errc::compacted if the entry at index is already compacted.
  std::error_code create_snapshot(std::uint64_t index, const conf_state& conf) {
    if (index <= snapshot_.index) return errc::snapshot_out_of_date;
    if (index > last_index()) return errc::unavailable;
    if (index < entries_.front().index) return errc::compacted;
    snapshot_.index = index;
    snapshot_.term = entries_[static_cast<std::size_t>(index - entries_.front().index)].term;
    snapshot_.conf = conf;
    conf_ = conf;
    return {};
  }

  // Drops entries <= index. index must be <= snapshot().index (errc::unavailable otherwise);
  // errc::compacted if index is already compacted.
  std::error_code compact(std::uint64_t index) {
    const std::uint64_t offset = entries_.front().index;
    if (index <= offset) return errc::compacted;
    if (index > snapshot_.index || index > last_index()) return errc::unavailable;
    const auto cut = static_cast<std::size_t>(index - offset);
    entry dummy{entries_[cut].term, entries_[cut].index, entry_type::normal, {}};
    entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(cut) + 1);
    entries_.insert(entries_.begin(), std::move(dummy));
    return {};
  }

  // --- storage (read side) ---------------------------------------------------------------
  // conf is the membership as of snapshot().index (or of the bootstrap at index 0).
  result<initial_state> load_initial_state() const override { return initial_state{hard_, conf_}; }

  result<std::vector<entry>> entries(std::uint64_t low, std::uint64_t high,
                                     std::uint64_t max_bytes) const override {
    const std::uint64_t offset = entries_.front().index;
    if (low <= offset) return errc::compacted;
    if (high > last_index() + 1) return errc::unavailable;
    std::vector<entry> out;
    if (low >= high) return out;
    std::uint64_t size = 0;
    for (std::uint64_t i = low; i < high; ++i) {
      const entry& e = entries_[static_cast<std::size_t>(i - offset)];
      size += entry_size_bytes(e);
      if (!out.empty() && size > max_bytes) break;
      out.push_back(e);
    }
    return out;
  }

  result<std::uint64_t> term(std::uint64_t index) const override {
    const std::uint64_t offset = entries_.front().index;
    if (index < offset) return errc::compacted;
    if (index - offset >= entries_.size()) return errc::unavailable;
    return entries_[static_cast<std::size_t>(index - offset)].term;
  }

  std::uint64_t first_index() const override { return entries_.front().index + 1; }
  std::uint64_t last_index() const override { return entries_.front().index + entries_.size() - 1; }
  snapshot_metadata snapshot() const override { return snapshot_; }

  // Test/diagnostic accessors.
  const hard_state& stored_hard_state() const noexcept { return hard_; }
  const conf_state& stored_conf_state() const noexcept { return conf_; }

 private:
  hard_state hard_;
  conf_state conf_;             // membership as of snapshot_.index (or the bootstrap)
  snapshot_metadata snapshot_;  // latest snapshot (index 0: none)
  // entries_[0] is a dummy holding the index/term of the last compacted entry (initially 0/0);
  // Invariant: entries_[i].index == entries_[0].index + i.
  std::vector<entry> entries_;
};

}  // namespace raftsync::raft
