"""BatchNorm (scale-factor blob, eps, global or batch statistics) and Scale.

BatchNorm: ``y = (x - m/s) / sqrt(v/s + eps)`` with blobs ``(m, v, s)`` and ``s == 0 -> 0``
(``batch_norm_layer.cpp``). With global statistics (the TEST default) it becomes a stock
``BatchNormalization(center=False, scale=False)``; ``use_global_stats: false`` normalises
with the batch's own statistics. Usually BatchNorm(+Scale) is folded into the preceding
convolution by the ``fold_batchnorm`` pass and never reaches these handlers.

Scale: ``y = x * gamma (+ beta)`` broadcast over Caffe axes ``axis..axis+num_axes``; the
two-bottom form takes ``gamma`` from the second bottom. Per-channel scales of 4-D blobs
become a 1x1 ``DepthwiseConv2D`` (stock, quantization friendly).
"""

from __future__ import annotations

from typing import List

import numpy as np

from kerasq._compat import keras
from kerasq.converters.caffe.keras_layers import BatchStatNormalize, BroadcastAffine
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import NHWC, Blob
from kerasq.converters.caffe.fold import batchnorm_stats


@register(
    "BatchNorm", partial="global stats (folded into the previous conv/IP by default) or batch stats"
)
def lower_batchnorm(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Caffe BatchNorm (axis 1) -> BatchNormalization or BatchStatNormalize."""
    x = inputs[0]
    if x.rank < 2:
        ctx.error(node, f"BatchNorm needs a blob with a channel axis, got {list(x.shape)}")
    channels = x.shape[1]
    axis = x.keras_axis(1)
    p = node.param.batch_norm_param
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else True
    if not global_stats:
        out = BatchStatNormalize(axis=axis, epsilon=float(p.eps), name=ctx.name(node))(x.tensor)
        return [Blob(out, x.shape, x.perm)]
    mean, var, eps = batchnorm_stats(node, channels, ctx.source)
    # Blobs 3 and 4 (gamma, beta) are appended by the pass merging a following Scale.
    affine = len(node.blobs) == 5
    layer = keras.layers.BatchNormalization(
        axis=axis, epsilon=eps, center=affine, scale=affine, fused=False, name=ctx.name(node)
    )
    out = layer(x.tensor, training=False)
    if affine:
        gamma = ctx.blob(node, 3, (channels,), "merged Scale gamma")
        beta = ctx.blob(node, 4, (channels,), "merged Scale beta")
        layer.set_weights([gamma, beta, mean, var])
    else:
        layer.set_weights([mean, var])
    return [Blob(out, x.shape, x.perm)]


@register(
    "Scale",
    partial="axis, num_axes, bias_term; the two-bottom form with axis 0 (per-sample scales)",
)
def lower_scale(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Caffe Scale: learned or second-bottom ``gamma``, optional learned ``beta``."""
    p = node.param.scale_param
    x = inputs[0]
    try:
        axis = x.caffe_axis(p.axis)
    except IndexError:
        ctx.error(node, f"axis {p.axis} out of range for {list(x.shape)}")
    if len(inputs) == 2:
        gamma_blob = inputs[1]
        n_axes = gamma_blob.rank
    else:
        n_axes = x.rank - axis if p.num_axes == -1 else int(p.num_axes)
    if axis + n_axes > x.rank:
        ctx.error(node, f"axis {p.axis} + num_axes {n_axes} exceed the input rank {x.rank}")
    covered = list(range(axis, axis + n_axes))
    pshape_caffe = tuple(x.shape[a] for a in covered)
    if len(inputs) == 2:
        if axis != 0:
            ctx.error(node, "two-bottom Scale is supported with axis 0 (per-sample scales) only")
        if tuple(inputs[1].shape[1:]) != pshape_caffe[1:]:
            ctx.error(
                node,
                f"scale blob shape {list(inputs[1].shape)} does not match "
                f"{list(x.shape)} at axis {axis}",
            )
        order = [a for a in x.perm[1:] if a in covered and x.shape[a] != 1]
        if order != sorted(order):
            x = ctx.caffe_order(x, node)
        g = ctx.caffe_order(gamma_blob, node)
        param_shape = tuple(x.shape[a] if a in covered else 1 for a in x.perm[1:])
        layer = BroadcastAffine(
            param_shape,
            use_scale=True,
            use_bias=bool(p.bias_term),
            scale_from_input=True,
            name=ctx.name(node),
        )
        out = layer([x.tensor, g.tensor])
        if p.bias_term:
            beta = ctx.blob(node, 0, pshape_caffe[1:], "bias")
            layer.set_weights([_to_param(beta, covered[1:], x.perm, param_shape)])
        return [Blob(out, x.shape, x.perm)]
    if axis == 0:
        ctx.error(node, "Scale with learned blobs over the batch axis is not supported")
    if any(d is None for d in pshape_caffe):
        ctx.error(node, "Scale over dynamic axes is not supported")
    gamma = ctx.blob(node, 0, pshape_caffe, "scale")
    beta = ctx.blob(node, 1, pshape_caffe, "bias") if p.bias_term else None
    if x.rank == 4 and covered == [1]:
        x = ctx.channels_last(x, node)
        layer = keras.layers.DepthwiseConv2D((1, 1), use_bias=beta is not None, name=ctx.name(node))
        out = layer(x.tensor)
        layer.set_weights([gamma.reshape(1, 1, -1, 1)] + ([beta] if beta is not None else []))
        return [Blob(out, x.shape, NHWC)]
    param_shape = tuple(x.shape[a] if a in covered else 1 for a in x.perm[1:])
    layer = BroadcastAffine(
        param_shape, use_scale=True, use_bias=beta is not None, name=ctx.name(node)
    )
    out = layer(x.tensor)
    weights = [_to_param(gamma, covered, x.perm, param_shape)]
    if beta is not None:
        weights.append(_to_param(beta, covered, x.perm, param_shape))
    layer.set_weights(weights)
    return [Blob(out, x.shape, x.perm)]


def _to_param(values: np.ndarray, covered, perm, param_shape) -> np.ndarray:
    """Caffe-order parameter over ``covered`` axes -> Keras broadcast shape."""
    order = [a for a in perm[1:] if a in covered]
    transposed = values.transpose([covered.index(a) for a in order])
    return transposed.reshape(param_shape).astype(np.float32)
