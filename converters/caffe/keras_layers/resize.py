"""Resizing: Caffe Interp (bilinear, align-corners) and nearest-neighbour upsampling.

Each layer declares its ``quantization_role`` for ``kerasq.schemes`` (see
:mod:`kerasq.converters.caffe.keras_layers`).
"""

from __future__ import annotations

from typing import Any, Optional

from kerasq._compat import tf
from kerasq.converters.caffe.keras_layers._base import Configured, register


def interp_output_size(
    size_in: int,
    pad_beg: int,
    pad_end: int,
    height_or_width: Optional[int],
    zoom_factor: Optional[int],
    shrink_factor: Optional[int],
) -> int:
    """DeepLab Interp output size for one spatial dim (static ints)."""
    eff = size_in + pad_beg + pad_end
    if shrink_factor and not zoom_factor:
        return (eff - 1) // shrink_factor + 1
    if zoom_factor and not shrink_factor:
        return eff + (eff - 1) * (zoom_factor - 1)
    if height_or_width:
        return height_or_width
    out = (eff - 1) // shrink_factor + 1
    return out + (out - 1) * (zoom_factor - 1)


@register
class InterpBilinear(Configured):
    """DeepLab Interp on NHWC: crop by -pad, then align-corners bilinear resize.

    The output size rule (height/width, zoom_factor, shrink_factor) is evaluated on the
    runtime shape, so fully convolutional models with free spatial size work too.
    """

    quantization_role = "output"

    _fields = ("height", "width", "zoom_factor", "shrink_factor", "pad_beg", "pad_end")

    def __init__(
        self,
        height: Optional[int] = None,
        width: Optional[int] = None,
        zoom_factor: Optional[int] = None,
        shrink_factor: Optional[int] = None,
        pad_beg: int = 0,
        pad_end: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            height=height,
            width=width,
            zoom_factor=zoom_factor,
            shrink_factor=shrink_factor,
            pad_beg=int(pad_beg),
            pad_end=int(pad_end),
            **kwargs,
        )

    def _out(self, size, fixed):
        return interp_output_size(
            size,
            self.pad_beg,
            self.pad_end,
            fixed if self.height and self.width else None,
            self.zoom_factor,
            self.shrink_factor,
        )

    def call(self, x):
        shape = tf.shape(x)
        h, w = shape[1], shape[2]
        if self.pad_beg or self.pad_end:
            cb, ce = -self.pad_beg, -self.pad_end
            x = x[:, cb : h - ce, cb : w - ce, :]
        size = tf.stack([self._out(h, self.height), self._out(w, self.width)])
        return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        oh = None if h is None else self._out(h, self.height)
        ow = None if w is None else self._out(w, self.width)
        return tf.TensorShape([input_shape[0], oh, ow, input_shape[3]])


@register
class NearestResize(Configured):
    """Nearest-neighbour resize on NHWC to (out_h, out_w): src = floor(dst * in / out)."""

    quantization_role = "passthrough"

    _fields = ("out_h", "out_w")

    def __init__(self, out_h: int = 1, out_w: int = 1, **kwargs: Any) -> None:
        super().__init__(out_h=int(out_h), out_w=int(out_w), **kwargs)

    def call(self, x):
        shape = tf.shape(x)
        iy = (tf.range(self.out_h) * shape[1]) // self.out_h
        ix = (tf.range(self.out_w) * shape[2]) // self.out_w
        return tf.gather(tf.gather(x, iy, axis=1), ix, axis=2)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.out_h, self.out_w, input_shape[3]])



__all__ = ["InterpBilinear", "NearestResize", "interp_output_size"]
