// io/prng.h
// -----------------------------------------------------------------------------
//
// The one pseudo-random generator of the deterministic simulator: xoshiro256** seeded through
// splitmix64, with its own mapping to bounded integers and probabilities.
//
// Why not the standard library or Abseil: `std::random_device` is entropy (a run could never be
// replayed), `absl::BitGen` is deliberately salted per process, and the
// `std::uniform_*_distribution` algorithms differ between standard libraries, so the same seed
// would give a different run with libc++ than with libstdc++. Everything here is written out in
// integer arithmetic (and one exact power-of-two scaling for `Chance`), so a seed names the same
// stream on every machine, compiler and build type.
//
// Invariants:
//   1. The stream for a seed never changes silently. tests/sim_prng_test.cc pins the first
//      outputs; changing any algorithm here means bumping `kPrngVersion`, updating the pins and
//      saying in the change why old seeds no longer replay.
//   2. Every member consumes a fixed number of draws per call that depends only on its
//      arguments' values and the stream (never on a probability being zero, so turning a fault
//      on does not shift every later draw of a run).
//
// When to use it: anywhere the simulator or a simulated workload needs a choice. Never in
// production code paths.
//
// Example:
//
//   sqloop::io::Prng prng(/*seed=*/42);
//   uint64_t sector = prng.Below(8);           // 0..7, unbiased
//   int64_t latency_ns = prng.Range(1000, 5000);
//   if (prng.Chance(0.01)) { /* inject a fault */ }
#ifndef SQLOOP_IO_PRNG_H_
#define SQLOOP_IO_PRNG_H_

#include <array>
#include <cstdint>

#include "sqloop/alloc/check.h"

namespace sqloop::io {

// Version of the stream (algorithms below and their use of draws). Printed by sqloop_sim so a
// replay command from an older build can be recognised as not replayable.
inline constexpr uint32_t kPrngVersion = 1;

class Prng {
 public:
  // Seeds the 256-bit state with four consecutive splitmix64 outputs of `seed`, as the
  // xoshiro authors recommend: any seed (0 included) gives a well-mixed, non-zero state.
  explicit Prng(uint64_t seed) {
    uint64_t x = seed;
    for (uint64_t& word : state_) word = SplitMix64(x);
  }

  // A generator with an exact state, for pinning against the reference implementation.
  // The state must not be all zero (xoshiro's one absorbing state).
  [[nodiscard]] static Prng FromState(const std::array<uint64_t, 4>& state) {
    SQLOOP_CHECK((state[0] | state[1] | state[2] | state[3]) != 0,
                 "Prng::FromState: an all-zero state only ever yields zeros");
    Prng prng(0);
    prng.state_ = state;
    return prng;
  }

  // One step of splitmix64 (advances `x`). Public because it is also a good 64-bit mixer.
  [[nodiscard]] static uint64_t SplitMix64(uint64_t& x) {
    x += 0x9e3779b97f4a7c15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // The next 64 uniformly distributed bits (xoshiro256**).
  [[nodiscard]] uint64_t Next() {
    const uint64_t result = RotateLeft(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = RotateLeft(state_[3], 45);
    return result;
  }

  // Uniform in [0, bound), without modulo bias: Lemire's multiply-shift ("Fast Random Integer
  // Generation in an Interval", 2019). The high half of next * bound is the candidate; the low
  // half tells whether it falls in the over-represented sliver, which is rejected and redrawn.
  // Expected draws: below 1 + bound / 2^64. `bound` must be positive.
  [[nodiscard]] uint64_t Below(uint64_t bound) {
    SQLOOP_CHECK(bound > 0, "Prng::Below: the range [0, 0) is empty");
    Uint128 product = static_cast<Uint128>(Next()) * bound;
    uint64_t low = static_cast<uint64_t>(product);
    if (low < bound) {
      // 2^64 mod bound, computed in 64 bits: the count of low halves that would bias the result.
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        product = static_cast<Uint128>(Next()) * bound;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }

  // Uniform in [min, max], both inclusive. `min <= max`.
  [[nodiscard]] uint64_t Range(uint64_t min, uint64_t max) {
    SQLOOP_CHECK(min <= max, "Prng::Range: min must not exceed max");
    const uint64_t span = max - min;
    if (span == UINT64_MAX) return Next();
    return min + Below(span + 1);
  }

  // Uniform in [0, 1) with 53 bits of precision (every value is an exact double).
  [[nodiscard]] double Unit() { return static_cast<double>(Next() >> 11) * kTwoToMinus53; }

  // True with `probability` (clamped to [0, 1]). Always consumes exactly one draw (invariant 2).
  // Exact: the 53-bit draw is compared with probability * 2^53, a power-of-two scaling that
  // IEEE arithmetic performs without rounding on every platform.
  [[nodiscard]] bool Chance(double probability) {
    const uint64_t draw = Next() >> 11;
    return static_cast<double>(draw) < probability * kTwoTo53;
  }

  // A child generator seeded from this stream, for a component that should draw independently
  // (its own number of draws then never shifts this stream). Consumes one draw.
  [[nodiscard]] Prng Fork() { return Prng(Next()); }

  [[nodiscard]] const std::array<uint64_t, 4>& state() const { return state_; }

 private:
  // __extension__ keeps -Wpedantic quiet about the GCC/Clang 128-bit type, which both
  // compilers we support (gcc 12, clang 14) provide on every 64-bit target.
  __extension__ using Uint128 = unsigned __int128;

  static constexpr double kTwoTo53 = 9007199254740992.0;
  static constexpr double kTwoToMinus53 = 1.0 / kTwoTo53;

  [[nodiscard]] static uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  std::array<uint64_t, 4> state_{};
};

}  // namespace sqloop::io

#endif  // SQLOOP_IO_PRNG_H_
