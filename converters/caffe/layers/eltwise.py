"""Eltwise: SUM (with per-input coefficients), PROD, MAX over N inputs."""

from __future__ import annotations

from typing import List

from kerasq._compat import keras
from kerasq.converters.caffe.keras_layers import WeightedSum
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob
from kerasq.converters.caffe.proto import caffe_pb2

_E = caffe_pb2.EltwiseParameter


@register("Eltwise", partial="SUM with coeff, PROD, MAX; N bottoms")
def lower_eltwise(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """SUM ``y = sum_i c_i x_i`` (Add if all c_i = 1), PROD (Multiply), MAX (Maximum)."""
    p = node.param.eltwise_param
    if not inputs:
        ctx.error(node, "Eltwise needs at least one bottom")
    for b in inputs[1:]:
        if b.shape[1:] != inputs[0].shape[1:]:
            ctx.error(node, f"Eltwise inputs differ in shape: {[list(i.shape) for i in inputs]}")
    xs = ctx.same_layout(inputs, node)
    coeff = list(p.coeff)
    if coeff and p.operation != _E.SUM:
        ctx.error(node, "Eltwise coeff is only allowed with operation SUM")
    if coeff and len(coeff) != len(xs):
        ctx.error(node, f"Eltwise has {len(xs)} bottoms but {len(coeff)} coefficients")
    tensors = [b.tensor for b in xs]
    if p.operation == _E.SUM and coeff and any(c != 1.0 for c in coeff):
        out = WeightedSum(coeff, name=ctx.name(node))(tensors)
    elif len(tensors) == 1:
        return [xs[0]]
    elif p.operation == _E.SUM:
        out = keras.layers.Add(name=ctx.name(node))(tensors)
    elif p.operation == _E.PROD:
        out = keras.layers.Multiply(name=ctx.name(node))(tensors)
    else:
        out = keras.layers.Maximum(name=ctx.name(node))(tensors)
    return [Blob(out, xs[0].shape, xs[0].perm)]
