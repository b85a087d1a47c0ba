// TLS: certificates from a CA generated at test time (openssl CLI, temp dir). Nodes with
// certificates from the cluster CA talk; a node whose certificate another CA signed is refused.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "test_support.hpp"

using namespace raftsync;
using namespace raftsync::transport;
using namespace raftsync::transport::test;

namespace {

namespace fs = std::filesystem;

int run(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

// A temp dir with ca.pem / rogue-ca.pem and node certificates; removed at scope exit.
struct pki {
  fs::path dir;

  pki() {
    dir = fs::temp_directory_path() /
          ("raftsync-tls-" + std::to_string(std::random_device{}()) + "-" +
           std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir);
    make_ca("ca");
    make_ca("rogue-ca");
  }
  ~pki() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string p(const std::string& name) const { return (dir / name).string(); }

  void make_ca(const std::string& name) {
    REQUIRE(run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout " +
                p(name + ".key") + " -out " + p(name + ".pem") + " -days 1 -subj /CN=" + name) ==
            0);
  }
  void make_node(const std::string& name, const std::string& ca) {
    REQUIRE(run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
                p(name + ".key") + " -out " + p(name + ".csr") + " -subj /CN=" + name) == 0);
    REQUIRE(run("openssl x509 -req -in " + p(name + ".csr") + " -CA " + p(ca + ".pem") +
                " -CAkey " + p(ca + ".key") + " -CAcreateserial -out " + p(name + ".pem") +
                " -days 1") == 0);
  }
  tls_config tls_for(const std::string& name) const {
    return tls_config{true, p("ca.pem"), p(name + ".pem"), p(name + ".key")};
  }
};

}  // namespace

TEST_CASE("nodes with certificates from the cluster CA talk over TLS", "[transport][tls]") {
  if (run("openssl version") != 0) {
    WARN("openssl CLI not found; TLS test skipped");
    return;
  }
  pki certs;
  certs.make_node("node1", "ca");
  certs.make_node("node2", "ca");
  certs.make_node("node3", "ca");
  certs.make_node("intruder", "rogue-ca");

  auto c2 = base_config(2);
  c2.tls = certs.tls_for("node2");
  test_node n2;
  n2.start(c2);
  auto c3 = base_config(3);
  c3.tls = certs.tls_for("node3");
  c3.peers[2] = {"127.0.0.1", n2.port()};  // (3 never dials 2; listed for completeness)
  test_node n3;
  n3.start(c3);
  auto c1 = base_config(1);
  c1.tls = certs.tls_for("node1");
  c1.peers[2] = {"127.0.0.1", n2.port()};
  c1.peers[3] = {"127.0.0.1", n3.port()};
  test_node n1;
  n1.start(c1);
  n2.transport->add_peer(3, {"127.0.0.1", n3.port()});

  const std::string big(2 << 20, 'b');
  for (int i = 0; i < 50; ++i) {
    n1.transport->send(app(1, 2, std::to_string(i)));
    n2.transport->send(app(2, 3, std::to_string(i)));
    n3.transport->send(app(3, 1, std::to_string(i)));
  }
  n1.transport->send(app(1, 3, big));
  REQUIRE(wait_until([&] { return n2.count() == 50 && n3.count() == 51 && n1.count() == 50; }));
  {
    std::lock_guard lock(n3.mu);
    bool found = false;
    for (const auto& e : n3.received)
      found |= std::get<app_message>(e.body).payload == big;
    REQUIRE(found);
  }

  SECTION("a certificate from another CA is refused, even with the cluster secret") {
    auto ci = base_config(1);
    ci.tls =
        tls_config{true, certs.p("rogue-ca.pem"), certs.p("intruder.pem"), certs.p("intruder.key")};
    ci.peers[2] = {"127.0.0.1", n2.port()};
    const auto before = n2.transport->metrics().handshake_failures;
    test_node intruder;
    intruder.start(ci);
    intruder.transport->send(app(1, 2, "let me in"));
    REQUIRE(wait_until([&] { return n2.transport->metrics().handshake_failures > before; }));
    REQUIRE_FALSE(intruder.peer(2).connected);
    n1.transport->send(app(1, 2, "still fine"));
    REQUIRE(wait_until([&] { return n2.count() == 51; }));
    std::lock_guard lock(n2.mu);
    for (const auto& e : n2.received)
      REQUIRE(std::get<app_message>(e.body).payload != "let me in");
  }

  SECTION("a plaintext client is refused by a TLS node") {
    raw_client plain;
    REQUIRE(plain.connect(n2.port()));
    hello_frame h{test_cluster, 1, 2, {}};
    std::string hello;
    encode_hello(h, hello);
    plain.write(hello);
    REQUIRE(plain.closed_by_peer());
  }
}

TEST_CASE("TLS setup errors are reported by create()", "[transport][tls]") {
  auto c = base_config(1);
  c.tls = tls_config{true, "/nonexistent/ca.pem", "/nonexistent/cert.pem", "/nonexistent/key"};
  auto t = tcp_transport::create(c);
  REQUIRE_FALSE(t.has_value());
}
