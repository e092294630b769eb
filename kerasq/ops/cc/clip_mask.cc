// Kerasq>ClipMaskGrad: the clipped straight-through gradient from the bit mask written by
// Kerasq>FakeQuantDfpMasked / Kerasq>FakeQuantMinifloatMasked: dx = mask bit ? dy : 0.
#include "clip_mask.h"

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace kerasq {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;

REGISTER_OP("Kerasq>ClipMaskGrad")
    .Input("dy: T")
    .Input("mask: uint8")
    .Output("dx: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    })
    .Doc("dx = dy where the clip-mask bit of the element is set, else 0.");

template <typename T>
class ClipMaskGradOp : public OpKernel {
 public:
  explicit ClipMaskGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& mask = ctx->input(1);
    const int64_t n = dy.NumElements();
    OP_REQUIRES(ctx, mask.dims() == 1 && mask.dim_size(0) == ClipMaskBytes(n),
                InvalidArgument("mask must have shape [", ClipMaskBytes(n), "] for ", n,
                                " elements, got ", mask.shape().DebugString()));
    Tensor* dx = nullptr;
    // dx in dy's buffer when nothing else holds dy (element-wise: read, then written)
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dx));
    if (n == 0) return;
    const T* dyp = dy.flat<T>().data();
    const uint8_t* mp = mask.flat<uint8_t>().data();
    T* dxp = dx->flat<T>().data();
    ParallelMaskAligned(ctx, n, 4096, kMinShardElements, [&](int64_t b, int64_t e) {
      ClipMaskGradRange<T>(dyp, mp, dxp, b, e);
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("Kerasq>ClipMaskGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        ClipMaskGradOp<float>);
REGISTER_KERNEL_BUILDER(Name("Kerasq>ClipMaskGrad").Device(DEVICE_CPU).TypeConstraint<double>("T"),
                        ClipMaskGradOp<double>);

}  // namespace kerasq
