"""Per-tensor layout tracking: which Caffe axis each Keras axis holds.

Keras models are NHWC, Caffe blobs are NCHW. Every converted tensor carries its
Caffe-order ``shape`` and a permutation ``perm``: Keras axis ``i`` holds Caffe axis
``perm[i]``. 4-D image blobs are NHWC in Keras (``perm = (0, 2, 3, 1)``); other ranks
start as identity. Handlers use :meth:`Blob.keras_axis` to remap Caffe axis
parameters (Concat, Softmax, Slice, ...) and ``LoweringContext.caffe_order`` /
``channels_last`` to change layout only where needed.

Example:
    >>> b = Blob(tensor=None, shape=(None, 3, 17, 19), perm=NHWC)
    >>> b.keras_axis(1), b.keras_axis(-1), b.keras_shape
    (3, 2, (None, 17, 19, 3))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

NHWC: Tuple[int, ...] = (0, 2, 3, 1)


def identity(rank: int) -> Tuple[int, ...]:
    """The identity permutation of ``rank`` axes."""
    return tuple(range(rank))


def default_perm(rank: int) -> Tuple[int, ...]:
    """The layout a fresh blob of ``rank`` axes gets: NHWC for 4-D, identity otherwise."""
    return NHWC if rank == 4 else identity(rank)


@dataclasses.dataclass
class Blob:
    """A Keras tensor plus its Caffe shape and layout."""

    tensor: Any  # the Keras tensor
    shape: Tuple[Optional[int], ...]  # Caffe-order shape (N, C, H, W, ...); N may be None
    perm: Tuple[int, ...]  # keras axis i holds Caffe axis perm[i]

    def __post_init__(self) -> None:
        self.shape = tuple(None if d is None else int(d) for d in self.shape)
        self.perm = tuple(int(p) for p in self.perm)
        if sorted(self.perm) != list(range(len(self.shape))):
            raise ValueError(f"perm {self.perm} does not fit shape {self.shape}")

    @property
    def rank(self) -> int:
        """Number of axes."""
        return len(self.shape)

    def caffe_axis(self, axis: int) -> int:
        """Normalize a (possibly negative) Caffe axis index."""
        if not -self.rank <= axis < self.rank:
            raise IndexError(f"axis {axis} out of range for a {self.rank}-D blob")
        return axis % self.rank

    def keras_axis(self, caffe_axis: int) -> int:
        """Keras axis holding Caffe axis ``caffe_axis`` (negative axes allowed)."""
        return self.perm.index(self.caffe_axis(caffe_axis))

    @property
    def keras_shape(self) -> Tuple[Optional[int], ...]:
        """Shape of the Keras tensor (batch first)."""
        return tuple(self.shape[p] for p in self.perm)

    @property
    def is_caffe_order(self) -> bool:
        """True if the Keras tensor is laid out exactly like the Caffe blob."""
        return self.perm == identity(self.rank)


__all__ = ["Blob", "NHWC", "identity", "default_perm"]
