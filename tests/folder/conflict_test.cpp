#include <catch2/catch.hpp>

#include "folder_test_util.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;

TEST_CASE("concurrent writes from two nodes: the later one becomes a replicated conflict copy",
          "[folder][conflict]") {
  node a(1);
  node b(2);
  node c(3);
  replicated_log l;
  // Both start from the same committed file.
  l.append(make_write(1, 1, "doc.txt", "base"));
  for (node* n : {&a, &b, &c})
    l.catch_up(*n);
  // Node 1 and node 2 edit it concurrently; both proposals name version 1.
  a.io->user_write("doc.txt", "edit from a");
  b.io->user_write("doc.txt", "edit from b");
  auto from_a = a.changes("doc.txt");
  auto from_b = b.changes("doc.txt");
  REQUIRE(from_a.size() == 1);
  REQUIRE(from_b.size() == 1);
  CHECK(from_a[0].base_version == 1);
  CHECK(from_b[0].base_version == 1);
  l.append(from_a);  // a's commits first
  l.append(from_b);
  std::vector<std::vector<apply_result>> results;
  for (node* n : {&a, &b, &c})
    results.push_back(l.catch_up(*n));
  std::string copy = conflict_copy_name("doc.txt", 2, from_b[0].timestamp_ns);
  for (const auto& rs : results) {
    REQUIRE(rs.size() == 2);
    CHECK(rs[0].status == apply_status::applied);
    CHECK(rs[1].status == apply_status::conflict);
    CHECK(rs[1].path == copy);
  }
  // Identical trees and manifests everywhere; nothing lost.
  for (node* n : {&a, &b, &c}) {
    CHECK(n->io->content("doc.txt") == "edit from a");
    CHECK(n->io->content(copy) == "edit from b");
  }
  CHECK(a.sm->committed().same_replicated(b.sm->committed()));
  CHECK(a.sm->committed().same_replicated(c.sm->committed()));
  // Node 2's working doc.txt still held its (proposed, uncommitted) edit when node 1's write
  // arrived: it was moved aside locally first (safe even if node 2's proposal had been lost).
  CHECK(results[0][0].preserved.empty());
  REQUIRE(results[1][0].preserved.size() == 1);
  CHECK(b.io->content(results[1][0].preserved[0].copy_path) == "edit from b");
  CHECK(results[2][0].preserved.empty());
  CHECK(a.io->dump() == c.io->dump());
}

TEST_CASE("concurrent creates of the same path keep both", "[folder][conflict]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "new.txt", "from 2"));
  l.append(make_write(3, 1, "new.txt", "from 3"));
  auto rs = l.catch_up(a);
  CHECK(rs[1].status == apply_status::conflict);
  CHECK(a.io->content("new.txt") == "from 2");
  CHECK(a.io->content(rs[1].path) == "from 3");
}

TEST_CASE("identical concurrent writes are not a conflict", "[folder][conflict]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "same.txt", "same"));
  l.append(make_write(3, 1, "same.txt", "same"));
  auto rs = l.catch_up(a);
  CHECK(rs[1].status == apply_status::applied);
  CHECK(a.sm->committed().size() == 1);
}

TEST_CASE("a delete based on an older version loses against the newer content",
          "[folder][conflict]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "f", "v1"));
  l.append(make_write(2, 2, "f", "v2", 1));
  l.append(make(command_kind::remove, 3, 1, "f", 1));  // node 3 deleted v1
  auto rs = l.catch_up(a);
  CHECK(rs[2].status == apply_status::ignored);
  CHECK(a.io->content("f") == "v2");
}

TEST_CASE("a write after a concurrent delete recreates the file", "[folder][conflict]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "f", "v1"));
  l.append(make(command_kind::remove, 3, 1, "f", 1));
  l.append(make_write(2, 2, "f", "v2", 1));
  auto rs = l.catch_up(a);
  CHECK(rs[2].status == apply_status::applied);
  CHECK(a.io->content("f") == "v2");
}

TEST_CASE("a rename onto a path changed concurrently goes to a conflict name",
          "[folder][conflict]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "src", "moving"));
  l.append(make_write(2, 2, "dst", "old dst"));
  l.append(make_write(3, 1, "dst", "new dst", 2));  // node 3 changed dst
  command rename = make(command_kind::rename, 2, 3, "src", 1);
  rename.target = "dst";
  rename.target_base_version = 2;  // node 2 saw the old dst
  l.append(rename);
  auto rs = l.catch_up(a);
  CHECK(rs[3].status == apply_status::conflict);
  CHECK(a.io->content("dst") == "new dst");
  CHECK(a.io->content(rs[3].path) == "moving");
  CHECK_FALSE(a.io->exists("src"));
}

TEST_CASE("rmdir of a directory that gained entries concurrently is ignored",
          "[folder][conflict]") {
  node a(1);
  replicated_log l;
  command mkdir = make(command_kind::mkdir, 2, 1, "d");
  mkdir.mode = 0755;
  l.append(mkdir);
  l.append(make_write(3, 1, "d/new", "x"));
  l.append(make(command_kind::rmdir, 2, 2, "d", 1));
  auto rs = l.catch_up(a);
  CHECK(rs[2].status == apply_status::ignored);
  CHECK(a.io->content("d/new") == "x");
}

TEST_CASE("a local edit not yet proposed is preserved before an apply overwrites it",
          "[folder][conflict][local]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "f.txt", "committed"));
  l.catch_up(a);
  a.io->user_write("f.txt", "local edit");  // not proposed yet
  l.append(make_write(2, 2, "f.txt", "remote", 1));
  auto rs = l.catch_up(a);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == apply_status::applied);
  REQUIRE(rs[0].preserved.size() == 1);
  const auto& p = rs[0].preserved[0];
  CHECK(p.original_path == "f.txt");
  CHECK(p.copy_path.rfind("f.conflict-1-", 0) == 0);
  CHECK(a.io->content("f.txt") == "remote");
  CHECK(a.io->content(p.copy_path) == "local edit");
  // The copy is an ordinary new file to the proposer: it replicates like any other change.
  auto commands = a.changes(p.copy_path);
  REQUIRE(commands.size() == 1);
  CHECK(commands[0].kind == command_kind::write);
  CHECK(commands[0].content == "local edit");
  CHECK(commands[0].base_version == 0);
}

TEST_CASE("a local edit survives a delete in place and is preserved before a rename over it",
          "[folder][conflict][local]") {
  node a(1);
  replicated_log l;
  l.append(make_write(2, 1, "del.txt", "committed"));
  l.append(make_write(2, 2, "src.txt", "src"));
  l.append(make_write(2, 3, "dst.txt", "dst"));
  l.catch_up(a);
  a.io->user_write("del.txt", "edited before delete");
  a.io->user_write("dst.txt", "edited before rename over");
  l.append(make(command_kind::remove, 2, 4, "del.txt", 1));
  command rename = make(command_kind::rename, 2, 5, "src.txt", 2);
  rename.target = "dst.txt";
  rename.target_base_version = 3;
  l.append(rename);
  auto rs = l.catch_up(a);
  // A delete needs no room: the edit stays, now an uncommitted new file that is proposed.
  REQUIRE(rs[0].preserved.size() == 1);
  CHECK(rs[0].preserved[0].copy_path == "del.txt");
  CHECK(a.sm->committed().find("del.txt") == nullptr);
  CHECK(a.io->content("del.txt") == "edited before delete");
  auto recreate = a.changes("del.txt");
  REQUIRE(recreate.size() == 1);
  CHECK(recreate[0].kind == command_kind::write);
  CHECK(recreate[0].base_version == 0);
  REQUIRE(rs[1].preserved.size() == 1);
  CHECK(a.io->content("dst.txt") == "src");
  CHECK(a.io->content(rs[1].preserved[0].copy_path) == "edited before rename over");
}

TEST_CASE("an untracked local file at a path being created is preserved",
          "[folder][conflict][local]") {
  node a(1);
  a.io->user_write("x.txt", "mine");
  auto r = a.sm->apply(1, make_write(2, 1, "x.txt", "theirs"));
  CHECK(r.status == apply_status::applied);
  REQUIRE(r.preserved.size() == 1);
  CHECK(a.io->content(r.preserved[0].copy_path) == "mine");
  CHECK(a.io->content("x.txt") == "theirs");
}

TEST_CASE("the proposer's own write is recognised and not rewritten", "[folder][conflict][local]") {
  node a(1);
  a.io->user_write("mine.txt", "hello");
  auto commands = a.changes("mine.txt");
  REQUIRE(commands.size() == 1);
  auto inode = a.io->lstat("mine.txt")->inode;
  auto r = a.sm->apply(1, commands[0]);
  CHECK(r.status == apply_status::applied);
  CHECK(r.own);
  CHECK(r.preserved.empty());
  CHECK(a.io->lstat("mine.txt")->inode == inode);  // not rewritten
  CHECK(a.changes("mine.txt").empty());            // and no echo
}

TEST_CASE("a newer local edit survives the apply of the node's own older write",
          "[folder][conflict][local]") {
  node a(1);
  a.io->user_write("f", "first");
  auto first = a.changes("f");
  a.io->user_write("f", "second");  // edited again before the first proposal committed
  auto r = a.sm->apply(1, first[0]);
  CHECK(r.status == apply_status::applied);
  CHECK(r.preserved.empty());
  CHECK(a.io->content("f") == "second");
  auto next = a.changes("f");  // the newer edit is still proposed
  REQUIRE(next.size() == 1);
  CHECK(next[0].content == "second");
  CHECK(a.sm->apply(2, next[0]).status == apply_status::applied);
  CHECK(a.changes("f").empty());
}

// Chaos bug 7: a local write that lands after the apply examined the working file but before its
// rename was sent to the unlinked inode and vanished.
TEST_CASE(
    "a local write landing between the working-file check and the rename is kept as a "
    "conflict copy",
    "[folder][conflict][local]") {
  node n(1);
  replicated_log l;
  l.append(make_write(2, 1, "f.txt", "v1"));
  l.catch_up(n);
  l.append(make_write(2, 2, "f.txt", "v2 from node 2", 1));
  int fired = 0;
  n.io->before_replace = [&](std::string_view path) {
    if (path == "f.txt" && fired++ == 0) n.io->user_write("f.txt", "local edit in flight");
  };
  auto results = l.catch_up(n);
  n.io->before_replace = {};
  REQUIRE(results.size() == 1);
  INFO(results[0].reason);
  CHECK(results[0].status == apply_status::applied);
  CHECK(fired >= 1);
  CHECK(n.io->content("f.txt") == "v2 from node 2");
  REQUIRE(results[0].preserved.size() == 1);
  CHECK(n.io->content(results[0].preserved[0].copy_path) == "local edit in flight");
}
