// Integer depthwise convolution kernels (see int_depthwise.h), dispatched on the running CPU.
#include "int_depthwise.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "int_gemm.h"
#include "lru_slot.h"
#include "rounding.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define KERASQ_DW_X86 1
#endif

namespace kerasq {
namespace dw {
namespace {

constexpr int64_t kBlock = 32;  // channels per 512-bit vector of int16
// Layers below this many multiply-accumulates (about 150 us of the VNNI kernel on one
// core) run on the calling thread: waking the intra-op pool costs tens of microseconds,
// and on a loaded machine a second thread that is not free to run delays the whole call
// (measured: 3x3 depthwise on 56x56x128, 3.6M MACs, in a tf.function at load average 7 on
// 2 cores: 0.19 ms on one thread, 0.28 ms split over two).
constexpr int64_t kParallelMacs = int64_t{1} << 23;
// The vpmaddwd kernel (AVX-512 without VNNI) is about 2x, the portable loops about 5x
// slower per multiply-accumulate.
constexpr int64_t kParallelMacsMadd = kParallelMacs / 2;
constexpr int64_t kParallelMacsPortable = kParallelMacs / 8;

template <typename T>
inline int64_t Abs64(T v) {
  return v < 0 ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
}

void RunRows(const ParallelFor& parallel, bool run_inline, int64_t tasks, int64_t cost,
             const std::function<void(int64_t, int64_t)>& fn) {
  if (tasks <= 0) return;
  if (run_inline || tasks == 1) {
    fn(0, tasks);
  } else {
    parallel(tasks, cost, fn);
  }
}

// The u8·s8 kernel takes kernels of up to 64 rows whose unsigned sums (at most 255 * 128
// per product, 4 per row group and column) fit int32.
bool VnniFits(int64_t k_h, int64_t k_w) {
  return k_h <= 64 && (k_h + 3) / 4 * 4 * k_w * 255 * 128 < int64_t{2147483647};
}

bool CpuHasVnni() {
#ifdef KERASQ_DW_X86
  static const bool has = HasAvx512Bw() && __builtin_cpu_supports("avx512vnni");
  return has;
#else
  return false;
#endif
}

enum Int8Kernel { kPortableKernel = 0, kMaddKernel = 1, kVnniKernel = 2 };

// The int8 multiplier-1 kernel for a k_h x k_w kernel on this CPU. The environment
// variable KERASQ_DEPTHWISE_KERNEL=avx512 or =portable selects a lower one (so the tests
// cover every kernel on one machine); it never selects one the CPU lacks.
Int8Kernel ChooseInt8Kernel(int64_t k_h, int64_t k_w) {
  Int8Kernel best = CpuHasVnni() && VnniFits(k_h, k_w) ? kVnniKernel
                    : HasAvx512Bw()                    ? kMaddKernel
                                                       : kPortableKernel;
  if (const char* env = std::getenv("KERASQ_DEPTHWISE_KERNEL")) {
    if (std::strcmp(env, "portable") == 0) best = kPortableKernel;
    if (std::strcmp(env, "avx512") == 0 && best == kVnniKernel) best = kMaddKernel;
  }
  return best;
}

// Requantizes `pixels` rows of `channels` accumulators (acc) into y; the first row is
// output pixel m0 (its index drives stochastic rounding: pixel * channels + channel).
template <typename Acc, typename Out>
void RequantizePixels(const Requantizer& rq, const Acc* acc, int64_t pixels, int64_t channels,
                      int64_t m0, Out* y) {
  if constexpr (std::is_same_v<Acc, int32_t>) {
    if (rq.fast32) {
      for (int64_t r = 0; r < pixels; ++r)
        rq.Row32(acc + r * channels, 0, channels, y + r * channels);
      return;
    }
    if (rq.fast) {
      thread_local std::vector<int32_t> row;
      row.resize(channels);
      for (int64_t r = 0; r < pixels; ++r) {
        Out* out = y + r * channels;
        int32_t* dst = std::is_same_v<Out, int32_t> ? reinterpret_cast<int32_t*>(out) : row.data();
        gemm::RequantizeRowInt32(acc + r * channels, channels, rq.mul.data(),
                                 rq.bias_term.data(), rq.shift64.data(),
                                 static_cast<int>(rq.rounding), rq.lo, rq.hi, dst);
        if constexpr (!std::is_same_v<Out, int32_t>) {
          for (int64_t n = 0; n < channels; ++n) out[n] = static_cast<Out>(dst[n]);
        }
      }
      return;
    }
  }
  auto body = [&](auto mode) {
    constexpr Rounding R = decltype(mode)::value;
    for (int64_t r = 0; r < pixels; ++r) {
      const uint64_t base = static_cast<uint64_t>(m0 + r) * channels;
      const Acc* a = acc + r * channels;
      Out* out = y + r * channels;
      for (int64_t n = 0; n < channels; ++n)
        out[n] = static_cast<Out>(rq.Apply<R>(static_cast<int64_t>(a[n]), n, base + n));
    }
  };
  switch (rq.rounding) {
    case Rounding::kNearest: body(std::integral_constant<Rounding, Rounding::kNearest>()); break;
    case Rounding::kNearestEven:
      body(std::integral_constant<Rounding, Rounding::kNearestEven>());
      break;
    case Rounding::kHalfUp: body(std::integral_constant<Rounding, Rounding::kHalfUp>()); break;
    case Rounding::kStochastic:
      body(std::integral_constant<Rounding, Rounding::kStochastic>());
      break;
  }
}

// Any types and multiplier, one output pixel at a time.
template <typename Acc, typename TIn, typename TW, typename Out>
void RunGeneric(const Geometry& g, const TIn* xp, const TW* wp, const Requantizer& rq, Out* yp,
                const ParallelFor& parallel) {
  const int64_t M = g.batch * g.out_h * g.out_w, C = g.channels, mult = g.multiplier;
  const int64_t out_c = g.out_channels();
  const int64_t macs = M * g.taps() * out_c;
  RunRows(parallel, macs < kParallelMacsPortable, M, g.taps() * out_c * 2,
          [&](int64_t m0, int64_t m1) {
            std::vector<Acc> acc(out_c);
            for (int64_t m = m0; m < m1; ++m) {
              const int64_t ow = m % g.out_w, oh = (m / g.out_w) % g.out_h,
                            b = m / (g.out_w * g.out_h);
              std::fill(acc.begin(), acc.end(), Acc{0});
              for (int64_t kh = 0; kh < g.k_h; ++kh) {
                const int64_t ih = oh * g.s_h - g.pad_top + kh * g.d_h;
                if (ih < 0 || ih >= g.in_h) continue;
                for (int64_t kw = 0; kw < g.k_w; ++kw) {
                  const int64_t iw = ow * g.s_w - g.pad_left + kw * g.d_w;
                  if (iw < 0 || iw >= g.in_w) continue;
                  const TIn* src = xp + ((b * g.in_h + ih) * g.in_w + iw) * C;
                  const TW* wt = wp + (kh * g.k_w + kw) * out_c;
                  Acc* a = acc.data();
                  if (mult == 1 && sizeof(TIn) == 1 && sizeof(TW) == 1) {
                    // int8 x int8 is exact in int16: 16-lane multiplies, widening adds
                    for (int64_t c = 0; c < C; ++c)
                      a[c] += Acc(static_cast<int16_t>(int16_t(src[c]) * int16_t(wt[c])));
                  } else if (mult == 1) {
                    for (int64_t c = 0; c < C; ++c) a[c] += Acc(src[c]) * Acc(wt[c]);
                  } else {
                    for (int64_t c = 0; c < C; ++c)
                      for (int64_t j = 0; j < mult; ++j)
                        a[c * mult + j] += Acc(src[c]) * Acc(wt[c * mult + j]);
                  }
                }
              }
              RequantizePixels(rq, acc.data(), 1, out_c, m, yp + m * out_c);
            }
          });
}

// int8 x int8, M = 1, portable: one output row at a time. Each tap adds its products
// (exact in int16: |-128·-128| = 2^14) to the row's int32 accumulators over the range of
// columns where it is inside the image, so the channel loop has no bounds checks.
template <typename Out>
void RunInt8RowsPortable(const Geometry& g, const int8_t* xp, const int8_t* wp,
                         const Requantizer& rq, Out* yp, const ParallelFor& parallel) {
  const int64_t C = g.channels;
  const int64_t macs = g.batch * g.out_h * g.out_w * g.taps() * C;
  RunRows(parallel, macs < kParallelMacsPortable, g.batch * g.out_h, g.out_w * g.taps() * C * 2,
          [&](int64_t r0, int64_t r1) {
            thread_local std::vector<int32_t> acc;
            acc.resize(g.out_w * C);
            for (int64_t row = r0; row < r1; ++row) {
              const int64_t b = row / g.out_h, oh = row % g.out_h;
              std::fill(acc.begin(), acc.end(), 0);
              for (int64_t kh = 0; kh < g.k_h; ++kh) {
                const int64_t ih = oh * g.s_h - g.pad_top + kh * g.d_h;
                if (ih < 0 || ih >= g.in_h) continue;
                const int8_t* line = xp + (b * g.in_h + ih) * g.in_w * C;
                for (int64_t kw = 0; kw < g.k_w; ++kw) {
                  const int8_t* wt = wp + (kh * g.k_w + kw) * C;
                  const int64_t off = kw * g.d_w - g.pad_left;  // iw = ow * s_w + off
                  // columns with 0 <= ow * s_w + off < in_w
                  const int64_t ow0 = off >= 0 ? 0 : (-off + g.s_w - 1) / g.s_w;
                  const int64_t ow1 = std::min<int64_t>(
                      g.out_w, g.in_w - off <= 0 ? 0 : (g.in_w - off + g.s_w - 1) / g.s_w);
                  for (int64_t ow = ow0; ow < ow1; ++ow) {
                    const int8_t* src = line + (ow * g.s_w + off) * C;
                    int32_t* a = acc.data() + ow * C;
                    for (int64_t c = 0; c < C; ++c)
                      a[c] += static_cast<int16_t>(int16_t(src[c]) * int16_t(wt[c]));
                  }
                }
              }
              const int64_t m0 = row * g.out_w;
              RequantizePixels(rq, acc.data(), g.out_w, C, m0, yp + m0 * C);
            }
          });
}

// The tap pointers of every pixel of output row (b, oh): ptrs[ow * taps + t]; taps outside
// the image point to `zeros` (at least channels + kBlock zero bytes).
void TapPointers(const Geometry& g, const int8_t* xp, int64_t b, int64_t oh,
                 const int8_t* zeros, const int8_t** ptrs) {
  const int64_t C = g.channels, T = g.taps();
  for (int64_t kh = 0; kh < g.k_h; ++kh) {
    const int64_t ih = oh * g.s_h - g.pad_top + kh * g.d_h;
    const bool row_in = ih >= 0 && ih < g.in_h;
    const int8_t* line = row_in ? xp + (b * g.in_h + ih) * g.in_w * C : nullptr;
    for (int64_t kw = 0; kw < g.k_w; ++kw) {
      const int64_t t = kh * g.k_w + kw;
      int64_t iw = kw * g.d_w - g.pad_left;
      for (int64_t ow = 0; ow < g.out_w; ++ow, iw += g.s_w)
        ptrs[ow * T + t] = row_in && iw >= 0 && iw < g.in_w ? line + iw * C : zeros;
    }
  }
}

#ifdef KERASQ_DW_X86
// The requantization constants of the fused epilogue per block of 32 channels, in the
// accumulators' order (even channels, then odd): [blocks][bias e, o][add e, o][shift e, o]
// x 16 int32; add is 2^(s-1) (nearest, half_up) or 2^(s-1) - 1 (nearest_even).
std::vector<int32_t> EpilogueConstants(const Requantizer& rq, int64_t C) {
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  std::vector<int32_t> q(blocks * 6 * 16, 0);
  for (int64_t c = 0; c < blocks * kBlock; ++c) {
    const int64_t blk = c / kBlock, j = c % kBlock, par = j % 2, lane = j / 2;
    int32_t* base = q.data() + blk * 96 + par * 16 + lane;
    if (c < C) {
      base[0] = rq.bias32[c];
      base[32] = rq.half32[c] - (rq.rounding == Rounding::kNearestEven ? 1 : 0);
      base[64] = rq.shift32[c];
    } else {
      base[64] = 1;
    }
  }
  return q;
}

enum Mode { kFusedNearest = 0, kFusedNearestEven = 1, kFusedHalfUp = 2, kUnfused = 3 };

// Requantizer::Row32 on 16 lanes: t = acc + bias; y = clamp((t + add [+ rounding term]) >> s).
// kClamp = false: the caller's saturating packs clamp to [lo, hi] exactly.
template <int kMode, bool kClamp = true>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512i Requantize(
    __m512i acc, __m512i bias, __m512i add, __m512i sh, __m512i lo, __m512i hi) {
  const __m512i t = _mm512_add_epi32(acc, bias);
  __m512i u = _mm512_add_epi32(t, add);
  if constexpr (kMode == kFusedNearest) {
    u = _mm512_add_epi32(u, _mm512_srai_epi32(t, 31));  // ties away from zero
  } else if constexpr (kMode == kFusedNearestEven) {
    u = _mm512_add_epi32(u, _mm512_and_si512(_mm512_srav_epi32(t, sh), _mm512_set1_epi32(1)));
  }
  const __m512i v = _mm512_srav_epi32(u, sh);
  if constexpr (kClamp) return _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
  return v;
}

// (AVX-512 without VNNI) P output pixels [ow, ow + P) x the 32-channel block at c0 of one
// row: every tap's 32 int8 inputs are widened to int16 and multiplied against two weight vectors holding only the
// even (odd) channels' weights, zeros elsewhere, so each int32 lane receives exactly one
// product per tap (|x·w| <= 2^14): even channels in one accumulator, odd in the other,
// without shuffles per tap. The epilogue requantizes both and interleaves them back into
// channel order (or writes the int32 sums to acc for the unfused requantization).
template <int P, int kMode, typename Out>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline void PixelBlock(
    const int8_t* const* ptrs, int64_t T, int64_t ow, int64_t C, int64_t c0, __mmask32 m,
    const int16_t* wb, const int32_t* qb, __m512i lo, __m512i hi, Out* y, int32_t* acc) {
  __m512i even[P], odd[P];
  for (int p = 0; p < P; ++p) even[p] = odd[p] = _mm512_setzero_si512();
  const int8_t* const* pp = ptrs + ow * T;
  for (int64_t t = 0; t < T; ++t) {
    const __m512i we = _mm512_loadu_si512(wb + t * 2 * kBlock);
    const __m512i wo = _mm512_loadu_si512(wb + t * 2 * kBlock + kBlock);
    for (int p = 0; p < P; ++p) {
      const __m512i x16 = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, pp[p * T + t] + c0));
      even[p] = _mm512_add_epi32(even[p], _mm512_madd_epi16(x16, we));
      odd[p] = _mm512_add_epi32(odd[p], _mm512_madd_epi16(x16, wo));
    }
  }
  if constexpr (kMode == kUnfused) {
    const __m512i lo_idx =
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __mmask16 mlo = static_cast<__mmask16>(m), mhi = static_cast<__mmask16>(m >> 16);
    for (int p = 0; p < P; ++p) {
      int32_t* out = acc + (ow + p) * C + c0;
      _mm512_mask_storeu_epi32(out, mlo, _mm512_permutex2var_epi32(even[p], lo_idx, odd[p]));
      _mm512_mask_storeu_epi32(out + 16, mhi, _mm512_permutex2var_epi32(even[p], hi_idx, odd[p]));
    }
  } else {
    const __m512i bias_e = _mm512_loadu_si512(qb), bias_o = _mm512_loadu_si512(qb + 16);
    const __m512i add_e = _mm512_loadu_si512(qb + 32), add_o = _mm512_loadu_si512(qb + 48);
    const __m512i sh_e = _mm512_loadu_si512(qb + 64), sh_o = _mm512_loadu_si512(qb + 80);
    for (int p = 0; p < P; ++p) {
      const __m512i ve = Requantize<kMode>(even[p], bias_e, add_e, sh_e, lo, hi);
      const __m512i vo = Requantize<kMode>(odd[p], bias_o, add_o, sh_o, lo, hi);
      Out* out = y + (ow + p) * C + c0;
      if constexpr (sizeof(Out) == 4) {
        const __m512i lo_idx =
            _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i hi_idx =
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        _mm512_mask_storeu_epi32(out, static_cast<__mmask16>(m),
                                 _mm512_permutex2var_epi32(ve, lo_idx, vo));
        _mm512_mask_storeu_epi32(out + 16, static_cast<__mmask16>(m >> 16),
                                 _mm512_permutex2var_epi32(ve, hi_idx, vo));
      } else {
        // channel 2i is the low half of ve's lane i, channel 2i+1 the low half of vo's
        const __m512i v16 =
            _mm512_mask_blend_epi16(0xAAAAAAAAu, ve, _mm512_slli_epi32(vo, 16));
        if constexpr (sizeof(Out) == 2) {
          _mm512_mask_storeu_epi16(out, m, v16);
        } else {
          _mm256_mask_storeu_epi8(out, m, _mm512_cvtepi16_epi8(v16));
        }
      }
    }
  }
}

// One output row (its tap pointers in ptrs), all channel blocks.
template <int kMode, typename Out>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void RowAvx512(
    const int8_t* const* ptrs, int64_t T, int64_t out_w, int64_t C, const int16_t* w16,
    const int32_t* q, int32_t lo32, int32_t hi32, Out* y, int32_t* acc) {
  const __m512i lo = _mm512_set1_epi32(lo32), hi = _mm512_set1_epi32(hi32);
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t width = std::min<int64_t>(kBlock, C - c0);
    const __mmask32 m = width == kBlock ? ~__mmask32{0} : ((__mmask32{1} << width) - 1);
    const int16_t* wb = w16 + (c0 / kBlock) * T * 2 * kBlock;
    const int32_t* qb = q + (c0 / kBlock) * 96;
    int64_t ow = 0;
    for (; ow + 4 <= out_w; ow += 4)
      PixelBlock<4, kMode>(ptrs, T, ow, C, c0, m, wb, qb, lo, hi, y, acc);
    for (; ow < out_w; ++ow)
      PixelBlock<1, kMode>(ptrs, T, ow, C, c0, m, wb, qb, lo, hi, y, acc);
  }
}



template <typename Out>
void RunInt8Avx512(const Geometry& g, const int8_t* xp, const PackedInt8& packed,
                   const Requantizer& rq, Out* yp, const ParallelFor& parallel) {
  const int64_t C = g.channels, T = g.taps();
  const int mode = !rq.fast32 ? kUnfused
                   : rq.rounding == Rounding::kNearest     ? kFusedNearest
                   : rq.rounding == Rounding::kNearestEven ? kFusedNearestEven
                                                           : kFusedHalfUp;
  const std::vector<int32_t> q =
      mode == kUnfused ? std::vector<int32_t>() : EpilogueConstants(rq, C);
  using RowFn = void (*)(const int8_t* const*, int64_t, int64_t, int64_t, const int16_t*,
                         const int32_t*, int32_t, int32_t, Out*, int32_t*);
  static constexpr RowFn kRows[4] = {RowAvx512<0, Out>, RowAvx512<1, Out>, RowAvx512<2, Out>,
                                      RowAvx512<3, Out>};
  const RowFn row_fn = kRows[mode];
  const int64_t macs = g.batch * g.out_h * g.out_w * T * C;
  const int32_t lo = static_cast<int32_t>(std::max<int64_t>(rq.lo, INT32_MIN));
  const int32_t hi = static_cast<int32_t>(std::min<int64_t>(rq.hi, INT32_MAX));
  RunRows(parallel, macs < kParallelMacsMadd, g.batch * g.out_h, g.out_w * T * C,
          [&](int64_t r0, int64_t r1) {
            thread_local std::vector<const int8_t*> ptrs;
            thread_local std::vector<int8_t> zeros;
            thread_local std::vector<int32_t> acc;
            ptrs.resize(g.out_w * T);
            if (static_cast<int64_t>(zeros.size()) < C + kBlock) zeros.assign(C + kBlock, 0);
            if (mode == kUnfused) acc.resize(g.out_w * C);
            for (int64_t row = r0; row < r1; ++row) {
              const int64_t b = row / g.out_h, oh = row % g.out_h;
              TapPointers(g, xp, b, oh, zeros.data(), ptrs.data());
              const int64_t m0 = row * g.out_w;
              row_fn(ptrs.data(), T, g.out_w, C, packed.w16.data(), q.data(), lo, hi,
                     yp + m0 * C, acc.data());
              if (mode == kUnfused) RequantizePixels(rq, acc.data(), g.out_w, C, m0, yp + m0 * C);
            }
          });
}

// ---- AVX512-VNNI: u8·s8 quads of 4 kernel rows (see int_depthwise.h).

constexpr int64_t kBlock8 = 64;  // channels per vector of bytes

// Position of channel j (0..63 in its block) in the accumulators: vector j % 16 / 4,
// lane 4 * (j / 16) + j % 4, flattened as vector * 16 + lane.
inline int64_t QuadSlot(int64_t j) { return (j % 16 / 4) * 16 + 4 * (j / 16) + j % 4; }

// Epilogue constants per block of 64 channels in accumulator order: [bias - comp][add]
// [shift][comp] x 64 int32 (add as in EpilogueConstants); comp is 0 for uint8 inputs
// (unsigned_x: read without the +128 offset).
std::vector<int32_t> EpilogueConstantsU8(const Requantizer& rq, const PackedInt8& pk,
                                         bool fused, bool unsigned_x) {
  const int64_t C = pk.channels, blocks = (C + kBlock8 - 1) / kBlock8;
  std::vector<int32_t> q(blocks * 4 * kBlock8, 0);
  for (int64_t c = 0; c < blocks * kBlock8; ++c) {
    int32_t* base = q.data() + (c / kBlock8) * 4 * kBlock8 + QuadSlot(c % kBlock8);
    base[128] = 1;
    if (c >= C) continue;
    const int32_t comp = unsigned_x ? 0 : pk.comp[c];
    base[192] = comp;
    if (!fused) continue;
    base[0] = rq.bias32[c] - comp;
    base[64] = rq.half32[c] - (rq.rounding == Rounding::kNearestEven ? 1 : 0);
    base[128] = rq.shift32[c];
  }
  return q;
}

#define KERASQ_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

enum Kind { kAnyShape = 0, k3x3Stride1 = 1, k3x3Stride2 = 2 };

// P pixels from ow (4 accumulators each, channels in QuadSlot order): acc[p][j] = the sum
// over kernel columns and row groups of column quads times weights. The 3x3 kinds (one row
// group, unit dilation along the row) load each column's quads once for the P pixels.
// Then the epilogue: requantized into y or, unfused, the exact int32 sums (u8 sums - comp)
// in channel order into acc.
template <int P, int kKind, int kMode, bool kClamp, typename Out>
KERASQ_VNNI __attribute__((always_inline)) inline void PixelsU8(
    const __m512i* cols, int64_t ncols, int64_t G, int64_t KW, int64_t s_w, int64_t d_w,
    int64_t ow, const int8_t* wb, const int32_t* qb, __m512i lo, __m512i hi, __mmask64 m,
    int64_t C, Out* y, int32_t* acc) {
  __m512i a[P][4];
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < 4; ++j) a[p][j] = _mm512_setzero_si512();
  if constexpr (kKind == kAnyShape) {
    for (int64_t gr = 0; gr < G; ++gr)
      for (int64_t kw = 0; kw < KW; ++kw)
        for (int j = 0; j < 4; ++j) {
          const __m512i wv = _mm512_loadu_si512(wb + ((gr * KW + kw) * 4 + j) * kBlock8);
          for (int p = 0; p < P; ++p) {
            const __m512i* col = cols + (gr * ncols + (ow + p) * s_w + kw * d_w) * 4;
            a[p][j] = _mm512_dpbusd_epi32(a[p][j], _mm512_loadu_si512(col + j), wv);
          }
        }
  } else {
    constexpr int S = kKind == k3x3Stride1 ? 1 : 2;
    constexpr int kCols = (P - 1) * S + 3;
    const __m512i* base = cols + ow * S * 4;
#pragma GCC unroll 16
    for (int c = 0; c < kCols; ++c) {
      __m512i q[4];
      for (int j = 0; j < 4; ++j) q[j] = _mm512_loadu_si512(base + c * 4 + j);
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        const int kw = c - p * S;
        if (kw < 0 || kw >= 3) continue;
        for (int j = 0; j < 4; ++j)
          a[p][j] = _mm512_dpbusd_epi32(
              a[p][j], q[j], _mm512_loadu_si512(wb + (kw * 4 + j) * kBlock8));
      }
    }
  }
  if constexpr (kMode == kUnfused) {
    __m512i comp[4];
    for (int j = 0; j < 4; ++j) comp[j] = _mm512_loadu_si512(qb + 192 + 16 * j);
    for (int p = 0; p < P; ++p) {
      __m512i t[4];
      for (int j = 0; j < 4; ++j) t[j] = _mm512_sub_epi32(a[p][j], comp[j]);
      // 4x4 transpose of 128-bit lanes: output vector k = lane k of t[0..3]
      const __m512i t01l = _mm512_shuffle_i32x4(t[0], t[1], 0x44);
      const __m512i t23l = _mm512_shuffle_i32x4(t[2], t[3], 0x44);
      const __m512i t01h = _mm512_shuffle_i32x4(t[0], t[1], 0xEE);
      const __m512i t23h = _mm512_shuffle_i32x4(t[2], t[3], 0xEE);
      const __m512i o[4] = {_mm512_shuffle_i32x4(t01l, t23l, 0x88),
                            _mm512_shuffle_i32x4(t01l, t23l, 0xDD),
                            _mm512_shuffle_i32x4(t01h, t23h, 0x88),
                            _mm512_shuffle_i32x4(t01h, t23h, 0xDD)};
      int32_t* out = acc + (ow + p) * C;
      for (int k = 0; k < 4; ++k)
        _mm512_mask_storeu_epi32(out + 16 * k, static_cast<__mmask16>(m >> (16 * k)), o[k]);
    }
  } else {
    __m512i bias[4], add[4], sh[4];  // loaded before any store (int8 stores alias all)
    for (int j = 0; j < 4; ++j) {
      bias[j] = _mm512_loadu_si512(qb + 16 * j);
      add[j] = _mm512_loadu_si512(qb + 64 + 16 * j);
      sh[j] = _mm512_loadu_si512(qb + 128 + 16 * j);
    }
    for (int p = 0; p < P; ++p) {
      __m512i v[4];
      for (int j = 0; j < 4; ++j)
        v[j] = Requantize<kMode, kClamp>(a[p][j], bias[j], add[j], sh[j], lo, hi);
      // lane L of p01 (p23): channels 16L..16L+7 (16L+8..16L+15) as int16; the values
      // are inside the output type's range (or kClamp is off because the packs'
      // saturation is exactly the clamp)
      const __m512i p01 = _mm512_packs_epi32(v[0], v[1]);
      const __m512i p23 = _mm512_packs_epi32(v[2], v[3]);
      Out* out = y + (ow + p) * C;
      if constexpr (std::is_same_v<Out, uint8_t>) {
        _mm512_mask_storeu_epi8(out, m, _mm512_packus_epi16(p01, p23));
      } else if constexpr (sizeof(Out) == 1) {
        _mm512_mask_storeu_epi8(out, m, _mm512_packs_epi16(p01, p23));
      } else {
        const __m512i idx0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        const __m512i idx1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        _mm512_mask_storeu_epi16(out, static_cast<__mmask32>(m),
                                 _mm512_permutex2var_epi64(p01, idx0, p23));
        _mm512_mask_storeu_epi16(out + 32, static_cast<__mmask32>(m >> 32),
                                 _mm512_permutex2var_epi64(p01, idx1, p23));
      }
    }
  }
}

// One output row (b, oh), all channel blocks. cols: scratch of G * ncols * 4 vectors.
// offset: the byte added to every input (0x80 for int8, 0 for uint8 inputs), the value
// of an out-of-image tap.
template <int kKind, int kMode, bool kClamp, typename Out>
KERASQ_VNNI void RowVnni(const Geometry& g, const int8_t* xp, int64_t b, int64_t oh,
                         const PackedInt8& pk, const int32_t* q, int32_t lo32, int32_t hi32,
                         Out* y, int32_t* acc, __m512i* cols, int8_t offset_byte) {
  const int64_t C = g.channels, KW = g.k_w, G = (g.k_h + 3) / 4;
  const int64_t ncols = (g.out_w - 1) * g.s_w + (KW - 1) * g.d_w + 1;
  const __m512i lo = _mm512_set1_epi32(lo32), hi = _mm512_set1_epi32(hi32);
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(offset_byte));
  const int8_t* rows[4 * 16];  // nullptr: a kernel row outside the image or beyond k_h
  for (int64_t kh = 0; kh < 4 * G; ++kh) {
    const int64_t ih = oh * g.s_h - g.pad_top + kh * g.d_h;
    rows[kh] = kh < g.k_h && ih >= 0 && ih < g.in_h ? xp + (b * g.in_h + ih) * g.in_w * C
                                                    : nullptr;
  }
  for (int64_t c0 = 0; c0 < C; c0 += kBlock8) {
    const int64_t width = std::min<int64_t>(kBlock8, C - c0);
    const __mmask64 m = width == kBlock8 ? ~__mmask64{0} : ((__mmask64{1} << width) - 1);
    // column quads: byte r of lane 4L+i of vector j = x[row r][column][c0+16L+4j+i] + 128
    for (int64_t gr = 0; gr < G; ++gr) {
      const int8_t* const* rg = rows + 4 * gr;
      __m512i* out = cols + gr * ncols * 4;
      for (int64_t ci = 0; ci < ncols; ++ci, out += 4) {
        const int64_t iw = ci - g.pad_left;
        if (iw < 0 || iw >= g.in_w) {
          for (int j = 0; j < 4; ++j) _mm512_storeu_si512(out + j, offset);
          continue;
        }
        __m512i r[4];
        for (int k = 0; k < 4; ++k)
          r[k] = rg[k] ? _mm512_maskz_loadu_epi8(m, rg[k] + iw * C + c0) : _mm512_setzero_si512();
        const __m512i ab_lo = _mm512_unpacklo_epi8(r[0], r[1]);
        const __m512i ab_hi = _mm512_unpackhi_epi8(r[0], r[1]);
        const __m512i cd_lo = _mm512_unpacklo_epi8(r[2], r[3]);
        const __m512i cd_hi = _mm512_unpackhi_epi8(r[2], r[3]);
        _mm512_storeu_si512(out + 0, _mm512_xor_si512(_mm512_unpacklo_epi16(ab_lo, cd_lo), offset));
        _mm512_storeu_si512(out + 1, _mm512_xor_si512(_mm512_unpackhi_epi16(ab_lo, cd_lo), offset));
        _mm512_storeu_si512(out + 2, _mm512_xor_si512(_mm512_unpacklo_epi16(ab_hi, cd_hi), offset));
        _mm512_storeu_si512(out + 3, _mm512_xor_si512(_mm512_unpackhi_epi16(ab_hi, cd_hi), offset));
      }
    }
    const int8_t* wb = pk.w8.data() + (c0 / kBlock8) * G * KW * 4 * kBlock8;
    const int32_t* qb = q + (c0 / kBlock8) * 4 * kBlock8;
    Out* yb = y + c0;
    int32_t* ab = acc + c0;
    int64_t ow = 0;
    for (; ow + 4 <= g.out_w; ow += 4)
      PixelsU8<4, kKind, kMode, kClamp>(cols, ncols, G, KW, g.s_w, g.d_w, ow, wb, qb, lo, hi,
                                        m, C, yb, ab);
    for (; ow < g.out_w; ++ow)
      PixelsU8<1, kKind, kMode, kClamp>(cols, ncols, G, KW, g.s_w, g.d_w, ow, wb, qb, lo, hi,
                                        m, C, yb, ab);
  }
}

template <typename Out>
using RowVnniFn = void (*)(const Geometry&, const int8_t*, int64_t, int64_t, const PackedInt8&,
                           const int32_t*, int32_t, int32_t, Out*, int32_t*, __m512i*, int8_t);

// The row kernel for a kind, requantization mode and clamp.
template <int kKind, typename Out>
RowVnniFn<Out> PickRowVnni(int mode, bool clamp) {
  if constexpr (sizeof(Out) <= 2) {
    switch (mode * 2 + (clamp ? 1 : 0)) {
      case 0: return RowVnni<kKind, 0, false, Out>;
      case 1: return RowVnni<kKind, 0, true, Out>;
      case 2: return RowVnni<kKind, 1, false, Out>;
      case 3: return RowVnni<kKind, 1, true, Out>;
      case 4: return RowVnni<kKind, 2, false, Out>;
      case 5: return RowVnni<kKind, 2, true, Out>;
      default: break;
    }
  }
  return RowVnni<kKind, kUnfused, true, Out>;
}

// xp: int8 inputs, or uint8 ones (unsigned_x) as bytes.
template <typename Out>
void RunInt8Vnni(const Geometry& g, const int8_t* xp, bool unsigned_x, const PackedInt8& packed,
                 const Requantizer& rq, Out* yp, const ParallelFor& parallel) {
  const int64_t C = g.channels, G = (g.k_h + 3) / 4;
  const int64_t ncols = (g.out_w - 1) * g.s_w + (g.k_w - 1) * g.d_w + 1;
  // fused only where the packs' saturation cannot act (the output type holds [lo, hi])
  const int64_t type_min = std::numeric_limits<Out>::min(), type_max = std::numeric_limits<Out>::max();
  const bool fused = rq.fast32 && sizeof(Out) <= 2 && rq.lo >= type_min && rq.hi <= type_max;
  const int mode = !fused ? kUnfused
                   : rq.rounding == Rounding::kNearest     ? kFusedNearest
                   : rq.rounding == Rounding::kNearestEven ? kFusedNearestEven
                                                           : kFusedHalfUp;
  const std::vector<int32_t> q = EpilogueConstantsU8(rq, packed, fused, unsigned_x);
  const int8_t offset_byte = unsigned_x ? int8_t{0} : static_cast<int8_t>(0x80);
  // the packs saturate to the output type's range: that is the clamp when [lo, hi] is it
  const bool clamp = rq.lo != type_min || rq.hi != type_max;
  const bool k3 = g.k_w == 3 && G == 1 && g.d_w == 1;
  const RowVnniFn<Out> row_fn =
      k3 && g.s_w == 1   ? PickRowVnni<k3x3Stride1, Out>(mode, clamp)
      : k3 && g.s_w == 2 ? PickRowVnni<k3x3Stride2, Out>(mode, clamp)
                         : PickRowVnni<kAnyShape, Out>(mode, clamp);
  const int64_t macs = g.batch * g.out_h * g.out_w * g.taps() * C;
  const int32_t lo = static_cast<int32_t>(std::max<int64_t>(rq.lo, INT32_MIN));
  const int32_t hi = static_cast<int32_t>(std::min<int64_t>(rq.hi, INT32_MAX));
  RunRows(parallel, macs < kParallelMacs, g.batch * g.out_h, g.out_w * g.taps() * C,
          [&](int64_t r0, int64_t r1) {
            thread_local std::vector<int8_t> scratch;
            thread_local std::vector<int32_t> acc;
            const size_t bytes = static_cast<size_t>(G * ncols * 4 * 64 + 64);
            if (scratch.size() < bytes) scratch.resize(bytes);
            const uintptr_t base = reinterpret_cast<uintptr_t>(scratch.data());
            __m512i* cols = reinterpret_cast<__m512i*>((base + 63) & ~uintptr_t{63});
            if (mode == kUnfused) acc.resize(g.out_w * C);
            for (int64_t row = r0; row < r1; ++row) {
              const int64_t m0 = row * g.out_w;
              row_fn(g, xp, row / g.out_h, row % g.out_h, packed, q.data(), lo, hi, yp + m0 * C,
                     acc.data(), cols, offset_byte);
              if (mode == kUnfused) RequantizePixels(rq, acc.data(), g.out_w, C, m0, yp + m0 * C);
            }
          });
}
#endif  // KERASQ_DW_X86

void PackInt8(const int8_t* w, int64_t k_h, int64_t k_w, int64_t C, PackedInt8* out) {
  const int64_t taps = k_h * k_w;
  out->k_h = k_h;
  out->k_w = k_w;
  out->channels = C;
  int64_t max_abs = 0;
  for (int64_t i = 0; i < taps * C; ++i) max_abs = std::max(max_abs, Abs64(w[i]));
  out->max_abs = max_abs;
#ifdef KERASQ_DW_X86
  if (CpuHasVnni() && VnniFits(k_h, k_w)) {
    const int64_t G = (k_h + 3) / 4, blocks = (C + kBlock8 - 1) / kBlock8;
    out->w8.assign(blocks * G * k_w * 4 * kBlock8, 0);
    out->comp.assign(C, 0);
    for (int64_t kh = 0; kh < k_h; ++kh)
      for (int64_t kw = 0; kw < k_w; ++kw)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t blk = c / kBlock8, slot = QuadSlot(c % kBlock8);
          const int8_t v = w[(kh * k_w + kw) * C + c];
          out->w8[(((blk * G + kh / 4) * k_w + kw) * kBlock8 + slot) * 4 + kh % 4] = v;
          out->comp[c] += 128 * v;
        }
  }
#endif
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  out->w16.assign(blocks * taps * 2 * kBlock, 0);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t blk = c / kBlock, j = c % kBlock;
      out->w16[((blk * taps + t) * 2 + j % 2) * kBlock + j] = w[t * C + c];
    }
}

}  // namespace

bool HasAvx512Bw() {
#ifdef KERASQ_DW_X86
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
#else
  return false;
#endif
}

std::shared_ptr<const PackedInt8> PackedInt8Cache::Get(const int8_t* w, int64_t k_h,
                                                       int64_t k_w, int64_t channels) {
  constexpr size_t kEntries = 64;
  const size_t bytes = static_cast<size_t>(k_h * k_w * channels);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Entry& e : entries_) {
      if (e.key == w && e.packed->k_h == k_h && e.packed->k_w == k_w &&
          e.packed->channels == channels &&
          e.raw.size() == bytes && std::memcmp(e.raw.data(), w, bytes) == 0) {
        e.last_use = ++clock_;
        return e.packed;
      }
    }
  }
  auto packed = std::make_shared<PackedInt8>();
  PackInt8(w, k_h, k_w, channels, packed.get());
  std::lock_guard<std::mutex> lock(mu_);
  Entry* slot = PickLruSlot(&entries_, w, kEntries);
  slot->key = w;
  slot->raw.assign(w, w + bytes);
  slot->packed = packed;
  slot->last_use = ++clock_;
  return packed;
}

template <typename TW>
int64_t MaxAbs(const TW* w, int64_t n) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, Abs64(w[i]));
  return m;
}

template <typename TIn, typename TW>
Bounds AccumulatorBounds(const Geometry& g, const TIn* x, const TW* w, int64_t max_abs_w) {
  (void)w;
  const int64_t taps = g.taps();
  // max|x| is only read when the type's bound does not already prove int32 safe
  const int64_t type_bound = std::max(-static_cast<int64_t>(std::numeric_limits<TIn>::min()),
                                      static_cast<int64_t>(std::numeric_limits<TIn>::max()));
  const int64_t max_x = gemm::FitsInt32(type_bound, max_abs_w, taps)
                            ? type_bound
                            : MaxAbs(x, g.batch * g.in_h * g.in_w * g.channels);
  Bounds b;
  b.acc_bound = static_cast<double>(max_x) * static_cast<double>(max_abs_w) * taps;
  b.int32 = gemm::FitsInt32(max_x, max_abs_w, taps);
  return b;
}

template <typename TIn, typename TW, typename Out>
void DepthwiseConv(const Geometry& g, const TIn* x, const TW* w, const PackedInt8* packed,
                   const Bounds& bounds, const Requantizer& rq, Out* y,
                   const ParallelFor& parallel) {
  if (g.batch * g.out_h * g.out_w == 0 || g.out_channels() == 0) return;
  if (!bounds.int32) {
    RunGeneric<int64_t>(g, x, w, rq, y, parallel);
    return;
  }
  if constexpr (std::is_same_v<TIn, int8_t> && std::is_same_v<TW, int8_t>) {
    if (g.multiplier == 1) {
#ifdef KERASQ_DW_X86
      const Int8Kernel kernel = ChooseInt8Kernel(g.k_h, g.k_w);
      if (kernel != kPortableKernel) {
        PackedInt8 local;
        if (packed == nullptr) {
          PackInt8(w, g.k_h, g.k_w, g.channels, &local);
          packed = &local;
        }
        if (kernel == kVnniKernel) {
          RunInt8Vnni(g, x, false, *packed, rq, y, parallel);
        } else {
          RunInt8Avx512(g, x, *packed, rq, y, parallel);
        }
        return;
      }
#endif
      RunInt8RowsPortable(g, x, w, rq, y, parallel);
      return;
    }
  }
#ifdef KERASQ_DW_X86
  // uint8 inputs (ReLU outputs) are the u8·s8 kernel's native operand; other CPUs (and a
  // lower kernel chosen by KERASQ_DEPTHWISE_KERNEL) run the generic loops
  if constexpr (std::is_same_v<TIn, uint8_t> && std::is_same_v<TW, int8_t>) {
    if (g.multiplier == 1 && ChooseInt8Kernel(g.k_h, g.k_w) == kVnniKernel) {
      PackedInt8 local;
      if (packed == nullptr) {
        PackInt8(w, g.k_h, g.k_w, g.channels, &local);
        packed = &local;
      }
      RunInt8Vnni(g, reinterpret_cast<const int8_t*>(x), true, *packed, rq, y, parallel);
      return;
    }
  }
#endif
  RunGeneric<int32_t>(g, x, w, rq, y, parallel);
}

#define KERASQ_DW_INSTANTIATE_OUT(TIN, TW, OUT)                                              \
  template void DepthwiseConv<TIN, TW, OUT>(const Geometry&, const TIN*, const TW*,          \
                                            const PackedInt8*, const Bounds&,               \
                                            const Requantizer&, OUT*, const ParallelFor&);
#define KERASQ_DW_INSTANTIATE(TIN, TW)                                                       \
  template Bounds AccumulatorBounds<TIN, TW>(const Geometry&, const TIN*, const TW*, int64_t); \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, int8_t)                                                 \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, uint8_t)                                                \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, int16_t)                                                \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, int32_t)

KERASQ_DW_INSTANTIATE(int8_t, int8_t)
KERASQ_DW_INSTANTIATE(int8_t, int16_t)
KERASQ_DW_INSTANTIATE(uint8_t, int8_t)
KERASQ_DW_INSTANTIATE(uint8_t, int16_t)
KERASQ_DW_INSTANTIATE(int16_t, int8_t)
KERASQ_DW_INSTANTIATE(int16_t, int16_t)
template int64_t MaxAbs<int8_t>(const int8_t*, int64_t);
template int64_t MaxAbs<int16_t>(const int16_t*, int64_t);

}  // namespace dw
}  // namespace kerasq
