// The three-node example: three replicated_folder nodes in one process, replicating
// data/node1, data/node2 and data/node3 over loopback TCP. Edit any of the folders from another
// terminal and watch the others follow; leader changes and every replicated change are printed,
// with the time from the file's last modification to its apply on each node.
//
//   three_node_example [--data DIR] [--base-port N]          interactive, until Ctrl-C
//   three_node_example --check [--data DIR] [--base-port N]  scripted run; exit 0 iff trees
//   converge
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "raftsync/raftsync.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> interrupted{false};
std::mutex print_mutex;

template <typename... Args>
void say(fmt::format_string<Args...> format, Args&&... args) {
  std::lock_guard lock(print_mutex);
  fmt::print(format, std::forward<Args>(args)...);
  std::fflush(stdout);
}

struct cluster {
  fs::path data;
  std::uint16_t base_port = 7101;
  std::array<std::unique_ptr<raftsync::replicated_folder>, 3> nodes;

  fs::path folder(int i) const { return data / fmt::format("node{}", i + 1); }

  std::error_code start(int i) {
    raftsync::replicated_folder_config config;
    config.id = static_cast<raftsync::raft::node_id>(i + 1);
    config.root = folder(i);
    config.listen_port = static_cast<std::uint16_t>(base_port + i);
    for (int j = 0; j < 3; ++j) {
      if (j == i) continue;
      config.peers.push_back({static_cast<raftsync::raft::node_id>(j + 1), "127.0.0.1",
                              static_cast<std::uint16_t>(base_port + j)});
    }
    config.secret = "three-node-example-secret";  // a real cluster reads it from a file
    config.log = [id = i + 1](int level, std::string_view message) {
      static const bool verbose = std::getenv("RAFTSYNC_VERBOSE") != nullptr;
      if (level <= 1 || verbose) say("  node {}: {}\n", id, message);
    };
    fs::create_directories(config.root);
    nodes[i] = std::make_unique<raftsync::replicated_folder>(config);
    const fs::path root = config.root;
    nodes[i]->on_leader_change([id = i + 1](raftsync::raft::node_id leader, std::uint64_t term) {
      if (leader == static_cast<raftsync::raft::node_id>(id))
        say("* term {}: node {} is the leader\n", term, leader);
    });
    nodes[i]->on_applied([id = i + 1, root](const raftsync::applied_change& change) {
      std::string latency;
      std::error_code ec;
      auto status = fs::symlink_status(root / change.path, ec);
      if (!ec && fs::is_regular_file(status) && change.origin != static_cast<std::uint64_t>(id)) {
        auto mtime = fs::last_write_time(root / change.path, ec);
        if (!ec) {
          auto age = std::chrono::file_clock::now() - mtime;
          latency = fmt::format(" ({:.2f} ms after the write)",
                                std::chrono::duration<double, std::milli>(age).count());
        }
      }
      if (change.origin == static_cast<std::uint64_t>(id)) return;  // print remote applies only
      std::string what = change.from_path.empty()
                             ? change.path
                             : fmt::format("{} -> {}", change.from_path, change.path);
      say("  node {} applied #{} {} {} from node {}{}{}\n", id, change.index, change.kind, what,
          change.origin, latency, change.conflict_copy ? " [conflict copy]" : "");
    });
    return nodes[i]->start();
  }

  void stop(int i) {
    if (nodes[i]) nodes[i]->stop();
    nodes[i].reset();
  }
};

// A listing of a tree: relative path → kind + content (or link target) + mode.
std::map<std::string, std::string> snapshot_tree(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const fs::path rel = it->path().lexically_relative(root);  // never resolves symlinks
    if (*rel.begin() == ".raftsync") {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    auto status = it->symlink_status();
    std::string value;
    if (fs::is_symlink(status)) {
      value = "link:" + fs::read_symlink(it->path()).string();
    } else if (fs::is_directory(status)) {
      value = "dir";
    } else {
      std::ifstream in(it->path(), std::ios::binary);
      value = "file:" + std::string(std::istreambuf_iterator<char>(in), {});
    }
    value += fmt::format(" mode={:o}", static_cast<unsigned>(status.permissions()));
    out[rel.generic_string()] = value;
  }
  return out;
}

bool wait_converged(cluster& c, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto a = snapshot_tree(c.folder(0));
    if (a == snapshot_tree(c.folder(1)) && a == snapshot_tree(c.folder(2))) return true;
    std::this_thread::sleep_for(20ms);  // polling interval of a condition wait, not a fixed wait
  }
  return false;
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

int run_check(cluster& c) {
  say("scripted check: writes on every node, a rename, a delete, a node restart\n");
  auto step = [&](const char* what) {
    if (!wait_converged(c, 20s)) {
      say("FAILED: trees differ after: {}\n", what);
      return false;
    }
    say("ok: {}\n", what);
    return true;
  };
  write(c.folder(0) / "hello.txt", "hello from node 1\n");
  if (!step("create on node 1")) return 1;
  write(c.folder(1) / "hello.txt", "hello again, from node 2\n");
  if (!step("modify on node 2")) return 1;
  fs::create_directories(c.folder(2) / "docs/notes");
  write(c.folder(2) / "docs/notes/todo.md", "- replicate everything\n");
  if (!step("mkdir -p and create on node 3")) return 1;
  fs::rename(c.folder(0) / "hello.txt", c.folder(0) / "docs/hello.txt");
  if (!step("rename on node 1")) return 1;
  say("stopping node 2\n");
  c.stop(1);
  write(c.folder(0) / "while-down.txt", "written while node 2 was down\n");
  fs::remove(c.folder(2) / "docs/notes/todo.md");
  if (c.nodes[0]->flush(10s) || c.nodes[2]->flush(10s)) {
    say("FAILED: flush with node 2 down\n");
    return 1;
  }
  write(c.folder(1) / "offline-edit.txt", "edited on node 2 while it was down\n");
  say("restarting node 2\n");
  if (std::error_code ec = c.start(1)) {
    say("FAILED: restart node 2: {}\n", ec.message());
    return 1;
  }
  if (!step("node 2 caught up and its offline edit replicated")) return 1;
  say("all three trees are identical\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cluster c;
  c.data = "data";
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--check") {
      check = true;
    } else if (arg == "--data" && i + 1 < argc) {
      c.data = argv[++i];
    } else if (arg == "--base-port" && i + 1 < argc) {
      c.base_port = static_cast<std::uint16_t>(std::stoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: three_node_example [--check] [--data DIR] [--base-port N]\n");
      return 2;
    }
  }
  if (check) fs::remove_all(c.data);
  for (int i = 0; i < 3; ++i) {
    if (std::error_code ec = c.start(i)) {
      std::fprintf(stderr, "node %d failed to start: %s\n", i + 1, ec.message().c_str());
      return 1;
    }
  }
  say("three nodes replicating {}, {} and {} (ports {}-{})\n", c.folder(0).string(),
      c.folder(1).string(), c.folder(2).string(), c.base_port, c.base_port + 2);
  int rc = 0;
  if (check) {
    rc = run_check(c);
  } else {
    say("edit files in any of the folders from another terminal; Ctrl-C stops\n");
    std::signal(SIGINT, [](int) { interrupted = true; });
    std::signal(SIGTERM, [](int) { interrupted = true; });
    while (!interrupted)
      std::this_thread::sleep_for(100ms);
    say("stopping\n");
  }
  for (int i = 0; i < 3; ++i)
    c.stop(i);
  return rc;
}
