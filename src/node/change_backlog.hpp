// raftsync node — change_backlog: paths whose change is known but not read yet.
//
// Watcher events, rescans, the startup scan and a flush's scan put paths here; the node reads them
// (lstat, read, hash, compare with the manifest) and proposes what changed only as fast as the
// proposal window lets it (proposal_tracker::has_room) and a bounded slice of work per turn of the
// strand, so a folder of 10^5 files present at start neither holds its contents in memory as
// proposals nor stalls ticks and heartbeats while it is hashed. A path costs its name here, not
// its content: contents are read when they are about to be proposed.
//
// Order: first in, first out, so a new directory's mkdir (proposed when its path is read) comes
// before the files a scan of it lists. A path already waiting keeps its place (one read covers
// every event before it). Tickets make flushes exact: every path pushed before ticket T has been
// read once read_through() >= T.
//
// Owned by the node's strand; no locking.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

namespace raftsync::node {

class change_backlog {
 public:
  struct item {
    std::string path;
    // A new directory found at this path is scanned for its content (watcher paths); paths a
    // scan listed come with false: that scan covered the subtree already.
    bool scan_new_directories = true;
  };

  // Adds `path` unless it is waiting already (then only scan_new_directories is widened).
  void push(std::string path, bool scan_new_directories);
  // The oldest waiting path.
  std::optional<item> pop();

  bool empty() const noexcept { return queue_.empty(); }
  std::size_t size() const noexcept { return queue_.size(); }
  // Tickets: pushed() counts paths ever added; read_through() counts those popped. Every path
  // pushed before a call to pushed() that returned T has been popped once read_through() >= T.
  std::uint64_t pushed() const noexcept { return pushed_; }
  std::uint64_t read_through() const noexcept { return popped_; }

 private:
  std::deque<std::string> queue_;
  // Invariant: the paths of queue_, each once, with their scan_new_directories.
  std::unordered_map<std::string, bool> waiting_;
  std::uint64_t pushed_ = 0;
  std::uint64_t popped_ = 0;  // Invariant: popped_ + queue_.size() == pushed_
};

}  // namespace raftsync::node
