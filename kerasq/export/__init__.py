"""TFLite and ONNX export of kerasq models, with built-in verification.

Names are resolved on first use, so importing ``kerasq.export`` (e.g. for the CLI's option
hooks) does not load TensorFlow.

Example:
    >>> import kerasq
    >>> blob = kerasq.export.to_tflite(qmodel, "model.tflite", target="int8",
    ...                                verify_data=x, verify=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_ATTRS = {
    "TARGETS": "kerasq.export.tflite",
    "ExportResult": "kerasq.export.tflite",
    "export_tflite": "kerasq.export.tflite",
    "to_tflite": "kerasq.export.tflite",
    "TFLiteRunner": "kerasq.export.verify",
    "VerificationReport": "kerasq.export.verify",
    "verify_tflite": "kerasq.export.verify",
    "to_onnx": "kerasq.export.onnx",
    "export_onnx": "kerasq.export.onnx",
    "verify_onnx": "kerasq.export.onnx",
    "OnnxReport": "kerasq.export.onnx",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasq.export' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY_ATTRS))


__all__ = sorted(_LAZY_ATTRS)
