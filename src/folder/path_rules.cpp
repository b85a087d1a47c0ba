#include "raftsync/folder/path_rules.hpp"

#include <array>
#include <cctype>
#include <cstdio>

#include "raftsync/error.hpp"

namespace raftsync::folder {
namespace {

std::error_code refuse(std::string* reason, std::string text) {
  if (reason != nullptr) *reason = std::move(text);
  return make_error_code(errc::invalid_path);
}

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) !=
        std::toupper(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

bool windows_reserved(std::string_view name) {
  std::string_view base = name.substr(0, name.find('.'));
  // Trailing spaces before the extension are ignored by Windows too ("CON .txt").
  while (!base.empty() && base.back() == ' ')
    base.remove_suffix(1);
  static constexpr std::array<std::string_view, 4> plain{"CON", "PRN", "AUX", "NUL"};
  for (auto r : plain)
    if (ieq(base, r)) return true;
  if (base.size() == 4 && (ieq(base.substr(0, 3), "COM") || ieq(base.substr(0, 3), "LPT")) &&
      base[3] >= '1' && base[3] <= '9')
    return true;
  return false;
}

}  // namespace

std::error_code validate_path(std::string_view path, const path_rules& rules, std::string* reason) {
  if (path.empty()) return refuse(reason, "empty path");
  if (path.size() > rules.path_bytes_max)
    return refuse(reason, "path longer than " + std::to_string(rules.path_bytes_max) + " bytes");
  if (path.find('\0') != std::string_view::npos) return refuse(reason, "path contains NUL");
  if (path.find('\\') != std::string_view::npos) return refuse(reason, "path contains a backslash");
  if (path.front() == '/') return refuse(reason, "absolute path");
  if (path.size() >= 2 && std::isalpha(static_cast<unsigned char>(path[0])) && path[1] == ':')
    return refuse(reason, "drive-letter path");
  std::size_t depth = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t end = path.find('/', start);
    std::string_view name =
        path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    ++depth;
    if (name.empty()) return refuse(reason, "empty path component");
    if (name == ".") return refuse(reason, "\".\" component");
    if (name == "..") return refuse(reason, "\"..\" component");
    if (name.size() > rules.component_bytes_max)
      return refuse(
          reason, "component longer than " + std::to_string(rules.component_bytes_max) + " bytes");
    if (depth == 1 && name == state_dir_name) return refuse(reason, "inside the state directory");
    if (name.substr(0, temp_name_prefix.size()) == temp_name_prefix)
      return refuse(reason, "raftsync temporary name");
    if (rules.windows_names) {
      for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u < 32 || c == '<' || c == '>' || c == ':' || c == '"' || c == '|' || c == '?' ||
            c == '*')
          return refuse(reason,
                        "character not allowed on Windows in \"" + std::string(name) + "\"");
      }
      if (name.back() == '.' || name.back() == ' ')
        return refuse(reason, "name ends in '.' or ' ' (not allowed on Windows)");
      if (windows_reserved(name))
        return refuse(reason, "reserved Windows device name \"" + std::string(name) + "\"");
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (depth > rules.depth_max)
    return refuse(reason, "deeper than " + std::to_string(rules.depth_max) + " components");
  return {};
}

bool is_internal_path(std::string_view path) noexcept {
  std::size_t start = 0;
  bool first = true;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    std::string_view name =
        path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (first && name == state_dir_name) return true;
    if (name.substr(0, temp_name_prefix.size()) == temp_name_prefix) return true;
    first = false;
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return false;
}

std::string_view parent_path(std::string_view path) noexcept {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view{} : path.substr(0, slash);
}

std::string_view file_name(std::string_view path) noexcept {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string join_path(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  std::string out;
  out.reserve(a.size() + 1 + b.size());
  out.append(a);
  out.push_back('/');
  out.append(b);
  return out;
}

bool is_same_or_below(std::string_view path, std::string_view ancestor) noexcept {
  if (ancestor.empty()) return true;
  if (path.size() < ancestor.size() || path.substr(0, ancestor.size()) != ancestor) return false;
  return path.size() == ancestor.size() || path[ancestor.size()] == '/';
}

std::string format_utc(std::int64_t utc_ns) {
  std::int64_t seconds = utc_ns / 1'000'000'000;
  if (utc_ns < 0 && utc_ns % 1'000'000'000 != 0) --seconds;
  std::int64_t days = seconds / 86400;
  std::int64_t rem = seconds % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  // Civil-from-days (Howard Hinnant's algorithm, public domain description).
  std::int64_t z = days + 719468;
  std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  std::int64_t doe = z - era * 146097;
  std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t y = yoe + era * 400;
  std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  std::int64_t mp = (5 * doy + 2) / 153;
  std::int64_t d = doy - (153 * mp + 2) / 5 + 1;
  std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2) ++y;
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%04lld%02lld%02lldT%02lld%02lld%02lldZ",
                static_cast<long long>(y), static_cast<long long>(m), static_cast<long long>(d),
                static_cast<long long>(rem / 3600), static_cast<long long>((rem / 60) % 60),
                static_cast<long long>(rem % 60));
  return buffer;
}

std::string conflict_copy_name(std::string_view path, std::uint64_t node, std::int64_t utc_ns,
                               unsigned n) {
  std::string_view dir = parent_path(path);
  std::string_view name = file_name(path);
  std::string_view stem = name;
  std::string_view ext;
  auto dot = name.rfind('.');
  if (dot != std::string_view::npos && dot != 0) {
    stem = name.substr(0, dot);
    ext = name.substr(dot);
  }
  std::string suffix = ".conflict-" + std::to_string(node) + "-" + format_utc(utc_ns);
  if (n > 0) suffix += "-" + std::to_string(n);
  // Keep the name within NAME_MAX (255 bytes): shorten the stem, then the extension.
  constexpr std::size_t name_max = 255;
  if (suffix.size() + ext.size() > name_max - 1) ext = {};
  if (stem.size() + suffix.size() + ext.size() > name_max)
    stem = stem.substr(0, name_max - suffix.size() - ext.size());
  std::string out(stem);
  out += suffix;
  out += ext;
  return join_path(dir, out);
}

}  // namespace raftsync::folder
