"""kerasq.integer.run: a calibrated DFP model executed in integers equals the fake-quant model.

The reference is the fake-quantized Keras model itself (kerasq.quantize_model +
kerasq.calibrate, evaluated with training=False), i.e. the float simulation of
kerasq.numerics; the integer run goes through the kerasq.ops integer kernels (both the
C++ and the fallback path) and must give the same values bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras
import kerasq
import kerasq.integer
from kerasq.errors import UnsupportedLayerError


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[..., None] / 16.0).astype(np.float32)


def _sequential_cnn():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, strides=2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


def _residual_cnn():
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(12, 3, activation="relu")(x)
    y = keras.layers.Conv2D(12, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


@pytest.fixture(params=["custom", "fallback"])
def ops_mode(request, monkeypatch):
    import kerasq.ops

    if request.param == "fallback":
        monkeypatch.setenv("KERASQ_PY_OPS", "1")
    elif not kerasq.ops.custom_kernels_loaded():
        pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    return request.param


@pytest.mark.parametrize("build,config", [
    (_sequential_cnn, {}),
    (_sequential_cnn, {"bitwidth_weights": 4, "bitwidth_bias": 16}),
    (_sequential_cnn, {"rounding": "nearest_even", "bitwidth_activations": 6}),
    (_residual_cnn, {}),
    (_residual_cnn, {"bitwidth_activations": 12, "bitwidth_weights": 10, "rounding": "half_up"}),
])
def test_integer_run_equals_fake_quant_model(ops_mode, digits, build, config):
    qmodel = kerasq.quantize_model(build(), config)
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:556]
    expected = qmodel(x, training=False).numpy()
    actual = kerasq.integer.run(qmodel, x)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)
    assert len(np.unique(actual)) > 20  # a real output, not saturated or constant


def test_integer_outputs_are_integers_on_the_grid(digits):
    qmodel = kerasq.quantize_model(_sequential_cnn())
    kerasq.calibrate(qmodel, digits[:128])
    out = kerasq.integer.run(qmodel, digits[:64], return_integers=True)
    assert out.values.dtype == np.int64
    assert -128 <= out.values.min() and out.values.max() <= 127
    np.testing.assert_array_equal(out.to_float(), kerasq.integer.run(qmodel, digits[:64]))


def test_minifloat_model_is_rejected_with_the_layer_name(digits):
    qmodel = kerasq.quantize_model(_sequential_cnn(), {"precision": "minifloat"})
    kerasq.calibrate(qmodel, digits[:32])
    with pytest.raises(UnsupportedLayerError, match="conv2d|input"):
        kerasq.integer.run(qmodel, digits[:8])


def test_integer_run_with_biases_on_the_accumulator_grid(digits):
    """TFLite-style int32 biases (kerasq.schemes.shared_grids.link_accumulator_biases)."""
    from kerasq.schemes.shared_grids import link_accumulator_biases

    qmodel = kerasq.quantize_model(_residual_cnn())
    kerasq.calibrate(qmodel, digits[:256])
    if not link_accumulator_biases(qmodel):
        pytest.skip("no accumulator-grid bias quantizer in this scheme configuration")
    x = digits[256:456]
    np.testing.assert_array_equal(kerasq.integer.run(qmodel, x), qmodel(x, training=False).numpy())
