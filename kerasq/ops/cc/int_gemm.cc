// Micro-kernels of the integer GEMM (see int_gemm.h), dispatched on the running CPU.
#include "int_gemm.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define KERASQ_X86 1
#endif

namespace kerasq {
namespace gemm {
namespace {

// Portable: the compiler vectorizes the channel loop for whatever ISA it targets.
template <typename Acc>
void TilePortable(const int16_t* A, int64_t lda, const PackedB& B, int64_t n0, int64_t nw,
                  Acc* C, int64_t ldc) {
  const int64_t pairs = B.Kp / 2;
  for (int64_t r = 0; r < kRowTile; ++r) {
    Acc acc[kChannelTile] = {};
    const int16_t* a = A + r * lda;
    for (int64_t kk = 0; kk < pairs; ++kk) {
      const Acc a0 = a[2 * kk], a1 = a[2 * kk + 1];
      const int16_t* b = Panel(B, n0) + kk * 2 * kChannelTile;
      for (int64_t n = 0; n < nw; ++n) acc[n] += a0 * Acc(b[2 * n]) + a1 * Acc(b[2 * n + 1]);
    }
    std::memcpy(C + r * ldc + n0, acc, sizeof(Acc) * nw);
  }
}

#ifdef KERASQ_X86
// AVX2: 8 rows x 16 channels, pmaddwd + paddd.
__attribute__((target("avx2"))) void TileAvx2(const int16_t* A, int64_t lda, const PackedB& B,
                                              int64_t n0, int32_t* C, int64_t ldc) {
  __m256i acc[kRowTile][2];
  for (int r = 0; r < kRowTile; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int64_t pairs = B.Kp / 2;
  const int16_t* bp = Panel(B, n0);
  for (int64_t kk = 0; kk < pairs; ++kk, bp += 2 * kChannelTile) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 16));
    for (int r = 0; r < kRowTile; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * kk, 4);
      const __m256i a = _mm256_set1_epi32(pair);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(a, b1));
    }
  }
  for (int r = 0; r < kRowTile; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * ldc + n0), acc[r][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * ldc + n0 + 8), acc[r][1]);
  }
}

// AVX512-VNNI: 8 rows x (16 * NV) channels, vpdpwssd.
template <int NV>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void TileVnni(
    const int16_t* A, int64_t lda, const PackedB& B, int64_t n0, int32_t* C, int64_t ldc) {
  __m512i acc[kRowTile][NV];
  for (int r = 0; r < kRowTile; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  const int64_t pairs = B.Kp / 2;
  const int16_t* bp[NV];
  for (int v = 0; v < NV; ++v) bp[v] = Panel(B, n0 + kChannelTile * v);
  for (int64_t kk = 0; kk < pairs; ++kk) {
    __m512i b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(bp[v] + kk * 2 * kChannelTile);
    for (int r = 0; r < kRowTile; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * kk, 4);
      const __m512i a = _mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpwssd_epi32(acc[r][v], a, b[v]);
    }
  }
  for (int r = 0; r < kRowTile; ++r)
    for (int v = 0; v < NV; ++v)
      _mm512_storeu_si512(C + r * ldc + n0 + 16 * v, acc[r][v]);
}

// The indirect u8·s8 tile (see IndirectGemmU8S8): 8 rows x 16 * NV channels, vpdpbusd,
// the output stage in the epilogue. Mode and OutBytes are U8S8Output's mode and
// out_bytes. Accumulators are named variables, not an array: GCC keeps an array of
// __m512i in memory across the loop (a store and reload per instruction).
template <int Mode, int OutBytes>
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) inline void StoreOutput(
    __m512i t, __m512i half, __m512i shift, __m512i lo, __m512i hi, char* dst, __mmask16 mask) {
  if constexpr (Mode == U8S8Output::kRaw) {
    _mm512_mask_storeu_epi32(dst, mask, t);
  } else {
    __m512i v;
    if constexpr (Mode == U8S8Output::kNearest) {
      v = _mm512_add_epi32(_mm512_add_epi32(t, half), _mm512_srai_epi32(t, 31));
    } else if constexpr (Mode == U8S8Output::kNearestEven) {  // half holds h - 1 here
      v = _mm512_add_epi32(_mm512_add_epi32(t, half),
                           _mm512_and_si512(_mm512_srav_epi32(t, shift), _mm512_set1_epi32(1)));
    } else {
      v = _mm512_add_epi32(t, half);
    }
    v = _mm512_max_epi32(_mm512_min_epi32(_mm512_srav_epi32(v, shift), hi), lo);
    if constexpr (OutBytes == 1) {
      _mm512_mask_cvtepi32_storeu_epi8(dst, mask, v);
    } else if constexpr (OutBytes == 2) {
      _mm512_mask_cvtepi32_storeu_epi16(dst, mask, v);
    } else {
      _mm512_mask_storeu_epi32(dst, mask, v);
    }
  }
}

inline __mmask16 ChannelMask(int64_t valid) {
  return valid >= 16 ? __mmask16(0xFFFF) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
}

using IndirectTileFn = void (*)(const int8_t* const*, int64_t, int64_t, const int8_t*, int64_t,
                                int64_t, int64_t, int64_t, const U8S8Output&);

#define KERASQ_U8_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

template <int NV, int Mode, int OutBytes>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void IndirectTile(
    const int8_t* const* a, int64_t taps, int64_t seg_quads, const int8_t* bp, int64_t panel,
    int64_t n0, int64_t m, int64_t rows, const U8S8Output& o) {
  const __m512i flip = _mm512_set1_epi32(o.unsigned_a ? 0 : static_cast<int32_t>(0x80808080u));
  const __m512i init0 = _mm512_loadu_si512(o.init + n0);
  const __m512i init1 = NV == 2 ? _mm512_loadu_si512(o.init + n0 + 16) : init0;
#define KERASQ_DECL(r) __m512i c##r##0 = init0, c##r##1 = init1;
  KERASQ_U8_ROWS(KERASQ_DECL)
#undef KERASQ_DECL
  for (int64_t t = 0; t < taps; ++t, a += kIndirectRows) {
#define KERASQ_PTR(r) const int8_t* a##r = a[r];
    KERASQ_U8_ROWS(KERASQ_PTR)
#undef KERASQ_PTR
    for (int64_t q = 0; q < seg_quads; ++q, bp += kU8Group * kChannelTile) {
      const __m512i b0 = _mm512_loadu_si512(bp);
      const __m512i b1 = NV == 2 ? _mm512_loadu_si512(bp + panel) : b0;
#define KERASQ_STEP(r)                                                     \
  {                                                                        \
    int32_t quad;                                                          \
    std::memcpy(&quad, a##r + q * kU8Group, 4);                            \
    const __m512i av = _mm512_xor_si512(_mm512_set1_epi32(quad), flip);    \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, av, b0);                        \
    if (NV == 2) c##r##1 = _mm512_dpbusd_epi32(c##r##1, av, b1);           \
  }
      KERASQ_U8_ROWS(KERASQ_STEP)
#undef KERASQ_STEP
    }
  }
  __m512i h0 = _mm512_setzero_si512(), h1 = h0, s0 = h0, s1 = h0;
  if constexpr (Mode != U8S8Output::kRaw) {
    h0 = _mm512_loadu_si512(o.half + n0);
    s0 = _mm512_loadu_si512(o.shift + n0);
    if constexpr (NV == 2) {
      h1 = _mm512_loadu_si512(o.half + n0 + 16);
      s1 = _mm512_loadu_si512(o.shift + n0 + 16);
    }
    if constexpr (Mode == U8S8Output::kNearestEven) {
      h0 = _mm512_sub_epi32(h0, _mm512_set1_epi32(1));
      h1 = _mm512_sub_epi32(h1, _mm512_set1_epi32(1));
    }
  }
  const __m512i lo = _mm512_set1_epi32(o.lo), hi = _mm512_set1_epi32(o.hi);
  const __mmask16 k0 = ChannelMask(o.n_valid - n0), k1 = ChannelMask(o.n_valid - n0 - 16);
  char* base = static_cast<char*>(o.out) + (m * o.ldo + n0) * OutBytes;
#define KERASQ_STORE(r)                                                                    \
  if (r < rows) {                                                                          \
    char* dst = base + r * o.ldo * OutBytes;                                               \
    StoreOutput<Mode, OutBytes>(c##r##0, h0, s0, lo, hi, dst, k0);                         \
    if (NV == 2) StoreOutput<Mode, OutBytes>(c##r##1, h1, s1, lo, hi, dst + 16 * OutBytes, k1); \
  }
  KERASQ_U8_ROWS(KERASQ_STORE)
#undef KERASQ_STORE
}
#undef KERASQ_U8_ROWS

template <int NV>
IndirectTileFn PickIndirectTile(int mode, int out_bytes) {
#define KERASQ_PICK(M)                                               \
  if (mode == M) {                                                   \
    if (out_bytes == 1) return IndirectTile<NV, M, 1>;               \
    if (out_bytes == 2) return IndirectTile<NV, M, 2>;               \
    return IndirectTile<NV, M, 4>;                                   \
  }
  KERASQ_PICK(U8S8Output::kNearest)
  KERASQ_PICK(U8S8Output::kNearestEven)
  KERASQ_PICK(U8S8Output::kHalfUp)
#undef KERASQ_PICK
  return IndirectTile<NV, U8S8Output::kRaw, 4>;
}

enum class Isa { kPortable, kAvx2, kVnni };

Isa DetectIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vnni"))
    return Isa::kVnni;
  if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
  return Isa::kPortable;
}
#else
enum class Isa { kPortable };
Isa DetectIsa() { return Isa::kPortable; }
#endif

Isa CurrentIsa() {
  static const Isa isa = DetectIsa();
  return isa;
}

}  // namespace

const char* GemmIsa() {
  switch (CurrentIsa()) {
#ifdef KERASQ_X86
    case Isa::kVnni: return "avx512vnni";
    case Isa::kAvx2: return "avx2";
#endif
    default: return "portable";
  }
}

void GemmInt32(const int16_t* A, int64_t M, int64_t lda, const PackedB& B, int32_t* C,
               int64_t n_begin, int64_t n_end) {
  // Column blocks outside, row tiles inside: a block of packed B (Kp x 32 int16) stays in
  // L1/L2 while it meets every row tile of A.
  const Isa isa = CurrentIsa();
  int64_t n0 = n_begin;
#ifdef KERASQ_X86
  if (isa == Isa::kVnni) {
    for (; n0 + 32 <= n_end; n0 += 32)
      for (int64_t m = 0; m < M; m += kRowTile) TileVnni<2>(A + m * lda, lda, B, n0, C + m * B.Np, B.Np);
    for (; n0 < n_end; n0 += 16)
      for (int64_t m = 0; m < M; m += kRowTile) TileVnni<1>(A + m * lda, lda, B, n0, C + m * B.Np, B.Np);
  } else if (isa == Isa::kAvx2) {
    for (; n0 < n_end; n0 += 16)
      for (int64_t m = 0; m < M; m += kRowTile) TileAvx2(A + m * lda, lda, B, n0, C + m * B.Np, B.Np);
  }
#endif
  for (; n0 < n_end; n0 += kChannelTile)
    for (int64_t m = 0; m < M; m += kRowTile)
      TilePortable<int32_t>(A + m * lda, lda, B, n0, kChannelTile, C + m * B.Np, B.Np);
}

bool HasU8S8() {
#ifdef KERASQ_X86
  return CurrentIsa() == Isa::kVnni;
#else
  return false;
#endif
}

void IndirectGemmU8S8(const int8_t* const* a, int64_t taps, int64_t seg_len, int64_t rows,
                      const PackedB8& B, int64_t n_begin, int64_t n_end, bool channels_outer,
                      const U8S8Output& out) {
#ifdef KERASQ_X86
  const int mode = out.mode >= U8S8Output::kNearest && out.mode <= U8S8Output::kHalfUp
                       ? out.mode : U8S8Output::kRaw;
  const int bytes = mode == U8S8Output::kRaw ? 4 : out.out_bytes;
  const IndirectTileFn two = PickIndirectTile<2>(mode, bytes);
  const IndirectTileFn one = PickIndirectTile<1>(mode, bytes);
  const int64_t panel = B.Kp * kChannelTile;
  const int64_t seg_quads = seg_len / kU8Group;
  const int64_t tiles = (rows + kIndirectRows - 1) / kIndirectRows;
  auto tile = [&](int64_t i, int64_t n0, IndirectTileFn fn) {
    const int64_t m = i * kIndirectRows;
    fn(a + i * taps * kIndirectRows, taps, seg_quads,
       B.data.data() + (n0 / kChannelTile) * panel, panel, n0, m,
       std::min<int64_t>(kIndirectRows, rows - m), out);
  };
  if (channels_outer) {
    int64_t n0 = n_begin;
    for (; n0 + 32 <= n_end; n0 += 32)
      for (int64_t i = 0; i < tiles; ++i) tile(i, n0, two);
    for (; n0 < n_end; n0 += 16)
      for (int64_t i = 0; i < tiles; ++i) tile(i, n0, one);
  } else {
    for (int64_t i = 0; i < tiles; ++i) {
      int64_t n0 = n_begin;
      for (; n0 + 32 <= n_end; n0 += 32) tile(i, n0, two);
      for (; n0 < n_end; n0 += 16) tile(i, n0, one);
    }
  }
#else
  (void)a; (void)taps; (void)seg_len; (void)rows; (void)B; (void)n_begin;
  (void)n_end; (void)channels_outer; (void)out;
#endif
}

void GemmInt64(const int16_t* A, int64_t M, int64_t lda, const PackedB& B, int64_t* C,
               int64_t n_begin, int64_t n_end) {
  for (int64_t m = 0; m < M; m += kRowTile) {
    for (int64_t n0 = n_begin; n0 < n_end; n0 += kChannelTile)
      TilePortable<int64_t>(A + m * lda, lda, B, n0, kChannelTile, C + m * B.Np, B.Np);
  }
}

}  // namespace gemm
}  // namespace kerasq

namespace kerasq {
namespace gemm {

namespace {

inline int32_t RequantScalar(int32_t acc, int64_t lshift, int64_t bias, int64_t shift, int mode,
                             int64_t lo, int64_t hi) {
  const int64_t t = (static_cast<int64_t>(acc) << lshift) + bias;
  const int64_t h = int64_t{1} << (shift - 1);
  int64_t v;
  if (mode == 0) {
    v = (t + h - (t < 0 ? 1 : 0)) >> shift;
  } else if (mode == 1) {
    v = (t + h - 1 + ((t >> shift) & 1)) >> shift;
  } else {
    v = (t + h) >> shift;
  }
  return static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
}

#ifdef KERASQ_X86
__attribute__((target("avx512f,avx512dq,avx512vl"))) int64_t RequantAvx512(
    const int32_t* acc, int64_t n, const int64_t* lshift, const int64_t* bias,
    const int64_t* shift, int mode, int64_t lo, int64_t hi, int32_t* out) {
  const __m512i one = _mm512_set1_epi64(1), vlo = _mm512_set1_epi64(lo),
                vhi = _mm512_set1_epi64(hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512i a = _mm512_cvtepi32_epi64(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)));
    const __m512i s = _mm512_loadu_si512(shift + i);
    const __m512i t = _mm512_add_epi64(_mm512_sllv_epi64(a, _mm512_loadu_si512(lshift + i)),
                                       _mm512_loadu_si512(bias + i));
    __m512i sum = _mm512_add_epi64(t, _mm512_sllv_epi64(one, _mm512_sub_epi64(s, one)));
    if (mode == 0) {
      sum = _mm512_add_epi64(sum, _mm512_srai_epi64(t, 63));  // -1 for t < 0
    } else if (mode == 1) {
      sum = _mm512_add_epi64(_mm512_sub_epi64(sum, one),
                             _mm512_and_si512(_mm512_srav_epi64(t, s), one));
    }
    __m512i v = _mm512_srav_epi64(sum, s);
    v = _mm512_max_epi64(_mm512_min_epi64(v, vhi), vlo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi64_epi32(v));
  }
  return i;
}

bool HasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}
#endif

}  // namespace

void RequantizeRowInt32(const int32_t* acc, int64_t n, const int64_t* lshift, const int64_t* bias,
                        const int64_t* shift, int mode, int64_t lo, int64_t hi, int32_t* out) {
  int64_t i = 0;
#ifdef KERASQ_X86
  if (HasAvx512()) i = RequantAvx512(acc, n, lshift, bias, shift, mode, lo, hi, out);
#endif
  for (; i < n; ++i) out[i] = RequantScalar(acc[i], lshift[i], bias[i], shift[i], mode, lo, hi);
}

}  // namespace gemm
}  // namespace kerasq
