"""Keras 3 conversions saved as ``.keras`` and reloaded with ``safe_mode=True`` (in this
process and in a fresh one) and ``kerasq convert --keras 3`` (the same on the JAX backend:
keras3_jax_checks.py, run by test_keras3_jax.py).

References: the real-Caffe golden tops for the CLI runs; for reloads, the model before
saving (bit-equal outputs).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared_path

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE))
from netbuilder import NetBuilder  # noqa: E402
from test_golden import assert_caffe_close  # noqa: E402
from test_layers_activations import UNARY  # noqa: E402
from test_ssd import VARIANTS, ssd_net  # noqa: E402


def _custom_layer_net(tmp_path):
    """Every element-wise Caffe layer, AVE pooling (ConstantMultiply), MAX pooling with pad
    (EdgePadding2D), LRN, MVN, Normalize, Interp, ArgMax, plus a recorded mean."""
    nb = NetBuilder("customs", seed=4)
    x = nb.input("data", (2, 3, 9, 11))
    for i, (ltype, param) in enumerate(UNARY):
        nb.add(ltype, [x], name=f"{ltype.lower()}_{i}", param=param)
    nb.add("Pooling", [x], name="ave", param="pooling_param { pool: AVE kernel_size: 3 stride: 2 }")
    nb.add("Pooling", [x], name="maxp",
           param="pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }")
    nb.add("LRN", [x], name="lrn", param="lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }")
    nb.add("MVN", [x], name="mvn")
    nb.add("Normalize", [x], name="norm", param="norm_param { across_spatial: false channel_shared: false }",
           blobs=[nb.randn(3) + 2.0])
    nb.add("Interp", [x], name="interp", param="interp_param { zoom_factor: 2 }")
    nb.add("ArgMax", [x], name="argmax", param="argmax_param { axis: 1 }")
    proto, model = nb.write(tmp_path)
    return proto, model, nb.randn(2, 3, 9, 11, scale=2.0) + 3.0  # Log needs shift+scale·x > 0


def _save_reload(model, path):
    from kerasq.converters.caffe.keras3 import keras3

    model.save(path)
    return keras3().saving.load_model(path, safe_mode=True, compile=False)


def _outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(t) for t in (out if isinstance(out, (list, tuple)) else [out])]


def test_custom_layers_save_and_reload_with_safe_mode(tmp_path):
    from kerasq.converters.caffe import load
    from kerasq.converters.caffe.keras3 import KERAS3_LAYERS

    proto, weights, x = _custom_layer_net(tmp_path)
    model = load(proto, weights, keras=3, mean=[1.0, 2.0, 3.0], scale=0.5)
    twins = {type(layer).__name__ for layer in model.layers} & set(KERAS3_LAYERS)
    assert len(twins) >= 12, twins
    # the supported-layer table's "Keras 3" column (converter_layers_of) foresaw them all
    from kerasq.converters.caffe.keras3.support import converter_layers_of

    types = {ltype for ltype, _ in UNARY} | {"Pooling", "LRN", "MVN", "Normalize", "Interp",
                                              "ArgMax"}  # fmt: skip
    foreseen = {name for t in types for name in converter_layers_of(t)} | {"CaffePreprocess"}
    assert twins <= foreseen, twins - foreseen
    again = _save_reload(model, str(tmp_path / "customs.keras"))
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in model.layers]
    feed = x.transpose(0, 2, 3, 1)
    for want, got in zip(_outputs(model, feed), _outputs(again, feed)):
        np.testing.assert_array_equal(got, want)
    tf_model = load(proto, weights, mean=[1.0, 2.0, 3.0], scale=0.5)
    for name, want, got in zip(tf_model.output_names, _outputs(tf_model, feed), _outputs(again, feed)):
        assert_caffe_close(got, want, name)


def test_ssd_detection_layers_save_and_reload_with_safe_mode(tmp_path):
    from kerasq.converters.caffe import load

    shape, priors, det = VARIANTS["flip-max-center"]
    proto, weights = ssd_net(shape, priors, det).write(tmp_path)
    model = load(proto, weights, keras=3)
    again = _save_reload(model, str(tmp_path / "ssd.keras"))
    x = np.random.RandomState(3).uniform(-1, 1, shape).astype(np.float32).transpose(0, 2, 3, 1)
    got = _outputs(again, x)[0]
    want = np.asarray(load(proto, weights)(x))  # tf_keras, checked against OpenCV in test_ssd
    assert got.shape == want.shape and got.shape[:2] == (1, 1) and len(got[0, 0]) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _run_python(code, env_extra=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(REPO))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cli_keras3_output_reloads_in_a_fresh_process(tmp_path, capsys):
    """``kerasq convert --keras 3 -o net.keras``; a new process that imports only
    ``kerasq.converters.caffe.keras3`` (which registers the layers) reloads it in safe mode
    and reproduces Caffe's top."""
    from kerasq.cli import main

    folder = shared_path("caffe-golden", "pool_max_k3s2p1")  # EdgePadding2D, a custom layer
    out = tmp_path / "net.keras"
    args = ["convert", str(folder / "deploy.prototxt"), str(folder / "model.caffemodel")]
    assert main(args + ["--keras", "3", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "output pool" in text
    result = tmp_path / "pool.npy"
    _run_python(
        "import numpy as np, keras\n"
        "import kerasq.converters.caffe.keras3\n"
        f"m = keras.saving.load_model({str(out)!r}, safe_mode=True, compile=False)\n"
        f"x = np.load({str(folder / 'input.npy')!r}).transpose(0, 2, 3, 1)\n"
        f"np.save({str(result)!r}, np.asarray(m(x)).transpose(0, 3, 1, 2))\n"
    )
    assert_caffe_close(np.load(result), np.load(folder / "blobs" / "pool.npy"), "pool")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["-o", "net.h5"], "unsupported --keras 3 output extension '.h5'; supported: .keras"),
        (["-o", "net_dir"], "unsupported --keras 3 output extension '(none)'"),
        (["-o", "net.keras", "--tflite", "net.tflite"], "--tflite works on the tf_keras model"),
        (["-o", "net.keras", "--quantize"], "--quantize works on the tf_keras model"),
    ],
)
def test_cli_keras3_refusals_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    from kerasq.cli import main

    folder = shared_path("caffe-golden", "lenet")
    args = ["convert", str(folder / "deploy.prototxt"), str(folder / "model.caffemodel")]
    extra = [str(tmp_path / e) if e.startswith("net") else e for e in extra]
    assert main(args + ["--keras", "3"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasq: error:") and message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []
