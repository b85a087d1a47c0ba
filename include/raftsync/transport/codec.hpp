// raftsync — the wire codec: versioned, length-prefixed binary frames carrying envelopes (Raft
// messages and application messages) and the transport's own handshake and keepalive frames.
//
// The byte-by-byte format is documented in docs/transport.md. All integers are little-endian and
// fixed width. Every decoder here is total: any input either decodes or yields an error
// (errc::malformed, errc::too_large, errc::unsupported_version) — never a crash, an assertion, an
// allocation larger than the input could justify, or undefined behaviour. Decoders never trust a
// count: a count is checked against the bytes that remain before anything is reserved.
//
// Thread safety: all functions are pure; call them from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"
#include "raftsync/transport/transport.hpp"

namespace raftsync::transport {

// The only frame version this code writes and reads. A frame with another version is rejected
// with errc::unsupported_version (a later version must be negotiated, not guessed).
inline constexpr std::uint8_t wire_version = 1;

// u32 length + u8 version + u8 kind.
inline constexpr std::size_t frame_header_bytes = 6;
// The length field counts the bytes after itself: version, kind and body.
inline constexpr std::size_t frame_length_field_bytes = 4;

// Default bound on one frame (header included). Frames above it are refused before their body is
// read, so a peer cannot make us buffer more than this per connection.
inline constexpr std::uint32_t default_max_frame_bytes = 64u << 20;

enum class frame_kind : std::uint8_t {
  raft_message = 1,  // body: envelope header + raft::message
  app_message = 2,   // body: envelope header + app_message
  keepalive = 3,     // body: empty; proves liveness on an idle authenticated link
  hello = 16,        // handshake 1/3, dialer → acceptor
  challenge = 17,    // handshake 2/3, acceptor → dialer
  proof = 18,        // handshake 3/3, dialer → acceptor
};

// Returns true for the kinds listed above.
bool is_known_frame_kind(std::uint8_t kind) noexcept;

// One frame located inside a byte buffer. `body` points into the buffer given to parse_frame.
struct frame_view {
  frame_kind kind = frame_kind::keepalive;
  std::string_view body;
  std::size_t size_bytes = 0;  // whole frame, header included: how much to consume
};

// Looks for one frame at the start of `data`.
//   - a complete, well-formed header and body: the frame;
//   - not enough bytes yet (but nothing invalid so far): std::nullopt — read more;
//   - errc::too_large if the declared size exceeds max_frame_bytes (checked from the 4 length
//     bytes alone, before waiting for the body), errc::malformed if the length cannot even hold
//     version and kind, errc::unsupported_version, or errc::malformed for an unknown kind.
// The body itself is not decoded here.
result<std::optional<frame_view>> parse_frame(std::string_view data,
                                              std::uint32_t max_frame_bytes) noexcept;

// Appends one frame with the given kind and body to `out`. The caller keeps the body within
// max_frame_bytes - frame_header_bytes (the decoder on the other side enforces it).
void encode_frame(frame_kind kind, std::string_view body, std::string& out);

// --- Envelopes (kinds raft_message and app_message) -------------------------------------------

// Appends one frame carrying `e` to `out`.
void encode_envelope(const envelope& e, std::string& out);
std::string encode_envelope(const envelope& e);

// Exact size of the frame encode_envelope would produce.
std::size_t encoded_envelope_size(const envelope& e) noexcept;

// Decodes the body of a raft_message or app_message frame. errc::malformed for any other kind,
// truncation, trailing bytes, a local-only or unknown message type, an unknown entry type or a
// boolean that is neither 0 nor 1.
result<envelope> decode_envelope(const frame_view& frame);

// Decodes exactly one whole frame (header included, nothing after it) into an envelope.
result<envelope> decode_envelope_frame(std::string_view data,
                                       std::uint32_t max_frame_bytes = default_max_frame_bytes);

// --- Handshake (see docs/transport.md, "Handshake") -------------------------------------------

inline constexpr std::size_t nonce_bytes = 32;
inline constexpr std::size_t mac_bytes = 32;  // HMAC-SHA256
using nonce = std::array<std::uint8_t, nonce_bytes>;
using mac = std::array<std::uint8_t, mac_bytes>;

struct hello_frame {  // dialer → acceptor
  std::uint64_t cluster_id = 0;
  node_id from = raft::no_node;  // the dialer's claimed id
  node_id to = raft::no_node;    // the acceptor the dialer means to reach
  nonce dialer_nonce{};

  friend bool operator==(const hello_frame&, const hello_frame&) = default;
};

struct challenge_frame {  // acceptor → dialer
  std::uint64_t cluster_id = 0;
  node_id from = raft::no_node;  // the acceptor's id
  node_id to = raft::no_node;    // the dialer's id
  nonce acceptor_nonce{};
  mac acceptor_mac{};  // proves the acceptor knows the secret (over both nonces)

  friend bool operator==(const challenge_frame&, const challenge_frame&) = default;
};

struct proof_frame {  // dialer → acceptor
  mac dialer_mac{};

  friend bool operator==(const proof_frame&, const proof_frame&) = default;
};

void encode_hello(const hello_frame& h, std::string& out);
void encode_challenge(const challenge_frame& c, std::string& out);
void encode_proof(const proof_frame& p, std::string& out);
void encode_keepalive(std::string& out);

// Each decodes the body of a frame of its kind (errc::malformed for the wrong kind or size).
result<hello_frame> decode_hello(const frame_view& frame);
result<challenge_frame> decode_challenge(const frame_view& frame);
result<proof_frame> decode_proof(const frame_view& frame);

}  // namespace raftsync::transport
