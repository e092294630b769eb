// Clip masks of the fake-quant forward ops: bit i (byte i / 8, bit i % 8) is 1 where
// element i lay inside the clip range, so the clipped straight-through gradient
// dx = mask ? dy : 0 reads dy and n/8 bytes instead of dy and x (4 + 1/16 memory
// streams of n elements per forward + backward step instead of 5).
#ifndef KERASQ_OPS_CC_CLIP_MASK_H_
#define KERASQ_OPS_CC_CLIP_MASK_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace kerasq {

// Bytes of the mask of n elements.
inline int64_t ClipMaskBytes(int64_t n) { return (n + 7) / 8; }

// Packs count 0/1 flags into bits of out (out[k] bit j = flags[8k + j]); a partial last
// byte is zero-padded.
inline void PackClipBits(const uint8_t* flags, int64_t count, uint8_t* out) {
  int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  for (; i + 64 <= count; i += 64) {
    const __m512i v = _mm512_loadu_si512(flags + i);
    const uint64_t bits = _mm512_test_epi8_mask(v, v);
    std::memcpy(out + i / 8, &bits, 8);
  }
#endif
  for (; i < count; i += 8) {
    uint8_t byte = 0;
    const int64_t m = std::min<int64_t>(8, count - i);
    for (int64_t j = 0; j < m; ++j) byte |= static_cast<uint8_t>((flags[i + j] != 0) << j);
    out[i / 8] = byte;
  }
}

// dx[i] = bit i of mask ? dy[i] : 0 over [begin, end); begin a multiple of 8.
template <typename T>
inline void ClipMaskGradRange(const T* dy, const uint8_t* mask, T* dx, int64_t begin,
                              int64_t end) {
  int64_t i = begin;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if constexpr (sizeof(T) == 4) {
    for (; i + 16 <= end; i += 16) {
      uint16_t bits;
      std::memcpy(&bits, mask + i / 8, 2);
      _mm512_storeu_ps(reinterpret_cast<float*>(dx + i),
                       _mm512_maskz_loadu_ps(bits, reinterpret_cast<const float*>(dy + i)));
    }
  } else {
    for (; i + 8 <= end; i += 8) {
      _mm512_storeu_pd(reinterpret_cast<double*>(dx + i),
                       _mm512_maskz_loadu_pd(mask[i / 8], reinterpret_cast<const double*>(dy + i)));
    }
  }
#endif
  for (; i < end; ++i) dx[i] = ((mask[i / 8] >> (i % 8)) & 1) ? dy[i] : T(0);
}

// Fewest elements worth a shard of their own: below this, handing a piece to another
// pool thread (a wake-up, a few microseconds) costs about as much as the element loop
// saves (~0.1 ns per element in cache), and in a training step the other cores are
// usually busy with the graph's other ops.
constexpr int64_t kMinShardElements = 65536;

// TF Shard's cost per unit of `granule` elements such that a shard holds at least
// kMinShardElements * scale elements (Shard makes total_cost / 10000 shards at most).
inline int64_t ShardUnitCost(int64_t granule, int64_t min_elements = kMinShardElements) {
  return std::max<int64_t>(1, 10000 * granule / std::max<int64_t>(1, min_elements));
}

// Shards [0, n) over TF's intra-op pool in pieces of `granule` elements (a multiple of
// 64, so no two shards share a mask byte), at least min_elements per shard, and calls
// fn(begin, end).
template <typename Fn>
void ParallelMaskAligned(tensorflow::OpKernelContext* ctx, int64_t n, int64_t granule,
                         int64_t min_elements, Fn fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t units = (n + granule - 1) / granule;
  tensorflow::Shard(workers->num_threads, workers->workers, units,
                    ShardUnitCost(granule, min_elements),
                    [&](int64_t ub, int64_t ue) { fn(ub * granule, std::min(n, ue * granule)); });
}

// A granule of about 4096 elements that is a multiple of both 64 (mask words) and
// `channels` (whole rows of a per-channel op).
inline int64_t MaskGranule(int64_t channels) {
  const int64_t g = std::gcd<int64_t>(channels, 64);
  const int64_t l = channels / g * 64;
  return l * std::max<int64_t>(1, 4096 / l);
}

}  // namespace kerasq

#endif  // KERASQ_OPS_CC_CLIP_MASK_H_
