#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "raftsync/folder/real_folder_io.hpp"
#include "raftsync/folder/scanner.hpp"
#include "raftsync/folder/snapshot.hpp"
#include "raftsync/folder/state_machine.hpp"

using namespace raftsync;
using namespace raftsync::folder;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "raftsync-folder-XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    REQUIRE(made != nullptr);
    path = made;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto& e : fs::recursive_directory_iterator(path, ec))
      if (e.is_directory(ec) && !e.is_symlink(ec))
        fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  fs::path path;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

command write_cmd(std::uint64_t seq, std::string path, std::string content) {
  command c;
  c.kind = command_kind::write;
  c.origin = 2;
  c.sequence = seq;
  c.path = std::move(path);
  c.content = std::move(content);
  c.mode = 0640;
  c.mtime_ns = 1'600'000'000'123'456'789;
  return c;
}

state_machine_config config(node_id self) {
  state_machine_config c;
  c.self = self;
  c.chunk_bytes = 4096;
  return c;
}

}  // namespace

TEST_CASE("real_folder_io: atomic write, stat, rename, list", "[folder][real_io]") {
  temp_dir dir;
  auto io = real_folder_io::open(dir.path);
  REQUIRE(io.has_value());
  folder_io& f = **io;
  REQUIRE_FALSE(f.mkdir("d", 0750));
  REQUIRE_FALSE(f.write_file_atomic("d/x", "content", 0600, 1'000'000'000'123'456'789));
  auto st = f.lstat("d/x");
  REQUIRE(st.has_value());
  CHECK(st->kind == file_kind::regular);
  CHECK(st->size_bytes == 7);
  CHECK(st->mode == 0600);
  CHECK(st->mtime_ns == 1'000'000'000'123'456'789);
  CHECK(f.lstat("d")->mode == 0750);
  CHECK(slurp(dir.path / "d/x") == "content");
  REQUIRE_FALSE(f.rename("d/x", "y"));
  auto names = f.list("");
  REQUIRE(names.has_value());
  REQUIRE(names->size() == 2);
  CHECK((*names)[0].name == "d");
  CHECK((*names)[1].name == "y");
  CHECK(f.lstat("nope").error() == std::errc::no_such_file_or_directory);
  CHECK(f.lstat("../x").error() == make_error_code(errc::invalid_path));
  // No temporaries left behind.
  for (auto& e : fs::directory_iterator(dir.path / "d"))
    FAIL(e.path());
}

TEST_CASE("real_folder_io never follows a symlink out of the root", "[folder][real_io][path]") {
  temp_dir root;
  temp_dir outside;
  std::ofstream(outside.path / "secret") << "secret";
  fs::create_directory_symlink(outside.path, root.path / "escape");
  fs::create_symlink(outside.path / "secret", root.path / "leaf");
  auto io = real_folder_io::open(root.path);
  REQUIRE(io.has_value());
  folder_io& f = **io;
  std::string out;
  CHECK(f.write_file_atomic("escape/planted", "x", 0644, 0) == make_error_code(errc::invalid_path));
  CHECK(f.read("escape/secret", 0, 100, out) == make_error_code(errc::invalid_path));
  CHECK(f.mkdir("escape/d", 0755) == make_error_code(errc::invalid_path));
  CHECK(f.unlink("escape/secret") == make_error_code(errc::invalid_path));
  CHECK(f.rename("escape/secret", "stolen") == make_error_code(errc::invalid_path));
  CHECK(f.list("escape").error() == make_error_code(errc::invalid_path));
  CHECK(f.read("leaf", 0, 100, out));  // the leaf is not followed either
  CHECK(f.chmod("leaf", 0777) == make_error_code(errc::invalid_path));
  CHECK(f.lstat("leaf")->kind == file_kind::symlink);
  CHECK(!fs::exists(outside.path / "planted"));
  CHECK(slurp(outside.path / "secret") == "secret");
}

TEST_CASE("applying through a planted symlink is rejected and touches nothing outside",
          "[folder][real_io][path]") {
  temp_dir root;
  temp_dir outside;
  auto io = real_folder_io::open(root.path);
  REQUIRE(io.has_value());
  state_machine sm(config(1), **io, **io);
  REQUIRE_FALSE(sm.open());
  // Committed: a directory "d". Then a local user (or an attacker) swaps it for a symlink.
  command mkdir;
  mkdir.kind = command_kind::mkdir;
  mkdir.origin = 2;
  mkdir.sequence = 1;
  mkdir.path = "d";
  mkdir.mode = 0755;
  REQUIRE(sm.apply(1, mkdir).status == apply_status::applied);
  fs::remove(root.path / "d");
  fs::create_directory_symlink(outside.path, root.path / "d");
  auto r = sm.apply(2, write_cmd(2, "d/evil", "x"));
  // The apply never writes through the link: the symlink is moved aside as a local entry (which
  // the facade proposes as a symlink, never followed) and a real directory takes its place.
  CHECK(r.status == apply_status::applied);
  CHECK(fs::is_empty(outside.path));
  CHECK(slurp(root.path / "d/evil") == "x");
  CHECK(fs::is_directory(fs::symlink_status(root.path / "d")));
  REQUIRE(r.preserved.size() == 1);
  CHECK(fs::is_symlink(fs::symlink_status(root.path / r.preserved[0].copy_path)));
  // And a command with an escaping path is refused outright.
  auto bad = sm.apply(3, write_cmd(3, "../evil", "x"));
  CHECK(bad.status == apply_status::rejected);
  CHECK(bad.error == make_error_code(errc::invalid_path));
  CHECK(!fs::exists(root.path.parent_path() / "evil"));
}

TEST_CASE("state machine on a real folder: apply, echo, restart, scan, snapshot",
          "[folder][real_io]") {
  temp_dir root;
  temp_dir copy;
  auto io = real_folder_io::open(root.path);
  REQUIRE(io.has_value());
  {
    state_machine sm(config(1), **io, **io);
    REQUIRE_FALSE(sm.open());
    std::string big(3 * 4096 + 5, 'q');
    for (std::uint64_t i = 1; i <= 20; ++i) {
      auto r =
          sm.apply(i, write_cmd(i, "dir" + std::to_string(i % 3) + "/f" + std::to_string(i),
                                i == 20 ? std::string(100, 'z') : "data " + std::to_string(i)));
      REQUIRE(r.status == apply_status::applied);
      for (const auto& w : r.written)
        CHECK(sm.is_echo(w.path, *(*io)->lstat(w.path)));
    }
    CHECK(fs::file_size(root.path / "dir2/f20") == 100);
    CHECK((fs::status(root.path / "dir2/f20").permissions() & fs::perms::all) ==
          static_cast<fs::perms>(0640));
    REQUIRE_FALSE(sm.persist());
  }
  state_machine sm(config(1), **io, **io);
  REQUIRE_FALSE(sm.open());
  CHECK(sm.applied_index() == 20);
  auto report = scan(sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());
  // A user edit and a new file show up.
  std::ofstream(root.path / "dir1/f1", std::ios::app) << " more";
  std::ofstream(root.path / "fresh.txt") << "new";
  report = scan(sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed == std::vector<std::string>{"dir1/f1", "fresh.txt"});
  change_reader reader(sm, [] { return 0; });
  auto plan = reader.read_change("dir1/f1");
  REQUIRE(plan.has_value());
  REQUIRE(plan->commands.size() == 1);
  CHECK(plan->commands[0].content == "data 1 more");

  // Snapshot into another real folder.
  auto io2 = real_folder_io::open(copy.path);
  REQUIRE(io2.has_value());
  state_machine other(config(2), **io2, **io2);
  REQUIRE_FALSE(other.open());
  REQUIRE_FALSE((*io)->write_file_atomic("dir1/f1", "data 1", 0640, 1'600'000'000'123'456'789));
  snapshot_writer writer(sm);
  snapshot_reader reader2(other);
  while (!reader2.complete()) {
    auto bytes = writer.read(reader2.next_offset(), 4096);
    REQUIRE(bytes.has_value());
    REQUIRE_FALSE(reader2.write(reader2.next_offset(), *bytes));
  }
  REQUIRE_FALSE(reader2.install());
  CHECK(other.committed().same_replicated(sm.committed()));
  for (const auto& [path, e] : sm.committed().entries()) {
    if (e.kind != file_kind::regular) continue;
    CHECK(slurp(copy.path / path) == slurp(root.path / path));
    CHECK(fs::last_write_time(copy.path / path) == fs::last_write_time(root.path / path));
  }
  CHECK(!fs::exists(copy.path / "fresh.txt"));  // never committed
  CHECK(!fs::exists(copy.path / ".raftsync-tmp-snapshot"));
}

TEST_CASE("real_folder_io: a guarded replace refuses a file that changed since it was examined",
          "[folder][real_io]") {
  temp_dir dir;
  auto io = real_folder_io::open(dir.path);
  REQUIRE(io.has_value());
  folder_io& f = **io;
  REQUIRE_FALSE(f.write_file_atomic("x", "committed", 0644, 0));
  auto examined = f.lstat("x");
  REQUIRE(examined.has_value());
  // A local writer rewrites the file in place after the examination.
  {
    std::ofstream out(dir.path / "x", std::ios::binary | std::ios::trunc);
    out << "local!!!!";
  }
  CHECK(f.write_file_atomic_if("x", "incoming", 0644, 0, true, *examined) ==
        make_error_code(errc::conflict));
  CHECK(read_whole(f, "x").value() == "local!!!!");
  // Nothing left behind, and the replace goes ahead against what is there now.
  auto entries = f.list("");
  REQUIRE(entries.has_value());
  CHECK(entries->size() == 1);
  auto now = f.lstat("x");
  REQUIRE(now.has_value());
  REQUIRE_FALSE(f.write_file_atomic_if("x", "incoming", 0644, 0, true, *now));
  CHECK(read_whole(f, "x").value() == "incoming");
  // "Absent" expected, but a file appeared.
  REQUIRE_FALSE(f.write_file_atomic("y", "appeared", 0644, 0));
  CHECK(f.write_file_atomic_if("y", "incoming", 0644, 0, true, file_stat{}) ==
        make_error_code(errc::conflict));
  REQUIRE_FALSE(f.write_file_atomic_if("z", "new", 0644, 0, true, file_stat{}));
  CHECK(read_whole(f, "z").value() == "new");
}
