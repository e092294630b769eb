// Kerasq>FakeQuantMinifloat and Kerasq>FakeQuantMinifloatGrad: Ristretto minifloat.
//
// E exponent bits, M mantissa bits, bias = 2^(E-1) - 1, no inf/NaN codes; largest value
// top = (2 - 2^-M) * 2^(2^E - 1 - bias) (cut to what T can hold). Per element, exactly as
// kerasq.numerics.minifloat_quantize:
//   xs = clamp(flush(x), -top, top);  k = floor(log2|xs|)  (raised to 1 - bias with subnormals)
//   y  = clamp(round(xs * 2^(M - k)) * 2^(k - M), -top, top)
//   without subnormals, binades below 2^-bias flush to zero; zeros keep x's sign; NaN propagates.
// Gradient: dx = dy where |x| <= top, else 0.
#include <algorithm>
#include <cmath>
#include <string>

#include "clip_mask.h"
#include "counter_rng.h"
#include "float_bits.h"
#include "rounding.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace kerasq {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;

REGISTER_OP("Kerasq>FakeQuantMinifloat")
    .Input("x: T")
    .Input("seed: int64")
    .Output("y: T")
    .Attr("T: {float, double}")
    .Attr("exp_bits: int >= 1")
    .Attr("mant_bits: int >= 0")
    .Attr("subnormals: bool = false")
    .Attr("rounding: {'nearest', 'nearest_even', 'half_up', 'stochastic'} = 'nearest'")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    })
    .Doc("Minifloat fake quantization (Ristretto Trim2MiniFloat, saturating carry).");

REGISTER_OP("Kerasq>FakeQuantMinifloatMasked")
    .Input("x: T")
    .Input("seed: int64")
    .Output("y: T")
    .Output("clip_mask: uint8")
    .Attr("T: {float, double}")
    .Attr("exp_bits: int >= 1")
    .Attr("mant_bits: int >= 0")
    .Attr("subnormals: bool = false")
    .Attr("rounding: {'nearest', 'nearest_even', 'half_up', 'stochastic'} = 'nearest'")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      const int64_t n = c->Value(c->NumElements(c->input(0)));
      c->set_output(1, c->Vector(n < 0 ? InferenceContext::kUnknownDim : ClipMaskBytes(n)));
      return tensorflow::OkStatus();
    })
    .Doc(R"doc(
Kerasq>FakeQuantMinifloat that also writes the clip mask for Kerasq>ClipMaskGrad: bit i
of clip_mask (byte i / 8, bit i % 8, flat index i) is 1 where |x| <= max.
)doc");

REGISTER_OP("Kerasq>FakeQuantMinifloatGrad")
    .Input("dy: T")
    .Input("x: T")
    .Output("dx: T")
    .Attr("T: {float, double}")
    .Attr("exp_bits: int >= 1")
    .Attr("mant_bits: int >= 0")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    })
    .Doc("Clipped straight-through gradient of Kerasq>FakeQuantMinifloat.");

namespace {

template <typename T>
T MinifloatTop(int exp_bits, int mant_bits) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int top_exp = std::min((1 << exp_bits) - 1 - bias, FloatTraits<T>::kMaxExp);
  const int mant = std::min(mant_bits, FloatTraits<T>::kMant);
  return static_cast<T>(std::ldexp(2.0 - std::ldexp(1.0, -mant), top_exp));
}

struct MinifloatFormat {
  int exp_bits = 4, mant_bits = 3;
  bool subnormals = false;
  int k_min() const {
    const int bias = (1 << (exp_bits - 1)) - 1;
    return subnormals ? 1 - bias : -bias;
  }
};

template <Rounding R, typename T>
inline T MinifloatElement(T x, T top, int mant, int k_min, bool subnormals, uint64_t stream,
                          uint64_t index) {
  const T xs = std::min(std::max(Flush(x), -top), top);
  const int k = FloorLog2(std::fabs(xs));
  const int k_grid = subnormals ? std::max(k, k_min) : k;
  const Pow2Pair<T> up(mant - k_grid), down(k_grid - mant);
  const T q = RoundFloat<R, T>(xs * up.first * up.second, stream, index);
  T out = Flush(q * down.first * down.second);
  out = std::min(std::max(out, -top), top);
  if (!subnormals && k < k_min) out = T(0);
  if (out == T(0)) out = std::copysign(T(0), xs);  // a zero result keeps the sign of x
  return std::isnan(xs) ? xs : out;
}

constexpr int64_t kMinifloatGranule = 4096;  // a multiple of 64: shards never share a mask byte

template <typename Fn>
void ParallelElements(OpKernelContext* ctx, int64_t n, int64_t cost, Fn fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  constexpr int64_t kGranule = kMinifloatGranule;
  const int64_t units = (n + kGranule - 1) / kGranule;
  tensorflow::Shard(workers->num_threads, workers->workers, units, cost * kGranule,
                    [&](int64_t ub, int64_t ue) {
                      fn(ub * kGranule, std::min(n, ue * kGranule));
                    });
}

}  // namespace

template <typename T, bool kMasked>
class FakeQuantMinifloatOp : public OpKernel {
 public:
  explicit FakeQuantMinifloatOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("exp_bits", &fmt_.exp_bits));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mant_bits", &fmt_.mant_bits));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("subnormals", &fmt_.subnormals));
    std::string rounding;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rounding", &rounding));
    OP_REQUIRES(ctx, ParseRounding(rounding, &rounding_),
                InvalidArgument("unknown rounding ", rounding));
    OP_REQUIRES(ctx, fmt_.exp_bits >= 1 && fmt_.exp_bits <= 10 && fmt_.mant_bits <= 52,
                InvalidArgument("exp_bits must be in [1, 10] and mant_bits in [0, 52]"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& seed = ctx->input(1);
    OP_REQUIRES(ctx, seed.NumElements() == 1, InvalidArgument("seed must be a scalar"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const int64_t n = x.NumElements();
    if (n == 0) return;
    const T* xp = x.flat<T>().data();
    T* yp = y->flat<T>().data();
    const uint64_t stream = StreamStart(seed.flat<int64_t>()(0));
    const T top = MinifloatTop<T>(fmt_.exp_bits, fmt_.mant_bits);
    const int mant = fmt_.mant_bits, k_min = fmt_.k_min();
    const bool sub = fmt_.subnormals;
    uint8_t* maskp = nullptr;
    if (kMasked) {
      Tensor* mask = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(
                              1, tensorflow::TensorShape({ClipMaskBytes(n)}), &mask));
      maskp = mask->flat<uint8_t>().data();
    }
    auto run = [&](auto mode) {
      constexpr Rounding R = decltype(mode)::value;
      auto quantize = [&](int64_t b, int64_t e) {
        if (sub) {
          for (int64_t i = b; i < e; ++i)
            yp[i] = MinifloatElement<R, T>(xp[i], top, mant, k_min, true, stream, i);
        } else {
          for (int64_t i = b; i < e; ++i)
            yp[i] = MinifloatElement<R, T>(xp[i], top, mant, k_min, false, stream, i);
        }
      };
      ParallelElements(ctx, n, 8, [&](int64_t b, int64_t e) {
        if (!kMasked) return quantize(b, e);
        // Chunks of one granule (a multiple of 64): the flags stay in cache.
        uint8_t flags[kMinifloatGranule];
        for (int64_t cb = b; cb < e; cb += kMinifloatGranule) {
          const int64_t ce = std::min(e, cb + kMinifloatGranule);
          quantize(cb, ce);
          for (int64_t i = cb; i < ce; ++i) flags[i - cb] = std::fabs(xp[i]) <= top;
          PackClipBits(flags, ce - cb, maskp + cb / 8);
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
  MinifloatFormat fmt_;
  Rounding rounding_ = Rounding::kNearest;
};

template <typename T>
class FakeQuantMinifloatGradOp : public OpKernel {
 public:
  explicit FakeQuantMinifloatGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("exp_bits", &exp_bits_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mant_bits", &mant_bits_));
    OP_REQUIRES(ctx, exp_bits_ >= 1 && exp_bits_ <= 10,
                InvalidArgument("exp_bits must be in [1, 10]"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == x.shape(), InvalidArgument("dy and x must have the same shape"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    const int64_t n = x.NumElements();
    if (n == 0) return;
    const T* xp = x.flat<T>().data();
    const T* dyp = dy.flat<T>().data();
    T* dxp = dx->flat<T>().data();
    const T top = MinifloatTop<T>(exp_bits_, mant_bits_);
    ParallelElements(ctx, n, 2, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T d = dyp[i];
        dxp[i] = std::fabs(xp[i]) <= top ? d : T(0);
      }
    });
  }

 private:
  int exp_bits_ = 4, mant_bits_ = 3;
};

#define KERASQ_REGISTER_MINIFLOAT(T)                                                  \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("Kerasq>FakeQuantMinifloat").Device(DEVICE_CPU).TypeConstraint<T>("T"),    \
      FakeQuantMinifloatOp<T, false>);                                                \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("Kerasq>FakeQuantMinifloatMasked").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      FakeQuantMinifloatOp<T, true>);                                                 \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("Kerasq>FakeQuantMinifloatGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      FakeQuantMinifloatGradOp<T>);

KERASQ_REGISTER_MINIFLOAT(float)
KERASQ_REGISTER_MINIFLOAT(double)
#undef KERASQ_REGISTER_MINIFLOAT

}  // namespace kerasq
