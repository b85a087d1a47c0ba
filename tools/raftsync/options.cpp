#include "options.hpp"

#include <charconv>
#include <set>

namespace raftsync::tool {
namespace {

bool parse_u64(const std::string& text, std::uint64_t* value) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *value);
  return ec == std::errc{} && ptr == end;
}

}  // namespace

bool parse_host_port(const std::string& text, std::string* host, std::uint16_t* port) {
  std::string host_part;
  std::string port_part;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host_part = text.substr(1, close - 1);
    port_part = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host_part = text.substr(0, colon);
    port_part = text.substr(colon + 1);
  }
  std::uint64_t value = 0;
  if (host_part.empty() || !parse_u64(port_part, &value) || value > 65535) return false;
  *host = host_part;
  *port = static_cast<std::uint16_t>(value);
  return true;
}

const char* usage_text() {
  return R"(raftsync — a strongly consistent replicated folder

usage:
  raftsync --id N --dir FOLDER --listen HOST:PORT --peer ID=HOST:PORT... --secret-file FILE [options]
  raftsync status --dir FOLDER [--state-dir DIR]
  raftsync flush  --dir FOLDER [--state-dir DIR] [--timeout-ms N] [--all]
  raftsync --help | --version

run options:
  --id N               this node's id (1..2^64-1), unique in the cluster
  --dir FOLDER         the folder to replicate (must exist)
  --state-dir DIR      where the log and the manifest live (default FOLDER/.raftsync)
  --listen HOST:PORT   address to listen on for peers (default 127.0.0.1:7001)
  --peer ID=HOST:PORT  another member; repeat for each (all initial members list each other)
  --secret-file FILE   file holding the cluster secret (at least 16 bytes; trailing newline ignored)
  --cluster-id NAME    cluster name bound into the handshake (default raftsync)
  --join               start empty and wait to be added by the current leader
  --watcher NAME       native (default), inotify, libuv or polling
  --ignore GLOB        do not replicate matching relative paths; repeatable
  --tick-ms N          Raft tick in milliseconds (default 10)
  --snapshot-entries N take a log snapshot (and compact) every N applied entries (default 10000)
  --chunk-bytes N      large files travel in chunks of N bytes (default 1 MiB; same on all nodes)
  --log-level LEVEL    error, warn, info (default) or debug

  raftsync add-node        --dir FOLDER --node ID=HOST:PORT [--learner]
  raftsync remove-node     --dir FOLDER --node ID
  raftsync transfer-leader --dir FOLDER --node ID

control commands talk to the running node through DIR/control.sock:
  status               prints the node's status as JSON
  flush                returns once every change made before the call is committed
                       (--all: and applied on every live member); exit 1 on timeout
  add-node             (on the leader) adds a member; start the new node with --join
  remove-node          (on the leader) removes a member
  transfer-leader      hands leadership to the given member
)";
}

std::optional<options> parse_options(const std::vector<std::string>& args, std::string* error) {
  options result;
  std::size_t i = 0;
  if (!args.empty()) {
    if (args[0] == "status") {
      result.command = command_kind::status;
      i = 1;
    } else if (args[0] == "flush") {
      result.command = command_kind::flush;
      i = 1;
    } else if (args[0] == "add-node") {
      result.command = command_kind::add_node;
      i = 1;
    } else if (args[0] == "remove-node") {
      result.command = command_kind::remove_node;
      i = 1;
    } else if (args[0] == "transfer-leader") {
      result.command = command_kind::transfer_leader;
      i = 1;
    } else if (args[0] == "run") {
      i = 1;
    }
  }
  bool listen_given = false;
  std::set<std::uint64_t> peer_ids;
  auto need_value = [&](const std::string& flag) -> const std::string* {
    if (i + 1 >= args.size()) {
      *error = "missing value after " + flag;
      return nullptr;
    }
    return &args[++i];
  };
  for (; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "--help" || flag == "-h") {
      result.command = command_kind::help;
      return result;
    }
    if (flag == "--version") {
      result.command = command_kind::version;
      return result;
    }
    if (flag == "--join") {
      result.config.join_existing = true;
      continue;
    }
    if (flag == "--all") {
      result.flush_all = true;
      continue;
    }
    if (flag == "--learner") {
      result.learner = true;
      continue;
    }
    const std::string* value = need_value(flag);
    if (value == nullptr) return std::nullopt;
    std::uint64_t number = 0;
    if (flag == "--id") {
      if (!parse_u64(*value, &number) || number == 0) {
        *error = "--id needs a positive integer, got '" + *value + "'";
        return std::nullopt;
      }
      result.config.id = number;
    } else if (flag == "--dir") {
      result.config.root = *value;
    } else if (flag == "--state-dir") {
      result.config.state_dir = *value;
    } else if (flag == "--listen") {
      if (!parse_host_port(*value, &result.config.listen_host, &result.config.listen_port)) {
        *error = "--listen needs HOST:PORT, got '" + *value + "'";
        return std::nullopt;
      }
      listen_given = true;
    } else if (flag == "--peer") {
      auto equals = value->find('=');
      peer_address peer;
      if (equals == std::string::npos || !parse_u64(value->substr(0, equals), &number) ||
          number == 0 || !parse_host_port(value->substr(equals + 1), &peer.host, &peer.port)) {
        *error = "--peer needs ID=HOST:PORT, got '" + *value + "'";
        return std::nullopt;
      }
      if (!peer_ids.insert(number).second) {
        *error = "--peer " + std::to_string(number) + " given twice";
        return std::nullopt;
      }
      peer.id = number;
      result.config.peers.push_back(peer);
    } else if (flag == "--node") {
      // ID=HOST:PORT (add-node) or ID (remove-node, transfer-leader).
      auto equals = value->find('=');
      if (!parse_u64(value->substr(0, equals), &number) || number == 0 ||
          (equals != std::string::npos &&
           !parse_host_port(value->substr(equals + 1), &result.member.host, &result.member.port))) {
        *error = "--node needs ID or ID=HOST:PORT, got '" + *value + "'";
        return std::nullopt;
      }
      result.member.id = number;
    } else if (flag == "--secret-file") {
      result.secret_file = *value;
    } else if (flag == "--cluster-id") {
      result.config.cluster_id = *value;
    } else if (flag == "--watcher") {
      if (*value == "native") {
        result.config.watcher = watcher_backend::native;
      } else if (*value == "inotify") {
        result.config.watcher = watcher_backend::inotify;
      } else if (*value == "libuv") {
        result.config.watcher = watcher_backend::libuv;
      } else if (*value == "polling") {
        result.config.watcher = watcher_backend::polling;
      } else {
        *error = "--watcher must be native, inotify, libuv or polling, got '" + *value + "'";
        return std::nullopt;
      }
    } else if (flag == "--ignore") {
      result.config.ignore.push_back(*value);
    } else if (flag == "--tick-ms") {
      if (!parse_u64(*value, &number) || number == 0 || number > 10000) {
        *error = "--tick-ms needs an integer in 1..10000, got '" + *value + "'";
        return std::nullopt;
      }
      result.config.tick_interval = std::chrono::milliseconds(number);
    } else if (flag == "--snapshot-entries") {
      if (!parse_u64(*value, &number) || number < 16) {
        *error = "--snapshot-entries needs an integer >= 16, got '" + *value + "'";
        return std::nullopt;
      }
      result.config.snapshot_entries = number;
    } else if (flag == "--chunk-bytes") {
      if (!parse_u64(*value, &number) || number < 4096 || number > (64u << 20)) {
        *error = "--chunk-bytes needs an integer in [4096, 67108864], got '" + *value + "'";
        return std::nullopt;
      }
      result.config.chunk_bytes = number;
    } else if (flag == "--timeout-ms") {
      if (!parse_u64(*value, &number) || number == 0 || number > 86400000) {
        *error = "--timeout-ms needs a positive integer, got '" + *value + "'";
        return std::nullopt;
      }
      result.flush_timeout_ms = static_cast<std::uint32_t>(number);
    } else if (flag == "--log-level") {
      if (*value != "error" && *value != "warn" && *value != "info" && *value != "debug") {
        *error = "--log-level must be error, warn, info or debug, got '" + *value + "'";
        return std::nullopt;
      }
      result.log_level = *value;
    } else {
      *error = "unknown option '" + flag + "' (see --help)";
      return std::nullopt;
    }
  }
  if (result.config.root.empty()) {
    *error = "--dir is required";
    return std::nullopt;
  }
  if (result.config.state_dir.empty()) result.config.state_dir = result.config.root / ".raftsync";
  if (result.command == command_kind::add_node && result.member.port == 0) {
    *error = "add-node needs --node ID=HOST:PORT";
    return std::nullopt;
  }
  if ((result.command == command_kind::remove_node ||
       result.command == command_kind::transfer_leader) &&
      result.member.id == 0) {
    *error = "this command needs --node ID";
    return std::nullopt;
  }
  if (result.command != command_kind::run) return result;
  if (result.config.id == 0) {
    *error = "--id is required";
    return std::nullopt;
  }
  if (peer_ids.count(result.config.id) != 0) {
    *error = "--peer lists this node's own id " + std::to_string(result.config.id);
    return std::nullopt;
  }
  if (result.secret_file.empty()) {
    *error = "--secret-file is required (peers authenticate with the cluster secret)";
    return std::nullopt;
  }
  if (!listen_given) {
    result.config.listen_host = "127.0.0.1";
    result.config.listen_port = 7001;
  }
  return result;
}

}  // namespace raftsync::tool
