"""numpy and TF paths agree bit for bit: eager, tf.function, XLA, property-based fuzzing.

The references of the other test files check the numpy path against the formulas;
here both backends are compared with each other over randomly drawn settings.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasq._compat import tf
from kerasq.numerics import dfp_quantize, minifloat_quantize, pow2_quantize

DETERMINISTIC = ("nearest", "nearest_even", "half_up")
FUZZ = settings(
    max_examples=int(os.environ.get("KERASQ_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_same(a, b):
    np.testing.assert_array_equal(a, b)
    # The sign of a NaN carries no value (IEEE 754 leaves it unspecified); compare the
    # sign of every number, including signed zeros.
    numbers = ~np.isnan(a)
    np.testing.assert_array_equal(np.signbit(a[numbers]), np.signbit(b[numbers]))


def float_arrays(dtype):
    width = 32 if dtype == np.float32 else 64
    elements = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=width)
    return st.lists(elements, min_size=0, max_size=40).map(lambda v: np.array(v, dtype))


@FUZZ
@given(
    x=st.one_of(float_arrays(np.float32), float_arrays(np.float64)),
    bitwidth=st.integers(2, 32),
    fl=st.integers(-40, 60),
    signed=st.booleans(),
    mode=st.sampled_from(DETERMINISTIC),
)
def test_fuzz_dfp(x, bitwidth, fl, signed, mode):
    got_np = dfp_quantize(x, bitwidth, fl, signed=signed, rounding=mode)
    got_tf = dfp_quantize(tf.constant(x), bitwidth, fl, signed=signed, rounding=mode)
    assert_same(got_np, got_tf.numpy())
    lo = -(2.0 ** (bitwidth - 1)) if signed else 0.0
    # qmax rounded to the data's float type (Ristretto's float max_data): 2^(B-1) for
    # float32 and B > 24
    hi = float(x.dtype.type(2 ** (bitwidth - (1 if signed else 0)) - 1))
    finite = got_np[~np.isnan(got_np)] * 2.0**fl
    assert np.all((finite >= lo) & (finite <= hi) & (finite == np.round(finite)))


@FUZZ
@given(
    x=st.one_of(float_arrays(np.float32), float_arrays(np.float64)),
    exp_bits=st.integers(1, 10),
    mant_bits=st.integers(0, 52),
    subnormals=st.booleans(),
    mode=st.sampled_from(DETERMINISTIC),
)
def test_fuzz_minifloat(x, exp_bits, mant_bits, subnormals, mode):
    kwargs = {"rounding": mode, "subnormals": subnormals}
    got_np = minifloat_quantize(x, exp_bits, mant_bits, **kwargs)
    assert_same(got_np, minifloat_quantize(tf.constant(x), exp_bits, mant_bits, **kwargs).numpy())
    assert_same(minifloat_quantize(got_np, exp_bits, mant_bits, **kwargs), got_np)


@FUZZ
@given(
    x=st.one_of(float_arrays(np.float32), float_arrays(np.float64)),
    exp_min=st.integers(-30, 5),
    span=st.integers(0, 20),
    mode=st.sampled_from(DETERMINISTIC),
)
def test_fuzz_pow2(x, exp_min, span, mode):
    got_np = pow2_quantize(x, exp_min, exp_min + span, rounding=mode)
    assert_same(
        got_np, pow2_quantize(tf.constant(x), exp_min, exp_min + span, rounding=mode).numpy()
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fl", [127, 140, 200, -130, -300, 1100, -1100])
def test_extreme_frac_bits(dtype, fl):
    """Grids far outside the usual range: over/underflow saturates or flushes consistently."""
    rng = np.random.default_rng(abs(fl))
    x = np.concatenate(
        [
            rng.standard_normal(50) * 10.0 ** rng.integers(-45, 38, 50),
            [0.0, 1e-40, -1e-44, 3e38, np.inf],
        ]
    ).astype(dtype)
    for signed in (True, False):
        got_np = dfp_quantize(x, 16, fl, signed=signed)
        assert_same(got_np, dfp_quantize(tf.constant(x), 16, fl, signed=signed).numpy())
        # every finite non-zero result is a 16-bit integer times 2^-fl, exactly; a grid
        # step beyond the dtype's largest value (fl < -127 in float32) overflows to inf
        nz = got_np[got_np != 0].astype(np.float64)
        q = np.ldexp(nz[np.isfinite(nz)], fl)
        assert np.all((q == np.round(q)) & (q >= -(2**15)) & (q <= 2**16 - 1))
        if np.isinf(nz).any():
            assert -fl > np.finfo(dtype).maxexp - 16


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_tf_function_and_xla_match_numpy(mode, jit):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 16)) * 4).astype(np.float32)
    fl = np.arange(16) % 6 - 1
    signature = None if jit else [tf.TensorSpec([None, 16], tf.float32)]

    @tf.function(jit_compile=jit, input_signature=signature)
    def run(v):
        return (
            dfp_quantize(v, 8, 4, rounding=mode),
            dfp_quantize(v, 6, tf.constant(fl), signed=False, rounding=mode),
            minifloat_quantize(v, 4, 3, rounding=mode),
            minifloat_quantize(v, 3, 2, rounding=mode, subnormals=True),
            pow2_quantize(v, -6, 2, rounding=mode),
        )

    dfp, dfp_pc, mf, mf_sub, p2 = (t.numpy() for t in run(tf.constant(x)))
    assert_same(dfp, dfp_quantize(x, 8, 4, rounding=mode))
    assert_same(dfp_pc, dfp_quantize(x, 6, fl, signed=False, rounding=mode))
    assert_same(mf, minifloat_quantize(x, 4, 3, rounding=mode))
    assert_same(mf_sub, minifloat_quantize(x, 3, 2, rounding=mode, subnormals=True))
    assert_same(p2, pow2_quantize(x, -6, 2, rounding=mode))


def test_numpy_path_does_not_import_tensorflow():
    code = (
        "import sys; from kerasq.numerics import *; "
        "dfp_quantize([0.3], 8, 4); minifloat_quantize([0.3], 4, 3); pow2_quantize([0.3]); "
        "dfp_frac_bits(3.0, 8); round_values([0.5], 'stochastic', seed=1); "
        "assert 'tensorflow' not in sys.modules; print('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_xla_wide_minifloat_formats_with_subnormals():
    """E >= 8 on float32: the subnormal grid lies below float32's normals (all zero)."""
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [
            rng.standard_normal(200) * 10.0 ** rng.integers(-40, 38, 200),
            [1e-40, -1e-39, 1.2e-38, 0.0],
        ]
    ).astype(np.float32)
    run = tf.function(lambda v: minifloat_quantize(v, 8, 5, subnormals=True), jit_compile=True)
    assert_same(run(tf.constant(x)).numpy(), minifloat_quantize(x, 8, 5, subnormals=True))


@pytest.mark.parametrize("fl", [130, 150, -140, 300])
def test_xla_extreme_int_frac_bits(fl):
    """Powers of two outside float32's normal range are applied on the exponent field,
    which XLA cannot fold into an overflowing constant."""
    rng = np.random.default_rng(fl + 400)
    x = np.concatenate(
        [rng.standard_normal(100) * 10.0 ** rng.integers(-38, 38, 100), [0.0, 1e-40, 3e38, -np.inf]]
    ).astype(np.float32)
    run = tf.function(lambda v: dfp_quantize(v, 32, fl), jit_compile=True)
    assert_same(run(tf.constant(x)).numpy(), dfp_quantize(x, 32, fl))


@FUZZ
@given(
    m=st.floats(min_value=1e-300, max_value=1e300, allow_subnormal=False),
    bitwidth=st.integers(2, 32),
    signed=st.booleans(),
)
def test_fuzz_frac_bits_is_the_tightest_power_of_two(m, bitwidth, signed):
    """il = B − fl − s is the smallest integer with 2^il >= max_abs (exact rationals)."""
    from fractions import Fraction

    from kerasq.numerics import dfp_frac_bits

    fl = dfp_frac_bits(m, bitwidth, signed=signed)
    il = bitwidth - fl - int(signed)
    assert Fraction(2) ** (il - 1) < Fraction(m) <= Fraction(2) ** il
    assert dfp_frac_bits(tf.constant(m, tf.float64), bitwidth, signed=signed).numpy() == fl
