// storage_bench — durable_storage append throughput (MB/s) and per-batch latency (p50/p99/max µs)
// for 256 B, 4 KiB and 64 KiB entries in batches of 1 and 64, side by side with a baseline run
// in the same process on the same disk: plain write(2) of the same payload bytes to one file
// followed by fdatasync(2), once per batch. The ratio is storage MB/s / baseline MB/s.
//
//   storage_bench [--dir DIR] [--json FILE] [--quick]
//     --dir   where to write (default: ./storage_bench.tmp, removed afterwards); use a real disk
//     --json  also write the figures as JSON
//     --quick fewer batches (a smoke run)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "raftsync/storage/crc32c.hpp"
#include "raftsync/storage/durable_storage.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using raftsync::raft::entry;

struct figures {
  double mb_per_s = 0;
  double us_p50 = 0, us_p99 = 0, us_max = 0;
};

figures summarize(std::vector<double> us, double payload_bytes, double seconds) {
  std::sort(us.begin(), us.end());
  figures f;
  f.mb_per_s = payload_bytes / seconds / 1e6;
  auto pct = [&](double p) {
    return us[std::min(us.size() - 1,
                       static_cast<std::size_t>(p * static_cast<double>(us.size())))];
  };
  f.us_p50 = pct(0.50);
  f.us_p99 = pct(0.99);
  f.us_max = us.back();
  return f;
}

std::vector<std::vector<entry>> make_batches(std::size_t entry_bytes, std::size_t batch,
                                             std::size_t batches) {
  std::mt19937_64 rng(entry_bytes * 131 + batch);
  std::string pool(entry_bytes + 4096, '\0');
  for (auto& c : pool)
    c = static_cast<char>(rng());
  std::vector<std::vector<entry>> out(batches);
  std::uint64_t index = 1;
  for (auto& b : out) {
    for (std::size_t i = 0; i < batch; ++i) {
      const std::size_t off = rng() % 4096;
      b.push_back(
          entry{1, index++, raftsync::raft::entry_type::normal, pool.substr(off, entry_bytes)});
    }
  }
  return out;
}

// The storage under test: durable_storage on the real filesystem, one save() per batch.
class storage_run {
 public:
  explicit storage_run(const std::filesystem::path& dir) : dir_(dir), s_(io_, dir) {
    std::filesystem::remove_all(dir);
    if (auto ec = s_.open()) {
      std::fprintf(stderr, "open %s: %s\n", dir.c_str(), ec.message().c_str());
      std::exit(1);
    }
  }
  ~storage_run() { std::filesystem::remove_all(dir_); }
  void batch(const std::vector<entry>& b) {
    hs_.commit = b.front().index - 1;
    if (auto ec = s_.save(hs_, {}, b)) {
      std::fprintf(stderr, "save: %s\n", ec.message().c_str());
      std::exit(1);
    }
  }

 private:
  std::filesystem::path dir_;
  raftsync::storage::real_file_io io_;
  raftsync::storage::durable_storage s_;
  raftsync::raft::hard_state hs_{1, 1, 0};
};

// The baseline: the same payload bytes appended to one file with write(2) + fdatasync(2).
class baseline_run {
 public:
  explicit baseline_run(const std::filesystem::path& file) : file_(file) {
    std::filesystem::remove(file);
    fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      std::perror("open baseline");
      std::exit(1);
    }
  }
  ~baseline_run() {
    ::close(fd_);
    std::filesystem::remove(file_);
  }
  void batch(const std::vector<entry>& b) {
    buf_.clear();  // gathered into one write, like the storage's one record
    for (const auto& e : b)
      buf_ += e.data;
    std::size_t done = 0;
    while (done < buf_.size()) {
      const ssize_t n = ::write(fd_, buf_.data() + done, buf_.size() - done);
      if (n < 0) {
        std::perror("write");
        std::exit(1);
      }
      done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(fd_) != 0) {
      std::perror("fdatasync");
      std::exit(1);
    }
  }

 private:
  std::filesystem::path file_;
  int fd_ = -1;
  std::string buf_;
};

template <typename Run>
void timed_batches(Run& run, const std::vector<std::vector<entry>>& batches, std::size_t from,
                   std::size_t to, std::vector<double>& us, double& seconds) {
  const auto start = clock_type::now();
  for (std::size_t i = from; i < to; ++i) {
    const auto t0 = clock_type::now();
    run.batch(batches[i]);
    us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  seconds += std::chrono::duration<double>(clock_type::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path dir = "storage_bench.tmp";
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: storage_bench [--dir DIR] [--json FILE] [--quick]\n");
      return 2;
    }
  }
  std::filesystem::create_directories(dir);

  struct row {
    std::size_t entry_bytes, batch;
    figures storage, baseline;
  };
  std::vector<row> rows;
  std::printf("crc32c hardware: %s\n",
              raftsync::storage::crc32c_hardware_accelerated() ? "sse4.2" : "table");
  std::printf("%9s %6s %8s | %10s %9s %9s %9s | %10s %9s %9s %9s | %6s\n", "entry", "batch",
              "batches", "stor MB/s", "p50 us", "p99 us", "max us", "base MB/s", "p50 us", "p99 us",
              "max us", "ratio");
  for (std::size_t entry_bytes : {std::size_t{256}, std::size_t{4096}, std::size_t{65536}}) {
    for (std::size_t batch : {std::size_t{1}, std::size_t{64}}) {
      const std::size_t batch_bytes = entry_bytes * batch;
      std::size_t batches = std::clamp<std::size_t>((256u << 20) / batch_bytes, 60, 2000);
      if (quick) batches = std::max<std::size_t>(batches / 10, 20);
      const auto data = make_batches(entry_bytes, batch, batches);
      const double payload = static_cast<double>(batch_bytes) * static_cast<double>(batches);
      row r{entry_bytes, batch, {}, {}};
      // Interleaved in rounds (baseline, storage, baseline, ...) on the same disk so drift and
      // the neighbours' load hit both alike.
      std::vector<double> storage_us, baseline_us;
      double storage_s = 0, baseline_s = 0;
      {
        storage_run st(dir / "storage");
        baseline_run bl(dir / "baseline.dat");
        constexpr std::size_t rounds = 8;
        for (std::size_t k = 0; k < rounds; ++k) {
          const std::size_t from = batches * k / rounds, to = batches * (k + 1) / rounds;
          timed_batches(bl, data, from, to, baseline_us, baseline_s);
          timed_batches(st, data, from, to, storage_us, storage_s);
        }
      }
      r.storage = summarize(std::move(storage_us), payload, storage_s);
      r.baseline = summarize(std::move(baseline_us), payload, baseline_s);
      rows.push_back(r);
      std::printf("%9zu %6zu %8zu | %10.1f %9.0f %9.0f %9.0f | %10.1f %9.0f %9.0f %9.0f | %6.2f\n",
                  entry_bytes, batch, batches, r.storage.mb_per_s, r.storage.us_p50,
                  r.storage.us_p99, r.storage.us_max, r.baseline.mb_per_s, r.baseline.us_p50,
                  r.baseline.us_p99, r.baseline.us_max, r.storage.mb_per_s / r.baseline.mb_per_s);
      std::fflush(stdout);
    }
  }
  std::filesystem::remove_all(dir);
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\n  \"benchmark\": \"storage_bench\",\n  \"results\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      char line[1024];
      std::snprintf(line, sizeof line,
                    "    {\"entry_bytes\": %zu, \"batch_entries\": %zu, "
                    "\"storage_throughput_MBps\": %.2f, \"storage_batch_us_p50\": %.1f, "
                    "\"storage_batch_us_p99\": %.1f, \"storage_batch_us_max\": %.1f, "
                    "\"baseline_throughput_MBps\": %.2f, \"baseline_batch_us_p50\": %.1f, "
                    "\"baseline_batch_us_p99\": %.1f, \"baseline_batch_us_max\": %.1f, "
                    "\"throughput_ratio\": %.3f}%s\n",
                    r.entry_bytes, r.batch, r.storage.mb_per_s, r.storage.us_p50, r.storage.us_p99,
                    r.storage.us_max, r.baseline.mb_per_s, r.baseline.us_p50, r.baseline.us_p99,
                    r.baseline.us_max, r.storage.mb_per_s / r.baseline.mb_per_s,
                    i + 1 < rows.size() ? "," : "");
      out << line;
    }
    out << "  ]\n}\n";
  }
  return 0;
}
