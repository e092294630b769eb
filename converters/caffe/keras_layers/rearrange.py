"""Layers that only move values: border replication, slicing, tiling, transposes, channel shuffle,
reshapes over the batch axis.

Each layer declares its ``quantization_role`` for ``kerasq.schemes`` (see
:mod:`kerasq.converters.caffe.keras_layers`).
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from kerasq._compat import tf
from kerasq.converters.caffe.keras_layers._base import Configured, register


def _pairs(padding: Sequence[Sequence[int]]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    (top, bottom), (left, right) = padding
    return (int(top), int(bottom)), (int(left), int(right))


@register
class EdgePadding2D(Configured):
    """Pad an NHWC tensor by replicating its border rows/columns.

    Used before MAX pooling: Caffe's max ignores padding, and a replicated border value
    is always inside the window it pads (Caffe requires pad < kernel and windows start
    inside the image), so ``max`` is unchanged while values stay in the data range
    (quantization friendly, unlike ``-inf`` padding).

    ``y[i, j] = x[clip(i - top, 0, H-1), clip(j - left, 0, W-1)]``
    """

    quantization_role = "passthrough"

    _fields = ("padding",)

    def __init__(self, padding: Sequence[Sequence[int]] = ((0, 0), (0, 0)), **kwargs: Any) -> None:
        super().__init__(padding=_pairs(padding), **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        (top, bottom), (left, right) = self.padding
        x = inputs
        parts = [x[:, :1]] * top + [x] + [x[:, -1:]] * bottom
        x = tf.concat(parts, axis=1) if len(parts) > 1 else x
        parts = [x[:, :, :1]] * left + [x] + [x[:, :, -1:]] * right
        return tf.concat(parts, axis=2) if len(parts) > 1 else x

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape).as_list()
        (top, bottom), (left, right) = self.padding
        if shape[1] is not None:
            shape[1] += top + bottom
        if shape[2] is not None:
            shape[2] += left + right
        return tf.TensorShape(shape)



@register
class BatchReshape(Configured):
    """Reshape including the batch axis (a Caffe Reshape that mixes N with other axes).

    ``y = reshape(x, target_shape)`` with a fixed batch: the model only runs at the
    batch size the Caffe net declared.
    """

    quantization_role = "passthrough"

    _fields = ("target_shape",)

    def __init__(self, target_shape: Sequence[int] = (1,), **kwargs: Any) -> None:
        super().__init__(target_shape=tuple(int(d) for d in target_shape), **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.reshape(inputs, self.target_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(self.target_shape)



@register
class AxisSlice(Configured):
    """y = x[begin_0:begin_0+size_0, ...] per Keras axis (size -1 = to the end)."""

    quantization_role = "passthrough"

    _fields = ("begins", "sizes")

    def __init__(
        self, begins: Sequence[int] = (), sizes: Sequence[int] = (), **kwargs: Any
    ) -> None:
        super().__init__(begins=[int(b) for b in begins], sizes=[int(s) for s in sizes], **kwargs)

    def call(self, x):
        return tf.slice(x, self.begins, self.sizes)


@register
class AxisTile(Configured):
    """Caffe Tile: repeat the whole blob ``tiles`` times along Keras axis ``axis``."""

    quantization_role = "passthrough"

    _fields = ("axis", "tiles")

    def __init__(self, axis: int = 1, tiles: int = 1, **kwargs: Any) -> None:
        super().__init__(axis=int(axis), tiles=int(tiles), **kwargs)

    def call(self, x):
        multiples = [1] * x.shape.rank
        multiples[self.axis] = self.tiles
        return tf.tile(x, multiples)


@register
class FullTranspose(Configured):
    """tf.transpose with a permutation that may move the batch axis (Caffe Permute)."""

    quantization_role = "passthrough"

    _fields = ("perm",)

    def __init__(self, perm: Sequence[int] = (0,), **kwargs: Any) -> None:
        super().__init__(perm=[int(p) for p in perm], **kwargs)

    def call(self, x):
        return tf.transpose(x, self.perm)


@register
class ChannelShuffle(Configured):
    """ShuffleChannel: view channels as (groups, C/groups), swap, flatten back."""

    quantization_role = "passthrough"

    _fields = ("groups", "axis")

    def __init__(self, groups: int = 1, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(groups=int(groups), axis=int(axis), **kwargs)

    def call(self, x):
        rank = x.shape.rank
        axis = self.axis % rank
        channels = x.shape[axis]
        shape = tf.shape(x)
        split = tf.concat(
            [shape[:axis], [self.groups, channels // self.groups], shape[axis + 1 :]], 0
        )
        y = tf.reshape(x, split)
        perm = list(range(rank + 1))
        perm[axis], perm[axis + 1] = perm[axis + 1], perm[axis]
        return tf.reshape(tf.transpose(y, perm), shape)



__all__ = ["EdgePadding2D", "BatchReshape", "AxisSlice", "AxisTile", "FullTranspose", "ChannelShuffle"]
