"""Synthetic tests of the axis-routing layers (Slice, Crop, Tile, Reduction, ArgMax, Permute,
ShuffleChannel) against the numpy reference, on every Caffe axis of 4-D blobs (NHWC in Keras,
so each Caffe axis maps to a different Keras axis), on 2-D / 3-D blobs and after Permute
changed the layout."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder, assert_caffe_close, check_net, forward_and_reference  # noqa: E402

X4 = (2, 6, 9, 5)


@pytest.mark.parametrize(
    "param,n_tops",
    [
        ("slice_param { axis: 1 slice_point: 1 slice_point: 4 }", 3),
        ("slice_param { axis: 2 }", 3),  # equal split of H=9
        ("slice_param { axis: 3 slice_point: 2 }", 2),
        ("slice_param { axis: -1 slice_point: 1 slice_point: 3 }", 3),
        ("slice_param { slice_dim: 2 slice_point: 4 }", 2),  # legacy slice_dim
        ("slice_param { axis: 0 slice_point: 1 }", 2),  # free batch axis: last piece to the end
    ],
)
def test_slice_4d(tmp_path, param, n_tops):
    nb = NetBuilder("slice4", seed=10)
    x = nb.input("data", X4)
    nb.add("Slice", [x], tops=[f"s{i}" for i in range(n_tops)], name="slice", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,param,n_tops",
    [
        ((3, 8), "slice_param { axis: 1 slice_point: 3 slice_point: 5 }", 3),
        ((2, 6, 7), "slice_param { axis: 2 slice_point: 2 }", 2),
        ((2, 6, 7), "slice_param { axis: 1 }", 2),
    ],
)
def test_slice_2d_3d(tmp_path, shape, param, n_tops):
    nb = NetBuilder("slice_nd", seed=11)
    x = nb.input("data", shape)
    nb.add("Slice", [x], tops=[f"s{i}" for i in range(n_tops)], name="slice", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "ref_shape,param",
    [
        ((2, 6, 7, 4), "crop_param { axis: 2 offset: 1 offset: 0 }"),
        ((2, 6, 5, 3), "crop_param { axis: 2 offset: 2 }"),  # one offset for both axes
        ((2, 6, 9, 2), "crop_param { axis: 3 offset: 3 }"),  # only W
        ((2, 4, 6, 5), "crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }"),
        ((2, 3, 4, 4), "crop_param { axis: 0 offset: 0 offset: 2 offset: 3 offset: 1 }"),
    ],
)
def test_crop(tmp_path, ref_shape, param):
    nb = NetBuilder("crop", seed=12)
    x = nb.input("data", X4)
    r = nb.input("ref", ref_shape)
    nb.add("Crop", [x, r], name="crop", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,param",
    [
        (X4, "tile_param { axis: 1 tiles: 3 }"),
        (X4, "tile_param { axis: 2 tiles: 2 }"),
        (X4, "tile_param { axis: -1 tiles: 4 }"),
        ((3, 5), "tile_param { axis: 1 tiles: 2 }"),
        ((2, 3, 4), "tile_param { axis: 2 tiles: 3 }"),
    ],
)
def test_tile(tmp_path, shape, param):
    nb = NetBuilder("tile", seed=13)
    x = nb.input("data", shape)
    nb.add("Tile", [x], name="tile", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,param",
    [
        (X4, "reduction_param { axis: 1 coeff: 2 }"),
        (X4, "reduction_param { operation: ASUM axis: 2 }"),
        (X4, "reduction_param { operation: SUMSQ axis: 3 coeff: -0.5 }"),
        (X4, "reduction_param { operation: MEAN axis: -2 }"),
        ((2, 3, 4), "reduction_param { operation: MEAN axis: 1 }"),
        ((3, 5), "reduction_param { operation: SUM axis: 1 }"),
    ],
)
def test_reduction(tmp_path, shape, param):
    nb = NetBuilder("reduction", seed=14)
    x = nb.input("data", shape)
    nb.add("Reduction", [x], name="red", param=param)
    check_net(nb, tmp_path)


def test_reduction_axis0_is_a_scalar(tmp_path):
    """Default axis 0 reduces everything (Caffe's scalar top; kerasq returns it as shape (1,))."""
    nb = NetBuilder("reduction0", seed=15)
    x = nb.input("data", (2, 3, 4, 5))
    nb.add("Reduction", [x], name="red", param="reduction_param { operation: ASUM coeff: 0.5 }")
    got, want, _ = forward_and_reference(nb, tmp_path)
    assert np.size(got["red"]) == 1
    assert_caffe_close(np.reshape(got["red"], want["red"].shape), want["red"], "red")


@pytest.mark.parametrize(
    "shape,param",
    [
        (X4, "argmax_param { axis: 1 }"),
        (X4, "argmax_param { axis: 1 top_k: 3 }"),
        (X4, "argmax_param { axis: 1 top_k: 2 out_max_val: true }"),
        (X4, "argmax_param { axis: 3 top_k: 2 }"),
        (X4, "argmax_param { axis: 2 }"),
        (X4, "argmax_param { }"),
        (X4, "argmax_param { top_k: 3 }"),
        (X4, "argmax_param { top_k: 2 out_max_val: true }"),
        ((3, 7), "argmax_param { top_k: 2 }"),
        ((3, 7), "argmax_param { axis: 1 top_k: 2 out_max_val: true }"),
        ((2, 5, 4), "argmax_param { axis: -1 top_k: 2 }"),
    ],
)
def test_argmax(tmp_path, shape, param):
    nb = NetBuilder("argmax", seed=16)
    x = nb.input("data", shape)
    nb.add("ArgMax", [x], name="am", param=param)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "order", [(0, 2, 3, 1), (0, 3, 1, 2), (0, 2, 1, 3), (0, 1, 3, 2), (0, 3), (0, 1, 2, 3)]
)
def test_permute_then_layout_sensitive_ops(tmp_path, order):
    """Permute relabels the layout; the following Slice / Softmax / Flatten+InnerProduct must
    still address the permuted Caffe axes."""
    nb = NetBuilder("permute", seed=17)
    x = nb.input("data", X4)
    order_txt = " ".join(f"order: {o}" for o in order)
    p = nb.add("Permute", [x], name="perm", param=f"permute_param {{ {order_txt} }}")
    full = list(order) + [i for i in range(4) if i not in order]
    pshape = [X4[i] for i in full]
    nb.add(
        "Slice",
        [p],
        tops=["s0", "s1"],
        name="slice",
        param="slice_param { axis: 1 slice_point: 1 }",
    )
    nb.add("Softmax", [p], name="sm", param="softmax_param { axis: 3 }")
    nb.add("Tile", ["s1"], name="tile", param="tile_param { axis: 2 tiles: 2 }")
    n_in = int(np.prod(pshape[1:]))
    nb.add(
        "InnerProduct",
        [p],
        name="fc",
        param="inner_product_param { num_output: 4 }",
        blobs=[nb.randn(4, n_in, scale=0.1), nb.randn(4)],
    )
    check_net(nb, tmp_path)


@pytest.mark.parametrize("order", [(1, 0, 2, 3), (2, 3, 0, 1), (3, 1, 0)])
def test_permute_moving_the_batch_axis(tmp_path, order):
    """Orders that move Caffe axis 0 use a real transpose; later ops address the new axes."""
    nb = NetBuilder("permute_b", seed=20)
    x = nb.input("data", X4)
    order_txt = " ".join(f"order: {o}" for o in order)
    p = nb.add("Permute", [x], name="perm", param=f"permute_param {{ {order_txt} }}")
    nb.add(
        "Slice",
        [p],
        tops=["s0", "s1"],
        name="slice",
        param="slice_param { axis: 1 slice_point: 1 }",
    )
    nb.add("Softmax", [p], name="sm", param="softmax_param { axis: 2 }")
    nb.add("Tile", ["s1"], name="tile", param="tile_param { axis: 3 tiles: 2 }")
    back = [order.index(i) for i in range(len(order))] if len(order) == 4 else None
    if back:
        nb.add(
            "Permute",
            [p],
            name="back",
            param="permute_param { " + " ".join(f"order: {o}" for o in back) + " }",
        )
    check_net(nb, tmp_path)


def test_permute_3d_and_reshape_like_ultraface(tmp_path):
    """NCHW -> NHWC Permute, Reshape to (N, -1, 2), Softmax over the last axis (UltraFace head)."""
    nb = NetBuilder("uf", seed=18)
    x = nb.input("data", (2, 4, 3, 5))
    p = nb.add(
        "Permute", [x], name="perm", param="permute_param { order: 0 order: 2 order: 3 order: 1 }"
    )
    r = nb.add(
        "Reshape", [p], name="resh", param="reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"
    )
    nb.add("Softmax", [r], name="sm", param="softmax_param { axis: 2 }")
    nb.add("Permute", [r], name="perm3", param="permute_param { order: 0 order: 2 order: 1 }")
    check_net(nb, tmp_path)


@pytest.mark.parametrize("group", [2, 3])
def test_shuffle_channel(tmp_path, group):
    nb = NetBuilder("shuffle", seed=19)
    x = nb.input("data", (2, 6, 3, 5))
    s = nb.add(
        "ShuffleChannel", [x], name="shuf", param=f"shuffle_channel_param {{ group: {group} }}"
    )
    nb.add(
        "Slice", [s], tops=["a", "b"], name="slice", param="slice_param { axis: 1 slice_point: 2 }"
    )
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "param",
    [
        "argmax_param { axis: 1 top_k: 3 }",
        "argmax_param { top_k: 4 out_max_val: true }",
        "argmax_param { axis: 3 top_k: 2 out_max_val: true }",
    ],
)
def test_argmax_ties_follow_caffe_order(tmp_path, param):
    """Many equal values: Caffe ranks ties by the higher index first."""
    nb = NetBuilder("argmax_ties", seed=21)
    x = nb.input("data", X4)
    nb.add("ArgMax", [x], name="am", param=param)
    data = np.round(nb.randn(*X4)).astype(np.float32)  # values in {-3..3}: ties everywhere
    check_net(nb, tmp_path, {"data": data})
