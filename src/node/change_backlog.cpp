#include "change_backlog.hpp"

#include "raftsync/assert.hpp"

namespace raftsync::node {

void change_backlog::push(std::string path, bool scan_new_directories) {
  auto [it, inserted] = waiting_.try_emplace(path, scan_new_directories);
  if (!inserted) {
    it->second = it->second || scan_new_directories;
    return;
  }
  queue_.push_back(std::move(path));
  ++pushed_;
}

std::optional<change_backlog::item> change_backlog::pop() {
  if (queue_.empty()) return std::nullopt;
  item next;
  next.path = std::move(queue_.front());
  queue_.pop_front();
  auto it = waiting_.find(next.path);
  RAFTSYNC_ASSERT(it != waiting_.end(), "a backlog path is not indexed");
  next.scan_new_directories = it->second;
  waiting_.erase(it);
  ++popped_;
  RAFTSYNC_ASSERT(popped_ + queue_.size() == pushed_, "backlog tickets out of step");
  return next;
}

}  // namespace raftsync::node
