// raftsync::folder — SHA-256 (OpenSSL EVP) for file contents and chunks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace raftsync::folder {

using digest = std::array<std::uint8_t, 32>;

// Incremental SHA-256. Not copyable; one hasher per stream. finish() may be called once; the
// hasher can be reused after reset().
class sha256_hasher {
 public:
  sha256_hasher();
  ~sha256_hasher();
  sha256_hasher(const sha256_hasher&) = delete;
  sha256_hasher& operator=(const sha256_hasher&) = delete;

  void update(std::string_view data);
  digest finish();
  void reset();

 private:
  void* context_;  // EVP_MD_CTX*, kept opaque so the header does not include OpenSSL
};

digest sha256(std::string_view data);
// The digest of zero bytes (the hash of an empty file).
const digest& empty_sha256();
std::string to_hex(const digest& value);

}  // namespace raftsync::folder
