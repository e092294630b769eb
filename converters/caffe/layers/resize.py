"""Resizing fork layers: Interp (DeepLab, align-corners bilinear) and Upsample (nearest).

Interp output size (H_eff = H + pad_beg + pad_end, pads <= 0 crop):
    shrink_factor s only   (H_eff - 1) // s + 1
    zoom_factor z only     H_eff + (H_eff - 1) * (z - 1)
    height/width           as given
    both                   shrink first, then zoom
and out[i] = bilinear sample of the cropped input at i * (H_eff - 1) / (H_out - 1).

Upsample (YOLO/SegNet-style forks, single bottom): nearest neighbour by ``scale`` (or
``scale_h``/``scale_w``), or to ``upsample_h`` x ``upsample_w`` with src = floor(i * H / H_out).
The two-bottom SegNet form (max-unpooling with a mask) is not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from kerasq.converters.caffe import keras_layers as kx
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob

from kerasq._compat import keras
from kerasq.errors import CaffeFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.lower import LoweringContext


def _opt(msg, field: str) -> Optional[int]:
    return int(getattr(msg, field)) if msg.HasField(field) else None


@register("Interp", partial="pad_beg/pad_end must be <= 0 (cropping), as in DeepLab")
def lower_interp(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """DeepLab Interp: crop by -pad, then bilinear resize with aligned corners."""
    if len(inputs) != 1:
        ctx.error(node, "Interp with a second (size reference) bottom is not supported")
    x = inputs[0]
    if x.rank != 4:
        ctx.error(node, f"Interp needs a 4-D blob, got shape {x.shape}")
    p = node.param.interp_param
    height, width = _opt(p, "height"), _opt(p, "width")
    zoom, shrink = _opt(p, "zoom_factor"), _opt(p, "shrink_factor")
    pad_beg, pad_end = int(p.pad_beg), int(p.pad_end)
    if pad_beg > 0 or pad_end > 0:
        ctx.error(node, "Interp supports only non-positive pad_beg/pad_end (cropping)")
    if not (zoom or shrink or (height and width)):
        ctx.error(
            node, "Interp needs height+width, zoom_factor or shrink_factor", cls=CaffeFormatError
        )
    if (zoom is not None and zoom < 1) or (shrink is not None and shrink < 1):
        ctx.error(node, "Interp zoom_factor/shrink_factor must be >= 1", cls=CaffeFormatError)
    x = ctx.channels_last(x)

    def out_size(size: Optional[int], fixed: Optional[int]) -> Optional[int]:
        if size is None and not (height and width and not zoom and not shrink):
            return None
        fixed_size = fixed if height and width else None
        n = kx.interp_output_size(
            size if size is not None else 0, pad_beg, pad_end, fixed_size, zoom, shrink
        )
        if size is not None and (size + pad_beg + pad_end <= 0 or n <= 0):
            ctx.error(
                node, f"Interp gives an empty output for input size {size}", cls=CaffeFormatError
            )
        return n

    oh, ow = out_size(x.shape[2], height), out_size(x.shape[3], width)
    layer = kx.InterpBilinear(
        height=height,
        width=width,
        zoom_factor=zoom,
        shrink_factor=shrink,
        pad_beg=pad_beg,
        pad_end=pad_end,
        name=ctx.name(node),
    )
    return [Blob(tensor=layer(x.tensor), shape=(x.shape[0], x.shape[1], oh, ow), perm=x.perm)]


@register(
    "Upsample",
    partial="nearest neighbour only; the two-bottom SegNet unpooling form is not supported",
)
def lower_upsample(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Upsample: nearest neighbour by integer scale or to upsample_h x upsample_w."""
    if len(inputs) != 1:
        ctx.error(node, "Upsample with a mask bottom (SegNet max-unpooling) is not supported")
    x = inputs[0]
    if x.rank != 4:
        ctx.error(node, f"Upsample needs a 4-D blob, got shape {x.shape}")
    p = node.param.upsample_param
    if p.pad_out_h or p.pad_out_w:
        ctx.error(node, "Upsample pad_out_h/pad_out_w are not supported")
    x = ctx.channels_last(x)
    if p.HasField("upsample_h") or p.HasField("upsample_w"):
        if not (p.HasField("upsample_h") and p.HasField("upsample_w")):
            ctx.error(node, "Upsample needs both upsample_h and upsample_w", cls=CaffeFormatError)
        oh, ow = int(p.upsample_h), int(p.upsample_w)
        h, w = x.shape[2], x.shape[3]
        if h is not None and w is not None and oh % h == 0 and ow % w == 0:
            layer = keras.layers.UpSampling2D(
                size=(oh // h, ow // w), interpolation="nearest", name=ctx.name(node)
            )
        else:
            layer = kx.NearestResize(out_h=oh, out_w=ow, name=ctx.name(node))
        shape = (x.shape[0], x.shape[1], oh, ow)
    else:
        sh = int(p.scale_h) if p.HasField("scale_h") else int(p.scale)
        sw = int(p.scale_w) if p.HasField("scale_w") else int(p.scale)
        if sh < 1 or sw < 1:
            ctx.error(node, f"Upsample scale must be >= 1, got {sh}x{sw}", cls=CaffeFormatError)
        layer = keras.layers.UpSampling2D(
            size=(sh, sw), interpolation="nearest", name=ctx.name(node)
        )
        shape = (
            x.shape[0],
            x.shape[1],
            None if x.shape[2] is None else x.shape[2] * sh,
            None if x.shape[3] is None else x.shape[3] * sw,
        )
    return [Blob(tensor=layer(x.tensor), shape=shape, perm=x.perm)]
