"""Graph plumbing: Split, Dropout, Silence, Concat, Flatten, Reshape."""

from __future__ import annotations

import logging
from typing import List, Optional, Tuple

import numpy as np

from kerasq._compat import keras
from kerasq.converters.caffe.keras_layers import BatchReshape
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob, identity

log = logging.getLogger("kerasq.converters.caffe.layers.structure")


@register("Split")
def lower_split(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Every top is the bottom (no Keras layer)."""
    return [inputs[0] for _ in node.tops]


@register("Dropout", partial="identity (TEST phase)")
def lower_dropout(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """TEST-phase Dropout is the identity (Caffe scales at train time)."""
    return [inputs[0]]


@register("Silence")
def lower_silence(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """No output."""
    return []


@register("Concat", partial="any axis but the batch axis; legacy concat_dim")
def lower_concat(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Concatenate along Caffe ``axis`` (or legacy ``concat_dim``)."""
    p = node.param.concat_param
    caffe_axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
    if len(inputs) == 1:
        return [inputs[0]]
    xs = ctx.same_layout(inputs, node)
    try:
        axis = xs[0].caffe_axis(caffe_axis)
    except IndexError:
        ctx.error(node, f"axis {caffe_axis} out of range for {list(xs[0].shape)}")
    if axis == 0:
        ctx.error(node, "Concat along the batch axis is not supported")
    for b in xs[1:]:
        if b.rank != xs[0].rank or any(
            i != axis and b.shape[i] != xs[0].shape[i] for i in range(1, b.rank)
        ):
            ctx.error(
                node,
                f"Concat inputs do not match outside axis {axis}: {[list(i.shape) for i in xs]}",
            )
    sizes = [b.shape[axis] for b in xs]
    total = None if any(s is None for s in sizes) else int(sum(sizes))
    shape = list(xs[0].shape)
    shape[axis] = total
    out = keras.layers.Concatenate(axis=xs[0].keras_axis(axis), name=ctx.name(node))(
        [b.tensor for b in xs]
    )
    return [Blob(out, tuple(shape), xs[0].perm)]


def _reshape_to(ctx, node, x: Blob, shape: Tuple[Optional[int], ...]) -> Blob:
    x = ctx.caffe_order(x, node)
    if any(d is None for d in shape[1:]):
        ctx.error(node, f"cannot reshape to {list(shape)}: sizes must be static")
    out = keras.layers.Reshape(tuple(int(d) for d in shape[1:]), name=ctx.name(node))(x.tensor)
    return Blob(out, shape, identity(len(shape)))


@register("Flatten", partial="axis >= 1")
def lower_flatten(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Merge Caffe axes ``axis..end_axis`` (C,H,W row-major order, as Caffe does)."""
    p = node.param.flatten_param
    x = inputs[0]
    try:
        start, end = x.caffe_axis(p.axis), x.caffe_axis(p.end_axis)
    except IndexError:
        ctx.error(node, f"axis/end_axis out of range for {list(x.shape)}")
    if start == 0:
        ctx.error(node, "Flatten including the batch axis is not supported")
    if end < start:
        ctx.error(node, f"end_axis {p.end_axis} is before axis {p.axis}")
    dims = x.shape[start : end + 1]
    merged = None if any(d is None for d in dims) else int(np.prod(dims))
    shape = tuple(x.shape[:start]) + (merged,) + tuple(x.shape[end + 1 :])
    return [_reshape_to(ctx, node, x, shape)]


def reshape_shape(ctx, node, x: Blob) -> Tuple[Tuple[Optional[int], ...], bool]:
    """Caffe Reshape output shape and whether it keeps the batch axis.

    0 copies a dim, one -1 is inferred, ``axis``/``num_axes`` select the replaced range.
    The batch size used for the arithmetic is the declared one (Caffe's own), so a
    reshape that mixes the batch axis with others is computed exactly as Caffe does.
    """
    p = node.param.reshape_param
    spec = [int(d) for d in p.shape.dim]
    rank = x.rank
    batch = x.shape[0] if x.shape[0] is not None else ctx.batch_size
    in_shape = [batch] + list(x.shape[1:])
    if any(d is None for d in in_shape):
        ctx.error(node, "Reshape needs static sizes (dynamic_spatial=False)")
    axis = p.axis if p.axis >= 0 else rank + p.axis + 1
    if not 0 <= axis <= rank:
        ctx.error(node, f"axis {p.axis} out of range for {list(x.shape)}")
    end = rank if p.num_axes == -1 else axis + p.num_axes
    if end > rank or p.num_axes < -1:
        ctx.error(node, f"num_axes {p.num_axes} out of range for {list(x.shape)}")
    out: List[int] = []
    infer = None
    for i, d in enumerate(spec):
        if d == 0:
            if axis + i >= rank:
                ctx.error(node, f"dim {i} is 0 (copy) but the input has no axis {axis + i}")
            out.append(in_shape[axis + i])
        elif d == -1:
            if infer is not None:
                ctx.error(node, "more than one -1 in the Reshape shape")
            infer = axis + len(out)
            out.append(1)
        elif d < -1:
            ctx.error(node, f"invalid dim {d}")
        else:
            out.append(d)
    full = in_shape[:axis] + out + in_shape[end:]
    total = int(np.prod(in_shape))
    if infer is not None:
        rest = int(np.prod(full))
        if rest == 0 or total % rest:
            ctx.error(node, f"cannot reshape {in_shape} to {spec}")
        full[infer] = total // rest
    if int(np.prod(full)) != total:
        ctx.error(
            node, f"cannot reshape {in_shape} to {spec} ({int(np.prod(full))} != {total} values)"
        )
    keeps_batch = bool(full) and full[0] == batch
    shape = tuple(full)
    if keeps_batch and x.shape[0] is None:
        shape = (None,) + shape[1:]
    return shape, keeps_batch


@register(
    "Reshape",
    partial="0/-1/axis/num_axes; a shape mixing the batch axis pins the model to the "
    "declared batch size",
)
def lower_reshape(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Row-major reinterpretation in Caffe order (the input is put in Caffe order first)."""
    x = inputs[0]
    shape, keeps_batch = reshape_shape(ctx, node, x)
    if keeps_batch:
        return [_reshape_to(ctx, node, x, shape)]
    log.warning(
        "%s: Reshape %s mixes the batch axis: the model is pinned to batch size %s",
        node.caffe_name,
        list(shape),
        x.shape[0] or ctx.batch_size,
    )
    x = ctx.caffe_order(x, node)
    out = BatchReshape(shape, name=ctx.name(node))(x.tensor)
    return [Blob(out, shape, identity(len(shape)))]
