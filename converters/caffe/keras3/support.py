"""Which Caffe types may lower to the converter's own layers (and so to their Keras 3 twins).

Stock Keras layers run on every Keras 3 backend; so do the twins, but for those with a
``tensorflow_only_reason`` (Keras 3's TensorFlow backend only). :func:`converter_layers_of`
reads, from the lowering functions' code, the converter layer classes a Caffe type's handler
can build (following the helper functions of the converter it calls), for the
supported-layer table in ``docs/caffe_layers.md``; :func:`caffe_types_using` inverts it.

Example:
    >>> converter_layers_of("AbsVal")                 # doctest: +SKIP
    ['AbsVal']
    >>> converter_layers_of("Convolution")            # doctest: +SKIP
    []
    >>> caffe_types_using("CaffeDetectionOutput")     # doctest: +SKIP
    ['DetectionOutput']
"""

from __future__ import annotations

import types
from typing import Any, List, Set

from kerasq.converters.caffe.keras_layers import ALL_LAYERS
from kerasq.converters.caffe.layers import _registry

_PACKAGE = "kerasq.converters.caffe"


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _collect(fn: Any, names: Set[str], seen: Set[int]) -> None:
    if id(fn) in seen:
        return
    seen.add(id(fn))
    layer_names = {cls.__name__ for cls in ALL_LAYERS}
    for code in _codes(fn.__code__):
        for name in code.co_names:
            if name in layer_names:
                names.add(name)
                continue
            value = fn.__globals__.get(name)
            if isinstance(value, types.FunctionType) and value.__module__.startswith(_PACKAGE):
                _collect(value, names, seen)


def converter_layers_of(caffe_type: str) -> List[str]:
    """Names of the converter layer classes the lowering of ``caffe_type`` may build
    (empty: stock Keras layers only, every Keras 3 backend)."""
    import kerasq.converters.caffe.lower  # noqa: F401  (registers the handlers)

    names: Set[str] = set()
    _collect(_registry.get(caffe_type), names, set())
    return sorted(names)


def caffe_types_using(layer_name: str) -> List[str]:
    """The registered Caffe types whose lowering may build the converter layer ``layer_name``."""
    import kerasq.converters.caffe.lower  # noqa: F401  (registers the handlers)

    return sorted(
        entry.caffe_type
        for entry in _registry.entries()
        if layer_name in converter_layers_of(entry.caffe_type)
    )


__all__ = ["converter_layers_of", "caffe_types_using"]
