// End-to-end at scale (issue 13): three real `raftsync` processes and tens of thousands of files
// changed at once — a folder present at start, a burst written into a running cluster on a
// follower, an rm -rf. Users start exactly there; one change at a time hid the collapse (starved
// event loop, elections every 1.5 s, 3 GB of queued proposals). Each test asserts identical trees,
// no leader change and a bounded peak RSS per node.
#include <sys/stat.h>

#include <cstdlib>
#include <optional>
#include <random>
#include <set>
#include <string>

#include <catch2/catch.hpp>

#include "process_cluster.hpp"

using namespace raftsync::e2e;

#ifndef RAFTSYNC_NODE_BINARY
#error "RAFTSYNC_NODE_BINARY must name the raftsync node program"
#endif

namespace {

constexpr std::uint64_t rss_bound_bytes = 256ull << 20;

// A number field of the node program's status JSON (std::nullopt if absent).
std::optional<std::uint64_t> json_number(const std::string& json, const std::string& field) {
  const std::string key = "\"" + field + "\":";
  const auto at = json.find(key);
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(json.c_str() + at + key.size(), nullptr, 10);
}

// Peak resident set of a process (VmHWM), in bytes; 0 if unreadable.
std::uint64_t peak_rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

std::string status_of(process_cluster& cluster, int id) {
  std::string out;
  return cluster.control(id, "status", &out) == 0 ? out : std::string();
}

// Every node has read, proposed and applied everything it knows of, and all hold `files`
// manifest entries: cheap to poll (status only); the full tree comparison comes after.
bool settled(process_cluster& cluster, std::uint64_t files) {
  for (int id = 1; id <= cluster.size(); ++id) {
    const std::string s = status_of(cluster, id);
    if (json_number(s, "files") != files || json_number(s, "unread_changes") != 0u ||
        json_number(s, "pending_proposals") != 0u ||
        json_number(s, "applied_index") != json_number(s, "commit_index")) {
      return false;
    }
  }
  return true;
}

// Writes `count` files under root/dir: nested directories of 100 files, sizes from 100 bytes to
// 8 KiB (a source tree's), every 500th a symlink to its neighbour. Returns the entries made
// (files, links and directories), as the manifest counts them.
std::uint64_t write_tree(const fs::path& root, const std::string& dir, int count,
                         std::uint32_t seed) {
  std::mt19937 random(seed);
  std::set<fs::path> dirs;
  std::uint64_t entries = 0;
  for (int i = 0; i < count; ++i) {
    const fs::path parent =
        fs::path(dir) / ("d" + std::to_string(i / 1000)) / ("e" + std::to_string(i / 100 % 10));
    for (fs::path p = parent; !p.empty() && dirs.insert(p).second; p = p.parent_path())
      ++entries;
    const fs::path file = root / parent / ("f" + std::to_string(i));
    if (i % 500 == 499) {
      fs::create_directories(file.parent_path());
      fs::create_symlink("f" + std::to_string(i - 1), file);
    } else {
      std::string content(100 + random() % 8092, ' ');
      for (char& c : content)
        c = static_cast<char>('a' + random() % 26);
      write_file(file, content);
    }
    ++entries;
  }
  return entries;
}

void require_settled_and_identical(process_cluster& cluster, std::uint64_t files,
                                   std::chrono::milliseconds timeout) {
  const bool ok = wait_until([&] { return settled(cluster, files); }, timeout);
  std::string statuses;
  for (int id = 1; id <= cluster.size(); ++id)
    statuses += status_of(cluster, id);
  INFO("expected " << files << " entries; statuses:\n" << statuses << log_tails(cluster, 15));
  REQUIRE(ok);
  std::string diff;
  const bool converged = cluster.wait_converged(30s, &diff);
  INFO("differences:\n" << diff);
  REQUIRE(converged);
}

void require_one_leader_and_bounded_rss(process_cluster& cluster) {
  for (int id = 1; id <= cluster.size(); ++id) {
    const std::string s = status_of(cluster, id);
    INFO("node " << id << ": " << s);
    CHECK(json_number(s, "leader_changes") == 1u);  // the first leader, and no other
    const std::uint64_t rss = peak_rss_bytes(cluster.pid(id));
    INFO("node " << id << " peak RSS " << (rss >> 20) << " MiB");
    CHECK(rss > 0);
    CHECK(rss < rss_bound_bytes);
  }
}

}  // namespace

TEST_CASE("a 20,000-file folder present at start converges on two empty nodes with one leader",
          "[e2e][scale]") {
  process_cluster cluster(RAFTSYNC_NODE_BINARY, 3, "scale-seed");
  const std::uint64_t entries = write_tree(cluster.folder(1), "tree", 20000, 13);
  for (int id = 1; id <= 3; ++id)
    cluster.start(id);
  require_settled_and_identical(cluster, entries, 90s);
  require_one_leader_and_bounded_rss(cluster);
}

TEST_CASE("a 10,000-file burst written on a follower converges, and so does its rm -rf",
          "[e2e][scale]") {
  process_cluster cluster(RAFTSYNC_NODE_BINARY, 3, "scale-burst");
  for (int id = 1; id <= 3; ++id)
    cluster.start(id);
  const int leader = cluster.wait_leader();
  REQUIRE(leader != 0);
  const int follower = leader % 3 + 1;
  // Written while the cluster runs, as fast as the test can: the watcher, not a scan, reports it.
  const std::uint64_t entries = write_tree(cluster.folder(follower), "clone", 10000, 14);
  require_settled_and_identical(cluster, entries, 90s);

  fs::remove_all(cluster.folder(follower) / "clone");
  require_settled_and_identical(cluster, 0, 90s);
  require_one_leader_and_bounded_rss(cluster);
}

TEST_CASE("a folder pre-seeded on every node is committed once, not once per node",
          "[e2e][scale]") {
  process_cluster cluster(RAFTSYNC_NODE_BINARY, 3, "scale-preseeded");
  const std::uint64_t entries = write_tree(cluster.folder(1), "tree", 5000, 15);
  for (int id = 2; id <= 3; ++id)
    fs::copy(cluster.folder(1), cluster.folder(id),
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  for (int id = 1; id <= 3; ++id)
    cluster.start(id);
  require_settled_and_identical(cluster, entries, 90s);
  // A flush returns only after the node's own startup scan: every node has looked at its copy.
  for (int id = 1; id <= 3; ++id) {
    std::string out;
    INFO("node " << id << ": " << out);
    REQUIRE(cluster.control(id, "flush", &out, "--timeout-ms 60000") == 0);
  }
  require_settled_and_identical(cluster, entries, 30s);
  // One command per entry plus a few (membership, leader no-ops): the followers adopted their
  // identical copies instead of proposing them too (that made three commands per entry).
  const std::string s = status_of(cluster, 1);
  INFO(s);
  const auto last_index = json_number(s, "last_index");
  REQUIRE(last_index.has_value());
  CHECK(*last_index < entries + entries / 10);
  require_one_leader_and_bounded_rss(cluster);
}
