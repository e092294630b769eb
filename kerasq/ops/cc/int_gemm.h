// Framework-free integer GEMM for the fixed-point kernels (no TensorFlow types here).
//
// C[m][n] = sum_k A[m][k] * B[k][n] with int16 operands (int8 data is widened when the
// rows are packed) and exact int32 or int64 accumulation. B is packed once per call as
// [Kp/2][Np][2] (k pairs interleaved per output channel) so that one 32-bit broadcast of
// A[m][k:k+2] against a vector of B gives 8/16 channels x 2 products per instruction
// (pmaddwd on AVX2, vpdpwssd on AVX512-VNNI). The ISA is chosen at run time, so the
// library is correct on any x86-64 (and any other CPU through the portable loop).
// The packed weights are stored in panels of 16 channels, [Np/16][Kp/2][16][2], so a
// micro-tile streams one contiguous panel (a [Kp/2][Np][2] layout strides 4 KB per k pair
// for N = 1024, which maps every load to the same L1 set).
#ifndef KERASQ_OPS_CC_INT_GEMM_H_
#define KERASQ_OPS_CC_INT_GEMM_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace kerasq {
namespace gemm {

constexpr int64_t kRowTile = 8;       // rows of A per micro-tile (A blocks are padded to this)
constexpr int64_t kChannelTile = 16;  // Np is a multiple of this

inline int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct PackedB {
  std::vector<int16_t> data;  // panels [Np/16][Kp/2][16][2]
  int64_t K = 0, Kp = 0, N = 0, Np = 0;
  int32_t max_abs = 0;
};

// Packing of w, row-major [K][N] (Keras/TF HWIO kernels flattened to [KH*KW*Cin][Cout]).
// PackBInit sizes the buffer; PackBPanels fills panels [p0, p1) (independent, so callers
// may run them in parallel) and returns their max|w|; PackB does everything serially.
inline void PackBInit(int64_t K, int64_t N, PackedB* out) {
  out->K = K;
  out->N = N;
  out->Kp = RoundUp(K, 2);
  out->Np = RoundUp(N, kChannelTile);
  out->data.assign(out->Kp * out->Np, 0);
}

template <typename W>
int32_t PackBPanels(const W* w, PackedB* out, int64_t p0, int64_t p1) {
  const int64_t K = out->K, N = out->N, pairs = out->Kp / 2;
  int32_t max_abs = 0;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kChannelTile;
    const int64_t width = std::min<int64_t>(kChannelTile, N - n0);
    int16_t* d = out->data.data() + p * pairs * 2 * kChannelTile;
    for (int64_t kk = 0; kk < pairs; ++kk, d += 2 * kChannelTile) {
      const W* even = w + (2 * kk) * N + n0;
      const W* odd = even + N;
      const bool has_odd = 2 * kk + 1 < K;
      for (int64_t j = 0; j < width; ++j) {
        const int32_t e = even[j], o = has_odd ? int32_t(odd[j]) : 0;
        d[2 * j] = static_cast<int16_t>(e);
        d[2 * j + 1] = static_cast<int16_t>(o);
        const int32_t m = std::max(e < 0 ? -e : e, o < 0 ? -o : o);
        max_abs = m > max_abs ? m : max_abs;
      }
    }
  }
  return max_abs;
}

template <typename W>
void PackB(const W* w, int64_t K, int64_t N, PackedB* out) {
  PackBInit(K, N, out);
  out->max_abs = PackBPanels(w, out, 0, out->Np / kChannelTile);
}

// The packed panel holding channels [n0, n0 + 16), n0 a multiple of 16.
inline const int16_t* Panel(const PackedB& B, int64_t n0) {
  return B.data.data() + (n0 / kChannelTile) * (B.Kp / 2) * 2 * kChannelTile;
}

// True when every partial sum of a dot product of length Kp fits in int32.
inline bool FitsInt32(int64_t max_abs_a, int64_t max_abs_b, int64_t Kp) {
  return max_abs_a * max_abs_b <= (int64_t{2147483647} / (Kp > 0 ? Kp : 1));
}

// A: rows [M][lda] int16, M a multiple of kRowTile, lda >= Kp even, columns >= K zero.
// C: [M][Np]. The int32 variant requires FitsInt32(max|A|, max|B|, Kp).
// Only the output channels [n_begin, n_end) are computed (multiples of 16; n_end <= Np).
void GemmInt32(const int16_t* A, int64_t M, int64_t lda, const PackedB& B, int32_t* C,
               int64_t n_begin, int64_t n_end);
void GemmInt64(const int16_t* A, int64_t M, int64_t lda, const PackedB& B, int64_t* C,
               int64_t n_begin, int64_t n_end);

// Which micro-kernel GemmInt32 uses on this CPU: "avx512vnni", "avx2" or "portable".
const char* GemmIsa();

// ---- int8 x int8 through u8·s8 dot products (vpdpbusd: 4 products per 32-bit lane).
//
// The activations are offset to unsigned bytes, a = x + 128 (x ^ 0x80), and the offset
// is taken back per output channel:  sum_k x[k] w[k][n] = sum_k a[k] w[k][n] - comp[n],
// comp[n] = 128 * sum_k w[k][n]. vpdpbusd adds the 4 products of a lane to int32 without
// intermediate saturation, so both sums are exact while Kp * 255 * 128 < 2^31
// (U8S8Fits). Weights are packed in panels of 16 channels, [Np/16][Kp/4][16][4].
struct PackedB8 {
  std::vector<int8_t> data;
  std::vector<int32_t> comp;  // [Np]
  int64_t K = 0, Kp = 0, N = 0, Np = 0;
  int32_t max_abs = 0;
};

constexpr int64_t kU8Group = 4;  // Kp is a multiple of this

// True when the CPU has the u8·s8 kernel (AVX512-VNNI).
bool HasU8S8();
inline bool U8S8Fits(int64_t Kp) { return Kp * 255 * 128 < int64_t{2147483647}; }

inline void PackB8Init(int64_t K, int64_t N, PackedB8* out) {
  out->K = K;
  out->N = N;
  out->Kp = RoundUp(K, kU8Group);
  out->Np = RoundUp(N, kChannelTile);
  out->data.assign(out->Kp * out->Np, 0);
  out->comp.assign(out->Np, 0);
}

// Fills panels [p0, p1) and their compensation terms; returns their max|w|.
inline int32_t PackB8Panels(const int8_t* w, PackedB8* out, int64_t p0, int64_t p1) {
  const int64_t K = out->K, N = out->N, quads = out->Kp / kU8Group;
  int32_t max_abs = 0;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kChannelTile;
    const int64_t width = std::min<int64_t>(kChannelTile, N - n0);
    int8_t* d = out->data.data() + p * quads * kU8Group * kChannelTile;
    for (int64_t j = 0; j < width; ++j) {
      int32_t sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t v = w[k * N + n0 + j];
        d[(k / kU8Group) * kU8Group * kChannelTile + j * kU8Group + k % kU8Group] =
            static_cast<int8_t>(v);
        sum += v;
        max_abs = std::max(max_abs, v < 0 ? -v : v);
      }
      out->comp[n0 + j] = 128 * sum;
    }
  }
  return max_abs;
}

// ---- The u8·s8 GEMM with indirect rows and the requantization in its epilogue.
//
// Row m of A is not stored: it is the concatenation of `taps` segments of seg_len int8
// values (seg_len a multiple of 4, taps * seg_len = Kp), given by pointers, so a 3x3
// convolution reads its 9 taps straight from the NHWC input (out-of-image taps point at
// zeros) and a dense layer its input rows: no im2col copy. The kernel offsets int8 bytes
// itself (x ^ 0x80 = x + 128 as uint8; init holds -comp); uint8 activations
// (unsigned_a) are read as they are (init without comp).
// The 8 x 32 register tile is finished in registers: t = sum + init[n] (init = bias[n] -
// comp[n], or -comp[n] for raw sums; int32 wrap-around is harmless because the final t is
// within int32), then for the rounding modes (shift s[n] in [1, 31], h = 2^(s-1))
//   nearest       (t + h + (t >> 31)) >> s        (ties away from zero)
//   nearest_even  (t + h - 1 + ((t >> s) & 1)) >> s
//   half_up       (t + h) >> s
// clamped to [lo, hi] and stored as int8/int16/int32; kRaw stores t as int32.
struct U8S8Output {
  enum Mode { kNearest = 0, kNearestEven = 1, kHalfUp = 2, kRaw = 3 };
  const int32_t* init = nullptr;   // [Np]
  const int32_t* half = nullptr;   // [Np] (not read by kRaw)
  const int32_t* shift = nullptr;  // [Np] (not read by kRaw)
  int32_t lo = 0, hi = 0;
  int mode = kRaw;
  int out_bytes = 4;  // 1, 2 or 4 (kRaw: 4)
  void* out = nullptr;  // row m, channel n at out + m * ldo + n (elements of out_bytes)
  int64_t ldo = 0;
  int64_t n_valid = 0;  // channels >= n_valid are not stored
  bool unsigned_a = false;  // the row bytes are uint8 values (no +128 offset)
};

constexpr int64_t kIndirectRows = 8;  // rows per tile of the indirect kernel

// A block of `rows` rows in tiles of 8: tile i's row r reads segment t at
// a[(i * taps + t) * 8 + r] (rows past `rows` in the last tile: any readable pointer,
// never stored); out.out points at the block's first row. Channels [n_begin, n_end)
// (multiples of 16, n_end <= Np). channels_outer: loop over 32-channel panels outside
// the row tiles (one weight panel stays in cache while all rows pass, for weights
// beyond L2), else row tiles outside. Requires HasU8S8(), U8S8Fits(Kp), taps * seg_len
// == Kp.
void IndirectGemmU8S8(const int8_t* const* a, int64_t taps, int64_t seg_len, int64_t rows,
                      const PackedB8& B, int64_t n_begin, int64_t n_end, bool channels_outer,
                      const U8S8Output& out);

}  // namespace gemm
}  // namespace kerasq

#endif  // KERASQ_OPS_CC_INT_GEMM_H_

namespace kerasq {
namespace gemm {

// Requantization of one row of int32 accumulators, vectorized (AVX-512/AVX2 clones):
//   t = acc[n] * 2^lshift[n] + bias[n];  y[n] = clamp(round(t / 2^shift[n]), lo, hi)
// for right shifts 1 <= shift[n] <= 62 and the deterministic modes, branch-free:
//   half_up       (t + h) >> s
//   nearest       (t + h - [t < 0]) >> s                  (ties away from zero)
//   nearest_even  (t + h - 1 + ((t >> s) & 1)) >> s       (ties to even)
// with h = 2^(s-1). mode: 0 nearest, 1 nearest_even, 2 half_up (kerasq::Rounding order).
void RequantizeRowInt32(const int32_t* acc, int64_t n, const int64_t* lshift, const int64_t* bias,
                        const int64_t* shift, int mode, int64_t lo, int64_t hi, int32_t* out);

}  // namespace gemm
}  // namespace kerasq
