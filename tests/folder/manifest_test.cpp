#include <catch2/catch.hpp>

#include "raftsync/error.hpp"
#include "raftsync/folder/folder_io.hpp"
#include "raftsync/folder/manifest.hpp"
#include "raftsync/folder/memory_folder_io.hpp"

using namespace raftsync;
using namespace raftsync::folder;

namespace {
manifest sample() {
  manifest m;
  manifest_entry d;
  d.kind = file_kind::directory;
  d.version = 1;
  d.origin = 1;
  d.sequence = 1;
  d.mode = 0755;
  m.put("dir", d);
  manifest_entry f;
  f.kind = file_kind::regular;
  f.version = 2;
  f.origin = 2;
  f.sequence = 9;
  f.size_bytes = 5;
  f.mode = 0644;
  f.mtime_ns = 77;
  f.sha256 = sha256("hello");
  f.chunk_hashes = chunk_hashes_of("hello", 4096);
  f.local_inode = 1234;
  f.local_mtime_ns = 78;
  m.put("dir/file", f);
  manifest_entry l;
  l.kind = file_kind::symlink;
  l.version = 3;
  l.origin = 3;
  l.sequence = 1;
  l.symlink_target = "dir/file";
  m.put("link", l);
  return m;
}
}  // namespace

TEST_CASE("the manifest round-trips with and without local fields", "[folder][manifest]") {
  manifest m = sample();
  std::string with_local;
  m.encode(with_local, true);
  auto a = manifest::decode(with_local, true);
  REQUIRE(a.has_value());
  CHECK(a->same_replicated(m));
  CHECK(a->find("dir/file")->local_inode == 1234);

  std::string replicated;
  m.encode(replicated, false);
  auto b = manifest::decode(replicated, false);
  REQUIRE(b.has_value());
  CHECK(b->same_replicated(m));
  CHECK(b->find("dir/file")->local_inode == 0);
  // Local fields never change the replicated encoding.
  manifest other = sample();
  other.find("dir/file")->local_inode = 99;
  std::string replicated2;
  other.encode(replicated2, false);
  CHECK(replicated == replicated2);
}

TEST_CASE("a manifest truncated at every byte is refused", "[folder][manifest]") {
  std::string bytes;
  sample().encode(bytes, true);
  for (std::size_t n = 0; n < bytes.size(); ++n)
    REQUIRE_FALSE(manifest::decode(std::string_view(bytes).substr(0, n), true).has_value());
  CHECK_FALSE(manifest::decode(bytes + "?", true).has_value());
  CHECK_FALSE(manifest::decode(bytes, false).has_value());  // wrong flavour
}

TEST_CASE("a manifest with an invalid path is refused", "[folder][manifest]") {
  manifest m;
  manifest_entry f;
  f.kind = file_kind::regular;
  m.put("../escape", f);
  std::string bytes;
  m.encode(bytes, false);
  CHECK(manifest::decode(bytes, false).error() == make_error_code(errc::malformed));
}

TEST_CASE("manifest subtree queries", "[folder][manifest]") {
  manifest m = sample();
  manifest_entry f;
  f.kind = file_kind::regular;
  m.put("dir b", f);  // sorts between "dir" and "dir/..."
  CHECK(m.paths_below("dir") == std::vector<std::string>{"dir/file"});
  CHECK(m.has_children("dir"));
  CHECK_FALSE(m.has_children("dir b"));
  CHECK(m.paths_below("").size() == 4);
}

TEST_CASE("chunk hashes split at chunk_bytes", "[folder][manifest]") {
  std::string content(10000, 'z');
  auto hashes = chunk_hashes_of(content, 4096);
  REQUIRE(hashes.size() == 3);
  CHECK(hashes[2] == sha256(content.substr(8192)));
  CHECK(chunk_hashes_of("", 4096).empty());
  CHECK(chunk_count(8192, 4096) == 2);
  CHECK(chunk_count(8193, 4096) == 3);
  CHECK(to_hex(sha256("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// A file still being written is not hashed to its end only to be hashed again: found with the
// benchmark's timestamped trace (a 256 MiB copy was hashed while it grew, then once more).
TEST_CASE("hash_file stops early when the file changes under the read", "[folder][manifest]") {
  memory_folder_io io;
  const std::uint64_t chunk = 64;
  std::string content;
  for (int i = 0; i < 40 * 64; ++i)
    content.push_back(static_cast<char>('a' + i % 26));
  io.user_write("big", content);
  auto whole = hash_file(io, "big", chunk);
  REQUIRE(whole.has_value());
  CHECK(whole->sha256 == sha256(content));
  REQUIRE(whole->chunk_hashes.size() == 40);
  // Asked every hash_check_interval chunks; saying "unchanged" changes nothing.
  int asked = 0;
  auto same = hash_file(io, "big", chunk, [&] {
    ++asked;
    return true;
  });
  REQUIRE(same.has_value());
  CHECK(same->sha256 == whole->sha256);
  CHECK(same->chunk_hashes == whole->chunk_hashes);
  CHECK(asked == 40 / static_cast<int>(hash_check_interval));
  // Changed under the read: busy at the first check, without reading the rest.
  asked = 0;
  auto changed = hash_file(io, "big", chunk, [&] {
    ++asked;
    return false;
  });
  REQUIRE_FALSE(changed.has_value());
  CHECK(changed.error() == make_error_code(errc::busy));
  CHECK(asked == 1);
}
