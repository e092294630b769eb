// Requantization of integer accumulators: the output stage of a fixed-point accelerator.
//
// For output channel n with accumulator fractional length fa[n] (= fl_x + fl_w[n]), bias
// fractional length fb and output fractional length fo, let F = max(fa[n], fb) and
//   t = acc * 2^(F - fa[n]) + bias[n] * 2^(F - fb)          (exact, int64)
//   y = saturate(round(t / 2^(F - fo)))                       (arithmetic shift + rounding)
// A negative shift F - fo is a saturating left shift. This is bit for bit the DFP
// fake-quant of the float layer whenever the float accumulation is exact.
#ifndef KERASQ_OPS_CC_REQUANTIZE_H_
#define KERASQ_OPS_CC_REQUANTIZE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "rounding.h"

namespace kerasq {

struct Requantizer {
  std::vector<int> acc_lshift;     // per channel
  std::vector<int64_t> bias_term;  // per channel, at scale 2^-F
  std::vector<int> rshift;         // per channel, F - fo (may be negative)
  int64_t lo = 0, hi = 0;
  Rounding rounding = Rounding::kNearest;
  uint64_t stream = 0;

  // Returns an empty string on success, else the reason.
  std::string Init(int64_t channels, const int32_t* acc_frac, bool per_channel_frac,
                   const int32_t* bias, bool has_bias, int bias_frac, int out_frac,
                   int out_bitwidth, bool out_signed, double acc_bound) {
    acc_lshift.resize(channels);
    bias_term.resize(channels);
    rshift.resize(channels);
    if (out_bitwidth < 1 || out_bitwidth > 32) return "out_bitwidth must be in [1, 32]";
    acc_max = acc_bound;
    lo = out_signed ? -(int64_t{1} << (out_bitwidth - 1)) : 0;
    hi = out_signed ? (int64_t{1} << (out_bitwidth - 1)) - 1 : (int64_t{1} << out_bitwidth) - 1;
    for (int64_t n = 0; n < channels; ++n) {
      const int fa = acc_frac[per_channel_frac ? n : 0];
      const int F = has_bias ? std::max(fa, bias_frac) : fa;
      acc_lshift[n] = F - fa;
      if (acc_bound * static_cast<double>(int64_t{1} << std::min(acc_lshift[n], 62)) > 4.0e18 ||
          acc_lshift[n] > 62)
        return "bias_frac is too far above the accumulator's fractional length for int64";
      if (has_bias) {
        const int bl = F - bias_frac;
        if (bl > 30) return "bias fractional length is too far below the accumulator's";
        bias_term[n] = static_cast<int64_t>(bias[n]) * (int64_t{1} << bl);
      } else {
        bias_term[n] = 0;
      }
      rshift[n] = F - out_frac;
      if (rshift[n] > 62) return "out_frac is too far below the accumulator's fractional length";
    }
    return "";
  }

  // Per-channel arrays for the vectorized int32 path (gemm::RequantizeRowInt32).
  std::vector<int64_t> mul, shift64;  // mul holds the left shift of the accumulator
  bool fast = false;  // deterministic mode and every shift in [1, 62]

  // The int32 path (RequantizeRow32): no accumulator left shift, right shifts in [1, 31]
  // and every t = acc + bias (+ 2^(s-1)) provably inside int32, so 16 lanes per vector.
  std::vector<int32_t> bias32, half32, shift32;
  bool fast32 = false;
  double acc_max = 0;

  void PrepareFast() {
    fast32 = rounding != Rounding::kStochastic;
    bias32.resize(rshift.size());
    half32.resize(rshift.size());
    shift32.resize(rshift.size());
    for (size_t n = 0; n < rshift.size() && fast32; ++n) {
      const int s = rshift[n];
      const double top = acc_max + std::abs(static_cast<double>(bias_term[n])) +
                         (s >= 1 && s <= 31 ? std::ldexp(1.0, s - 1) : 0.0) + 1;
      fast32 = acc_lshift[n] == 0 && s >= 1 && s <= 31 && top < 2147483647.0;
      if (!fast32) break;
      bias32[n] = static_cast<int32_t>(bias_term[n]);
      half32[n] = int32_t{1} << (s - 1);
      shift32[n] = s;
    }
    fast = rounding != Rounding::kStochastic;
    mul.resize(rshift.size());
    shift64.resize(rshift.size());
    for (size_t n = 0; n < rshift.size(); ++n) {
      fast = fast && rshift[n] >= 1 && rshift[n] <= 62;
      mul[n] = acc_lshift[n];
      shift64[n] = rshift[n];
    }
  }

  // Requantizes channels [n0, n1) of one row of int32 accumulators (fast32 only).
  template <typename Out>
  void Row32(const int32_t* acc, int64_t n0, int64_t n1, Out* out) const {
    const int32_t* b = bias32.data();
    const int32_t* h = half32.data();
    const int32_t* sh = shift32.data();
    const int32_t l = static_cast<int32_t>(lo), u = static_cast<int32_t>(hi);
    if (rounding == Rounding::kNearest) {
      for (int64_t n = n0; n < n1; ++n) {
        const int32_t t = acc[n] + b[n];
        const int32_t v = (t + h[n] + (t >> 31)) >> sh[n];
        out[n] = static_cast<Out>(v < l ? l : (v > u ? u : v));
      }
    } else if (rounding == Rounding::kNearestEven) {
      for (int64_t n = n0; n < n1; ++n) {
        const int32_t t = acc[n] + b[n];
        const int32_t v = (t + h[n] - 1 + ((t >> sh[n]) & 1)) >> sh[n];
        out[n] = static_cast<Out>(v < l ? l : (v > u ? u : v));
      }
    } else {
      for (int64_t n = n0; n < n1; ++n) {
        const int32_t t = acc[n] + b[n];
        const int32_t v = (t + h[n]) >> sh[n];
        out[n] = static_cast<Out>(v < l ? l : (v > u ? u : v));
      }
    }
  }

  template <Rounding R>
  inline int64_t Apply(int64_t acc, int64_t n, uint64_t index) const {
    const int64_t t = acc * (int64_t{1} << acc_lshift[n]) + bias_term[n];
    const int s = rshift[n];
    int64_t v;
    if (s > 0) {
      v = RoundShiftRight<R>(t, s, stream, index);
    } else if (s == 0) {
      v = t;
    } else if (-s >= 62) {
      v = t > 0 ? hi : (t < 0 ? lo : 0);
    } else {
      const int64_t lim = std::numeric_limits<int64_t>::max() >> -s;
      v = t > lim ? std::numeric_limits<int64_t>::max()
                  : (t < -lim ? std::numeric_limits<int64_t>::min() : t * (int64_t{1} << -s));
    }
    return std::min(std::max(v, lo), hi);
  }
};

}  // namespace kerasq

#endif  // KERASQ_OPS_CC_REQUANTIZE_H_
