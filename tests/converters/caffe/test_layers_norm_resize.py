"""Synthetic tests of LRN, MVN, Normalize, Interp, Upsample, Bias and Embed against the
numpy reference (parameter combinations the Caffe-computed data do not cover)."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import Blob, NetBuilder, check_net  # noqa: E402


@pytest.mark.parametrize(
    "param",
    [
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 k: 2.5 }",
        "lrn_param { local_size: 7 alpha: 2 beta: 1 }",
        "lrn_param { local_size: 1 alpha: 0.3 beta: 0.75 k: 0.5 }",
        "lrn_param { norm_region: WITHIN_CHANNEL local_size: 5 alpha: 0.8 beta: 0.75 k: 5 }",
        "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 1.5 beta: 0.5 }",
    ],
)
def test_lrn(tmp_path, param):
    nb = NetBuilder("lrn", seed=20)
    x = nb.input("data", (2, 7, 6, 9))
    nb.add("LRN", [x], name="lrn", param=param)
    check_net(nb, tmp_path, {"data": nb.randn(2, 7, 6, 9, scale=2.0)})


@pytest.mark.parametrize(
    "param",
    [
        "mvn_param { }",
        "mvn_param { normalize_variance: false }",
        "mvn_param { across_channels: true }",
        "mvn_param { across_channels: true normalize_variance: false }",
        "mvn_param { eps: 0.5 }",
    ],
)
def test_mvn(tmp_path, param):
    nb = NetBuilder("mvn", seed=21)
    x = nb.input("data", (2, 3, 5, 4))
    nb.add("MVN", [x], name="mvn", param=param)
    check_net(nb, tmp_path, {"data": nb.randn(2, 3, 5, 4, scale=3.0) + 1.0})


@pytest.mark.parametrize("across_spatial", [True, False])
@pytest.mark.parametrize("channel_shared", [True, False])
def test_normalize(tmp_path, across_spatial, channel_shared):
    nb = NetBuilder("norm", seed=22)
    x = nb.input("data", (2, 4, 3, 5))
    scale = nb.randn(1 if channel_shared else 4) + 10.0
    nb.add(
        "Normalize",
        [x],
        name="norm",
        blobs=[scale],
        param=f"norm_param {{ across_spatial: {str(across_spatial).lower()} "
        f"channel_shared: {str(channel_shared).lower()} eps: 1e-6 }}",
    )
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,param",
    [
        ((2, 3, 4, 5), "interp_param { height: 9 width: 8 }"),
        ((2, 3, 9, 7), "interp_param { height: 4 width: 11 }"),
        ((2, 3, 4, 5), "interp_param { zoom_factor: 3 }"),
        ((2, 3, 9, 8), "interp_param { shrink_factor: 2 }"),
        ((2, 3, 9, 8), "interp_param { shrink_factor: 2 zoom_factor: 3 }"),
        ((2, 3, 7, 6), "interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 }"),
        ((2, 3, 1, 5), "interp_param { height: 3 width: 1 }"),
    ],
)
def test_interp(tmp_path, shape, param):
    nb = NetBuilder("interp", seed=23)
    x = nb.input("data", shape)
    nb.add("Interp", [x], name="interp", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "param",
    [
        "upsample_param { scale: 2 }",
        "upsample_param { }",
        "upsample_param { scale_h: 2 scale_w: 3 }",
        "upsample_param { upsample_h: 9 upsample_w: 8 }",
        "upsample_param { upsample_h: 7 upsample_w: 11 }",
    ],
)
def test_upsample(tmp_path, param):
    nb = NetBuilder("up", seed=24)
    x = nb.input("data", (2, 3, 3, 4))
    nb.add("Upsample", [x], name="up", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,param,bshape",
    [
        ((2, 3, 4, 5), "", (3,)),
        ((2, 3, 4, 5), "bias_param { axis: 1 num_axes: 2 }", (3, 4)),
        ((2, 3, 4, 5), "bias_param { axis: 2 num_axes: -1 }", (4, 5)),
        ((2, 3, 4, 5), "bias_param { axis: -1 }", (5,)),
        ((2, 3, 4, 5), "bias_param { num_axes: 0 }", (1,)),
        ((3, 6), "", (6,)),
        ((2, 3, 4), "bias_param { axis: 2 }", (4,)),
    ],
)
def test_bias_learned(tmp_path, shape, param, bshape):
    nb = NetBuilder("bias", seed=25)
    x = nb.input("data", shape)
    nb.add("Bias", [x], name="bias", param=param, blobs=[nb.randn(*bshape)])
    check_net(nb, tmp_path)


def test_bias_legacy_blob(tmp_path):
    nb = NetBuilder("bias_legacy", seed=26)
    x = nb.input("data", (2, 3, 4, 5))
    nb.add("Bias", [x], name="bias", blobs=[Blob(nb.randn(3), "legacy")])
    check_net(nb, tmp_path)


@pytest.mark.parametrize("bshape,axis", [((2, 3), 0), ((2, 3, 4, 5), 0), ((2, 3, 4), 0)])
def test_bias_two_inputs(tmp_path, bshape, axis):
    nb = NetBuilder("bias2", seed=27)
    x = nb.input("data", (2, 3, 4, 5))
    b = nb.input("b", bshape)
    nb.add("Bias", [x, b], name="bias", param=f"bias_param {{ axis: {axis} }}")
    check_net(nb, tmp_path)


@pytest.mark.parametrize("shape,bias_term", [((3, 5), True), ((2, 4), False), ((2, 1, 3, 4), True)])
def test_embed(tmp_path, shape, bias_term):
    nb = NetBuilder("embed", seed=28)
    x = nb.input("data", shape)
    blobs = [nb.randn(10, 4)] + ([nb.randn(4)] if bias_term else [])
    nb.add(
        "Embed",
        [x],
        name="embed",
        blobs=blobs,
        param=f"embed_param {{ input_dim: 10 num_output: 4 bias_term: {str(bias_term).lower()} }}",
    )
    idx = nb.rng.randint(0, 10, size=shape).astype(np.float32)
    check_net(nb, tmp_path, {"data": idx})


@pytest.mark.parametrize(
    "shape,param",
    [
        ((2, 3, 7), "mvn_param { }"),
        ((2, 3, 7), "mvn_param { across_channels: true normalize_variance: false }"),
        ((3, 6), "mvn_param { across_channels: true }"),
        ((3, 6), "mvn_param { }"),
    ],
)
def test_mvn_2d_3d(tmp_path, shape, param):
    nb = NetBuilder("mvn_nd", seed=29)
    x = nb.input("data", shape)
    nb.add("MVN", [x], name="mvn", param=param)
    check_net(nb, tmp_path, {"data": nb.randn(*shape, scale=2.0) - 1.0})
