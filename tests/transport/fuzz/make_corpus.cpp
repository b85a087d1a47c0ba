// Writes the seed corpus for frame_fuzzer into the directory given as argv[1]: one file per
// message type, app messages, handshake frames, a keepalive and a few malformed frames.
// Run by scripts/fuzz.sh --regen-corpus; the output is committed in tests/transport/fuzz/corpus/.
#include <cstdio>
#include <fstream>
#include <string>

#include "raftsync/transport/codec.hpp"

using namespace raftsync;
using namespace raftsync::transport;

namespace {
void write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (int t = 2; t <= 15; ++t) {
    raft::message m;
    m.type = static_cast<raft::message_type>(t);
    m.from = 1;
    m.to = 2;
    m.term = 7;
    m.log_term = 6;
    m.index = 41;
    m.commit = 40;
    m.reject = t % 2 == 0;
    m.reject_hint = 39;
    m.hint_term = 5;
    if (m.type == raft::message_type::snapshot) {
      m.snapshot.index = 30;
      m.snapshot.term = 4;
      m.snapshot.conf.voters = {1, 2, 3};
      m.snapshot.conf.learners = {4};
    }
    if (m.type == raft::message_type::heartbeat || m.type == raft::message_type::read_index)
      m.context = "ctx";
    if (m.type == raft::message_type::append || m.type == raft::message_type::propose) {
      m.entries.push_back(raft::entry{7, 42, raft::entry_type::normal, "hello"});
      m.entries.push_back(raft::entry{7, 43, raft::entry_type::conf_change, std::string(3, '\1')});
    }
    write(dir, "raft-" + std::to_string(t), encode_envelope(envelope{1, 2, m}));
  }
  write(dir, "app-empty", encode_envelope(envelope{3, 1, app_message{0, ""}}));
  write(dir, "app-data", encode_envelope(envelope{3, 1, app_message{9, std::string(300, 'd')}}));
  std::string s;
  hello_frame h{0x5eed, 1, 2, {}};
  h.dialer_nonce.fill(0xab);
  encode_hello(h, s);
  write(dir, "hello", s);
  s.clear();
  challenge_frame c{0x5eed, 2, 1, {}, {}};
  c.acceptor_nonce.fill(0xcd);
  c.acceptor_mac.fill(0xef);
  encode_challenge(c, s);
  write(dir, "challenge", s);
  s.clear();
  proof_frame p{};
  p.dialer_mac.fill(0x12);
  encode_proof(p, s);
  write(dir, "proof", s);
  s.clear();
  encode_keepalive(s);
  write(dir, "keepalive", s);
  // A stream of several frames, and a few malformed ones.
  std::string stream = s + encode_envelope(envelope{1, 2, app_message{1, "x"}}) + s;
  write(dir, "stream", stream);
  write(dir, "bad-huge-length", std::string("\xff\xff\xff\xff\x01\x01", 6));
  write(dir, "bad-version", std::string("\x02\x00\x00\x00\x09\x03", 6));
  write(dir, "bad-kind", std::string("\x02\x00\x00\x00\x01\x63", 6));
  return 0;
}
