// raftsync — CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every record
// the storage module writes. Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at
// run time), a slicing-by-8 table otherwise. Debian ships no crc32c library, hence this one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace raftsync::storage {

// Extends `crc` (the value returned by an earlier call, or 0 to start) with `size` bytes at `data`.
// crc32c_extend(crc32c_extend(0, a), b) == crc32c of the concatenation a + b.
std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t size) noexcept;

inline std::uint32_t crc32c(const void* data, std::size_t size) noexcept {
  return crc32c_extend(0, data, size);
}
inline std::uint32_t crc32c(std::string_view data) noexcept {
  return crc32c_extend(0, data.data(), data.size());
}

// The portable table implementation, exposed so tests can check both paths agree.
std::uint32_t crc32c_extend_portable(std::uint32_t crc, const void* data,
                                     std::size_t size) noexcept;

// True if crc32c_extend uses the SSE4.2 instruction on this CPU.
bool crc32c_hardware_accelerated() noexcept;

}  // namespace raftsync::storage
