// Helpers of the in-process facade tests: three replicated_folder instances on loopback TCP with
// real folders and the native watcher (positions 1..3, started by the constructor), and an
// optional fourth node (position 4) that starts empty with join_existing and is added by the
// test. A position can be stopped and started again on the same folder, state and port.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "raftsync/folder/sha256.hpp"
#include "raftsync/replicated_folder.hpp"
#include "raftsync/transport/tcp_transport.hpp"

namespace node_test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using raftsync::replicated_folder;
using raftsync::replicated_folder_config;

inline bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

inline std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

inline std::string random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (auto& c : out)
    c = static_cast<char>(rng());
  return out;
}

// Little-endian u64, as the node's wire messages carry numbers.
inline std::string le64(std::uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}
inline std::uint64_t load_le64(std::string_view bytes) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  return v;
}
// A message of the snapshot channel (1): u8 kind | u64 snapshot index | u64 offset | u64 total |
// data. Kind 1 is a piece of data; the receiver answers 2 (ack), 3 (abort) or 5 (resend).
inline std::string snapshot_piece(std::uint8_t kind, std::uint64_t index, std::uint64_t offset,
                                  std::uint64_t total, std::string_view data = {}) {
  std::string out(1, static_cast<char>(kind));
  out += le64(index) + le64(offset) + le64(total);
  out.append(data);
  return out;
}

inline const std::string secret = "in-process-test-secret-0123456789";

struct cluster {
  fs::path base;
  std::uint64_t first = 1;
  // Index p - 1 is position p; position 4 is the joiner (prepare_joiner()).
  std::array<std::uint16_t, 4> ports{};
  std::array<replicated_folder_config, 4> configs;
  std::array<std::unique_ptr<replicated_folder>, 4> nodes;
  std::mutex log_mutex;
  std::vector<std::string> logs;

  // Positions 1..3 (node(), folder(), leader()) are members first_id .. first_id + 2.
  // snapshot_entries: a log snapshot after that many applies (the log keeps 1,000 entries below
  // it, so a follower more than that behind receives a folder snapshot).
  explicit cluster(const std::string& name, std::uint64_t chunk_bytes = 1 << 20,
                   std::uint64_t first_id = 1, std::uint64_t snapshot_entries = 10000,
                   std::chrono::milliseconds proposal_retry = std::chrono::milliseconds(1000))
      : first(first_id) {
    base = fs::temp_directory_path() /
           ("raftsync-node-test-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(base);
    for (auto& port : ports)
      port = free_port();
    for (int i = 0; i < 3; ++i) {
      replicated_folder_config& config = configs[static_cast<std::size_t>(i)];
      config.id = first_id + static_cast<std::uint64_t>(i);
      config.root = folder(i + 1);
      fs::create_directories(config.root);
      config.listen_port = ports[static_cast<std::size_t>(i)];
      for (int j = 0; j < 3; ++j)
        if (j != i)
          config.peers.push_back({first_id + static_cast<std::uint64_t>(j), "127.0.0.1",
                                  ports[static_cast<std::size_t>(j)]});
      config.secret = secret;
      config.chunk_bytes = chunk_bytes;
      config.snapshot_entries = snapshot_entries;
      config.proposal_retry = proposal_retry;
      config.log = logger(i + 1);
    }
    for (int position = 1; position <= 3; ++position)
      start(position);
    REQUIRE(wait_until([&] { return leader() != 0; }, 10s));
  }
  ~cluster() {
    for (auto& node : nodes)
      node.reset();
    std::error_code ec;
    fs::remove_all(base, ec);
  }

  // Captures errors, warnings and info lines (debug too with RAFTSYNC_NODE_TEST_DEBUG=1).
  std::function<void(int, std::string_view)> logger(int position) {
    const int level_max = std::getenv("RAFTSYNC_NODE_TEST_DEBUG") != nullptr ? 3 : 2;
    return [this, position, level_max](int level, std::string_view message) {
      if (level > level_max) return;
      std::lock_guard lock(log_mutex);
      logs.push_back("node " + std::to_string(position) + ": " + std::string(message));
    };
  }

  // Position 4: member first_id + 3, an empty folder, join_existing (it waits to be added, as the
  // node program's --join), the founders as its peers. Not started.
  void prepare_joiner() {
    replicated_folder_config config = configs[0];
    config.id = first + 3;
    config.root = folder(4);
    fs::create_directories(config.root);
    config.listen_port = ports[3];
    config.join_existing = true;
    config.peers.clear();
    for (int i = 0; i < 3; ++i)
      config.peers.push_back({configs[static_cast<std::size_t>(i)].id, "127.0.0.1",
                              ports[static_cast<std::size_t>(i)]});
    config.log = logger(4);
    configs[3] = std::move(config);
  }
  raftsync::peer_address joiner_address() const { return {first + 3, "127.0.0.1", ports[3]}; }

  // (Re)starts a position with its config: the same folder, state directory and port.
  void start(int position) {
    auto& slot = nodes[static_cast<std::size_t>(position - 1)];
    slot.reset();
    slot = std::make_unique<replicated_folder>(configs[static_cast<std::size_t>(position - 1)]);
    REQUIRE_FALSE(slot->start());
  }
  // A clean stop: the node persists its manifest and applied index first.
  void stop(int position) { nodes[static_cast<std::size_t>(position - 1)]->stop(); }

  fs::path folder(int id) const { return base / ("node" + std::to_string(id)); }
  // Transport settings of a peer that knows the secret but is not a member: `id`, below the
  // members' ids so that it is the one that dials, connects to the member at `position`.
  raftsync::transport::tcp_transport_config outsider(std::uint64_t id, int position) const {
    raftsync::transport::tcp_transport_config config;
    config.id = id;
    const raftsync::folder::digest h = raftsync::folder::sha256("raftsync");
    for (int i = 0; i < 8; ++i)
      config.cluster_id = (config.cluster_id << 8) | h[static_cast<std::size_t>(i)];
    config.secret = secret;
    config.peers[first + static_cast<std::uint64_t>(position) - 1] = {
        "127.0.0.1", ports[static_cast<std::size_t>(position - 1)]};
    config.log = {};
    return config;
  }
  replicated_folder& node(int id) { return *nodes[static_cast<std::size_t>(id - 1)]; }
  raftsync::raft::node_id id_of(int position) const {
    return configs[static_cast<std::size_t>(position - 1)].id;
  }
  int leader() {
    for (int id = 1; id <= 4; ++id)
      if (nodes[static_cast<std::size_t>(id - 1)] && node(id).status().role == "leader") return id;
    return 0;
  }
  // Leadership moved to `position` (asked of whichever node leads meanwhile).
  bool make_leader(int position, std::chrono::milliseconds timeout) {
    return wait_until(
        [&] {
          const int l = leader();
          if (l == position) return true;
          if (l != 0) (void)node(l).transfer_leadership(id_of(position));
          std::this_thread::sleep_for(50ms);
          return false;
        },
        timeout);
  }
  bool held_by(std::initializer_list<int> positions, const std::string& path,
               const std::string& content) {
    for (int id : positions) {
      const fs::path p = folder(id) / path;
      if (!fs::exists(p) || read_file(p) != content) return false;
    }
    return true;
  }
  bool everywhere(const std::string& path, const std::string& content) {
    return held_by({1, 2, 3}, path, content);
  }
  bool nowhere(const std::string& path) {
    for (int id = 1; id <= 3; ++id)
      if (fs::exists(folder(id) / path)) return false;
    return true;
  }
  bool logged(const std::string& text) {
    std::lock_guard lock(log_mutex);
    for (const auto& line : logs)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }
  // Every captured line (info and above), for a failure's context.
  void dump_logs() {
    std::lock_guard lock(log_mutex);
    for (const auto& line : logs)
      UNSCOPED_INFO(line);
  }
};

}  // namespace node_test
