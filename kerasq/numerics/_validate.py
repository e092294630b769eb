"""Argument checks and numpy/TF dispatch shared by the numerics modules.

Every check raises :class:`kerasq.errors.QuantizationConfigError` naming the
argument and the offending value, e.g. ``bitwidth must be an integer in 2..32, got 1``.

TensorFlow is never imported here: a value can only be a TF tensor if TF is
already loaded, so numpy-only users of :mod:`kerasq.numerics` never pay for it.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np

from kerasq.errors import QuantizationConfigError

#: The rounding modes (defined in :mod:`kerasq.numerics.rounding`; listed here, the lowest
#: module, so the argument checks can use them).
ROUNDING_MODES: tuple[str, ...] = ("nearest", "nearest_even", "half_up", "stochastic")
#: The default rounding of every kerasq config, quantizer, op and numerics function: ties
#: to even, how TFLite's default (XNNPACK / optimized) kernels round, so the int8 export
#: computes what the Keras model computes.
DEFAULT_ROUNDING = "nearest_even"

#: A seed: None, a non-negative int, a pair of them, or (TF only) an int tensor of shape [2].
Seed = Any

_MAX_SEED = 2**63


def is_tensor(value: Any) -> bool:
    """True for a ``tf.Tensor`` or ``tf.Variable`` (without importing TensorFlow)."""
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf  # already loaded, so this is a dict lookup

    return bool(tf.is_tensor(value) or isinstance(value, tf.Variable))


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise if it is not an integer in ``lo..hi``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        ok = False
    else:
        value = int(value)
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        if lo is not None and hi is not None:
            want = f"an integer in {lo}..{hi}"
        elif lo is not None:
            want = f"an integer >= {lo}"
        elif hi is not None:
            want = f"an integer <= {hi}"
        else:
            want = "an integer"
        raise QuantizationConfigError(f"{name} must be {want}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool, or raise if it is not a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise QuantizationConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_rounding(rounding: Any) -> str:
    """Return ``rounding`` if it is one of :data:`ROUNDING_MODES`, else raise."""
    if not isinstance(rounding, str) or rounding not in ROUNDING_MODES:
        modes = ", ".join(ROUNDING_MODES)
        raise QuantizationConfigError(f"rounding must be one of {modes}, got {rounding!r}")
    return rounding


def check_seed(seed: Seed) -> Seed:
    """Accept None, an int in [0, 2**63), a pair of such ints, or an integer TF tensor."""
    if seed is None or is_tensor(seed):
        if seed is not None and not seed.dtype.is_integer:
            raise QuantizationConfigError(
                f"seed tensor must be integer, got dtype {seed.dtype.name}"
            )
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        if 0 <= int(seed) < _MAX_SEED:
            return int(seed)
    elif isinstance(seed, (tuple, list, np.ndarray)) and np.ndim(seed) == 1 and len(seed) == 2:
        try:
            pair = tuple(check_int("seed", s, 0, _MAX_SEED - 1) for s in seed)
        except QuantizationConfigError:
            pass
        else:
            return pair
    raise QuantizationConfigError(
        f"seed must be None, an integer in 0..2**63-1 or a pair of them, got {seed!r}"
    )


def to_numpy_float(x: Any) -> tuple[np.ndarray, np.dtype]:
    """``(array to compute on, dtype of the result)`` for the numpy path.

    float32/float64 are computed as they are; other floats (float16) in float32 and
    cast back; integers and bools become float64.
    """
    arr = np.asarray(x)
    if arr.dtype in (np.float32, np.float64):
        return arr, arr.dtype
    if arr.dtype.kind == "f":
        return arr.astype(np.float32), arr.dtype
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64), np.dtype(np.float64)
    raise QuantizationConfigError(f"x must be numeric, got an array of dtype {arr.dtype}")


def integer_array(name: str, value: Any) -> np.ndarray:
    """``value`` (int, integral float, or array of them) as an int64 numpy array."""
    arr = np.asarray(value)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    shown = value if arr.ndim == 0 or arr.size <= 8 else f"array of shape {arr.shape}"
    raise QuantizationConfigError(f"{name} must be an integer (or integer array), got {shown!r}")


def numpy_result(result: np.ndarray, dtype: np.dtype) -> Any:
    """``result`` cast to ``dtype``; a numpy scalar for a 0-d result, else the array."""
    result = result.astype(dtype, copy=False)
    return result[()] if result.ndim == 0 else result
