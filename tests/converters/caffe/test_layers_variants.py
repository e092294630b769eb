"""Synthetic tests of the core layer types for the parameter combinations that neither
caffe-golden nor the OpenCV oracles cover (see caffe-models/INDEX.md "Not covered"):
DepthwiseConvolution / ConvolutionDepthwise type names, InnerProduct ``transpose``, Pooling
FLOOR with padding, Deconvolution dilation / group, BatchNorm with batch statistics, Scale
axis / num_axes / two-input form, Eltwise over N inputs, Softmax / Concat / Flatten / Reshape
axis parameters on 2-D, 3-D and 4-D blobs. Reference: caffe_reference.py (numpy)."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import Blob, NetBuilder, check_net  # noqa: E402

X4 = (2, 4, 9, 7)


@pytest.mark.parametrize("ltype", ["DepthwiseConvolution", "ConvolutionDepthwise"])
def test_depthwise_type_names(tmp_path, ltype):
    nb = NetBuilder("dw", seed=70)
    x = nb.input("data", X4)
    nb.add(
        ltype,
        [x],
        name="dw",
        param="convolution_param { num_output: 4 group: 4 kernel_size: 3 pad: 1 stride: 2 }",
        blobs=[nb.randn(4, 1, 3, 3), nb.randn(4)],
    )
    nb.add(
        ltype,
        [x],
        name="dw2",
        param="convolution_param { num_output: 8 group: 4 kernel_h: 3 kernel_w: 2 "
        "bias_term: false }",
        blobs=[nb.randn(8, 1, 3, 2)],
    )
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "param",
    [
        "convolution_param { num_output: 6 kernel_size: 3 stride: 2 dilation: 2 pad: 1 }",
        "convolution_param { num_output: 6 group: 2 kernel_h: 2 kernel_w: 3 "
        "stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0 }",
        "convolution_param { num_output: 4 group: 4 kernel_size: 3 stride: 3 }",
    ],
)
def test_deconvolution_dilation_group_rect(tmp_path, param):
    nb = NetBuilder("deconv", seed=71)
    x = nb.input("data", X4)
    out = int(re.search(r"num_output: (\d+)", param).group(1))
    group = int(re.search(r"group: (\d+)", param).group(1)) if "group" in param else 1
    kh = int(re.search(r"kernel_(?:size|h): (\d+)", param).group(1))
    kw = int(re.search(r"kernel_w: (\d+)", param).group(1)) if "kernel_w" in param else kh
    nb.add(
        "Deconvolution",
        [x],
        name="up",
        param=param,
        blobs=[nb.randn(4, out // group, kh, kw), nb.randn(out)],
    )
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,param,wshape",
    [
        (X4, "inner_product_param { num_output: 5 transpose: true }", (4 * 9 * 7, 5)),
        ((2, 3, 6), "inner_product_param { num_output: 5 axis: 2 transpose: true }", (6, 5)),
        ((2, 3, 6), "inner_product_param { num_output: 5 axis: 2 }", (5, 6)),
        ((2, 3, 6), "inner_product_param { num_output: 4 axis: -1 bias_term: false }", (4, 6)),
    ],
)
def test_inner_product_axis_transpose(tmp_path, shape, param, wshape):
    nb = NetBuilder("ip", seed=72)
    x = nb.input("data", shape)
    n_out = wshape[1] if "transpose" in param else wshape[0]
    blobs = [nb.randn(*wshape, scale=0.2)] + (
        [] if "bias_term: false" in param else [nb.randn(n_out)]
    )
    nb.add("InnerProduct", [x], name="fc", param=param, blobs=blobs)
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "param",
    [
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }",
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }",
        "pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 "
        "pad_h: 1 pad_w: 2 }",
        "pooling_param { pool: MAX kernel_size: 2 stride: 3 pad: 1 }",  # ceil overhang + clip
        "pooling_param { pool: AVE kernel_size: 4 stride: 3 pad: 2 }",
    ],
)
def test_pooling_floor_and_clip(tmp_path, param):
    nb = NetBuilder("pool", seed=73)
    x = nb.input("data", (2, 3, 10, 8))
    nb.add("Pooling", [x], name="pool", param=param)
    check_net(nb, tmp_path)


def test_batchnorm_batch_statistics(tmp_path):
    nb = NetBuilder("bn_local", seed=74)
    x = nb.input("data", X4)
    nb.add(
        "BatchNorm",
        [x],
        name="bn",
        param="batch_norm_param { use_global_stats: false eps: 0.001 }",
        blobs=[nb.randn(4), nb.randn(4) ** 2, Blob([1000.0])],
    )
    check_net(nb, tmp_path, {"data": nb.randn(*X4, scale=3.0) + 2.0})


@pytest.mark.parametrize(
    "shape,param,sshape",
    [
        (X4, "scale_param { axis: 1 num_axes: 2 bias_term: true }", (4, 9)),
        (X4, "scale_param { axis: 2 num_axes: -1 }", (9, 7)),
        (X4, "scale_param { axis: -1 bias_term: true }", (7,)),
        (X4, "scale_param { num_axes: 0 bias_term: true }", (1,)),
        ((3, 5), "scale_param { bias_term: true }", (5,)),
        ((2, 3, 6), "scale_param { axis: 2 }", (6,)),
    ],
)
def test_scale_axis_num_axes(tmp_path, shape, param, sshape):
    nb = NetBuilder("scale", seed=75)
    x = nb.input("data", shape)
    blobs = [nb.randn(*sshape)] + ([nb.randn(*sshape)] if "bias_term: true" in param else [])
    nb.add("Scale", [x], name="scale", param=param, blobs=blobs)
    check_net(nb, tmp_path)


@pytest.mark.parametrize("sshape,axis", [((2, 4), 0), ((2, 4, 9, 7), 0)])
def test_scale_two_inputs(tmp_path, sshape, axis):
    nb = NetBuilder("scale2", seed=76)
    x = nb.input("data", X4)
    s = nb.input("s", sshape)
    nb.add("Scale", [x, s], name="scale", param=f"scale_param {{ axis: {axis} }}")
    check_net(nb, tmp_path)


def test_eltwise_many_inputs(tmp_path):
    nb = NetBuilder("elt", seed=77)
    x = nb.input("data", X4)
    ys = [
        nb.add(
            "Power", [x], name=f"p{i}", param=f"power_param {{ scale: {0.5 + i} shift: {i - 1} }}"
        )
        for i in range(4)
    ]
    nb.add(
        "Eltwise", ys, name="sum", param="eltwise_param { coeff: 1 coeff: -2 coeff: 0.5 coeff: 3 }"
    )
    nb.add("Eltwise", ys, name="prod", param="eltwise_param { operation: PROD }")
    nb.add("Eltwise", ys, name="max", param="eltwise_param { operation: MAX }")
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "shape,axis", [(X4, 1), (X4, 2), (X4, 3), (X4, -1), ((2, 3, 6), 2), ((2, 3, 6), 1), ((3, 5), 1)]
)
def test_softmax_axis(tmp_path, shape, axis):
    nb = NetBuilder("softmax", seed=78)
    x = nb.input("data", shape)
    nb.add("Softmax", [x], name="sm", param=f"softmax_param {{ axis: {axis} }}")
    check_net(nb, tmp_path, {"data": nb.randn(*shape, scale=3.0)})


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_concat_axis_4d(tmp_path, axis):
    nb = NetBuilder("concat", seed=79)
    x = nb.input("data", X4)
    a = nb.add("TanH", [x], name="a")
    b = nb.add("Sigmoid", [x], name="b")
    nb.add("Concat", [a, b, x], name="cat", param=f"concat_param {{ axis: {axis} }}")
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "param",
    [
        "flatten_param { axis: 2 }",
        "flatten_param { axis: 1 end_axis: 2 }",
        "flatten_param { axis: 2 end_axis: -1 }",
    ],
)
def test_flatten_axes(tmp_path, param):
    nb = NetBuilder("flat", seed=80)
    x = nb.input("data", X4)
    f = nb.add("Flatten", [x], name="flat", param=param)
    nb.add("Softmax", [f], name="sm", param="softmax_param { axis: -1 }")
    check_net(nb, tmp_path)


@pytest.mark.parametrize(
    "param",
    [
        "reshape_param { shape { dim: 0 dim: -1 dim: 7 } }",
        "reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 }",
        "reshape_param { shape { dim: -1 } axis: 2 }",
        "reshape_param { shape { dim: 0 dim: 3 dim: 3 } axis: 1 num_axes: 2 }",
        "reshape_param { shape { dim: 1 } axis: 0 num_axes: 0 }",
    ],
)
def test_reshape_axis_num_axes(tmp_path, param):
    nb = NetBuilder("reshape", seed=81)
    x = nb.input("data", X4)
    r = nb.add("Reshape", [x], name="resh", param=param)
    nb.add("Softmax", [r], name="sm", param="softmax_param { axis: 1 }")
    check_net(nb, tmp_path)


@pytest.mark.parametrize("factor", [0.0, 999.98])
def test_batchnorm_scale_factor_blob(tmp_path, factor):
    """Scale factor 0 means mean = var = 0 (Caffe), otherwise mean/var are divided by it."""
    nb = NetBuilder("bn_factor", seed=82)
    x = nb.input("data", (2, 3, 5, 4))
    nb.add(
        "BatchNorm",
        [x],
        name="bn",
        param="batch_norm_param { use_global_stats: true eps: 0.01 }",
        blobs=[nb.randn(3) * 50, nb.randn(3) ** 2 * 100, Blob([factor], "none")],
    )
    check_net(nb, tmp_path)
