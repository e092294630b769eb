"""Whole nets from shared/caffe-models against OpenCV's independent Caffe implementation.

``cv2.dnn.readNetFromCaffe`` runs the same prototxt + caffemodel on the same random input;
kerasq's ``forward`` must agree on every net output (and on a few inner tops).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path

cv2 = pytest.importorskip("cv2")

# (folder, prototxt, caffemodel, {input: NCHW shape})
NETS = [
    ("lenet-mnist", "lenet.prototxt", "lenet_iter_10000.caffemodel", {"data": (2, 1, 28, 28)}),
    (
        "cifar10-quick-v1",
        "cifar10_quick_deploy.prototxt",
        "cifar10_quick_iter_5000.caffemodel",
        {"data": (1, 3, 32, 32)},
    ),
    ("mtcnn", "det1.prototxt", "det1.caffemodel", {"data": (1, 3, 12, 12)}),
    ("mtcnn", "det1.prototxt", "det1.caffemodel", {"data": (2, 3, 37, 45)}),
    ("mtcnn", "det2.prototxt", "det2.caffemodel", {"data": (1, 3, 24, 24)}),
    ("mtcnn", "det3.prototxt", "det3.caffemodel", {"data": (1, 3, 48, 48)}),
    ("mtcnn", "det4.prototxt", "det4.caffemodel", {"data": (1, 15, 24, 24)}),
    ("ultraface-rfb320", "RFB-320.prototxt", "RFB-320.caffemodel", {"input": (1, 3, 240, 320)}),
    (
        "resnet20-cifar10",
        "deploy_generated.prototxt",
        "ResNet_20.caffemodel",
        {"Data1": (2, 3, 32, 32)},
    ),
    ("vanilla-cnn", "vanilla_deploy.prototxt", "vanillaCNN.caffemodel", {"data": (1, 3, 40, 40)}),
    ("resnet50-stem", "test.prototxt", "test.caffemodel", {"data": (1, 3, 224, 224)}),
    (
        "yufacedetectnet-v2",
        "deploy_prefix_generated.prototxt",
        "yufacedetectnet-open-v2.caffemodel",
        {"data": (1, 3, 120, 160)},
    ),
]


def _layer_tops(prototxt):
    from kerasq.converters.caffe.reader import read_prototxt
    from kerasq.converters.caffe.upgrade import upgrade_net

    layers = upgrade_net(read_prototxt(prototxt))
    return {layer.name: layer.top[-1] for layer in layers if layer.top}


def _opencv(prototxt, caffemodel, inputs, layer_names):
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    for name, x in inputs.items():
        net.setInput(x, name)
    return dict(zip(layer_names, net.forward(layer_names)))


def _close(got, want, what, scale=1.0):
    assert got.size == want.size, f"{what}: {got.shape} vs {want.shape}"
    want = want.reshape(got.shape)
    atol = 1e-5 * scale * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4 * scale, atol=atol, err_msg=what)


@pytest.mark.parametrize(
    "folder,proto,weights,shapes",
    NETS,
    ids=[f"{n[1]}-{'x'.join(map(str, list(n[3].values())[0]))}" for n in NETS],
)
def test_net_matches_opencv(folder, proto, weights, shapes):
    from kerasq.converters.caffe import forward

    base = shared_path("caffe-models", folder)
    rng = np.random.RandomState(0)
    inputs = {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}
    net = cv2.dnn.readNetFromCaffe(str(base / proto), str(base / weights))
    outputs = list(net.getUnconnectedOutLayersNames())
    tops = _layer_tops(base / proto)
    theirs = _opencv(base / proto, base / weights, inputs, outputs)
    ours = forward(base / proto, base / weights, inputs)
    assert outputs
    for layer in outputs:
        _close(ours[tops[layer]], theirs[layer], f"{proto}:{layer}")


def test_resnet20_train_test_prototxt_with_user_input_shape():
    """Phase filtering, duplicate Data layers, loss/accuracy dropped, shape from the user."""
    from kerasq.converters.caffe import forward, load

    base = shared_path("caffe-models", "resnet20-cifar10")
    x = np.random.RandomState(3).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    theirs = _opencv(
        base / "deploy_generated.prototxt",
        base / "ResNet_20.caffemodel",
        {"Data1": x},
        ["InnerProduct1"],
    )["InnerProduct1"]
    ours = forward(
        base / "res20_cifar_train_test.prototxt", base / "ResNet_20.caffemodel", {"Data1": x}
    )
    _close(ours["InnerProduct1"], theirs, "InnerProduct1")
    model = load(
        base / "res20_cifar_train_test.prototxt",
        base / "ResNet_20.caffemodel",
        input_shape={"Data1": (1, 3, 32, 32)},
    )
    assert model.output_names == ["InnerProduct1"]
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "BatchNormalization" not in kinds  # 21 BN+Scale folded into their convs
    _close(np.asarray(model(x.transpose(0, 2, 3, 1), training=False)), theirs, "loaded model")


def test_v1_text_prototxt_with_data_layer_and_argmax():
    """CIFAR-quick V1 text net (IMAGE_DATA with two tops, ACCURACY, ARGMAX, SOFTMAX_LOSS)."""
    from kerasq.converters.caffe import forward

    base = shared_path("caffe-models", "cifar10-quick-v1")
    x = np.random.RandomState(4).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    theirs = _opencv(
        base / "cifar10_quick_deploy.prototxt",
        base / "cifar10_quick_iter_5000.caffemodel",
        {"data": x},
        ["ip2"],
    )["ip2"]
    ours = forward(
        base / "prediction_example_v1.prototxt",
        base / "cifar10_quick_iter_5000.caffemodel",
        {"data": x},
    )
    _close(ours["ip2"], theirs, "ip2")


def test_dynamic_spatial_fully_convolutional():
    """load(dynamic_spatial=True): one model, any input size, same values as forward()."""
    from kerasq.converters.caffe import forward, load

    base = shared_path("caffe-models", "mtcnn")
    model = load(base / "det1.prototxt", base / "det1.caffemodel", dynamic_spatial=True)
    assert model.input_shape == (None, None, None, 3)
    for hw in ((12, 12), (31, 40)):
        x = np.random.RandomState(5).uniform(-1, 1, (2, 3) + hw).astype(np.float32)
        want = forward(base / "det1.prototxt", base / "det1.caffemodel", {"data": x})
        got = model(x.transpose(0, 2, 3, 1), training=False)
        for name, tensor in zip(model.output_names, got):
            _close(np.asarray(tensor).transpose(0, 3, 1, 2), want[name], name)


def test_outputs_option_cuts_ssd_postprocessing():
    """load(outputs=...) / forward(blobs=...) drop PriorBox/DetectionOutput they do not need."""
    from kerasq.converters.caffe import forward, load

    base = shared_path("caffe-models", "yufacedetectnet-v2")
    proto = base / "yufacedetectnet-open-v2.prototxt"
    weights = base / "yufacedetectnet-open-v2.caffemodel"
    heads = ["mbox_loc", "mbox_conf_flatten"]
    x = np.random.RandomState(6).uniform(0, 255, (1, 3, 120, 160)).astype(np.float32)
    theirs = _opencv(proto, weights, {"data": x}, heads)
    ours = forward(proto, weights, {"data": x}, blobs=heads)
    model = load(proto, weights, outputs=heads, input_shape={"data": (1, 3, 120, 160)})
    assert model.output_names == heads
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "L2Normalize" in kinds  # the Normalize layers are kept, PriorBox is not needed
    values = model(x.transpose(0, 2, 3, 1), training=False)
    for name, value in zip(heads, values):
        _close(ours[name], theirs[name], name)
        _close(np.asarray(value), theirs[name], f"load:{name}")
