// Kerasq>RangeMinMax: min and max of a float32 tensor in one pass over memory.
//
// Semantics are those of tf.reduce_min / tf.reduce_max over all elements, the pair of
// reductions it replaces: a NaN anywhere makes both results NaN, an empty tensor gives
// (+inf, -inf). Between +0.0 and -0.0 the order is the one of IEEE 754-2019 minimum and
// maximum (-0.0 < +0.0), so the result never depends on the thread split (TF's reductions
// return whichever zero their summation order meets last).
//
// Each float is compared through a monotone int32 key: key(x) = bits(x) for x >= +0.0 and
// bits(x) ^ 0x7fffffff for a set sign bit. Keys order every non-NaN float totally
// (-0.0 below +0.0), and NaNs map above key(+inf) or below key(-inf): one integer min and
// one integer max per vector then give both extremes and tell whether a NaN was seen,
// with no separate NaN test in the loop. The tensor is split in blocks over TF's intra-op
// pool; blocks are combined with the same min/max, which is associative, so the result is
// bit for bit the same for any thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace kerasq {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;

REGISTER_OP("Kerasq>RangeMinMax")
    .Input("x: float")
    .Output("min: float")
    .Output("max: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return tensorflow::OkStatus();
    })
    .Doc("(reduce_min(x), reduce_max(x)) in one pass; NaN propagates, (+inf, -inf) if empty.");

namespace {

constexpr int32_t kKeyPosInf = 0x7f800000;                  // key(+inf)
// key(-inf)
constexpr int32_t kKeyNegInf = static_cast<int32_t>(0xff800000u ^ 0x7fffffffu);

inline int32_t Key(float x) {
  int32_t i;
  std::memcpy(&i, &x, sizeof(i));
  return i ^ ((i >> 31) & 0x7fffffff);
}

inline float FromKey(int32_t k) {
  const int32_t i = k ^ ((k >> 31) & 0x7fffffff);  // the map is its own inverse
  float x;
  std::memcpy(&x, &i, sizeof(x));
  return x;
}

// Smallest and largest key of x[0, n).
void KeyRange(const float* x, int64_t n, int32_t* lo_out, int32_t* hi_out) {
  int32_t lo = std::numeric_limits<int32_t>::max();
  int32_t hi = std::numeric_limits<int32_t>::min();
  int64_t i = 0;
#if defined(__AVX512F__)
  if (n >= 64) {
    const __m512i mag = _mm512_set1_epi32(0x7fffffff);
    __m512i lo0 = _mm512_set1_epi32(lo), lo1 = lo0, hi0 = _mm512_set1_epi32(hi), hi1 = hi0;
    auto key = [&](__m512i v) {
      return _mm512_xor_si512(v, _mm512_and_si512(_mm512_srai_epi32(v, 31), mag));
    };
    for (; i + 32 <= n; i += 32) {
      const __m512i a = key(_mm512_loadu_si512(x + i));
      const __m512i b = key(_mm512_loadu_si512(x + i + 16));
      lo0 = _mm512_min_epi32(lo0, a);
      hi0 = _mm512_max_epi32(hi0, a);
      lo1 = _mm512_min_epi32(lo1, b);
      hi1 = _mm512_max_epi32(hi1, b);
    }
    lo = _mm512_reduce_min_epi32(_mm512_min_epi32(lo0, lo1));
    hi = _mm512_reduce_max_epi32(_mm512_max_epi32(hi0, hi1));
  }
#endif
  for (; i < n; ++i) {
    const int32_t k = Key(x[i]);
    lo = std::min(lo, k);
    hi = std::max(hi, k);
  }
  *lo_out = lo;
  *hi_out = hi;
}

class RangeMinMaxOp : public OpKernel {
 public:
  explicit RangeMinMaxOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    Tensor* min_out = nullptr;
    Tensor* max_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &min_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &max_out));
    const int64_t n = input.NumElements();
    if (n == 0) {
      min_out->scalar<float>()() = std::numeric_limits<float>::infinity();
      max_out->scalar<float>()() = -std::numeric_limits<float>::infinity();
      return;
    }
    const float* x = input.flat<float>().data();
    constexpr int64_t kBlock = 1 << 15;  // 128 KiB of floats per work unit
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    int32_t lo, hi;
    if (blocks == 1) {
      KeyRange(x, n, &lo, &hi);
    } else {
      std::vector<int32_t> lows(blocks), highs(blocks);
      auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
      tensorflow::Shard(workers->num_threads, workers->workers, blocks, /*cost_per_unit=*/kBlock,
                        [&](int64_t begin, int64_t end) {
                          for (int64_t b = begin; b < end; ++b) {
                            const int64_t start = b * kBlock;
                            KeyRange(x + start, std::min(kBlock, n - start), &lows[b], &highs[b]);
                          }
                        });
      lo = *std::min_element(lows.begin(), lows.end());
      hi = *std::max_element(highs.begin(), highs.end());
    }
    if (lo < kKeyNegInf || hi > kKeyPosInf) {  // a NaN: both reductions give NaN
      min_out->scalar<float>()() = std::numeric_limits<float>::quiet_NaN();
      max_out->scalar<float>()() = std::numeric_limits<float>::quiet_NaN();
      return;
    }
    min_out->scalar<float>()() = FromKey(lo);
    max_out->scalar<float>()() = FromKey(hi);
  }
};

REGISTER_KERNEL_BUILDER(Name("Kerasq>RangeMinMax").Device(DEVICE_CPU), RangeMinMaxOp);

}  // namespace
}  // namespace kerasq
