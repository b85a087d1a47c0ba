// The node's change pipeline, component by component: the backlog of paths to read and the
// tracker of own proposals (flow control, dedupe, retry backoff). No sockets, no clock but the
// one passed in.
#include <chrono>
#include <string>

#include <catch2/catch.hpp>

#include "change_backlog.hpp"
#include "proposal_tracker.hpp"

using raftsync::node::change_backlog;
using raftsync::node::proposal_tracker;
using namespace std::chrono_literals;

TEST_CASE("the backlog reads paths first in, first out, each once", "[node][pipeline]") {
  change_backlog b;
  b.push("dir", true);
  b.push("dir/a", false);
  b.push("dir/b", false);
  b.push("dir/a", false);  // already waiting: keeps its place
  REQUIRE(b.size() == 3);
  CHECK(b.pop()->path == "dir");
  CHECK(b.pop()->path == "dir/a");
  CHECK(b.pop()->path == "dir/b");
  CHECK_FALSE(b.pop());
  // Once read, the same path is a new change again.
  b.push("dir/a", false);
  CHECK(b.size() == 1);
}

TEST_CASE("a path pushed again widens its new-directory scan, never narrows it",
          "[node][pipeline]") {
  change_backlog b;
  b.push("x", false);
  b.push("x", true);
  b.push("y", true);
  b.push("y", false);
  auto x = b.pop();
  auto y = b.pop();
  CHECK(x->scan_new_directories);
  CHECK(y->scan_new_directories);
}

TEST_CASE("backlog tickets tell a flush when every path pushed before it was read",
          "[node][pipeline]") {
  change_backlog b;
  b.push("a", true);
  b.push("b", true);
  const std::uint64_t mark = b.pushed();  // a flush called now
  b.push("a", true);                      // already waiting: no new ticket
  b.push("c", true);
  CHECK(b.read_through() < mark);
  (void)b.pop();
  CHECK(b.read_through() < mark);
  (void)b.pop();
  CHECK(b.read_through() >= mark);  // "a" and "b" read: the flush may look at proposals
  CHECK(b.size() == 1);
}

TEST_CASE("the proposal window bounds what is in flight by count and by bytes",
          "[node][pipeline]") {
  proposal_tracker::limits l;
  l.count_max = 3;
  l.bytes_max = 100;
  proposal_tracker t(l);
  const auto now = proposal_tracker::clock_type::now();
  CHECK(t.has_room());
  t.add(1, std::string(10, 'x'), "a", "fa", now);
  t.add(2, std::string(10, 'x'), "b", "fb", now);
  CHECK(t.has_room());
  t.add(3, std::string(10, 'x'), "c", "fc", now);
  CHECK_FALSE(t.has_room());  // count
  t.erase(2);
  CHECK(t.has_room());
  t.add(4, std::string(95, 'x'), "d", "fd", now);
  CHECK(t.bytes() == 115);
  CHECK_FALSE(t.has_room());  // bytes
  t.erase(4);
  t.erase(1);
  t.erase(3);
  CHECK(t.empty());
  CHECK(t.bytes() == 0);
  // A proposal larger than the whole byte budget still goes when nothing else is in flight.
  CHECK(t.has_room());
  t.add(5, std::string(1000, 'x'), "big", "fbig", now);
  CHECK_FALSE(t.has_room());
  CHECK(t.oldest() == 5);
}

TEST_CASE("an equal command for a path already pending is a duplicate; a different one is not",
          "[node][pipeline]") {
  proposal_tracker t;
  const auto now = proposal_tracker::clock_type::now();
  t.add(7, "cmd", "a.txt", "write a.txt v1", now);
  CHECK(t.duplicate("a.txt", "write a.txt v1"));
  CHECK_FALSE(t.duplicate("a.txt", "write a.txt v2"));
  CHECK_FALSE(t.duplicate("b.txt", "write a.txt v1"));
  // Upload pieces (no fingerprint) are never deduplicated and do not hide the path's command.
  t.add(8, "chunk", "a.txt", "", now);
  CHECK(t.duplicate("a.txt", "write a.txt v1"));
  t.erase(7);
  CHECK_FALSE(t.duplicate("a.txt", "write a.txt v1"));
}

TEST_CASE("a proposal not applied is retried with a doubling backoff, capped", "[node][pipeline]") {
  proposal_tracker::limits l;
  l.retry_first = 1s;
  l.retry_max = 4s;
  proposal_tracker t(l);
  const auto t0 = proposal_tracker::clock_type::now();
  t.add(1, "cmd", "a", "fa", t0);
  CHECK(t.due(t0 + 999ms).empty());
  // Retries at +1 s, then +2 s after that, then +4 s, then every 4 s (the cap).
  auto at = t0 + 1s;
  for (auto gap : {2s, 4s, 4s, 4s}) {
    auto due = t.due(at);
    REQUIRE(due.size() == 1);
    t.reproposed(*due.front(), at);
    CHECK(t.due(at + gap - 1ms).empty());
    at += gap;
  }
  CHECK(t.due(at).size() == 1);
}

TEST_CASE("a thousand slow proposals do not grow the log by a thousand entries every second",
          "[node][pipeline]") {
  // Issue 13: with a fixed 1 s retry, 2,631 proposals stuck behind a busy leader were appended
  // again every second (the log grew by 300-400 entries/s with no user change). With backoff the
  // re-proposals over a minute are bounded by the number of doublings, not by the minute.
  proposal_tracker t;
  const auto t0 = proposal_tracker::clock_type::now();
  for (std::uint64_t s = 1; s <= 1000; ++s)
    t.add(s, "cmd", "f" + std::to_string(s), "fp" + std::to_string(s), t0);
  std::size_t reproposals = 0;
  for (auto now = t0; now <= t0 + 60s; now += 100ms) {
    for (auto* p : t.due(now)) {
      t.reproposed(*p, now);
      ++reproposals;
    }
  }
  // At 1 s, 3 s, 7 s, 15 s and 31 s (the next at 61 s): 5 retries each, where a fixed 1 s retry
  // made 60.
  CHECK(reproposals == 5 * 1000);
}

TEST_CASE("a leader change re-proposes everything and restarts the backoff", "[node][pipeline]") {
  proposal_tracker t;
  const auto t0 = proposal_tracker::clock_type::now();
  t.add(1, "cmd", "a", "fa", t0);
  t.add(2, "cmd", "b", "fb", t0);
  for (auto at = t0 + 1s; at < t0 + 20s; at += 1s) {
    for (auto* p : t.due(at))
      t.reproposed(*p, at);
  }
  const auto change = t0 + 20s;
  auto all = t.all();
  REQUIRE(all.size() == 2);
  CHECK(all[0]->sequence == 1);
  for (auto* p : all)
    t.reproposed(*p, change);
  CHECK(t.due(change + 999ms).empty());
  CHECK(t.due(change + 1s).size() == 2);  // back to the first interval
}
