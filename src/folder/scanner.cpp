#include "raftsync/folder/scanner.hpp"

#include <algorithm>
#include <set>
#include <unordered_set>

#include "raftsync/folder/path_rules.hpp"

namespace raftsync::folder {
namespace {

bool is_missing(const std::error_code& ec) {
  return ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory;
}

bool same_identity(const file_stat& a, const file_stat& b) {
  return a.kind == b.kind && a.size_bytes == b.size_bytes && a.mtime_ns == b.mtime_ns &&
         a.inode == b.inode;
}

// The cheap "unchanged since the apply / last check" test the scanner and read_change share.
bool fast_unchanged(const manifest_entry& e, const file_stat& st) {
  if (e.kind != st.kind) return false;
  switch (st.kind) {
    case file_kind::regular:
      return same_local_identity(e, st) && st.mode == e.mode;
    case file_kind::directory:
      return st.mode == e.mode;
    case file_kind::symlink:
      return st.inode == e.local_inode && st.size_bytes == e.size_bytes;
    default:
      return false;
  }
}

}  // namespace

// ------------------------------------------------------------------------------ chunked_upload

bool chunked_upload::reads(const file_stat& now) const noexcept {
  return same_working_identity(identity_, now);
}

result<std::optional<command>> chunked_upload::next() {
  if (committed_) return std::optional<command>{};
  const std::uint64_t chunk_bytes = sm_->config().chunk_bytes;
  if (position_ < changed_.size()) {
    std::uint64_t index = changed_[position_];
    command c;
    c.kind = command_kind::chunk;
    c.origin = commit_.origin;
    c.path = commit_.path;
    c.base_version = commit_.base_version;
    c.timestamp_ns = commit_.timestamp_ns;
    c.upload_id = commit_.upload_id;
    c.chunk_index = index;
    if (auto ec = sm_->tree().read(commit_.path, index * chunk_bytes, chunk_bytes, c.content))
      return ec;
    auto now = sm_->tree().lstat(commit_.path);
    if (!now) return now.error();
    const std::uint64_t expected =
        std::min<std::uint64_t>(chunk_bytes, commit_.size_bytes - index * chunk_bytes);
    if (!reads(*now) || c.content.size() != expected) return errc::conflict;  // changed meanwhile
    c.sha256 = commit_.chunk_hashes[index];
    c.sequence = sm_->next_sequence();
    ++position_;
    return std::optional<command>(std::move(c));
  }
  command c = commit_;
  c.sequence = sm_->next_sequence();
  committed_ = true;
  return std::optional<command>(std::move(c));
}

// ------------------------------------------------------------------------------- change_reader

change_reader::change_reader(state_machine& sm, std::function<std::int64_t()> utc_now_ns,
                             int stable_read_attempts)
    : sm_(sm), utc_now_ns_(std::move(utc_now_ns)), attempts_(std::max(1, stable_read_attempts)) {}

command change_reader::base_command(command_kind kind, std::string_view path) {
  command c;
  c.kind = kind;
  c.origin = sm_.config().self;
  c.sequence = sm_.next_sequence();
  c.path = std::string(path);
  const manifest_entry* e = sm_.committed().find(path);
  c.base_version = e != nullptr ? e->version : 0;
  c.timestamp_ns = utc_now_ns_();
  return c;
}

void change_reader::append_removal(std::string_view path, const manifest_entry& entry,
                                   change_plan& plan) {
  if (entry.kind == file_kind::directory) {
    auto below = sm_.committed().paths_below(path);
    for (auto it = below.rbegin(); it != below.rend(); ++it) {
      const manifest_entry* child = sm_.committed().find(*it);
      plan.commands.push_back(base_command(
          child->kind == file_kind::directory ? command_kind::rmdir : command_kind::remove, *it));
    }
    plan.commands.push_back(base_command(command_kind::rmdir, path));
  } else {
    plan.commands.push_back(base_command(command_kind::remove, path));
  }
}

result<change_plan> change_reader::read_change(std::string_view path) {
  if (is_internal_path(path)) return errc::invalid_path;
  if (validate_path(path, sm_.config().rules)) return errc::invalid_path;
  folder_io& io = sm_.tree();
  const std::uint64_t chunk_bytes = sm_.config().chunk_bytes;
  const manifest_entry* cur = sm_.committed().find(path);
  change_plan plan;

  const bool content_missing = sm_.missing_paths().count(path) != 0;
  auto st = io.lstat(path);
  if (!st) {
    if (!is_missing(st.error()) && st.error() != make_error_code(errc::invalid_path))
      return st.error();
    if (cur != nullptr && !content_missing) append_removal(path, *cur, plan);
    if (cur == nullptr) {
      // A rename this node applied after the entry was already gone from its disk (deleted or
      // renamed locally, the event read only now): the committed entry is at the rename's
      // destination, which is absent here too — read that path, so the local delete reaches it.
      auto moved = sm_.moves().find(path);
      if (moved != sm_.moves().end()) {
        const manifest_entry* dest = sm_.committed().find(moved->second.to);
        auto there = io.lstat(moved->second.to);
        if (dest != nullptr && dest->version == moved->second.index && !there &&
            is_missing(there.error()))
          return read_change(moved->second.to);
      }
    }
    return plan;
  }
  if (st->kind == file_kind::other) return plan;  // fifos, sockets, devices: not replicated
  if (cur != nullptr && fast_unchanged(*cur, *st)) return plan;
  // A kind change (file ↔ directory ↔ symlink) is a removal followed by a creation.
  bool kind_changed = cur != nullptr && cur->kind != st->kind;
  if (kind_changed) append_removal(path, *cur, plan);
  const manifest_entry* base = kind_changed ? nullptr : cur;

  switch (st->kind) {
    case file_kind::directory: {
      if (base == nullptr) {
        command c = base_command(command_kind::mkdir, path);
        c.base_version = 0;
        c.mode = st->mode;
        plan.commands.push_back(std::move(c));
      } else if (base->mode != st->mode) {
        command c = base_command(command_kind::set_mode, path);
        c.mode = st->mode;
        plan.commands.push_back(std::move(c));
      }
      return plan;
    }
    case file_kind::symlink: {
      auto target = io.readlink(path);
      if (!target)
        return is_missing(target.error()) ? result<change_plan>(std::move(plan)) : target.error();
      if (base != nullptr && base->symlink_target == *target) {
        sm_.note_unchanged(path, *st);
        return plan;
      }
      command c = base_command(command_kind::symlink, path);
      if (base == nullptr) c.base_version = 0;
      c.target = *target;
      plan.commands.push_back(std::move(c));
      return plan;
    }
    case file_kind::regular:
      break;
    default:
      return plan;
  }

  // Regular file: read (small) or hash (large) between two identical lstats.
  file_stat before = *st;
  std::string content;
  file_hashes hashes;
  bool stable = false;
  for (int attempt = 0; attempt < attempts_ && !stable; ++attempt) {
    if (attempt > 0) {
      auto again = io.lstat(path);
      if (!again) {
        if (!is_missing(again.error())) return again.error();
        if (cur != nullptr) append_removal(path, *cur, plan);
        return plan;
      }
      before = *again;
      if (before.kind != file_kind::regular) return read_change(path);
    }
    if (before.size_bytes <= chunk_bytes) {
      if (auto ec = io.read(path, 0, chunk_bytes + 1, content)) {
        if (is_missing(ec)) continue;
        return ec;
      }
      hashes.sha256 = sha256(content);
      hashes.size_bytes = content.size();
    } else {
      // Stops early when the file changes under the read (a writer still at work): reading it
      // to its end would only be done again.
      auto h = hash_file(io, path, chunk_bytes, [&] {
        auto now = io.lstat(path);
        return now && same_identity(before, *now);
      });
      if (!h) {
        if (is_missing(h.error()) || h.error() == make_error_code(errc::busy)) continue;
        return h.error();
      }
      hashes = std::move(*h);
      content.clear();
    }
    auto after = io.lstat(path);
    if (!after) {
      if (is_missing(after.error())) continue;
      return after.error();
    }
    stable = same_identity(before, *after) && hashes.size_bytes == after->size_bytes;
  }
  if (!stable) return errc::busy;

  if (base != nullptr && base->sha256 == hashes.sha256 && base->size_bytes == hashes.size_bytes) {
    // Same content: only metadata may differ.
    if (before.mode != base->mode) {
      command c = base_command(command_kind::set_mode, path);
      c.mode = before.mode;
      plan.commands.push_back(std::move(c));
    }
    if (before.mtime_ns != base->mtime_ns) {
      command c = base_command(command_kind::set_mtime, path);
      c.mtime_ns = before.mtime_ns;
      plan.commands.push_back(std::move(c));
    }
    if (plan.commands.empty()) sm_.note_unchanged(path, before);
    return plan;
  }

  if (hashes.size_bytes <= chunk_bytes) {
    command c = base_command(command_kind::write, path);
    if (base == nullptr) c.base_version = 0;
    c.mode = before.mode;
    c.mtime_ns = before.mtime_ns;
    c.content = std::move(content);
    plan.commands.push_back(std::move(c));
    return plan;
  }

  // Large file: send only the chunks the committed content does not already hold (the apply
  // takes the others from the committed file, at any position).
  std::set<digest> known;
  // Content missing on this node is likely missing elsewhere too: then send every chunk.
  if (base != nullptr && base->kind == file_kind::regular && !content_missing)
    known.insert(base->chunk_hashes.begin(), base->chunk_hashes.end());
  std::vector<std::uint64_t> changed;
  for (std::uint64_t i = 0; i < hashes.chunk_hashes.size(); ++i)
    if (known.count(hashes.chunk_hashes[i]) == 0) changed.push_back(i);
  // An upload starts with a chunk (it creates the staging object on every node): when every
  // chunk is already known (a truncation at a chunk boundary, a reordering), send the last one.
  if (changed.empty()) changed.push_back(hashes.chunk_hashes.size() - 1);
  command commit;
  commit.kind = command_kind::commit;
  commit.origin = sm_.config().self;
  commit.path = std::string(path);
  commit.base_version = base != nullptr ? base->version : 0;
  commit.timestamp_ns = utc_now_ns_();
  commit.upload_id = sm_.next_upload_id();
  commit.mode = before.mode;
  commit.mtime_ns = before.mtime_ns;
  commit.size_bytes = hashes.size_bytes;
  commit.sha256 = hashes.sha256;
  commit.chunk_hashes = std::move(hashes.chunk_hashes);
  sm_.note_own_read(path, before, hashes.sha256);
  plan.upload.emplace(chunked_upload(sm_, std::move(commit), std::move(changed), before));
  return plan;
}

result<change_plan> change_reader::read_rename(std::string_view from, std::string_view to) {
  if (is_internal_path(from) || validate_path(from, sm_.config().rules)) return read_change(to);
  if (is_internal_path(to) || validate_path(to, sm_.config().rules)) return read_change(from);
  const manifest_entry* src = sm_.committed().find(from);
  folder_io& io = sm_.tree();
  auto st_from = io.lstat(from);
  auto st_to = io.lstat(to);
  bool from_gone = !st_from && is_missing(st_from.error());
  if (src != nullptr && from_gone && st_to && st_to->kind == src->kind) {
    bool moved = true;
    if (src->kind == file_kind::regular)
      moved = st_to->inode == src->local_inode && st_to->size_bytes == src->size_bytes;
    else if (src->kind == file_kind::symlink)
      moved = st_to->inode == src->local_inode;
    if (moved) {
      change_plan plan;
      command c = base_command(command_kind::rename, from);
      c.target = std::string(to);
      const manifest_entry* dst = sm_.committed().find(to);
      c.target_base_version = dst != nullptr ? dst->version : 0;
      c.seen_index = sm_.applied_index();
      plan.commands.push_back(std::move(c));
      return plan;
    }
  }
  auto first = read_change(from);
  if (!first) return first;
  auto second = read_change(to);
  if (!second) return second;
  for (auto& c : second->commands)
    first->commands.push_back(std::move(c));
  if (second->upload) first->upload = std::move(second->upload);
  return first;
}

// ------------------------------------------------------------------------------------------ scan

namespace {

struct scan_walker {
  state_machine& sm;
  folder_io& io;
  scan_report& report;
  std::vector<std::string> changes;
  std::unordered_set<std::string> seen;

  std::error_code visit(const std::string& path, const file_stat& st) {
    seen.insert(path);
    if (validate_path(path, sm.config().rules)) {
      report.refused.push_back(path);
      return {};
    }
    const manifest_entry* e = sm.committed().find(path);
    if (st.kind != file_kind::other && (e == nullptr || !fast_unchanged(*e, st)))
      changes.push_back(path);
    if (st.kind == file_kind::directory) return walk(path);
    return {};
  }

  std::error_code walk(const std::string& dir) {
    auto entries = io.list(dir);
    if (!entries) return is_missing(entries.error()) ? std::error_code{} : entries.error();
    for (const auto& child : *entries) {
      std::string path = join_path(dir, child.name);
      if (is_internal_path(path)) continue;
      auto st = io.lstat(path);
      if (!st) {
        if (is_missing(st.error())) continue;  // vanished meanwhile: its event will follow
        return st.error();
      }
      if (auto ec = visit(path, *st)) return ec;
    }
    return {};
  }
};

}  // namespace

result<scan_report> scan(state_machine& sm, std::string_view scope) {
  if (!scope.empty() && (is_internal_path(scope) || validate_path(scope, sm.config().rules)))
    return errc::invalid_path;
  scan_report report;
  scan_walker walker{sm, sm.tree(), report, {}, {}};
  std::string root(scope);
  if (root.empty()) {
    if (auto ec = walker.walk(root)) return ec;
  } else {
    auto st = sm.tree().lstat(root);
    if (st) {
      if (auto ec = walker.visit(root, *st)) return ec;
    } else if (!is_missing(st.error()) && st.error() != make_error_code(errc::invalid_path)) {
      return st.error();
    }
  }
  // Committed entries under the scope that are gone from disk. A gone directory covers its
  // subtree (read_change of the directory proposes the whole removal).
  std::vector<std::string> gone;
  std::vector<std::string> candidates = sm.committed().paths_below(root);
  if (!root.empty() && sm.committed().find(root) != nullptr)
    candidates.insert(candidates.begin(), root);
  std::set<std::string, std::less<>> gone_dirs;
  for (const auto& path : candidates) {
    if (walker.seen.count(path) != 0) continue;
    if (sm.missing_paths().count(path) != 0) continue;  // absent here by necessity, not by a user
    bool covered = false;
    for (auto p = parent_path(path); !p.empty() && !covered; p = parent_path(p))
      covered = gone_dirs.count(p) != 0;
    if (covered) continue;
    gone.push_back(path);
    if (sm.committed().find(path)->kind == file_kind::directory) gone_dirs.insert(path);
  }
  std::reverse(gone.begin(), gone.end());
  report.changed = std::move(gone);
  for (auto& p : walker.changes)
    report.changed.push_back(std::move(p));
  return report;
}

}  // namespace raftsync::folder
