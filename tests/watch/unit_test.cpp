// Unit tests of the pieces behind the backends: ignore rules, the fake watcher, the scanner's
// diff, and the FSEvents flag translation (which cannot run against macOS here).
#include <catch2/catch.hpp>

#include "fsevents_translate.hpp"
#include "raftsync/watch/fake_watcher.hpp"
#include "scanner.hpp"
#include "support.hpp"

namespace raftsync::watch::test {

TEST_CASE("ignore rules match elements at any depth and anchored prefixes", "[watch]") {
  const ignore_rules rules({".raftsync", ".raftsync-tmp-*", "build/out", "*.sw?"});
  CHECK(rules.ignored(".raftsync"));
  CHECK(rules.ignored(".raftsync/log/segment-1"));
  CHECK(rules.ignored("a/b/.raftsync/x"));
  CHECK(rules.ignored(".raftsync-tmp-123"));
  CHECK(rules.ignored("dir/.raftsync-tmp-"));
  CHECK(rules.ignored("build/out"));
  CHECK(rules.ignored("build/out/obj.o"));
  CHECK(rules.ignored("notes.swp"));
  CHECK_FALSE(rules.ignored(""));
  CHECK_FALSE(rules.ignored(".raftsyncx"));
  CHECK_FALSE(rules.ignored("x.raftsync-tmp-1"));
  CHECK_FALSE(rules.ignored("src/build/out"));  // anchored at the root
  CHECK_FALSE(rules.ignored("build/outer"));
  CHECK_FALSE(rules.ignored("notes.swpx"));
  CHECK(ignore_rules::glob_match("a*c", "abbbc"));
  CHECK_FALSE(ignore_rules::glob_match("a*c", "ab/c"));  // * never crosses '/'
  CHECK(ignore_rules::glob_match("a/*", "a/b"));
  CHECK(ignore_rules::glob_match("*", ""));
  CHECK_FALSE(ignore_rules::glob_match("?", ""));
}

TEST_CASE("the fake watcher delivers on the caller's thread and applies ignore rules", "[watch]") {
  fake_watcher fake;
  std::vector<fs_event> seen;
  CHECK_FALSE(fake.emit_create("early"));  // not started: nothing delivered
  fake.fail_next_start(make_error_code(errc::busy));
  CHECK(fake.start("/root", [&](std::vector<fs_event> batch) {
    for (auto& e : batch)
      seen.push_back(std::move(e));
  }) == make_error_code(errc::busy));
  REQUIRE(!fake.start("/root", [&](std::vector<fs_event> batch) {
    for (auto& e : batch)
      seen.push_back(std::move(e));
  }));
  CHECK(fake.start("/root", [](std::vector<fs_event>) {}) == make_error_code(errc::already_exists));
  CHECK(fake.running());
  CHECK(fake.emit_create("a.txt"));
  CHECK_FALSE(fake.emit_create(".raftsync/state"));
  CHECK(fake.emit_rename(".raftsync-tmp-7", "b.txt"));
  CHECK(fake.emit_rename("b.txt", ".raftsync-tmp-8"));
  CHECK(fake.emit_rescan());
  CHECK(fake.emit_error(make_error_code(errc::not_found), true, "gone"));
  REQUIRE(seen.size() == 5);
  CHECK(seen[0] == fs_event::change(fs_effect::create, fs_kind::file, "a.txt"));
  CHECK(seen[1] == fs_event::change(fs_effect::create, fs_kind::file, "b.txt"));
  CHECK(seen[2] == fs_event::change(fs_effect::remove, fs_kind::file, "b.txt"));
  CHECK(seen[3].effect == fs_effect::rescan_required);
  CHECK(seen[3].scope == rescan_scope::everything);
  CHECK(seen[4].fatal);
  fake.stop();
  fake.stop();
  CHECK_FALSE(fake.emit_create("late"));
  CHECK(seen.size() == 5);
}

TEST_CASE("the scanner's diff reports creates, removes, modifies and attribute changes",
          "[watch]") {
  using detail::entry_info;
  detail::snapshot before, after;
  before["same"] = entry_info{fs_kind::file, 1, 10, 10, 1, 0644};
  before["gone"] = entry_info{fs_kind::file, 1, 10, 10, 2, 0644};
  before["grown"] = entry_info{fs_kind::file, 1, 10, 10, 3, 0644};
  before["chmod"] = entry_info{fs_kind::file, 1, 10, 10, 4, 0644};
  before["replaced"] = entry_info{fs_kind::file, 1, 10, 10, 5, 0644};
  before["dir"] = entry_info{fs_kind::directory, 4096, 10, 10, 6, 0755};
  after = before;
  after.erase("gone");
  after["grown"].size = 2;
  after["chmod"].mode = 0600;
  after["replaced"].file_id = 50;
  after["dir"].mtime_ns = 99;  // a directory's own mtime is noise: its entries report
  after["new"] = entry_info{fs_kind::symlink, 5, 10, 10, 7, 0777};
  std::vector<fs_event> events;
  detail::diff_snapshots(before, after, events);
  std::vector<std::string> text;
  for (const auto& e : events)
    text.push_back(describe(e));
  CHECK(text == std::vector<std::string>{"attributes file chmod", "remove file gone",
                                         "modify file grown", "create symlink new",
                                         "remove file replaced", "create file replaced"});

  detail::snapshot tree;
  tree["a"] = {};
  tree["a/b"] = {};
  tree["a-b"] = {};
  tree["a/b/c"] = {};
  tree["ab"] = {};
  detail::erase_subtree(tree, "a");
  CHECK(tree.size() == 2);
  CHECK(detail::is_under("a/b/c", "a"));
  CHECK(detail::is_under("a", "a"));
  CHECK_FALSE(detail::is_under("ab", "a"));
  CHECK(detail::is_under("x", ""));
}

TEST_CASE("the scanner lists a tree without following symlinks and skips ignored paths",
          "[watch]") {
  temp_folder folder;
  fs::create_directories(folder / "a/b");
  write_file(folder / "a/b/file", "12345");
  write_file(folder / "a/.raftsync-tmp-1", "x");
  fs::create_directories(folder / ".raftsync");
  write_file(folder / ".raftsync/state", "x");
  detail::snapshot tree;
  std::vector<fs::path> visited;
  REQUIRE(!detail::scan_tree(folder.path(), {}, ignore_rules::raftsync_defaults(), tree,
                             [&](const fs::path& dir) { visited.push_back(dir); }));
  CHECK(tree.size() == 3);
  REQUIRE(tree.count("a/b/file") == 1);
  CHECK(tree["a/b/file"].size == 5);
  CHECK(tree["a/b/file"].kind == fs_kind::file);
  CHECK(tree["a"].kind == fs_kind::directory);
  CHECK(visited.size() == 3);  // the root, a, a/b: each before its entries are read
  CHECK(detail::scan_tree(folder.path(), "missing", {}, tree));
}

namespace {
using detail::fsevents::record;
using detail::fsevents::translate;
namespace fse = detail::fsevents;

std::vector<std::string> translated(const std::vector<record>& records,
                                    const std::map<std::string, fs_kind>& disk) {
  const auto probe = [&](const fs::path& relative) -> std::optional<fs_kind> {
    auto it = disk.find(relative.generic_string());
    if (it == disk.end()) return std::nullopt;
    return it->second;
  };
  std::vector<std::string> text;
  for (const fs_event& e :
       translate("/private/var/root", records, ignore_rules::raftsync_defaults(), probe)) {
    text.push_back(describe(e));
  }
  return text;
}
}  // namespace

TEST_CASE("FSEvents flags translate to events, overflow flags to rescans", "[watch][fsevents]") {
  const std::uint32_t file = fse::item_is_file;
  const std::uint32_t dir = fse::item_is_dir;
  CHECK(translated({{"/private/var/root/a.txt", fse::item_created | fse::item_modified | file, 1}},
                   {{"a.txt", fs_kind::file}}) == std::vector<std::string>{"create file a.txt"});
  CHECK(translated({{"/private/var/root/a.txt", fse::item_modified | file, 1}},
                   {{"a.txt", fs_kind::file}}) == std::vector<std::string>{"modify file a.txt"});
  CHECK(translated({{"/private/var/root/a.txt", fse::item_inode_meta_mod | file, 1}},
                   {{"a.txt", fs_kind::file}}) ==
        std::vector<std::string>{"attributes file a.txt"});
  // Coalesced created|removed of something that is gone: a remove.
  CHECK(translated({{"/private/var/root/a.txt", fse::item_created | fse::item_removed | file, 1}},
                   {}) == std::vector<std::string>{"remove file a.txt"});
  // Removed and recreated within the latency: present now, so a create.
  CHECK(translated({{"/private/var/root/a.txt", fse::item_removed | file, 1}},
                   {{"a.txt", fs_kind::file}}) == std::vector<std::string>{"create file a.txt"});
  // Rename halves with consecutive ids pair up.
  CHECK(translated({{"/private/var/root/old", fse::item_renamed | file, 7},
                    {"/private/var/root/new", fse::item_renamed | file, 8}},
                   {{"new", fs_kind::file}}) == std::vector<std::string>{"rename file old -> new"});
  // A lone half: moved out (gone) or moved in (present; a directory also needs a scan).
  CHECK(translated({{"/private/var/root/out", fse::item_renamed | file, 7}}, {}) ==
        std::vector<std::string>{"remove file out"});
  CHECK(translated({{"/private/var/root/in", fse::item_renamed | dir, 9}},
                   {{"in", fs_kind::directory}}) ==
        std::vector<std::string>{"create directory in",
                                 "rescan_required unknown in (FSEvents: directory moved in)"});
  // The apply step's temp file renamed into place: a create of the target.
  CHECK(translated({{"/private/var/root/.raftsync-tmp-1", fse::item_renamed | file, 3},
                    {"/private/var/root/doc", fse::item_renamed | file, 4}},
                   {{"doc", fs_kind::file}}) == std::vector<std::string>{"create file doc"});
  CHECK(translated({{"/private/var/root/.raftsync/log", fse::item_modified | file, 3}},
                   {{".raftsync/log", fs_kind::file}})
            .empty());
  // Dropped events and must-scan.
  CHECK(
      translated({{"/private/var/root/x", fse::kernel_dropped | fse::must_scan_sub_dirs, 1}}, {}) ==
      std::vector<std::string>{"rescan_required unknown <everything> (FSEvents: kernel dropped "
                               "events)"});
  CHECK(
      translated({{"/private/var/root/sub/", fse::must_scan_sub_dirs, 1}}, {}) ==
      std::vector<std::string>{"rescan_required unknown sub (FSEvents: must scan subdirectories)"});
  CHECK(translated({{"/private/var/root", fse::user_dropped, 1}}, {}) ==
        std::vector<std::string>{
            "rescan_required unknown <everything> (FSEvents: user dropped events)"});
  // The root moved: fatal.
  const auto root_gone = translated({{"/private/var/root", fse::root_changed, 1}}, {});
  REQUIRE(root_gone.size() == 1);
  CHECK(root_gone[0].rfind("error unknown <root> fatal", 0) == 0);
  // Outside the root (a sibling with a common prefix) and bookkeeping flags: nothing.
  CHECK(
      translated({{"/private/var/rootless/a", fse::item_created | file, 1}}, {{"a", fs_kind::file}})
          .empty());
  CHECK(translated({{"/private/var/root", fse::history_done, 1}}, {}).empty());
  // A directory-level event without item flags: rescan that directory.
  CHECK(translated({{"/private/var/root/d", 0, 1}}, {}) ==
        std::vector<std::string>{"rescan_required unknown d (FSEvents: directory event)"});
}

}  // namespace raftsync::watch::test
