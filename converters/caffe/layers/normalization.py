"""Normalization Caffe layers: LRN (both regions), MVN, Normalize (SSD fork).

LRN ACROSS_CHANNELS  y = x / (k + alpha/n * sum_{n channels around c} x^2)^beta
LRN WITHIN_CHANNEL   y = x * (1 + alpha * avg_{n x n, pad (n-1)/2} x^2)^-beta   (k unused)
MVN                  y = (x - mean) / (sqrt(var) + eps)   (eps OUTSIDE the sqrt, as BVLC)
Normalize            y = x / sqrt(sum x^2 + eps) * scale  (over C,H,W or over C)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from kerasq.converters.caffe import keras_layers as kx
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob

from kerasq.errors import CaffeFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.lower import LoweringContext


@register("LRN")
def lower_lrn(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """LRN on a 4-D blob (NHWC in Keras); local_size must be odd, as Caffe requires."""
    x = inputs[0]
    p = node.param.lrn_param
    if x.rank != 4:
        ctx.error(node, f"LRN needs a 4-D blob, got shape {x.shape}")
    if p.local_size % 2 != 1:
        ctx.error(node, f"LRN local_size must be odd, got {p.local_size}", cls=CaffeFormatError)
    x = ctx.channels_last(x)
    if p.norm_region == 0:  # ACROSS_CHANNELS
        layer = kx.LRNAcrossChannels(
            local_size=p.local_size, alpha=p.alpha, beta=p.beta, k=p.k, name=ctx.name(node)
        )
    else:
        layer = kx.LRNWithinChannel(
            local_size=p.local_size, alpha=p.alpha, beta=p.beta, name=ctx.name(node)
        )
    return [Blob(tensor=layer(x.tensor), shape=x.shape, perm=x.perm)]


@register("MVN")
def lower_mvn(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """MVN per sample over H,W (per channel) or over C,H,W (across_channels)."""
    x = inputs[0]
    if x.perm[0] != 0:
        x = ctx.caffe_order(x)
    p = node.param.mvn_param
    first = 1 if p.across_channels else 2
    if x.rank < 2:
        ctx.error(node, f"MVN needs at least 2 axes, got shape {x.shape}")
    # A 2-D blob without across_channels normalizes single values (Caffe gives 0): axes = [].
    axes = sorted(x.keras_axis(i) for i in range(first, x.rank))
    layer = kx.MeanVarianceNorm(
        axes=axes, normalize_variance=p.normalize_variance, eps=p.eps, name=ctx.name(node)
    )
    return [Blob(tensor=layer(x.tensor), shape=x.shape, perm=x.perm)]


@register("Normalize")
def lower_normalize(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """SSD Normalize: L2 over C,H,W (across_spatial) or over C, times a learned scale."""
    x = inputs[0]
    if x.perm[0] != 0:
        x = ctx.caffe_order(x)
    p = node.param.norm_param
    if x.rank < 2:
        ctx.error(node, f"Normalize needs at least 2 axes, got shape {x.shape}")
    axes = (
        sorted(x.keras_axis(i) for i in range(1, x.rank)) if p.across_spatial else [x.keras_axis(1)]
    )
    channels = x.shape[1]
    if not p.channel_shared and channels is None:
        ctx.error(node, "Normalize over an axis of unknown size is not supported")
    scale = ctx.blob(node, 0, (1,) if p.channel_shared else (channels,), "scale").reshape(-1)
    scale_shape = [1] * x.rank
    if not p.channel_shared:
        scale_shape[x.keras_axis(1)] = scale.size
    layer = kx.L2Normalize(axes=axes, eps=p.eps, scale_shape=scale_shape, name=ctx.name(node))
    out = layer(x.tensor)
    layer.set_weights([scale.reshape(scale_shape)])
    return [Blob(tensor=out, shape=x.shape, perm=x.perm)]
