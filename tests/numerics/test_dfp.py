"""Dynamic fixed point against an exact rational reference written from the formula.

Reference: x' = clamp(round(x·2^fl), qmin, qmax)·2^−fl computed with fractions.Fraction,
with qmax rounded to the nearest value of the dtype (Ristretto's float ``max_data``: 2^(B−1)
for float32 and B > 24), with subnormal inputs and results counting as zero (TensorFlow's
CPU convention).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.errors import QuantizationConfigError
from kerasq.numerics import dfp_frac_bits, dfp_quantize, dfp_range

DETERMINISTIC = ("nearest", "nearest_even", "half_up")


def ref_round(exact: Fraction, mode: str) -> int:
    low = math.floor(exact)
    frac = exact - low
    if mode == "half_up":
        return low + (frac >= Fraction(1, 2))
    if frac != Fraction(1, 2):
        return low + (frac > Fraction(1, 2))
    if mode == "nearest":
        return low + 1 if exact > 0 else low
    return low if low % 2 == 0 else low + 1


def to_dtype_toward_zero(value: Fraction, dtype) -> float:
    """``value`` in ``dtype``, rounded toward zero, subnormals flushed."""
    dtype = np.dtype(dtype)
    if value == 0:
        return 0.0
    mag = abs(value)
    exp = math.floor(math.log2(mag))  # refined below, exactly
    while Fraction(2) ** exp > mag:
        exp -= 1
    while Fraction(2) ** (exp + 1) <= mag:
        exp += 1
    if exp < np.finfo(dtype).minexp:
        return 0.0
    if exp > np.finfo(dtype).maxexp - 1:
        return math.copysign(float(np.finfo(dtype).max), value)
    step = Fraction(2) ** (exp - np.finfo(dtype).nmant)
    return math.copysign(float(math.floor(mag / step) * step), value)


def ref_dfp(x: float, bitwidth: int, fl: int, signed: bool, mode: str, dtype) -> float:
    if signed:
        qmin, qmax = -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1
    else:
        qmin, qmax = 0, 2**bitwidth - 1
    top = Fraction(float(np.dtype(dtype).type(qmax)))  # nearest float, as Ristretto
    if math.isnan(x):
        return x
    if math.isinf(x):
        q = top if x > 0 else qmin
    else:
        if abs(x) < np.finfo(dtype).tiny:
            x = 0.0
        q = min(max(ref_round(Fraction(x) * Fraction(2) ** fl, mode), qmin), top)
    return to_dtype_toward_zero(q / Fraction(2) ** fl, dtype)


def ref_dfp_array(x, bitwidth, fl, signed, mode):
    fls = np.broadcast_to(fl, x.shape)
    out = [
        ref_dfp(float(v), bitwidth, int(f), signed, mode, x.dtype)
        for v, f in zip(x.ravel(), fls.ravel())
    ]
    return np.array(out, x.dtype).reshape(x.shape)


def sample_values(dtype, bitwidth, fl, n=300, seed=0):
    """Random values spread over the whole range, the grid ties and the edge cases."""
    rng = np.random.default_rng(seed)
    lo, hi = dfp_range(bitwidth, fl)
    spread = rng.uniform(-1.3, 1.3, n) * hi
    step = 2.0**-fl
    ties = (rng.integers(-(2 ** min(bitwidth, 20)), 2 ** min(bitwidth, 20), 40) + 0.5) * step
    edges = [
        0.0,
        -0.0,
        lo,
        hi,
        lo - step / 2,
        hi + step / 2,
        hi + step / 4,
        lo - step,
        hi * 4,
        np.inf,
        -np.inf,
        np.nan,
        1e-40,
        -1e-40,
        3e38,
        -3e38,
        step / 2,
        -step / 2,
    ]
    return np.concatenate([spread, ties, edges]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(
    "bitwidth,fl",
    [
        (2, 0),
        (2, 3),
        (3, -2),
        (8, 4),
        (8, -3),
        (8, 10),
        (16, 12),
        (24, 20),
        (25, 10),
        (32, 16),
        (32, 31),
        (32, -5),
    ],
)
def test_matches_reference_numpy_and_tf(dtype, signed, bitwidth, fl):
    x = sample_values(dtype, bitwidth, fl, seed=bitwidth * 100 + fl)
    for mode in DETERMINISTIC:
        want = ref_dfp_array(x, bitwidth, fl, signed, mode)
        got_np = dfp_quantize(x, bitwidth, fl, signed=signed, rounding=mode)
        got_tf = dfp_quantize(tf.constant(x), bitwidth, fl, signed=signed, rounding=mode).numpy()
        assert got_np.dtype == got_tf.dtype == dtype
        np.testing.assert_array_equal(got_np, want, err_msg=mode)
        np.testing.assert_array_equal(got_tf, got_np, err_msg=mode)
        np.testing.assert_array_equal(np.signbit(got_tf), np.signbit(got_np), err_msg=mode)


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("bitwidth,fl,signed", [(8, 5, True), (4, -1, False), (32, 20, True)])
def test_idempotent(mode, bitwidth, fl, signed):
    x = sample_values(np.float32, bitwidth, fl, seed=4)
    once = dfp_quantize(x, bitwidth, fl, signed=signed, rounding=mode)
    twice = dfp_quantize(once, bitwidth, fl, signed=signed, rounding=mode)
    np.testing.assert_array_equal(twice, once)


def test_saturation_and_special_values():
    x = np.array([100.0, -100.0, np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)
    got = dfp_quantize(x, 8, 4)
    np.testing.assert_array_equal(got, [127 / 16, -8, 127 / 16, -8, np.nan, 0, 0])
    assert dfp_quantize(np.float32(-1.0), 8, 4, signed=False) == 0
    # float32 with 32 bits: the top of the range is 2^31 - 1 rounded to float32 = 2^31,
    # as Ristretto's float max_data (see test_ristretto_float32_saturation_above_24_bits)
    assert dfp_quantize(np.float32(1e30), 32, 0) == 2.0**31
    assert dfp_quantize(np.float64(1e30), 32, 0) == 2.0**31 - 1
    assert dfp_quantize(np.float32(-1e30), 32, 0) == -(2.0**31)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_channel_frac_bits(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 5, 4)) * [0.1, 1, 10, 100]).astype(dtype)
    fl = np.array([9, 5, 2, -2])
    want = np.stack([ref_dfp_array(x[..., c], 8, fl[c], True, "nearest") for c in range(4)], -1)
    np.testing.assert_array_equal(dfp_quantize(x, 8, fl), want)
    np.testing.assert_array_equal(dfp_quantize(tf.constant(x), 8, tf.constant(fl)).numpy(), want)
    np.testing.assert_array_equal(dfp_quantize(tf.constant(x), 8, fl).numpy(), want)
    lo, hi = dfp_range(8, fl)
    np.testing.assert_array_equal(lo, [-(2.0 ** (7 - f)) for f in fl])
    np.testing.assert_array_equal(hi, [127 * 2.0**-f for f in fl])


def test_frac_bits_variable_inside_tf_function():
    fl = tf.Variable([3, 1], dtype=tf.int32, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def f(x):
        return dfp_quantize(x, 6, fl, rounding="half_up")

    x = sample_values(np.float32, 6, 1, 100, seed=8)[:100].reshape(50, 2)
    want = np.stack(
        [
            ref_dfp_array(x[:, 0], 6, 3, True, "half_up"),
            ref_dfp_array(x[:, 1], 6, 1, True, "half_up"),
        ],
        -1,
    )
    np.testing.assert_array_equal(f(tf.constant(x)).numpy(), want)
    fl.assign([0, 0])
    want = ref_dfp_array(x, 6, 0, True, "half_up")
    np.testing.assert_array_equal(f(tf.constant(x)).numpy(), want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_straight_through_gradient_mask(per_channel):
    rng = np.random.default_rng(6)
    x = (rng.uniform(-6, 6, (64, 3))).astype(np.float32)
    fl = np.array([4, 3, 2]) if per_channel else np.array(3)
    x[0] = dfp_range(5, fl)[1]  # exactly at the top: still inside
    x[1] = dfp_range(5, fl)[0]  # exactly at the bottom: still inside
    lo = -(2.0**4) * 2.0 ** -np.broadcast_to(fl, (3,))
    hi = (2.0**4 - 1) * 2.0 ** -np.broadcast_to(fl, (3,))
    want = ((x >= lo) & (x <= hi)).astype(np.float32) * 2.0
    fl_var = tf.Variable(fl, dtype=tf.int32)
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y = dfp_quantize(xt, 5, fl_var)
        loss = 2.0 * tf.reduce_sum(y)
    np.testing.assert_array_equal(tape.gradient(loss, xt).numpy(), want)
    assert tape.gradient(loss, fl_var) is None
    assert 0 < want.mean() < 2


def test_gradient_inside_tf_function():
    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = dfp_quantize(x, 4, 1, signed=False, rounding="stochastic", seed=1)
        return tape.gradient(y, x)

    x = tf.constant([-1.0, -0.01, 0.0, 3.3, 7.5, 7.6, 100.0])
    np.testing.assert_array_equal(grad(x).numpy(), [0, 0, 1, 1, 1, 0, 0])


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_stochastic_unbiased_reproducible_in_range(backend):
    n = 20000
    base = np.array([0.3, -0.71, 1.126, 3.0, -2.5, 7.9], np.float32)
    x = np.repeat(base[None], n, 0)
    wrap = tf.constant if backend == "tf" else np.asarray
    q = np.asarray(dfp_quantize(wrap(x), 6, 3, rounding="stochastic", seed=5))
    grid_lo = np.floor(x * 8) / 8
    assert np.all((q == grid_lo) | (q == np.minimum(grid_lo + 0.125, 31 / 8)))
    # inside the range E[q] = x; 7.9 saturates at 31/8
    expected = np.minimum(base, 31 / 8)
    np.testing.assert_allclose(q.mean(0), expected, atol=5 * 0.125 * 0.5 / math.sqrt(n))
    again = np.asarray(dfp_quantize(wrap(x), 6, 3, rounding="stochastic", seed=5))
    other = np.asarray(dfp_quantize(wrap(x), 6, 3, rounding="stochastic", seed=6))
    np.testing.assert_array_equal(q, again)
    assert not np.array_equal(q, other)


@pytest.mark.parametrize("bitwidth", [2, 4, 8, 16])
@pytest.mark.parametrize("fl,signed", [(5, True), (2, False), (-1, True), (9, False)])
def test_half_up_agrees_with_tf_fake_quant(bitwidth, fl, signed):
    """numerics "half_up" is the rounding of TF's FakeQuantWithMinMaxVars on a pow2 grid:
    every grid point, every tie between two grid points and (up to 8 bits) random values.

    FakeQuant rounds ``(x − min)/scale`` computed in float32, which loses low bits of x
    once the range needs more than 24 − B bits below x's leading bit; at 16 bits random
    inputs then sometimes land on the wrong side of a tie (kerasq is exact, see above).
    """
    rng = np.random.default_rng(12)
    lo, hi = dfp_range(bitwidth, fl, signed=signed)
    step = 2.0**-fl
    qmin, qmax = round(lo / step), round(hi / step)
    grid = np.arange(qmin, qmax + 1) * step
    random = rng.uniform(lo * 1.2 - 1, hi * 1.2 + 1, 2000) if bitwidth <= 8 else []
    x = np.concatenate([random, grid, grid[:-1] + step / 2]).astype(np.float32)
    fake = tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(x),
        min=tf.constant(lo, tf.float32),
        max=tf.constant(hi, tf.float32),
        num_bits=bitwidth,
    ).numpy()
    ours = dfp_quantize(x, bitwidth, fl, signed=signed, rounding="half_up")
    np.testing.assert_array_equal(ours, fake)


def test_dfp_range_exact():
    assert dfp_range(8, 4) == (-8.0, 127 / 16)
    assert dfp_range(8, -1, signed=False) == (0.0, 510.0)
    assert dfp_range(32, 0) == (-(2.0**31), 2.0**31 - 1)
    assert dfp_range(2, 0) == (-2.0, 1.0)
    assert dfp_range(8, 1060) == (-(2.0**-1053), 127 * 2.0**-1060)  # float64 subnormals
    assert dfp_range(8, -2000) == (-np.inf, np.inf)  # beyond float64
    lo, hi = dfp_range(32, tf.constant([0, 3]))
    np.testing.assert_array_equal(lo.numpy(), [-(2.0**31), -(2.0**28)])
    np.testing.assert_array_equal(hi.numpy(), [2.0**31, 2.0**28])  # float32(2^31 - 1) = 2^31


def ref_ceil_log2(m: float) -> int:
    """Smallest n with 2^n >= m (exact, by search)."""
    n = 0
    while Fraction(2) ** n < Fraction(m):
        n += 1
    while Fraction(2) ** (n - 1) >= Fraction(m):
        n -= 1
    return n


def test_frac_bits_powers_of_two_and_neighbours():
    values = []
    for k in range(-40, 41, 3):
        p = 2.0**k
        values += [p, np.nextafter(p, 0), np.nextafter(p, np.inf), 1.5 * p]
    values = np.array(values, np.float64)
    for signed in (True, False):
        for bw in (2, 8, 16, 32):
            want = [bw - ref_ceil_log2(v) - int(signed) for v in values]
            np.testing.assert_array_equal(dfp_frac_bits(values, bw, signed=signed), want)
            got_tf = dfp_frac_bits(tf.constant(values), bw, signed=signed)
            np.testing.assert_array_equal(got_tf.numpy(), want)
    assert dfp_frac_bits(1.0, 8) == 7 and dfp_frac_bits(2.0, 8) == 6 and dfp_frac_bits(2.5, 8) == 5
    assert isinstance(dfp_frac_bits(3.0, 8), int)


def test_frac_bits_zero_and_fit():
    assert dfp_frac_bits(0.0, 8) == 7
    assert dfp_frac_bits(0.0, 8, signed=False) == 8
    assert dfp_frac_bits(tf.constant(0.0), 16).numpy() == 15
    out = dfp_frac_bits(np.array([0.0, 0.3, 5.0], np.float32), 8)
    assert out.dtype == np.int32 and list(out) == [7, 8, 4]
    # the chosen range holds max_abs, one bit less would not
    for m in [0.3, 0.9, 1.1, 3.7, 100.0]:
        fl = dfp_frac_bits(m, 8)
        assert -dfp_range(8, fl)[0] >= m > -dfp_range(8, fl + 1)[0]


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_frac_bits_rejects_bad_max_abs(bad):
    with pytest.raises(QuantizationConfigError, match="max_abs"):
        dfp_frac_bits(np.array([1.0, bad]), 8)
    with pytest.raises(QuantizationConfigError, match="max_abs"):
        dfp_frac_bits(tf.constant([bad]), 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bitwidth": 1}, "bitwidth must be an integer in 2..32, got 1"),
        ({"bitwidth": 33}, "bitwidth must be an integer in 2..32, got 33"),
        ({"bitwidth": 8.0}, "bitwidth"),
        ({"bitwidth": True}, "bitwidth"),
        ({"frac_bits": 2.5}, "frac_bits must be an integer"),
        ({"frac_bits": [1.0, np.nan]}, "frac_bits must be an integer"),
        ({"frac_bits": "3"}, "frac_bits must be an integer"),
        ({"signed": 1}, "signed must be True or False"),
        ({"rounding": "up"}, "rounding must be one of"),
        ({"frac_bits": [1, 2, 3]}, "does not broadcast"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"x": np.ones((2, 2), np.float32), "bitwidth": 8, "frac_bits": 3}
    args.update(kwargs)
    with pytest.raises(QuantizationConfigError, match=match):
        dfp_quantize(**args)


def test_float_tensor_frac_bits_rejected():
    with pytest.raises(QuantizationConfigError, match="frac_bits must be an integer tensor"):
        dfp_quantize(tf.ones([2]), 8, tf.constant(3.0))


def test_integral_float_frac_bits_accepted():
    np.testing.assert_array_equal(dfp_quantize([0.3], 8, 3.0), dfp_quantize([0.3], 8, 3))


def test_empty_and_kinds():
    assert dfp_quantize(np.zeros((0, 4), np.float32), 8, 3).shape == (0, 4)
    assert dfp_quantize(tf.zeros((0, 4)), 8, np.arange(4), rounding="stochastic").shape == (0, 4)
    assert dfp_quantize(0.3, 8, 3) == 0.25 and isinstance(dfp_quantize(0.3, 8, 3), np.floating)
    assert dfp_quantize(np.array([0.3], np.float16), 8, 3).dtype == np.float16
    assert dfp_quantize(tf.constant([0.3], tf.float16), 8, 3).dtype == tf.float16
    assert dfp_quantize([1, 2, 300], 8, 0).tolist() == [1.0, 2.0, 127.0]


def test_gradient_reaches_a_variable_passed_as_x():
    """Quantizers pass kernels (tf.Variable) directly; the STE must reach the variable."""
    from kerasq.numerics import minifloat_quantize, pow2_quantize

    kernel = tf.Variable([[-3.0, 0.2], [0.5, 1.9]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            dfp_quantize(kernel, 4, 2)
            + minifloat_quantize(kernel, 2, 1)
            + pow2_quantize(kernel, -2, 0, rounding="stochastic", seed=1)
        )
    # dfp range [-2, 1.75]; minifloat E2M1 max 6; pow2: identity
    np.testing.assert_array_equal(tape.gradient(loss, kernel).numpy(), [[0 + 1 + 1, 3], [3, 2]])


@pytest.mark.parametrize("fl_shape", [(3,), (2, 4), (5, 4)])
def test_tensor_frac_bits_that_would_grow_x_rejected(fl_shape):
    with pytest.raises(QuantizationConfigError, match="does not broadcast"):
        dfp_quantize(tf.ones([1, 4]), 8, tf.zeros(fl_shape, tf.int32))


def _ristretto_float32(x, bitwidth, fl, signed):
    """Ristretto's Trim2FixedPoint_cpu in float32: max_data = (2^(B-1) - 1)·2^-fl (or
    (2^B - 1)·2^-fl unsigned) evaluated in float, clamp, x/2^-fl, round, ·2^-fl."""
    f32 = np.float32
    step = f32(2.0**-fl)
    if signed:
        max_data = (f32(2.0 ** (bitwidth - 1)) - f32(1)) * step
        min_data = f32(-(2.0 ** (bitwidth - 1))) * step
    else:
        max_data = (f32(2.0**bitwidth) - f32(1)) * step
        min_data = f32(0)
    y = (np.clip(np.asarray(x, f32), min_data, max_data) / step).astype(np.float64)
    rounded = np.sign(y) * np.floor(np.abs(y) + 0.5)  # C round(): ties away (exact in f64)
    return (rounded * step).astype(f32)


@pytest.mark.parametrize("bitwidth,fl,signed,top", [(32, 20, True, 2048.0),
                                                    (32, 20, False, 4096.0),
                                                    (28, 10, True, 2.0**17),
                                                    (24, 10, True, (2.0**23 - 1) / 1024)])
def test_ristretto_float32_saturation_above_24_bits(bitwidth, fl, signed, top):
    """For B > 24 float32 has no 2^(B-1)-1: Ristretto's max_data rounds up to 2^(B-1)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([[1e9, 5000.0, 2047.9999, 2048.0, -1e9, 0.3],
                        rng.uniform(-3000, 3000, 200)]).astype(np.float32)
    want = _ristretto_float32(x, bitwidth, fl, signed)
    assert want.max() == np.float32(top)
    got = dfp_quantize(x, bitwidth, fl, signed=signed, rounding="nearest")
    np.testing.assert_array_equal(got, want)
    got_tf = dfp_quantize(tf.constant(x), bitwidth, fl, signed=signed, rounding="nearest").numpy()
    np.testing.assert_array_equal(got_tf, want)
    assert float(dfp_range(bitwidth, tf.constant(fl), signed=signed)[1].numpy()) == top
