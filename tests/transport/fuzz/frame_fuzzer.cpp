// libFuzzer target for the wire codec: the input is treated as a byte stream arriving on a
// connection. Frames are cut from it exactly as tcp_transport does (parse_frame with a maximum),
// each frame is handed to every body decoder, and whatever decodes must re-encode to the same
// bytes. Built and run by scripts/fuzz.sh (clang-14, -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "raftsync/transport/codec.hpp"

using namespace raftsync::transport;

namespace {
void check(bool condition) {
  if (!condition) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view stream(reinterpret_cast<const char*>(data), size);
  // A small maximum so oversized-frame paths are exercised too.
  constexpr std::uint32_t max_frame = 1 << 16;
  while (!stream.empty()) {
    auto parsed = parse_frame(stream, max_frame);
    if (!parsed || !parsed->has_value()) break;
    const frame_view frame = **parsed;
    check(frame.size_bytes >= frame_header_bytes && frame.size_bytes <= stream.size());
    const std::string_view whole = stream.substr(0, frame.size_bytes);
    if (auto e = decode_envelope(frame)) {
      check(encode_envelope(*e) == whole);
      check(encoded_envelope_size(*e) == whole.size());
    }
    if (auto h = decode_hello(frame)) {
      std::string out;
      encode_hello(*h, out);
      check(out == whole);
    }
    if (auto c = decode_challenge(frame)) {
      std::string out;
      encode_challenge(*c, out);
      check(out == whole);
    }
    if (auto p = decode_proof(frame)) {
      std::string out;
      encode_proof(*p, out);
      check(out == whole);
    }
    stream.remove_prefix(frame.size_bytes);
  }
  // The whole input as one frame (decode_envelope_frame's exact-size rules).
  (void)decode_envelope_frame(std::string_view(reinterpret_cast<const char*>(data), size),
                              max_frame);
  return 0;
}
