// state_machine::apply_batch: the same results and trees as apply() one entry after the other,
// with the durability order of contract point 4 kept (every content durable before its rename,
// every changed directory fsynced before the batch returns), failures in the middle of a batch
// recording nothing that did not happen, and restarts after a crash mid-batch converging.
// The randomized test prints its seed; RAFTSYNC_FOLDER_BATCH_SEED=N replays one run.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>

#include "folder_test_util.hpp"
#include "raftsync/folder/real_folder_io.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;
namespace fs = std::filesystem;

namespace {

bool is_temporary(std::string_view path) {
  std::string_view name =
      path.substr(path.rfind('/') == std::string_view::npos ? 0 : path.rfind('/') + 1);
  return name.substr(0, temp_name_prefix.size()) == temp_name_prefix;
}

// A folder_io over a memory tree that checks the durability order of every operation: content
// written but not synced (create_temp_file, write_at) must not be renamed into place, and the
// directories changed by renames, unlinks, mkdirs and rmdirs must be synced before the batch
// returns (removing an unused temporary excepted: it is garbage open() collects).
class ordering_io final : public folder_io {
 public:
  explicit ordering_io(memory_folder_io& inner) : inner_(inner) {}

  std::set<std::string> unsynced_files;
  std::set<std::string> dirty_dirs;
  std::vector<std::string> violations;
  std::size_t sync_dir_calls = 0;
  std::size_t sync_files_calls = 0;
  std::size_t file_syncs = 0;  // files made durable, one at a time or in a group

  result<file_stat> lstat(std::string_view p) override { return inner_.lstat(p); }
  std::error_code read(std::string_view p, std::uint64_t o, std::size_t n,
                       std::string& out) override {
    return inner_.read(p, o, n, out);
  }
  std::error_code write_file_atomic(std::string_view p, std::string_view c, std::uint32_t m,
                                    std::int64_t t, bool sync_directory = true) override {
    auto ec = inner_.write_file_atomic(p, c, m, t, sync_directory);
    if (!ec) {
      ++file_syncs;
      if (!sync_directory) dirty_dirs.emplace(parent_path(p));
    }
    return ec;
  }
  result<std::string> create_temp_file(std::string_view dir, std::string_view content,
                                       std::uint32_t mode, std::int64_t mtime_ns) override {
    auto temp = inner_.create_temp_file(dir, content, mode, mtime_ns);
    if (temp) unsynced_files.insert(*temp);
    return temp;
  }
  std::error_code sync_files(const std::vector<std::string>& paths) override {
    ++sync_files_calls;
    return folder_io::sync_files(paths);  // one sync_file() after the other
  }
  std::error_code write_at(std::string_view p, std::uint64_t o, std::string_view d) override {
    auto ec = inner_.write_at(p, o, d);
    if (!ec) unsynced_files.emplace(p);
    return ec;
  }
  std::error_code truncate(std::string_view p, std::uint64_t s) override {
    auto ec = inner_.truncate(p, s);
    if (!ec) unsynced_files.emplace(p);
    return ec;
  }
  std::error_code sync_file(std::string_view p) override {
    auto ec = inner_.sync_file(p);
    if (!ec) {
      unsynced_files.erase(std::string(p));
      ++file_syncs;
    }
    return ec;
  }
  std::error_code sync_dir(std::string_view p) override {
    ++sync_dir_calls;
    auto ec = inner_.sync_dir(p);
    if (!ec) dirty_dirs.erase(std::string(p));
    return ec;
  }
  std::error_code mkdir(std::string_view p, std::uint32_t m) override {
    auto ec = inner_.mkdir(p, m);
    if (!ec) dirty_dirs.emplace(parent_path(p));
    return ec;
  }
  std::error_code rmdir(std::string_view p) override {
    auto ec = inner_.rmdir(p);
    if (!ec) dirty_dirs.emplace(parent_path(p));
    return ec;
  }
  std::error_code unlink(std::string_view p) override {
    auto ec = inner_.unlink(p);
    if (!ec && !is_temporary(p)) dirty_dirs.emplace(parent_path(p));
    if (!ec) unsynced_files.erase(std::string(p));
    return ec;
  }
  std::error_code rename(std::string_view a, std::string_view b) override {
    if (unsynced_files.count(std::string(a)) != 0)
      violations.push_back("renamed \"" + std::string(a) + "\" over \"" + std::string(b) +
                           "\" before its content was synced");
    auto ec = inner_.rename(a, b);
    if (!ec) {
      dirty_dirs.emplace(parent_path(a));
      dirty_dirs.emplace(parent_path(b));
    }
    return ec;
  }
  std::error_code chmod(std::string_view p, std::uint32_t m) override { return inner_.chmod(p, m); }
  std::error_code set_mtime(std::string_view p, std::int64_t t) override {
    return inner_.set_mtime(p, t);
  }
  std::error_code symlink(std::string_view t, std::string_view p) override {
    auto ec = inner_.symlink(t, p);
    if (!ec) dirty_dirs.emplace(parent_path(p));
    return ec;
  }
  result<std::string> readlink(std::string_view p) override { return inner_.readlink(p); }
  result<std::vector<dir_entry>> list(std::string_view p) override { return inner_.list(p); }

 private:
  memory_folder_io& inner_;
};

// A node whose tree goes through ordering_io (the state file does not: it has its own order).
struct checked_node {
  explicit checked_node(node_id id) : io(std::make_unique<memory_folder_io>()), checked(*io) {
    start(id);
  }
  void start(node_id id) {
    sm = std::make_unique<state_machine>(small_config(id), checked, *io);
    REQUIRE_FALSE(sm->open());
  }
  // A restart after a crash: nothing is persisted beyond what persist() wrote.
  void restart() { start(sm->config().self); }
  std::vector<apply_result> batch(const replicated_log& l, std::uint64_t first,
                                  std::uint64_t last) {
    std::vector<batch_entry> entries;
    for (std::uint64_t i = first; i <= last; ++i)
      entries.push_back({i, l.entries[i - 1]});
    auto results = sm->apply_batch(entries);
    for (const auto& v : checked.violations)
      FAIL_CHECK(v);
    checked.violations.clear();
    if (results.empty() || results.back().status != apply_status::failed) {
      INFO("directories changed by the batch and not fsynced");
      for (const auto& d : checked.dirty_dirs)
        FAIL_CHECK("\"" << d << "\"");
    }
    return results;
  }
  std::vector<std::string> root_temporaries() {
    std::vector<std::string> out;
    auto names = io->list("");
    REQUIRE(names.has_value());
    for (const auto& e : *names)
      if (is_temporary(e.name) && e.name.find("upload") == std::string::npos) out.push_back(e.name);
    return out;
  }

  std::unique_ptr<memory_folder_io> io;
  ordering_io checked;
  std::unique_ptr<state_machine> sm;
};

// The reference: one apply() after the other.
node reference_of(replicated_log l, node_id id = 1) {
  node n(id);
  l.catch_up(n);
  return n;
}

// The tree holds exactly what the manifest says for every committed regular file.
void check_manifest_matches_tree(memory_folder_io& io, const state_machine& sm) {
  for (const auto& [path, e] : sm.committed().entries()) {
    INFO(path);
    auto st = io.lstat(path);
    REQUIRE(st.has_value());
    CHECK(st->kind == e.kind);
    if (e.kind == file_kind::regular) CHECK(sha256(io.content(path)) == e.sha256);
  }
}

}  // namespace

TEST_CASE("a batch with several writes to one path ends with the last one, durably ordered",
          "[folder][apply][batch]") {
  replicated_log l;
  l.append(make_write(2, 1, "d/f", "one"));
  l.append(make_write(2, 2, "d/f", "two", 1));
  l.append(make_write(2, 3, "d/f", "three", 2));
  l.append(make_write(3, 1, "g", "other"));
  checked_node n(1);
  auto results = n.batch(l, 1, 4);
  REQUIRE(results.size() == 4);
  for (const auto& r : results) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK(n.io->content("d/f") == "three");
  CHECK(n.io->content("g") == "other");
  CHECK(n.sm->committed().find("d/f")->version == 3);
  CHECK(n.sm->applied_index() == 4);
  CHECK(n.io->dump() == reference_of(l).io->dump());
  CHECK(n.sm->encode_replicated_state() == reference_of(l).sm->encode_replicated_state());
  // The final state is an echo; nothing is left at the root.
  CHECK(n.sm->is_echo("d/f", *n.io->lstat("d/f")));
  CHECK(n.sm->is_echo("g", *n.io->lstat("g")));
  CHECK(n.root_temporaries().empty());
  // The contents were synced as one group, the directories once each (root, d), not per file.
  CHECK(n.checked.sync_files_calls == 1);
  CHECK(n.checked.sync_dir_calls == 2);
}

TEST_CASE("a write, a rename and a delete of the same file in one batch",
          "[folder][apply][batch]") {
  replicated_log l;
  l.append(make_write(2, 1, "a/x", "content"));
  command rename = make(command_kind::rename, 2, 2, "a/x", 1);
  rename.target = "b/y";
  l.append(rename);
  l.append(make_write(2, 3, "c", "stays"));
  l.append(make(command_kind::remove, 2, 4, "b/y", 2));
  checked_node n(1);
  auto results = n.batch(l, 1, 4);
  REQUIRE(results.size() == 4);
  for (const auto& r : results) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK_FALSE(n.io->exists("a/x"));
  CHECK_FALSE(n.io->exists("b/y"));
  CHECK(n.io->content("c") == "stays");
  CHECK(n.sm->committed().find("b/y") == nullptr);
  CHECK(n.sm->committed().find("b")->kind == file_kind::directory);
  CHECK(n.io->dump() == reference_of(l).io->dump());
  CHECK(n.sm->encode_replicated_state() == reference_of(l).sm->encode_replicated_state());
  CHECK(n.root_temporaries().empty());
}

TEST_CASE("local edits, own writes and conflicts inside a batch behave as in single applies",
          "[folder][apply][batch][local]") {
  // Node 1 has an unproposed local edit of "shared" and its own write of "mine" in flight.
  auto prepare = [](memory_folder_io& io) {
    io.user_write("mine", "my bytes");
    io.user_write("shared", "local edit");
  };
  replicated_log l;
  // A sequence of node 1's first boot epoch (1, a fresh state): its own command.
  command own = make_write(1, (std::uint64_t{1} << 32) | 7, "mine", "my bytes");
  l.append(own);
  l.append(make_write(2, 1, "shared", "theirs"));
  l.append(make_write(3, 1, "x", "from three"));
  l.append(make_write(2, 2, "x", "concurrent", 0));  // stale base: a replicated conflict copy

  node single(1);
  prepare(*single.io);
  auto expected = l.catch_up(single);
  checked_node n(1);
  prepare(*n.io);
  const std::uint64_t mine_inode = n.io->lstat("mine")->inode;
  auto results = n.batch(l, 1, 4);
  REQUIRE(results.size() == expected.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("entry " << i + 1 << ": " << results[i].reason);
    CHECK(results[i].status == expected[i].status);
    CHECK(results[i].path == expected[i].path);
    CHECK(results[i].own == expected[i].own);
    REQUIRE(results[i].preserved.size() == expected[i].preserved.size());
    for (std::size_t k = 0; k < results[i].preserved.size(); ++k)
      CHECK(results[i].preserved[k].copy_path == expected[i].preserved[k].copy_path);
  }
  CHECK(results[0].own);
  CHECK(n.io->lstat("mine")->inode == mine_inode);  // the own write was not rewritten
  REQUIRE(results[1].preserved.size() == 1);        // the local edit was moved aside
  CHECK(n.io->content(results[1].preserved[0].copy_path) == "local edit");
  CHECK(results[3].status == apply_status::conflict);
  CHECK(n.io->dump() == single.io->dump());
  CHECK(n.sm->encode_replicated_state() == single.sm->encode_replicated_state());
  CHECK(n.root_temporaries().empty());
}

TEST_CASE("a failure in the middle of a batch records nothing that was not applied",
          "[folder][apply][batch][failure]") {
  replicated_log l;
  for (std::uint64_t i = 1; i <= 6; ++i)
    l.append(make_write(2, i, "d" + std::to_string(i % 3) + "/f" + std::to_string(i),
                        "content " + std::to_string(i)));
  command mkdir = make(command_kind::mkdir, 2, 7, "e");
  mkdir.mode = 0700;
  l.append(mkdir);
  command rename = make(command_kind::rename, 2, 8, "d1/f1", 1);
  rename.target = "e/moved";
  l.append(rename);
  l.append(make(command_kind::remove, 2, 9, "d2/f2", 2));
  const std::uint64_t last = l.entries.size();
  node reference = reference_of(l);
  // Fail after every possible number of successful mutations, until the batch goes through.
  bool completed = false;
  for (std::uint64_t countdown = 0; !completed; ++countdown) {
    REQUIRE(countdown < 200);
    INFO("failing after " << countdown << " mutations");
    checked_node n(1);
    n.io->fail_mutations_after(countdown, std::make_error_code(std::errc::no_space_on_device));
    auto results = n.batch(l, 1, last);
    REQUIRE_FALSE(results.empty());
    const bool failed = results.back().status == apply_status::failed;
    completed = !failed;
    for (std::size_t i = 0; i + 1 < results.size(); ++i)
      CHECK(results[i].status == apply_status::applied);
    if (failed) {
      CHECK(results.back().error == std::errc::no_space_on_device);
      CHECK(n.sm->applied_index() == results.back().index - 1);
      // Only the entries before the failure are recorded, and the tree holds each of them.
      check_manifest_matches_tree(*n.io, *n.sm);
      node partial(1);
      for (std::uint64_t i = 1; i < results.back().index; ++i)
        partial.sm->apply(i, l.entries[i - 1]);
      CHECK(n.sm->encode_replicated_state() == partial.sm->encode_replicated_state());
    }
    // The disk has room again: the rest of the log goes through and ends like the reference.
    n.io->fail_mutations_after(0, {});
    auto rest = n.batch(l, n.sm->applied_index() + 1, last);
    for (const auto& r : rest) {
      INFO(r.reason);
      CHECK(r.status == apply_status::applied);
    }
    CHECK(n.io->dump() == reference.io->dump());
    CHECK(n.sm->encode_replicated_state() == reference.sm->encode_replicated_state());
    n.restart();  // stale temporaries of the failed attempt are collected
    CHECK(n.root_temporaries().empty());
    CHECK(n.checked.unsynced_files.empty());
  }
}

TEST_CASE("a restart after a crash in the middle of a batch replays to the same tree",
          "[folder][apply][batch][restart]") {
  replicated_log l;
  l.append(make_write(2, 1, "a", "first"));
  l.append(make_write(2, 2, "b", "second"));
  command mkdir = make(command_kind::mkdir, 3, 1, "d");
  mkdir.mode = 0750;
  l.append(mkdir);
  l.append(make_write(3, 2, "d/c", "third"));
  command rename = make(command_kind::rename, 2, 3, "a", 1);
  rename.target = "d/a2";
  l.append(rename);
  l.append(make(command_kind::remove, 2, 4, "b", 2));
  l.append(make_write(3, 3, "e/f", "fourth"));
  l.append(make_write(2, 5, "g", "fifth"));
  const std::uint64_t last = l.entries.size();
  node reference = reference_of(l);
  bool completed = false;
  for (std::uint64_t countdown = 0; !completed; ++countdown) {
    REQUIRE(countdown < 200);
    for (bool persisted_half : {false, true}) {
      INFO("crash after " << countdown << " mutations, first half persisted: " << persisted_half);
      checked_node n(1);
      std::uint64_t first = 1;
      if (persisted_half) {
        n.batch(l, 1, 3);
        REQUIRE_FALSE(n.sm->persist());
        first = 4;
      }
      // The crash: the disk stops taking writes at this point and the process dies.
      n.io->fail_mutations_after(countdown, std::make_error_code(std::errc::io_error));
      auto results = n.sm->apply_batch([&] {
        std::vector<batch_entry> entries;
        for (std::uint64_t i = first; i <= last; ++i)
          entries.push_back({i, l.entries[i - 1]});
        return entries;
      }());
      if (!persisted_half) completed = results.back().status != apply_status::failed;
      n.io->fail_mutations_after(0, {});
      n.restart();
      CHECK(n.sm->applied_index() == (persisted_half ? 3 : 0));
      CHECK(n.root_temporaries().empty());
      auto replay = n.batch(l, n.sm->applied_index() + 1, last);
      for (const auto& r : replay) {
        INFO(r.reason);
        CHECK(r.status == apply_status::applied);
        CHECK(r.preserved.empty());  // nothing the crash left behind looks like a local edit
      }
      CHECK(n.io->dump() == reference.io->dump());
      CHECK(n.sm->encode_replicated_state() == reference.sm->encode_replicated_state());
      CHECK(n.root_temporaries().empty());
      // Nothing to propose after the replay.
      auto report = scan(*n.sm, "");
      REQUIRE(report.has_value());
      CHECK(report->changed.empty());
    }
  }
}

TEST_CASE("random batches give the same results and trees as single applies",
          "[folder][apply][batch][random]") {
  const char* fixed = std::getenv("RAFTSYNC_FOLDER_BATCH_SEED");
  const std::uint64_t runs = fixed != nullptr ? 1 : 20;
  for (std::uint64_t run = 0; run < runs; ++run) {
    const std::uint64_t seed =
        fixed != nullptr ? std::strtoull(fixed, nullptr, 10) : std::random_device{}();
    INFO("seed " << seed << " (replay: RAFTSYNC_FOLDER_BATCH_SEED=" << seed << ")");
    std::mt19937_64 rng(seed);
    auto pick = [&](std::uint64_t n) { return rng() % n; };
    static const char* paths[] = {"a", "b.txt", "d/x", "d/y", "d/e/z", "f"};
    auto random_path = [&] { return std::string(paths[pick(6)]); };
    node single(1);
    checked_node batched(1);
    replicated_log l;
    std::uint64_t applied = 0;
    std::map<node_id, std::uint64_t> sequence;
    std::int64_t clock = 1'800'000'000'000'000'000;
    for (int step = 0; step < 300; ++step) {
      const std::uint64_t what = pick(10);
      if (what < 6) {
        // A committed command from another node (or, rarely, this one), on a random base.
        const node_id origin = 1 + pick(3);
        const std::uint64_t seq = ++sequence[origin];
        const std::string path = random_path();
        const manifest_entry* cur = single.sm->committed().find(path);
        const std::uint64_t base = cur != nullptr && pick(4) != 0 ? cur->version : pick(3);
        command c;
        switch (pick(6)) {
          case 0:
          case 1:
            c = make_write(origin, seq, path, std::string(pick(40), char('a' + pick(26))), base);
            break;
          case 2:
            c = make(command_kind::remove, origin, seq, path, base);
            break;
          case 3:
            c = make(command_kind::rename, origin, seq, path, base);
            c.target = random_path();
            if (const manifest_entry* t = single.sm->committed().find(c.target))
              c.target_base_version = t->version;
            break;
          case 4:
            c = make(command_kind::mkdir, origin, seq, "d");
            c.mode = 0755;
            break;
          default:
            c = make(command_kind::set_mode, origin, seq, path, base);
            c.mode = pick(2) ? 0600 : 0644;
            break;
        }
        l.append(c);
      } else if (what < 8) {
        // Apply what is committed: one entry at a time here, as one batch there.
        if (applied == l.entries.size()) continue;
        auto expected = l.catch_up(single);
        auto results = batched.batch(l, applied + 1, l.entries.size());
        REQUIRE(results.size() == expected.size());
        for (std::size_t i = 0; i < results.size(); ++i) {
          INFO("index " << results[i].index << ": " << results[i].reason);
          CHECK(results[i].status == expected[i].status);
          CHECK(results[i].path == expected[i].path);
          REQUIRE(results[i].preserved.size() == expected[i].preserved.size());
          for (std::size_t k = 0; k < results[i].preserved.size(); ++k)
            CHECK(results[i].preserved[k].copy_path == expected[i].preserved[k].copy_path);
          REQUIRE(results[i].written.size() == expected[i].written.size());
          for (const auto& w : results[i].written)
            CHECK(w.stat.kind != file_kind::none);
        }
        applied = l.entries.size();
        REQUIRE(batched.io->dump() == single.io->dump());
        REQUIRE(batched.sm->encode_replicated_state() == single.sm->encode_replicated_state());
        CHECK(batched.root_temporaries().empty());
        // Echo suppression answers the same on both (a local edit is not an echo on either).
        for (const auto& [path, e] : batched.sm->committed().entries()) {
          auto st = batched.io->lstat(path);
          auto st_single = single.io->lstat(path);
          if (st && st_single)
            CHECK(batched.sm->is_echo(path, *st) == single.sm->is_echo(path, *st_single));
        }
      } else {
        // The same local edit on both nodes, at the same clock (conflict copy names use it).
        clock += 1'000'000'000;
        for (memory_folder_io* io : {single.io.get(), batched.io.get()})
          io->advance_clock(clock - io->now_ns());
        const std::string path = random_path();
        const std::string content = "local " + std::to_string(step);
        bool blocked = false;
        for (memory_folder_io* io : {single.io.get(), batched.io.get()}) {
          auto parent = io->lstat(std::string(parent_path(path)));
          auto here = io->lstat(path);
          if ((!parent_path(path).empty() && parent && parent->kind != file_kind::directory) ||
              (here && here->kind == file_kind::directory))
            blocked = true;
        }
        if (!blocked) {
          single.io->user_write(path, content);
          batched.io->user_write(path, content);
        }
      }
    }
  }
}

TEST_CASE("a batch on a real folder writes every file in place, durably, with no temporary left",
          "[folder][apply][batch][real_io]") {
  std::string pattern = (fs::temp_directory_path() / "raftsync-batch-XXXXXX").string();
  REQUIRE(::mkdtemp(pattern.data()) != nullptr);
  const fs::path root = pattern;
  {
    auto io = real_folder_io::open(root);
    REQUIRE(io.has_value());
    state_machine sm(small_config(1), **io, **io);
    REQUIRE_FALSE(sm.open());
    replicated_log l;
    command mkdir = make(command_kind::mkdir, 2, 1, "new");
    mkdir.mode = 0750;
    l.append(mkdir);
    for (std::uint64_t i = 2; i <= 60; ++i) {
      command c = make_write(2, i,
                             (i % 3 == 0   ? "new/"
                              : i % 3 == 1 ? "x/y/"
                                           : "") +
                                 std::string("f") + std::to_string(i),
                             std::string(100 + i, char('a' + i % 26)));
      c.mode = i % 2 ? 0600 : 0644;
      l.append(c);
    }
    std::vector<batch_entry> entries;
    for (std::uint64_t i = 1; i <= l.entries.size(); ++i)
      entries.push_back({i, l.entries[i - 1]});
    auto results = sm.apply_batch(entries);
    REQUIRE(results.size() == entries.size());
    for (const auto& r : results) {
      INFO(r.reason);
      REQUIRE(r.status == apply_status::applied);
    }
    for (std::uint64_t i = 2; i <= 60; ++i) {
      auto c = decode_command(l.entries[i - 1], command_limits{});
      REQUIRE(c.has_value());
      const fs::path p = root / c->path;
      std::ifstream in(p, std::ios::binary);
      CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == c->content);
      CHECK((fs::status(p).permissions() & fs::perms::all) == static_cast<fs::perms>(c->mode));
      auto st = (*io)->lstat(c->path);
      REQUIRE(st.has_value());
      CHECK(st->mtime_ns == c->mtime_ns);
      CHECK(sm.is_echo(c->path, *st));
    }
    CHECK((fs::status(root / "new").permissions() & fs::perms::all) ==
          static_cast<fs::perms>(0750));
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      INFO(e.path());
      CHECK_FALSE(is_temporary(e.path().filename().string()));
    }
    // sync_files on the real folder: every file, and a missing one is an error.
    std::vector<std::string> all;
    for (std::uint64_t i = 2; i <= 60; ++i)
      all.push_back(decode_command(l.entries[i - 1], command_limits{})->path);
    CHECK_FALSE((*io)->sync_files(all));
    all.push_back("no/such/file");
    CHECK((*io)->sync_files(all) == std::errc::no_such_file_or_directory);
  }
  std::error_code ec;
  fs::remove_all(root, ec);
}
