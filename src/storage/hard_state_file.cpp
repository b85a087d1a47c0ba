#include "raftsync/storage/hard_state_file.hpp"

#include <cerrno>

#include "encoding.hpp"
#include "raftsync/storage/crc32c.hpp"

namespace raftsync::storage {
namespace {
constexpr char state_magic[8] = {'R', 'S', 'Y', 'N', 'C', 'S', 'T', 'A'};
constexpr std::uint32_t max_members = 1u << 16;

void put_ids(std::string& out, const std::vector<raft::node_id>& ids) {
  detail::put_u32(out, static_cast<std::uint32_t>(ids.size()));
  for (auto id : ids)
    detail::put_u64(out, id);
}
bool get_ids(detail::reader& in, std::vector<raft::node_id>& ids) {
  std::uint32_t n = 0;
  if (!in.get_u32(n) || n > max_members || in.remaining() < std::size_t{n} * 8) return false;
  ids.resize(n);
  for (auto& id : ids) {
    if (!in.get_u64(id)) return false;
  }
  return true;
}
}  // namespace

std::string hard_state_file::encode(const stored_state& st) {
  std::string payload;
  detail::put_u64(payload, st.seq);
  detail::put_u64(payload, st.hard.term);
  detail::put_u64(payload, st.hard.vote);
  detail::put_u64(payload, st.hard.commit);
  put_ids(payload, st.conf.voters);
  put_ids(payload, st.conf.learners);
  detail::put_u64(payload, st.snapshot.index);
  detail::put_u64(payload, st.snapshot.term);
  put_ids(payload, st.snapshot.conf.voters);
  put_ids(payload, st.snapshot.conf.learners);
  detail::put_u64(payload, st.compacted_index);
  detail::put_u64(payload, st.compacted_term);
  detail::put_u64(payload, st.reset_seq);
  std::string out(state_magic, 8);
  detail::put_u32(out, state_file_version);
  detail::put_u32(out, static_cast<std::uint32_t>(payload.size()));
  out += payload;
  detail::put_u32(out, crc32c(out));
  return out;
}

std::error_code hard_state_file::write(file_io& io, const std::filesystem::path& dir,
                                       const stored_state& st) {
  const std::string bytes = encode(st);
  const auto tmp = dir / "state.tmp";
  {
    auto f = io.open(tmp, open_flags::read_write | open_flags::create | open_flags::truncate);
    if (!f) return f.error();
    if (auto ec = (*f)->pwrite(0, bytes.data(), bytes.size())) return ec;
    if (auto ec = (*f)->datasync()) return ec;
  }
  if (auto ec = io.rename(tmp, dir / "state")) return ec;
  return io.sync_dir(dir);
}

result<std::optional<stored_state>> hard_state_file::read(file_io& io,
                                                          const std::filesystem::path& dir,
                                                          std::string* message) {
  const auto path = dir / "state";
  auto f = io.open(path, open_flags::read_only);
  if (!f) {
    if (f.error() == std::errc::no_such_file_or_directory) return std::optional<stored_state>{};
    return f.error();
  }
  auto size = (*f)->size();
  if (!size) return size.error();
  auto fail = [&](errc code, std::uint64_t offset,
                  const char* what) -> result<std::optional<stored_state>> {
    if (message) {
      *message = path.string() + " at offset " + std::to_string(offset) + ": " + what;
    }
    return code;
  };
  if (*size < 20 || *size > (1u << 24)) return fail(errc::corrupt, 0, "impossible file size");
  std::string bytes(*size, '\0');
  if (auto ec = read_exact(**f, 0, bytes.data(), bytes.size())) return ec;
  if (std::memcmp(bytes.data(), state_magic, 8) != 0) return fail(errc::corrupt, 0, "bad magic");
  const std::uint32_t version = detail::load_u32(bytes.data() + 8);
  const std::uint32_t length = detail::load_u32(bytes.data() + 12);
  if (std::uint64_t{length} + 20 != bytes.size()) {
    return fail(errc::corrupt, 12, "payload length does not match the file size");
  }
  const std::uint32_t stored_crc = detail::load_u32(bytes.data() + 16 + length);
  if (stored_crc != crc32c(bytes.data(), 16 + length)) {
    return fail(errc::corrupt, 16 + std::uint64_t{length}, "checksum mismatch");
  }
  if (version != state_file_version) {
    return fail(errc::unsupported_version, 8, "unsupported format version");
  }
  stored_state st;
  detail::reader in(std::string_view(bytes).substr(16, length));
  const bool ok = in.get_u64(st.seq) && in.get_u64(st.hard.term) && in.get_u64(st.hard.vote) &&
                  in.get_u64(st.hard.commit) && get_ids(in, st.conf.voters) &&
                  get_ids(in, st.conf.learners) && in.get_u64(st.snapshot.index) &&
                  in.get_u64(st.snapshot.term) && get_ids(in, st.snapshot.conf.voters) &&
                  get_ids(in, st.snapshot.conf.learners) && in.get_u64(st.compacted_index) &&
                  in.get_u64(st.compacted_term) && in.get_u64(st.reset_seq) && in.remaining() == 0;
  if (!ok) return fail(errc::corrupt, 16, "payload does not decode");
  return std::optional<stored_state>{std::move(st)};
}

}  // namespace raftsync::storage
