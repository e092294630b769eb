// Kerasq>RangeMinMax: min and max of a float32 tensor in one pass over memory.
// Kerasq>DfpRangeUpdate: the same pass plus the scalar range/fl update of a power-of-two
// DFP activation quantizer, in one op (see the op's doc below).
//
// Semantics are those of tf.reduce_min / tf.reduce_max over all elements, the pair of
// reductions it replaces: a NaN anywhere makes both results NaN, an empty tensor gives
// (+inf, -inf). Between +0.0 and -0.0 the order is the one of IEEE 754-2019 minimum and
// maximum (-0.0 < +0.0), so the result never depends on the thread split (TF's reductions
// return whichever zero their summation order meets last).
//
// Each float is compared through a monotone int32 key: key(x) = bits(x) for x >= +0.0 and
// bits(x) ^ 0x7fffffff for a set sign bit. Keys order every non-NaN float totally
// (-0.0 below +0.0; subnormals count as zeros, as under TF's flush-to-zero), and NaNs map above key(+inf) or below key(-inf): one integer min and
// one integer max per vector then give both extremes and tell whether a NaN was seen,
// with no separate NaN test in the loop. The tensor is split in blocks over TF's intra-op
// pool; blocks are combined with the same min/max, which is associative, so the result is
// bit for bit the same for any thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "float_bits.h"
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

REGISTER_OP("Kerasq>DfpRangeUpdate")
    .Input("x: float")
    .Input("count: int64")
    .Input("stored_min: float")
    .Input("stored_max: float")
    .Output("new_min: float")
    .Output("new_max: float")
    .Output("frac_bits: float")
    .Output("scale: float")
    .Attr("bitwidth: int >= 1")
    .Attr("signedness: {'data', 'signed', 'unsigned'} = 'data'")
    .Attr("max_abs: bool = false")
    .Attr("relu: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      for (int i = 0; i < 4; ++i) c->set_output(i, c->Scalar());
      return tensorflow::OkStatus();
    })
    .Doc(R"doc(
The running range of x folded into the stored one, and the DFP fl and scale 2^fl from it:
(bmin, bmax) = (min x, max x), bmax = max(bmax, -bmin) if max_abs; new = (bmin, bmax) when
count == 0, else (min(stored_min, bmin), max(stored_max, bmax)); A = max(|new_min|, new_max)
if max_abs else max(|new_min|, |new_max|); fl = B - ceil(log2 A) (ceil(log2 A) := 0 below
the smallest normal float), minus 1 when signed (signedness 'data': signed iff new_min < 0
or NaN; never with max_abs). tf.minimum/tf.maximum semantics: NaN propagates.
relu: the range of max(x, 0), i.e. (bmin, bmax) = (max(min x, 0), max(max x, 0)) for a
non-empty x (a ReLU fused in front, see Kerasq>FakeQuantDfpMasked's relu).
)doc");

namespace {

constexpr int32_t kKeyPosInf = 0x7f800000;                  // key(+inf)
// key(-inf)
constexpr int32_t kKeyNegInf = static_cast<int32_t>(0xff800000u ^ 0x7fffffffu);

// A subnormal counts as the zero of its sign: TF's kernels run with denormals flushed
// (reduce_min of subnormals gives 0), and so do these.
inline int32_t FlushBits(int32_t i) { return (i & 0x7f800000) == 0 ? (i & INT32_MIN) : i; }

inline int32_t Key(float x) {
  int32_t i;
  std::memcpy(&i, &x, sizeof(i));
  i = FlushBits(i);
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
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    const __m512i sign = _mm512_set1_epi32(INT32_MIN);
    __m512i lo0 = _mm512_set1_epi32(lo), lo1 = lo0, hi0 = _mm512_set1_epi32(hi), hi1 = hi0;
    auto key = [&](__m512i v) {
      v = _mm512_mask_and_epi32(v, _mm512_testn_epi32_mask(v, exponent), v, sign);  // flush
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

// (min, max) of a float tensor: NaN for both if it holds a NaN, (+inf, -inf) if empty.
void MinMax(OpKernelContext* ctx, const Tensor& input, float* min_out, float* max_out) {
  const int64_t n = input.NumElements();
  if (n == 0) {
    *min_out = std::numeric_limits<float>::infinity();
    *max_out = -std::numeric_limits<float>::infinity();
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
    *min_out = std::numeric_limits<float>::quiet_NaN();
    *max_out = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  *min_out = FromKey(lo);
  *max_out = FromKey(hi);
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
    MinMax(ctx, input, min_out->scalar<float>().data(), max_out->scalar<float>().data());
  }
};

REGISTER_KERNEL_BUILDER(Name("Kerasq>RangeMinMax").Device(DEVICE_CPU), RangeMinMaxOp);

// tf.minimum / tf.maximum on floats: NaN if either is NaN.
inline float MinimumNan(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b < a ? b : a;
}
inline float MaximumNan(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b > a ? b : a;
}

class DfpRangeUpdateOp : public OpKernel {
 public:
  explicit DfpRangeUpdateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bitwidth", &bitwidth_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("signedness", &signedness_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_abs", &max_abs_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    float bmin, bmax;
    MinMax(ctx, ctx->input(0), &bmin, &bmax);
    if (relu_ && ctx->input(0).NumElements() > 0) {  // the extremes of max(x, 0)
      bmin = MaximumNan(bmin, 0.0f);
      bmax = MaximumNan(bmax, 0.0f);
    }
    if (max_abs_) bmax = MaximumNan(bmax, -bmin);
    const bool first = ctx->input(1).scalar<int64_t>()() == 0;
    const float inf = std::numeric_limits<float>::infinity();
    const float lo = first ? inf : Flush(ctx->input(2).scalar<float>()());
    const float hi = first ? -inf : Flush(ctx->input(3).scalar<float>()());
    const float new_min = MinimumNan(lo, bmin);
    const float new_max = MaximumNan(hi, bmax);
    const float a = MaximumNan(std::fabs(new_min), max_abs_ ? new_max : std::fabs(new_max));
    float fl = static_cast<float>(bitwidth_ - CeilLog2FromBits(a));
    const bool unsigned_grid = signedness_ == "unsigned" ||
                               (signedness_ == "data" && new_min >= 0.0f);
    if (!max_abs_ && !unsigned_grid) fl -= 1.0f;
    // 2^fl as TF's pow under its flush-to-zero: 0 below 2^-126, inf above 2^127.
    float scale;
    if (fl < -126.0f) {
      scale = 0.0f;
    } else if (fl > 127.0f) {
      scale = inf;
    } else {
      const int32_t e = (static_cast<int32_t>(fl) + 127) << 23;
      std::memcpy(&scale, &e, sizeof(scale));
    }
    float* out[4];
    for (int i = 0; i < 4; ++i) {
      Tensor* t = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, TensorShape({}), &t));
      out[i] = t->scalar<float>().data();
    }
    *out[0] = new_min;
    *out[1] = new_max;
    *out[2] = fl;
    *out[3] = scale;
  }

 private:
  int bitwidth_;
  std::string signedness_;
  bool max_abs_;
  bool relu_;
};

REGISTER_KERNEL_BUILDER(Name("Kerasq>DfpRangeUpdate").Device(DEVICE_CPU), DfpRangeUpdateOp);

}  // namespace
}  // namespace kerasq
