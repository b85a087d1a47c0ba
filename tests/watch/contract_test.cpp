// The watcher contract, run against every backend this host can run (inotify, libuv and polling
// on Linux; ReadDirectoryChangesW and polling under wine). Each scenario changes the disk, then
// waits (until a condition or a timeout, never a fixed sleep) for a consumer that re-reads only
// what the events name to hold exactly what the disk holds: a change that is neither reported
// nor covered by a rescan makes the model differ from the disk and the test fail.
#include <catch2/catch.hpp>

#include <thread>

#include "support.hpp"

#if !defined(_WIN32)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace raftsync::watch::test {
namespace {

struct contract_fixture {
  explicit contract_fixture(backend which_backend, watch_options watch_opts = contract_options())
      : which(which_backend), options(std::move(watch_opts)) {}
  ~contract_fixture() { stop(); }

  // With `stalled`, the sink blocks in its first call until stall.open(): the backend stops
  // processing events, so whatever the test does meanwhile races ahead of the watcher.
  void start(bool stalled = false) {
    auto made = make_watcher(which, options);
    REQUIRE(made.has_value());
    active = std::move(*made);
    const std::error_code error =
        active->start(folder.path(), stalled ? stall.wrap(events.sink()) : events.sink());
    INFO("start: " << error.message());
    REQUIRE(!error);
    model = std::make_unique<consumer_model>(folder.path(), options.ignore);
  }

  void stop() {
    if (!active) return;
    stall.open();
    active->stop();
    events.close();
  }

  // Waits until the consumer's model equals the disk; fails with the difference otherwise.
  void settle(const std::string& step, std::chrono::milliseconds timeout = 15s) {
    const bool converged = model->converge(events, timeout);
    INFO("backend " << to_string(which) << ", after: " << step << "\n" << model->difference());
    REQUIRE(converged);
    for (const std::string& violation : model->violations())
      FAIL_CHECK(violation);
    for (const fs_event& error : model->errors())
      FAIL_CHECK("unexpected: " << describe(error));
  }

  fs::path operator/(const fs::path& relative) const { return folder / relative; }

  temp_folder folder;
  gate stall;
  backend which;
  watch_options options;
  collector events;
  std::unique_ptr<watcher> active;
  std::unique_ptr<consumer_model> model;
};

std::string name_of(backend which) {
  return std::string(to_string(which));
}

}  // namespace

TEST_CASE("a file created, appended, overwritten, truncated and deleted is reported at each step",
          "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    write_file(f / "existing.txt", "before start");
    f.start();
    write_file(f / "a.txt", "hello");
    f.settle("create");
    append_file(f / "a.txt", " world");
    f.settle("append");
    write_file(f / "a.txt", "HELLO WORLD");  // same size, new bytes
    f.settle("overwrite with the same size");
    write_file(f / "existing.txt", "rewritten, longer than before");
    f.settle("overwrite of a file that existed before start");
    fs::resize_file(f / "a.txt", 3);  // truncate(2) by path: no close-write
    f.settle("truncate by path");
    fs::remove(f / "a.txt");
    f.settle("delete");
  }
}

TEST_CASE("renames within and across directories are reported", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    fs::create_directories(f / "left/deep");
    fs::create_directories(f / "right");
    write_file(f / "left/one.txt", "1");
    write_file(f / "left/deep/two.txt", "2");
    f.start();
    fs::rename(f / "left/one.txt", f / "left/uno.txt");
    f.settle("rename within a directory");
    fs::rename(f / "left/uno.txt", f / "right/uno.txt");
    f.settle("rename across directories");
    fs::rename(f / "left/deep", f / "right/deep");
    f.settle("directory moved across directories");
    write_file(f / "right/deep/three.txt", "3");  // the moved directory is still watched
    f.settle("file created in the moved directory");
    fs::rename(f / "right", f / "renamed");
    write_file(f / "renamed/deep/four.txt", "4");
    f.settle("directory renamed, then written into");
    temp_folder outside;
    fs::rename(f / "renamed/deep", outside / "deep");
    f.settle("directory moved out of the root");
    write_file(outside / "deep/five.txt", "5");
    fs::rename(outside / "deep", f / "back");
    f.settle("directory moved into the root");
    write_file(f / "back/six.txt", "6");
    f.settle("file created in the directory moved in");
  }
}

TEST_CASE("a deep tree made with mkdir -p and filled at once is reported completely",
          "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    f.start(/*stalled=*/true);
    write_file(f / "trigger", "t");
    REQUIRE(f.stall.wait_entered(10s));
    // While the backend is stalled (as if it were slow): a deep tree and files at every level,
    // all on disk before any watch on the new directories can exist.
    fs::path deep = "a/b/c/d/e/f/g/h/i/j";
    fs::create_directories(f / deep);
    fs::path level;
    for (const fs::path& element : deep) {
      level /= element;
      write_file(f / level / "file.txt", level.generic_string());
    }
    f.stall.open();
    f.settle("mkdir -p then files at every level");
    // And at full speed, racing the watcher.
    fs::create_directories(f / "p/q/r/s/t");
    write_file(f / "p/q/r/s/t/u.txt", "u");
    write_file(f / "p/q/v.txt", "v");
    f.settle("mkdir -p then files, unstalled");
  }
}

TEST_CASE("a directory created and renamed before the watcher saw it is still watched",
          "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    f.start(/*stalled=*/true);
    write_file(f / "trigger", "t");
    REQUIRE(f.stall.wait_entered(10s));
    fs::create_directories(f / "new/sub");
    write_file(f / "new/sub/early.txt", "e");
    fs::rename(f / "new", f / "renamed");
    f.stall.open();
    f.settle("directory created and renamed while the backend was stalled");
    write_file(f / "renamed/sub/late.txt", "l");
    f.settle("file written into it afterwards");
  }
}

TEST_CASE("removing directories is reported", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    fs::create_directories(f / "empty");
    fs::create_directories(f / "full/sub");
    write_file(f / "full/sub/x.txt", "x");
    write_file(f / "full/y.txt", "y");
    f.start();
    fs::remove(f / "empty");
    f.settle("rmdir of an empty directory");
    fs::remove_all(f / "full");
    f.settle("rm -r of a tree");
  }
}

TEST_CASE("mode changes are reported", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    write_file(f / "script.sh", "#!/bin/sh\n");
    fs::create_directories(f / "dir");
    f.start();
    fs::permissions(f / "script.sh", fs::perms::owner_write, fs::perm_options::remove);
    f.settle("chmod of a file");
#if !defined(_WIN32)
    fs::permissions(f / "script.sh", fs::perms::owner_exec | fs::perms::group_exec,
                    fs::perm_options::add);
    f.settle("chmod +x of a file");
    fs::permissions(f / "dir", fs::perms::others_all, fs::perm_options::remove);
    f.settle("chmod of a directory");
#endif
    fs::permissions(f / "script.sh", fs::perms::owner_write, fs::perm_options::add);
    f.settle("chmod back");
  }
}

#if !defined(_WIN32)
TEST_CASE("symlinks are reported as links, not followed", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    write_file(f / "target.txt", "t");
    temp_folder outside;
    write_file(outside / "secret.txt", "outside the root");
    f.start();
    fs::create_symlink("target.txt", f / "link");
    f.settle("symlink created");
    fs::remove(f / "link");
    fs::create_symlink("elsewhere.txt", f / "link");
    f.settle("symlink retargeted");
    fs::create_directory_symlink(outside.path(), f / "escape");
    f.settle("symlink to a directory outside the root");
    write_file(outside / "secret2.txt", "not ours");  // must not matter: links are not followed
    fs::remove(f / "link");
    f.settle("symlink removed");
  }
}
#endif

TEST_CASE("editor save patterns are reported", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    write_file(f / "doc.txt", "version 1");
    write_file(f / "notes.md", "notes 1");
    f.start();
    // vim/VS Code style: write a temp file, rename it over the original.
    write_file(f / ".doc.txt.swp", "version 2, written to a temp file");
    fs::rename(f / ".doc.txt.swp", f / "doc.txt");
    f.settle("temp + rename over");
    // emacs style: move the original to a backup, write a new file, drop the backup.
    fs::rename(f / "notes.md", f / "notes.md~");
    write_file(f / "notes.md", "notes 2, rewritten");
    f.settle("backup + rewrite");
    fs::remove(f / "notes.md~");
    f.settle("backup removed");
  }
}

TEST_CASE("ignored paths are not reported and renames out of them are", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    f.start();
    fs::create_directories(f / ".raftsync/log");
    write_file(f / ".raftsync/log/segment-1", "state");
    write_file(f / ".raftsync-tmp-1", "applied bytes");
    fs::rename(f / ".raftsync-tmp-1", f / "applied.txt");  // the apply step's atomic replace
    f.settle("apply step temp file renamed into place");
    fs::create_directories(f / "sub");
    write_file(f / "sub/.raftsync-tmp-2", "temp in a subdirectory");
    f.settle("temp file in a subdirectory");
    fs::rename(f / "applied.txt", f / "sub/.raftsync-tmp-3");
    f.settle("file renamed to an ignored name");
  }
}

#if !defined(_WIN32) || defined(RAFTSYNC_TEST_FULL_BURST)
constexpr int burst_files = 10000;
#else
// Wine creates files about 20x slower than Linux; 2,000 keep the Windows leg short.
constexpr int burst_files = 2000;
#endif

TEST_CASE("a burst of files is reported completely", "[watch][contract][burst]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    f.options.batch_events_max = 500;  // the burst must be split into bounded batches
    f.start();
    const int directories = 100;
    for (int d = 0; d < directories; ++d) {
      const fs::path dir = f / ("d" + std::to_string(d));
      fs::create_directory(dir);
      for (int i = 0; i < burst_files / directories; ++i) {
        write_file(dir / ("f" + std::to_string(i)), std::to_string(d * 1000 + i));
      }
    }
    f.settle(std::to_string(burst_files) + " files in 100 new directories", 60s);
    CHECK(f.events.largest_batch() <= f.options.batch_events_max);
  }
}

TEST_CASE("stop is idempotent and no callback runs after it returns", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    contract_fixture f(which);
    f.start();
    std::atomic<bool> writing{true};
    std::thread writer([&] {
      for (int i = 0; writing; ++i)
        write_file(f / ("w" + std::to_string(i % 50)), "x");
    });
    f.events.wait_until([](const std::vector<fs_event>& all) { return !all.empty(); }, 10s);
    f.active->stop();
    f.events.close();
    f.active->stop();  // idempotent
    writing = false;
    writer.join();
    CHECK(f.events.calls_after_stop() == 0);
    CHECK(f.events.empty_batches() == 0);
  }
}

TEST_CASE("start fails on a missing root and never calls the sink", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    temp_folder folder;
    auto made = make_watcher(which, contract_options());
    REQUIRE(made.has_value());
    collector events;
    CHECK(made.value()->start(folder / "missing", events.sink()));
    made.value()->stop();
    CHECK(events.all().empty());
    // A second start is refused.
    auto second = make_watcher(which, contract_options());
    REQUIRE(second.has_value());
    REQUIRE(!second.value()->start(folder.path(), events.sink()));
    CHECK(second.value()->start(folder.path(), events.sink()) ==
          make_error_code(errc::already_exists));
    second.value()->stop();
  }
}

TEST_CASE("the root being deleted is a fatal error event", "[watch][contract]") {
  const backend which = GENERATE(from_range(contract_backends()));
  DYNAMIC_SECTION(name_of(which)) {
    temp_folder parent;
    fs::create_directories(parent / "root/sub");
    auto made = make_watcher(which, contract_options());
    REQUIRE(made.has_value());
    collector events;
    REQUIRE(!made.value()->start(parent / "root", events.sink()));
#if defined(_WIN32)
    // Windows refuses to delete a directory with an open handle without FILE_SHARE_DELETE
    // semantics; rename the root away instead.
    fs::rename(parent / "root", parent / "moved");
    fs::remove_all(parent / "moved");
#else
    fs::remove_all(parent / "root");
#endif
    const bool reported = events.wait_until(
        [](const std::vector<fs_event>& all) {
          return std::any_of(all.begin(), all.end(), [](const fs_event& e) {
            return e.effect == fs_effect::error && e.fatal;
          });
        },
        15s);
    made.value()->stop();
    CHECK(reported);
  }
}

TEST_CASE("the automatic backend watches like its native backend", "[watch][contract]") {
  contract_fixture f(backend::automatic);
  f.start();
  CHECK(f.active->backend_name() == to_string(available_backends().front()));
  fs::create_directories(f / "x/y");
  write_file(f / "x/y/z.txt", "z");
  f.settle("files through the automatic backend");
}

TEST_CASE("invalid options are refused by the factory", "[watch]") {
  watch_options options;
  options.poll_interval = 0ms;
  CHECK(make_watcher(backend::polling, options).error() == make_error_code(errc::invalid_config));
  options = {};
  options.rdcw_buffer_bytes = 1;
  CHECK(make_watcher(backend::automatic, options).error() == make_error_code(errc::invalid_config));
  CHECK(watch_options{}.validate() == std::error_code{});
}

}  // namespace raftsync::watch::test
