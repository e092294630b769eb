"""Dynamic fixed point (DFP): B-bit integers scaled by a power of two 2^−fl.

A DFP number with bit width ``B`` and fractional length ``fl`` is ``q·2^−fl`` with the
integer ``q`` in ``[−2^(B−1), 2^(B−1) − 1]`` (signed) or ``[0, 2^B − 1]`` (unsigned).
Quantizing a real ``x`` (Ristretto ``Trim2FixedPoint``, caffe-jacinto ``quantized_layer``):

    y = x·2^fl                       (exact power-of-two scaling)
    q = clamp(round(y), qmin, qmax)  (any mode of :mod:`kerasq.numerics.rounding`)
    x' = q·2^−fl

Saturating before or after rounding gives the same result, because the bounds are
integers. A zero result is always +0.0 (the integer 0 has no sign). ``fl`` may be
negative (a step larger than 1) and may be an integer array broadcastable against
``x`` (per-channel fractional lengths along the last axis).

float32 and bit widths above 24: float32 holds integers exactly up to 2^24 only, so
with float32 data the upper bound ``qmax`` becomes the largest float32 not above it
(e.g. 2^31 − 128 for B = 32); results stay on the DFP grid and inside its range.
Every value of a float32 input already has at most 24 significant bits, so nothing
else changes. float64 is exact for every B in 2..32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasq.errors import QuantizationConfigError
from kerasq.numerics import _float
from kerasq.numerics._validate import DEFAULT_ROUNDING
from kerasq.numerics._validate import (
    Seed,
    check_bool,
    check_int,
    check_rounding,
    check_seed,
    integer_array,
    is_tensor,
    numpy_result,
    to_numpy_float,
)
from kerasq.numerics.rounding import np_round, tf_round

MIN_BITWIDTH = 2
MAX_BITWIDTH = 32


def _int_bounds(bitwidth: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1
    return 0, 2**bitwidth - 1


def _upper_code(qmax: int, dtype: Any) -> float:
    """qmax in the data's float type, rounded to nearest as Ristretto's float ``max_data``
    is: for B > 24 bits float32 holds no 2^(B−1)−1 and the bound becomes 2^(B−1)
    (``dfp_quantize(x, 32, 20)`` saturates at 2048.0, unsigned at 4096.0)."""
    return float(np.dtype(dtype).type(qmax))


def _check_common(bitwidth: Any, signed: Any) -> tuple[int, bool]:
    return check_int("bitwidth", bitwidth, MIN_BITWIDTH, MAX_BITWIDTH), check_bool("signed", signed)


def _tf_frac_bits(frac_bits: Any) -> Any:
    """frac_bits as an int32 tensor (integer dtype required for tensors)."""
    from kerasq._compat import tf

    if is_tensor(frac_bits):
        frac_bits = tf.convert_to_tensor(frac_bits)  # reads a Variable here, not in the op
        if not frac_bits.dtype.is_integer:
            raise QuantizationConfigError(
                f"frac_bits must be an integer tensor, got dtype {frac_bits.dtype.name}"
            )
        return tf.cast(frac_bits, tf.int32)
    return tf.constant(np.clip(integer_array("frac_bits", frac_bits), -(2**30), 2**30), tf.int32)


def dfp_quantize(
    x: Any,
    bitwidth: int,
    frac_bits: Any,
    *,
    signed: bool = True,
    rounding: str = DEFAULT_ROUNDING,
    seed: Seed = None,
) -> Any:
    """Quantize ``x`` to dynamic fixed point: ``clamp(round(x·2^fl), qmin, qmax)·2^−fl``.

    Args:
        x: numpy array, list, scalar or ``tf.Tensor`` (float32/float64; other dtypes
            are computed in float32 (TF) / float64 (numpy integers)).
        bitwidth: B in 2..32.
        frac_bits: fl, any integer, or an integer array/tensor broadcastable against
            ``x`` (per-channel fl along the last axis).
        signed: ``[−2^(B−1), 2^(B−1)−1]`` if True, else ``[0, 2^B−1]``.
        rounding: ``"nearest"`` (ties away), ``"nearest_even"``, ``"half_up"`` or
            ``"stochastic"``.
        seed: for stochastic rounding (see :func:`kerasq.numerics.round_values`).

    Returns:
        Same kind as ``x``. For tensors the gradient is the clipped straight-through
        estimator: 1 where ``qmin·2^−fl <= x <= qmax·2^−fl``, else 0 (none for fl).
        NaN propagates; ±inf saturate.

    Example:
        >>> dfp_quantize([0.3, 1.7, -5.0], bitwidth=4, frac_bits=2)
        array([ 0.25,  1.75, -2.  ])
    """
    bitwidth, signed = _check_common(bitwidth, signed)
    rounding = check_rounding(rounding)
    seed = check_seed(seed)
    if is_tensor(x) or is_tensor(frac_bits) or is_tensor(seed):
        return _dfp_tf(x, bitwidth, frac_bits, signed, rounding, seed)
    return _dfp_np(x, bitwidth, frac_bits, signed, rounding, seed)


def _dfp_np(x, bitwidth, frac_bits, signed, rounding, seed):
    xc, out_dtype = to_numpy_float(x)
    fl = integer_array("frac_bits", frac_bits)
    try:
        fits = np.broadcast_shapes(xc.shape, fl.shape) == xc.shape
    except ValueError:
        fits = False
    if not fits:
        raise QuantizationConfigError(
            f"frac_bits of shape {fl.shape} does not broadcast to x of shape {xc.shape}"
        )
    qmin, qmax = _int_bounds(bitwidth, signed)
    y = _float.np_ldexp(_float.np_flush(xc), fl)
    y = np.clip(y, qmin, _upper_code(qmax, xc.dtype)).astype(xc.dtype, copy=False)
    q = np_round(y, rounding, seed)
    q = np.where(q == 0, np.zeros_like(q), q)  # the integer 0 has no sign: never -0.0
    return numpy_result(_float.np_ldexp(q, -fl), out_dtype)


def _dfp_tf(x, bitwidth, frac_bits, signed, rounding, seed):
    from kerasq._compat import tf

    xc, out_dtype = _float.to_tf_float(x)
    fl = _tf_frac_bits(frac_bits)
    try:
        fits = tf.broadcast_static_shape(xc.shape, fl.shape).is_compatible_with(xc.shape)
        fits = fits and (
            fl.shape.rank is None or xc.shape.rank is None or fl.shape.rank <= xc.shape.rank
        )
    except ValueError:
        fits = False
    if not fits:
        raise QuantizationConfigError(
            f"frac_bits of shape {fl.shape} does not broadcast to x of shape {xc.shape}"
        )
    if fl.shape.rank == 0 and not is_tensor(frac_bits):
        fl = int(integer_array("frac_bits", frac_bits))  # one constant factor in tf_ldexp
    qmin, qmax = _int_bounds(bitwidth, signed)
    qmax = _upper_code(qmax, xc.dtype.as_numpy_dtype)

    @tf.custom_gradient
    def quantize(xv):
        # The gradient function uses tensors made here, not the input or fl themselves: it
        # may be built in a tf.cond branch's gradient graph (nested conds, as under a tensor
        # `training` flag), which can only capture tensors of the branch it differentiates.
        xv, flv = tf.identity(xv), tf.identity(fl) if is_tensor(fl) else fl
        y = _float.tf_ldexp(xv, flv)
        q = tf_round(tf.clip_by_value(y, qmin, qmax), rounding, seed, signed_zeros=False)
        q = tf.where(q == 0, tf.constant(0, q.dtype), q)  # the integer 0 has no sign
        out = _float.tf_ldexp(q, -flv)

        def grad(dy):
            y = _float.tf_ldexp(xv, flv)  # recomputed: keeps no scaled copy alive until here
            inside = tf.logical_and(y >= qmin, y <= qmax)
            return tf.where(inside, dy, tf.zeros_like(dy))

        return out, grad

    return tf.cast(quantize(xc), out_dtype)


def dfp_range(bitwidth: int, frac_bits: Any, *, signed: bool = True) -> tuple[Any, Any]:
    """``(qmin·2^−fl, qmax·2^−fl)``: the smallest and largest representable DFP values.

    Python floats (exact) for an integer ``frac_bits``, float64 arrays for an array,
    float32 tensors for a tensor (there the upper bound is qmax rounded to the nearest
    float32, as Ristretto's ``max_data``: what :func:`dfp_quantize` produces on float32
    data; 2^(B−1)·2^−fl for B > 24).

    Example:
        >>> dfp_range(8, 4)
        (-8.0, 7.9375)
        >>> dfp_range(8, -1, signed=False)
        (0.0, 510.0)
    """
    bitwidth, signed = _check_common(bitwidth, signed)
    qmin, qmax = _int_bounds(bitwidth, signed)
    if is_tensor(frac_bits):
        from kerasq._compat import tf

        fl = _tf_frac_bits(frac_bits)
        top = _upper_code(qmax, np.float32)
        ones = tf.ones_like(fl, dtype=tf.float32)
        return _float.tf_ldexp(qmin * ones, -fl), _float.tf_ldexp(top * ones, -fl)
    fl = integer_array("frac_bits", frac_bits)
    if fl.ndim == 0:
        with np.errstate(over="ignore"):  # exact; beyond float64's range -> ±inf / 0
            lo, hi = np.ldexp(np.array([qmin, qmax], np.float64), -int(np.clip(fl, -(2**20), 2**20)))
        return float(lo) + 0.0, float(hi)
    ones = np.ones(fl.shape, np.float64)
    return _float.np_ldexp(qmin * ones, -fl), _float.np_ldexp(qmax * ones, -fl)


def dfp_frac_bits(max_abs: Any, bitwidth: int, *, signed: bool = True) -> Any:
    """Fractional length that fits ``max_abs``: ``fl = B − il``, ``il = ceil(log2 max_abs) + s``.

    ``s`` is 1 for signed data (the sign bit), 0 for unsigned. ``ceil(log2 m)`` is read
    exactly from the exponent bits, so ``m = 1.0 -> 0``, ``m = 2.0 -> 1``, ``m = 2.5 -> 2``.
    ``max_abs = 0`` (an all-zero tensor) uses ``ceil(log2 0) := 0`` as caffe-jacinto 0.17
    does, i.e. ``fl = B − s`` (the range [−1, 1) when signed). Subnormal ``max_abs``
    counts as 0 (see :mod:`kerasq.numerics._float`).

    Note ``x = max_abs`` itself saturates to ``qmax·2^−fl`` when ``max_abs`` is a power of
    two (e.g. 8 bit, max 1.0 -> fl = 7, range [−1, 127/128]); this is the Ristretto and
    caffe-jacinto rule.

    Returns:
        int for a scalar; int32 numpy array for an array; int32 tensor for a tensor.
        Negative, NaN or infinite ``max_abs`` is rejected (numpy and eager tensors).

    Example:
        >>> dfp_frac_bits(1.0, 8), dfp_frac_bits(2.5, 8), dfp_frac_bits(0.0, 8, signed=False)
        (7, 5, 8)
    """
    bitwidth, signed = _check_common(bitwidth, signed)
    sign_bit = 1 if signed else 0
    if is_tensor(max_abs):
        return _frac_bits_tf(max_abs, bitwidth, sign_bit)
    m, _ = to_numpy_float(max_abs)
    _check_max_abs(m)
    m = _float.np_flush(m)
    k = _float.np_floor_log2(m)
    ceil_log2 = np.where(m > 0, k + (m > _float.np_ldexp(np.ones_like(m), k)), 0)
    fl = (bitwidth - sign_bit - ceil_log2).astype(np.int32)
    return int(fl) if fl.ndim == 0 else fl


def _check_max_abs(m: np.ndarray) -> None:
    bad = ~np.isfinite(m) | (m < 0)
    if np.any(bad):
        shown = m[bad].ravel()[0]
        raise QuantizationConfigError(f"max_abs must be finite and >= 0, got {shown!r}")


def dfp_frac_bits_float32(max_abs: Any, bitwidth: int, *, signed: bool = True) -> Any:
    """:func:`dfp_frac_bits` of a float32 tensor in four ops, read from the bit pattern.

    ceil(log2 m) = ((bits(m) + 2^23 − 1) >> 23) − 127: the exponent field, plus one when
    any mantissa bit is set (the carry); 0 below the smallest normal float. No value
    checks (non-finite m gives what the bit pattern gives): the quantizers' graph form,
    which kerasq's C++ range and weight ops compute the same way.

    Returns:
        An int32 tensor shaped like ``max_abs``.

    Example:
        >>> from kerasq._compat import tf
        >>> dfp_frac_bits_float32(tf.constant([1.0, 2.5, 0.0]), 8).numpy().tolist()
        [7, 5, 7]
    """
    from kerasq._compat import tf

    bitwidth, signed = _check_common(bitwidth, signed)
    m = tf.convert_to_tensor(max_abs, tf.float32)
    ceil_log2 = tf.bitwise.right_shift(tf.bitcast(m, tf.int32) + (2**23 - 1), 23) - 127
    ceil_log2 = tf.where(m >= np.finfo(np.float32).tiny, ceil_log2, 0)
    return bitwidth - (1 if signed else 0) - ceil_log2


def _frac_bits_tf(max_abs, bitwidth, sign_bit):
    from kerasq._compat import tf

    m, _ = _float.to_tf_float(max_abs)
    if tf.executing_eagerly():
        _check_max_abs(m.numpy())
    m = _float.tf_flush(m)
    k = _float.tf_floor_log2(m)
    above = tf.cast(m > _float.tf_ldexp(tf.ones_like(m), k), tf.int32)
    ceil_log2 = tf.where(m > 0, k + above, tf.zeros_like(k))
    return bitwidth - sign_bit - ceil_log2


__all__ = ["dfp_frac_bits", "dfp_frac_bits_float32", "dfp_quantize", "dfp_range"]
