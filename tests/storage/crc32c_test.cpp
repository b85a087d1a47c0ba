#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "raftsync/storage/crc32c.hpp"

using namespace raftsync::storage;

TEST_CASE("crc32c matches the standard test vectors", "[storage]") {
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(crc32c("") == 0u);
  CHECK(crc32c(std::string(32, '\0')) == 0x8A9136AAu);  // RFC 3720 B.4
  CHECK(crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
  std::string ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  CHECK(crc32c(ascending) == 0x46DD794Eu);
  CHECK(crc32c(descending) == 0x113FDB5Cu);
  CHECK(crc32c_extend_portable(0, "123456789", 9) == 0xE3069283u);
}

TEST_CASE("crc32c hardware and portable paths agree and extend incrementally", "[storage]") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string data(rng() % 3000, '\0');
    for (auto& c : data)
      c = static_cast<char>(rng());
    const std::size_t offset = rng() % 8;  // unaligned starts
    const std::string_view view = std::string_view(data).substr(std::min(offset, data.size()));
    const auto whole = crc32c(view);
    CHECK(whole == crc32c_extend_portable(0, view.data(), view.size()));
    const std::size_t cut = view.empty() ? 0 : rng() % view.size();
    CHECK(crc32c_extend(crc32c(view.substr(0, cut)), view.data() + cut, view.size() - cut) ==
          whole);
  }
  INFO("hardware accelerated: " << crc32c_hardware_accelerated());
  SUCCEED();
}
