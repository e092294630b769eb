"""Caffe to Keras 3 on the JAX backend: checks that only make sense there.

Not collected by the normal run (the file name has no ``test_`` prefix):
``test_keras3_jax.py`` runs it, with test_keras3_golden.py and test_keras3_layers.py, in
one subprocess with ``KERAS_BACKEND=jax``.

References: OpenCV's Caffe importer (the SSD nets up to DetectionOutput), the tf_keras
conversion (itself checked against Caffe and OpenCV) and the model before saving
(bit-equal reloads).
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

import numpy as np
import pytest

from conftest import shared_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_golden import assert_caffe_close  # noqa: E402
from test_keras3_save import _custom_layer_net, _outputs, _save_reload  # noqa: E402
from test_ssd import (  # noqa: E402
    ABS,
    REL,
    VARIANTS,
    _opencv_all,
    _opencv_image_size,
    explicit_clip,
    ssd_net,
)


def _keras3():
    from kerasq.converters.caffe.keras3 import keras3

    return keras3()


def test_the_backend_is_jax():
    assert _keras3().backend.backend() == "jax"


def test_only_detection_output_needs_tensorflow():
    from kerasq.converters.caffe.keras3 import KERAS3_LAYERS

    tf_only = {name for name, cls in KERAS3_LAYERS.items() if cls.tensorflow_only_reason}
    assert tf_only == {"CaffeDetectionOutput"}


def test_custom_layer_net_on_jax_saves_reloads_and_jit_compiles(tmp_path):
    """Every element-wise layer, pooling, LRN, MVN, Normalize, Interp, ArgMax and a recorded
    mean: eager, ``predict`` (jit-compiled) and the safe-mode reload agree, and match the
    tf_keras conversion at the Caffe tolerance."""
    from kerasq.converters.caffe import load
    from kerasq.converters.caffe.keras3 import KERAS3_LAYERS

    proto, weights, x = _custom_layer_net(tmp_path)
    model = load(proto, weights, keras=3, mean=[1.0, 2.0, 3.0], scale=0.5)
    twins = {type(layer).__name__ for layer in model.layers} & set(KERAS3_LAYERS)
    assert len(twins) >= 12, twins
    feed = x.transpose(0, 2, 3, 1)
    eager = _outputs(model, feed)
    again = _save_reload(model, str(tmp_path / "customs.keras"))
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in model.layers]
    for want, got in zip(eager, _outputs(again, feed)):
        np.testing.assert_array_equal(got, want)
    jitted = again.predict(feed, verbose=0)
    jitted = jitted if isinstance(jitted, (list, tuple)) else [jitted]
    tf_model = load(proto, weights, mean=[1.0, 2.0, 3.0], scale=0.5)
    for name, want, got, jit in zip(tf_model.output_names, _outputs(tf_model, feed), eager,
                                    jitted):  # fmt: skip
        assert_caffe_close(got, want, name)
        assert_caffe_close(np.asarray(jit), want, f"{name} (predict)")


def test_golden_pooling_net_reloads_in_safe_mode_and_matches_caffe(tmp_path):
    """Its file is kept in ``KERASQ_JAX_OUT`` (when set) for a reload on TensorFlow."""
    from kerasq.converters.caffe import load

    folder = shared_path("caffe-golden", "pool_max_k3s2p1")  # EdgePadding2D
    model = load(folder / "deploy.prototxt", folder / "model.caffemodel", keras=3)
    out = pathlib.Path(os.environ.get("KERASQ_JAX_OUT") or tmp_path)
    again = _save_reload(model, str(out / "pool.keras"))
    x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
    got = _outputs(again, x)[0].transpose(0, 3, 1, 2)
    assert_caffe_close(got, np.load(folder / "blobs" / "pool.npy"), "pool")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ssd_nets_up_to_detection_output_match_opencv_on_jax(variant, tmp_path):
    """Every top but DetectionOutput's (Normalize, Permute, Flatten, PriorBox, Concat...)."""
    from kerasq.converters.caffe import forward

    shape, priors, det = VARIANTS[variant]
    nb = ssd_net(shape, priors, det, seed=sorted(VARIANTS).index(variant))
    proto, weights = nb.write(tmp_path)
    x = np.random.RandomState(1).uniform(-1, 1, shape).astype(np.float32)
    layers = [(name, ts[-1]) for (name, ltype, _, ts, _, _) in nb.layers
              if ltype not in ("Input", "DetectionOutput")]  # fmt: skip
    tops = list(dict.fromkeys(top for _, top in layers))
    ours = forward(proto, weights, {"data": x}, blobs=tops, keras=3)
    text = explicit_clip(pathlib.Path(proto).read_text()).replace("CORNER_SIZE", "CORNER")
    encoded = "variance_encoded_in_target: true" in text
    if encoded:  # OpenCV refuses a variance row then: as test_ssd, compare the boxes only
        text = text.replace("variance_encoded_in_target: true", "variance_encoded_in_target: false")
        text = re.sub(r"(variance: [0-9.e-]+ ?)+", "variance: 1.0 ", text)
    cv_proto = tmp_path / "opencv.prototxt"
    cv_proto.write_text(text)
    inputs = _opencv_image_size(str(cv_proto), {"data": x})
    layer_of = dict((top, name) for name, top in layers)
    theirs = _opencv_all(str(cv_proto), weights, inputs, [layer_of[t] for t in tops])
    assert any(t.startswith("mbox_priorbox") for t in tops) and len(tops) > 10
    for top in tops:
        got, want = ours[top], theirs[layer_of[top]]
        if encoded and top.startswith(("prior", "mbox_priorbox")):
            got, want = got[:, :1], want[:, :1]
        assert got.size == want.size, f"{top}: {got.shape} vs {want.shape}"
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=REL,
                                   atol=ABS * max(1, np.abs(want).max()), err_msg=top)


def test_real_ssd_up_to_detection_output_matches_opencv_on_jax():
    """yufacedetectnet (a trained SSD): its location, confidence and prior tops."""
    import cv2

    from kerasq.converters.caffe import forward

    base = shared_path("caffe-models", "yufacedetectnet-v2")
    proto = base / "yufacedetectnet-open-v2.prototxt"
    weights = base / "yufacedetectnet-open-v2.caffemodel"
    x = np.random.RandomState(6).uniform(0, 255, (2, 3, 120, 160)).astype(np.float32)
    names = ["mbox_loc", "mbox_conf", "mbox_priorbox"]
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setInput(x, "data")
    theirs = dict(zip(names, net.forward(names)))
    ours = forward(proto, weights, {"data": x}, blobs=names, keras=3)
    for name in names:
        want = theirs[name]
        got = ours[name].reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=REL, atol=ABS * max(1, np.abs(want).max()),
                                   err_msg=name)


def test_cli_refuses_detection_output_on_jax_in_one_line(tmp_path, capsys):
    from kerasq.cli import main

    shape, priors, det = VARIANTS["flip-max-center"]
    proto, weights = ssd_net(shape, priors, det).write(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(proto), str(weights), "--keras", "3",
                 "-o", str(out / "ssd.keras")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasq: error:") and "\n" not in err
    assert "detection_out" in err and "CaffeDetectionOutput" in err and "KERAS_BACKEND=jax" in err
    assert list(out.iterdir()) == []
