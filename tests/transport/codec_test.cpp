// The wire codec: round trips for every message type, and a corpus of malformed frames that must
// each be rejected with an error (never a crash, an assertion or a huge allocation).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "raftsync/transport/codec.hpp"

using namespace raftsync;
using namespace raftsync::transport;

namespace {

std::uint64_t test_seed() {
  if (const char* env = std::getenv("RAFTSYNC_TRANSPORT_SEED"))
    return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s)
    c = static_cast<char>(rng() & 0xff);
  return s;
}

raft::message random_message(std::mt19937_64& rng, raft::message_type type) {
  raft::message m;
  m.type = type;
  m.to = rng();
  m.from = rng();
  m.term = rng();
  m.log_term = rng();
  m.index = rng();
  m.commit = rng();
  m.reject = (rng() & 1) != 0;
  m.reject_hint = rng();
  m.hint_term = rng();
  m.snapshot.index = rng();
  m.snapshot.term = rng();
  for (std::uint64_t i = 0, n = rng() % 5; i < n; ++i)
    m.snapshot.conf.voters.push_back(rng());
  for (std::uint64_t i = 0, n = rng() % 3; i < n; ++i)
    m.snapshot.conf.learners.push_back(rng());
  m.context = random_bytes(rng, rng() % 40);
  for (std::uint64_t i = 0, n = rng() % 6; i < n; ++i) {
    raft::entry e;
    e.term = rng();
    e.index = rng();
    e.type = (rng() & 1) != 0 ? raft::entry_type::normal : raft::entry_type::conf_change;
    e.data = random_bytes(rng, rng() % 300);
    m.entries.push_back(std::move(e));
  }
  return m;
}

const raft::message_type wire_types[] = {
    raft::message_type::propose,           raft::message_type::append,
    raft::message_type::append_response,   raft::message_type::vote,
    raft::message_type::vote_response,     raft::message_type::pre_vote,
    raft::message_type::pre_vote_response, raft::message_type::snapshot,
    raft::message_type::heartbeat,         raft::message_type::heartbeat_response,
    raft::message_type::transfer_leader,   raft::message_type::timeout_now,
    raft::message_type::read_index,        raft::message_type::read_index_response,
};

envelope sample_envelope(std::mt19937_64& rng) {
  envelope e;
  e.from = 1;
  e.to = 2;
  e.body = random_message(rng, raft::message_type::append);
  std::get<raft::message>(e.body).entries.resize(2);
  std::get<raft::message>(e.body).entries[0].data = "hello";
  std::get<raft::message>(e.body).entries[1].data = "world";
  return e;
}

void put_u32_at(std::string& s, std::size_t pos, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    s[pos + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// Offset of the body inside a raft_message frame: header, envelope from/to.
constexpr std::size_t raft_body_offset = frame_header_bytes + 16;
// Offsets inside the raft message body (see docs/transport.md).
constexpr std::size_t voters_count_offset = raft_body_offset + 1 + 8 * 6 + 1 + 8 * 2 + 8 * 2;

}  // namespace

TEST_CASE("every wire message type survives an encode/decode round trip", "[transport][codec]") {
  const auto seed = test_seed();
  INFO("seed " << seed << " (replay: RAFTSYNC_TRANSPORT_SEED=" << seed << ")");
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    for (auto type : wire_types) {
      envelope e;
      e.from = rng();
      e.to = rng();
      e.body = random_message(rng, type);
      const std::string frame = encode_envelope(e);
      REQUIRE(frame.size() == encoded_envelope_size(e));
      auto decoded = decode_envelope_frame(frame);
      REQUIRE(decoded.has_value());
      REQUIRE(*decoded == e);
    }
  }
}

TEST_CASE("default-valued and empty messages round trip", "[transport][codec]") {
  for (auto type : wire_types) {
    envelope e;
    raft::message m;
    m.type = type;
    e.body = m;
    auto decoded = decode_envelope_frame(encode_envelope(e));
    REQUIRE(decoded.has_value());
    REQUIRE(*decoded == e);
  }
}

TEST_CASE("application messages round trip", "[transport][codec]") {
  std::mt19937_64 rng(test_seed());
  for (std::size_t size : {0u, 1u, 255u, 4096u, 100000u}) {
    envelope e{7, 9, app_message{static_cast<std::uint32_t>(rng()), random_bytes(rng, size)}};
    auto decoded = decode_envelope_frame(encode_envelope(e));
    REQUIRE(decoded.has_value());
    REQUIRE(*decoded == e);
  }
}

TEST_CASE("local message types are refused on the wire", "[transport][codec]") {
  for (auto type : {raft::message_type::hup, raft::message_type::beat,
                    raft::message_type::snapshot_status, raft::message_type::unreachable}) {
    envelope e;
    raft::message m;
    m.type = type;
    e.body = m;
    auto decoded = decode_envelope_frame(encode_envelope(e));
    REQUIRE_FALSE(decoded.has_value());
    REQUIRE(decoded.error() == errc::malformed);
  }
}

TEST_CASE("handshake frames round trip and reject wrong sizes", "[transport][codec]") {
  std::mt19937_64 rng(test_seed());
  hello_frame h{rng(), rng(), rng(), {}};
  for (auto& b : h.dialer_nonce)
    b = static_cast<std::uint8_t>(rng());
  challenge_frame c{rng(), rng(), rng(), {}, {}};
  for (auto& b : c.acceptor_nonce)
    b = static_cast<std::uint8_t>(rng());
  for (auto& b : c.acceptor_mac)
    b = static_cast<std::uint8_t>(rng());
  proof_frame p{};
  for (auto& b : p.dialer_mac)
    b = static_cast<std::uint8_t>(rng());

  std::string s;
  encode_hello(h, s);
  encode_challenge(c, s);
  encode_proof(p, s);
  encode_keepalive(s);
  std::string_view rest = s;
  auto next = [&]() {
    auto f = parse_frame(rest, default_max_frame_bytes);
    REQUIRE(f.has_value());
    REQUIRE(f->has_value());
    rest.remove_prefix((*f)->size_bytes);
    return **f;
  };
  auto fh = next();
  REQUIRE(decode_hello(fh).value() == h);
  REQUIRE_FALSE(decode_challenge(fh).has_value());
  auto fc = next();
  REQUIRE(decode_challenge(fc).value() == c);
  auto fp = next();
  REQUIRE(decode_proof(fp).value() == p);
  auto fk = next();
  REQUIRE(fk.kind == frame_kind::keepalive);
  REQUIRE(fk.body.empty());
  REQUIRE(rest.empty());

  // A hello with one byte missing or one byte too many (length adjusted) is malformed.
  for (int delta : {-1, 1}) {
    frame_view shorter = fh;
    std::string body(fh.body);
    if (delta < 0)
      body.pop_back();
    else
      body.push_back('x');
    shorter.body = body;
    REQUIRE(decode_hello(shorter).error() == errc::malformed);
  }
}

TEST_CASE(
    "a frame truncated at every byte is incomplete to the stream parser and malformed to "
    "the decoder",
    "[transport][codec]") {
  std::mt19937_64 rng(test_seed());
  const std::string frame = encode_envelope(sample_envelope(rng));
  for (std::size_t n = 0; n < frame.size(); ++n) {
    std::string_view prefix(frame.data(), n);
    auto parsed = parse_frame(prefix, default_max_frame_bytes);
    REQUIRE(parsed.has_value());
    REQUIRE_FALSE(parsed->has_value());
    auto decoded = decode_envelope_frame(prefix);
    REQUIRE_FALSE(decoded.has_value());
  }
  // The body cut at every byte with the length field rewritten to match: a complete frame
  // whose body is short must be refused by the body decoder.
  for (std::size_t n = frame_header_bytes; n < frame.size(); ++n) {
    std::string cut = frame.substr(0, n);
    put_u32_at(cut, 0, static_cast<std::uint32_t>(n - frame_length_field_bytes));
    auto decoded = decode_envelope_frame(cut);
    REQUIRE_FALSE(decoded.has_value());
    REQUIRE(decoded.error() == errc::malformed);
  }
}

TEST_CASE("inner lengths and counts that point past the end are refused without allocating",
          "[transport][codec]") {
  std::mt19937_64 rng(test_seed());
  envelope e = sample_envelope(rng);
  auto& m = std::get<raft::message>(e.body);
  m.snapshot.conf.voters.clear();
  m.snapshot.conf.learners.clear();
  m.context.clear();
  const std::string frame = encode_envelope(e);
  // Every u32 position that could be a count or length: set it to huge values.
  for (std::uint32_t huge : {0xffffffffu, 0x7fffffffu, 0x10000000u, 1000u}) {
    for (std::size_t pos = raft_body_offset; pos + 4 <= frame.size(); ++pos) {
      std::string bad = frame;
      put_u32_at(bad, pos, huge);
      auto decoded = decode_envelope_frame(bad);  // must return, whichever way
      if (decoded.has_value()) REQUIRE(encode_envelope(*decoded).size() == bad.size());
    }
  }
  // Specifically: voter count far beyond the remaining bytes.
  std::string bad = frame;
  put_u32_at(bad, voters_count_offset, 0x20000000u);
  REQUIRE(decode_envelope_frame(bad).error() == errc::malformed);
  // App payload length past the end.
  std::string app = encode_envelope(envelope{1, 2, app_message{3, "abc"}});
  put_u32_at(app, frame_header_bytes + 16 + 4, 4);
  REQUIRE(decode_envelope_frame(app).error() == errc::malformed);
  put_u32_at(app, frame_header_bytes + 16 + 4, 0xffffffffu);
  REQUIRE(decode_envelope_frame(app).error() == errc::malformed);
}

TEST_CASE("huge, tiny, wrong-version and unknown-kind headers are refused", "[transport][codec]") {
  std::mt19937_64 rng(test_seed());
  const std::string frame = encode_envelope(sample_envelope(rng));

  std::string huge = frame;
  put_u32_at(huge, 0, 0xffffffffu);
  // Refused from the length field alone, before the body could arrive.
  REQUIRE(parse_frame(std::string_view(huge).substr(0, 4), default_max_frame_bytes).error() ==
          errc::too_large);
  REQUIRE(decode_envelope_frame(huge).error() == errc::too_large);
  // A configurable limit: the frame itself is too large for a limit one byte below its size.
  REQUIRE(parse_frame(frame, static_cast<std::uint32_t>(frame.size() - 1)).error() ==
          errc::too_large);
  REQUIRE(parse_frame(frame, static_cast<std::uint32_t>(frame.size())).has_value());

  for (std::uint32_t tiny : {0u, 1u}) {
    std::string t = frame;
    put_u32_at(t, 0, tiny);
    REQUIRE(parse_frame(t, default_max_frame_bytes).error() == errc::malformed);
  }

  for (int version : {0, 2, 255}) {
    std::string v = frame;
    v[4] = static_cast<char>(version);
    REQUIRE(parse_frame(v, default_max_frame_bytes).error() == errc::unsupported_version);
    // Refused as soon as the version byte arrives.
    REQUIRE(parse_frame(std::string_view(v).substr(0, 5), default_max_frame_bytes).error() ==
            errc::unsupported_version);
  }

  for (int kind : {0, 4, 15, 19, 200}) {
    std::string k = frame;
    k[5] = static_cast<char>(kind);
    REQUIRE(parse_frame(k, default_max_frame_bytes).error() == errc::malformed);
  }

  // Kind mismatch: a keepalive frame handed to the envelope decoder.
  std::string keepalive;
  encode_keepalive(keepalive);
  REQUIRE(decode_envelope_frame(keepalive).error() == errc::malformed);

  // Trailing bytes after a valid frame, and trailing bytes inside the body.
  REQUIRE(decode_envelope_frame(frame + "x").error() == errc::malformed);
  std::string padded = frame + "xyz";
  put_u32_at(padded, 0, static_cast<std::uint32_t>(padded.size() - 4));
  REQUIRE(decode_envelope_frame(padded).error() == errc::malformed);
}

TEST_CASE("out-of-range enum and boolean bytes are refused", "[transport][codec]") {
  std::mt19937_64 rng(test_seed());
  envelope e = sample_envelope(rng);
  auto& m = std::get<raft::message>(e.body);
  m.snapshot.conf = {};
  m.context.clear();
  const std::string frame = encode_envelope(e);
  std::string bad_type = frame;
  bad_type[raft_body_offset] = static_cast<char>(18);
  REQUIRE(decode_envelope_frame(bad_type).error() == errc::malformed);
  std::string bad_bool = frame;
  bad_bool[raft_body_offset + 1 + 8 * 6] = 2;
  REQUIRE(decode_envelope_frame(bad_bool).error() == errc::malformed);
  // Entry type byte of the first entry: after the fixed part, two id counts, context, count.
  const std::size_t entries_offset = voters_count_offset + 4 + 4 + 4 + 4;
  std::string bad_entry = frame;
  bad_entry[entries_offset + 16] = 2;
  REQUIRE(decode_envelope_frame(bad_entry).error() == errc::malformed);
}

TEST_CASE("random garbage and random mutations never crash the decoder", "[transport][codec]") {
  const auto seed = test_seed();
  INFO("seed " << seed << " (replay: RAFTSYNC_TRANSPORT_SEED=" << seed << ")");
  std::mt19937_64 rng(seed);
  const std::string frame = encode_envelope(sample_envelope(rng));
  std::size_t decoded_ok = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string input;
    if (i % 2 == 0) {
      input = random_bytes(rng, rng() % 200);
    } else {
      input = frame;
      for (std::uint64_t k = 0, n = 1 + rng() % 4; k < n; ++k)
        input[rng() % input.size()] = static_cast<char>(rng());
    }
    auto parsed = parse_frame(input, 1 << 20);
    if (parsed && parsed->has_value()) {
      auto e = decode_envelope(**parsed);
      if (e) {
        ++decoded_ok;
        // Whatever decodes re-encodes to the same bytes (the format has one encoding).
        REQUIRE(encode_envelope(*e) == input.substr(0, (*parsed)->size_bytes));
      }
      (void)decode_hello(**parsed);
      (void)decode_challenge(**parsed);
      (void)decode_proof(**parsed);
    }
  }
  SUCCEED("decoded " << decoded_ok << " mutated frames");
}
