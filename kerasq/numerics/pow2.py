"""Integer power-of-two weights (Ristretto ``Trim2IntegerPowerOf2``): ``x' = sign(x)·2^k``.

    k = clamp(round(log2|x|), exp_min, exp_max)

The rounding happens in the log domain, as in Ristretto. ``log2|x|`` is irrational
except at powers of two, so it never lies exactly on a half-integer and the three
deterministic modes (``nearest``, ``nearest_even``, ``half_up``) all give the same
result: ``k = floor(log2|x|) + [|x|·2^−floor(log2|x|) >= √2]``, decided exactly by
comparing the significand with the smallest float >= √2 (no ``log2`` approximation).
``stochastic`` rounds the exponent up with probability ``frac(log2|x|)``.

Deliberate difference from Ristretto: an exact zero stays zero (Ristretto maps it to
``+2^exp_min``, destroying sparsity); subnormal inputs count as zero. NaN propagates,
±inf saturate to ``±2^exp_max``. For tensors the gradient is the identity
(straight-through estimator without clipping).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasq.errors import QuantizationConfigError
from kerasq.numerics import _float
from kerasq.numerics._validate import DEFAULT_ROUNDING
from kerasq.numerics._validate import (
    Seed,
    check_int,
    check_rounding,
    check_seed,
    is_tensor,
    numpy_result,
    to_numpy_float,
)
from kerasq.numerics.rounding import np_round, tf_round


def _sqrt2_ceil(dtype: Any) -> float:
    """Smallest ``dtype`` number >= √2, computed with integers (exact)."""
    digits = np.finfo(dtype).nmant
    return math.ldexp(math.isqrt(2 << (2 * digits)) + 1, -digits)


def pow2_quantize(
    x: Any,
    exp_min: int = -8,
    exp_max: int = -1,
    *,
    rounding: str = DEFAULT_ROUNDING,
    seed: Seed = None,
) -> Any:
    """Round ``x`` to ``sign(x)·2^k`` with integer ``k`` in ``exp_min..exp_max``; 0 stays 0.

    Args:
        x: numpy array, list, scalar or ``tf.Tensor``.
        exp_min, exp_max: the exponent range (Ristretto defaults −8, −1).
        rounding: one of :data:`kerasq.numerics.ROUNDING_MODES`, applied to ``log2|x|``.
        seed: for stochastic rounding.

    Example:
        >>> pow2_quantize([0.3, -0.7, 0.0, 5.0, 1e-9])
        array([ 0.25      , -0.5       ,  0.        ,  0.5       ,  0.00390625])
    """
    exp_min = check_int("exp_min", exp_min)
    exp_max = check_int("exp_max", exp_max)
    if exp_min > exp_max:
        raise QuantizationConfigError(
            f"exp_min must be <= exp_max, got exp_min={exp_min}, exp_max={exp_max}"
        )
    rounding = check_rounding(rounding)
    seed = check_seed(seed)
    if is_tensor(x) or is_tensor(seed):
        return _pow2_tf(x, exp_min, exp_max, rounding, seed)
    xc, out_dtype = to_numpy_float(x)
    mag = np.abs(_float.np_flush(xc))
    k = _float.np_floor_log2(mag)
    with np.errstate(invalid="ignore", divide="ignore"):
        significand = _float.np_ldexp(mag, -k)  # in [1, 2)
        if rounding == "stochastic":
            k = k + np_round(np.log2(significand), rounding, seed).astype(np.int32)
        else:
            k = k + (significand >= _sqrt2_ceil(xc.dtype))
    k = np.where(np.isinf(mag), exp_max, np.clip(k, exp_min, exp_max))
    power = _float.np_ldexp(np.ones_like(xc), k)
    out = np.where(mag == 0, np.copysign(np.zeros_like(xc), xc), np.where(xc < 0, -power, power))
    out = np.where(np.isnan(xc), xc, out)
    return numpy_result(out, out_dtype)


def _pow2_tf(x, exp_min, exp_max, rounding, seed):
    from kerasq._compat import tf

    xc, out_dtype = _float.to_tf_float(x)

    @tf.custom_gradient
    def quantize(xv):
        mag = tf.abs(_float.tf_flush(xv))
        k = _float.tf_floor_log2(mag)
        significand = _float.tf_ldexp(mag, -k)
        if rounding == "stochastic":
            log2_sig = tf.math.log(significand) / tf.constant(math.log(2.0), xv.dtype)
            k = k + tf.cast(tf_round(log2_sig, rounding, seed), tf.int32)
        else:
            k = k + tf.cast(significand >= _sqrt2_ceil(xv.dtype.as_numpy_dtype), tf.int32)
        k = tf.where(tf.math.is_inf(mag), exp_max, tf.clip_by_value(k, exp_min, exp_max))
        power = _float.tf_ldexp(tf.ones_like(xv), k)
        out = tf.where(mag == 0, xv * 0, tf.where(xv < 0, -power, power))
        out = tf.where(tf.math.is_nan(xv), xv, out)
        return out, lambda dy: dy

    return tf.cast(quantize(xc), out_dtype)


__all__ = ["pow2_quantize"]
