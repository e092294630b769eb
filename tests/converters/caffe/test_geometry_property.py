"""Property tests: random pooling / convolution / deconvolution geometries against the numpy
reference of Caffe's formulas (ceil + clip rule, AVE divisor, MAX padding, dilation, groups).
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder, check_net  # noqa: E402

FAST = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
SLOW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pooling_case(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] - 1)), draw(st.integers(0, k[1] - 1)))
    h = draw(st.integers(max(k[0] - 2 * p[0], 1), 12))
    w = draw(st.integers(max(k[1] - 2 * p[1], 1), 12))
    method = draw(st.sampled_from(["MAX", "AVE"]))
    floor = draw(st.booleans())
    for size, kk, ss, pp in ((h, k[0], s[0], p[0]), (w, k[1], s[1], p[1])):
        out = (-(-(size + 2 * pp - kk) // ss) if not floor else (size + 2 * pp - kk) // ss) + 1
        if pp > 0 and (out - 1) * ss >= size + pp:
            out -= 1
        # Caffe's degenerate case (no pad, stride > kernel, ceil): a last window entirely
        # outside the image yields -FLT_MAX (MAX) or 0/0 (AVE); documented, not emulated.
        assume((out - 1) * ss - pp < size)
    return k, s, p, h, w, method, floor


def _pool(case):
    (kh, kw), (sh, sw), (ph, pw), h, w, method, floor = case
    nb = NetBuilder("pool_prop", seed=h * 31 + w)
    x = nb.input("data", (1, 2, h, w))
    mode = " round_mode: FLOOR" if floor else ""
    nb.add(
        "Pooling",
        [x],
        name="pool",
        param=f"pooling_param {{ pool: {method} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} "
        f"stride_w: {sw} pad_h: {ph} pad_w: {pw}{mode} }}",
    )
    inputs = {"data": nb.randn(1, 2, h, w) - 2.0}  # mostly negative: padding must never win
    with tempfile.TemporaryDirectory() as folder:
        check_net(nb, folder, inputs)


@FAST
@given(pooling_case())
def test_pooling_geometry(case):
    _pool(case)


@pytest.mark.slow
@SLOW
@given(pooling_case())
def test_pooling_geometry_long(case):
    _pool(case)


@st.composite
def conv_case(draw):
    group = draw(st.sampled_from([1, 2]))
    cin = group * draw(st.integers(1, 2))
    cout = group * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(d[0] * (k[0] - 1) + 1 - 2 * p[0], 1), 10))
    w = draw(st.integers(max(d[1] * (k[1] - 1) + 1 - 2 * p[1], 1), 10))
    deconv = draw(st.booleans())
    bias = draw(st.booleans())
    return group, cin, cout, k, s, d, p, h, w, deconv, bias


def _conv(case):
    group, cin, cout, (kh, kw), (sh, sw), (dh, dw), (ph, pw), h, w, deconv, bias = case
    nb = NetBuilder("conv_prop", seed=h * 7 + w)
    x = nb.input("data", (2, cin, h, w))
    shape = (cin, cout // group, kh, kw) if deconv else (cout, cin // group, kh, kw)
    blobs = [nb.randn(*shape)] + ([nb.randn(cout)] if bias else [])
    nb.add(
        "Deconvolution" if deconv else "Convolution",
        [x],
        name="conv",
        param=f"convolution_param {{ num_output: {cout} group: {group} kernel_h: {kh} "
        f"kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} "
        f"dilation: {dh} dilation: {dw} bias_term: {str(bias).lower()} }}",
        blobs=blobs,
    )
    with tempfile.TemporaryDirectory() as folder:
        if deconv and (
            sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph < 1
            or sw * (w - 1) + dw * (kw - 1) + 1 - 2 * pw < 1
        ):
            return
        check_net(nb, folder)


@FAST
@given(conv_case())
def test_convolution_geometry(case):
    _conv(case)


@pytest.mark.slow
@SLOW
@given(conv_case())
def test_convolution_geometry_long(case):
    _conv(case)


@st.composite
def axis_case(draw):
    op = draw(st.sampled_from(["Softmax", "Concat", "Flatten", "InnerProduct", "Scale", "Reshape"]))
    axis = draw(st.integers(1, 3))
    end = draw(st.integers(axis, 3))
    layout = draw(st.sampled_from(["conv", "reshape"]))  # NHWC or Caffe-order input
    negative = draw(st.booleans())
    return op, axis, end, layout, negative


def _axis(case):
    op, axis, end, layout, negative = case
    shape = (2, 3, 4, 5)
    nb = NetBuilder("axis_prop", seed=axis * 10 + end)
    x = nb.input("data", shape)
    if layout == "conv":
        y = nb.add(
            "Convolution",
            [x],
            name="c",
            param="convolution_param { num_output: 3 kernel_size: 1 }",
            blobs=[nb.randn(3, 3, 1, 1), nb.randn(3)],
        )
    else:
        y = nb.add(
            "Reshape",
            [x],
            name="c",
            param="reshape_param { shape { dim: 0 dim: 3 dim: -1 dim: 5 } }",
        )
    a = axis - 4 if negative else axis
    if op == "Softmax":
        nb.add(op, [y], name="op", param=f"softmax_param {{ axis: {a} }}")
    elif op == "Concat":
        nb.add(op, [y, x, y], name="op", param=f"concat_param {{ axis: {a} }}")
    elif op == "Flatten":
        e = end - 4 if negative else end
        nb.add(op, [y], name="op", param=f"flatten_param {{ axis: {a} end_axis: {e} }}")
    elif op == "InnerProduct":
        k = int(np.prod(shape[axis:]))
        nb.add(
            op,
            [y],
            name="op",
            param=f"inner_product_param {{ num_output: 3 axis: {a} }}",
            blobs=[nb.randn(3, k), nb.randn(3)],
        )
    elif op == "Scale":
        n = end - axis + 1
        pshape = shape[axis : axis + n]
        nb.add(
            op,
            [y],
            name="op",
            param=f"scale_param {{ axis: {a} num_axes: {n} bias_term: true }}",
            blobs=[nb.randn(*pshape), nb.randn(*pshape)],
        )
    else:
        dims = list(shape)
        dims[axis] = -1
        dims[0] = 0
        spec = " ".join(f"dim: {d}" for d in dims[: end + 1])
        nb.add(op, [y], name="op", param=f"reshape_param {{ shape {{ {spec} }} }}")
    with tempfile.TemporaryDirectory() as folder:
        check_net(nb, folder)


@FAST
@given(axis_case())
def test_axis_parameters_on_any_layout(case):
    _axis(case)


@pytest.mark.slow
@SLOW
@given(axis_case())
def test_axis_parameters_on_any_layout_long(case):
    _axis(case)
