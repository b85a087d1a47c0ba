#include <catch2/catch.hpp>

#include <vector>

#include "folder_test_util.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;

namespace {

std::vector<command> one_of_each() {
  std::vector<command> out;
  out.push_back(make_write(1, 1, "a/file.txt", std::string("hello\0world", 11), 7));
  command chunk = make(command_kind::chunk, 2, 2, "big.bin", 3);
  chunk.upload_id = 99;
  chunk.chunk_index = 5;
  chunk.content = "chunk bytes";
  chunk.sha256 = sha256(chunk.content);
  out.push_back(chunk);
  command commit = make(command_kind::commit, 2, 3, "big.bin", 3);
  commit.upload_id = 99;
  commit.mode = 0600;
  commit.mtime_ns = -5;
  commit.size_bytes = 8193;
  commit.sha256 = sha256("x");
  commit.chunk_hashes = {sha256("a"), sha256("b"), sha256("c")};
  out.push_back(commit);
  out.push_back(make(command_kind::remove, 3, 4, "gone", 11));
  command rename = make(command_kind::rename, 3, 5, "from/x", 12);
  rename.target = "to/y";
  rename.target_base_version = 4;
  rename.seen_index = 17;
  out.push_back(rename);
  command mkdir = make(command_kind::mkdir, 1, 6, "d");
  mkdir.mode = 0755;
  out.push_back(mkdir);
  out.push_back(make(command_kind::rmdir, 1, 7, "d", 9));
  command chmod = make(command_kind::set_mode, 1, 8, "f", 2);
  chmod.mode = 04711;
  out.push_back(chmod);
  command touch = make(command_kind::set_mtime, 1, 9, "f", 2);
  touch.mtime_ns = 123456789;
  out.push_back(touch);
  command link = make(command_kind::symlink, 1, 10, "l");
  link.target = "../outside/never/followed";
  out.push_back(link);
  return out;
}

}  // namespace

TEST_CASE("every command kind round-trips through the codec", "[folder][codec]") {
  for (const auto& c : one_of_each()) {
    INFO(describe(c));
    auto decoded = decode_command(encode_command(c));
    REQUIRE(decoded.has_value());
    CHECK(*decoded == c);
  }
}

TEST_CASE("format 1 entries still decode (a rename without seen_index)", "[folder][codec]") {
  for (const auto& c : one_of_each()) {
    INFO(describe(c));
    std::string bytes = encode_command(c);
    bytes[0] = 1;
    if (c.kind == command_kind::rename) bytes.resize(bytes.size() - 8);  // no seen_index
    auto decoded = decode_command(bytes);
    REQUIRE(decoded.has_value());
    command expected = c;
    expected.seen_index = 0;
    CHECK(*decoded == expected);
  }
}

TEST_CASE("decoding a command truncated at every byte fails cleanly", "[folder][codec]") {
  for (const auto& c : one_of_each()) {
    std::string bytes = encode_command(c);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      auto decoded = decode_command(std::string_view(bytes).substr(0, n));
      INFO(describe(c) << " truncated to " << n);
      REQUIRE_FALSE(decoded.has_value());
      CHECK(decoded.error() == make_error_code(errc::malformed));
    }
    CHECK_FALSE(decode_command(bytes + "x").has_value());  // trailing garbage
  }
}

TEST_CASE("hostile command bytes are refused without large allocations", "[folder][codec]") {
  // An unknown format version.
  std::string bytes = encode_command(make_write(1, 1, "a", "b"));
  bytes[0] = 9;
  CHECK(decode_command(bytes).error() == make_error_code(errc::unsupported_version));
  // An unknown kind.
  bytes = encode_command(make_write(1, 1, "a", "b"));
  bytes[1] = 42;
  CHECK(decode_command(bytes).error() == make_error_code(errc::malformed));
  // Origin 0.
  CHECK(decode_command(encode_command(make_write(0, 1, "a", "b"))).error() ==
        make_error_code(errc::malformed));
  // A content length beyond the limit.
  command_limits limits;
  limits.content_bytes_max = 4;
  CHECK_FALSE(
      decode_command(encode_command(make_write(1, 1, "a", "too long")), limits).has_value());
  // A commit claiming 2^40 chunk hashes in a few bytes.
  command commit = make(command_kind::commit, 1, 1, "a");
  commit.chunk_hashes = {sha256("a")};
  bytes = encode_command(commit);
  std::size_t count_at = bytes.size() - 32 - 8;
  for (int i = 0; i < 8; ++i)
    bytes[count_at + i] = i == 5 ? 1 : 0;
  CHECK_FALSE(decode_command(bytes).has_value());
  // Random garbage never crashes.
  std::uint64_t x = 88172645463325252ull;
  for (int round = 0; round < 2000; ++round) {
    std::string junk(static_cast<std::size_t>(x % 200), '\0');
    for (auto& ch : junk) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      ch = static_cast<char>(x);
    }
    if (!junk.empty()) junk[0] = 1;
    (void)decode_command(junk);
  }
}
