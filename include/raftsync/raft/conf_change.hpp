// raftsync — the encoding of conf_change entries (entry_type::conf_change data).
//
// Format (version 1, little-endian): u8 version=1, u8 type, u64 node, u32 context_size, context.
// decode_conf_change() bounds-checks every field: entry data may come from a peer or a damaged
// log, so malformed bytes are an errc::malformed, never a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "raftsync/error.hpp"
#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"

namespace raftsync::raft {

inline constexpr std::uint8_t conf_change_format_version = 1;
inline constexpr std::size_t conf_change_header_bytes = 1 + 1 + 8 + 4;

inline bytes encode_conf_change(const conf_change& cc) {
  bytes out;
  out.reserve(conf_change_header_bytes + cc.context.size());
  out.push_back(static_cast<char>(conf_change_format_version));
  out.push_back(static_cast<char>(cc.type));
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((cc.node >> (8 * i)) & 0xff));
  const auto size = static_cast<std::uint32_t>(cc.context.size());
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
  out.append(cc.context);
  return out;
}

inline result<conf_change> decode_conf_change(std::string_view data) {
  if (data.size() < conf_change_header_bytes) return errc::malformed;
  const auto byte_at = [&](std::size_t i) { return static_cast<std::uint8_t>(data[i]); };
  if (byte_at(0) != conf_change_format_version) return errc::unsupported_version;
  const std::uint8_t type = byte_at(1);
  if (type > static_cast<std::uint8_t>(conf_change_type::add_learner_node)) return errc::malformed;
  std::uint64_t node = 0;
  for (int i = 0; i < 8; ++i)
    node |= static_cast<std::uint64_t>(byte_at(2 + i)) << (8 * i);
  std::uint32_t size = 0;
  for (int i = 0; i < 4; ++i)
    size |= static_cast<std::uint32_t>(byte_at(10 + i)) << (8 * i);
  if (node == no_node) return errc::malformed;
  if (data.size() - conf_change_header_bytes != size) return errc::malformed;
  conf_change cc;
  cc.type = static_cast<conf_change_type>(type);
  cc.node = node;
  cc.context.assign(data.substr(conf_change_header_bytes));
  return cc;
}

}  // namespace raftsync::raft
