// raftsync::folder — the proposer side: turning the working tree into commands.
//
//  * change_reader::read_change(path) reads one path "stably" (lstat, read + hash, lstat again;
//    re-read while size/mtime/inode moved, bounded), compares it with the manifest and returns
//    the commands to propose — nothing when the content and metadata equal the committed ones.
//    Large files (> chunk_bytes) come back as a chunked_upload that yields one chunk command at a
//    time (only the chunks whose hash the committed content does not have) and then the commit,
//    so memory stays bounded by chunk_bytes.
//  * scan(sm, scope) compares the tree under `scope` with the manifest (kind, size, mtime, inode,
//    mode — no hashing) and lists the paths whose read_change() may produce commands: at startup
//    (changes made while the node was down) and for a watcher's rescan event.
//
// Sequence numbers come from state_machine::next_sequence(); base versions from the manifest
// at read time; timestamp_ns from the clock given to the reader (the proposer's UTC clock).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "raftsync/folder/command.hpp"
#include "raftsync/folder/state_machine.hpp"

namespace raftsync::folder {

// Streams the commands of one large-file proposal: chunk commands for the chunks the committed
// content lacks, then the commit. Each next() reads one chunk from the working file and checks
// the file is still the one the stable read hashed (same inode, size, mtime and ctime — any write
// changes the ctime — so the chunk need not be hashed again; receivers verify every chunk against
// its hash anyway); if the file changed in between, next() returns errc::conflict and the caller
// should read_change() the path again (a new upload abandons this one on every node, see
// docs/folder.md).
class chunked_upload {
 public:
  // The next command to propose, or std::nullopt after the commit was returned.
  result<std::optional<command>> next();
  std::uint64_t upload_id() const noexcept { return commit_.upload_id; }
  const std::string& path() const noexcept { return commit_.path; }
  std::size_t chunks_to_send() const noexcept { return changed_.size(); }
  std::uint64_t size_bytes() const noexcept { return commit_.size_bytes; }
  // Hash of the whole new content (what the commit will name).
  const digest& content_sha256() const noexcept { return commit_.sha256; }
  // `now` (an lstat of path()) is still the file this upload read: same inode, size, mtime and
  // ctime. Reading it again would find the same content.
  bool reads(const file_stat& now) const noexcept;

 private:
  friend class change_reader;
  chunked_upload(state_machine& sm, command commit, std::vector<std::uint64_t> changed,
                 file_stat identity)
      : sm_(&sm), commit_(std::move(commit)), changed_(std::move(changed)), identity_(identity) {}
  state_machine* sm_;
  command commit_;                      // the final commit (all fields set but sequence)
  std::vector<std::uint64_t> changed_;  // chunk indices to send, ascending
  file_stat identity_;                  // the file as the stable read saw it
  std::size_t position_ = 0;
  bool committed_ = false;
};

struct change_plan {
  std::vector<command> commands;         // complete commands, to propose in this order
  std::optional<chunked_upload> upload;  // then, for a large file, these (after `commands`)
  bool unchanged() const noexcept { return commands.empty() && !upload; }
};

class change_reader {
 public:
  // `utc_now_ns` is the proposer's UTC clock (timestamp_ns of each command).
  change_reader(state_machine& sm, std::function<std::int64_t()> utc_now_ns,
                int stable_read_attempts = 5);

  // What to propose so the committed state of `path` follows its working state. Internal paths
  // and paths refused by the path rules: errc::invalid_path. A file that kept changing over all
  // attempts: errc::busy (try again at the next event). A path whose parent is gone: treated as
  // missing. For a new directory only the mkdir is returned: call scan() on it for its content.
  result<change_plan> read_change(std::string_view path);

  // A watcher's rename from -> to. A rename command (no content bytes) when `to` is the committed
  // `from` moved (same kind; for files the same inode and size); otherwise the changes of both
  // paths read separately. A content change made together with the rename arrives as a later
  // modify event of `to` (same origin: it supersedes without conflict).
  result<change_plan> read_rename(std::string_view from, std::string_view to);

 private:
  command base_command(command_kind kind, std::string_view path);
  void append_removal(std::string_view path, const manifest_entry& entry, change_plan& plan);
  state_machine& sm_;
  std::function<std::int64_t()> utc_now_ns_;
  int attempts_;
};

struct scan_report {
  // Paths to pass to change_reader::read_change, in proposal order: removals deepest first, then
  // creations and modifications parents first.
  std::vector<std::string> changed;
  // Names on disk the path rules refuse (they cannot be replicated); reported, not proposed.
  std::vector<std::string> refused;
};

// Compares the working tree under `scope` ("" = everything; a file path = just that path) with
// the manifest. Paths in sm.missing_paths() are absent by necessity, not by a user's delete: they
// are never listed as removals (a file a user creates there is listed as usual).
result<scan_report> scan(state_machine& sm, std::string_view scope);

}  // namespace raftsync::folder
