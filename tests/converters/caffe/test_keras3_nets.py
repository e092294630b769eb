"""Real nets (shared/caffe-models) converted with ``keras=3`` against their tf_keras
conversion (itself checked against OpenCV in test_whole_nets / test_jacinto_nets): same
output names and parameter counts, same numbers at the golden tolerance.

LeNet, MTCNN det1 (fixed and free spatial size), ResNet-20 and a caffe-jacinto JacintoNet
with seeded weights (make_weights.py) run by default; the bigger nets are ``slow``.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

from conftest import shared_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_golden import assert_caffe_close  # noqa: E402
from test_jacinto_nets import _jacinto, _make_weights, _pixels, _variant  # noqa: E402
from test_whole_nets import NETS  # noqa: E402

DEFAULT = {"lenet.prototxt", "det1.prototxt", "deploy_generated.prototxt"}
CASES = [
    pytest.param(*net, id=f"{net[1]}-{'x'.join(map(str, list(net[3].values())[0]))}",
                 marks=() if net[1] in DEFAULT else pytest.mark.slow)
    for net in NETS
]  # fmt: skip


def _nhwc(x):
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _outputs(model, feed):
    out = model(feed, training=False)
    return [np.asarray(t) for t in (out if isinstance(out, (list, tuple)) else [out])]


def assert_same_model(tf_model, k3_model, inputs):
    """Keras 3 and tf_keras conversions: same names, parameters and outputs."""
    from kerasq.converters.caffe.keras3 import keras3

    assert isinstance(k3_model, keras3().Model)
    assert k3_model.output_names == tf_model.output_names
    assert k3_model.count_params() == tf_model.count_params()
    assert [layer.name for layer in k3_model.layers] == [layer.name for layer in tf_model.layers]
    feed = [_nhwc(x) for x in inputs]
    feed = feed[0] if len(feed) == 1 else feed
    want, got = _outputs(tf_model, feed), _outputs(k3_model, feed)
    assert len(got) == len(want)
    for name, g, w in zip(tf_model.output_names, got, want):
        assert_caffe_close(g, w, name)


@pytest.mark.parametrize("folder,proto,weights,shapes", CASES)
def test_real_net_keras3_equals_tf_keras(folder, proto, weights, shapes):
    from kerasq.converters.caffe import load

    base = shared_path("caffe-models", folder)
    rng = np.random.RandomState(0)
    inputs = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes.values()]
    tf_model = load(base / proto, base / weights, input_shape=shapes)
    k3_model = load(base / proto, base / weights, input_shape=shapes, keras=3)
    assert_same_model(tf_model, k3_model, inputs)


def test_mtcnn_det1_free_spatial_size_keras3():
    from kerasq.converters.caffe import load

    base = shared_path("caffe-models", "mtcnn")
    files = (base / "det1.prototxt", base / "det1.caffemodel")
    tf_model = load(*files, dynamic_spatial=True)
    k3_model = load(*files, dynamic_spatial=True, keras=3)
    assert k3_model.input_shape == (None, None, None, 3)
    for hw in ((12, 12), (31, 40)):
        x = np.random.RandomState(5).uniform(-1, 1, (2, 3) + hw).astype(np.float32)
        assert_same_model(tf_model, k3_model, [x])


@pytest.mark.parametrize(
    "folder,height,width",
    [("cifar10-jnet11v2", 32, 32),
     pytest.param("imagenet-mobilenet0.5", 64, 64, marks=pytest.mark.slow),
     pytest.param("cityscapes5-jsegnet21v2", 64, 96, marks=pytest.mark.slow)],
)  # fmt: skip
def test_jacinto_net_with_seeded_weights_keras3(tmp_path, folder, height, width):
    from kerasq.converters.caffe import load

    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(
        _variant(_jacinto(folder, "deploy.prototxt").read_text(), input_hw=(height, width))
    )
    weights = _make_weights(prototxt, tmp_path / "w.caffemodel", 1, "new")
    x = _pixels((2, 3, height, width))
    for fold in (True, False):
        tf_model = load(prototxt, weights, fold_batchnorm=fold)
        k3_model = load(prototxt, weights, fold_batchnorm=fold, keras=3)
        assert_same_model(tf_model, k3_model, [x])
