"""Magnitude pruning masks (numpy): per-tensor top-k and caffe-jacinto's channel-wise threshold.

Both return a 0/1 mask of the weight's shape; callers AND it with the previous mask, so a
pruned weight is never revived (caffe-jacinto freezes zeros the same way).

* :func:`magnitude_mask` - tfmot's rule: keep the ``k = max(1, round(n (1 - s)))`` largest
  ``|w|`` (ties at the k-th value are kept), i.e. ``mask = |w| >= |w|_(k)``.
* :func:`jacinto_channel_mask` - caffe-jacinto 0.16 ``FindAndApplyChannelThresholdNet``
  (quant-schemes.md §6.2): per output channel c with ``M = max|w_c|``,
  ``t_max = min(value_max, M * maxratio, M)``; a coarse-to-fine search in float32 with steps
  ``M * step_factor * g`` for ``g = 1000, 100, 10, 1`` (the first pass from 0 to ``t_max``, the
  others +-20 steps around the previous pick) picks the largest ``t`` with
  ``#(|w_c| <= t) / n_c <= fraction``; ``|w_c| <= t`` becomes 0.

Channel layout: Caffe blobs are (out, in/g, kh, kw); Keras kernels keep the output channel on
the last axis (Conv1D/2D/3D, Dense, SeparableConv pointwise), on axis -2 for Conv2DTranspose
(kh, kw, out, in), and on the flattened last two axes for depthwise kernels (kh, kw, in, mult).

Example:
    >>> import numpy as np
    >>> w = np.array([[0.1, -0.5], [0.05, 1.0], [-0.3, 0.2]], np.float32)
    >>> magnitude_mask(w, 0.5).astype(int).tolist()
    [[0, 1], [0, 1], [1, 0]]
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

CHANNELS_LAST = "last"
CHANNELS_TRANSPOSED = "transposed"  # Conv2DTranspose: (..., out, in)
CHANNELS_DEPTHWISE = "depthwise"  # (..., in, multiplier)


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """0/1 mask keeping the ``round(n (1 - sparsity))`` (at least 1) largest ``|w|``.

    Same threshold rule as tfmot's ``prune_low_magnitude`` (ties at the threshold are kept).
    """
    a = np.abs(np.asarray(weight, np.float32))
    n = a.size
    if n == 0:
        return np.ones_like(a)
    keep = max(1, int(np.round(n * (1.0 - float(sparsity)))))
    keep = min(keep, n)
    threshold = np.partition(a.reshape(-1), n - keep)[n - keep]
    return (a >= threshold).astype(np.float32)


def channel_matrix(weight: np.ndarray, layout: str = CHANNELS_LAST) -> np.ndarray:
    """Rows = output channels, columns = the weights feeding that channel (a copy)."""
    w = np.asarray(weight)
    if w.ndim < 2:
        return w.reshape(1, -1).copy()
    if layout == CHANNELS_LAST:
        return np.moveaxis(w, -1, 0).reshape(w.shape[-1], -1).copy()
    if layout == CHANNELS_TRANSPOSED:
        return np.moveaxis(w, -2, 0).reshape(w.shape[-2], -1).copy()
    if layout == CHANNELS_DEPTHWISE:
        out = w.shape[-2] * w.shape[-1]
        return np.moveaxis(w.reshape(w.shape[:-2] + (out,)), -1, 0).reshape(out, -1).copy()
    raise ValueError(f"unknown channel layout {layout!r}")


def from_channel_matrix(rows: np.ndarray, shape: Tuple[int, ...], layout: str) -> np.ndarray:
    """Inverse of :func:`channel_matrix`."""
    shape = tuple(shape)
    if len(shape) < 2:
        return rows.reshape(shape)
    if layout == CHANNELS_LAST:
        return np.moveaxis(rows.reshape((shape[-1],) + shape[:-1]), 0, -1)
    if layout == CHANNELS_TRANSPOSED:
        moved = shape[:-2] + shape[-1:]
        return np.moveaxis(rows.reshape((shape[-2],) + moved), 0, -2)
    if layout == CHANNELS_DEPTHWISE:
        spatial = shape[:-2]
        flat = np.moveaxis(rows.reshape((shape[-2] * shape[-1],) + spatial), 0, -1)
        return flat.reshape(shape)
    raise ValueError(f"unknown channel layout {layout!r}")


def _float32_steps(start: np.float32, step: np.float32, bound: np.float32) -> np.ndarray:
    """Values of the float32 loop ``for (t = start; t < bound; t += step)``."""
    if not step > 0 or not start < bound:
        return np.zeros((0,), np.float32)
    count = int(np.ceil(float(bound - start) / float(step))) + 2
    seq = np.full((count,), step, np.float32)
    seq[0] = start
    values = np.add.accumulate(seq, dtype=np.float32)
    while values[-1] < bound:  # float32 accumulation can fall short of the estimate
        more = np.full((count,), step, np.float32)
        more[0] = values[-1] + step
        values = np.concatenate([values, np.add.accumulate(more, dtype=np.float32)])
    return values[: int(np.argmax(values >= bound))]


def jacinto_channel_threshold(
    channel: np.ndarray,
    fraction: float,
    *,
    maxratio: float = 0.2,
    value_max: float = 0.2,
    step_factor: float = 1e-7,
) -> float:
    """caffe-jacinto's threshold for one output channel (see module docstring)."""
    sorted_abs = np.sort(np.abs(np.asarray(channel, np.float32)).reshape(-1))
    n = sorted_abs.size
    if n == 0:
        return 0.0
    f32 = np.float32
    max_abs = sorted_abs[-1]
    step = f32(max_abs * f32(step_factor))
    t_max = min(min(f32(value_max), f32(max_abs * f32(maxratio))), max_abs)
    frac = f32(fraction)
    selected = f32(0.0)
    granularity = f32(1000.0)
    search_iter = 0
    while granularity >= 1:
        step_x = f32(step * granularity)
        range_x = f32(f32(step_x * f32(10)) * f32(2))
        if search_iter > 0:
            low = max(f32(selected - range_x), f32(0.0))
            high = min(f32(selected + range_x), t_max)
        else:
            low, high = f32(0.0), t_max
        candidates = _float32_steps(f32(low), step_x, f32(high))
        if candidates.size:
            below = np.searchsorted(sorted_abs, candidates, side="right").astype(np.float32)
            ok = (below / f32(n)) <= frac
            first_bad = int(np.argmin(ok)) if not ok.all() else candidates.size
            if first_bad > 0:
                selected = candidates[first_bad - 1]
        granularity = f32(granularity / f32(10))
        search_iter += 1
    return float(selected)


def jacinto_channel_mask(
    weight: np.ndarray,
    fraction: float,
    *,
    layout: str = CHANNELS_LAST,
    maxratio: float = 0.2,
    value_max: float = 0.2,
    step_factor: float = 1e-7,
) -> np.ndarray:
    """0/1 mask zeroing ``|w_c| <= t_c`` with t_c from :func:`jacinto_channel_threshold`."""
    w = np.asarray(weight, np.float32)
    rows = channel_matrix(w, layout)
    mask_rows = np.ones_like(rows)
    for c in range(rows.shape[0]):
        t = np.float32(
            jacinto_channel_threshold(
                rows[c], fraction, maxratio=maxratio, value_max=value_max, step_factor=step_factor
            )
        )
        mask_rows[c] = (np.abs(rows[c]) > t).astype(np.float32)
    return from_channel_matrix(mask_rows, w.shape, layout).astype(np.float32)


__all__ = [
    "magnitude_mask",
    "jacinto_channel_threshold",
    "jacinto_channel_mask",
    "channel_matrix",
    "from_channel_matrix",
    "CHANNELS_LAST",
    "CHANNELS_TRANSPOSED",
    "CHANNELS_DEPTHWISE",
]
