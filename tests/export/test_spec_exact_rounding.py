"""export.spec rounds through kerasq.numerics: exact, no double rounding in floor(|y| + 0.5)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from kerasq.export import spec
from kerasq.numerics import rounding
from kerasq.numerics.grid import GridSpec


def _exact(y: float, mode: str) -> float:
    """Rounding of the exact rational value of ``y`` (the definition of each mode)."""
    v = Fraction(y)
    low = v.numerator // v.denominator
    frac = v - low
    if frac != Fraction(1, 2):
        return float(low + (frac > Fraction(1, 2)))
    if mode == "half_up":
        return float(low + 1)
    if mode == "nearest":
        return float(low + 1 if v > 0 else low)
    return float(low if low % 2 == 0 else low + 1)


@pytest.mark.parametrize("mode", ["nearest", "nearest_even", "half_up"])
def test_spec_rounding_is_exact_at_the_double_rounding_cases(mode):
    below_half = np.nextafter(0.5, 0.0)  # 0.49999999999999994: |y| + 0.5 rounds to 1.0
    big = 2.0**52 + 1.0                  # odd integer: big + 0.5 rounds to big + 1
    ys = np.array([below_half, -below_half, big, -big, 2.5, -2.5, 0.5, -0.5, 1.5])
    assert spec.np_round is rounding.np_round  # export has no rounding of its own
    got = spec.np_round(ys, mode)
    np.testing.assert_array_equal(got, [_exact(y, mode) for y in ys])


def test_grid_spec_is_reexported_and_typed():
    assert spec.GridSpec is GridSpec
    s = GridSpec(kind="dfp", bitwidth=8, frac_bits=3, signed=False)
    assert (s.qmin, s.qmax, s.step) == (0, 255, 0.125)
    assert spec._from_dict(s.as_dict()) == s
