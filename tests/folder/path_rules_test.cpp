#include <catch2/catch.hpp>

#include <string>

#include "raftsync/error.hpp"
#include "raftsync/folder/path_rules.hpp"

using namespace raftsync;
using namespace raftsync::folder;

TEST_CASE("canonical relative paths are accepted", "[folder][path]") {
  for (const char* p : {"a", "a/b", "dir/sub/file.txt", ".hidden", "a/.b", "..a", "a..", "a/...",
                        "name with spaces", "ünïcödé/名前", ".raftsyncx", "x/.raftsync"}) {
    INFO(p);
    CHECK_FALSE(validate_path(p));
  }
}

TEST_CASE("path attacks and malformed paths are refused with a reason", "[folder][path]") {
  const std::string nul("a\0b", 3);
  for (const std::string& p : {std::string(""),
                               std::string("/etc/passwd"),
                               std::string("../x"),
                               std::string("a/../../x"),
                               std::string("a/.."),
                               std::string(".."),
                               std::string("."),
                               std::string("./a"),
                               std::string("a/./b"),
                               std::string("a//b"),
                               std::string("a/"),
                               std::string("/"),
                               nul,
                               std::string("a\\b"),
                               std::string("..\\x"),
                               std::string("C:"),
                               std::string("C:/x"),
                               std::string("c:x"),
                               std::string(".raftsync"),
                               std::string(".raftsync/folder-state"),
                               std::string(".raftsync-tmp-1-2"),
                               std::string("a/.raftsync-tmp-upload-1-1")}) {
    std::string reason;
    INFO(p);
    auto ec = validate_path(p, {}, &reason);
    CHECK(ec == make_error_code(errc::invalid_path));
    CHECK_FALSE(reason.empty());
  }
}

TEST_CASE("length and depth limits are enforced", "[folder][path]") {
  CHECK_FALSE(validate_path(std::string(255, 'a')));
  CHECK(validate_path(std::string(256, 'a')));
  std::string deep;
  for (int i = 0; i < 300; ++i)
    deep += (i ? "/a" : "a");
  CHECK(validate_path(deep));
  path_rules small;
  small.path_bytes_max = 10;
  CHECK(validate_path("abcdef/ghijk", small));
}

TEST_CASE("Windows names are refused when the option is on", "[folder][path]") {
  path_rules win;
  win.windows_names = true;
  for (const char* p : {"CON", "con.txt", "a/NUL", "aux.tar.gz", "COM1", "lpt9.log", "a<b", "a:b",
                        "a|b", "what?", "star*", "quote\"", "trailing.", "trailing "}) {
    INFO(p);
    CHECK(validate_path(p, win));
  }
  CHECK_FALSE(validate_path("CONSOLE", win));
  CHECK_FALSE(validate_path("COM0", win));
  CHECK_FALSE(validate_path("con", {}));  // allowed when every node is POSIX
}

TEST_CASE("internal paths are recognised", "[folder][path]") {
  CHECK(is_internal_path(".raftsync"));
  CHECK(is_internal_path(".raftsync/folder-state"));
  CHECK(is_internal_path("a/.raftsync-tmp-42"));
  CHECK(is_internal_path(".raftsync-tmp-snapshot/tree/x"));
  CHECK_FALSE(is_internal_path("a/.raftsync"));
  CHECK_FALSE(is_internal_path("raftsync"));
}

TEST_CASE("conflict copy names are deterministic and keep the extension", "[folder][path]") {
  const std::int64_t t = 1'764'153'067'123'000'000;  // 2025-11-26T10:31:07.123Z
  CHECK(format_utc(t) == "20251126T103107Z");
  CHECK(format_utc(0) == "19700101T000000Z");
  CHECK(format_utc(951'782'400'000'000'000) == "20000229T000000Z");
  CHECK(conflict_copy_name("docs/report.txt", 2, t) ==
        "docs/report.conflict-2-20251126T103107Z.txt");
  CHECK(conflict_copy_name("a.tar.gz", 3, t) == "a.tar.conflict-3-20251126T103107Z.gz");
  CHECK(conflict_copy_name(".bashrc", 1, t) == ".bashrc.conflict-1-20251126T103107Z");
  CHECK(conflict_copy_name("Makefile", 1, t, 2) == "Makefile.conflict-1-20251126T103107Z-2");
  std::string longname(250, 'x');
  auto name = conflict_copy_name(longname + ".txt", 1, t);
  CHECK(name.size() <= 255);
  CHECK_FALSE(validate_path(name));
}

TEST_CASE("path helpers", "[folder][path]") {
  CHECK(parent_path("a/b/c") == "a/b");
  CHECK(parent_path("a").empty());
  CHECK(file_name("a/b/c") == "c");
  CHECK(join_path("", "x") == "x");
  CHECK(join_path("a", "x") == "a/x");
  CHECK(is_same_or_below("a/b", "a"));
  CHECK(is_same_or_below("a", "a"));
  CHECK_FALSE(is_same_or_below("ab", "a"));
  CHECK(is_same_or_below("anything", ""));
}
