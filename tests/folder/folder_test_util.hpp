// Test helpers for the folder module: a node (memory tree + state machine), a shared "log" of
// encoded commands applied in order by every node, and command builders.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "raftsync/folder/command.hpp"
#include "raftsync/folder/memory_folder_io.hpp"
#include "raftsync/folder/scanner.hpp"
#include "raftsync/folder/state_machine.hpp"

namespace raftsync::folder::test {

inline state_machine_config small_config(node_id self, std::uint64_t chunk_bytes = 4096) {
  state_machine_config c;
  c.self = self;
  c.chunk_bytes = chunk_bytes;
  return c;
}

inline state_machine_config with_epoch_floor(state_machine_config c, std::uint64_t floor) {
  c.boot_epoch_floor = floor;
  return c;
}

struct node {
  // boot_epoch_floor: a replacement of a node (same id, fresh state) starts a later epoch than its
  // predecessor's, as the facade's clock-based floor makes it.
  explicit node(node_id id, std::uint64_t chunk_bytes = 4096, std::uint64_t boot_epoch_floor = 0)
      : io(std::make_unique<memory_folder_io>()),
        sm(std::make_unique<state_machine>(
            with_epoch_floor(small_config(id, chunk_bytes), boot_epoch_floor), *io, *io)),
        reader(std::make_unique<change_reader>(*sm, [this] { return utc_ns; })) {
    REQUIRE_FALSE(sm->open());
  }
  // Simulates a restart: a new state machine over the same tree and state file.
  void restart(std::uint64_t chunk_bytes = 4096) {
    reader.reset();
    sm = std::make_unique<state_machine>(small_config(sm->config().self, chunk_bytes), *io, *io);
    REQUIRE_FALSE(sm->open());
    reader = std::make_unique<change_reader>(*sm, [this] { return utc_ns; });
  }
  // All commands (small and chunked) that read_change proposes for `path`.
  std::vector<command> changes(std::string_view path) {
    auto plan = reader->read_change(path);
    REQUIRE(plan.has_value());
    return flatten(std::move(*plan));
  }
  static std::vector<command> flatten(change_plan plan) {
    std::vector<command> out = std::move(plan.commands);
    if (plan.upload) {
      while (true) {
        auto next = plan.upload->next();
        REQUIRE(next.has_value());
        if (!*next) break;
        out.push_back(std::move(**next));
      }
    }
    return out;
  }

  std::unique_ptr<memory_folder_io> io;
  std::unique_ptr<state_machine> sm;
  std::unique_ptr<change_reader> reader;
  std::int64_t utc_ns = 1'764'153'067'000'000'000;  // 2025-11-26T10:31:07Z
};

// The replicated log: commands appended in commit order; every node applies the same entries.
struct replicated_log {
  std::vector<std::string> entries;
  std::uint64_t append(const command& c) {
    entries.push_back(encode_command(c));
    return entries.size();
  }
  void append(const std::vector<command>& cs) {
    for (const auto& c : cs)
      append(c);
  }
  // Applies every entry `n` has not applied yet; returns the results. Chunk bytes a commit
  // awaits are treated as unavailable on every peer (the path becomes missing), as the facade
  // does when no member has them; content_beside_log_test fetches them instead.
  std::vector<apply_result> catch_up(node& n) {
    std::vector<apply_result> out;
    for (std::uint64_t i = n.sm->applied_index() + 1; i <= entries.size(); ++i) {
      apply_result r = n.sm->apply(i, entries[i - 1]);
      while (r.status == apply_status::awaiting_content) {
        REQUIRE_FALSE(r.wanted.empty());
        for (const content_wanted& w : r.wanted)
          n.sm->mark_unavailable(w.origin, w.upload_id, w.chunk_index);
        r = n.sm->apply(i, entries[i - 1]);
      }
      out.push_back(std::move(r));
      REQUIRE(out.back().status != apply_status::failed);
    }
    return out;
  }
};

inline command make(command_kind kind, node_id origin, std::uint64_t sequence, std::string path,
                    std::uint64_t base = 0) {
  command c;
  c.kind = kind;
  c.origin = origin;
  c.sequence = sequence;
  c.path = std::move(path);
  c.base_version = base;
  c.timestamp_ns = 1'764'153'067'000'000'000 + static_cast<std::int64_t>(sequence);
  return c;
}

inline command make_write(node_id origin, std::uint64_t sequence, std::string path,
                          std::string content, std::uint64_t base = 0) {
  command c = make(command_kind::write, origin, sequence, std::move(path), base);
  c.content = std::move(content);
  c.mode = 0644;
  c.mtime_ns = 1'700'000'000'000'000'000 + static_cast<std::int64_t>(sequence) * 1000;
  return c;
}

}  // namespace raftsync::folder::test
