"""Caffe-SSD PriorBox and DetectionOutput against OpenCV's Caffe-SSD implementation.

``cv2.dnn.readNetFromCaffe`` follows weiliu89/caffe for both layers. Every top of the
nets is compared at the project tolerance; the DetectionOutput tops are compared as sets
of rows (``match_detections``): same image, label, score and box within tolerance. Tie
rule (docs/caffe.md): with keep_top_k, detections whose score lies within the tolerance of
the image's cut-off score may be exchanged for each other, nothing else may differ.
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
from netbuilder import NetBuilder

cv2 = pytest.importorskip("cv2")

REL, ABS = 1e-4, 1e-5


def _tol(ref: np.ndarray) -> float:
    return (ABS + REL) * max(1.0, float(np.abs(ref).max(initial=0.0)))


def _dense(table: np.ndarray) -> np.ndarray:
    """OpenCV pads its [1, 1, keep_top_k * N, 7] output with rows of zeros: drop them."""
    rows = np.asarray(table, np.float64).reshape(-1, 7)
    return rows[np.abs(rows).sum(axis=1) > 0] if len(rows) else rows


def match_detections(got, want):
    """Pair rows of two [D, 7] tables as sets: (pairs, unmatched got rows, unmatched want rows).

    Rows match when image id and label are equal and score and box agree within
    (1e-5 + 1e-4)·max(1, max|ref|) of their column group.
    """
    got = np.asarray(got, np.float64).reshape(-1, 7)
    want = np.asarray(want, np.float64).reshape(-1, 7)
    box_tol = _tol(want[:, 3:])
    score_tol = _tol(want[:, 2])
    used = np.zeros(len(want), bool)
    pairs, lost = [], []
    for i, row in enumerate(got):
        box_err = np.abs(want[:, 3:] - row[3:]).max(axis=1) if len(want) else np.zeros(0)
        cand = np.flatnonzero(
            (~used)
            & (want[:, 0] == row[0])
            & (want[:, 1] == row[1])
            & (np.abs(want[:, 2] - row[2]) <= score_tol)
            & (box_err <= box_tol)
        )
        if cand.size:
            j = cand[np.argmin(box_err[cand])]
            used[j] = True
            pairs.append((i, j))
        else:
            lost.append(i)
    return pairs, lost, list(np.flatnonzero(~used))


def assert_same_detections(got, want, what: str, keep_top_k: int = -1) -> None:
    """Detections equal as sets; only rows tied (within tolerance) at a keep_top_k cut may differ."""
    got = np.asarray(got, np.float64).reshape(-1, 7)
    want = np.asarray(want, np.float64).reshape(-1, 7)
    assert len(got) == len(want), f"{what}: {len(got)} detections vs {len(want)} in the reference"
    _, lost, extra = match_detections(got, want)
    if not lost and not extra:
        return
    score_tol = _tol(want[:, 2])
    for rows, side in ((got[lost], "kerasq"), (want[extra], "reference")):
        for row in rows:
            image_scores = want[want[:, 0] == row[0], 2]
            cut = image_scores.min() if keep_top_k >= 0 and len(image_scores) else None
            assert cut is not None and abs(row[2] - cut) <= score_tol, (
                f"{what}: {side} detection {np.round(row, 5).tolist()} has no partner"
            )


# ----------------------------------------------------------------------------------------
# small SSD nets of our own
# ----------------------------------------------------------------------------------------
def _priors_per_cell(pb: dict) -> int:
    ratios = [1.0]
    for ar in pb.get("aspect_ratio", []):
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios.append(ar)
            if pb.get("flip", True):
                ratios.append(1.0 / ar)

    def many(v):
        return v if isinstance(v, list) else [v]

    return len(many(pb["min_size"])) * len(ratios) + len(many(pb.get("max_size", [])))


def _param_text(name: str, fields: dict) -> str:
    parts = []
    for key, value in fields.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, dict):
                v = "{ " + " ".join(f"{k}: {x}" for k, x in v.items()) + " }"
                parts.append(f"{key} {v}")
                continue
            parts.append(f"{key}: {v}")
    return f"{name} {{ " + " ".join(parts) + " }"


def ssd_net(
    shape,
    priors,
    detection: dict,
    *,
    num_classes: int = 4,
    seed: int = 0,
    weight_scale: float = 0.15,
) -> NetBuilder:
    """A two-scale SSD: conv trunk, loc/conf heads, Permute/Flatten/Concat, Softmax, PriorBox,
    DetectionOutput. ``priors``: one prior_box_param dict per scale."""
    nb = NetBuilder(name=f"ssd{seed}", seed=seed)
    data = nb.input("data", shape)
    share = detection.get("share_location", True)
    loc_classes = 1 if share else num_classes
    x, features, chans = data, [], shape[1]
    for i in range(len(priors)):
        w = nb.randn(8, chans, 3, 3, scale=0.5)
        x = nb.add(
            "Convolution", [x], name=f"conv{i}",
            param="convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 }",
            blobs=[w, nb.randn(8, scale=0.1)],
        )  # fmt: skip
        x = nb.add("ReLU", [x], tops=x, name=f"relu{i}")
        features.append(x)
        chans = 8
    locs, confs, boxes = [], [], []
    for i, (f, pb) in enumerate(zip(features, priors)):
        k = _priors_per_cell(pb)
        for what, n in (("loc", k * loc_classes * 4), ("conf", k * num_classes)):
            y = nb.add(
                "Convolution", [f], name=f"{what}{i}",
                param=f"convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 }}",
                blobs=[nb.randn(n, 8, 3, 3, scale=weight_scale), nb.randn(n, scale=0.1)],
            )  # fmt: skip
            y = nb.add(
                "Permute", [y], name=f"{what}{i}_perm",
                param="permute_param { order: 0 order: 2 order: 3 order: 1 }",
            )  # fmt: skip
            y = nb.add("Flatten", [y], name=f"{what}{i}_flat", param="flatten_param { axis: 1 }")
            (locs if what == "loc" else confs).append(y)
        boxes.append(
            nb.add(
                "PriorBox", [f, data], name=f"prior{i}", param=_param_text("prior_box_param", pb)
            )
        )
    loc = nb.add("Concat", locs, name="mbox_loc", param="concat_param { axis: 1 }")
    conf = nb.add("Concat", confs, name="mbox_conf", param="concat_param { axis: 1 }")
    prior = nb.add("Concat", boxes, name="mbox_priorbox", param="concat_param { axis: 2 }")
    conf = nb.add(
        "Reshape", [conf], name="conf_reshape",
        param=f"reshape_param {{ shape {{ dim: 0 dim: -1 dim: {num_classes} }} }}",
    )  # fmt: skip
    conf = nb.add("Softmax", [conf], name="conf_softmax", param="softmax_param { axis: 2 }")
    conf = nb.add("Flatten", [conf], name="conf_flatten", param="flatten_param { axis: 1 }")
    det = dict(detection)
    det.setdefault("num_classes", num_classes)
    det.setdefault("share_location", True)  # OpenCV insists on these two
    det.setdefault("background_label_id", 0)
    nb.add(
        "DetectionOutput", [loc, conf, prior], name="detection_out",
        param=_param_text("detection_output_param", det),
    )  # fmt: skip
    return nb


def _opencv_all(proto, model, inputs, names):
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    for name, x in inputs.items():
        net.setInput(x, name)
    return dict(zip(names, net.forward(names)))


def explicit_clip(text: str) -> str:
    """OpenCV's PriorBox defaults clip to true, Caffe-SSD's caffe.proto to false: spell it out."""
    return re.sub(
        r"prior_box_param \{([^}]*)\}",
        lambda m: (
            m.group(0) if "clip:" in m.group(1) else f"prior_box_param {{{m.group(1)}clip: false }}"
        ),
        text,
    )


def _opencv_image_size(proto: str, inputs: dict) -> dict:
    """OpenCV ignores img_size / img_h / img_w: feed those PriorBox layers an image input of
    that size instead (the prior boxes only read its height and width)."""
    from google.protobuf import text_format
    from kerasq.converters.caffe.reader import read_prototxt

    net = read_prototxt(proto)
    inputs = dict(inputs)
    extra = []
    for layer in net.layer:
        p = layer.prior_box_param
        if layer.type != "PriorBox" or not (p.HasField("img_size") or p.HasField("img_h")):
            continue
        h, w = (p.img_size, p.img_size) if p.HasField("img_size") else (p.img_h, p.img_w)
        for f in ("img_size", "img_h", "img_w"):
            p.ClearField(f)
        name = f"image_{h}x{w}"
        layer.bottom[1] = name
        if name not in inputs:
            inputs[name] = np.zeros((1, 3, h, w), np.float32)
            extra.append(name)
    for name in extra:
        layer = net.layer.add()
        layer.name, layer.type = name, "Input"
        layer.top.append(name)
        layer.input_param.shape.add().dim.extend(inputs[name].shape)
    if extra:  # inputs first: move the new Input layers to the front
        layers = list(net.layer)
        ordered = layers[-len(extra) :] + layers[: -len(extra)]
        del net.layer[:]
        net.layer.extend(ordered)
    with open(proto, "w") as f:
        f.write(text_format.MessageToString(net))
    return inputs


def _compare_net(nb: NetBuilder, tmp_path, inputs, keep_top_k: int, opencv_keep=None):
    from kerasq.converters.caffe import forward

    proto, model = nb.write(tmp_path)
    ours = forward(proto, model, inputs)
    text = pathlib.Path(proto).read_text()
    # OpenCV cannot run keep_top_k -1: give it a large one
    text = text.replace("keep_top_k: -1", f"keep_top_k: {opencv_keep or 100000}")
    text = explicit_clip(text)
    encoded = "variance_encoded_in_target: true" in text
    if encoded:
        # OpenCV refuses priors with a variance row when the variance is in the target;
        # Caffe ignores that row then, which equals variance 1 with the flag off
        text = text.replace("variance_encoded_in_target: true", "variance_encoded_in_target: false")
        text = re.sub(r"(variance: [0-9.e-]+ ?)+", "variance: 1.0 ", text)
    # OpenCV departs from Caffe for eta < 1 and has no CORNER_SIZE code type: those
    # detections are checked against caffe_detection_output (the loop transcription)
    opencv_lacks = "eta: 0" in text or "CORNER_SIZE" in text
    text = text.replace("CORNER_SIZE", "CORNER")
    proto = str(tmp_path / "opencv.prototxt")
    pathlib.Path(proto).write_text(text)
    inputs = _opencv_image_size(proto, inputs)
    tops = [t for (_, ltype, _, ts, _, _) in nb.layers if ltype != "Input" for t in ts]
    tops = list(dict.fromkeys(tops))
    layer_of = {ts[-1]: name for (name, _, _, ts, _, _) in nb.layers}
    theirs = _opencv_all(proto, model, inputs, [layer_of[t] for t in tops])
    for top in tops:
        assert top in ours, f"forward() did not return {top}"
        want = theirs[layer_of[top]]
        if top == "detection_out":
            assert ours[top].shape[:2] == (1, 1) and ours[top].shape[3] == 7
            if opencv_lacks:
                continue  # checked against the loop transcription of Caffe instead
            assert_same_detections(ours[top], _dense(want), top, keep_top_k)
            continue
        got = ours[top]
        if encoded and top.startswith(("prior", "mbox_priorbox")):
            got, want = got[:, :1], want[:, :1]  # the boxes; the variance row was edited
        assert got.size == want.size, f"{top}: {got.shape} vs {want.shape}"
        np.testing.assert_allclose(
            got.reshape(want.shape), want, rtol=REL, atol=ABS * max(1, np.abs(want).max()),
            err_msg=top,
        )  # fmt: skip
    return ours


VARIANTS = {
    "flip-max-center": (
        (2, 3, 32, 48),
        [
            {
                "min_size": 6.0,
                "max_size": 12.0,
                "aspect_ratio": [2.0],
                "variance": [0.1, 0.1, 0.2, 0.2],
            },
            {
                "min_size": 12.0,
                "max_size": 24.0,
                "aspect_ratio": [2.0, 3.0],
                "variance": [0.1, 0.1, 0.2, 0.2],
            },
        ],
        {
            "background_label_id": 0,
            "nms_param": {"nms_threshold": 0.45, "top_k": 40},
            "code_type": "CENTER_SIZE",
            "keep_top_k": 25,
            "confidence_threshold": 0.05,
        },
    ),
    "noflip-clip-step-corner": (
        (1, 3, 40, 40),
        [
            {
                "min_size": 8.0,
                "aspect_ratio": [2.0],
                "flip": False,
                "clip": True,
                "step": 8.0,
                "variance": [0.1, 0.1, 0.2, 0.2],
            },
            {
                "min_size": 16.0,
                "aspect_ratio": [3.0, 3.0],
                "flip": False,
                "clip": True,
                "step": 16.0,
                "offset": 0.0,
                "variance": [0.1],
            },
        ],
        {
            "nms_param": {"nms_threshold": 0.3},
            "code_type": "CORNER",
            "keep_top_k": -1,
            "confidence_threshold": 0.3,
        },
    ),
    "imgsize-noshare-cornersize": (
        (2, 3, 24, 40),
        [
            {
                "min_size": [5.0, 9.0],
                "max_size": [9.0, 14.0],
                "aspect_ratio": [2.0],
                "img_h": 48,
                "img_w": 80,
                "step_h": 4.0,
                "step_w": 5.0,
                "variance": [0.2],
            },
            {
                "min_size": 14.0,
                "img_size": 64,
                "aspect_ratio": [0.5],
                "variance": [0.1, 0.1, 0.2, 0.2],
            },
        ],
        {
            "share_location": False,
            "background_label_id": 2,
            "nms_param": {"nms_threshold": 0.5, "top_k": 30},
            "code_type": "CORNER_SIZE",
            "keep_top_k": 30,
            "confidence_threshold": 0.1,
        },
    ),
    "encoded-variance-eta": (
        (2, 3, 32, 32),
        [
            {
                "min_size": 10.0,
                "max_size": 20.0,
                "aspect_ratio": [2.0],
                "clip": True,
                "variance": [0.1, 0.1, 0.2, 0.2],
            },
            {
                "min_size": 20.0,
                "max_size": 30.0,
                "aspect_ratio": [2.0],
                "variance": [0.1, 0.1, 0.2, 0.2],
            },
        ],
        {
            "nms_param": {"nms_threshold": 0.7, "top_k": 60, "eta": 0.9},
            "code_type": "CENTER_SIZE",
            "variance_encoded_in_target": True,
            "keep_top_k": 40,
            "confidence_threshold": 0.05,
        },
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_small_ssd_matches_opencv_on_every_top(variant, tmp_path):
    shape, priors, det = VARIANTS[variant]
    nb = ssd_net(shape, priors, det, seed=sorted(VARIANTS).index(variant))
    inputs = {"data": np.random.RandomState(1).uniform(-1, 1, shape).astype(np.float32)}
    ours = _compare_net(nb, tmp_path, inputs, det["keep_top_k"], opencv_keep=100000)
    rows = ours["detection_out"][0, 0]
    assert len(rows) > 5 and rows[:, 1].min() >= 0, "the variant should detect something"
    if shape[0] > 1:
        assert set(rows[:, 0]) == set(range(shape[0]))
    # Caffe's order: image, then label ascending, then descending score
    key = rows[:, 0] * 1e6 + rows[:, 1] * 1e3 - rows[:, 2]
    assert (np.diff(key) >= 0).all()


def test_no_detection_gives_caffe_placeholder_rows(tmp_path):
    """Nothing above the threshold: Caffe writes one row per image, -1 but the image id."""
    from kerasq.converters.caffe import forward

    shape, priors, det = VARIANTS["flip-max-center"]
    det = dict(det, confidence_threshold=0.999)
    nb = ssd_net(shape, priors, det, weight_scale=0.01)
    proto, model = nb.write(tmp_path)
    x = np.random.RandomState(2).uniform(-1, 1, shape).astype(np.float32)
    out = forward(proto, model, {"data": x}, blobs=["detection_out"])["detection_out"]
    want = np.full((1, 1, shape[0], 7), -1.0, np.float32)
    want[0, 0, :, 0] = np.arange(shape[0])
    np.testing.assert_array_equal(out, want)


def test_priorbox_formula_against_numpy_loop():
    """An independent loop transcription of prior_box_layer.cpp for the constant."""
    from kerasq.converters.caffe.keras_layers.detection import prior_box_array

    def caffe_loop(lh, lw, ih, iw, mins, maxs, ars, flip, clip, var, sh, sw, off):
        ratios = [1.0]
        for ar in ars:
            if all(abs(ar - r) >= 1e-6 for r in ratios):
                ratios += [ar] + ([1 / ar] if flip else [])
        if not sh:
            sh, sw = ih / lh, iw / lw
        out = []
        for h in range(lh):
            for w in range(lw):
                cx, cy = (w + off) * sw, (h + off) * sh
                for s, mn in enumerate(mins):
                    sizes = [(mn, mn)]
                    if maxs:
                        sizes.append((np.sqrt(mn * maxs[s]),) * 2)
                    sizes += [
                        (mn * np.sqrt(r), mn / np.sqrt(r)) for r in ratios if abs(r - 1) >= 1e-6
                    ]
                    for bw, bh in sizes:
                        out += [
                            (cx - bw / 2) / iw,
                            (cy - bh / 2) / ih,
                            (cx + bw / 2) / iw,
                            (cy + bh / 2) / ih,
                        ]
        out = np.array(out)
        if clip:
            out = np.clip(out, 0, 1)
        v = np.tile(var if len(var) == 4 else var * 4, len(out) // 4)
        return np.stack([out, v])[None]

    cases = [
        (
            3,
            5,
            30,
            50,
            [4.0, 7.0],
            [6.0, 9.0],
            [2.0, 3.0, 2.0],
            True,
            False,
            [0.1, 0.1, 0.2, 0.2],
            0,
            0,
            0.5,
        ),
        (4, 4, 64, 64, [20.0], [], [2.0], False, True, [0.1], 16.0, 16.0, 0.0),
        (2, 6, 20, 70, [3.0], [8.0], [], True, True, [0.2], 10.0, 11.0, 0.3),
    ]
    for lh, lw, ih, iw, mins, maxs, ars, flip, clip, var, sh, sw, off in cases:
        got = prior_box_array(lh, lw, ih, iw, mins, maxs, ars, flip=flip, clip=clip,
                              variance=var, step_h=sh, step_w=sw, offset=off)  # fmt: skip
        want = caffe_loop(lh, lw, ih, iw, mins, maxs, ars, flip, clip, var, sh, sw, off)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_bad_ssd_parameters_name_the_layer(tmp_path):
    from kerasq.converters.caffe import load

    from kerasq.errors import KerasqError

    shape, priors, det = VARIANTS["flip-max-center"]
    bad = [
        ([dict(priors[0], max_size=[3.0])] + priors[1:], det, "max_size"),
        ([dict(priors[0], variance=[0.1, 0.2])] + priors[1:], det, "variance"),
        (priors, dict(det, nms_param={"nms_threshold": 0.4, "eta": 1.5}), "eta"),
        (priors, dict(det, background_label_id=9), "background_label_id"),
    ]
    for i, (p, d, word) in enumerate(bad):
        nb = ssd_net(shape, p, d)
        proto, model = nb.write(tmp_path / str(i))
        with pytest.raises(KerasqError) as info:
            load(proto, model)
        text = str(info.value)
        assert word in text and "\n" not in text
        assert ("prior0" in text) or ("detection_out" in text)


def test_converted_ssd_model_saves_and_reloads(tmp_path):
    """The detection layers serialize: a reloaded .h5 model gives the same detections."""
    from kerasq.converters.caffe import custom_objects, load

    from kerasq._compat import keras

    shape, priors, det = VARIANTS["flip-max-center"]
    nb = ssd_net(shape, priors, det)
    proto, model_path = nb.write(tmp_path)
    model = load(proto, model_path)
    assert model.output_names == ["detection_out"]
    x = np.random.RandomState(3).uniform(-1, 1, shape).astype(np.float32).transpose(0, 2, 3, 1)
    path = str(tmp_path / "ssd.h5")
    model.save(path)
    again = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))


# ----------------------------------------------------------------------------------------
# real nets: caffe-jacinto JDetNet SSD (seeded weights) and YuFaceDetectNet
# ----------------------------------------------------------------------------------------
def opencv_prototxt(src, dst) -> None:
    """INDEX.md's edits for OpenCV: Bias -> Power shift -128, drop the net-level `quantize`
    flag and DetectionOutput's save_output_param."""
    from google.protobuf import text_format
    from kerasq.converters.caffe.reader import read_prototxt

    net = read_prototxt(src)
    for layer in net.layer:
        if layer.type == "Bias":
            layer.type = "Power"
            layer.ClearField("bias_param")
            layer.ClearField("param")
            layer.power_param.shift = -128.0
        if layer.type == "DetectionOutput":
            layer.detection_output_param.ClearField("save_output_param")
    with open(dst, "w") as f:
        f.write(text_format.MessageToString(net))


@pytest.fixture(scope="module")
def jdetnet(tmp_path_factory):
    base = shared_path("caffe-models", "jacinto")
    folder = tmp_path_factory.mktemp("jdetnet")
    proto = base / "voc-jdetnet-ssd768x320" / "deploy.prototxt"
    weights = folder / "model.caffemodel"
    subprocess.run(
        [sys.executable, str(base / "make_weights.py"), str(proto), str(weights), "8", "new"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    cv_proto = folder / "opencv.prototxt"
    opencv_prototxt(proto, cv_proto)
    return proto, weights, cv_proto


def _layer_tops(prototxt):
    from kerasq.converters.caffe.reader import read_prototxt
    from kerasq.converters.caffe.upgrade import upgrade_net

    layers = upgrade_net(read_prototxt(prototxt))
    return {layer.name: layer.top[-1] for layer in layers if layer.top}


def test_jdetnet_ssd_matches_opencv_on_every_top(jdetnet, caplog):
    from kerasq.converters.caffe import forward

    proto, weights, cv_proto = jdetnet
    x = np.random.RandomState(0).uniform(0, 255, (2, 3, 160, 384)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(cv_proto), str(weights))
    tops = _layer_tops(proto)
    writer = {}  # top -> its last (in-place) writer: what forward() reports for the top
    for layer, top in tops.items():
        writer[top] = layer
    names = [layer for top, layer in writer.items() if layer in set(net.getLayerNames())]
    net.setInput(x, "data")
    theirs = dict(zip(names, net.forward(names)))
    with caplog.at_level(logging.DEBUG, logger="kerasq.converters.caffe.layers.detection"):
        ours = forward(proto, weights, {"data": x})
    assert "save_output_param ignored" in caplog.text
    kinds = {"PriorBox": 0, "DetectionOutput": 0}
    for layer in names:
        top = tops[layer]
        got, want = ours[top], theirs[layer]
        if top == "detection_out":
            kinds["DetectionOutput"] += 1
            assert_same_detections(got, _dense(want), top, keep_top_k=200)
            assert got.shape == (1, 1, 400, 7)  # keep_top_k 200 per image, 2 images
            continue
        if "priorbox" in top and top != "mbox_priorbox":
            kinds["PriorBox"] += 1
        assert got.size == want.size, f"{top}: {got.shape} vs {want.shape}"
        tol = (ABS + REL) * max(1.0, float(np.abs(want).max()))
        err = float(np.abs(got.reshape(want.shape) - want).max())
        assert err <= tol, f"{top}: max|out-ref| {err} > {tol}"
    assert kinds == {"PriorBox": 5, "DetectionOutput": 1}
    assert len(names) > 40  # every top of the net


def test_yufacedetectnet_detections_match_opencv():
    """A real trained SSD (Normalize, PriorBox, DetectionOutput) converts whole."""
    from kerasq.converters.caffe import forward

    base = shared_path("caffe-models", "yufacedetectnet-v2")
    proto = base / "yufacedetectnet-open-v2.prototxt"
    weights = base / "yufacedetectnet-open-v2.caffemodel"
    x = np.random.RandomState(6).uniform(0, 255, (2, 3, 120, 160)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setInput(x, "data")
    names = ["mbox_priorbox", "detection_out"]
    theirs = dict(zip(names, net.forward(names)))
    ours = forward(proto, weights, {"data": x}, blobs=names)
    tol = _tol(theirs["mbox_priorbox"])
    assert np.abs(ours["mbox_priorbox"] - theirs["mbox_priorbox"]).max() <= tol
    assert_same_detections(ours["detection_out"], _dense(theirs["detection_out"]), "detection_out")


# ----------------------------------------------------------------------------------------
# a loop transcription of Caffe-SSD's CPU DetectionOutput (bbox_util.cpp), for what OpenCV
# does differently (eta < 1)
# ----------------------------------------------------------------------------------------
def _decode(prior, var, b, code, encoded):
    v = [1.0] * 4 if encoded else var
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == "CORNER":
        return [prior[i] + v[i] * b[i] for i in range(4)]
    if code == "CORNER_SIZE":
        s = [pw, ph, pw, ph]
        return [prior[i] + v[i] * b[i] * s[i] for i in range(4)]
    cx = v[0] * b[0] * pw + (prior[0] + prior[2]) / 2
    cy = v[1] * b[1] * ph + (prior[1] + prior[3]) / 2
    w, h = np.exp(v[2] * b[2]) * pw, np.exp(v[3] * b[3]) * ph
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _size(b):
    return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])


def _jaccard(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w > 0 and h > 0:
        inter = w * h
        return inter / (_size(a) + _size(b) - inter)
    return 0.0


def caffe_detection_output(loc, conf, priors, num_classes, share=True, bg=0, thr=-np.inf,
                           nms=0.3, top_k=-1, keep_top_k=-1, code="CORNER", encoded=False,
                           eta=1.0):  # fmt: skip
    """Caffe-SSD DetectionOutputLayer::Forward_cpu in numpy loops ([1, 1, D, 7])."""
    n = loc.shape[0]
    p = priors.shape[-1] // 4
    lc = 1 if share else num_classes
    loc = loc.reshape(n, p, lc, 4).astype(np.float64)
    conf = conf.reshape(n, p, num_classes).astype(np.float64)
    pb = priors[0, 0].reshape(p, 4).astype(np.float64)
    pv = priors[0, 1].reshape(p, 4).astype(np.float64)
    rows = []
    for i in range(n):
        dec = [[_decode(pb[j], pv[j], loc[i, j, c], code, encoded) for j in range(p)]
               for c in range(lc)]  # fmt: skip
        indices = {}
        for c in range(num_classes):
            if c == bg:
                continue
            scores = conf[i, :, c]
            boxes = dec[0 if share else c]
            cand = sorted([(s, j) for j, s in enumerate(scores) if s > thr], key=lambda t: -t[0])
            if top_k > -1:
                cand = cand[:top_k]
            kept, adaptive = [], nms
            for _, j in cand:
                keep = all(_jaccard(boxes[j], boxes[k]) <= adaptive for k in kept)
                if keep:
                    kept.append(j)
                    if eta < 1 and adaptive > 0.5:
                        adaptive *= eta
            indices[c] = kept
        pairs = [(conf[i, j, c], c, j) for c, js in indices.items() for j in js]
        if keep_top_k > -1 and len(pairs) > keep_top_k:
            pairs = sorted(pairs, key=lambda t: -t[0])[:keep_top_k]
        for s, c, j in sorted(pairs, key=lambda t: (t[1], -t[0])):
            rows.append([i, c, s] + list(dec[0 if share else c][j]))
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(n)]
    return np.array(rows, np.float32)[None, None]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_detection_output_matches_caffe_loop_reference(variant, tmp_path):
    """Each variant (eta < 1 included, where OpenCV deviates) against the numpy loops."""
    from kerasq.converters.caffe import forward

    shape, priors, det = VARIANTS[variant]
    nb = ssd_net(shape, priors, det, seed=sorted(VARIANTS).index(variant))
    proto, model = nb.write(tmp_path)
    x = np.random.RandomState(1).uniform(-1, 1, shape).astype(np.float32)
    tops = forward(proto, model, {"data": x}, blobs=["mbox_loc", "conf_flatten", "mbox_priorbox",
                                                    "detection_out"])  # fmt: skip
    nms = det.get("nms_param", {})
    want = caffe_detection_output(
        tops["mbox_loc"], tops["conf_flatten"], tops["mbox_priorbox"], 4,
        share=det.get("share_location", True), bg=det.get("background_label_id", 0),
        thr=det.get("confidence_threshold", -np.inf), nms=nms.get("nms_threshold", 0.3),
        top_k=nms.get("top_k", -1), keep_top_k=det.get("keep_top_k", -1),
        code=det.get("code_type", "CORNER"), encoded=det.get("variance_encoded_in_target", False),
        eta=nms.get("eta", 1.0),
    )  # fmt: skip
    assert_same_detections(tops["detection_out"], want, variant, det.get("keep_top_k", -1))


def test_priorbox_needs_fixed_sizes(tmp_path):
    from kerasq.converters.caffe import load

    from kerasq.errors import UnsupportedLayerError

    nb = NetBuilder(name="pb")
    data = nb.input("data", (1, 3, 16, 16))
    conv = nb.add(
        "Convolution", [data], name="conv",
        param="convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 }",
        blobs=[nb.randn(2, 3, 3, 3), nb.randn(2)],
    )  # fmt: skip
    nb.add("PriorBox", [conv, data], name="prior0", param="prior_box_param { min_size: 4 }")
    proto, model = nb.write(tmp_path)
    assert load(proto, model).output_shape == (1, 2, 8 * 8 * 4)
    with pytest.raises(UnsupportedLayerError) as info:
        load(proto, model, dynamic_spatial=True)
    assert "prior0" in str(info.value) and "fixed input size" in str(info.value)
