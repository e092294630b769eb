"""Minifloat with subnormals against ml_dtypes' low-precision floats (an independent
implementation, used by JAX and TensorFlow) and numpy's float16.

Casting float32 to these dtypes rounds to nearest, ties to even, with IEEE-style
subnormals: exactly ``minifloat_quantize(x, E, M, subnormals=True,
rounding="nearest_even")`` wherever the two formats have the same values. Ristretto's
format keeps the all-ones exponent as a normal binade, while the IEEE-like types (and
``e4m3fn``'s NaN code) give that binade up. So the comparison stops half a step above
the reference type's largest value.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.numerics import minifloat_quantize

ml_dtypes = pytest.importorskip("ml_dtypes")

# name -> (exp_bits, mant_bits); all have bias 2^(E-1) - 1 like Ristretto's minifloat
TYPES = {
    "float4_e2m1fn": (2, 1),
    "float6_e2m3fn": (2, 3),
    "float6_e3m2fn": (3, 2),
    "float8_e3m4": (3, 4),
    "float8_e4m3": (4, 3),
    "float8_e4m3fn": (4, 3),
    "float8_e5m2": (5, 2),
    "float16": (5, 10),
    "bfloat16": (8, 7),
}


def reference_dtype(name):
    return np.float16 if name == "float16" else getattr(ml_dtypes, name)


def inputs(name, exp_bits, mant_bits, n=4000, seed=0):
    """Random values over the whole range, every code, and every midpoint between codes."""
    dtype = reference_dtype(name)
    info = ml_dtypes.finfo(dtype)
    top, step_top = float(info.max), float(info.max) * 2.0**-mant_bits / (2 - 2.0**-mant_bits)
    limit = top + step_top / 2  # beyond this the reference type overflows or saturates
    rng = np.random.default_rng(seed)
    smallest = max(float(info.smallest_subnormal), float(np.finfo(np.float32).tiny))
    logs = rng.uniform(np.log2(smallest) - 2, np.log2(limit), n)
    random = np.exp2(logs) * rng.choice([-1, 1], n)
    if np.dtype(dtype).itemsize == 1:
        codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
        codes = np.unique(codes[np.isfinite(codes)])
        mids = (codes[:-1].astype(np.float64) + codes[1:]) / 2
        structured = np.concatenate([codes, mids])
    else:  # 16-bit: all positive finite codes
        codes = np.arange(2**15, dtype=np.uint16).view(dtype).astype(np.float32)
        codes = np.unique(codes[np.isfinite(codes)])
        mids = (codes[:-1].astype(np.float64) + codes[1:]) / 2
        structured = np.concatenate([codes, -codes, mids, -mids])
    x = np.concatenate([random, structured]).astype(np.float32)
    x = x[np.abs(x) < limit]
    # float32 subnormals are zero for kerasq (TF flushes them); compare normals only
    return x[(x == 0) | (np.abs(x) >= np.finfo(np.float32).tiny)]


@pytest.mark.parametrize("name", sorted(TYPES))
def test_minifloat_with_subnormals_is_the_ml_dtypes_cast(name):
    if name != "float16" and not hasattr(ml_dtypes, name):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {name}")
    exp_bits, mant_bits = TYPES[name]
    x = inputs(name, exp_bits, mant_bits)
    want = x.astype(reference_dtype(name)).astype(np.float32)
    kwargs = {"subnormals": True, "rounding": "nearest_even"}
    got = minifloat_quantize(x, exp_bits, mant_bits, **kwargs)
    np.testing.assert_array_equal(got, want)
    got_tf = minifloat_quantize(tf.constant(x), exp_bits, mant_bits, **kwargs).numpy()
    np.testing.assert_array_equal(got_tf, want)
