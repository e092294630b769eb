"""Synthetic tests of the element-wise Caffe layers against the numpy reference.

Covers what caffe-golden / opencv-layers do not: BNLL, Exp, Log, Threshold, Clip, Swish,
ReLU6, Power variants, PReLU on 2-D / 3-D blobs and with shapeless or legacy slope blobs,
ELU default alpha; on 4-D (NHWC in Keras), 3-D and 2-D blobs with batch > 1.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import Blob, NetBuilder, check_net  # noqa: E402

SHAPES = {"4d": (2, 3, 5, 7), "3d": (2, 4, 6), "2d": (3, 5)}

UNARY = [
    ("Sigmoid", ""),
    ("TanH", ""),
    ("AbsVal", ""),
    ("BNLL", ""),
    ("ELU", ""),
    ("ELU", "elu_param { alpha: 0.3 }"),
    ("ReLU6", ""),
    ("Swish", ""),
    ("Swish", "swish_param { beta: 0.6 }"),
    ("Clip", "clip_param { min: -0.5 max: 0.7 }"),
    ("Clip", "clip_param { min: 0 max: 6 }"),
    ("Threshold", "threshold_param { threshold: 0.3 }"),
    ("Threshold", ""),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }"),
    ("Power", "power_param { power: 3 scale: -1.5 shift: 0.2 }"),
    ("Power", "power_param { power: 0.5 scale: 0.1 shift: 4 }"),
    ("Power", "power_param { power: -1.5 scale: 0.2 shift: 3 }"),
    ("Power", "power_param { scale: 2.5 }"),
    ("Exp", ""),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }"),
    ("Exp", "exp_param { base: 0.5 scale: -0.7 shift: -1 }"),
    ("Log", "log_param { shift: 10 }"),
    ("Log", "log_param { base: 10 scale: 2 shift: 8 }"),
    ("Log", "log_param { base: 2.5 scale: -0.5 shift: 5 }"),
]


@pytest.mark.parametrize("rank", ["4d", "2d"])
def test_unary_layers_match_reference(tmp_path, rank):
    """All unary layers side by side on one input (large values stress BNLL/Swish overflow)."""
    nb = NetBuilder(f"unary_{rank}", seed=1)
    x = nb.input("data", SHAPES[rank])
    for i, (ltype, param) in enumerate(UNARY):
        nb.add(ltype, [x], name=f"{ltype.lower()}_{i}", param=param)
    inputs = {"data": nb.randn(*SHAPES[rank], scale=2.0)}
    inputs["data"].flat[:4] = [40.0, -40.0, 0.3, 0.0]  # overflow guards, threshold edge
    check_net(nb, tmp_path, inputs)


def test_relu6_and_clip_saturate(tmp_path):
    nb = NetBuilder("sat", seed=2)
    x = nb.input("data", (2, 3, 4, 5))
    nb.add("ReLU6", [x], name="r6")
    nb.add("Clip", [x], name="clip", param="clip_param { min: -2 max: 3 }")
    got = check_net(nb, tmp_path, {"data": nb.randn(2, 3, 4, 5, scale=8.0)})
    assert got["r6"].max() == 6.0 and got["clip"].min() == -2.0


def test_threshold_is_strictly_greater(tmp_path):
    nb = NetBuilder("thr", seed=3)
    x = nb.input("data", (2, 3, 4, 5))
    nb.add("Threshold", [x], name="thr", param="threshold_param { threshold: 0.5 }")
    data = np.round(nb.randn(2, 3, 4, 5) * 2) / 2  # many exact 0.5 values
    got = check_net(nb, tmp_path, {"data": data.astype(np.float32)})
    assert np.all(got["thr"][data == 0.5] == 0)


@pytest.mark.parametrize("rank", ["4d", "3d", "2d"])
def test_prelu_per_channel(tmp_path, rank):
    shape = SHAPES[rank]
    nb = NetBuilder(f"prelu_{rank}", seed=4)
    x = nb.input("data", shape)
    nb.add("PReLU", [x], name="prelu", blobs=[nb.randn(shape[1], scale=0.5)])
    check_net(nb, tmp_path)


@pytest.mark.parametrize("storage", ["none", "legacy", "shape"])
def test_prelu_channel_shared_slope_storages(tmp_path, storage):
    """channel_shared slope stored without shape fields (OpenCV's oracle), legacy or with shape."""
    nb = NetBuilder(f"prelu_shared_{storage}", seed=5)
    x = nb.input("data", (2, 3, 5, 4))
    nb.add(
        "PReLU",
        [x],
        name="prelu",
        param="prelu_param { channel_shared: true }",
        blobs=[Blob(np.array([0.37], np.float32), storage)],
    )
    check_net(nb, tmp_path)


def test_prelu_in_place_chain(tmp_path):
    """In-place activations (top == bottom): the dumped top is the value after the last writer."""
    nb = NetBuilder("inplace", seed=6)
    x = nb.input("data", (2, 3, 5, 4))
    nb.add("PReLU", [x], tops="data", name="prelu", blobs=[nb.randn(3)])
    nb.add("Power", ["data"], tops="data", name="pw", param="power_param { scale: 2 shift: -0.5 }")
    nb.add("TanH", ["data"], tops="data", name="th")
    inputs = nb.random_inputs()
    from netbuilder import assert_caffe_close, forward_and_reference

    got, want, _ = forward_and_reference(nb, tmp_path, inputs)
    assert_caffe_close(got["data"], want["data"], "data")
