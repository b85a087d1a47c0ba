// raftsync — the Raft core's own deterministic pseudo-random generator.
//
// The core never touches global randomness: every node owns one of these, seeded from
// config::random_seed, so a whole-cluster simulation replays bit for bit from one seed on every
// platform (std::uniform_int_distribution is implementation-defined, so it is not used).
#pragma once

#include <cstdint>

namespace raftsync::raft {

// xoshiro256** seeded through splitmix64 (public-domain algorithms by Vigna and Blackman).
class random_generator {
 public:
  explicit random_generator(std::uint64_t seed = 0) noexcept { reseed(seed); }

  void reseed(std::uint64_t seed) noexcept {
    std::uint64_t x = seed;
    for (auto& word : state_)
      word = splitmix64(x);
  }

  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, bound) for bound > 0 (modulo; the bias for bounds far below 2^64 is
  // negligible for election jitter and the result is identical on every platform). 0 if bound == 0.
  std::uint64_t uniform(std::uint64_t bound) noexcept { return bound == 0 ? 0 : next() % bound; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  std::uint64_t state_[4]{};
};

}  // namespace raftsync::raft
