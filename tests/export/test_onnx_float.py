"""Float ONNX export of converted Caffe nets, run in onnxruntime and checked against real
Caffe outputs (shared/caffe-golden) and OpenCV's Caffe implementation (whole nets), at the
converter's tolerance (atol 1e-5·max(1, max|ref|) + rtol 1e-4)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED, shared_path

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

GOLDEN = SHARED / "caffe-golden"
CASES = (
    sorted(p.name for p in GOLDEN.iterdir() if (p / "deploy.prototxt").exists())
    if GOLDEN.exists()
    else []
)
# a cheap cross-section for the default suite; every case runs under -m slow
QUICK = ["lenet", "conv_group", "deconv_stride2", "crop", "slice", "resnet_block", "prelu"]


def assert_caffe_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.size == want.size, f"{what}: shape {got.shape} != {want.shape}"
    want = want.reshape(got.shape)
    atol = 1e-5 * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=what)


def nchw(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def golden_case(case: str) -> None:
    from kerasq.converters.caffe import load

    from kerasq.export.onnx import OnnxRunner, export_onnx

    folder = shared_path("caffe-golden", case)
    meta = json.loads((folder / "meta.json").read_text())
    model = load(folder / "deploy.prototxt", folder / "model.caffemodel")
    x = np.load(folder / "input.npy")
    feed = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    result = export_onnx(model, target="float", verify_data=feed, verify=True)
    assert result.report.ok()
    runner = OnnxRunner(result.content)
    got = runner({runner.input_names[0]: feed})
    assert len(runner.output_names) == len(model.output_names)
    for onnx_name, name in zip(runner.output_names, model.output_names):
        want = np.load(folder / "blobs" / f"{name}.npy")
        assert tuple(meta["tops"][name]) == want.shape
        assert_caffe_close(nchw(got[onnx_name]), want, f"{case}/{name}")


@pytest.mark.parametrize("case", QUICK)
def test_golden_case_quick(case):
    golden_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c not in QUICK])
def test_golden_case(case):
    golden_case(case)


def test_all_golden_cases_listed():
    shared_path("caffe-golden")
    assert len(CASES) == 43 and set(QUICK) <= set(CASES)


# -- OpenCV's single-layer oracles, computed by real Caffe ----------------------------------
LAYERS = SHARED / "caffe-models" / "opencv-layers"
LAYER_CASES = (
    sorted(p.stem for p in LAYERS.glob("layer_*.prototxt") if (LAYERS / f"{p.stem}.npy").exists())
    if LAYERS.exists()
    else []
)


@pytest.mark.parametrize("case", LAYER_CASES)
def test_opencv_layer_case_matches_caffe(case):
    """Each ``layer_*`` net as float ONNX on its input: blob ``output`` against real Caffe's."""
    from kerasq.converters.caffe import load

    from kerasq.export.onnx import OnnxRunner, export_onnx

    folder = shared_path("caffe-models", "opencv-layers")
    own_input = folder / f"{case}.input.npy"
    x = np.load(own_input if own_input.exists() else folder / "blob.npy")
    weights = folder / f"{case}.caffemodel"
    model = load(folder / f"{case}.prototxt", weights if weights.exists() else None,
                 input_shape={"input": list(x.shape)})  # fmt: skip
    feed = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    result = export_onnx(model, target="float", verify_data=feed, verify=True)
    runner = OnnxRunner(result.content)
    got = runner({runner.input_names[0]: feed})
    out = runner.output_names[model.output_names.index("output")]
    assert_caffe_close(nchw(got[out]), np.load(folder / f"{case}.npy"), case)


def test_all_opencv_layer_cases_listed():
    shared_path("caffe-models", "opencv-layers")
    assert len(LAYER_CASES) == 20


# -- whole nets against OpenCV -------------------------------------------------------------
NETS = [
    ("lenet-mnist", "lenet.prototxt", "lenet_iter_10000.caffemodel", (2, 1, 28, 28)),
    ("cifar10-quick-v1", "cifar10_quick_deploy.prototxt", "cifar10_quick_iter_5000.caffemodel",
     (1, 3, 32, 32)),
    ("mtcnn", "det1.prototxt", "det1.caffemodel", (1, 3, 12, 12)),
    ("mtcnn", "det2.prototxt", "det2.caffemodel", (1, 3, 24, 24)),
    ("mtcnn", "det3.prototxt", "det3.caffemodel", (1, 3, 48, 48)),
    ("mtcnn", "det4.prototxt", "det4.caffemodel", (1, 15, 24, 24)),
    ("ultraface-rfb320", "RFB-320.prototxt", "RFB-320.caffemodel", (1, 3, 240, 320)),
    ("resnet20-cifar10", "deploy_generated.prototxt", "ResNet_20.caffemodel", (2, 3, 32, 32)),
    ("vanilla-cnn", "vanilla_deploy.prototxt", "vanillaCNN.caffemodel", (1, 3, 40, 40)),
    ("resnet50-stem", "test.prototxt", "test.caffemodel", (1, 3, 224, 224)),
    ("yufacedetectnet-v2", "deploy_prefix_generated.prototxt",
     "yufacedetectnet-open-v2.caffemodel", (1, 3, 120, 160)),
]  # fmt: skip


def _layer_tops(prototxt):
    from kerasq.converters.caffe.reader import read_prototxt
    from kerasq.converters.caffe.upgrade import upgrade_net

    return {layer.name: layer.top[-1] for layer in upgrade_net(read_prototxt(prototxt))
            if layer.top}  # fmt: skip


def net_against_opencv(proto, weights, shape, seed=0, low=-1.0, high=1.0, cv_proto=None):
    cv2 = pytest.importorskip("cv2")
    from kerasq.converters.caffe import load

    from kerasq.export.onnx import OnnxRunner, export_onnx

    x = np.random.RandomState(seed).uniform(low, high, shape).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(cv_proto or proto), str(weights))
    names = list(net.getUnconnectedOutLayersNames())
    net.setInput(x)
    theirs = dict(zip(names, net.forward(names)))
    from kerasq.converters.caffe import load as load_net

    name = load_net(proto, weights).inputs[0].name.split(":")[0]
    model = load(proto, weights, input_shape={name: list(shape)})
    result = export_onnx(model, target="float", verify_data=x.transpose(0, 2, 3, 1))
    runner = OnnxRunner(result.content)
    got = runner({runner.input_names[0]: x.transpose(0, 2, 3, 1)})
    ours = dict(zip(model.output_names, (got[n] for n in runner.output_names)))
    tops = _layer_tops(proto)
    for layer in names:
        want = theirs[layer]
        mine = nchw(ours[tops[layer]])
        assert mine.size == want.size, f"{layer}: {mine.shape} vs {want.shape}"
        assert_caffe_close(mine, want.reshape(mine.shape), f"{proto.name}:{layer}")
    return result


def test_lenet_real_net_matches_opencv():
    base = shared_path("caffe-models", "lenet-mnist")
    net_against_opencv(base / "lenet.prototxt", base / "lenet_iter_10000.caffemodel",
                       (2, 1, 28, 28))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("folder,proto,weights,shape", NETS[1:], ids=[n[1] for n in NETS[1:]])
def test_real_net_matches_opencv(folder, proto, weights, shape):
    base = shared_path("caffe-models", folder)
    net_against_opencv(base / proto, base / weights, shape)


# -- caffe-jacinto nets (seeded weights from make_weights.py) ------------------------------
JACINTO = [
    ("cifar10-jnet11v2", (2, 3, 32, 32), 1, "new"),
    ("cifar10-jnet11v2-v015", (2, 3, 32, 32), 2, "legacy"),
    ("imagenet-mobilenet0.5", (2, 3, 64, 64), 5, "new"),
    ("cityscapes5-jsegnet21v2", (2, 3, 64, 128), 6, "new"),
]


def jacinto_net(tmp_path, net, seed, layout):
    base = shared_path("caffe-models", "jacinto")
    proto = base / net / "deploy.prototxt"
    weights = tmp_path / "model.caffemodel"
    subprocess.run(
        [sys.executable, str(base / "make_weights.py"), str(proto), str(weights), str(seed),
         layout],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return proto, weights


@pytest.mark.slow
@pytest.mark.parametrize("net,shape,seed,layout", JACINTO, ids=[j[0] for j in JACINTO])
def test_jacinto_net_float_onnx_matches_keras(tmp_path, net, shape, seed, layout):
    """The ONNX file against the Keras model the converter built (which the converter's own
    tests hold to OpenCV), on the 0..255 pixels the nets expect."""
    from kerasq.converters.caffe import load

    from kerasq.export.onnx import export_onnx

    proto, weights = jacinto_net(tmp_path, net, seed, layout)
    model = load(proto, weights, input_shape={"data": list(shape)})
    x = np.random.RandomState(seed).uniform(0, 255, shape).astype(np.float32)
    result = export_onnx(model, target="float", verify_data=x.transpose(0, 2, 3, 1))
    assert result.report.ok(rtol=1e-4), result.report.describe()


@pytest.mark.slow
def test_jdetnet_ssd_float_onnx_detections_equal_keras(tmp_path):
    """The whole JDetNet SSD (PriorBox, DetectionOutput) as one float ONNX file: the fixed
    detections equal the Keras model's as sets per image, the heads within tolerance."""
    import onnx
    from kerasq.converters.caffe import load

    from kerasq.export.onnx import export_onnx

    proto, weights = jacinto_net(tmp_path, "voc-jdetnet-ssd768x320", 8, "new")
    model = load(proto, weights, input_shape={"data": [1, 3, 160, 384]})
    x = np.random.RandomState(0).uniform(0, 255, (2, 160, 384, 3)).astype(np.float32)
    result = export_onnx(model, target="float", verify_data=x, verify=True)
    report = result.report
    assert report.ok and report.detections > 0, report.describe()
    proto = onnx.load_from_string(result.content)
    names = [o.name for o in proto.graph.output]
    assert {"detection_boxes", "detection_scores", "num_detections"} <= set(names)

    def ops(graph):
        for node in graph.node:
            yield node.op_type
            for attr in node.attribute:
                for sub in ([attr.g] if attr.g.node else []) + list(attr.graphs):
                    yield from ops(sub)

    assert list(ops(proto.graph)).count("NonMaxSuppression") == 20  # one per VOC class
