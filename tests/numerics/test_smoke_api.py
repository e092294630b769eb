"""The public API exists and agrees with the textbook formula on a few hand-checked values."""

from __future__ import annotations

import math

import numpy as np

import kerasq.numerics as kn


def test_public_names():
    assert set(kn.__all__) == {
        "ROUNDING_MODES",
        "DEFAULT_ROUNDING",
        "round_values",
        "dfp_quantize",
        "dfp_range",
        "dfp_frac_bits",
        "minifloat_quantize",
        "minifloat_max",
        "pow2_quantize",
    }
    assert kn.ROUNDING_MODES == ("nearest", "nearest_even", "half_up", "stochastic")


def test_dfp_formula_small_grid():
    # B=4, fl=2: q in [-8, 7], step 1/4; x' = clamp(round_half_away(x*4), -8, 7) / 4
    xs = [0.3, 1.7, -5.0, 0.125, -0.125, 10.0]
    want = [max(-8, min(7, math.copysign(math.floor(abs(v) * 4 + 0.5), v))) / 4 for v in xs]
    np.testing.assert_array_equal(kn.dfp_quantize(xs, 4, 2, rounding="nearest"), want)
    # the default rounding is ties-to-even (kn.DEFAULT_ROUNDING): 0.5 -> 0, 1.5 -> 2 codes
    assert kn.DEFAULT_ROUNDING == "nearest_even"
    np.testing.assert_array_equal(kn.dfp_quantize([0.125, -0.125, 0.375], 4, 2), [0.0, 0.0, 0.5])
