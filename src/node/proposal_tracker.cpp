#include "proposal_tracker.hpp"

#include "raftsync/assert.hpp"

namespace raftsync::node {

bool proposal_tracker::duplicate(std::string_view path, std::string_view fingerprint) const {
  auto it = by_path_.find(path);
  return it != by_path_.end() && pending_.count(it->second.first) != 0 &&
         it->second.second == fingerprint;
}

proposal_tracker::proposal& proposal_tracker::add(std::uint64_t sequence, std::string data,
                                                  std::string path, std::string fingerprint,
                                                  clock_type::time_point now) {
  RAFTSYNC_ASSERT(pending_.count(sequence) == 0, "a sequence is proposed twice");
  if (!fingerprint.empty()) by_path_[path] = {sequence, std::move(fingerprint)};
  proposal p;
  p.sequence = sequence;
  p.data = std::move(data);
  p.path = std::move(path);
  p.proposed_at = now;
  p.attempts = 1;
  p.retry_at = now + backoff(1);
  bytes_ += p.data.size();
  return pending_.emplace(sequence, std::move(p)).first->second;
}

void proposal_tracker::erase(std::uint64_t sequence) {
  auto it = pending_.find(sequence);
  if (it == pending_.end()) return;
  auto by_path = by_path_.find(it->second.path);
  if (by_path != by_path_.end() && by_path->second.first == sequence) by_path_.erase(by_path);
  RAFTSYNC_ASSERT(bytes_ >= it->second.data.size(), "proposal byte count underflow");
  bytes_ -= it->second.data.size();
  pending_.erase(it);
}

void proposal_tracker::reproposed(proposal& p, clock_type::time_point now) {
  ++p.attempts;
  p.proposed_at = now;
  p.retry_at = now + backoff(p.attempts);
}

std::vector<proposal_tracker::proposal*> proposal_tracker::due(clock_type::time_point now) {
  std::vector<proposal*> out;
  for (auto& [sequence, p] : pending_) {
    if (p.retry_at <= now) out.push_back(&p);
  }
  return out;
}

std::vector<proposal_tracker::proposal*> proposal_tracker::all() {
  std::vector<proposal*> out;
  out.reserve(pending_.size());
  for (auto& [sequence, p] : pending_) {
    p.attempts = 0;  // the next reproposed() schedules the first retry interval again
    out.push_back(&p);
  }
  return out;
}

proposal_tracker::clock_type::duration proposal_tracker::backoff(std::uint64_t attempts) const {
  clock_type::duration d = limits_.retry_first;
  for (std::uint64_t i = 1; i < attempts && d < limits_.retry_max; ++i)
    d *= 2;
  return std::min(d, limits_.retry_max);
}

}  // namespace raftsync::node
