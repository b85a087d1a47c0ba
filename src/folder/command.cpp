#include "raftsync/folder/command.hpp"

#include "byte_codec.hpp"

namespace raftsync::folder {

const char* to_string(command_kind kind) noexcept {
  switch (kind) {
    case command_kind::write:
      return "write";
    case command_kind::chunk:
      return "chunk";
    case command_kind::commit:
      return "commit";
    case command_kind::remove:
      return "remove";
    case command_kind::rename:
      return "rename";
    case command_kind::mkdir:
      return "mkdir";
    case command_kind::rmdir:
      return "rmdir";
    case command_kind::set_mode:
      return "set_mode";
    case command_kind::set_mtime:
      return "set_mtime";
    case command_kind::symlink:
      return "symlink";
    case command_kind::chunk_ref:
      return "chunk_ref";
  }
  return "unknown";
}

std::string encode_command(const command& value) {
  std::string out;
  out.reserve(64 + value.path.size() + value.content.size() + value.target.size() +
              32 * value.chunk_hashes.size());
  detail::byte_writer w(out);
  w.u8(command_format_version);
  w.u8(static_cast<std::uint8_t>(value.kind));
  w.u64(value.origin);
  w.u64(value.sequence);
  w.u64(value.base_version);
  w.i64(value.timestamp_ns);
  w.str(value.path);
  switch (value.kind) {
    case command_kind::write:
      w.u32(value.mode);
      w.i64(value.mtime_ns);
      w.blob(value.content);
      break;
    case command_kind::chunk:
      w.u64(value.upload_id);
      w.u64(value.chunk_index);
      w.raw(value.sha256.data(), value.sha256.size());
      w.blob(value.content);
      break;
    case command_kind::chunk_ref:
      w.u64(value.upload_id);
      w.u64(value.chunk_index);
      w.raw(value.sha256.data(), value.sha256.size());
      w.u64(value.size_bytes);
      break;
    case command_kind::commit:
      w.u64(value.upload_id);
      w.u32(value.mode);
      w.i64(value.mtime_ns);
      w.u64(value.size_bytes);
      w.raw(value.sha256.data(), value.sha256.size());
      w.u64(value.chunk_hashes.size());
      for (const auto& h : value.chunk_hashes)
        w.raw(h.data(), h.size());
      break;
    case command_kind::remove:
    case command_kind::rmdir:
      break;
    case command_kind::rename:
      w.str(value.target);
      w.u64(value.target_base_version);
      w.u64(value.seen_index);
      break;
    case command_kind::mkdir:
    case command_kind::set_mode:
      w.u32(value.mode);
      break;
    case command_kind::set_mtime:
      w.i64(value.mtime_ns);
      break;
    case command_kind::symlink:
      w.str(value.target);
      break;
  }
  return out;
}

result<command> decode_command(std::string_view bytes, const command_limits& limits) {
  detail::byte_reader r(bytes);
  std::uint8_t version = r.u8();
  if (!r.ok()) return errc::malformed;
  if (version != command_format_version && version != 1) return errc::unsupported_version;
  command c;
  std::uint8_t kind = r.u8();
  if (kind < 1 || kind > 11) return errc::malformed;
  c.kind = static_cast<command_kind>(kind);
  c.origin = r.u64();
  c.sequence = r.u64();
  c.base_version = r.u64();
  c.timestamp_ns = r.i64();
  c.path = r.str(limits.path_bytes_max);
  switch (c.kind) {
    case command_kind::write:
      c.mode = r.u32();
      c.mtime_ns = r.i64();
      c.content = r.blob(limits.content_bytes_max);
      break;
    case command_kind::chunk:
      c.upload_id = r.u64();
      c.chunk_index = r.u64();
      r.raw(c.sha256);
      c.content = r.blob(limits.content_bytes_max);
      break;
    case command_kind::chunk_ref:
      c.upload_id = r.u64();
      c.chunk_index = r.u64();
      r.raw(c.sha256);
      c.size_bytes = r.u64();
      if (c.size_bytes == 0 || c.size_bytes > limits.content_bytes_max) return errc::malformed;
      break;
    case command_kind::commit: {
      c.upload_id = r.u64();
      c.mode = r.u32();
      c.mtime_ns = r.i64();
      c.size_bytes = r.u64();
      r.raw(c.sha256);
      std::uint64_t count = r.u64();
      // Check the count against the bytes actually present before allocating anything.
      if (!r.ok() || count > limits.chunk_count_max || count > r.remaining() / 32)
        return errc::malformed;
      c.chunk_hashes.resize(count);
      for (auto& h : c.chunk_hashes)
        r.raw(h);
      break;
    }
    case command_kind::remove:
    case command_kind::rmdir:
      break;
    case command_kind::rename:
      c.target = r.str(limits.path_bytes_max);
      c.target_base_version = r.u64();
      if (version >= 2) c.seen_index = r.u64();
      break;
    case command_kind::mkdir:
    case command_kind::set_mode:
      c.mode = r.u32();
      break;
    case command_kind::set_mtime:
      c.mtime_ns = r.i64();
      break;
    case command_kind::symlink:
      c.target = r.str(limits.path_bytes_max);
      break;
  }
  if (!r.done()) return errc::malformed;
  if (c.origin == 0) return errc::malformed;
  return c;
}

result<command_header> peek_command(std::string_view bytes) {
  detail::byte_reader r(bytes);
  const std::uint8_t version = r.u8();
  if (!r.ok()) return errc::malformed;
  if (version != command_format_version && version != 1) return errc::unsupported_version;
  const std::uint8_t kind = r.u8();
  command_header h;
  h.origin = r.u64();
  if (!r.ok() || kind < 1 || kind > 11) return errc::malformed;
  h.kind = static_cast<command_kind>(kind);
  return h;
}

std::string describe(const command& value) {
  std::string out = to_string(value.kind);
  out += ' ';
  out += value.path;
  if (value.kind == command_kind::rename) out += " -> " + value.target;
  if (value.kind == command_kind::symlink) out += " => " + value.target;
  out += " origin=" + std::to_string(value.origin) + " seq=" + std::to_string(value.sequence) +
         " base=" + std::to_string(value.base_version);
  if (value.kind == command_kind::write || value.kind == command_kind::chunk)
    out += " (" + std::to_string(value.content.size()) + " bytes)";
  if (value.kind == command_kind::chunk_ref)
    out += " (chunk " + std::to_string(value.chunk_index) + ", " +
           std::to_string(value.size_bytes) + " bytes beside the log, upload " +
           std::to_string(value.upload_id) + ")";
  if (value.kind == command_kind::commit)
    out += " (" + std::to_string(value.size_bytes) + " bytes, upload " +
           std::to_string(value.upload_id) + ")";
  return out;
}

}  // namespace raftsync::folder
