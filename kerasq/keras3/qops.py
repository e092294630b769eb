"""kerasq's fake-quantization formulas on ``keras.ops`` (any Keras 3 backend).

The same math as :mod:`kerasq.numerics` (which documents every formula), written
with ``keras.ops`` so a Keras 3 model runs it on TensorFlow and JAX alike:

* powers of two come from a table of exact float32 values 2^k, k in [-126, 127]
  (never ``exp2``), ``floor(log2 a)`` is corrected against that table, so
  ``dfp_frac_bits`` is exact like ``kerasq.numerics.dfp_frac_bits``;
* rounding: ``nearest`` (ties away), ``nearest_even``, ``half_up``, ``stochastic``
  (``floor(y) + [u < frac(y)]`` with ``keras.random``);
* ``fake_quant_dfp`` is TensorFlow's ``FakeQuantWithMinMaxVars`` kernel with
  min = qmin·2^-fl, max = qmax·2^-fl, operation for operation
  (``floor((clip(x) - min)·2^fl + 1/2)·2^-fl + min``): the form the tf_keras path runs
  for ``rounding="half_up"`` and the TFLite converter turns into int8, so a Keras 3 model
  and its int8 file agree bit for bit;
* gradients are straight-through inside the grid's range and zero outside
  (``stop_gradient(q) + inside·(x - stop_gradient(x))``: the forward value stays q).

Example:
    >>> from keras import ops
    >>> dfp_quantize(ops.convert_to_tensor([0.3, 1.7]), 4, 2, signed=True, rounding="nearest")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from kerasq._compat import keras3
from kerasq.numerics.grid import integer_range

keras = keras3()
ops = keras.ops

_K_MIN, _K_MAX = -126, 127
_POW2_TABLE = np.ldexp(np.float32(1.0), np.arange(_K_MIN, _K_MAX + 1)).astype(np.float32)
_TINY = float(np.finfo(np.float32).tiny)
_BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0)))
_SQRT2_CEIL = math.ldexp(math.isqrt(2 << (2 * 24)) + 1, -24)


def pow2(k: Any) -> Any:
    """Exact float32 2^k for integer-valued ``k`` (clipped to [-126, 127])."""
    k = ops.cast(ops.clip(ops.cast(k, "float32"), _K_MIN, _K_MAX), "int32") - _K_MIN
    return ops.take(ops.convert_to_tensor(_POW2_TABLE), k)


def floor_log2(a: Any) -> Any:
    """floor(log2 a) as float32, exact for positive normal ``a`` (0 for a <= 0)."""
    a = ops.cast(a, "float32")
    safe = ops.maximum(a, _TINY)
    e = ops.floor(ops.log2(safe))
    e = ops.where(pow2(e) > safe, e - 1.0, e)
    e = ops.where(pow2(e + 1.0) <= safe, e + 1.0, e)
    return ops.where(a > 0, e, ops.zeros_like(e))


def dfp_frac_bits(max_abs: Any, bitwidth: int, *, signed: bool) -> Any:
    """fl = B - s - ceil(log2 max_abs) (ceil(log2 0) := 0), as float32; see
    ``kerasq.numerics.dfp_frac_bits``. On TensorFlow the tf_keras path's bit-pattern form
    (``kerasq.schemes._backend.dfp_frac_bits``, four ops in a graph) gives the same value."""
    kernel = _tf_kernel()
    if kernel is not None:
        return kernel.dfp_frac_bits(ops.cast(max_abs, "float32"), bitwidth, signed=signed)
    m = ops.cast(max_abs, "float32")
    m = ops.where(ops.abs(m) < _TINY, ops.zeros_like(m), m)
    k = floor_log2(m)
    ceil = ops.where(m > 0, k + ops.cast(m > pow2(k), "float32"), ops.zeros_like(k))
    return float(bitwidth - (1 if signed else 0)) - ceil


def round_values(y: Any, rounding: str, seed: Optional[Any] = None) -> Any:
    """Round to integers with one of kerasq's four modes (``kerasq.numerics.round_values``)."""
    if rounding == "nearest_even":
        return ops.round(y)
    if rounding == "nearest":
        return ops.sign(y) * ops.floor(ops.abs(y) + _BELOW_HALF)
    low = ops.floor(y)
    frac = y - low
    if rounding == "half_up":
        return ops.where(frac >= 0.5, low + 1.0, low)
    if rounding == "stochastic":
        u = keras.random.uniform(ops.shape(y), dtype="float32", seed=seed)
        return ops.where(u < frac, low + 1.0, low)
    raise ValueError(f"unknown rounding {rounding!r}")


def _ste(x: Any, q: Any, inside: Any) -> Any:
    """q forward; gradient 1 where ``inside``, else 0."""
    inside = ops.cast(inside, x.dtype)
    return ops.stop_gradient(q) + inside * (x - ops.stop_gradient(x))


def _tf_kernel() -> Any:
    """kerasq's fake-quantization kernels (C++ ops, else TF) when the backend is TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return None
    from kerasq.schemes import _backend

    return _backend


def dfp_quantize(x: Any, bitwidth: int, frac_bits: Any, *, signed: Any, rounding: str,
                 seed: Optional[Any] = None) -> Any:
    """x' = clip(round(x·2^fl), qmin, qmax)·2^-fl; ``signed`` may be a boolean tensor.

    On the TensorFlow backend this runs kerasq's DFP kernel (the C++ op the tf_keras path
    uses; same values, the stochastic mode draws from its own stream), under a cond when
    ``signed`` is a tensor."""
    x = ops.cast(x, "float32")
    kernel = _tf_kernel()
    if kernel is not None:
        fl = ops.cast(frac_bits, "int32")
        if isinstance(signed, bool):
            return kernel.dfp_quantize(x, bitwidth, fl, signed=signed, rounding=rounding)
        # the kernel takes the signedness as an attribute: a cond, as the tf_keras quantizer
        return ops.cond(signed,
                        lambda: kernel.dfp_quantize(x, bitwidth, fl, signed=True,
                                                    rounding=rounding),
                        lambda: kernel.dfp_quantize(x, bitwidth, fl, signed=False,
                                                    rounding=rounding))
    lo_s, hi_s = integer_range(bitwidth, True)
    lo_u, hi_u = integer_range(bitwidth, False)
    if isinstance(signed, bool):
        qmin, qmax = (lo_s, hi_s) if signed else (lo_u, hi_u)
    else:
        qmin = ops.where(signed, lo_s, lo_u)
        qmax = ops.where(signed, hi_s, hi_u)
    y = x * pow2(frac_bits)
    q = round_values(ops.clip(y, qmin, qmax) if isinstance(qmin, float)
                     else ops.minimum(ops.maximum(y, qmin), qmax), rounding, seed)
    q = ops.where(q == 0, ops.zeros_like(q), q)
    out = q * pow2(-frac_bits)
    return _ste(x, out, ops.logical_and(y >= qmin, y <= qmax))


def fake_quant_dfp(x: Any, bitwidth: int, frac_bits: Any, *, unsigned: Any = False) -> Any:
    """TF's FakeQuantWithMinMaxVars(x, qmin·2^-fl, qmax·2^-fl, num_bits=B), per tensor or
    per last-axis channel (``frac_bits`` of shape [C]); ``unsigned`` may be a tensor."""
    x = ops.cast(x, "float32")
    lo_s, hi_s = integer_range(bitwidth, True)
    lo_u, hi_u = integer_range(bitwidth, False)
    qmin = ops.where(unsigned, lo_u, lo_s)
    qmax = ops.where(unsigned, hi_u, hi_s)
    scale = pow2(-frac_bits)
    inv = pow2(frac_bits)
    low = qmin * scale
    high = qmax * scale
    clamped = ops.minimum(ops.maximum(x, low), high)
    out = ops.floor((clamped - low) * inv + 0.5) * scale + low
    return _ste(x, out, ops.logical_and(x >= low, x <= high))


def affine_quantize(x: Any, scale: Any, offset: Any, qmin: Any, qmax: Any, *, rounding: str,
                    seed: Optional[Any] = None) -> Any:
    """caffe-jacinto's trim: y = round(clip(x·s + o)); x' = (y - o)/s."""
    x = ops.cast(x, "float32")
    y = x * scale + offset
    q = (round_values(ops.minimum(ops.maximum(y, qmin), qmax), rounding, seed) - offset) / scale
    return _ste(x, q, ops.logical_and(y >= qmin, y <= qmax))


def minifloat_max(exp_bits: int, mant_bits: int) -> float:
    bias = 2 ** (exp_bits - 1) - 1
    top_exp = min(2 ** exp_bits - 1 - bias, _K_MAX)
    return math.ldexp(2.0 - math.ldexp(1.0, -min(mant_bits, 23)), top_exp)


def minifloat_quantize(x: Any, exp_bits: int, mant_bits: int, *, rounding: str,
                       seed: Optional[Any] = None) -> Any:
    """Ristretto minifloat, no subnormals (flush below 2^-bias), saturating at the max."""
    x = ops.cast(x, "float32")
    bias = 2 ** (exp_bits - 1) - 1
    top = minifloat_max(exp_bits, mant_bits)
    xc = ops.clip(x, -top, top)
    k = floor_log2(ops.abs(xc))
    q = round_values(xc * pow2(mant_bits - k), rounding, seed) * pow2(k - mant_bits)
    out = ops.clip(q, -top, top)
    out = ops.where(ops.logical_or(k < -bias, ops.abs(xc) < _TINY), ops.zeros_like(out), out)
    return _ste(x, out, ops.abs(x) <= top)


def pow2_quantize(x: Any, exp_min: int, exp_max: int, *, rounding: str,
                  seed: Optional[Any] = None) -> Any:
    """w' = sign(w)·2^clip(round(log2|w|), exp_min, exp_max), 0 stays 0; plain STE."""
    x = ops.cast(x, "float32")
    mag = ops.abs(x)
    mag = ops.where(mag < _TINY, ops.zeros_like(mag), mag)
    k = floor_log2(mag)
    significand = mag * pow2(-k)
    if rounding == "stochastic":
        k = k + round_values(ops.log2(ops.maximum(significand, 1.0)), rounding, seed)
    else:
        k = k + ops.cast(significand >= _SQRT2_CEIL, "float32")
    power = pow2(ops.clip(k, exp_min, exp_max))
    out = ops.where(mag == 0, ops.zeros_like(x), ops.where(x < 0, -power, power))
    return ops.stop_gradient(out) + (x - ops.stop_gradient(x))


__all__ = ["pow2", "floor_log2", "dfp_frac_bits", "round_values", "dfp_quantize",
           "fake_quant_dfp", "affine_quantize", "minifloat_quantize", "pow2_quantize"]
