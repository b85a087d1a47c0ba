// raftsync::folder — the deterministic replicated state machine of the folder.
//
// Every node feeds the committed log entries, in index order, to apply(). Given the same
// sequence of (index, command) every node reaches the same manifest (replicated fields) and, when
// no local edit interferes, the same tree. Conflict rules, the apply protocol and the persistence
// contract are specified in docs/folder.md; the short form:
//
//  * write / commit / symlink whose base_version differs from the path's current version, made by
//    another origin than the one that last changed the path, and whose result differs from the
//    current content, is stored as a conflict copy "name.conflict-<origin>-<utc>.ext" (utc from
//    the command's timestamp_ns) — recorded in the manifest, so every node has it.
//  * a later command of the same origin always supersedes that origin's earlier change (no
//    conflict with oneself); an earlier one arriving after a later one is `superseded`.
//  * remove based on an older version is `ignored` (the newer content wins; nothing is lost);
//    rmdir of a directory that still has committed children is `ignored`.
//  * before anything overwrites, removes or renames over a working entry, apply checks that the
//    working entry is still the committed one (size+mtime+inode, then SHA-256). If not, it is a
//    local edit not yet proposed: it is renamed to a local conflict copy first and reported in
//    apply_result::preserved; the caller must propose that copy (it is an ordinary new file).
//
// Threading: not thread-safe; one owner (the facade's apply loop) calls everything.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "raftsync/folder/command.hpp"
#include "raftsync/folder/folder_io.hpp"
#include "raftsync/folder/manifest.hpp"
#include "raftsync/folder/path_rules.hpp"
#include "raftsync/result.hpp"

namespace raftsync::folder {

struct state_machine_config {
  node_id self = 0;  // this node; names local conflict copies, recognises own commands
  // Chunk size for large files and manifest chunk hashes. MUST be identical on every node of a
  // cluster (it shapes the replicated manifest); snapshots carry it and refuse a mismatch.
  std::uint64_t chunk_bytes = 1u << 20;
  path_rules rules;  // MUST be identical on every node (a refused path is refused everywhere)
  // The state file, a path inside the `state_io` folder_io (default: state dir inside the root).
  std::string state_file = ".raftsync/folder-state";
  // Per-origin dedupe window: sequences more than this far below the origin's highest applied
  // sequence count as duplicates.
  std::uint64_t dedupe_window = 4096;
  std::uint32_t implicit_dir_mode = 0755;  // parents created implicitly by an apply
  // false: every apply fsyncs the directories it changed before it returns (contract point 4,
  // literally). true: the directory fsyncs are collected and done once in persist(), before the
  // state file is written — file contents are still fsynced before each rename, so no reader or
  // crash ever sees a torn file; a crash may lose renames of applies after the last persist(),
  // which the replay from persisted_index() redoes. Saves one fsync per apply.
  bool defer_directory_sync = false;
  // Largest content of a single write command (a bigger file must be chunked). Defaults to
  // chunk_bytes when 0.
  std::uint64_t write_bytes_max = 0;
  // The lowest boot epoch open() may start (next_sequence() = epoch << 32 | counter). The epoch
  // persisted in the state file only grows, but a node whose state directory was wiped starts
  // again from nothing: the facade passes the UTC clock in seconds since 2020-01-01, so a new
  // incarnation never reuses its predecessor's sequence numbers (which every other node would
  // skip as duplicates — chaos bug 8).
  std::uint64_t boot_epoch_floor = 0;

  // errc::invalid_config with *reason naming the field.
  std::error_code validate(std::string* reason = nullptr) const;
};

enum class apply_status : std::uint8_t {
  applied,     // took effect as proposed
  conflict,    // took effect as a conflict copy (apply_result::path is the copy)
  duplicate,   // (origin, sequence) was already applied: no effect
  superseded,  // a later command of the same origin already changed the path: no effect
  ignored,     // no effect by the conflict rules (see above); reason says which
  rejected,    // invalid command (path rules, kinds, chunk data, malformed bytes): no effect
  failed,      // local I/O error: nothing recorded, applied_index unchanged; see apply()
  // A commit whose chunk_ref bytes are not on this node (apply_result::wanted names them): nothing
  // recorded, applied_index unchanged. Deliver them with stage_chunk() (fetched from a peer), or
  // mark_unavailable() when no peer has them, and apply the same entry again.
  awaiting_content,
};
const char* to_string(apply_status status) noexcept;

// An entry this apply wrote into the tree, as lstat saw it right after (echo suppression).
struct written_entry {
  std::string path;
  file_stat stat;
  digest sha256{};  // regular files
};

// A local edit that was in the way of an apply and was moved aside on THIS node only.
struct preserved_edit {
  std::string original_path;  // where the local edit was
  std::string copy_path;      // where it is now; propose it as a new file so it replicates
};

// The bytes of one chunk this node needs before a commit can apply
// (apply_status::awaiting_content).
struct content_wanted {
  node_id origin = 0;
  std::uint64_t upload_id = 0;
  std::uint64_t chunk_index = 0;
  std::uint64_t size_bytes = 0;
  digest sha256{};
  std::string path;  // the upload's target (peers that committed it serve from there)
};

struct apply_result {
  apply_status status = apply_status::applied;
  std::error_code error;  // rejected: invalid_path / malformed / conflict...; failed: the I/O error
  std::string reason;     // human-readable for everything but `applied`
  std::uint64_t index = 0;
  command_kind kind = command_kind::write;
  node_id origin = 0;
  std::uint64_t sequence = 0;
  // This incarnation of the node proposed it (origin == config.self and a sequence from one of
  // its boot epochs). A wiped node that rejoined under the same id replays its predecessor's
  // commands as anybody else's: its working files were never their source.
  bool own = false;
  std::string path;  // the path that changed (the conflict copy when status == conflict)
  // rename: the source path; a command that followed a concurrent rename of its path (see
  // docs/folder.md): the path it was proposed for (`path` is where it took effect).
  std::string from_path;
  std::vector<written_entry> written;     // entries written into the tree by this apply
  std::vector<std::string> removed;       // entries removed from the tree by this apply
  std::vector<preserved_edit> preserved;  // local edits moved aside (see class comment)
  // The committed content of `path` could not be built on this node (a chunked commit whose
  // unchanged chunks no longer exist here: a local edit or delete overwrote them). The manifest is
  // correct; the path is absent from this node's tree and listed in missing_paths() until a later
  // command rewrites it or a folder snapshot is installed. See docs/folder.md.
  bool needs_snapshot = false;
  std::uint64_t upload_id = 0;         // chunk, chunk_ref, commit: the command's upload
  std::vector<content_wanted> wanted;  // awaiting_content: chunks to fetch (at most 64 at once)

  // The apply changed what a user sees (chunks of an upload only fill its staging file; the
  // commit is what puts the file in place).
  bool changed_tree() const noexcept {
    return (status == apply_status::applied || status == apply_status::conflict) &&
           kind != command_kind::chunk && kind != command_kind::chunk_ref;
  }
};

// One chunk staged by an upload.
struct staged_chunk {
  digest sha256{};
  std::uint64_t size_bytes = 0;
  friend bool operator==(const staged_chunk&, const staged_chunk&) = default;
};

// An upload in progress (one per origin): chunks staged so far. Replicated state. Its bytes live
// in the staging file "<root>/.raftsync-tmp-upload-<origin>-<upload_id>" at chunk_index *
// chunk_bytes.
struct upload_state {
  std::uint64_t upload_id = 0;
  std::map<std::uint64_t, staged_chunk> chunks;  // chunk index → what was staged
  friend bool operator==(const upload_state&, const upload_state&) = default;
};

// Where a rename moved an entry: the forwarding address that lets a command proposed against the
// entry's old path and version (concurrently with the rename) follow it (docs/folder.md,
// "Concurrent changes"). Replicated state; the most recent `move_records_max` records are kept (by
// log index).
struct move_record {
  std::uint64_t from_version = 0;  // the moved entry's version before the move
  node_id from_origin = 0;         // and the origin / sequence it had then
  std::uint64_t from_sequence = 0;
  std::string to;           // its path after the move
  std::uint64_t index = 0;  // the rename's log index (the entry's version at `to`)
  // The rename's origin and sequence: a later command of that origin naming the old path was
  // proposed knowing the entry had moved away, so it does not follow it.
  node_id rename_origin = 0;
  std::uint64_t rename_sequence = 0;
  friend bool operator==(const move_record&, const move_record&) = default;
};
inline constexpr std::size_t move_records_max = 4096;
using move_map = std::map<std::string, move_record, std::less<>>;  // keyed by the old path

// One committed log entry for state_machine::apply_batch(); `data` must stay valid during the call.
struct batch_entry {
  std::uint64_t index = 0;
  std::string_view data;
};

// The replicated state as a value (what snapshots carry).
struct replicated_state {
  manifest files;
  std::map<node_id, std::set<std::uint64_t>> seen;  // dedupe windows
  std::map<node_id, upload_state> uploads;
  move_map moves;  // the latest move out of each path (bounded, see move_record)
};
// Decodes encode_replicated_state() bytes (with_local = false) or the state file's body (true).
// errc::malformed on any inconsistency, errc::invalid_config when chunk_bytes differs.
result<replicated_state> decode_replicated_state(std::string_view bytes, std::uint64_t chunk_bytes,
                                                 bool with_local);
// The staging file name of an upload (at the root of the tree).
std::string upload_staging_path(node_id origin, std::uint64_t upload_id);

class state_machine {
 public:
  // `tree` is rooted at the replicated folder, `state_io` at the folder holding config.state_file
  // (they may be the same object). Both must outlive the state machine.
  state_machine(state_machine_config config, folder_io& tree, folder_io& state_io);

  // Loads the state file (absent = a fresh node at index 0), finishes an interrupted snapshot
  // install (snapshot.hpp), removes stale staging files, starts a new boot epoch for
  // next_sequence() and persists. Call once before anything else.
  std::error_code open();

  // Applies the committed entry at `index` (index == applied_index() + 1, or any index above it
  // after a gap of non-folder entries that were skip()ped). Decoding errors are `rejected`.
  // On `failed` (disk error) nothing is recorded and applied_index() is unchanged: retrying the
  // same (index, entry) later is safe; the facade should halt the node if it keeps failing.
  // Re-applying an index the tree already reflects (a crash after the apply, before persist())
  // is recognised and recorded without duplicating anything.
  apply_result apply(std::uint64_t index, std::string_view entry_data);
  apply_result apply(std::uint64_t index, const command& value);
  // Applies consecutive committed entries (increasing indexes, as apply() requires) with the
  // results apply() would give one after the other, but with fewer flushes: the contents of the
  // batch's writes are first written to temporary files at the root and made durable together
  // (folder_io::sync_files), then every entry is applied in order (a write renames its prepared
  // file into place), and finally every directory the batch changed is fsynced once. A batch with
  // at most one such write writes it with write_file_atomic as apply() does.
  // Returns one result per entry, in order, and stops after the first `failed` one (always the
  // last result; nothing of it is recorded; retry from its index). Prepared files no apply used
  // are removed. When it returns, every change of the returned entries is durable — unless a
  // directory fsync failed: that directory then stays pending and persist() retries it and fails
  // while it fails, so no state file ever claims an apply whose rename may not be on disk.
  std::vector<apply_result> apply_batch(const std::vector<batch_entry>& entries);
  // Records `index` as applied without a folder command (Raft no-op, membership change).
  void skip(std::uint64_t index);

  // Writes the state file atomically (temp + fsync + rename + fsync dir) if anything changed since
  // the last persist. Call after each batch of applies and BEFORE reporting the batch's applied
  // index to Raft's storage/compaction: on restart Raft must replay every entry above
  // persisted_index().
  std::error_code persist();

  std::uint64_t applied_index() const noexcept { return applied_index_; }
  std::uint64_t persisted_index() const noexcept { return persisted_index_; }
  const manifest& committed() const noexcept { return manifest_; }
  const std::map<node_id, upload_state>& uploads() const noexcept { return uploads_; }
  // Forwarding addresses of recently moved entries (replicated; see move_record).
  const move_map& moves() const noexcept { return moves_; }
  const state_machine_config& config() const noexcept { return config_; }
  folder_io& tree() noexcept { return tree_; }
  // Committed paths whose content this node could not build (see apply_result::needs_snapshot).
  // Local, persisted. The scanner never proposes them away; a snapshot install clears them.
  const std::set<std::string, std::less<>>& missing_paths() const noexcept { return missing_; }
  bool needs_snapshot() const noexcept { return !missing_.empty(); }

  // --- content beside the log (chunk_ref commands, docs/folder.md "Large files") ---
  // Writes a chunk's bytes into the staging file of (origin, upload_id) at chunk_index *
  // chunk_bytes and (sync) makes them durable (fdatasync). The caller has checked sha256(bytes)
  // == `sha256`; the chunk is remembered as verified for this process's lifetime, so its
  // chunk_ref and commit need not read it back. Not replicated state: a chunk_ref applied later
  // records it. With sync = false, call sync_staging() before treating the bytes as durable (one
  // fdatasync for many chunks).
  std::error_code stage_chunk(node_id origin, std::uint64_t upload_id, std::uint64_t chunk_index,
                              const digest& sha256, std::string_view bytes, bool sync = true);
  std::error_code sync_staging(node_id origin, std::uint64_t upload_id);
  // The bytes of a chunk for a peer that lacks them: from the staging file of (origin, upload_id)
  // or, once the upload committed, from `path` at the same offset; verified against `sha256`.
  // errc::not_found when this node does not have them either.
  result<std::string> read_chunk(node_id origin, std::uint64_t upload_id, std::uint64_t chunk_index,
                                 std::uint64_t size_bytes, const digest& sha256,
                                 std::string_view path);
  // No peer has that chunk (they all moved past it): the commit that needs it applies without it
  // and its path becomes missing on this node (as for apply_result::needs_snapshot).
  void mark_unavailable(node_id origin, std::uint64_t upload_id, std::uint64_t chunk_index);
  // Repair of missing paths (missing_paths()): the chunks of their committed content this node
  // still lacks, at most `max` (origin 0, upload_id = the entry's version: a peer serves them from
  // its file, verified against the manifest's chunk hash). Fetch them, stage_chunk() them, then
  // repair_missing() puts every path whose chunks are all here into place.
  std::vector<content_wanted> wanted_for_missing(std::size_t max);
  // Writes every missing path whose committed content is complete in its repair staging file
  // (verified chunk by chunk, fsynced, renamed into place) unless something else now occupies the
  // path; returns what it wrote (echo suppression as for applies). Local: the replicated state is
  // unchanged.
  result<std::vector<written_entry>> repair_missing();
  // Removes staging files of `origin` with an upload id below `below` that no live upload owns
  // (pushed chunks of an upload its proposer abandoned before referencing them; upload ids of an
  // origin only grow, so a newer upload's early pushes are kept). Local.
  std::error_code drop_stale_staging(node_id origin, std::uint64_t below);

  // --- proposer side ---
  // A fresh per-origin sequence number for a command this node proposes: (boot epoch << 32) |
  // counter, so a restarted node never reuses a number an earlier incarnation proposed.
  std::uint64_t next_sequence() noexcept;
  // A fresh upload id for a chunked proposal (same scheme).
  std::uint64_t next_upload_id() noexcept { return next_sequence(); }

  // Echo suppression: true when `stat` (an lstat of `path` taken after a watcher event) is what
  // an apply left there — the manifest entry matches kind, size, mtime and inode — or when the path
  // is absent both on disk (stat.kind == none) and in the manifest. A watcher event for which this
  // holds must not be proposed. Internal paths are always echoes.
  bool is_echo(std::string_view path, const file_stat& stat) const;
  // After a full check proved the working entry equals the committed one (e.g. the content hash
  // matched), remember its inode and mtime so the cheap check matches next time. Local only.
  void note_unchanged(std::string_view path, const file_stat& stat);
  // The proposer read `path` as `stat` (inode, size, mtime, ctime) and hashed it to `sha256`
  // for a large-file upload. When that upload's commit applies here and the file is still that
  // one, it is not hashed again (the read is proof enough). Local, in memory, a few entries.
  void note_own_read(std::string_view path, const file_stat& stat, const digest& sha256);
  // Whether `now` is still the file note_own_read() recorded for `path` with content `sha256`
  // (the record is used up either way).
  bool take_own_read(std::string_view path, const file_stat& now, const digest& sha256);

  // --- snapshots (snapshot.hpp) ---
  // Whether the entry at `where` (a path in the tree, e.g. inside a snapshot install's staging
  // area) is this node's committed version of `path`: kind, then identity (size, mtime, inode),
  // then content. False for an entry the manifest does not have (an untracked local entry).
  result<bool> holds_committed(std::string_view where, std::string_view path);
  // A local conflict copy name for `path` ("name.conflict-<self>-<utc of mtime_ns>.ext", counted
  // up) that neither the manifest nor the tree uses yet.
  result<std::string> free_copy_name(std::string_view path, std::int64_t mtime_ns);
  // The replicated state (manifest without local fields, dedupe windows, uploads), identical on
  // every node at the same applied index.
  std::string encode_replicated_state() const;
  // Replaces the whole state with a snapshot's (the tree must already hold the snapshot's files);
  // local fields are refreshed by lstat of the tree. Persists.
  std::error_code install_replicated_state(std::uint64_t index, std::string_view bytes,
                                           const std::set<std::string, std::less<>>& missing = {});

 private:
  struct undo_log;
  // Manifest mutations during an apply go through these (recorded in undo_ for a rollback).
  void put_entry(std::string path, manifest_entry entry);
  void erase_entry(const std::string& path);
  apply_result apply_command(std::uint64_t index, const command& c);
  apply_result do_write(std::uint64_t index, const command& c, apply_result r);
  apply_result do_chunk(std::uint64_t index, const command& c, apply_result r);
  apply_result do_chunk_ref(std::uint64_t index, const command& c, apply_result r);
  // One open upload per origin: a chunk of a new upload abandons the previous one.
  std::error_code switch_upload(node_id origin, std::uint64_t upload_id);
  bool superseded_upload(node_id origin, std::uint64_t upload_id) const;
  bool verified(node_id origin, std::uint64_t upload_id, std::uint64_t chunk_index,
                const digest& sha256) const;
  apply_result do_commit(std::uint64_t index, const command& c, apply_result r);
  apply_result do_remove(std::uint64_t index, const command& c, apply_result r);
  apply_result do_rename(std::uint64_t index, const command& c, apply_result r);
  apply_result do_mkdir(std::uint64_t index, const command& c, apply_result r);
  apply_result do_rmdir(std::uint64_t index, const command& c, apply_result r);
  apply_result do_set_mode(std::uint64_t index, const command& c, apply_result r);
  apply_result do_set_mtime(std::uint64_t index, const command& c, apply_result r);
  apply_result do_symlink(std::uint64_t index, const command& c, apply_result r);

  // Replicated-state helpers (pure functions of the manifest).
  std::error_code check_parents(std::string_view path, std::string* reason) const;
  std::string unique_conflict_name(std::string_view path, node_id node, std::int64_t utc_ns) const;
  bool is_conflict(const command& c, const manifest_entry* current, bool same_result) const;
  // Where a command proposed against `c.path` at `c.base_version` takes effect when a concurrent
  // rename moved that entry away: follows the move records while they continue the entry's history.
  struct followed_path {
    std::string path;                // the entry's path now (or where it was last seen)
    std::uint64_t base_version = 0;  // the version there that corresponds to the command's base
    bool superseded = false;         // the origin itself changed the entry after this command
  };
  std::optional<followed_path> follow_moves(const command& c) const;
  void record_move(const std::string& from, move_record record);
  // Remembers (locally) the entry an apply removed or replaced at `path`, with this node's
  // identity.
  static bool same_run(const manifest_entry& e, const command& c);
  // The working file at `path` is gone while its directory is still there, and no apply removed it
  // (for this node's own command: its user deleted or renamed the file after the node read it).
  result<bool> removed_since_read(std::string_view path);
  // This node's own command for `target`, which its user removed since: the committed entry `e`
  // is recorded, the disk left alone, the path reported for reading again (bug 21).
  apply_result record_removed_since_read(const std::string& target, const manifest_entry* cur,
                                         manifest_entry e, apply_result r);
  // An apply removed `path` from the working tree (remembered locally, bounded).
  void note_unlinked(const std::string& path);
  void note_replaced(const std::string& path, const manifest_entry& entry, bool removed,
                     bool removed_by_self = false);
  // This node's own rename whose source is no longer committed (a concurrent delete or rename won):
  // settles the renamed working entry (see docs/folder.md).
  std::error_code settle_orphaned_rename(const command& c, apply_result& r);
  // This node's own rename, already done on disk, whose source concurrent applies (committed
  // before it) recreated in part: moves the applied versions into the user's renamed tree.
  std::error_code merge_own_rename(const command& c, const std::vector<std::string>& moved,
                                   apply_result& r);
  // True when the working entry `st` is exactly the version of `path` an apply replaced.
  bool is_replaced_version(std::string_view path, const file_stat& st) const;

  // Local disk helpers.
  std::error_code ensure_parents(std::uint64_t index, const command& c, std::string_view path,
                                 apply_result& r);
  // Makes `path` safe to replace: if the working entry is not the committed one (a local edit)
  // it is moved to a local conflict copy and reported. Sets *already when the working entry
  // already has `wanted` content (replay or own write).
  bool is_own(const command& c) const noexcept {
    return c.origin == config_.self && (c.sequence >> 32) >= first_epoch_;
  }
  std::error_code clear_way(std::string_view path, const digest* wanted, bool own, apply_result& r,
                            bool* already, bool* keep_local);
  result<bool> working_matches(std::string_view path, const manifest_entry* entry, file_stat* seen);
  std::error_code record_written(std::string_view path, manifest_entry& entry, apply_result& r);
  // fsync directory `dir` now, or at the next persist() with defer_directory_sync, or at the end
  // of the running apply_batch().
  std::error_code sync_directory(std::string_view dir);
  // fsyncs every directory in dirs_to_sync_; the ones that fail stay there.
  std::error_code sync_pending_directories();
  // Writes a write command's content to `target` atomically: renames the file apply_batch
  // prepared for `index` into place, else write_file_atomic.
  // Replaces `target` only if it still is `expected` (errc::conflict otherwise, nothing written).
  std::error_code write_content(std::uint64_t index, const std::string& target,
                                std::string_view content, std::uint32_t mode, std::int64_t mtime_ns,
                                const file_stat& expected);
  // apply_batch phase one: writes the contents of the batch's writes to temporary files and syncs
  // them together (fills prepared_). Any failure leaves those writes to write_file_atomic.
  void prepare_batch(const std::vector<batch_entry>& entries,
                     const std::vector<result<command>>& commands);
  bool dedupe_seen(node_id origin, std::uint64_t sequence) const;
  void dedupe_add(node_id origin, std::uint64_t sequence);
  static std::string staging_path(node_id origin, std::uint64_t upload_id) {
    return upload_staging_path(origin, upload_id);
  }
  void encode_state(std::string& out, bool with_local) const;
  std::error_code decode_state(std::string_view bytes, bool with_local);

  state_machine_config config_;
  folder_io& tree_;
  folder_io& state_io_;
  manifest manifest_;
  std::map<node_id, std::set<std::uint64_t>> seen_;  // dedupe: applied sequences per origin
  std::map<node_id, upload_state> uploads_;
  // Invariant: persisted_index_ <= applied_index_.
  std::uint64_t applied_index_ = 0;
  std::uint64_t persisted_index_ = 0;
  std::uint64_t boot_epoch_ = 0;
  // The boot epoch this state began with (a node with a fresh state directory: a new node, or a
  // wiped one rejoining). Commands in our name with a lower epoch are a predecessor's. 0: state
  // written before this was recorded (every command in our name counts as ours).
  std::uint64_t first_epoch_ = 0;
  std::uint64_t sequence_counter_ = 0;
  std::set<std::string, std::less<>> missing_;  // see missing_paths()
  // Chunks this process wrote into staging files after checking their hash (stage_chunk): key
  // (origin, upload_id, chunk_index) → hash. Local and in memory only; a restart re-reads.
  std::map<std::tuple<node_id, std::uint64_t, std::uint64_t>, digest> verified_staged_;
  struct own_read {
    file_stat stat;
    digest sha256{};
  };
  std::map<std::string, own_read, std::less<>> own_reads_;                   // note_own_read()
  std::set<std::tuple<node_id, std::uint64_t, std::uint64_t>> unavailable_;  // mark_unavailable()
  move_map moves_;                                                  // replicated, see move_record
  std::set<std::pair<std::uint64_t, std::string>> moves_by_index_;  // eviction order of moves_
  // Local, not persisted: entries applies removed or replaced recently, with this node's local
  // identity of them. This node's user may have renamed such an entry just before (the rename not
  // yet committed); the apply of that rename recognises the renamed working entry as the old
  // version — superseded by the concurrent change, or deleted by it — instead of taking it for a
  // local edit (docs/folder.md, "Concurrent changes").
  struct replaced_entry {
    manifest_entry entry;
    bool removed = false;  // removed (true) or overwritten (false)
    // Removed by this node's own command: its scanner read the path as gone, which a rename of
    // the path this node's user made at the same time also looks like (never a competing delete).
    bool removed_by_self = false;
  };
  std::map<std::string, replaced_entry, std::less<>> replaced_recently_;
  // Local, not persisted: paths applies removed from the working tree recently (1024). This
  // node's own command for such a path finds it gone because of an apply, not of its user.
  std::set<std::string, std::less<>> unlinked_by_apply_;
  std::deque<std::string> unlinked_order_;
  std::deque<std::string> replaced_order_;  // insertion order of replaced_recently_ (bounded)
  // defer_directory_sync: fsync at persist(); apply_batch: fsync at its end (or at persist()).
  std::set<std::string, std::less<>> dirs_to_sync_;
  // apply_batch only: index of a write → its prepared temporary file, content already durable.
  std::map<std::uint64_t, std::string> prepared_;
  bool in_batch_ = false;  // apply_batch is running: directory fsyncs wait for its end
  bool dirty_ = false;
  undo_log* undo_ = nullptr;  // set only while apply() runs
};

}  // namespace raftsync::folder
