// raftsync — the cryptographic half of the transport's mutual-authentication handshake
// (HMAC-SHA256 challenge-response over fresh nonces from both sides). The message flow is in
// docs/transport.md, "Handshake"; the frames are in codec.hpp.
//
// Thread safety: all functions are reentrant.
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

#include "raftsync/result.hpp"
#include "raftsync/transport/codec.hpp"

namespace raftsync::transport {

// Which side computes the MAC. The role is part of the MAC input, so a MAC the acceptor sends
// can never be reflected back to it as a dialer's proof.
enum class handshake_role : std::uint8_t { dialer = 1, acceptor = 2 };

// Minimum cluster secret length accepted by tcp_transport_config::validate().
inline constexpr std::size_t cluster_secret_bytes_min = 16;

// HMAC-SHA256(secret, "raftsync-handshake-v1" || role || cluster_id || dialer_id || acceptor_id ||
// dialer_nonce || acceptor_nonce), integers little-endian u64, role one byte. An error only if
// OpenSSL fails (allocation); the handshake then fails closed.
result<mac> handshake_mac(std::string_view secret, handshake_role role, std::uint64_t cluster_id,
                          node_id dialer_id, node_id acceptor_id, const nonce& dialer_nonce,
                          const nonce& acceptor_nonce);

// Constant-time comparison (the time taken does not depend on where the MACs differ).
bool macs_equal(const mac& a, const mac& b) noexcept;

// Fills `n` from the OpenSSL CSPRNG. An error if the CSPRNG fails (the handshake then aborts).
std::error_code random_nonce(nonce& n) noexcept;

}  // namespace raftsync::transport
