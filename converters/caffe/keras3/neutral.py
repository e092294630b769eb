"""Backend-neutral ``call`` methods of the Keras 3 twins, written in ``keras.ops``.

Every twin of :data:`kerasq.converters.caffe.keras_layers.ALL_LAYERS` computes with the
function registered here under its class name (:data:`NEUTRAL_CALLS`), so a converted net
runs on every Keras 3 backend (TensorFlow, JAX) with the tf_keras layer's formula. A class
listed in :data:`TENSORFLOW_ONLY` instead keeps its tf_keras code (TensorFlow ops) and
refuses other backends with the reason given there.

Shapes: on JAX every dimension inside ``call`` is a Python int; on TensorFlow a model with a
free spatial size has unknown dimensions, so the size arithmetic goes through
:func:`_dims` (ints where known, scalar tensors where not).

Example:
    >>> sorted(TENSORFLOW_ONLY)
    ['CaffeDetectionOutput']
    >>> "InterpBilinear" in NEUTRAL_CALLS
    True
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Sequence

from kerasq._compat import keras3

ops = keras3().ops

# class name -> why it has no backend-neutral form (it runs on Keras 3's TensorFlow backend)
TENSORFLOW_ONLY: Dict[str, str] = {
    "CaffeDetectionOutput": (
        "its output has one row per detection, a data-dependent shape that jit-compiled "
        "JAX cannot express (and its NMS is TensorFlow's NonMaxSuppressionV5)"
    ),
}

NEUTRAL_CALLS: Dict[str, Callable[..., Any]] = {}


def _neutral(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__name__, fn.__qualname__ = "call", f"{name}.call"
        NEUTRAL_CALLS[name] = fn
        return fn

    return register


def _dims(x: Any) -> List[Any]:
    """``x``'s shape: ints where static, scalar int tensors where unknown (TensorFlow)."""
    static = tuple(x.shape)
    dynamic = ops.shape(x)
    return [d if isinstance(d, int) else dynamic[i] for i, d in enumerate(static)]


# ---- element-wise -----------------------------------------------------------------------
@_neutral("AbsVal")
def _abs_val(self: Any, x: Any) -> Any:
    return ops.abs(x)


@_neutral("BNLL")
def _bnll(self: Any, x: Any) -> Any:
    return ops.relu(x) + ops.log(1.0 + ops.exp(-ops.abs(x)))


@_neutral("PowerAffine")
def _power_affine(self: Any, x: Any) -> Any:
    base = x * self.scale + self.shift if self.scale != 1.0 else x + self.shift
    if self.power == 1.0:
        return base
    if self.power == 2.0:
        return ops.square(base)
    if self.power == 0.5:
        return ops.sqrt(base)
    return ops.power(base, self.power)


@_neutral("ExpAffine")
def _exp_affine(self: Any, x: Any) -> Any:
    log_base = 1.0 if self.base == -1.0 else math.log(self.base)
    return ops.exp((x * self.scale + self.shift) * log_base)


@_neutral("LogAffine")
def _log_affine(self: Any, x: Any) -> Any:
    y = ops.log(x * self.scale + self.shift)
    return y if self.base == -1.0 else y * (1.0 / math.log(self.base))


@_neutral("ThresholdStep")
def _threshold_step(self: Any, x: Any) -> Any:
    return ops.cast(ops.greater(x, self.threshold), x.dtype)


@_neutral("ClipRange")
def _clip_range(self: Any, x: Any) -> Any:
    return ops.minimum(ops.maximum(x, self.min_value), self.max_value)


@_neutral("SwishBeta")
def _swish_beta(self: Any, x: Any) -> Any:
    return x * ops.sigmoid(self.beta * x)


# ---- affine -----------------------------------------------------------------------------
@_neutral("ConstantMultiply")
def _constant_multiply(self: Any, inputs: Any) -> Any:
    return inputs * self.constant


@_neutral("WeightedSum")
def _weighted_sum(self: Any, inputs: Sequence[Any]) -> Any:
    total = inputs[0] * self.coefficients[0]
    for x, c in zip(inputs[1:], self.coefficients[1:]):
        total = total + x * c
    return total


@_neutral("BroadcastAffine")
def _broadcast_affine(self: Any, inputs: Any) -> Any:
    if self.scale_from_input:
        x, gamma = inputs
        y = x * ops.reshape(gamma, (-1,) + tuple(self.param_shape))
    else:
        x = inputs
        y = x * self.gamma if self.use_scale else x
    if self.use_bias:
        y = y + self.beta
    return y


@_neutral("ConstantBias")
def _constant_bias(self: Any, x: Any) -> Any:
    return x + self.bias


@_neutral("BroadcastAddCaffe")
def _broadcast_add_caffe(self: Any, inputs: Sequence[Any]) -> Any:
    x, b = inputs
    rank = len(self.x_perm)
    full = b
    for _ in range(self.axis):
        full = ops.expand_dims(full, 0)
    for _ in range(rank - self.axis - len(b.shape)):
        full = ops.expand_dims(full, -1)
    return x + ops.transpose(full, self.x_perm)


@_neutral("CaffePreprocess")
def _caffe_preprocess(self: Any, inputs: Any) -> Any:
    x = ops.flip(inputs, axis=-1) if self.swap_channels else inputs
    if self.mean_shape:
        x = x - self.mean
    if self.scale != 1.0:
        x = x * self.scale
    return x


@_neutral("CaffeEmbed")
def _caffe_embed(self: Any, x: Any) -> Any:
    y = ops.take(self.embeddings, ops.cast(x, "int32"), axis=0)
    return y + self.bias if self.bias_term else y


# ---- normalization ----------------------------------------------------------------------
@_neutral("BatchStatNormalize")
def _batch_stat_normalize(self: Any, inputs: Any) -> Any:
    rank = len(inputs.shape)
    axis = self.axis % rank
    reduce_axes = tuple(a for a in range(rank) if a != axis)
    centered = inputs - ops.mean(inputs, axis=reduce_axes, keepdims=True)
    var = ops.mean(ops.square(centered), axis=reduce_axes, keepdims=True)
    return centered / ops.sqrt(var + self.epsilon)


@_neutral("LRNAcrossChannels")
def _lrn_across_channels(self: Any, x: Any) -> Any:
    """x / (k + alpha/n · sum of x² over the channels c-r..c+r)^beta, r = (n-1)//2, zero
    outside the channel range (tf.nn.local_response_normalization's formula)."""
    radius = (self.local_size - 1) // 2
    channels = x.shape[-1]
    sq = ops.square(x)
    padded = ops.pad(sq, [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]])
    total = padded[..., 0:channels]
    for shift in range(1, 2 * radius + 1):
        total = total + padded[..., shift : shift + channels]
    return x / ops.power(self.k + (self.alpha / self.local_size) * total, self.beta)


@_neutral("LRNWithinChannel")
def _lrn_within_channel(self: Any, x: Any) -> Any:
    n = self.local_size
    pad = (n - 1) // 2
    sq = ops.pad(ops.square(x), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    avg = ops.average_pool(sq, pool_size=n, strides=1, padding="valid")
    return x * ops.power(1.0 + self.alpha * avg, -self.beta)


@_neutral("MeanVarianceNorm")
def _mean_variance_norm(self: Any, x: Any) -> Any:
    axes = tuple(self.axes)
    centered = x - ops.mean(x, axis=axes, keepdims=True)
    if not self.normalize_variance:
        return centered
    std = ops.sqrt(ops.mean(ops.square(centered), axis=axes, keepdims=True))
    return centered / (std + self.eps)


@_neutral("L2Normalize")
def _l2_normalize(self: Any, x: Any) -> Any:
    total = ops.sum(ops.square(x), axis=tuple(self.axes), keepdims=True)
    y = x * ops.rsqrt(total + self.eps)
    return y * self.scale if self.scale_shape is not None else y


# ---- rearrange --------------------------------------------------------------------------
@_neutral("EdgePadding2D")
def _edge_padding_2d(self: Any, inputs: Any) -> Any:
    (top, bottom), (left, right) = self.padding
    x = inputs
    parts = [x[:, :1]] * top + [x] + [x[:, -1:]] * bottom
    x = ops.concatenate(parts, axis=1) if len(parts) > 1 else x
    parts = [x[:, :, :1]] * left + [x] + [x[:, :, -1:]] * right
    return ops.concatenate(parts, axis=2) if len(parts) > 1 else x


@_neutral("BatchReshape")
def _batch_reshape(self: Any, inputs: Any) -> Any:
    return ops.reshape(inputs, tuple(self.target_shape))


@_neutral("AxisSlice")
def _axis_slice(self: Any, x: Any) -> Any:
    index = tuple(
        slice(begin, None if size == -1 else begin + size)
        for begin, size in zip(self.begins, self.sizes)
    )
    return x[index]


@_neutral("AxisTile")
def _axis_tile(self: Any, x: Any) -> Any:
    multiples = [1] * len(x.shape)
    multiples[self.axis] = self.tiles
    return ops.tile(x, multiples)


@_neutral("FullTranspose")
def _full_transpose(self: Any, x: Any) -> Any:
    return ops.transpose(x, self.perm)


@_neutral("ChannelShuffle")
def _channel_shuffle(self: Any, x: Any) -> Any:
    rank = len(x.shape)
    axis = self.axis % rank
    shape = _dims(x)
    channels = x.shape[axis]
    y = ops.reshape(x, shape[:axis] + [self.groups, channels // self.groups] + shape[axis + 1 :])
    perm = list(range(rank + 1))
    perm[axis], perm[axis + 1] = perm[axis + 1], perm[axis]
    return ops.reshape(ops.transpose(y, perm), shape)


# ---- reduction --------------------------------------------------------------------------
@_neutral("AxisReduce")
def _axis_reduce(self: Any, x: Any) -> Any:
    if self.operation == "ASUM":
        x = ops.abs(x)
    elif self.operation == "SUMSQ":
        x = ops.square(x)
    axes = tuple(self.axes)
    y = ops.mean(x, axis=axes) if self.operation == "MEAN" else ops.sum(x, axis=axes)
    if self.coeff != 1.0:
        y = y * self.coeff
    if self.keep_batch_axis:
        y = ops.reshape(y, (1,))
    return y


def caffe_top_k(x: Any, k: int) -> Any:
    """top_k along the last axis with Caffe's tie order (equal values: higher index first).

    ``ops.top_k`` (TensorFlow and JAX alike) puts the lower index first, so it runs on the
    reversed axis and the indices map back: ``i = n - 1 - i_reversed``. -0 becomes +0 first:
    Caffe's ``std::greater`` (and TensorFlow) find them equal, XLA's top_k orders -0 < +0.
    """
    x = ops.where(ops.equal(x, 0.0), ops.zeros_like(x), x)
    values, reversed_indices = ops.top_k(ops.flip(x, axis=-1), k, sorted=True)
    return values, (_dims(x)[-1] - 1) - reversed_indices


@_neutral("TopKAxis")
def _top_k_axis(self: Any, x: Any) -> Any:
    rank = len(x.shape)
    axis = self.axis % rank
    order = [i for i in range(rank) if i != axis] + [axis]
    inverse = [order.index(i) for i in range(rank)]
    moved = ops.transpose(x, order) if axis != rank - 1 else x
    values, indices = caffe_top_k(moved, self.top_k)
    y = values if self.out_max_val else ops.cast(indices, x.dtype)
    return ops.transpose(y, inverse) if axis != rank - 1 else y


@_neutral("ArgMaxFlat")
def _arg_max_flat(self: Any, x: Any) -> Any:
    rest = tuple(x.shape[1:])
    known = all(isinstance(d, int) for d in rest)
    flat = ops.reshape(x, (-1, math.prod(rest)) if known else (_dims(x)[0], -1))
    values, indices = caffe_top_k(flat, self.top_k)
    indices = ops.cast(indices, x.dtype)
    y = ops.stack([indices, values], axis=1) if self.out_max_val else indices[:, None, :]
    for _ in range(self.out_rank - 3):
        y = ops.expand_dims(y, -1)
    return y


# ---- resize -----------------------------------------------------------------------------
def _align_corners_taps(size_in: Any, size_out: Any) -> Any:
    """Caffe Interp's taps on one axis: src = dst·(in-1)/(out-1) in float32 (0 when out is
    1), lower index floor(src), upper min(lower + 1, in - 1), weight of the upper src - lower."""
    out_f = ops.cast(size_out, "float32")
    scale = ops.where(
        out_f > 1.0, ops.cast(size_in - 1, "float32") / ops.maximum(out_f - 1.0, 1.0), 0.0
    )
    src = ops.cast(ops.arange(size_out), "float32") * scale
    lower_f = ops.floor(src)
    lower = ops.cast(lower_f, "int32")
    upper = ops.minimum(lower + 1, size_in - 1)
    return lower, upper, src - lower_f


def _lerp_along(x: Any, axis: int, size_out: Any) -> Any:
    lower, upper, weight = _align_corners_taps(_dims(x)[axis], size_out)
    shape = [1] * len(x.shape)
    shape[axis] = -1
    weight = ops.reshape(weight, shape)
    a = ops.take(x, lower, axis=axis)
    b = ops.take(x, upper, axis=axis)
    return a + (b - a) * weight


@_neutral("InterpBilinear")
def _interp_bilinear(self: Any, x: Any) -> Any:
    """Crop by -pad, then align-corners bilinear resize (rows, then columns: the result is
    the separable bilinear interpolation of Caffe's Interp)."""
    dims = _dims(x)
    h, w = dims[1], dims[2]  # the output size rule adds the (non-positive) pads itself
    if self.pad_beg or self.pad_end:
        cb, ce = -self.pad_beg, -self.pad_end
        x = x[:, cb : h - ce, cb : w - ce, :]
    y = _lerp_along(x, 1, self._out(h, self.height))
    return _lerp_along(y, 2, self._out(w, self.width))


@_neutral("NearestResize")
def _nearest_resize(self: Any, x: Any) -> Any:
    dims = _dims(x)
    iy = (ops.arange(self.out_h) * dims[1]) // self.out_h
    ix = (ops.arange(self.out_w) * dims[2]) // self.out_w
    return ops.take(ops.take(x, iy, axis=1), ix, axis=2)


# ---- detection --------------------------------------------------------------------------
@_neutral("CaffePriorBox")
def _caffe_prior_box(self: Any, x: Any) -> Any:
    del x  # the priors depend only on the sizes fixed at conversion
    return ops.convert_to_tensor(self._priors)


__all__ = ["NEUTRAL_CALLS", "TENSORFLOW_ONLY", "caffe_top_k"]
