"""Reductions and top-k along axes (Reduction, ArgMax) with Caffe's tie order.

Each layer declares its ``quantization_role`` for ``kerasq.schemes`` (see
:mod:`kerasq.converters.caffe.keras_layers`).
"""

from __future__ import annotations

from typing import Any, Sequence

from kerasq._compat import tf
from kerasq.converters.caffe.keras_layers._base import Configured, register


@register
class AxisReduce(Configured):
    """Caffe Reduction over Keras ``axes``: SUM / ASUM / SUMSQ / MEAN, times ``coeff``.

    With ``keep_batch_axis`` the result keeps a leading axis of size 1 (Caffe's scalar top).
    """

    quantization_role = "output"

    _fields = ("axes", "operation", "coeff", "keep_batch_axis")

    def __init__(
        self,
        axes: Sequence[int] = (),
        operation: str = "SUM",
        coeff: float = 1.0,
        keep_batch_axis: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            axes=[int(a) for a in axes],
            operation=str(operation),
            coeff=float(coeff),
            keep_batch_axis=bool(keep_batch_axis),
            **kwargs,
        )

    def call(self, x):
        if self.operation == "ASUM":
            x = tf.abs(x)
        elif self.operation == "SUMSQ":
            x = tf.square(x)
        if self.operation == "MEAN":
            y = tf.reduce_mean(x, axis=self.axes)
        else:
            y = tf.reduce_sum(x, axis=self.axes)
        if self.coeff != 1.0:
            y = y * self.coeff
        if self.keep_batch_axis:
            y = tf.reshape(y, [1])
        return y


def caffe_top_k(x, k: int):
    """top_k along the last axis with Caffe's tie order: equal values by the HIGHER index first.

    Caffe sorts (value, index) pairs with std::greater; TF's top_k puts the lower index first,
    so it runs on the reversed axis and maps the indices back: i = n - 1 - i_reversed.
    """
    values, reversed_indices = tf.math.top_k(tf.reverse(x, [-1]), k=k, sorted=True)
    return values, tf.shape(x)[-1] - 1 - reversed_indices


@register
class TopKAxis(Configured):
    """Caffe ArgMax with ``axis``: top_k indices (as float) or values along Keras ``axis``."""

    quantization_role = "float"

    _fields = ("axis", "top_k", "out_max_val")

    def __init__(
        self, axis: int = -1, top_k: int = 1, out_max_val: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(axis=int(axis), top_k=int(top_k), out_max_val=bool(out_max_val), **kwargs)

    def call(self, x):
        rank = x.shape.rank
        axis = self.axis % rank
        order = [i for i in range(rank) if i != axis] + [axis]
        inverse = [order.index(i) for i in range(rank)]
        moved = tf.transpose(x, order) if axis != rank - 1 else x
        values, indices = caffe_top_k(moved, self.top_k)
        y = values if self.out_max_val else tf.cast(indices, x.dtype)
        return tf.transpose(y, inverse) if axis != rank - 1 else y


@register
class ArgMaxFlat(Configured):
    """Caffe ArgMax without axis on a Caffe-order blob: per sample over all other axes.

    Output (N, 1, top_k, 1...) with indices, or (N, 2, top_k, 1...) = [indices; values].
    """

    quantization_role = "float"

    _fields = ("top_k", "out_max_val", "out_rank")

    def __init__(
        self, top_k: int = 1, out_max_val: bool = False, out_rank: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(
            top_k=int(top_k), out_max_val=bool(out_max_val), out_rank=int(out_rank), **kwargs
        )

    def call(self, x):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        values, indices = caffe_top_k(flat, self.top_k)
        indices = tf.cast(indices, x.dtype)
        y = tf.stack([indices, values], axis=1) if self.out_max_val else indices[:, None, :]
        return tf.reshape(y, tf.concat([tf.shape(y), tf.ones([self.out_rank - 3], tf.int32)], 0))



__all__ = ["AxisReduce", "TopKAxis", "ArgMaxFlat", "caffe_top_k"]
