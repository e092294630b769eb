"""Small custom Keras layers for Caffe layer types that have no exact stock Keras layer.

Each class is a plain ``keras.layers.Layer`` registered under the ``kerasq`` package with a
complete ``get_config`` (no ``Lambda``, safe to reload from ``.h5``/SavedModel). They use
only TensorFlow ops with TFLite builtins (ABS, EXP, LOG, POW, SLICE, TILE, SUM/MEAN,
TOPK_V2, LOCAL_RESPONSE_NORMALIZATION, AVERAGE_POOL_2D, RESIZE_BILINEAR, GATHER,
TRANSPOSE, RESHAPE). Axis arguments are *Keras* axes (the lowering maps Caffe axes first).

Example:
    >>> y = PowerAffine(power=2.0, scale=0.5, shift=1.0)(x)   # (1 + 0.5 x)^2
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from kerasq._compat import keras, tf

_register = keras.utils.register_keras_serializable(package="kerasq")


class _Configured(keras.layers.Layer):
    """Base: every constructor argument is stored and returned by ``get_config``."""

    _fields: Sequence[str] = ()

    def __init__(self, **kwargs: Any) -> None:
        own = {f: kwargs.pop(f) for f in self._fields if f in kwargs}
        super().__init__(**kwargs)
        for f, v in own.items():
            setattr(self, f, v)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({f: getattr(self, f) for f in self._fields})
        return config


# ----------------------------------------------------------------------------------------
# element-wise neuron layers
# ----------------------------------------------------------------------------------------
@_register
class AbsVal(_Configured):
    """Caffe AbsVal: y = |x|."""

    def call(self, x):
        return tf.abs(x)


@_register
class BNLL(_Configured):
    """Caffe BNLL: y = log(1 + e^x), computed as max(x, 0) + log(1 + e^-|x|) (no overflow;
    plain LOG/EXP so it stays a TFLite builtin graph)."""

    def call(self, x):
        return tf.nn.relu(x) + tf.math.log(1.0 + tf.exp(-tf.abs(x)))


@_register
class PowerAffine(_Configured):
    """Caffe Power: y = (shift + scale * x) ^ power."""

    _fields = ("power", "scale", "shift")

    def __init__(
        self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(power=float(power), scale=float(scale), shift=float(shift), **kwargs)

    def call(self, x):
        base = x * self.scale + self.shift if self.scale != 1.0 else x + self.shift
        if self.power == 1.0:
            return base
        if self.power == 2.0:
            return tf.square(base)
        if self.power == 0.5:
            return tf.sqrt(base)
        return tf.pow(base, self.power)


@_register
class ExpAffine(_Configured):
    """Caffe Exp: y = base ^ (shift + scale * x); base -1 means e."""

    _fields = ("base", "scale", "shift")

    def __init__(
        self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(base=float(base), scale=float(scale), shift=float(shift), **kwargs)

    def call(self, x):
        log_base = 1.0 if self.base == -1.0 else math.log(self.base)
        return tf.exp((x * self.scale + self.shift) * log_base)


@_register
class LogAffine(_Configured):
    """Caffe Log: y = log_base(shift + scale * x); base -1 means e."""

    _fields = ("base", "scale", "shift")

    def __init__(
        self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(base=float(base), scale=float(scale), shift=float(shift), **kwargs)

    def call(self, x):
        y = tf.math.log(x * self.scale + self.shift)
        return y if self.base == -1.0 else y * (1.0 / math.log(self.base))


@_register
class ThresholdStep(_Configured):
    """Caffe Threshold: y = 1 if x > threshold else 0."""

    _fields = ("threshold",)

    def __init__(self, threshold: float = 0.0, **kwargs: Any) -> None:
        super().__init__(threshold=float(threshold), **kwargs)

    def call(self, x):
        return tf.cast(x > self.threshold, x.dtype)


@_register
class ClipRange(_Configured):
    """Caffe Clip: y = min(max(x, min_value), max_value)."""

    _fields = ("min_value", "max_value")

    def __init__(self, min_value: float = 0.0, max_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(min_value=float(min_value), max_value=float(max_value), **kwargs)

    def call(self, x):
        return tf.minimum(tf.maximum(x, self.min_value), self.max_value)


@_register
class SwishBeta(_Configured):
    """Caffe Swish: y = x * sigmoid(beta * x)."""

    _fields = ("beta",)

    def __init__(self, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(beta=float(beta), **kwargs)

    def call(self, x):
        return x * tf.sigmoid(self.beta * x)


# ----------------------------------------------------------------------------------------
# learned / broadcast bias
# ----------------------------------------------------------------------------------------
@_register
class ConstantBias(_Configured):
    """y = x + b with b of shape ``bias_shape`` (Keras layout incl. a leading batch axis of 1)."""

    _fields = ("bias_shape",)

    def __init__(self, bias_shape: Sequence[int] = (1,), **kwargs: Any) -> None:
        super().__init__(bias_shape=[int(d) for d in bias_shape], **kwargs)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=tuple(self.bias_shape), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return x + self.bias


@_register
class BroadcastAddCaffe(_Configured):
    """Two-input Caffe Bias: y = x + b, b (Caffe order) aligned to Caffe axis ``axis`` of x.

    ``x_perm`` is x's layout (Keras axis i holds Caffe axis x_perm[i]); b is reshaped to
    full Caffe rank with ones, transposed into x's layout and broadcast-added.
    """

    _fields = ("axis", "x_perm")

    def __init__(self, axis: int = 1, x_perm: Sequence[int] = (0,), **kwargs: Any) -> None:
        super().__init__(axis=int(axis), x_perm=[int(p) for p in x_perm], **kwargs)

    def call(self, inputs):
        x, b = inputs
        rank = len(self.x_perm)
        b_rank = b.shape.rank
        ones_before = tf.ones([self.axis], tf.int32)
        ones_after = tf.ones([rank - self.axis - b_rank], tf.int32)
        full = tf.reshape(b, tf.concat([ones_before, tf.shape(b), ones_after], 0))
        return x + tf.transpose(full, self.x_perm)


# ----------------------------------------------------------------------------------------
# shape layers (Keras axes; axis 0 included, so they also work when the batch axis moves)
# ----------------------------------------------------------------------------------------
@_register
class AxisSlice(_Configured):
    """y = x[begin_0:begin_0+size_0, ...] per Keras axis (size -1 = to the end)."""

    _fields = ("begins", "sizes")

    def __init__(
        self, begins: Sequence[int] = (), sizes: Sequence[int] = (), **kwargs: Any
    ) -> None:
        super().__init__(begins=[int(b) for b in begins], sizes=[int(s) for s in sizes], **kwargs)

    def call(self, x):
        return tf.slice(x, self.begins, self.sizes)


@_register
class AxisTile(_Configured):
    """Caffe Tile: repeat the whole blob ``tiles`` times along Keras axis ``axis``."""

    _fields = ("axis", "tiles")

    def __init__(self, axis: int = 1, tiles: int = 1, **kwargs: Any) -> None:
        super().__init__(axis=int(axis), tiles=int(tiles), **kwargs)

    def call(self, x):
        multiples = [1] * x.shape.rank
        multiples[self.axis] = self.tiles
        return tf.tile(x, multiples)


@_register
class AxisReduce(_Configured):
    """Caffe Reduction over Keras ``axes``: SUM / ASUM / SUMSQ / MEAN, times ``coeff``.

    With ``keep_batch_axis`` the result keeps a leading axis of size 1 (Caffe's scalar top).
    """

    _fields = ("axes", "operation", "coeff", "keep_batch_axis")

    def __init__(
        self,
        axes: Sequence[int] = (),
        operation: str = "SUM",
        coeff: float = 1.0,
        keep_batch_axis: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            axes=[int(a) for a in axes],
            operation=str(operation),
            coeff=float(coeff),
            keep_batch_axis=bool(keep_batch_axis),
            **kwargs,
        )

    def call(self, x):
        if self.operation == "ASUM":
            x = tf.abs(x)
        elif self.operation == "SUMSQ":
            x = tf.square(x)
        if self.operation == "MEAN":
            y = tf.reduce_mean(x, axis=self.axes)
        else:
            y = tf.reduce_sum(x, axis=self.axes)
        if self.coeff != 1.0:
            y = y * self.coeff
        if self.keep_batch_axis:
            y = tf.reshape(y, [1])
        return y


def caffe_top_k(x, k: int):
    """top_k along the last axis with Caffe's tie order: equal values by the HIGHER index first.

    Caffe sorts (value, index) pairs with std::greater; TF's top_k puts the lower index first,
    so it runs on the reversed axis and maps the indices back: i = n - 1 - i_reversed.
    """
    values, reversed_indices = tf.math.top_k(tf.reverse(x, [-1]), k=k, sorted=True)
    return values, tf.shape(x)[-1] - 1 - reversed_indices


@_register
class TopKAxis(_Configured):
    """Caffe ArgMax with ``axis``: top_k indices (as float) or values along Keras ``axis``."""

    _fields = ("axis", "top_k", "out_max_val")

    def __init__(
        self, axis: int = -1, top_k: int = 1, out_max_val: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(axis=int(axis), top_k=int(top_k), out_max_val=bool(out_max_val), **kwargs)

    def call(self, x):
        rank = x.shape.rank
        axis = self.axis % rank
        order = [i for i in range(rank) if i != axis] + [axis]
        inverse = [order.index(i) for i in range(rank)]
        moved = tf.transpose(x, order) if axis != rank - 1 else x
        values, indices = caffe_top_k(moved, self.top_k)
        y = values if self.out_max_val else tf.cast(indices, x.dtype)
        return tf.transpose(y, inverse) if axis != rank - 1 else y


@_register
class ArgMaxFlat(_Configured):
    """Caffe ArgMax without axis on a Caffe-order blob: per sample over all other axes.

    Output (N, 1, top_k, 1...) with indices, or (N, 2, top_k, 1...) = [indices; values].
    """

    _fields = ("top_k", "out_max_val", "out_rank")

    def __init__(
        self, top_k: int = 1, out_max_val: bool = False, out_rank: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(
            top_k=int(top_k), out_max_val=bool(out_max_val), out_rank=int(out_rank), **kwargs
        )

    def call(self, x):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        values, indices = caffe_top_k(flat, self.top_k)
        indices = tf.cast(indices, x.dtype)
        y = tf.stack([indices, values], axis=1) if self.out_max_val else indices[:, None, :]
        return tf.reshape(y, tf.concat([tf.shape(y), tf.ones([self.out_rank - 3], tf.int32)], 0))


@_register
class FullTranspose(_Configured):
    """tf.transpose with a permutation that may move the batch axis (Caffe Permute)."""

    _fields = ("perm",)

    def __init__(self, perm: Sequence[int] = (0,), **kwargs: Any) -> None:
        super().__init__(perm=[int(p) for p in perm], **kwargs)

    def call(self, x):
        return tf.transpose(x, self.perm)


@_register
class ChannelShuffle(_Configured):
    """ShuffleChannel: view channels as (groups, C/groups), swap, flatten back."""

    _fields = ("groups", "axis")

    def __init__(self, groups: int = 1, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(groups=int(groups), axis=int(axis), **kwargs)

    def call(self, x):
        rank = x.shape.rank
        axis = self.axis % rank
        channels = x.shape[axis]
        shape = tf.shape(x)
        split = tf.concat(
            [shape[:axis], [self.groups, channels // self.groups], shape[axis + 1 :]], 0
        )
        y = tf.reshape(x, split)
        perm = list(range(rank + 1))
        perm[axis], perm[axis + 1] = perm[axis + 1], perm[axis]
        return tf.reshape(tf.transpose(y, perm), shape)


# ----------------------------------------------------------------------------------------
# normalization layers
# ----------------------------------------------------------------------------------------
@_register
class LRNAcrossChannels(_Configured):
    """Caffe LRN ACROSS_CHANNELS on NHWC: y = x / (k + alpha/n * sum_{n channels} x^2)^beta."""

    _fields = ("local_size", "alpha", "beta", "k")

    def __init__(
        self,
        local_size: int = 5,
        alpha: float = 1.0,
        beta: float = 0.75,
        k: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            local_size=int(local_size), alpha=float(alpha), beta=float(beta), k=float(k), **kwargs
        )

    def call(self, x):
        return tf.nn.local_response_normalization(
            x,
            depth_radius=(self.local_size - 1) // 2,
            bias=self.k,
            alpha=self.alpha / self.local_size,
            beta=self.beta,
        )


@_register
class LRNWithinChannel(_Configured):
    """Caffe LRN WITHIN_CHANNEL on NHWC: y = x * (1 + alpha * avg_{n x n, zero pad} x^2)^-beta.

    With stride 1 and pad (n-1)/2 every Caffe AVE window lies inside [-pad, H+pad), so the
    divisor is n*n everywhere: zero padding + VALID average pooling is exact.
    """

    _fields = ("local_size", "alpha", "beta")

    def __init__(
        self, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75, **kwargs: Any
    ) -> None:
        super().__init__(local_size=int(local_size), alpha=float(alpha), beta=float(beta), **kwargs)

    def call(self, x):
        n = self.local_size
        pad = (n - 1) // 2
        sq = tf.pad(tf.square(x), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        avg = tf.nn.avg_pool2d(sq, ksize=n, strides=1, padding="VALID")
        return x * tf.pow(1.0 + self.alpha * avg, -self.beta)


@_register
class MeanVarianceNorm(_Configured):
    """Caffe MVN over Keras ``axes``: (x - mean) / (sqrt(var) + eps) (eps outside the sqrt)."""

    _fields = ("axes", "normalize_variance", "eps")

    def __init__(
        self,
        axes: Sequence[int] = (),
        normalize_variance: bool = True,
        eps: float = 1e-9,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            axes=[int(a) for a in axes],
            normalize_variance=bool(normalize_variance),
            eps=float(eps),
            **kwargs,
        )

    def call(self, x):
        centered = x - tf.reduce_mean(x, axis=self.axes, keepdims=True)
        if not self.normalize_variance:
            return centered
        std = tf.sqrt(tf.reduce_mean(tf.square(centered), axis=self.axes, keepdims=True))
        return centered / (std + self.eps)


@_register
class L2Normalize(_Configured):
    """SSD Normalize: y = x / sqrt(sum_{axes} x^2 + eps) * scale (scale per channel or shared)."""

    _fields = ("axes", "eps", "scale_shape")

    def __init__(
        self,
        axes: Sequence[int] = (),
        eps: float = 1e-10,
        scale_shape: Optional[Sequence[int]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            axes=[int(a) for a in axes],
            eps=float(eps),
            scale_shape=None if scale_shape is None else [int(d) for d in scale_shape],
            **kwargs,
        )

    def build(self, input_shape):
        if self.scale_shape is not None:
            self.scale = self.add_weight(
                name="scale", shape=tuple(self.scale_shape), initializer="ones"
            )
        super().build(input_shape)

    def call(self, x):
        y = x * tf.math.rsqrt(tf.reduce_sum(tf.square(x), axis=self.axes, keepdims=True) + self.eps)
        return y * self.scale if self.scale_shape is not None else y


# ----------------------------------------------------------------------------------------
# resizing (NHWC)
# ----------------------------------------------------------------------------------------
def interp_output_size(
    size_in: int,
    pad_beg: int,
    pad_end: int,
    height_or_width: Optional[int],
    zoom_factor: Optional[int],
    shrink_factor: Optional[int],
) -> int:
    """DeepLab Interp output size for one spatial dim (static ints)."""
    eff = size_in + pad_beg + pad_end
    if shrink_factor and not zoom_factor:
        return (eff - 1) // shrink_factor + 1
    if zoom_factor and not shrink_factor:
        return eff + (eff - 1) * (zoom_factor - 1)
    if height_or_width:
        return height_or_width
    out = (eff - 1) // shrink_factor + 1
    return out + (out - 1) * (zoom_factor - 1)


@_register
class InterpBilinear(_Configured):
    """DeepLab Interp on NHWC: crop by -pad, then align-corners bilinear resize.

    The output size rule (height/width, zoom_factor, shrink_factor) is evaluated on the
    runtime shape, so fully convolutional models with free spatial size work too.
    """

    _fields = ("height", "width", "zoom_factor", "shrink_factor", "pad_beg", "pad_end")

    def __init__(
        self,
        height: Optional[int] = None,
        width: Optional[int] = None,
        zoom_factor: Optional[int] = None,
        shrink_factor: Optional[int] = None,
        pad_beg: int = 0,
        pad_end: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            height=height,
            width=width,
            zoom_factor=zoom_factor,
            shrink_factor=shrink_factor,
            pad_beg=int(pad_beg),
            pad_end=int(pad_end),
            **kwargs,
        )

    def _out(self, size, fixed):
        return interp_output_size(
            size,
            self.pad_beg,
            self.pad_end,
            fixed if self.height and self.width else None,
            self.zoom_factor,
            self.shrink_factor,
        )

    def call(self, x):
        shape = tf.shape(x)
        h, w = shape[1], shape[2]
        if self.pad_beg or self.pad_end:
            cb, ce = -self.pad_beg, -self.pad_end
            x = x[:, cb : h - ce, cb : w - ce, :]
        size = tf.stack([self._out(h, self.height), self._out(w, self.width)])
        return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        oh = None if h is None else self._out(h, self.height)
        ow = None if w is None else self._out(w, self.width)
        return tf.TensorShape([input_shape[0], oh, ow, input_shape[3]])


@_register
class NearestResize(_Configured):
    """Nearest-neighbour resize on NHWC to (out_h, out_w): src = floor(dst * in / out)."""

    _fields = ("out_h", "out_w")

    def __init__(self, out_h: int = 1, out_w: int = 1, **kwargs: Any) -> None:
        super().__init__(out_h=int(out_h), out_w=int(out_w), **kwargs)

    def call(self, x):
        shape = tf.shape(x)
        iy = (tf.range(self.out_h) * shape[1]) // self.out_h
        ix = (tf.range(self.out_w) * shape[2]) // self.out_w
        return tf.gather(tf.gather(x, iy, axis=1), ix, axis=2)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.out_h, self.out_w, input_shape[3]])


# ----------------------------------------------------------------------------------------
# Embed
# ----------------------------------------------------------------------------------------
@_register
class CaffeEmbed(_Configured):
    """Caffe Embed: y[..., :] = W[int(x)] (+ b); W (input_dim, num_output)."""

    _fields = ("input_dim", "num_output", "bias_term")

    def __init__(
        self, input_dim: int = 1, num_output: int = 1, bias_term: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(
            input_dim=int(input_dim),
            num_output=int(num_output),
            bias_term=bool(bias_term),
            **kwargs,
        )

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.num_output), initializer="zeros"
        )
        if self.bias_term:
            self.bias = self.add_weight(name="bias", shape=(self.num_output,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        y = tf.gather(self.embeddings, tf.cast(x, tf.int32))
        return y + self.bias if self.bias_term else y


ALL_LAYERS: List[type] = [
    AbsVal,
    BNLL,
    PowerAffine,
    ExpAffine,
    LogAffine,
    ThresholdStep,
    ClipRange,
    SwishBeta,
    ConstantBias,
    BroadcastAddCaffe,
    AxisSlice,
    AxisTile,
    AxisReduce,
    TopKAxis,
    ArgMaxFlat,
    FullTranspose,
    ChannelShuffle,
    LRNAcrossChannels,
    LRNWithinChannel,
    MeanVarianceNorm,
    L2Normalize,
    InterpBilinear,
    NearestResize,
    CaffeEmbed,
]

# How a quantization scheme should treat each layer (for kerasq.schemes' registry):
# "passthrough" - outputs are a subset/rearrangement of the input values (already on the grid);
# "output"      - a new real-valued result: quantize the output like an activation;
# "float"       - integer indices or exact 0/1 flags: keep in float (quantizing them is harmful).
QUANTIZATION_ROLES: Dict[str, str] = {
    "AxisSlice": "passthrough",
    "AxisTile": "passthrough",
    "FullTranspose": "passthrough",
    "ChannelShuffle": "passthrough",
    "NearestResize": "passthrough",
    "AbsVal": "passthrough",
    "TopKAxis": "float",
    "ArgMaxFlat": "float",
    "ThresholdStep": "float",
    "CaffeEmbed": "output",
    "BNLL": "output",
    "PowerAffine": "output",
    "ExpAffine": "output",
    "LogAffine": "output",
    "ClipRange": "output",
    "SwishBeta": "output",
    "ConstantBias": "output",
    "BroadcastAddCaffe": "output",
    "AxisReduce": "output",
    "LRNAcrossChannels": "output",
    "LRNWithinChannel": "output",
    "MeanVarianceNorm": "output",
    "L2Normalize": "output",
    "InterpBilinear": "output",
}
