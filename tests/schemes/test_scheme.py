"""KerasqQuantizeScheme: the layout transform runs once in quantize_model, and the scheme
still works directly with tfmot's quantize_apply."""

from __future__ import annotations

import numpy as np

import kerasq
from kerasq._compat import keras, tfmot
from kerasq.schemes import scheme as scheme_module
from kerasq.schemes.config import QuantizationConfig


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    out = keras.layers.ReLU(name="relu")(x)
    return keras.Model(inp, out)


def test_quantize_model_runs_the_layout_transform_once(monkeypatch):
    calls = []
    original = scheme_module.KerasqLayoutTransform.apply

    def counting(self, model, layer_quantize_map):
        calls.append(model.name)
        return original(self, model, layer_quantize_map)

    monkeypatch.setattr(scheme_module.KerasqLayoutTransform, "apply", counting)
    qmodel = kerasq.quantize_model(_model())
    assert len(calls) == 1
    names = [l.name for l in qmodel.layers]
    assert not any("bn" in n for n in names)  # folded once, not left behind
    assert sum(type(l).__name__ == "QuantizeLayer" for l in qmodel.layers) == 1


def test_scheme_with_tfmot_quantize_apply_matches_quantize_model():
    model = _model()
    x = np.random.RandomState(0).rand(4, 6, 6, 1).astype(np.float32)
    kq = tfmot().quantization.keras
    config = QuantizationConfig(precision="float")
    direct = kq.quantize_apply(kq.quantize_annotate_model(model),
                               scheme_module.KerasqQuantizeScheme(config))
    ours = kerasq.quantize_model(model, config)
    np.testing.assert_allclose(direct(x).numpy(), ours(x).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
