// The conflict policy for concurrent changes (docs/folder.md, "Concurrent changes"): every pair of
// changes two nodes make to the same entry without seeing each other, committed in either order.
// Each node's user acts on its own disk first; the commands come from the node's change_reader
// (as the facade proposes them); then every node applies the same log and proposes what its scan
// finds until nothing is left. Nothing acknowledged may be lost, every replica must be identical,
// and the outcome must be the one stated — the same in both commit orders.
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>

#include "folder_test_util.hpp"
#include "raftsync/folder/snapshot.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;

namespace {

struct cluster {
  cluster() {
    for (node_id id = 1; id <= 3; ++id)
      nodes.push_back(std::make_unique<node>(id));
  }
  std::vector<std::unique_ptr<node>> nodes;
  replicated_log log;

  node& at(node_id id) { return *nodes[id - 1]; }

  // Commits `commands` and applies them on every node.
  void commit(const std::vector<command>& commands) {
    log.append(commands);
    for (auto& n : nodes)
      log.catch_up(*n);
  }

  // Quiescence: every node applies the log, proposes what its scan finds (preserved copies,
  // changes carried by a rename, deletes inferred from absence), until nobody proposes anything.
  void settle() {
    for (int round = 0;; ++round) {
      REQUIRE(round < 20);
      for (auto& n : nodes)
        log.catch_up(*n);
      bool any = false;
      for (auto& n : nodes) {
        n->utc_ns += 1'000'000'000;
        auto report = scan(*n->sm, "");
        REQUIRE(report.has_value());
        for (const auto& path : report->changed) {
          auto commands = n->changes(path);
          any = any || !commands.empty();
          log.append(commands);
        }
      }
      if (!any) break;
    }
    for (auto& n : nodes)
      log.catch_up(*n);
  }

  // Every tree and every replicated state identical.
  void check_identical() {
    for (auto& n : nodes) {
      CHECK(n->io->dump() == nodes[0]->io->dump());
      CHECK(n->sm->encode_replicated_state() == nodes[0]->sm->encode_replicated_state());
    }
  }

  // path → content of every regular file of node 1's tree.
  std::map<std::string, std::string> files() {
    std::map<std::string, std::string> out;
    std::vector<std::string> dirs{""};
    while (!dirs.empty()) {
      std::string dir = dirs.back();
      dirs.pop_back();
      auto entries = nodes[0]->io->list(dir);
      REQUIRE(entries.has_value());
      for (const auto& e : *entries) {
        std::string path = join_path(dir, e.name);
        if (is_internal_path(path)) continue;
        if (e.kind == file_kind::directory)
          dirs.push_back(path);
        else if (e.kind == file_kind::regular)
          out[path] = nodes[0]->io->content(path);
      }
    }
    return out;
  }
  std::set<std::string> contents() {
    std::set<std::string> out;
    for (auto& [path, content] : files())
      out.insert(content);
    return out;
  }
  bool exists(std::string_view path) { return nodes[0]->io->exists(path); }
  std::string content(std::string_view path) { return nodes[0]->io->content(path); }
};

// What node `n` proposes for the watcher's rename event from -> to (the rename is on disk).
std::vector<command> rename_event(node& n, const std::string& from, const std::string& to) {
  auto plan = n.reader->read_rename(from, to);
  REQUIRE(plan.has_value());
  return node::flatten(std::move(*plan));
}

std::vector<command> rename_on_disk(node& n, const std::string& from, const std::string& to) {
  if (!parent_path(to).empty()) REQUIRE_FALSE(make_dirs(*n.io, parent_path(to), 0755));
  REQUIRE_FALSE(n.io->rename(from, to));
  auto commands = rename_event(n, from, to);
  REQUIRE(commands.size() == 1);
  REQUIRE(commands[0].kind == command_kind::rename);
  return commands;
}

std::vector<command> write_on_disk(node& n, const std::string& path, const std::string& content) {
  n.io->user_write(path, content);
  auto commands = n.changes(path);
  REQUIRE(commands.size() == 1);
  REQUIRE(commands[0].kind == command_kind::write);
  return commands;
}

std::vector<command> delete_on_disk(node& n, const std::string& path) {
  REQUIRE_FALSE(n.io->unlink(path));
  auto commands = n.changes(path);
  REQUIRE(commands.size() == 1);
  REQUIRE(commands[0].kind == command_kind::remove);
  return commands;
}

// The two orders in which two concurrent proposals can commit.
void commit_in_order(cluster& k, const std::vector<command>& first,
                     const std::vector<command>& second, bool first_commits_first) {
  if (first_commits_first) {
    k.log.append(first);
    k.log.append(second);
  } else {
    k.log.append(second);
    k.log.append(first);
  }
  k.settle();
  k.check_identical();
  if (std::getenv("RAFTSYNC_POLICY_TRACE")) {
    for (const auto& [path, content] : k.files())
      std::cerr << "  " << path << " = " << content << "\n";
    for (std::size_t i = 0; i < k.log.entries.size(); ++i) {
      auto c = decode_command(k.log.entries[i]);
      std::cerr << "  #" << i + 1 << " " << describe(*c) << " -> " << c->target << "\n";
    }
  }
}

}  // namespace

// Chaos seed 3 (docs/reliability.md, bug 3): node 3 rewrote f277.txt while node 2 renamed it to
// f413.md; node 2 then touched f413.md before its rename committed (its flush re-proposed the file
// at the new name with base 0). With the write committed first, the rename carried node 3's
// content to f413.md under node 2's name, so node 2's later command counted as "the same origin
// changing its own file" and overwrote it: the acknowledged write was nowhere. Node 1 plays the
// leader; the origins are varied so that the leader writes, renames, or neither.
TEST_CASE("an acknowledged write concurrent with a rename of the same file is kept",
          "[folder][conflict][rename]") {
  struct origins {
    node_id writer, renamer;
  };
  for (origins o : {origins{3, 2}, origins{1, 2}, origins{2, 1}, origins{3, 1}}) {
    for (bool write_first : {true, false}) {
      for (bool renamer_edits : {true, false}) {
        INFO("writer " << o.writer << ", renamer " << o.renamer << ", "
                       << (write_first ? "write" : "rename") << " committed first"
                       << (renamer_edits ? ", renamer edits the new name" : ""));
        cluster k;
        k.commit({make_write(o.writer, 1, "f277.txt", "old content")});
        auto write = write_on_disk(k.at(o.writer), "f277.txt", "acknowledged content");
        auto rename = rename_on_disk(k.at(o.renamer), "f277.txt", "f413.md");
        std::vector<command> edit;
        if (renamer_edits) edit = write_on_disk(k.at(o.renamer), "f413.md", "renamer's edit");
        if (write_first) {
          k.log.append(write);
          k.log.append(rename);
        } else {
          k.log.append(rename);
          k.log.append(write);
        }
        k.log.append(edit);
        k.settle();
        k.check_identical();
        // The edit follows the file it was made to: it is at the new name, in both orders.
        CHECK_FALSE(k.exists("f277.txt"));
        CHECK(k.content("f413.md") == "acknowledged content");
        // The renamer's own later edit lost the race against it and is kept as a conflict copy.
        if (renamer_edits) CHECK(k.contents().count("renamer's edit") == 1);
        CHECK(k.contents().count("acknowledged content") == 1);
      }
    }
  }
}

TEST_CASE("concurrent writes of one file: the first committed stays, the other is a conflict copy",
          "[folder][conflict][policy]") {
  for (bool a_first : {true, false}) {
    INFO((a_first ? "node 1" : "node 2") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "doc.txt", "base")});
    auto a = write_on_disk(k.at(1), "doc.txt", "from 1");
    auto b = write_on_disk(k.at(2), "doc.txt", "from 2");
    commit_in_order(k, a, b, a_first);
    CHECK(k.content("doc.txt") == (a_first ? "from 1" : "from 2"));
    std::string loser = a_first ? "from 2" : "from 1";
    node_id loser_id = a_first ? 2 : 1;
    auto copy = conflict_copy_name("doc.txt", loser_id, (a_first ? b : a)[0].timestamp_ns);
    CHECK(k.content(copy) == loser);
  }
}

TEST_CASE("a write concurrent with a delete: the write wins in either order",
          "[folder][conflict][policy]") {
  for (bool write_first : {true, false}) {
    INFO((write_first ? "write" : "delete") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "f.txt", "base")});
    auto write = write_on_disk(k.at(1), "f.txt", "edited");
    auto remove = delete_on_disk(k.at(2), "f.txt");
    commit_in_order(k, write, remove, write_first);
    CHECK(k.content("f.txt") == "edited");
    CHECK(k.files().size() == 1);
  }
}

TEST_CASE("a write concurrent with a rename: the edit follows the file to its new name",
          "[folder][conflict][policy][rename]") {
  for (bool write_first : {true, false}) {
    INFO((write_first ? "write" : "rename") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "a/report.txt", "draft")});
    auto write = write_on_disk(k.at(1), "a/report.txt", "final text");
    auto rename = rename_on_disk(k.at(2), "a/report.txt", "a/final.txt");
    commit_in_order(k, write, rename, write_first);
    CHECK_FALSE(k.exists("a/report.txt"));
    CHECK(k.content("a/final.txt") == "final text");
    CHECK(k.files().size() == 1);
  }
}

TEST_CASE("a write concurrent with a rename of its directory follows the directory",
          "[folder][conflict][policy][rename]") {
  for (bool write_first : {true, false}) {
    INFO((write_first ? "write" : "rename") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "d/x.txt", "x0"), make_write(3, 2, "d/y.txt", "y0")});
    auto write = write_on_disk(k.at(1), "d/x.txt", "x1");
    auto rename = rename_on_disk(k.at(2), "d", "e");
    commit_in_order(k, write, rename, write_first);
    CHECK_FALSE(k.exists("d"));
    CHECK(k.content("e/x.txt") == "x1");
    CHECK(k.content("e/y.txt") == "y0");
    CHECK(k.files().size() == 2);
  }
}

TEST_CASE("the renaming node's quick edit of a file in the renamed directory replaces it",
          "[folder][rename]") {
  // `mv d e && edit e/x` on one node, both proposed before the rename committed: the edit names no
  // version of e/x (it did not exist yet there), but its node had seen x's content — written by
  // another node after d was created — when it renamed d. No conflict copy.
  cluster k;
  command mkdir = make(command_kind::mkdir, 3, 1, "d");
  mkdir.mode = 0755;
  k.commit({mkdir});
  k.commit({make_write(3, 2, "d/x.txt", "x0")});
  auto rename = rename_on_disk(k.at(2), "d", "e");
  CHECK(rename[0].seen_index == 2);
  auto edit = write_on_disk(k.at(2), "e/x.txt", "x1");
  CHECK(edit[0].base_version == 0);
  k.log.append(rename);
  k.log.append(edit);
  k.settle();
  k.check_identical();
  CHECK(k.files() == std::map<std::string, std::string>{{"e/x.txt", "x1"}});
}

TEST_CASE("renames of two files to the same new name keep both",
          "[folder][conflict][policy][rename]") {
  for (bool a_first : {true, false}) {
    INFO((a_first ? "node 1's" : "node 2's") << " rename committed first");
    cluster k;
    k.commit({make_write(3, 1, "a.txt", "from a"), make_write(3, 2, "b.txt", "from b")});
    auto a = rename_on_disk(k.at(1), "a.txt", "t.txt");
    auto b = rename_on_disk(k.at(2), "b.txt", "t.txt");
    commit_in_order(k, a, b, a_first);
    CHECK_FALSE(k.exists("a.txt"));
    CHECK_FALSE(k.exists("b.txt"));
    CHECK(k.content("t.txt") == (a_first ? "from a" : "from b"));
    // The later rename's file is a conflict copy of t.txt named after its node. (On that node the
    // first rename found the file in its way and preserved it locally first, so the copy is
    // named after the file's mtime rather than the rename's clock.)
    std::string prefix = "t.conflict-" + std::to_string(a_first ? 2 : 1) + "-";
    auto files = k.files();
    CHECK(files.size() == 2);
    std::size_t copies = 0;
    for (const auto& [path, content] : files)
      if (path.rfind(prefix, 0) == 0 && content == (a_first ? "from b" : "from a")) ++copies;
    CHECK(copies == 1);
  }
}

TEST_CASE("a rename concurrent with a delete of the same file: the delete wins in either order",
          "[folder][conflict][policy][rename]") {
  // Both users acted on the same bytes; the rename brings no content, so removing the file loses
  // nothing anyone wrote (a modification would have won, see the next test).
  for (bool rename_first : {true, false}) {
    INFO((rename_first ? "rename" : "delete") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "f205.bin", "payload"), make_write(3, 2, "keep.txt", "other")});
    auto rename = rename_on_disk(k.at(2), "f205.bin", "d0/f237.bin");
    auto remove = delete_on_disk(k.at(1), "f205.bin");
    commit_in_order(k, rename, remove, rename_first);
    CHECK_FALSE(k.exists("f205.bin"));
    CHECK_FALSE(k.exists("d0/f237.bin"));
    CHECK(k.contents() == std::set<std::string>{"other"});
  }
}

TEST_CASE("a renamed and modified file survives a concurrent delete",
          "[folder][conflict][policy][rename]") {
  for (bool rename_first : {true, false}) {
    INFO((rename_first ? "rename" : "delete") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "f.txt", "payload")});
    auto rename = rename_on_disk(k.at(2), "f.txt", "g.txt");
    auto edit = write_on_disk(k.at(2), "g.txt", "payload, edited");
    auto remove = delete_on_disk(k.at(1), "f.txt");
    if (rename_first) {
      k.log.append(rename);
      k.log.append(remove);
    } else {
      k.log.append(remove);
      k.log.append(rename);
    }
    k.log.append(edit);
    k.settle();
    k.check_identical();
    CHECK_FALSE(k.exists("f.txt"));
    CHECK(k.contents() == std::set<std::string>{"payload, edited"});
  }
}

TEST_CASE("a write into a directory concurrent with its removal keeps the directory and the write",
          "[folder][conflict][policy]") {
  for (bool write_first : {true, false}) {
    INFO((write_first ? "write" : "rmdir") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "d/old.txt", "old")});
    auto write = write_on_disk(k.at(1), "d/new.txt", "new");
    // Node 2 removes the directory with its content (rm -r): the file first, then the directory.
    REQUIRE_FALSE(remove_all(*k.at(2).io, "d"));
    auto removal = k.at(2).changes("d");
    REQUIRE(removal.size() == 2);
    CHECK(removal[0].kind == command_kind::remove);
    CHECK(removal[1].kind == command_kind::rmdir);
    commit_in_order(k, write, removal, write_first);
    CHECK(k.content("d/new.txt") == "new");
    CHECK_FALSE(k.exists("d/old.txt"));
    CHECK(k.files().size() == 1);
  }
}

TEST_CASE("a mkdir inside a directory concurrent with its removal keeps both directories",
          "[folder][conflict][policy]") {
  for (bool mkdir_first : {true, false}) {
    INFO((mkdir_first ? "mkdir" : "rmdir") << " committed first");
    cluster k;
    command mkdir = make(command_kind::mkdir, 3, 1, "d");
    mkdir.mode = 0755;
    k.commit({mkdir});
    REQUIRE_FALSE(k.at(1).io->mkdir("d/sub", 0755));
    auto sub = k.at(1).changes("d/sub");
    REQUIRE(sub.size() == 1);
    REQUIRE_FALSE(k.at(2).io->rmdir("d"));
    auto rmdir = k.at(2).changes("d");
    REQUIRE(rmdir.size() == 1);
    commit_in_order(k, sub, rmdir, mkdir_first);
    auto st = k.at(3).io->lstat("d/sub");
    REQUIRE(st.has_value());
    CHECK(st->kind == file_kind::directory);
    CHECK(k.at(3).sm->committed().find("d") != nullptr);
  }
}

TEST_CASE("move records survive a restart and travel in snapshots", "[folder][rename][restart]") {
  node a(1);
  replicated_log l;
  l.append(make_write(3, 1, "p.txt", "v1"));
  command rename = make(command_kind::rename, 2, 1, "p.txt", 1);
  rename.target = "t.txt";
  l.append(rename);
  l.catch_up(a);
  REQUIRE(a.sm->moves().size() == 1);
  REQUIRE_FALSE(a.sm->persist());
  a.restart();
  CHECK(a.sm->moves().size() == 1);
  // A node that joins by snapshot gets the same records.
  node fresh(4);
  snapshot_writer writer(*a.sm);
  snapshot_reader reader(*fresh.sm);
  while (!reader.complete()) {
    auto bytes = writer.read(reader.next_offset(), 4096);
    REQUIRE(bytes.has_value());
    REQUIRE_FALSE(reader.write(reader.next_offset(), *bytes));
  }
  REQUIRE_FALSE(reader.install());
  CHECK(fresh.sm->moves() == a.sm->moves());
  // An edit of p.txt proposed before the rename was seen still follows it on both.
  l.append(make_write(3, 2, "p.txt", "v2", 1));
  for (node* n : {&a, &fresh}) {
    auto rs = l.catch_up(*n);
    REQUIRE(rs.size() == 1);
    CHECK(rs[0].status == apply_status::applied);
    CHECK(rs[0].path == "t.txt");
    CHECK(rs[0].from_path == "p.txt");
    CHECK(n->io->content("t.txt") == "v2");
    CHECK_FALSE(n->io->exists("p.txt"));
  }
  CHECK(fresh.sm->encode_replicated_state() == a.sm->encode_replicated_state());
}

TEST_CASE("a local delete read after the rename it raced reaches the rename's destination",
          "[folder][rename][scan]") {
  node a(1);
  replicated_log l;
  l.append(make_write(3, 1, "p.txt", "v1"));
  l.catch_up(a);
  REQUIRE_FALSE(a.io->unlink("p.txt"));  // the user deletes; the event is read only later
  command rename = make(command_kind::rename, 2, 1, "p.txt", 1);
  rename.target = "d/t.txt";
  l.append(rename);
  auto rs = l.catch_up(a);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == apply_status::applied);
  auto commands = a.changes("p.txt");
  REQUIRE(commands.size() == 1);
  CHECK(commands[0].kind == command_kind::remove);
  CHECK(commands[0].path == "d/t.txt");
  CHECK(commands[0].base_version == 2);
}

TEST_CASE("move records are bounded; an edit older than the oldest kept one is not lost",
          "[folder][rename]") {
  node a(1);
  std::uint64_t index = 0;
  const std::size_t files = move_records_max + 10;
  for (std::size_t i = 0; i < files; ++i) {
    std::string name = "f" + std::to_string(i);
    REQUIRE(a.sm->apply(++index, make_write(3, i + 1, name, "v1")).status == apply_status::applied);
    command rename = make(command_kind::rename, 2, i + 1, name, index);
    rename.target = "moved/" + name;
    REQUIRE(a.sm->apply(++index, rename).status == apply_status::applied);
  }
  CHECK(a.sm->moves().size() == move_records_max);
  CHECK(a.sm->moves().count("f0") == 0);  // the oldest went first
  CHECK(a.sm->moves().count("f" + std::to_string(files - 1)) == 1);
  // f0's forwarding address is gone: a late edit of it is kept where it was made.
  auto r = a.sm->apply(++index, make_write(3, files + 1, "f0", "v2", 1));
  CHECK(r.status == apply_status::applied);
  CHECK(a.io->content("f0") == "v2");
  CHECK(a.io->content("moved/f0") == "v1");
  // f10's is still there (f0 to f9 were dropped): the edit follows.
  r = a.sm->apply(++index, make_write(3, files + 2, "f10", "v2", 21));
  CHECK(r.status == apply_status::applied);
  CHECK(r.path == "moved/f10");
}

TEST_CASE("two concurrent renames of one file keep it, under the later committed name",
          "[folder][conflict][policy][rename]") {
  for (bool a_first : {true, false}) {
    INFO((a_first ? "node 1's" : "node 2's") << " rename committed first");
    cluster k;
    k.commit({make_write(3, 1, "f.txt", "payload")});
    auto a = rename_on_disk(k.at(1), "f.txt", "a.txt");
    auto b = rename_on_disk(k.at(2), "f.txt", "b.txt");
    commit_in_order(k, a, b, a_first);
    CHECK(k.files() ==
          std::map<std::string, std::string>{{a_first ? "b.txt" : "a.txt", "payload"}});
  }
}

// Chaos seed 3, second run: the node's flush scanned the folder while its own rename was still in
// flight, proposing "remove old name" and "write new name" beside the rename. With the rename
// committed first, that remove must not follow the move record to the renamed file: its node
// proposed it after the rename, knowing the file had left the old name.
TEST_CASE("the renaming node's re-read of the old name never removes the renamed file",
          "[folder][rename]") {
  for (bool write_before_remove : {true, false}) {
    INFO((write_before_remove ? "write, then remove" : "remove, then write")
         << " after the rename");
    cluster k;
    k.commit({make_write(1, 1, "d2/f9.md", "acknowledged")});
    auto rename = rename_on_disk(k.at(2), "d2/f9.md", "d3/f12.txt");
    // As in the run: the new directory's scan read the new name, then the flush the old one.
    auto creation = k.at(2).changes("d3/f12.txt");
    REQUIRE(creation.size() == 1);
    auto removal = k.at(2).changes("d2/f9.md");
    REQUIRE(removal.size() == 1);
    CHECK(removal[0].kind == command_kind::remove);
    k.log.append(rename);
    k.log.append(write_before_remove ? creation : removal);
    k.log.append(write_before_remove ? removal : creation);
    k.settle();
    k.check_identical();
    CHECK(k.files() == std::map<std::string, std::string>{{"d3/f12.txt", "acknowledged"}});
  }
}

// Chaos CI-sized run, seed 31 (docs/reliability.md, bug 20): node 4's user renamed f38.bin to
// d1/f39.bin while a flush scanned the folder. The scan found the old name gone and proposed a
// remove; the watcher's rename event then proposed the rename. The remove committed first, so the
// rename's source was gone: the apply took the remove for another node's delete (the delete wins
// over a concurrent rename) and unlinked the renamed file, on the node that had renamed it.
TEST_CASE("a node's remove misread from its own rename in progress never deletes the renamed file",
          "[folder][rename]") {
  for (bool remove_first : {true, false}) {
    INFO((remove_first ? "remove" : "rename") << " committed first");
    cluster k;
    k.commit({make_write(3, 1, "f38.bin", "acknowledged"), make_write(3, 2, "other.txt", "other")});
    node& n = k.at(2);
    REQUIRE_FALSE(make_dirs(*n.io, "d1", 0755));
    REQUIRE_FALSE(n.io->rename("f38.bin", "d1/f39.bin"));
    auto removal = n.changes("f38.bin");  // the scan, before the rename event is handled
    REQUIRE(removal.size() == 1);
    CHECK(removal[0].kind == command_kind::remove);
    auto rename = rename_event(n, "f38.bin", "d1/f39.bin");
    REQUIRE(rename.size() == 1);
    REQUIRE(rename[0].kind == command_kind::rename);
    commit_in_order(k, removal, rename, remove_first);
    CHECK(k.files() == std::map<std::string, std::string>{{"d1/f39.bin", "acknowledged"},
                                                          {"other.txt", "other"}});
  }
}

// Bug 21 (found while investigating bug 20): a file written and then renamed or deleted before
// its write committed came back on every node — the apply of the node's own write recreated it
// from the log. An editor's save (write a temporary file, rename it over the document) left
// the temporary file behind everywhere: 34 of 50 saves in a three-node run.
TEST_CASE("a file its writer renamed or deleted before the write committed does not come back",
          "[folder][rename]") {
  // A small file travels as one write; one above chunk_bytes (4 KiB here) as chunks and a commit.
  for (std::size_t size : {std::size_t{9}, std::size_t{10000}}) {
    for (bool renamed : {true, false}) {
      INFO(size << " bytes, " << (renamed ? "renamed over the document" : "deleted"));
      cluster k;
      k.commit({make_write(3, 1, "doc.txt", "version 1")});
      node& n = k.at(2);
      const std::string version_2(size, 'v');
      n.io->user_write(".doc.txt.tmp", version_2);
      auto write = n.changes(".doc.txt.tmp");
      REQUIRE_FALSE(write.empty());
      std::vector<command> after;
      if (renamed) {
        REQUIRE_FALSE(n.io->rename(".doc.txt.tmp", "doc.txt"));
        after = rename_event(n, ".doc.txt.tmp", "doc.txt");  // the temporary name: never committed
      } else {
        REQUIRE_FALSE(n.io->unlink(".doc.txt.tmp"));
        after = n.changes(".doc.txt.tmp");
        CHECK(after.empty());  // nothing committed to remove yet
      }
      k.log.append(write);
      k.log.append(after);
      k.settle();
      k.check_identical();
      CHECK(k.files() ==
            std::map<std::string, std::string>{{"doc.txt", renamed ? version_2 : "version 1"}});
    }
  }
}

TEST_CASE("a link its maker renamed over another before the link committed does not come back",
          "[folder][rename]") {
  cluster k;
  node& n = k.at(2);
  REQUIRE_FALSE(n.io->symlink("release-2", "current.tmp"));
  auto link = n.changes("current.tmp");
  REQUIRE(link.size() == 1);
  REQUIRE(link[0].kind == command_kind::symlink);
  REQUIRE_FALSE(n.io->rename("current.tmp", "current"));
  auto replace = rename_event(n, "current.tmp", "current");
  k.log.append(link);
  k.log.append(replace);
  k.settle();
  k.check_identical();
  CHECK_FALSE(k.exists("current.tmp"));
  auto target = k.nodes[0]->io->readlink("current");
  REQUIRE(target.has_value());
  CHECK(*target == "release-2");
}

// Chaos CI-sized run, seed 44 (docs/reliability.md, bug 23): node 2 wrote f324.md twice and was
// then replaced. Its successor (the same id, a fresh state, a later boot epoch) was still
// replaying the log when its scan proposed a remove of the file, based on the version its replay
// had reached. "A later command of the same origin" let that remove through, and it deleted the
// predecessor's newer write, which had been acknowledged. Only commands of one run of a node may
// skip the base check.
TEST_CASE("a replaced node's remove based on an old version loses to its predecessor's newer write",
          "[folder][conflict]") {
  cluster k;
  k.commit({make_write(3, 1, "f.md", "v1")});
  node& predecessor = k.at(2);
  k.commit(write_on_disk(predecessor, "f.md", "v2"));
  k.commit(write_on_disk(predecessor, "f.md", "v3 (acknowledged)"));
  // The replacement has replayed the first entry only when its user deletes the file it shows.
  k.nodes[1] = std::make_unique<node>(2, 4096, 1000);
  node& successor = k.at(2);
  REQUIRE(successor.sm->apply(1, k.log.entries[0]).status == apply_status::applied);
  auto removal = delete_on_disk(successor, "f.md");
  REQUIRE(removal[0].base_version == 1);
  k.log.append(removal);
  k.settle();
  k.check_identical();
  CHECK(k.files() == std::map<std::string, std::string>{{"f.md", "v3 (acknowledged)"}});
}

// Found while explaining chaos seed 45: a node whose scan reads a rename as a removal of the old
// name plus a new file (a rename made while it was down), concurrent with the same rename by
// another node. The removal follows the other node's rename to the new name and unlinks the file
// there, on the scanning node too; its own write of the new name must then put the file back (it
// was an apply, not the user, that removed it), or the content is gone everywhere.
TEST_CASE(
    "the same rename made on two nodes, one of them reading it as a delete and a new file, "
    "keeps the file",
    "[folder][rename]") {
  cluster k;
  k.commit({make_write(3, 1, "old.txt", "acknowledged")});
  auto rename = rename_on_disk(k.at(1), "old.txt", "new.txt");
  node& n = k.at(2);
  REQUIRE_FALSE(n.io->rename("old.txt", "new.txt"));
  auto removal = n.changes("old.txt");
  REQUIRE(removal.size() == 1);
  REQUIRE(removal[0].kind == command_kind::remove);
  auto creation = n.changes("new.txt");
  REQUIRE(creation.size() == 1);
  REQUIRE(creation[0].kind == command_kind::write);
  k.log.append(rename);
  k.log.append(removal);
  k.log.append(creation);
  k.settle();
  k.check_identical();
  CHECK(k.files() == std::map<std::string, std::string>{{"new.txt", "acknowledged"}});
}
