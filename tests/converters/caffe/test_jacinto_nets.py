"""caffe-jacinto's own nets: BatchNorm blob orders and factor semantics, against OpenCV.

Weights come from ``shared/caffe-models/jacinto/make_weights.py`` (seeded, independent of
kerasq) in the caffe-jacinto 0.16 order ("new": mean, var, factor, scale, bias) or the 0.15 /
DIGITS order ("legacy": scale, bias, mean, var, reserved[1]). With the same seed both files
hold the same numbers, so a legacy file must convert to exactly the 0.16-order model.
OpenCV (``cv2.dnn.readNetFromCaffe``) is the independent reference; it needs three edits
(jacinto/INDEX.md): no ``Bias`` layer (a ``Power`` shift), no ``ArgMax`` (computed from its
bottom here) and ``scale_bias: true`` on 5-blob BatchNorm.
"""

from __future__ import annotations

import logging
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from caffe_reference import run_net  # noqa: E402
from netbuilder import NetBuilder  # noqa: E402

cv2 = pytest.importorskip("cv2")


def _jacinto(*parts):
    return shared_path("caffe-models", "jacinto", *parts)


def _make_weights(prototxt, out, seed, layout):
    subprocess.run(
        [sys.executable, str(_jacinto("make_weights.py")), str(prototxt), str(out), str(seed),
         layout],
        check=True, capture_output=True,
    )
    return out


def _blocks(text):
    """Top-level ``layer { ... }`` blocks of a prototxt as (start, end) spans."""
    spans = []
    for match in re.finditer(r"(?m)^layer\s*\{", text):
        depth, i = 0, match.start()
        while True:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        spans.append((match.start(), i + 1))
    return spans


def _variant(text, *, legacy_bn=False, input_hw=None):
    """The same net in caffe-jacinto 0.15 form (BatchNorm with scale/bias fillers instead of
    ``scale_bias: true``) and/or at another input size; ``quantize: true`` dropped."""
    text = re.sub(r"(?m)^quantize:\s*true\s*$", "", text)
    if legacy_bn:
        text = text.replace(
            "scale_bias: true",
            'scale_filler { type: "constant" value: 1 } bias_filler { type: "constant" value: 0 }',
        )
    if input_hw is not None:
        dims = re.search(r"input_shape\s*\{([^}]*)\}", text)
        new = "input_shape {\n  dim: 1\n  dim: 3\n  dim: %d\n  dim: %d\n}" % input_hw
        text = text[: dims.start()] + new + text[dims.end():]
    return text


def _for_opencv(text):
    """The three edits OpenCV needs; returns (text, {argmax top: its bottom})."""
    out, last, argmax = [], 0, {}
    for start, end in _blocks(text):
        block = text[start:end]
        kind = re.search(r'type:\s*"(\w+)"', block).group(1)
        out.append(text[last:start])
        if kind == "Bias":
            value = float(re.search(r"value:\s*(-?[\d.]+)", block).group(1))
            name = re.search(r'name:\s*"([^"]+)"', block).group(1)
            bottom = re.search(r'bottom:\s*"([^"]+)"', block).group(1)
            top = re.search(r'top:\s*"([^"]+)"', block).group(1)
            block = (f'layer {{ name: "{name}" type: "Power" bottom: "{bottom}" top: "{top}" '
                     f"power_param {{ shift: {value} }} }}")
        elif kind == "ArgMax":
            argmax[re.search(r'top:\s*"([^"]+)"', block).group(1)] = re.search(
                r'bottom:\s*"([^"]+)"', block).group(1)
            block = ""
        elif kind == "BatchNorm" and "scale_filler" in block:
            # OpenCV's schema has no BatchNorm fillers: 5 blobs are marked by scale_bias
            block = re.sub(r"(scale|bias)_filler\s*\{[^}]*\}", "", block)
            block = block.replace("batch_norm_param {", "batch_norm_param {\n    scale_bias: true")
        out.append(block)
        last = end
    out.append(text[last:])
    return "".join(out), argmax


def _close(got, want, what):
    want = np.asarray(want).reshape(got.shape)
    bound = (1e-5 + 1e-4) * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= bound, f"{what}: max|out-ref| = {err:.3g} > {bound:.3g}"


def _opencv_outputs(prototxt, caffemodel, x):
    text, argmax = _for_opencv(prototxt.read_text())
    edited = prototxt.with_name(prototxt.stem + "_opencv.prototxt")
    edited.write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(edited), str(caffemodel))
    net.setInput(x)
    names = list(net.getUnconnectedOutLayersNames())
    values = dict(zip(names, net.forward(names)))
    return values, argmax


def _check_against_opencv(prototxt, caffemodel, x, **options):
    from kerasq.converters.caffe import forward

    theirs, argmax = _opencv_outputs(prototxt, caffemodel, x)
    ours = forward(prototxt, caffemodel, {"data": x}, **options)
    assert theirs
    for top, value in theirs.items():
        _close(ours[top], value, top)
    for top, bottom in argmax.items():
        # ArgMax against OpenCV's scores: our label must reach the maximum score within the
        # tolerance (Caffe breaks exact ties towards the larger index, numpy towards the first)
        scores = np.asarray(theirs[bottom])
        labels = ours[top].astype(np.int64)
        bound = (1e-5 + 1e-4) * max(1.0, float(np.abs(scores).max()))
        picked = np.take_along_axis(scores, labels, axis=1)
        assert np.all(picked >= scores.max(axis=1, keepdims=True) - bound), top
    return ours


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def test_v015_net_with_legacy_blob_order_equals_the_016_order_and_opencv(tmp_path, caplog):
    """The 0.15 JacintoNet11 v2 file: legacy BatchNorm blob order recognised (a 5th blob of
    count 1) with a warning; the result equals the 0.16-order file bit for bit and OpenCV."""
    from kerasq.converters.caffe import forward

    deploy = _jacinto("cifar10-jnet11v2-v015", "deploy.prototxt")
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy.read_text())
    legacy = _make_weights(prototxt, tmp_path / "legacy.caffemodel", 2, "legacy")
    new = _make_weights(prototxt, tmp_path / "new.caffemodel", 2, "new")
    x = _pixels((2, 3, 32, 32))
    with caplog.at_level(logging.WARNING, logger="kerasq.converters.caffe"):
        got = forward(prototxt, legacy, {"data": x})
    assert any("caffe-jacinto 0.15 order" in r.getMessage() and "conv1a/bn" in r.getMessage()
               for r in caplog.records)
    want = forward(prototxt, new, {"data": x})
    for top in want:
        np.testing.assert_array_equal(got[top], want[top], err_msg=top)
    # OpenCV reads the 0.16-order twin only (it has no 0.15 order rule)
    _check_against_opencv(prototxt, new, x)
    ours = _check_against_opencv(prototxt, new, x, fold_batchnorm=False)
    np.testing.assert_allclose(got["prob"], ours["prob"], rtol=1e-5, atol=1e-6)


def test_v015_net_converts_from_the_cli(tmp_path):
    """``kerasq convert`` on the 0.15 file (it failed with a blob shape mismatch)."""
    from kerasq.cli import main

    prototxt = _jacinto("cifar10-jnet11v2-v015", "deploy.prototxt")
    weights = _make_weights(prototxt, tmp_path / "legacy.caffemodel", 2, "legacy")
    out = tmp_path / "m.h5"
    assert main(["convert", str(prototxt), str(weights), "-o", str(out)]) == 0
    assert out.exists()


VARIANTS = [
    # (net folder, input H, W, seed): the same families in 0.15 form at other input sizes
    ("cifar10-jnet11v2", 48, 40, 3),
    ("imagenet-mobilenet0.5", 96, 64, 4),
    ("cityscapes5-jsegnet21v2", 64, 96, 7),
]


@pytest.mark.parametrize("folder,height,width,seed", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_other_nets_of_the_families_in_015_form_match_opencv(tmp_path, folder, height, width,
                                                             seed):
    """JacintoNet, MobileNet and JSegNet rewritten with 0.15 BatchNorm (legacy blob order) at
    other input sizes: equal to their 0.16-order twins and to OpenCV."""
    from kerasq.converters.caffe import forward

    text = _variant(_jacinto(folder, "deploy.prototxt").read_text(), legacy_bn=True,
                    input_hw=(height, width))
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(text)
    legacy = _make_weights(prototxt, tmp_path / "legacy.caffemodel", seed, "legacy")
    new = _make_weights(prototxt, tmp_path / "new.caffemodel", seed, "new")
    x = _pixels((2, 3, height, width), seed)
    got = forward(prototxt, legacy, {"data": x})
    want = _check_against_opencv(prototxt, new, x)
    for top in want:
        np.testing.assert_array_equal(got[top], want[top], err_msg=top)


@pytest.mark.parametrize("folder,height,width", [("cifar10-jnet11v2", 32, 32),
                                                 ("imagenet-mobilenet0.5", 64, 64)])
def test_016_nets_at_their_run_size_match_opencv_unfolded(tmp_path, folder, height, width):
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(_variant(_jacinto(folder, "deploy.prototxt").read_text(),
                                 input_hw=(height, width)))
    new = _make_weights(prototxt, tmp_path / "new.caffemodel", 1, "new")
    _check_against_opencv(prototxt, new, _pixels((2, 3, height, width)), fold_batchnorm=False)


# --------------------------------------------------------------------- factor-blob semantics
def _factor_net(tmp_path, nvidia_style):
    """conv -> BatchNorm (3 blobs, factor 0) [+ an NVIDIA-style 5-blob BatchNorm]."""
    nb = NetBuilder("factor")
    x = nb.input("data", (1, 3, 5, 6))
    nb.add("Convolution", [x], tops="c", name="conv",
           param="convolution_param { num_output: 4 kernel_size: 3 }",
           blobs=[nb.randn(4, 3, 3, 3), nb.randn(4)])
    mean, var = nb.randn(4), np.abs(nb.randn(4)) + 0.5
    nb.add("BatchNorm", ["c"], tops="b", name="bn0",
           param="batch_norm_param { eps: 0.0001 }",
           blobs=[mean, var, np.zeros(1, np.float32)])
    if nvidia_style:
        nb.add("BatchNorm", ["b"], tops="out", name="bn1",
               param="batch_norm_param { scale_bias: true eps: 0.0001 }",
               blobs=[nb.randn(4), np.abs(nb.randn(4)) + 0.5, np.ones(1, np.float32),
                      nb.randn(4), nb.randn(4)])
    proto, model = nb.write(tmp_path)
    inputs = nb.random_inputs()
    conv = run_net(nb.prototxt().split('layer {\n  name: "bn0"')[0], nb.params, inputs)["c"]
    shape = (1, -1, 1, 1)
    ignored = (conv - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-4)
    bvlc = conv / np.sqrt(1e-4)
    return inputs, proto, model, ignored.astype(np.float32), bvlc.astype(np.float32)


@pytest.mark.parametrize("fold", [True, False])
def test_factor_zero_is_ignored_in_caffe_jacinto_nets(tmp_path, caplog, fold):
    from kerasq.converters.caffe import forward

    inputs, proto, model, ignored, bvlc = _factor_net(tmp_path, nvidia_style=True)
    with caplog.at_level(logging.WARNING, logger="kerasq.converters.caffe"):
        got = forward(proto, model, inputs, fold_batchnorm=fold)
    np.testing.assert_allclose(got["b"], ignored, rtol=1e-4, atol=1e-5)
    assert any("ignored (caffe-jacinto 0.16/0.17" in r.getMessage() and "bn0" in r.getMessage()
               and "detected" in r.getMessage() for r in caplog.records)
    # forced BVLC: statistics / 0 -> 0
    got = forward(proto, model, inputs, fold_batchnorm=fold, batchnorm="bvlc")
    np.testing.assert_allclose(got["b"], bvlc, rtol=1e-4, atol=1e-5 * np.abs(bvlc).max())


def test_factor_zero_keeps_bvlc_semantics_in_a_bvlc_net_unless_asked(tmp_path, caplog):
    from kerasq.converters.caffe import forward

    inputs, proto, model, ignored, bvlc = _factor_net(tmp_path, nvidia_style=False)
    with caplog.at_level(logging.WARNING, logger="kerasq.converters.caffe"):
        got = forward(proto, model, inputs)
    np.testing.assert_allclose(got["b"], bvlc, rtol=1e-4, atol=1e-5 * np.abs(bvlc).max())
    assert any("applied (BVLC semantics" in r.getMessage() for r in caplog.records)
    net = cv2.dnn.readNetFromCaffe(proto, model)  # OpenCV divides by the factor too (0 -> 0)
    net.setInput(inputs["data"])
    _close(got["b"], net.forward("bn0"), "bn0 vs OpenCV")
    got = forward(proto, model, inputs, batchnorm="jacinto")
    np.testing.assert_allclose(got["b"], ignored, rtol=1e-4, atol=1e-5)


def test_one_channel_batchnorm_order_is_ambiguous_and_the_option_decides(tmp_path, caplog):
    """With C == 1 both blob orders fit; caffe-jacinto's rule (legacy) unless ``bvlc``."""
    from kerasq.converters.caffe import forward

    nb = NetBuilder("onech")
    x = nb.input("data", (1, 1, 4, 4))
    a, b, c, d = (np.array([v], np.float32) for v in (2.0, 0.5, 0.25, 4.0))
    nb.add("BatchNorm", [x], tops="y", name="bn",
           param="batch_norm_param { scale_bias: true eps: 0 }",
           blobs=[a, b, c, d, np.zeros(1, np.float32)])
    proto, model = nb.write(tmp_path)
    data = nb.random_inputs()["data"]
    with caplog.at_level(logging.WARNING, logger="kerasq.converters.caffe"):
        got = forward(proto, model, {"data": data})["y"]
    # legacy: scale a, bias b, mean c, var d
    np.testing.assert_allclose(got, a * (data - c) / np.sqrt(d) + b, rtol=1e-5, atol=1e-6)
    assert any("fits both blob orders" in r.getMessage() and "0.15 order" in r.getMessage()
               for r in caplog.records)
    got = forward(proto, model, {"data": data}, batchnorm="bvlc")["y"]
    # NVIDIA 0.16 order: mean a, var b, factor c (ignored), scale d, bias 0
    np.testing.assert_allclose(got, d * (data - a) / np.sqrt(b), rtol=1e-5, atol=1e-6)


def test_unknown_batchnorm_option_is_a_clean_error(tmp_path):
    from kerasq.converters.caffe import forward
    from kerasq.errors import CaffeFormatError

    inputs, proto, model, _, _ = _factor_net(tmp_path, nvidia_style=False)
    with pytest.raises(CaffeFormatError, match="batchnorm='nvidia'"):
        forward(proto, model, inputs, batchnorm="nvidia")


def test_cli_batchnorm_flag_chooses_the_semantics(tmp_path):
    """``kerasq convert --batchnorm jacinto`` on a BVLC-looking net with factor 0: the saved
    model computes the factor-ignored BatchNorm (numpy reference), the default BVLC's."""
    from kerasq._compat import keras
    from kerasq.cli import main
    from kerasq.converters.caffe import custom_objects

    inputs, proto, model, ignored, bvlc = _factor_net(tmp_path, nvidia_style=False)
    x = inputs["data"].transpose(0, 2, 3, 1)
    for flag, want in (("jacinto", ignored), ("auto", bvlc)):
        out = tmp_path / f"{flag}.h5"
        assert main(["convert", proto, model, "-o", str(out), "--batchnorm", flag,
                     "--outputs", "b"]) == 0
        loaded = keras.models.load_model(out, custom_objects=custom_objects())
        got = np.asarray(loaded(x, training=False)).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
