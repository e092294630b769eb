"""Registry of Caffe layer lowerings, keyed by V2 type string.

A lowering takes the context, the node and its input blobs and returns one
:class:`~kerasq.converters.caffe.layout.Blob` per top. ``docs/caffe_layers.md`` is
generated from this table (``tools/gen_caffe_support.py``).

Example:
    >>> @register("MyIdentity", partial="demo only")          # doctest: +SKIP
    ... def lower_identity(ctx, node, inputs):
    ...     return list(inputs)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from kerasq.errors import UnsupportedLayerError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.layout import Blob
    from kerasq.converters.caffe.lower import LoweringContext

LowerFn = Callable[["LoweringContext", "Node", List["Blob"]], List["Blob"]]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered Caffe type."""

    caffe_type: str
    fn: LowerFn
    partial: Optional[str]
    module: str


_REGISTRY: Dict[str, Entry] = {}


def register(*caffe_types: str, partial: Optional[str] = None) -> Callable[[LowerFn], LowerFn]:
    """Register ``fn`` as the lowering of ``caffe_types``; ``partial`` documents known limits."""
    if not caffe_types:
        raise ValueError("register() needs at least one Caffe type")

    def decorator(fn: LowerFn) -> LowerFn:
        for caffe_type in caffe_types:
            if caffe_type in _REGISTRY:
                raise ValueError(
                    f"Caffe type {caffe_type!r} registered twice "
                    f"({_REGISTRY[caffe_type].module} and {fn.__module__})"
                )
            _REGISTRY[caffe_type] = Entry(caffe_type, fn, partial, fn.__module__)
        return fn

    return decorator


def get(caffe_type: str) -> LowerFn:
    """The lowering for ``caffe_type``; raises :class:`UnsupportedLayerError` if none."""
    entry = _REGISTRY.get(caffe_type)
    if entry is None:
        raise UnsupportedLayerError(f"layer type {caffe_type!r} is not supported")
    return entry.fn


def supported_types() -> List[str]:
    """All registered Caffe type strings, sorted."""
    return sorted(_REGISTRY)


def entries() -> List[Entry]:
    """All registrations (for the generated support table)."""
    return [_REGISTRY[k] for k in supported_types()]


__all__ = ["register", "get", "supported_types", "entries", "LowerFn", "Entry"]
