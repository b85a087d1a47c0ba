// kill -9 of a real process in the middle of appending to durable_storage on the real
// filesystem: after each kill the storage reopens with every acknowledged entry intact.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "raftsync/storage/durable_storage.hpp"

using namespace raftsync;
using namespace raftsync::storage;

namespace {

// Entry `index` always carries the same bytes, so the parent can check what the child wrote.
raft::entry entry_for(std::uint64_t index, std::uint64_t term) {
  std::mt19937_64 rng(index);
  raft::entry e{term, index, raft::entry_type::normal, std::string(50 + rng() % 3000, '\0')};
  for (auto& c : e.data)
    c = static_cast<char>(rng());
  return e;
}

durable_storage_options kill_options() {
  durable_storage_options o;
  o.log.segment_size_bytes = 64 << 10;
  return o;
}

// Child: open, then append batches forever, reporting each acknowledged last index on `fd`.
[[noreturn]] void child_main(const std::filesystem::path& dir, int fd, std::uint64_t seed) {
  real_file_io io;
  durable_storage s(io, dir, kill_options());
  if (s.open()) _exit(2);
  std::mt19937_64 rng(seed);
  std::uint64_t term = s.hard_state().term + 1;
  for (;;) {
    std::vector<raft::entry> batch;
    std::uint64_t from = s.last_index() + 1;
    if (rng() % 8 == 0 && s.last_index() > s.hard_state().commit + 2) {
      from = s.last_index() - 1;  // a new term replaces an uncommitted suffix
      ++term;
    }
    const std::size_t n = 1 + rng() % 8;
    for (std::size_t i = 0; i < n; ++i)
      batch.push_back(entry_for(from + i, term));
    raft::hard_state hs{term, 1, from - 1};
    if (s.save(hs, {}, batch)) _exit(3);
    const std::uint64_t acked[2] = {s.last_index(), term};
    if (::write(fd, acked, sizeof acked) != static_cast<ssize_t>(sizeof acked)) _exit(4);
  }
}

}  // namespace

TEST_CASE("kill -9 while appending loses no acknowledged entry", "[storage][kill]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("raftsync-kill-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::mt19937_64 rng(7);
  for (int round = 0; round < 6; ++round) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_main(dir, fds[1], 100 + static_cast<std::uint64_t>(round));
    }
    ::close(fds[1]);
    // Wait for a random number of acknowledgements (no timing: the child's own progress).
    const int wanted = 5 + static_cast<int>(rng() % 60);
    std::uint64_t acked[2] = {0, 0};
    for (int i = 0; i < wanted; ++i) {
      REQUIRE(::read(fds[0], acked, sizeof acked) == static_cast<ssize_t>(sizeof acked));
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    // Acknowledgements already in the pipe are durable too; take the last one.
    std::uint64_t more[2];
    while (::read(fds[0], more, sizeof more) == static_cast<ssize_t>(sizeof more)) {
      acked[0] = more[0];
      acked[1] = more[1];
    }
    ::close(fds[0]);
    CHECK(WIFSIGNALED(status));

    real_file_io io;
    durable_storage s(io, dir, kill_options());
    const auto ec = s.open();
    INFO("round " << round << ": " << ec.message() << " " << s.error_message());
    REQUIRE_FALSE(ec);
    // The last acknowledged batch ended at acked[0] in term acked[1]; a later unacknowledged
    // batch may have replaced its tail (a new term) — then the hard state's term is higher.
    CHECK(s.hard_state().term >= acked[1]);
    if (s.hard_state().term == acked[1]) CHECK(s.last_index() >= acked[0]);
    auto all = s.entries(1, s.last_index() + 1, raft::no_limit);
    REQUIRE(all);
    for (const auto& e : *all) {
      REQUIRE(e.data == entry_for(e.index, e.term).data);
    }
  }
  std::filesystem::remove_all(dir);
}
