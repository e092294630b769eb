"""The clip masks of the masked fake-quant ops against a numpy reference of the clip rule.

Bit i of the mask (byte i // 8, bit i % 8) must be 1 exactly where the clipped
straight-through gradient passes dy: lo <= x * 2^fl <= hi for DFP (per channel along the
last axis), |x| <= max for minifloat. Sizes cross the 64-element shard alignment, the
4096-element granule and partial last bytes; channel counts that do not divide 64.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import tf
import kerasq.ops
from kerasq.ops import _loader


@pytest.fixture(scope="module")
def lib():
    if not kerasq.ops.custom_kernels_loaded():
        pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    return _loader.library()


def _unpack(mask: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(mask, bitorder="little")[:n].astype(bool)


def _dfp_in_range(x: np.ndarray, fl: np.ndarray, bitwidth: int, signed: bool) -> np.ndarray:
    lo, hi = (-(2.0 ** (bitwidth - 1)), 2.0 ** (bitwidth - 1) - 1) if signed else (0.0, 2.0**bitwidth - 1)
    scaled = x.astype(np.float64) * np.exp2(fl.astype(np.float64))  # exact in float64
    return (scaled >= lo) & (scaled <= hi)


@pytest.mark.parametrize("shape", [(1,), (13,), (4096,), (4097,), (100003,), (37, 3), (999, 100),
                                   (2, 50, 64)])
@pytest.mark.parametrize("signed", [True, False])
def test_dfp_mask_bits(lib, shape, signed):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 12).astype(np.float32)
    x.flat[: min(8, x.size)] = [127 / 16, 128 / 16, -8.0, -8.0625, 0.0, -0.0, np.nan, 16.0][: min(8, x.size)]
    for fl in (np.array(4, np.int32), (np.arange(shape[-1]) % 7 - 2).astype(np.int32)):
        y, mask = lib.kerasq_fake_quant_dfp_masked(tf.constant(x), tf.constant(fl),
                                                   tf.constant(0, tf.int64), bitwidth=8,
                                                   signed=signed)
        assert mask.shape == ((x.size + 7) // 8,)
        assert mask.dtype == tf.uint8
        expected = _dfp_in_range(x, np.broadcast_to(fl, shape), 8, signed).ravel()
        np.testing.assert_array_equal(_unpack(mask.numpy(), x.size), expected)
        if x.size % 8:  # padding bits of the last byte are zero
            assert mask.numpy()[-1] >> (x.size % 8) == 0


@pytest.mark.parametrize("n", [5, 4096, 70001])
def test_minifloat_mask_bits(lib, n):
    rng = np.random.default_rng(n)
    x = (rng.normal(size=n) * 300).astype(np.float32)
    x[:4] = [480.0, -480.0, 480.00003, np.nan]
    _, mask = lib.kerasq_fake_quant_minifloat_masked(tf.constant(x), tf.constant(0, tf.int64),
                                                     exp_bits=4, mant_bits=3)
    np.testing.assert_array_equal(_unpack(mask.numpy(), n), np.abs(x) <= 480.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_mask_grad_selects_dy(lib, dtype):
    rng = np.random.default_rng(0)
    n = 10007
    dy = rng.normal(size=n).astype(dtype)
    mask = rng.integers(0, 256, (n + 7) // 8).astype(np.uint8)
    dx = lib.kerasq_clip_mask_grad(tf.constant(dy), tf.constant(mask)).numpy()
    np.testing.assert_array_equal(dx, np.where(_unpack(mask, n), dy, 0).astype(dtype))


def test_clip_mask_grad_rejects_wrong_mask_size(lib):
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask must have shape"):
        lib.kerasq_clip_mask_grad(tf.zeros([17]), tf.zeros([2], tf.uint8))
