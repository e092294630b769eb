"""Bias and Embed.

Bias   y = x + b, b broadcast over x's Caffe axes [axis, axis + num_axes)
       (num_axes -1 = to the end, 0 = scalar); or b = bottom[1] (two-input form).
Embed  y[..., :] = W[int(x)] (+ bias), W of shape (input_dim, num_output);
       top shape = bottom shape + (num_output,).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

import numpy as np
from kerasq.converters.caffe import keras_layers as kx
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob

from kerasq.errors import CaffeFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.lower import LoweringContext


@register("Bias")
def lower_bias(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Bias: learned blob (axis, num_axes) or a second bottom, broadcast-added to bottom[0]."""
    x = inputs[0]
    p = node.param.bias_param
    try:
        axis = x.caffe_axis(p.axis)
    except IndexError:
        ctx.error(node, f"axis {p.axis} out of range for shape {x.shape}", cls=CaffeFormatError)
    if len(inputs) == 2:
        b = inputs[1]
        b = b if b.is_caffe_order else ctx.caffe_order(b)
        if axis + b.rank > x.rank or any(
            bd is not None and xd is not None and bd != xd
            for bd, xd in zip(b.shape, x.shape[axis:])
        ):
            ctx.error(
                node,
                f"bias bottom {b.shape} does not match {x.shape} at axis {axis}",
                cls=CaffeFormatError,
            )
        layer = kx.BroadcastAddCaffe(axis=axis, x_perm=x.perm, name=ctx.name(node))
        return [Blob(tensor=layer([x.tensor, b.tensor]), shape=x.shape, perm=x.perm)]
    num_axes = x.rank - axis if p.num_axes == -1 else int(p.num_axes)
    if num_axes < 0 or axis + num_axes > x.rank:
        ctx.error(
            node, f"num_axes {p.num_axes} out of range for shape {x.shape}", cls=CaffeFormatError
        )
    covered = x.shape[axis : axis + num_axes]
    if any(d is None for d in covered):
        ctx.error(node, "Bias over an axis of unknown size (the batch axis) is not supported")
    bias = ctx.blob(node, 0, covered if num_axes else (1,), "bias")
    full = bias.reshape((1,) * axis + tuple(covered) + (1,) * (x.rank - axis - num_axes))
    keras_bias = np.transpose(full, x.perm)
    layer = kx.ConstantBias(bias_shape=keras_bias.shape, name=ctx.name(node))
    out = layer(x.tensor)
    layer.set_weights([keras_bias])
    return [Blob(tensor=out, shape=x.shape, perm=x.perm)]


@register("Embed")
def lower_embed(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Embed: table lookup of integer-valued inputs in [0, input_dim)."""
    x = inputs[0]
    p = node.param.embed_param
    weights = [ctx.blob(node, 0, (p.input_dim, p.num_output), "weight")]
    if p.bias_term:
        weights.append(ctx.blob(node, 1, (p.num_output,), "bias"))
    layer = kx.CaffeEmbed(
        input_dim=p.input_dim, num_output=p.num_output, bias_term=p.bias_term, name=ctx.name(node)
    )
    out = layer(x.tensor)
    layer.set_weights(weights)
    return [Blob(tensor=out, shape=x.shape + (p.num_output,), perm=x.perm + (x.rank,))]
