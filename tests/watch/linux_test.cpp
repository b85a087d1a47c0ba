// Linux-only watcher tests: forced inotify overflow (inotify and libuv) and the factory's
// fallback to polling when inotify watches run out.
#include <catch2/catch.hpp>
#include <future>

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "support.hpp"

namespace raftsync::watch::test {
namespace {

bool has_rescan(const std::vector<fs_event>& events) {
  return std::any_of(events.begin(), events.end(),
                     [](const fs_event& e) { return e.effect == fs_effect::rescan_required; });
}

// Writes `value` to a /proc/sys file, returning the old value (empty if it is not writable).
std::string swap_sysctl(const char* file, const std::string& value) {
  std::string old;
  {
    std::ifstream in(file);
    if (!(in >> old)) return {};
  }
  std::ofstream out(file);
  out << value;
  out.flush();
  if (!out) return {};
  return old;
}

// fs.inotify.max_queued_events (16384 unless changed).
int queued_events_max() {
  std::ifstream in("/proc/sys/fs/inotify/max_queued_events");
  int value = 16384;
  in >> value;
  return value;
}

void burst(const fs::path& dir, int files) {
  fs::create_directories(dir);
  for (int i = 0; i < files; ++i)
    write_file(dir / ("f" + std::to_string(i)), std::to_string(i));
}

}  // namespace

TEST_CASE(
    "a stalled reader overflows the inotify queue; the burst ends in a rescan and nothing "
    "is lost",
    "[watch][overflow]") {
  const backend which = GENERATE(backend::inotify, backend::libuv);
  DYNAMIC_SECTION(to_string(which)) {
    temp_folder folder;
    watch_options options = contract_options();
    auto made = make_watcher(which, options);
    REQUIRE(made.has_value());
    collector events;
    gate stall;
    // Directories watched from the start: files created in them while the reader stalls queue
    // inotify events (files in directories created meanwhile would have no watch yet).
    for (int d = 0; d < 10; ++d)
      fs::create_directories(folder / ("d" + std::to_string(d)));
    REQUIRE(!made.value()->start(folder.path(), stall.wrap(events.sink())));
    consumer_model model(folder.path(), options.ignore);
    write_file(folder / "trigger", "t");
    REQUIRE(stall.wait_entered(10s));
    // 3 events per file (create, modify, close-write): a third more than the queue holds.
    const int files = queued_events_max() * 4 / 9 + 1;
    for (int d = 0; d < 10; ++d)
      burst(folder / ("d" + std::to_string(d)), files / 10 + 1);
    stall.open();
    const bool converged = model.converge(events, 60s);
    INFO(model.difference());
    CHECK(converged);
    made.value()->stop();
    events.close();
    if (which == backend::inotify) {
      // inotify reports the overflow itself; libuv swallows it and relies on its safety rescan
      // (which reports the missed entries as plain creates).
      CHECK(has_rescan(events.all()));
    }
  }
}

TEST_CASE("a tiny inotify queue overflows; the burst ends in a rescan and nothing is lost",
          "[watch][overflow]") {
  const backend which = GENERATE(backend::inotify, backend::libuv);
  DYNAMIC_SECTION(to_string(which)) {
    temp_folder folder;
    watch_options options = contract_options();
    auto made = make_watcher(which, options);
    REQUIRE(made.has_value());
    collector events;
    // The limit is read when the inotify instance is created (inside start()): lower it for
    // that moment only, so other processes on the machine are not affected.
    fs::create_directories(folder / "burst");
    const char* limit_file = "/proc/sys/fs/inotify/max_queued_events";
    const std::string old_limit = swap_sysctl(limit_file, "16");
    if (old_limit.empty()) {
      WARN("cannot lower " << limit_file << " (not root?): covered by the stalled-reader test");
      return;
    }
    // The sink holds the backend's thread until the burst is written, so the 16-event kernel
    // queue overflows whatever the machine's load (a fast reader could otherwise keep up).
    std::promise<void> open_gate;
    std::shared_future<void> gate = open_gate.get_future().share();
    event_sink inner = events.sink();
    const std::error_code started =
        made.value()->start(folder.path(), [inner, gate](std::vector<fs_event> batch) {
          gate.wait();
          inner(std::move(batch));
        });
    swap_sysctl(limit_file, old_limit);
    if (started) open_gate.set_value();
    REQUIRE(!started);
    consumer_model model(folder.path(), options.ignore);
    burst(folder / "burst", 500);
    open_gate.set_value();
    const bool converged = model.converge(events, 30s);
    INFO(model.difference());
    CHECK(converged);
    made.value()->stop();
    events.close();
    if (which == backend::inotify) CHECK(has_rescan(events.all()));
  }
}

namespace {
// Runs `body` in a child process inside a new user namespace whose inotify watch limit is
// `max_watches` (a per-user-namespace limit: /proc/sys/user/max_inotify_watches), so the host's
// limit is never touched. Returns the child's exit status: 0 = passed, 77 = namespaces
// unavailable, anything else = the failed check's number.
int in_limited_namespace(int max_watches, const std::function<int()>& body) {
  const pid_t child = ::fork();
  if (child == 0) {
    if (::unshare(CLONE_NEWUSER) != 0) ::_exit(77);
    std::ofstream limit("/proc/sys/user/max_inotify_watches");
    limit << max_watches;
    limit.close();
    if (!limit) ::_exit(77);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

bool has_notice(const std::vector<fs_event>& all) {
  return std::any_of(all.begin(), all.end(), [](const fs_event& e) {
    return e.effect == fs_effect::error && !e.fatal &&
           e.detail.find("fell back to polling") != std::string::npos;
  });
}
}  // namespace

TEST_CASE("the automatic backend falls back to polling when inotify watches are exhausted",
          "[watch][fallback]") {
  temp_folder folder;
  SECTION("at start") {
    for (int i = 0; i < 5; ++i)
      fs::create_directories(folder / ("dir" + std::to_string(i)));
    const int status = in_limited_namespace(2, [&]() -> int {
      // The native backend alone refuses to start, with ENOSPC.
      auto native = make_watcher(backend::inotify, contract_options());
      collector ignored;
      if (native.value()->start(folder.path(), ignored.sink()) !=
          std::error_code(ENOSPC, std::system_category())) {
        return 1;
      }
      auto made = make_watcher(backend::automatic, contract_options());
      collector events;
      if (made.value()->start(folder.path(), events.sink())) return 2;
      if (made.value()->backend_name() != "polling") return 3;
      if (!events.wait_until(has_notice, 10s)) return 4;
      consumer_model model(folder.path(), contract_options().ignore);
      write_file(folder / "dir3/new.txt", "n");
      if (!model.converge(events, 10s)) return 5;
      made.value()->stop();
      return 0;
    });
    if (status == 77) WARN("user namespaces unavailable: fallback test skipped");
    CHECK((status == 0 || status == 77));
    INFO("child status " << status);
  }
  SECTION("while running") {
    const int status = in_limited_namespace(3, [&]() -> int {
      auto made = make_watcher(backend::automatic, contract_options());
      collector events;
      if (made.value()->start(folder.path(), events.sink())) return 1;
      if (made.value()->backend_name() != "inotify") return 2;
      consumer_model model(folder.path(), contract_options().ignore);
      // More directories than watches: inotify reports ENOSPC, the factory switches.
      for (int i = 0; i < 5; ++i) {
        fs::create_directories(folder / ("dir" + std::to_string(i)));
        write_file(folder / ("dir" + std::to_string(i)) / "f.txt", "f");
      }
      if (!events.wait_until(has_notice, 10s)) return 3;
      if (made.value()->backend_name() != "polling") return 4;
      if (!model.converge(events, 10s)) return 5;
      write_file(folder / "dir4/after.txt", "polling reports this");
      if (!model.converge(events, 10s)) return 6;
      if (!has_rescan(events.all())) return 7;
      made.value()->stop();
      return 0;
    });
    if (status == 77) WARN("user namespaces unavailable: fallback test skipped");
    INFO("child status " << status);
    CHECK((status == 0 || status == 77));
  }
}

TEST_CASE("inotify pairs rename halves by cookie and reports unpaired halves as remove or create",
          "[watch][inotify]") {
  temp_folder folder;
  temp_folder outside;
  fs::create_directories(folder / "dir");
  write_file(folder / "a.txt", "a");
  write_file(outside / "in.txt", "in");
  auto made = make_watcher(backend::inotify, contract_options());
  REQUIRE(made.has_value());
  collector events;
  REQUIRE(!made.value()->start(folder.path(), events.sink()));
  const auto seen = [&](const fs_event& wanted) {
    return events.wait_until(
        [&](const std::vector<fs_event>& all) {
          return std::find(all.begin(), all.end(), wanted) != all.end();
        },
        10s);
  };
  fs::rename(folder / "a.txt", folder / "dir/b.txt");
  CHECK(seen(fs_event::renamed(fs_kind::file, "a.txt", "dir/b.txt")));
  fs::rename(folder / "dir", folder / "moved");
  CHECK(seen(fs_event::renamed(fs_kind::directory, "dir", "moved")));
  write_file(folder / "moved/c.txt", "c");  // the moved directory's watch follows it
  CHECK(seen(fs_event::change(fs_effect::create, fs_kind::file, "moved/c.txt")));
  fs::rename(folder / "moved/b.txt", outside / "b.txt");
  CHECK(seen(fs_event::change(fs_effect::remove, fs_kind::unknown, "moved/b.txt")));
  fs::rename(outside / "in.txt", folder / "in.txt");
  CHECK(seen(fs_event::change(fs_effect::create, fs_kind::file, "in.txt")));
  // A write never closed is still reported (after unclosed_write_delay).
  {
    std::ofstream open_log(folder / "log.txt", std::ios::binary);
    open_log << "first line\n";
    open_log.flush();
    CHECK(seen(fs_event::change(fs_effect::modify, fs_kind::file, "log.txt")));
  }
  made.value()->stop();
}

}  // namespace raftsync::watch::test
