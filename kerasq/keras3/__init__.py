"""kerasq on Keras 3: the same quantization schemes for ``keras`` 3 models (TensorFlow and
JAX backends). See ``docs/keras3.md``.

The public entry points (``kerasq.quantize_model``, ``kerasq.calibrate``,
``kerasq.load_model``, ``kerasq.export.to_tflite``) accept Keras 3 models directly; this
package holds the Keras 3 layers and quantizers and the tf_keras twin machinery.

Example:
    >>> qmodel = kerasq.quantize_model(keras3_model)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_ATTRS = {
    "quantize_model": "kerasq.keras3.api",
    "calibrate": "kerasq.keras3.api",
    "align": "kerasq.keras3.api",
    "tf_keras_twin": "kerasq.keras3.api",
    "load_model": "kerasq.keras3.api",
    "SharedGridCallback": "kerasq.keras3.api",
    "QuantizedLayer": "kerasq.keras3.layers",
    "InputQuantizer": "kerasq.keras3.layers",
    "prune_model": "kerasq.keras3.prune",
    "PruningCallback": "kerasq.keras3.prune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasq.keras3' has no attribute {name!r}")


__all__ = list(_LAZY_ATTRS)
