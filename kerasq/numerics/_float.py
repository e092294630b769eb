"""Exact binary floating-point primitives, in numpy and in TF, with identical results.

All kerasq number formats are built from three exact operations:

* ``ldexp(x, k) = x·2^k`` (an exact power-of-two scaling, never ``exp2``);
* ``floor_log2(a)`` for positive normal ``a`` read from the exponent bits (never ``log2``);
* flushing of subnormal numbers to a signed zero.

Why flushing: TensorFlow's CPU kernels run with flush-to-zero / denormals-are-zero,
so a TF op on the CPU never sees or makes a subnormal float32/float64. The numpy path
flushes explicitly, which makes both backends agree bit for bit. The TF paths of
``round_values`` and ``pow2_quantize`` flush their inputs explicitly too; DFP and
minifloat leave it to the device (one pass less on large activations; on a device
that keeps subnormals only grids near the dtype's smallest normal number can differ,
e.g. fractional lengths above ~126 in float32).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasq.numerics._validate import is_tensor

_EXP_BITS = {np.dtype(np.float32): (23, 127, 0xFF), np.dtype(np.float64): (52, 1023, 0x7FF)}


def tiny(dtype: Any) -> float:
    """Smallest positive normal number of ``dtype``."""
    return float(np.finfo(np.dtype(dtype)).tiny)


def round_toward_zero(value: int, dtype: Any) -> float:
    """Largest number of ``dtype`` whose magnitude does not exceed ``|value|`` (exact)."""
    dtype = np.dtype(dtype)
    digits = np.finfo(dtype).nmant + 1
    mag = abs(int(value))
    drop = max(mag.bit_length() - digits, 0)
    mag = (mag >> drop) << drop
    return float(np.copysign(float(mag), value)) if mag else 0.0


# ---------------------------------------------------------------- numpy


def np_flush(x: np.ndarray) -> np.ndarray:
    """Subnormals -> signed zero (inputs and outputs of every quantizer)."""
    return np.where(np.abs(x) < tiny(x.dtype), np.copysign(np.zeros_like(x), x), x)


def np_ldexp(x: np.ndarray, k: Any) -> np.ndarray:
    """Exact ``x·2^k`` in x's dtype (subnormal results flushed to zero)."""
    k = np.clip(np.asarray(k, dtype=np.int64), -(2**20), 2**20).astype(np.int32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np_flush(np.ldexp(x, k).astype(x.dtype, copy=False))


def np_floor_log2(a: np.ndarray) -> np.ndarray:
    """``floor(log2 a)`` as int32, exact for positive normal ``a`` (-1 for 0, inf, NaN)."""
    with np.errstate(invalid="ignore"):
        return (np.frexp(a)[1] - 1).astype(np.int32)


# ---------------------------------------------------------------- TensorFlow


def tf_flush(x: Any) -> Any:
    """Subnormals -> signed zero."""
    from kerasq._compat import tf

    return tf.where(tf.abs(x) < tiny(x.dtype.as_numpy_dtype), x * 0, x)


def _tf_pow2(k: Any, dtype: Any) -> Any:
    """Exact 2^k built from its bit pattern; needs |k| <= 126 (float32) / 1022 (float64)."""
    from kerasq._compat import tf

    mant, bias, _ = _EXP_BITS[np.dtype(dtype.as_numpy_dtype)]
    if dtype == tf.float32:
        bits = tf.bitwise.left_shift(tf.cast(k, tf.int32) + bias, mant)
        return tf.bitcast(bits, tf.float32)
    bits = tf.bitwise.left_shift(tf.cast(k, tf.int64) + bias, tf.constant(mant, tf.int64))
    return tf.bitcast(bits, tf.float64)


def tf_ldexp(x: Any, k: Any) -> Any:
    """``x·2^k`` for float32/float64 tensors; ``k`` a Python int or an int tensor.

    An int ``k`` with 2^k a normal number becomes one exact constant factor; any other
    int ``k`` adds ``k`` to the exponent field of x (exact, and immune to XLA folding
    constant factors into an overflowing 2^k). A tensor ``k`` is applied as two exactly
    built normal powers of two of the same sign, so the partial products move
    monotonically from x to x·2^k and neither over- nor underflows unless the result
    does; it is exact for |k| up to 2·(emax−1) (252 in float32), and beyond that the
    result is 0 or ±inf anyway except for values that DFP/minifloat/pow2 round to 0.
    Subnormal results are left to the device's flush-to-zero (TF's CPU kernels flush).
    """
    from kerasq._compat import tf

    info = np.finfo(x.dtype.as_numpy_dtype)
    emin, emax = int(info.minexp), int(info.maxexp) - 1
    if not is_tensor(k):
        k = int(k)
        if emin <= k <= emax:
            return x * math.ldexp(1.0, k)
        return _tf_ldexp_exponent_field(x, k)
    k = tf.clip_by_value(tf.cast(k, tf.int32), 2 * emin, 2 * emax)
    k1 = tf.clip_by_value(k, emin, emax)
    return x * _tf_pow2(k1, x.dtype) * _tf_pow2(k - k1, x.dtype)


def _tf_ldexp_exponent_field(x: Any, k: int) -> Any:
    """x·2^k by integer addition to the exponent field: normal x -> ±inf on overflow,
    ±0 on underflow (flush); zero and subnormal x -> ±0; inf and NaN unchanged."""
    from kerasq._compat import tf

    mant, _, mask = _EXP_BITS[np.dtype(x.dtype.as_numpy_dtype)]
    int_dtype = tf.int32 if x.dtype == tf.float32 else tf.int64
    k = min(max(k, -2 * mask), 2 * mask)  # beyond this every normal x over/underflows
    bits = tf.bitcast(x, int_dtype)
    sign = tf.bitwise.bitwise_and(bits, tf.constant(-(2 ** (mant + _width(mask))), int_dtype))
    field = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(bits, tf.constant(mant, int_dtype)), tf.constant(mask, int_dtype)
    )
    new_field = field + k
    inf_bits = tf.bitwise.bitwise_or(sign, tf.constant(mask << mant, int_dtype))
    moved = bits + tf.constant(k << mant, int_dtype)
    out = tf.where(new_field >= mask, inf_bits, tf.where(new_field <= 0, sign, moved))
    out = tf.where(field == 0, sign, out)
    return tf.where(field == mask, x, tf.bitcast(out, x.dtype))


def _width(mask: int) -> int:
    """Bits of the exponent field: 8 (float32) or 11 (float64)."""
    return mask.bit_length()


def tf_floor_log2(a: Any) -> Any:
    """``floor(log2 a)`` as int32 from the exponent bits; exact for positive normal ``a``."""
    from kerasq._compat import tf

    mant, bias, mask = _EXP_BITS[np.dtype(a.dtype.as_numpy_dtype)]
    if a.dtype == tf.float32:
        field = tf.bitwise.bitwise_and(tf.bitwise.right_shift(tf.bitcast(a, tf.int32), mant), mask)
        return field - bias
    bits = tf.bitcast(a, tf.int64)
    field = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(bits, tf.constant(mant, tf.int64)), tf.constant(mask, tf.int64)
    )
    return tf.cast(field, tf.int32) - bias


def to_tf_float(x: Any) -> tuple[Any, Any]:
    """``(tensor to compute on, dtype of the result)`` for the TF path.

    float32/float64 are computed as they are; float16/bfloat16 in float32 and cast
    back; integers and bools become float32.
    """
    from kerasq._compat import tf

    x = tf.convert_to_tensor(x)
    if x.dtype in (tf.float32, tf.float64):
        return x, x.dtype
    if x.dtype.is_floating:
        return tf.cast(x, tf.float32), x.dtype
    if x.dtype.is_integer or x.dtype == tf.bool:
        return tf.cast(x, tf.float32), tf.float32
    from kerasq.errors import QuantizationConfigError

    raise QuantizationConfigError(f"x must be numeric, got a tensor of dtype {x.dtype.name}")
