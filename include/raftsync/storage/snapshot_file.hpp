// raftsync — snapshot files: snapshot metadata plus the application's opaque state, written and
// read in chunks so a snapshot larger than memory works.
//
// A snapshot is written to `snap-<index>-<term>.snap.tmp` (16 hex digits each) and only
// snapshot_writer::commit() — trailer, fdatasync, rename to `.snap`, directory fsync — makes it a
// snapshot. A reader accepts only a `.snap` file whose header and trailer check out, so a
// half-written snapshot is never mistaken for a whole one; every chunk is verified before it is
// handed out.
//
// Byte layout (little-endian):
//   header:  "RSYNCSNP" | version u32 (1) | metadata length M u32 |
//            metadata (M bytes): index u64, term u64, voter count u32, voters u64...,
//            learner count u32, learners u64... | CRC32C u32 of everything before it
//   chunks:  length u32 (1 .. 64 MiB) | CRC32C u32 of the data | data
//   trailer: 0 u32 (marks the trailer) | "SNPEND!!" | chunk count u64 | data bytes u64 |
//            CRC32C u32 of the trailer bytes before it plus the header CRC   (32 bytes)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "raftsync/raft/types.hpp"
#include "raftsync/result.hpp"
#include "raftsync/storage/file_io.hpp"

namespace raftsync::storage {

inline constexpr std::uint32_t snapshot_format_version = 1;
inline constexpr std::uint32_t snapshot_chunk_bytes_max = 64u << 20;

std::string snapshot_file_name(const raft::snapshot_metadata& meta);

class snapshot_writer {
 public:
  // Starts `dir`/snap-<index>-<term>.snap.tmp (replacing a leftover temp file of the same name).
  static result<snapshot_writer> create(file_io& io, const std::filesystem::path& dir,
                                        const raft::snapshot_metadata& meta);
  snapshot_writer(snapshot_writer&&) noexcept;
  snapshot_writer& operator=(snapshot_writer&&) noexcept;
  ~snapshot_writer();  // an uncommitted snapshot is abandoned (its temp file is removed)

  // Appends a chunk of the application's data (empty chunks are ignored; larger than
  // snapshot_chunk_bytes_max is split).
  std::error_code write(std::string_view chunk);
  // Trailer, fdatasync, rename to the final name, directory fsync. After success the snapshot is
  // durable and complete; the writer is finished.
  std::error_code commit();
  // Removes the temp file.
  std::error_code abort();

  const std::filesystem::path& final_path() const noexcept { return final_path_; }
  std::uint64_t data_bytes() const noexcept { return data_bytes_; }

 private:
  snapshot_writer() = default;
  file_io* io_ = nullptr;
  std::unique_ptr<file> file_;
  std::filesystem::path dir_, temp_path_, final_path_;
  std::uint64_t offset_ = 0;
  std::uint64_t chunks_ = 0;
  std::uint64_t data_bytes_ = 0;
  std::uint32_t header_crc_ = 0;
  bool done_ = false;
};

class snapshot_reader {
 public:
  // Opens a committed snapshot file and checks header and trailer. errc::corrupt (with *message
  // naming file and offset) if either is damaged or missing; errc::unsupported_version.
  static result<snapshot_reader> open(file_io& io, const std::filesystem::path& path,
                                      std::string* message = nullptr);
  snapshot_reader(snapshot_reader&&) noexcept;
  snapshot_reader& operator=(snapshot_reader&&) noexcept;
  ~snapshot_reader();

  const raft::snapshot_metadata& metadata() const noexcept { return meta_; }
  std::uint64_t data_bytes() const noexcept { return data_bytes_; }
  // The next chunk into `chunk`: true, or false at the end of the data (then the chunk count and
  // byte total have been checked against the trailer). errc::corrupt on a damaged chunk.
  result<bool> next(std::string& chunk);
  const std::string& error_message() const noexcept { return error_message_; }

 private:
  snapshot_reader() = default;
  std::unique_ptr<file> file_;
  std::filesystem::path path_;
  raft::snapshot_metadata meta_;
  std::uint64_t offset_ = 0;  // of the next chunk
  std::uint64_t trailer_offset_ = 0;
  std::uint64_t chunks_total_ = 0, chunks_read_ = 0;
  std::uint64_t data_bytes_ = 0, data_read_ = 0;
  std::string error_message_;
};

struct snapshot_file_info {
  raft::snapshot_metadata meta;  // index and term from the name (conf: open the file)
  std::filesystem::path path;
};

// Committed snapshot files in `dir`, oldest first (by index, then term).
result<std::vector<snapshot_file_info>> list_snapshots(file_io& io,
                                                       const std::filesystem::path& dir);
// Deletes committed snapshots with index < `index` and every leftover temp file; then fsyncs dir.
std::error_code remove_snapshots_before(file_io& io, const std::filesystem::path& dir,
                                        std::uint64_t index);

}  // namespace raftsync::storage
