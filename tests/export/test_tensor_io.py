"""kerasq.export.tensor_io against an exact-rational transcription of TFLite's affine
mapping (q = clip(round_half_even(x / scale) + zero_point)), ties included."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from kerasq.export.tensor_io import from_tensor, to_tensor


def _reference(x: np.ndarray, scale: float, zero: int, dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    # Python's round() of a Fraction is exact and rounds ties to even
    codes = [round(Fraction(float(v)) / Fraction(scale)) + zero for v in x]
    return np.array([min(max(c, info.min), info.max) for c in codes], dtype)


@pytest.mark.parametrize("dtype, scale, zero", [
    (np.int8, 2.0 ** -3, 0), (np.int8, 2.0 ** -5, -128), (np.uint8, 2.0 ** -2, 0),
    (np.int16, 2.0 ** -10, 0), (np.int8, 0.0123, 3),
])
def test_to_tensor_and_back(dtype, scale, zero):
    detail = {"dtype": dtype, "quantization": (scale, zero)}
    # ties (k + 1/2 steps), values beyond both ends, and random values
    x = np.concatenate([(np.arange(-300, 300) + 0.5) * scale,
                        np.random.default_rng(0).uniform(-40, 40, 1000)]).astype(np.float32)
    q = to_tensor(x, detail)
    assert q.dtype == dtype
    np.testing.assert_array_equal(q, _reference(x, scale, zero, dtype))
    expected = [float((Fraction(int(c)) - zero) * Fraction(scale)) for c in q]
    np.testing.assert_array_equal(from_tensor(q, detail), np.float32(expected))


def test_float_and_index_tensors_pass_through():
    x = np.float32([0.5, -1.25])
    np.testing.assert_array_equal(to_tensor(x, {"dtype": np.float32, "quantization": (0.0, 0)}),
                                  x)
    index = np.int32([3, 1])
    np.testing.assert_array_equal(from_tensor(index, {"dtype": np.int32,
                                                      "quantization": (0.0, 0)}), index)
