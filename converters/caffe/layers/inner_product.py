"""InnerProduct (``axis``, ``transpose``) as a Keras Dense layer.

Caffe flattens the axes ``axis..end`` in Caffe (C, H, W) order. Instead of transposing
the activations at run time, the weight matrix is reordered to the order in which the
Keras tensor is laid out (e.g. NHWC): ``W (N, C, H, W) -> (H, W, C, N) -> (HWC, N)``.

``y = x_flat @ W^T + b`` (``transpose: true`` stores ``W^T`` directly).
"""

from __future__ import annotations

from typing import List

import numpy as np

from kerasq._compat import keras, tf
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob, identity


_CHUNK_BYTES = 16 * 2**20


def _assign_rows(variable, value: np.ndarray) -> None:
    """``variable[:] = value`` in row blocks of ~16 MB: a big fully connected layer (VGG's
    fc6 holds most of the model) then needs no full-size transposed or tensor copy.
    (scatter_update writes in place; a sliced ``assign`` copies the whole variable.)"""
    rows = max(1, _CHUNK_BYTES // max(1, value[:1].nbytes))
    for start in range(0, value.shape[0], rows):
        stop = min(start + rows, value.shape[0])
        block = np.ascontiguousarray(value[start:stop])
        variable.scatter_update(tf.IndexedSlices(block, tf.range(start, stop)))


@register(
    "InnerProduct",
    partial="axis >= 1, transpose; weights reordered to the Keras layout (no run-time transpose)",
)
def lower_inner_product(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Caffe InnerProduct -> (Flatten/Reshape) + Dense with reordered weights."""
    p = node.param.inner_product_param
    x = inputs[0]
    try:
        axis = x.caffe_axis(p.axis)
    except IndexError:
        ctx.error(node, f"axis {p.axis} out of range for a {x.rank}-D input")
    if axis == 0:
        ctx.error(node, "InnerProduct over the batch axis (axis 0) is not supported")
    flat_dims = x.shape[axis:]
    if any(d is None for d in flat_dims):
        ctx.error(node, "InnerProduct needs static sizes for the flattened axes")
    k = int(np.prod(flat_dims))
    nout = int(p.num_output)
    if p.transpose:
        weights = ctx.blob(node, 0, (k, nout), "weights").T
    else:
        weights = ctx.blob(node, 0, (nout, k), "weights")
    bias = ctx.blob(node, 1, (nout,), "bias") if p.bias_term else None
    # Keep the leading axes in place; the flattened axes may be in any Keras order.
    if x.perm[:axis] != identity(axis) or sorted(x.perm[axis:]) != list(range(axis, x.rank)):
        x = ctx.caffe_order(x, node)
    tensor = x.tensor
    tail = x.perm[axis:]  # Caffe axes in Keras order
    w = weights.reshape((nout,) + tuple(flat_dims))
    w = w.transpose((0,) + tuple(1 + (a - axis) for a in tail)).reshape(nout, k)
    if x.rank - axis > 1:
        if axis == 1:
            tensor = keras.layers.Flatten(name=ctx.name(node, "flatten"))(tensor)
        else:
            lead = tuple(x.shape[p_] for p_ in x.perm[1:axis])
            tensor = keras.layers.Reshape(lead + (k,), name=ctx.name(node, "flatten"))(tensor)
    big = w.nbytes >= _CHUNK_BYTES
    layer = keras.layers.Dense(
        nout,
        use_bias=bias is not None,
        name=ctx.name(node),
        kernel_initializer="zeros" if big else "glorot_uniform",  # no random temporary
    )
    tensor = layer(tensor)
    if big and type(layer.kernel).__name__ == "ResourceVariable":
        _assign_rows(layer.kernel, w.T)
        if bias is not None:
            layer.bias.assign(bias)
    else:
        layer.set_weights([np.ascontiguousarray(w.T)] + ([bias] if bias is not None else []))
    out_shape = tuple(x.shape[:axis]) + (nout,)
    return [Blob(tensor, out_shape, identity(axis + 1))]
