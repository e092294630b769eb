"""Rounding of real values to integers: the four modes every kerasq format shares.

======================  ==========================================  ============================
mode                    definition (``y`` real, result integer)     where it comes from
======================  ==========================================  ============================
``"nearest"``           nearest integer, ties away from zero         Caffe CPU ``round()``,
                                                                    TFLite reference kernels
``"nearest_even"``      nearest integer, ties to even                Caffe GPU ``rint()``, IEEE
                                                                    default, TFLite optimized
                                                                    QUANTIZE kernel
``"half_up"``           ``floor(y + 1/2)``: ties toward +inf         arithmetic right shift with
                                                                    a rounding bit; TF
                                                                    ``FakeQuantWithMinMaxVars``
``"stochastic"``        ``floor(y + u)``, ``u ~ U[0, 1)``            Ristretto / caffe-jacinto
                                                                    training
======================  ==========================================  ============================

All modes are computed exactly, never through a rounded sum such as the naive
``floor(y + 0.5)``, which gives 1 for ``y = 0.49999997`` in float32. ``y − trunc(y)``
is exact in binary floating point. ``y − floor(y)`` is exact for ``y >= 0``. For
negative ``y`` it can round, but rounding is monotone and 1/2 is representable, so its
comparison with 1/2 never changes. Stochastic rounding is evaluated as
``floor(y) + [u < y − floor(y)]``, which has the distribution of ``floor(y + u)``
(the result is ``floor(y) + 1`` with probability ``y − floor(y)``, so ``E[q] = y``
up to the resolution of ``u``: 2^−23 for TF float32) but never suffers from the rounding of ``y + u``. ±inf stay ±inf
and NaN stays NaN. Subnormal inputs are flushed to zero first, as TensorFlow's CPU kernels do (so the
numpy and TF results agree bit for bit, signs of zeros included).

Random numbers: numpy uses ``np.random.default_rng(seed)``; TensorFlow uses
``tf.random.stateless_uniform`` with seed ``[seed, 0]`` (or the given pair / int tensor
of shape [2]), and a fresh stateful draw when ``seed`` is None. The two streams differ,
so numpy and TF agree bit for bit in the deterministic modes only; in the stochastic
mode they agree in distribution.

Integers: :func:`np_shift_round` and :func:`tf_shift_round` round ``t / 2^s`` for integer
``t`` and ``s >= 1`` in exact integer arithmetic (the requantizing right shift of fixed-point
hardware), in the same modes and with the same tie rules as the float functions.

The TF functions use only ops the TFLite converter lowers to float or integer builtins
(FLOOR, ROUND, SIGN, SELECT, shifts), apart from the random draw of ``"stochastic"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasq.numerics._float import np_flush, tf_flush, to_tf_float
from kerasq.numerics._validate import (
    DEFAULT_ROUNDING,
    ROUNDING_MODES,
    Seed,
    check_rounding,
    check_seed,
    is_tensor,
    numpy_result,
    to_numpy_float,
)


def round_values(y: Any, rounding: str, *, seed: Seed = None) -> Any:
    """Round every element of ``y`` to an integer value (same dtype as ``y``).

    Args:
        y: numpy array, list, scalar or ``tf.Tensor``.
        rounding: one of :data:`ROUNDING_MODES` (see the module docstring).
        seed: for ``"stochastic"``: None (fresh randomness), an int, or a pair of ints
            (TF also accepts an int tensor of shape [2]); same seed, same result.

    Returns:
        numpy in -> numpy out, tensor in -> tensor out.

    Example:
        >>> round_values([0.5, 1.5, -0.5, -2.5], "nearest")
        array([ 1.,  2., -1., -3.])
        >>> round_values([0.5, 1.5, -0.5, -2.5], "half_up")
        array([ 1.,  2.,  0., -2.])
    """
    rounding = check_rounding(rounding)
    seed = check_seed(seed)
    if is_tensor(y) or is_tensor(seed):
        y, out_dtype = to_tf_float(y)
        from kerasq._compat import tf

        return tf.cast(tf_round(tf_flush(y), rounding, seed), out_dtype)
    y, out_dtype = to_numpy_float(y)
    return numpy_result(np_round(np_flush(y), rounding, seed), out_dtype)


def np_round(y: np.ndarray, rounding: str, seed: Seed = None) -> np.ndarray:
    """numpy implementation of :func:`round_values` (arguments already checked)."""
    with np.errstate(invalid="ignore"):
        if rounding == "nearest_even":
            return np.rint(y)
        if rounding == "nearest":
            whole = np.trunc(y)
            return np.where(np.abs(y - whole) >= 0.5, whole + np.sign(y), whole)
        low = np.floor(y)
        frac = y - low
        if rounding == "half_up":
            return np.where(frac >= 0.5, low + 1, low)
        u = np.random.default_rng(seed).random(np.shape(y))
        return np.where(u < frac, low + 1, low).astype(y.dtype, copy=False)


def _tf_seed(seed: Seed) -> Any:
    from kerasq._compat import tf

    if is_tensor(seed):
        return seed
    pair = (seed, 0) if isinstance(seed, int) else seed
    return tf.constant(pair, dtype=tf.int64)


def tf_round(y: Any, rounding: str, seed: Seed = None, *, signed_zeros: bool = True) -> Any:
    """TF implementation of :func:`round_values` for float32/float64 ``y``.

    ``signed_zeros=False`` lets a zero result of ``"nearest"`` be +0 or −0 (for callers
    that canonicalize zeros themselves); otherwise it has the sign of ``y`` like numpy.
    """
    from kerasq._compat import tf

    if rounding == "nearest_even":
        return tf.math.rint(y)
    if rounding == "nearest":
        # floor(|y| + c) with c the largest float below 1/2 is exact round-half-away:
        # a tie |y| = k + 1/2 sums to k + 1 − ulp/2 and rounds up to k + 1, anything
        # below a tie stays below k + 1, and large integers are not pushed up (a
        # different algorithm from np_round, so the bit-identity tests check both).
        below_half = float(np.nextafter(y.dtype.as_numpy_dtype(0.5), 0))
        q = tf.sign(y) * tf.math.floor(tf.abs(y) + below_half)
        return tf.where(q == 0, y * 0, q) if signed_zeros else q  # 0 with y's sign
    low = tf.math.floor(y)
    frac = y - low
    if rounding == "half_up":
        return tf.where(frac >= 0.5, low + 1, low)
    if seed is None:
        u = tf.random.uniform(tf.shape(y), dtype=y.dtype)
    else:
        u = tf.random.stateless_uniform(tf.shape(y), seed=_tf_seed(seed), dtype=y.dtype)
    return tf.where(u < frac, low + 1, low)


def np_shift_round(values: np.ndarray, shift: Any, rounding: str) -> np.ndarray:
    """Exact ``round(values / 2^shift)`` of int64 ``values`` for ``shift >= 1``.

    Deterministic modes only (a stochastic shift needs random bits: :func:`tf_shift_round`).

    Example:
        >>> np_shift_round(np.array([6, 10, -6, -10]), 2, "nearest")  # 1.5, 2.5, -1.5, -2.5
        array([ 2,  3, -2, -3])
        >>> np_shift_round(np.array([6, 10, -6, -10]), 2, "nearest_even")
        array([ 2,  2, -2, -2])
    """
    s = np.asarray(shift, np.int64)
    half = np.int64(1) << (s - 1)
    if rounding == "half_up":
        return (values + half) >> s
    if rounding == "nearest":
        return np.sign(values) * ((np.abs(values) + half) >> s)
    if rounding == "nearest_even":
        q = values >> s
        rem = values - (q << s)
        return q + ((rem > half) | ((rem == half) & (q % 2 == 1)))
    raise ValueError(f"rounding {rounding!r} has no deterministic integer shift")


def tf_shift_round(t: Any, shift: Any, rounding: str, random_bits: Any = None) -> Any:
    """TF form of :func:`np_shift_round` for an integer tensor ``t`` (``shift >= 1``,
    broadcast to ``t``'s shape, same dtype).

    ``"stochastic"`` needs ``random_bits``: uniform non-negative integers of ``t``'s shape,
    whose low ``shift`` bits are added before the floor shift, so the result is
    ``floor(t / 2^s) + 1`` with probability ``frac(t / 2^s)``.

    Example:
        >>> from kerasq._compat import tf
        >>> tf_shift_round(tf.constant([6, 10, -6, -10]), 2, "nearest").numpy().tolist()
        [2, 3, -2, -3]
    """
    from kerasq._compat import tf

    sp = tf.cast(shift, t.dtype) + tf.zeros_like(t)
    one = tf.ones_like(t)
    half = tf.bitwise.left_shift(one, sp - 1)
    if rounding == "nearest":
        return tf.where(t >= 0, tf.bitwise.right_shift(t + half, sp),
                        -tf.bitwise.right_shift(-t + half, sp))
    if rounding == "half_up":
        return tf.bitwise.right_shift(t + half, sp)
    if rounding == "nearest_even":
        q = tf.bitwise.right_shift(t, sp)
        rem = t - tf.bitwise.left_shift(q, sp)
        odd = tf.equal(tf.bitwise.bitwise_and(q, 1), 1)
        return q + tf.cast((rem > half) | ((rem == half) & odd), t.dtype)
    if random_bits is None:
        raise ValueError("stochastic shift rounding needs random_bits")
    mask = tf.bitwise.left_shift(one, sp) - 1
    return tf.bitwise.right_shift(t + tf.bitwise.bitwise_and(random_bits, mask), sp)


__all__ = [
    "ROUNDING_MODES",
    "DEFAULT_ROUNDING",
    "round_values",
    "np_round",
    "tf_round",
    "np_shift_round",
    "tf_shift_round",
]
