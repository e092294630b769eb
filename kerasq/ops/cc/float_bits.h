// Exact binary floating-point helpers, matching kerasq.numerics._float bit for bit:
// power-of-two scaling by factors built from their bit patterns (never exp2/pow),
// floor(log2|a|) read from the exponent field, and subnormal flushing (TF's CPU
// kernels run flush-to-zero, and kerasq.numerics flushes explicitly).
#ifndef KERASQ_OPS_CC_FLOAT_BITS_H_
#define KERASQ_OPS_CC_FLOAT_BITS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace kerasq {

template <typename T>
struct FloatTraits;

template <>
struct FloatTraits<float> {
  using Bits = uint32_t;
  static constexpr int kMant = 23, kBias = 127, kExpMask = 0xFF, kMaxExp = 127;
};

template <>
struct FloatTraits<double> {
  using Bits = uint64_t;
  static constexpr int kMant = 52, kBias = 1023, kExpMask = 0x7FF, kMaxExp = 1023;
};

// 2^k for a normal exponent k (|k| <= kBias - 1).
template <typename T>
inline T Pow2(int k) {
  using Tr = FloatTraits<T>;
  const typename Tr::Bits bits = static_cast<typename Tr::Bits>(k + Tr::kBias) << Tr::kMant;
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Two same-sign normal factors whose product is 2^k: x*f.first*f.second is the exact,
// correctly flushed/overflowed x*2^k (the partial product moves monotonically), the same
// result as numerics' three-factor ldexp. |k| is limited to 2*(bias-1).
template <typename T>
struct Pow2Pair {
  T first, second;
  explicit Pow2Pair(int k) {
    const int lim = 2 * (FloatTraits<T>::kBias - 1);
    k = std::min(std::max(k, -lim), lim);
    const int a = k / 2;
    first = Pow2<T>(a);
    second = Pow2<T>(k - a);
  }
};

// floor(log2 a) from the exponent field: exact for positive normal a (-bias for zero).
template <typename T>
inline int FloorLog2(T a) {
  using Tr = FloatTraits<T>;
  typename Tr::Bits bits;
  std::memcpy(&bits, &a, sizeof(T));
  return static_cast<int>((bits >> Tr::kMant) & Tr::kExpMask) - Tr::kBias;
}

// ceil(log2 a) of a float from its bit pattern, as kerasq's quantizers compute it in TF
// (kerasq.numerics.dfp.dfp_frac_bits_float32): the exponent field, plus one when any mantissa
// bit is set (the carry; int32 arithmetic wraps as TF's); 0 below the smallest normal float
// and for NaN.
inline int32_t CeilLog2FromBits(float a) {
  int32_t bits;
  std::memcpy(&bits, &a, sizeof(bits));
  const int32_t sum = static_cast<int32_t>(static_cast<uint32_t>(bits) + ((1u << 23) - 1u));
  return a >= std::numeric_limits<float>::min() ? (sum >> 23) - 127 : 0;
}

template <typename T>
inline T Flush(T x) {
  return std::fabs(x) < std::numeric_limits<T>::min() ? x * T(0) : x;
}

}  // namespace kerasq

#endif  // KERASQ_OPS_CC_FLOAT_BITS_H_
