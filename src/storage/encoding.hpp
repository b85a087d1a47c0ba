// Little-endian fixed-width encoding helpers shared by the storage file formats (private header).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace raftsync::storage::detail {

inline void put_u8(std::string& out, std::uint8_t v) {
  out.push_back(static_cast<char>(v));
}
inline void put_u32(std::string& out, std::uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i)
    b[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
  out.append(b, 4);
}
inline void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i)
    b[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
  out.append(b, 8);
}
inline void store_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
}
inline void store_u64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
}
inline std::uint32_t load_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
inline std::uint64_t load_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// Bounds-checked sequential reader; every get fails (returns false) once the input is exhausted.
class reader {
 public:
  explicit reader(std::string_view in) : in_(in) {}
  bool get_u8(std::uint8_t& v) {
    if (in_.size() - pos_ < 1) return false;
    v = static_cast<std::uint8_t>(in_[pos_++]);
    return true;
  }
  bool get_u32(std::uint32_t& v) {
    if (in_.size() - pos_ < 4) return false;
    v = load_u32(in_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool get_u64(std::uint64_t& v) {
    if (in_.size() - pos_ < 8) return false;
    v = load_u64(in_.data() + pos_);
    pos_ += 8;
    return true;
  }
  std::size_t remaining() const { return in_.size() - pos_; }

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
};

}  // namespace raftsync::storage::detail
