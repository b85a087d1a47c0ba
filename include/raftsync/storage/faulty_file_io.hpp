// raftsync — faulty_file_io: an in-memory filesystem for crash and fault injection.
//
// It keeps, per file, the current bytes and the bytes made durable by the last datasync, and per
// directory the current names and the names made durable by the last sync_dir. Faults:
//   - crash_at(n): the n-th counted operation does not happen and the "process" is dead: it and
//     every later call fail with EIO until restart(), which drops everything not synced (unsynced
//     writes, truncations, creates, renames and unlinks per directory) and invalidates open files;
//   - fail_at(n, ec) / fail_randomly(p, ec, seed): chosen or random counted operations fail with
//     `ec` (ENOSPC, EIO) without any effect, later operations work again;
//   - set_capacity_bytes(n): writes and allocations that would make the files larger than n bytes
//     in total fail with ENOSPC (a full disk; raise the limit to "free space");
//   - set_torn_writes(true): at a crash each file keeps a random in-order prefix of its unsynced
//     operations, the last one possibly cut short (a torn write), instead of losing them all.
// Counted operations are the ones that change state or sync: open with create or truncate,
// pwrite, datasync, truncate, allocate, rename, unlink, sync_dir, create_dir. Plain opens, reads,
// sizes and listings are not counted (a crash there is the same as a crash before the next
// counted operation); after a crash they fail with EIO too.
// Paths are compared lexically (use normalized paths without "." or ".." components).
// Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "raftsync/storage/file_io.hpp"

namespace raftsync::storage {

class faulty_file_io final : public file_io {
 public:
  explicit faulty_file_io(std::uint64_t seed = 0);
  ~faulty_file_io() override;
  faulty_file_io(const faulty_file_io&) = delete;
  faulty_file_io& operator=(const faulty_file_io&) = delete;

  // --- file_io ---
  result<std::unique_ptr<file>> open(const std::filesystem::path& path, open_flags flags) override;
  std::error_code rename(const std::filesystem::path& from,
                         const std::filesystem::path& to) override;
  std::error_code unlink(const std::filesystem::path& path) override;
  std::error_code sync_dir(const std::filesystem::path& dir) override;
  std::error_code create_dir(const std::filesystem::path& dir) override;
  result<std::vector<std::string>> list_dir(const std::filesystem::path& dir) override;
  result<std::uint64_t> file_size(const std::filesystem::path& path) override;

  // --- fault injection ---
  // Number of counted operations so far (since construction; restart() does not reset it).
  std::uint64_t operation_count() const noexcept { return operations_; }
  std::uint64_t datasync_count() const noexcept { return datasyncs_; }
  // Crash at the operation whose count would become `n` (absolute, 1-based). 0 disables.
  void crash_at(std::uint64_t n) noexcept { crash_at_ = n; }
  bool crashed() const noexcept { return crashed_; }
  // Simulates a crash now (if not crashed yet) and a restart: applies the loss of unsynced state.
  void restart();
  // The operation whose count would become `n` fails with `ec` and has no effect.
  void fail_at(std::uint64_t n, std::error_code ec) { fail_at_[n] = ec; }
  // Each counted operation (other than open for reading) fails with probability p.
  void fail_randomly(double probability, std::error_code ec, std::uint64_t seed);
  void set_capacity_bytes(std::optional<std::uint64_t> capacity) noexcept { capacity_ = capacity; }
  // Cancels pending fail_at, fail_randomly and crash_at points (not the capacity).
  void clear_faults() noexcept {
    fail_at_.clear();
    fail_probability_ = 0;
    crash_at_ = 0;
  }
  void set_torn_writes(bool torn) noexcept { torn_writes_ = torn; }
  // Total size of all files (what set_capacity_bytes limits).
  std::uint64_t used_bytes() const;

  // --- direct access for tests (not counted, not faulted, durable immediately) ---
  result<std::string> read_durable(const std::filesystem::path& path) const;
  std::error_code overwrite_durable(const std::filesystem::path& path, std::string data);
  bool exists(const std::filesystem::path& path) const;

  struct inode;
  struct state;

 private:
  std::error_code before_operation(bool counted = true);

  std::shared_ptr<state> state_;
  std::uint64_t operations_ = 0;
  std::uint64_t datasyncs_ = 0;
  std::uint64_t crash_at_ = 0;
  bool crashed_ = false;
  std::map<std::uint64_t, std::error_code> fail_at_;
  double fail_probability_ = 0;
  std::error_code fail_error_;
  std::mt19937_64 fail_rng_;
  std::mt19937_64 crash_rng_;
  std::optional<std::uint64_t> capacity_;
  bool torn_writes_ = false;

  friend class faulty_file;
};

}  // namespace raftsync::storage
