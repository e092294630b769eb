"""kerasq's exception hierarchy.

Every error kerasq raises on bad input is a :class:`KerasqError`. It carries the
file, the layer (or argument) and the reason, and renders as one line::

    <file>: <layer>: <reason>

The CLI prints ``kerasq: error: `` followed by that line and exits with status 2.

Example:
    >>> err = UnsupportedLayerError("Foo is not supported", file="net.prototxt", layer="foo1")
    >>> str(err)
    'net.prototxt: foo1: Foo is not supported'
"""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def _printable(text: str) -> str:
    """``text`` with control characters (newlines in a layer name, say) escaped, so an
    error always prints as one readable line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class KerasqError(Exception):
    """Base class of all kerasq errors: a reason, optionally a file and a layer."""

    def __init__(
        self,
        reason: str,
        *,
        file: Optional[PathLike] = None,
        layer: Optional[str] = None,
    ) -> None:
        self.reason = str(reason)
        self.file = os.fspath(file) if file is not None else None
        self.layer = layer
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [_printable(p) for p in (self.file, self.layer) if p]
        parts.append(_printable(" ".join(self.reason.split())))  # always one line
        return ": ".join(parts)

    def with_context(
        self, *, file: Optional[PathLike] = None, layer: Optional[str] = None
    ) -> "KerasqError":
        """Fill in file/layer if they are not set yet, and return self."""
        if self.file is None and file is not None:
            self.file = os.fspath(file)
        if self.layer is None and layer is not None:
            self.layer = layer
        self.args = (self.__str__(),)
        return self


class CaffeFormatError(KerasqError):
    """A prototxt, caffemodel or binaryproto that cannot be read or is inconsistent."""


class UnsupportedLayerError(KerasqError):
    """A layer type (or a parameter of it) that kerasq cannot lower."""


class QuantizationConfigError(KerasqError, ValueError):
    """An invalid quantization setting; the message names the field and the value."""


class ExportError(KerasqError):
    """A model or config that cannot be exported to the requested target."""


class VerificationError(KerasqError):
    """An exported or converted model that disagrees with its reference."""


class ModelFormatError(KerasqError):
    """A Keras model file that cannot be loaded or is not what the command expects."""


class OutputError(KerasqError):
    """An output path that cannot be written without destroying something, or a write that
    failed (nothing is left behind)."""


class ArgumentError(KerasqError, ValueError, TypeError):
    """A bad argument to a kerasq function: None or the wrong type, a number out of range
    (``batch_size=0``), an unknown choice or layer name. The message names the argument.
    Also a ``ValueError`` and a ``TypeError``, so callers catching those keep working."""


class DataError(KerasqError, ValueError):
    """An input array file (calibration, verification, evaluation data) that is unreadable,
    too big, of the wrong dtype, shape or layout, or holds NaN/Inf."""


__all__ = [
    "KerasqError",
    "CaffeFormatError",
    "UnsupportedLayerError",
    "QuantizationConfigError",
    "ExportError",
    "VerificationError",
    "ModelFormatError",
    "OutputError",
    "ArgumentError",
    "DataError",
]
