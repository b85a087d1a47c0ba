// Large files whose chunk bytes travel beside the log (chunk_ref commands): every node writes a
// chunk once (stage_chunk), the log carries only references, a node that missed the push fetches
// the bytes from a peer before the commit applies, and a chunk nobody has any more leaves the
// path missing instead of blocking the node.
#include <catch2/catch.hpp>

#include "folder_test_util.hpp"

using namespace raftsync;
using namespace raftsync::folder;
using namespace raftsync::folder::test;

namespace {

constexpr std::uint64_t chunk = 4096;

std::string pattern(std::size_t size, char seed) {
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    out[i] = static_cast<char>(seed + static_cast<char>((i * 7 + i / 13) % 251));
  return out;
}

// The proposer's side of an upload: every chunk is staged on the nodes in `push_to` (the proposer
// among them, as the facade does) and becomes a chunk_ref; the commit follows.
std::vector<command> push_upload(node& proposer, const std::string& path,
                                 const std::vector<node*>& push_to) {
  auto plan = proposer.reader->read_change(path);
  REQUIRE(plan.has_value());
  REQUIRE(plan->upload.has_value());
  std::vector<command> out;
  for (command& c : node::flatten(std::move(*plan))) {
    if (c.kind == command_kind::chunk) {
      for (node* n : push_to)
        REQUIRE_FALSE(
            n->sm->stage_chunk(c.origin, c.upload_id, c.chunk_index, c.sha256, c.content));
      c.kind = command_kind::chunk_ref;
      c.size_bytes = c.content.size();
      c.content.clear();
    }
    out.push_back(std::move(c));
  }
  return out;
}

// Applies the log on `n`, serving every awaited chunk from `server` (the facade's fetch).
std::vector<apply_result> catch_up_fetching(replicated_log& log, node& n, node& server,
                                            std::size_t* fetches) {
  std::vector<apply_result> out;
  for (std::uint64_t i = n.sm->applied_index() + 1; i <= log.entries.size(); ++i) {
    apply_result r = n.sm->apply(i, log.entries[i - 1]);
    while (r.status == apply_status::awaiting_content) {
      REQUIRE_FALSE(r.wanted.empty());
      for (const content_wanted& w : r.wanted) {
        auto bytes = server.sm->read_chunk(w.origin, w.upload_id, w.chunk_index, w.size_bytes,
                                           w.sha256, w.path);
        REQUIRE(bytes.has_value());
        REQUIRE_FALSE(n.sm->stage_chunk(w.origin, w.upload_id, w.chunk_index, w.sha256, *bytes));
        ++*fetches;
      }
      r = n.sm->apply(i, log.entries[i - 1]);
    }
    REQUIRE(r.status != apply_status::failed);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

TEST_CASE("chunk_ref commands round-trip and carry no bytes", "[folder][chunks][codec]") {
  command c = make(command_kind::chunk_ref, 3, 9, "big.bin", 4);
  c.upload_id = 77;
  c.chunk_index = 12;
  c.size_bytes = 1 << 20;
  c.sha256 = sha256("x");
  std::string bytes = encode_command(c);
  CHECK(bytes.size() < 200);
  auto back = decode_command(bytes);
  REQUIRE(back.has_value());
  CHECK(*back == c);
  // The header alone, as the facade reads it on hot paths.
  auto header = peek_command(bytes);
  REQUIRE(header.has_value());
  CHECK(header->kind == command_kind::chunk_ref);
  CHECK(header->origin == 3);
  CHECK(peek_command(bytes.substr(0, 5)).error() == make_error_code(errc::malformed));
  c.size_bytes = 0;
  CHECK(decode_command(encode_command(c)).error() == make_error_code(errc::malformed));
  c.size_bytes = (std::uint64_t{64} << 20) + 1;
  CHECK(decode_command(encode_command(c)).error() == make_error_code(errc::malformed));
}

TEST_CASE("a large file travels beside the log and a node that missed the push fetches it",
          "[folder][chunks]") {
  node a(1, chunk);
  node b(2, chunk);
  node c(3, chunk);  // down during the push
  const std::string big = pattern(40 * chunk + 17, 'q');
  a.io->user_write("big.bin", big);
  replicated_log log;
  std::vector<command> commands = push_upload(a, "big.bin", {&a, &b});
  for (const command& cmd : commands) {
    if (cmd.kind == command_kind::chunk_ref) CHECK(encode_command(cmd).size() < 200);
    log.append(cmd);
  }

  std::size_t fetches = 0;
  for (node* n : {&a, &b}) {
    for (const auto& r : catch_up_fetching(log, *n, a, &fetches)) {
      INFO(r.reason);
      CHECK(r.status == apply_status::applied);
      // Only the commit puts the file in place (what on_applied callbacks report).
      CHECK(r.changed_tree() == (r.kind == command_kind::commit));
    }
  }
  CHECK(fetches == 0);  // both held every chunk already
  CHECK(b.io->content("big.bin") == big);
  CHECK(a.io->content("big.bin") == big);

  // c applies the refs without the bytes, then its commit waits for each chunk in turn and is
  // served by b — which has committed the upload, so it serves from the file itself.
  for (const auto& r : catch_up_fetching(log, c, b, &fetches)) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK(fetches == 41);
  CHECK(c.io->content("big.bin") == big);
  CHECK(c.sm->missing_paths().empty());
  CHECK(c.sm->encode_replicated_state() == b.sm->encode_replicated_state());
}

TEST_CASE("a committed chunk that no member has any more leaves the path missing, not stuck",
          "[folder][chunks]") {
  node a(1, chunk);
  node c(3, chunk);
  const std::string big = pattern(5 * chunk, 'z');
  a.io->user_write("big.bin", big);
  replicated_log log;
  log.append(push_upload(a, "big.bin", {&a}));
  std::uint64_t i = 1;
  apply_result r;
  for (; i <= log.entries.size(); ++i) {
    r = c.sm->apply(i, log.entries[i - 1]);
    if (r.status == apply_status::awaiting_content) break;
    REQUIRE(r.status == apply_status::applied);
  }
  REQUIRE(r.status == apply_status::awaiting_content);
  CHECK(c.sm->applied_index() == i - 1);  // nothing recorded while it waits
  REQUIRE(r.wanted.size() == 5);          // every chunk it lacks, named at once
  for (const content_wanted& w : r.wanted)
    c.sm->mark_unavailable(w.origin, w.upload_id, w.chunk_index);
  r = c.sm->apply(i, log.entries[i - 1]);
  REQUIRE(r.status == apply_status::applied);
  CHECK(r.needs_snapshot);
  CHECK(c.sm->missing_paths().count("big.bin") == 1);
  CHECK_FALSE(c.io->exists("big.bin"));
  REQUIRE(c.sm->committed().find("big.bin") != nullptr);
  CHECK(c.sm->committed().find("big.bin")->sha256 == sha256(big));
}

TEST_CASE("staged chunks are verified again after a restart", "[folder][chunks][restart]") {
  node a(1, chunk);
  node b(2, chunk);
  const std::string big = pattern(6 * chunk, 'r');
  a.io->user_write("big.bin", big);
  replicated_log log;
  std::vector<command> commands = push_upload(a, "big.bin", {&a, &b});
  log.append(commands);
  // b applies every chunk_ref, persists, restarts (its memory of verified chunks is gone), and a
  // staged chunk is damaged on its disk meanwhile.
  for (std::uint64_t i = 1; i < log.entries.size(); ++i)
    REQUIRE(b.sm->apply(i, log.entries[i - 1]).status == apply_status::applied);
  REQUIRE_FALSE(b.sm->persist());
  b.restart(chunk);
  const std::string staging = upload_staging_path(1, commands.front().upload_id);
  REQUIRE(b.io->exists(staging));
  REQUIRE_FALSE(b.io->write_at(staging, 2 * chunk + 5, "X"));
  apply_result r = b.sm->apply(log.entries.size(), log.entries.back());
  REQUIRE(r.status == apply_status::awaiting_content);  // never commits damaged bytes
  REQUIRE(r.wanted.size() == 1);
  CHECK(r.wanted.front().chunk_index == 2);
  std::size_t fetches = 0;
  catch_up_fetching(log, b, a, &fetches);
  CHECK(fetches == 1);
  CHECK(b.io->content("big.bin") == big);
}

TEST_CASE("stage_chunk refuses bad sizes and a different chunk over a recorded one",
          "[folder][chunks]") {
  node a(1, chunk);
  node b(2, chunk);
  const std::string big = pattern(3 * chunk, 's');
  a.io->user_write("big.bin", big);
  replicated_log log;
  std::vector<command> commands = push_upload(a, "big.bin", {&a, &b});
  log.append(commands);
  REQUIRE(b.sm->apply(1, log.entries[0]).status == apply_status::applied);
  const command& first = commands.front();
  const std::string other = pattern(chunk, 't');
  CHECK(b.sm->stage_chunk(1, first.upload_id, first.chunk_index, sha256(other), other) ==
        make_error_code(errc::conflict));
  CHECK(b.sm->stage_chunk(1, 5, 0, sha256(""), "") == make_error_code(errc::malformed));
  const std::string too_big(chunk + 1, 'x');
  CHECK(b.sm->stage_chunk(1, 5, 0, sha256(too_big), too_big) == make_error_code(errc::malformed));
  CHECK(b.sm->stage_chunk(1, 5, std::uint64_t{1} << 24, sha256("x"), "x") ==
        make_error_code(errc::malformed));
  // A peer asking for bytes this node does not have, or through a hostile path, gets not_found.
  CHECK(b.sm->read_chunk(1, 999, 0, chunk, first.sha256, "big.bin").error() ==
        make_error_code(errc::not_found));
  CHECK(b.sm->read_chunk(1, 999, 0, chunk, first.sha256, "../etc/passwd").error() ==
        make_error_code(errc::not_found));
  CHECK(b.sm->read_chunk(1, first.upload_id, 0, 0, first.sha256, "big.bin").error() ==
        make_error_code(errc::malformed));
}

TEST_CASE("pushed chunks of an upload that was never referenced are removed", "[folder][chunks]") {
  node a(1, chunk);
  node b(2, chunk);
  a.io->user_write("big.bin", pattern(3 * chunk, 'u'));
  // An upload pushed to b whose proposer gave up before referencing anything (the file changed).
  std::vector<command> abandoned = push_upload(a, "big.bin", {&b});
  const std::string abandoned_staging = upload_staging_path(1, abandoned.front().upload_id);
  REQUIRE(b.io->exists(abandoned_staging));
  const std::string final_content = pattern(3 * chunk, 'v');
  a.io->user_write("big.bin", final_content);
  replicated_log log;
  std::vector<command> final_upload = push_upload(a, "big.bin", {&a, &b});
  const std::uint64_t commands_upload_id = final_upload.back().upload_id;
  log.append(final_upload);
  std::size_t fetches = 0;
  const std::vector<apply_result> results = catch_up_fetching(log, b, a, &fetches);
  CHECK(results.back().upload_id == commands_upload_id);
  // A newer upload's early pushes survive the cleanup after the previous commit.
  const std::string newer_staging = upload_staging_path(1, commands_upload_id + 1000);
  REQUIRE_FALSE(b.io->write_at(newer_staging, 0, "early push"));
  REQUIRE_FALSE(b.sm->drop_stale_staging(1, commands_upload_id));
  CHECK_FALSE(b.io->exists(abandoned_staging));
  CHECK(b.io->exists(newer_staging));
  CHECK(b.io->content("big.bin") == final_content);
}

TEST_CASE("a missing path is repaired from a peer's committed file", "[folder][chunks][repair]") {
  node a(1, chunk);
  node b(2, chunk);
  node c(3, chunk);
  const std::string big = pattern(7 * chunk + 99, 'm');
  a.io->user_write("dir/big.bin", big);
  replicated_log log;
  log.append(push_upload(a, "dir/big.bin", {&a, &b}));
  std::size_t fetches = 0;
  catch_up_fetching(log, b, a, &fetches);
  log.catch_up(c);  // c treats every chunk as unavailable: the path is missing there
  REQUIRE(c.sm->missing_paths().count("dir/big.bin") == 1);
  REQUIRE_FALSE(c.io->exists("dir/big.bin"));

  // A local file that took the path meanwhile is never overwritten by a repair.
  c.io->user_write("dir/big.bin", "mine");
  std::vector<content_wanted> wanted = c.sm->wanted_for_missing(64);
  REQUIRE(wanted.size() == 8);
  for (const content_wanted& w : wanted) {
    auto bytes =
        b.sm->read_chunk(w.origin, w.upload_id, w.chunk_index, w.size_bytes, w.sha256, w.path);
    REQUIRE(bytes.has_value());
    REQUIRE_FALSE(c.sm->stage_chunk(w.origin, w.upload_id, w.chunk_index, w.sha256, *bytes));
  }
  CHECK(c.sm->wanted_for_missing(64).empty());
  auto none = c.sm->repair_missing();
  REQUIRE(none.has_value());
  CHECK(none->empty());
  CHECK(c.io->content("dir/big.bin") == "mine");

  REQUIRE_FALSE(c.io->unlink("dir/big.bin"));
  auto repaired = c.sm->repair_missing();
  REQUIRE(repaired.has_value());
  REQUIRE(repaired->size() == 1);
  CHECK(c.io->content("dir/big.bin") == big);
  CHECK(c.sm->missing_paths().empty());
  // What the repair wrote is recognised as an echo, never proposed back.
  CHECK(c.sm->is_echo("dir/big.bin", repaired->front().stat));
  CHECK(c.io->dump() == b.io->dump());
}

TEST_CASE("a missing path nobody can serve stays missing without blocking",
          "[folder][chunks][repair]") {
  node a(1, chunk);
  node c(3, chunk);
  a.io->user_write("big.bin", pattern(3 * chunk, 'n'));
  replicated_log log;
  log.append(push_upload(a, "big.bin", {&a}));
  log.catch_up(c);
  REQUIRE(c.sm->needs_snapshot());
  std::vector<content_wanted> wanted = c.sm->wanted_for_missing(2);
  REQUIRE(wanted.size() == 2);  // bounded by `max`
  for (const content_wanted& w : c.sm->wanted_for_missing(64))
    c.sm->mark_unavailable(w.origin, w.upload_id, w.chunk_index);
  CHECK(c.sm->wanted_for_missing(64).empty());
  auto repaired = c.sm->repair_missing();
  REQUIRE(repaired.has_value());
  CHECK(repaired->empty());
  // A later write of the path clears it.
  log.append(make_write(2, 1, "big.bin", "small now", c.sm->committed().find("big.bin")->version));
  for (const auto& r : log.catch_up(c)) {
    INFO(r.reason);
    CHECK(r.status == apply_status::applied);
  }
  CHECK_FALSE(c.sm->needs_snapshot());
  CHECK(c.io->content("big.bin") == "small now");
}

TEST_CASE("a large file changed during its upload is noticed without re-hashing every chunk",
          "[folder][chunks]") {
  node a(1, chunk);
  const std::string big = pattern(6 * chunk, 'w');
  a.io->user_write("big.bin", big);
  auto plan = a.reader->read_change("big.bin");
  REQUIRE(plan.has_value());
  REQUIRE(plan->upload.has_value());
  auto first = plan->upload->next();
  REQUIRE(first.has_value());
  REQUIRE(first->has_value());
  CHECK((*first)->sha256 == sha256(big.substr(0, chunk)));
  // An edit in place after the stable read, even one that keeps the size and restores the mtime:
  // the ctime moves, so the next chunk is refused instead of being sent with a stale hash.
  const std::int64_t mtime = a.io->lstat("big.bin")->mtime_ns;
  std::string edited = big;
  edited[3 * chunk] ^= 1;
  a.io->user_write("big.bin", edited);
  REQUIRE_FALSE(a.io->set_mtime("big.bin", mtime));
  auto second = plan->upload->next();
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error() == make_error_code(errc::conflict));
}

// Chaos soak D'' (seed 24, replace faults): a replaced node replaying the log wrote a file's
// first, empty version, could not build the large commit that followed (its chunks were on no
// member any more) and left that superseded empty file in place; its scanner then took the file
// for a new local one and proposed it back over the newer committed versions — acknowledged
// writes were lost on every node.
TEST_CASE("a commit that cannot be built here removes the superseded version it replaces",
          "[folder][chunks][repair]") {
  node a(1, chunk);
  node c(3, chunk);
  replicated_log log;
  a.io->user_write("f.md", "");
  log.append(a.changes("f.md"));
  log.catch_up(a);
  const std::string big = pattern(3 * chunk, 'g');
  a.io->user_write("f.md", big);
  log.append(push_upload(a, "f.md", {&a}));

  const std::size_t first = log.entries.size();
  for (const apply_result& r : log.catch_up(c))
    CHECK(r.status == apply_status::applied);
  REQUIRE(c.sm->missing_paths().count("f.md") == 1);
  CHECK_FALSE(c.io->exists("f.md"));  // not the empty first version
  auto report = scan(*c.sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());
  CHECK(c.changes("f.md").empty());

  // A later remove of the path leaves nothing to propose either.
  REQUIRE_FALSE(a.io->unlink("f.md"));
  log.append(a.changes("f.md"));
  REQUIRE(log.entries.size() == first + 1);
  log.catch_up(c);
  CHECK_FALSE(c.io->exists("f.md"));
  report = scan(*c.sm, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());

  // A local edit in the way is kept as a conflict copy, not removed.
  node d(4, chunk);
  replicated_log log2;
  a.io->user_write("g.md", "v1");
  log2.append(a.changes("g.md"));
  log2.catch_up(d);
  d.io->user_write("g.md", "local edit");
  a.io->user_write("g.md", pattern(2 * chunk, 'h'));
  log2.append(push_upload(a, "g.md", {&a}));
  bool preserved = false;
  for (const apply_result& r : log2.catch_up(d))
    preserved = preserved || !r.preserved.empty();
  CHECK(preserved);
  CHECK_FALSE(d.io->exists("g.md"));
}

// The same soak: the replaced node rejoined under its old id, so its predecessor's commands
// counted as its own, and an own command never touches a working file that differs (it must be
// a newer local edit) — the superseded version stayed. A new incarnation replays them as any
// other node's.
TEST_CASE("a rejoined node replays its predecessor's commands as another node's",
          "[folder][chunks][repair]") {
  node a(1, chunk);
  replicated_log log;
  a.io->user_write("f.md", "");
  log.append(a.changes("f.md"));
  log.catch_up(a);
  a.io->user_write("f.md", pattern(3 * chunk, 'p'));
  log.append(push_upload(a, "f.md", {&a}));

  // Node 1 wiped and rejoined: a fresh state whose boot epoch starts above its predecessor's.
  memory_folder_io io;
  state_machine_config config = small_config(1, chunk);
  config.boot_epoch_floor = 1000;
  state_machine fresh(config, io, io);
  REQUIRE_FALSE(fresh.open());
  for (std::uint64_t i = 1; i <= log.entries.size(); ++i) {
    apply_result r = fresh.apply(i, log.entries[i - 1]);
    while (r.status == apply_status::awaiting_content) {
      for (const content_wanted& w : r.wanted)
        fresh.mark_unavailable(w.origin, w.upload_id, w.chunk_index);
      r = fresh.apply(i, log.entries[i - 1]);
    }
    INFO(r.reason);
    REQUIRE(r.status == apply_status::applied);
    CHECK_FALSE(r.own);
  }
  CHECK(fresh.missing_paths().count("f.md") == 1);
  CHECK_FALSE(io.exists("f.md"));
  auto report = scan(fresh, "");
  REQUIRE(report.has_value());
  CHECK(report->changed.empty());
  // Its own commands from now on are its own.
  command mine = make_write(1, fresh.next_sequence(), "g.md", "new");
  CHECK(fresh.apply(log.entries.size() + 1, encode_command(mine)).own);
}

// A proposer abandons an upload when the file changes under it and starts a new one; a retried
// reference of the old upload can still commit after the new upload's first chunks. Found while
// tracing chaos soak D'' (stalled uploads): the late reference abandoned the newer upload in turn.
TEST_CASE("a late chunk of an abandoned upload does not abandon the newer one",
          "[folder][chunks]") {
  node a(1, chunk);
  node c(3, chunk);
  a.io->user_write("big.bin", pattern(3 * chunk, 'a'));
  std::vector<command> old_upload = push_upload(a, "big.bin", {&a, &c});
  const std::string second = pattern(3 * chunk, 'b');
  a.io->user_write("big.bin", second);
  std::vector<command> new_upload = push_upload(a, "big.bin", {&a, &c});
  REQUIRE(old_upload.front().upload_id < new_upload.front().upload_id);
  REQUIRE(old_upload.front().kind == command_kind::chunk_ref);
  replicated_log log;
  log.append(old_upload.front());  // the old upload's first reference
  log.append(new_upload.front());  // the new upload begins: the old one is abandoned
  log.append(old_upload[1]);       // a late retry of the old upload's second reference
  for (std::size_t i = 1; i < new_upload.size(); ++i)
    log.append(new_upload[i]);
  for (node* n : {&a, &c}) {
    auto results = log.catch_up(*n);
    CHECK(results[2].status == apply_status::ignored);
    CHECK(results.back().status == apply_status::applied);
    CHECK(n->io->content("big.bin") == second);
    CHECK_FALSE(n->sm->needs_snapshot());
  }
}
