#include <catch2/catch.hpp>

#include <cerrno>
#include <string>

#include "raftsync/storage/faulty_file_io.hpp"

using namespace raftsync::storage;

namespace {
std::string read_all(file& f) {
  auto size = f.size();
  REQUIRE(size);
  std::string s(*size, '\0');
  REQUIRE_FALSE(read_exact(f, 0, s.data(), s.size()));
  return s;
}
const open_flags create_rw = open_flags::read_write | open_flags::create;
}  // namespace

TEST_CASE("faulty_file_io loses unsynced data and unsynced names at a crash", "[storage]") {
  faulty_file_io io;
  REQUIRE_FALSE(io.create_dir("/d"));
  REQUIRE_FALSE(io.sync_dir("/"));
  {
    auto f = io.open("/d/a", create_rw);
    REQUIRE(f);
    REQUIRE_FALSE((*f)->pwrite(0, "hello", 5));
    REQUIRE_FALSE((*f)->datasync());
    REQUIRE_FALSE((*f)->pwrite(5, " world", 6));  // never synced
  }
  // The name is not durable yet: a crash loses the whole file.
  io.restart();
  CHECK_FALSE(io.exists("/d/a"));

  {
    auto f = io.open("/d/a", create_rw);
    REQUIRE(f);
    REQUIRE_FALSE((*f)->pwrite(0, "hello", 5));
    REQUIRE_FALSE((*f)->datasync());
    REQUIRE_FALSE(io.sync_dir("/d"));
    REQUIRE_FALSE((*f)->pwrite(5, " world", 6));
  }
  io.restart();
  auto f = io.open("/d/a", open_flags::read_write);
  REQUIRE(f);
  CHECK(read_all(**f) == "hello");

  // Unsynced rename and unlink are undone.
  REQUIRE_FALSE(io.rename("/d/a", "/d/b"));
  CHECK(io.exists("/d/b"));
  io.restart();
  CHECK(io.exists("/d/a"));
  CHECK_FALSE(io.exists("/d/b"));
  REQUIRE_FALSE(io.unlink("/d/a"));
  REQUIRE_FALSE(io.sync_dir("/d"));
  io.restart();
  CHECK_FALSE(io.exists("/d/a"));
  // Handles from before a restart are dead.
  CHECK((*f)->pwrite(0, "x", 1) == std::errc::bad_file_descriptor);
}

TEST_CASE("faulty_file_io crashes at the chosen operation and fails chosen operations",
          "[storage]") {
  faulty_file_io io;
  REQUIRE_FALSE(io.create_dir("/d"));
  auto f = io.open("/d/a", create_rw);
  REQUIRE(f);
  const auto n = io.operation_count();
  io.fail_at(n + 1, std::error_code(ENOSPC, std::system_category()));
  CHECK((*f)->pwrite(0, "abc", 3) == std::errc::no_space_on_device);
  CHECK((*f)->size().value() == 0);  // no effect
  CHECK_FALSE((*f)->pwrite(0, "abc", 3));
  io.crash_at(io.operation_count() + 2);
  CHECK_FALSE((*f)->datasync());
  CHECK((*f)->pwrite(3, "def", 3) == std::errc::io_error);
  CHECK(io.crashed());
  CHECK(io.sync_dir("/d") == std::errc::io_error);  // dead until restart
  io.restart();
  CHECK_FALSE(io.exists("/d/a"));  // the name was never synced
}

TEST_CASE("faulty_file_io enforces a capacity with ENOSPC", "[storage]") {
  faulty_file_io io;
  io.set_capacity_bytes(100);
  auto f = io.open("/a", create_rw);
  REQUIRE(f);
  CHECK_FALSE((*f)->allocate(0, 80));
  CHECK_FALSE((*f)->pwrite(0, std::string(80, 'x').data(), 80));  // inside the allocation
  CHECK((*f)->pwrite(80, std::string(30, 'x').data(), 30) == std::errc::no_space_on_device);
  io.set_capacity_bytes(std::nullopt);
  CHECK_FALSE((*f)->pwrite(80, std::string(30, 'x').data(), 30));
  CHECK(io.used_bytes() == 110);
}

TEST_CASE("faulty_file_io torn writes keep an in-order prefix of unsynced writes", "[storage]") {
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    faulty_file_io io(seed);
    io.set_torn_writes(true);
    {
      auto f = io.open("/a", create_rw);
      REQUIRE(f);
      REQUIRE_FALSE((*f)->pwrite(0, "AAAA", 4));
      REQUIRE_FALSE((*f)->datasync());
      REQUIRE_FALSE(io.sync_dir("/"));
      REQUIRE_FALSE((*f)->pwrite(4, "BBBB", 4));
      REQUIRE_FALSE((*f)->pwrite(8, "CCCC", 4));
    }
    io.restart();
    auto content = io.read_durable("/a");
    REQUIRE(content);
    const std::string full = "AAAABBBBCCCC";
    REQUIRE(content->size() >= 4);
    CHECK(full.compare(0, content->size(), *content) == 0);
  }
}
