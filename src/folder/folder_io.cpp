#include "raftsync/folder/folder_io.hpp"

#include <future>
#include <system_error>

#include "raftsync/folder/path_rules.hpp"

namespace raftsync::folder {

result<std::string> folder_io::create_temp_file(std::string_view, std::string_view, std::uint32_t,
                                                std::int64_t) {
  return std::make_error_code(std::errc::operation_not_supported);
}

result<file_stat> stat_or_absent(folder_io& io, std::string_view path) {
  auto st = io.lstat(path);
  if (st) return st;
  if (st.error() == std::errc::no_such_file_or_directory) return file_stat{};
  return st.error();
}

std::error_code folder_io::write_file_atomic_if(std::string_view path, std::string_view content,
                                                std::uint32_t mode, std::int64_t mtime_ns,
                                                bool sync_directory, const file_stat& expected) {
  auto now = stat_or_absent(*this, path);
  if (!now) return now.error();
  if (!same_working_identity(*now, expected)) return make_error_code(errc::conflict);
  return write_file_atomic(path, content, mode, mtime_ns, sync_directory);
}

std::error_code folder_io::sync_files(const std::vector<std::string>& paths) {
  for (const std::string& path : paths)
    if (auto ec = sync_file(path)) return ec;
  return {};
}

// Two SHA-256 computations run over every byte (the whole file and its chunk): for a multi-chunk
// file the chunk hashes are computed on a second thread while this one hashes the whole file, so
// the stable read of a large file costs one pass of wall time on a machine with a spare core.
result<file_hashes> hash_file(folder_io& io, std::string_view path, std::uint64_t chunk_bytes,
                              const std::function<bool()>& unchanged) {
  file_hashes out;
  sha256_hasher whole;
  std::string buffer;
  std::string previous;  // the chunk whose hash the helper thread computes
  std::future<digest> pending;
  auto collect = [&] {
    if (pending.valid()) out.chunk_hashes.push_back(pending.get());
  };
  for (std::uint64_t offset = 0;; offset += chunk_bytes) {
    if (auto ec = io.read(path, offset, chunk_bytes, buffer)) {
      collect();
      return ec;
    }
    if (buffer.empty()) break;
    const bool last = buffer.size() < chunk_bytes;
    if (offset == 0 && last) {  // a single short chunk: no thread
      whole.update(buffer);
      out.chunk_hashes.push_back(sha256(buffer));
      out.size_bytes += buffer.size();
      break;
    }
    collect();
    if (unchanged && offset > 0 && (offset / chunk_bytes) % hash_check_interval == 0 &&
        !unchanged())
      return errc::busy;
    previous.swap(buffer);
    try {
      pending = std::async(std::launch::async, [&previous] { return sha256(previous); });
    } catch (const std::system_error&) {  // no thread available: hash it here
      std::promise<digest> done;
      done.set_value(sha256(previous));
      pending = done.get_future();
    }
    whole.update(previous);
    out.size_bytes += previous.size();
    if (last) break;
  }
  collect();
  out.sha256 = whole.finish();
  return out;
}

result<std::string> read_whole(folder_io& io, std::string_view path, std::uint64_t max_bytes) {
  auto st = io.lstat(path);
  if (!st) return st.error();
  if (st->kind != file_kind::regular) return std::make_error_code(std::errc::invalid_argument);
  if (st->size_bytes > max_bytes) return errc::too_large;
  std::string out;
  if (auto ec = io.read(path, 0, st->size_bytes, out)) return ec;
  return out;
}

std::error_code remove_all(folder_io& io, std::string_view path) {
  auto st = io.lstat(path);
  if (!st) {
    if (st.error() == std::errc::no_such_file_or_directory) return {};
    return st.error();
  }
  if (st->kind != file_kind::directory) return io.unlink(path);
  auto children = io.list(path);
  if (!children) return children.error();
  for (const auto& child : *children)
    if (auto ec = remove_all(io, join_path(path, child.name))) return ec;
  if (path.empty()) return {};
  return io.rmdir(path);
}

std::error_code make_dirs(folder_io& io, std::string_view path, std::uint32_t mode) {
  if (path.empty()) return {};
  auto st = io.lstat(path);
  if (st) {
    if (st->kind == file_kind::directory) return {};
    return std::make_error_code(std::errc::not_a_directory);
  }
  if (st.error() != std::errc::no_such_file_or_directory) return st.error();
  if (auto ec = make_dirs(io, parent_path(path), 0755)) return ec;
  auto ec = io.mkdir(path, mode);
  if (ec == std::errc::file_exists) return {};
  return ec;
}

}  // namespace raftsync::folder
