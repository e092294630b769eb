"""Keras layers of the deploy graph that export builds from a quantized model.

They exist only inside :func:`kerasq.export.to_tflite` (never saved by kerasq), yet are
registered and fully configurable like every kerasq layer.

* :class:`GridQuantize` puts a tensor on a DFP grid. ``mode="fakequant8"``
  uses ``FakeQuantWithMinMaxVars`` with the power-of-two range (the TFLite converter turns
  it into int8 / int16 tensors of scale 2^-fl); ``mode="exact"`` uses only float builtins
  (MUL by 2^fl, MINIMUM/MAXIMUM, and the rounding of :func:`kerasq.numerics.rounding.tf_round`:
  FLOOR/ROUND/SIGN/SELECT), each exact in float32, so a float TFLite file computes the same
  numbers as the Keras fake-quant model.
* :class:`QuantizedLinear` is Conv2D / DepthwiseConv2D / Dense with constant, already
  quantized weights, fake-quantized per channel with power-of-two ranges for int targets.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from kerasq._compat import keras, tf
from kerasq.numerics.rounding import DEFAULT_ROUNDING, tf_round


def _pow2(fl: Any) -> np.ndarray:
    return np.ldexp(np.float32(1.0), -np.asarray(fl, np.int32)).astype(np.float32)


@keras.utils.register_keras_serializable(package="kerasq")
class GridQuantize(keras.layers.Layer):
    """y = clip(round(x·2^fl), qmin, qmax)·2^-fl, lowered for a TFLite target.

    Example:
        >>> GridQuantize(frac_bits=2, qmin=-8, qmax=7, mode="exact")(np.float32([0.3, 9.0]))
        <tf.Tensor: ... numpy=array([0.25, 1.75], dtype=float32)>
    """

    def __init__(
        self,
        frac_bits: int,
        qmin: int,
        qmax: int,
        rounding: str = DEFAULT_ROUNDING,
        mode: str = "exact",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.frac_bits = int(frac_bits)
        self.qmin = int(qmin)
        self.qmax = int(qmax)
        self.rounding = rounding
        self.mode = mode

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        scale = float(_pow2(self.frac_bits))
        lo, hi = self.qmin * scale, self.qmax * scale
        if self.mode == "plain":  # the converter calibrates this tensor itself
            return x
        if self.mode == "exact":
            y = tf.clip_by_value(
                x * float(_pow2(-self.frac_bits)), float(self.qmin), float(self.qmax)
            )
            return tf_round(y, self.rounding, signed_zeros=False) * scale
        bits = 8 if self.mode == "fakequant8" else 16
        if self.qmin < 0:
            full_lo = -(2 ** (bits - 1)) * scale
            if bits == 16:  # TFLite int16 activations are symmetric: scale = max/32767
                full_lo = -(2 ** (bits - 1) - 1) * scale
            full_hi = (2 ** (bits - 1) - 1) * scale
        else:
            full_lo, full_hi = 0.0, (2**bits - 1) * scale
            if bits == 16:
                full_lo, full_hi = -(2**15 - 1) * scale, (2**15 - 1) * scale
        y = tf.quantization.fake_quant_with_min_max_args(x, full_lo, full_hi, num_bits=bits)
        if (lo, hi) != (full_lo, full_hi):  # narrower grid than the integer type: clip
            y = tf.clip_by_value(y, lo, hi)
            y = tf.quantization.fake_quant_with_min_max_args(y, full_lo, full_hi, num_bits=bits)
        return y

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "frac_bits": self.frac_bits,
            "qmin": self.qmin,
            "qmax": self.qmax,
            "rounding": self.rounding,
            "mode": self.mode,
        }


@keras.utils.register_keras_serializable(package="kerasq")
class MinifloatQuantize(keras.layers.Layer):
    """Ristretto minifloat (E exponent, M mantissa bits) with exact float builtins.

    The binade of |x| is found with a ladder of comparisons (one per exponent, so E <= 6),
    x·2^(M-k) is rounded with :func:`kerasq.numerics.rounding.tf_round` and scaled back;
    saturation at ±max and flush to zero below 2^-bias (or subnormals) as in :mod:`kerasq.numerics`.
    """

    def __init__(
        self,
        exp_bits: int,
        mant_bits: int,
        subnormals: bool = False,
        rounding: str = DEFAULT_ROUNDING,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.exp_bits, self.mant_bits = int(exp_bits), int(mant_bits)
        self.subnormals, self.rounding = bool(subnormals), rounding

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        bias = 2 ** (self.exp_bits - 1) - 1
        k_hi = 2**self.exp_bits - 1 - bias
        top = (2.0 - 2.0**-self.mant_bits) * 2.0**k_hi
        k_min = 1 - bias if self.subnormals else -bias
        a = tf.clip_by_value(x, -top, top)
        mag = tf.abs(a)
        up = tf.fill(tf.shape(a), float(2.0 ** (self.mant_bits - k_min)))
        for k in range(k_min + 1, k_hi + 1):
            up = tf.where(mag >= 2.0**k, float(2.0 ** (self.mant_bits - k)), up)
        out = tf_round(a * up, self.rounding, signed_zeros=False) / up
        out = tf.clip_by_value(out, -top, top)
        if not self.subnormals:
            out = tf.where(mag < 2.0**k_min, tf.zeros_like(out), out)
        return out

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "exp_bits": self.exp_bits,
            "mant_bits": self.mant_bits,
            "subnormals": self.subnormals,
            "rounding": self.rounding,
        }


@keras.utils.register_keras_serializable(package="kerasq")
class AffineFakeQuant(keras.layers.Layer):
    """tfmot's affine min/max fake quantization, kept as is (the converter's own path)."""

    def __init__(
        self, low: float, high: float, num_bits: int = 8, narrow_range: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.low, self.high = float(low), float(high)
        self.num_bits, self.narrow_range = int(num_bits), bool(narrow_range)

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        return tf.quantization.fake_quant_with_min_max_args(
            x, self.low, self.high, num_bits=self.num_bits, narrow_range=self.narrow_range
        )

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "low": self.low,
            "high": self.high,
            "num_bits": self.num_bits,
            "narrow_range": self.narrow_range,
        }


@keras.utils.register_keras_serializable(package="kerasq")
class QuantizedLinear(keras.layers.Layer):
    """Conv2D / DepthwiseConv2D / Dense with constant quantized weights for export.

    ``kind`` is "conv", "depthwise" or "dense"; ``weight_frac_bits`` (per output channel
    of the TFLite kernel, or one int) set the fake-quant ranges [-128·2^-fl, 127·2^-fl]
    when ``fake_quant`` is True. A fake-quant Dense on 2-D inputs is computed as a 1x1
    convolution with per-channel ranges (one fl per tensor is repeated per channel):
    TFLite's converter rejects per-channel fake-quant on FULLY_CONNECTED kernels, and puts a
    per-tensor one on a scale of its own (max/127), not on 2^-fl. A grouped Conv2D kernel
    (kh, kw, cin/groups, cout) is lowered by :func:`grouped_conv2d`.
    """

    def __init__(
        self,
        kind: str,
        kernel: Any,
        bias: Any = None,
        *,
        strides=(1, 1),
        padding: str = "valid",
        dilation_rate=(1, 1),
        activation: str = "linear",
        weight_frac_bits: Any = None,
        fake_quant: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.kernel_value = np.asarray(kernel, np.float32)
        self.bias_value = None if bias is None else np.asarray(bias, np.float32)
        self.strides = tuple(strides)
        self.padding = padding.upper()
        self.dilation_rate = tuple(dilation_rate)
        self.activation = keras.activations.get(activation)
        self.activation_name = activation
        self.weight_frac_bits = None if weight_frac_bits is None else np.asarray(weight_frac_bits)
        self.fake_quant = bool(fake_quant)

    def _quantized_kernel(self, kernel: "tf.Tensor", channels: int = 0) -> "tf.Tensor":
        """Fake quant of the kernel on [-128·2^-fl, 127·2^-fl]; ``channels`` > 0 forces
        the per-channel form (one fl per tensor repeated)."""
        if not self.fake_quant:
            return kernel
        scale = _pow2(self.weight_frac_bits)
        if channels and scale.ndim == 0:
            scale = np.full(channels, scale, np.float32)
        if scale.ndim == 0:
            return tf.quantization.fake_quant_with_min_max_args(
                kernel, float(-128 * scale), float(127 * scale), num_bits=8
            )
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, tf.constant(-128 * scale), tf.constant(127 * scale), num_bits=8
        )

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        k = tf.constant(self.kernel_value)
        if self.kind == "conv":
            y = tf.nn.conv2d(
                x,
                self._quantized_kernel(k),
                self.strides,
                self.padding,
                dilations=self.dilation_rate,
            )
        elif self.kind == "depthwise":
            kh, kw, cin, mult = self.kernel_value.shape
            flat = self._quantized_kernel(tf.reshape(k, (kh, kw, cin * mult)))
            y = tf.nn.depthwise_conv2d(
                x,
                tf.reshape(flat, (kh, kw, cin, mult)),
                (1, *self.strides, 1),
                self.padding,
                dilations=self.dilation_rate,
            )
        else:  # dense
            if self.fake_quant and len(x.shape) == 2:
                # one scale per tensor too: the converter puts a per-tensor fake-quant
                # FULLY_CONNECTED kernel on a scale of its own (max/127), not on 2^-fl
                cin, cout = self.kernel_value.shape
                kq = self._quantized_kernel(tf.reshape(k, (1, 1, cin, cout)), cout)
                y = tf.nn.conv2d(tf.reshape(x, (-1, 1, 1, cin)), kq, 1, "VALID")
                y = tf.reshape(y, (-1, cout))
            else:
                y = tf.tensordot(x, self._quantized_kernel(k), [[len(x.shape) - 1], [0]])
        if self.bias_value is not None:
            y = y + tf.constant(self.bias_value)
        return self.activation(y)

    def get_config(self) -> Dict[str, Any]:
        fl = self.weight_frac_bits
        return {
            **super().get_config(),
            "kind": self.kind,
            "kernel": self.kernel_value.tolist(),
            "bias": None if self.bias_value is None else self.bias_value.tolist(),
            "strides": list(self.strides),
            "padding": self.padding.lower(),
            "dilation_rate": list(self.dilation_rate),
            "activation": self.activation_name,
            "weight_frac_bits": None if fl is None else np.asarray(fl).tolist(),
            "fake_quant": self.fake_quant,
        }


@keras.utils.register_keras_serializable(package="kerasq")
class ZeroInsert(keras.layers.Layer):
    """Stride-s zero insertion plus zero padding, with PAD and RESHAPE only (4-D tensors):
    (N, H, W, C) -> (N, s_h·(H − 1) + 1 + before_h + after_h, ..., C), x[i, j] at
    (before_h + s_h·i, before_w + s_w·j). A transposed convolution with stride s and a
    k-tap kernel is this with before = after = k − 1, then a "valid" convolution with
    the spatially flipped kernel (exact in int8: PAD fills with the zero point, i.e. 0).

    Example:
        >>> ZeroInsert((2, 1), (1, 0), (0, 0))(np.ones((1, 2, 1, 1), np.float32))[0, :, 0, 0]
        <tf.Tensor: ... numpy=array([0., 1., 0., 1.], dtype=float32)>
    """

    def __init__(self, strides=(1, 1), before=(0, 0), after=(0, 0), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strides = tuple(int(v) for v in strides)
        self.before = tuple(int(v) for v in before)
        self.after = tuple(int(v) for v in after)

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        _, h, w, c = (int(d) if d is not None else -1 for d in x.shape)
        sh, sw = self.strides
        if sw > 1:  # (N·H, W, 1, C) padded to (N·H, W, sw, C)
            y = tf.reshape(x, (-1, w, 1, c))
            y = tf.pad(y, [[0, 0], [0, 0], [0, sw - 1], [0, 0]])
            x = tf.reshape(y, (-1, h, w * sw, c))
            w = w * sw
        if sh > 1:  # (N, H, 1, W·C) padded to (N, H, sh, W·C)
            y = tf.reshape(x, (-1, h, 1, w * c))
            y = tf.pad(y, [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
            x = tf.reshape(y, (-1, h * sh, w, c))
        # the last (s − 1) inserted zeros count towards the padding after
        after = [a - (s - 1) for a, s in zip(self.after, self.strides)]
        if min(after) < 0:
            x = x[:, : x.shape[1] + min(after[0], 0), : x.shape[2] + min(after[1], 0)]
            after = [max(a, 0) for a in after]
        return tf.pad(x, [[0, 0], [self.before[0], after[0]], [self.before[1], after[1]],
                          [0, 0]])

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "strides": list(self.strides),
                "before": list(self.before), "after": list(self.after)}


@keras.utils.register_keras_serializable(package="kerasq")
class PhaseInterleave(keras.layers.Layer):
    """DEPTH_TO_SPACE with block ``s`` then a crop: (N, H, W, s²·C) -> (N, s·H, s·W, C) with
    y[s·h + a, s·w + b, c] = x[h, w, (a·s + b)·C + c], keeping rows ``start[0]`` ..
    ``start[0] + size[0] − 1`` and columns likewise (exact in int8: data movement only).
    The sub-pixel form of a stride-s transposed convolution writes phase (a, b) of the
    output to channel block a·s + b.

    Example:
        >>> x = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
        >>> PhaseInterleave(2, (0, 1), (2, 2))(x)[0, :, :, 0].numpy()
        array([[1., 4.],
               [3., 6.]], dtype=float32)
    """

    def __init__(self, block: int, start=(0, 0), size=(1, 1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block = int(block)
        self.start = tuple(int(v) for v in start)
        self.size = tuple(int(v) for v in size)

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        y = tf.nn.depth_to_space(x, self.block)
        (h0, w0), (h, w) = self.start, self.size
        if (h0, w0) == (0, 0) and (h, w) == tuple(int(d) for d in y.shape[1:3]):
            return y
        return y[:, h0:h0 + h, w0:w0 + w]

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "block": self.block, "start": list(self.start),
                "size": list(self.size)}


@keras.utils.register_keras_serializable(package="kerasq")
class ArgMaxIndex(keras.layers.Layer):
    """The index of the maximum along ``axis`` (kept with size 1), as int32; ties give the
    HIGHER index (Caffe's sort order): n − 1 − argmax(reverse(x)). ``flat``: over all
    non-batch axes of the tensor as it is laid out, output (N, 1, 1, ...) of ``out_rank``.

    Example:
        >>> ArgMaxIndex(-1)(np.float32([[1, 3, 3, 0]])).numpy()
        array([[2]], dtype=int32)
    """

    def __init__(self, axis: int = -1, flat: bool = False, out_rank: int = 3,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.flat, self.out_rank = int(axis), bool(flat), int(out_rank)

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        if self.flat:
            x = tf.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        axis = (-1 if self.flat else self.axis) % len(x.shape)
        n = int(x.shape[axis])
        index = tf.math.argmax(tf.reverse(x, [axis]), axis=axis, output_type=tf.int32)
        index = tf.expand_dims(tf.constant(n - 1, tf.int32) - index, axis)
        if self.flat:
            index = tf.reshape(index, (-1,) + (1,) * (self.out_rank - 1))
        return index

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "flat": self.flat,
                "out_rank": self.out_rank}


__all__: List[str] = [
    "ArgMaxIndex",
    "PhaseInterleave",
    "ZeroInsert",
    "MinifloatQuantize",
    "AffineFakeQuant",
    "GridQuantize",
    "QuantizedLinear",
]
