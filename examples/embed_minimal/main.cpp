// embed_minimal — a host application that runs a replicated folder inside its own Asio loop.
//
//   embed_minimal ID FOLDER PORT [PEER_ID=HOST:PORT ...]
// The cluster secret comes from the RAFTSYNC_SECRET environment variable (at least 16 bytes).
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>

#include <raftsync/raftsync.hpp>

int main(int argc, char** argv) {
  if (argc < 4 || std::getenv("RAFTSYNC_SECRET") == nullptr) {
    std::fprintf(stderr,
                 "usage: RAFTSYNC_SECRET=... embed_minimal ID FOLDER PORT [ID=HOST:PORT ...]\n");
    return 2;
  }
  raftsync::replicated_folder_config config;
  config.id = std::stoull(argv[1]);
  config.root = argv[2];
  config.listen_port = static_cast<std::uint16_t>(std::stoi(argv[3]));
  config.secret = std::getenv("RAFTSYNC_SECRET");
  for (int i = 4; i < argc; ++i) {  // "2=127.0.0.1:7002"
    std::string peer = argv[i];
    auto eq = peer.find('='), colon = peer.rfind(':');
    if (eq == std::string::npos || colon == std::string::npos || colon < eq) return 2;
    config.peers.push_back({std::stoull(peer.substr(0, eq)), peer.substr(eq + 1, colon - eq - 1),
                            static_cast<std::uint16_t>(std::stoi(peer.substr(colon + 1)))});
  }

  boost::asio::io_context io;  // the application's own event loop
  raftsync::replicated_folder folder(config, io.get_executor());
  folder.on_applied([](const raftsync::applied_change& change) {
    std::printf("applied #%llu %s %s\n", static_cast<unsigned long long>(change.index),
                change.kind.c_str(), change.path.c_str());
  });

  // start() and stop() wait for the node's strand: call them from a thread other than the one
  // running the loop.
  std::thread loop([&io] {
    auto work = boost::asio::make_work_guard(io);
    io.run();
  });
  if (std::error_code ec = folder.start()) {
    std::fprintf(stderr, "start failed: %s\n", ec.message().c_str());
    io.stop();
    loop.join();
    return 1;
  }
  std::printf("node %llu replicating %s on port %u; Ctrl-C stops\n",
              static_cast<unsigned long long>(config.id), argv[2], folder.listen_port());
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  std::promise<void> stop_requested;
  signals.async_wait([&](auto, int) { stop_requested.set_value(); });
  stop_requested.get_future().wait();
  folder.stop();
  io.stop();
  loop.join();
  return 0;
}
