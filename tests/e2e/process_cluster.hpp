// Test support for end-to-end tests: a cluster of real `raftsync` node processes on loopback TCP,
// each with its own folder under a temporary directory. Every process started is stopped (by PID)
// when the cluster is destroyed, whatever the test did.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "raftsync/folder/sha256.hpp"

namespace raftsync::e2e {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Ports the OS reports free right now (bound to port 0, read back, closed).
inline std::vector<std::uint16_t> free_ports(int count) {
  std::vector<std::uint16_t> ports;
  std::vector<int> sockets;
  for (int i = 0; i < count; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
    socklen_t length = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    ports.push_back(ntohs(address.sin_port));
    sockets.push_back(fd);
  }
  for (int fd : sockets)
    ::close(fd);
  return ports;
}

// Waits until `condition` holds or `timeout` passes (polling every few milliseconds).
inline bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
}

// The tree below `root` (the .raftsync state dir excluded) as path → "kind mode hash|target".
inline std::map<std::string, std::string> tree_digest(const fs::path& root) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path rel = it->path().lexically_relative(root);  // never resolves symlinks
    if (rel.empty() || *rel.begin() == ".raftsync") {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    const std::string name = rel.filename().string();
    if (name.rfind(".raftsync-tmp-", 0) == 0) continue;
    auto status = it->symlink_status(ec);
    if (ec) continue;
    std::string value = std::to_string(static_cast<unsigned>(status.permissions()) & 07777) + " ";
    if (fs::is_symlink(status)) {
      value += "link " + fs::read_symlink(it->path(), ec).string();
    } else if (fs::is_directory(status)) {
      value += "dir";
    } else if (fs::is_regular_file(status)) {
      folder::sha256_hasher hasher;
      std::ifstream in(it->path(), std::ios::binary);
      std::vector<char> buffer(1 << 20);
      while (in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        hasher.update(std::string_view(buffer.data(), static_cast<std::size_t>(in.gcount())));
      }
      value += "file " + folder::to_hex(hasher.finish());
    } else {
      value += "other";
    }
    out[rel.generic_string()] = value;
  }
  return out;
}

inline void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class process_cluster {
 public:
  // `binary` is the raftsync node program; n nodes, ids 1..n.
  process_cluster(std::string binary, int n, std::string name) : binary_(std::move(binary)) {
    std::random_device random;
    base_ = fs::temp_directory_path() / ("raftsync-e2e-" + name + "-" + std::to_string(::getpid()) +
                                         "-" + std::to_string(random()));
    fs::create_directories(base_);
    secret_file_ = base_ / "secret";
    write_file(secret_file_, "e2e-cluster-secret-0123456789\n");
    ports_ = free_ports(n);
    pids_.assign(static_cast<std::size_t>(n), -1);
    for (int i = 0; i < n; ++i)
      fs::create_directories(folder(i + 1));
  }

  ~process_cluster() {
    for (std::size_t i = 0; i < pids_.size(); ++i)
      kill(static_cast<int>(i + 1), SIGKILL);
    std::error_code ec;
    if (std::getenv("RAFTSYNC_E2E_KEEP") == nullptr) fs::remove_all(base_, ec);
  }

  int size() const { return static_cast<int>(pids_.size()); }
  fs::path folder(int id) const { return base_ / ("node" + std::to_string(id)); }
  fs::path log_file(int id) const { return base_ / ("node" + std::to_string(id) + ".log"); }
  const fs::path& base() const { return base_; }
  bool running(int id) const { return pids_[static_cast<std::size_t>(id - 1)] > 0; }

  // Starts node `id` (its folder must exist). `extra` flags are appended (for example --join).
  // `members` (default: every node of the cluster) are the ids passed as --peer.
  void start(int id, std::vector<std::string> extra = {}, std::vector<int> members = {}) {
    if (members.empty()) {
      for (int peer = 1; peer <= size(); ++peer)
        members.push_back(peer);
    }
    std::vector<std::string> args = {
        binary_,
        "--id",
        std::to_string(id),
        "--dir",
        folder(id).string(),
        "--listen",
        "127.0.0.1:" + std::to_string(ports_[static_cast<std::size_t>(id - 1)]),
        "--secret-file",
        secret_file_.string(),
        "--log-level",
        std::getenv("RAFTSYNC_E2E_LOG_LEVEL") != nullptr ? std::getenv("RAFTSYNC_E2E_LOG_LEVEL")
                                                         : "info"};
    for (int peer : members) {
      if (peer == id) continue;
      args.push_back("--peer");
      args.push_back(std::to_string(peer) +
                     "=127.0.0.1:" + std::to_string(ports_[static_cast<std::size_t>(peer - 1)]));
    }
    args.insert(args.end(), extra.begin(), extra.end());
    const std::string log_path = log_file(id).string();
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (std::string& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pids_[static_cast<std::size_t>(id - 1)] = pid;
  }

  // Sends `signal` to node `id` and reaps it (SIGTERM: graceful stop, SIGKILL: crash).
  void kill(int id, int signal) {
    pid_t& pid = pids_[static_cast<std::size_t>(id - 1)];
    if (pid <= 0) return;
    ::kill(pid, signal);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
  }

  // True if every running node exited by the harness only (none died on its own).
  bool all_alive() const {
    for (pid_t pid : pids_) {
      if (pid <= 0) continue;
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) != 0) return false;
    }
    return true;
  }

  std::uint16_t port(int id) const { return ports_[static_cast<std::size_t>(id - 1)]; }
  pid_t pid(int id) const { return pids_[static_cast<std::size_t>(id - 1)]; }

  // Runs `raftsync <verb> --dir folder(id) ...` and returns its exit code and output.
  int control(int id, const std::string& verb, std::string* output = nullptr,
              const std::string& extra = "") {
    const std::string command =
        binary_ + " " + verb + " --dir " + folder(id).string() + " " + extra + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return -1;
    std::string text;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr)
      text += buffer;
    const int status = ::pclose(pipe);
    if (output != nullptr) *output = text;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Waits until the node answers status requests.
  bool wait_ready(int id, std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] { return control(id, "status") == 0; }, timeout);
  }

  // Waits until some node reports itself leader; returns its id or 0.
  int wait_leader(std::chrono::milliseconds timeout = 20s) {
    int leader = 0;
    wait_until(
        [&] {
          for (int id = 1; id <= size(); ++id) {
            if (!running(id)) continue;
            std::string out;
            if (control(id, "status", &out) == 0 &&
                out.find("\"role\":\"leader\"") != std::string::npos) {
              leader = id;
              return true;
            }
          }
          return false;
        },
        timeout);
    return leader;
  }

  // Waits until the trees of all running nodes are identical.
  bool wait_converged(std::chrono::milliseconds timeout, std::string* diff = nullptr) {
    std::map<std::string, std::string> first;
    const bool ok = wait_until(
        [&] {
          bool have = false;
          for (int id = 1; id <= size(); ++id) {
            if (!running(id)) continue;
            auto tree = tree_digest(folder(id));
            if (!have) {
              first = std::move(tree);
              have = true;
            } else if (tree != first) {
              return false;
            }
          }
          return true;
        },
        timeout);
    if (!ok && diff != nullptr) *diff = describe_difference();
    return ok;
  }

  // Paths on which the running nodes disagree (for failure messages).
  std::string describe_difference() const {
    std::map<std::string, std::map<int, std::string>> by_path;
    for (int id = 1; id <= size(); ++id) {
      if (!running(id)) continue;
      for (auto& [path, value] : tree_digest(folder(id)))
        by_path[path][id] = value;
    }
    std::string text;
    int shown = 0;
    for (auto& [path, values] : by_path) {
      bool same = true;
      int running_nodes = 0;
      for (int id = 1; id <= size(); ++id)
        running_nodes += running(id) ? 1 : 0;
      if (static_cast<int>(values.size()) != running_nodes) same = false;
      for (auto& [id, value] : values)
        same = same && value == values.begin()->second;
      if (same) continue;
      text += path + ":";
      for (auto& [id, value] : values)
        text += " node" + std::to_string(id) + "=" + value;
      text += "\n";
      if (++shown == 20) break;
    }
    return text;
  }

 private:
  std::string binary_;
  fs::path base_;
  fs::path secret_file_;
  std::vector<std::uint16_t> ports_;
  std::vector<pid_t> pids_;
};

// The last `lines` lines of every node's log, for failure messages (CI keeps no files).
inline std::string log_tails(const process_cluster& cluster, std::size_t lines = 25) {
  std::string out;
  for (int id = 1; id <= cluster.size(); ++id) {
    std::vector<std::string> all;
    std::ifstream in(cluster.log_file(id));
    for (std::string line; std::getline(in, line);)
      all.push_back(line);
    out += "--- node " + std::to_string(id) + " log (last lines)\n";
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
      out += all[i] + "\n";
  }
  return out;
}

}  // namespace raftsync::e2e
