"""to_keras3 on hand-built tf_keras models: its refusals, the negative-slope LeakyReLU
substitute (against numpy's max(x, a·x)) and the twins' registration."""

from __future__ import annotations

import numpy as np
import pytest


def test_negative_leaky_relu_becomes_an_exact_fixed_prelu():
    from kerasq._compat import keras
    from kerasq.converters.caffe.keras3 import to_keras3

    x = keras.Input((4, 5, 3), name="data")
    model = keras.Model(x, keras.layers.LeakyReLU(alpha=-0.5, name="relu")(x))
    k3_model = to_keras3(model)
    layer = k3_model.get_layer("relu")
    assert type(layer).__name__ == "PReLU" and not layer.trainable_weights
    v = np.random.RandomState(0).randn(2, 4, 5, 3).astype(np.float32)
    want = np.maximum(v, np.float32(-0.5) * v)
    np.testing.assert_array_equal(np.asarray(k3_model(v)), want)


def test_a_layer_without_keras3_counterpart_is_named():
    from kerasq._compat import keras
    from kerasq.converters.caffe.keras3 import to_keras3
    from kerasq.errors import UnsupportedLayerError

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    x = keras.Input((3,), name="data")
    model = keras.Model(x, Doubler(name="twice")(x))
    with pytest.raises(UnsupportedLayerError, match="twice: Doubler has no Keras 3 equivalent"):
        to_keras3(model)


def test_only_functional_tf_keras_models():
    from kerasq._compat import keras
    from kerasq.converters.caffe.keras3 import keras3, to_keras3
    from kerasq.errors import KerasqError

    k3 = keras3()
    inp = k3.Input((2,))
    with pytest.raises(KerasqError, match="functional tf_keras model"):
        to_keras3(k3.Model(inp, k3.layers.Dense(1)(inp)))
    with pytest.raises(KerasqError, match="functional tf_keras model"):
        to_keras3(keras.Sequential())


def test_twins_are_registered_under_kerasq_and_point_back():
    from kerasq.converters.caffe.keras3 import KERAS3_LAYERS, keras3
    from kerasq.converters.caffe.keras_layers import ALL_LAYERS

    k3 = keras3()
    assert set(KERAS3_LAYERS) == {cls.__name__ for cls in ALL_LAYERS}
    for cls in ALL_LAYERS:
        made = KERAS3_LAYERS[cls.__name__]
        assert made.tf_keras_class is cls and issubclass(made, k3.layers.Layer)
        assert k3.saving.get_registered_name(made) == f"kerasq>{cls.__name__}"
        assert k3.saving.get_registered_object(f"kerasq>{cls.__name__}") is made


def test_every_twin_has_a_keras_ops_call_or_a_reason_to_need_tensorflow():
    """Each converter layer is in exactly one of NEUTRAL_CALLS / TENSORFLOW_ONLY, and its
    twin's ``call`` and ``tensorflow_only_reason`` follow (the docs tables read the latter)."""
    from kerasq.converters.caffe.keras3 import KERAS3_LAYERS, NEUTRAL_CALLS, TENSORFLOW_ONLY

    assert set(NEUTRAL_CALLS) | set(TENSORFLOW_ONLY) == set(KERAS3_LAYERS)
    assert not set(NEUTRAL_CALLS) & set(TENSORFLOW_ONLY)
    for name, cls in KERAS3_LAYERS.items():
        if name in NEUTRAL_CALLS:
            assert cls.call is NEUTRAL_CALLS[name] and cls.tensorflow_only_reason is None
        else:
            assert cls.tensorflow_only_reason == TENSORFLOW_ONLY[name]
            assert cls.call is not cls.tf_keras_class.call  # behind the backend check
