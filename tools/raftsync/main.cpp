// raftsync — the node program. Runs one member of a replicated folder until SIGINT/SIGTERM, and
// answers `raftsync status` / `raftsync flush` on a Unix socket in its state directory.
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "options.hpp"
#include "raftsync/replicated_folder.hpp"
#include "raftsync/version.hpp"

namespace asio = boost::asio;
using local_socket = asio::local::stream_protocol::socket;

namespace raftsync::tool {
namespace {

int log_threshold = 2;  // 0 error, 1 warn, 2 info, 3 debug

void log_line(int level, const std::string& text) {
  if (level > log_threshold) return;
  static const char* names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
  auto now = std::chrono::system_clock::now();
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch());
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  fmt::print(stderr, "{:%H:%M:%S}.{:06} {} {}\n", utc, micros.count() % 1000000, names[level],
             text);
  std::fflush(stderr);
}

std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string status_json(const folder_status& s) {
  std::string peers;
  for (const peer_progress& p : s.peers) {
    if (!peers.empty()) peers += ",";
    peers += fmt::format(
        R"({{"id":{},"match_index":{},"next_index":{},"state":"{}","learner":{},"connected":{}}})",
        p.id, p.match_index, p.next_index, p.state, p.learner, p.connected);
  }
  std::string halted;
  for (const std::string& reason : s.halted_reasons) {
    if (!halted.empty()) halted += ",";
    halted += "\"" + json_escape(reason) + "\"";
  }
  return fmt::format(
      R"({{"id":{},"role":"{}","term":{},"leader":{},"commit_index":{},"applied_index":{},)"
      R"("last_index":{},"pending_proposals":{},"unread_changes":{},"leader_changes":{},)"
      R"("files":{},"stale_messages":{},"peers":[{}],)"
      R"("halted_reasons":[{}]}})",
      s.id, s.role, s.term, s.leader, s.commit_index, s.applied_index, s.last_index,
      s.pending_proposals, s.unread_changes, s.leader_changes, s.files, s.stale_messages, peers,
      halted);
}

// Serves one request line per connection: "status" or "flush <timeout_ms> <all 0|1>".
class control_server {
 public:
  control_server(asio::io_context& io, const std::filesystem::path& socket_path,
                 replicated_folder& folder)
      : io_(io), acceptor_(io), folder_(folder), socket_path_(socket_path) {}

  std::error_code start() {
    std::error_code ignored;
    std::filesystem::remove(socket_path_, ignored);
    boost::system::error_code ec;
    acceptor_.open(asio::local::stream_protocol(), ec);
    if (!ec) acceptor_.bind(socket_path_.string(), ec);
    if (!ec) acceptor_.listen(8, ec);
    if (ec) return std::error_code(ec.value(), std::system_category());
    accept();
    return {};
  }

  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    std::error_code removed;
    std::filesystem::remove(socket_path_, removed);
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, local_socket socket) {
      if (ec) return;
      // Flush may block for its timeout: serve each request on its own short-lived thread so the
      // io_context keeps running the node.
      std::thread([this, s = std::make_shared<local_socket>(std::move(socket))] {
        serve(*s);
      }).detach();
      accept();
    });
  }

  void serve(local_socket& socket) {
    boost::system::error_code ec;
    asio::streambuf buffer;
    asio::read_until(socket, buffer, '\n', ec);
    if (ec) return;
    std::istream in(&buffer);
    std::string verb;
    in >> verb;
    std::string reply;
    if (verb == "status") {
      reply = status_json(folder_.status()) + "\n";
    } else if (verb == "flush") {
      std::uint32_t timeout_ms = 30000;
      int all = 0;
      in >> timeout_ms >> all;
      std::error_code error = folder_.flush(std::chrono::milliseconds(timeout_ms), all != 0);
      reply = error ? "error " + error.message() + "\n" : "ok\n";
    } else if (verb == "add-node" || verb == "remove-node" || verb == "transfer-leader") {
      peer_address member;
      int learner = 0;
      in >> member.id >> member.host >> member.port >> learner;
      std::error_code error;
      if (verb == "add-node") {
        error = folder_.add_node(member, learner != 0);
      } else if (verb == "remove-node") {
        error = folder_.remove_node(member.id);
      } else {
        error = folder_.transfer_leadership(member.id);
      }
      reply = error ? "error " + error.message() + "\n" : "ok\n";
    } else {
      reply = "error unknown request\n";
    }
    asio::write(socket, asio::buffer(reply), ec);
  }

  asio::io_context& io_;
  asio::local::stream_protocol::acceptor acceptor_;
  replicated_folder& folder_;
  std::filesystem::path socket_path_;
};

int run_client(const options& opts) {
  asio::io_context io;
  local_socket socket(io);
  boost::system::error_code ec;
  std::filesystem::path socket_path = opts.config.state_dir / "control.sock";
  socket.connect(socket_path.string(), ec);
  if (ec) {
    fmt::print(stderr, "raftsync: cannot reach the node at {}: {} (is it running?)\n",
               socket_path.string(), ec.message());
    return 2;
  }
  std::string request;
  const std::string host = opts.member.host.empty() ? "-" : opts.member.host;
  switch (opts.command) {
    case command_kind::status:
      request = "status\n";
      break;
    case command_kind::flush:
      request = fmt::format("flush {} {}\n", opts.flush_timeout_ms, opts.flush_all ? 1 : 0);
      break;
    case command_kind::add_node:
      request = fmt::format("add-node {} {} {} {}\n", opts.member.id, host, opts.member.port,
                            opts.learner ? 1 : 0);
      break;
    case command_kind::remove_node:
      request = fmt::format("remove-node {} {} 0 0\n", opts.member.id, host);
      break;
    default:
      request = fmt::format("transfer-leader {} {} 0 0\n", opts.member.id, host);
  }
  asio::write(socket, asio::buffer(request), ec);
  asio::streambuf buffer;
  asio::read_until(socket, buffer, '\n', ec);
  if (ec) {
    fmt::print(stderr, "raftsync: no answer from the node: {}\n", ec.message());
    return 2;
  }
  std::string reply((std::istreambuf_iterator<char>(&buffer)), std::istreambuf_iterator<char>());
  std::fputs(reply.c_str(), stdout);
  return reply.rfind("error", 0) == 0 ? 1 : 0;
}

bool read_secret(const std::filesystem::path& file, std::string* secret, std::string* error) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    *error = fmt::format("cannot read --secret-file {}", file.string());
    return false;
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  *secret = contents.str();
  while (!secret->empty() && (secret->back() == '\n' || secret->back() == '\r'))
    secret->pop_back();
  if (secret->size() < 16) {
    *error = fmt::format("the secret in {} is shorter than 16 bytes", file.string());
    return false;
  }
  return true;
}

int run_node(options opts) {
  std::string error;
  if (!read_secret(opts.secret_file, &opts.config.secret, &error)) {
    fmt::print(stderr, "raftsync: {}\n", error);
    return 2;
  }
  if (std::error_code ec = opts.config.validate(&error)) {
    fmt::print(stderr, "raftsync: invalid configuration: {}\n", error);
    return 2;
  }
  // The node runs on this io_context, driven by one thread; the main thread only starts and
  // stops it (start()/stop() wait for the node's strand, so they must not run on that thread).
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  opts.config.log = [](int level, std::string_view message) {
    log_line(level, std::string(message));
  };
  replicated_folder folder(opts.config, io.get_executor());
  folder.on_applied([](const applied_change& change) {
    std::string what = change.from_path.empty()
                           ? change.path
                           : fmt::format("{} -> {}", change.from_path, change.path);
    log_line(change.conflict_copy ? 1 : 3,
             fmt::format("applied #{} {} {} (from node {}){}", change.index, change.kind, what,
                         change.origin, change.conflict_copy ? " — conflict copy kept" : ""));
  });
  auto shut_down = [&] {
    work.reset();
    io.stop();
    io_thread.join();
  };
  if (std::error_code ec = folder.start()) {
    fmt::print(stderr, "raftsync: cannot start: {}\n", ec.message());
    shut_down();
    return 1;
  }
  log_line(2,
           fmt::format("node {} replicating {} (listening on {}:{})", opts.config.id,
                       opts.config.root.string(), opts.config.listen_host, folder.listen_port()));
  control_server control(io, opts.config.state_dir / "control.sock", folder);
  if (std::error_code ec = control.start()) {
    log_line(1, fmt::format("control socket unavailable: {}", ec.message()));
  }
  // Block SIGINT/SIGTERM here and wait for one on this (the main) thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  log_line(2, fmt::format("signal {}: stopping", signal_number));
  asio::post(io, [&control] { control.stop(); });
  folder.stop();
  shut_down();
  return 0;
}

}  // namespace
}  // namespace raftsync::tool

int main(int argc, char** argv) {
  using namespace raftsync::tool;
  // SIGINT/SIGTERM are taken synchronously by the main thread (sigwait); block them before any
  // thread starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string error;
  std::optional<options> opts = parse_options(args, &error);
  if (!opts) {
    fmt::print(stderr, "raftsync: {}\nrun 'raftsync --help' for usage\n", error);
    return 2;
  }
  switch (opts->command) {
    case command_kind::help:
      std::fputs(usage_text(), stdout);
      return 0;
    case command_kind::version:
      std::printf("raftsync %s\n", RAFTSYNC_VERSION_STRING);
      return 0;
    case command_kind::status:
    case command_kind::flush:
    case command_kind::add_node:
    case command_kind::remove_node:
    case command_kind::transfer_leader:
      return run_client(*opts);
    case command_kind::run:
      break;
  }
  static const std::map<std::string, int> levels = {
      {"error", 0}, {"warn", 1}, {"info", 2}, {"debug", 3}};
  log_threshold = levels.at(opts->log_level);
  return run_node(std::move(*opts));
}
