"""Minifloat: Ristretto's small floating-point formats with E exponent and M mantissa bits.

Format (Ristretto ``Trim2MiniFloat``): bias = 2^(E−1) − 1, no codes reserved for inf or
NaN (the all-ones exponent is an ordinary normal binade). A normal value is
``(−1)^s·(1 + m/2^M)·2^(e − bias)`` for ``e`` in ``0..2^E−1``, ``m`` in ``0..2^M−1``:

* largest value ``(2 − 2^−M)·2^(2^E − 1 − bias)`` (:func:`minifloat_max`),
* ``subnormals=False`` (Ristretto): smallest normal ``2^−bias``; inputs whose binade
  lies below it flush to (signed) zero (decided from the input's exponent, before
  rounding, as Ristretto does),
* ``subnormals=True``: IEEE-style gradual underflow. Exponent code 0 is reserved for
  subnormals ``m·2^(1−bias−M)``, the smallest normal is ``2^(1−bias)`` and rounding
  below it is on the grid of step ``2^(1−bias−M)``. E2M1 with subnormals is the OCP
  FP4 value set {0, 0.5, 1, 1.5, 2, 3, 4, 6}.

Quantizing ``x``: with ``k = floor(log2|x|)`` (raised to the smallest normal exponent
when subnormals are on) the value is rounded on the grid of step ``2^(k−M)``:
``x' = round(x·2^(M−k))·2^(k−M)``, the rounding mode acting on the signed scaled value
like everywhere in kerasq. Then ``|x'|`` is limited to the largest value.

Deliberate difference from Ristretto: when rounding carries the mantissa out of the top
binade (e.g. E4M3, x = 495 rounds to 512), Ristretto returns 2^(2^E−bias), larger than
its own largest value; kerasq saturates to the largest value (480 here). ±inf saturate,
NaN propagates, zero stays zero and a zero result has the sign of x. Ristretto casts
its input to float32 first; kerasq works in the input's own precision (identical for
float32 input).

Outside float32's range: with E >= 8 the largest value can exceed float32's; on float32
data the bound becomes the largest float32 (as for DFP), and values below float32's
smallest normal are flushed to zero (see :mod:`kerasq.numerics._float`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasq.numerics import _float
from kerasq.numerics._validate import (
    DEFAULT_ROUNDING,
    Seed,
    check_bool,
    check_int,
    check_rounding,
    check_seed,
    is_tensor,
    numpy_result,
    to_numpy_float,
)
from kerasq.numerics.rounding import _tf_seed, np_round, tf_round, tf_shift_round

MAX_EXP_BITS = 10  # the largest value stays finite in float64
MAX_MANT_BITS = 52


def _check_format(exp_bits: Any, mant_bits: Any) -> tuple:
    return (
        check_int("exp_bits", exp_bits, 1, MAX_EXP_BITS),
        check_int("mant_bits", mant_bits, 0, MAX_MANT_BITS),
    )


def minifloat_max(exp_bits: int, mant_bits: int) -> float:
    """Largest minifloat value ``(2 − 2^−M)·2^(2^E − 1 − bias)``, bias = 2^(E−1) − 1 (exact).

    Example:
        >>> minifloat_max(4, 3), minifloat_max(5, 2), minifloat_max(2, 1)
        (480.0, 114688.0, 6.0)
    """
    exp_bits, mant_bits = _check_format(exp_bits, mant_bits)
    bias = 2 ** (exp_bits - 1) - 1
    return math.ldexp(2.0 - math.ldexp(1.0, -mant_bits), 2**exp_bits - 1 - bias)


def _max_in(exp_bits: int, mant_bits: int, dtype: Any) -> float:
    """The largest format value that ``dtype`` can hold: the top binade and the
    mantissa are cut to the dtype's (a value of the format whenever the dtype is wide
    enough, e.g. float32 with E <= 7, M <= 23)."""
    info = np.finfo(dtype)
    bias = 2 ** (exp_bits - 1) - 1
    top_exp = min(2**exp_bits - 1 - bias, int(info.maxexp) - 1)
    return math.ldexp(2.0 - math.ldexp(1.0, -min(mant_bits, int(info.nmant))), top_exp)


def minifloat_quantize(
    x: Any,
    exp_bits: int,
    mant_bits: int,
    *,
    rounding: str = DEFAULT_ROUNDING,
    subnormals: bool = False,
    seed: Seed = None,
) -> Any:
    """Round ``x`` to the nearest minifloat with ``exp_bits`` E and ``mant_bits`` M.

    Args:
        x: numpy array, list, scalar or ``tf.Tensor``.
        exp_bits: E in 1..10. mant_bits: M in 0..52.
        rounding: one of :data:`kerasq.numerics.ROUNDING_MODES`.
        subnormals: gradual underflow (IEEE-style) instead of Ristretto's flush to zero.
        seed: for stochastic rounding.

    Returns:
        Same kind as ``x``. For tensors the gradient is 1 where ``|x| <= max``, else 0.

    Example:
        >>> minifloat_quantize([0.3, 90.0, 1e6, 0.001], exp_bits=4, mant_bits=3)
        array([3.125e-01, 8.800e+01, 4.800e+02, 0.000e+00])
    """
    exp_bits, mant_bits = _check_format(exp_bits, mant_bits)
    rounding = check_rounding(rounding)
    subnormals = check_bool("subnormals", subnormals)
    seed = check_seed(seed)
    bias = 2 ** (exp_bits - 1) - 1
    # smallest exponent of the rounding grid, and the exponent below which x flushes
    k_min = 1 - bias if subnormals else -bias
    if is_tensor(x) or is_tensor(seed):
        return _minifloat_tf(x, exp_bits, mant_bits, k_min, rounding, seed)
    xc, out_dtype = to_numpy_float(x)
    top = _max_in(exp_bits, mant_bits, xc.dtype)
    xc = np.clip(_float.np_flush(xc), -top, top).astype(xc.dtype, copy=False)
    k = _float.np_floor_log2(np.abs(xc))
    k_grid = np.maximum(k, k_min) if subnormals else k
    q = np_round(_float.np_ldexp(xc, mant_bits - k_grid), rounding, seed)
    out = np.clip(_float.np_ldexp(q, k_grid - mant_bits), -top, top)
    if not subnormals:
        out = np.where(k < k_min, 0, out)
    out = np.where(out == 0, np.copysign(np.zeros_like(xc), xc), out)  # zeros keep x's sign
    out = np.where(np.isnan(xc), xc, out)
    return numpy_result(out, out_dtype)


def _minifloat_tf(x, exp_bits, mant_bits, k_min, rounding, seed):
    """TF path: rounds the mantissa on the integer bit pattern of x.

    A different algorithm from the numpy path (which scales by 2^(M−k) and rounds a
    float), so the bit-identity tests cross-check the two. Dropping the low
    ``nm − M`` fraction bits of |x| with a rounding addend rounds within x's binade;
    a carry runs into the exponent field, which is exactly the next binade.
    """
    from kerasq._compat import tf

    xc, out_dtype = _float.to_tf_float(x)
    info = np.finfo(xc.dtype.as_numpy_dtype)
    nm, dtype_bias, emin = int(info.nmant), int(info.maxexp) - 1, int(info.minexp)
    int_dtype = tf.int32 if xc.dtype == tf.float32 else tf.int64
    width = 32 if xc.dtype == tf.float32 else 64
    sign_bit, magnitude_bits = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    top = _max_in(exp_bits, mant_bits, xc.dtype.as_numpy_dtype)
    top_pattern = int(np.array(top, xc.dtype.as_numpy_dtype).view(f"int{width}"))
    # bit pattern of the smallest normal 2^k_min (0 when below the dtype's normal range:
    # then nothing is below it, as the device flushes the dtype's subnormals)
    normal_pattern = max(k_min + dtype_bias, 0) << nm
    subnormals = k_min != -(2 ** (exp_bits - 1) - 1)
    drop = nm - mant_bits  # fraction bits below the minifloat mantissa

    def const(v):
        return tf.constant(v, int_dtype)

    @tf.custom_gradient
    def quantize(xv):
        xv = tf.identity(xv)  # the gradient closes over a tensor of this graph (see dfp)
        xs = tf.clip_by_value(xv, -top, top)  # ±inf -> ±top; NaN stays NaN
        bits = tf.bitcast(xs, int_dtype)
        sign = tf.bitwise.bitwise_and(bits, const(sign_bit))
        # NaN patterns are above top: clamp them so the addend cannot overflow
        mag = tf.minimum(tf.bitwise.bitwise_and(bits, const(magnitude_bits)), const(top_pattern))
        if drop > 0:
            # round the signed pattern by `drop` bits (numerics' integer shift rounding); with
            # M = 0 the bit above `drop` is the exponent's, and the significand 1 is odd: a
            # tie goes up in magnitude, which is "nearest"
            mode = "nearest" if rounding == "nearest_even" and mant_bits == 0 else rounding
            negative = sign != 0
            random_bits = None
            if rounding == "stochastic":  # the same draw rounds |x| up for either sign
                draw = _tf_random_ints(tf.shape(mag), drop, seed, int_dtype)
                random_bits = tf.where(negative, const((1 << drop) - 1) - draw, draw)
            q = tf_shift_round(tf.where(negative, -mag, mag), drop, mode, random_bits)
            mag_q = tf.bitwise.left_shift(tf.abs(q), const(drop))
            mag_q = tf.minimum(mag_q, const(top_pattern))  # carry out of the top binade
        else:
            mag_q = mag
        below = mag < const(normal_pattern)
        if subnormals and k_min > emin:  # fixed grid step 2^(k_min − M) below 2^k_min
            scaled = tf_round(_float.tf_ldexp(xs, mant_bits - k_min), rounding, seed)
            tiny = tf.bitcast(tf.abs(_float.tf_ldexp(scaled, k_min - mant_bits)), int_dtype)
            mag_q = tf.where(below, tiny, mag_q)
        else:  # flush; also subnormal grids entirely below the dtype's normals (E >= 8)
            mag_q = tf.where(below, const(0), mag_q)
        out = tf.bitcast(tf.bitwise.bitwise_or(mag_q, sign), xs.dtype)
        out = tf.where(tf.math.is_nan(xs), xs, out)

        def grad(dy):
            return tf.where(tf.abs(xv) <= top, dy, tf.zeros_like(dy))

        return out, grad

    return tf.cast(quantize(xc), out_dtype)


def _tf_random_ints(shape, nbits, seed, dtype):
    """Uniform integers in [0, 2^nbits): the stochastic addend of the mantissa rounding."""
    from kerasq._compat import tf

    if seed is None:
        return tf.random.uniform(shape, minval=0, maxval=2**nbits, dtype=dtype)
    return tf.random.stateless_uniform(
        shape, seed=_tf_seed(seed), minval=0, maxval=2**nbits, dtype=dtype
    )


__all__ = ["minifloat_max", "minifloat_quantize"]
