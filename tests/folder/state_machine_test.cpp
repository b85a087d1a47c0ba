#include <catch2/catch.hpp>

#include "folder_test_util.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;

TEST_CASE("write creates a file with its parents, content, mode and mtime", "[folder][apply]") {
  node n(1);
  command c = make_write(2, 1, "a/b/c.txt", "hello");
  c.mode = 0640;
  auto r = n.sm->apply(1, encode_command(c));
  REQUIRE(r.status == apply_status::applied);
  CHECK(r.path == "a/b/c.txt");
  CHECK_FALSE(r.own);
  CHECK(n.io->content("a/b/c.txt") == "hello");
  auto st = n.io->lstat("a/b/c.txt");
  REQUIRE(st.has_value());
  CHECK(st->mode == 0640);
  CHECK(st->mtime_ns == c.mtime_ns);
  CHECK(n.io->lstat("a")->kind == file_kind::directory);
  const manifest_entry* e = n.sm->committed().find("a/b/c.txt");
  REQUIRE(e != nullptr);
  CHECK(e->version == 1);
  CHECK(e->sha256 == sha256("hello"));
  CHECK(e->origin == 2);
  CHECK(n.sm->committed().find("a/b")->kind == file_kind::directory);
  CHECK(n.sm->applied_index() == 1);
  // The apply reports everything it wrote, as lstat saw it: the echo filter's input.
  REQUIRE(r.written.size() == 3);
  for (const auto& w : r.written)
    CHECK(n.sm->is_echo(w.path, w.stat));
}

TEST_CASE("modify, chmod, touch, rename, remove, symlink, mkdir, rmdir", "[folder][apply]") {
  node n(1);
  replicated_log l;
  l.append(make_write(2, 1, "f.txt", "v1"));
  l.catch_up(n);
  l.append(make_write(2, 2, "f.txt", "v2", 1));
  command chmod = make(command_kind::set_mode, 2, 3, "f.txt", 2);
  chmod.mode = 0600;
  l.append(chmod);
  command touch = make(command_kind::set_mtime, 2, 4, "f.txt", 2);
  touch.mtime_ns = 42'000'000'000;
  l.append(touch);
  command mkdir = make(command_kind::mkdir, 2, 5, "d");
  mkdir.mode = 0700;
  l.append(mkdir);
  command rename = make(command_kind::rename, 2, 6, "f.txt", 2);
  rename.target = "d/g.txt";
  l.append(rename);
  command link = make(command_kind::symlink, 2, 7, "d/link");
  link.target = "/etc/passwd";
  l.append(link);
  for (const auto& r : l.catch_up(n)) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK_FALSE(n.io->exists("f.txt"));
  CHECK(n.io->content("d/g.txt") == "v2");
  auto st = n.io->lstat("d/g.txt");
  CHECK(st->mode == 0600);
  CHECK(st->mtime_ns == 42'000'000'000);
  CHECK(n.io->lstat("d")->mode == 0700);
  CHECK(n.io->lstat("d/link")->kind == file_kind::symlink);
  CHECK(*n.io->readlink("d/link") == "/etc/passwd");
  const manifest_entry* g = n.sm->committed().find("d/g.txt");
  REQUIRE(g != nullptr);
  CHECK(g->version == 6);  // a rename changes the entry
  CHECK(n.sm->committed().find("f.txt") == nullptr);

  l.append(make(command_kind::remove, 2, 8, "d/g.txt", 6));
  l.append(make(command_kind::remove, 2, 9, "d/link", 7));
  l.append(make(command_kind::rmdir, 2, 10, "d", 5));
  for (const auto& r : l.catch_up(n)) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK(n.io->dump().empty());
  CHECK(n.sm->committed().empty());
}

TEST_CASE("renaming a directory moves its subtree", "[folder][apply]") {
  node n(1);
  replicated_log l;
  l.append(make_write(2, 1, "src/a/1.txt", "one"));
  l.append(make_write(2, 2, "src/b.txt", "two"));
  command rename = make(command_kind::rename, 2, 3, "src", 0);
  rename.target = "dst/moved";
  l.append(rename);
  for (const auto& r : l.catch_up(n))
    CHECK(r.status == apply_status::applied);
  CHECK(n.io->content("dst/moved/a/1.txt") == "one");
  CHECK(n.io->content("dst/moved/b.txt") == "two");
  CHECK_FALSE(n.io->exists("src"));
  CHECK(n.sm->committed().find("dst/moved/a/1.txt") != nullptr);
  CHECK(n.sm->committed().find("src/b.txt") == nullptr);
  CHECK(n.sm->committed().find("src") == nullptr);
}

TEST_CASE("invalid commands are rejected, logged and never crash", "[folder][apply][path]") {
  node n(1);
  std::uint64_t index = 0;
  const std::string nul("a\0b", 3);
  for (const std::string& p :
       {std::string("../escape"), std::string("/etc/passwd"), nul, std::string("a/../../b"),
        std::string(".raftsync/folder-state"), std::string("C:/windows"), std::string("")}) {
    ++index;
    auto r = n.sm->apply(index, encode_command(make_write(2, index, p, "evil")));
    INFO(p);
    CHECK(r.status == apply_status::rejected);
    CHECK(r.error == make_error_code(errc::invalid_path));
    CHECK_FALSE(r.reason.empty());
  }
  command rename = make(command_kind::rename, 2, 100, "x");
  n.sm->apply(++index, encode_command(make_write(2, 99, "x", "data")));
  rename.target = "../../outside";
  CHECK(n.sm->apply(++index, rename).status == apply_status::rejected);
  // Undecodable bytes.
  auto r = n.sm->apply(++index, std::string("\x01\x01garbage", 9));
  CHECK(r.status == apply_status::rejected);
  CHECK(n.sm->applied_index() == index);
  CHECK(n.io->dump() ==
        "x file mode=420 mtime=1700000000000099000 sha256=" + to_hex(sha256("data")) + "\n");
}

TEST_CASE("a file in place of a committed parent directory is refused", "[folder][apply]") {
  node n(1);
  replicated_log l;
  l.append(make_write(2, 1, "plain", "file"));
  l.append(make_write(2, 2, "plain/child", "x"));
  auto rs = l.catch_up(n);
  CHECK(rs[1].status == apply_status::rejected);
  CHECK(rs[1].error == make_error_code(errc::conflict));
}

TEST_CASE("a command applied twice is a duplicate", "[folder][apply]") {
  node n(1);
  command c = make_write(2, 7, "f", "x");
  CHECK(n.sm->apply(1, c).status == apply_status::applied);
  auto again = n.sm->apply(2, c);  // the same proposal committed twice
  CHECK(again.status == apply_status::duplicate);
  CHECK(n.sm->applied_index() == 2);
  // An index at or below applied_index is never applied again.
  CHECK(n.sm->apply(2, make_write(2, 8, "g", "y")).status == apply_status::duplicate);
  CHECK_FALSE(n.io->exists("g"));
}

TEST_CASE("an older command of the same origin is superseded", "[folder][apply]") {
  node n(1);
  CHECK(n.sm->apply(1, make_write(2, 10, "f", "newer")).status == apply_status::applied);
  CHECK(n.sm->apply(2, make_write(2, 9, "f", "older")).status == apply_status::superseded);
  CHECK(n.io->content("f") == "newer");
}

TEST_CASE("a later command of the same origin never conflicts with its earlier one",
          "[folder][apply][conflict]") {
  node n(1);
  CHECK(n.sm->apply(1, make_write(2, 1, "f", "one")).status == apply_status::applied);
  // Proposed before the first committed: base 0, yet no conflict (same origin).
  CHECK(n.sm->apply(2, make_write(2, 2, "f", "two", 0)).status == apply_status::applied);
  CHECK(n.io->content("f") == "two");
  CHECK(n.sm->committed().size() == 1);
}

TEST_CASE("restart neither re-applies nor re-sends", "[folder][apply][restart]") {
  node n(1);
  replicated_log l;
  for (int i = 1; i <= 20; ++i)
    l.append(make_write(2, static_cast<std::uint64_t>(i), "f" + std::to_string(i), "c"));
  l.catch_up(n);
  REQUIRE_FALSE(n.sm->persist());
  auto mutations = n.io->mutation_count();
  n.restart();
  CHECK(n.sm->applied_index() == 20);
  CHECK(n.sm->persisted_index() == 20);
  CHECK(l.catch_up(n).empty());                    // nothing to re-apply
  CHECK(n.io->mutation_count() == mutations + 1);  // just the state file rewrite on open
  auto report = scan(*n.sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());  // nothing to re-send
}

TEST_CASE("replaying entries applied after the last persist is harmless",
          "[folder][apply][restart]") {
  node n(1);
  replicated_log l;
  l.append(make_write(2, 1, "a.txt", "a"));
  l.catch_up(n);
  REQUIRE_FALSE(n.sm->persist());
  // Applied but not persisted when the node crashes.
  l.append(make_write(2, 2, "b.txt", "b"));
  l.append(make_write(2, 3, "a.txt", "a2", 1));
  command rename = make(command_kind::rename, 2, 4, "b.txt", 2);
  rename.target = "c.txt";
  l.append(rename);
  l.append(make(command_kind::remove, 2, 5, "a.txt", 3));
  command mkdir = make(command_kind::mkdir, 2, 6, "dir");
  mkdir.mode = 0755;
  l.append(mkdir);
  l.catch_up(n);
  std::string tree = n.io->dump();
  n.restart();
  CHECK(n.sm->applied_index() == 1);
  for (const auto& r : l.catch_up(n)) {
    INFO(r.reason);
    CHECK(r.preserved.empty());  // nothing mistaken for a local edit
  }
  CHECK(n.io->dump() == tree);
  auto report = scan(*n.sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());
}

TEST_CASE("a failed apply records nothing and can be retried", "[folder][apply]") {
  node n(1);
  n.io->fail_mutations_after(1, std::make_error_code(std::errc::no_space_on_device));
  auto r = n.sm->apply(1, make_write(2, 1, "dir/f", "x"));  // mkdir succeeds, the write fails
  CHECK(r.status == apply_status::failed);
  CHECK(r.error == std::errc::no_space_on_device);
  CHECK(n.sm->applied_index() == 0);
  CHECK(n.sm->committed().empty());
  n.io->fail_mutations_after(0, {});
  CHECK(n.sm->apply(1, make_write(2, 1, "dir/f", "x")).status == apply_status::applied);
  CHECK(n.io->content("dir/f") == "x");
}

TEST_CASE("a corrupt state file is reported, not trusted", "[folder][restart]") {
  node n(1);
  n.sm->apply(1, make_write(2, 1, "f", "x"));
  REQUIRE_FALSE(n.sm->persist());
  std::string bytes = n.io->content(".raftsync/folder-state");
  bytes[bytes.size() / 2] ^= 0x55;
  REQUIRE_FALSE(n.io->write_file_atomic(".raftsync/folder-state", bytes, 0600, 0));
  state_machine again(small_config(1), *n.io, *n.io);
  CHECK(again.open() == make_error_code(errc::corrupt));
}

TEST_CASE("sequence numbers never repeat across restarts", "[folder][restart]") {
  node n(1);
  auto a = n.sm->next_sequence();
  auto b = n.sm->next_sequence();
  CHECK(b > a);
  n.restart();
  CHECK(n.sm->next_sequence() > b);
}

TEST_CASE("echo suppression: 10,000 applied changes produce zero proposals", "[folder][echo]") {
  node n(1);
  replicated_log l;
  std::uint64_t seq = 0;
  for (int i = 0; l.entries.size() < 10000; ++i) {
    std::string path = "d" + std::to_string(i % 50) + "/f" + std::to_string(i % 2000);
    switch (i % 10) {
      case 7: {
        if (n.sm->committed().find(path) == nullptr) break;
        command chmod = make(command_kind::set_mode, 2, ++seq, path);
        chmod.mode = 0600;
        l.append(chmod);
        break;
      }
      case 9: {
        const manifest_entry* e = n.sm->committed().find(path);
        if (e == nullptr) break;
        l.append(make(command_kind::remove, 2 + (i % 2), ++seq, path, e->version));
        break;
      }
      default: {
        const manifest_entry* e = n.sm->committed().find(path);
        l.append(make_write(2 + (i % 2), ++seq, path, "content " + std::to_string(i),
                            e != nullptr ? e->version : 0));
      }
    }
    // Apply as it commits and check every watcher event the apply causes.
    for (const auto& r : l.catch_up(n)) {
      REQUIRE(r.status != apply_status::rejected);
      for (const auto& w : r.written) {
        auto st = n.io->lstat(w.path);
        if (st) REQUIRE(n.sm->is_echo(w.path, *st));
      }
      for (const auto& p : r.removed) {
        auto st = n.io->lstat(p);
        file_stat seen = st ? *st : file_stat{};
        REQUIRE(n.sm->is_echo(p, seen));
      }
    }
  }
  CHECK(l.entries.size() == 10000);
  // Every path the apply touched, re-read as a watcher event would: nothing to propose.
  std::size_t proposals = 0;
  for (const auto& [path, entry] : n.sm->committed().entries()) {
    auto plan = n.reader->read_change(path);
    REQUIRE(plan.has_value());
    proposals += plan->commands.size() + (plan->upload ? 1 : 0);
  }
  CHECK(proposals == 0);
  auto report = scan(*n.sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());
}

TEST_CASE("a user edit is not an echo", "[folder][echo]") {
  node n(1);
  n.sm->apply(1, make_write(2, 1, "f", "applied"));
  n.io->user_write("f", "edited");
  CHECK_FALSE(n.sm->is_echo("f", *n.io->lstat("f")));
  n.io->user_write("new", "x");
  CHECK_FALSE(n.sm->is_echo("new", *n.io->lstat("new")));
  CHECK(n.sm->is_echo("gone", file_stat{}));
  CHECK(n.sm->is_echo(".raftsync/folder-state", *n.io->lstat(".raftsync/folder-state")));
}

TEST_CASE("a crash with a path written twice after the last persist loses nothing",
          "[folder][apply][restart]") {
  node n(1);
  replicated_log l;
  l.append(make_write(2, 1, "f", "v1"));
  l.catch_up(n);
  REQUIRE_FALSE(n.sm->persist());
  l.append(make_write(2, 2, "f", "v2", 1));
  l.append(make_write(2, 3, "f", "v3", 2));
  l.catch_up(n);
  n.restart();
  auto rs = l.catch_up(n);
  CHECK(n.io->content("f") == "v3");
  // Replaying index 2 met the content of index 3 on disk and kept it aside (a spurious copy at
  // worst, see docs/folder.md "Persistence and restart").
  for (const auto& r : rs)
    for (const auto& p : r.preserved)
      CHECK(n.io->content(p.copy_path) == "v3");
  CHECK(n.sm->committed().find("f")->sha256 == sha256("v3"));
}

TEST_CASE("metadata commands do not change the version and do not cause conflicts",
          "[folder][apply][conflict]") {
  node n(1);
  n.sm->apply(1, make_write(2, 1, "f", "v1"));
  command chmod = make(command_kind::set_mode, 3, 1, "f", 1);
  chmod.mode = 0600;
  CHECK(n.sm->apply(2, chmod).status == apply_status::applied);
  CHECK(n.sm->committed().find("f")->version == 1);
  // Node 4 edited the content based on version 1, concurrently with node 3's chmod.
  CHECK(n.sm->apply(3, make_write(4, 1, "f", "v2", 1)).status == apply_status::applied);
  CHECK(n.sm->apply(4, make(command_kind::set_mode, 3, 2, "missing", 0)).status ==
        apply_status::ignored);
}

TEST_CASE("deferred directory syncs happen in persist, before the state file",
          "[folder][apply][restart]") {
  memory_folder_io io;
  state_machine_config config = small_config(1);
  config.defer_directory_sync = true;
  state_machine sm(config, io, io);
  REQUIRE_FALSE(sm.open());
  auto before = io.dir_sync_count();
  for (std::uint64_t i = 1; i <= 50; ++i)
    REQUIRE(
        sm.apply(i, make_write(2, i, "d" + std::to_string(i % 5) + "/f" + std::to_string(i), "x"))
            .status == apply_status::applied);
  CHECK(io.dir_sync_count() == before);  // no directory fsync inside the applies
  REQUIRE_FALSE(sm.persist());
  // The five directories and the root (for the implicit mkdirs), once each.
  CHECK(io.dir_sync_count() - before == 6);

  node eager(1);
  auto eager_before = eager.io->dir_sync_count();
  eager.sm->apply(1, make_write(2, 1, "d/f", "x"));
  CHECK(eager.io->dir_sync_count() > eager_before);
}

// Chaos bug 4: a forged command with a huge sequence and a refused path silenced its origin.
TEST_CASE("a refused command does not make later commands of its origin duplicates",
          "[folder][apply][path]") {
  node n(1);
  command forged = make_write(3, std::uint64_t{1} << 62, "../escape.txt", "x");
  auto refused = n.sm->apply(1, encode_command(forged));
  REQUIRE(refused.status == apply_status::rejected);
  command real = make_write(3, 7, "after.txt", "from node 3");
  auto applied = n.sm->apply(2, encode_command(real));
  INFO(applied.reason);
  CHECK(applied.status == apply_status::applied);
  CHECK(n.io->content("after.txt") == "from node 3");
  // A command that did take effect still deduplicates its retries.
  CHECK(n.sm->apply(3, encode_command(real)).status == apply_status::duplicate);
}

// Found by the burst benchmark: an own write applied while the user was rewriting the file (just
// truncated, so equal to the older committed content) replaced it, and the user's ongoing write
// went to an unlinked inode.
TEST_CASE("an own write never replaces a file the user is rewriting", "[folder][apply][local]") {
  node n(1);
  replicated_log l;
  n.io->user_write("f.txt", "");
  l.append(n.changes("f.txt"));  // the empty file, committed and applied
  l.catch_up(n);
  n.io->user_write("f.txt", "first version");
  l.append(n.changes("f.txt"));  // proposed, not applied yet
  // The user starts writing the next version: the file is truncated (now equal to the committed
  // empty content) when the own command applies.
  n.io->user_write("f.txt", "");
  const std::uint64_t inode = n.io->lstat("f.txt")->inode;
  for (const auto& r : l.catch_up(n)) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK(n.io->lstat("f.txt")->inode == inode);  // the user's open file is still the file
  n.io->user_write("f.txt", "second version");
  const auto next = n.changes("f.txt");
  REQUIRE(next.size() == 1);
  CHECK(next.front().content == "second version");
}

// Chaos bug 8: a node whose state directory was wiped started its sequence numbers again from
// its previous incarnation's; every other node skipped its new changes as duplicates.
TEST_CASE("a wiped node's new incarnation never reuses its predecessor's sequence numbers",
          "[folder][restart]") {
  node observer(1);
  auto config_at = [](std::uint64_t floor) {
    state_machine_config c = small_config(2);
    c.boot_epoch_floor = floor;
    return c;
  };
  memory_folder_io first_disk;
  state_machine first(config_at(100), first_disk, first_disk);
  REQUIRE_FALSE(first.open());
  std::uint64_t index = 0;
  for (int i = 0; i < 5; ++i) {
    command c = make_write(2, first.next_sequence(), "a" + std::to_string(i), "first life");
    REQUIRE(observer.sm->apply(++index, encode_command(c)).status == apply_status::applied);
  }
  // The disk is replaced: empty state, the clock has moved on by at least a second.
  memory_folder_io second_disk;
  state_machine second(config_at(101), second_disk, second_disk);
  REQUIRE_FALSE(second.open());
  for (int i = 0; i < 5; ++i) {
    command c = make_write(2, second.next_sequence(), "b" + std::to_string(i), "second life");
    auto r = observer.sm->apply(++index, encode_command(c));
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  // A restart with state keeps growing even if the clock went back.
  memory_folder_io disk;
  {
    state_machine a(config_at(500), disk, disk);
    REQUIRE_FALSE(a.open());
  }
  state_machine b(config_at(10), disk, disk);
  REQUIRE_FALSE(b.open());
  CHECK(b.next_sequence() > (std::uint64_t{500} << 32));
}
