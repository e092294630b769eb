"""Convolution (incl. group, depthwise, dilation, rectangular params) and Deconvolution.

Caffe pads symmetrically, TF "same" does not: every pad is an explicit
``ZeroPadding2D`` followed by a "valid" convolution. Weights:

* Convolution ``(Cout, Cin/g, kh, kw)`` -> Conv2D ``(kh, kw, Cin/g, Cout)`` (``groups=g``),
  depthwise (``g == Cin``) -> DepthwiseConv2D ``(kh, kw, Cin, Cout/Cin)``.
* Deconvolution ``(Cin, Cout/g, kh, kw)`` -> Conv2DTranspose ``(kh, kw, Cout, Cin)``
  (grouped: one block-diagonal kernel), then a crop of ``pad`` per side.
* Stride and dilation together (not allowed by Keras): the kernel is dilated with zeros
  (an exact ``d(k-1)+1`` kernel) and the layer runs with dilation 1.

Output size: conv ``floor((H + 2p - (d(k-1)+1)) / s) + 1``; deconv ``s(H-1) + d(k-1)+1 - 2p``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from kerasq._compat import keras
from kerasq.converters.caffe.layers._params import field, spatial_pair
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import NHWC, Blob


def _geometry(ctx, node):
    p = node.param.convolution_param
    try:
        kernel = spatial_pair(
            p.kernel_size, field(p, "kernel_h"), field(p, "kernel_w"), None, "kernel"
        )
        stride = spatial_pair(p.stride, field(p, "stride_h"), field(p, "stride_w"), 1, "stride")
        pad = spatial_pair(p.pad, field(p, "pad_h"), field(p, "pad_w"), 0, "pad")
        dilation = spatial_pair(p.dilation, None, None, 1, "dilation")
    except ValueError as err:
        ctx.error(node, str(err))
    if p.axis not in (1, -3):
        ctx.error(node, f"convolution axis {p.axis} is not supported (only 1)")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        ctx.error(node, f"invalid geometry kernel={kernel} stride={stride} dilation={dilation}")
    return kernel, stride, pad, dilation


def _dilate_kernel(kernel: np.ndarray, dilation: Tuple[int, int]) -> np.ndarray:
    """Insert zeros between taps of a (kh, kw, ...) kernel: exact dilation by rate ``d``."""
    dh, dw = dilation
    kh, kw = kernel.shape[:2]
    out = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1) + kernel.shape[2:], kernel.dtype)
    out[::dh, ::dw] = kernel
    return out


def _conv_out(size: Optional[int], k: int, s: int, p: int, d: int) -> Optional[int]:
    if size is None:
        return None
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


@register(
    "Convolution", "DepthwiseConvolution", "ConvolutionDepthwise", partial="2-D only (axis 1)"
)
def lower_convolution(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Caffe Convolution: ZeroPadding2D + Conv2D / DepthwiseConv2D ("valid")."""
    p = node.param.convolution_param
    kernel, stride, pad, dilation = _geometry(ctx, node)
    x = ctx.channels_last(inputs[0])
    n, cin, h, w = x.shape
    cout = int(p.num_output)
    group = int(p.group)
    if node.type != "Convolution" and group == 1:
        group = cin  # fork type names imply depthwise
    if cout < 1 or group < 1 or cin % group or cout % group:
        ctx.error(
            node,
            f"num_output {cout} and {cin} input channels must both be divisible by group {group}",
        )
    kh, kw = kernel
    weights = ctx.blob(node, 0, (cout, cin // group, kh, kw), "weights")
    bias = ctx.blob(node, 1, (cout,), "bias") if p.bias_term else None
    out_h = _conv_out(h, kh, stride[0], pad[0], dilation[0])
    out_w = _conv_out(w, kw, stride[1], pad[1], dilation[1])
    if (out_h is not None and out_h < 1) or (out_w is not None and out_w < 1):
        ctx.error(node, f"output would be empty for input {h}x{w}")
    tensor = x.tensor
    if pad != (0, 0):
        tensor = keras.layers.ZeroPadding2D(
            ((pad[0], pad[0]), (pad[1], pad[1])), name=ctx.name(node, "pad")
        )(tensor)
    # TF's CPU depthwise kernel needs equal strides; otherwise a grouped Conv2D is exact too.
    depthwise = group == cin and group > 1 and stride[0] == stride[1]
    if depthwise:
        mult = cout // cin
        kernel_w = weights.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)
    else:
        kernel_w = weights.transpose(2, 3, 1, 0)
    rate = dilation
    if dilation != (1, 1) and stride != (1, 1):
        kernel_w, rate = _dilate_kernel(kernel_w, dilation), (1, 1)
    common = dict(
        strides=stride,
        padding="valid",
        dilation_rate=rate,
        use_bias=bias is not None,
        name=ctx.name(node),
    )
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(
            kernel_w.shape[:2], depth_multiplier=cout // cin, **common
        )
    else:
        layer = keras.layers.Conv2D(cout, kernel_w.shape[:2], groups=group, **common)
    tensor = layer(tensor)
    layer.set_weights([kernel_w] + ([bias] if bias is not None else []))
    return [Blob(tensor, (n, cout, out_h, out_w), NHWC)]


@register("Deconvolution", partial="2-D only; groups via a block-diagonal kernel")
def lower_deconvolution(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Caffe Deconvolution: Conv2DTranspose ("valid") + Cropping2D of ``pad`` per side."""
    p = node.param.convolution_param
    kernel, stride, pad, dilation = _geometry(ctx, node)
    x = ctx.channels_last(inputs[0])
    n, cin, h, w = x.shape
    cout = int(p.num_output)
    group = int(p.group)
    if cout < 1 or group < 1 or cin % group or cout % group:
        ctx.error(
            node,
            f"num_output {cout} and {cin} input channels must both be divisible by group {group}",
        )
    kh, kw = kernel
    weights = ctx.blob(node, 0, (cin, cout // group, kh, kw), "weights")
    bias = ctx.blob(node, 1, (cout,), "bias") if p.bias_term else None
    # Full (kh, kw, Cout, Cin) kernel; grouped -> block diagonal.
    full = np.zeros((kh, kw, cout, cin), np.float32)
    ci, co = cin // group, cout // group
    for g in range(group):
        block = weights[g * ci : (g + 1) * ci]  # (ci, co, kh, kw)
        full[:, :, g * co : (g + 1) * co, g * ci : (g + 1) * ci] = block.transpose(2, 3, 1, 0)
    if dilation != (1, 1):
        full = _dilate_kernel(full, dilation)
    ekh, ekw = full.shape[:2]

    def out_size(size, k, s, pd):
        return None if size is None else s * (size - 1) + k - 2 * pd

    out_h, out_w = out_size(h, ekh, stride[0], pad[0]), out_size(w, ekw, stride[1], pad[1])
    if (out_h is not None and out_h < 1) or (out_w is not None and out_w < 1):
        ctx.error(node, f"output would be empty for input {h}x{w}")
    layer = keras.layers.Conv2DTranspose(
        cout,
        (ekh, ekw),
        strides=stride,
        padding="valid",
        use_bias=bias is not None,
        name=ctx.name(node),
    )
    tensor = layer(x.tensor)
    layer.set_weights([full] + ([bias] if bias is not None else []))
    # Keras "valid" gives s*H + max(k - s, 0); Caffe wants s(H-1) + k - 2p.
    extra_h = max(stride[0] - ekh, 0)
    extra_w = max(stride[1] - ekw, 0)
    crop = ((pad[0], pad[0] + extra_h), (pad[1], pad[1] + extra_w))
    if crop != ((0, 0), (0, 0)):
        tensor = keras.layers.Cropping2D(crop, name=ctx.name(node, "crop"))(tensor)
    return [Blob(tensor, (n, cout, out_h, out_w), NHWC)]
