// The wire codec. Format: docs/transport.md, "Frame format".
#include "raftsync/transport/codec.hpp"

#include <cstring>
#include <utility>

namespace raftsync::transport {
namespace {

// --- Writing -----------------------------------------------------------------------------------

void put_u8(std::string& out, std::uint8_t v) {
  out.push_back(static_cast<char>(v));
}

void put_u32(std::string& out, std::uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i)
    b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 4);
}

void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i)
    b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 8);
}

void put_bytes(std::string& out, std::string_view data) {
  put_u32(out, static_cast<std::uint32_t>(data.size()));
  out.append(data.data(), data.size());
}

void put_ids(std::string& out, const std::vector<node_id>& ids) {
  put_u32(out, static_cast<std::uint32_t>(ids.size()));
  for (node_id id : ids)
    put_u64(out, id);
}

// --- Reading -----------------------------------------------------------------------------------

// A bounds-checked cursor. Every getter fails (returns false) instead of reading past the end;
// after a failure the reader stays failed.
class reader {
 public:
  explicit reader(std::string_view data) : data_(data) {}

  std::size_t remaining() const noexcept { return data_.size() - pos_; }
  bool ok() const noexcept { return ok_; }
  bool done() const noexcept { return ok_ && pos_ == data_.size(); }
  void fail() noexcept { ok_ = false; }

  bool u8(std::uint8_t& v) noexcept {
    if (!need(1)) return false;
    v = static_cast<std::uint8_t>(data_[pos_]);
    pos_ += 1;
    return true;
  }
  bool u32(std::uint32_t& v) noexcept {
    if (!need(4)) return false;
    v = 0;
    for (int i = 0; i < 4; ++i)
      v |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += 4;
    return true;
  }
  bool u64(std::uint64_t& v) noexcept {
    if (!need(8)) return false;
    v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += 8;
    return true;
  }
  bool boolean(bool& v) noexcept {
    std::uint8_t b = 0;
    if (!u8(b)) return false;
    if (b > 1) {
      fail();
      return false;
    }
    v = b == 1;
    return true;
  }
  // A u32 length followed by that many bytes. The length is checked against what remains before
  // anything is allocated.
  bool bytes(std::string& v) {
    std::uint32_t n = 0;
    if (!u32(n) || !need(n)) return false;
    v.assign(data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <std::size_t N>
  bool fixed(std::array<std::uint8_t, N>& v) noexcept {
    if (!need(N)) return false;
    std::memcpy(v.data(), data_.data() + pos_, N);
    pos_ += N;
    return true;
  }
  // A u32 count of items, each at least `min_item_bytes` long: refuses counts the remaining
  // bytes cannot hold, so a reserve() sized by it is bounded by the input size.
  bool count(std::uint32_t& n, std::size_t min_item_bytes) noexcept {
    if (!u32(n)) return false;
    if (static_cast<std::uint64_t>(n) * min_item_bytes > remaining()) {
      fail();
      return false;
    }
    return true;
  }
  bool ids(std::vector<node_id>& v) {
    std::uint32_t n = 0;
    if (!count(n, 8)) return false;
    v.clear();
    v.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) {
      std::uint64_t id = 0;
      if (!u64(id)) return false;
      v.push_back(id);
    }
    return true;
  }

 private:
  bool need(std::size_t n) noexcept {
    if (!ok_ || n > remaining()) {
      ok_ = false;
      return false;
    }
    return true;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

constexpr std::size_t entry_fixed_bytes = 8 + 8 + 1 + 4;  // term, index, type, data length

bool is_wire_message_type(std::uint8_t t) noexcept {
  if (t > static_cast<std::uint8_t>(raft::message_type::unreachable)) return false;
  return !raft::is_local_message(static_cast<raft::message_type>(t));
}

void encode_message_body(const raft::message& m, std::string& out) {
  put_u8(out, static_cast<std::uint8_t>(m.type));
  put_u64(out, m.to);
  put_u64(out, m.from);
  put_u64(out, m.term);
  put_u64(out, m.log_term);
  put_u64(out, m.index);
  put_u64(out, m.commit);
  put_u8(out, m.reject ? 1 : 0);
  put_u64(out, m.reject_hint);
  put_u64(out, m.hint_term);
  put_u64(out, m.snapshot.index);
  put_u64(out, m.snapshot.term);
  put_ids(out, m.snapshot.conf.voters);
  put_ids(out, m.snapshot.conf.learners);
  put_bytes(out, m.context);
  put_u32(out, static_cast<std::uint32_t>(m.entries.size()));
  for (const raft::entry& e : m.entries) {
    put_u64(out, e.term);
    put_u64(out, e.index);
    put_u8(out, static_cast<std::uint8_t>(e.type));
    put_bytes(out, e.data);
  }
}

std::size_t message_body_size(const raft::message& m) noexcept {
  std::size_t n = 1 + 8 * 6 + 1 + 8 * 2 + 8 * 2;
  n += 4 + 8 * m.snapshot.conf.voters.size();
  n += 4 + 8 * m.snapshot.conf.learners.size();
  n += 4 + m.context.size();
  n += 4;
  for (const raft::entry& e : m.entries)
    n += entry_fixed_bytes + e.data.size();
  return n;
}

bool decode_message_body(reader& r, raft::message& m) {
  std::uint8_t type = 0;
  if (!r.u8(type)) return false;
  if (!is_wire_message_type(type)) {
    r.fail();
    return false;
  }
  m.type = static_cast<raft::message_type>(type);
  if (!r.u64(m.to) || !r.u64(m.from) || !r.u64(m.term) || !r.u64(m.log_term) || !r.u64(m.index) ||
      !r.u64(m.commit) || !r.boolean(m.reject) || !r.u64(m.reject_hint) || !r.u64(m.hint_term) ||
      !r.u64(m.snapshot.index) || !r.u64(m.snapshot.term) || !r.ids(m.snapshot.conf.voters) ||
      !r.ids(m.snapshot.conf.learners) || !r.bytes(m.context))
    return false;
  std::uint32_t n = 0;
  if (!r.count(n, entry_fixed_bytes)) return false;
  m.entries.clear();
  m.entries.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    raft::entry e;
    std::uint8_t entry_type = 0;
    if (!r.u64(e.term) || !r.u64(e.index) || !r.u8(entry_type)) return false;
    if (entry_type > static_cast<std::uint8_t>(raft::entry_type::conf_change)) {
      r.fail();
      return false;
    }
    e.type = static_cast<raft::entry_type>(entry_type);
    if (!r.bytes(e.data)) return false;
    m.entries.push_back(std::move(e));
  }
  return true;
}

void begin_frame(frame_kind kind, std::size_t body_bytes, std::string& out) {
  put_u32(out, static_cast<std::uint32_t>(body_bytes + 2));
  put_u8(out, wire_version);
  put_u8(out, static_cast<std::uint8_t>(kind));
}

}  // namespace

bool is_known_frame_kind(std::uint8_t kind) noexcept {
  switch (static_cast<frame_kind>(kind)) {
    case frame_kind::raft_message:
    case frame_kind::app_message:
    case frame_kind::keepalive:
    case frame_kind::hello:
    case frame_kind::challenge:
    case frame_kind::proof:
      return true;
  }
  return false;
}

result<std::optional<frame_view>> parse_frame(std::string_view data,
                                              std::uint32_t max_frame_bytes) noexcept {
  if (data.size() < frame_length_field_bytes) return std::optional<frame_view>{};
  reader r(data);
  std::uint32_t length = 0;
  r.u32(length);
  if (length < 2) return errc::malformed;
  const std::uint64_t total = std::uint64_t{length} + frame_length_field_bytes;
  if (total > max_frame_bytes) return errc::too_large;
  // Version and kind are checked as soon as they arrive, so garbage is refused early.
  if (data.size() >= 5 && static_cast<std::uint8_t>(data[4]) != wire_version)
    return errc::unsupported_version;
  if (data.size() >= 6 && !is_known_frame_kind(static_cast<std::uint8_t>(data[5])))
    return errc::malformed;
  if (data.size() < total) return std::optional<frame_view>{};
  frame_view f;
  f.kind = static_cast<frame_kind>(static_cast<std::uint8_t>(data[5]));
  f.body = data.substr(frame_header_bytes, static_cast<std::size_t>(total) - frame_header_bytes);
  f.size_bytes = static_cast<std::size_t>(total);
  return std::optional<frame_view>{f};
}

void encode_frame(frame_kind kind, std::string_view body, std::string& out) {
  begin_frame(kind, body.size(), out);
  out.append(body.data(), body.size());
}

std::size_t encoded_envelope_size(const envelope& e) noexcept {
  std::size_t body = 16;
  if (const auto* m = std::get_if<raft::message>(&e.body)) {
    body += message_body_size(*m);
  } else {
    body += 4 + 4 + std::get<app_message>(e.body).payload.size();
  }
  return frame_header_bytes + body;
}

void encode_envelope(const envelope& e, std::string& out) {
  const std::size_t size = encoded_envelope_size(e);
  out.reserve(out.size() + size);
  if (const auto* m = std::get_if<raft::message>(&e.body)) {
    begin_frame(frame_kind::raft_message, size - frame_header_bytes, out);
    put_u64(out, e.from);
    put_u64(out, e.to);
    encode_message_body(*m, out);
  } else {
    const auto& a = std::get<app_message>(e.body);
    begin_frame(frame_kind::app_message, size - frame_header_bytes, out);
    put_u64(out, e.from);
    put_u64(out, e.to);
    put_u32(out, a.channel);
    put_bytes(out, a.payload);
  }
}

std::string encode_envelope(const envelope& e) {
  std::string out;
  encode_envelope(e, out);
  return out;
}

result<envelope> decode_envelope(const frame_view& frame) {
  if (frame.kind != frame_kind::raft_message && frame.kind != frame_kind::app_message)
    return errc::malformed;
  reader r(frame.body);
  envelope e;
  if (!r.u64(e.from) || !r.u64(e.to)) return errc::malformed;
  if (frame.kind == frame_kind::raft_message) {
    raft::message m;
    if (!decode_message_body(r, m)) return errc::malformed;
    e.body = std::move(m);
  } else {
    app_message a;
    if (!r.u32(a.channel) || !r.bytes(a.payload)) return errc::malformed;
    e.body = std::move(a);
  }
  if (!r.done()) return errc::malformed;  // trailing bytes
  return e;
}

result<envelope> decode_envelope_frame(std::string_view data, std::uint32_t max_frame_bytes) {
  auto parsed = parse_frame(data, max_frame_bytes);
  if (!parsed) return parsed.error();
  if (!parsed->has_value()) return errc::malformed;  // truncated
  const frame_view& f = **parsed;
  if (f.size_bytes != data.size()) return errc::malformed;  // trailing bytes
  return decode_envelope(f);
}

void encode_hello(const hello_frame& h, std::string& out) {
  begin_frame(frame_kind::hello, 24 + nonce_bytes, out);
  put_u64(out, h.cluster_id);
  put_u64(out, h.from);
  put_u64(out, h.to);
  out.append(reinterpret_cast<const char*>(h.dialer_nonce.data()), nonce_bytes);
}

void encode_challenge(const challenge_frame& c, std::string& out) {
  begin_frame(frame_kind::challenge, 24 + nonce_bytes + mac_bytes, out);
  put_u64(out, c.cluster_id);
  put_u64(out, c.from);
  put_u64(out, c.to);
  out.append(reinterpret_cast<const char*>(c.acceptor_nonce.data()), nonce_bytes);
  out.append(reinterpret_cast<const char*>(c.acceptor_mac.data()), mac_bytes);
}

void encode_proof(const proof_frame& p, std::string& out) {
  begin_frame(frame_kind::proof, mac_bytes, out);
  out.append(reinterpret_cast<const char*>(p.dialer_mac.data()), mac_bytes);
}

void encode_keepalive(std::string& out) {
  begin_frame(frame_kind::keepalive, 0, out);
}

result<hello_frame> decode_hello(const frame_view& frame) {
  if (frame.kind != frame_kind::hello) return errc::malformed;
  reader r(frame.body);
  hello_frame h;
  if (!r.u64(h.cluster_id) || !r.u64(h.from) || !r.u64(h.to) || !r.fixed(h.dialer_nonce) ||
      !r.done())
    return errc::malformed;
  return h;
}

result<challenge_frame> decode_challenge(const frame_view& frame) {
  if (frame.kind != frame_kind::challenge) return errc::malformed;
  reader r(frame.body);
  challenge_frame c;
  if (!r.u64(c.cluster_id) || !r.u64(c.from) || !r.u64(c.to) || !r.fixed(c.acceptor_nonce) ||
      !r.fixed(c.acceptor_mac) || !r.done())
    return errc::malformed;
  return c;
}

result<proof_frame> decode_proof(const frame_view& frame) {
  if (frame.kind != frame_kind::proof) return errc::malformed;
  reader r(frame.body);
  proof_frame p;
  if (!r.fixed(p.dialer_mac) || !r.done()) return errc::malformed;
  return p;
}

}  // namespace raftsync::transport
