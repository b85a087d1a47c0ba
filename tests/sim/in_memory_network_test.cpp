// Tests of the seeded in-memory network (include/raftsync/transport/in_memory_network.hpp).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "raftsync/transport/in_memory_network.hpp"

using raftsync::raft::node_id;
using raftsync::transport::app_message;
using raftsync::transport::envelope;
using raftsync::transport::in_memory_network;
using raftsync::transport::link_settings;

namespace {

struct received {
  node_id from;
  node_id to;
  std::string payload;
  std::uint64_t at_us;
};

// Registers a recording handler on each of the given nodes.
struct recorder {
  in_memory_network& net;
  std::vector<received> log;

  explicit recorder(in_memory_network& n, std::vector<node_id> ids) : net(n) {
    for (node_id id : ids) {
      net.endpoint(id).set_receive_handler([this, id](envelope e) {
        REQUIRE(e.to == id);
        log.push_back({e.from, e.to, std::get<app_message>(e.body).payload, net.now_us()});
      });
    }
  }
};

envelope app(node_id to, std::string payload) {
  return envelope{raftsync::raft::no_node, to, app_message{7, std::move(payload)}};
}

std::vector<std::string> payloads(const std::vector<received>& log) {
  std::vector<std::string> out;
  for (const auto& r : log)
    out.push_back(r.payload);
  return out;
}

}  // namespace

TEST_CASE("a perfect link delivers every message in order with zero delay", "[sim]") {
  in_memory_network net(1);
  recorder rec(net, {1, 2});
  for (int i = 0; i < 10; ++i)
    net.endpoint(1).send(app(2, std::to_string(i)));
  CHECK(net.in_flight() == 10);
  CHECK(net.deliver_until(0) == 10);
  REQUIRE(rec.log.size() == 10);
  for (int i = 0; i < 10; ++i) {
    CHECK(rec.log[i].payload == std::to_string(i));
    CHECK(rec.log[i].from == 1);
  }
  CHECK(net.counters().sent == 10);
  CHECK(net.counters().delivered == 10);
}

TEST_CASE("the sender's endpoint sets the envelope's from", "[sim]") {
  in_memory_network net(1);
  recorder rec(net, {1, 2});
  net.endpoint(2).send(envelope{99, 1, app_message{1, "x"}});
  net.deliver_all();
  REQUIRE(rec.log.size() == 1);
  CHECK(rec.log[0].from == 2);
}

TEST_CASE("messages are delivered at their due virtual time and not before", "[sim]") {
  in_memory_network net(3);
  net.set_default_link({.delay_min_us = 100, .delay_max_us = 100});
  recorder rec(net, {1, 2});
  net.endpoint(1).send(app(2, "a"));
  CHECK(net.deliver_until(99) == 0);
  CHECK(net.now_us() == 99);
  CHECK(net.next_due_us() == 100);
  CHECK(net.deliver_until(100) == 1);
  REQUIRE(rec.log.size() == 1);
  CHECK(rec.log[0].at_us == 100);
}

TEST_CASE("step advances the clock to the next due message", "[sim]") {
  in_memory_network net(3);
  net.set_default_link({.delay_min_us = 50, .delay_max_us = 50});
  recorder rec(net, {1, 2});
  net.endpoint(1).send(app(2, "a"));
  CHECK(net.step());
  CHECK(net.now_us() == 50);
  CHECK(!net.step());
  CHECK(rec.log.size() == 1);
}

TEST_CASE("the same seed gives the same deliveries; another seed differs", "[sim]") {
  auto run = [](std::uint64_t seed) {
    in_memory_network net(seed);
    net.set_default_link({.drop_probability = 0.2,
                          .delay_min_us = 0,
                          .delay_max_us = 1000,
                          .reorder = true,
                          .duplicate_probability = 0.2});
    recorder rec(net, {1, 2, 3});
    for (int i = 0; i < 200; ++i) {
      net.endpoint(1 + i % 3).send(app(1 + (i + 1) % 3, std::to_string(i)));
      net.deliver_until(net.now_us() + 10);
    }
    net.deliver_all();
    std::vector<std::pair<std::string, std::uint64_t>> out;
    for (const auto& r : rec.log)
      out.emplace_back(r.payload, r.at_us);
    return out;
  };
  CHECK(run(42) == run(42));
  CHECK(run(42) != run(43));
}

TEST_CASE("drop probability loses about that share of messages", "[sim]") {
  in_memory_network net(5);
  net.set_default_link({.drop_probability = 0.3});
  recorder rec(net, {1, 2});
  for (int i = 0; i < 10000; ++i)
    net.endpoint(1).send(app(2, ""));
  net.deliver_all();
  const auto& c = net.counters();
  CHECK(c.dropped_random + c.delivered == 10000);
  CHECK(c.dropped_random > 2700);
  CHECK(c.dropped_random < 3300);
}

TEST_CASE("duplicate probability delivers some messages twice", "[sim]") {
  in_memory_network net(6);
  net.set_default_link({.duplicate_probability = 0.5});
  recorder rec(net, {1, 2});
  for (int i = 0; i < 1000; ++i)
    net.endpoint(1).send(app(2, std::to_string(i)));
  net.deliver_all();
  const auto& c = net.counters();
  CHECK(c.duplicated > 400);
  CHECK(c.duplicated < 600);
  CHECK(c.delivered == 1000 + c.duplicated);
}

TEST_CASE("a FIFO link with random delays never reorders; a reordering link does", "[sim]") {
  for (bool reorder : {false, true}) {
    in_memory_network net(7);
    net.set_default_link({.delay_min_us = 0, .delay_max_us = 500, .reorder = reorder});
    recorder rec(net, {1, 2});
    for (int i = 0; i < 300; ++i) {
      net.endpoint(1).send(app(2, std::to_string(i)));
      net.deliver_until(net.now_us() + 3);
    }
    net.deliver_all();
    REQUIRE(rec.log.size() == 300);
    bool in_order = true;
    for (int i = 0; i < 300; ++i)
      in_order = in_order && rec.log[i].payload == std::to_string(i);
    if (reorder) {
      CHECK(!in_order);
      CHECK(net.counters().reordered > 0);
    } else {
      CHECK(in_order);
      CHECK(net.counters().reordered == 0);
    }
  }
}

TEST_CASE("per-link settings override the default in one direction only", "[sim]") {
  in_memory_network net(8);
  net.set_link(1, 2, {.drop_probability = 1.0});
  recorder rec(net, {1, 2});
  net.endpoint(1).send(app(2, "lost"));
  net.endpoint(2).send(app(1, "kept"));
  net.deliver_all();
  CHECK(payloads(rec.log) == std::vector<std::string>{"kept"});
  net.clear_link_settings();
  net.endpoint(1).send(app(2, "now kept"));
  net.deliver_all();
  CHECK(rec.log.back().payload == "now kept");
}

TEST_CASE("a partition cuts links between groups, including messages in flight, until healed",
          "[sim]") {
  in_memory_network net(9);
  net.set_default_link({.delay_min_us = 10, .delay_max_us = 10});
  recorder rec(net, {1, 2, 3});
  net.endpoint(1).send(app(3, "in flight"));
  net.partition({{1, 2}, {3}});
  CHECK(net.connected(1, 2));
  CHECK(!net.connected(1, 3));
  net.endpoint(1).send(app(2, "same group"));
  net.endpoint(3).send(app(1, "across"));
  net.deliver_all();
  CHECK(payloads(rec.log) == std::vector<std::string>{"same group"});
  CHECK(net.counters().dropped_partition == 2);
  net.heal();
  net.endpoint(3).send(app(1, "healed"));
  net.deliver_all();
  CHECK(rec.log.back().payload == "healed");
}

TEST_CASE("isolate cuts one node from all others; unlisted nodes of a partition are alone",
          "[sim]") {
  in_memory_network net(10);
  recorder rec(net, {1, 2, 3, 4});
  net.isolate(2);
  CHECK(!net.connected(1, 2));
  CHECK(!net.connected(2, 3));
  CHECK(net.connected(1, 3));
  net.heal();
  net.partition({{1, 2}});
  CHECK(net.connected(1, 2));
  CHECK(!net.connected(3, 4));
  CHECK(!net.connected(1, 3));
}

TEST_CASE("a down node neither sends nor receives and loses what was in flight to it", "[sim]") {
  in_memory_network net(11);
  net.set_default_link({.delay_min_us = 5, .delay_max_us = 5});
  recorder rec(net, {1, 2});
  net.endpoint(1).send(app(2, "in flight"));
  net.set_node_down(2, true);
  net.endpoint(2).send(app(1, "from down"));
  net.deliver_all();
  CHECK(rec.log.empty());
  CHECK(net.counters().dropped_node_down == 2);
  net.set_node_down(2, false);
  net.endpoint(1).send(app(2, "up again"));
  net.deliver_all();
  CHECK(payloads(rec.log) == std::vector<std::string>{"up again"});
}

TEST_CASE("a full link queue drops and counts", "[sim]") {
  in_memory_network net(12);
  net.set_default_link({.delay_min_us = 1, .delay_max_us = 1, .queue_limit = 3});
  recorder rec(net, {1, 2});
  for (int i = 0; i < 5; ++i)
    net.endpoint(1).send(app(2, std::to_string(i)));
  CHECK(net.counters().dropped_queue_full == 2);
  net.deliver_all();
  CHECK(payloads(rec.log) == std::vector<std::string>{"0", "1", "2"});
  net.endpoint(1).send(app(2, "room again"));
  net.deliver_all();
  CHECK(rec.log.back().payload == "room again");
}

TEST_CASE("handlers may send during delivery; zero-delay replies arrive in the same call",
          "[sim]") {
  in_memory_network net(13);
  int pongs = 0;
  net.endpoint(1).set_receive_handler([&](envelope) { ++pongs; });
  net.endpoint(2).set_receive_handler([&](envelope e) {
    net.endpoint(2).send(envelope{2, e.from, app_message{1, "pong"}});
  });
  net.endpoint(1).send(app(2, "ping"));
  CHECK(net.deliver_until(0) == 2);
  CHECK(pongs == 1);
}

TEST_CASE("messages to a node without a handler are counted as dropped", "[sim]") {
  in_memory_network net(14);
  net.endpoint(1);
  net.endpoint(1).send(app(5, "nobody"));
  net.deliver_all();
  CHECK(net.counters().dropped_no_handler == 1);
}

TEST_CASE("raft messages travel unchanged", "[sim]") {
  in_memory_network net(15);
  raftsync::raft::message m;
  m.type = raftsync::raft::message_type::append;
  m.to = 2;
  m.from = 1;
  m.term = 3;
  m.entries.push_back({3, 7, raftsync::raft::entry_type::normal, "data"});
  std::vector<envelope> got;
  net.endpoint(2).set_receive_handler([&](envelope e) { got.push_back(std::move(e)); });
  net.endpoint(1).send(envelope{1, 2, m});
  net.deliver_all();
  REQUIRE(got.size() == 1);
  CHECK(std::get<raftsync::raft::message>(got[0].body) == m);
}
