#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "folder_test_util.hpp"
#include "raftsync/folder/snapshot.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;

namespace {

// A folder_io wrapper that records the largest single read and write (memory bound checks) and
// can change a file between the reader's two lstat calls.
class probing_io final : public folder_io {
 public:
  explicit probing_io(memory_folder_io& inner) : inner_(inner) {}
  std::size_t max_read = 0;
  std::size_t max_write = 0;
  int edits_during_reads = 0;  // this many reads rewrite the file they read
  std::string edit_path;

  result<file_stat> lstat(std::string_view p) override { return inner_.lstat(p); }
  std::error_code read(std::string_view p, std::uint64_t o, std::size_t n,
                       std::string& out) override {
    max_read = std::max(max_read, n);
    auto ec = inner_.read(p, o, n, out);
    if (edits_during_reads > 0 && p == edit_path) {
      --edits_during_reads;
      inner_.user_write(p, "changed while reading " + std::to_string(edits_during_reads));
    }
    return ec;
  }
  std::error_code write_file_atomic(std::string_view p, std::string_view c, std::uint32_t m,
                                    std::int64_t t, bool sync_directory = true) override {
    if (p.rfind(".raftsync/", 0) != 0) max_write = std::max(max_write, c.size());
    return inner_.write_file_atomic(p, c, m, t, sync_directory);
  }
  std::error_code write_at(std::string_view p, std::uint64_t o, std::string_view d) override {
    max_write = std::max(max_write, d.size());
    return inner_.write_at(p, o, d);
  }
  std::error_code truncate(std::string_view p, std::uint64_t s) override {
    return inner_.truncate(p, s);
  }
  std::error_code sync_file(std::string_view p) override { return inner_.sync_file(p); }
  std::error_code sync_dir(std::string_view p) override { return inner_.sync_dir(p); }
  std::error_code mkdir(std::string_view p, std::uint32_t m) override { return inner_.mkdir(p, m); }
  std::error_code rmdir(std::string_view p) override { return inner_.rmdir(p); }
  std::error_code unlink(std::string_view p) override { return inner_.unlink(p); }
  std::error_code rename(std::string_view a, std::string_view b) override {
    return inner_.rename(a, b);
  }
  std::error_code chmod(std::string_view p, std::uint32_t m) override { return inner_.chmod(p, m); }
  std::error_code set_mtime(std::string_view p, std::int64_t t) override {
    return inner_.set_mtime(p, t);
  }
  std::error_code symlink(std::string_view t, std::string_view p) override {
    return inner_.symlink(t, p);
  }
  result<std::string> readlink(std::string_view p) override { return inner_.readlink(p); }
  result<std::vector<dir_entry>> list(std::string_view p) override { return inner_.list(p); }

 private:
  memory_folder_io& inner_;
};

std::string pattern(std::size_t size, char seed) {
  std::string s(size, '\0');
  std::uint32_t x = static_cast<unsigned char>(seed) * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

std::vector<command> propose_all(node& n, const scan_report& report) {
  std::vector<command> out;
  for (const auto& p : report.changed) {
    auto cs = n.changes(p);
    out.insert(out.end(), cs.begin(), cs.end());
  }
  return out;
}

}  // namespace

TEST_CASE("the startup scan finds every change made while the node was down", "[folder][scan]") {
  node leader(1);
  node follower(2);
  replicated_log l;
  // A committed tree on both.
  for (const char* p : {"keep.txt", "modify.txt", "delete.txt", "dir/sub/inner.txt", "chmod.txt"})
    l.append(make_write(3, l.entries.size() + 1, p, std::string("v1 ") + p));
  command mkdir = make(command_kind::mkdir, 3, 100, "emptydir");
  mkdir.mode = 0755;
  l.append(mkdir);
  l.catch_up(leader);
  l.catch_up(follower);
  REQUIRE_FALSE(follower.sm->persist());
  // While "down", the user changes node 2's folder.
  follower.io->user_write("modify.txt", "v2");
  REQUIRE_FALSE(follower.io->unlink("delete.txt"));
  REQUIRE_FALSE(remove_all(*follower.io, "dir"));
  REQUIRE_FALSE(follower.io->rmdir("emptydir"));
  REQUIRE_FALSE(follower.io->chmod("chmod.txt", 0600));
  follower.io->user_write("created/new.txt", "brand new");
  REQUIRE_FALSE(follower.io->symlink("keep.txt", "link"));
  follower.restart();
  auto report = scan(*follower.sm, "");
  REQUIRE(report.has_value());
  auto commands = propose_all(follower, *report);
  // Commit them and apply on both nodes: identical trees again, equal to node 2's disk.
  std::string expected = follower.io->dump();
  l.append(commands);
  for (const auto& r : l.catch_up(leader)) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  l.catch_up(follower);
  CHECK(leader.io->dump() == expected);
  CHECK(follower.io->dump() == expected);
  CHECK(leader.sm->committed().same_replicated(follower.sm->committed()));
  // And a second scan finds nothing.
  auto again = scan(*follower.sm, "");
  REQUIRE(again.has_value());
  CHECK(again->changed.empty());
  // Removals come first, deepest first.
  REQUIRE(report->changed.size() >= 3);
  CHECK(report->changed[0] == "emptydir");
}

TEST_CASE("a rescan of a subtree only looks at that subtree", "[folder][scan]") {
  node n(1);
  n.io->user_write("a/1", "x");
  n.io->user_write("b/2", "y");
  auto report = scan(*n.sm, "a");
  REQUIRE(report.has_value());
  CHECK(report->changed == std::vector<std::string>{"a", "a/1"});
  CHECK(scan(*n.sm, "../x").error() == make_error_code(errc::invalid_path));
}

TEST_CASE("an unchanged touched file proposes only its new mtime; same bytes nothing",
          "[folder][scan]") {
  node n(1);
  n.io->user_write("f", "same");
  n.sm->apply(1, n.changes("f")[0]);
  REQUIRE_FALSE(n.io->set_mtime("f", 5));
  auto cs = n.changes("f");
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].kind == command_kind::set_mtime);
  CHECK(cs[0].mtime_ns == 5);
  n.sm->apply(2, cs[0]);
  // Rewritten with the same bytes and then given back its committed mtime: nothing to propose.
  std::int64_t committed_mtime = n.sm->committed().find("f")->mtime_ns;
  REQUIRE_FALSE(n.io->write_file_atomic("f", "same", 0644, committed_mtime));
  CHECK(n.changes("f").empty());
  CHECK(scan(*n.sm, "")->changed.empty());  // the hash check refreshed the cheap check's inode
}

TEST_CASE("a file that keeps changing while read is reported busy", "[folder][scan]") {
  memory_folder_io inner;
  probing_io io(inner);
  state_machine sm(small_config(1), io, io);
  REQUIRE_FALSE(sm.open());
  change_reader reader(
      sm, [] { return 0; }, 3);
  inner.user_write("hot", "x");
  io.edit_path = "hot";
  io.edits_during_reads = 100;
  CHECK(reader.read_change("hot").error() == make_error_code(errc::busy));
  io.edits_during_reads = 1;  // settles after one retry
  auto plan = reader.read_change("hot");
  REQUIRE(plan.has_value());
  REQUIRE(plan->commands.size() == 1);
  CHECK(plan->commands[0].content == inner.content("hot"));
}

TEST_CASE("rename events become rename commands without content", "[folder][scan]") {
  node n(1);
  n.io->user_write("old.txt", "payload");
  n.sm->apply(1, n.changes("old.txt")[0]);
  REQUIRE_FALSE(n.io->rename("old.txt", "new.txt"));
  auto plan = n.reader->read_rename("old.txt", "new.txt");
  REQUIRE(plan.has_value());
  REQUIRE(plan->commands.size() == 1);
  CHECK(plan->commands[0].kind == command_kind::rename);
  CHECK(plan->commands[0].content.empty());
  CHECK(plan->commands[0].target == "new.txt");
  CHECK(n.sm->apply(2, plan->commands[0]).status == apply_status::applied);
  CHECK(scan(*n.sm, "")->changed.empty());
}

TEST_CASE("large files are proposed in chunks with memory bounded by the chunk size",
          "[folder][chunks]") {
  const std::uint64_t chunk = 4096;
  memory_folder_io inner;
  probing_io io(inner);
  state_machine proposer(small_config(1, chunk), io, io);
  REQUIRE_FALSE(proposer.open());
  change_reader reader(proposer, [] { return 0; });
  memory_folder_io other_io;
  state_machine other(small_config(2, chunk), other_io, other_io);
  REQUIRE_FALSE(other.open());

  std::string big = pattern(100 * chunk + 123, 'a');  // 101 chunks
  inner.user_write("big.bin", big);
  auto plan = reader.read_change("big.bin");
  REQUIRE(plan.has_value());
  REQUIRE(plan->upload.has_value());
  CHECK(plan->upload->chunks_to_send() == 101);
  std::vector<command> commands = node::flatten(std::move(*plan));
  REQUIRE(commands.size() == 102);
  CHECK(commands.back().kind == command_kind::commit);
  std::uint64_t index = 0;
  for (const auto& c : commands) {
    CHECK(c.content.size() <= chunk);
    CHECK(encode_command(c).size() <= chunk + 4096);
    std::string bytes = encode_command(c);
    ++index;
    auto r1 = proposer.apply(index, bytes);
    auto r2 = other.apply(index, bytes);
    INFO(r2.reason);
    CHECK(r2.status == apply_status::applied);
    CHECK(r1.status == apply_status::applied);
  }
  CHECK(other_io.content("big.bin") == big);
  CHECK(io.max_read <= chunk + 1);
  CHECK(io.max_write <= chunk);

  // Modify two chunks in place: only those two are sent.
  std::string modified = big;
  modified[5 * chunk + 7] ^= 1;
  modified[77 * chunk] ^= 1;
  inner.user_write("big.bin", modified);
  auto second = reader.read_change("big.bin");
  REQUIRE(second.has_value());
  REQUIRE(second->upload.has_value());
  CHECK(second->upload->chunks_to_send() == 2);
  commands = node::flatten(std::move(*second));
  REQUIRE(commands.size() == 3);
  CHECK(commands[0].chunk_index == 5);
  CHECK(commands[1].chunk_index == 77);
  for (const auto& c : commands) {
    std::string bytes = encode_command(c);
    ++index;
    CHECK(proposer.apply(index, bytes).status == apply_status::applied);
    auto r = other.apply(index, bytes);
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK(other_io.content("big.bin") == modified);
  CHECK(other.committed().find("big.bin")->sha256 == sha256(modified));
  CHECK(io.max_read <= chunk + 1);
  CHECK(io.max_write <= chunk);

  // Truncated to a chunk boundary: no new chunk content, yet a valid upload (the last chunk).
  std::string truncated = modified.substr(0, 50 * chunk);
  inner.user_write("big.bin", truncated);
  commands = node::flatten(std::move(*reader.read_change("big.bin")));
  REQUIRE(commands.size() == 2);
  for (const auto& c : commands) {
    ++index;
    proposer.apply(index, c);
    CHECK(other.apply(index, c).status == apply_status::applied);
  }
  CHECK(other_io.content("big.bin") == truncated);
}

TEST_CASE("a chunked commit whose base changed concurrently is kept as a conflict copy",
          "[folder][chunks][conflict]") {
  const std::uint64_t chunk = 4096;
  node a(1, chunk);
  node b(2, chunk);
  replicated_log l;
  std::string base = pattern(10 * chunk, 'b');
  a.io->user_write("f.bin", base);
  l.append(a.changes("f.bin"));
  l.catch_up(a);
  l.catch_up(b);
  REQUIRE(b.io->content("f.bin") == base);
  // a and b change chunks 1 and 8, concurrently, differently. (Each node's unproposed local
  // edit keeps every chunk the other's commit takes from the base.)
  std::string from_a = base;
  from_a[chunk + 1] ^= 1;
  from_a[8 * chunk + 1] ^= 1;
  std::string from_b = base;
  from_b[chunk + 2] ^= 1;
  from_b[8 * chunk + 2] ^= 1;
  a.io->user_write("f.bin", from_a);
  b.io->user_write("f.bin", from_b);
  auto ca = a.changes("f.bin");
  auto cb = b.changes("f.bin");
  REQUIRE(ca.size() == 3);
  REQUIRE(cb.size() == 3);
  l.append(ca);
  l.append(cb);
  auto ra = l.catch_up(a);
  auto rb = l.catch_up(b);
  CHECK(ra.back().status == apply_status::conflict);
  CHECK(rb.back().status == apply_status::conflict);
  CHECK(a.io->content("f.bin") == from_a);
  CHECK(b.io->content("f.bin") == from_a);
  CHECK(a.io->content(ra.back().path) == from_b);
  CHECK(b.io->content(rb.back().path) == from_b);
  CHECK(a.sm->committed().same_replicated(b.sm->committed()));
}

TEST_CASE(
    "a chunked commit that needs base chunks that no longer exist is rejected everywhere, "
    "and the proposer's edit survives as its preserved local copy",
    "[folder][chunks][conflict]") {
  const std::uint64_t chunk = 4096;
  node a(1, chunk);
  node b(2, chunk);
  replicated_log l;
  std::string base = pattern(10 * chunk, 'd');
  a.io->user_write("f.bin", base);
  l.append(a.changes("f.bin"));
  l.catch_up(a);
  l.catch_up(b);
  std::string from_a = base;
  from_a[chunk + 1] ^= 1;
  std::string from_b = base;
  from_b[8 * chunk + 1] ^= 1;  // b relies on the base's chunk 1, which a replaced
  a.io->user_write("f.bin", from_a);
  b.io->user_write("f.bin", from_b);
  l.append(a.changes("f.bin"));
  l.append(b.changes("f.bin"));
  auto ra = l.catch_up(a);
  auto rb = l.catch_up(b);
  CHECK(ra.back().status == apply_status::rejected);
  CHECK(rb.back().status == apply_status::rejected);
  CHECK(rb.back().error == make_error_code(errc::conflict));
  CHECK(a.sm->committed().same_replicated(b.sm->committed()));
  // On b, a's commit found b's unproposed edit in the way and moved it aside. That edit had
  // replaced base chunk 8, which a's commit reuses: b cannot build the committed content locally
  // and asks for a snapshot (the manifest itself is still identical).
  const apply_result& a_commit_on_b = rb[1];
  REQUIRE(a_commit_on_b.preserved.size() == 1);
  CHECK(a_commit_on_b.needs_snapshot);
  CHECK(b.sm->needs_snapshot());
  CHECK(b.sm->missing_paths() == std::set<std::string, std::less<>>{"f.bin"});
  auto report = scan(*b.sm, "");
  REQUIRE(report.has_value());
  for (const auto& p : report->changed)
    CHECK(p != "f.bin");  // never proposed as a delete
  std::string copy = a_commit_on_b.preserved[0].copy_path;
  CHECK(b.io->content(copy) == from_b);
  // b first proposes its preserved edit (every chunk: nothing committed has them) ...
  auto proposal = b.changes(copy);
  CHECK(proposal.size() == 11);
  l.append(proposal);
  l.catch_up(a);
  l.catch_up(b);
  CHECK(a.io->content(copy) == from_b);
  // ... then installs a snapshot from a: identical trees.
  snapshot_writer writer(*a.sm);
  snapshot_reader reader(*b.sm);
  while (!reader.complete()) {
    auto bytes = writer.read(reader.next_offset(), chunk);
    REQUIRE(bytes.has_value());
    REQUIRE_FALSE(reader.write(reader.next_offset(), *bytes));
  }
  REQUIRE_FALSE(reader.install());
  CHECK_FALSE(b.sm->needs_snapshot());
  CHECK(a.io->dump() == b.io->dump());
  CHECK(b.io->content("f.bin") == from_a);
}

TEST_CASE("staged chunks survive a restart and the upload completes", "[folder][chunks][restart]") {
  const std::uint64_t chunk = 4096;
  node a(1, chunk);
  node b(2, chunk);
  std::string big = pattern(5 * chunk, 'c');
  a.io->user_write("f.bin", big);
  auto commands = a.changes("f.bin");
  REQUIRE(commands.size() == 6);
  replicated_log l;
  for (std::size_t i = 0; i < 3; ++i)
    l.append(commands[i]);
  l.catch_up(b);
  REQUIRE_FALSE(b.sm->persist());
  b.restart();
  CHECK(b.sm->uploads().size() == 1);
  for (std::size_t i = 3; i < commands.size(); ++i)
    l.append(commands[i]);
  for (const auto& r : l.catch_up(b))
    CHECK(r.status == apply_status::applied);
  CHECK(b.io->content("f.bin") == big);
  CHECK(b.sm->uploads().empty());
  // No staging file left behind.
  auto root = b.io->list("");
  REQUIRE(root.has_value());
  for (const auto& e : *root)
    CHECK(e.name.rfind(".raftsync-tmp-", 0) != 0);
}

TEST_CASE("a chunk with a wrong hash and a commit of an unknown upload are rejected",
          "[folder][chunks]") {
  node a(1);
  command chunk = make(command_kind::chunk, 2, 1, "f");
  chunk.upload_id = 5;
  chunk.content = "abc";
  chunk.sha256 = sha256("abd");
  CHECK(a.sm->apply(1, chunk).status == apply_status::rejected);
  command commit = make(command_kind::commit, 2, 2, "f");
  commit.upload_id = 6;
  commit.size_bytes = 3;
  commit.chunk_hashes = {sha256("abc")};
  CHECK(a.sm->apply(2, commit).status == apply_status::rejected);
  CHECK_FALSE(a.io->exists("f"));
}

TEST_CASE("read_change proposes symlinks, directories, modes and kind changes", "[folder][scan]") {
  node n(1);
  std::uint64_t index = 0;
  auto propose_and_apply = [&](std::string_view path) {
    auto cs = n.changes(path);
    for (const auto& c : cs) {
      auto r = n.sm->apply(++index, c);
      INFO(describe(c) << ": " << r.reason);
      CHECK((r.status == apply_status::applied || r.status == apply_status::ignored));
    }
    return cs;
  };
  REQUIRE_FALSE(n.io->mkdir("d", 0750));
  auto cs = propose_and_apply("d");
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].kind == command_kind::mkdir);
  CHECK(cs[0].mode == 0750);
  REQUIRE_FALSE(n.io->chmod("d", 0700));
  cs = propose_and_apply("d");
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].kind == command_kind::set_mode);
  REQUIRE_FALSE(n.io->symlink("../../far/away", "d/link"));
  cs = propose_and_apply("d/link");
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].kind == command_kind::symlink);
  CHECK(cs[0].target == "../../far/away");
  CHECK(n.changes("d/link").empty());
  n.io->user_write("d/file", "x");
  propose_and_apply("d/file");
  // The directory becomes a file: its committed subtree is removed first.
  REQUIRE_FALSE(remove_all(*n.io, "d"));
  n.io->user_write("d", "now a file");
  cs = propose_and_apply("d");
  REQUIRE(cs.size() == 4);
  CHECK(cs[0].kind == command_kind::remove);  // d/link (deepest first: d/link > d/file)
  CHECK(cs[1].kind == command_kind::remove);
  CHECK(cs[2].kind == command_kind::rmdir);
  CHECK(cs[3].kind == command_kind::write);
  CHECK(n.sm->committed().size() == 1);
  CHECK(n.sm->committed().find("d")->kind == file_kind::regular);
  CHECK(scan(*n.sm, "")->changed.empty());
  // Internal and invalid paths are never proposed.
  CHECK(n.reader->read_change(".raftsync/folder-state").error() ==
        make_error_code(errc::invalid_path));
  CHECK(n.reader->read_change("../x").error() == make_error_code(errc::invalid_path));
}

TEST_CASE("scan reports names the path rules refuse instead of proposing them", "[folder][scan]") {
  memory_folder_io io;
  state_machine_config config = small_config(1);
  config.rules.windows_names = true;
  state_machine sm(config, io, io);
  REQUIRE_FALSE(sm.open());
  io.user_write("ok.txt", "x");
  io.user_write("aux.txt", "reserved on Windows");
  auto report = scan(sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed == std::vector<std::string>{"ok.txt"});
  CHECK(report->refused == std::vector<std::string>{"aux.txt"});
}
