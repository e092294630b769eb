"""Caffe -> Keras converter (``kerasq.converters.caffe``).

Exact by construction: Caffe's padding, pooling (ceil + clip rule, AVE divisor),
BatchNorm scale factor, flatten order and axis parameters are reproduced, with
per-tensor layout tracking so the Keras model stays NHWC. The quantization settings of
caffe-jacinto / Ristretto nets are read by :mod:`.quantization`.

Submodules load on first use: reading files and quantization settings does not load
TensorFlow; ``load``/``forward`` do.

Example:
    >>> from kerasq.converters import caffe
    >>> model = caffe.load("deploy.prototxt", "weights.caffemodel")   # doctest: +SKIP
    >>> tops = caffe.forward("deploy.prototxt", "weights.caffemodel",
    ...                      {"data": x_nchw})                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_ATTRS = {
    "load": "kerasq.converters.caffe.api",
    "convert": "kerasq.converters.caffe.api",
    "ConvertedNet": "kerasq.converters.caffe.api",
    "forward": "kerasq.converters.caffe.api",
    "custom_objects": "kerasq.converters.caffe.api",
    "read_prototxt": "kerasq.converters.caffe.reader",
    "read_caffemodel": "kerasq.converters.caffe.reader",
    "read_binaryproto": "kerasq.converters.caffe.reader",
    "read_quantization_settings": "kerasq.converters.caffe.quantization",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasq.converters.caffe' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY_ATTRS))


__all__ = [
    "load",
    "convert",
    "ConvertedNet",
    "forward",
    "custom_objects",
    "read_prototxt",
    "read_caffemodel",
    "read_binaryproto",
    "read_quantization_settings",
]
