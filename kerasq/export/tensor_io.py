"""Float values in and out of a TFLite tensor: the one home of the tensor's affine mapping.

A quantized TFLite tensor of dtype T with ``(scale, zero_point)`` holds

    q = clip(round_half_even(x / scale) + zero_point, T.min, T.max),   x ≈ (q - zero_point)·scale

(TFLite's QUANTIZE rounds ties to even). A float32 tensor is passed through; an integer
tensor without a scale (an index output such as ArgMax) is cast. The division and the
product run in float64, so a power-of-two scale maps every int8 code exactly.

Example:
    >>> detail = {"dtype": np.int8, "quantization": (0.25, 0)}
    >>> to_tensor(np.float32([0.125, 0.375, 100.0]), detail).tolist()
    [0, 2, 127]
    >>> from_tensor(np.int8([0, 2, 127]), detail).tolist()
    [0.0, 0.5, 31.75]
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def to_tensor(x: Any, detail: Mapping[str, Any]) -> np.ndarray:
    """``x`` (float) as the values of the TFLite tensor described by ``detail``.

    ``detail`` is an interpreter input detail (``dtype`` and ``quantization``).
    """
    dtype = detail["dtype"]
    if dtype == np.float32:
        return np.asarray(x, np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def from_tensor(values: Any, detail: Mapping[str, Any]) -> np.ndarray:
    """The float values of a TFLite tensor: ``(q - zero_point)·scale`` as float32.

    A float32 tensor and an integer tensor without a scale are returned unchanged.
    """
    dtype = detail["dtype"]
    if dtype == np.float32:
        return np.array(values, np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return np.array(values)
    return ((np.asarray(values, np.float64) - zero) * scale).astype(np.float32)


__all__ = ["to_tensor", "from_tensor"]
