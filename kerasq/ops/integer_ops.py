"""Bit-exact fixed-point layers in integers: conv2d, depthwise conv2d, matmul.

The arithmetic of a fixed-point accelerator. Inputs ``x`` (int8/uint8/int16, value
``x·2^−fl_x``) and weights ``w`` (int8/int16, ``w·2^−fl_w``, fl_w per tensor or per output
channel) are multiplied and accumulated exactly (int32, or int64 when the operand
ranges could overflow int32); the int32 ``bias`` (``b·2^−fl_b``) is added at the common
scale ``F = max(fl_x + fl_w, fl_b)``; the result is requantized to ``out_bitwidth`` bits
at ``2^−out_frac`` by an arithmetic right shift by ``F − out_frac`` with the configured
rounding, then saturated::

    t = acc·2^(F − fl_x − fl_w) + b·2^(F − fl_b)
    y = clamp(round(t / 2^(F − out_frac)), qmin, qmax)

This is bit for bit the DFP fake-quant simulation ``dfp(conv(x', w') + b', out_frac)`` of
the float layer whenever the float sum is exact. The fallback runs the products in
float64 (exact below 2^53) and the requantization in TF int64 ops, giving the same
integers as the C++ kernels in every deterministic rounding mode.

Example:
    >>> import numpy as np
    >>> from kerasq.ops import dfp_matmul
    >>> x = np.array([[10, -3]], np.int8); w = np.array([[2], [5]], np.int8)
    >>> dfp_matmul(x, w, x_frac=2, w_frac=3, out_frac=1).numpy().tolist()  # (20-15)/32 -> 0
    [[0]]
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from kerasq.errors import QuantizationConfigError
from kerasq.numerics import _validate
from kerasq.numerics._validate import DEFAULT_ROUNDING
from kerasq.numerics.rounding import tf_shift_round
from kerasq.ops._loader import library
from kerasq.ops.fake_quant import seed_tensor

Padding = Union[str, Sequence[Sequence[int]]]
_INT64_MAX = 2**63 - 1


def _pair(name: str, value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise QuantizationConfigError(f"{name} must be a positive int or a pair, got {value!r}")
    return value  # type: ignore[return-value]


def _padding(padding: Padding) -> Tuple[str, list]:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise QuantizationConfigError(f"padding must be SAME, VALID or [[t, b], [l, r]], got {padding!r}")
        return mode, []
    pads = [int(v) for pair in padding for v in pair]
    if len(pads) != 4 or min(pads) < 0:
        raise QuantizationConfigError(f"explicit padding must be [[t, b], [l, r]] >= 0, got {padding!r}")
    return "EXPLICIT", pads


def _same_pads(size: int, k: int, stride: int, dilation: int) -> Tuple[int, int]:
    """TF's SAME padding (the odd pixel goes after)."""
    eff = (k - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _out_dtype(out_bitwidth: int, out_signed: bool, out_dtype: Any) -> Any:
    from kerasq._compat import tf

    if out_dtype is not None:
        return tf.as_dtype(out_dtype)
    bits = out_bitwidth + (0 if out_signed else 1)
    return tf.int8 if bits <= 8 else tf.int16 if bits <= 16 else tf.int32


def _int_input(name: str, value: Any, unsigned_ok: bool = False) -> Any:
    from kerasq._compat import tf

    t = tf.convert_to_tensor(value)
    allowed = (tf.int8, tf.uint8, tf.int16) if unsigned_ok else (tf.int8, tf.int16)
    if t.dtype not in allowed:
        names = "int8, uint8 or int16" if unsigned_ok else "int8 or int16"
        raise QuantizationConfigError(f"{name} must be {names}, got {t.dtype.name}")
    return t


def _prepare(x, w, bias, x_frac, w_frac, bias_frac, out_frac, out_bitwidth, out_signed,
             rounding, seed, out_dtype, out_channels_of_w):
    from kerasq._compat import tf

    x = _int_input("x", x, unsigned_ok=True)  # uint8: e.g. ReLU outputs on 8 unsigned bits
    w = _int_input("w", w)
    rounding = _validate.check_rounding(rounding)
    seed = _validate.check_seed(seed)
    out_bitwidth = _validate.check_int("out_bitwidth", out_bitwidth, 1, 32)
    out_signed = _validate.check_bool("out_signed", out_signed)
    x_frac = _validate.check_int("x_frac", x_frac)
    out_frac = _validate.check_int("out_frac", out_frac)
    wf = _validate.integer_array("w_frac", w_frac)
    n_out = out_channels_of_w(w)
    if wf.ndim > 1 or (wf.ndim == 1 and wf.shape[0] != n_out):
        raise QuantizationConfigError(f"w_frac must be an int or have {n_out} entries, got shape {wf.shape}")
    acc_frac = (wf + x_frac).astype(np.int32)
    if bias is None:
        bias_t = tf.zeros([0], tf.int32)
        bias_frac = 0
    else:
        bias_t = tf.cast(tf.convert_to_tensor(bias), tf.int32)
        if bias_frac is None:
            if wf.ndim:
                raise QuantizationConfigError("bias_frac is required with per-channel w_frac")
            bias_frac = int(acc_frac)
        bias_frac = _validate.check_int("bias_frac", bias_frac)
    dtype = _out_dtype(out_bitwidth, out_signed, out_dtype)
    if dtype not in (tf.int8, tf.uint8, tf.int16, tf.int32):
        raise QuantizationConfigError(
            f"out_dtype must be int8, uint8, int16 or int32, got {dtype.name}")
    if dtype == tf.uint8 and (out_signed or out_bitwidth > 8):
        raise QuantizationConfigError("out_dtype uint8 holds unsigned outputs of at most 8 bits")
    return dict(x=x, w=w, bias=bias_t, acc_frac=tf.constant(acc_frac, tf.int32),
                bias_frac=bias_frac, out_frac=out_frac, out_bitwidth=out_bitwidth,
                out_signed=out_signed, rounding=rounding, seed=seed, out_dtype=dtype,
                has_bias=bias is not None)


def requantize_reference(acc: Any, p: dict) -> Any:
    """The requantization in TF int64 ops (the fallback, and a readable spec).

    ``acc`` is the exact int64 accumulator with channels on the last axis.
    """
    from kerasq._compat import tf

    fa = tf.cast(p["acc_frac"], tf.int64)
    big = tf.maximum(fa, p["bias_frac"]) if p["has_bias"] else fa
    t = acc * tf.bitwise.left_shift(tf.ones_like(big), big - fa)
    if p["has_bias"]:
        t += tf.cast(p["bias"], tf.int64) * tf.bitwise.left_shift(
            tf.ones_like(big), big - p["bias_frac"])
    s = big - p["out_frac"]
    s = s + tf.zeros_like(t)  # broadcast per-channel shifts to t's shape
    sp = tf.maximum(s, 1)
    rounding = p["rounding"]
    bits = None
    if rounding == "stochastic":
        seed = p["seed"]
        shape = tf.shape(t)
        if seed is None:
            bits = tf.random.uniform(shape, 0, _INT64_MAX, dtype=tf.int64)
        else:
            pair = tf.stack([seed_tensor(seed, "stochastic"), tf.constant(1, tf.int64)])
            bits = tf.random.stateless_uniform(shape, pair, 0, _INT64_MAX, dtype=tf.int64)
    down = tf_shift_round(t, sp, rounding, bits)
    left = tf.maximum(-s, 0)
    lim = tf.bitwise.right_shift(tf.fill(tf.shape(t), tf.constant(_INT64_MAX, tf.int64)),
                                 tf.minimum(left, 62))
    up = tf.where(t > lim, _INT64_MAX, tf.where(t < -lim, -_INT64_MAX - 1,
                                                 tf.bitwise.left_shift(t, tf.minimum(left, 62))))
    v = tf.where(s > 0, down, up)
    lo = -(2 ** (p["out_bitwidth"] - 1)) if p["out_signed"] else 0
    hi = 2 ** (p["out_bitwidth"] - 1) - 1 if p["out_signed"] else 2 ** p["out_bitwidth"] - 1
    return tf.cast(tf.clip_by_value(v, lo, hi), p["out_dtype"])


def _attrs(p: dict) -> dict:
    return dict(bias_frac=p["bias_frac"], out_frac=p["out_frac"], out_bitwidth=p["out_bitwidth"],
                out_signed=p["out_signed"], rounding=p["rounding"], out_type=p["out_dtype"])


def _inputs(p: dict) -> list:
    return [p["x"], p["w"], p["bias"], p["acc_frac"], seed_tensor(p["seed"], p["rounding"])]


def dfp_conv2d(
    x: Any, w: Any, bias: Optional[Any] = None, *, x_frac: int, w_frac: Any, out_frac: int,
    bias_frac: Optional[int] = None, out_bitwidth: int = 8, out_signed: bool = True,
    strides: Union[int, Sequence[int]] = 1, padding: Padding = "VALID",
    dilations: Union[int, Sequence[int]] = 1, rounding: str = DEFAULT_ROUNDING, seed: Any = None,
    out_dtype: Any = None,
) -> Any:
    """Integer 2-D convolution, NHWC ``x`` and HWIO ``w``, requantized (see module doc).

    ``padding`` is ``"SAME"``, ``"VALID"`` or ``[[top, bottom], [left, right]]``;
    ``bias_frac`` defaults to ``x_frac + w_frac`` (per-tensor ``w_frac`` only). The output
    dtype is the smallest of int8/int16/int32 holding ``out_bitwidth`` bits.

    Example:
        >>> import numpy as np
        >>> x = np.ones([1, 3, 3, 1], np.int8) * 4; w = np.ones([3, 3, 1, 1], np.int8)
        >>> int(dfp_conv2d(x, w, x_frac=2, w_frac=0, out_frac=0)[0, 0, 0, 0])  # 9*4/4
        9
    """
    from kerasq._compat import tf

    p = _prepare(x, w, bias, x_frac, w_frac, bias_frac, out_frac, out_bitwidth, out_signed,
                 rounding, seed, out_dtype, lambda t: int(t.shape[3]))
    s, d = _pair("strides", strides), _pair("dilations", dilations)
    mode, pads = _padding(padding)
    lib = library()
    if lib is not None:
        return lib.kerasq_dfp_conv2d(*_inputs(p), strides=list(s), dilations=list(d),
                                     padding=mode, explicit_paddings=pads, **_attrs(p))
    tf_pad = mode if mode != "EXPLICIT" else [[0, 0], pads[0:2], pads[2:4], [0, 0]]
    acc = tf.nn.conv2d(tf.cast(p["x"], tf.float64), tf.cast(p["w"], tf.float64), [1, *s, 1],
                       tf_pad, dilations=[1, *d, 1])
    return requantize_reference(tf.cast(acc, tf.int64), p)


def dfp_depthwise_conv2d(
    x: Any, w: Any, bias: Optional[Any] = None, *, x_frac: int, w_frac: Any, out_frac: int,
    bias_frac: Optional[int] = None, out_bitwidth: int = 8, out_signed: bool = True,
    strides: Union[int, Sequence[int]] = 1, padding: Padding = "VALID",
    dilations: Union[int, Sequence[int]] = 1, rounding: str = DEFAULT_ROUNDING, seed: Any = None,
    out_dtype: Any = None,
) -> Any:
    """Integer depthwise convolution, NHWC ``x``, ``w`` of shape [KH, KW, C, multiplier].

    Output channel ``c·multiplier + j`` (Keras order); ``w_frac`` per tensor or per output
    channel. Other arguments as in :func:`dfp_conv2d`.
    """
    from kerasq._compat import tf

    p = _prepare(x, w, bias, x_frac, w_frac, bias_frac, out_frac, out_bitwidth, out_signed,
                 rounding, seed, out_dtype, lambda t: int(t.shape[2]) * int(t.shape[3]))
    s, d = _pair("strides", strides), _pair("dilations", dilations)
    mode, pads = _padding(padding)
    lib = library()
    if lib is not None:
        return lib.kerasq_dfp_depthwise_conv2d(*_inputs(p), strides=list(s), dilations=list(d),
                                               padding=mode, explicit_paddings=pads, **_attrs(p))
    # TF's depthwise kernel wants equal strides: pad explicitly, convolve densely, subsample.
    xf = tf.cast(p["x"], tf.float64)
    if mode == "SAME":
        pads = [v for i in range(2) for v in _same_pads(int(xf.shape[1 + i]),
                                                         int(p["w"].shape[i]), s[i], d[i])]
    if mode != "VALID":
        xf = tf.pad(xf, [[0, 0], pads[0:2], pads[2:4], [0, 0]])
    acc = tf.nn.depthwise_conv2d(xf, tf.cast(p["w"], tf.float64), [1, 1, 1, 1], "VALID",
                                 dilations=list(d))[:, ::s[0], ::s[1], :]
    return requantize_reference(tf.cast(acc, tf.int64), p)


def dfp_matmul(
    x: Any, w: Any, bias: Optional[Any] = None, *, x_frac: int, w_frac: Any, out_frac: int,
    bias_frac: Optional[int] = None, out_bitwidth: int = 8, out_signed: bool = True,
    rounding: str = DEFAULT_ROUNDING, seed: Any = None, out_dtype: Any = None,
) -> Any:
    """Integer dense layer ``x @ w (+ bias)`` requantized; ``x`` [..., K], ``w`` [K, N]."""
    from kerasq._compat import tf

    p = _prepare(x, w, bias, x_frac, w_frac, bias_frac, out_frac, out_bitwidth, out_signed,
                 rounding, seed, out_dtype, lambda t: int(t.shape[1]))
    lib = library()
    if lib is not None:
        return lib.kerasq_dfp_mat_mul(*_inputs(p), **_attrs(p))
    acc = tf.tensordot(tf.cast(p["x"], tf.float64), tf.cast(p["w"], tf.float64), [[-1], [0]])
    return requantize_reference(tf.cast(acc, tf.int64), p)


__all__ = ["dfp_conv2d", "dfp_depthwise_conv2d", "dfp_matmul", "requantize_reference"]
