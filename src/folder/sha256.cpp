#include "raftsync/folder/sha256.hpp"

#include <openssl/evp.h>

#include "raftsync/assert.hpp"

namespace raftsync::folder {

sha256_hasher::sha256_hasher() : context_(EVP_MD_CTX_new()) {
  RAFTSYNC_ASSERT(context_ != nullptr, "EVP_MD_CTX_new failed (out of memory)");
  reset();
}

sha256_hasher::~sha256_hasher() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context_));
}

void sha256_hasher::reset() {
  int rc = EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(context_), EVP_sha256(), nullptr);
  RAFTSYNC_ASSERT(rc == 1, "EVP_DigestInit_ex(sha256) failed");
}

void sha256_hasher::update(std::string_view data) {
  if (data.empty()) return;
  int rc = EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(context_), data.data(), data.size());
  RAFTSYNC_ASSERT(rc == 1, "EVP_DigestUpdate failed");
}

digest sha256_hasher::finish() {
  digest out{};
  unsigned int length = 0;
  int rc = EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(context_), out.data(), &length);
  RAFTSYNC_ASSERT(rc == 1 && length == out.size(), "EVP_DigestFinal_ex failed");
  reset();
  return out;
}

digest sha256(std::string_view data) {
  sha256_hasher hasher;
  hasher.update(data);
  return hasher.finish();
}

const digest& empty_sha256() {
  static const digest value = sha256({});
  return value;
}

std::string to_hex(const digest& value) {
  static const char* const digits = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (std::uint8_t b : value) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

}  // namespace raftsync::folder
