"""kerasq's own schemes (minifloat, power-of-two weights, 4-bit DFP) deploy to a float TFLite
file with the same numbers as the Keras fake-quant model; minifloat probing vs numerics."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.export import export_tflite
from kerasq.export.spec import activation_spec


@pytest.fixture(scope="module")
def digits_and_model():
    from kerasq._compat import keras
    from kerasq.demo import build_cnn, load_digits_data

    x_train, y_train, x_test, _ = load_digits_data()
    model = build_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=2, verbose=0)
    return model, x_train, x_test


@pytest.mark.parametrize(
    "config",
    [
        dict(precision="minifloat", exp_bits=4, mant_bits=3),
        dict(precision="minifloat", exp_bits=5, mant_bits=10),
        dict(precision="pow2_weights"),
        dict(precision="dfp", bitwidth_weights=4, bitwidth_activations=4),
        dict(precision="dfp", bitwidth_weights=12, bitwidth_activations=12),
    ],
)
def test_float_target_reproduces_kerasq_scheme(digits_and_model, config):
    import kerasq

    model, x_train, x_test = digits_and_model
    qmodel = kerasq.quantize_model(model, kerasq.QuantizationConfig(**config))
    kerasq.calibrate(qmodel, x_train[:256])
    result = export_tflite(qmodel, target="float", verify_data=x_test)
    # identical up to float summation order (TF and TFLite add the products of wide
    # mantissas in different orders, which can move a value across a rounding boundary)
    scale = float(np.abs(qmodel.predict(x_test, verbose=0)).max())
    assert result.report.exact_fraction >= 0.99
    assert result.report.max_abs_error <= 2.0**-9 * max(scale, 1.0)
    assert result.report.top1_agreement >= 0.995


@pytest.mark.parametrize(
    "exp_bits,mant_bits,subnormals", [(4, 3, False), (5, 10, False), (2, 1, False), (5, 2, True)]
)
@pytest.mark.parametrize("rounding", ["nearest", "nearest_even", "half_up"])
def test_minifloat_probe_matches_numerics(exp_bits, mant_bits, subnormals, rounding):
    from kerasq import numerics
    from kerasq._compat import tf
    from kerasq.export.layers import MinifloatQuantize

    def fn(x):
        return numerics.minifloat_quantize(
            np.asarray(x, np.float32), exp_bits, mant_bits, rounding=rounding, subnormals=subnormals
        )

    spec = activation_spec(fn)
    assert (spec.kind, spec.exp_bits, spec.mant_bits) == ("minifloat", exp_bits, mant_bits)
    assert spec.subnormals == subnormals and spec.rounding == rounding
    rng = np.random.default_rng(3)
    x = (rng.choice([-1, 1], 5000) * np.exp2(rng.uniform(-20, 20, 5000))).astype(np.float32)
    layer = MinifloatQuantize(exp_bits, mant_bits, subnormals, rounding)
    np.testing.assert_array_equal(layer(tf.constant(x)).numpy(), fn(x))
