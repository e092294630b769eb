// Framework-free integer depthwise convolution (no TensorFlow types here).
//
// y[b, oh, ow, c*M + j] = requantize(sum_{kh, kw} x[b, ih, iw, c] * w[kh, kw, c, j]) with
// ih = oh*s_h - pad_top + kh*d_h, iw = ow*s_w - pad_left + kw*d_w (taps outside the image
// add nothing), NHWC x, HWCM w (Keras layout, M = depth multiplier), exact int32 or int64
// accumulation, and the requantization of requantize.h.
//
// int8 x int8 with M = 1 (the MobileNet layer) has its own kernels, without a padded copy
// of the input (out-of-image taps read zeros) and with the requantization fused into the
// epilogue. With AVX512-VNNI (as XNNPACK's int8 depthwise): per output row and block of 64
// channels, the bytes of 4 kernel rows are interleaved once per input column into u8
// quads (x + 128), shared by every output pixel that reads that column, and vpdpbusd adds
// 4 products per 32-bit lane; the +128 offset is taken back through the bias (128 * the
// sum of the channel's weights). AVX-512 without VNNI: a table of tap pointers per output
// row, int16 products accumulated in int32 by vpmaddwd, 32 channels per vector. Weights
// are pre-packed per channel block and cached across calls. Other CPUs and type
// combinations use portable loops. KERASQ_DEPTHWISE_KERNEL=avx512 or =portable in the
// environment selects a lower int8 kernel than the CPU's best (tests cover all three).
#ifndef KERASQ_OPS_CC_INT_DEPTHWISE_H_
#define KERASQ_OPS_CC_INT_DEPTHWISE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "requantize.h"

namespace kerasq {
namespace dw {

struct Geometry {
  int64_t batch = 0, in_h = 0, in_w = 0, channels = 0, multiplier = 1, k_h = 0, k_w = 0;
  int64_t out_h = 0, out_w = 0, s_h = 1, s_w = 1, d_h = 1, d_w = 1, pad_top = 0, pad_left = 0;
  int64_t taps() const { return k_h * k_w; }
  int64_t out_channels() const { return channels * multiplier; }
};

// Runs fn(begin, end) over the whole range [0, tasks), possibly split across threads;
// cost_per_task is an estimate in multiply-accumulates (TensorFlow's Shard uses it to
// decide how finely to split).
using ParallelFor = std::function<void(int64_t tasks, int64_t cost_per_task,
                                       const std::function<void(int64_t, int64_t)>& fn)>;

// True when the running CPU has AVX-512 F and BW (the int8 kernel's vector path).
bool HasAvx512Bw();

// int8 depthwise weights (M = 1) in the vector kernels' layouts.
// AVX512-VNNI (u8·s8 dot products of 4 kernel rows): per block of 64 channels, group of 4
// kernel rows and kernel column, 4 vectors whose 32-bit lane 4L+i of vector j holds the
// weights of kernel rows 4g..4g+3 (zero beyond k_h) of channel 16L+4j+i:
// w8 [Cp/64][groups][k_w][4][64]; comp[c] = 128 * sum of channel c's weights.
// (Packed on VNNI CPUs only.) For the vpmaddwd kernel (always packed): per block of 32
// channels and per tap, the even channels' weights (odd lanes zero) then the odd
// channels': w16 [Cp/32][taps][2][32].
struct PackedInt8 {
  std::vector<int8_t> w8;
  std::vector<int32_t> comp;
  std::vector<int16_t> w16;
  int64_t k_h = 0, k_w = 0, channels = 0, max_abs = 0;
};

// Packed weights reused across calls while the weight bytes are unchanged: found by
// buffer address and confirmed byte for byte, so the result is exact whatever the
// weights are (a variable updated in place included).
class PackedInt8Cache {
 public:
  std::shared_ptr<const PackedInt8> Get(const int8_t* w, int64_t k_h, int64_t k_w,
                                        int64_t channels);

 private:
  struct Entry {
    const void* key = nullptr;
    std::vector<int8_t> raw;
    std::shared_ptr<const PackedInt8> packed;
    uint64_t last_use = 0;
  };
  std::mutex mu_;
  std::vector<Entry> entries_;
  uint64_t clock_ = 0;
};

// Bound on |accumulator| the requantizer is built for, and whether int32 accumulation is
// exact: max|x| (or its type's bound when that already proves int32 safe) * max|w| * taps.
struct Bounds {
  double acc_bound = 0;
  bool int32 = true;
};
template <typename TIn, typename TW>
Bounds AccumulatorBounds(const Geometry& g, const TIn* x, const TW* w, int64_t max_abs_w);

// max|w| over n weights.
template <typename TW>
int64_t MaxAbs(const TW* w, int64_t n);

// The whole layer: y (batch x out_h x out_w x channels*M) from x and w. packed is the
// cached PackedInt8 of w for int8 x int8 with M = 1 (nullptr otherwise, or to pack here).
template <typename TIn, typename TW, typename Out>
void DepthwiseConv(const Geometry& g, const TIn* x, const TW* w, const PackedInt8* packed,
                   const Bounds& bounds, const Requantizer& rq, Out* y,
                   const ParallelFor& parallel);

}  // namespace dw
}  // namespace kerasq

#endif  // KERASQ_OPS_CC_INT_DEPTHWISE_H_
