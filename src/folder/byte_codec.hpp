// raftsync::folder — internal little-endian byte writer and bounds-checked reader shared by the
// command, manifest, state-file and snapshot codecs. Not installed; not part of the API.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace raftsync::folder::detail {

class byte_writer {
 public:
  explicit byte_writer(std::string& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  // Length-prefixed (u32) bytes.
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }
  // Length-prefixed (u64) bytes, for contents that may exceed 4 GiB in principle.
  void blob(std::string_view s) {
    u64(s.size());
    out_.append(s);
  }
  void raw(const std::uint8_t* data, std::size_t n) {
    out_.append(reinterpret_cast<const char*>(data), n);
  }

 private:
  std::string& out_;
};

// Every read checks the remaining length first; after the first failure all reads fail and return
// zero values, so a decoder can read a whole record and check ok() once.
class byte_reader {
 public:
  explicit byte_reader(std::string_view in) : in_(in) {}
  bool ok() const noexcept { return ok_; }
  bool done() const noexcept { return ok_ && pos_ == in_.size(); }
  std::size_t remaining() const noexcept { return ok_ ? in_.size() - pos_ : 0; }
  void fail() noexcept { ok_ = false; }

  std::uint8_t u8() {
    if (!need(1)) return 0;
    return static_cast<std::uint8_t>(in_[pos_++]);
  }
  std::uint32_t u32() {
    if (!need(4)) return 0;
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v |= std::uint32_t{static_cast<std::uint8_t>(in_[pos_ + i])} << (8 * i);
    pos_ += 4;
    return v;
  }
  std::uint64_t u64() {
    if (!need(8)) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= std::uint64_t{static_cast<std::uint8_t>(in_[pos_ + i])} << (8 * i);
    pos_ += 8;
    return v;
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  std::string str(std::size_t max_bytes) {
    std::uint32_t n = u32();
    if (!ok_ || n > max_bytes || !need(n)) {
      ok_ = false;
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::string blob(std::uint64_t max_bytes) {
    std::uint64_t n = u64();
    if (!ok_ || n > max_bytes || !need(n)) {
      ok_ = false;
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  template <std::size_t N>
  void raw(std::array<std::uint8_t, N>& out) {
    if (!need(N)) {
      out.fill(0);
      return;
    }
    std::memcpy(out.data(), in_.data() + pos_, N);
    pos_ += N;
  }

 private:
  bool need(std::uint64_t n) {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return false;
    }
    return true;
  }
  std::string_view in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace raftsync::folder::detail
