"""Inputs, ReLU (negative_slope) and Softmax (axis)."""

from __future__ import annotations

from typing import List

from kerasq._compat import keras
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob
from kerasq.errors import KerasqError


@register(
    "Input",
    "Data",
    "ImageData",
    "HDF5Data",
    "MemoryData",
    "DummyData",
    "WindowData",
    partial="become model inputs; data layers need input_shape (--input-shape)",
)
def lower_input(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Inputs are created by the input pass; reaching this is an internal error."""
    ctx.error(node, "input layers are turned into model inputs before lowering", KerasqError)


@register("ReLU", partial="negative_slope")
def lower_relu(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """``y = max(x, 0) + negative_slope * min(x, 0)``."""
    slope = float(node.param.relu_param.negative_slope)
    if slope == 0:
        layer = keras.layers.ReLU(name=ctx.name(node))
    elif slope > 0:
        layer = keras.layers.ReLU(negative_slope=slope, name=ctx.name(node))
    else:  # Keras ReLU refuses negative slopes; leaky_relu computes max(x, a*x) exactly
        layer = keras.layers.LeakyReLU(alpha=slope, name=ctx.name(node))
    x = inputs[0]
    return [Blob(layer(x.tensor), x.shape, x.perm)]


@register("Softmax", partial="any axis but the batch axis")
def lower_softmax(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """``y = exp(x - max) / sum exp(x - max)`` along Caffe ``axis`` (default 1)."""
    x = inputs[0]
    try:
        axis = x.keras_axis(node.param.softmax_param.axis)
    except IndexError:
        ctx.error(node, f"axis {node.param.softmax_param.axis} out of range for {list(x.shape)}")
    if axis == 0:
        ctx.error(node, "Softmax over the batch axis is not supported")
    return [Blob(keras.layers.Softmax(axis=axis, name=ctx.name(node))(x.tensor), x.shape, x.perm)]
