"""range_min_max against numpy's min/max and TF's reduce_min/reduce_max, on both paths.

Sizes cross the 32-element vector step, the 64-element vector threshold and the
32768-element block of the sharded kernel (so several threads combine partials); the
extremes are placed at the start, the end and inside the scalar tail. NaN anywhere must
give NaN for both results, an empty tensor (+inf, -inf), as TF's reductions.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.ops import range_min_max


def _bits(v) -> int:
    return int(np.asarray(v, np.float32).view(np.int32))


def _pair(x):
    lo, hi = range_min_max(tf.constant(x))
    return np.float32(lo.numpy()), np.float32(hi.numpy())


@pytest.mark.parametrize("shape", [(1,), (31,), (63,), (64,), (65,), (1000,), (32768,),
                                   (32769,), (3, 70001), (16, 32, 32, 8)])
def test_random_values_match_numpy(ops_path, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    lo, hi = _pair(x)
    assert _bits(lo) == _bits(x.min()) and _bits(hi) == _bits(x.max())


@pytest.mark.parametrize("where", ["first", "last", "middle"])
@pytest.mark.parametrize("n", [5, 70, 100003])
def test_extremes_at_any_position(ops_path, where, n):
    x = np.linspace(-1.0, 1.0, n, dtype=np.float32)[::-1].copy()
    i = {"first": 0, "last": n - 1, "middle": n // 2 + 1}[where]
    x[i], x[(i + 1) % n] = -1e30, 3e30
    lo, hi = _pair(x)
    assert (lo, hi) == (np.float32(-1e30), np.float32(3e30))
    assert (lo, hi) == (x.min(), x.max())


def test_all_negative_and_infinities(ops_path):
    x = -np.arange(1, 200, dtype=np.float32)
    assert _pair(x) == (np.float32(-199.0), np.float32(-1.0))
    x[7], x[150] = -np.inf, np.inf
    assert _pair(x) == (-np.inf, np.inf)
    assert _pair(np.full(100, -np.inf, np.float32)) == (-np.inf, -np.inf)


@pytest.mark.parametrize("n", [1, 2, 40, 33000, 200001])
@pytest.mark.parametrize("nan_at", [0, -1, "middle"])
def test_nan_propagates_like_tf(ops_path, n, nan_at):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    x[n // 2 if nan_at == "middle" else nan_at] = np.nan
    lo, hi = _pair(x)
    assert np.isnan(lo) and np.isnan(hi)
    assert np.isnan(tf.reduce_min(x).numpy()) and np.isnan(tf.reduce_max(x).numpy())
    x[0] = -np.inf  # a NaN beats the infinities too (negative-signed NaN as well)
    x[n // 2 if nan_at == "middle" else nan_at] = -np.float32(np.nan)
    assert all(np.isnan(v) for v in _pair(x))


def test_empty_gives_infinities_like_tf(ops_path):
    for shape in [(0,), (3, 0, 2)]:
        x = np.zeros(shape, np.float32)
        assert _pair(x) == (np.float32(np.inf), np.float32(-np.inf))
        assert (tf.reduce_min(x).numpy(), tf.reduce_max(x).numpy()) == (np.inf, -np.inf)


def test_signed_zeros_equal_tf_values(ops_path):
    # -0.0 == 0.0: the values are TF's; the C++ kernel returns -0.0 for the min and +0.0
    # for the max of mixed zeros, whatever the order (TF's choice depends on the order).
    for x in (np.array([0.0, -0.0] * 100, np.float32), np.array([-0.0, 0.0] * 50000, np.float32)):
        lo, hi = _pair(x)
        assert lo == tf.reduce_min(x).numpy() == 0.0 and hi == tf.reduce_max(x).numpy() == 0.0
        if ops_path == "custom":
            assert np.signbit(lo) and not np.signbit(hi)


def test_float64_uses_tf_reductions(ops_path):
    x = np.array([1.0, -2.5, 1e300], np.float64)
    lo, hi = range_min_max(tf.constant(x))
    assert lo.dtype == tf.float64 and (lo.numpy(), hi.numpy()) == (-2.5, 1e300)


def test_in_tf_function_and_shape(ops_path):
    f = tf.function(range_min_max)
    lo, hi = f(tf.constant([[3.0, -1.0], [2.0, 7.0]]))
    assert lo.shape == () and hi.shape == ()
    assert (lo.numpy(), hi.numpy()) == (-1.0, 7.0)


def test_gradient_is_tf_reduction_gradient(ops_path):
    x = tf.constant([1.0, 5.0, -2.0, 5.0, -2.0, -2.0, 0.5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        lo, hi = range_min_max(x)
        y = 3.0 * lo + 2.0 * hi
        y_ref = 3.0 * tf.reduce_min(x) + 2.0 * tf.reduce_max(x)
        only_hi = 2.0 * range_min_max(x)[1]
    g = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(g, tape.gradient(y_ref, x).numpy())
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(tape.gradient(only_hi, x).numpy(), [0, 1, 0, 1, 0, 0, 0])


def test_subnormals_count_as_zeros_like_tf(ops_path):
    # TF's kernels run with denormals flushed: reduce_min/max of subnormals give zeros
    x = np.array([1e-40, -3e-39, 5e-39] * 30, np.float32)
    lo, hi = _pair(x)
    assert lo == tf.reduce_min(x).numpy() == 0.0 and hi == tf.reduce_max(x).numpy() == 0.0
    x[17] = -2.0
    assert _pair(x) == (np.float32(-2.0), np.float32(0.0))
