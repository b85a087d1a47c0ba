// chaos_peer — a hostile but authenticated raftsync peer for the chaos harness
// (tests/chaos/chaos.py, docs/reliability.md "Forged peers"). It speaks the real protocol through
// raftsync::transport (the same handshake, frames and codec as the node program) and knows the
// cluster secret, so the cluster can only refuse what it sends on the merits of the messages
// themselves.
//
//   chaos_peer capture --id N --listen HOST:PORT --peer ID=HOST:PORT... --secret-file F
//                      --out FILE --seconds S
//       Stands in for member N while the real node N is down: the lower-id members dial it and
//       authenticate. It answers heartbeats (so the leader keeps probing it with appends that carry
//       real log entries), never acknowledges an append or grants a vote, and writes every Raft
//       message it received to FILE (encoded frames, the wire format) after S seconds. FILE.ready
//       appears once every --peer has authenticated (or S/2 seconds passed).
//   chaos_peer replay  --id N --peer ID=HOST:PORT... --secret-file F --in FILE --seconds S
//                      [--rewrite-from]
//       Dials every peer as N and sends it every captured message that node N sent (to whichever
//       node it was first addressed: `to` is rewritten to the peer dialed). --rewrite-from replays
//       every captured message as if N had sent it (for an id that is not a member). Then listens
//       S seconds for the answers.
//   chaos_peer propose --id N --peer ID=HOST:PORT... --secret-file F --seconds S --tag T
//                      [--origin O] [--sequence-base Q] [--abs-path P] [--escape-link L]
//                      [--existing P]
//       Sends each peer forwarded proposals (message type propose, as a follower forwards a local
//       change) whose folder command carries a hostile path: "../x", an absolute path, a NUL, a
//       path through the symlink L (which the harness made point outside the root), "a/../../x",
//       and a rename, mkdir, symlink and remove that leave the root.
//
// Every mode ends by printing one line "CHAOS_PEER {json}" to stdout: per peer whether the
// connection authenticated, what was sent (count and terms by type) and what came back (count,
// highest term and rejections by type). Exit status 0 unless an argument or the transport failed.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "raftsync/folder/command.hpp"
#include "raftsync/folder/sha256.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/transport/codec.hpp"
#include "raftsync/transport/handshake.hpp"
#include "raftsync/transport/tcp_transport.hpp"

namespace {

using namespace raftsync;
using raft::message_type;
using raft::node_id;

struct options {
  std::string mode;
  node_id id = raft::no_node;
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 0;
  std::map<node_id, transport::peer_address> peers;
  std::string secret;
  std::string cluster_name = "raftsync";
  std::string in_file;
  std::string out_file;
  double seconds = 3.0;
  bool rewrite_from = false;
  std::string tag = "chaos";
  node_id origin = raft::no_node;  // default: id
  std::uint64_t sequence_base = 1;
  std::string abs_path = "/tmp/raftsync-chaos-absolute.txt";
  std::string escape_link;
  std::string existing;
};

bool parse_host_port(std::string_view text, std::string* host, std::uint16_t* port) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  *host = std::string(text.substr(0, colon));
  try {
    const unsigned long value = std::stoul(std::string(text.substr(colon + 1)));
    if (value == 0 || value > 65535) return false;
    *port = static_cast<std::uint16_t>(value);
  } catch (...) {
    return false;
  }
  return true;
}

std::optional<options> parse(int argc, char** argv, std::string* error) {
  options o;
  if (argc < 2) {
    *error = "usage: chaos_peer capture|replay|propose --id N --peer ID=HOST:PORT ... (see source)";
    return std::nullopt;
  }
  o.mode = argv[1];
  if (o.mode != "capture" && o.mode != "replay" && o.mode != "propose") {
    *error = "unknown mode " + o.mode;
    return std::nullopt;
  }
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--rewrite-from") {
      o.rewrite_from = true;
      continue;
    }
    if (i + 1 >= argc) {
      *error = flag + " needs a value";
      return std::nullopt;
    }
    const std::string value = argv[++i];
    try {
      if (flag == "--id") {
        o.id = std::stoull(value);
      } else if (flag == "--listen") {
        if (!parse_host_port(value, &o.listen_host, &o.listen_port)) {
          *error = "bad --listen " + value;
          return std::nullopt;
        }
      } else if (flag == "--peer") {
        const auto eq = value.find('=');
        transport::peer_address address;
        if (eq == std::string::npos ||
            !parse_host_port(value.substr(eq + 1), &address.host, &address.port)) {
          *error = "bad --peer " + value;
          return std::nullopt;
        }
        o.peers[std::stoull(value.substr(0, eq))] = address;
      } else if (flag == "--secret-file") {
        std::ifstream in(value, std::ios::binary);
        std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r'))
          secret.pop_back();
        o.secret = secret;
      } else if (flag == "--cluster-id") {
        o.cluster_name = value;
      } else if (flag == "--in") {
        o.in_file = value;
      } else if (flag == "--out") {
        o.out_file = value;
      } else if (flag == "--seconds") {
        o.seconds = std::stod(value);
      } else if (flag == "--tag") {
        o.tag = value;
      } else if (flag == "--origin") {
        o.origin = std::stoull(value);
      } else if (flag == "--sequence-base") {
        o.sequence_base = std::stoull(value);
      } else if (flag == "--abs-path") {
        o.abs_path = value;
      } else if (flag == "--escape-link") {
        o.escape_link = value;
      } else if (flag == "--existing") {
        o.existing = value;
      } else {
        *error = "unknown flag " + flag;
        return std::nullopt;
      }
    } catch (...) {
      *error = "bad value for " + flag + ": " + value;
      return std::nullopt;
    }
  }
  if (o.id == raft::no_node) *error = "--id is required";
  if (o.secret.size() < transport::cluster_secret_bytes_min) *error = "--secret-file: too short";
  if (o.peers.empty()) *error = "at least one --peer is required";
  if (o.mode == "capture" && (o.listen_port == 0 || o.out_file.empty()))
    *error = "capture needs --listen and --out";
  if (o.mode == "replay" && o.in_file.empty()) *error = "replay needs --in";
  if (!error->empty()) return std::nullopt;
  if (o.origin == raft::no_node) o.origin = o.id;
  return o;
}

// The node program binds its cluster name into the handshake as the first 8 bytes of its SHA-256
// read big-endian (0 becomes 1): src/node/replicated_folder.cpp, node_detail::cluster_id_hash.
std::uint64_t cluster_id_of(std::string_view name) {
  const folder::digest digest = folder::sha256(name);
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < 8; ++i)
    value = (value << 8) | digest[i];
  return value == 0 ? 1 : value;
}

const char* type_name(message_type t) {
  switch (t) {
    case message_type::propose:
      return "propose";
    case message_type::append:
      return "append";
    case message_type::append_response:
      return "append_response";
    case message_type::vote:
      return "vote";
    case message_type::vote_response:
      return "vote_response";
    case message_type::pre_vote:
      return "pre_vote";
    case message_type::pre_vote_response:
      return "pre_vote_response";
    case message_type::snapshot:
      return "snapshot";
    case message_type::heartbeat:
      return "heartbeat";
    case message_type::heartbeat_response:
      return "heartbeat_response";
    case message_type::transfer_leader:
      return "transfer_leader";
    case message_type::timeout_now:
      return "timeout_now";
    case message_type::read_index:
      return "read_index";
    case message_type::read_index_response:
      return "read_index_response";
    default:
      return "other";
  }
}

// Count, lowest and highest term and rejections of the messages of one type.
struct tally {
  std::uint64_t count = 0;
  std::uint64_t term_min = UINT64_MAX;
  std::uint64_t term_max = 0;
  std::uint64_t rejected = 0;
  std::uint64_t entries = 0;

  void add(const raft::message& m) {
    ++count;
    term_min = std::min(term_min, m.term);
    term_max = std::max(term_max, m.term);
    if (m.reject) ++rejected;
    entries += m.entries.size();
  }
  std::string json() const {
    return fmt::format(
        R"({{"count": {}, "term_min": {}, "term_max": {}, "rejected": {}, "entries": {}}})", count,
        count == 0 ? 0 : term_min, term_max, rejected, entries);
  }
};

using tallies = std::map<std::string, tally>;

std::string json_of(const tallies& t) {
  std::string out = "{";
  for (const auto& [name, v] : t) {
    if (out.size() > 1) out += ", ";
    out += fmt::format(R"("{}": {})", name, v.json());
  }
  return out + "}";
}

class peer_session {
 public:
  explicit peer_session(const options& o) : options_(o) {}

  bool start(bool listen) {
    transport::tcp_transport_config config;
    config.id = options_.id;
    config.cluster_id = cluster_id_of(options_.cluster_name);
    config.secret = options_.secret;
    config.listen_address = options_.listen_host;
    config.listen_port = listen ? options_.listen_port : 0;
    config.peers = options_.peers;
    config.log = [](transport::log_level level, std::string_view message) {
      std::fprintf(stderr, "chaos_peer [%s] %.*s\n", transport::to_string(level),
                   static_cast<int>(message.size()), message.data());
    };
    auto created = transport::tcp_transport::create(config);
    if (!created) {
      std::fprintf(stderr, "chaos_peer: cannot create the transport: %s\n",
                   created.error().message().c_str());
      return false;
    }
    transport_ = std::move(*created);
    transport_->set_receive_handler([this](transport::envelope e) { on_receive(std::move(e)); });
    if (std::error_code ec = transport_->start()) {
      std::fprintf(stderr, "chaos_peer: cannot listen: %s\n", ec.message().c_str());
      return false;
    }
    return true;
  }

  void send(node_id to, raft::message m) {
    m.from = options_.id;
    m.to = to;
    {
      std::lock_guard lock(mu_);
      sent_[to][type_name(m.type)].add(m);
    }
    transport::envelope e;
    e.from = options_.id;
    e.to = to;
    e.body = std::move(m);
    transport_->send(std::move(e));
  }

  // Waits until every peer has an authenticated connection or `timeout` passes.
  void wait_connected(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto metrics = transport_->metrics();
      bool all = true;
      for (const auto& [id, address] : options_.peers) {
        auto it = metrics.peers.find(id);
        if (it == metrics.peers.end() || !it->second.connected) all = false;
      }
      if (all) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  void run_for(double seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long>(seconds * 1000)));
  }

  // Stops the transport; returns the summary line.
  std::string finish() {
    const auto metrics = transport_->metrics();
    transport_->stop();
    std::lock_guard lock(mu_);
    std::string peers = "{";
    std::map<node_id, bool> ids;
    for (const auto& [id, address] : options_.peers)
      ids[id] = true;
    for (const auto& [id, v] : received_)
      ids[id] = true;
    for (const auto& [id, unused] : ids) {
      auto it = metrics.peers.find(id);
      const bool authenticated =
          it != metrics.peers.end() && (it->second.connected || it->second.messages_received > 0 ||
                                        it->second.messages_sent > 0);
      if (peers.size() > 1) peers += ", ";
      peers += fmt::format(
          R"("{}": {{"authenticated": {}, "messages_sent": {}, "handshake_failures": {}, "sent": {}, "received": {}}})",
          id, authenticated ? "true" : "false",
          it == metrics.peers.end() ? 0 : it->second.messages_sent,
          it == metrics.peers.end() ? 0 : it->second.handshake_failures, json_of(sent_[id]),
          json_of(received_[id]));
    }
    peers += "}";
    return fmt::format(R"({{"mode": "{}", "id": {}, "peers": {}, "captured": {}}})", options_.mode,
                       options_.id, peers, captured_.size());
  }

  std::vector<transport::envelope> captured() {
    std::lock_guard lock(mu_);
    return captured_;
  }

 private:
  void on_receive(transport::envelope e) {
    const auto* m = std::get_if<raft::message>(&e.body);
    if (m == nullptr) return;  // snapshot data and the like: not replayed
    std::optional<raft::message> answer;
    {
      std::lock_guard lock(mu_);
      received_[e.from][type_name(m->type)].add(*m);
      if (options_.mode == "capture") captured_.push_back(e);
    }
    if (options_.mode == "capture" && m->type == message_type::heartbeat) {
      // Liveness only: a heartbeat response claims no log entries, so the leader's commit rule is
      // untouched; it makes the leader probe us with appends that carry real entries.
      raft::message r;
      r.type = message_type::heartbeat_response;
      r.term = m->term;
      r.context = m->context;
      answer = std::move(r);
    }
    if (answer) send(e.from, std::move(*answer));
  }

  const options& options_;
  std::unique_ptr<transport::tcp_transport> transport_;
  std::mutex mu_;
  std::map<node_id, tallies> sent_;
  std::map<node_id, tallies> received_;
  std::vector<transport::envelope> captured_;
};

int capture(const options& o) {
  peer_session session(o);
  if (!session.start(true)) return 2;
  // Tell the harness when every member has dialed in and authenticated: <out>.ready.
  const auto started = std::chrono::steady_clock::now();
  session.wait_connected(std::chrono::milliseconds(static_cast<long>(o.seconds * 500)));
  { std::ofstream ready(o.out_file + ".ready"); }
  const double spent =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (spent < o.seconds) session.run_for(o.seconds - spent);
  const std::vector<transport::envelope> messages = session.captured();
  std::string summary = session.finish();
  std::string bytes;
  for (const transport::envelope& e : messages)
    transport::encode_envelope(e, bytes);
  std::ofstream out(o.out_file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "chaos_peer: cannot write %s\n", o.out_file.c_str());
    return 2;
  }
  std::printf("CHAOS_PEER %s\n", summary.c_str());
  return 0;
}

int replay(const options& o) {
  std::ifstream in(o.in_file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<raft::message> messages;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    auto frame = transport::parse_frame(std::string_view(bytes).substr(pos),
                                        transport::default_max_frame_bytes);
    if (!frame || !frame->has_value()) {
      std::fprintf(stderr, "chaos_peer: %s is damaged at byte %zu\n", o.in_file.c_str(), pos);
      return 2;
    }
    pos += (*frame)->size_bytes;
    auto e = transport::decode_envelope(**frame);
    if (!e) continue;
    const auto* m = std::get_if<raft::message>(&e->body);
    if (m == nullptr) continue;
    if (o.rewrite_from || m->from == o.id) messages.push_back(*m);
  }
  peer_session session(o);
  if (!session.start(false)) return 2;
  session.wait_connected(std::chrono::milliseconds(3000));
  for (const auto& [peer, address] : o.peers) {
    for (const raft::message& m : messages)
      session.send(peer, m);
  }
  session.run_for(o.seconds);
  std::printf("CHAOS_PEER %s\n", session.finish().c_str());
  return 0;
}

std::vector<folder::command> hostile_commands(const options& o) {
  std::vector<folder::command> out;
  const std::int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  auto make = [&](folder::command_kind kind, std::string path) {
    folder::command c;
    c.kind = kind;
    c.origin = o.origin;
    c.sequence = o.sequence_base + out.size();
    c.path = std::move(path);
    c.timestamp_ns = now_ns;
    c.mode = 0644;
    c.mtime_ns = now_ns;
    if (kind == folder::command_kind::write) {
      c.content = fmt::format("chaos hostile write {} {}\n", o.tag, out.size());
    }
    out.push_back(std::move(c));
    return &out.back();
  };
  make(folder::command_kind::write, fmt::format("../chaos-escape-{}.txt", o.tag));
  make(folder::command_kind::write, fmt::format("a/../../chaos-escape2-{}.txt", o.tag));
  make(folder::command_kind::write, o.abs_path);
  make(folder::command_kind::write,
       fmt::format("chaos-nul-{}", o.tag) + std::string(1, '\0') + "/../../../chaos-nul.txt");
  if (!o.escape_link.empty()) {
    make(folder::command_kind::write,
         fmt::format("{}/chaos-through-link-{}.txt", o.escape_link, o.tag));
    make(folder::command_kind::mkdir,
         fmt::format("{}/chaos-dir-through-link-{}", o.escape_link, o.tag));
  }
  make(folder::command_kind::mkdir, fmt::format("../chaos-dir-{}", o.tag));
  make(folder::command_kind::symlink, fmt::format("../chaos-link-{}", o.tag))->target = "/";
  make(folder::command_kind::remove, fmt::format("../chaos-sentinel-{}.txt", o.tag));
  if (!o.existing.empty()) {
    make(folder::command_kind::rename, o.existing)->target =
        fmt::format("../chaos-renamed-{}.txt", o.tag);
    if (!o.escape_link.empty()) {
      make(folder::command_kind::rename, o.existing)->target =
          fmt::format("{}/chaos-renamed-through-link-{}.txt", o.escape_link, o.tag);
    }
  }
  return out;
}

int propose(const options& o) {
  const std::vector<folder::command> commands = hostile_commands(o);
  peer_session session(o);
  if (!session.start(false)) return 2;
  session.wait_connected(std::chrono::milliseconds(3000));
  for (const auto& [peer, address] : o.peers) {
    for (const folder::command& c : commands) {
      raft::message m;
      m.type = message_type::propose;  // term 0: a follower's forwarded proposal
      raft::entry e;
      e.type = raft::entry_type::normal;
      e.data = folder::encode_command(c);
      m.entries.push_back(std::move(e));
      session.send(peer, std::move(m));
    }
  }
  session.run_for(o.seconds);
  std::string summary = session.finish();
  std::printf("CHAOS_PEER %s\n", summary.c_str());
  for (const folder::command& c : commands) {
    std::string shown;
    for (char ch : folder::describe(c))
      shown += ch == '\0' ? std::string("\\0") : std::string(1, ch);
    std::printf("CHAOS_PEER_COMMAND %s\n", shown.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string error;
  auto o = parse(argc, argv, &error);
  if (!o) {
    std::fprintf(stderr, "chaos_peer: %s\n", error.c_str());
    return 64;
  }
  if (o->mode == "capture") return capture(*o);
  if (o->mode == "replay") return replay(*o);
  return propose(*o);
}
