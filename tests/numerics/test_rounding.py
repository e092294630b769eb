"""round_values against an exact rational-arithmetic reference (fractions.Fraction)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.errors import QuantizationConfigError
from kerasq.numerics import ROUNDING_MODES, round_values

DETERMINISTIC = ("nearest", "nearest_even", "half_up")


def ref_round(value: float, mode: str) -> float:
    """The rounding modes written from their definitions with exact rationals."""
    if math.isnan(value) or math.isinf(value):
        return value
    exact = Fraction(value)
    low = math.floor(exact)
    frac = exact - low
    half = Fraction(1, 2)
    if mode == "half_up":
        q = low + (frac >= half)
    elif frac != half:
        q = low + (frac > half)
    elif mode == "nearest":
        q = low + 1 if exact > 0 else low
    else:  # nearest_even
        q = low if low % 2 == 0 else low + 1
    return float(q)


def assert_bit_identical(a: np.ndarray, b: np.ndarray) -> None:
    """Equal values, NaNs in the same places, and the same sign of every zero."""
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.signbit(a), np.signbit(b))


def ref_round_array(values: np.ndarray, mode: str) -> np.ndarray:
    return np.array([ref_round(float(v), mode) for v in values.ravel()], values.dtype).reshape(
        values.shape
    )


def tricky_values(dtype) -> np.ndarray:
    """Ties in every position, neighbours of ties, huge and special values."""
    dtype = np.dtype(dtype)
    ties = np.arange(-6, 6) + 0.5
    near = np.concatenate(
        [
            np.nextafter(ties.astype(dtype), dtype.type(np.inf)),
            np.nextafter(ties.astype(dtype), dtype.type(-np.inf)),
        ]
    )
    big = 2.0 ** (np.finfo(dtype).nmant - np.arange(-2, 3))  # where the float ulp reaches 1
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, np.finfo(dtype).max]
    return np.concatenate([ties, near, big, -big, big + 0.5, specials]).astype(dtype)


def random_values(dtype, n=2000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 2.0 ** rng.integers(-4, 12, n)
    return (rng.standard_normal(n) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_deterministic_modes_match_reference(dtype, mode):
    x = np.concatenate([tricky_values(dtype), random_values(dtype)])
    want = ref_round_array(x, mode)
    got_np = round_values(x, mode)
    got_tf = round_values(tf.constant(x), mode).numpy()
    assert got_np.dtype == got_tf.dtype == dtype
    np.testing.assert_array_equal(got_np, want)
    np.testing.assert_array_equal(got_tf, want)
    assert_bit_identical(got_np, got_tf)


def test_ties_table():
    y = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
    assert list(round_values(y, "nearest")) == [-3, -2, -1, 1, 2, 3]
    assert list(round_values(y, "nearest_even")) == [-2, -2, -0, 0, 2, 2]
    assert list(round_values(y, "half_up")) == [-2, -1, 0, 1, 2, 3]


def test_half_up_is_exact_below_one_half():
    # The naive floor(y + 0.5) rounds 0.49999997 + 0.5 to 1.0 in float32.
    y = np.nextafter(np.float32(0.5), np.float32(0))
    assert round_values(np.array([y]), "half_up")[0] == 0
    assert round_values(tf.constant([y]), "half_up").numpy()[0] == 0
    assert round_values(np.array([y]), "nearest")[0] == 0


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_integers_are_fixed_points(mode):
    y = np.array([-(2.0**40), -3.0, -1.0, 0.0, 2.0, 7.0, 2.0**52], np.float64)
    np.testing.assert_array_equal(round_values(y, mode, seed=3), y)
    np.testing.assert_array_equal(round_values(tf.constant(y), mode, seed=3).numpy(), y)


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_stochastic_is_unbiased_and_only_floor_or_ceil(backend):
    base = np.array([0.1, 0.5, 0.9, -0.3, 2.25, -7.75], np.float32)
    n = 20000
    y = np.repeat(base[None, :], n, axis=0)
    arg = tf.constant(y) if backend == "tf" else y
    q = np.asarray(round_values(arg, "stochastic", seed=11))
    assert np.all((q == np.floor(y)) | (q == np.ceil(y)))
    # E[q] = y; the std of a Bernoulli(p) mean is sqrt(p(1-p)/n) <= 0.5/sqrt(n)
    np.testing.assert_allclose(q.mean(axis=0), base, atol=5 * 0.5 / math.sqrt(n))


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_stochastic_seed_reproducible(backend):
    y = random_values(np.float32, 4000, seed=5) / 8
    arg = (lambda v: tf.constant(v)) if backend == "tf" else (lambda v: v)
    a = np.asarray(round_values(arg(y), "stochastic", seed=7))
    b = np.asarray(round_values(arg(y), "stochastic", seed=7))
    c = np.asarray(round_values(arg(y), "stochastic", seed=8))
    d = np.asarray(round_values(arg(y), "stochastic", seed=(7, 1)))
    fresh1 = np.asarray(round_values(arg(y), "stochastic"))
    fresh2 = np.asarray(round_values(arg(y), "stochastic"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert not np.array_equal(fresh1, fresh2)


def test_stochastic_in_tf_function_with_seed_tensor():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([2], tf.int64)])
    def f(y, seed):
        return round_values(y, "stochastic", seed=seed)

    y = tf.constant(random_values(np.float32, 1000, seed=2) / 4)
    a, b = f(y, tf.constant([1, 2], tf.int64)), f(y, tf.constant([1, 2], tf.int64))
    c = f(y, tf.constant([1, 3], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_inside_tf_function_dynamic_shape(mode):
    f = tf.function(
        lambda y: round_values(y, mode), input_signature=[tf.TensorSpec([None, None], tf.float64)]
    )
    x = random_values(np.float64, 600, seed=9).reshape(20, 30)
    np.testing.assert_array_equal(f(tf.constant(x)).numpy(), ref_round_array(x, mode))


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_empty(mode):
    assert round_values(np.zeros((0, 3), np.float32), mode).shape == (0, 3)
    assert round_values(tf.zeros((0, 3)), mode, seed=1).shape == (0, 3)


def test_kinds_and_dtypes():
    assert isinstance(round_values(2.5, "nearest"), np.floating)
    assert round_values(2.5, "nearest") == 3.0
    assert round_values(np.array([1.5], np.float16), "nearest_even").dtype == np.float16
    assert round_values([1, 2], "nearest").dtype == np.float64
    assert round_values(tf.constant([1.5], tf.bfloat16), "nearest").dtype == tf.bfloat16


@pytest.mark.parametrize("bad", ["round", "NEAREST", None, 1])
def test_unknown_rounding_rejected(bad):
    with pytest.raises(QuantizationConfigError, match="rounding must be one of .*got"):
        round_values([1.0], bad)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "7", (1, 2, 3), True])
def test_bad_seed_rejected(bad):
    with pytest.raises(QuantizationConfigError, match="seed"):
        round_values([1.0], "stochastic", seed=bad)


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("shift", [1, 2, 5, 17])
def test_integer_shift_rounding_matches_exact_rationals(mode, shift):
    """np_shift_round and tf_shift_round (int32 and int64) against round(t / 2^s) written
    with fractions, ties and their neighbours included."""
    from kerasq.numerics.rounding import np_shift_round, tf_shift_round

    step = 2**shift
    ties = np.arange(-4, 5) * step + step // 2
    t = np.concatenate([ties, ties - 1, ties + 1, np.arange(-3 * step, 3 * step + 1),
                        np.random.default_rng(shift).integers(-(2**40), 2**40, 500)])
    want = np.array([ref_round(Fraction(int(v), step), mode) for v in t], np.int64)
    np.testing.assert_array_equal(np_shift_round(t.astype(np.int64), shift, mode), want)
    got = tf_shift_round(tf.constant(t, tf.int64), shift, mode).numpy()
    np.testing.assert_array_equal(got, want)
    small = np.abs(t) < 2**30
    got32 = tf_shift_round(tf.constant(t[small], tf.int32), shift, mode).numpy()
    np.testing.assert_array_equal(got32, want[small])


def test_stochastic_shift_rounding_rounds_up_with_the_fraction():
    """floor(t / 2^s) + 1 with probability frac(t / 2^s), from uniform random bits."""
    from kerasq.numerics.rounding import tf_shift_round

    t = tf.constant([5] * 20000 + [-5] * 20000, tf.int64)  # ±5/8: frac 5/8 and 3/8
    bits = tf.random.stateless_uniform(t.shape, [1, 2], 0, 2**62, dtype=tf.int64)
    q = tf_shift_round(t, 3, "stochastic", bits).numpy()
    assert set(q[:20000]) == {0, 1} and set(q[20000:]) == {-1, 0}
    assert abs(q[:20000].mean() - 5 / 8) < 0.015 and abs(q[20000:].mean() + 5 / 8) < 0.015
