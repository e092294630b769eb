"""The one-op range step of DFP activation quantizers (``Kerasq>DfpRangeUpdate``) against
the quantizer's TF ops (``merged_range`` + ``params_from_range``) and a numpy reference.

Both run in a ``tf.function`` (where the quantizers use the op); every output must agree
bit for bit (NaN with NaN; -0.0 and +0.0 count as equal), over first and later steps,
signedness from data / fixed, the minmax and max_abs estimators, several bitwidths and
ranges that reach NaN, the infinities, zeros, subnormals and huge values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kerasq.ops
from kerasq._compat import tf
from kerasq.schemes.quantizers import DFPActivationQuantizer

pytestmark = pytest.mark.skipif(not kerasq.ops.custom_kernels_loaded(),
                                reason="C++ ops not available")

_BATCHES = {
    "normal": np.random.default_rng(0).normal(0, 3, (2, 70001)).astype(np.float32),
    "relu": np.abs(np.random.default_rng(1).normal(0, 0.02, (4, 300))).astype(np.float32),
    "negative": -np.arange(1, 100, dtype=np.float32),
    "zeros": np.array([0.0, -0.0, 0.0], np.float32),
    "subnormal": np.array([1e-40, -3e-39], np.float32),
    "power_of_two": np.array([-4.0, 0.5, 2.0], np.float32),
    "huge": np.array([3e38, -1.0], np.float32),
    "inf": np.array([1.0, np.inf], np.float32),
    "nan": np.array([1.0, np.nan, -2.0], np.float32),
    "empty": np.zeros((0, 3), np.float32),
}
_STORED = [(0, 0.0, 0.0), (3, -0.75, 5.0), (1, 0.0, 1e-3), (2, -1e-39, 1e-39),
           (5, -np.inf, np.inf), (4, np.nan, 1.0), (7, 2.0, 3.0)]


def _ordered(v):
    v = np.float32(v)
    return "nan" if np.isnan(v) else float(v)


def _flush(v):
    """Subnormals as zeros of their sign: TF's kernels run with denormals flushed."""
    v = np.array(v, np.float32)
    return np.where(np.abs(v) < np.finfo(np.float32).tiny, np.copysign(0.0, v), v).astype(
        np.float32)


def _numpy_reference(x, count, smin, smax, bits, signed, max_abs):
    x, smin, smax = _flush(x), _flush(smin), _flush(smax)
    nan = np.float32(np.nan)
    bmin = (nan if np.isnan(x).any() else x.min()) if x.size else np.float32(np.inf)
    bmax = (nan if np.isnan(x).any() else x.max()) if x.size else np.float32(-np.inf)
    if max_abs:
        bmax = nan if np.isnan(bmin) or np.isnan(bmax) else max(bmax, -bmin)
    lo, hi = (np.inf, -np.inf) if count == 0 else (smin, smax)
    new_min = nan if np.isnan(lo) or np.isnan(bmin) else min(lo, bmin)
    new_max = nan if np.isnan(hi) or np.isnan(bmax) else max(hi, bmax)
    a = nan if np.isnan(new_min) or np.isnan(new_max) else \
        np.float32(max(abs(new_min), new_max if max_abs else abs(new_max)))
    il = math.ceil(math.log2(a)) if a >= np.finfo(np.float32).tiny and np.isfinite(a) else (
        128 if a == np.inf else 0)
    unsigned = (new_min >= 0) if signed is None else not signed
    fl = bits - il - (0 if max_abs or unsigned else 1)
    scale = 0.0 if fl < -126 else (np.inf if fl > 127 else 2.0 ** fl)
    return [_ordered(v) for v in (new_min, new_max, fl, scale)]


@pytest.mark.parametrize("estimator", ["minmax", "max_abs"])
@pytest.mark.parametrize("signed", [None, True, False])
@pytest.mark.parametrize("bits", [4, 8, 16])
def test_fused_range_step_equals_tf_ops_and_numpy(estimator, signed, bits):
    q = DFPActivationQuantizer(bitwidth=bits, signed=signed, range_estimator=estimator)
    weights = {"count": tf.Variable(0, dtype=tf.int64), "min": tf.Variable(0.0),
               "max": tf.Variable(0.0)}

    @tf.function
    def both(x):
        fused = q.fused_range_update(x, weights)
        assert fused is not None
        new_min, new_max = q.merged_range(x, weights)
        fl, scale, _ = q.params_from_range(new_min, new_max)
        return [fused[0], fused[1], fused[2][0], fused[2][1]], [new_min, new_max, fl, scale]

    for name, x in _BATCHES.items():
        for count, smin, smax in _STORED:
            weights["count"].assign(count)
            weights["min"].assign(smin)
            weights["max"].assign(smax)
            fused, ref = both(tf.constant(x))
            fused = [_ordered(v.numpy()) for v in fused]
            assert fused == [_ordered(v.numpy()) for v in ref], (name, count, smin, smax)
            assert fused == _numpy_reference(x, count, smin, smax, bits, signed,
                                             estimator == "max_abs"), (name, count, smin, smax)


def _op_types(quantizer, weights, x):
    def update(t):
        quantizer.update_range(t, weights)

    graph = tf.function(update).get_concrete_function(x).graph
    return {op.type for op in graph.get_operations()}


def test_quantizer_uses_the_op_only_in_graph_mode_on_one_replica():
    q = DFPActivationQuantizer()
    weights = {"count": tf.Variable(0, dtype=tf.int64),
               **{k: tf.Variable(0.0) for k in ("min", "max", "frac_bits", "scale", "offset")}}
    x = tf.constant([1.0, -2.0])
    assert q.fused_range_update(x, weights) is None  # eager: numerics' checked path
    assert "Kerasq>DfpRangeUpdate" in _op_types(q, weights, x)
    for other in (DFPActivationQuantizer(range_estimator="ema"),
                  DFPActivationQuantizer(power2_range=False),
                  DFPActivationQuantizer(frac_bits=5)):
        assert "Kerasq>DfpRangeUpdate" not in _op_types(other, weights, x)


@pytest.mark.parametrize("estimator", ["minmax", "max_abs"])
@pytest.mark.parametrize("signed", [None, True, False])
def test_fused_relu_range_is_the_range_of_max_x_0(estimator, signed):
    """relu=True: the op's outputs on x are the numpy reference's on max(x, 0) (NaN kept;
    an empty batch stays empty)."""
    q = DFPActivationQuantizer(bitwidth=8, signed=signed, range_estimator=estimator)
    weights = {"count": tf.Variable(0, dtype=tf.int64), "min": tf.Variable(0.0),
               "max": tf.Variable(0.0)}
    fused_relu = tf.function(lambda x: q.fused_range_update(x, weights, relu=True))
    for name, x in _BATCHES.items():
        relu_x = np.where(np.isnan(x), x, np.maximum(x, np.float32(0.0))).astype(np.float32)
        for count, smin, smax in _STORED:
            weights["count"].assign(count)
            weights["min"].assign(smin)
            weights["max"].assign(smax)
            new_min, new_max, (fl, scale, _) = fused_relu(tf.constant(x))
            got = [_ordered(v.numpy()) for v in (new_min, new_max, fl, scale)]
            assert got == _numpy_reference(relu_x, count, smin, smax, 8, signed,
                                           estimator == "max_abs"), (name, count, smin, smax)
