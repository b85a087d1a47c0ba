// raft_tcp_bench: a 3-node Raft cluster (raw_node + memory_storage) on loopback TCP through
// tcp_transport, each node on its own thread and io_context in this process.
//
// Measures, on the leader: commits/s and per-proposal latency (propose → applied on the leader;
// p50/p99/max µs) for 256 B and 4 KiB entries with 1, 8 and 32 concurrent proposers (closed loop:
// N proposals outstanding, each commit issues the next), a paced mode (one proposal at a time at
// a fixed rate), and a raw TCP ping-pong round trip in the same run as the floor.
//
// With --durable DIR (when built with the storage module) the same matrix runs again on a second
// cluster whose nodes persist through durable_storage in DIR (one fdatasync per ready).
//
//   raft_tcp_bench [--seconds S] [--paced-rate N] [--json FILE] [--durable DIR]
//                  [--only 256x1|256x8|256x32|4096x1|4096x8|4096x32|256paced|4096paced]
//                  [--verbose]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "raft_tcp_driver.hpp"

#ifdef RAFTSYNC_BENCH_DURABLE
#include <filesystem>

#include "raftsync/storage/durable_storage.hpp"
#include "raftsync/storage/file_io.hpp"
#endif

using namespace raftsync;
using namespace raftsync::transport;
using namespace raftsync::transport::test;
using steady = std::chrono::steady_clock;

namespace {

struct options {
  double seconds = 2.0;
  int paced_rate = 1000;  // proposals per second in paced mode
  std::string json;
  std::string durable_dir;  // non-empty: also run with durable_storage (fdatasync) there
  std::string only;         // run one shape: 256x1 ... 4096x32, 256paced, 4096paced
  bool verbose = false;     // print per-link transport metrics
};

struct latency_summary {
  double p50_us = 0, p99_us = 0, max_us = 0;
  std::size_t count = 0;
};

// CPU time consumed by this process (all threads) so far, in seconds. Less sensitive to other
// load on the machine than wall-clock throughput.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one.empty() ? "?" : one + " " + five + " " + fifteen;
}

latency_summary summarize(std::vector<std::uint64_t> ns) {
  latency_summary s;
  s.count = ns.size();
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    auto i = static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1));
    return static_cast<double>(ns[i]) / 1000.0;
  };
  s.p50_us = at(0.50);
  s.p99_us = at(0.99);
  s.max_us = static_cast<double>(ns.back()) / 1000.0;
  return s;
}

struct result_row {
  std::string name;  // table label
  std::string key;   // json prefix
  double commits_per_s = 0;
  double cpu_us_per_commit = 0;  // CPU time of the whole process (all 3 nodes) per commit
  latency_summary latency;
  std::uint64_t errors = 0;
};

result_row labelled(result_row row, const std::string& label, const std::string& key) {
  row.name = label + row.name;
  row.key = key + row.key;
  return row;
}

// --- Raw TCP ping-pong: the floor any request/response over loopback pays. ----------------
result_row tcp_ping_pong(std::size_t payload, int rounds) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  asio::io_context context;
  tcp::acceptor acceptor(context, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = acceptor.local_endpoint().port();
  std::thread echo([&] {
    tcp::socket s(context);
    acceptor.accept(s);
    s.set_option(tcp::no_delay(true));
    std::vector<char> buf(payload);
    boost::system::error_code ec;
    while (true) {
      asio::read(s, asio::buffer(buf), ec);
      if (ec) return;
      asio::write(s, asio::buffer(buf), ec);
      if (ec) return;
    }
  });
  tcp::socket c(context);
  c.connect({asio::ip::make_address("127.0.0.1"), port});
  c.set_option(tcp::no_delay(true));
  std::vector<char> buf(payload, 'p');
  std::vector<std::uint64_t> ns;
  ns.reserve(static_cast<std::size_t>(rounds));
  for (int i = 0; i < rounds + 1000; ++i) {
    const auto t0 = steady::now();
    asio::write(c, asio::buffer(buf));
    asio::read(c, asio::buffer(buf));
    if (i >= 1000)  // warm-up excluded
      ns.push_back(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - t0).count()));
  }
  c.close();
  echo.join();
  result_row row;
  row.name = fmt::format("raw TCP ping-pong {} B", payload);
  row.key = fmt::format("tcp_pingpong_{}b_rtt", payload);
  row.latency = summarize(std::move(ns));
  return row;
}

#ifdef RAFTSYNC_BENCH_DURABLE
// durable_storage (segmented log, one fdatasync per ready) behind the driver's storage seam.
class durable_node_storage final : public node_storage {
 public:
  durable_node_storage(raftsync::storage::file_io& io, std::filesystem::path dir)
      : storage_(io, std::move(dir)) {
    open_error_ = storage_.open();
  }
  const raft::storage& reader() const override { return storage_; }
  std::error_code bootstrap(const raft::conf_state& conf) override {
    if (open_error_) return open_error_;
    return storage_.bootstrap(conf);
  }
  std::error_code save(const raft::ready& rd) override { return storage_.save(rd); }

 private:
  raftsync::storage::durable_storage storage_;
  std::error_code open_error_;
};
#endif

// --- Raft runs, driven on the leader's thread. -------------------------------------------

// One measured run: proposals carry (run id, sequence number) in their first 16 bytes.
struct run_state {
  std::uint64_t run_id = 0;
  std::size_t payload = 256;
  int concurrency = 1;
  bool paced = false;
  std::chrono::nanoseconds pace_interval{0};
  steady::time_point deadline;
  std::vector<steady::time_point> started;  // by sequence number
  std::vector<std::uint64_t> latency_ns;
  int outstanding = 0;
  std::uint64_t errors = 0;
  bool finished = false;
  std::promise<void> done;
  std::unique_ptr<boost::asio::steady_timer> pace_timer;
};

class bench {
 public:
  explicit bench(raft_tcp_node& leader) : leader_(leader) {}

  // Called on the leader's thread for every committed entry.
  void on_apply(const raft::entry& e) {
    run_state* run = current_;
    if (run == nullptr || e.data.size() < 16) return;
    std::uint64_t run_id = 0, seq = 0;
    std::memcpy(&run_id, e.data.data(), 8);
    std::memcpy(&seq, e.data.data() + 8, 8);
    if (run_id != run->run_id || seq >= run->started.size()) return;
    run->latency_ns.push_back(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - run->started[seq])
            .count()));
    --run->outstanding;
    if (!run->paced && steady::now() < run->deadline) propose(*run);
    maybe_finish(*run);
  }

  result_row measure(std::size_t payload, int concurrency, bool paced, int paced_rate,
                     double seconds) {
    run_state run;
    run.run_id = ++next_run_id_;
    run.payload = payload;
    run.concurrency = concurrency;
    run.paced = paced;
    if (paced) run.pace_interval = std::chrono::nanoseconds(1'000'000'000LL / paced_rate);
    auto done = run.done.get_future();
    const auto t0 = steady::now();
    const double cpu0 = process_cpu_seconds();
    leader_.post([this, &run, seconds] {
      current_ = &run;
      run.deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                         std::chrono::duration<double>(seconds));
      if (run.paced) {
        run.pace_timer = std::make_unique<boost::asio::steady_timer>(leader_.context());
        pace(run);
      } else {
        for (int i = 0; i < run.concurrency; ++i)
          propose(run);
      }
    });
    if (done.wait_for(std::chrono::duration<double>(seconds + 10.0)) != std::future_status::ready) {
      // Leadership moved or the cluster stalled: the figures would be meaningless.
      std::fprintf(stderr, "run did not finish (leader change?); aborting\n");
      std::_Exit(1);
    }
    const double elapsed = std::chrono::duration<double>(steady::now() - t0).count();
    const double cpu = process_cpu_seconds() - cpu0;
    result_row row;
    const std::string size =
        payload >= 1024 ? fmt::format("{}k", payload / 1024) : fmt::format("{}b", payload);
    if (paced) {
      row.name = fmt::format("raft {:>5} B paced {}/s", payload, paced_rate);
      row.key = fmt::format("raft_{}_paced", size);
    } else {
      row.name = fmt::format("raft {:>5} B x{:<2} proposers", payload, concurrency);
      row.key = fmt::format("raft_{}_c{}", size, concurrency);
    }
    row.latency = summarize(run.latency_ns);
    row.commits_per_s = static_cast<double>(row.latency.count) / elapsed;
    row.errors = run.errors;
    if (row.latency.count > 0)
      row.cpu_us_per_commit = cpu * 1e6 / static_cast<double>(row.latency.count);
    return row;
  }

 private:
  void propose(run_state& run) {
    std::string data(std::max<std::size_t>(run.payload, 16), 'v');
    const std::uint64_t seq = run.started.size();
    std::memcpy(data.data(), &run.run_id, 8);
    std::memcpy(data.data() + 8, &seq, 8);
    run.started.push_back(steady::now());
    if (auto ec = leader_.raw().propose(std::move(data))) {
      ++run.errors;
      return;
    }
    ++run.outstanding;
    leader_.schedule_ready();
  }

  void pace(run_state& run) {
    if (steady::now() >= run.deadline) {
      maybe_finish(run);
      return;
    }
    if (run.outstanding == 0) propose(run);
    run.pace_timer->expires_after(run.pace_interval);
    run.pace_timer->async_wait([this, &run](boost::system::error_code ec) {
      if (!ec) pace(run);
    });
  }

  void maybe_finish(run_state& run) {
    if (run.finished || run.outstanding > 0 || steady::now() < run.deadline) return;
    run.finished = true;
    current_ = nullptr;
    run.done.set_value();
  }

  raft_tcp_node& leader_;
  run_state* current_ = nullptr;  // leader thread only
  std::uint64_t next_run_id_ = 0;
};

// Runs the whole matrix on a fresh 3-node cluster; rows are labelled with `label`/`key`
// prefixes. `storage` makes each node's storage (empty: memory_storage).
bool run_cluster(const options& opt, const std::string& label, const std::string& key,
                 const std::function<std::unique_ptr<node_storage>(node_id)>& storage,
                 std::vector<result_row>& rows) {
  // The bench's leader thread calls into `b`; created before the nodes run.
  raft_tcp_node* leader_node = nullptr;
  std::unique_ptr<bench> b;
  std::atomic<bench*> bench_ptr{nullptr};
  std::atomic<node_id> leader_id{raft::no_node};
  raft_tcp_options ropt;
  ropt.tick = std::chrono::milliseconds(10);
  ropt.election_ticks = 10;
  ropt.heartbeat_ticks = 1;
  auto nodes = make_raft_tcp_cluster(
      3,
      [](node_id id) {
        tcp_transport_config c;
        c.id = id;
        c.cluster_id = 42;
        c.secret = "benchmark cluster secret 0123456789";
        c.log_level_min = log_level::warning;
        return c;
      },
      ropt,
      [&bench_ptr, &leader_id](node_id id) {
        // Only the leader's apply feeds the bench (its state lives on the leader's thread).
        return [&bench_ptr, &leader_id, id](const raft::entry& e) {
          if (id != leader_id.load()) return;
          if (bench* p = bench_ptr.load()) p->on_apply(e);
        };
      },
      storage);
  if (nodes.size() != 3) {
    std::fprintf(stderr, "could not start the %scluster\n", label.c_str());
    return false;
  }
  const auto wait_start = steady::now();
  while (leader_node == nullptr) {
    for (auto& n : nodes)
      if (n->is_leader()) leader_node = n.get();
    if (steady::now() - wait_start > std::chrono::seconds(10)) {
      std::fprintf(stderr, "no leader elected within 10 s\n");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  b = std::make_unique<bench>(*leader_node);
  leader_id.store(leader_node->id());
  bench_ptr.store(b.get());

  (void)b->measure(256, 8, false, 0, 0.3);  // warm-up (connections, allocator, caches)
  auto selected = [&](const std::string& shape) { return opt.only.empty() || opt.only == shape; };
  for (std::size_t payload : {std::size_t{256}, std::size_t{4096}})
    for (int concurrency : {1, 8, 32})
      if (selected(fmt::format("{}x{}", payload, concurrency)))
        rows.push_back(
            labelled(b->measure(payload, concurrency, false, 0, opt.seconds), label, key));
  for (std::size_t payload : {std::size_t{256}, std::size_t{4096}})
    if (selected(fmt::format("{}paced", payload)))
      rows.push_back(
          labelled(b->measure(payload, 1, true, opt.paced_rate, opt.seconds), label, key));
  if (opt.verbose) {
    for (auto& n : nodes) {
      for (const auto& [peer, m] : n->transport().metrics().peers)
        std::fprintf(stderr,
                     "node %llu -> %llu: sent %llu msgs / %llu B, received %llu msgs, dropped "
                     "%llu, reconnects %llu\n",
                     static_cast<unsigned long long>(n->id()),
                     static_cast<unsigned long long>(peer),
                     static_cast<unsigned long long>(m.messages_sent),
                     static_cast<unsigned long long>(m.bytes_sent),
                     static_cast<unsigned long long>(m.messages_received),
                     static_cast<unsigned long long>(m.messages_dropped),
                     static_cast<unsigned long long>(m.reconnects));
    }
  }
  bench_ptr.store(nullptr);
  for (auto& n : nodes)
    n->stop();
  for (auto& n : nodes)
    if (n->save_error()) {
      std::fprintf(stderr, "node %llu: storage failed: %s\n",
                   static_cast<unsigned long long>(n->id()), n->save_error().message().c_str());
      return false;
    }
  return true;
}

std::string json_number(double v) {
  return fmt::format("{:.1f}", v);
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seconds") {
      opt.seconds = std::stod(next());
    } else if (a == "--paced-rate") {
      opt.paced_rate = std::stoi(next());
    } else if (a == "--json") {
      opt.json = next();
    } else if (a == "--only") {
      opt.only = next();
    } else if (a == "--verbose") {
      opt.verbose = true;
#ifdef RAFTSYNC_BENCH_DURABLE
    } else if (a == "--durable") {
      opt.durable_dir = next();
#endif
    } else {
      std::fprintf(stderr,
                   "usage: raft_tcp_bench [--seconds S per shape] [--paced-rate N/s] "
                   "[--json FILE] [--durable DIR] [--only SHAPE] [--verbose]\n");
      return 2;
    }
  }

  const std::string load_before = load_average();
  std::vector<result_row> rows;
  rows.push_back(tcp_ping_pong(256, 20000));
  if (!run_cluster(opt, "", "", {}, rows)) return 1;
#ifdef RAFTSYNC_BENCH_DURABLE
  if (!opt.durable_dir.empty()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::remove_all(opt.durable_dir, ec);
    fs::create_directories(opt.durable_dir, ec);
    raftsync::storage::real_file_io io;
    const bool ok = run_cluster(
        opt, "durable ", "durable_",
        [&](node_id id) -> std::unique_ptr<node_storage> {
          return std::make_unique<durable_node_storage>(
              io, fs::path(opt.durable_dir) / fmt::format("node-{}", id));
        },
        rows);
    fs::remove_all(opt.durable_dir, ec);
    if (!ok) return 1;
  }
#endif

  const std::string load_after = load_average();
  std::printf("load average before: %s, after: %s (%u hardware threads)\n", load_before.c_str(),
              load_after.c_str(), std::thread::hardware_concurrency());
  std::printf("%-34s %12s %10s %10s %10s %12s %9s %7s\n", "shape", "commits/s", "p50 us", "p99 us",
              "max us", "cpu us/commit", "samples", "errors");
  for (const auto& r : rows) {
    std::printf("%-34s %12s %10.1f %10.1f %10.1f %12s %9zu %7llu\n", r.name.c_str(),
                r.commits_per_s > 0 ? fmt::format("{:.0f}", r.commits_per_s).c_str() : "-",
                r.latency.p50_us, r.latency.p99_us, r.latency.max_us,
                r.cpu_us_per_commit > 0 ? fmt::format("{:.1f}", r.cpu_us_per_commit).c_str() : "-",
                r.latency.count, static_cast<unsigned long long>(r.errors));
  }
  if (!opt.json.empty()) {
    std::ofstream out(opt.json);
    out << "{\n  \"benchmark\": \"raft_tcp_bench\",\n  \"seconds_per_shape\": " << opt.seconds
        << ",\n  \"paced_rate_per_s\": " << opt.paced_rate << ",\n  \"load_average_before\": \""
        << load_before << "\",\n  \"load_average_after\": \"" << load_after << "\"";
    for (const auto& r : rows) {
      if (r.commits_per_s > 0)
        out << ",\n  \"" << r.key << "_commits_per_s\": " << json_number(r.commits_per_s);
      const std::string lat = r.key.rfind("tcp_", 0) == 0 ? r.key : r.key + "_latency";
      out << ",\n  \"" << lat << "_us_p50\": " << json_number(r.latency.p50_us);
      out << ",\n  \"" << lat << "_us_p99\": " << json_number(r.latency.p99_us);
      out << ",\n  \"" << lat << "_us_max\": " << json_number(r.latency.max_us);
      if (r.cpu_us_per_commit > 0)
        out << ",\n  \"" << r.key << "_cpu_us_per_commit\": " << json_number(r.cpu_us_per_commit);
      if (r.errors > 0) out << ",\n  \"" << r.key << "_errors\": " << r.errors;
    }
    out << "\n}\n";
  }
  return 0;
}
