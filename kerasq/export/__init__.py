"""TFLite export of kerasq-quantized models, with built-in verification.

Example:
    >>> import kerasq
    >>> blob = kerasq.export.to_tflite(qmodel, "model.tflite", target="int8",
    ...                                verify_data=x, verify=True)  # doctest: +SKIP
"""

from __future__ import annotations

from kerasq.export.tflite import TARGETS, ExportResult, export_tflite, to_tflite
from kerasq.export.verify import TFLiteRunner, VerificationReport, verify_tflite

__all__ = ["TARGETS", "ExportResult", "export_tflite", "to_tflite", "TFLiteRunner",
           "VerificationReport", "verify_tflite"]
