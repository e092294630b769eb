"""The per-layer facts table of kerasq.schemes.registry and declared quantization roles."""

from __future__ import annotations

import numpy as np

import kerasq
from kerasq._compat import keras
from kerasq.schemes import registry, slots


class _Scale2(keras.layers.Layer):
    """A custom layer whose output is a new real value (declares role "output")."""

    quantization_role = "output"

    def call(self, x):
        return x * 2.0


class _Shuffle(keras.layers.Layer):
    """A custom layer that only moves values (declares role "passthrough")."""

    quantization_role = "passthrough"

    def call(self, x):
        return x[..., ::-1]


def test_declared_class_attribute_role_is_honoured():
    assert registry.layer_role(_Scale2()) == "output"
    assert registry.layer_role(_Shuffle()) == "passthrough"

    class Plain(keras.layers.Layer):
        pass

    assert registry.layer_role(Plain()) is None
    reg = registry.KerasqQuantizeRegistry()
    assert type(reg.get_quantize_config(_Scale2())).__name__ == "OutputQuantizeConfig"
    assert type(reg.get_quantize_config(_Shuffle())).__name__ == "NoOpQuantizeConfig"


def test_quantize_model_quantizes_a_declared_output_layer():
    inp = keras.Input((4,))
    x = keras.layers.Dense(3, name="fc")(inp)
    x = _Scale2(name="scale")(x)
    out = _Shuffle(name="shuffle")(x)
    model = keras.Model(inp, out)
    with keras.utils.custom_object_scope({"_Scale2": _Scale2, "_Shuffle": _Shuffle}):
        qmodel = kerasq.quantize_model(model)
    roles = {(s.layer.name, s.role) for s in slots.iter_slots(qmodel)}
    assert ("scale", "output") in roles
    assert not any(name == "shuffle" for name, _ in roles)
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    kerasq.calibrate(qmodel, x)
    out_slot = next(s for s in slots.iter_slots(qmodel) if s.layer.name == "scale")
    fl = int(out_slot.base()[1]["frac_bits"].numpy())
    y = qmodel(x, training=False).numpy()
    np.testing.assert_array_equal(y * 2.0**fl, np.round(y * 2.0**fl))  # on the 2^-fl grid


def test_layer_facts_match_keras_layers():
    for name, facts in registry.LAYER_FACTS.items():
        cls = getattr(keras.layers, name)
        assert facts.role in registry.DECLARED_ROLES
        if facts.role != "weighted":
            continue
        layer = cls(2, 3) if "Conv" in name and "Depthwise" not in name else (
            cls(3) if "Depthwise" in name else cls(2))
        rank = next((r for tag, r in (("1D", 3), ("2D", 4), ("3D", 5)) if tag in name), 2)
        layer.build((1,) + (6,) * (rank - 2) + (4,))
        for attr, axes in facts.channel_axes.items():
            weight = getattr(layer, attr)
            assert all(-weight.shape.rank <= a < 0 for a in axes), (name, attr)
        assert getattr(layer, facts.kernel_attr) is not None
        if facts.foldable and facts.fold_axis != registry.FOLD_DEPTHWISE:
            kernel = getattr(layer, facts.kernel_attr)
            out_channels = layer.compute_output_shape(
                (1,) + (6,) * (rank - 2) + (4,))[-1]
            assert kernel.shape[facts.fold_axis] == out_channels, name
