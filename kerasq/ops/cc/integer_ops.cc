// Fixed-point integer kernels: Kerasq>DfpConv2D, Kerasq>DfpDepthwiseConv2D, Kerasq>DfpMatMul.
//
// int8/int16 inputs and weights, exact int32 accumulation (int64 when the operand ranges
// could overflow int32), int32 bias, then the requantization of requantize.h. Conv2D is
// im2col + the packed integer GEMM of int_gemm.h, fused per block of output rows and
// multithreaded over TF's intra-op pool; layouts are NHWC activations and HWIO (conv),
// HWCM (depthwise) or [K, N] (matmul) weights, as in Keras.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <limits>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "int_depthwise.h"
#include "int_gemm.h"
#include "lru_slot.h"
#include "requantize.h"
#include "rounding.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace kerasq {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

constexpr char kRounding[] =
    "rounding: {'nearest', 'nearest_even', 'half_up', 'stochastic'} = 'nearest'";

struct ConvGeom {
  int64_t batch = 0, in_h = 0, in_w = 0, in_c = 0, k_h = 0, k_w = 0, out_c = 0;
  int64_t out_h = 0, out_w = 0, s_h = 1, s_w = 1, d_h = 1, d_w = 1, pad_top = 0, pad_left = 0;
};

// TF's padding rules (SAME puts the odd pixel at the bottom/right); -1 if unknown.
void OutputSize(int64_t in, int64_t k, int64_t stride, int64_t dilation, const std::string& pad,
                int64_t pad_before, int64_t pad_after, int64_t* out, int64_t* before) {
  const int64_t eff = (k - 1) * dilation + 1;
  if (pad == "VALID") {
    *out = (in - eff + stride) / stride;
    *before = 0;
  } else if (pad == "SAME") {
    *out = (in + stride - 1) / stride;
    const int64_t total = std::max<int64_t>((*out - 1) * stride + eff - in, 0);
    *before = total / 2;
  } else {
    *out = (in + pad_before + pad_after - eff) / stride + 1;
    *before = pad_before;
  }
}

struct ConvAttrs {
  std::vector<int32_t> strides, dilations, explicit_paddings;
  std::string padding;
  Status Read(OpKernelConstruction* ctx) {
    TF_RETURN_IF_ERROR(ctx->GetAttr("strides", &strides));
    TF_RETURN_IF_ERROR(ctx->GetAttr("dilations", &dilations));
    TF_RETURN_IF_ERROR(ctx->GetAttr("padding", &padding));
    TF_RETURN_IF_ERROR(ctx->GetAttr("explicit_paddings", &explicit_paddings));
    if (strides.size() != 2 || dilations.size() != 2 || strides[0] < 1 || strides[1] < 1 ||
        dilations[0] < 1 || dilations[1] < 1)
      return InvalidArgument("strides and dilations must be 2 positive integers [h, w]");
    if (padding == "EXPLICIT" && explicit_paddings.size() != 4)
      return InvalidArgument("explicit_paddings must be [top, bottom, left, right]");
    if (padding != "EXPLICIT") explicit_paddings.assign(4, 0);
    return tensorflow::OkStatus();
  }
  Status Geometry(const TensorShape& x, int64_t k_h, int64_t k_w, int64_t out_c,
                  ConvGeom* g) const {
    if (x.dims() != 4) return InvalidArgument("x must be NHWC (rank 4), got rank ", x.dims());
    g->batch = x.dim_size(0);
    g->in_h = x.dim_size(1);
    g->in_w = x.dim_size(2);
    g->in_c = x.dim_size(3);
    g->k_h = k_h;
    g->k_w = k_w;
    g->out_c = out_c;
    g->s_h = strides[0];
    g->s_w = strides[1];
    g->d_h = dilations[0];
    g->d_w = dilations[1];
    OutputSize(g->in_h, k_h, g->s_h, g->d_h, padding, explicit_paddings[0], explicit_paddings[1],
               &g->out_h, &g->pad_top);
    OutputSize(g->in_w, k_w, g->s_w, g->d_w, padding, explicit_paddings[2], explicit_paddings[3],
               &g->out_w, &g->pad_left);
    if (g->out_h < 1 || g->out_w < 1) return InvalidArgument("the kernel does not fit the input");
    return tensorflow::OkStatus();
  }
};

Status ConvShape(InferenceContext* c, bool depthwise) {
  ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &w));
  std::vector<int32_t> strides, dilations, explicit_paddings;
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(c->GetAttr("dilations", &dilations));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  TF_RETURN_IF_ERROR(c->GetAttr("explicit_paddings", &explicit_paddings));
  if (strides.size() != 2 || dilations.size() != 2) return InvalidArgument("strides/dilations: [h, w]");
  if (explicit_paddings.size() != 4) explicit_paddings.assign(4, 0);
  DimensionHandle out_c;
  if (depthwise) {
    TF_RETURN_IF_ERROR(c->Multiply(c->Dim(w, 2), c->Dim(w, 3), &out_c));
  } else {
    out_c = c->Dim(w, 3);
  }
  DimensionHandle dims[2];
  for (int i = 0; i < 2; ++i) {
    const int64_t in = c->Value(c->Dim(x, 1 + i));
    const int64_t k = c->Value(c->Dim(w, i));
    if (in < 0 || k < 0) {
      dims[i] = c->UnknownDim();
      continue;
    }
    int64_t out, before;
    OutputSize(in, k, strides[i], dilations[i], padding, explicit_paddings[2 * i],
               explicit_paddings[2 * i + 1], &out, &before);
    dims[i] = c->MakeDim(out);
  }
  c->set_output(0, c->MakeShape({c->Dim(x, 0), dims[0], dims[1], out_c}));
  return tensorflow::OkStatus();
}

#define KERASQ_INTEGER_COMMON_ATTRS                                                  \
  Attr("Tin: {int8, uint8, int16}")                                                  \
      .Attr("Tw: {int8, int16}")                                                     \
      .Attr("out_type: {int8, uint8, int16, int32} = DT_INT8")                       \
      .Attr("bias_frac: int = 0")                                                    \
      .Attr("out_frac: int")                                                         \
      .Attr("out_bitwidth: int = 8")                                                 \
      .Attr("out_signed: bool = true")                                               \
      .Attr(kRounding)

#define KERASQ_CONV_ATTRS                                                            \
  Attr("strides: list(int) = [1, 1]")                                                \
      .Attr("dilations: list(int) = [1, 1]")                                         \
      .Attr("padding: {'SAME', 'VALID', 'EXPLICIT'} = 'VALID'")                      \
      .Attr("explicit_paddings: list(int) = []")

constexpr char kIntegerDoc[] = R"doc(
Fixed-point layer in integers: exact accumulation of x*w (x at 2^-fl_x, w at 2^-fl_w),
plus bias at 2^-bias_frac, requantized to out_bitwidth bits at 2^-out_frac by an arithmetic
shift with the given rounding and saturation. acc_frac = fl_x + fl_w, shape [] or [Cout].
bias has shape [0] (no bias) or [Cout]. seed drives rounding='stochastic' only.
)doc";

}  // namespace

REGISTER_OP("Kerasq>DfpConv2D")
    .Input("x: Tin")
    .Input("w: Tw")
    .Input("bias: int32")
    .Input("acc_frac: int32")
    .Input("seed: int64")
    .Output("y: out_type")
    .KERASQ_INTEGER_COMMON_ATTRS
    .KERASQ_CONV_ATTRS
    .SetShapeFn([](InferenceContext* c) { return ConvShape(c, false); })
    .Doc(kIntegerDoc);

REGISTER_OP("Kerasq>DfpDepthwiseConv2D")
    .Input("x: Tin")
    .Input("w: Tw")
    .Input("bias: int32")
    .Input("acc_frac: int32")
    .Input("seed: int64")
    .Output("y: out_type")
    .KERASQ_INTEGER_COMMON_ATTRS
    .KERASQ_CONV_ATTRS
    .SetShapeFn([](InferenceContext* c) { return ConvShape(c, true); })
    .Doc(kIntegerDoc);

REGISTER_OP("Kerasq>DfpMatMul")
    .Input("x: Tin")
    .Input("w: Tw")
    .Input("bias: int32")
    .Input("acc_frac: int32")
    .Input("seed: int64")
    .Output("y: out_type")
    .KERASQ_INTEGER_COMMON_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, w, lead;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
      TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &lead));
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->Concatenate(lead, c->Vector(c->Dim(w, 1)), &out));
      c->set_output(0, out);
      return tensorflow::OkStatus();
    })
    .Doc(kIntegerDoc);

namespace {

// The attributes and inputs every integer kernel shares, and its requantizer.
class IntegerKernelBase : public OpKernel {
 public:
  explicit IntegerKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bias_frac", &bias_frac_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("out_frac", &out_frac_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("out_bitwidth", &out_bitwidth_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("out_signed", &out_signed_));
    std::string rounding;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rounding", &rounding));
    OP_REQUIRES(ctx, ParseRounding(rounding, &rounding_),
                InvalidArgument("unknown rounding ", rounding));
    OP_REQUIRES(ctx, out_bitwidth_ >= 1 && out_bitwidth_ <= 32,
                InvalidArgument("out_bitwidth must be in [1, 32]"));
    tensorflow::DataType out_type;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("out_type", &out_type));
    OP_REQUIRES(ctx, out_type != tensorflow::DT_UINT8 || (!out_signed_ && out_bitwidth_ <= 8),
                InvalidArgument("out_type uint8 holds unsigned outputs of at most 8 bits"));
  }

 protected:
  Status MakeRequantizer(OpKernelContext* ctx, int64_t out_c, double acc_bound,
                         Requantizer* rq) const {
    const Tensor& bias = ctx->input(2);
    const Tensor& acc_frac = ctx->input(3);
    const Tensor& seed = ctx->input(4);
    if (bias.dims() != 1 || (bias.dim_size(0) != 0 && bias.dim_size(0) != out_c))
      return InvalidArgument("bias must have shape [0] or [", out_c, "], got ",
                             bias.shape().DebugString());
    if (acc_frac.dims() > 1 || (acc_frac.dims() == 1 && acc_frac.dim_size(0) != out_c))
      return InvalidArgument("acc_frac must have shape [] or [", out_c, "]");
    if (seed.NumElements() != 1) return InvalidArgument("seed must be a scalar");
    const std::string err = rq->Init(
        out_c, acc_frac.flat<int32_t>().data(), acc_frac.dims() == 1,
        bias.flat<int32_t>().data(), bias.dim_size(0) == out_c, bias_frac_, out_frac_,
        out_bitwidth_, out_signed_, acc_bound);
    if (!err.empty()) return InvalidArgument(err);
    rq->rounding = rounding_;
    rq->stream = StreamStart(seed.flat<int64_t>()(0));
    rq->PrepareFast();
    return tensorflow::OkStatus();
  }

  int bias_frac_ = 0, out_frac_ = 0, out_bitwidth_ = 8;
  bool out_signed_ = true;
  Rounding rounding_ = Rounding::kNearest;
};

// Calls below kInlineWork (multiply-accumulates, weighted by the kernel's cost per
// product) run on the calling thread: waking the intra-op pool costs tens of microseconds,
// and on a busy machine one preempted worker delays the whole call, more than a second
// thread saves on a layer this small (measured: a 3x3 int8 depthwise layer on 56x56x128
// and a 1x1 conv on 56x56x64 -> 64 run faster on one thread; a 3x3 conv of that size
// does not).
constexpr int64_t kInlineWork = int64_t{1} << 25;

template <typename Fn>
void RunTasks(OpKernelContext* ctx, bool run_inline, int64_t tasks, int64_t cost_per_task,
              const Fn& fn) {
  if (run_inline || tasks <= 1) {
    if (tasks > 0) fn(int64_t{0}, tasks);
    return;
  }
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, tasks, cost_per_task, fn);
}

// Runs fn(i) for every i in [0, chunks) on the calling thread and up to threads - 1 pool
// threads, which take chunks in order as they come: a helper that wakes late (or is
// preempted on a busy machine) finds less work, and the call returns once every chunk is
// done without waiting for helpers that never started (they then find nothing to do;
// the state they share with the caller is reference-counted).
template <typename Fn>
void ParallelChunks(OpKernelContext* ctx, int64_t threads, int64_t chunks, const Fn& fn) {
  const int64_t helpers = std::min(threads, chunks) - 1;
  if (helpers <= 0) {
    for (int64_t i = 0; i < chunks; ++i) fn(i);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t chunks = 0;
    std::function<void(int64_t)> fn;  // called only for chunks taken before the last is done
    std::mutex mu;
    std::condition_variable all_done;
    void Run() {
      for (int64_t i; (i = next.fetch_add(1)) < chunks;) {
        fn(i);
        if (done.fetch_add(1) + 1 == chunks) {
          std::lock_guard<std::mutex> lock(mu);
          all_done.notify_all();
        }
      }
    }
  };
  auto state = std::make_shared<State>();
  state->chunks = chunks;
  state->fn = [&fn](int64_t i) { fn(i); };
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  for (int64_t h = 0; h < helpers; ++h) pool->Schedule([state] { state->Run(); });
  state->Run();
  std::unique_lock<std::mutex> lock(state->mu);
  state->all_done.wait(lock, [&] { return state->done.load() == chunks; });
}

// Writes rows [row0, row0 + rows), columns [n_begin, n_end) of y (channels wide) from
// accumulators C (row r at C + r * ldc, indexed by channel).
template <typename Acc, typename Out>
void RequantizeRows(const Requantizer& rq, const Acc* C, int64_t ldc, int64_t row0, int64_t rows,
                    int64_t channels, Out* y, int64_t n_begin = 0, int64_t n_end = -1) {
  if (n_end < 0 || n_end > channels) n_end = channels;
  if (n_begin >= n_end) return;
  const int64_t width = n_end - n_begin;
  if constexpr (std::is_same_v<Acc, int32_t>) {
    if (rq.fast32) {
      for (int64_t r = 0; r < rows; ++r)
        rq.Row32(C + r * ldc, n_begin, n_end, y + (row0 + r) * channels);
      return;
    }
    if (rq.fast) {
      thread_local std::vector<int32_t> row;
      row.resize(width);
      for (int64_t r = 0; r < rows; ++r) {
        Out* out = y + (row0 + r) * channels + n_begin;
        int32_t* dst = std::is_same_v<Out, int32_t> ? reinterpret_cast<int32_t*>(out) : row.data();
        gemm::RequantizeRowInt32(C + r * ldc + n_begin, width, rq.mul.data() + n_begin,
                                 rq.bias_term.data() + n_begin, rq.shift64.data() + n_begin,
                                 static_cast<int>(rq.rounding), rq.lo, rq.hi, dst);
        if constexpr (!std::is_same_v<Out, int32_t>) {
          for (int64_t n = 0; n < width; ++n) out[n] = static_cast<Out>(dst[n]);
        }
      }
      return;
    }
  }
  auto body = [&](auto mode) {
    constexpr Rounding R = decltype(mode)::value;
    for (int64_t r = 0; r < rows; ++r) {
      const uint64_t base = static_cast<uint64_t>(row0 + r) * channels;
      Out* out = y + (row0 + r) * channels;
      const Acc* c = C + r * ldc;
      for (int64_t n = n_begin; n < n_end; ++n)
        out[n] = static_cast<Out>(rq.Apply<R>(static_cast<int64_t>(c[n]), n, base + n));
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

// max|v|, or the type's bound when that already proves int32 accumulation safe
// (always for int8 x int8), which saves a pass over the activations.
template <typename T>
int64_t MaxAbs(const T* v, int64_t n) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max<int64_t>(m, v[i] < 0 ? -int64_t(v[i]) : v[i]);
  return m;
}

// PackB on the intra-op pool (the weights are packed on every call).
template <typename W>
void PackWeights(OpKernelContext* ctx, const W* w, int64_t K, int64_t N, gemm::PackedB* B) {
  gemm::PackBInit(K, N, B);
  const int64_t panels = B->Np / gemm::kChannelTile;
  std::mutex mu;
  int32_t max_abs = 0;
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, panels, B->Kp * gemm::kChannelTile * 2,
                    [&](int64_t p0, int64_t p1) {
                      const int32_t m = gemm::PackBPanels(w, B, p0, p1);
                      std::lock_guard<std::mutex> lock(mu);
                      max_abs = std::max(max_abs, m);
                    });
  B->max_abs = max_abs;
}

// PackB8 on the intra-op pool.
void PackWeights(OpKernelContext* ctx, const int8_t* w, int64_t K, int64_t N, gemm::PackedB8* B) {
  gemm::PackB8Init(K, N, B);
  const int64_t panels = B->Np / gemm::kChannelTile;
  std::mutex mu;
  int32_t max_abs = 0;
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, panels, B->Kp * gemm::kChannelTile * 2,
                    [&](int64_t p0, int64_t p1) {
                      const int32_t m = gemm::PackB8Panels(w, B, p0, p1);
                      std::lock_guard<std::mutex> lock(mu);
                      max_abs = std::max(max_abs, m);
                    });
  B->max_abs = max_abs;
}

// Packed weights reused across calls while the weight bytes are unchanged (layers run with
// constant or rarely updated weights: packing a 4096x1000 int8 matrix costs more than the
// whole GEMM of a small batch). Eager TF shares one kernel instance between all calls
// with equal attributes, i.e. between the layers of a net, so several weight tensors are
// kept, found by buffer address and confirmed byte for byte: the result stays exact
// whatever the weights are (a Variable updated in place included). Cost per call: one
// read of the weights; memory: a copy of them beside the packed form.
template <typename Packed>
class PackedWeightCache {
 public:
  // An entry found by address and shape: packed was made from the bytes raw, which the
  // caller still has to compare with the weights.
  struct Candidate {
    std::shared_ptr<const Packed> packed;
    std::shared_ptr<const std::vector<char>> raw;
  };

  template <typename W>
  Candidate Find(const W* w, int64_t K, int64_t N) {
    const size_t bytes = static_cast<size_t>(K * N) * sizeof(W);
    std::lock_guard<std::mutex> lock(mu_);
    for (Entry& e : entries_) {
      if (e.key == w && e.packed->K == K && e.packed->N == N && e.raw->size() == bytes) {
        e.last_use = ++clock_;
        return {e.packed, e.raw};
      }
    }
    return {};
  }

  // Packs w and keeps it, in place of the entry of the same buffer if there is one.
  template <typename W>
  std::shared_ptr<const Packed> Put(OpKernelContext* ctx, const W* w, int64_t K, int64_t N) {
    const size_t bytes = static_cast<size_t>(K * N) * sizeof(W);
    auto packed = std::make_shared<Packed>();
    PackWeights(ctx, w, K, N, packed.get());
    auto raw = std::make_shared<const std::vector<char>>(reinterpret_cast<const char*>(w),
                                                         reinterpret_cast<const char*>(w) + bytes);
    std::lock_guard<std::mutex> lock(mu_);
    Entry* slot = PickLruSlot(&entries_, w, kEntries);
    slot->key = w;
    slot->raw = std::move(raw);
    slot->packed = packed;
    slot->last_use = ++clock_;
    return packed;
  }

  // The packed form of w, confirmed (or made) now.
  template <typename W>
  std::shared_ptr<const Packed> Get(OpKernelContext* ctx, const W* w, int64_t K, int64_t N) {
    const Candidate c = Find(w, K, N);
    if (c.packed && std::memcmp(c.raw->data(), w, c.raw->size()) == 0) return c.packed;
    return Put(ctx, w, K, N);
  }

 private:
  static constexpr size_t kEntries = 64;
  struct Entry {
    const void* key = nullptr;
    std::shared_ptr<const std::vector<char>> raw;
    std::shared_ptr<const Packed> packed;
    uint64_t last_use = 0;
  };
  std::mutex mu_;
  std::vector<Entry> entries_;
  uint64_t clock_ = 0;
};

template <typename T>
int64_t BoundOrMaxAbs(const T* v, int64_t n, int64_t max_other, int64_t terms) {
  const int64_t bound = std::max(-static_cast<int64_t>(std::numeric_limits<T>::min()),
                                 static_cast<int64_t>(std::numeric_limits<T>::max()));
  return gemm::FitsInt32(bound, max_other, terms) ? bound : MaxAbs(v, n);
}

// GEMM-based layers (conv, matmul): fill_rows(row0, rows, A, lda) writes int16 rows of the
// patch matrix; the GEMM and requantization run per block of rows on the intra-op pool.
template <typename Out, typename FillRows>
void RunGemmLayer(OpKernelContext* ctx, const gemm::PackedB& B, int64_t M, int64_t max_abs_a,
                  const Requantizer& rq, Out* y, FillRows fill_rows) {
  // Tasks are (block of output rows) x (group of output channels): enough tasks for every
  // thread even when M is small (dense layers on a small batch). Channel groups are only
  // split when the rows alone cannot feed the threads (each group redoes its im2col).
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const bool run_inline = M * B.Kp * B.Np * 2 < kInlineWork;
  const int64_t threads = run_inline ? 1 : std::max(1, workers->num_threads);
  const int64_t block = std::clamp<int64_t>(
      gemm::RoundUp((M + 2 * threads - 1) / (2 * threads), gemm::kRowTile), gemm::kRowTile, 64);
  const int64_t row_blocks = (M + block - 1) / block;
  int64_t groups = 1;
  while (row_blocks * groups < 2 * threads && B.Np / (groups * 2) >= 32) groups *= 2;
  const int64_t group_width = gemm::RoundUp((B.Np + groups - 1) / groups, 32);
  groups = (B.Np + group_width - 1) / group_width;
  const bool use32 = gemm::FitsInt32(max_abs_a, B.max_abs, B.Kp);
  const int64_t lda = B.Kp;
  RunTasks(
      ctx, run_inline, row_blocks * groups,
      block * B.Kp * group_width, [&](int64_t t0, int64_t t1) {
        std::vector<int16_t> A(block * lda);
        std::vector<int32_t> C32(use32 ? block * B.Np : 0);
        std::vector<int64_t> C64(use32 ? 0 : block * B.Np);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t b = t / groups, g = t % groups;
          const int64_t n_begin = g * group_width;
          const int64_t n_end = std::min(B.Np, n_begin + group_width);
          const int64_t row0 = b * block;
          const int64_t rows = std::min(block, M - row0);
          const int64_t padded = gemm::RoundUp(rows, gemm::kRowTile);
          std::fill(A.begin(), A.begin() + padded * lda, int16_t{0});
          fill_rows(row0, rows, A.data(), lda);
          if (use32) {
            gemm::GemmInt32(A.data(), padded, lda, B, C32.data(), n_begin, n_end);
            RequantizeRows(rq, C32.data(), B.Np, row0, rows, B.N, y, n_begin, n_end);
          } else {
            gemm::GemmInt64(A.data(), padded, lda, B, C64.data(), n_begin, n_end);
            RequantizeRows(rq, C64.data(), B.Np, row0, rows, B.N, y, n_begin, n_end);
          }
        }
      });
}

// The output stage of the indirect u8·s8 GEMM for one call: the requantization runs in
// the kernel's epilogue when the int32 path applies (rq.fast32); otherwise the kernel
// writes exact int32 sums that RequantizeRows finishes. unsigned_a: uint8 activations,
// read without the +128 offset, so no compensation term.
struct U8S8Stage {
  std::vector<int32_t> init, half, shift;
  gemm::U8S8Output out;
  bool fused = false;
};

template <typename Out>
void MakeU8S8Stage(const Requantizer& rq, const gemm::PackedB8& B, Out* y, bool unsigned_a,
                   U8S8Stage* s) {
  s->fused = rq.fast32;
  s->init.assign(B.Np, 0);
  s->half.assign(B.Np, 0);
  s->shift.assign(B.Np, 0);
  for (int64_t n = 0; n < B.N; ++n) {
    // bias - comp, wrapping: the kernel's final sum is exact modulo 2^32 and inside int32
    const uint32_t bias = s->fused ? static_cast<uint32_t>(rq.bias32[n]) : 0u;
    s->init[n] = static_cast<int32_t>(bias - (unsigned_a ? 0u : static_cast<uint32_t>(B.comp[n])));
    if (s->fused) {
      s->half[n] = rq.half32[n];
      s->shift[n] = rq.shift32[n];
    }
  }
  gemm::U8S8Output& o = s->out;
  o.init = s->init.data();
  o.half = s->half.data();
  o.shift = s->shift.data();
  o.lo = static_cast<int32_t>(rq.lo);
  o.hi = static_cast<int32_t>(rq.hi);
  static_assert(int(Rounding::kNearest) == gemm::U8S8Output::kNearest &&
                int(Rounding::kNearestEven) == gemm::U8S8Output::kNearestEven &&
                int(Rounding::kHalfUp) == gemm::U8S8Output::kHalfUp, "rounding codes");
  o.mode = s->fused ? static_cast<int>(rq.rounding) : gemm::U8S8Output::kRaw;
  o.out_bytes = s->fused ? static_cast<int>(sizeof(Out)) : 4;
  o.out = y;
  o.ldo = B.N;
  o.n_valid = B.N;
  o.unsigned_a = unsigned_a;
}

// The int8 x int8 GEMM layers on AVX512-VNNI (conv, matmul) through the indirect kernel.
// row_pointers(m0, rows, ptrs, scratch) fills the pointer table of rows [m0, m0 + rows)
// (ceil(rows / 8) tiles x taps x 8, see gemm::IndirectGemmU8S8; the last tile's unused
// rows repeat a valid pointer), gathering rows into the thread's scratch buffer when they
// cannot be read in place. The work goes in chunks of rows (all channels) or, when the
// packed weights are beyond L2 or the rows few, of 32-channel panels (each thread then
// streams only its share of the weights) times row ranges, handed out by ParallelChunks.
// With `raw` given, B is a cache candidate: the chunks also compare raw with the weight
// bytes w, a slice each, and false is returned (y incomplete) when they differ.
template <typename Out, typename RowPointers>
bool RunIndirectU8(OpKernelContext* ctx, const gemm::PackedB8& B, int64_t M, int64_t taps,
                   int64_t seg_len, const Requantizer& rq, Out* y, const std::vector<char>* raw,
                   const void* w, bool unsigned_a, RowPointers row_pointers) {
  U8S8Stage stage;
  MakeU8S8Stage(rq, B, y, unsigned_a, &stage);
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const bool run_inline = M * B.Kp * B.Np < kInlineWork;
  const int64_t threads = run_inline ? 1 : std::max(1, workers->num_threads);
  constexpr int64_t kTile = gemm::kIndirectRows;
  const int64_t panels = (B.Np + 31) / 32;
  const bool big_weights = B.Kp * B.Np > (int64_t{1} << 19);
  // Rows per kernel call: the rows' activations (and, unfused, their int32 sums) stay
  // in L2 while every weight panel meets them.
  int64_t block = (int64_t{1} << 18) / B.Kp;
  if (!stage.fused) block = std::min(block, (int64_t{1} << 18) / (4 * B.Np));
  block = std::clamp<int64_t>(block / kTile * kTile, kTile, 256);
  // About 8 chunks per thread (fewer when the rows run out), so that a helper that starts
  // late costs at most a small chunk at the end.
  const bool by_panels = threads > 1 && panels > 1 && (big_weights || M < 64 * threads);
  const int64_t panel_chunks = by_panels ? panels : 1;
  int64_t chunk_rows = M;
  if (threads > 1) {
    const int64_t row_chunks = (8 * threads + panel_chunks - 1) / panel_chunks;
    chunk_rows = gemm::RoundUp((M + row_chunks - 1) / row_chunks, kTile);
  }
  const int64_t chunks = (M + chunk_rows - 1) / chunk_rows * panel_chunks;
  std::atomic<bool> differs{false};
  ParallelChunks(ctx, threads, chunks, [&](int64_t i) {
    if (raw != nullptr) {
      const size_t begin = raw->size() * i / chunks, end = raw->size() * (i + 1) / chunks;
      if (std::memcmp(raw->data() + begin, static_cast<const char*>(w) + begin, end - begin) != 0)
        differs = true;
    }
    if (differs) return;
    thread_local std::vector<const int8_t*> ptrs;
    thread_local std::vector<int8_t> scratch;
    thread_local std::vector<int32_t> acc;
    const int64_t r_begin = i / panel_chunks * chunk_rows;
    const int64_t r_end = std::min(M, r_begin + chunk_rows);
    const int64_t n_begin = by_panels ? i % panel_chunks * 32 : 0;
    const int64_t n_end = by_panels ? std::min(B.Np, n_begin + 32) : B.Np;
    for (int64_t m0 = r_begin; m0 < r_end; m0 += block) {
      const int64_t rows = std::min(block, r_end - m0);
      ptrs.resize((rows + kTile - 1) / kTile * taps * kTile);
      row_pointers(m0, rows, ptrs.data(), scratch);
      gemm::U8S8Output o = stage.out;
      if (stage.fused) {
        o.out = y + m0 * B.N;
      } else {
        acc.resize(rows * B.Np);
        o.out = acc.data();
        o.ldo = B.Np;
        o.n_valid = B.Np;
      }
      gemm::IndirectGemmU8S8(ptrs.data(), taps, seg_len, rows, B, n_begin, n_end, big_weights, o);
      if (!stage.fused) RequantizeRows(rq, acc.data(), B.Np, m0, rows, B.N, y, n_begin, n_end);
    }
  });
  return !differs;
}

// An int8 layer through the packed-weight cache: run(B, raw) computes the output with the
// packed weights B, confirming on the way that raw (unless null) holds the weight bytes,
// and returns false when it does not; the weights are then packed again and run once more.
template <typename Run>
void WithPackedWeights8(OpKernelContext* ctx, PackedWeightCache<gemm::PackedB8>* cache,
                        const int8_t* w, int64_t K, int64_t N, Run run) {
  const auto candidate = cache->Find(w, K, N);
  if (candidate.packed && run(*candidate.packed, candidate.raw.get())) return;
  run(*cache->Put(ctx, w, K, N), nullptr);
}

// Whether to go on after making the requantizer of an int8 layer from packed weights
// that may be an unconfirmed cache candidate (raw != null): an error then stands only
// once raw is confirmed to hold the weight bytes w (it may come from stale weights).
// Returns false with *stale set when raw differs (pack again), false after reporting the
// error, true when the requantizer is ready.
inline bool RequantizerReady(OpKernelContext* ctx, const Status& status,
                             const std::vector<char>* raw, const void* w, bool* stale) {
  *stale = false;
  if (status.ok()) return true;
  if (raw != nullptr && std::memcmp(raw->data(), w, raw->size()) != 0) {
    *stale = true;
    return false;
  }
  ctx->SetStatus(status);
  return false;
}

// The last tile of a pointer table: its rows past `rows` repeat row 0's pointers.
inline void PadPointerTile(const int8_t** ptrs, int64_t rows, int64_t taps) {
  constexpr int64_t kTile = gemm::kIndirectRows;
  if (rows % kTile == 0) return;
  const int8_t** tile = ptrs + rows / kTile * taps * kTile;
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t r = rows % kTile; r < kTile; ++r) tile[t * kTile + r] = tile[t * kTile];
}

// Pointer table of rows whose K values are contiguous (x + m * ld), taps = 1.
inline void DenseRowPointers(const int8_t* x, int64_t ld, int64_t m0, int64_t rows,
                             const int8_t** ptrs) {
  for (int64_t r = 0; r < rows; ++r) ptrs[r] = x + (m0 + r) * ld;
  PadPointerTile(ptrs, rows, 1);
}

// Rows [row0, row0 + rows) of the patch matrix of an NHWC int8 input, gathered into
// A (lda >= Kp; out-of-image taps and the columns past K are 0).
inline void Im2colI8(const ConvGeom& g, const int8_t* xp, int64_t row0, int64_t rows,
                     int8_t* A, int64_t lda) {
  std::memset(A, 0, rows * lda);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t m = row0 + r;
    const int64_t ow = m % g.out_w, oh = (m / g.out_w) % g.out_h, b = m / (g.out_w * g.out_h);
    int8_t* a = A + r * lda;
    for (int64_t kh = 0; kh < g.k_h; ++kh) {
      const int64_t ih = oh * g.s_h - g.pad_top + kh * g.d_h;
      for (int64_t kw = 0; kw < g.k_w; ++kw, a += g.in_c) {
        const int64_t iw = ow * g.s_w - g.pad_left + kw * g.d_w;
        if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
        std::memcpy(a, xp + ((b * g.in_h + ih) * g.in_w + iw) * g.in_c, g.in_c);
      }
    }
  }
}

// The indirect int8 conv2d: with in_c a multiple of 4 every tap of a patch row is read in
// place (segments of in_c values; out-of-image taps read `zeros`), else the patch rows are
// gathered (Im2colI8) and read as one segment of Kp values.
template <typename Out>
bool RunConvU8(OpKernelContext* ctx, const ConvGeom& g, const gemm::PackedB8& B,
               const int8_t* xp, bool unsigned_x, const Requantizer& rq, Out* y,
               const std::vector<char>* raw, const int8_t* w) {
  const int64_t M = g.batch * g.out_h * g.out_w;
  constexpr int64_t kTile = gemm::kIndirectRows;
  if (g.in_c % gemm::kU8Group != 0) {
    return RunIndirectU8(
        ctx, B, M, 1, B.Kp, rq, y, raw, w, unsigned_x,
        [&](int64_t m0, int64_t rows, const int8_t** ptrs, std::vector<int8_t>& buf) {
          buf.resize(rows * B.Kp);
          Im2colI8(g, xp, m0, rows, buf.data(), B.Kp);
          DenseRowPointers(buf.data(), B.Kp, 0, rows, ptrs);
        });
  }
  const int64_t taps = g.k_h * g.k_w;
  const std::vector<int8_t> zeros(g.in_c, 0);
  std::vector<int64_t> tap_offset(taps);  // of each tap from the window's corner, in bytes
  for (int64_t kh = 0; kh < g.k_h; ++kh)
    for (int64_t kw = 0; kw < g.k_w; ++kw)
      tap_offset[kh * g.k_w + kw] = (kh * g.d_h * g.in_w + kw * g.d_w) * g.in_c;
  const int64_t span_h = (g.k_h - 1) * g.d_h, span_w = (g.k_w - 1) * g.d_w;
  return RunIndirectU8(ctx, B, M, taps, g.in_c, rq, y, raw, w, unsigned_x,
                [&](int64_t m0, int64_t rows, const int8_t** ptrs, std::vector<int8_t>&) {
                  int64_t ow = m0 % g.out_w, oh = (m0 / g.out_w) % g.out_h,
                          b = m0 / (g.out_w * g.out_h);
                  for (int64_t r = 0; r < rows; ++r) {
                    const int8_t** p = ptrs + r / kTile * taps * kTile + r % kTile;
                    const int64_t ih0 = oh * g.s_h - g.pad_top, iw0 = ow * g.s_w - g.pad_left;
                    if (ih0 >= 0 && iw0 >= 0 && ih0 + span_h < g.in_h && iw0 + span_w < g.in_w) {
                      const int8_t* corner = xp + ((b * g.in_h + ih0) * g.in_w + iw0) * g.in_c;
                      for (int64_t t = 0; t < taps; ++t) p[t * kTile] = corner + tap_offset[t];
                    } else {  // a window over the border: out-of-image taps read zeros
                      for (int64_t kh = 0; kh < g.k_h; ++kh) {
                        const int64_t ih = ih0 + kh * g.d_h;
                        for (int64_t kw = 0; kw < g.k_w; ++kw, p += kTile) {
                          const int64_t iw = iw0 + kw * g.d_w;
                          *p = ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w
                                   ? xp + ((b * g.in_h + ih) * g.in_w + iw) * g.in_c
                                   : zeros.data();
                        }
                      }
                    }
                    if (++ow == g.out_w) {
                      ow = 0;
                      if (++oh == g.out_h) {
                        oh = 0;
                        ++b;
                      }
                    }
                  }
                  PadPointerTile(ptrs, rows, taps);
                });
}

// True when the u8·s8 GEMM applies (int8 or uint8 activations, int8 weights, VNNI CPU,
// K small enough). uint8 activations are its native operand; int8 ones are offset by 128.
template <typename TIn, typename TW>
bool UseU8S8(int64_t K) {
  return sizeof(TIn) == 1 && std::is_same_v<TW, int8_t> && gemm::HasU8S8() &&
         gemm::U8S8Fits(gemm::RoundUp(K, gemm::kU8Group));
}

template <typename TIn, typename TW, typename Out>
class DfpConv2DOp : public IntegerKernelBase {
 public:
  explicit DfpConv2DOp(OpKernelConstruction* ctx) : IntegerKernelBase(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Read(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    OP_REQUIRES(ctx, w.dims() == 4, InvalidArgument("w must be HWIO (rank 4)"));
    ConvGeom g;
    OP_REQUIRES_OK(ctx, attrs_.Geometry(x.shape(), w.dim_size(0), w.dim_size(1), w.dim_size(3), &g));
    OP_REQUIRES(ctx, w.dim_size(2) == g.in_c,
                InvalidArgument("w has ", w.dim_size(2), " input channels, x has ", g.in_c));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.batch, g.out_h, g.out_w, g.out_c}), &y));
    const int64_t M = g.batch * g.out_h * g.out_w;
    if (M == 0 || g.out_c == 0) return;
    const int64_t K = g.k_h * g.k_w * g.in_c;
    if constexpr (sizeof(TIn) == 1 && std::is_same_v<TW, int8_t>) {
      if (UseU8S8<TIn, TW>(K)) {
        constexpr bool kUnsigned = std::is_same_v<TIn, uint8_t>;
        const int8_t* xp = reinterpret_cast<const int8_t*>(x.flat<TIn>().data());
        const int8_t* wp = w.flat<int8_t>().data();
        Out* yp = y->flat<Out>().data();
        WithPackedWeights8(ctx, &packed_weights8_, wp, K, g.out_c,
                           [&](const gemm::PackedB8& B, const std::vector<char>* raw) {
                             Requantizer rq;
                             bool stale;
                             const double max_x = kUnsigned ? 255.0 : 128.0;
                             if (!RequantizerReady(ctx, MakeRequantizer(ctx, g.out_c,
                                                                        max_x * B.max_abs * B.Kp, &rq),
                                                   raw, wp, &stale))
                               return !stale;
                             return RunConvU8(ctx, g, B, xp, kUnsigned, rq, yp, raw, wp);
                           });
        return;
      }
    }
    const std::shared_ptr<const gemm::PackedB> packed =
        packed_weights_.Get(ctx, w.flat<TW>().data(), K, g.out_c);
    const gemm::PackedB& B = *packed;
    const TIn* xp = x.flat<TIn>().data();
    const int64_t max_a = BoundOrMaxAbs(xp, x.NumElements(), B.max_abs, B.Kp);
    Requantizer rq;
    OP_REQUIRES_OK(ctx, MakeRequantizer(ctx, g.out_c, double(max_a) * B.max_abs * B.Kp, &rq));
    RunGemmLayer(ctx, B, M, max_a, rq, y->flat<Out>().data(),
                 [&](int64_t row0, int64_t rows, int16_t* A, int64_t lda) {
                   for (int64_t r = 0; r < rows; ++r) {
                     const int64_t m = row0 + r;
                     const int64_t ow = m % g.out_w, oh = (m / g.out_w) % g.out_h,
                                   b = m / (g.out_w * g.out_h);
                     int16_t* a = A + r * lda;
                     for (int64_t kh = 0; kh < g.k_h; ++kh) {
                       const int64_t ih = oh * g.s_h - g.pad_top + kh * g.d_h;
                       for (int64_t kw = 0; kw < g.k_w; ++kw, a += g.in_c) {
                         const int64_t iw = ow * g.s_w - g.pad_left + kw * g.d_w;
                         if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                         const TIn* src = xp + ((b * g.in_h + ih) * g.in_w + iw) * g.in_c;
                         for (int64_t c = 0; c < g.in_c; ++c) a[c] = src[c];
                       }
                     }
                   }
                 });
  }

 private:
  ConvAttrs attrs_;
  PackedWeightCache<gemm::PackedB> packed_weights_;
  PackedWeightCache<gemm::PackedB8> packed_weights8_;
};

template <typename TIn, typename TW, typename Out>
class DfpMatMulOp : public IntegerKernelBase {
 public:
  explicit DfpMatMulOp(OpKernelConstruction* ctx) : IntegerKernelBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() >= 1 && w.dims() == 2, InvalidArgument("x [..., K] and w [K, N]"));
    const int64_t K = x.dim_size(x.dims() - 1);
    OP_REQUIRES(ctx, w.dim_size(0) == K,
                InvalidArgument("w has ", w.dim_size(0), " rows, x has ", K, " features"));
    const int64_t N = w.dim_size(1);
    TensorShape out_shape = x.shape();
    out_shape.set_dim(x.dims() - 1, N);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &y));
    const int64_t M = K == 0 ? 0 : x.NumElements() / K;
    if (M == 0 || N == 0) return;
    if constexpr (sizeof(TIn) == 1 && std::is_same_v<TW, int8_t>) {
      if (UseU8S8<TIn, TW>(K)) {
        constexpr bool kUnsigned = std::is_same_v<TIn, uint8_t>;
        const int8_t* xp = reinterpret_cast<const int8_t*>(x.flat<TIn>().data());
        const int8_t* wp = w.flat<int8_t>().data();
        Out* yp = y->flat<Out>().data();
        WithPackedWeights8(
            ctx, &packed_weights8_, wp, K, N,
            [&](const gemm::PackedB8& B, const std::vector<char>* raw) {
              Requantizer rq;
              bool stale;
              const double max_x = kUnsigned ? 255.0 : 128.0;
              if (!RequantizerReady(ctx, MakeRequantizer(ctx, N, max_x * B.max_abs * B.Kp, &rq),
                                    raw, wp, &stale))
                return !stale;
              if (K % gemm::kU8Group == 0) {
                return RunIndirectU8(
                    ctx, B, M, 1, K, rq, yp, raw, wp, kUnsigned,
                    [&](int64_t m0, int64_t rows, const int8_t** ptrs, std::vector<int8_t>&) {
                      DenseRowPointers(xp, K, m0, rows, ptrs);
                    });
              }
              return RunIndirectU8(  // rows copied to a stride of Kp, zero-padded
                  ctx, B, M, 1, B.Kp, rq, yp, raw, wp, kUnsigned,
                  [&](int64_t m0, int64_t rows, const int8_t** ptrs, std::vector<int8_t>& buf) {
                    buf.assign(rows * B.Kp, 0);
                    for (int64_t r = 0; r < rows; ++r)
                      std::memcpy(buf.data() + r * B.Kp, xp + (m0 + r) * K, K);
                    DenseRowPointers(buf.data(), B.Kp, 0, rows, ptrs);
                  });
            });
        return;
      }
    }
    const std::shared_ptr<const gemm::PackedB> packed =
        packed_weights_.Get(ctx, w.flat<TW>().data(), K, N);
    const gemm::PackedB& B = *packed;
    const TIn* xp = x.flat<TIn>().data();
    const int64_t max_a = BoundOrMaxAbs(xp, x.NumElements(), B.max_abs, B.Kp);
    Requantizer rq;
    OP_REQUIRES_OK(ctx, MakeRequantizer(ctx, N, double(max_a) * B.max_abs * B.Kp, &rq));
    RunGemmLayer(ctx, B, M, max_a, rq, y->flat<Out>().data(),
                 [&](int64_t row0, int64_t rows, int16_t* A, int64_t lda) {
                   for (int64_t r = 0; r < rows; ++r) {
                     const TIn* src = xp + (row0 + r) * K;
                     for (int64_t k = 0; k < K; ++k) A[r * lda + k] = src[k];
                   }
                 });
  }

 private:
  PackedWeightCache<gemm::PackedB> packed_weights_;
  PackedWeightCache<gemm::PackedB8> packed_weights8_;
};

// The computation is in int_depthwise.cc; this class reads the attributes and inputs.
template <typename TIn, typename TW, typename Out>
class DfpDepthwiseConv2DOp : public IntegerKernelBase {
 public:
  explicit DfpDepthwiseConv2DOp(OpKernelConstruction* ctx) : IntegerKernelBase(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Read(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    OP_REQUIRES(ctx, w.dims() == 4, InvalidArgument("w must be [KH, KW, C, multiplier]"));
    const int64_t mult = w.dim_size(3);
    ConvGeom g;
    OP_REQUIRES_OK(ctx, attrs_.Geometry(x.shape(), w.dim_size(0), w.dim_size(1),
                                        w.dim_size(2) * mult, &g));
    OP_REQUIRES(ctx, w.dim_size(2) == g.in_c,
                InvalidArgument("w has ", w.dim_size(2), " channels, x has ", g.in_c));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.batch, g.out_h, g.out_w, g.out_c}), &y));
    if (g.batch * g.out_h * g.out_w == 0 || g.out_c == 0) return;
    const dw::Geometry dg{g.batch, g.in_h, g.in_w, g.in_c, mult, g.k_h, g.k_w, g.out_h,
                          g.out_w, g.s_h, g.s_w, g.d_h, g.d_w, g.pad_top, g.pad_left};
    const TIn* xp = x.flat<TIn>().data();
    const TW* wp = w.flat<TW>().data();
    std::shared_ptr<const dw::PackedInt8> packed;  // int8 weights, multiplier 1
    if constexpr (sizeof(TIn) == 1 && std::is_same_v<TW, int8_t>) {  // int8 or uint8 x
      if (mult == 1) packed = packed_weights_.Get(wp, g.k_h, g.k_w, g.in_c);
    }
    const int64_t max_w = packed ? packed->max_abs : dw::MaxAbs(wp, w.NumElements());
    const dw::Bounds bounds = dw::AccumulatorBounds(dg, xp, wp, max_w);
    Requantizer rq;
    OP_REQUIRES_OK(ctx, MakeRequantizer(ctx, g.out_c, bounds.acc_bound, &rq));
    // the kernel decides what runs inline; this only hands it the intra-op pool
    dw::DepthwiseConv(dg, xp, wp, packed.get(), bounds, rq, y->flat<Out>().data(),
                      [&](int64_t tasks, int64_t cost,
                          const std::function<void(int64_t, int64_t)>& fn) {
                        RunTasks(ctx, false, tasks, cost, fn);
                      });
  }

 private:
  ConvAttrs attrs_;
  dw::PackedInt8Cache packed_weights_;
};

}  // namespace

#define KERASQ_REGISTER_INT(OP, KERNEL, TIN, TW, OUT)                                    \
  REGISTER_KERNEL_BUILDER(Name(OP)                                                       \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<TIN>("Tin")                                \
                              .TypeConstraint<TW>("Tw")                                  \
                              .TypeConstraint<OUT>("out_type"),                          \
                          KERNEL<TIN, TW, OUT>);
#define KERASQ_REGISTER_OUTS(OP, KERNEL, TIN, TW)  \
  KERASQ_REGISTER_INT(OP, KERNEL, TIN, TW, int8_t) \
  KERASQ_REGISTER_INT(OP, KERNEL, TIN, TW, uint8_t) \
  KERASQ_REGISTER_INT(OP, KERNEL, TIN, TW, int16_t) \
  KERASQ_REGISTER_INT(OP, KERNEL, TIN, TW, int32_t)
#define KERASQ_REGISTER_ALL(OP, KERNEL)                \
  KERASQ_REGISTER_OUTS(OP, KERNEL, int8_t, int8_t)     \
  KERASQ_REGISTER_OUTS(OP, KERNEL, int8_t, int16_t)    \
  KERASQ_REGISTER_OUTS(OP, KERNEL, uint8_t, int8_t)    \
  KERASQ_REGISTER_OUTS(OP, KERNEL, uint8_t, int16_t)   \
  KERASQ_REGISTER_OUTS(OP, KERNEL, int16_t, int8_t)    \
  KERASQ_REGISTER_OUTS(OP, KERNEL, int16_t, int16_t)

KERASQ_REGISTER_ALL("Kerasq>DfpConv2D", DfpConv2DOp)
KERASQ_REGISTER_ALL("Kerasq>DfpDepthwiseConv2D", DfpDepthwiseConv2DOp)
KERASQ_REGISTER_ALL("Kerasq>DfpMatMul", DfpMatMulOp)

}  // namespace kerasq
