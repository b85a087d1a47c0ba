// HMAC-SHA256 challenge-response primitives for the transport handshake.
#include "raftsync/transport/handshake.hpp"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <string>

namespace raftsync::transport {
namespace {
constexpr std::string_view handshake_label = "raftsync-handshake-v1";

void append_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
}  // namespace

result<mac> handshake_mac(std::string_view secret, handshake_role role, std::uint64_t cluster_id,
                          node_id dialer_id, node_id acceptor_id, const nonce& dialer_nonce,
                          const nonce& acceptor_nonce) {
  std::string input;
  input.reserve(handshake_label.size() + 1 + 24 + 2 * nonce_bytes);
  input.append(handshake_label);
  input.push_back(static_cast<char>(role));
  append_u64(input, cluster_id);
  append_u64(input, dialer_id);
  append_u64(input, acceptor_id);
  input.append(reinterpret_cast<const char*>(dialer_nonce.data()), nonce_bytes);
  input.append(reinterpret_cast<const char*>(acceptor_nonce.data()), nonce_bytes);
  mac out{};
  unsigned int out_len = 0;
  const unsigned char* ok = HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                                 reinterpret_cast<const unsigned char*>(input.data()), input.size(),
                                 out.data(), &out_len);
  if (ok == nullptr || out_len != mac_bytes) return errc::auth_failed;
  return out;
}

bool macs_equal(const mac& a, const mac& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), mac_bytes) == 0;
}

std::error_code random_nonce(nonce& n) noexcept {
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1)
    return std::make_error_code(std::errc::io_error);
  return {};
}

}  // namespace raftsync::transport
