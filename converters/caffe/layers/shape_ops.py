"""Axis-routing Caffe layers: Slice, Crop, Tile, Reduction, ArgMax, Permute, ShuffleChannel.

Every Caffe axis parameter is remapped through the blob's layout (``Blob.keras_axis``), so
the tensor is only transposed when the op itself demands it (ArgMax without ``axis``
flattens in Caffe order; a Permute that moves the batch axis). Permute keeping axis 0 in
place costs nothing: it only relabels the layout (e.g. Permute(0,2,3,1) of an NHWC tensor
is the very same tensor, now in Caffe order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from kerasq.converters.caffe import keras_layers as kx
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob

from kerasq.errors import CaffeFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.lower import LoweringContext


def _axis(ctx: "LoweringContext", node: "Node", blob: Blob, axis: int) -> int:
    try:
        return blob.caffe_axis(axis)
    except IndexError:
        ctx.error(
            node,
            f"axis {axis} out of range for a {blob.rank}-D blob of shape {blob.shape}",
            cls=CaffeFormatError,
        )
    raise AssertionError  # pragma: no cover - ctx.error raises


def _batch_first(ctx: "LoweringContext", blob: Blob) -> Blob:
    """Keras axis 0 must hold Caffe axis 0 for ops that keep or reduce the batch axis."""
    return blob if blob.rank == 0 or blob.perm[0] == 0 else ctx.caffe_order(blob)


def _slice(
    ctx: "LoweringContext", node: "Node", x: Blob, ranges: List[Tuple[int, int, int]], suffix: str
) -> Blob:
    """Slice Caffe axes: ranges = [(caffe_axis, begin, size)]."""
    begins = [0] * x.rank
    sizes = [-1] * x.rank
    shape = list(x.shape)
    for axis, begin, size in ranges:
        k = x.keras_axis(axis)
        begins[k], sizes[k] = begin, size
        shape[axis] = size if size >= 0 else None
    layer = kx.AxisSlice(begins=begins, sizes=sizes, name=ctx.name(node, suffix))
    return Blob(tensor=layer(x.tensor), shape=tuple(shape), perm=x.perm)


@register("Slice")
def lower_slice(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Slice along ``axis`` (legacy ``slice_dim`` wins if set) at ``slice_point`` or equally."""
    x = inputs[0]
    p = node.param.slice_param
    axis = _axis(ctx, node, x, p.slice_dim if p.HasField("slice_dim") else p.axis)
    if axis == 0:
        x = _batch_first(ctx, x)
    dim = x.shape[axis]
    n_tops = len(node.tops)
    if p.slice_point:
        points = [int(v) for v in p.slice_point]
        if len(points) != n_tops - 1:
            ctx.error(
                node, f"{len(points)} slice_point values for {n_tops} tops", cls=CaffeFormatError
            )
        bounds = [0] + points + [dim]
        if any(b >= e for b, e in zip(bounds, bounds[1:]) if e is not None):
            ctx.error(
                node,
                f"slice points {points} are not increasing inside (0, {dim})",
                cls=CaffeFormatError,
            )
        if dim is None:  # free batch axis: the last piece runs to the end
            pieces = [(axis, b, e - b) for b, e in zip(bounds[:-2], bounds[1:-1])] + [
                (axis, bounds[-2], -1)
            ]
            return [_slice(ctx, node, x, [r], str(i)) for i, r in enumerate(pieces)]
    elif dim is None:
        ctx.error(node, "an equal Slice of the free batch axis needs slice_point values")
    else:
        if dim % n_tops:
            ctx.error(
                node,
                f"axis of size {dim} cannot be split equally into {n_tops} tops",
                cls=CaffeFormatError,
            )
        bounds = [i * dim // n_tops for i in range(n_tops + 1)]
    return [
        _slice(ctx, node, x, [(axis, b, e - b)], str(i))
        for i, (b, e) in enumerate(zip(bounds, bounds[1:]))
    ]


@register("Crop")
def lower_crop(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Crop bottom[0] to bottom[1]'s shape on every axis >= ``axis`` at ``offset``."""
    if len(inputs) != 2:
        ctx.error(node, f"Crop needs 2 bottoms, got {len(inputs)}", cls=CaffeFormatError)
    x, ref = inputs
    p = node.param.crop_param
    if ref.rank != x.rank:
        ctx.error(
            node, f"Crop bottoms differ in rank: {x.shape} vs {ref.shape}", cls=CaffeFormatError
        )
    axis = _axis(ctx, node, x, p.axis)
    offsets = [int(o) for o in p.offset]
    n_cropped = x.rank - axis
    if offsets and len(offsets) not in (1, n_cropped):
        ctx.error(
            node, f"{len(offsets)} offsets for {n_cropped} cropped axes", cls=CaffeFormatError
        )
    if axis == 0:
        x = _batch_first(ctx, x)
    ranges = []
    for i in range(axis, x.rank):
        off = 0 if not offsets else offsets[0 if len(offsets) == 1 else i - axis]
        size, have = ref.shape[i], x.shape[i]
        if size is None or have is None:
            if off == 0 and size is None and have is None:
                continue  # free batch axis kept whole
            ctx.error(node, f"cannot crop axis {i} of unknown size")
        if off + size > have:
            ctx.error(
                node,
                f"crop axis {i}: offset {off} + size {size} exceeds {have}",
                cls=CaffeFormatError,
            )
        ranges.append((i, off, size))
    return [_slice(ctx, node, x, ranges, "")]


@register("Tile")
def lower_tile(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Tile: repeat the blob ``tiles`` times along ``axis``."""
    x = inputs[0]
    p = node.param.tile_param
    if not p.HasField("tiles") or p.tiles < 1:
        ctx.error(node, "Tile needs tile_param.tiles >= 1", cls=CaffeFormatError)
    axis = _axis(ctx, node, x, p.axis)
    if axis == 0:
        x = _batch_first(ctx, x)
    shape = list(x.shape)
    shape[axis] = None if shape[axis] is None else shape[axis] * p.tiles
    layer = kx.AxisTile(axis=x.keras_axis(axis), tiles=p.tiles, name=ctx.name(node))
    return [Blob(tensor=layer(x.tensor), shape=tuple(shape), perm=x.perm)]


_REDUCTION_OPS = {1: "SUM", 2: "ASUM", 3: "SUMSQ", 4: "MEAN"}


@register("Reduction", partial="axis 0 (reduce everything, Caffe's scalar top) gives a (1,) tensor")
def lower_reduction(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Reduction: coeff * SUM/ASUM/SUMSQ/MEAN over all axes from ``axis`` on; top shape[:axis]."""
    x = _batch_first(ctx, inputs[0])
    p = node.param.reduction_param
    axis = _axis(ctx, node, x, p.axis)
    reduced = [x.keras_axis(i) for i in range(axis, x.rank)]
    layer = kx.AxisReduce(
        axes=reduced,
        operation=_REDUCTION_OPS[p.operation],
        coeff=p.coeff,
        keep_batch_axis=axis == 0,
        name=ctx.name(node),
    )
    out = layer(x.tensor)
    if axis == 0:
        return [Blob(tensor=out, shape=(1,), perm=(0,))]
    kept = tuple(c for c in x.perm if c < axis)
    return [Blob(tensor=out, shape=x.shape[:axis], perm=kept)]


@register("ArgMax")
def lower_argmax(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """ArgMax: top_k indices (or values with out_max_val) along ``axis``; without axis, per
    sample over the flattened C,H,W order -> (N, 1, top_k) indices or (N, 2, top_k) [idx; val]."""
    x = _batch_first(ctx, inputs[0])
    p = node.param.argmax_param
    top_k = int(p.top_k)
    if p.HasField("axis"):
        axis = _axis(ctx, node, x, p.axis)
        if axis == 0:
            ctx.error(node, "ArgMax over the batch axis is not supported")
        if x.shape[axis] is not None and top_k > x.shape[axis]:
            ctx.error(node, f"top_k {top_k} > axis size {x.shape[axis]}", cls=CaffeFormatError)
        layer = kx.TopKAxis(
            axis=x.keras_axis(axis), top_k=top_k, out_max_val=p.out_max_val, name=ctx.name(node)
        )
        shape = list(x.shape)
        shape[axis] = top_k
        return [Blob(tensor=layer(x.tensor), shape=tuple(shape), perm=x.perm)]
    x = ctx.caffe_order(x) if not x.is_caffe_order else x
    count = 1
    for d in x.shape[1:]:
        count = None if d is None or count is None else count * d
    if count is not None and top_k > count:
        ctx.error(node, f"top_k {top_k} > {count} values per sample", cls=CaffeFormatError)
    out_rank = max(x.rank, 3)
    layer = kx.ArgMaxFlat(
        top_k=top_k, out_max_val=p.out_max_val, out_rank=out_rank, name=ctx.name(node)
    )
    shape: Tuple[Optional[int], ...] = (x.shape[0], 2 if p.out_max_val else 1, top_k) + (1,) * (
        out_rank - 3
    )
    return [Blob(tensor=layer(x.tensor), shape=shape, perm=tuple(range(out_rank)))]


@register("Permute")
def lower_permute(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Permute (SSD fork): top axis i = bottom axis order[i]; missing axes follow in order."""
    x = inputs[0]
    order = [int(o) for o in node.param.permute_param.order]
    if len(set(order)) != len(order) or any(o >= x.rank for o in order):
        ctx.error(
            node, f"invalid permute order {order} for a {x.rank}-D blob", cls=CaffeFormatError
        )
    order += [i for i in range(x.rank) if i not in order]
    shape = tuple(x.shape[o] for o in order)
    if order[0] == 0:
        # Pure relabelling: Keras axis j holds bottom axis perm[j] = top axis inverse[perm[j]].
        inverse = [order.index(i) for i in range(x.rank)]
        return [Blob(tensor=x.tensor, shape=shape, perm=tuple(inverse[c] for c in x.perm))]
    x = ctx.caffe_order(x) if not x.is_caffe_order else x
    out = kx.FullTranspose(perm=order, name=ctx.name(node))(x.tensor)
    return [Blob(tensor=out, shape=shape, perm=tuple(range(x.rank)))]


@register("ShuffleChannel")
def lower_shuffle_channel(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """ShuffleChannel: channels viewed as (group, C/group), transposed, flattened back."""
    x = _batch_first(ctx, inputs[0])
    group = int(node.param.shuffle_channel_param.group)
    if x.rank < 2 or x.shape[1] is None or group < 1 or x.shape[1] % group:
        ctx.error(
            node,
            f"ShuffleChannel group {group} does not divide the channels of {x.shape}",
            cls=CaffeFormatError,
        )
    layer = kx.ChannelShuffle(groups=group, axis=x.keras_axis(1), name=ctx.name(node))
    return [Blob(tensor=layer(x.tensor), shape=x.shape, perm=x.perm)]
