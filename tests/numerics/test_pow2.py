"""Power-of-two quantization against a reference that rounds log2|x| exactly.

Reference: k0 = floor(log2|x|) from math.frexp; round(log2|x|) = k0 + 1 exactly when
log2|x| >= k0 + 1/2, i.e. when |x|^2 >= 2^(2·k0 + 1), decided with exact rationals.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.errors import QuantizationConfigError
from kerasq.numerics import pow2_quantize


def ref_pow2(x: float, exp_min: int, exp_max: int, dtype) -> float:
    if math.isnan(x):
        return x
    if abs(x) < np.finfo(dtype).tiny:
        return math.copysign(0.0, x)  # exact zeros (and subnormals) stay zero
    if math.isinf(x):
        k = exp_max
    else:
        _, e = math.frexp(abs(x))
        k0 = e - 1
        k = k0 + (Fraction(abs(x)) ** 2 >= Fraction(2) ** (2 * k0 + 1))
        k = min(max(k, exp_min), exp_max)
    return math.copysign(2.0**k, x)


def ref_array(x, exp_min, exp_max):
    return np.array([ref_pow2(float(v), exp_min, exp_max, x.dtype) for v in x.ravel()], x.dtype)


def sample(dtype, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.exp2(rng.uniform(-14, 6, n)) * rng.choice([-1, 1], n)
    ks = np.arange(-12, 5, dtype=np.float64)
    sqrt2 = np.sqrt(np.float64(2)).astype(dtype)
    around = np.concatenate(
        [
            np.exp2(ks),
            np.nextafter(np.exp2(ks).astype(dtype), 0).astype(np.float64),
            np.exp2(ks) * np.float64(sqrt2),
            np.exp2(ks) * np.nextafter(sqrt2, dtype(0)),
            np.exp2(ks) * np.nextafter(sqrt2, dtype(2)),
        ]
    )
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e30, -1e-30]
    return np.concatenate([x, around, -around, specials]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exp_min,exp_max", [(-8, -1), (-3, 3), (0, 0), (-12, 4)])
def test_matches_reference_all_deterministic_modes(dtype, exp_min, exp_max):
    x = sample(dtype, seed=exp_max - exp_min)
    want = ref_array(x, exp_min, exp_max)
    for mode in ("nearest", "nearest_even", "half_up"):
        got_np = pow2_quantize(x, exp_min, exp_max, rounding=mode)
        got_tf = pow2_quantize(tf.constant(x), exp_min, exp_max, rounding=mode).numpy()
        assert got_np.dtype == got_tf.dtype == dtype
        np.testing.assert_array_equal(got_np, want, err_msg=mode)
        np.testing.assert_array_equal(np.signbit(got_np), np.signbit(want), err_msg=mode)
        np.testing.assert_array_equal(got_tf, got_np, err_msg=mode)
        np.testing.assert_array_equal(np.signbit(got_tf), np.signbit(got_np), err_msg=mode)
        twice = pow2_quantize(got_np, exp_min, exp_max, rounding=mode)
        np.testing.assert_array_equal(twice, got_np)


def test_zero_stays_zero_unlike_ristretto():
    x = np.array([0.0, -0.0, 0.3, 1e-9, -1e-9], np.float32)
    got = pow2_quantize(x)
    np.testing.assert_array_equal(got, [0, 0, 0.25, 2.0**-8, -(2.0**-8)])
    assert np.signbit(got[1]) and not np.signbit(got[0])


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_stochastic_rounds_the_exponent_without_bias(backend):
    n = 20000
    base = np.array([0.3, -0.1, 0.75, 0.02], np.float32)
    x = np.repeat(base[None], n, 0)
    wrap = tf.constant if backend == "tf" else np.asarray
    q = np.asarray(pow2_quantize(wrap(x), -8, 0, rounding="stochastic", seed=4))
    k = np.log2(np.abs(q))
    assert np.all(np.sign(q) == np.sign(x))
    np.testing.assert_array_equal(k, np.round(k))
    assert np.all((k == np.floor(np.log2(np.abs(x)))) | (k == np.ceil(np.log2(np.abs(x)))))
    # E[k] = log2|x| (rounding in the log domain)
    np.testing.assert_allclose(k.mean(0), np.log2(np.abs(base)), atol=5 * 0.5 / math.sqrt(n))
    again = np.asarray(pow2_quantize(wrap(x), -8, 0, rounding="stochastic", seed=4))
    other = np.asarray(pow2_quantize(wrap(x), -8, 0, rounding="stochastic", seed=5))
    np.testing.assert_array_equal(q, again)
    assert not np.array_equal(q, other)


def test_gradient_is_identity_also_in_tf_function():
    x = tf.constant([-10.0, -0.3, 0.0, 0.001, 7.0])

    @tf.function
    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = 3.0 * pow2_quantize(v, -4, 1)
        return y, tape.gradient(y, v)

    y, g = grad(x)
    np.testing.assert_array_equal(y.numpy(), 3 * np.array([-2, -0.25, 0, 2**-4, 2]))
    np.testing.assert_array_equal(g.numpy(), [3, 3, 3, 3, 3])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"exp_min": 0, "exp_max": -1}, "exp_min must be <= exp_max, got exp_min=0, exp_max=-1"),
        ({"exp_min": 1.5}, "exp_min must be an integer"),
        ({"exp_max": "3"}, "exp_max must be an integer"),
        ({"rounding": "floor"}, "rounding must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(QuantizationConfigError, match=match):
        pow2_quantize([0.3], **kwargs)


def test_empty_and_kinds():
    assert pow2_quantize(np.zeros((0,), np.float32)).shape == (0,)
    assert pow2_quantize(tf.zeros((2, 0)), rounding="stochastic").shape == (2, 0)
    assert pow2_quantize(0.3) == 0.25
    assert pow2_quantize(tf.constant([0.3], tf.bfloat16)).dtype == tf.bfloat16
