// Integer depthwise convolution kernels (see int_depthwise.h), dispatched on the running CPU.
#include "int_depthwise.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "int_gemm.h"
#include "rounding.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define KERASQ_DW_X86 1
#endif

namespace kerasq {
namespace dw {
namespace {

constexpr int64_t kBlock = 32;  // channels per 512-bit vector of int16
// Layers below this many multiply-accumulates run on the calling thread: waking the
// intra-op pool costs tens of microseconds, more than a second thread saves on them.
constexpr int64_t kParallelMacs = int64_t{1} << 21;
// The portable loops are about 8x slower per multiply-accumulate than the vector kernel.
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

template <bool kVnni>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512i Dot(
    __m512i acc, __m512i x, __m512i w) {
  if constexpr (kVnni) {
    // vpdpwssd (AVX512-VNNI) is vpmaddwd + vpaddd in one instruction; inline assembly so
    // the function needs no VNNI target (it only runs where the CPU has it).
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "vm"(w));
    return acc;
  } else {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(x, w));
  }
}

// Requantizer::Row32 on 16 lanes: t = acc + bias; y = clamp((t + add [+ rounding term]) >> s).
template <int kMode>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512i Requantize(
    __m512i acc, __m512i bias, __m512i add, __m512i sh, __m512i lo, __m512i hi) {
  const __m512i t = _mm512_add_epi32(acc, bias);
  __m512i u = _mm512_add_epi32(t, add);
  if constexpr (kMode == kFusedNearest) {
    u = _mm512_add_epi32(u, _mm512_srai_epi32(t, 31));  // ties away from zero
  } else if constexpr (kMode == kFusedNearestEven) {
    u = _mm512_add_epi32(u, _mm512_and_si512(_mm512_srav_epi32(t, sh), _mm512_set1_epi32(1)));
  }
  return _mm512_min_epi32(_mm512_max_epi32(_mm512_srav_epi32(u, sh), lo), hi);
}

// P output pixels [ow, ow + P) x the 32-channel block at c0 of one row: every tap's 32 int8
// inputs are widened to int16 and multiplied against two weight vectors holding only the
// even (odd) channels' weights, zeros elsewhere, so each int32 lane receives exactly one
// product per tap (|x·w| <= 2^14): even channels in one accumulator, odd in the other,
// without shuffles per tap. The epilogue requantizes both and interleaves them back into
// channel order (or writes the int32 sums to acc for the unfused requantization).
template <int P, bool kVnni, int kMode, typename Out>
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
      even[p] = Dot<kVnni>(even[p], x16, we);
      odd[p] = Dot<kVnni>(odd[p], x16, wo);
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
template <bool kVnni, int kMode, typename Out>
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
      PixelBlock<4, kVnni, kMode>(ptrs, T, ow, C, c0, m, wb, qb, lo, hi, y, acc);
    for (; ow < out_w; ++ow)
      PixelBlock<1, kVnni, kMode>(ptrs, T, ow, C, c0, m, wb, qb, lo, hi, y, acc);
  }
}

bool HasVnni() {
  static const bool has = __builtin_cpu_supports("avx512vnni");
  return has;
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
  static constexpr RowFn kRows[2][4] = {
      {RowAvx512<false, 0, Out>, RowAvx512<false, 1, Out>, RowAvx512<false, 2, Out>,
       RowAvx512<false, 3, Out>},
      {RowAvx512<true, 0, Out>, RowAvx512<true, 1, Out>, RowAvx512<true, 2, Out>,
       RowAvx512<true, 3, Out>}};
  const RowFn row_fn = kRows[HasVnni() ? 1 : 0][mode];
  const int64_t macs = g.batch * g.out_h * g.out_w * T * C;
  const int32_t lo = static_cast<int32_t>(std::max<int64_t>(rq.lo, INT32_MIN));
  const int32_t hi = static_cast<int32_t>(std::min<int64_t>(rq.hi, INT32_MAX));
  RunRows(parallel, macs < kParallelMacs, g.batch * g.out_h, g.out_w * T * C,
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
#endif  // KERASQ_DW_X86

void PackInt8(const int8_t* w, int64_t taps, int64_t C, PackedInt8* out) {
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  out->taps = taps;
  out->channels = C;
  out->w16.assign(blocks * taps * 2 * kBlock, 0);
  int64_t max_abs = 0;
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t blk = c / kBlock, j = c % kBlock;
      const int8_t v = w[t * C + c];
      out->w16[((blk * taps + t) * 2 + j % 2) * kBlock + j] = v;
      max_abs = std::max(max_abs, Abs64(v));
    }
  out->max_abs = max_abs;
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

std::shared_ptr<const PackedInt8> PackedInt8Cache::Get(const int8_t* w, int64_t taps,
                                                       int64_t channels) {
  constexpr size_t kEntries = 64;
  const size_t bytes = static_cast<size_t>(taps * channels);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Entry& e : entries_) {
      if (e.key == w && e.packed->taps == taps && e.packed->channels == channels &&
          e.raw.size() == bytes && std::memcmp(e.raw.data(), w, bytes) == 0) {
        e.last_use = ++clock_;
        return e.packed;
      }
    }
  }
  auto packed = std::make_shared<PackedInt8>();
  PackInt8(w, taps, channels, packed.get());
  std::lock_guard<std::mutex> lock(mu_);
  Entry* slot = nullptr;
  for (Entry& e : entries_)
    if (e.key == w) slot = &e;  // the same buffer with new contents
  if (slot == nullptr && entries_.size() < kEntries) {
    entries_.emplace_back();
    slot = &entries_.back();
  }
  if (slot == nullptr) {  // evict the least recently used
    slot = &entries_.front();
    for (Entry& e : entries_)
      if (e.last_use < slot->last_use) slot = &e;
  }
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
  const int64_t type_bound = -static_cast<int64_t>(std::numeric_limits<TIn>::min());
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
      if (HasAvx512Bw()) {
        PackedInt8 local;
        if (packed == nullptr) {
          PackInt8(w, g.taps(), g.channels, &local);
          packed = &local;
        }
        RunInt8Avx512(g, x, *packed, rq, y, parallel);
        return;
      }
#endif
      RunInt8RowsPortable(g, x, w, rq, y, parallel);
      return;
    }
  }
  RunGeneric<int32_t>(g, x, w, rq, y, parallel);
}

#define KERASQ_DW_INSTANTIATE_OUT(TIN, TW, OUT)                                              \
  template void DepthwiseConv<TIN, TW, OUT>(const Geometry&, const TIN*, const TW*,          \
                                            const PackedInt8*, const Bounds&,               \
                                            const Requantizer&, OUT*, const ParallelFor&);
#define KERASQ_DW_INSTANTIATE(TIN, TW)                                                       \
  template Bounds AccumulatorBounds<TIN, TW>(const Geometry&, const TIN*, const TW*, int64_t); \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, int8_t)                                                 \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, int16_t)                                                \
  KERASQ_DW_INSTANTIATE_OUT(TIN, TW, int32_t)

KERASQ_DW_INSTANTIATE(int8_t, int8_t)
KERASQ_DW_INSTANTIATE(int8_t, int16_t)
KERASQ_DW_INSTANTIATE(int16_t, int8_t)
KERASQ_DW_INSTANTIATE(int16_t, int16_t)
template int64_t MaxAbs<int8_t>(const int8_t*, int64_t);
template int64_t MaxAbs<int16_t>(const int16_t*, int64_t);

}  // namespace dw
}  // namespace kerasq
