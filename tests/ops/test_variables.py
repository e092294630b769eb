"""VariableSnapshot: a change of any variable's bytes is detected, nothing else is.

Both paths (the C++ snapshot resource and the pure-TF fallback) against the variables'
own numpy bytes.
"""

from __future__ import annotations

import numpy as np

from kerasq._compat import tf
from kerasq.ops.variables import VariableSnapshot, variable_bytes


def _variables(rng, big=False):
    size = 300_000 if big else 7  # big: more than 1 MB, compared on several threads
    return [tf.Variable(rng.normal(size=(size,)).astype(np.float32)),
            tf.Variable(rng.normal(size=(3, 4)).astype(np.float64)),
            tf.Variable(rng.integers(-100, 100, (5,)).astype(np.int8)),
            tf.Variable(np.int64(7)),
            tf.Variable([True, False, True]),
            tf.Variable(np.zeros([0, 3], np.float32))]


def test_every_variable_and_dtype_is_checked(ops_path):
    rng = np.random.default_rng(0)
    for big in (False, True):
        variables = _variables(rng, big)
        snapshot = VariableSnapshot(variables)
        assert snapshot.unchanged()
        for v in variables:
            if v.shape.num_elements() == 0:
                continue
            old = v.numpy()
            flat = old.reshape(-1).copy()
            flat[-1] = (not flat[-1]) if flat.dtype == bool else flat[-1] + 1
            v.assign(flat.reshape(old.shape))
            assert not snapshot.unchanged(), v.dtype
            v.assign(old)  # the same bytes again
            assert snapshot.unchanged(), v.dtype


def test_bytes_not_values(ops_path):
    v = tf.Variable([0.0, np.nan], dtype=tf.float32)
    snapshot = VariableSnapshot([v])
    v.assign([0.0, np.nan])
    assert snapshot.unchanged()  # the same NaN bytes
    v.assign([-0.0, np.nan])
    assert not snapshot.unchanged()  # -0.0 has other bytes than 0.0
    np.testing.assert_array_equal(variable_bytes([v]), np.array([-0.0, np.nan], np.float32)
                                  .view(np.uint8))


def test_snapshot_of_a_keras_model(ops_path):
    from kerasq._compat import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    snapshot = VariableSnapshot(model.variables)
    model(np.ones([2, 4], np.float32))  # running the model writes nothing
    assert snapshot.unchanged()
    model.layers[-1].bias.assign_add(tf.ones([3]))
    assert not snapshot.unchanged()
