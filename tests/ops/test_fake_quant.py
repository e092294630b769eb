"""fake_quant_dfp / fake_quant_minifloat against kerasq.numerics, on both op paths.

kerasq.numerics (numpy) is the reference written from the Ristretto/caffe-jacinto spec;
the deterministic modes must agree bit for bit (including the sign of zero), and the
gradients exactly. Stochastic rounding is checked by its statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq import numerics
from kerasq.errors import QuantizationConfigError
from kerasq.ops import fake_quant_dfp, fake_quant_dfp_weights, fake_quant_minifloat

DETERMINISTIC = ["nearest", "nearest_even", "half_up"]


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_bit_equal(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    # NaN payloads may differ; everything else must be the same bit pattern.
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    bad = (_bits(actual) != _bits(expected)) & ~nan
    if bad.any():
        i = np.flatnonzero(bad)[:5]
        raise AssertionError(
            f"{bad.sum()} of {bad.size} differ, e.g. at {i}: got {actual.ravel()[i]}, "
            f"expected {expected.ravel()[i]}"
        )


def special_values(dtype) -> np.ndarray:
    """Ties, grid points, bounds, subnormals, inf/nan and random data."""
    rng = np.random.default_rng(1234)
    tiny = np.finfo(dtype).tiny
    ties = (np.arange(-40, 41) + 0.5) / 8.0
    grid = np.arange(-300, 301) / 16.0
    edges = np.array([0.0, -0.0, tiny, -tiny, tiny / 4, -tiny / 8, 1e-30, -1e-30, 1e30, -1e30,
                      np.inf, -np.inf, np.nan, 0.49999997, -0.49999997, 7.96875, 8.0, -8.0,
                      -8.03125, 2.0**24 + 2, -(2.0**31), 2.0**31])
    rand = np.concatenate([rng.normal(0, 4, 3000), rng.uniform(-300, 300, 1000),
                           rng.standard_cauchy(500)])
    return np.concatenate([ties, grid, edges, rand]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("bitwidth,frac_bits,signed", [
    (2, 0, True), (4, 2, True), (8, 4, True), (8, 7, False), (8, -2, True), (12, 9, True),
    (16, 3, False), (24, 10, True), (32, 20, True), (32, 0, False), (6, 40, True),
    (8, -130, True), (8, 140, True),
])
def test_dfp_matches_numerics(ops_path, dtype, rounding, bitwidth, frac_bits, signed):
    x = special_values(dtype)
    expected = numerics.dfp_quantize(x, bitwidth, frac_bits, signed=signed, rounding=rounding)
    actual = fake_quant_dfp(tf.constant(x), bitwidth, frac_bits, signed=signed, rounding=rounding)
    assert_bit_equal(actual.numpy(), expected)


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4, 5), (5,)])
def test_dfp_per_channel(ops_path, rounding, shape):
    rng = np.random.default_rng(7)
    x = (rng.normal(0, 3, shape) * np.exp2(rng.integers(-6, 6, shape[-1]))).astype(np.float32)
    fl = rng.integers(-3, 12, shape[-1]).astype(np.int32)
    expected = numerics.dfp_quantize(x, 8, fl, rounding=rounding)
    actual = fake_quant_dfp(tf.constant(x), 8, tf.constant(fl), rounding=rounding)
    assert_bit_equal(actual.numpy(), expected)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("signed", [True, False])
def test_dfp_gradient_is_clipped_straight_through(ops_path, per_channel, signed):
    x = special_values(np.float32)[:2000].reshape(-1, 8)
    x = x[np.isfinite(x).all(axis=1)]
    fl = np.arange(8, dtype=np.int32) if per_channel else 3
    dy = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    xt = tf.constant(x)
    grads = []
    for fn in (fake_quant_dfp, numerics.dfp_quantize):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fn(xt, 6, tf.constant(fl), signed=signed)
        grads.append(tape.gradient(y, xt, output_gradients=tf.constant(dy)).numpy())
    assert_bit_equal(grads[0], grads[1])
    assert 0 < np.count_nonzero(grads[0]) < grads[0].size  # both branches exercised


def _minifloat_inputs(dtype):
    rng = np.random.default_rng(99)
    mags = np.exp2(rng.uniform(-40, 40, 4000)) * rng.choice([-1, 1], 4000)
    fives = np.array([495.0, 496.0, 479.0, 240.0, 0.3, 90.0, 1e6, 0.001, 2.0**-7, 2.0**-6,
                      1.5 * 2.0**-7, 0.75 * 2.0**-6, 2.0**-9, 5.5, 6.5, 7.5, -7.5])
    return np.concatenate([special_values(dtype), mags, fives]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("subnormals", [False, True])
@pytest.mark.parametrize("exp_bits,mant_bits", [(4, 3), (5, 2), (2, 1), (3, 0), (8, 7),
                                                (5, 10), (8, 23), (1, 2), (10, 30)])
def test_minifloat_matches_numerics(ops_path, dtype, rounding, subnormals, exp_bits, mant_bits):
    x = _minifloat_inputs(dtype)
    expected = numerics.minifloat_quantize(x, exp_bits, mant_bits, rounding=rounding,
                                           subnormals=subnormals)
    actual = fake_quant_minifloat(tf.constant(x), exp_bits, mant_bits, rounding=rounding,
                                  subnormals=subnormals)
    assert_bit_equal(actual.numpy(), expected)


def test_minifloat_gradient(ops_path):
    x = tf.constant(_minifloat_inputs(np.float32))
    x = tf.boolean_mask(x, tf.math.is_finite(x))
    dy = tf.random.stateless_normal(tf.shape(x), [1, 2])
    grads = []
    for fn in (fake_quant_minifloat, numerics.minifloat_quantize):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x, 4, 3)
        grads.append(tape.gradient(y, x, output_gradients=dy).numpy())
    assert_bit_equal(grads[0], grads[1])
    assert 0 < np.count_nonzero(grads[0]) < grads[0].size


# ---------------------------------------------------------------- stochastic rounding


def _up_fraction(q: np.ndarray, low: float, step: float) -> float:
    ups = np.isclose(q, low + step)
    assert np.all(ups | np.isclose(q, low)), "stochastic result off the two neighbours"
    return float(ups.mean())


@pytest.mark.parametrize("frac", [0.125, 0.5, 0.8125])
def test_dfp_stochastic_is_unbiased(ops_path, frac):
    # x sits `frac` of a step above a grid point: P(round up) must be `frac`.
    n = 200_000
    x = tf.fill([n], np.float32((3 + frac) / 16))
    q = fake_quant_dfp(x, 8, 4, rounding="stochastic", seed=11).numpy()
    p = _up_fraction(q, 3 / 16, 1 / 16)
    sigma = np.sqrt(frac * (1 - frac) / n)
    assert abs(p - frac) < 5 * sigma


def test_minifloat_stochastic_is_unbiased(ops_path):
    n = 200_000
    x = tf.fill([n], np.float32(1.0 + 0.3 * 0.125))  # E4M3: step 1/8 in [1, 2)
    q = fake_quant_minifloat(x, 4, 3, rounding="stochastic", seed=5).numpy()
    p = _up_fraction(q, 1.0, 0.125)
    assert abs(p - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)


@pytest.mark.parametrize("fn,args", [(fake_quant_dfp, (8, 4)), (fake_quant_minifloat, (4, 3))])
def test_stochastic_seeded_reproducible(ops_path, fn, args):
    x = tf.random.stateless_uniform([10_000], [3, 4], -4, 4)
    a = fn(x, *args, rounding="stochastic", seed=123).numpy()
    b = fn(x, *args, rounding="stochastic", seed=123).numpy()
    c = fn(x, *args, rounding="stochastic", seed=124).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.count_nonzero(a != c) > 100
    # every result is one of the two deterministic neighbours
    lo = fn(x, *args, rounding="nearest").numpy()
    assert np.all(np.abs(a - lo) <= np.abs(lo) * 0.25 + 1 / 16 + 1e-7)


def test_stochastic_matches_numerics_in_distribution(ops_path):
    # Same x, many draws: the per-element mean of both implementations converges to x.
    x = np.random.default_rng(0).uniform(-2, 2, 64).astype(np.float32)
    xt = tf.tile(tf.constant(x)[None], [4000, 1])
    ours = fake_quant_dfp(xt, 8, 3, rounding="stochastic", seed=9).numpy().mean(0)
    ref = numerics.dfp_quantize(xt, 8, 3, rounding="stochastic", seed=9).numpy().mean(0)
    step = 1 / 8
    tol = 5 * step * 0.5 / np.sqrt(4000)
    np.testing.assert_allclose(ours, x, atol=tol)
    np.testing.assert_allclose(ref, x, atol=tol)


def test_stochastic_seed_none_varies_per_call_in_tf_function(ops_path):
    @tf.function
    def step(x):
        return fake_quant_dfp(x, 8, 2, rounding="stochastic")

    x = tf.fill([4096], 0.1)
    assert np.count_nonzero(step(x).numpy() != step(x).numpy()) > 100


# ---------------------------------------------------------------- argument checks


def test_bad_arguments_raise_config_errors(ops_path):
    x = tf.zeros([4, 3])
    with pytest.raises(QuantizationConfigError, match="bitwidth"):
        fake_quant_dfp(x, 1, 0)
    with pytest.raises(QuantizationConfigError, match="rounding"):
        fake_quant_dfp(x, 8, 0, rounding="up")
    with pytest.raises(QuantizationConfigError, match="exp_bits"):
        fake_quant_minifloat(x, 0, 3)
    with pytest.raises((QuantizationConfigError, tf.errors.InvalidArgumentError, ValueError)):
        fake_quant_dfp(x, 8, tf.constant([1, 2], tf.int32))


def test_other_dtypes_and_graph_mode(ops_path):
    x16 = tf.constant([0.3, -1.7, 100.0], tf.float16)
    y = fake_quant_dfp(x16, 8, 4)
    assert y.dtype == tf.float16
    np.testing.assert_array_equal(y.numpy(), numerics.dfp_quantize(x16, 8, 4).numpy())
    f = tf.function(lambda v: fake_quant_minifloat(v, 5, 2))
    v = tf.constant(special_values(np.float32))
    assert_bit_equal(f(v).numpy(), numerics.minifloat_quantize(v.numpy(), 5, 2))


@pytest.mark.parametrize("signed,top", [(True, 2048.0), (False, 4096.0)])
def test_dfp_32_bit_saturates_like_ristretto(ops_path, signed, top):
    """B=32, fl=20 in float32: Ristretto's float max_data (2^31 - 1)·2^-20 rounds to 2048.0
    (unsigned (2^32 - 1)·2^-20 to 4096.0); both op paths saturate there."""
    x = np.array([1e9, 5000.0, top - 2.0**-12, 1.5, -1e9], np.float32)
    got = fake_quant_dfp(tf.constant(x), 32, 20, signed=signed, rounding="nearest").numpy()
    assert got[0] == got[1] == np.float32(top)
    np.testing.assert_array_equal(got[2:4], x[2:4])  # on the grid: unchanged
    assert got[4] == (-2048.0 if signed else 0.0)


# ------------------------------------------------- block tails and the counter generator


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("n", [1, 63, 64, 255, 256, 257, 511, 4095, 4097, 100_003])
def test_dfp_block_tails(ops_path, rounding, n):
    # Sizes around the C++ loop's 64/256-element blocks and 4096-element shards, with
    # inf/nan/subnormals/ties at the start and at the end (the tail block).
    rng = np.random.default_rng(n)
    x = (rng.normal(0, 6, n)).astype(np.float32)
    edge = np.array([np.nan, np.inf, -np.inf, 1e-40, -1e-40, 0.5 / 16, -1.5 / 16, -0.0,
                     7.96875, 8.5, -8.03125], np.float32)
    k = min(n, edge.size)
    x[:k] = edge[:k]
    x[n - k:] = edge[:k]
    expected = numerics.dfp_quantize(x, 8, 4, rounding=rounding)
    actual = fake_quant_dfp(tf.constant(x), 8, 4, rounding=rounding)
    assert_bit_equal(actual.numpy(), expected)


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("shape", [(1, 16), (5, 32), (3000, 48), (2, 7, 40)])
def test_dfp_per_channel_special_values(ops_path, rounding, shape):
    # Channel counts that are multiples of 16 (the C++ AVX-512 per-channel loop) and one
    # that is not; inf/nan/subnormals/ties in the first and the last row.
    rng = np.random.default_rng(shape[-1])
    x = rng.normal(0, 4, shape).astype(np.float32).reshape(-1, shape[-1])
    edge = np.array([np.nan, np.inf, -np.inf, 1e-40, -1e-40, 0.5 / 16, -1.5 / 16, -0.0,
                     7.96875, 8.5, -8.03125, 2.5, -2.5, 300.0, -300.0, 0.0], np.float32)
    x[0, :16] = edge
    x[-1, -16:] = edge[::-1]
    x = x.reshape(shape)
    fl = (np.arange(shape[-1]) % 9 - 2).astype(np.int32)
    expected = numerics.dfp_quantize(x, 8, fl, rounding=rounding)
    actual = fake_quant_dfp(tf.constant(x), 8, tf.constant(fl), rounding=rounding)
    assert_bit_equal(actual.numpy(), expected)


_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64_finalize(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _counter_uniform_f32(seed: int, n: int) -> np.ndarray:
    """u(seed, i) of the C++ counter generator (docs/ops.md), float32, numpy uint64 math."""
    with np.errstate(over="ignore"):
        start = _splitmix64_finalize(np.array([seed % 2**64], np.uint64)
                                     ^ np.uint64(0x6A09E667F3BCC909))
        index = np.arange(n, dtype=np.uint64)
        bits = _splitmix64_finalize(start + (index + np.uint64(1)) * _GAMMA)
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


@pytest.mark.parametrize("channels", [24, 32])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("n_rows", [1, 3, 97, 4001])
def test_dfp_stochastic_matches_counter_reference(ops_path, per_channel, n_rows, channels):
    # Bit for bit: floor(y) + [u(seed, i) < y - floor(y)], y = clamp(x * 2^fl), with u from
    # the SplitMix64 counter stream evaluated in numpy. Normal-range data, so the power-of-
    # two scalings are exact in float32. (The fallback draws from TF's Philox stream: it
    # agrees in distribution only, see test_stochastic_matches_numerics_in_distribution.)
    if ops_path == "fallback":
        pytest.skip("the counter stream is the C++ kernels' generator")
    rng = np.random.default_rng(n_rows)
    x = rng.normal(0, 2, (n_rows, channels)).astype(np.float32)
    x[0, :3] = [np.nan, 100.0, -100.0]
    fl = (np.arange(channels) % 5 + 2).astype(np.int32) if per_channel else np.int32(4)
    seed = 987_654_321_123
    scale = np.exp2(np.broadcast_to(fl, x.shape)).astype(np.float32)
    y = np.clip(x * scale, np.float32(-128), np.float32(127))
    low = np.floor(y)
    u = _counter_uniform_f32(seed, x.size).reshape(x.shape)
    q = np.where(u < y - low, low + np.float32(1), low) + np.float32(0)
    expected = (q / scale).astype(np.float32)
    actual = fake_quant_dfp(tf.constant(x), 8, tf.constant(fl), rounding="stochastic",
                            seed=seed)
    assert_bit_equal(actual.numpy(), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("channels", [None, 8, 24, 32])
def test_dfp_relu_is_the_quantized_relu(ops_path, dtype, rounding, signed, channels):
    """relu=True: value = numerics.dfp_quantize(max(x, 0)), bit for bit; gradient = TF's
    ReluGrad times the numerics' clipped straight-through gradient (equal values: a cut
    gradient is +0.0, where ReluGrad's dy·0 keeps dy's sign). channels None (one fl), 32
    (the vector per-channel path) and 8/24 (the generic per-channel path)."""
    x = special_values(dtype)
    width = channels or 8
    x = x[: x.size // width * width].reshape(-1, width)
    fl = np.arange(width, dtype=np.int32) % 7 - 1 if channels else np.int32(3)
    relu_x = np.where(np.isnan(x), x, np.maximum(x, 0)).astype(dtype)
    got = fake_quant_dfp(tf.constant(x), 6, tf.constant(fl), signed=signed, rounding=rounding,
                         relu=True)
    want = numerics.dfp_quantize(relu_x, 6, fl, signed=signed, rounding=rounding)
    assert_bit_equal(got.numpy(), want)

    finite = x[np.isfinite(x).all(axis=1)]
    dy = np.random.default_rng(5).normal(size=finite.shape).astype(dtype)
    xt = tf.constant(finite)
    grads = []
    for fused in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            if fused:
                y = fake_quant_dfp(xt, 6, tf.constant(fl), signed=signed, relu=True)
            else:
                y = numerics.dfp_quantize(tf.nn.relu(xt), 6, tf.constant(fl), signed=signed)
        grads.append(tape.gradient(y, xt, output_gradients=tf.constant(dy)).numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    assert (finite == 0).any() and not grads[0][finite == 0].any()  # ReluGrad at exactly 0


@pytest.mark.parametrize("channels", [None, 24, 32])
@pytest.mark.parametrize("relu", [False, True])
def test_dfp_writes_over_a_temporary_input_correctly(ops_path, channels, relu):
    """Inside a graph the ops may write y over x and dx over dy when nothing else reads
    them (here ``2·v`` and ``3·g`` feed only the op): results as from fresh buffers."""
    width = channels or 16
    v = tf.Variable(special_values(np.float32)[:4000 // width * width].reshape(-1, width))
    g = tf.Variable(np.random.default_rng(2).normal(size=v.shape).astype(np.float32))
    fl = tf.constant(np.arange(width, dtype=np.int32) % 5 if channels else np.int32(2))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            x = v * 2.0
            tape.watch(x)
            y = fake_quant_dfp(x, 8, fl, signed=False, relu=relu)
        return y, tape.gradient(y, x, output_gradients=g * 3.0)

    y, dx = step()
    x = v.numpy() * 2
    ref_in = np.where(np.isnan(x), x, np.maximum(x, 0)) if relu else x
    assert_bit_equal(y.numpy(), numerics.dfp_quantize(ref_in, 8, fl.numpy(), signed=False))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        ref = numerics.dfp_quantize(tf.nn.relu(xt) if relu else xt, 8, fl, signed=False)
    want = tape.gradient(ref, xt, output_gradients=tf.constant(g.numpy() * 3)).numpy()
    np.testing.assert_array_equal(dx.numpy(), want)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels", [None, 24, 32])
def test_dfp_signedness_as_a_tensor(ops_path, relu, channels):
    """``signed`` as a bool scalar tensor, read at run time (one kernel, no cond): the same
    values and gradients as the bool attribute, for both grids, eagerly and in a graph."""
    width = channels or 16
    x = special_values(np.float32)[:4000 // width * width].reshape(-1, width)
    x = x[np.isfinite(x).all(axis=1)]
    fl = tf.constant(np.arange(width, dtype=np.int32) % 5 if channels else np.int32(2))
    dy = tf.constant(np.random.default_rng(8).normal(size=x.shape).astype(np.float32))
    xt = tf.constant(x)

    def run(signed):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fake_quant_dfp(xt, 5, fl, signed=signed, rounding="nearest_even", relu=relu)
        return y, tape.gradient(y, xt, output_gradients=dy)

    compiled = tf.function(run)
    for is_signed in (True, False):
        want = [t.numpy() for t in run(is_signed)]
        for fn in (run, compiled):
            got = [t.numpy() for t in fn(tf.constant(is_signed))]
            assert_bit_equal(got[0], want[0])
            assert_bit_equal(got[1], want[1])
    with pytest.raises(QuantizationConfigError, match="bool scalar"):
        fake_quant_dfp(xt, 5, fl, signed=tf.constant([True, False]))


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("extreme", [-130, 140])
def test_dfp_per_channel_with_a_fl_beyond_the_single_factor_range(ops_path, rounding, extreme):
    """One channel's |fl| above 126 (2^fl not a normal float): the C++ kernels switch to
    the two-factor form with flushes for the whole tensor; values as numerics'."""
    x = special_values(np.float32)[:3200].reshape(-1, 32)
    fl = (np.arange(32) % 9 - 2).astype(np.int32)
    fl[5] = extreme
    for relu in (False, True):
        expected = numerics.dfp_quantize(
            np.where(np.isnan(x), x, np.maximum(x, 0)).astype(np.float32) if relu else x, 8,
            fl, signed=False, rounding=rounding)
        actual = fake_quant_dfp(tf.constant(x), 8, tf.constant(fl), signed=False,
                                rounding=rounding, relu=relu)
        assert_bit_equal(actual.numpy(), expected)


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("shape,per_channel", [
    ((3, 3, 8, 32), True), ((5, 24), True), ((7, 1000), True), ((16,), False),
    ((3, 3, 4, 8), False), ((4, 3), True)])
def test_dfp_weights_match_the_numpy_reference(ops_path, rounding, shape, per_channel):
    """fake_quant_dfp_weights: min/max per channel (or tensor), fl = B-1-ceil(log2 A) and
    the fake-quantized weights, against numpy and kerasq.numerics; gradient clipped STE."""
    rng = np.random.default_rng(sum(shape))
    w = (rng.normal(0, 0.3, shape) * np.exp2(rng.integers(-4, 4, shape[-1]))).astype(np.float32)
    w.reshape(-1)[:3] = [0.0, -0.0, 0.5]  # a power of two: ceil(log2 0.5) = -1 exactly
    if per_channel:
        w[..., -1] = 0.0  # an all-zero channel: ceil(log2 0) := 0
    axes = tuple(range(w.ndim - 1)) if per_channel else None
    w_min, w_max = w.min(axis=axes), w.max(axis=axes)
    a = np.maximum(np.abs(w_min), np.abs(w_max))
    il = np.array([math.ceil(math.log2(v)) if v > 0 else 0 for v in np.ravel(a)]).reshape(a.shape)
    fl = (8 - 1 - il).astype(np.int64)
    wt = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(wt)
        y, got_fl, got_min, got_max = fake_quant_dfp_weights(wt, 8, per_channel=per_channel,
                                                             rounding=rounding)
    np.testing.assert_array_equal(got_fl.numpy(), fl.astype(np.float32))
    np.testing.assert_array_equal(got_min.numpy(), w_min)
    np.testing.assert_array_equal(got_max.numpy(), w_max)
    assert_bit_equal(y.numpy(), numerics.dfp_quantize(w, 8, fl, rounding=rounding))
    dy = rng.normal(size=shape).astype(np.float32)
    grad = tape.gradient(y, wt, output_gradients=tf.constant(dy)).numpy()
    scaled = w * np.exp2(fl.astype(np.float64))
    np.testing.assert_array_equal(grad, np.where((scaled >= -128) & (scaled <= 127), dy, 0))
