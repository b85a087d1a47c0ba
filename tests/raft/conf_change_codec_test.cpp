// The conf_change codec bounds-checks everything it decodes.
#include <catch2/catch.hpp>

#include "raftsync/raft/conf_change.hpp"

using namespace raftsync::raft;

TEST_CASE("a conf_change survives an encode/decode round trip", "[raft][codec]") {
  for (auto type : {conf_change_type::add_node, conf_change_type::remove_node,
                    conf_change_type::add_learner_node}) {
    const conf_change cc{type, 0x0102030405060708ull, bytes("addr\0with nul", 13)};
    auto decoded = decode_conf_change(encode_conf_change(cc));
    REQUIRE(decoded);
    CHECK(*decoded == cc);
  }
  const conf_change empty_context{conf_change_type::add_node, 7, {}};
  CHECK(*decode_conf_change(encode_conf_change(empty_context)) == empty_context);
}

TEST_CASE("every truncation of an encoded conf_change is rejected as malformed", "[raft][codec]") {
  const bytes data = encode_conf_change({conf_change_type::add_node, 9, "context"});
  for (std::size_t n = 0; n < data.size(); ++n) {
    auto decoded = decode_conf_change(std::string_view(data).substr(0, n));
    CHECK_FALSE(decoded);
  }
}

TEST_CASE("trailing bytes, bad versions, bad types and node 0 are rejected", "[raft][codec]") {
  bytes data = encode_conf_change({conf_change_type::remove_node, 3, "x"});
  CHECK_FALSE(decode_conf_change(data + "y"));
  bytes bad_version = data;
  bad_version[0] = 2;
  CHECK(decode_conf_change(bad_version).error() == raftsync::errc::unsupported_version);
  bytes bad_type = data;
  bad_type[1] = 3;
  CHECK(decode_conf_change(bad_type).error() == raftsync::errc::malformed);
  const bytes node0 = encode_conf_change({conf_change_type::add_node, no_node, {}});
  CHECK(decode_conf_change(node0).error() == raftsync::errc::malformed);
  // A context length larger than the data (no huge allocation, just an error).
  bytes huge = data;
  huge[10] = huge[11] = huge[12] = huge[13] = static_cast<char>(0xff);
  CHECK(decode_conf_change(huge).error() == raftsync::errc::malformed);
}
