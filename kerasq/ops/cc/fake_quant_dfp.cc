// Kerasq>FakeQuantDfp and Kerasq>FakeQuantDfpGrad: dynamic fixed point fake quantization.
//
// Forward, per element with fractional length fl (per tensor, or per channel along the
// last axis):  q = round(clamp(x * 2^fl, lo, hi));  y = q * 2^-fl
// with [lo, hi] = [-2^(B-1), 2^(B-1)-1] (signed) or [0, 2^B-1] (unsigned), hi cut to the
// largest T not above it (float32, B > 24), subnormal inputs/outputs flushed, exactly as
// kerasq.numerics.dfp_quantize (a zero result is +0). Gradient (clipped straight-through): dx = dy where
// lo <= x * 2^fl <= hi, else 0.
//
// relu=true fuses a ReLU in front: the ops compute the quantization of max(x, 0) and the
// gradient of both, exactly: lo becomes 0 (clamp(max(x, 0) * 2^fl, lo, hi) ==
// clamp(x * 2^fl, 0, hi) for 2^fl > 0), and the gradient's condition becomes
// x > 0 and x * 2^fl <= hi (TF's ReluGrad passes dy where x > 0).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <string>
#include <vector>

#include "clip_mask.h"
#include "counter_rng.h"
#include "float_bits.h"
#include "rounding.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#endif

namespace kerasq {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;

namespace {

constexpr char kRoundingAttr[] =
    "rounding: {'nearest', 'nearest_even', 'half_up', 'stochastic'} = 'nearest'";

Status FracBitsShape(InferenceContext* c) {
  tensorflow::shape_inference::ShapeHandle frac;
  TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(1), 1, &frac));
  c->set_output(0, c->input(0));
  return tensorflow::OkStatus();
}

}  // namespace

static Status MaskedShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(FracBitsShape(c));
  const int64_t n = c->Value(c->NumElements(c->input(0)));
  c->set_output(1, c->Vector(n < 0 ? InferenceContext::kUnknownDim : ClipMaskBytes(n)));
  return tensorflow::OkStatus();
}

REGISTER_OP("Kerasq>FakeQuantDfp")
    .Input("x: T")
    .Input("frac_bits: int32")
    .Input("seed: int64")
    .Output("y: T")
    .Attr("T: {float, double}")
    .Attr("bitwidth: int >= 1")
    .Attr("signed: bool = true")
    .Attr(kRoundingAttr)
    .Attr("relu: bool = false")
    .SetShapeFn(FracBitsShape)
    .Doc(R"doc(
Dynamic fixed point fake quantization: y = clamp(round(x * 2^fl), lo, hi) * 2^-fl.
frac_bits has shape [] (per tensor) or [C] with C the size of the last axis of x.
seed is used by rounding='stochastic' only (counter-based, thread-count independent).
relu: quantize max(x, 0) instead of x (a ReLU fused in front).
)doc");

REGISTER_OP("Kerasq>FakeQuantDfpMasked")
    .Input("x: T")
    .Input("frac_bits: int32")
    .Input("seed: int64")
    .Output("y: T")
    .Output("clip_mask: uint8")
    .Attr("T: {float, double}")
    .Attr("bitwidth: int >= 1")
    .Attr("signed: bool = true")
    .Attr(kRoundingAttr)
    .Attr("relu: bool = false")
    .SetShapeFn(MaskedShape)
    .Doc(R"doc(
Kerasq>FakeQuantDfp that also writes the clip mask for Kerasq>ClipMaskGrad: bit i of
clip_mask (byte i / 8, bit i % 8, flat index i) is 1 where lo <= x * 2^fl <= hi (relu:
where x > 0 and x * 2^fl <= hi, the gradient of the fused ReLU and quantization).
)doc");

REGISTER_OP("Kerasq>FakeQuantDfpMaskedDynamicSign")
    .Input("x: T")
    .Input("frac_bits: int32")
    .Input("seed: int64")
    .Input("is_signed: bool")
    .Output("y: T")
    .Output("clip_mask: uint8")
    .Attr("T: {float, double}")
    .Attr("bitwidth: int >= 1")
    .Attr(kRoundingAttr)
    .Attr("relu: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle flag;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &flag));
      return MaskedShape(c);
    })
    .Doc(R"doc(
Kerasq>FakeQuantDfpMasked with the grid's signedness read from the scalar is_signed at run
time instead of an attribute (an activation quantizer whose grid is unsigned while its
range stays non-negative): one op where a cond between two ops would be.
)doc");

REGISTER_OP("Kerasq>DfpWeightQuantize")
    .Input("w: float")
    .Input("seed: int64")
    .Output("y: float")
    .Output("clip_mask: uint8")
    .Output("frac_bits: float")
    .Output("w_min: float")
    .Output("w_max: float")
    .Attr("bitwidth: int >= 1")
    .Attr(kRoundingAttr)
    .Attr("per_channel: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      const int64_t n = c->Value(c->NumElements(c->input(0)));
      c->set_output(1, c->Vector(n < 0 ? InferenceContext::kUnknownDim : ClipMaskBytes(n)));
      bool per_channel = true;
      TF_RETURN_IF_ERROR(c->GetAttr("per_channel", &per_channel));
      tensorflow::shape_inference::ShapeHandle state = c->Scalar();
      if (per_channel) {
        tensorflow::shape_inference::ShapeHandle w;
        TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &w));
        state = c->Vector(c->Dim(w, -1));
      }
      for (int i = 2; i < 5; ++i) c->set_output(i, state);
      return tensorflow::OkStatus();
    })
    .Doc(R"doc(
A DFP weight quantizer's training step in one op: per channel (the last axis; the whole
tensor when per_channel is false) w_min = min w, w_max = max w (NaN propagates),
fl = B - 1 - ceil(log2 max(|w_min|, |w_max|)) (ceil(log2 a) := 0 below the smallest normal
float, as kerasq's quantizers compute it from the bit pattern), then y and clip_mask as
Kerasq>FakeQuantDfpMasked with that fl on the signed grid. frac_bits is returned as float.
)doc");

REGISTER_OP("Kerasq>FakeQuantDfpGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("frac_bits: int32")
    .Output("dx: T")
    .Attr("T: {float, double}")
    .Attr("bitwidth: int >= 1")
    .Attr("signed: bool = true")
    .Attr("relu: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    })
    .Doc("Clipped straight-through gradient of Kerasq>FakeQuantDfp.");

namespace {

// Per-channel constants (structure of arrays, so the channel loop vectorizes): exact
// power-of-two factor pairs, x * 2^fl = x * up1 * up2 and q * 2^-fl = q * down1 * down2,
// and the integer clip range. relu: lo is 0 and the gradient's lower condition is x > 0.
// single_factor: every |fl| <= 126, so 2^fl and 2^-fl are normal floats and up / down hold
// them (x * 2^fl in one multiply, the same value as the pair; q * 2^-fl is 0 or normal).
template <typename T>
struct DfpParams {
  std::vector<T> up1, up2, down1, down2, up, down;
  T lo = 0, hi = 0;
  bool relu = false;
  bool single_factor = true;
  int64_t channels = 1;
};

// The gradient's condition for one element, fx = Flush(x) and s = fx * 2^fl.
template <typename T>
inline bool InsideClip(T fx, T s, T lo, T hi, bool relu) {
  return (relu ? fx > T(0) : s >= lo) & (s <= hi);
}

template <typename T>
Status MakeParams(const Tensor& frac_bits, int64_t last_dim, int bitwidth, bool is_signed,
                  bool relu, DfpParams<T>* out) {
  if (frac_bits.dims() > 1) return InvalidArgument("frac_bits must have shape [] or [C]");
  const int64_t channels = frac_bits.dims() == 0 ? 1 : frac_bits.dim_size(0);
  if (frac_bits.dims() == 1 && channels != last_dim) {
    return InvalidArgument("per-channel frac_bits has ", channels,
                           " entries but the last axis of x has ", last_dim);
  }
  const double lo = is_signed && !relu ? -std::ldexp(1.0, bitwidth - 1) : 0.0;
  const double hi = is_signed ? std::ldexp(1.0, bitwidth - 1) - 1.0 : std::ldexp(1.0, bitwidth) - 1.0;
  auto fl = frac_bits.flat<int32_t>();
  out->channels = channels;
  for (auto* v : {&out->up1, &out->up2, &out->down1, &out->down2, &out->up, &out->down})
    v->resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const Pow2Pair<T> up(fl(c)), down(-fl(c));
    out->up1[c] = up.first;
    out->up2[c] = up.second;
    out->down1[c] = down.first;
    out->down2[c] = down.second;
    if (fl(c) < -126 || fl(c) > 126) {
      out->single_factor = false;
    } else {
      out->up[c] = Pow2<T>(fl(c));
      out->down[c] = Pow2<T>(-fl(c));
    }
  }
  out->lo = static_cast<T>(lo);
  out->hi = static_cast<T>(hi);  // nearest T, as Ristretto's float max_data (2^31 for B=32)
  out->relu = relu;
  return tensorflow::OkStatus();
}

template <Rounding R, typename T>
inline T DfpElement(T x, T up1, T up2, T down1, T down2, T lo, T hi, uint64_t stream,
                    uint64_t index) {
  const T y = std::min(std::max(Flush(x) * up1 * up2, lo), hi);
  const T q = RoundFloat<R, T>(y, stream, index) + T(0);  // +0: the integer 0 has no sign
  return Flush(q * down1 * down2);
}

template <Rounding R, typename T>
void DfpRange(const T* x, T* y, int64_t begin, int64_t end, const DfpParams<T>& p,
              uint64_t stream) {
  const T lo = p.lo, hi = p.hi;
  if (p.channels == 1) {
    const T u1 = p.up1[0], u2 = p.up2[0], d1 = p.down1[0], d2 = p.down2[0];
    for (int64_t i = begin; i < end; ++i)
      y[i] = DfpElement<R, T>(x[i], u1, u2, d1, d2, lo, hi, stream, i);
    return;
  }
  const T *u1 = p.up1.data(), *u2 = p.up2.data(), *d1 = p.down1.data(), *d2 = p.down2.data();
  const int64_t nc = p.channels;
  for (int64_t row = begin; row < end; row += nc) {  // [begin, end) are whole rows
    const T* xr = x + row;
    T* yr = y + row;
    for (int64_t c = 0; c < nc; ++c)
      yr[c] = DfpElement<R, T>(xr[c], u1[c], u2[c], d1[c], d2[c], lo, hi, stream, row + c);
  }
}

// One element of the masked forward: the output, and in *flag the clip flag (1 where
// lo <= x * 2^fl <= hi, the gradient's condition, see InsideClip; 0 for NaN), from the
// same scaled value, so x is read once.
template <Rounding R, typename T>
inline T DfpElementFlag(T x, T up1, T up2, T down1, T down2, T lo, T hi, bool relu,
                        uint64_t stream, uint64_t index, uint8_t* flag) {
  const T fx = Flush(x);
  const T s = fx * up1 * up2;
  *flag = InsideClip(fx, s, lo, hi, relu);
  const T q = RoundFloat<R, T>(std::min(std::max(s, lo), hi), stream, index) + T(0);
  return Flush(q * down1 * down2);
}

// Clip flags of whole rows [begin, end) of a per-channel op into flags[0, end - begin).
// (A separate pass over the in-cache chunk: fused into the row loop of DfpRange, GCC does
// not vectorize it.)
template <typename T>
void DfpClipFlagRows(const T* x, uint8_t* flags, int64_t begin, int64_t end,
                     const DfpParams<T>& p) {
  const T lo = p.lo, hi = p.hi;
  const T *u1 = p.up1.data(), *u2 = p.up2.data();
  const int64_t nc = p.channels;
  const bool relu = p.relu;
  for (int64_t row = begin; row < end; row += nc) {
    uint8_t* fr = flags + (row - begin);
    for (int64_t c = 0; c < nc; ++c) {
      const T fx = Flush(x[row + c]);
      fr[c] = InsideClip(fx, fx * u1[c] * u2[c], lo, hi, relu);
    }
  }
}

// Per-tensor masked forward over [begin, end), begin a multiple of 64: blocks of kBlock
// elements whose flags stay in registers/L1 and are packed right away.
template <Rounding R, typename T>
void DfpMaskedFlat(const T* x, T* y, uint8_t* mask, int64_t begin, int64_t end,
                   const DfpParams<T>& p, uint64_t stream) {
  constexpr int64_t kBlock = 256;
  const T lo = p.lo, hi = p.hi;
  const T u1 = p.up1[0], u2 = p.up2[0], d1 = p.down1[0], d2 = p.down2[0];
  alignas(64) uint8_t flags[kBlock];
  int64_t b = begin;
  for (; b + kBlock <= end; b += kBlock) {
    for (int64_t j = 0; j < kBlock; ++j)
      y[b + j] = DfpElementFlag<R, T>(x[b + j], u1, u2, d1, d2, lo, hi, p.relu, stream,
                                      b + j, flags + j);
    PackClipBits(flags, kBlock, mask + b / 8);
  }
  if (b < end) {
    const int64_t m = end - b;
    for (int64_t j = 0; j < m; ++j)
      y[b + j] = DfpElementFlag<R, T>(x[b + j], u1, u2, d1, d2, lo, hi, p.relu, stream,
                                      b + j, flags + j);
    PackClipBits(flags, m, mask + b / 8);
  }
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// The float32 masked forward with AVX-512 (per tensor, or per channel with a channel count
// that is a multiple of 16), 16 elements per step: the clip
// flags come straight from the compare mask (16 mask bits per step, no byte flags), and
// stochastic rounding draws the 16 counter values with 64-bit lane arithmetic. Every
// operation is the scalar DfpElementFlag's, in the same order, so the results are the
// same bits:
//   Flush(v)        |v| < FLT_MIN ? v * 0 : v               (NaN passes through)
//   max(s, lo)      (s < lo) ? lo : s  == vmaxps(lo, s)      (vmaxps returns its second
//   min(m, hi)      (hi < m) ? hi : m  == vminps(hi, m)       operand for NaN, as the std)
namespace avx512 {

inline __m512 Flush(__m512 v) {
  const __m512 a = _mm512_abs_ps(v);
  const __mmask16 tiny = _mm512_cmp_ps_mask(a, _mm512_set1_ps(std::numeric_limits<float>::min()),
                                            _CMP_LT_OQ);
  return _mm512_mask_mul_ps(v, tiny, v, _mm512_setzero_ps());
}

// SplitMix64Finalize on 8 lanes.
inline __m512i Finalize(__m512i z) {
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
                         _mm512_set1_epi64(static_cast<int64_t>(0xBF58476D1CE4E5B9ULL)));
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                         _mm512_set1_epi64(static_cast<int64_t>(0x94D049BB133111EBULL)));
  return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

// CounterUniform<float> of the 16 counters whose SplitMix64 inputs are z_lo (elements
// 0..7) and z_hi (8..15): (bits >> 40) < 2^24 converts to float exactly.
inline __m512 Uniform16(__m512i z_lo, __m512i z_hi) {
  const __m256i a = _mm512_cvtepi64_epi32(_mm512_srli_epi64(Finalize(z_lo), 40));
  const __m256i b = _mm512_cvtepi64_epi32(_mm512_srli_epi64(Finalize(z_hi), 40));
  const __m512i ab = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
  return _mm512_mul_ps(_mm512_cvtepi32_ps(ab), _mm512_set1_ps(1.0f / 16777216.0f));
}

// The SplitMix64 inputs start + (i + 1) * gamma of the 16 elements from flat index i,
// advanced by 16 * gamma per step of 16 elements (the same values mod 2^64).
struct Counters16 {
  __m512i lo, hi, step;
  Counters16(uint64_t stream, int64_t i) {
    const uint64_t gamma = 0x9E3779B97F4A7C15ULL;
    const __m512i lane = _mm512_set_epi64(8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i base =
        _mm512_set1_epi64(static_cast<int64_t>(stream + static_cast<uint64_t>(i) * gamma));
    lo = _mm512_add_epi64(base, _mm512_mullo_epi64(lane, _mm512_set1_epi64(int64_t(gamma))));
    hi = _mm512_add_epi64(lo, _mm512_set1_epi64(static_cast<int64_t>(8 * gamma)));
    step = _mm512_set1_epi64(static_cast<int64_t>(16 * gamma));
  }
  void Advance() {
    lo = _mm512_add_epi64(lo, step);
    hi = _mm512_add_epi64(hi, step);
  }
};

// Whether this thread reads subnormal inputs as zero (MXCSR.DAZ, set with FTZ on TF's
// executor and intra-op threads): then the hardware does the input Flush.
inline bool DenormalsAreZero() { return (_mm_getcsr() & 0x0040u) != 0; }

// 16 elements from x + i (the `live` ones), i a multiple of 8: y and the mask bits.
// kLean (DAZ on and DfpParams::single_factor; u1 = 2^fl, d1 = 2^-fl, u2/d2 unused): no
// Flush of the input (DAZ reads a subnormal as the zero of its sign, in the multiply and
// the compares alike) nor of the output (q * 2^-fl is 0 or at least 2^-126), one multiply
// each way; the same values as the full form.
template <Rounding R, bool kLean = false>
inline void Step16(const float* x, float* y, uint8_t* mask, int64_t i, __mmask16 live,
                   __m512 u1, __m512 u2, __m512 d1, __m512 d2, __m512 lo, __m512 hi,
                   bool relu, const Counters16* ctr) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f),
               half = _mm512_set1_ps(0.5f);
  const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
  const __m512 fv = kLean ? v : Flush(v);
  const __m512 s = kLean ? _mm512_mul_ps(v, u1) : _mm512_mul_ps(_mm512_mul_ps(fv, u1), u2);
  const __mmask16 above = relu ? _mm512_cmp_ps_mask(fv, zero, _CMP_GT_OQ)
                               : _mm512_cmp_ps_mask(s, lo, _CMP_GE_OQ);
  const __mmask16 in = above & _mm512_cmp_ps_mask(s, hi, _CMP_LE_OQ) & live;
  const __m512 c = _mm512_min_ps(hi, _mm512_max_ps(lo, s));
  __m512 q;
  if constexpr (R == Rounding::kNearestEven) {
    q = _mm512_roundscale_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  } else if constexpr (R == Rounding::kNearest) {
    const __m512 r = _mm512_roundscale_ps(c, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 d = _mm512_sub_ps(c, r);
    const __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(d), half, _CMP_GE_OQ);
    const __m512 sign_one = _mm512_or_ps(
        _mm512_and_ps(c, _mm512_castsi512_ps(_mm512_set1_epi32(int32_t(0x80000000u)))), one);
    q = _mm512_mask_add_ps(r, away, r, sign_one);
  } else if constexpr (R == Rounding::kHalfUp) {
    const __m512 low = _mm512_roundscale_ps(c, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(c, low), half, _CMP_GE_OQ);
    q = _mm512_mask_add_ps(low, up, low, one);
  } else {
    const __m512 low = _mm512_roundscale_ps(c, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 u = Uniform16(ctr->lo, ctr->hi);
    const __mmask16 up = _mm512_cmp_ps_mask(u, _mm512_sub_ps(c, low), _CMP_LT_OQ);
    q = _mm512_mask_add_ps(low, up, low, one);
  }
  q = _mm512_add_ps(q, zero);  // the integer 0 has no sign
  _mm512_mask_storeu_ps(y + i, live, kLean ? _mm512_mul_ps(q, d1)
                                           : Flush(_mm512_mul_ps(_mm512_mul_ps(q, d1), d2)));
  // Whole mask bytes; a partial last byte zero-padded (bits of dead lanes are 0).
  const uint16_t bits = in;
  mask[i / 8] = static_cast<uint8_t>(bits);
  if (live > 0xFF) mask[i / 8 + 1] = static_cast<uint8_t>(bits >> 8);
}

// Per tensor over [begin, end), begin a multiple of 64.
template <Rounding R, bool kLean>
void DfpMaskedFlatF32Loop(const float* x, float* y, uint8_t* mask, int64_t begin, int64_t end,
                          const DfpParams<float>& p, uint64_t stream) {
  const __m512 u1 = _mm512_set1_ps(kLean ? p.up[0] : p.up1[0]), u2 = _mm512_set1_ps(p.up2[0]);
  const __m512 d1 = _mm512_set1_ps(kLean ? p.down[0] : p.down1[0]);
  const __m512 d2 = _mm512_set1_ps(p.down2[0]);
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  Counters16 ctr(stream, begin);
  for (int64_t i = begin; i < end; i += 16) {
    const int64_t m = std::min<int64_t>(16, end - i);
    const __mmask16 live = m == 16 ? __mmask16(0xFFFF) : __mmask16((1u << m) - 1);
    Step16<R, kLean>(x, y, mask, i, live, u1, u2, d1, d2, lo, hi, p.relu, &ctr);
    if constexpr (R == Rounding::kStochastic) ctr.Advance();
  }
}

template <Rounding R>
void DfpMaskedFlatF32(const float* x, float* y, uint8_t* mask, int64_t begin, int64_t end,
                      const DfpParams<float>& p, uint64_t stream) {
  if (p.single_factor && DenormalsAreZero())
    return DfpMaskedFlatF32Loop<R, true>(x, y, mask, begin, end, p, stream);
  DfpMaskedFlatF32Loop<R, false>(x, y, mask, begin, end, p, stream);
}

// Per channel, channel count a multiple of 16, over whole rows [begin, end), begin a
// multiple of 64.
template <Rounding R, bool kLean>
void DfpMaskedRowsF32Loop(const float* x, float* y, uint8_t* mask, int64_t begin, int64_t end,
                          const DfpParams<float>& p, uint64_t stream) {
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const float* up = kLean ? p.up.data() : p.up1.data();
  const float* down = kLean ? p.down.data() : p.down1.data();
  const int64_t nc = p.channels;
  Counters16 ctr(stream, begin);
  for (int64_t row = begin; row < end; row += nc) {
    for (int64_t c = 0; c < nc; c += 16) {
      Step16<R, kLean>(x, y, mask, row + c, __mmask16(0xFFFF), _mm512_loadu_ps(up + c),
                       _mm512_loadu_ps(p.up2.data() + c), _mm512_loadu_ps(down + c),
                       _mm512_loadu_ps(p.down2.data() + c), lo, hi, p.relu, &ctr);
      if constexpr (R == Rounding::kStochastic) ctr.Advance();
    }
  }
}

template <Rounding R>
void DfpMaskedRowsF32(const float* x, float* y, uint8_t* mask, int64_t begin, int64_t end,
                      const DfpParams<float>& p, uint64_t stream) {
  if (p.single_factor && DenormalsAreZero())
    return DfpMaskedRowsF32Loop<R, true>(x, y, mask, begin, end, p, stream);
  DfpMaskedRowsF32Loop<R, false>(x, y, mask, begin, end, p, stream);
}

}  // namespace avx512
#endif

template <typename T>
void DfpGradRange(const T* dy, const T* x, T* dx, int64_t begin, int64_t end,
                  const DfpParams<T>& p) {
  const T lo = p.lo, hi = p.hi;
  const bool relu = p.relu;
  if (p.channels == 1) {
    const T u1 = p.up1[0], u2 = p.up2[0];
    for (int64_t i = begin; i < end; ++i) {
      const T fx = Flush(x[i]);
      const T d = dy[i];
      dx[i] = InsideClip(fx, fx * u1 * u2, lo, hi, relu) ? d : T(0);
    }
    return;
  }
  const T *u1 = p.up1.data(), *u2 = p.up2.data();
  const int64_t nc = p.channels;
  for (int64_t row = begin; row < end; row += nc) {
    for (int64_t c = 0; c < nc; ++c) {
      const T fx = Flush(x[row + c]);
      const T d = dy[row + c];
      dx[row + c] = InsideClip(fx, fx * u1[c] * u2[c], lo, hi, relu) ? d : T(0);
    }
  }
}

// min, max and the signed DFP fl per channel of w (rows of `channels` values), written to
// the three state outputs; fl also as int32 into *fl_int for MakeParams.
Status WeightGrid(OpKernelContext* ctx, const Tensor& w, bool per_channel, int bitwidth,
                  Tensor* fl_int) {
  const int64_t n = w.NumElements();
  const int64_t channels = per_channel ? (w.dims() == 0 ? 1 : w.dim_size(w.dims() - 1)) : 1;
  const TensorShape state = per_channel ? TensorShape({channels}) : TensorShape({});
  Tensor *fl_out = nullptr, *min_out = nullptr, *max_out = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(2, state, &fl_out));
  TF_RETURN_IF_ERROR(ctx->allocate_output(3, state, &min_out));
  TF_RETURN_IF_ERROR(ctx->allocate_output(4, state, &max_out));
  TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_INT32, state, fl_int));
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> lo(channels, inf), hi(channels, -inf);
  std::vector<uint8_t> nan(channels, 0);
  const float* x = w.flat<float>().data();
  for (int64_t row = 0; row < n; row += channels) {
    for (int64_t c = 0; c < channels; ++c) {
      const float v = x[row + c];
      lo[c] = v < lo[c] ? v : lo[c];
      hi[c] = v > hi[c] ? v : hi[c];
      nan[c] |= static_cast<uint8_t>(v != v);
    }
  }
  float* fl = fl_out->flat<float>().data();
  int32_t* fli = fl_int->flat<int32_t>().data();
  for (int64_t c = 0; c < channels; ++c) {
    if (nan[c]) lo[c] = hi[c] = std::numeric_limits<float>::quiet_NaN();
    min_out->flat<float>()(c) = lo[c];
    max_out->flat<float>()(c) = hi[c];
    fli[c] = bitwidth - 1 - CeilLog2FromBits(std::max(std::fabs(lo[c]), std::fabs(hi[c])));
    fl[c] = static_cast<float>(fli[c]);
  }
  return tensorflow::OkStatus();
}

// Runs fn(begin, end) over [0, n) in `granule`-aligned pieces on TF's intra-op pool, at
// least min_elements per piece (see kMinShardElements).
template <typename Fn>
void ParallelOver(OpKernelContext* ctx, int64_t n, int64_t granule, int64_t min_elements,
                  Fn fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t units = (n + granule - 1) / granule;
  tensorflow::Shard(workers->num_threads, workers->workers, units,
                    ShardUnitCost(granule, min_elements),
                    [&](int64_t ub, int64_t ue) { fn(ub * granule, std::min(n, ue * granule)); });
}

}  // namespace

// kDynamicSign: the signedness is input 3 (a bool scalar), not the `signed` attribute.
// kWeightGrid: Kerasq>DfpWeightQuantize (inputs w, seed; fl from w's own range, signed).
template <typename T, bool kMasked, bool kDynamicSign = false, bool kWeightGrid = false>
class FakeQuantDfpOp : public OpKernel {
 public:
  explicit FakeQuantDfpOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bitwidth", &bitwidth_));
    if (kWeightGrid) OP_REQUIRES_OK(ctx, ctx->GetAttr("per_channel", &per_channel_));
    if (!kDynamicSign && !kWeightGrid) OP_REQUIRES_OK(ctx, ctx->GetAttr("signed", &signed_));
    if (!kWeightGrid) OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
    std::string rounding;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rounding", &rounding));
    OP_REQUIRES(ctx, ParseRounding(rounding, &rounding_),
                InvalidArgument("unknown rounding ", rounding));
    OP_REQUIRES(ctx, bitwidth_ >= 1 && bitwidth_ <= 32,
                InvalidArgument("bitwidth must be in [1, 32], got ", bitwidth_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& seed = ctx->input(kWeightGrid ? 1 : 2);
    OP_REQUIRES(ctx, seed.NumElements() == 1, InvalidArgument("seed must be a scalar"));
    Tensor weight_fl;
    if (kWeightGrid) OP_REQUIRES_OK(ctx, WeightGrid(ctx, x, per_channel_, bitwidth_, &weight_fl));
    const Tensor& frac_bits = kWeightGrid ? weight_fl : ctx->input(1);
    bool is_signed = signed_;
    if (kDynamicSign) {
      const Tensor& flag = ctx->input(3);
      OP_REQUIRES(ctx, flag.NumElements() == 1, InvalidArgument("is_signed must be a scalar"));
      is_signed = flag.flat<bool>()(0);
    }
    const int64_t last_dim = x.dims() == 0 ? 1 : x.dim_size(x.dims() - 1);
    DfpParams<T> params;
    OP_REQUIRES_OK(ctx, MakeParams<T>(frac_bits, last_dim, bitwidth_, is_signed, relu_, &params));
    Tensor* y = nullptr;
    // y in x's buffer when nothing else holds x (an activation whose only reader is this
    // op): the lines just read are written back, with no second buffer to fetch. Every
    // path reads an element before it writes it.
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    const int64_t n = x.NumElements();
    if (n == 0) return;
    const T* xp = x.flat<T>().data();
    T* yp = y->flat<T>().data();
    const uint64_t stream = StreamStart(seed.flat<int64_t>()(0));
    const int64_t nch = params.channels;
    uint8_t* maskp = nullptr;
    if (kMasked) {
      Tensor* mask = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({ClipMaskBytes(n)}), &mask));
      maskp = mask->flat<uint8_t>().data();
    }
    const int64_t granule = kMasked ? MaskGranule(nch)
                            : nch == 1 ? 4096 : nch * std::max<int64_t>(1, 4096 / nch);
    auto run = [&](auto mode) {
      constexpr Rounding R = decltype(mode)::value;
      ParallelOver(ctx, n, granule,
                   R == Rounding::kStochastic ? kMinShardElements / 4 : kMinShardElements,
                   [&](int64_t b, int64_t e) {
                     if (!kMasked) return DfpRange<R, T>(xp, yp, b, e, params, stream);
                     if (nch == 1) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
                       if constexpr (std::is_same_v<T, float>)
                         return avx512::DfpMaskedFlatF32<R>(xp, yp, maskp, b, e, params, stream);
#endif
                       return DfpMaskedFlat<R, T>(xp, yp, maskp, b, e, params, stream);
                     }
#if defined(__AVX512F__) && defined(__AVX512DQ__)
                     if constexpr (std::is_same_v<T, float>) {
                       if (nch % 16 == 0)
                         return avx512::DfpMaskedRowsF32<R>(xp, yp, maskp, b, e, params, stream);
                     }
#endif
                     // Chunks of one granule: the flags stay in cache until packed.
                     std::vector<uint8_t> flags(granule);
                     for (int64_t cb = b; cb < e; cb += granule) {
                       const int64_t ce = std::min(e, cb + granule);
                       // flags first: y may overwrite x
                       DfpClipFlagRows<T>(xp, flags.data(), cb, ce, params);
                       DfpRange<R, T>(xp, yp, cb, ce, params, stream);
                       PackClipBits(flags.data(), ce - cb, maskp + cb / 8);
                     }
                   });
    };
    switch (rounding_) {
      case Rounding::kNearest: run(std::integral_constant<Rounding, Rounding::kNearest>()); break;
      case Rounding::kNearestEven:
        run(std::integral_constant<Rounding, Rounding::kNearestEven>());
        break;
      case Rounding::kHalfUp: run(std::integral_constant<Rounding, Rounding::kHalfUp>()); break;
      case Rounding::kStochastic:
        run(std::integral_constant<Rounding, Rounding::kStochastic>());
        break;
    }
  }

 private:
  int bitwidth_ = 8;
  bool signed_ = true;
  bool relu_ = false;
  bool per_channel_ = true;
  Rounding rounding_ = Rounding::kNearest;
};

template <typename T>
class FakeQuantDfpGradOp : public OpKernel {
 public:
  explicit FakeQuantDfpGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bitwidth", &bitwidth_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("signed", &signed_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& frac_bits = ctx->input(2);
    OP_REQUIRES(ctx, dy.shape() == x.shape(),
                InvalidArgument("dy and x must have the same shape"));
    const int64_t last_dim = x.dims() == 0 ? 1 : x.dim_size(x.dims() - 1);
    DfpParams<T> params;
    OP_REQUIRES_OK(ctx, MakeParams<T>(frac_bits, last_dim, bitwidth_, signed_, relu_, &params));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &dx));  // dy's
    const int64_t n = x.NumElements();
    if (n == 0) return;
    const T* xp = x.flat<T>().data();
    const T* dyp = dy.flat<T>().data();
    T* dxp = dx->flat<T>().data();
    const int64_t nch = params.channels;
    const int64_t granule = nch == 1 ? 4096 : nch * std::max<int64_t>(1, 4096 / nch);
    ParallelOver(ctx, n, granule, kMinShardElements, [&](int64_t b, int64_t e) {
      DfpGradRange<T>(dyp, xp, dxp, b, e, params);
    });
  }

 private:
  int bitwidth_ = 8;
  bool signed_ = true;
  bool relu_ = false;
};

#define KERASQ_REGISTER_DFP(T)                                                              \
  REGISTER_KERNEL_BUILDER(                                                                  \
      Name("Kerasq>FakeQuantDfp").Device(DEVICE_CPU).TypeConstraint<T>("T"),                \
      FakeQuantDfpOp<T, false>);                                                            \
  REGISTER_KERNEL_BUILDER(                                                                  \
      Name("Kerasq>FakeQuantDfpMasked").Device(DEVICE_CPU).TypeConstraint<T>("T"),          \
      FakeQuantDfpOp<T, true>);                                                             \
  REGISTER_KERNEL_BUILDER(                                                                  \
      Name("Kerasq>FakeQuantDfpMaskedDynamicSign").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      FakeQuantDfpOp<T, true, true>);                                                       \
  REGISTER_KERNEL_BUILDER(                                                                  \
      Name("Kerasq>FakeQuantDfpGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),            \
      FakeQuantDfpGradOp<T>);

KERASQ_REGISTER_DFP(float)
KERASQ_REGISTER_DFP(double)
#undef KERASQ_REGISTER_DFP

REGISTER_KERNEL_BUILDER(Name("Kerasq>DfpWeightQuantize").Device(DEVICE_CPU),
                        FakeQuantDfpOp<float, true, false, true>);

}  // namespace kerasq
