// Rounding modes shared by the fake-quant and the integer kernels.
//
// Float modes map y (already scaled to the integer grid) to an integer-valued float:
//   NEAREST       round half away from zero (C round(), Caffe's CPU path)
//   NEAREST_EVEN  round half to even (rint() under the default FP mode, Caffe's GPU path)
//   HALF_UP       floor(y + 1/2), computed exactly as floor(y) + [y - floor(y) >= 1/2]
//   STOCHASTIC    floor(y + u), u ~ U[0, 1) from the counter-based generator, computed
//                 exactly as floor(y) + [u < y - floor(y)] (never rounds y + u)
// (the same exact formulations as kerasq.numerics.rounding; y - floor(y) is exact).
// Integer modes divide t by 2^s (s > 0) with the same rule, exactly.
#ifndef KERASQ_OPS_CC_ROUNDING_H_
#define KERASQ_OPS_CC_ROUNDING_H_

#include <cmath>
#include <cstdint>
#include <string>

#include "counter_rng.h"

namespace kerasq {

enum class Rounding { kNearest = 0, kNearestEven = 1, kHalfUp = 2, kStochastic = 3 };

inline bool ParseRounding(const std::string& name, Rounding* out) {
  if (name == "nearest") { *out = Rounding::kNearest; return true; }
  if (name == "nearest_even") { *out = Rounding::kNearestEven; return true; }
  if (name == "half_up") { *out = Rounding::kHalfUp; return true; }
  if (name == "stochastic") { *out = Rounding::kStochastic; return true; }
  return false;
}

// Branch-free so that the element loops vectorize; exact for every finite y
// (y - trunc(y) is exact by Sterbenz's lemma).
template <typename T>
inline T RoundHalfAway(T y) {
  const T r = std::trunc(y);
  const T d = y - r;
  return std::fabs(d) >= T(0.5) ? r + std::copysign(T(1), y) : r;
}

template <Rounding R, typename T>
inline T RoundFloat(T y, uint64_t stream, uint64_t index) {
  if constexpr (R == Rounding::kNearest) {
    return RoundHalfAway(y);
  } else if constexpr (R == Rounding::kNearestEven) {
    return std::nearbyint(y);
  } else if constexpr (R == Rounding::kHalfUp) {
    const T low = std::floor(y);
    return (y - low) >= T(0.5) ? low + T(1) : low;
  } else {
    const T low = std::floor(y);
    return CounterUniform<T>(stream, index) < (y - low) ? low + T(1) : low;
  }
}

// t / 2^s rounded with mode R, for 0 < s <= 62; exact integer arithmetic.
template <Rounding R>
inline int64_t RoundShiftRight(int64_t t, int s, uint64_t stream, uint64_t index) {
  const int64_t half = int64_t{1} << (s - 1);
  if constexpr (R == Rounding::kNearest) {
    return t >= 0 ? (t + half) >> s : -((-t + half) >> s);
  } else if constexpr (R == Rounding::kNearestEven) {
    const int64_t q = t >> s;  // floor
    const int64_t rem = t - (q << s);
    return (rem > half || (rem == half && (q & 1))) ? q + 1 : q;
  } else if constexpr (R == Rounding::kHalfUp) {
    return (t + half) >> s;
  } else {
    const uint64_t mask = (uint64_t{1} << s) - 1;
    return (t + static_cast<int64_t>(CounterBits(stream, index) & mask)) >> s;
  }
}

}  // namespace kerasq

#endif  // KERASQ_OPS_CC_ROUNDING_H_
