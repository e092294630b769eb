"""Pooling with Caffe's exact rules (MAX/AVE, ceil mode + clip rule, AVE divisor, global).

Output size (``pooling_layer.cpp``): ``ceil((H + 2p - k) / s) + 1`` (``round_mode: FLOOR``
or fork ``ceil_mode: false``: floor); then if ``p > 0`` and ``(out-1)·s >= H + p`` the last
window (starting in the padding) is dropped.

* MAX: padding never wins. When TF "same" padding produces exactly Caffe's windows a
  stock ``MaxPooling2D(padding="same")`` is used; otherwise the border is replicated
  (:class:`~kerasq.converters.caffe.keras_layers.EdgePadding2D`, exact because every window
  holds the border pixel it pads) and pooled "valid".
* AVE: zero padding (``p`` plus the ceil overhang), ``AveragePooling2D`` "valid", then a
  constant correction map ``k_h k_w / area`` where ``area`` is the window clipped to
  ``[-p, H + p)`` (Caffe counts explicit padding but not the ceil overhang).
* global: ``Global{Max,Average}Pooling2D(keepdims=True)`` (stays 4-D, any input size).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from kerasq._compat import keras
from kerasq.converters.caffe.keras_layers import ConstantMultiply, EdgePadding2D
from kerasq.converters.caffe.layers._params import field
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import NHWC, Blob
from kerasq.converters.caffe.proto import caffe_pb2

_P = caffe_pb2.PoolingParameter


def pooled_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Caffe's pooled output size, clip rule included.

    Example:
        >>> [pooled_size(17, 2, 2, 1, True), pooled_size(16, 3, 2, 0, True)]
        [9, 8]
        >>> pooled_size(16, 3, 2, 0, False)
        7
    """
    span = size + 2 * p - k
    out = (int(math.ceil(span / s)) if ceil_mode else span // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pair(msg, both: str, h: str, w: str, default: Optional[int]) -> Tuple[int, int]:
    hv, wv = field(msg, h), field(msg, w)
    if hv is not None or wv is not None:
        if hv is None or wv is None:
            raise ValueError(f"{h} and {w} must be given together")
        return int(hv), int(wv)
    if msg.HasField(both) or default is None:
        if not msg.HasField(both):
            raise ValueError(f"{both} (or {h}/{w}) is required")
        v = int(getattr(msg, both))
        return v, v
    return default, default


def _ave_correction(size: int, out: int, k: int, s: int, p: int) -> np.ndarray:
    """k / (Caffe window length) per output position along one axis."""
    lengths = []
    for i in range(out):
        start = i * s - p
        end = min(start + k, size + p)
        lengths.append(end - start)
    with np.errstate(divide="ignore"):  # empty windows (see docs/caffe.md, Limits)
        return k / np.asarray(lengths, np.float64)


@register(
    "Pooling",
    partial="MAX/AVE, ceil/floor + clip rule, Caffe AVE divisor, global; not STOCHASTIC; "
    "with dynamic_spatial only unpadded kernel <= stride (or floor) pooling",
)
def lower_pooling(ctx, node, inputs: List[Blob]) -> List[Blob]:
    """Caffe Pooling -> stock Keras pooling (+ padding / divisor correction where needed)."""
    p = node.param.pooling_param
    x = ctx.channels_last(inputs[0])
    n, c, h, w = x.shape
    if p.pool == _P.STOCHASTIC:
        ctx.error(node, "STOCHASTIC pooling is not supported")
    is_max = p.pool == _P.MAX
    if p.global_pooling:
        cls = keras.layers.GlobalMaxPooling2D if is_max else keras.layers.GlobalAveragePooling2D
        tensor = cls(keepdims=True, name=ctx.name(node))(x.tensor)
        return [Blob(tensor, (n, c, 1, 1), NHWC)]
    try:
        kernel = _pair(p, "kernel_size", "kernel_h", "kernel_w", None)
        stride = _pair(p, "stride", "stride_h", "stride_w", 1)
        pad = _pair(p, "pad", "pad_h", "pad_w", 0)
    except ValueError as err:
        ctx.error(node, str(err))
    if min(kernel) < 1 or min(stride) < 1:
        ctx.error(node, f"invalid kernel {kernel} / stride {stride}")
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        ctx.error(
            node, f"pad {pad} must be smaller than the kernel {kernel} (Caffe checks this too)"
        )
    ceil_mode = p.round_mode == _P.CEIL and not (p.HasField("ceil_mode") and not p.ceil_mode)
    if h is None or w is None:
        return [_dynamic_pooling(ctx, node, x, is_max, kernel, stride, pad, ceil_mode)]
    out_h = pooled_size(h, kernel[0], stride[0], pad[0], ceil_mode)
    out_w = pooled_size(w, kernel[1], stride[1], pad[1], ceil_mode)
    if out_h < 1 or out_w < 1:
        ctx.error(node, f"output would be empty for input {h}x{w}")
    # Padding needed at the end beyond p so that "valid" pooling yields out windows.
    end_h = max(0, (out_h - 1) * stride[0] + kernel[0] - (h + 2 * pad[0]))
    end_w = max(0, (out_w - 1) * stride[1] + kernel[1] - (w + 2 * pad[1]))
    padding = ((pad[0], pad[0] + end_h), (pad[1], pad[1] + end_w))
    # Rows/cols beyond what "valid" needs are dropped by "valid" pooling itself.
    tensor = x.tensor
    if is_max:
        same_h = (
            math.ceil(h / stride[0]) == out_h and _same_before(h, kernel[0], stride[0]) == pad[0]
        )
        same_w = (
            math.ceil(w / stride[1]) == out_w and _same_before(w, kernel[1], stride[1]) == pad[1]
        )
        if padding == ((0, 0), (0, 0)) or not (same_h and same_w):
            if padding != ((0, 0), (0, 0)):
                tensor = EdgePadding2D(padding, name=ctx.name(node, "pad"))(tensor)
            mode = "valid"
        else:
            mode = "same"
        tensor = keras.layers.MaxPooling2D(kernel, stride, padding=mode, name=ctx.name(node))(
            tensor
        )
        return [Blob(tensor, (n, c, out_h, out_w), NHWC)]
    if padding != ((0, 0), (0, 0)):
        tensor = keras.layers.ZeroPadding2D(padding, name=ctx.name(node, "pad"))(tensor)
    corr_h = _ave_correction(h, out_h, kernel[0], stride[0], pad[0])
    corr_w = _ave_correction(w, out_w, kernel[1], stride[1], pad[1])
    needs_map = not (np.all(corr_h == 1.0) and np.all(corr_w == 1.0))
    tensor = keras.layers.AveragePooling2D(
        kernel, stride, padding="valid", name=ctx.name(node, "avg") if needs_map else ctx.name(node)
    )(tensor)
    if needs_map:
        correction = np.outer(corr_h, corr_w).astype(np.float32)[:, :, None]
        layer = ConstantMultiply(correction.shape, name=ctx.name(node))
        tensor = layer(tensor)
        layer.set_weights([correction])
    return [Blob(tensor, (n, c, out_h, out_w), NHWC)]


def _same_before(size: int, k: int, s: int) -> int:
    """Padding TF "same" puts before the data."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2


def _dynamic_pooling(ctx, node, x: Blob, is_max: bool, kernel, stride, pad, ceil_mode) -> Blob:
    """Pooling on unknown H/W: only geometries whose Caffe windows match TF for every size.

    * floor mode, no pad: "valid" is exact.
    * ceil mode, no pad, kernel <= stride: TF "same" has the same windows (start 0, the
      last one clipped) and divides AVE by the clipped area, exactly like Caffe.
    """
    n, c, h, w = x.shape
    if pad != (0, 0):
        ctx.error(node, "padded pooling needs static spatial sizes (load without dynamic_spatial)")
    if not ceil_mode:
        mode = "valid"
    elif kernel[0] <= stride[0] and kernel[1] <= stride[1]:
        mode = "same"
    else:
        ctx.error(
            node,
            f"ceil-mode pooling with kernel {kernel} > stride {stride} needs static "
            f"spatial sizes (load without dynamic_spatial)",
        )
    cls = keras.layers.MaxPooling2D if is_max else keras.layers.AveragePooling2D
    tensor = cls(kernel, stride, padding=mode, name=ctx.name(node))(x.tensor)

    def size(d, k, s):
        if d is None:
            return None
        return pooled_size(d, k, s, 0, ceil_mode)

    return Blob(tensor, (n, c, size(h, kernel[0], stride[0]), size(w, kernel[1], stride[1])), NHWC)
