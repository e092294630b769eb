// Kerasq>VariableSnapshot / Kerasq>SnapshotUnchanged: has any of N resource variables
// changed since a snapshot was taken?
//
// VariableSnapshot copies the variables' bytes (with dtypes and shapes) into a resource
// that also holds references to the variables, and returns its handle (reference-counted:
// freed with the last handle). SnapshotUnchanged(handle) reads every variable in place
// under its lock and compares dtype, shape and bytes with the copy; variables are split
// across the intra-op pool when there are many bytes. A check then costs one op with one
// input and a pass over the bytes, however many variables (a function taking the
// variables as inputs pays per variable on every call).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_handle.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/util/work_sharder.h"

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

REGISTER_OP("Kerasq>VariableSnapshot")
    .Input("variables: N * resource")
    .Output("snapshot: resource")
    .Attr("N: int >= 0")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return tensorflow::OkStatus();
    })
    .Doc("A snapshot of the variables' values (see SnapshotUnchanged).");

REGISTER_OP("Kerasq>SnapshotUnchanged")
    .Input("snapshot: resource")
    .Output("same: bool")
    .SetIsStateful()  // reads variables: never folded, cached or moved across writes
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return tensorflow::OkStatus();
    })
    .Doc("True when every variable of the snapshot holds the dtype, shape and bytes it had.");

namespace {

class VariableSnapshot : public tensorflow::ResourceBase {
 public:
  std::vector<tensorflow::core::RefCountPtr<tensorflow::Var>> vars;
  std::vector<tensorflow::DataType> dtypes;
  std::vector<TensorShape> shapes;
  std::vector<int64_t> offset;  // of each variable's bytes in saved; offset[n] = size
  std::vector<char> saved;
  std::string DebugString() const override {
    return "kerasq VariableSnapshot of " + std::to_string(vars.size()) + " variables";
  }
};

// The variable's current tensor (sharing its buffer), checked to have a byte form.
Status ReadVar(tensorflow::Var* var, int i, Tensor* out) {
  tensorflow::tf_shared_lock lock(*var->mu());
  if (!var->is_initialized) return InvalidArgument("variable ", i, " is not initialized");
  *out = *var->tensor();
  if (!tensorflow::DataTypeCanUseMemcpy(out->dtype()))
    return InvalidArgument("variable ", i, " has a dtype without a byte form");
  return tensorflow::OkStatus();
}

class VariableSnapshotOp : public OpKernel {
 public:
  explicit VariableSnapshotOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    auto* snap = new VariableSnapshot;
    const int n = ctx->num_inputs();
    snap->offset.assign(n + 1, 0);
    std::vector<Tensor> values(n);
    Status status;
    for (int i = 0; i < n && status.ok(); ++i) {
      tensorflow::core::RefCountPtr<tensorflow::Var> var;
      status = tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, i), &var);
      if (status.ok()) status = ReadVar(var.get(), i, &values[i]);
      if (!status.ok()) break;
      snap->dtypes.push_back(values[i].dtype());
      snap->shapes.push_back(values[i].shape());
      snap->offset[i + 1] = snap->offset[i] + static_cast<int64_t>(values[i].tensor_data().size());
      snap->vars.push_back(std::move(var));
    }
    if (!status.ok()) {
      snap->Unref();
      ctx->SetStatus(status);
      return;
    }
    snap->saved.resize(snap->offset[n]);
    for (int i = 0; i < n; ++i) {
      const auto data = values[i].tensor_data();
      std::memcpy(snap->saved.data() + snap->offset[i], data.data(), data.size());
    }
    Tensor* out = nullptr;
    tensorflow::AllocatorAttributes host;
    host.set_on_host(true);
    Status s = ctx->allocate_output(0, TensorShape({}), &out, host);
    if (!s.ok()) {
      snap->Unref();
      ctx->SetStatus(s);
      return;
    }
    // the handle owns the reference made by new
    out->scalar<tensorflow::ResourceHandle>()() =
        tensorflow::ResourceHandle::MakeRefCountingHandle<VariableSnapshot>(snap,
                                                                          ctx->device()->name());
  }
};

class SnapshotUnchangedOp : public OpKernel {
 public:
  explicit SnapshotUnchangedOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    tensorflow::core::RefCountPtr<VariableSnapshot> snap;
    OP_REQUIRES_OK(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, 0), &snap));
    const int64_t n = static_cast<int64_t>(snap->vars.size());
    std::vector<Tensor> values(n);
    bool same_layout = true;
    for (int64_t i = 0; i < n; ++i) {
      OP_REQUIRES_OK(ctx, ReadVar(snap->vars[i].get(), static_cast<int>(i), &values[i]));
      same_layout = same_layout && values[i].dtype() == snap->dtypes[i] &&
                    values[i].shape() == snap->shapes[i];
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    std::atomic<bool> same{same_layout};
    auto compare = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end && same.load(std::memory_order_relaxed); ++i) {
        const auto data = values[i].tensor_data();
        if (std::memcmp(data.data(), snap->saved.data() + snap->offset[i], data.size()) != 0)
          same = false;
      }
    };
    const int64_t total = static_cast<int64_t>(snap->saved.size());
    if (same_layout) {
      if (total < (int64_t{1} << 20) || n < 2) {
        compare(0, n);
      } else {
        auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
        tensorflow::Shard(workers->num_threads, workers->workers, n,
                          std::max<int64_t>(total / n, 1), compare);
      }
    }
    out->scalar<bool>()() = same.load();
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("Kerasq>VariableSnapshot")
                            .Device(DEVICE_CPU)
                            .HostMemory("variables")
                            .HostMemory("snapshot"),
                        VariableSnapshotOp);
REGISTER_KERNEL_BUILDER(Name("Kerasq>SnapshotUnchanged").Device(DEVICE_CPU).HostMemory("snapshot"),
                        SnapshotUnchangedOp);

}  // namespace kerasq
