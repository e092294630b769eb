// Counter-based uniform numbers for stochastic rounding.
//
// u(seed, i) depends only on the seed and the element's flat index, never on the
// thread that computes it or the order of evaluation, so stochastic results are
// reproducible and independent of the intra-op thread count. The generator is
// SplitMix64 (Steele, Lea, Flood 2014) evaluated at counter i of the stream whose
// start is the mixed seed: a bijective 64-bit finalizer of (start + (i+1)*gamma).
#ifndef KERASQ_OPS_CC_COUNTER_RNG_H_
#define KERASQ_OPS_CC_COUNTER_RNG_H_

#include <cstdint>

namespace kerasq {

inline uint64_t SplitMix64Finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The stream start for a user seed (mixed so that nearby seeds are unrelated).
inline uint64_t StreamStart(int64_t seed) {
  return SplitMix64Finalize(static_cast<uint64_t>(seed) ^ 0x6A09E667F3BCC909ULL);
}

inline uint64_t CounterBits(uint64_t start, uint64_t index) {
  return SplitMix64Finalize(start + (index + 1) * 0x9E3779B97F4A7C15ULL);
}

// Uniform in [0, 1) with the full precision of T (24 bits for float, 53 for double).
template <typename T>
inline T CounterUniform(uint64_t start, uint64_t index);

template <>
inline float CounterUniform<float>(uint64_t start, uint64_t index) {
  return static_cast<float>(CounterBits(start, index) >> 40) * (1.0f / 16777216.0f);
}

template <>
inline double CounterUniform<double>(uint64_t start, uint64_t index) {
  return static_cast<double>(CounterBits(start, index) >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace kerasq

#endif  // KERASQ_OPS_CC_COUNTER_RNG_H_
