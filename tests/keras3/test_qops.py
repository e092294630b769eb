"""kerasq.keras3.qops (keras.ops) against kerasq.numerics' numpy reference, bit for bit."""

import numpy as np
import pytest

from kerasq import numerics
from kerasq.keras3 import qops
from kerasq.numerics.grid import integer_range

keras = qops.keras
ops = keras.ops


def _values(seed=0, n=4000):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 3, n), rng.uniform(-1, 1, n) * 2.0 ** rng.integers(-12, 6, n),
                        np.arange(-40, 41) / 8.0, [0.0, -0.0, 0.5, -0.5, 1.5, -2.5]])
    return x.astype(np.float32)


def _np(t):
    return np.asarray(ops.convert_to_numpy(t))


@pytest.mark.parametrize("rounding", ["nearest", "nearest_even", "half_up"])
@pytest.mark.parametrize("bitwidth,fl,signed", [(8, 4, True), (8, 5, False), (4, 1, True),
                                                (16, 10, True)])
def test_dfp_matches_numpy(rounding, bitwidth, fl, signed):
    x = _values()
    want = numerics.dfp_quantize(x, bitwidth, fl, signed=signed, rounding=rounding)
    got = _np(qops.dfp_quantize(ops.convert_to_tensor(x), bitwidth, float(fl), signed=signed,
                                rounding=rounding))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bitwidth,fl,unsigned", [(8, 4, False), (8, 6, True), (4, 2, False)])
def test_fake_quant_matches_tf_fake_quant(bitwidth, fl, unsigned):
    """The FakeQuant form is TF's kernel: compare with tf.quantization.fake_quant_with_min_max_vars."""
    from kerasq._compat import tf

    x = _values(1)
    qmin, qmax = integer_range(bitwidth, not unsigned)
    want = tf.quantization.fake_quant_with_min_max_vars(
        x, qmin * 2.0 ** -fl, qmax * 2.0 ** -fl, num_bits=bitwidth).numpy()
    got = _np(qops.fake_quant_dfp(ops.convert_to_tensor(x), bitwidth, float(fl),
                                  unsigned=unsigned))
    np.testing.assert_array_equal(got, want)


def test_frac_bits_matches_numpy():
    m = np.abs(_values(2))
    for signed in (True, False):
        want = numerics.dfp_frac_bits(m, 8, signed=signed)
        got = _np(qops.dfp_frac_bits(ops.convert_to_tensor(m), 8, signed=signed))
        np.testing.assert_array_equal(got.astype(np.int32), want)


@pytest.mark.parametrize("rounding", ["nearest", "nearest_even", "half_up"])
@pytest.mark.parametrize("exp_bits,mant_bits", [(5, 10), (4, 3), (3, 2)])
def test_minifloat_matches_numpy(rounding, exp_bits, mant_bits):
    x = _values(3)
    want = numerics.minifloat_quantize(x, exp_bits, mant_bits, rounding=rounding)
    got = _np(qops.minifloat_quantize(ops.convert_to_tensor(x), exp_bits, mant_bits,
                                      rounding=rounding))
    np.testing.assert_array_equal(np.abs(got), np.abs(want))
    np.testing.assert_array_equal(got[want != 0], want[want != 0])


@pytest.mark.parametrize("rounding", ["nearest", "nearest_even", "half_up"])
def test_pow2_matches_numpy(rounding):
    x = _values(4)
    want = numerics.pow2_quantize(x, -8, -1, rounding=rounding)
    got = _np(qops.pow2_quantize(ops.convert_to_tensor(x), -8, -1, rounding=rounding))
    np.testing.assert_array_equal(np.abs(got), np.abs(want))


def test_stochastic_rounding_is_unbiased_and_on_the_grid():
    x = np.full(20000, 0.3, np.float32)
    gen = keras.random.SeedGenerator(1)
    got = _np(qops.dfp_quantize(ops.convert_to_tensor(x), 8, 2.0, signed=True,
                                rounding="stochastic", seed=gen))
    assert set(np.unique(got)) <= {0.25, 0.5}
    assert abs(got.mean() - 0.3) < 0.005


def test_straight_through_gradient_inside_range_only():
    from kerasq._compat import tf

    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    x = tf.constant([-20.0, -0.3, 0.2, 7.95, 8.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = qops.fake_quant_dfp(x, 8, 4.0)  # range [-8, 127/16]
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 0, 0])
