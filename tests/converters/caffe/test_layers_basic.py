"""Synthetic tests of the core handlers (Convolution, Deconvolution, InnerProduct, Pooling,
ReLU, BatchNorm, Scale, Eltwise, Concat, Split, Flatten, Reshape, Softmax) for parameter
combinations the golden corpus does not cover, against the numpy reference of Caffe's
formulas in ``caffe_reference.py`` (independent of the converter).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import caffe_reference as ref  # noqa: E402
from netbuilder import NetBuilder, assert_caffe_close, check_net  # noqa: E402


def _forward(proto_text: str, nb: NetBuilder, folder, inputs):
    from kerasq.converters.caffe import forward

    path = pathlib.Path(folder) / "variant.prototxt"
    path.write_text(proto_text)
    _, model = nb.write(folder)
    return forward(path, model, inputs)


# ---- Convolution ---------------------------------------------------------------------

CONV_CASES = {  # param, (cout, group, kh, kw)
    "rect_stride_dilation": (
        "num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 "
        "pad_h: 2 pad_w: 1 dilation: 2 dilation: 3",
        (6, 1, 3, 2),
    ),
    "group2_stride2_dilation2_nobias": (
        "num_output: 6 kernel_size: 3 stride: 2 dilation: 2 pad: 1 group: 2 bias_term: false",
        (6, 2, 3, 3),
    ),
    "pad_bigger_than_kernel": ("num_output: 3 kernel_size: 1 pad: 2", (3, 1, 1, 1)),
    "repeated_kernel_size": (
        "num_output: 4 kernel_size: 2 kernel_size: 4 stride: 1 stride: 2",
        (4, 1, 2, 4),
    ),
    "depthwise_multiplier3_stride2": (
        "num_output: 12 kernel_size: 3 group: 4 stride: 2 pad: 1",
        (12, 4, 3, 3),
    ),
    "depthwise_dilated_strided": (
        "num_output: 4 kernel_size: 3 group: 4 stride: 2 dilation: 2",
        (4, 4, 3, 3),
    ),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution(tmp_path, case):
    param, (cout, group, kh, kw) = CONV_CASES[case]
    nb = NetBuilder(case)
    x = nb.input("data", (2, 4, 13, 16))
    blobs = [nb.randn(cout, 4 // group, kh, kw)]
    if "bias_term: false" not in param:
        blobs.append(nb.randn(cout))
    nb.add("Convolution", [x], name="conv", param=f"convolution_param {{ {param} }}", blobs=blobs)
    check_net(nb, tmp_path)


@pytest.mark.parametrize("type_name", ["DepthwiseConvolution", "ConvolutionDepthwise"])
def test_depthwise_type_names(tmp_path, type_name):
    """Fork type names mean group = channels even when group is not written."""
    nb = NetBuilder("dw")
    x = nb.input("data", (1, 5, 9, 11))
    w, b = nb.randn(5, 1, 3, 3), nb.randn(5)
    nb.add(
        "Convolution",
        [x],
        name="dw",
        param="convolution_param { num_output: 5 kernel_size: 3 pad: 1 group: 5 }",
        blobs=[w, b],
    )
    inputs = nb.random_inputs()
    want = ref.run_net(nb.prototxt(), nb.params, inputs)["dw"]
    text = nb.prototxt().replace('"Convolution"', f'"{type_name}"').replace(" group: 5", "")
    got = _forward(text, nb, tmp_path, inputs)["dw"]
    assert_caffe_close(got, want, type_name)


# ---- Deconvolution -------------------------------------------------------------------

DECONV_CASES = {
    "group2_stride3_kernel2": ("num_output: 4 kernel_size: 2 stride: 3 group: 2", 2),
    "dilation2_pad1": ("num_output: 3 kernel_size: 3 stride: 2 pad: 1 dilation: 2", 3),
    "rect_no_bias": (
        "num_output: 2 kernel_h: 4 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 "
        "pad_w: 0 bias_term: false",
        (4, 3),
    ),
    "depthwise_upsample": ("num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 4", 4),
}


@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_deconvolution(tmp_path, case):
    param, k = DECONV_CASES[case]
    kh, kw = (k, k) if isinstance(k, int) else k
    nb = NetBuilder(case)
    x = nb.input("data", (2, 4, 7, 9))
    cout = int(param.split("num_output: ")[1].split()[0])
    group = int(param.split("group: ")[1].split()[0]) if "group" in param else 1
    blobs = [nb.randn(4, cout // group, kh, kw)]
    if "bias_term: false" not in param:
        blobs.append(nb.randn(cout))
    nb.add("Deconvolution", [x], name="up", param=f"convolution_param {{ {param} }}", blobs=blobs)
    check_net(nb, tmp_path)


# ---- InnerProduct --------------------------------------------------------------------


def test_inner_product_transpose_after_conv(tmp_path):
    nb = NetBuilder("ipt")
    x = nb.input("data", (3, 2, 5, 6))
    c = nb.add(
        "Convolution",
        [x],
        name="conv",
        param="convolution_param { num_output: 4 kernel_size: 3 }",
        blobs=[nb.randn(4, 2, 3, 3), nb.randn(4)],
    )
    nb.add(
        "InnerProduct",
        [c],
        name="fc",
        param="inner_product_param { num_output: 7 transpose: true }",
        blobs=[nb.randn(4 * 3 * 4, 7), nb.randn(7)],
    )
    check_net(nb, tmp_path)


@pytest.mark.parametrize("axis", [2, 3, -1])
def test_inner_product_axis(tmp_path, axis):
    nb = NetBuilder(f"ipa{axis % 4}")
    x = nb.input("data", (2, 3, 4, 5))
    k = int(np.prod((2, 3, 4, 5)[axis % 4 :]))
    nb.add(
        "InnerProduct",
        [x],
        name="fc",
        param=f"inner_product_param {{ num_output: 6 axis: {axis} }}",
        blobs=[nb.randn(6, k), nb.randn(6)],
    )
    check_net(nb, tmp_path)


def test_inner_product_on_caffe_order_blob(tmp_path):
    """IP after a Reshape (identity layout) and after a Permute-free 3-D blob."""
    nb = NetBuilder("ipr")
    x = nb.input("data", (2, 3, 4, 6))
    r = nb.add(
        "Reshape", [x], name="r", param="reshape_param { shape { dim: 0 dim: 6 dim: 2 dim: -1 } }"
    )
    nb.add(
        "InnerProduct",
        [r],
        name="fc",
        param="inner_product_param { num_output: 5 }",
        blobs=[nb.randn(5, 72), nb.randn(5)],
    )
    check_net(nb, tmp_path)


# ---- Pooling -------------------------------------------------------------------------

POOL_CASES = {
    "max_pad2_k3_negative": ("pool: MAX kernel_size: 3 stride: 1 pad: 2", 9, 10),
    "max_rect_ceil_pad": (
        "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1",
        10,
        13,
    ),
    "max_k3s2_same_path_odd": ("pool: MAX kernel_size: 3 stride: 2", 11, 12),
    "ave_rect_ceil_pad": (
        "pool: AVE kernel_h: 3 kernel_w: 4 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 2",
        10,
        13,
    ),
    "ave_floor_pad": ("pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", 10, 13),
    "max_floor_pad": ("pool: MAX kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", 9, 12),
    "ave_clip_rule_fires": ("pool: AVE kernel_size: 3 stride: 3 pad: 2", 7, 10),
    "max_clip_rule_fires": ("pool: MAX kernel_size: 3 stride: 3 pad: 2", 7, 10),
    "ave_stride_bigger_than_kernel": ("pool: AVE kernel_size: 2 stride: 3", 10, 11),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pooling(tmp_path, case):
    param, h, w = POOL_CASES[case]
    nb = NetBuilder(case)
    x = nb.input("data", (2, 3, h, w))
    nb.add("Pooling", [x], name="pool", param=f"pooling_param {{ {param} }}")
    inputs = nb.random_inputs()
    if "negative" in case:
        inputs = {k: -np.abs(v) - 1.0 for k, v in inputs.items()}  # zero padding would win
    check_net(nb, tmp_path, inputs)


def test_pooling_fork_ceil_mode_false(tmp_path):
    """``ceil_mode: false`` (BVLC PR #3057 forks) == ``round_mode: FLOOR``."""
    nb = NetBuilder("ceilfork")
    x = nb.input("data", (1, 2, 10, 11))
    nb.add(
        "Pooling",
        [x],
        name="pool",
        param="pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR }",
    )
    inputs = nb.random_inputs()
    want = ref.run_net(nb.prototxt(), nb.params, inputs)["pool"]
    got = _forward(
        nb.prototxt().replace("round_mode: FLOOR", "ceil_mode: false"), nb, tmp_path, inputs
    )
    assert got["pool"].shape == (1, 2, 4, 5)
    assert_caffe_close(got["pool"], want, "pool")


# ---- ReLU, Softmax -------------------------------------------------------------------


@pytest.mark.parametrize("slope", [-0.5, 0.01, 2.5])
def test_relu_negative_slope(tmp_path, slope):
    nb = NetBuilder("relu")
    x = nb.input("data", (2, 3, 4, 5))
    nb.add("ReLU", [x], name="relu", param=f"relu_param {{ negative_slope: {slope} }}")
    check_net(nb, tmp_path)


@pytest.mark.parametrize("axis", [2, 3, -1, 1])
def test_softmax_axis_on_4d(tmp_path, axis):
    nb = NetBuilder("softmax")
    x = nb.input("data", (2, 3, 4, 5))
    nb.add("Softmax", [x], name="prob", param=f"softmax_param {{ axis: {axis} }}")
    check_net(nb, tmp_path, {"data": nb.randn(2, 3, 4, 5, scale=3.0)})


# ---- BatchNorm / Scale ---------------------------------------------------------------


def _bn_blobs(nb, c, factor):
    mean = nb.randn(c) * factor
    var = (np.abs(nb.randn(c)) + 0.5) * factor
    return [mean, var, np.array([factor], np.float32)]


@pytest.mark.parametrize("producer", ["Convolution", "Deconvolution", "InnerProduct"])
@pytest.mark.parametrize("fold", [True, False])
def test_batchnorm_scale_in_place_after_producer(tmp_path, producer, fold):
    from kerasq.converters.caffe import forward, load

    nb = NetBuilder(f"bn_{producer}")
    x = nb.input("data", (2, 4, 6, 7))
    if producer == "InnerProduct":
        nb.add(
            producer,
            [x],
            tops="y",
            name="p",
            param="inner_product_param { num_output: 6 }",
            blobs=[nb.randn(6, 4 * 6 * 7), nb.randn(6)],
        )
    else:
        shape = (6, 2, 3, 3) if producer == "Convolution" else (4, 3, 3, 3)
        nb.add(
            producer,
            [x],
            tops="y",
            name="p",
            param="convolution_param { num_output: 6 kernel_size: 3 group: 2 stride: 2 }",
            blobs=[nb.randn(*shape), nb.randn(6)],
        )
    nb.add(
        "BatchNorm",
        ["y"],
        tops="y",
        name="bn",
        param="batch_norm_param { eps: 0.001 }",
        blobs=_bn_blobs(nb, 6, 999.98),
    )
    nb.add(
        "Scale",
        ["y"],
        tops="y",
        name="sc",
        param="scale_param { bias_term: true }",
        blobs=[nb.randn(6), nb.randn(6)],
    )
    nb.add("ReLU", ["y"], tops="out", name="relu")
    proto, model = nb.write(tmp_path)
    inputs = nb.random_inputs()
    want = ref.run_net(nb.prototxt(), nb.params, inputs)
    got = forward(proto, model, inputs, fold_batchnorm=fold)
    for top in ("y", "out"):
        assert_caffe_close(got[top], want[top], top)
    kinds = {type(layer).__name__ for layer in load(proto, model, fold_batchnorm=fold).layers}
    assert ("BatchNormalization" in kinds) != fold


def test_batchnorm_zero_scale_factor_and_batch_stats(tmp_path):
    nb = NetBuilder("bn_special")
    x = nb.input("data", (3, 4, 5, 6))
    nb.add(
        "BatchNorm",
        [x],
        name="zero_factor",
        blobs=_bn_blobs(nb, 4, 1.0)[:2] + [np.zeros(1, np.float32)],
    )
    nb.add(
        "BatchNorm",
        [x],
        name="local",
        param="batch_norm_param { use_global_stats: false eps: 0.01 }",
        blobs=_bn_blobs(nb, 4, 3.0),
    )
    got = check_net(nb, tmp_path)
    np.testing.assert_allclose(got["zero_factor"], got["data"] / np.sqrt(1e-5), rtol=1e-5)


def test_batchnorm_not_folded_when_the_conv_output_is_used_elsewhere(tmp_path):
    nb = NetBuilder("bn_shared")
    x = nb.input("data", (1, 3, 6, 6))
    c = nb.add(
        "Convolution",
        [x],
        name="conv",
        param="convolution_param { num_output: 4 kernel_size: 1 }",
        blobs=[nb.randn(4, 3, 1, 1), nb.randn(4)],
    )
    b = nb.add("BatchNorm", [c], name="bn", blobs=_bn_blobs(nb, 4, 2.0))
    nb.add("Eltwise", [c, b], name="sum")
    check_net(nb, tmp_path)


SCALE_CASES = {
    "axis2_num_axes2": ((2, 3, 4, 5), "axis: 2 num_axes: 2 bias_term: true", (4, 5)),
    "axis1_all_axes": ((2, 3, 4, 5), "axis: 1 num_axes: -1", (3, 4, 5)),
    "on_2d_blob": ((4, 6), "bias_term: true", (6,)),
    "axis_minus1_3d": ((2, 3, 7), "axis: -1 bias_term: true", (7,)),
    "scalar_num_axes0": ((2, 3, 4, 5), "num_axes: 0 bias_term: true", ()),
}


@pytest.mark.parametrize("case", sorted(SCALE_CASES))
def test_scale(tmp_path, case):
    shape, param, pshape = SCALE_CASES[case]
    nb = NetBuilder(case)
    x = nb.input("data", shape)
    blobs = [nb.randn(*pshape) if pshape else np.array(1.7, np.float32)]
    if "bias_term" in param:
        blobs.append(nb.randn(*pshape) if pshape else np.array(-0.3, np.float32))
    nb.add("Scale", [x], name="scale", param=f"scale_param {{ {param} }}", blobs=blobs)
    check_net(nb, tmp_path)


def test_scale_two_bottoms_squeeze_excitation(tmp_path):
    """SE block: global pool -> IP -> Sigmoid -> Scale(x, s) with axis 0 (per-sample scales)."""
    nb = NetBuilder("se")
    x = nb.input("data", (3, 4, 5, 6))
    g = nb.add("Pooling", [x], name="gap", param="pooling_param { pool: AVE global_pooling: true }")
    f = nb.add(
        "InnerProduct",
        [g],
        name="fc",
        param="inner_product_param { num_output: 4 }",
        blobs=[nb.randn(4, 4), nb.randn(4)],
    )
    s = nb.add("Sigmoid", [f], name="gate")
    nb.add("Scale", [x, s], name="excite", param="scale_param { axis: 0 }")
    check_net(nb, tmp_path)


# ---- Eltwise / Concat / Split / Flatten / Reshape ------------------------------------


@pytest.mark.parametrize("op", ["SUM coeff: 1 coeff: -2 coeff: 0.5", "PROD", "MAX", "SUM"])
def test_eltwise_three_inputs_mixed_layouts(tmp_path, op):
    nb = NetBuilder("elt")
    x = nb.input("data", (2, 3, 4, 5))
    r = nb.add(
        "Reshape", [x], name="r", param="reshape_param { shape { dim: 0 dim: 3 dim: 4 dim: 5 } }"
    )
    c = nb.add(
        "Convolution",
        [x],
        name="c",
        param="convolution_param { num_output: 3 kernel_size: 1 }",
        blobs=[nb.randn(3, 3, 1, 1), nb.randn(3)],
    )
    nb.add("Eltwise", [x, r, c], name="elt", param=f"eltwise_param {{ operation: {op} }}")
    check_net(nb, tmp_path)


@pytest.mark.parametrize("axis", [1, 2, 3, -1, -3])
def test_concat_axes(tmp_path, axis):
    nb = NetBuilder("cat")
    shapes = [[2, 3, 4, 5], [2, 3, 4, 5]]
    a = axis % 4
    shapes[1][a] = 2
    x = nb.input("a", tuple(shapes[0]))
    y = nb.input("b", tuple(shapes[1]))
    nb.add("Concat", [x, y], name="cat", param=f"concat_param {{ axis: {axis} }}")
    check_net(nb, tmp_path)


def test_split_dropout_silence_flatten_range(tmp_path):
    nb = NetBuilder("plumbing")
    x = nb.input("data", (2, 3, 4, 5))
    s1, s2, s3 = nb.add("Split", [x], tops=["s1", "s2", "s3"], name="split")
    nb.add("Dropout", [s1], tops="s1", name="drop", param="dropout_param { dropout_ratio: 0.3 }")
    f = nb.add("Flatten", [s2], name="flat", param="flatten_param { axis: 2 end_axis: 3 }")
    nb.add("Softmax", [f], name="prob", param="softmax_param { axis: 2 }")
    nb.add("Flatten", [s3], name="flat_mid", param="flatten_param { axis: 1 end_axis: -2 }")
    got = check_net(nb, tmp_path)
    assert got["flat"].shape == (2, 3, 20) and got["flat_mid"].shape == (2, 12, 5)


RESHAPE_CASES = {
    "axis1_num_axes1": ("shape { dim: 3 dim: 1 } axis: 1 num_axes: 1", (2, 3, 4, 5)),
    "axis_minus1_append": ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5)),
    "infer_middle": ("shape { dim: 0 dim: -1 dim: 10 }", (2, 3, 4, 5)),
    "to_5d": ("shape { dim: 0 dim: 3 dim: 2 dim: 2 dim: 5 }", (2, 3, 4, 5)),
    "batch_mixing": ("shape { dim: 4 dim: -1 }", (2, 3, 4, 5)),
}


@pytest.mark.parametrize("case", sorted(RESHAPE_CASES))
def test_reshape(tmp_path, case):
    param, shape = RESHAPE_CASES[case]
    nb = NetBuilder(case)
    x = nb.input("data", shape)
    c = nb.add(
        "Convolution",
        [x],
        name="c",
        param="convolution_param { num_output: 3 kernel_size: 1 }",
        blobs=[nb.randn(3, 3, 1, 1), nb.randn(3)],
    )
    nb.add("Reshape", [c], name="r", param=f"reshape_param {{ {param} }}")
    check_net(nb, tmp_path)


def test_awkward_layer_and_blob_names(tmp_path):
    """Numeric names, '/' and ':' in names, a top named like another layer."""
    from kerasq.converters.caffe import load

    nb = NetBuilder("names")
    x = nb.input("data", (1, 3, 4, 4))
    c = nb.add(
        "Convolution",
        [x],
        tops="245",
        name="conv1/3x3:0",
        param="convolution_param { num_output: 2 kernel_size: 1 }",
        blobs=[nb.randn(2, 3, 1, 1), nb.randn(2)],
    )
    nb.add("ReLU", [c], tops="245", name="246")
    nb.add(
        "Pooling",
        ["245"],
        tops="conv1/3x3:0",
        name="pool/out",
        param="pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
    )
    check_net(nb, tmp_path)
    proto, model = nb.write(tmp_path)
    keras_model = load(proto, model)
    assert keras_model.output_names == ["conv1_3x3_0"]


def test_phase_stage_and_level_rules(tmp_path):
    """Caffe's NetStateRule logic for the TEST phase: include/exclude, stage, not_stage, level."""
    from kerasq.converters.caffe import forward

    text = """
    input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3
    state { stage: "deploy" }
    layer { name: "train_only" type: "Power" bottom: "data" top: "y"
            power_param { scale: 10 } include { phase: TRAIN } }
    layer { name: "test_only" type: "Power" bottom: "data" top: "y"
            power_param { scale: 2 } include { phase: TEST } }
    layer { name: "not_deploy" type: "Power" bottom: "y" top: "y"
            power_param { scale: 100 } exclude { stage: "deploy" } }
    layer { name: "needs_deploy" type: "Power" bottom: "y" top: "y"
            power_param { shift: 1 } include { stage: "deploy" } }
    layer { name: "high_level" type: "Power" bottom: "y" top: "y"
            power_param { shift: 1000 } include { min_level: 1 } }
    layer { name: "not_stage" type: "Power" bottom: "y" top: "y"
            power_param { shift: 5 } include { not_stage: "deploy" } }
    """
    path = tmp_path / "rules.prototxt"
    path.write_text(text)
    x = np.random.RandomState(0).randn(1, 2, 3, 3).astype(np.float32)
    np.testing.assert_allclose(forward(path, None, {"data": x})["y"], 2 * x + 1, rtol=1e-6)
    got = forward(path, None, {"data": x}, stages=["other"])["y"]
    np.testing.assert_allclose(got, 200 * x + 5, rtol=1e-6)


def test_scale_alone_folds_into_conv_and_bn_scale_merge_after_eltwise(tmp_path):
    """conv -> Scale folds into the conv; Eltwise -> BN -> Scale becomes one BatchNormalization."""
    from kerasq.converters.caffe import forward, load

    nb = NetBuilder("fold_more")
    x = nb.input("data", (2, 3, 6, 7))
    nb.add(
        "Convolution",
        [x],
        tops="c",
        name="conv",
        param="convolution_param { num_output: 3 kernel_size: 3 pad: 1 bias_term: false }",
        blobs=[nb.randn(3, 3, 3, 3)],
    )
    nb.add(
        "Scale",
        ["c"],
        tops="c",
        name="conv_scale",
        param="scale_param { bias_term: true }",
        blobs=[nb.randn(3), nb.randn(3)],
    )
    nb.add("Eltwise", [x, "c"], tops="s", name="sum")
    nb.add("BatchNorm", ["s"], tops="s", name="bn", blobs=_bn_blobs(nb, 3, 5.0))
    nb.add(
        "Scale",
        ["s"],
        tops="s",
        name="bn_scale",
        param="scale_param { bias_term: true }",
        blobs=[nb.randn(3), nb.randn(3)],
    )
    proto, model = nb.write(tmp_path)
    inputs = nb.random_inputs()
    want = ref.run_net(nb.prototxt(), nb.params, inputs)
    got = forward(proto, model, inputs)
    for top in ("c", "s"):
        assert_caffe_close(got[top], want[top], top)
    keras_model = load(proto, model)
    kinds = [type(layer).__name__ for layer in keras_model.layers]
    assert "DepthwiseConv2D" not in kinds and kinds.count("BatchNormalization") == 1
    bn = next(layer for layer in keras_model.layers if type(layer).__name__ == "BatchNormalization")
    assert bn.center and bn.scale
    out = np.asarray(keras_model(inputs["data"].transpose(0, 2, 3, 1), training=False))
    assert_caffe_close(out.transpose(0, 3, 1, 2), want["s"], "loaded s")


@pytest.mark.parametrize("fold", [True, False])
def test_nvidia_batchnorm_with_scale_bias_matches_opencv(tmp_path, fold):
    """NVIDIA Caffe / caffe-jacinto BatchNorm (scale_bias, 5 blobs, factor blob 0): statistics
    used as stored, gamma/beta applied; OpenCV implements the same rule."""
    cv2 = pytest.importorskip("cv2")
    from kerasq.converters.caffe import forward

    nb = NetBuilder("nvbn")
    x = nb.input("data", (1, 3, 5, 6))
    nb.add(
        "Convolution",
        [x],
        tops="c",
        name="conv",
        param="convolution_param { num_output: 4 kernel_size: 3 }",
        blobs=[nb.randn(4, 3, 3, 3), nb.randn(4)],
    )
    mean, var = nb.randn(4), np.abs(nb.randn(4)) + 0.5
    gamma, beta = nb.randn(4), nb.randn(4)
    nb.add(
        "BatchNorm",
        ["c"],
        tops="c",
        name="bn",
        param="batch_norm_param { scale_bias: true eps: 0.0001 }",
        blobs=[mean, var, np.zeros(1, np.float32), gamma, beta],
    )
    proto, model = nb.write(tmp_path)
    inputs = nb.random_inputs()
    got = forward(proto, model, inputs, fold_batchnorm=fold)["c"]
    conv = ref.run_net(nb.prototxt().split('layer {\n  name: "bn"')[0], nb.params, inputs)["c"]
    shape = (1, -1, 1, 1)
    want = gamma.reshape(shape) * (conv - mean.reshape(shape)) / np.sqrt(
        var.reshape(shape) + 1e-4
    ) + beta.reshape(shape)
    assert_caffe_close(got, want.astype(np.float32), "numpy")
    net = cv2.dnn.readNetFromCaffe(proto, model)
    net.setInput(inputs["data"])
    assert_caffe_close(got, net.forward(), "opencv")


def test_flatten_before_inner_product_needs_no_runtime_transpose():
    from kerasq.converters.caffe import load

    from conftest import shared_path

    folder = shared_path("caffe-golden", "flatten")
    model = load(folder / "deploy.prototxt", folder / "model.caffemodel")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "Permute" not in kinds and kinds.count("Dense") == 1
    x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
    got = np.asarray(model(x, training=False))
    assert_caffe_close(got, np.load(folder / "blobs" / "fc.npy"), "fc")
