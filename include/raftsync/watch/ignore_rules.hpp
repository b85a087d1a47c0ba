// raftsync — which paths a watcher never reports.
//
// The node's own state directory and the apply step's temp files must not become events (product
// contract 5: no echo). A rule is a glob pattern with `*` (any run of characters except '/') and
// `?` (one character except '/'):
//   - a pattern without '/' is matched against EVERY element of the relative path, so ".raftsync"
//     ignores the directory at any depth and everything under it, and ".raftsync-tmp-*" ignores
//     every temp file of the apply step;
//   - a pattern with '/' is matched against the leading elements of the relative path (anchored at
//     the root), so "build/out" ignores that one directory and everything under it.
// A rename from an ignored path to a reported one is reported as a create of the new path (the
// apply step's temp-then-rename); a rename the other way is reported as a remove of the old path.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace raftsync::watch {

class ignore_rules {
 public:
  ignore_rules() = default;
  explicit ignore_rules(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {}

  // The rules every raftsync node uses: its state directory and the apply step's temp files.
  static ignore_rules raftsync_defaults() { return ignore_rules({".raftsync", ".raftsync-tmp-*"}); }

  void add(std::string pattern) { patterns_.push_back(std::move(pattern)); }
  const std::vector<std::string>& patterns() const noexcept { return patterns_; }
  bool empty() const noexcept { return patterns_.empty(); }

  // `relative` is relative to the watched root (generic or native separators). The root itself
  // (an empty path) is never ignored.
  bool ignored(const std::filesystem::path& relative) const {
    if (patterns_.empty() || relative.empty()) return false;
    const std::string generic = relative.generic_string();
    return ignored_generic(generic);
  }

  // Same, for a path already in generic form ("a/b/c").
  bool ignored_generic(std::string_view generic) const {
    if (patterns_.empty() || generic.empty()) return false;
    for (const std::string& pattern : patterns_) {
      if (pattern.find('/') == std::string::npos) {
        std::size_t begin = 0;
        while (begin <= generic.size()) {
          std::size_t end = generic.find('/', begin);
          if (end == std::string_view::npos) end = generic.size();
          if (glob_match(pattern, generic.substr(begin, end - begin))) return true;
          begin = end + 1;
        }
      } else {
        // Anchored: the pattern must match a prefix of whole elements.
        std::size_t end = 0;
        while (end <= generic.size()) {
          end = generic.find('/', end);
          if (end == std::string_view::npos) end = generic.size();
          if (glob_match(pattern, generic.substr(0, end))) return true;
          ++end;
        }
      }
    }
    return false;
  }

  // `*` matches any run of characters except '/', `?` any one character except '/'.
  static bool glob_match(std::string_view pattern, std::string_view text) noexcept {
    std::size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
    while (t < text.size()) {
      if (p < pattern.size() && pattern[p] == '*') {
        star = p++;
        resume = t;
      } else if (p < pattern.size() &&
                 (pattern[p] == '?' ? text[t] != '/' : pattern[p] == text[t])) {
        ++p;
        ++t;
      } else if (star != std::string_view::npos && text[resume] != '/') {
        p = star + 1;
        t = ++resume;
      } else {
        return false;
      }
    }
    while (p < pattern.size() && pattern[p] == '*')
      ++p;
    return p == pattern.size();
  }

 private:
  std::vector<std::string> patterns_;
};

}  // namespace raftsync::watch
