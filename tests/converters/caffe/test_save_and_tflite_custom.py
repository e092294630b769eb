"""Converted models using the extra layers survive .h5 save/reload and TFLite conversion.

One net with every layer type that needs a custom Keras layer (plus stock-mapped ones) is
loaded with ``kerasq.converters.caffe.load``; the reloaded .h5 model and the TFLite model
(run in the ai_edge_litert interpreter, builtin ops only) must reproduce the numpy reference.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

from kerasq._compat import keras, tf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import caffe_reference as ref  # noqa: E402
from netbuilder import NetBuilder, assert_caffe_close  # noqa: E402

SHAPE = (1, 4, 6, 5)


def _net() -> NetBuilder:
    nb = NetBuilder("extra_layers", seed=40)
    x = nb.input("data", SHAPE)
    a = nb.add("AbsVal", [x], name="abs")
    nb.add("BNLL", [x], name="bnll")
    nb.add("Power", [a], name="pow", param="power_param { power: 1.5 scale: 0.5 shift: 0.25 }")
    nb.add("Exp", [x], name="exp", param="exp_param { base: 2 scale: 0.5 }")
    nb.add("Log", [a], name="log", param="log_param { base: 10 shift: 1 }")
    nb.add("Threshold", [x], name="thr", param="threshold_param { threshold: 0.1 }")
    nb.add("Clip", [x], name="clip", param="clip_param { min: -0.3 max: 0.4 }")
    nb.add("Swish", [x], name="swish", param="swish_param { beta: 0.7 }")
    nb.add("PReLU", [x], name="prelu", blobs=[nb.randn(4)])
    nb.add("Bias", [x], name="bias", blobs=[nb.randn(4)])
    nb.add(
        "Slice",
        [x],
        tops=["s0", "s1"],
        name="slice",
        param="slice_param { axis: 2 slice_point: 2 }",
    )
    nb.add("Tile", ["s0"], name="tile", param="tile_param { axis: 1 tiles: 2 }")
    nb.add("Reduction", [x], name="red", param="reduction_param { operation: SUMSQ axis: 2 }")
    nb.add("ArgMax", [x], name="am", param="argmax_param { axis: 1 top_k: 2 }")
    nb.add("ShuffleChannel", [x], name="shuf", param="shuffle_channel_param { group: 2 }")
    nb.add("LRN", [x], name="lrn_a", param="lrn_param { local_size: 3 alpha: 0.5 k: 2 }")
    nb.add(
        "LRN",
        [x],
        name="lrn_w",
        param="lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 }",
    )
    nb.add("MVN", [x], name="mvn")
    nb.add(
        "Normalize",
        [x],
        name="norm",
        param="norm_param { across_spatial: false channel_shared: false }",
        blobs=[nb.randn(4) + 5],
    )
    nb.add("Interp", [x], name="interp", param="interp_param { zoom_factor: 2 }")
    nb.add("Upsample", [x], name="up", param="upsample_param { upsample_h: 9 upsample_w: 7 }")
    return nb


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from kerasq.converters.caffe import load

    nb = _net()
    folder = tmp_path_factory.mktemp("extra")
    proto, weights = nb.write(folder)
    model = load(proto, weights)
    x = nb.randn(*SHAPE)
    want = ref.run_net(nb.prototxt(), nb.params, {"data": x})
    return nb, model, x, want, folder


def _compare(outputs, model, want):
    checked = 0
    for name, value in zip(model.output_names, outputs):
        if name not in want:
            continue
        expected = want[name]
        value = np.asarray(value)
        if value.ndim == 4:  # every 4-D output of this net is NHWC
            value = np.transpose(value, (0, 3, 1, 2))
        assert_caffe_close(value, expected, name)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("fmt", ["model.h5", "saved_model"])
def test_save_and_reload(converted, fmt):
    nb, model, x, want, folder = converted
    path = str(folder / fmt)
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    outs = reloaded(np.transpose(x, (0, 2, 3, 1)))
    _compare(outs, reloaded, want)


def test_tflite_builtin_ops(converted):
    from ai_edge_litert.interpreter import Interpreter

    nb, model, x, want, folder = converted
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(
        interpreter.get_input_details()[0]["index"], np.transpose(x, (0, 2, 3, 1))
    )
    interpreter.invoke()
    by_name = {
        d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()
    }
    keras_outs = model(np.transpose(x, (0, 2, 3, 1)))
    outs = []
    for name, k in zip(model.output_names, keras_outs):
        # TFLite output names are signature keys; match by shape and the Keras value
        cands = [
            v
            for v in by_name.values()
            if v.shape == tuple(k.shape) and np.allclose(v, k, rtol=1e-3, atol=1e-4)
        ]
        assert cands, f"no TFLite output matches {name}"
        outs.append(cands[0])
    _compare(outs, model, want)


def test_every_custom_layer_has_a_quantization_role_and_round_trips_its_config():
    import importlib
    import pkgutil

    from kerasq.converters.caffe import custom_objects
    from kerasq.converters.caffe import keras_layers as kx
    from kerasq.schemes.registry import layer_role

    registered = set()
    for info in pkgutil.iter_modules(kx.__path__):
        if info.name.startswith("_"):  # the shared base and decorator
            continue
        module = importlib.import_module(f"{kx.__name__}.{info.name}")
        registered |= {
            name
            for name, obj in vars(module).items()
            if isinstance(obj, type)
            and issubclass(obj, keras.layers.Layer)
            and obj.__module__ == module.__name__
            and not name.startswith("_")
        }
    assert registered == {c.__name__ for c in kx.ALL_LAYERS}
    for cls in kx.ALL_LAYERS:
        # declared on the class itself, one of the registry's roles, and read by it
        assert "quantization_role" in vars(cls), cls.__name__
        assert cls.quantization_role in kx.ROLES, cls.__name__
        assert layer_role(cls.__new__(cls)) == cls.quantization_role, cls.__name__
    objects = custom_objects()
    for cls in kx.ALL_LAYERS:
        if cls.__module__.endswith(".detection"):
            continue  # built from SSD parameters: round-tripped in test_ssd.py
        layer = cls(name="probe")
        config = layer.get_config()
        assert keras.utils.get_registered_name(cls) == f"kerasq>{cls.__name__}"
        assert objects[cls.__name__] is cls
        assert cls.from_config(config).get_config() == config
