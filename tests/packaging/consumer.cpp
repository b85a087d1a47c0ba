// A downstream program: links raftsync::raftsync, elects itself in a one-node cluster, commits one
// entry and exits 0 only if the entry was committed. Built by the packaging tests both through
// find_package(raftsync) and through add_subdirectory().
#include <cstdio>
#include <raftsync/raftsync.hpp>

int main() {
  using namespace raftsync;
  raft::memory_storage storage;
  storage.bootstrap(raft::conf_state{.voters = {1}, .learners = {}});
  raft::config config;
  config.id = 1;
  auto node = raft::raw_node::create(config, storage);
  if (!node) {
    std::fprintf(stderr, "create failed: %s\n", node.error().message().c_str());
    return 1;
  }
  node->campaign();
  bool proposed = false;
  for (int round = 0; round < 100; ++round) {
    while (node->has_ready()) {
      raft::ready rd = node->ready();
      if (rd.hard) storage.set_hard_state(*rd.hard);
      if (storage.append(rd.entries)) return 1;
      for (const raft::entry& e : rd.committed_entries) {
        if (e.data == "hello") {
          std::puts("consumer: committed \"hello\"");
          return 0;
        }
      }
      node->advance(rd);
    }
    if (!proposed && node->status().soft.role == raft::role::leader) {
      proposed = !node->propose("hello");
    }
    node->tick();
  }
  std::fputs("consumer: entry was not committed\n", stderr);
  return 1;
}
