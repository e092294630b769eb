"""Grid probing and exact float rounding, against numpy references written from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.errors import ExportError
from kerasq.export.layers import GridQuantize
from kerasq.export.spec import activation_spec, weight_spec_from_values
from kerasq.numerics.rounding import tf_round


def ref_round(y, mode):
    out = []
    for v in np.asarray(y, np.float64).ravel():
        if mode == "nearest":
            r = math.copysign(math.floor(abs(v) + 0.5), v)
        elif mode == "half_up":
            r = math.floor(v + 0.5)
        else:
            r = round(v)  # Python's round is half to even
        out.append(r)
    return np.array(out).reshape(np.shape(y))


def ref_dfp(x, bits, fl, signed, mode):
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return np.clip(ref_round(np.asarray(x, np.float64) * 2.0**fl, mode), qmin, qmax) * 2.0**-fl


BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0)))  # y − floor(y) rounds for y < 0
TIES = np.array(
    [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 1e6 + 0.5, -(2.0**22) - 0.5,
     BELOW_HALF, -BELOW_HALF, -1 - BELOW_HALF],
    np.float32,
)


@pytest.mark.parametrize("mode", ["nearest", "half_up", "nearest_even"])
def test_export_rounding_matches_reference(mode):
    """The export layers round through numerics' tf_round, in the form they call it."""
    rng = np.random.default_rng(0)
    y = np.concatenate([TIES, rng.normal(scale=100, size=1000).astype(np.float32)])
    got = tf_round(tf.constant(y), mode, signed_zeros=False).numpy()
    np.testing.assert_array_equal(got, ref_round(y, mode))


@pytest.mark.parametrize(
    "bits,fl,signed,mode",
    [
        (8, 4, True, "nearest"),
        (8, 7, False, "half_up"),
        (4, 1, True, "nearest_even"),
        (12, 9, True, "nearest"),
        (16, -2, True, "half_up"),
        (2, 0, True, "nearest"),
    ],
)
def test_grid_quantize_exact_mode(bits, fl, signed, mode):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=4000) * 2.0 ** (bits - 1 - fl) / 2).astype(np.float32)
    x[:50] = (np.arange(50) - 25 + 0.5) * 2.0**-fl  # exact ties
    x[50:53] = np.float32([-BELOW_HALF, BELOW_HALF, -1 - BELOW_HALF]) * np.float32(2.0**-fl)
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    got = GridQuantize(fl, qmin, qmax, mode, "exact")(x).numpy()
    np.testing.assert_array_equal(got, ref_dfp(x, bits, fl, signed, mode))


@pytest.mark.parametrize(
    "bits,fl,signed,mode",
    [
        (8, 4, True, "nearest"),
        (8, 8, False, "half_up"),
        (5, 2, True, "nearest_even"),
        (16, 12, True, "nearest"),
        (3, -1, False, "half_up"),
        (24, 20, True, "nearest_even"),
    ],
)
def test_activation_spec_recovers_numpy_quantizer(bits, fl, signed, mode):
    spec = activation_spec(lambda x: ref_dfp(x, bits, fl, signed, mode).astype(np.float32))
    assert (spec.kind, spec.bitwidth, spec.frac_bits, spec.signed) == ("dfp", bits, fl, signed)
    same = {"nearest", "half_up"} if not signed else {mode}  # equal without negative ties
    assert spec.rounding in same | {mode}


def test_activation_spec_identity_and_pow2():
    assert activation_spec(lambda x: x).kind == "none"

    def pow2(x):
        x = np.asarray(x, np.float64)
        k = np.clip(np.round(np.log2(np.maximum(np.abs(x), 1e-30))), -8, -1)
        return np.where(x == 0, 0.0, np.sign(x) * 2.0**k).astype(np.float32)

    spec = activation_spec(pow2)
    assert (spec.kind, spec.exp_min, spec.exp_max) == ("pow2", -8, -1)


def test_activation_spec_rejects_offset_grid():
    with pytest.raises(ExportError, match="does not map 0 to 0"):
        activation_spec(lambda x: np.round(np.asarray(x) * 4 + 0.6) / 4)


def test_weight_spec_from_values_finds_coarsest_grid_per_channel():
    w = np.array([[0.5, 0.25, 0.0], [-0.75, 0.125, 0.0], [1.0, -2.0, 0.0]])
    spec = weight_spec_from_values(w, axis=-1)
    np.testing.assert_array_equal(spec.frac_bits, [2, 3, 3])
    assert spec.bitwidth == 5  # channel 1 holds the code -2·2^3 = -16: 5 signed bits
