"""Minifloat against the value set enumerated from the format's definition.

The reference never rounds a mantissa: it lists every representable value of the format
(code by code, exact rationals), then picks the neighbour below or above the input
with a binary search, following the rounding mode's rule for ties.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.errors import QuantizationConfigError
from kerasq.numerics import minifloat_max, minifloat_quantize

FORMATS = [(1, 0), (1, 2), (2, 1), (3, 0), (3, 2), (4, 3), (5, 2), (5, 10)]
DETERMINISTIC = ("nearest", "nearest_even", "half_up")


@cache
def format_codes(exp_bits: int, mant_bits: int, subnormals: bool) -> dict:
    """Every non-negative value of the format (a Fraction) -> its mantissa code m."""
    bias = 2 ** (exp_bits - 1) - 1
    codes = {Fraction(0): 0}
    for e in range(2**exp_bits):
        for m in range(2**mant_bits):
            if subnormals and e == 0:
                codes[Fraction(m, 2**mant_bits) * Fraction(2) ** (1 - bias)] = m
            else:
                codes[(1 + Fraction(m, 2**mant_bits)) * Fraction(2) ** (e - bias)] = m
    return codes


@cache
def format_values(exp_bits: int, mant_bits: int, subnormals: bool) -> tuple:
    """All non-negative values of the format, sorted, as Fractions."""
    return tuple(sorted(format_codes(exp_bits, mant_bits, subnormals)))


def grid_step(value: Fraction, exp_bits: int, mant_bits: int, subnormals: bool) -> Fraction:
    """Spacing of the format just above ``value`` (the unit of the last mantissa bit)."""
    bias = 2 ** (exp_bits - 1) - 1
    smallest_normal = Fraction(2) ** (1 - bias if subnormals else -bias)
    if value < smallest_normal:
        return smallest_normal / 2**mant_bits
    k = 0
    while Fraction(2) ** (k + 1) <= value:
        k += 1
    while Fraction(2) ** k > value:
        k -= 1
    return Fraction(2) ** (k - mant_bits)


def ref_minifloat(x: float, exp_bits, mant_bits, subnormals, mode, dtype=np.float32) -> float:
    if math.isnan(x):
        return x
    if abs(x) < np.finfo(dtype).tiny:
        return math.copysign(0.0, x)
    values = format_values(exp_bits, mant_bits, subnormals)
    bias = 2 ** (exp_bits - 1) - 1
    mag = Fraction(x) if math.isfinite(x) else values[-1] + 1
    mag = abs(mag)
    if mag >= values[-1]:
        return math.copysign(float(values[-1]), x)
    if not subnormals and mag < Fraction(2) ** -bias:
        return math.copysign(0.0, x)  # Ristretto: flush by exponent, before rounding
    i = bisect.bisect_left(values, mag)
    if values[i] == mag:
        return math.copysign(float(mag), x)
    lo, hi = values[i - 1], values[i]
    mid = (lo + hi) / 2
    if mag != mid:
        pick = lo if mag < mid else hi
    elif mode == "nearest":
        pick = hi
    elif mode == "half_up":
        pick = hi if x > 0 else lo
    else:
        step = grid_step(lo, exp_bits, mant_bits, subnormals)
        pick = lo if (lo / step) % 2 == 0 else hi
    return math.copysign(float(pick), x)


def ref_array(x, *args):
    return np.array([ref_minifloat(float(v), *args, x.dtype) for v in x.ravel()], x.dtype)


def both(x, *args, **kwargs):
    """Numpy and TF results, checked bit-identical (zeros' signs included)."""
    got_np = minifloat_quantize(x, *args, **kwargs)
    got_tf = minifloat_quantize(tf.constant(x), *args, **kwargs).numpy()
    np.testing.assert_array_equal(got_tf, got_np)
    np.testing.assert_array_equal(np.signbit(got_tf), np.signbit(got_np))
    return got_np


@pytest.mark.parametrize("subnormals", [False, True])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"E{f[0]}M{f[1]}")
def test_every_code_maps_to_itself(fmt, subnormals):
    values = np.array([float(v) for v in format_values(*fmt, subnormals)], np.float32)
    x = np.concatenate([values, -values])
    for mode in DETERMINISTIC:
        np.testing.assert_array_equal(both(x, *fmt, rounding=mode, subnormals=subnormals), x)
    np.testing.assert_array_equal(
        minifloat_quantize(x, *fmt, rounding="stochastic", subnormals=subnormals), x
    )
    assert minifloat_max(*fmt) == values.max()


@pytest.mark.parametrize("subnormals", [False, True])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"E{f[0]}M{f[1]}")
def test_ties_and_quarter_points_between_all_neighbours(fmt, subnormals):
    # Every pair of neighbours (lo, hi): the tie (lo+hi)/2 goes to hi ("nearest", ties
    # away), to the even mantissa code ("nearest_even"), toward +inf ("half_up"); the
    # quarter points go to the closer neighbour. Both signs. With M = 0 every code has
    # m = 0; there the rule is that of the scaled significand (lo -> 1, hi -> 2): up,
    # except from 0.
    codes = format_codes(*fmt, subnormals)
    values = format_values(*fmt, subnormals)
    if not subnormals:
        values = values[1:]  # below the smallest normal everything flushes
    lo = np.array([float(v) for v in values[:-1]])
    hi = np.array([float(v) for v in values[1:]])
    if fmt[1] == 0:
        lo_even = np.array([v == 0 for v in values[:-1]])
    else:
        lo_even = np.array([codes[v] % 2 == 0 for v in values[:-1]])
    x = np.concatenate([(lo + hi) / 2, (3 * lo + hi) / 4, (lo + 3 * hi) / 4]).astype(np.float32)
    x = np.concatenate([x, -x])
    quarters = np.concatenate([lo, hi])
    expected = {
        "nearest": np.concatenate([hi, quarters, -hi, -quarters]),
        "nearest_even": np.concatenate(
            [np.where(lo_even, lo, hi), quarters, -np.where(lo_even, lo, hi), -quarters]
        ),
        "half_up": np.concatenate([hi, quarters, -lo, -quarters]),
    }
    for mode in DETERMINISTIC:
        got = both(x, *fmt, rounding=mode, subnormals=subnormals)
        np.testing.assert_array_equal(got, expected[mode], err_msg=mode)


def random_inputs(fmt, dtype, n=1500, seed=0):
    rng = np.random.default_rng(seed)
    bias = 2 ** (fmt[0] - 1) - 1
    top = math.log2(minifloat_max(*fmt))
    logs = rng.uniform(-bias - fmt[1] - 3, top + 2, n)
    x = np.exp2(logs) * rng.choice([-1, 1], n)
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 3e38, -3e38]
    return np.concatenate([x, specials]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("subnormals", [False, True])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"E{f[0]}M{f[1]}")
def test_random_inputs_round_to_nearest_value(fmt, subnormals, dtype):
    x = random_inputs(fmt, dtype, seed=fmt[0] * 10 + fmt[1])
    for mode in DETERMINISTIC:
        want = ref_array(x, *fmt, subnormals, mode)
        got = both(x, *fmt, rounding=mode, subnormals=subnormals)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want, err_msg=mode)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=mode)
        np.testing.assert_array_equal(both(got, *fmt, rounding=mode, subnormals=subnormals), got)


def test_carry_out_of_the_top_binade_saturates():
    # E4M3: bias 7, top binade [256, 512) with step 32; largest value 480. Ristretto's
    # trim rounds 500 -> mantissa carry -> 512; kerasq keeps the largest value.
    assert minifloat_max(4, 3) == 480.0
    # (479 is one step inside: deterministic modes give 480, stochastic 448 or 480)
    x = np.array([479.0, 480.0, 495.0, 496.0, 500.0, 511.0, 1e9, np.inf], np.float32)
    for mode in ("nearest", "nearest_even", "half_up", "stochastic"):
        if mode == "stochastic":
            x = x[1:]
        got = minifloat_quantize(x, 4, 3, rounding=mode, seed=1)
        np.testing.assert_array_equal(got, 480.0)
        np.testing.assert_array_equal(minifloat_quantize(-x, 4, 3, rounding=mode, seed=1), -480.0)
        np.testing.assert_array_equal(
            minifloat_quantize(tf.constant(x), 4, 3, rounding=mode, seed=1).numpy(), 480.0
        )


def test_flush_to_zero_versus_subnormals():
    # E3M2: bias 3. Flush mode: smallest value 2^-3, anything in a lower binade -> 0
    # (even 0.1249, which is closer to 0.125 than to 0). Subnormals: code 0 gives
    # multiples of 2^(1-3-2) = 1/16 below the smallest normal 2^-2.
    x = np.array([0.1249, 0.125, 0.2, 0.03, 0.0313, 0.09, 0.19], np.float32)
    np.testing.assert_array_equal(both(x, 3, 2), [0, 0.125, 0.1875, 0, 0, 0, 0.1875])
    np.testing.assert_array_equal(
        both(x, 3, 2, subnormals=True), [0.125, 0.125, 0.1875, 0, 0.0625, 0.0625, 0.1875]
    )
    # E2M1 with subnormals is the OCP FP4 value set
    fp4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert [float(v) for v in format_values(2, 1, True)] == fp4
    np.testing.assert_array_equal(both(np.array(fp4, np.float32), 2, 1, subnormals=True), fp4)


def test_special_values():
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45], np.float32)
    got = both(x, 5, 2)
    np.testing.assert_array_equal(got, [0, 0, np.nan, 114688, -114688, 0, 0])
    np.testing.assert_array_equal(np.signbit(got[[0, 1, 5, 6]]), [False, True, False, True])


def test_e8m23_is_float32_without_subnormals():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(5000) * np.exp2(rng.integers(-120, 120, 5000))).astype(np.float32)
    np.testing.assert_array_equal(both(x, 8, 23), x)
    fmax = np.finfo(np.float32).max
    infs = np.array([np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(both(infs, 8, 23), [fmax, -fmax])


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_stochastic_unbiased_between_neighbours(backend):
    n = 20000
    base = np.array([0.3, -0.3, 5.1, -77.0, 0.01], np.float32)  # E4M3 neighbours differ
    x = np.repeat(base[None], n, 0)
    wrap = tf.constant if backend == "tf" else np.asarray
    q = np.asarray(
        minifloat_quantize(wrap(x), 4, 3, rounding="stochastic", seed=3, subnormals=True)
    )
    for j, v in enumerate(base):
        values = format_values(4, 3, True)
        i = bisect.bisect_left(values, Fraction(abs(float(v))))
        lo, hi = float(values[i - 1]), float(values[i])
        assert set(np.abs(q[:, j])) <= {lo, hi}
        tolerance = 5 * (hi - lo) * 0.5 / math.sqrt(n)
        assert abs(q[:, j].mean() - v) < tolerance
    again = np.asarray(
        minifloat_quantize(wrap(x), 4, 3, rounding="stochastic", seed=3, subnormals=True)
    )
    np.testing.assert_array_equal(q, again)


def test_gradient_is_one_inside_the_range():
    x = tf.constant([-1000.0, -480.0, -3.0, 0.0, 0.001, 479.9, 480.0, 481.0, np.inf])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = minifloat_quantize(x, 4, 3)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 1, 1, 1, 0, 0])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            out = minifloat_quantize(v, 4, 3, rounding="stochastic")
        return tape.gradient(out, v)

    np.testing.assert_array_equal(grad(x).numpy(), [0, 1, 1, 1, 1, 1, 1, 0, 0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"exp_bits": 0}, "exp_bits must be an integer in 1..10, got 0"),
        ({"exp_bits": 11}, "exp_bits"),
        ({"mant_bits": -1}, "mant_bits must be an integer in 0..52, got -1"),
        ({"mant_bits": 2.0}, "mant_bits"),
        ({"subnormals": "yes"}, "subnormals must be True or False"),
        ({"rounding": "ceil"}, "rounding must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"x": [1.0], "exp_bits": 4, "mant_bits": 3}
    args.update(kwargs)
    with pytest.raises(QuantizationConfigError, match=match):
        minifloat_quantize(**args)
    if "exp_bits" in kwargs or "mant_bits" in kwargs:
        with pytest.raises(QuantizationConfigError, match=match):
            minifloat_max(args["exp_bits"], args["mant_bits"])


def test_empty_and_kinds():
    assert minifloat_quantize(np.zeros((3, 0)), 4, 3).shape == (3, 0)
    assert minifloat_quantize(tf.zeros((3, 0)), 4, 3, rounding="stochastic").shape == (3, 0)
    assert minifloat_quantize(90.0, 4, 3) == 88.0
    assert minifloat_quantize(tf.constant([90.0], tf.float16), 4, 3).dtype == tf.float16
    assert minifloat_max(1, 0) == 2.0 and minifloat_max(5, 10) == 131008.0


@pytest.mark.parametrize(
    "fmt,dtype",
    [
        ((8, 7), np.float32),
        ((6, 9), np.float32),
        ((7, 16), np.float32),
        ((10, 30), np.float64),
        ((9, 45), np.float64),
    ],
    ids=["E8M7", "E6M9", "E7M16", "E10M30", "E9M45"],
)
def test_ties_of_wide_formats(fmt, dtype):
    """Random codes (e, m) of formats too large to enumerate; the tie v + step/2 goes to
    m + 1 ("nearest", and "half_up" when positive), to the even m ("nearest_even")."""
    exp_bits, mant_bits = fmt
    bias = 2 ** (exp_bits - 1) - 1
    rng = np.random.default_rng(exp_bits * 100 + mant_bits)
    lowest = max(1, np.finfo(dtype).minexp + bias + 1)  # stay inside the dtype's normals
    e = rng.integers(lowest, 2**exp_bits - 1, 400)
    m = rng.integers(0, 2**mant_bits - 1, 400)  # m + 1 stays inside the binade
    value = [math.ldexp(2**mant_bits + int(mi), int(ei) - bias - mant_bits) for ei, mi in zip(e, m)]
    step = [math.ldexp(1.0, int(ei) - bias - mant_bits) for ei in e]
    lo, hi = np.array(value), np.array(value) + np.array(step)
    x = (lo + hi) / 2
    assert np.all(x.astype(dtype) == x)
    even = np.where(m % 2 == 0, lo, hi)
    expected = {"nearest": (hi, -hi), "nearest_even": (even, -even), "half_up": (hi, -lo)}
    for mode, (pos, neg) in expected.items():
        got = both(np.concatenate([x, -x]).astype(dtype), *fmt, rounding=mode)
        np.testing.assert_array_equal(got, np.concatenate([pos, neg]), err_msg=mode)
